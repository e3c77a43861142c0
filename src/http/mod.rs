//! HTTP/1.1 codec (sans-IO), used in both directions by the event loop.
//!
//! Server side: [`RequestDecoder`] turns seller bytes into [`RequestHead`]s and bodies,
//! [`write_response`] turns answers into bytes. Client side: [`OutgoingRequest`] (or
//! [`write_request`]) builds pings and posts to buyers, [`ResponseDecoder`] reads their answers.
//!
//! Nothing here touches a socket or a clock: the caller appends whatever it read to its own
//! buffer, calls `decode(&buf, &mut body)`, and drains the `consumed` bytes from the front of the
//! buffer. A decoder keeps its place across calls, so a head split over many reads or a chunked
//! body dripping in a byte at a time costs no more than the same bytes arriving at once. Body
//! bytes (de-chunked) go into the caller's reusable `Vec`, so the steady state does not allocate
//! for bodies.
//!
//! The guards follow hyper's HTTP/1 role code, made stricter where request smuggling is at
//! stake: a request carrying both `Content-Length` and `Transfer-Encoding`, or a transfer coding
//! other than `chunked`, is refused rather than reinterpreted. Every refusal is an [`Error`] whose
//! [`Error::status`] is the answer to send before closing the connection.

mod body;
mod decode;
mod encode;
mod error;
mod head;

#[cfg(test)]
mod tests;

pub use decode::{RequestDecoder, ResponseDecoder};
pub use encode::{
    finish_request, finish_request_len, is_valid_header, push_u64, reason_phrase,
    write_error_response, write_request, write_response, write_response_head, OutgoingRequest,
    Persist,
};
pub use error::Error;
pub use head::{host_ok, Method, RequestHead, ResponseHead};

/// Default cap on a message head (request or status line, headers, the blank line) and, for
/// chunked bodies, the trailers. The contract (PROTOCOL.md §6) answers 400 beyond 16 KiB.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Default cap on the number of header lines (and trailer lines) of one message.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Default cap on a de-chunked body; matches the example config's `server.max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Hard ceiling on `Limits::max_headers`: the header slots live on the stack during a parse,
/// so a larger configured value is clamped to this.
pub const HEADER_SLOTS: usize = 128;

/// Total bytes of chunk extensions (and the blanks around chunk sizes) tolerated in one body.
/// Extensions carry nothing the exchange uses; the bound keeps a sender from streaming
/// unbounded framing that never produces body bytes.
pub const MAX_CHUNK_EXTENSION_BYTES: usize = 4 * 1024;

/// Hex digits allowed in one chunk size, leading zeros included: 16 digits hold any `u64`,
/// and the bound stops an endless run of zeros.
pub const MAX_CHUNK_SIZE_DIGITS: u32 = 16;

/// Informational (1xx) heads skipped before a final response; a buyer sending more is broken.
pub const MAX_INFORMATIONAL_HEADS: u32 = 8;

/// Size limits applied to every message a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of head (start line, headers, blank line), counting blank lines before the start
    /// line; for chunked bodies the trailers share this budget. Over it: 400.
    pub max_head_bytes: usize,
    /// Header lines in one head (trailer lines share the count). Over it: 400.
    /// Clamped to [`HEADER_SLOTS`].
    pub max_headers: usize,
    /// De-chunked body bytes. Over it: 413, found from a declared `Content-Length` before any
    /// body byte is read, or from chunk sizes as they arrive.
    pub max_body_bytes: usize,
}

impl Limits {
    /// The default head limits with the given body limit (`server.max_body_bytes`).
    pub fn with_max_body_bytes(max_body_bytes: usize) -> Limits {
        Limits {
            max_body_bytes,
            ..Limits::default()
        }
    }

    /// Header slots a parse may fill: the configured count within the stack array.
    pub(crate) fn header_slots(&self) -> usize {
        self.max_headers.min(HEADER_SLOTS)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// What one `decode` call achieved.
///
/// In both cases the caller drains `consumed` bytes from the front of its buffer before the
/// next call; bytes past `consumed` belong to a later read (or, after `Complete`, to the next
/// pipelined message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<H> {
    /// The message is not finished; read more bytes and call again.
    NeedMore {
        /// Bytes taken from the front of the input (body bytes already copied out, blank lines).
        consumed: usize,
    },
    /// A whole message: its head, with its body in the caller's body buffer.
    Complete {
        /// The parsed head.
        head: H,
        /// Bytes of the input this message took, head and body.
        consumed: usize,
    },
}
