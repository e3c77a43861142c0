//! Just enough HTTP/1.1 for the simulators: request heads for the mock buyers, response heads
//! for the load generator, both with Content-Length bodies, plus a scanner that reads top-level
//! fields out of a JSON answer without building a tree or touching floats.
//!
//! The exchange's own codec lives in `crate::http`; the simulators keep theirs separate so a
//! bug there cannot cancel itself out in tests.

use std::fmt;

/// Largest request or response head accepted, in bytes (the contract's limit for sellers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers parsed in one head; more is a malformed message.
pub const MAX_HEADERS: usize = 64;
/// Largest body accepted, in bytes: well above any lead, small enough to bound memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why bytes could not be read as an HTTP/1.1 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The head did not parse (bad token, bad version, bad header line).
    Malformed,
    /// The head grew beyond `MAX_HEAD_BYTES` without ending.
    HeadTooLarge,
    /// More than `MAX_HEADERS` headers.
    TooManyHeaders,
    /// A Content-Length that is not a decimal number, or two that disagree.
    BadContentLength,
    /// A body beyond `MAX_BODY_BYTES`.
    BodyTooLarge,
    /// Transfer-Encoding (chunked) bodies: the peers the simulators talk to always send
    /// Content-Length, so anything else is refused rather than half supported.
    UnsupportedTransferEncoding,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            WireError::Malformed => "malformed HTTP head",
            WireError::HeadTooLarge => "HTTP head too large",
            WireError::TooManyHeaders => "too many HTTP headers",
            WireError::BadContentLength => "invalid or conflicting Content-Length",
            WireError::BodyTooLarge => "HTTP body too large",
            WireError::UnsupportedTransferEncoding => "Transfer-Encoding is not supported",
        };
        f.write_str(s)
    }
}

impl std::error::Error for WireError {}

/// A request whose head and whole body are in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, including the blank line; the body starts here.
    pub head_len: usize,
    /// Bytes of the body (Content-Length, 0 when absent).
    pub body_len: usize,
    /// The request path, for telling `/ping` from `/post`.
    pub path: String,
    /// Whether the connection stays open after the answer (HTTP/1.1 default).
    pub keep_alive: bool,
}

/// Parse one request at the start of `buf`. `Ok(None)`: not all of it has arrived yet.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(WireError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
        Err(_) => return Err(WireError::Malformed),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(WireError::HeadTooLarge);
    }
    let framing = framing(req.headers, req.version.unwrap_or(1))?;
    let body_len = framing.content_length.unwrap_or(0);
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    Ok(Some(RequestHead {
        head_len,
        body_len,
        path: req.path.unwrap_or("/").to_string(),
        keep_alive: framing.keep_alive,
    }))
}

/// A response whose head has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// Body length from Content-Length; `None` means the body runs until the peer closes.
    pub body_len: Option<usize>,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// Parse a response head at the start of `buf`. `Ok(None)`: the head is not complete yet.
/// The caller waits for `head_len + body_len` bytes.
pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(WireError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
        Err(_) => return Err(WireError::Malformed),
    };
    let status = resp.code.unwrap_or(0);
    let framing = framing(resp.headers, resp.version.unwrap_or(1))?;
    // 1xx, 204 and 304 never carry a body, whatever the headers say.
    let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
        Some(0)
    } else {
        framing.content_length
    };
    Ok(Some(ResponseHead {
        status,
        head_len,
        body_len,
        keep_alive: framing.keep_alive && body_len.is_some(),
    }))
}

struct Framing {
    content_length: Option<usize>,
    keep_alive: bool,
}

fn framing(headers: &[httparse::Header<'_>], version: u8) -> Result<Framing, WireError> {
    let mut content_length: Option<usize> = None;
    let mut keep_alive = version >= 1;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| WireError::BadContentLength)?;
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::BadContentLength);
            }
            let n: usize = text.parse().map_err(|_| WireError::BadContentLength)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(WireError::BadContentLength);
            }
            if n > MAX_BODY_BYTES {
                return Err(WireError::BodyTooLarge);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(WireError::UnsupportedTransferEncoding);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    Ok(Framing {
        content_length,
        keep_alive,
    })
}

/// The reason phrase written after a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Append a decimal number to `out` without going through `format!`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// The raw text of the value of `key` in the top-level JSON object `body`: a number's digits,
/// a string's contents without quotes (escapes left as written), or `null`/`true`/`false`.
/// Nested objects and arrays are skipped, so `sales[0].price` never shadows the top-level
/// `price`. `None` when the key is absent, its value is an object or array, or the text is not
/// an object.
pub fn top_level_value<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(body, i);
        match body.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let (k, next) = string_at(body, i)?;
        i = skip_ws(body, next);
        if body.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(body, i + 1);
        let start = i;
        let end = skip_value(body, i)?;
        if k == key.as_bytes() {
            return match body.get(start)? {
                b'"' => string_at(body, start).map(|(s, _)| s),
                b'{' | b'[' => None,
                _ => Some(&body[start..end]),
            };
        }
        i = end;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// The contents of the string starting at the quote at `i`, and the index after its end quote.
fn string_at(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some((&b[i + 1..j], j + 1)),
            _ => j += 1,
        }
    }
    None
}

/// Index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_at(b, i).map(|(_, end)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_at(b, j)?.1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
            {
                j += 1;
            }
            if j == i {
                None
            } else {
                Some(j)
            }
        }
    }
}
