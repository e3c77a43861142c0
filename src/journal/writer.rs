//! The concurrent appender.
//!
//! Append protocol (lock-free; see `docs/JOURNAL.md`):
//! 1. Pin the current segment's slot (a counter the rotation waits on before unmapping).
//! 2. From the slot's tail hint, compare-and-swap the `len` word at the tail from 0 to the
//!    frame's length. The winner owns the frame from that instant, and its length is in the
//!    file; a loser reads the winner's length and tries just past it.
//! 3. Advance the shared tail hint, write header and payload, then store the `commit` word
//!    with release ordering: only now is the record visible to readers.
//!
//! A frame that does not fit seals the segment with an end sentinel and rotates to the next
//! one under a mutex: the only lock, taken once per segment.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::format::{
    frame_crc, frame_len, COMMIT_MAGIC, END_OF_SEGMENT, FRAME_ALIGN, FRAME_HEADER_BYTES,
    MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, SEGMENT_HEADER_BYTES,
};
use super::head::{missing_newest, missing_oldest, read_marker, remove_head, write_marker, Head};
use super::record::RecordRef;
use super::recovery::{analyze, Cut, DamageKind, RecoveryReport};
use super::segment::{
    copy_aside, list_segments, lock_dir, move_aside, segment_path, sync_dir, Segment, Spare,
};
use super::{JournalError, JournalOptions, Position, SyncMode, CAP_WINDOW_US};

/// Segments kept mapped at once. A slot is reused (its segment unmapped) only after every
/// writer pinned to it has left, so this bounds address space, not correctness.
pub const SEGMENT_SLOTS: usize = 4;

/// Rotations one append may trigger before giving up (one is normal; a second happens only
/// if the segment it rotated into was filled by others at once).
const MAX_ROTATIONS_PER_APPEND: u32 = 8;

/// A record stamped this much before the latest one appended means the wall clock was stepped
/// back (writers' own skew is microseconds): it starts a segment of its own, so that within a
/// segment times only grow. A lookup then passes over the records stamped after its lead's
/// horizon segment by segment, not to the journal's end, without missing a lead written
/// after the step.
pub const CLOCK_STEP_BACK_US: u64 = 1_000_000;

/// How far ahead of the tail the background thread faults pages in, so appends never take a
/// page fault: at 2 M appends/s of 256 bytes this is about 16 ms of appends.
pub const PREFAULT_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// Faulted in synchronously when a segment is created or opened, covering the appends made
/// before the background thread catches up.
const PREFAULT_FIRST_BYTES: u64 = 1024 * 1024;

/// Written pages this far behind the durable (or, with `sync = "os"`, committed) frontier
/// are dropped from the process's resident set, in steps of at least this much.
pub const RELEASE_BEHIND_BYTES: u64 = 1024 * 1024;

/// The range to fault in ahead of a segment's writers: from what was prefaulted, or from the
/// tail's page when the writers have passed it (the pages behind the tail were faulted by the
/// writes themselves, and may since have been released: faulting them again would keep them
/// resident for the segment's life), to [`PREFAULT_AHEAD_BYTES`] past the tail. `None` when
/// nothing is left to do.
pub(crate) fn prefault_range(
    prefaulted: u64,
    tail: u64,
    len: u64,
    page: u64,
) -> Option<(u64, u64)> {
    let want = tail.saturating_add(PREFAULT_AHEAD_BYTES).min(len);
    let from = prefaulted.max(tail / page.max(1) * page.max(1));
    (from < want).then_some((from, want))
}

/// The background thread's tick when no sync interval drives it.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// Margin added to the cap window before a segment may be removed, covering timestamps taken
/// by writers shortly before the rotation that followed them.
const RETENTION_MARGIN_US: u64 = 3600 * 1_000_000;

/// How long after a failed attempt (a full disk) the background thread tries again to make the
/// spare segment.
pub const SPARE_RETRY: Duration = Duration::from_secs(1);

/// Marks a slot holding no segment (or one being replaced).
const EMPTY: u64 = u64::MAX;

/// One mapped segment and its hot counters.
#[repr(align(128))]
struct Slot {
    /// Sequence number of the segment held, or [`EMPTY`].
    seq: AtomicU64,
    /// Threads currently using the segment; it is unmapped only at zero.
    pins: AtomicU64,
    /// A frame boundary at or before the tail: where claims start looking.
    tail: AtomicU64,
    /// Bytes from the segment's start that are faulted in.
    prefaulted: AtomicU64,
    /// Writers past this offset wake the background thread to fault in more.
    prefault_wake: AtomicU64,
    /// Bytes from the segment's start dropped from the resident set (written and behind the
    /// frontier); only the background thread moves it.
    released: AtomicU64,
    /// With `sync = "os"`: a frame boundary before which every record is committed, where
    /// the background thread's next walk starts.
    walked: AtomicU64,
    /// The segment; replaced only by rotation while `seq == EMPTY` and `pins == 0`.
    seg: UnsafeCell<Option<Segment>>,
}

// SAFETY: `seg` is written only under the rotation protocol above (no pins, no new pins
// possible) and otherwise only read.
unsafe impl Sync for Slot {}

impl Slot {
    fn empty() -> Slot {
        Slot {
            seq: AtomicU64::new(EMPTY),
            pins: AtomicU64::new(0),
            tail: AtomicU64::new(SEGMENT_HEADER_BYTES),
            prefaulted: AtomicU64::new(0),
            prefault_wake: AtomicU64::new(0),
            released: AtomicU64::new(0),
            walked: AtomicU64::new(SEGMENT_HEADER_BYTES),
            seg: UnsafeCell::new(None),
        }
    }
}

/// A slot pinned by the current thread: its segment stays mapped until this is dropped.
struct Pinned<'a> {
    slot: &'a Slot,
    seg: &'a Segment,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.slot.pins.fetch_sub(1, Ordering::Release);
    }
}

/// State of rotation and retention, guarded by the rotation mutex.
struct RotationState {
    /// Segments on disk, oldest first, with their creation time (record clock).
    segments: VecDeque<(u64, u64)>,
    /// The time retention judges by: the wall clock at open, then each rotation's record
    /// clock.
    clock_us: u64,
}

/// How far the journal is known durable: every segment before `seq`, and `seq` through
/// `frontier` (a prefix of committed records).
struct SyncState {
    seq: u64,
    frontier: u64,
}

/// What a sync must cover.
#[derive(Clone, Copy)]
enum SyncTarget {
    /// Everything claimed so far.
    Tail,
    /// Through the end of this record.
    Record(Position),
}

