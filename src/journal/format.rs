//! The on-disk layout: segment header and record frame, and the frame parser shared by
//! recovery, `verify` and every reader.
//!
//! All integers are little-endian. A segment file is:
//!
//! ```text
//! 0                 64                                            segment_bytes
//! | segment header  | frame | frame | ... | 0 0 0 ... (never written) |
//! ```
//!
//! Segment header (64 bytes):
//!
//! | offset | size | field                                             |
//! |--------|------|---------------------------------------------------|
//! | 0      | 8    | magic `GAVELJNL`                                  |
//! | 8      | 4    | format version (1)                                |
//! | 12     | 4    | header size (64): where the first frame starts    |
//! | 16     | 8    | segment sequence number (equals the file name)    |
//! | 24     | 8    | created at, unix microseconds                     |
//! | 32     | 8    | segment size in bytes at creation                 |
//! | 40     | 20   | reserved, zero                                    |
//! | 60     | 4    | CRC32C of bytes 0..60                             |
//!
//! Record frame (8-byte aligned, `len` bytes in all):
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 4    | `len`: whole frame including padding, a multiple of 8        |
//! | 4      | 4    | `commit`: 0 while being written, [`COMMIT_MAGIC`] once whole  |
//! | 8      | 1    | record type                                                  |
//! | 9      | 1    | padding bytes after the payload (0..=7)                      |
//! | 10     | 2    | reserved, zero                                               |
//! | 12     | 4    | CRC32C of bytes 0..4, 8..12, 16..24 and the payload          |
//! | 16     | 8    | `ts_us`: unix microseconds (wall clock)                      |
//! | 24     | n    | payload                                                      |
//!
//! A `len` word of 0 means "nothing beyond": the end of the data. [`END_OF_SEGMENT`] in the
//! `len` word means the segment was sealed and the data continues in the next segment.

use std::sync::atomic::{fence, Ordering};

use super::recovery::DamageKind;

/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"GAVELJNL";

/// Version of the segment and frame layout. Readers refuse segments from a newer version
/// rather than misreading (or cutting) them.
pub const FORMAT_VERSION: u32 = 1;

/// Size of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: u64 = 64;

/// Size of a frame's fixed header; the payload starts here.
pub const FRAME_HEADER_BYTES: u64 = 24;

/// Frames start on 8-byte boundaries so that `len` and `commit` can be used as atomic words
/// and the timestamp is naturally aligned.
pub const FRAME_ALIGN: u64 = 8;

/// Value of the `commit` word once a frame is whole. Many bits set, so that a stray zeroed or
/// flipped word is not mistaken for a commit.
pub const COMMIT_MAGIC: u32 = 0xC0A7_5E9D;

/// `len` value sealing a segment: no frame fits after this point.
pub const END_OF_SEGMENT: u32 = u32::MAX;

/// Largest payload of one record. A lead as received is bounded by the server's body limit
/// (64 KiB by default); this leaves room for operators that raise it.
pub const MAX_PAYLOAD_BYTES: u64 = 1024 * 1024;

/// Largest frame: the payload limit plus header and padding.
pub const MAX_FRAME_BYTES: u64 = FRAME_HEADER_BYTES + MAX_PAYLOAD_BYTES + FRAME_ALIGN;

/// Size of the frame holding a payload of `payload_len` bytes.
pub fn frame_len(payload_len: u64) -> u64 {
    (FRAME_HEADER_BYTES + payload_len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// The parsed, valid segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the segment.
    pub version: u32,
    /// Segment sequence number.
    pub seq: u64,
    /// Creation time, unix microseconds, in the clock of the records' timestamps.
    pub created_us: u64,
    /// Size of the segment file when it was created.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// The header's 64 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.created_us.to_le_bytes());
        h[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parse and check a header. A newer version is reported as such (the caller refuses the
    /// segment) rather than as damage.
    pub fn parse(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let h = buf
            .get(0..SEGMENT_HEADER_BYTES as usize)
            .ok_or(HeaderError::Damaged("file shorter than the header"))?;
        if h.iter().all(|&b| b == 0) {
            return Err(HeaderError::Damaged("header is all zero"));
        }
        if h[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Damaged("bad magic"));
        }
        if read_u32(h, 60) != crc32c::crc32c(&h[0..60]) {
            return Err(HeaderError::Damaged("header checksum mismatch"));
        }
        let version = read_u32(h, 8);
        if version > FORMAT_VERSION {
            return Err(HeaderError::Newer(version));
        }
        if version == 0 || read_u32(h, 12) as u64 != SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Damaged("bad version or header size"));
        }
        Ok(SegmentHeader {
            version,
            seq: read_u64(h, 16),
            created_us: read_u64(h, 24),
            segment_bytes: read_u64(h, 32),
        })
    }
}

/// Why a segment header was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The header is damaged (or was never completely written).
    Damaged(&'static str),
    /// The segment was written by a newer format version.
    Newer(u32),
}

