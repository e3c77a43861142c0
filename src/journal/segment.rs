//! Segment files: naming, listing, creation, mapping, and the directory lock.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use memmap2::{Advice, MmapMut, MmapOptions};

use super::format::{SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use super::JournalError;

/// Digits of the zero-padded sequence number in a segment's file name (all of `u64`).
pub const SEQ_DIGITS: usize = 20;

/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Suffix given to segments moved aside by recovery: never deleted by the journal.
pub const CUT_SUFFIX: &str = ".cut";

/// Most segment files a directory listing accepts; beyond it the directory is not a journal
/// this build can manage (at the default size this is 256 TiB of records).
pub const MAX_SEGMENT_FILES: usize = 1_000_000;

/// Name of the lock file that keeps two writer processes out of one journal.
pub const LOCK_FILE: &str = "LOCK";

/// Most `.cut` names tried for one segment before giving up (each recovery that cuts the
/// same sequence number needs a fresh name).
const MAX_CUT_NAMES: u32 = 1000;

/// Between a segment's file name and the unix seconds in the name of the copy recovery keeps
/// before it zeroes part of that segment: `NNN.seg.cut-SECS` (`.cut-SECS.2`, ... if taken).
/// The live segment stays where it is; the copy holds its bytes as they were before the cut.
pub const COPY_INFIX: &str = ".cut-";

/// Name a copy has while being written (`NNN.seg.cut-partial`): a crash mid-copy leaves at
/// most this one file per segment, overwritten by the next attempt and never read.
const PARTIAL_COPY: &str = "partial";

/// Bytes copied per read when keeping a copy of a segment.
const COPY_CHUNK: u64 = 1024 * 1024;

/// Name of the next segment's file while it waits, its blocks reserved, to become a segment.
pub const SPARE_FILE: &str = "next.spare";

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:0width$}{SEGMENT_SUFFIX}", width = SEQ_DIGITS))
}

/// The entries of the journal directory `dir` (`NotFound` when there is none).
pub fn read_journal_dir(dir: &Path) -> Result<std::fs::ReadDir, JournalError> {
    std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            JournalError::NotFound(dir.to_path_buf())
        } else {
            JournalError::io("read directory", dir, e)
        }
    })
}

/// Sequence numbers of the segment files in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let rd = read_journal_dir(dir)?;
    let mut seqs = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| JournalError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() != SEQ_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(seq) = stem.parse::<u64>() else {
            continue;
        };
        if seqs.len() >= MAX_SEGMENT_FILES {
            return Err(JournalError::InvalidOptions(format!(
                "{} holds more than {MAX_SEGMENT_FILES} segments",
                dir.display()
            )));
        }
        seqs.push(seq);
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Move a segment aside as `NNN.seg.cut` (or `.cut.2`, ... if that name is taken): recovery
/// never deletes records, it leaves them for an operator to inspect.
pub fn move_aside(dir: &Path, seq: u64) -> Result<PathBuf, JournalError> {
    let from = segment_path(dir, seq);
    let to = free_name(&format!("{}{CUT_SUFFIX}", from.display()), &from)?;
    std::fs::rename(&from, &to).map_err(|e| JournalError::io("rename", &from, e))?;
    Ok(to)
}

/// `base`, or `base.2`, `base.3`, ... : the first name not taken.
fn free_name(base: &str, for_file: &Path) -> Result<PathBuf, JournalError> {
    for n in 1..=MAX_CUT_NAMES {
        let to = if n == 1 {
            PathBuf::from(base)
        } else {
            PathBuf::from(format!("{base}.{n}"))
        };
        if !to.exists() {
            return Ok(to);
        }
    }
    Err(JournalError::InvalidOptions(format!(
        "no free name to set {} aside",
        for_file.display()
    )))
}

