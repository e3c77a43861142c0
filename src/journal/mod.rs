//! The bid journal: the exchange's book of record.
//!
//! Buyers are billed, sellers paid and disputes settled from these records, and on start the
//! exchange rebuilds its cap and budget counters from them. Every worker appends on the hot path
//! (about ten records per lead), so an append is a handful of atomic operations and a copy into
//! a memory-mapped segment: no lock, no system call, no allocation.
//!
//! Layout of the module:
//! - [`format`]: the on-disk layout (segment header, record frame) and the frame parser that
//!   every reader shares.
//! - [`record`]: the record types and their compact binary payload codec.
//! - [`writer`]: [`Journal`], the concurrent appender (claim by compare-and-swap, publish by a
//!   commit word), rotation, retention and the sync modes.
//! - [`recovery`]: the scan run on open and by `verify`, and the reports it produces.
//! - [`head`]: the `HEAD` file naming the newest segment begun, so a deleted newest segment
//!   is found.
//! - [`reader`]: read-only streaming readers for replay, export and `tail`.
//! - [`salvage`]: the records recovery cut out and set aside, read back for the exchange's
//!   counters on start.
//! - [`fault`]: a SIGBUS handler for mapped segments cut short by something else.
//! - [`cli`]: `gavel journal export | show | tail | verify`.
//!
//! `docs/JOURNAL.md` describes the format byte by byte and the rules for recovery.

pub mod cli;
pub mod fault;
pub mod format;
pub mod head;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod salvage;
mod segment;
pub mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use reader::{read_all, replay_sales, Entry, Follower, Reader, SEGMENT_SKEW_US};
pub use record::{
    answer_promise, post_promise, DecodeError, LeadFlow, LeadStatus, PayoutTerms, PingOutcome,
    Record, RecordRef, RecordType, Unsettled, MAX_POST_TEXT_BYTES,
};
pub use recovery::{verify, Cut, Damage, DamageKind, RecoveryReport, VerifyReport};
pub use salvage::{replay_set_aside, SetAsideReport};
pub use segment::segment_path;
pub use writer::Journal;

/// Smallest segment accepted: large enough for the header and a good number of leads, small
/// enough that tests can exercise rotation cheaply.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

/// Largest segment accepted. Offsets inside a segment stay far below `usize` on every supported
/// target, and one segment never pins more than this much address space.
pub const MAX_SEGMENT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// The longest cap window (a calendar month, rounded up). Caps are rebuilt from the journal on
/// start, so no segment holding a record younger than this may be removed by retention.
pub const CAP_WINDOW_US: u64 = 32 * 24 * 3600 * 1_000_000;

/// How the journal makes appended records durable. Each mode survives a process crash (the
/// records are in the kernel's page cache the instant `append` returns); they differ on an OS
/// crash or power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Nothing beyond the page cache: an OS crash loses whatever the kernel had not yet written.
    Os,
    /// A background thread writes dirty pages to disk every interval: an OS crash loses at most
    /// about one interval of records.
    Interval(Duration),
    /// `Journal::sync_to` writes through the given record before the exchange answers the
    /// seller: an answered lead survives an OS crash.
    Always,
}

impl SyncMode {
    /// Parse the `[journal] sync` key; `interval_ms` is used for `"interval"`.
    pub fn from_config(sync: &str, interval_ms: u64) -> Result<SyncMode, JournalError> {
        match sync {
            "os" => Ok(SyncMode::Os),
            "interval" => {
                if interval_ms == 0 {
                    return Err(JournalError::InvalidOptions(
                        "journal.sync_interval_ms must be at least 1".to_string(),
                    ));
                }
                Ok(SyncMode::Interval(Duration::from_millis(interval_ms)))
            }
            "always" => Ok(SyncMode::Always),
            other => Err(JournalError::InvalidOptions(format!(
                "journal.sync must be \"os\", \"interval\" or \"always\", not {other:?}"
            ))),
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncMode::Os => write!(f, "os"),
            SyncMode::Interval(d) => write!(f, "interval ({} ms)", d.as_millis()),
            SyncMode::Always => write!(f, "always"),
        }
    }
}

