//! The head marker: a small file, `HEAD`, naming the newest segment the journal has begun.
//!
//! A segment missing between two others is found by the scan (the numbers jump), but the
//! newest one deleted leaves no gap: the journal would simply end one segment early, and every
//! sale, cap and budget in it would be forgotten without a word. `HEAD` closes that hole. The
//! background thread rewrites it after each rotation; `open` and `verify` compare it with the
//! segments on disk, and a newest segment older than `HEAD` names is damage that `open` refuses
//! to start on.
//!
//! `HEAD` only ever lags: it is written after the segment it names exists (and, in the durable
//! sync modes, after the directory entry is on disk), by a write to a side file renamed into
//! place, so a crash leaves either the old name or the new one. A lagging `HEAD` (a crash just
//! after a rotation) is harmless: segments newer than it are accepted. Recovery lowers it
//! before it sets a segment aside, for the same reason. A journal without `HEAD` (an older
//! build's, or an operator's removal to accept a loss) is checked no further and gets one.
//!
//! The oldest end has the same hole: a segment deleted from the front leaves no gap either,
//! and its sales would drop out of the cap windows and its leads out of the dedupe index.
//! `HEAD` also names the oldest segment the journal keeps (`oldest N`); retention rewrites it
//! *before* it removes a segment, so `HEAD` only ever names an oldest segment that is on disk
//! or older than one that is. Segments older than it are harmless (a crash between the
//! rewrite and the removal); a first segment newer than it is damage, found by `open`,
//! `verify` and the readers. A marker without the line (an older build's) checks only the
//! newest end.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use super::segment::sync_dir;
use super::JournalError;

/// Name of the head marker in the journal directory.
pub const HEAD_FILE: &str = "HEAD";

/// Name the marker is written under before it is renamed to [`HEAD_FILE`].
const HEAD_PARTIAL: &str = "HEAD.partial";

/// First line of the marker.
const MAGIC: &str = "gavel-journal-head 1";

/// Largest marker read (it holds three short lines).
const MAX_HEAD_BYTES: u64 = 256;

/// What `HEAD` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The newest segment begun.
    pub newest: u64,
    /// The oldest segment kept (`None`: a marker written without it).
    pub oldest: Option<u64>,
}

/// The newest segment `HEAD` names, or `None` when there is no `HEAD` (or an empty one).
pub fn read_head(dir: &Path) -> Result<Option<u64>, JournalError> {
    Ok(read_marker(dir)?.map(|h| h.newest))
}

/// What `HEAD` says, or `None` when there is no `HEAD` (or an empty one).
pub fn read_marker(dir: &Path) -> Result<Option<Head>, JournalError> {
    let path = dir.join(HEAD_FILE);
    let bad = |why: &str| JournalError::BadHead {
        path: path.clone(),
        why: why.to_string(),
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("stat", &path, e)),
    };
    if !meta.is_file() {
        return Err(bad("not a regular file"));
    }
    if meta.len() == 0 {
        // Only a crash can leave it empty (its renamed write reached the disk before its
        // bytes, without an fsync in `os` mode): checked no further, and written again.
        return Ok(None);
    }
    if meta.len() > MAX_HEAD_BYTES {
        return Err(bad("too long"));
    }
    let text = std::fs::read(&path).map_err(|e| JournalError::io("read", &path, e))?;
    let text = std::str::from_utf8(&text).map_err(|_| bad("not text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("first line is not the marker's"));
    }
    let seq = lines
        .next()
        .and_then(|l| l.strip_prefix("segment "))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| bad("no `segment N` line"))?;
    let oldest = match lines.next() {
        None => None,
        Some(l) => {
            let n = l
                .strip_prefix("oldest ")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| bad("third line is not `oldest N`"))?;
            if n > seq {
                return Err(bad("the oldest segment it names is newer than the newest"));
            }
            Some(n)
        }
    };
    if lines.next().is_some() {
        return Err(bad("more lines than the marker's"));
    }
    Ok(Some(Head {
        newest: seq,
        oldest,
    }))
}

/// Make `HEAD` name segment `seq` as the newest, and no oldest, as an older build's marker
/// does (the exchange writes both, [`write_marker`]).
#[cfg(test)]
pub fn write_head(dir: &Path, seq: u64, durable: bool) -> Result<(), JournalError> {
    write_marker(
        dir,
        Head {
            newest: seq,
            oldest: None,
        },
        durable,
    )
}

/// Write `HEAD`. With `durable`, the file and the directory entry are on disk when this
/// returns.
pub fn write_marker(dir: &Path, head: Head, durable: bool) -> Result<(), JournalError> {
    let text = match head.oldest {
        Some(o) => format!("{MAGIC}\nsegment {}\noldest {o}\n", head.newest),
        None => format!("{MAGIC}\nsegment {}\n", head.newest),
    };
    let partial = dir.join(HEAD_PARTIAL);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(|e| JournalError::io("create", &partial, e))?;
    let written = f
        .write_all(text.as_bytes())
        .map_err(|e| ("write", e))
        .and_then(|()| match durable {
            true => f.sync_all().map_err(|e| ("fsync", e)),
            false => Ok(()),
        });
    drop(f);
    if let Err((what, e)) = written {
        // A full disk: no half-written side file left beside the journal (the next
        // rotation writes it again).
        let _ = std::fs::remove_file(&partial);
        return Err(JournalError::io(what, &partial, e));
    }
    let path = dir.join(HEAD_FILE);
    std::fs::rename(&partial, &path).map_err(|e| JournalError::io("rename", &partial, e))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Remove `HEAD` (recovery, when no segment it could name is left yet).
pub fn remove_head(dir: &Path, durable: bool) -> Result<(), JournalError> {
    let path = dir.join(HEAD_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(JournalError::io("remove", &path, e)),
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The segments `HEAD` names that are not on disk: `Some((first missing, head))` when the
/// newest segment in `seqs` (ascending) is older than `head`.
pub fn missing_newest(head: Option<u64>, seqs: &[u64]) -> Option<(u64, u64)> {
    let head = head?;
    match seqs.last() {
        Some(&newest) if newest >= head => None,
        Some(&newest) => Some((newest + 1, head)),
        None => Some((head, head)),
    }
}

/// The oldest segments `HEAD` says are kept that are not on disk: `Some((first, last))` when
/// the oldest segment in `seqs` (ascending, listed *before* `head` was read, so a removal by
/// retention meanwhile is not taken for a loss) is newer than the oldest `head` names. No
/// segment at all is [`missing_newest`]'s to report.
pub fn missing_oldest(head: Option<Head>, seqs: &[u64]) -> Option<(u64, u64)> {
    let oldest = head?.oldest?;
    match seqs.first() {
        Some(&first) if first > oldest => Some((oldest, first - 1)),
        _ => None,
    }
}

/// Whether segment `seq`, listed but gone when opened, was removed by retention meanwhile (a
/// reader beside a running exchange): `HEAD` now names a newer oldest segment kept.
pub fn removed_by_retention(dir: &Path, seq: u64) -> bool {
    matches!(
        read_marker(dir),
        Ok(Some(Head {
            oldest: Some(o),
            ..
        })) if seq < o
    )
}
