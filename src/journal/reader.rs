//! Read-only readers: a streaming [`Reader`] for replay and export, and a [`Follower`] for
//! `journal tail`. Neither ever writes to the journal; both may run while the exchange appends.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format::{read_frame, Frame, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use super::record::Record;
use super::recovery::{damage_at, first_nonzero, map_read_only, DamageKind, ReadMap};
use super::segment::{list_segments, segment_path};
use super::{JournalError, Position};
use crate::journal::format::{load_u32_acquire, FRAME_ALIGN};

/// How long `tail` waits on a claimed but uncommitted record before deciding its writer died
/// and skipping it. Live writers commit within microseconds.
pub const TORN_WAIT: Duration = Duration::from_secs(1);

/// Most records `tail` prints from before it started following.
pub const MAX_TAIL_BACKLOG: usize = 10_000;

/// One decoded record and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the record starts.
    pub pos: Position,
    /// Its timestamp, unix microseconds.
    pub ts_us: u64,
    /// The record.
    pub record: Record,
}

/// An open, mapped segment.
struct Mapped {
    seq: u64,
    file: File,
    map: Option<ReadMap>,
}

impl Mapped {
    fn open(dir: &Path, seq: u64) -> Result<Mapped, JournalError> {
        let path = segment_path(dir, seq);
        let file = File::open(&path).map_err(|e| JournalError::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", &path, e))?
            .len();
        let map = map_read_only(&file, &path, len)?;
        Ok(Mapped { seq, file, map })
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_ref().map_or(&[][..], |m| &m[..])
    }
}

/// Streams every whole record of a journal in order, one segment mapped at a time.
///
/// Torn records are skipped. Records of unknown types or newer payload versions are skipped
/// and counted. At damage the reader stops: silently for a torn tail (nothing whole after it),
/// with one `Err(JournalError::Damaged)` item otherwise.
pub struct Reader {
    dir: PathBuf,
    seqs: Vec<u64>,
    next_index: usize,
    cur: Option<Mapped>,
    /// The current segment's size as its header gives it: a file shorter than that was cut.
    cur_size: u64,
    off: u64,
    done: bool,
    /// The segment read before the current one: a number skipped between them is a segment
    /// missing, which is damage (retention only removes the oldest).
    prev: Option<u64>,
    /// No segment has been opened yet: one listed and gone since is the oldest, removed by
    /// retention (see [`super::head::removed_by_retention`]).
    first_read: bool,
    /// Damage found when the reader was opened (the oldest segments kept are missing),
    /// yielded before any record.
    pending: Option<JournalError>,
    /// Records skipped because they are of a newer type or version.
    pub skipped_newer: u64,
    /// Records skipped because their payload does not decode.
    pub skipped_undecodable: u64,
    /// Torn records skipped.
    pub skipped_torn: u64,
    /// Only this lead's records are yielded ([`Reader::only_lead`]).
    only_lead: Option<Vec<u8>>,
    /// The reading ends at the first record stamped after this ([`Reader::stop_after`]).
    stop_after_us: u64,
    /// Damage ends only its segment ([`Reader::past_damage`]).
    past_damage: bool,
    /// `stop_after` ends only the segment it is met in ([`Reader::stop_per_segment`]).
    stop_per_segment: bool,
    /// Forward jumps between records longer than this are left out of the times `stop_after`
    /// judges by ([`Reader::collapse_gaps_over`]); `u64::MAX`: none.
    collapse_gap_us: u64,
    /// The stamp of the last record met, and the jumps left out so far.
    last_ts_us: u64,
    collapsed_us: u64,
}

impl Reader {
    /// A reader over every segment present in `dir` now.
    pub fn open(dir: &Path) -> Result<Reader, JournalError> {
        Reader::open_from(dir, 0)
    }