/// Where and how the journal is kept (the `[journal]` section of the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// Directory holding the segment files.
    pub dir: PathBuf,
    /// Size of each new segment file, a multiple of 8 within
    /// [`MIN_SEGMENT_BYTES`]..=[`MAX_SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// Durability mode.
    pub sync: SyncMode,
    /// Segments kept before the oldest is removed; 0 keeps every segment. A segment that may
    /// still hold records of an open cap window is kept regardless (see [`CAP_WINDOW_US`]).
    pub retain_segments: usize,
    /// Records younger than this many microseconds are never removed, whatever
    /// `retain_segments` says: at least [`CAP_WINDOW_US`] (the caps are rebuilt from them), and
    /// the longest `dedupe_days` (so is the dedupe index).
    pub keep_us: u64,
}

impl JournalOptions {
    /// Options with the configuration's defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> JournalOptions {
        JournalOptions {
            dir: dir.into(),
            segment_bytes: 256 * 1024 * 1024,
            sync: SyncMode::Interval(Duration::from_millis(10)),
            retain_segments: 64,
            keep_us: CAP_WINDOW_US,
        }
    }

    /// Options from the raw `[journal]` configuration section.
    pub fn from_config(
        cfg: &crate::config::types::JournalConfig,
    ) -> Result<JournalOptions, JournalError> {
        let opts = JournalOptions {
            dir: PathBuf::from(&cfg.dir),
            segment_bytes: cfg.segment_bytes,
            sync: SyncMode::from_config(&cfg.sync, cfg.sync_interval_ms)?,
            retain_segments: cfg.retain_segments,
            keep_us: CAP_WINDOW_US,
        };
        opts.validate()?;
        Ok(opts)
    }

    /// Check the limits `Journal::open` relies on, naming the key at fault.
    pub fn validate(&self) -> Result<(), JournalError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(JournalError::InvalidOptions(format!(
                "journal.segment_bytes must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, not {}",
                self.segment_bytes
            )));
        }
        if self.segment_bytes % format::FRAME_ALIGN != 0 {
            return Err(JournalError::InvalidOptions(format!(
                "journal.segment_bytes must be a multiple of {}, not {}",
                format::FRAME_ALIGN,
                self.segment_bytes
            )));
        }
        if let SyncMode::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(JournalError::InvalidOptions(
                    "journal.sync_interval_ms must be at least 1".to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// Where a record starts: its segment's sequence number and its byte offset in that segment.
/// Positions order records in the order they were claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sequence number of the segment (its file name).
    pub segment: u64,
    /// Byte offset of the record's frame within the segment file.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} offset {}", self.segment, self.offset)
    }
}