/// One frame as found at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, checked record.
    Record {
        /// Frame size; the next frame starts `len` bytes further.
        len: u64,
        /// Record type code.
        type_code: u8,
        /// Timestamp, unix microseconds.
        ts_us: u64,
        /// The payload bytes.
        payload: &'a [u8],
    },
    /// Claimed (length written) but never committed: in flight, or in flight at a crash.
    Torn {
        /// Frame size; the next frame starts `len` bytes further.
        len: u64,
    },
    /// A zero `len` word: nothing has been claimed here yet.
    EndOfData,
    /// The segment is sealed (sentinel, or no room for another frame header).
    Sealed,
    /// Not a frame: the bytes here are damaged.
    Damage(DamageKind),
}

/// Read the frame at `off` in a segment's bytes. `len` and `commit` are read with acquire
/// ordering so that a committed frame's header and payload, written before the commit, are
/// seen whole even while another thread or process is appending to the same file.
pub fn read_frame(buf: &[u8], off: u64) -> Frame<'_> {
    let total = buf.len() as u64;
    if off % FRAME_ALIGN != 0 || off.saturating_add(FRAME_ALIGN) > total {
        return Frame::Sealed;
    }
    let len_word = load_u32_acquire(buf, off);
    if len_word == 0 {
        return Frame::EndOfData;
    }
    if len_word == END_OF_SEGMENT {
        return Frame::Sealed;
    }
    let len = len_word as u64;
    if len < FRAME_HEADER_BYTES
        || len % FRAME_ALIGN != 0
        || len > MAX_FRAME_BYTES
        || off + len > total
    {
        return Frame::Damage(DamageKind::BadLength(len_word));
    }
    let commit = load_u32_acquire(buf, off + 4);
    if commit == 0 {
        return Frame::Torn { len };
    }
    if commit != COMMIT_MAGIC {
        return Frame::Damage(DamageKind::BadCommit(commit));
    }
    let o = off as usize;
    let frame = &buf[o..o + len as usize];
    let type_code = frame[8];
    let pad = frame[9] as u64;
    if pad >= FRAME_ALIGN || FRAME_HEADER_BYTES + pad > len || frame[10] != 0 || frame[11] != 0 {
        return Frame::Damage(DamageKind::BadFrameHeader);
    }
    let payload = &frame[FRAME_HEADER_BYTES as usize..(len - pad) as usize];
    let ts_us = read_u64(frame, 16);
    let stored_crc = read_u32(frame, 12);
    let mut head = [0u8; 16];
    head[0..4].copy_from_slice(&frame[0..4]);
    head[4..8].copy_from_slice(&frame[8..12]);
    head[8..16].copy_from_slice(&frame[16..24]);
    if frame_crc(&head, payload) != stored_crc {
        return Frame::Damage(DamageKind::BadChecksum);
    }
    Frame::Record {
        len,
        type_code,
        ts_us,
        payload,
    }
}

/// The frame checksum: CRC32C over the `len` word, the type/padding/reserved word, the
/// timestamp (`head`, 16 bytes in that order) and then the payload.
pub fn frame_crc(head: &[u8; 16], payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if payload.len() <= SHORT_FRAME && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2 (checked just above; std caches the answer).
        return unsafe { !short::update(short::update(!0, head), payload) };
    }
    crc32c::crc32c_append(crc32c::crc32c(head), payload)
}

/// Payloads up to this length are checksummed inline, eight bytes per `crc32` instruction:
/// for the short records of a lead that is several times cheaper than the `crc32c` crate's
/// general path (its setup is most of the cost), while longer ones gain from its three
/// interleaved streams.
const SHORT_FRAME: usize = 1024;

#[cfg(target_arch = "x86_64")]
mod short {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};

    /// CRC32C register update over `data` (no pre- or post-inversion).
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn update(crc: u32, data: &[u8]) -> u32 {
        let mut c = u64::from(crc);
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            c = _mm_crc32_u64(c, u64::from_le_bytes(b));
        }
        let mut c = c as u32;
        for &b in words.remainder() {
            c = _mm_crc32_u8(c, b);
        }
        c
    }
}

/// Load a little-endian `u32` with acquire ordering. The bytes may be written concurrently by a
/// writer in this or another process (through its own mapping of the same file), so the load is
/// volatile and followed by an acquire fence instead of going through a `&[u8]` the compiler may
/// assume frozen.
pub(crate) fn load_u32_acquire(buf: &[u8], off: u64) -> u32 {
    let o = off as usize;
    if o + 4 > buf.len() || o % 4 != 0 {
        return 0;
    }
    // SAFETY: in bounds (checked above) and 4-byte aligned relative to the mapping, whose base
    // is page aligned; volatile so the value is read from memory each time.
    let v = unsafe { std::ptr::read_volatile(buf.as_ptr().add(o) as *const u32) };
    fence(Ordering::Acquire);
    u32::from_le(v)
}

pub(crate) fn read_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(off..off + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

pub(crate) fn read_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(off..off + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}
