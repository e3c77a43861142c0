//! Failures of the HTTP codec. Each one ends the connection: after an error the byte stream
//! can no longer be split into messages with confidence.

use std::fmt;

/// Why a message could not be decoded. `status()` is what a server answers before closing,
/// `code()` is the stable machine-readable name used in JSON error bodies and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The head (or head plus chunked trailers) grew past `Limits::max_head_bytes`.
    HeadTooLarge,
    /// More header lines than `Limits::max_headers`.
    TooManyHeaders,
    /// The request line is malformed (bad method token, target or spacing).
    InvalidRequestLine,
    /// The status line is malformed, or the status code is outside 100..=599.
    InvalidStatusLine,
    /// Not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// A header name is empty or has characters outside the token set (including blanks
    /// before the colon, which smuggling attacks rely on).
    InvalidHeaderName,
    /// A header value holds control characters, or a value the codec interprets (Authorization,
    /// Content-Type, Retry-After) is not UTF-8.
    InvalidHeaderValue,
    /// A header continued on the next line (obs-fold), which RFC 9112 lets a server refuse
    /// and which proxies disagree on.
    ObsoleteLineFolding,
    /// A line ending that is neither CRLF nor LF (a lone CR).
    InvalidLineEnding,
    /// The head could not be parsed for a reason not named above.
    InvalidHead,
    /// A header that must appear at most once (Authorization) appeared again.
    DuplicateHeader,
    /// Content-Length is not a plain decimal number (sign, blanks inside, empty, overflow).
    InvalidContentLength,
    /// Several Content-Length values that disagree.
    ConflictingContentLength,
    /// A request Transfer-Encoding that is not exactly `chunked`, or `chunked` applied twice.
    InvalidTransferEncoding,
    /// A request with both Transfer-Encoding and Content-Length: the classic smuggling shape.
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding on an HTTP/1.0 message, whose framing RFC 9112 calls faulty.
    TransferEncodingInHttp10,
    /// A chunk size that is not hex, is empty, has too many digits or overflows.
    InvalidChunkSize,
    /// Chunked framing broken: a missing CRLF after a size line or after chunk data, or a
    /// control character in a chunk extension.
    InvalidChunk,
    /// Chunk extensions beyond `MAX_CHUNK_EXTENSION_BYTES` in one body.
    ChunkExtensionTooLarge,
    /// A trailer line that is not `name: value` or is folded.
    InvalidTrailer,
    /// Trailers beyond what is left of the head budget (bytes or lines).
    TrailersTooLarge,
    /// The body is over `Limits::max_body_bytes` (declared or de-chunked).
    BodyTooLarge,
    /// A response answered `101 Switching Protocols`, which the exchange never asks for.
    UnexpectedSwitchingProtocols,
    /// More than `MAX_INFORMATIONAL_HEADS` 1xx heads before the final response.
    TooManyInformational,
    /// The peer closed the connection in the middle of a message.
    IncompleteMessage,
    /// An answer whose first bytes cannot begin `HTTP/`: the peer does not speak HTTP (an SSH
    /// banner, a bare JSON body).
    NotHttp,
}

impl Error {
    /// The HTTP status a server answers with: 413 for an oversized body, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Error::BodyTooLarge => 413,
            _ => 400,
        }
    }

    /// Stable snake_case name for JSON error bodies, metrics and the journal.
    pub fn code(&self) -> &'static str {
        match self {
            Error::HeadTooLarge => "header_too_large",
            Error::TooManyHeaders => "too_many_headers",
            Error::InvalidRequestLine => "invalid_request_line",
            Error::InvalidStatusLine => "invalid_status_line",
            Error::UnsupportedVersion => "unsupported_version",
            Error::InvalidHeaderName => "invalid_header_name",
            Error::InvalidHeaderValue => "invalid_header_value",
            Error::ObsoleteLineFolding => "obsolete_line_folding",
            Error::InvalidLineEnding => "invalid_line_ending",
            Error::InvalidHead => "invalid_head",
            Error::DuplicateHeader => "duplicate_header",
            Error::InvalidContentLength => "invalid_content_length",
            Error::ConflictingContentLength => "conflicting_content_length",
            Error::InvalidTransferEncoding => "invalid_transfer_encoding",
            Error::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Error::TransferEncodingInHttp10 => "transfer_encoding_in_http10",
            Error::InvalidChunkSize => "invalid_chunk_size",
            Error::InvalidChunk => "invalid_chunk",
            Error::ChunkExtensionTooLarge => "chunk_extension_too_large",
            Error::InvalidTrailer => "invalid_trailer",
            Error::TrailersTooLarge => "trailers_too_large",
            Error::BodyTooLarge => "body_too_large",
            Error::UnexpectedSwitchingProtocols => "unexpected_switching_protocols",
            Error::TooManyInformational => "too_many_informational",
            Error::IncompleteMessage => "incomplete_message",
            Error::NotHttp => "not_http",
        }
    }

    /// A short human sentence for the `message` of a JSON error body.
    pub fn message(&self) -> &'static str {
        match self {
            Error::HeadTooLarge => "request head is larger than the limit",
            Error::TooManyHeaders => "too many header lines",
            Error::InvalidRequestLine => "malformed request line",
            Error::InvalidStatusLine => "malformed status line",
            Error::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            Error::InvalidHeaderName => "malformed header name",
            Error::InvalidHeaderValue => "malformed header value",
            Error::ObsoleteLineFolding => "folded header lines are not accepted",
            Error::InvalidLineEnding => "malformed line ending",
            Error::InvalidHead => "malformed message head",
            Error::DuplicateHeader => "a header that may appear once appeared twice",
            Error::InvalidContentLength => "Content-Length is not a decimal number",
            Error::ConflictingContentLength => "conflicting Content-Length values",
            Error::InvalidTransferEncoding => "only Transfer-Encoding: chunked is accepted",
            Error::ContentLengthWithTransferEncoding => {
                "Content-Length and Transfer-Encoding together are not accepted"
            }
            Error::TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
            Error::InvalidChunkSize => "malformed chunk size",
            Error::InvalidChunk => "malformed chunked framing",
            Error::ChunkExtensionTooLarge => "chunk extensions are larger than the limit",
            Error::InvalidTrailer => "malformed trailer",
            Error::TrailersTooLarge => "trailers are larger than the limit",
            Error::BodyTooLarge => "body is larger than the limit",
            Error::UnexpectedSwitchingProtocols => "unexpected 101 Switching Protocols",
            Error::TooManyInformational => "too many informational responses",
            Error::IncompleteMessage => "connection closed in the middle of a message",
            Error::NotHttp => "not an HTTP answer: it does not begin HTTP/",
        }
    }
}

impl Error {
    /// Why an answer (a response read under `limits`) could not be read, in the words of the
    /// buyer's journal record: a limit it broke is named with its size.
    pub fn answer_reason(&self, limits: &super::Limits) -> String {
        match self {
            Error::HeadTooLarge => format!(
                "malformed HTTP answer: its head is larger than {} bytes",
                limits.max_head_bytes
            ),
            Error::TooManyHeaders => format!(
                "malformed HTTP answer: more than {} header lines",
                limits.header_slots()
            ),
            Error::BodyTooLarge => {
                format!("answer body larger than {} bytes", limits.max_body_bytes)
            }
            Error::NotHttp => self.message().to_string(),
            e => format!("malformed HTTP answer: {}", e.message()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.code())
    }
}

impl std::error::Error for Error {}