    /// A reader starting at segment `first_seq` (earlier segments are ignored).
    pub fn open_from(dir: &Path, first_seq: u64) -> Result<Reader, JournalError> {
        if !dir.is_dir() {
            return Err(JournalError::NotFound(dir.to_path_buf()));
        }
        let seqs: Vec<u64> = list_segments(dir)?
            .into_iter()
            .filter(|&s| s >= first_seq)
            .collect();
        // Read after the listing: retention names the new oldest segment in `HEAD` before it
        // removes one, so a removal meanwhile is not taken for a loss. A `HEAD` that cannot
        // be read is reported at the end (see `newest_missing`).
        let pending = match super::head::read_marker(dir) {
            Ok(Some(mut h)) => {
                h.oldest = h.oldest.map(|o| o.max(first_seq));
                super::head::missing_oldest(Some(h), &seqs).map(|(first, last)| {
                    JournalError::Damaged {
                        at: Position {
                            segment: first,
                            offset: 0,
                        },
                        kind: DamageKind::OldestMissing { first, last },
                    }
                })
            }
            Ok(None) | Err(_) => None,
        };
        Ok(Reader {
            dir: dir.to_path_buf(),
            seqs,
            next_index: 0,
            cur: None,
            cur_size: 0,
            off: 0,
            done: false,
            prev: None,
            first_read: true,
            pending,
            skipped_newer: 0,
            skipped_undecodable: 0,
            skipped_torn: 0,
            only_lead: None,
            stop_after_us: u64::MAX,
            past_damage: false,
            stop_per_segment: false,
            collapse_gap_us: u64::MAX,
            last_ts_us: 0,
            collapsed_us: 0,
        })
    }

    /// Go on past damage: it is yielded as one `Err` and the reading resumes at the next
    /// segment, so records in whole segments after it are still found (a torn tail is still
    /// the end). For looking a lead up, whose records may well be in a segment after
    /// damage elsewhere; not for replay or export, which must not skip records silently.
    pub fn past_damage(mut self) -> Reader {
        self.past_damage = true;
        self
    }

    /// End the reading at the first record stamped after `ts_us`, whether it is yielded or
    /// not; may be called between items.
    pub fn stop_after(&mut self, ts_us: u64) {
        self.stop_after_us = ts_us;
    }

    /// Make [`Reader::stop_after`] end only the segment a later record is met in, reading on
    /// from the next: for records written after a wall clock stepped back, which a journal
    /// writes to a segment of its own (see `writer::CLOCK_STEP_BACK_US`), stamped earlier
    /// than those before it. A segment after the reading's end costs its first record.
    pub fn stop_per_segment(mut self) -> Reader {
        self.stop_per_segment = true;
        self
    }

    /// Judge [`Reader::stop_after`] by times with every forward jump between two records
    /// longer than `gap_us` left out: a lead's records after a wall clock stepped forward (or
    /// after the exchange stood idle) are read as if they came on at once. For looking up one
    /// lead, whose records a step during its auction would otherwise put past its horizon.
    pub fn collapse_gaps_over(mut self, gap_us: u64) -> Reader {
        self.collapse_gap_us = gap_us;
        self
    }

    /// Yield only the records of `lead_id`. The others are told apart by the id at the head of
    /// their payload and never decoded (their frames are still checked, so damage is found as
    /// before): a lookup reads a busy journal's thousands of other leads' records for the
    /// price of a comparison each.
    pub fn only_lead(mut self, lead_id: &str) -> Reader {
        self.only_lead = Some(lead_id.as_bytes().to_vec());
        self
    }

