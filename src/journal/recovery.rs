//! The scan behind `Journal::open` (recovery) and `journal verify`.
//!
//! Rules, applied to the segments in sequence order:
//! - a whole record (committed, checksum good) is kept;
//! - a claimed but uncommitted record (`commit == 0`, sane length) was in flight at a crash: it
//!   is skipped by its length and the scan goes on, because records claimed after it by other
//!   threads may be whole;
//! - anything else (insane length, a commit word that is neither 0 nor the magic, a checksum
//!   mismatch, a damaged segment header, bytes after the end of the data) is damage: every
//!   whole record before it is kept and nothing after it.
//!
//! Damage with no whole record anywhere after it and no committed record in it is a torn tail
//! (garbage where nothing was committed): `verify` reports it and still calls the journal
//! intact. Any other damage, a committed record that fails its checks at the end of the data
//! included, loses records: `Journal::open` copies the damaged segment aside before it cuts.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::{read_frame, Frame, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use super::head::{missing_newest, missing_oldest, read_head, read_marker};
use super::record::Record;
use super::segment::{data_ranges, list_segments, segment_path};
use super::{JournalError, Position};
use crate::journal::format::{load_u32_acquire, FRAME_ALIGN};

/// Torn records listed by position in a report; beyond this they are only counted.
pub const MAX_TORN_LISTED: usize = 16;

/// How far past the end of the data non-zero bytes may start and still be a torn tail: more
/// than a power loss can leave unwritten behind records that reached the disk (the records
/// written between two syncs), less than the rest of a segment.
pub const TORN_WINDOW: u64 = 1 << 20;

/// What is wrong at a damaged position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The `len` word is not a plausible frame length (too small, unaligned, past the end).
    BadLength(u32),
    /// The `commit` word is neither 0 (in flight) nor the commit magic.
    BadCommit(u32),
    /// The frame's checksum does not match its contents.
    BadChecksum,
    /// The frame's padding or reserved bytes are out of range.
    BadFrameHeader,
    /// The segment header is missing, damaged, or names another segment.
    BadSegmentHeader(&'static str),
    /// Non-zero bytes after the end of the data (where nothing was ever claimed), the first at
    /// offset `first`. Within [`TORN_WINDOW`] of the end they are a torn tail (what a power
    /// loss leaves of records written after the last one that reached the disk); further out
    /// no write of the journal's put them.
    DataAfterEnd { first: u64 },
    /// The segment file is not the size its header says (`header`, `file` bytes): cut short,
    /// or grown by bytes appended to it. Segment files are made at their full size and never
    /// resized, by a crash either.
    SizeChanged { header: u64, file: u64 },
    /// The segment with this number is missing, between two that are there: retention only
    /// ever removes the oldest.
    MissingSegment(u64),
    /// The newest segments, `first` to `head`, are missing: the `HEAD` file names `head` as
    /// begun, and no segment file that new is left (see [`super::head`]).
    NewestMissing { first: u64, head: u64 },
    /// The oldest segments, `first` to `last`, are missing: the `HEAD` file says the journal
    /// keeps every segment from `first` (see [`super::head`]).
    OldestMissing { first: u64, last: u64 },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::BadLength(l) => write!(f, "implausible record length {l}"),
            DamageKind::BadCommit(c) => write!(f, "bad commit word {c:#010x}"),
            DamageKind::BadChecksum => write!(f, "checksum mismatch"),
            DamageKind::BadFrameHeader => write!(f, "bad frame header"),
            DamageKind::BadSegmentHeader(why) => write!(f, "bad segment header ({why})"),
            DamageKind::DataAfterEnd { first } => write!(
                f,
                "data after the end of the records (first non-zero byte at offset {first})"
            ),
            DamageKind::SizeChanged { header, file } => write!(
                f,
                "segment file is {file} bytes where its header says {header} (cut short or grown)"
            ),
            DamageKind::MissingSegment(seq) => write!(f, "segment {seq} is missing"),
            DamageKind::NewestMissing { first, head } if first == head => {
                write!(
                    f,
                    "segment {head}, the newest begun (named by HEAD), is missing"
                )
            }
            DamageKind::NewestMissing { first, head } => write!(
                f,
                "segments {first} to {head}, the newest begun (HEAD names {head}), are missing"
            ),
            DamageKind::OldestMissing { first, last } if first == last => write!(
                f,
                "segment {first}, the oldest kept (named by HEAD), is missing"
            ),
            DamageKind::OldestMissing { first, last } => write!(
                f,
                "segments {first} to {last}, the oldest kept (HEAD names {first}), are missing"
            ),
        }
    }
}