/// Copy segment `seq`, whole and unchanged, to `NNN.seg.cut-SECS` (see [`COPY_INFIX`]) before
/// recovery zeroes part of it, and fsync the copy. Holes stay holes, so a mostly empty
/// segment costs only its data. The copy is written under a temporary name and renamed into
/// place, so a file by the final name is always complete; the caller makes the rename durable
/// (`sync_dir`) before it changes the segment.
pub fn copy_aside(dir: &Path, seq: u64, unix_secs: u64) -> Result<PathBuf, JournalError> {
    let from = segment_path(dir, seq);
    let to = free_name(&format!("{}{COPY_INFIX}{unix_secs}", from.display()), &from)?;
    let tmp = PathBuf::from(format!("{}{COPY_INFIX}{PARTIAL_COPY}", from.display()));
    let copied = copy_sparse(&from, &tmp);
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied?;
    std::fs::rename(&tmp, &to).map_err(|e| JournalError::io("rename", &tmp, e))?;
    Ok(to)
}

/// Copy the data of `from` into a new file `to` of the same length, and fsync it.
fn copy_sparse(from: &Path, to: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::FileExt;
    let src = File::open(from).map_err(|e| JournalError::io("open", from, e))?;
    let len = src
        .metadata()
        .map_err(|e| JournalError::io("stat", from, e))?
        .len();
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(to)
        .map_err(|e| JournalError::io("create", to, e))?;
    dst.set_len(len)
        .map_err(|e| JournalError::io("set_len", to, e))?;
    let mut buf = vec![0u8; COPY_CHUNK.min(len) as usize];
    for (start, end) in data_ranges(&src, 0, len) {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(COPY_CHUNK) as usize;
            let Some(chunk) = buf.get_mut(..n) else { break };
            src.read_exact_at(chunk, pos)
                .map_err(|e| JournalError::io("read", from, e))?;
            // Zeros need not be written: the new file reads as zero where nothing was written.
            if chunk.iter().any(|&b| b != 0) {
                dst.write_all_at(chunk, pos)
                    .map_err(|e| JournalError::io("write", to, e))?;
            }
            pos += n as u64;
        }
    }
    dst.sync_all().map_err(|e| JournalError::io("fsync", to, e))
}

/// Make directory changes (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    let d = File::open(dir).map_err(|e| JournalError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| JournalError::io("fsync directory", dir, e))
}

/// The writer's exclusive lock on a journal directory, held as long as this lives and released
/// by the kernel if the process dies: on the `LOCK` file (which tools and older builds look
/// for) and on the directory itself, which no one can delete and make anew under a running
/// writer the way a `LOCK` file can be.
pub struct DirLock {
    _file: File,
    _dir: File,
}

/// Take the writer's exclusive lock on the journal directory (see [`DirLock`]).
pub fn lock_dir(dir: &Path) -> Result<DirLock, JournalError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io("open", &path, e))?;
    let d = File::open(dir).map_err(|e| JournalError::io("open directory", dir, e))?;
    for (file, what) in [(&d, dir), (&f, path.as_path())] {
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(JournalError::Locked(dir.to_path_buf()));
            }
            return Err(JournalError::io("lock", what, err));
        }
    }
    Ok(DirLock { _file: f, _dir: d })
}

/// The byte ranges of `file` from `from` on that may hold data: everything else is a hole and
/// reads as zero. Lets recovery check the untouched rest of a preallocated segment without
/// reading (and allocating page cache for) gigabytes of zeros. Falls back to one range when the
/// file system cannot say.
pub fn data_ranges(file: &File, from: u64, len: u64) -> Vec<(u64, u64)> {
    /// Most extents listed; past this the rest of the file is treated as one range.
    const MAX_RANGES: usize = 4096;
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = from;
    while pos < len {
        if out.len() >= MAX_RANGES {
            out.push((pos, len));
            break;
        }
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            out.push((pos, len));
            break;
        }
        let data = (data as u64).max(pos);
        if data >= len {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            len
        } else {
            (hole as u64).min(len)
        };
        if hole <= data {
            out.push((data, len));
            break;
        }
        out.push((data, hole));
        pos = hole;
    }
    out
}