    /// At the end of the segments: the newest ones gone (`HEAD` names a segment newer than
    /// any left), or a `HEAD` file that cannot be read, is damage too. `HEAD` is read before
    /// the directory is listed again, so a segment begun by a running writer meanwhile is
    /// found.
    fn newest_missing(&self) -> Option<JournalError> {
        let head = match super::head::read_head(&self.dir) {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        let seqs = match list_segments(&self.dir) {
            Ok(s) => s,
            Err(e) => return Some(e),
        };
        let (first, head) = super::head::missing_newest(head, &seqs)?;
        Some(JournalError::Damaged {
            at: Position {
                segment: first,
                offset: 0,
            },
            kind: DamageKind::NewestMissing { first, head },
        })
    }

    /// End the stream at damage at `(seq, off)`: an error item unless it is a torn tail.
    fn stop_at(
        &mut self,
        seq: u64,
        off: u64,
        kind: DamageKind,
    ) -> Option<Result<Entry, JournalError>> {
        let later: Vec<u64> = self.seqs[self.next_index..].to_vec();
        let result = match &self.cur {
            Some(m) => damage_at(&self.dir, seq, off, kind, m.bytes(), &m.file, &later),
            None => {
                self.done = true;
                return None;
            }
        };
        self.cur = None;
        // A torn tail has nothing whole after it: the end. Other damage ends the reading, or
        // only its segment when the reader goes on past damage.
        self.done = !self.past_damage || matches!(&result, Ok(d) if d.is_torn_tail());
        match result {
            Ok(d) if d.is_torn_tail() => None,
            Ok(d) => Some(Err(JournalError::Damaged {
                at: d.at,
                kind: d.kind,
            })),
            Err(e) => Some(Err(e)),
        }
    }
}

/// One step of the reader over the mapped segment.
enum Step {
    Entry(Entry),
    Skip,
    NextSegment,
    Damage(u64, u64, DamageKind),
}

impl Iterator for Reader {
    type Item = Result<Entry, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.done = !self.past_damage;
            return Some(Err(e));
        }
        loop {
            if self.done {
                return None;
            }
            if self.cur.is_none() {
                let Some(&seq) = self.seqs.get(self.next_index) else {
                    self.done = true;
                    return self.newest_missing().map(Err);
                };
                self.next_index += 1;
                if let Some(prev) = self.prev.replace(seq) {
                    if seq != prev + 1 {
                        self.done = !self.past_damage;
                        return Some(Err(JournalError::Damaged {
                            at: Position {
                                segment: seq,
                                offset: 0,
                            },
                            kind: DamageKind::MissingSegment(prev + 1),
                        }));
                    }
                }
                let m = match Mapped::open(&self.dir, seq) {
                    Ok(m) => m,
                    // The oldest, removed by a running exchange's retention since the
                    // listing: nothing was read from it yet, so nothing is skipped.
                    Err(JournalError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound
                            && self.prev == Some(seq)
                            && self.first_read
                            && super::head::removed_by_retention(&self.dir, seq) =>
                    {
                        self.prev = None;
                        continue;
                    }
                    // Removed by retention since the listing, after records before it were
                    // read: this read has a gap, said as such rather than as a bare "No such
                    // file".
                    Err(JournalError::Io { op, path, source })
                        if source.kind() == std::io::ErrorKind::NotFound
                            && super::head::removed_by_retention(&self.dir, seq) =>
                    {
                        self.done = true;
                        return Some(Err(JournalError::Io {
                            op,
                            path,
                            source: std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                "removed by the exchange's retention while this read was under \
                                 way; the records after it are still kept: read again for what \
                                 is kept now",
                            ),
                        }));
                    }
                    Err(e) => {
                        self.done = !self.past_damage;
                        return Some(Err(e));
                    }
                };
                self.first_read = false;
                let header = SegmentHeader::parse(m.bytes());
                self.cur = Some(m);
                self.off = SEGMENT_HEADER_BYTES;
                match header {
                    Ok(h) if h.seq == seq => self.cur_size = h.segment_bytes,
                    Ok(_) => {
                        return self.stop_at(
                            seq,
                            0,
                            DamageKind::BadSegmentHeader("sequence differs from file name"),
                        )
                    }
                    Err(HeaderError::Newer(version)) => {
                        self.done = true;
                        return Some(Err(JournalError::UnsupportedFormat {
                            segment: seq,
                            version,
                        }));
                    }
                    Err(HeaderError::Damaged(why)) => {
                        return self.stop_at(seq, 0, DamageKind::BadSegmentHeader(why))
                    }
                }
            }
            let step = {
                let Some(m) = &self.cur else { continue };
                let buf = m.bytes();
                let off = self.off;
                let total = buf.len() as u64;
                let frame = read_frame(buf, off);
                // A file shorter than its header says was cut (a copy interrupted, a file
                // truncated): a frame running past its end, or the end reached with no end
                // sentinel, is the cut, whatever the frame's bytes say; a record whole up to
                // the cut is read as one. (The newest segment so cut is a torn tail.)
                let cut = total < self.cur_size
                    && match &frame {
                        Frame::Sealed => off.saturating_add(FRAME_ALIGN) > total,
                        Frame::Damage(DamageKind::BadLength(len)) => {
                            off.saturating_add(u64::from(*len)) > total
                        }
                        _ => false,
                    };
                // A file longer than its header says, with bytes past that size, grew: its
                // records end at its sentinel, and what was added is no record of the
                // journal's (zeroes added change nothing, and are not damage).
                let grown = !cut
                    && total > self.cur_size
                    && matches!(frame, Frame::Sealed)
                    && off.saturating_add(FRAME_ALIGN) <= total
                    && buf
                        .get(self.cur_size as usize..)
                        .is_some_and(|b| b.iter().any(|&x| x != 0));
                let (frame, off) = if cut || grown {
                    let size = DamageKind::SizeChanged {
                        header: self.cur_size,
                        file: total,
                    };
                    (Frame::Damage(size), if grown { self.cur_size } else { off })
                } else {
                    (frame, off)
                };
                match frame {
                    Frame::Record {
                        len,
                        type_code,
                        ts_us,
                        payload,
                    } => {
                        if self.collapse_gap_us != u64::MAX {
                            if self.last_ts_us > 0
                                && ts_us > self.last_ts_us.saturating_add(self.collapse_gap_us)
                            {
                                self.collapsed_us += ts_us - self.last_ts_us;
                            }
                            self.last_ts_us = ts_us;
                        }
                        if ts_us.saturating_sub(self.collapsed_us) > self.stop_after_us {
                            if self.stop_per_segment {
                                // The rest of this segment is later; a segment after it
                                // may have been begun by a clock stepped back.
                                self.cur = None;
                                continue;
                            }
                            self.done = true;
                            return None;
                        }
                        self.off += len;
                        // Another lead's record, told by its id alone: not decoded.
                        let other_lead = self.only_lead.as_deref().is_some_and(|id| {
                            super::record::payload_lead_id(payload).is_some_and(|p| p != id)
                        });
                        match (!other_lead).then(|| Record::decode(type_code, payload)) {
                            None => Step::Skip,
                            Some(Ok(record)) => Step::Entry(Entry {
                                pos: Position {
                                    segment: m.seq,
                                    offset: off,
                                },
                                ts_us,
                                record,
                            }),
                            Some(Err(e)) if e.is_newer() => {
                                self.skipped_newer += 1;
                                Step::Skip
                            }
                            Some(Err(_)) => {
                                self.skipped_undecodable += 1;
                                Step::Skip
                            }
                        }
                    }
                    Frame::Torn { len } => {
                        self.skipped_torn += 1;
                        self.off += len;
                        Step::Skip
                    }
                    Frame::Sealed => Step::NextSegment,
                    Frame::EndOfData => match first_nonzero(buf, &m.file, off + FRAME_ALIGN) {
                        None => Step::NextSegment,
                        Some(_) if load_u32_acquire(buf, off) != 0 => Step::Skip,
                        Some(first) => Step::Damage(m.seq, off, DamageKind::DataAfterEnd { first }),
                    },
                    Frame::Damage(kind) => Step::Damage(m.seq, off, kind),
                }
            };
            match step {
                Step::Entry(e) => return Some(Ok(e)),
                Step::Skip => {}
                Step::NextSegment => self.cur = None,
                Step::Damage(seq, off, kind) => return self.stop_at(seq, off, kind),
            }
        }
    }
}

