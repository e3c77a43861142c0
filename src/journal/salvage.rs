//! The records recovery set aside, read back for the exchange's counters.
//!
//! A cut that is not a torn tail takes whole records out of the journal: those after the damage
//! in the damaged segment (kept in the copy recovery made of it, `NNN.seg.cut-SECS`) and those
//! in later segments (moved aside whole, `NNN.seg.cut`). They stay out of the journal: no
//! reader, `export`, `verify` or `tail` sees them, and billing is the operator's call. But they
//! were sold, capped and deduplicated before the damage was found, so on start the exchange
//! counts them again toward caps, budgets, dedupe and P&L with [`replay_set_aside`], on every
//! start for as long as the files are there.
//!
//! They are found exactly as the cut counted them ([`resync_each`]): in a copy, from just after
//! the first damage (the same damage recovery cut at: the copy holds the bytes it saw); in a
//! segment moved aside, from its first frame. After a whole record the scan continues at its
//! end; elsewhere it tries each 8-byte boundary and accepts only a frame that carries the commit
//! magic and a matching CRC32C over its length, type, time and payload.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::format::{HeaderError, SegmentHeader, FRAME_ALIGN, SEGMENT_HEADER_BYTES};
use super::reader::Entry;
use super::record::Record;
use super::recovery::{map_read_only, resync_each, scan_segment, Analysis, Found};
use super::segment::{
    read_journal_dir, COPY_INFIX, CUT_SUFFIX, MAX_SEGMENT_FILES, SEGMENT_SUFFIX, SEQ_DIGITS,
};
use super::{JournalError, Position};

/// How recovery set a file aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsideKind {
    /// `NNN.seg.cut-SECS[.N]`: a copy of segment NNN made before it was cut. The records before
    /// its first damage are still in the live segment; those after it are not.
    Copy,
    /// `NNN.seg.cut[.N]`: segment NNN itself, renamed. None of its records are in the journal.
    Moved,
}

/// A file recovery set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsideFile {
    /// Where it is.
    pub path: PathBuf,
    /// The sequence number of the segment it was (the first 20 digits of its name).
    pub seq: u64,
    /// Copy or moved.
    pub kind: AsideKind,
}

/// The files recovery set aside in `dir`, by name. Only the names recovery gives count: a file
/// renamed by an operator (`.bak`, say) is no longer read.
pub fn set_aside_files(dir: &Path) -> Result<Vec<AsideFile>, JournalError> {
    let rd = read_journal_dir(dir)?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| JournalError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some((seq, kind)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        if files.len() >= MAX_SEGMENT_FILES {
            return Err(JournalError::InvalidOptions(format!(
                "{} holds more than {MAX_SEGMENT_FILES} files set aside",
                dir.display()
            )));
        }
        files.push(AsideFile {
            path: entry.path(),
            seq,
            kind,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The segment and kind named by a set-aside file's name, if it is one.
fn parse_name(name: &str) -> Option<(u64, AsideKind)> {
    let stem = name.get(..SEQ_DIGITS)?;
    if !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = stem.parse().ok()?;
    let rest = name.get(SEQ_DIGITS..)?.strip_prefix(SEGMENT_SUFFIX)?;
    if let Some(copy) = rest.strip_prefix(COPY_INFIX) {
        // SECS or SECS.N
        let mut parts = copy.splitn(2, '.');
        let secs_ok = parts.next().is_some_and(all_digits);
        let n_ok = parts.next().is_none_or(all_digits);
        return (secs_ok && n_ok).then_some((seq, AsideKind::Copy));
    }
    let moved = rest.strip_prefix(CUT_SUFFIX)?;
    let n_ok = moved.is_empty() || moved.strip_prefix('.').is_some_and(all_digits);
    n_ok.then_some((seq, AsideKind::Moved))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// What [`replay_set_aside`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAsideReport {
    /// Set-aside files that held records cut from the journal.
    pub files: usize,
    /// Whole records found in them (whatever their time): as many as the cuts reported.
    pub records: u64,
    /// Of those, the ones stamped at or after `since_us` and handed over.
    pub replayed: u64,
    /// Of those, the ones of a newer type or version, or whose payload does not decode:
    /// skipped, as readers skip them.
    pub skipped: u64,
}

/// Hand `f` every whole record recovery cut out of the journal in `dir` and set aside (see
/// the module documentation) that is stamped at or after `since_us`, file by file, in each
/// file in order. An entry's `pos` is its place in the set-aside file, which starts with that
/// segment's number. Nothing is written. A file removed while this runs is passed over; a file
/// from a newer format is refused (`UnsupportedFormat`), as a live segment would be.
pub fn replay_set_aside(
    dir: &Path,
    since_us: u64,
    mut f: impl FnMut(&Entry),
) -> Result<SetAsideReport, JournalError> {
    if !dir.is_dir() {
        return Err(JournalError::NotFound(dir.to_path_buf()));
    }
    let mut report = SetAsideReport::default();
    for aside in set_aside_files(dir)? {
        let path = &aside.path;
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(JournalError::io("open", path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", path, e))?
            .len();
        let map = map_read_only(&file, path, len)?;
        let buf: &[u8] = map.as_ref().map_or(&[][..], |m| &m[..]);
        let from = match aside.kind {
            AsideKind::Moved => {
                if let Err(HeaderError::Newer(version)) = SegmentHeader::parse(buf) {
                    return Err(JournalError::UnsupportedFormat {
                        segment: aside.seq,
                        version,
                    });
                }
                SEGMENT_HEADER_BYTES
            }
            AsideKind::Copy => {
                let mut scratch = Analysis::default();
                match scan_segment(buf, &file, aside.seq, false, &mut scratch)?.damage {
                    Some((off, _)) => (off + FRAME_ALIGN).max(SEGMENT_HEADER_BYTES),
                    // Nothing in it was cut (it was not made by a cut, or has been replaced).
                    None => continue,
                }
            }
        };
        let before = report.records;
        let mut hand_over = |found: Found<'_>| {
            report.records += 1;
            if found.ts_us < since_us {
                return;
            }
            match Record::decode(found.type_code, found.payload) {
                Ok(record) => {
                    report.replayed += 1;
                    f(&Entry {
                        pos: Position {
                            segment: aside.seq,
                            offset: found.offset,
                        },
                        ts_us: found.ts_us,
                        record,
                    });
                }
                Err(_) => report.skipped += 1,
            }
        };
        resync_each(buf, &file, from, from, &mut hand_over);
        if report.records > before {
            report.files += 1;
        }
    }
    Ok(report)
}