/// A segment mapped for writing. The mapping is never resized; the file is never truncated
/// while mapped (the journal only ever zeroes bytes), so pointers into it stay valid for the
/// segment's life.
pub struct Segment {
    /// The SIGBUS cover of `map` (dropped before it).
    _cover: super::fault::Cover,
    /// Sequence number.
    pub seq: u64,
    /// Mapped length (the file's length).
    pub len: u64,
    map: MmapMut,
    base: *mut u8,
    file: File,
    /// (device, inode) of the file's name when it was mapped, read by name: compared with
    /// the name's again later (by name too, since some file systems, overlayfs on older
    /// kernels among them, report other numbers through a descriptor).
    named: Option<(u64, u64)>,
}

// SAFETY: the raw pointer refers to a shared file mapping owned by `map`; every concurrent
// access to it goes through atomics or through regions owned exclusively after a claim.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

/// `fallocate` attempts interrupted by a signal before giving up.
const ALLOCATE_RETRIES: usize = 8;

/// Give the file's first `len` bytes their blocks on disk. A segment is written through its
/// mapping, and a store to a page whose block the file system cannot allocate (a full disk)
/// is a SIGBUS that kills the process: reserving every block when the segment is made turns
/// a full disk into an error at the rotation (leads answered 503 `journal_unavailable`). A
/// file system that cannot reserve (`EOPNOTSUPP`) leaves the file as it is.
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    if len == 0 {
        return Ok(());
    }
    let mut err = std::io::Error::from_raw_os_error(libc::EINTR);
    for _ in 0..ALLOCATE_RETRIES {
        // SAFETY: a plain system call on a file descriptor this `File` owns.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(());
        }
        err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(()),
            _ => return Err(err),
        }
    }
    Err(err)
}