/// Timestamps in one segment may run this far past the next segment's creation time (writers
/// stamp a record just before appending it); [`Reader::open_since`] allows for it.
pub const SEGMENT_SKEW_US: u64 = 3600 * 1_000_000;

impl Reader {
    /// A reader that skips whole segments holding only records older than `since_us` (judged
    /// from segment headers, without reading records); it may still yield some older records,
    /// so callers filter by `ts_us` as well. Used to replay the open cap windows on start.
    pub fn open_since(dir: &Path, since_us: u64) -> Result<Reader, JournalError> {
        Reader::open_since_within(dir, since_us, SEGMENT_SKEW_US)
    }

    /// [`Reader::open_since`] allowing timestamps to run only `skew_us` past the next
    /// segment's creation time: far fewer segments on a busy journal, where a segment lasts
    /// minutes, but a clock stepped back by more than `skew_us` can hide records stamped
    /// before the step from it.
    pub fn open_since_within(
        dir: &Path,
        since_us: u64,
        skew_us: u64,
    ) -> Result<Reader, JournalError> {
        if !dir.is_dir() {
            return Err(JournalError::NotFound(dir.to_path_buf()));
        }
        let mut first = 0;
        for seq in list_segments(dir)? {
            let path = segment_path(dir, seq);
            let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
            let ok = File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok();
            match SegmentHeader::parse(&head) {
                // Every record before this segment is older than its creation time.
                Ok(h) if ok && h.created_us.saturating_add(skew_us) < since_us => first = seq,
                _ => break,
            }
        }
        Reader::open_from(dir, first)
    }
}

