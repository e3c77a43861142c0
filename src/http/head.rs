//! Message heads and the header rules that decide framing and connection reuse.
//!
//! `httparse` checks the syntax (tokens, values, line endings); this module decides what the
//! headers mean: how long the body is, whether the connection stays open, and which header
//! combinations are refused because two parties could read them differently.

use super::error::Error;
use crate::text::SmallText;

/// Request methods the exchange routes on; anything else is `Other` (and answered 404/405 by
/// the router), so no method string is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `HEAD`: answered like GET but without a body.
    Head,
    /// Any other (valid) method token.
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// A request head as the seller and operator APIs need it. Only the headers the exchange acts
/// on are kept, so a head costs a few small strings rather than a header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target as sent (origin form, query included).
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Whether the connection may carry another request after the answer to this one.
    pub keep_alive: bool,
    /// The declared Content-Length, if any (never set together with `chunked`).
    pub content_length: Option<u64>,
    /// The body is chunked.
    pub chunked: bool,
    /// The Authorization value, blanks trimmed (`Bearer sk-...`).
    pub authorization: Option<String>,
    /// The Content-Type value, blanks trimmed.
    pub content_type: Option<String>,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// `Host` headers seen (RFC 9112 §3.2: an HTTP/1.1 request has exactly one; the server
    /// answers 400 otherwise).
    pub host_count: u8,
    /// The `Idempotency-Key` value, blanks trimmed: a seller's name for one request, so that
    /// its retry is answered with the first one's answer instead of running again.
    pub idempotency_key: Option<String>,
}

/// A response head as the buyer client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code (100..=599; 1xx heads are skipped by the decoder).
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Whether the connection may carry another request: false when the buyer said
    /// `Connection: close`, spoke HTTP/1.0 without keep-alive, or delimited the body by closing.
    pub keep_alive: bool,
    /// The declared Content-Length, if any (ignored for framing when `chunked`).
    pub content_length: Option<u64>,
    /// The body is chunked (Transfer-Encoding wins over Content-Length on a response).
    pub chunked: bool,
    /// The body runs to the end of the connection; it is finished by `ResponseDecoder::on_eof`.
    pub close_delimited: bool,
    /// The Retry-After value, blanks trimmed (seconds or an HTTP date), for backing off a buyer.
    pub retry_after: Option<SmallText>,
    /// The Content-Type value, blanks trimmed (inline: reading a buyer's answer allocates nothing).
    pub content_type: Option<SmallText>,
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: the message is complete with its head.
    Empty,
    /// Exactly this many bytes follow.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Bytes until the peer closes (responses only).
    ToEof,
}

/// Connection-level facts gathered from all headers of one head.
#[derive(Default)]
struct Common {
    content_length: Option<u64>,
    te_present: bool,
    te_last_is_chunked: bool,
    te_chunked_count: u32,
    te_other_coding: bool,
    conn_close: bool,
    conn_keep_alive: bool,
}

impl Common {
    /// Folds one header into the framing facts; returns false for headers it does not own.
    fn absorb(&mut self, name: &str, value: &[u8]) -> Result<bool, Error> {
        if name.eq_ignore_ascii_case("content-length") {
            self.absorb_content_length(value)?;
            Ok(true)
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.te_present = true;
            // `chunked` takes no parameters (RFC 9112 §7.1): `chunked;q=1` is another coding.
            for element in value.split(|&b| b == b',') {
                let token = trim_ows(element);
                if token.is_empty() {
                    continue;
                }
                let chunked = token.eq_ignore_ascii_case(b"chunked");
                if chunked {
                    self.te_chunked_count += 1;
                } else {
                    self.te_other_coding = true;
                }
                self.te_last_is_chunked = chunked;
            }
            Ok(true)
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list_tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.conn_keep_alive = true;
                }
            }
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Several Content-Length headers, or a comma list, are accepted only when every value is
    /// the same number (as hyper does); anything else could frame the body two ways.
    fn absorb_content_length(&mut self, value: &[u8]) -> Result<(), Error> {
        for element in value.split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(element)).ok_or(Error::InvalidContentLength)?;
            match self.content_length {
                Some(prev) if prev != n => return Err(Error::ConflictingContentLength),
                _ => self.content_length = Some(n),
            }
        }
        Ok(())
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless told
    /// `keep-alive` (RFC 9112 §9.3).
    fn keep_alive(&self, version_minor: u8) -> bool {
        if version_minor >= 1 {
            !self.conn_close
        } else {
            self.conn_keep_alive && !self.conn_close
        }
    }
}

