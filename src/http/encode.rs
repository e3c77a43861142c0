//! Serialising requests and responses into a caller's reusable buffer.
//!
//! Framing is the codec's job: it always writes `Content-Length` itself and drops any framing
//! header the caller passes, so a configured header can never make two parties disagree on
//! where a message ends. Header text that could break a line (CR, LF, other control bytes) is
//! never written: invalid names drop their header, invalid value bytes are left out. Config
//! validation should reject such headers up front with [`is_valid_header`].

use super::body::is_tchar;
use super::error::Error;

/// Headers whose value the codec writes itself on a response.
const RESPONSE_OWNED: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

/// Headers whose value the codec writes itself on a request.
const REQUEST_OWNED: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "host",
    "content-type",
];

/// What a response says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// The connection ends after this response: `Connection: close`.
    Close,
    /// The connection stays open, HTTP/1.1's default: nothing is written.
    KeepAlive,
    /// The connection stays open and the response says so, `Connection: keep-alive`: an
    /// HTTP/1.0 client that asked for keep-alive takes a response without it as the last one
    /// (RFC 9112 §9.3, RFC 7230 Appendix A.1.2).
    KeepAliveAnnounced,
}

impl Persist {
    /// The answer to a request: closed when `keep_alive` is false, announced when the client
    /// spoke HTTP/1.0.
    pub fn for_request(keep_alive: bool, version_minor: u8) -> Self {
        match (keep_alive, version_minor) {
            (false, _) => Persist::Close,
            (true, 0) => Persist::KeepAliveAnnounced,
            (true, _) => Persist::KeepAlive,
        }
    }
}

impl From<bool> for Persist {
    fn from(keep_alive: bool) -> Self {
        if keep_alive {
            Persist::KeepAlive
        } else {
            Persist::Close
        }
    }
}

/// Digits of the largest `u64`.
const MAX_U64_DIGITS: usize = 20;

/// The standard reason phrase for a status code (`"Unknown"` for codes without one), so the
/// status line reads well in logs and tools.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// True when `name: value` can be written as one header line: the name is a token and the
/// value has no control bytes other than HTAB.
pub fn is_valid_header(name: &str, value: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar) && value.bytes().all(is_value_byte)
}

/// Writes a whole response: status line, `headers`, `Content-Length` (except where the status
/// forbids a body: 1xx, 204, 304), `Connection: close` when the connection ends after it, and
/// the body. HTTP/1.1 keeps connections alive by default, so nothing is written for that case
/// unless `persist` asks for the HTTP/1.0 `Connection: keep-alive` (a `bool` reads as
/// [`Persist::KeepAlive`] or [`Persist::Close`]).
/// A status outside 100..=599 is written as 500 rather than as a malformed status line.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    persist: impl Into<Persist>,
) {
    if write_response_head(out, status, headers, body.len(), persist) {
        out.extend_from_slice(body);
    }
}

/// Writes a response's head only, declaring `content_length` as its body's length: the answer
/// to a `HEAD` request carries the headers the `GET` answer would and no body (RFC 9110
/// §9.3.2). Returns whether the status has a body at all (not 1xx, 204 or 304), that is,
/// whether [`write_response`] would follow the head with the body.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_length: usize,
    persist: impl Into<Persist>,
) -> bool {
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for &(name, value) in headers {
        push_header(out, name, value, &RESPONSE_OWNED);
    }
    let has_body = !(status < 200 || status == 204 || status == 304);
    if has_body {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, content_length as u64);
        out.extend_from_slice(b"\r\n");
    }
    match persist.into() {
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Persist::KeepAliveAnnounced => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::KeepAlive => {}
    }
    out.extend_from_slice(b"\r\n");
    has_body
}

/// Writes a whole request to a buyer: [`OutgoingRequest::write`] of these parts.
pub fn write_request<'a, I>(
    out: &mut Vec<u8>,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    headers: I,
    content_type: &'a str,
    body: &'a [u8],
) where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let request = OutgoingRequest {
        method,
        path,
        host,
        headers,
        content_type,
        body,
    };
    request.write(out);
}