/// Damage found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the damage starts: nothing from here on is trusted.
    pub at: Position,
    /// What is wrong there.
    pub kind: DamageKind,
    /// Whole records found after the damage (in this and later segments). Zero means a torn
    /// tail; anything else means records would be lost by cutting here.
    pub records_after: u64,
    /// Of `records_after`, those in the damaged segment itself (the rest are in later ones).
    pub records_in_segment: u64,
    /// Bytes from the damage to the last non-zero byte of its segment, plus the size of every
    /// later segment.
    pub bytes: u64,
    /// Later segments, all of which lie beyond the damage.
    pub later_segments: Vec<u64>,
}

impl DamageKind {
    /// The damage is in a record that was committed (its commit word holds the magic), so a
    /// whole record was lost: a process crash never leaves one (it leaves `commit == 0`),
    /// only a power loss that wrote part of a record's pages, or a bad disk. A segment file cut
    /// short or a missing segment counts the same: no crash does either, and records are gone.
    pub fn is_committed_record(self) -> bool {
        matches!(
            self,
            DamageKind::BadChecksum
                | DamageKind::BadFrameHeader
                | DamageKind::SizeChanged { .. }
                | DamageKind::MissingSegment(_)
                | DamageKind::NewestMissing { .. }
                | DamageKind::OldestMissing { .. }
        )
    }
}

impl Damage {
    /// Whether this is only a torn tail: nothing whole after it, and no committed record in
    /// it. A committed record damaged at the tail is damage like any other: its segment is
    /// copied aside before the cut, and `verify` calls the journal damaged.
    ///
    /// A damaged segment header is a torn tail only when the segment is the newest and holds
    /// nothing but zeroes (or nothing at all): begun at a crash and never written.
    ///
    /// The newest segment's file cut short or grown is a torn tail too: every record up to the
    /// cut is whole, and the journal is cut at the last of them. (The journal never resizes a
    /// file, so no crash of the exchange does this; a copy interrupted, or a test that cuts
    /// the last file to make a torn tail, does.) A segment followed by another is damage when
    /// resized: its records end at its sentinel, and a cut one lost them.
    pub fn is_torn_tail(&self) -> bool {
        if self.records_after != 0 {
            return false;
        }
        match self.kind {
            DamageKind::SizeChanged { .. } => self.later_segments.is_empty(),
            // A crash while a segment is begun leaves its file empty or all zeroes; a header
            // with bytes in it that do not read, or a segment followed by another, is not
            // what a crash leaves, and whatever the segment held is lost.
            DamageKind::BadSegmentHeader(_) => self.bytes == 0 && self.later_segments.is_empty(),
            DamageKind::DataAfterEnd { first } => {
                first.saturating_sub(self.at.offset) < TORN_WINDOW
            }
            kind => !kind.is_committed_record(),
        }
    }
}

/// One segment as found by the scan (only segments before the damage, and the damaged one
/// when its header is good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub seq: u64,
    pub len: u64,
    pub created_us: u64,
    /// Offset where appends may continue: where the data ends (the sentinel, the first zero
    /// `len`, or the damage), moved back over a trailing run of torn frames, whose writers
    /// are gone and after which nothing whole follows.
    pub end: u64,
    /// Offset where the scan stopped; `end..scan_end` holds only torn frames.
    pub scan_end: u64,
    /// Whether the segment carries the end-of-segment sentinel (or is full to the last byte).
    pub sealed: bool,
}