/// The next segment's file, made ahead of need: `len` bytes with every block reserved, and
/// nothing written. Rotation renames it into place ([`Segment::from_spare`]), so the journal
/// never needs new disk space at the moment a record does not fit: when the disk is full, it
/// is the spare that cannot be made, while the records of leads already in their auctions
/// still have a whole segment.
#[derive(Debug)]
pub struct Spare {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Spare {
    /// Make (or take over) [`SPARE_FILE`] in `dir` at `len` bytes with its blocks reserved.
    /// A spare left by an earlier run is kept when it has that size (reserving again what it
    /// holds costs no space); on failure no spare file is left.
    pub fn make(dir: &Path, len: u64) -> Result<Spare, JournalError> {
        let path = dir.join(SPARE_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::io("create", &path, e))?;
        let fail = |what: &'static str, e: std::io::Error| {
            let _ = std::fs::remove_file(&path);
            JournalError::io(what, &path, e)
        };
        let had = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Err(fail("stat", e)),
        };
        if had != len {
            // Another size (or a new file): start from nothing, so no old block lingers.
            if let Err(e) = file.set_len(0).and_then(|()| file.set_len(len)) {
                return Err(fail("set_len", e));
            }
        }
        if let Err(e) = allocate(&file, len) {
            drop(file);
            return Err(fail("allocate", e));
        }
        Ok(Spare { file, path, len })
    }

    /// Whether the spare is still the file named [`SPARE_FILE`]: `Some(false)` once it was
    /// deleted or replaced; `None` when that cannot be told.
    pub fn still_named(&self) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let own = self.file.metadata().ok()?;
        if own.nlink() == 0 {
            return Some(false);
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino()) == (own.dev(), own.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Segment {
    /// Create segment `seq` of `len` bytes: preallocate the file, map it, write the header.
    pub fn create(
        dir: &Path,
        seq: u64,
        len: u64,
        created_us: u64,
    ) -> Result<Segment, JournalError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::io("create", &path, e))?;
        file.set_len(len)
            .map_err(|e| JournalError::io("set_len", &path, e))?;
        if let Err(e) = allocate(&file, len) {
            // No half-made segment left behind: the next rotation tries the same name again.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(JournalError::io("allocate", &path, e));
        }
        Segment::begin(file, &path, seq, len, created_us)
    }

    /// Make the spare `spare` segment `seq`: its file is renamed into place, which needs no
    /// block of the disk, so a segment can begin on a full disk. Fails (leaving the spare
    /// where it was) if segment `seq` already exists.
    pub fn from_spare(
        spare: Spare,
        dir: &Path,
        seq: u64,
        created_us: u64,
    ) -> Result<Segment, JournalError> {
        let path = segment_path(dir, seq);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {
                return Err(JournalError::io(
                    "create",
                    &path,
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io("stat", &path, e)),
        }
        std::fs::rename(&spare.path, &path)
            .map_err(|e| JournalError::io("rename", &spare.path, e))?;
        Segment::begin(spare.file, &path, seq, spare.len, created_us)
    }

    /// Map a new segment's file, whose blocks are reserved, and write its header.
    fn begin(
        file: File,
        path: &Path,
        seq: u64,
        len: u64,
        created_us: u64,
    ) -> Result<Segment, JournalError> {
        let seg = Segment::map(file, path, seq)?;
        // Before the header's write faults in the first page: all of a new segment is to come.
        seg.prepare_append(0);
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            seq,
            created_us,
            segment_bytes: len,
        };
        let h = header.encode();
        // SAFETY: the new segment is not yet published to any other thread; the header lies
        // within the mapping (len >= MIN_SEGMENT_BYTES > header size).
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), seg.base, h.len()) };
        Ok(seg)
    }

    /// Whether the mapped file is still the one named `path` (the segment's own): `Some(false)`
    /// once it was deleted (no name left) or its name is another file's or none; `None` when
    /// that cannot be told.
    /// The mapped file's size now (`None` when it cannot be told): under `len` once something
    /// else cut it short.
    pub fn file_len(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.len())
    }

    pub fn still_named(&self, path: &Path) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        if self.file.metadata().ok()?.nlink() == 0 {
            return Some(false);
        }
        let named = self.named?;
        match std::fs::symlink_metadata(path) {
            Ok(m) => Some((m.dev(), m.ino()) == named),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }

    /// Map an existing segment file for writing.
    pub fn open(dir: &Path, seq: u64) -> Result<Segment, JournalError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::io("open", &path, e))?;
        // A segment written sparse (by an older build) gets its blocks now, or not at all.
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", &path, e))?
            .len();
        allocate(&file, len).map_err(|e| JournalError::io("allocate", &path, e))?;
        Segment::map(file, &path, seq)
    }

    fn map(file: File, path: &Path, seq: u64) -> Result<Segment, JournalError> {
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", path, e))?
            .len();
        if len < SEGMENT_HEADER_BYTES || usize::try_from(len).is_err() {
            return Err(JournalError::InvalidOptions(format!(
                "segment {} has an unusable size {len}",
                path.display()
            )));
        }
        // SAFETY: the journal owns its directory (guarded by the lock file) and never truncates
        // a segment, so the mapping stays backed by the file; a file cut short by something
        // else is covered (`fault`).
        let mut map = unsafe { MmapOptions::new().len(len as usize).map_mut(&file) }
            .map_err(|e| JournalError::io("mmap", path, e))?;
        let base = map.as_mut_ptr();
        let cover = super::fault::cover(base, map.len());
        let named = std::fs::symlink_metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        });
        Ok(Segment {
            _cover: cover,
            seq,
            len,
            map,
            base,
            file,
            named,
        })
    }

    /// The 32-bit word at `off` as an atomic. `off` must be 4-aligned and within the segment;
    /// callers only pass frame offsets (8-aligned, at least 8 bytes before the end).
    #[inline]
    pub fn word(&self, off: u64) -> &AtomicU32 {
        debug_assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and aligned (the mapping is page aligned); the mapping lives as
        // long as `self`; all concurrent accesses to `len`/`commit` words are atomic.
        unsafe { AtomicU32::from_ptr(self.base.add(off as usize) as *mut u32) }
    }

    /// Raw pointer to byte `off`, for writing a claimed frame.
    #[inline]
    pub fn ptr(&self, off: u64) -> *mut u8 {
        debug_assert!(off <= self.len);
        // SAFETY: in bounds of the mapping.
        unsafe { self.base.add(off as usize) }
    }

    /// Write the byte range `[from, to)` to disk (msync).
    pub fn flush(&self, from: u64, to: u64) -> Result<(), JournalError> {
        let to = to.min(self.len);
        if to <= from {
            return Ok(());
        }
        self.map
            .flush_range(from as usize, (to - from) as usize)
            .map_err(|e| JournalError::io("msync", Path::new(&format!("segment {}", self.seq)), e))
    }

    /// Mark `[from, end)`, the part still to be appended to, for random access (no
    /// readahead). A fault there then brings in a single page instead of a large folio, so the
    /// background `msync`, which writes back and write-protects whole folios, no longer
    /// write-protects the pages ahead of the tail that the writers are about to fill: without it
    /// each such page took a write fault after every `msync`, and a fault that met the folio
    /// under writeback stopped the writer for up to milliseconds (`benches/journal_paced.rs`).
    /// What is already written keeps the default advice, so recovery and readers still read
    /// ahead. Best effort.
    pub fn prepare_append(&self, from: u64) -> bool {
        let page = super::writer::page_size();
        let from = from / page * page;
        if from >= self.len {
            return true;
        }
        self.map
            .advise_range(Advice::Random, from as usize, (self.len - from) as usize)
            .is_ok()
    }

    /// Fault in `[from, to)` as writable ahead of the writers, so that appends do not take
    /// page faults (and file-system block allocation) on the hot path. Best effort: kernels
    /// without `MADV_POPULATE_WRITE` simply fault on first write.
    pub fn prefault(&self, from: u64, to: u64) -> bool {
        let to = to.min(self.len);
        if to <= from {
            return true;
        }
        self.map
            .advise_range(Advice::PopulateWrite, from as usize, (to - from) as usize)
            .is_ok()
    }

    /// Drop `[from, to)` (page aligned) from this process's page tables once written: the
    /// bytes stay in the page cache (and, dirty or not, reach the file as before), so the
    /// mapping's resident size follows the tail instead of growing with every record. A later
    /// read of the range faults the same bytes back in. Best effort.
    pub fn release(&self, from: u64, to: u64) -> bool {
        let to = to.min(self.len);
        if to <= from {
            return true;
        }
        // SAFETY: a shared file mapping: MADV_DONTNEED unmaps the pages but keeps their
        // contents (dirty pages are handed to the page cache), so nothing written is lost and
        // no thread reads zeros. The range is within the mapping.
        unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                from as usize,
                (to - from) as usize,
            )
        }
        .is_ok()
    }

    /// Overwrite `[from, to)` with zeros where it is not already zero, then flush it. Used only
    /// by recovery, before any writer exists, to cut damage so appends can continue.
    pub fn zero_range(&mut self, from: u64, to: u64) -> Result<(), JournalError> {
        /// Zeroing works page by page so untouched (all-zero) pages are not dirtied.
        const CHUNK: u64 = 4096;
        let to = to.min(self.len);
        for (start, end) in data_ranges(&self.file, from, to) {
            let mut pos = start.max(from);
            let end = end.min(to);
            while pos < end {
                let chunk_end = ((pos / CHUNK) + 1).saturating_mul(CHUNK).min(end);
                if let Some(chunk) = self.map.get_mut(pos as usize..chunk_end as usize) {
                    if chunk.iter().any(|&b| b != 0) {
                        chunk.fill(0);
                    }
                }
                pos = chunk_end;
            }
        }
        self.flush(from, to)
    }

    /// Write a `u32` word during recovery (sealing an unsealed segment).
    pub fn put_u32(&mut self, off: u64, v: u32) {
        if let Some(dst) = self.map.get_mut(off as usize..off as usize + 4) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    }
}