/// Errors of the journal layer.
#[derive(Debug)]
pub enum JournalError {
    /// An operating-system call on the journal's files failed; `op` names the call.
    Io {
        /// What was being done (`"open"`, `"mmap"`, `"msync"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The options are out of range; the message names the configuration key.
    InvalidOptions(String),
    /// The journal directory does not exist (readers never create it).
    NotFound(PathBuf),
    /// Another process holds the journal open for writing; two writers would corrupt it.
    Locked(PathBuf),
    /// A segment was written by a newer format version than this build understands; it is
    /// neither read nor cut.
    UnsupportedFormat {
        /// Sequence number of the segment.
        segment: u64,
        /// The version found in its header.
        version: u32,
    },
    /// The record does not fit in one frame of a segment (or exceeds the payload limit).
    RecordTooLarge {
        /// Frame size the record needs.
        frame_bytes: u64,
        /// Largest frame this journal accepts.
        max_frame_bytes: u64,
    },
    /// A field is longer than its length prefix can describe.
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes (or entries).
        len: usize,
    },
    /// The newest segments are gone: `HEAD` names segment `head` as begun, and the newest
    /// segment file left is older. Their records (sales, caps, budgets) would be forgotten, so
    /// `Journal::open` refuses to start until they are restored, or `HEAD` is removed to
    /// accept the loss.
    NewestMissing {
        /// The journal directory.
        dir: PathBuf,
        /// The first segment missing.
        first: u64,
        /// The segment `HEAD` names.
        head: u64,
    },
    /// The oldest segments are gone before retention let them go: `HEAD` says the journal
    /// keeps every segment from `first`, and the oldest left is `last + 1`. Their records
    /// (sales in open cap windows, leads in the dedupe window) would be forgotten, so
    /// `Journal::open` refuses to start until they are restored, or `HEAD` is removed to
    /// accept the loss.
    OldestMissing {
        /// The journal directory.
        dir: PathBuf,
        /// The oldest segment `HEAD` says is kept.
        first: u64,
        /// The last segment missing.
        last: u64,
    },
    /// The `HEAD` file is not one this build wrote.
    BadHead {
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No next segment can be made (a full disk) and the room left in the current one is
    /// kept for records already promised it: the results and sales of posts in flight
    /// (see [`Journal::append_promising`](writer::Journal::append_promising)).
    NoRoom {
        /// Bytes promised at the moment of refusal.
        promised: u64,
    },
    /// The journal is damaged at this position: whole records follow the damage, so it is not
    /// a torn tail. Readers stop here; `Journal::open` cuts here.
    Damaged {
        /// Where the damage starts.
        at: Position,
        /// What is wrong there.
        kind: DamageKind,
    },
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> JournalError {
        JournalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            JournalError::InvalidOptions(msg) => write!(f, "{msg}"),
            JournalError::NotFound(dir) if dir.exists() => {
                write!(f, "journal directory {} is not a directory", dir.display())
            }
            JournalError::NotFound(dir) => {
                write!(f, "journal directory {} not found", dir.display())
            }
            JournalError::Locked(dir) => {
                write!(
                    f,
                    "journal {} is open for writing by another process",
                    dir.display()
                )
            }
            JournalError::UnsupportedFormat { segment, version } => write!(
                f,
                "segment {segment} has format version {version}; this build reads up to {}",
                format::FORMAT_VERSION
            ),
            JournalError::RecordTooLarge {
                frame_bytes,
                max_frame_bytes,
            } => {
                write!(f, "record needs {frame_bytes} bytes, more than the {max_frame_bytes} a frame may hold")
            }
            JournalError::FieldTooLong { field, len } => {
                write!(f, "field {field} is too long ({len})")
            }
            JournalError::NewestMissing { dir, first, head } => {
                let which = if first == head {
                    format!("segment {head} is")
                } else {
                    format!("segments {first} to {head} are")
                };
                write!(
                    f,
                    "journal {dir}: {which} missing: {head_file} names segment {head} as begun, \
                     and no segment file that new is left. The records in it (sales, caps, \
                     budgets) would be forgotten. Restore the missing file(s) from a backup, or \
                     accept the loss by removing {head_file}",
                    dir = dir.display(),
                    head_file = dir.join(head::HEAD_FILE).display(),
                )
            }
            JournalError::OldestMissing { dir, first, last } => {
                let which = if first == last {
                    format!("segment {first} is")
                } else {
                    format!("segments {first} to {last} are")
                };
                write!(
                    f,
                    "journal {dir}: {which} missing: {head_file} says the journal keeps every \
                     segment from {first}, and the oldest left is {next}; they were removed \
                     before retention would. The records in them (sales in open cap windows, \
                     leads in the dedupe window) would be forgotten. Restore the missing \
                     file(s) from a backup, or accept the loss by removing {head_file}",
                    dir = dir.display(),
                    next = last + 1,
                    head_file = dir.join(head::HEAD_FILE).display(),
                )
            }
            JournalError::BadHead { path, why } => write!(
                f,
                "journal head marker {}: {why}; remove it to have it written again",
                path.display()
            ),
            JournalError::NoRoom { promised } => write!(
                f,
                "no next segment can be made and the room left is kept for the results of \
                 posts in flight ({promised} bytes)"
            ),
            JournalError::Damaged { at, kind } => write!(f, "journal damaged at {at}: {kind}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