/// The result of scanning a journal directory, without changing it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Analysis {
    pub segments: Vec<SegmentInfo>,
    pub records: u64,
    pub torn: u64,
    pub torn_positions: Vec<Position>,
    pub damage: Option<Damage>,
    pub undecodable: u64,
    pub unknown: u64,
    pub header_damage_all_zero: bool,
    /// Segment files found, including damaged ones.
    pub files: usize,
    /// The latest stamp of any whole record (0: none).
    pub latest_ts_us: u64,
}

/// Scan every segment of `dir` read-only. With `decode`, every record's payload is decoded too
/// (for `verify`); recovery skips that to open quickly.
pub(crate) fn analyze(dir: &Path, decode: bool) -> Result<Analysis, JournalError> {
    let seqs = list_segments(dir)?;
    let mut a = Analysis {
        files: seqs.len(),
        ..Analysis::default()
    };
    for (i, &seq) in seqs.iter().enumerate() {
        let later = &seqs[i + 1..];
        let path = segment_path(dir, seq);
        let file = match File::open(&path) {
            Ok(f) => f,
            // The oldest, removed by a running exchange's retention since the listing.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && a.segments.is_empty()
                    && super::head::removed_by_retention(dir, seq) =>
            {
                a.files -= 1;
                continue;
            }
            Err(e) => return Err(JournalError::io("open", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", &path, e))?
            .len();
        let map = map_read_only(&file, &path, len)?;
        let buf: &[u8] = map.as_ref().map_or(&[][..], |m| &m[..]);
        if let Some(&prev) = i.checked_sub(1).and_then(|p| seqs.get(p)) {
            if seq != prev + 1 {
                // What follows the gap cannot be appended to: set aside like damage.
                let d = damage_at(
                    dir,
                    seq,
                    0,
                    DamageKind::MissingSegment(prev + 1),
                    buf,
                    &file,
                    later,
                )?;
                a.header_damage_all_zero = d.bytes == 0;
                a.damage = Some(d);
                break;
            }
        }
        let scan = scan_segment(buf, &file, seq, decode, &mut a)?;
        if let Some(info) = scan.info {
            a.segments.push(info);
        }
        if let Some((off, kind)) = scan.damage {
            let d = damage_at(dir, seq, off, kind, buf, &file, later)?;
            if off == 0 {
                a.header_damage_all_zero = d.bytes == 0;
            }
            a.damage = Some(d);
            break;
        }
    }
    Ok(a)
}

/// One segment as [`scan_segment`] found it.
pub(crate) struct SegmentScan {
    /// The segment, unless its header is damaged.
    pub info: Option<SegmentInfo>,
    /// The first damage and its offset (0 for the header).
    pub damage: Option<(u64, DamageKind)>,
}

/// Walk one segment (`buf`, the file named for `seq`) frame by frame from its header, counting
/// into `a`. Recovery cuts at the first damage found; reading a copy recovery kept of the
/// segment finds the same damage again, at the same offset.
pub(crate) fn scan_segment(
    buf: &[u8],
    file: &File,
    seq: u64,
    decode: bool,
    a: &mut Analysis,
) -> Result<SegmentScan, JournalError> {
    let header = match SegmentHeader::parse(buf) {
        Ok(h) if h.seq == seq => h,
        Ok(_) => {
            let kind = DamageKind::BadSegmentHeader("sequence differs from file name");
            return Ok(SegmentScan {
                info: None,
                damage: Some((0, kind)),
            });
        }
        Err(HeaderError::Newer(version)) => {
            return Err(JournalError::UnsupportedFormat {
                segment: seq,
                version,
            })
        }
        Err(HeaderError::Damaged(why)) => {
            return Ok(SegmentScan {
                info: None,
                damage: Some((0, DamageKind::BadSegmentHeader(why))),
            });
        }
    };
    // A segment is made at its full size and never resized: read only what its header says
    // it holds, and tell a file cut short or grown from a crash's leftovers below.
    let file_len = buf.len() as u64;
    let size = header.segment_bytes;
    let grown = size >= SEGMENT_HEADER_BYTES && file_len > size;
    let whole = buf;
    let buf = if grown { &buf[..size as usize] } else { buf };
    let mut info = SegmentInfo {
        seq,
        len: buf.len() as u64,
        created_us: header.created_us,
        end: SEGMENT_HEADER_BYTES,
        scan_end: SEGMENT_HEADER_BYTES,
        sealed: false,
    };
    let mut off = SEGMENT_HEADER_BYTES;
    let mut damage = None;
    let mut torn_run: Option<u64> = None;
    loop {
        match read_frame(buf, off) {
            Frame::Record {
                len,
                type_code,
                ts_us,
                payload,
            } => {
                a.records += 1;
                a.latest_ts_us = a.latest_ts_us.max(ts_us);
                torn_run = None;
                if decode {
                    match Record::decode(type_code, payload) {
                        Ok(_) => {}
                        Err(e) if e.is_newer() => a.unknown += 1,
                        Err(_) => a.undecodable += 1,
                    }
                }
                off += len;
            }
            Frame::Torn { len } => {
                a.torn += 1;
                torn_run.get_or_insert(off);
                if a.torn_positions.len() < MAX_TORN_LISTED {
                    a.torn_positions.push(Position {
                        segment: seq,
                        offset: off,
                    });
                }
                off += len;
            }
            Frame::Sealed => {
                info.sealed = true;
                break;
            }
            Frame::EndOfData => {
                match first_nonzero(buf, file, off + FRAME_ALIGN) {
                    None => break,
                    // A live writer may have claimed this slot since it was read: look again.
                    Some(_) if load_u32_acquire(buf, off) != 0 => continue,
                    Some(first) => {
                        damage = Some(DamageKind::DataAfterEnd { first });
                        break;
                    }
                }
            }
            Frame::Damage(kind) => {
                damage = Some(kind);
                break;
            }
        }
    }
    info.scan_end = off;
    info.end = if info.sealed {
        off
    } else {
        torn_run.unwrap_or(off)
    };
    let size_changed = DamageKind::SizeChanged {
        header: size,
        file: file_len,
    };
    let mut damage = damage.map(|kind| (off, kind));
    // The scan ran into the end of the file (not the end sentinel, which comes before it).
    let ran_out = off.saturating_add(FRAME_ALIGN) > buf.len() as u64;
    if file_len < size && (!info.sealed || ran_out) {
        // Cut short before its end sentinel: whatever was past the cut is gone.
        damage = Some((damage.map_or(off, |d| d.0), size_changed));
    } else if grown && damage.is_none() && whole[buf.len()..].iter().any(|&b| b != 0) {
        damage = Some((size, size_changed));
    }
    Ok(SegmentScan {
        info: Some(info),
        damage,
    })
}

/// A segment mapped read-only, covered against being cut short meanwhile (`fault`).
pub(crate) struct ReadMap {
    _cover: super::fault::Cover,
    map: Mmap,
}

impl std::ops::Deref for ReadMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// Map a segment read-only (`None` for an empty file, which cannot be mapped).
pub(crate) fn map_read_only(
    file: &File,
    path: &Path,
    len: u64,
) -> Result<Option<ReadMap>, JournalError> {
    if len == 0 {
        return Ok(None);
    }
    if usize::try_from(len).is_err() {
        return Err(JournalError::InvalidOptions(format!(
            "segment {} is too large to map",
            path.display()
        )));
    }
    // SAFETY: segments are never truncated by the journal; a reader only loads from the map,
    // and a file cut short by something else meanwhile reads as zeroes past its end (`fault`).
    let map = unsafe { Mmap::map(file) }.map_err(|e| JournalError::io("mmap", path, e))?;
    let cover = super::fault::cover(map.as_ptr(), map.len());
    Ok(Some(ReadMap { _cover: cover, map }))
}

/// Describe damage at `(seq, off)`: count the whole records after it and the bytes it spans.
pub(crate) fn damage_at(
    dir: &Path,
    seq: u64,
    off: u64,
    kind: DamageKind,
    buf: &[u8],
    file: &File,
    later: &[u64],
) -> Result<Damage, JournalError> {
    let (records_in_segment, last_nonzero) =
        resync(buf, file, off.max(SEGMENT_HEADER_BYTES), off + FRAME_ALIGN);
    let mut records_after = records_in_segment;
    let mut bytes = last_nonzero.saturating_sub(off);
    if off == 0 {
        // A damaged header: the header bytes themselves count when non-zero.
        if buf
            .iter()
            .take(SEGMENT_HEADER_BYTES as usize)
            .any(|&b| b != 0)
        {
            // As many as there are: a file cut inside its header has fewer.
            bytes = bytes.max(SEGMENT_HEADER_BYTES.min(buf.len() as u64));
        }
    }
    for &s in later {
        let path = segment_path(dir, s);
        let f = File::open(&path).map_err(|e| JournalError::io("open", &path, e))?;
        let len = f
            .metadata()
            .map_err(|e| JournalError::io("stat", &path, e))?
            .len();
        let m = map_read_only(&f, &path, len)?;
        let b: &[u8] = m.as_ref().map_or(&[][..], |m| &m[..]);
        records_after += resync(b, &f, SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES).0;
        bytes += len;
    }
    Ok(Damage {
        at: Position {
            segment: seq,
            offset: off,
        },
        kind,
        records_after,
        records_in_segment,
        bytes,
        later_segments: later.to_vec(),
    })
}

/// Look for whole records in `buf` at every aligned offset from `from`, skipping holes. Returns
/// how many were found and where the last non-zero byte at or after `zero_from` ends.
fn resync(buf: &[u8], file: &File, zero_from: u64, from: u64) -> (u64, u64) {
    let mut found = 0;
    let last_nonzero = resync_each(buf, file, zero_from, from, &mut |_| found += 1);
    (found, last_nonzero)
}

/// A whole record found by [`resync_each`].
pub(crate) struct Found<'a> {
    /// Where its frame starts.
    pub offset: u64,
    /// Its type code.
    pub type_code: u8,
    /// Its timestamp, unix microseconds.
    pub ts_us: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

/// The scan behind [`resync`]: hands each whole record found at or after `from` to `found`
/// and returns where the last non-zero byte at
/// or after `zero_from` ends. After a whole record the scan goes on at its end, so it never
/// looks inside one; anywhere else it tries every aligned offset. A record is accepted only
/// with the commit magic and a matching CRC32C over its length, type, time and payload.
pub(crate) fn resync_each(
    buf: &[u8],
    file: &File,
    zero_from: u64,
    from: u64,
    found: &mut dyn FnMut(Found<'_>),
) -> u64 {
    let mut last_nonzero = 0;
    let mut resume = 0;
    let len = buf.len() as u64;
    for (start, end) in data_ranges(file, zero_from.min(len), len) {
        let end = end.min(len);
        let mut off = start
            .max(zero_from)
            .max(resume)
            .next_multiple_of(FRAME_ALIGN);
        while off + FRAME_ALIGN <= end {
            let o = off as usize;
            if buf[o..o + FRAME_ALIGN as usize].iter().any(|&b| b != 0) {
                last_nonzero = off + FRAME_ALIGN;
            }
            if off >= from {
                if let Frame::Record {
                    len,
                    type_code,
                    ts_us,
                    payload,
                } = read_frame(buf, off)
                {
                    found(Found {
                        offset: off,
                        type_code,
                        ts_us,
                        payload,
                    });
                    last_nonzero = last_nonzero.max(off + len);
                    off += len;
                    continue;
                }
            }
            off += FRAME_ALIGN;
        }
        resume = off;
    }
    last_nonzero
}

/// Offset of the first non-zero byte at or after `from`, skipping holes.
pub(crate) fn first_nonzero(buf: &[u8], file: &File, from: u64) -> Option<u64> {
    let len = buf.len() as u64;
    if from >= len {
        return None;
    }
    for (start, end) in data_ranges(file, from, len) {
        let s = start.max(from) as usize;
        let e = end.min(len) as usize;
        if let Some(i) = buf.get(s..e)?.iter().position(|&b| b != 0) {
            return Some((s + i) as u64);
        }
    }
    None
}

/// What a damage cut on open removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Where the cut was made: nothing from here on was kept.
    pub at: Position,
    /// What was wrong there.
    pub kind: DamageKind,
    /// Bytes cut (zeroed in the segment, plus later segments moved aside).
    pub bytes: u64,
    /// Whole records found after the damage and therefore not kept (0 for a torn tail).
    pub records_skipped: u64,
    /// Of `records_skipped`, those in the damaged segment (the rest were in `moved_aside`).
    pub records_skipped_in_segment: u64,
    /// The cut was a torn tail ([`Damage::is_torn_tail`]): nothing whole was lost.
    pub torn_tail: bool,
    /// Where the damaged segment was zeroed from (to its end): the damage, or the start of the
    /// torn records just before it. `None` when the whole segment was moved aside instead (a
    /// damaged segment header).
    pub zeroed_from: Option<Position>,
    /// A copy of the damaged segment as it was before any of it was zeroed, made (and fsynced)
    /// whenever the cut is not a torn tail: `NNN.seg.cut-SECS`. A torn tail (the normal result
    /// of a crash) leaves no copy.
    pub copied_to: Option<PathBuf>,
    /// Segments moved aside whole as `*.seg.cut` (they are never deleted).
    pub moved_aside: Vec<PathBuf>,
}

/// What `Journal::open` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Whole records kept.
    pub records: u64,
    /// Records in flight at a crash (claimed, never committed): skipped.
    pub torn_skipped: u64,
    /// Positions of the first torn records (at most [`MAX_TORN_LISTED`]).
    pub torn: Vec<Position>,
    /// The cut made at damage, if any.
    pub cut: Option<Cut>,
    /// Segments that lacked their end sentinel (a crash during rotation) and were sealed.
    pub sealed: Vec<u64>,
    /// Where the next record goes.
    pub tail: Position,
    /// The segment created on open (a new journal, or after a damaged header).
    pub created: Option<u64>,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal: {} segment(s), {} record(s), {} torn record(s) skipped, appending at {}",
            self.segments, self.records, self.torn_skipped, self.tail
        )?;
        if let Some(c) = &self.cut {
            write!(
                f,
                "; cut at {} ({}): {} byte(s), {} whole record(s) after it",
                c.at, c.kind, c.bytes, c.records_skipped
            )?;
            if c.records_skipped == 0 && c.torn_tail {
                write!(f, " (torn tail)")?;
            } else if c.records_skipped == 0 && matches!(c.kind, DamageKind::BadSegmentHeader(_)) {
                write!(
                    f,
                    " (a segment header no crash leaves: the segment is set aside)"
                )?;
            } else if c.records_skipped == 0 && c.kind.is_committed_record() {
                write!(
                    f,
                    " (a committed record is damaged: a power loss or a bad disk)"
                )?;
            } else if c.records_skipped == 0 {
                write!(f, " (bytes no write of the journal put there)")?;
            } else {
                write!(
                    f,
                    " ({} of them in segment {})",
                    c.records_skipped_in_segment, c.at.segment
                )?;
            }
            if let Some(z) = &c.zeroed_from {
                write!(
                    f,
                    "; segment {} zeroed from offset {} to its end",
                    z.segment, z.offset
                )?;
            }
            if let Some(p) = &c.copied_to {
                write!(f, "; the segment as it was found copied to {}", p.display())?;
            }
            for p in &c.moved_aside {
                write!(f, "; moved aside {}", p.display())?;
            }
        }
        if !self.sealed.is_empty() {
            write!(f, "; sealed segment(s) {:?}", self.sealed)?;
        }
        Ok(())
    }
}