/// Interprets a parsed request: framing, keep-alive and the headers the exchange uses.
pub(crate) fn request_head(
    req: &httparse::Request<'_, '_>,
    limits_max_body: usize,
) -> Result<(RequestHead, Framing), Error> {
    let method = req.method.ok_or(Error::InvalidRequestLine)?;
    let path = req.path.ok_or(Error::InvalidRequestLine)?;
    // A fragment is never sent (RFC 9112 §3.2: origin-form is a path and a query).
    if path.contains('#') {
        return Err(Error::InvalidRequestLine);
    }
    let version_minor = req.version.ok_or(Error::UnsupportedVersion)?;
    let mut common = Common::default();
    let mut authorization = None;
    let mut content_type = None;
    let mut expect_continue = false;
    let mut host_count = 0u8;
    let mut idempotency_key = None;
    for h in req.headers.iter() {
        if common.absorb(h.name, h.value)? {
            continue;
        }
        if h.name.eq_ignore_ascii_case("host") {
            host_count = host_count.saturating_add(1);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(Error::DuplicateHeader);
            }
            authorization = Some(value_text(h.value));
        } else if h.name.eq_ignore_ascii_case("idempotency-key") {
            // Two keys name no one request.
            if idempotency_key.is_some() {
                return Err(Error::DuplicateHeader);
            }
            idempotency_key = Some(value_text(h.value));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value_text(h.value));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    let framing = if common.te_present {
        if version_minor == 0 {
            return Err(Error::TransferEncodingInHttp10);
        }
        if common.content_length.is_some() {
            return Err(Error::ContentLengthWithTransferEncoding);
        }
        // Only `chunked`, once: another coding would hand the router bytes it cannot read,
        // and `chunked, chunked` is forbidden by RFC 9112 §6.1.
        if common.te_other_coding || common.te_chunked_count != 1 || !common.te_last_is_chunked {
            return Err(Error::InvalidTransferEncoding);
        }
        Framing::Chunked
    } else {
        match common.content_length {
            Some(n) if n > limits_max_body as u64 => return Err(Error::BodyTooLarge),
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    let head = RequestHead {
        method: Method::from_token(method),
        path: origin_form(path).to_owned(),
        version_minor,
        keep_alive: common.keep_alive(version_minor),
        content_length: if common.te_present {
            None
        } else {
            common.content_length
        },
        chunked: framing == Framing::Chunked,
        authorization,
        content_type,
        expect_continue,
        host_count,
        idempotency_key,
    };
    Ok((head, framing))
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; an HTTP/1.0 one at most one.
pub fn host_ok(head: &RequestHead) -> bool {
    head.host_count == 1 || (head.version_minor == 0 && head.host_count == 0)
}

/// The path and query of a request target: an absolute-form target (`http://host/v1/leads`,
/// which a server must accept, RFC 9112 §3.2.2) loses its scheme and authority.
fn origin_form(target: &str) -> &str {
    let b = target.as_bytes();
    let scheme = if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return target;
    };
    match target[scheme..].find(['/', '?']) {
        Some(i) if b[scheme + i] == b'/' => &target[scheme + i..],
        // `http://host?x` or `http://host`: the path is `/`.
        _ => "/",
    }
}

/// What a status line means before its headers are looked at.
pub(crate) enum StatusClass {
    /// 1xx other than 101: skipped, the final response follows.
    Informational,
    /// A final response.
    Final,
}

/// Classifies a status code; 101 and codes outside 100..=599 are refused.
pub(crate) fn classify_status(status: u16) -> Result<StatusClass, Error> {
    match status {
        101 => Err(Error::UnexpectedSwitchingProtocols),
        100..=199 => Ok(StatusClass::Informational),
        200..=599 => Ok(StatusClass::Final),
        _ => Err(Error::InvalidStatusLine),
    }
}

/// Interprets a parsed final response. `head_request` is true when the request was HEAD, whose
/// answer never has a body whatever its headers say.
pub(crate) fn response_head(
    resp: &httparse::Response<'_, '_>,
    head_request: bool,
    limits_max_body: usize,
) -> Result<(ResponseHead, Framing), Error> {
    let status = resp.code.ok_or(Error::InvalidStatusLine)?;
    let version_minor = resp.version.ok_or(Error::UnsupportedVersion)?;
    let mut common = Common::default();
    let mut retry_after = None;
    let mut content_type = None;
    for h in resp.headers.iter() {
        if common.absorb(h.name, h.value)? {
            continue;
        }
        if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = Some(SmallText::new(value_str(h.value)?));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(SmallText::new(value_str(h.value)?));
        }
    }
    if common.te_present && version_minor == 0 {
        return Err(Error::TransferEncodingInHttp10);
    }
    let no_body = head_request || status == 204 || status == 304 || status < 200;
    let framing = if no_body {
        Framing::Empty
    } else if common.te_present {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a final coding other than
        // chunked means the body runs to the close.
        if common.te_chunked_count > 1
            || (common.te_chunked_count == 1 && !common.te_last_is_chunked)
        {
            return Err(Error::InvalidTransferEncoding);
        }
        if common.te_last_is_chunked {
            Framing::Chunked
        } else {
            Framing::ToEof
        }
    } else {
        match common.content_length {
            Some(n) if n > limits_max_body as u64 => return Err(Error::BodyTooLarge),
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::ToEof,
        }
    };
    let close_delimited = framing == Framing::ToEof;
    // Both Content-Length and Transfer-Encoding: read by Transfer-Encoding, as RFC 9112 §6.3
    // says, but the framing is suspect (the response-splitting pattern), so the connection
    // carries nothing more: a later request must not meet bytes the peer framed otherwise.
    let mixed_framing = common.te_present && common.content_length.is_some();
    let head = ResponseHead {
        status,
        version_minor,
        keep_alive: common.keep_alive(version_minor) && !close_delimited && !mixed_framing,
        content_length: common.content_length,
        chunked: framing == Framing::Chunked,
        close_delimited,
        retry_after,
        content_type,
    };
    Ok((head, framing))
}

/// The non-empty elements of a comma list, blanks trimmed, parameters (`;q=1`) dropped.
fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').filter_map(|element| {
        let token = match element.iter().position(|&b| b == b';') {
            Some(i) => &element[..i],
            None => element,
        };
        let token = trim_ows(token);
        if token.is_empty() {
            None
        } else {
            Some(token)
        }
    })
}

/// A decimal number of digits only: no sign, no blanks, no overflow.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Strips optional whitespace (SP, HTAB) from both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A header value the exchange keeps as text; obs-text that is not UTF-8 is refused.
fn value_str(value: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(trim_ows(value)).map_err(|_| Error::InvalidHeaderValue)
}

/// A request header value as text, bytes that are not UTF-8 as U+FFFD: obs-text is legal
/// HTTP, and what reads the value decides (such a key matches no seller's key: 401; such an
/// idempotency key is not ASCII: 400 `invalid_idempotency_key`).
fn value_text(value: &[u8]) -> String {
    String::from_utf8_lossy(trim_ows(value)).into_owned()
}