struct Shared {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    retain_segments: usize,
    /// See [`JournalOptions::keep_us`]; [`Journal::keep_for`] sets it after a reload.
    keep_us: AtomicU64,
    max_frame: u64,
    current: AtomicU64,
    slots: [Slot; SEGMENT_SLOTS],
    rotation: Mutex<RotationState>,
    sync_state: Mutex<SyncState>,
    stop: AtomicBool,
    wake_requested: AtomicBool,
    prefault_supported: AtomicBool,
    maintenance: OnceLock<Thread>,
    background_errors: AtomicU64,
    last_background_error: Mutex<Option<String>>,
    /// The next segment's file, made ahead by the background thread; taken by rotation.
    spare: Mutex<Option<Spare>>,
    /// The last attempt to make the spare failed (a full disk), or the directory takes no new
    /// names (read-only, immutable), so no rotation can succeed: see [`Journal::accepts_leads`].
    spare_failed: AtomicBool,
    /// A spare is made and waiting (`spare` holds one), read without its lock by appends:
    /// between a rotation taking the spare and the next one being made, or while it cannot
    /// be, a rotation needs disk space, so records keep out of room promised to others.
    spare_present: AtomicBool,
    /// Bytes promised to records still to come (the results and sales of posts sent): while
    /// no spare is waiting, other records may not take this room. See
    /// [`Journal::append_promising`].
    promised: AtomicU64,
    /// The latest stamp appended (or the one after a clock stepped back): see
    /// [`CLOCK_STEP_BACK_US`].
    latest_ts: AtomicU64,
    /// The directory was removed or replaced under the journal: what is appended now is lost
    /// with the unlinked files, so no lead is taken.
    dir_lost: AtomicBool,
    /// The current segment's file was deleted or replaced under the journal (found by
    /// [`Shared::check_dir`]): what is appended now is lost with it, so no lead is taken.
    segment_lost: AtomicBool,
    /// A segment file was cut short under its mapping: its records past the cut are gone for
    /// good, so the loss stands until the process ends.
    segment_cut: AtomicBool,
    /// The segment found lost ([`NO_SEGMENT`]: none).
    segment_lost_seq: AtomicU64,
    /// The segment `HEAD` names, as last written or as found at the start ([`NO_HEAD`]: none).
    head_written: AtomicU64,
    /// The oldest segment `HEAD` names as kept ([`NO_HEAD`]: none, or a `HEAD` that does not
    /// say).
    oldest_written: AtomicU64,
    /// The last attempt to write `HEAD` failed (a full disk): the failure is counted and told
    /// once, when it starts, not at every retry.
    head_failed: AtomicBool,
    /// The directory's (device, inode) when the journal opened it.
    dir_id: (u64, u64),
    /// Appends refused (a full disk, an I/O error, a lost directory) since the journal opened.
    refused: AtomicU64,
    /// Held for the journal's life: the exclusive lock on the directory.
    _lock: super::segment::DirLock,
}

/// The bid journal. `Send + Sync`: share it between workers as `Arc<Journal>`.
pub struct Journal {
    shared: Arc<Shared>,
    maintenance: Option<JoinHandle<()>>,
}

/// The name [`Shared::check_dir`] creates and removes to learn that the directory takes new
/// names (not a segment's: readers and recovery never look at it).
pub const DIR_PROBE: &str = "dir.probe";

/// [`Shared::head_written`] when there is no `HEAD` (not yet written, or not writable).
const NO_HEAD: u64 = u64::MAX;

/// [`Shared::segment_lost_seq`] when no segment is lost.
const NO_SEGMENT: u64 = u64::MAX;

/// A directory's (device, inode); `None` when it is not there.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

fn slot_index(seq: u64) -> usize {
    (seq % SEGMENT_SLOTS as u64) as usize
}