/// What `verify` found. The journal is intact when there is no damage, or the damage is a
/// torn tail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments scanned.
    pub segments: usize,
    /// Whole records.
    pub records: u64,
    /// Records claimed but never committed (in flight now, or at a crash).
    pub torn: u64,
    /// Positions of the first torn records.
    pub torn_positions: Vec<Position>,
    /// Damage, if any.
    pub damage: Option<Damage>,
    /// Whole records of a type or payload version newer than this build (skipped by readers).
    pub unknown: u64,
    /// Whole records whose payload does not decode (skipped by readers).
    pub undecodable: u64,
}

impl VerifyReport {
    /// Whether every segment is intact (a torn tail counts as intact).
    pub fn intact(&self) -> bool {
        self.damage.as_ref().is_none_or(Damage::is_torn_tail)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segment(s), {} record(s)",
            self.segments, self.records
        )?;
        if self.torn > 0 {
            write!(f, ", {} torn record(s) skipped", self.torn)?;
            if let Some(p) = self.torn_positions.first() {
                write!(f, " (first at {p})")?;
            }
        }
        if self.unknown > 0 {
            write!(f, ", {} record(s) of a newer format", self.unknown)?;
        }
        if self.undecodable > 0 {
            write!(f, ", {} undecodable record(s)", self.undecodable)?;
        }
        match &self.damage {
            None => Ok(()),
            Some(d) if d.is_torn_tail() => {
                write!(
                    f,
                    ", torn tail at {} ({}, {} byte(s)), intact",
                    d.at, d.kind, d.bytes
                )
            }
            Some(d)
                if matches!(
                    d.kind,
                    DamageKind::NewestMissing { .. } | DamageKind::OldestMissing { .. }
                ) =>
            {
                write!(
                    f,
                    ", DAMAGED at {}: {}; their records are lost unless the files are restored \
                 (the exchange will not start on this journal until they are, or HEAD is \
                 removed)",
                    d.at, d.kind
                )
            }
            Some(d)
                if d.records_after == 0 && matches!(d.kind, DamageKind::BadSegmentHeader(_)) =>
            {
                write!(
                    f,
                    ", DAMAGED at {}: {}, {} byte(s) in the segment; no crash leaves a header \
                     like this, and whatever the segment held is lost (the exchange sets the \
                     segment aside when it starts)",
                    d.at, d.kind, d.bytes
                )
            }
            Some(d) if d.records_after == 0 => write!(
                f,
                ", DAMAGED at {}: {} in a committed record at the end of the data (a power loss \
                 or a bad disk; the record is lost)",
                d.at, d.kind
            ),
            Some(d) => write!(
                f,
                ", DAMAGED at {}: {} ({} whole record(s) after it)",
                d.at, d.kind, d.records_after
            ),
        }
    }
}