/// Replay every `Sale` record stamped at or after `since_us`, oldest first, as the exchange
/// does on start to rebuild cap and budget counters. Returns how many were replayed. Stops with
/// an error at damage that is not a torn tail (the journal should be opened, and so recovered,
/// first).
pub fn replay_sales(
    dir: &Path,
    since_us: u64,
    mut f: impl FnMut(u64, &Record),
) -> Result<u64, JournalError> {
    let mut n = 0;
    for item in Reader::open_since(dir, since_us)? {
        let e = item?;
        if e.ts_us >= since_us && matches!(e.record, Record::Sale { .. }) {
            f(e.ts_us, &e.record);
            n += 1;
        }
    }
    Ok(n)
}

/// Every whole record of the journal in `dir`, in order (see [`Reader`] for the rules).
pub fn read_all(dir: &Path) -> Result<Vec<Entry>, JournalError> {
    Reader::open(dir)?.collect()
}

/// Follows a journal as it is written (`journal tail`), polling.
pub struct Follower {
    dir: PathBuf,
    seq: u64,
    off: u64,
    cur: Option<Mapped>,
    /// An uncommitted frame being waited on, and since when.
    waiting: Option<(Position, Instant)>,
    /// A segment whose header does not read (being created, or damaged), and since when.
    bad_header: Option<(u64, Instant)>,
    /// The current segment's size as its header gives it (see [`Reader`]'s).
    cur_size: u64,
    /// [`super::fault::pages_replaced`] when the current segment was mapped.
    faults_at_map: u64,
    /// The stamp of the last record handed out: after the file was cut behind the follower
    /// and written again from the cut, reading resumes at the first record stamped later.
    last_ts_us: u64,
    /// Where the last record handed out lies in the current segment, and its stamp: a frame
    /// there that no longer reads as it says the file was written again behind the follower.
    last_at: Option<(u64, u64)>,
    /// Where the follower last found its place again that way ([`Follower::find_place`]):
    /// damage met there again is the file's, reported.
    refound_at: Option<Position>,
}

impl Follower {
    /// A follower positioned at the end of the journal, with the newest segment's last
    /// `last_n` records (at most [`MAX_TAIL_BACKLOG`]).
    pub fn from_end(dir: &Path, last_n: usize) -> Result<(Follower, Vec<Entry>), JournalError> {
        if !dir.is_dir() {
            return Err(JournalError::NotFound(dir.to_path_buf()));
        }
        let newest = list_segments(dir)?.last().copied().unwrap_or(0);
        let mut f = Follower {
            dir: dir.to_path_buf(),
            seq: newest,
            off: SEGMENT_HEADER_BYTES,
            cur: None,
            waiting: None,
            bad_header: None,
            cur_size: 0,
            faults_at_map: 0,
            last_ts_us: 0,
            last_at: None,
            refound_at: None,
        };
        let keep = last_n.min(MAX_TAIL_BACKLOG);
        let mut backlog = VecDeque::with_capacity(keep);
        f.poll(&mut |e| {
            if keep > 0 {
                if backlog.len() == keep {
                    backlog.pop_front();
                }
                backlog.push_back(e);
            }
        })?;
        Ok((f, backlog.into()))
    }

