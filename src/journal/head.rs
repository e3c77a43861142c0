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

/// Largest marker read (it holds two short lines).
const MAX_HEAD_BYTES: u64 = 256;

/// The segment `HEAD` names, or `None` when there is no `HEAD` (or an empty one).
pub fn read_head(dir: &Path) -> Result<Option<u64>, JournalError> {
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
    Ok(Some(seq))
}

/// Make `HEAD` name segment `seq`. With `durable`, the file and the directory entry are on
/// disk when this returns.
pub fn write_head(dir: &Path, seq: u64, durable: bool) -> Result<(), JournalError> {
    let partial = dir.join(HEAD_PARTIAL);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(|e| JournalError::io("create", &partial, e))?;
    let written = f
        .write_all(format!("{MAGIC}\nsegment {seq}\n").as_bytes())
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