/// Check a journal without changing it.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    if !dir.is_dir() {
        return Err(JournalError::NotFound(dir.to_path_buf()));
    }
    let head = read_head(dir)?;
    let a = analyze(dir, true)?;
    // Listed after the scan: a segment begun meanwhile by a running writer is then counted,
    // where a listing taken first could miss it and call it missing. `HEAD` is read again
    // after the listing for its oldest segment: retention names the new oldest before it
    // removes, so a removal meanwhile is not taken for a loss.
    let seqs = list_segments(dir)?;
    let missing = missing_newest(head, &seqs);
    let oldest_gone = missing_oldest(read_marker(dir)?, &seqs);
    let damage = match (missing, oldest_gone) {
        // What stops the exchange from starting comes first; damage found in the segments
        // left is found again once the missing ones are restored.
        (Some((first, head)), _) => Some(Damage {
            at: Position {
                segment: first,
                offset: 0,
            },
            kind: DamageKind::NewestMissing { first, head },
            records_after: 0,
            records_in_segment: 0,
            bytes: 0,
            later_segments: Vec::new(),
        }),
        (None, Some((first, last))) => Some(Damage {
            at: Position {
                segment: first,
                offset: 0,
            },
            kind: DamageKind::OldestMissing { first, last },
            records_after: a.records,
            records_in_segment: 0,
            bytes: 0,
            later_segments: Vec::new(),
        }),
        (None, None) => a.damage,
    };
    Ok(VerifyReport {
        segments: a.files,
        records: a.records,
        torn: a.torn,
        torn_positions: a.torn_positions,
        damage,
        unknown: a.unknown,
        undecodable: a.undecodable,
    })
}