    /// A follower starting at the beginning of segment `seq`.
    pub fn from_segment(dir: &Path, seq: u64) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            seq,
            off: SEGMENT_HEADER_BYTES,
            cur: None,
            waiting: None,
            bad_header: None,
            cur_size: 0,
            faults_at_map: 0,
            last_ts_us: 0,
            last_at: None,
            refound_at: None,
        }
    }

    /// Where the next record is expected.
    pub fn position(&self) -> Position {
        Position {
            segment: self.seq,
            offset: self.off,
        }
    }

    /// Hand every record committed since the last poll to `out`; returns how many. Waits (by
    /// returning) on a record still being written, and skips one left uncommitted for longer
    /// than [`TORN_WAIT`].
    pub fn poll(&mut self, out: &mut dyn FnMut(Entry)) -> Result<usize, JournalError> {
        let mut n = 0;
        loop {
            if self.cur.is_none() {
                let path = segment_path(&self.dir, self.seq);
                if !path.exists() {
                    // Removed by retention or not created yet: go to the next one present.
                    match list_segments(&self.dir)?
                        .into_iter()
                        .find(|&s| s > self.seq)
                    {
                        Some(s) => {
                            self.seq = s;
                            self.off = SEGMENT_HEADER_BYTES;
                            self.last_at = None;
                            continue;
                        }
                        None => return Ok(n),
                    }
                }
                let m = Mapped::open(&self.dir, self.seq)?;
                let why = match SegmentHeader::parse(m.bytes()) {
                    Ok(h) if h.seq == self.seq => {
                        self.cur = Some(m);
                        self.cur_size = h.segment_bytes;
                        self.faults_at_map = super::fault::pages_replaced();
                        self.bad_header = None;
                        continue;
                    }
                    Ok(_) => "sequence differs from file name",
                    Err(HeaderError::Newer(version)) => {
                        return Err(JournalError::UnsupportedFormat {
                            segment: self.seq,
                            version,
                        })
                    }
                    Err(HeaderError::Damaged(why)) => why,
                };
                // Being created right now: look again at the next poll. One that stays
                // unreadable is damage, told as `verify` tells it.
                match self.bad_header {
                    Some((seq, since)) if seq == self.seq && since.elapsed() >= TORN_WAIT => {
                        return Err(JournalError::Damaged {
                            at: Position {
                                segment: self.seq,
                                offset: 0,
                            },
                            kind: DamageKind::BadSegmentHeader(why),
                        });
                    }
                    Some((seq, _)) if seq == self.seq => {}
                    _ => self.bad_header = Some((self.seq, Instant::now())),
                }
                return Ok(n);
            }
            // The file shorter than its header says (cut short), and its end reached here:
            // the end of the data in it, or a frame running past that end.
            let short = {
                let Some(m) = &self.cur else { return Ok(n) };
                let buf = m.bytes();
                let total = buf.len() as u64;
                let cut = total < self.cur_size
                    && match read_frame(buf, self.off) {
                        Frame::Sealed => self.off.saturating_add(FRAME_ALIGN) > total,
                        Frame::Damage(DamageKind::BadLength(len)) => {
                            self.off.saturating_add(u64::from(len)) > total
                        }
                        _ => false,
                    };
                cut.then_some(total)
            };
            if let Some(total) = short {
                // A start sets the newest segment back to its size and appends from its last
                // whole record: the file mapped again is followed from here. Until then it
                // is a torn tail, waited on; with a later segment, the records past the cut
                // are lost.
                if self.rewritten_behind() {
                    self.find_place()?;
                    continue;
                }
                if !list_segments(&self.dir)?.into_iter().any(|s| s > self.seq) {
                    return Ok(n);
                }
                return Err(JournalError::Damaged {
                    at: Position {
                        segment: self.seq,
                        offset: self.off,
                    },
                    kind: DamageKind::SizeChanged {
                        header: self.cur_size,
                        file: total,
                    },
                });
            }
            let Some(m) = &self.cur else { return Ok(n) };
            let buf = m.bytes();
            let off = self.off;
            match read_frame(buf, off) {
                Frame::Record {
                    len,
                    type_code,
                    ts_us,
                    payload,
                } => {
                    self.off += len;
                    self.waiting = None;
                    self.last_ts_us = self.last_ts_us.max(ts_us);
                    self.last_at = Some((off, ts_us));
                    if let Ok(record) = Record::decode(type_code, payload) {
                        out(Entry {
                            pos: Position {
                                segment: self.seq,
                                offset: off,
                            },
                            ts_us,
                            record,
                        });
                        n += 1;
                    }
                }
                Frame::Torn { len } => {
                    let here = Position {
                        segment: self.seq,
                        offset: off,
                    };
                    match self.waiting {
                        // Skipped only once a record was committed after it: a torn record
                        // with nothing after it is the tail a crash left, which the writer's
                        // next start reclaims, writing its own records from its start.
                        Some((p, since))
                            if p == here
                                && since.elapsed() >= TORN_WAIT
                                && self.committed_after(buf, off + len)? =>
                        {
                            self.off += len;
                            self.waiting = None;
                        }
                        Some((p, _)) if p == here => return Ok(n),
                        _ => {
                            self.waiting = Some((here, Instant::now()));
                            return Ok(n);
                        }
                    }
                }
                Frame::Sealed => {
                    if !self.advance()? {
                        return Ok(n);
                    }
                }
                Frame::EndOfData => {
                    if self.rewritten_behind() {
                        self.find_place()?;
                        continue;
                    }
                    // Data continues in a later segment only if this one was left unsealed by
                    // a crash and the next one already holds a record.
                    if !self.next_has_data()? || !self.advance()? {
                        return Ok(n);
                    }
                }
                // The newest segment, cut behind the follower and written again from the cut
                // by a start (its file the same size as before): what reads as damage here
                // may be the middle of a new record. Its place found again once, the damage
                // is the file's if it is met there again.
                Frame::Damage(_)
                    if self.refound_at != Some(self.position())
                        && !list_segments(&self.dir)?.into_iter().any(|s| s > self.seq) =>
                {
                    self.find_place()?;
                    self.refound_at = Some(self.position());
                    continue;
                }
                Frame::Damage(kind) => {
                    return Err(JournalError::Damaged {
                        at: Position {
                            segment: self.seq,
                            offset: off,
                        },
                        kind,
                    })
                }
            }
        }
    }

    /// Whether the journal holds a record after `off` of the current segment (`buf`), past
    /// any run of uncommitted frames: in this segment, or in a later one when this one ends.
    fn committed_after(&self, buf: &[u8], mut off: u64) -> Result<bool, JournalError> {
        loop {
            match read_frame(buf, off) {
                Frame::Torn { len } => off += len,
                Frame::EndOfData => return self.next_has_data(),
                Frame::Record { .. } | Frame::Sealed | Frame::Damage(_) => return Ok(true),
            }
        }
    }

    /// Move to the next segment present; false if there is none yet.
    fn advance(&mut self) -> Result<bool, JournalError> {
        match list_segments(&self.dir)?
            .into_iter()
            .find(|&s| s > self.seq)
        {
            Some(s) => {
                self.seq = s;
                self.off = SEGMENT_HEADER_BYTES;
                self.cur = None;
                self.waiting = None;
                self.last_at = None;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether the current segment's file is no longer what its mapping shows: its length
    /// on disk is not the mapping's, or a page of a mapping was replaced since it was made
    /// (the file cut short under it).
    /// (the file cut short under it), or the last record handed out no longer reads there.
    fn rewritten_behind(&self) -> bool {
        let Some(m) = &self.cur else { return false };
        let buf = m.bytes();
        let mapped_len = buf.len() as u64;
        let path = segment_path(&self.dir, self.seq);
        let len = std::fs::metadata(&path).map_or(mapped_len, |m| m.len());
        let last_gone = self.last_at.is_some_and(
            |(off, ts)| !matches!(read_frame(buf, off), Frame::Record { ts_us, .. } if ts_us == ts),
        );
        len != mapped_len || super::fault::pages_replaced() != self.faults_at_map || last_gone
    }

    /// Map the current segment again and find the follower's place in it as it is now: the
    /// first record stamped after the last one handed out (a start writes from the last
    /// whole record before a cut, later), else the end of its records.
    fn find_place(&mut self) -> Result<(), JournalError> {
        let m = Mapped::open(&self.dir, self.seq)?;
        let mut off = SEGMENT_HEADER_BYTES;
        loop {
            match read_frame(m.bytes(), off) {
                Frame::Record { len, ts_us, .. } if ts_us <= self.last_ts_us => off += len,
                _ => break,
            }
        }
        self.off = off;
        self.waiting = None;
        self.last_at = None;
        self.faults_at_map = super::fault::pages_replaced();
        if let Ok(h) = SegmentHeader::parse(m.bytes()) {
            self.cur_size = h.segment_bytes;
        }
        self.cur = Some(m);
        Ok(())
    }

    fn next_has_data(&self) -> Result<bool, JournalError> {
        let Some(next) = list_segments(&self.dir)?
            .into_iter()
            .find(|&s| s > self.seq)
        else {
            return Ok(false);
        };
        let m = Mapped::open(&self.dir, next)?;
        Ok(load_u32_acquire(m.bytes(), SEGMENT_HEADER_BYTES) != 0)
    }
}