/// Unix microseconds from the wall clock (segment creation when no record supplies a time).
pub fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Journal {
    /// Open (or create) the journal in `opts.dir`, recovering first: the segments are scanned,
    /// damage is cut, and appends continue after the last whole record. A cut that is not a
    /// torn tail (whole records follow the damage) first copies the damaged segment aside,
    /// durably; if that fails, nothing is cut and the error is returned. The report says what
    /// was found and what was cut.
    pub fn open(opts: JournalOptions) -> Result<(Journal, RecoveryReport), JournalError> {
        opts.validate()?;
        let dir = opts.dir.clone();
        if dir.exists() && !dir.is_dir() {
            return Err(JournalError::InvalidOptions(format!(
                "journal directory {} is not a directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::io("create directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let durable = opts.sync != SyncMode::Os;
        let marker = read_marker(&dir)?;
        let head = marker.map(|h| h.newest);
        let seqs = list_segments(&dir)?;
        if let Some((first, head)) = missing_newest(head, &seqs) {
            return Err(JournalError::NewestMissing { dir, first, head });
        }
        if let Some((first, last)) = missing_oldest(marker, &seqs) {
            return Err(JournalError::OldestMissing { dir, first, last });
        }
        let analysis = analyze(&dir, false)?;
        let mut report = RecoveryReport {
            records: analysis.records,
            torn_skipped: analysis.torn,
            torn: analysis.torn_positions.clone(),
            ..RecoveryReport::default()
        };
        let mut kept = analysis.segments.clone();
        let mut head_now = marker;

        if let Some(d) = &analysis.damage {
            // Segments are about to be set aside: `HEAD` must not go on naming one of them,
            // or the next start would take them for lost. Removed rather than rewritten (a
            // removal needs no free block); it is written again below.
            if head_now.is_some() {
                remove_head(&dir, durable)?;
                head_now = None;
            }
            let mut moved_aside = Vec::new();
            let mut copied_to = None;
            let mut zeroed_from = None;
            if d.at.offset == 0 {
                if analysis.header_damage_all_zero {
                    // Created but never written (a crash during rotation): holds nothing.
                    let p = segment_path(&dir, d.at.segment);
                    std::fs::remove_file(&p).map_err(|e| JournalError::io("remove", &p, e))?;
                } else {
                    moved_aside.push(move_aside(&dir, d.at.segment)?);
                }
            } else {
                let from = kept.last().map_or(d.at.offset, |i| i.end.min(d.at.offset));
                if !d.is_torn_tail() {
                    // Whole records follow the damage: this is not what a crash leaves, and
                    // zeroing would destroy them. Keep the segment's bytes as they are first,
                    // durably, or do not cut at all.
                    let secs = wall_clock_us() / 1_000_000;
                    copied_to = Some(copy_aside(&dir, d.at.segment, secs)?);
                    sync_dir(&dir)?;
                }
                if let DamageKind::SizeChanged { header, .. } = d.kind {
                    // Back to the size its header says: what was cut is zeroes, what was
                    // appended is gone (both kept in the copy).
                    let p = segment_path(&dir, d.at.segment);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .and_then(|f| f.set_len(header))
                        .map_err(|e| JournalError::io("resize", &p, e))?;
                }
                let mut seg = Segment::open(&dir, d.at.segment)?;
                seg.zero_range(from, seg.len)?;
                zeroed_from = Some(Position {
                    segment: d.at.segment,
                    offset: from,
                });
                if let Some(last) = kept.last_mut() {
                    last.scan_end = last.end;
                }
            }
            for &s in &d.later_segments {
                moved_aside.push(move_aside(&dir, s)?);
            }
            sync_dir(&dir)?;
            report.cut = Some(Cut {
                at: d.at,
                kind: d.kind,
                bytes: d.bytes,
                records_skipped: d.records_after,
                records_skipped_in_segment: d.records_in_segment,
                torn_tail: d.is_torn_tail(),
                zeroed_from,
                copied_to,
                moved_aside,
            });
        }

        // Segments followed by another must carry the sentinel, or a reader following the
        // journal live could not tell that the data continues in the next one.
        let n = kept.len();
        for info in kept.iter_mut().take(n.saturating_sub(1)) {
            if !info.sealed && info.end + FRAME_ALIGN <= info.len {
                let mut seg = Segment::open(&dir, info.seq)?;
                seg.put_u32(info.end, END_OF_SEGMENT);
                seg.flush(info.end, info.end + FRAME_ALIGN)?;
                info.sealed = true;
                report.sealed.push(info.seq);
            }
        }

        let (segment, tail) = match kept.last() {
            Some(info) => {
                let mut seg = Segment::open(&dir, info.seq)?;
                if info.end < info.scan_end {
                    // Trailing torn frames: their writers died; reuse the space.
                    seg.zero_range(info.end, info.scan_end)?;
                }
                (seg, info.end)
            }
            None => {
                let seq = analysis.damage.as_ref().map_or(0, |d| d.at.segment);
                let created = wall_clock_us();
                let seg = Segment::create(&dir, seq, opts.segment_bytes, created)?;
                sync_dir(&dir)?;
                kept.push(super::recovery::SegmentInfo {
                    seq,
                    len: opts.segment_bytes,
                    created_us: created,
                    end: SEGMENT_HEADER_BYTES,
                    scan_end: SEGMENT_HEADER_BYTES,
                    sealed: false,
                });
                report.created = Some(seq);
                (seg, SEGMENT_HEADER_BYTES)
            }
        };
        if durable {
            // Records written before a process crash may still be only in the page cache.
            segment.flush(0, tail)?;
        }
        let seq = segment.seq;
        // The segment appends continue in exists (and is on disk in the durable modes): `HEAD`
        // may name it, and the oldest segment kept. Failing that (a full disk), the
        // background thread tries again; an older or absent `HEAD` only checks less.
        let marker = Head {
            newest: seq,
            oldest: Some(kept.first().map_or(seq, |i| i.seq)),
        };
        // Failing that, the operator is told what `HEAD` still names.
        let mut head_error = None;
        let (head_written, oldest_written) = match head_now {
            Some(h) if h == marker => (seq, marker.oldest.unwrap_or(seq)),
            _ => match write_marker(&dir, marker, durable) {
                Ok(()) => (seq, marker.oldest.unwrap_or(seq)),
                Err(e) => {
                    eprintln!("gavel: journal: {e} (tried again every second)");
                    head_error = Some(e.to_string());
                    head_now.map_or((NO_HEAD, NO_HEAD), |h| {
                        (h.newest, h.oldest.unwrap_or(NO_HEAD))
                    })
                }
            },
        };
        report.segments = kept.len();
        report.tail = Position {
            segment: seq,
            offset: tail,
        };

        segment.prepare_append(tail);
        let prefault_supported = segment.prefault(tail, tail + PREFAULT_FIRST_BYTES);
        let slots = [Slot::empty(), Slot::empty(), Slot::empty(), Slot::empty()];
        let slot = &slots[slot_index(seq)];
        slot.tail.store(tail, Ordering::Relaxed);
        let prefaulted = (tail + PREFAULT_FIRST_BYTES).min(segment.len);
        slot.prefaulted.store(prefaulted, Ordering::Relaxed);
        slot.prefault_wake
            .store(wake_mark(prefaulted, prefault_supported), Ordering::Relaxed);
        slot.released.store(0, Ordering::Relaxed);
        slot.walked.store(tail, Ordering::Relaxed);
        // SAFETY: the slots are not shared yet.
        unsafe { *slot.seg.get() = Some(segment) };
        slot.seq.store(seq, Ordering::Relaxed);

        let max_frame = MAX_FRAME_BYTES.min(opts.segment_bytes - SEGMENT_HEADER_BYTES);
        let shared = Arc::new(Shared {
            dir,
            sync: opts.sync,
            segment_bytes: opts.segment_bytes,
            retain_segments: opts.retain_segments,
            keep_us: AtomicU64::new(opts.keep_us.max(CAP_WINDOW_US)),
            max_frame,
            current: AtomicU64::new(seq),
            slots,
            rotation: Mutex::new(RotationState {
                segments: kept.iter().map(|i| (i.seq, i.created_us)).collect(),
                clock_us: wall_clock_us(),
            }),
            sync_state: Mutex::new(SyncState {
                seq,
                frontier: tail,
            }),
            stop: AtomicBool::new(false),
            wake_requested: AtomicBool::new(false),
            prefault_supported: AtomicBool::new(prefault_supported),
            maintenance: OnceLock::new(),
            background_errors: AtomicU64::new(u64::from(head_error.is_some())),
            head_failed: AtomicBool::new(head_error.is_some()),
            last_background_error: Mutex::new(head_error),
            spare: Mutex::new(None),
            spare_failed: AtomicBool::new(false),
            spare_present: AtomicBool::new(false),
            promised: AtomicU64::new(0),
            // A start while the clock is behind the journal's records is a step back too.
            latest_ts: AtomicU64::new(analysis.latest_ts_us),
            dir_lost: AtomicBool::new(false),
            segment_lost: AtomicBool::new(false),
            segment_cut: AtomicBool::new(false),
            segment_lost_seq: AtomicU64::new(NO_SEGMENT),
            head_written: AtomicU64::new(head_written),
            oldest_written: AtomicU64::new(oldest_written),
            dir_id: dir_identity(&opts.dir).unwrap_or((0, 0)),
            refused: AtomicU64::new(0),
            _lock: lock,
        });
        // Retention (what `HEAD` names oldest, then the removals) is the background
        // thread's, from its first round.
        let bg = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("gavel-journal".to_string())
            .spawn(move || bg.maintenance_loop())
            .map_err(|e| JournalError::io("spawn journal thread", &shared.dir, e))?;
        let _ = shared.maintenance.set(handle.thread().clone());
        Ok((
            Journal {
                shared,
                maintenance: Some(handle),
            },
            report,
        ))
    }

    /// Append a record stamped `ts_us` (unix microseconds, wall clock: records feed calendar
    /// cap windows). Lock-free; returns where the record starts. The record is in the page
    /// cache (it survives a process crash) when this returns; see [`SyncMode`] for more.
    ///
    /// While no next segment is waiting (a full disk), the record is refused
    /// ([`JournalError::NoRoom`]) when it would take room promised to records still to come.
    pub fn append(&self, ts_us: u64, rec: &RecordRef<'_>) -> Result<Position, JournalError> {
        self.counted(self.append_inner(ts_us, rec, true))
    }

    /// Append a record that promises `promise` bytes more to records still to come (a post
    /// sent promises its result and sale): once this returns `Ok`, those records find room
    /// even if no next segment can be made, as other records are then refused the promised
    /// room. The promise is kept until [`Journal::release`] gives it back; on `Err` it was not
    /// made.
    pub fn append_promising(
        &self,
        ts_us: u64,
        rec: &RecordRef<'_>,
        promise: u64,
    ) -> Result<Position, JournalError> {
        let sh = &*self.shared;
        sh.promised.fetch_add(promise, Ordering::AcqRel);
        let r = self.append_inner(ts_us, rec, true);
        if r.is_err() {
            sh.promised.fetch_sub(promise, Ordering::AcqRel);
        }
        self.counted(r)
    }

    /// Append a record room was promised to (by [`Journal::append_promising`]): it may use
    /// the promised room. Give the promise back with [`Journal::release`] once written.
    pub fn append_promised(
        &self,
        ts_us: u64,
        rec: &RecordRef<'_>,
    ) -> Result<Position, JournalError> {
        self.counted(self.append_inner(ts_us, rec, false))
    }

    /// Give back `bytes` of room promised by [`Journal::append_promising`].
    pub fn release(&self, bytes: u64) {
        let promised = &self.shared.promised;
        let mut cur = promised.load(Ordering::Acquire);
        loop {
            match promised.compare_exchange_weak(
                cur,
                cur.saturating_sub(bytes),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Bytes promised to records still to come.
    pub fn promised(&self) -> u64 {
        self.shared.promised.load(Ordering::Acquire)
    }

    fn counted(&self, r: Result<Position, JournalError>) -> Result<Position, JournalError> {
        if r.is_err() {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// `keep_promises`: refuse the record rather than let it take promised room while no
    /// spare is waiting.
    fn append_inner(
        &self,
        ts_us: u64,
        rec: &RecordRef<'_>,
        keep_promises: bool,
    ) -> Result<Position, JournalError> {
        let sh = &*self.shared;
        let payload_len = rec.encoded_len()? as u64;
        let frame = frame_len(payload_len);
        if payload_len > MAX_PAYLOAD_BYTES || frame > sh.max_frame {
            return Err(JournalError::RecordTooLarge {
                frame_bytes: frame,
                max_frame_bytes: sh.max_frame,
            });
        }
        // Kept to the millisecond, so that appends, all of them later than the one before,
        // write the shared word at most a thousand times a second.
        let latest = sh.latest_ts.load(Ordering::Relaxed);
        if ts_us > latest.saturating_add(1_000) {
            sh.latest_ts.fetch_max(ts_us, Ordering::Relaxed);
        } else if ts_us > 0
            && latest > ts_us.saturating_add(CLOCK_STEP_BACK_US)
            && sh
                .latest_ts
                .compare_exchange(latest, ts_us, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            && sh.spare_waiting()
        {
            // The wall clock was stepped back, and this writer is the first to see it: a
            // segment of its own from here (a rotation that fails leaves the records in this
            // one, where lookups may read past them). It is stamped created at the latest
            // time before the step, so that a segment's records are still no later than the
            // next one's creation, which retention and readers skipping old segments rely on.
            let seq = sh.current.load(Ordering::Acquire);
            if let Err(e) = sh.rotate(seq, latest, true) {
                sh.note_error(&e);
            }
        }
        let mut rotations = 0;
        loop {
            let seq = sh.current.load(Ordering::Acquire);
            let Some(pin) = sh.pin(seq) else {
                // `current` moved on between the load and the pin: read it again.
                std::hint::spin_loop();
                continue;
            };
            if keep_promises && !sh.spare_waiting() {
                let promised = sh.promised.load(Ordering::Acquire);
                let tail = pin
                    .slot
                    .tail
                    .load(Ordering::Acquire)
                    .max(SEGMENT_HEADER_BYTES);
                if promised > 0 && tail + frame + promised > pin.seg.len {
                    // The room left is promised: the record goes to a next segment, made now
                    // if the disk has room, and the current one is sealed only once that is
                    // made; if it cannot be, the record is refused and the promise kept. Once
                    // making the spare failed (a full disk) no attempt is made here: every
                    // record would pay for one.
                    drop(pin);
                    rotations += 1;
                    if rotations > MAX_ROTATIONS_PER_APPEND
                        || sh.spare_failed.load(Ordering::Relaxed)
                    {
                        return Err(JournalError::NoRoom { promised });
                    }
                    sh.rotate(seq, ts_us, true).map_err(|e| match e {
                        JournalError::Io { .. } => JournalError::NoRoom { promised },
                        e => e,
                    })?;
                    continue;
                }
            }
            if let Some(off) = claim(&pin, frame)? {
                write_frame(pin.seg, off, frame, payload_len, ts_us, rec);
                if off + frame > pin.slot.prefault_wake.load(Ordering::Relaxed) {
                    sh.wake_maintenance();
                }
                return Ok(Position {
                    segment: seq,
                    offset: off,
                });
            }
            drop(pin);
            rotations += 1;
            if rotations > MAX_ROTATIONS_PER_APPEND {
                return Err(JournalError::RecordTooLarge {
                    frame_bytes: frame,
                    max_frame_bytes: sh.max_frame,
                });
            }
            sh.rotate(seq, ts_us, false)?;
        }
    }

    /// Make the record at `pos` (and every record its thread appended before it) durable:
    /// with `sync = "always"` this msyncs through the record; in the other modes it returns at
    /// once. The exchange calls it before answering a seller.
    pub fn sync_to(&self, pos: Position) -> Result<(), JournalError> {
        match self.shared.sync {
            SyncMode::Always => self.shared.sync_through(SyncTarget::Record(pos)),
            SyncMode::Os | SyncMode::Interval(_) => Ok(()),
        }
    }

    /// Write everything appended so far to disk, whatever the sync mode (for shutdown and
    /// tools). In `os` mode, segments already rotated out of the mapped table are left to the
    /// kernel's write-back.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.shared.sync_through(SyncTarget::Tail)
    }

    /// The durability mode.
    pub fn sync_mode(&self) -> SyncMode {
        self.shared.sync
    }

    /// The journal's directory.
    /// Never remove records younger than `us` microseconds (at least [`CAP_WINDOW_US`]):
    /// [`JournalOptions::keep_us`] for a config reloaded with a longer `dedupe_days`.
    pub fn keep_for(&self, us: u64) {
        self.shared
            .keep_us
            .store(us.max(CAP_WINDOW_US), Ordering::Relaxed);
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Where the next record would go, approximately (other threads may be claiming).
    pub fn tail(&self) -> Position {
        let seq = self.shared.current.load(Ordering::Acquire);
        let offset = self.shared.slots[slot_index(seq)]
            .tail
            .load(Ordering::Acquire);
        Position {
            segment: seq,
            offset,
        }
    }

    /// Whether a new lead may start: its records will have room. The next segment is made
    /// ahead of need (its blocks reserved) so that a rotation never needs disk space; when
    /// that fails (a full disk) the current segment is all the room left, and new leads are
    /// turned away once it is half full, keeping the other half for the records of the leads
    /// already in their auctions. They are taken again as soon as the background thread,
    /// trying every [`SPARE_RETRY`], makes the spare. Between a rotation taking the spare and
    /// the next one being made, leads are taken: a rotation then makes its segment itself,
    /// and should the disk be full meanwhile, the posts and sales of the leads taken still
    /// find the room their posts promised ([`Journal::append_promising`]).
    /// The same holds when the directory takes no new names (remounted read-only, made
    /// immutable): the spare is there but cannot be renamed into place. A directory removed or
    /// replaced under the journal takes no lead at all: what would be written is lost.
    #[inline]
    pub fn accepts_leads(&self) -> bool {
        let sh = &*self.shared;
        if sh.dir_lost.load(Ordering::Relaxed) || sh.segment_lost.load(Ordering::Relaxed) {
            return false;
        }
        !sh.spare_failed.load(Ordering::Relaxed) || self.tail().offset < sh.segment_bytes / 2
    }

    /// Appends refused since the journal opened (records lost: a full disk, an I/O error).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Whether the directory was removed or replaced under the journal.
    pub fn dir_lost(&self) -> bool {
        self.shared.dir_lost.load(Ordering::Relaxed)
    }

    /// Whether the segment being appended to was deleted or replaced under the journal.
    pub fn segment_lost(&self) -> bool {
        self.shared.segment_lost.load(Ordering::Relaxed)
    }

    /// The segment the `HEAD` file names: as this run last wrote it, or as the start found it
    /// while it cannot be written (`None`: there is none).
    pub fn head(&self) -> Option<u64> {
        Some(self.shared.head_written.load(Ordering::Acquire)).filter(|&h| h != NO_HEAD)
    }

    /// Whether the next segment's file is made and waiting (see [`Journal::accepts_leads`]).
    pub fn spare_ready(&self) -> bool {
        self.shared.spare.lock().is_some()
    }

    /// Failures of the background thread (interval msync, retention, making the spare) so
    /// far, and the last one's message: for the operator's metrics and health checks.
    pub fn background_errors(&self) -> (u64, Option<String>) {
        (
            self.shared.background_errors.load(Ordering::Relaxed),
            self.shared.last_background_error.lock().clone(),
        )
    }

    /// Segment `seq`'s tail, prefaulted, released and walked offsets (for tests' messages).
    #[cfg(test)]
    pub(crate) fn slot_offsets(&self, seq: u64) -> Option<[u64; 4]> {
        let pin = self.shared.pin(seq)?;
        let s = pin.slot;
        Some([
            s.tail.load(Ordering::Acquire),
            s.prefaulted.load(Ordering::Acquire),
            s.released.load(Ordering::Acquire),
            s.walked.load(Ordering::Acquire),
        ])
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.maintenance.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        if self.shared.sync != SyncMode::Os {
            if let Err(e) = self.shared.sync_through(SyncTarget::Tail) {
                self.shared.note_error(&e);
            }
        }
    }
}

/// Offset past which writers wake the background thread to fault in more pages.
/// The size of a memory page (4 KiB when the system will not say).
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

fn wake_mark(prefaulted: u64, supported: bool) -> u64 {
    if supported {
        prefaulted.saturating_sub(PREFAULT_AHEAD_BYTES / 2)
    } else {
        u64::MAX
    }
}

/// Claim `frame` bytes in the pinned segment; `None` when it does not fit (the segment is then
/// sealed, by this thread or another).
#[inline]
fn claim(pin: &Pinned<'_>, frame: u64) -> Result<Option<u64>, JournalError> {
    let seg = pin.seg;
    let mut off = pin
        .slot
        .tail
        .load(Ordering::Acquire)
        .max(SEGMENT_HEADER_BYTES);
    loop {
        if off + FRAME_ALIGN > seg.len {
            return Ok(None);
        }
        let want = if off + frame <= seg.len {
            frame as u32
        } else {
            END_OF_SEGMENT
        };
        match seg
            .word(off)
            .compare_exchange(0, want.to_le(), Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) if want == END_OF_SEGMENT => return Ok(None),
            Ok(_) => {
                pin.slot.tail.fetch_max(off + frame, Ordering::AcqRel);
                return Ok(Some(off));
            }
            Err(cur) => {
                let cur = u32::from_le(cur);
                if cur == END_OF_SEGMENT {
                    return Ok(None);
                }
                let len = cur as u64;
                if len < FRAME_HEADER_BYTES || len % FRAME_ALIGN != 0 || off + len > seg.len {
                    // Only a foreign write into the mapped file can produce this.
                    return Err(JournalError::Damaged {
                        at: Position {
                            segment: seg.seq,
                            offset: off,
                        },
                        kind: DamageKind::BadLength(cur),
                    });
                }
                off += len;
            }
        }
    }
}

/// Fill a claimed frame and publish it. The frame's bytes belong to this thread alone until
/// the commit word is stored.
#[inline]
fn write_frame(
    seg: &Segment,
    off: u64,
    frame: u64,
    payload_len: u64,
    ts_us: u64,
    rec: &RecordRef<'_>,
) {
    let p = seg.ptr(off);
    let pad = (frame - FRAME_HEADER_BYTES - payload_len) as u8;
    // SAFETY: [off, off + frame) lies in the mapping and was claimed by this thread; no other
    // thread reads or writes it (beyond the `len`/`commit` words) until the commit.
    let payload = unsafe {
        std::slice::from_raw_parts_mut(p.add(FRAME_HEADER_BYTES as usize), payload_len as usize)
    };
    if !rec.encode_into(payload) {
        // Unreachable (sizes were computed from the same record); leaving the commit word at
        // zero makes the frame a skipped torn record rather than a corrupt one.
        return;
    }
    let mut head = [0u8; 16];
    head[0..4].copy_from_slice(&(frame as u32).to_le_bytes());
    head[4] = rec.record_type() as u8;
    head[5] = pad;
    head[8..16].copy_from_slice(&ts_us.to_le_bytes());
    let crc = frame_crc(&head, payload);
    // SAFETY: as above; header bytes 8..24 of the claimed frame.
    unsafe {
        std::ptr::copy_nonoverlapping(head[4..8].as_ptr(), p.add(8), 4);
        std::ptr::copy_nonoverlapping(crc.to_le_bytes().as_ptr(), p.add(12), 4);
        std::ptr::copy_nonoverlapping(ts_us.to_le_bytes().as_ptr(), p.add(16), 8);
    }
    seg.word(off + 4)
        .store(COMMIT_MAGIC.to_le(), Ordering::Release);
}

/// Walk committed frames from `from`: returns where the committed prefix ends and whether the
/// segment is sealed there (nothing more will ever be written to it).
fn walk_committed(seg: &Segment, from: u64) -> (u64, bool) {
    let mut off = from;
    loop {
        if off + FRAME_ALIGN > seg.len {
            return (off, true);
        }
        let len = u32::from_le(seg.word(off).load(Ordering::Acquire));
        if len == END_OF_SEGMENT {
            return (off, true);
        }
        let l = len as u64;
        if len == 0 || l < FRAME_HEADER_BYTES || l % FRAME_ALIGN != 0 || off + l > seg.len {
            return (off, false);
        }
        if u32::from_le(seg.word(off + 4).load(Ordering::Acquire)) != COMMIT_MAGIC {
            return (off, false);
        }
        off += l;
    }
}

impl Shared {
    /// Pin the slot holding segment `seq`, if it is mapped.
    #[inline]
    fn pin(&self, seq: u64) -> Option<Pinned<'_>> {
        let slot = &self.slots[slot_index(seq)];
        // SeqCst on both sides (here and in `rotate`): either this thread sees the slot being
        // retired, or the rotation sees the pin and waits.
        slot.pins.fetch_add(1, Ordering::SeqCst);
        if slot.seq.load(Ordering::SeqCst) != seq {
            slot.pins.fetch_sub(1, Ordering::Release);
            return None;
        }
        // SAFETY: pinned with a matching seq: the segment is not replaced until unpinned.
        match unsafe { (*slot.seg.get()).as_ref() } {
            Some(seg) => Some(Pinned { slot, seg }),
            None => {
                slot.pins.fetch_sub(1, Ordering::Release);
                None
            }
        }
    }

    /// A next segment is made and can be moved into place: a rotation needs no disk space.
    #[inline]
    fn spare_waiting(&self) -> bool {
        self.spare_present.load(Ordering::Relaxed) && !self.spare_failed.load(Ordering::Relaxed)
    }

    /// Move appends to the segment after `seen` (unless another thread already did).
    /// `seal`: the segment `seen` is not sealed yet (its room was promised and is given up
    /// only for a next segment made): seal it once the next one is made, before appends move.
    fn rotate(&self, seen: u64, ts_us: u64, seal: bool) -> Result<(), JournalError> {
        let mut rs = self.rotation.lock();
        if self.current.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let next = seen + 1;
        let created = if ts_us > 0 { ts_us } else { wall_clock_us() };
        // The spare's lock is held through the rename: the background thread must not take
        // the file by its name for the next spare while it is becoming this segment.
        let mut spare = self.spare.lock();
        self.spare_present.store(false, Ordering::Relaxed);
        let seg = match spare
            .take()
            .map(|sp| Segment::from_spare(sp, &self.dir, next, created))
        {
            Some(Ok(seg)) => seg,
            Some(Err(e)) => {
                self.note_error(&e);
                Segment::create(&self.dir, next, self.segment_bytes, created)?
            }
            None => Segment::create(&self.dir, next, self.segment_bytes, created)?,
        };
        drop(spare);
        if self.sync != SyncMode::Os {
            sync_dir(&self.dir)?;
        }
        let supported = self.prefault_supported.load(Ordering::Relaxed)
            && seg.prefault(SEGMENT_HEADER_BYTES, PREFAULT_FIRST_BYTES);
        let prefaulted = PREFAULT_FIRST_BYTES.min(seg.len);

        if seal {
            // Appends still go to `seen` until `current` moves: its end marker goes after
            // whatever they claim, so no record lands in it once the next one takes appends.
            if let Some(pin) = self.pin(seen) {
                claim(&pin, pin.seg.len + FRAME_ALIGN)?;
            }
        }
        let slot = &self.slots[slot_index(next)];
        slot.seq.store(EMPTY, Ordering::SeqCst);
        while slot.pins.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: `seq` is EMPTY and no thread holds a pin, so no thread can reach `seg`.
        let old = unsafe { (*slot.seg.get()).replace(seg) };
        slot.tail.store(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        slot.prefaulted.store(prefaulted, Ordering::Relaxed);
        slot.prefault_wake
            .store(wake_mark(prefaulted, supported), Ordering::Relaxed);
        slot.released.store(0, Ordering::Relaxed);
        slot.walked.store(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        slot.seq.store(next, Ordering::SeqCst);
        self.current.store(next, Ordering::Release);
        rs.segments.push_back((next, created));
        rs.clock_us = created;

        if let Some(old) = old {
            // Every claim in the retired segment was committed before its pin was dropped;
            // write it out now so `sync_to` may treat unmapped segments as durable.
            if self.sync != SyncMode::Os {
                if let Err(e) = old.flush(0, old.len) {
                    self.note_error(&e);
                }
            }
        }
        drop(rs);
        self.wake_maintenance();
        Ok(())
    }

    /// How many of the oldest segments retention lets go now: those beyond
    /// `retain_segments`, but never one that may hold a record younger than `keep_us` (the
    /// longest cap window or `dedupe_days`): caps and the dedupe index are rebuilt from the
    /// journal on start. A segment's newest record is no younger than the next segment's
    /// creation time.
    fn retention_cut(&self, rs: &RotationState) -> usize {
        if self.retain_segments == 0 {
            return 0;
        }
        let keep = self.keep_us.load(Ordering::Relaxed);
        let mut cut = 0;
        while rs.segments.len() - cut > self.retain_segments.max(1) {
            let (_, next_created) = rs.segments[cut + 1];
            if next_created.saturating_add(keep + RETENTION_MARGIN_US) > rs.clock_us {
                break;
            }
            cut += 1;
        }
        cut
    }

    /// Remove the `cut` oldest segments, once `HEAD` names the segment after them as the
    /// oldest kept (so a start never takes a removal for a loss).
    fn remove_oldest(&self, cut: usize) {
        let mut rs = self.rotation.lock();
        for _ in 0..cut {
            let Some(&(oldest, _)) = rs.segments.front() else {
                return;
            };
            if oldest >= self.oldest_written.load(Ordering::Acquire) {
                return;
            }
            let path = segment_path(&self.dir, oldest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.note_error(&JournalError::io("remove", &path, e));
                    return;
                }
            }
            rs.segments.pop_front();
        }
    }

    /// msync so that `target` is durable, advancing the known-durable frontier over records
    /// that are committed. A record claimed but not yet committed by another thread stops the
    /// frontier (it is synced again later), never the sync of the target itself.
    fn sync_through(&self, target: SyncTarget) -> Result<(), JournalError> {
        let current = self.current.load(Ordering::Acquire);
        let target_seq = match target {
            SyncTarget::Tail => current,
            SyncTarget::Record(pos) => pos.segment.min(current),
        };
        let mut st = self.sync_state.lock();
        let mut advancing = true;
        let mut seq = st.seq;
        while seq <= target_seq {
            let from = if advancing {
                st.frontier
            } else {
                SEGMENT_HEADER_BYTES
            };
            match self.pin(seq) {
                None => {
                    // Not mapped: retired (and flushed whole when retired) or removed.
                    if advancing {
                        st.seq = seq + 1;
                        st.frontier = SEGMENT_HEADER_BYTES;
                    }
                }
                Some(pin) => {
                    let (walked, sealed) = walk_committed(pin.seg, from);
                    let claimed = pin.slot.tail.load(Ordering::Acquire).min(pin.seg.len);
                    let end = match target {
                        SyncTarget::Record(pos) if pos.segment == seq => {
                            let plausible = pos.offset % FRAME_ALIGN == 0
                                && pos.offset >= SEGMENT_HEADER_BYTES
                                && pos.offset + FRAME_ALIGN <= pin.seg.len;
                            let rec_end = if plausible {
                                let len =
                                    u32::from_le(pin.seg.word(pos.offset).load(Ordering::Acquire));
                                if len == END_OF_SEGMENT {
                                    pos.offset
                                } else {
                                    pos.offset + len as u64
                                }
                            } else {
                                claimed
                            };
                            walked.max(rec_end.min(pin.seg.len))
                        }
                        _ => walked.max(claimed),
                    };
                    pin.seg.flush(from, end)?;
                    if advancing {
                        if sealed {
                            st.seq = seq + 1;
                            st.frontier = SEGMENT_HEADER_BYTES;
                        } else {
                            st.frontier = walked;
                            advancing = false;
                        }
                    }
                }
            }
            seq += 1;
        }
        Ok(())
    }

    fn wake_maintenance(&self) {
        if !self.wake_requested.swap(true, Ordering::AcqRel) {
            if let Some(t) = self.maintenance.get() {
                t.unpark();
            }
        }
    }

    fn note_error(&self, e: &JournalError) {
        self.background_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_background_error.lock() = Some(e.to_string());
    }

    /// Whether the directory is still the journal's and takes new names: it is looked at every
    /// [`SPARE_RETRY`], since a rotation is the first write that needs either, and by then the
    /// leads in flight need the room the current segment has left. A directory removed or
    /// replaced stops new leads at once; one that takes no new names (read-only, immutable)
    /// counts as a spare that cannot be made. Transitions are reported on stderr.
    fn check_dir(&self) {
        let lost = dir_identity(&self.dir).is_none_or(|id| id != self.dir_id);
        if lost != self.dir_lost.swap(lost, Ordering::Relaxed) {
            if lost {
                let e = JournalError::io(
                    "journal directory removed or replaced while in use",
                    &self.dir,
                    std::io::Error::other(
                        "its path names another directory than the one opened, or none",
                    ),
                );
                self.note_error(&e);
                eprintln!("gavel: journal: {e}: new leads are refused (503 journal_unavailable)");
            } else {
                eprintln!("gavel: journal: directory {} is back", self.dir.display());
            }
        }
        if lost {
            return;
        }
        self.check_segment();
        self.check_head();
        self.check_spare();
        let probe = self.dir.join(DIR_PROBE);
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .and_then(|_| std::fs::remove_file(&probe));
        let spare = self.spare.lock();
        match writable {
            Err(e) => {
                if !self.spare_failed.swap(true, Ordering::Relaxed) {
                    let e = JournalError::io("journal directory takes no new files", &self.dir, e);
                    self.note_error(&e);
                    eprintln!(
                        "gavel: journal: {e}: the next segment cannot be made; new leads are \
                         refused once the current one is half full"
                    );
                }
            }
            Ok(()) if spare.is_some() => {
                if self.spare_failed.swap(false, Ordering::Relaxed) {
                    eprintln!(
                        "gavel: journal: directory {} writable again",
                        self.dir.display()
                    );
                }
            }
            Ok(()) => {}
        }
    }

    /// Whether the segment being appended to is still the file of its name: one deleted (or
    /// replaced) while mapped takes records that vanish with the process, and the next start
    /// would find it missing. New leads are refused until the very file is back under its
    /// name; moving on to a later segment does not end it, since the loss stays in the
    /// journal. A file cut short (its pages past the cut replaced by `fault`) has lost its
    /// records past the cut for good: new leads are refused until the process ends.
    /// Transitions are reported on stderr.
    fn check_segment(&self) {
        let flagged = self.segment_lost_seq.load(Ordering::Relaxed);
        let seq = if flagged != NO_SEGMENT {
            flagged
        } else {
            self.current.load(Ordering::Acquire)
        };
        // A segment no longer mapped cannot be compared: a flagged one stays flagged.
        let Some(pin) = self.pin(seq) else { return };
        let named = pin.seg.still_named(&segment_path(&self.dir, seq));
        let (size, len) = (pin.seg.file_len(), pin.seg.len);
        drop(pin);
        if self.segment_cut.load(Ordering::Relaxed) {
            return;
        }
        if let Some(size) = size.filter(|&size| size < len) {
            self.segment_cut.store(true, Ordering::Relaxed);
            self.segment_lost_seq.store(seq, Ordering::Relaxed);
            self.segment_lost.store(true, Ordering::Relaxed);
            let path = segment_path(&self.dir, seq);
            let e = JournalError::io(
                "journal segment cut short while in use",
                &path,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            );
            self.note_error(&e);
            eprintln!(
                "gavel: journal: {e}: {size} of its {len} bytes are left and the records past \
                 them are lost; new leads are refused (503 journal_unavailable) until a restart"
            );
            return;
        }
        let Some(named) = named else { return };
        if flagged == NO_SEGMENT && self.current.load(Ordering::Acquire) != seq {
            // Rotated meanwhile: retention may have removed `seq` by right.
            return;
        }
        let lost = !named;
        if lost == (flagged != NO_SEGMENT) {
            return;
        }
        if lost {
            self.segment_lost_seq.store(seq, Ordering::Relaxed);
            self.segment_lost.store(true, Ordering::Relaxed);
            let path = segment_path(&self.dir, seq);
            let e = JournalError::io(
                "journal segment deleted or replaced while in use",
                &path,
                std::io::Error::other(
                    "its name names another file than the one being written, or none",
                ),
            );
            self.note_error(&e);
            eprintln!(
                "gavel: journal: {e}: its records are lost unless the file is put back; new \
                 leads are refused (503 journal_unavailable)"
            );
        } else {
            self.segment_lost_seq.store(NO_SEGMENT, Ordering::Relaxed);
            self.segment_lost.store(false, Ordering::Relaxed);
            eprintln!("gavel: journal: segment {seq} is back");
        }
    }

    /// `HEAD` deleted or changed while the journal is open would leave the next start unable
    /// to tell a deleted newest (or oldest) segment from none, or refusing a `HEAD` it cannot
    /// read: it is written again at once (by [`Shared::update_head`], which follows), and that
    /// is said on stderr.
    fn check_head(&self) {
        let (newest, oldest) = (
            self.head_written.load(Ordering::Acquire),
            self.oldest_written.load(Ordering::Acquire),
        );
        if newest == NO_HEAD {
            return;
        }
        let path = self.dir.join(super::head::HEAD_FILE);
        let what = match read_marker(&self.dir) {
            Ok(Some(h)) if h.newest == newest && h.oldest.unwrap_or(NO_HEAD) == oldest => return,
            Ok(Some(_)) => "changed (it names other segments)".to_string(),
            Ok(None) => "deleted".to_string(),
            Err(e) => format!("changed ({e})"),
        };
        self.head_written.store(NO_HEAD, Ordering::Release);
        self.oldest_written.store(NO_HEAD, Ordering::Release);
        eprintln!(
            "gavel: journal: {} was {what} while in use; it is written again",
            path.display()
        );
    }

    /// The next segment's file deleted or replaced while the journal is open would fail the
    /// next rotation's rename: it is made again at once (by [`Shared::make_spare`], which
    /// follows), and that is said on stderr.
    fn check_spare(&self) {
        let mut spare = self.spare.lock();
        if spare.as_ref().and_then(Spare::still_named) != Some(false) {
            return;
        }
        if let Some(sp) = spare.take() {
            self.spare_present.store(false, Ordering::Relaxed);
            eprintln!(
                "gavel: journal: {} was deleted or replaced while in use; it is made again",
                sp.path().display()
            );
        }
    }

    /// Make `HEAD` name the current segment and the oldest one retention keeps, if it does
    /// not yet, then remove the segments retention lets go; returns whether writing `HEAD`
    /// failed (to be tried again after [`SPARE_RETRY`]; nothing is removed meanwhile). The
    /// rotation that made the segment current put its directory entry on disk first (in the
    /// durable modes).
    fn update_head(&self) -> bool {
        if self.dir_lost.load(Ordering::Relaxed) || self.segment_lost.load(Ordering::Relaxed) {
            // Naming a segment in a directory that is not the journal's, or one that is gone,
            // would be wrong; the next start judges what is there.
            return false;
        }
        // Read together under the rotation lock (a rotation moves `current` and adds its
        // segment under it; only this thread removes segments), so the oldest is never
        // newer than the newest.
        let (cur, cut, oldest) = {
            let rs = self.rotation.lock();
            let cut = self.retention_cut(&rs);
            let cur = self.current.load(Ordering::Acquire);
            let oldest = rs.segments.get(cut).map_or(cur, |&(s, _)| s.min(cur));
            (cur, cut, oldest)
        };
        if self.head_written.load(Ordering::Acquire) != cur
            || self.oldest_written.load(Ordering::Acquire) != oldest
        {
            let marker = Head {
                newest: cur,
                oldest: Some(oldest),
            };
            if let Err(e) = write_marker(&self.dir, marker, self.sync != SyncMode::Os) {
                // A full disk: said once, when it starts (and its end, below).
                if !self.head_failed.swap(true, Ordering::Relaxed) {
                    self.note_error(&e);
                    eprintln!("gavel: journal: {e} (tried again every second)");
                }
                return true;
            }
            self.head_written.store(cur, Ordering::Release);
            self.oldest_written.store(oldest, Ordering::Release);
            if self.head_failed.swap(false, Ordering::Relaxed) {
                eprintln!("gavel: journal: HEAD written again (segment {cur})");
            }
        }
        if cut > 0 {
            self.remove_oldest(cut);
        }
        false
    }

    /// Make the spare segment when there is none; returns whether that failed (to be tried
    /// again after [`SPARE_RETRY`]).
    fn make_spare(&self) -> bool {
        // Held while the file is made: a rotation renaming the last spare into place must
        // be over before its name is opened again.
        let mut spare = self.spare.lock();
        if spare.is_some() {
            return false;
        }
        match Spare::make(&self.dir, self.segment_bytes) {
            Ok(sp) => {
                *spare = Some(sp);
                self.spare_present.store(true, Ordering::Relaxed);
                if self.spare_failed.swap(false, Ordering::Relaxed) {
                    eprintln!(
                        "gavel: journal: the next segment is made in {}: new leads are taken",
                        self.dir.display()
                    );
                }
                false
            }
            Err(e) => {
                // A full disk, a quota: said once, when it starts (and its end, above).
                if !self.spare_failed.swap(true, Ordering::Relaxed) {
                    self.note_error(&e);
                    eprintln!(
                        "gavel: journal: {e}: the next segment cannot be made; new leads are \
                         refused (503 journal_unavailable) once the current one is half full"
                    );
                }
                true
            }
        }
    }

    /// Fault in pages ahead of the current tail.
    fn prefault_ahead(&self) {
        if !self.prefault_supported.load(Ordering::Relaxed) {
            return;
        }
        let seq = self.current.load(Ordering::Acquire);
        let Some(pin) = self.pin(seq) else { return };
        let tail = pin.slot.tail.load(Ordering::Acquire);
        let done = pin.slot.prefaulted.load(Ordering::Acquire);
        let Some((from, want)) = prefault_range(done, tail, pin.seg.len, page_size()) else {
            return;
        };
        if !pin.seg.prefault(from, want) {
            self.prefault_supported.store(false, Ordering::Relaxed);
            pin.slot.prefault_wake.store(u64::MAX, Ordering::Relaxed);
            return;
        }
        pin.slot.prefaulted.store(want, Ordering::Release);
        pin.slot
            .prefault_wake
            .store(wake_mark(want, true), Ordering::Release);
    }

    /// Drop the pages of every mapped segment that lie wholly before its durable frontier
    /// (`interval`/`always`: what the syncs covered; `os`: the committed prefix), less
    /// [`RELEASE_BEHIND_BYTES`], so the journal's share of the process's resident set stays
    /// near [`PREFAULT_AHEAD_BYTES`] + [`RELEASE_BEHIND_BYTES`] however much is written.
    fn release_behind(&self) {
        let current = self.current.load(Ordering::Acquire);
        let durable = match self.sync {
            SyncMode::Os => None,
            SyncMode::Interval(_) | SyncMode::Always => {
                let st = self.sync_state.lock();
                Some((st.seq, st.frontier))
            }
        };
        let page = page_size();
        let first = current.saturating_sub(SEGMENT_SLOTS as u64 - 1);
        for seq in first..=current {
            let Some(pin) = self.pin(seq) else { continue };
            let released = pin.slot.released.load(Ordering::Relaxed);
            let done = match durable {
                Some((dseq, _)) if dseq > seq => pin.seg.len,
                Some((dseq, frontier)) if dseq == seq => frontier,
                Some(_) => continue,
                None => {
                    let (walked, sealed) =
                        walk_committed(pin.seg, pin.slot.walked.load(Ordering::Relaxed));
                    pin.slot.walked.store(walked, Ordering::Relaxed);
                    if sealed {
                        pin.seg.len
                    } else {
                        walked
                    }
                }
            };
            // A sealed segment is released whole; the live one keeps a margin behind its
            // frontier for the records being written around it.
            let end = if done >= pin.seg.len {
                pin.seg.len
            } else {
                done.saturating_sub(RELEASE_BEHIND_BYTES)
            };
            let end = end / page * page;
            if end <= released || (end < pin.seg.len && end - released < RELEASE_BEHIND_BYTES) {
                continue;
            }
            if pin.seg.release(released, end) {
                pin.slot.released.store(end, Ordering::Relaxed);
            }
        }
    }

    /// The background thread: faults pages in ahead of the writers, in interval mode msyncs
    /// what they wrote, and drops written pages from the resident set.
    fn maintenance_loop(&self) {
        let interval = match self.sync {
            SyncMode::Interval(d) => Some(d),
            SyncMode::Os | SyncMode::Always => None,
        };
        let mut next_sync = Instant::now() + interval.unwrap_or(IDLE_TICK);
        let mut spare_retry: Option<Instant> = None;
        let mut head_retry: Option<Instant> = None;
        let mut next_dir_check = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            self.wake_requested.store(false, Ordering::Release);
            self.prefault_ahead();
            if Instant::now() >= next_dir_check {
                self.check_dir();
                next_dir_check = Instant::now() + SPARE_RETRY;
            }
            if spare_retry.is_none_or(|t| Instant::now() >= t) {
                spare_retry = self.make_spare().then(|| Instant::now() + SPARE_RETRY);
            }
            if head_retry.is_none_or(|t| Instant::now() >= t) {
                head_retry = self.update_head().then(|| Instant::now() + SPARE_RETRY);
            }
            let now = Instant::now();
            if let Some(d) = interval {
                if now >= next_sync {
                    if let Err(e) = self.sync_through(SyncTarget::Tail) {
                        self.note_error(&e);
                    }
                    next_sync = Instant::now() + d;
                }
            }
            self.release_behind();
            let wait = match interval {
                Some(_) => next_sync.saturating_duration_since(Instant::now()),
                None => IDLE_TICK,
            };
            let wait = match spare_retry.into_iter().chain(head_retry).min() {
                Some(t) => wait.min(t.saturating_duration_since(Instant::now())),
                None => wait,
            };
            std::thread::park_timeout(wait);
        }
        // The last rotations' `HEAD` and retention, before the journal closes.
        self.update_head();
    }
}