/// A whole HTTP/1.1 request for a keep-alive buyer connection: request line, `Host`, the
/// caller's `headers` (a buyer's configured headers), `Content-Type` (omitted when empty),
/// `Content-Length` (always, so the buyer never has to guess) and the body. Its length can be
/// bounded before it is written, to reserve its buffer once.
///
/// Bytes of `path` that may not appear in a request target are percent-encoded; `method` bytes
/// outside the token set are left out (and an empty method is written as `GET`); header names
/// that are not tokens or that the request sets itself, and bytes of header values that could
/// end the line, are left out.
#[derive(Clone, Copy, Debug)]
pub struct OutgoingRequest<'a, I> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: I,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl<'a, I> OutgoingRequest<'a, I>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    /// Appends the request to `out`.
    pub fn write(self, out: &mut Vec<u8>) {
        let body = self.body;
        self.write_head_prefix(out);
        finish_request(out, body);
    }

    /// Appends everything of the request that does not depend on its body: the request line
    /// and every header, up to and including `Content-Length: `. A connection's requests to
    /// one endpoint share this prefix, so it can be built once and completed per request with
    /// [`finish_request`].
    pub fn write_head_prefix(self, out: &mut Vec<u8>) {
        let method = self.method;
        if !method.is_empty() && method.bytes().all(is_tchar) {
            out.extend_from_slice(method.as_bytes());
        } else {
            let before = out.len();
            out.extend(method.bytes().filter(|&b| is_tchar(b)));
            if out.len() == before {
                out.extend_from_slice(b"GET");
            }
        }
        out.push(b' ');
        if self.path.is_empty() {
            out.push(b'/');
        } else if self.path.bytes().all(is_target_byte) {
            out.extend_from_slice(self.path.as_bytes());
        } else {
            for b in self.path.bytes() {
                if is_target_byte(b) {
                    out.push(b);
                } else {
                    out.push(b'%');
                    out.push(HEX_UPPER[usize::from(b >> 4)]);
                    out.push(HEX_UPPER[usize::from(b & 0x0f)]);
                }
            }
        }
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        push_value(out, self.host);
        out.extend_from_slice(b"\r\n");
        for (name, value) in self.headers {
            push_header(out, name, value, &REQUEST_OWNED);
        }
        if !self.content_type.is_empty() {
            out.extend_from_slice(b"Content-Type: ");
            push_value(out, self.content_type);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
    }
}

/// Completes a request whose head prefix ([`OutgoingRequest::write_head_prefix`]) is already
/// in `out`: the body's length, the end of the head and the body.
pub fn finish_request(out: &mut Vec<u8>, body: &[u8]) {
    push_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The most [`finish_request`] appends for a body of `body_len` bytes.
pub fn finish_request_len(body_len: usize) -> usize {
    MAX_U64_DIGITS + "\r\n\r\n".len() + body_len
}

impl<'a, I> OutgoingRequest<'a, I>
where
    I: IntoIterator<Item = (&'a str, &'a str)> + Clone,
{
    /// The length [`OutgoingRequest::write`] appends, or more when bytes are left out or
    /// percent-encoded: enough to reserve the request's buffer in one allocation.
    pub fn len_bound(&self) -> usize {
        let target: usize = if self.path.is_empty() {
            1
        } else {
            self.path
                .bytes()
                .map(|b| if is_target_byte(b) { 1 } else { 3 })
                .sum()
        };
        let headers: usize = self
            .headers
            .clone()
            .into_iter()
            .map(|(name, value)| name.len() + value.len() + ": \r\n".len())
            .sum();
        let content_type = if self.content_type.is_empty() {
            0
        } else {
            "Content-Type: \r\n".len() + self.content_type.len()
        };
        self.method.len().max("GET".len())
            + " ".len()
            + target
            + " HTTP/1.1\r\nHost: \r\n".len()
            + self.host.len()
            + headers
            + content_type
            + "Content-Length: \r\n\r\n".len()
            + decimal_digits(self.body.len() as u64)
            + self.body.len()
    }
}

/// How many decimal digits `n` has.
fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Writes the answer to a request the decoder refused: the error's status, a JSON body in the
/// contract's error shape (`{"error": {"code": ..., "message": ...}}`) and `Connection: close`,
/// since after a framing error the rest of the stream cannot be trusted.
pub fn write_error_response(out: &mut Vec<u8>, error: Error) {
    let mut body = [0u8; ERROR_BODY_CAPACITY];
    let len = error_body(&mut body, error);
    write_response(
        out,
        error.status(),
        &[("Content-Type", "application/json")],
        &body[..len],
        false,
    );
}

/// Room for the JSON error body: the longest code and message plus the fixed text.
const ERROR_BODY_CAPACITY: usize = 256;

/// Fills `buf` with the JSON error body; codes and messages are fixed ASCII without quotes or
/// backslashes, so they need no escaping.
fn error_body(buf: &mut [u8; ERROR_BODY_CAPACITY], error: Error) -> usize {
    let parts: [&[u8]; 5] = [
        b"{\"error\":{\"code\":\"",
        error.code().as_bytes(),
        b"\",\"message\":\"",
        error.message().as_bytes(),
        b"\"}}",
    ];
    let mut len = 0;
    for part in parts {
        let n = part.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    len
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Visible ASCII: anything else would end or corrupt the request line.
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b < 0x7f
}

fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

/// One header line, unless the name is invalid or owned by the codec.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str, owned: &[&str]) {
    if name.is_empty()
        || !name.bytes().all(is_tchar)
        || owned.iter().any(|o| name.eq_ignore_ascii_case(o))
    {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_value(out, value);
    out.extend_from_slice(b"\r\n");
}

/// A header value without the bytes that could end or corrupt the line.
fn push_value(out: &mut Vec<u8>, value: &str) {
    if value.bytes().all(is_value_byte) {
        out.extend_from_slice(value.as_bytes());
    } else {
        out.extend(value.bytes().filter(|&b| is_value_byte(b)));
    }
}

/// Decimal digits of `n` without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; MAX_U64_DIGITS];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
