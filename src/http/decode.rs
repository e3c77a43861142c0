//! The incremental request and response decoders.
//!
//! A head is parsed only once its blank line is in the buffer: the decoder scans new bytes for
//! the end of the head (resuming where the last scan stopped), so a head arriving a byte at a
//! time costs linear, not quadratic, work, and the size limit is enforced before the head is
//! complete. The body is then consumed as it arrives.

use std::mem::MaybeUninit;

use super::body::BodyDecoder;
use super::error::Error;
use super::head::{self, Framing, RequestHead, ResponseHead, StatusClass};
use super::{Decoded, Limits, HEADER_SLOTS, MAX_INFORMATIONAL_HEADS};

/// Finds the end of a head in `input` (just past the blank line), scanning from `from`.
/// `Err(resume)` means not found yet; the next scan may start at `resume`.
fn find_head_end(input: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from.min(input.len());
    while let Some(off) = input[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match input.get(nl + 1) {
            None => return Err(nl),
            Some(b'\n') => return Ok(nl + 2),
            Some(b'\r') => match input.get(nl + 2) {
                None => return Err(nl),
                Some(b'\n') => return Ok(nl + 3),
                Some(_) => {}
            },
            Some(_) => {}
        }
        i = nl + 1;
    }
    Err(input.len())
}

/// The bytes of an answer's head so far cannot be the start of `HTTP/` (after blank lines).
/// Off the usual path: a whole head at the front of a read is parsed in one pass first.
#[cold]
#[inline(never)]
fn cannot_begin_http(rest: &[u8]) -> bool {
    let start = &rest[leading_blank_lines(rest)..];
    let n = start.len().min(5);
    n > 0 && start[0] != b'\r' && start[..n] != b"HTTP/"[..n]
}

/// Blank lines before a start line (RFC 9112 §2.2 lets a server ignore them). Returns how many
/// bytes are CRLF or LF; a trailing lone CR is left for the next read to settle.
fn leading_blank_lines(input: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match input.get(i..) {
            Some([b'\n', ..]) => i += 1,
            Some([b'\r', b'\n', ..]) => i += 2,
            _ => return i,
        }
    }
}

/// Maps an `httparse` failure to the codec's error, telling folded lines apart because
/// `httparse` reports them as a bad header name.
fn parse_error(e: httparse::Error, head: &[u8]) -> Error {
    match e {
        httparse::Error::HeaderName | httparse::Error::HeaderValue if is_folded(head) => {
            Error::ObsoleteLineFolding
        }
        httparse::Error::HeaderName => Error::InvalidHeaderName,
        httparse::Error::HeaderValue => Error::InvalidHeaderValue,
        httparse::Error::NewLine => Error::InvalidLineEnding,
        httparse::Error::Status => Error::InvalidStatusLine,
        httparse::Error::Token => Error::InvalidRequestLine,
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        httparse::Error::Version => Error::UnsupportedVersion,
    }
}

/// [`parse_error`] for a request head: a version that is not `HTTP/` at all (`FOO/1.1`, or
/// the second half of a target with a space in it, `/v1/le ads HTTP/1.1`) makes a malformed
/// request line; `HTTP/` with a version other than 1.0 or 1.1 is an unsupported version. The
/// decision rests on the bytes up to the first one httparse refused, so it is the same however
/// the line arrives.
fn request_parse_error(e: httparse::Error, head: &[u8]) -> Error {
    match e {
        httparse::Error::Version => {
            let start = head
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(head.len());
            let line = head[start..]
                .split(|&b| b == b'\n')
                .next()
                .unwrap_or_default();
            let version = line
                .split(|&b| b == b' ')
                .nth(2)
                .unwrap_or_default()
                .split(|&b| b == b'\r')
                .next()
                .unwrap_or_default();
            if version.starts_with(b"HTTP/") {
                Error::UnsupportedVersion
            } else {
                Error::InvalidRequestLine
            }
        }
        e => parse_error(e, head),
    }
}

/// A line that starts with a blank after the start line: obs-fold.
fn is_folded(head: &[u8]) -> bool {
    head.windows(2)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
}

/// Progress through the head of the next message, shared by both directions.
#[derive(Debug, Clone, Default)]
struct HeadScan {
    /// Blank-line bytes already consumed before this head; they count against the head limit.
    skipped: usize,
    /// Offset (from the unconsumed input) where the search for the blank line resumes.
    resume: usize,
    /// The start line of this head was checked while the rest of the head was awaited.
    line_checked: bool,
}

impl HeadScan {
    /// Skips blank lines at the front of `input`, then looks for a whole head. Returns the
    /// bytes skipped and, when found, the head's length after them.
    fn scan(
        &mut self,
        input: &[u8],
        max_head_bytes: usize,
    ) -> Result<(usize, Option<usize>), Error> {
        let skip = leading_blank_lines(input);
        if skip > 0 {
            self.skipped += skip;
            self.resume = 0;
        }
        let rest = &input[skip..];
        match find_head_end(rest, self.resume) {
            Ok(end) => {
                if self.skipped + end > max_head_bytes {
                    return Err(Error::HeadTooLarge);
                }
                Ok((skip, Some(end)))
            }
            Err(resume) => {
                if self.skipped + rest.len() > max_head_bytes {
                    return Err(Error::HeadTooLarge);
                }
                self.resume = resume;
                Ok((skip, None))
            }
        }
    }

    /// Nothing of this head scanned yet, and a start line (not a blank line) at the front of
    /// `input`: the case a one-pass parse of the whole head may try.
    fn fresh(&self, input: &[u8]) -> bool {
        self.skipped == 0
            && self.resume == 0
            && !matches!(input.first(), None | Some(b'\r' | b'\n'))
    }

    /// Starts over for the next head.
    fn reset(&mut self) {
        *self = HeadScan::default();
    }
}

/// Stack slots for `httparse` headers, left uninitialised so a parse does not pay for
/// clearing all of them.
type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; HEADER_SLOTS];

fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; HEADER_SLOTS]
}

#[derive(Debug, Clone)]
enum RequestState {
    /// Waiting for (the rest of) a head.
    Head,
    /// The head is parsed; reading its body.
    Body {
        head: RequestHead,
        body: BodyDecoder,
    },
}

/// Decodes the requests on one server connection, one at a time, pipelined or not.
///
/// After an error the decoder keeps returning it: the connection must be answered with
/// `Error::status()` and closed, since the rest of the stream cannot be trusted.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    limits: Limits,
    state: RequestState,
    scan: HeadScan,
    /// Bytes of the current head were seen (even if not consumed): the message is under way.
    partial: bool,
    failed: Option<Error>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits` on every request.
    pub fn new(limits: Limits) -> RequestDecoder {
        RequestDecoder {
            limits,
            state: RequestState::Head,
            scan: HeadScan::default(),
            partial: false,
            failed: None,
        }
    }

    /// Forgets any message in progress and any earlier failure, as for a fresh connection.
    pub fn reset(&mut self) {
        self.state = RequestState::Head;
        self.scan.reset();
        self.partial = false;
        self.failed = None;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True between messages: nothing of a next request has been seen. A connection closed by
    /// the client while idle ended cleanly; otherwise it ended mid-request.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, RequestState::Head) && !self.partial
    }

    /// The head of a request whose body is still arriving. A server uses it to answer
    /// `100 Continue` when `expect_continue` is set, or to route before the body is in.
    pub fn pending_head(&self) -> Option<&RequestHead> {
        match &self.state {
            RequestState::Body { head, .. } => Some(head),
            RequestState::Head => None,
        }
    }

    /// Decodes from `input`, which starts where the last call's `consumed` left off. The body
    /// buffer is cleared when a new head completes and then receives the (de-chunked) body.
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<Decoded<RequestHead>, Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.decode_inner(input, body);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn decode_inner(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<Decoded<RequestHead>, Error> {
        let mut pos = 0;
        if let RequestState::Head = self.state {
            let (end, (head, framing)) = match self.quick_head(input) {
                Some(quick) => quick,
                None => {
                    self.check_start_line(&input[leading_blank_lines(input)..])?;
                    let (skip, end) = self.scan.scan(input, self.limits.max_head_bytes)?;
                    pos += skip;
                    let Some(end) = end else {
                        self.partial = pos < input.len();
                        return Ok(Decoded::NeedMore { consumed: pos });
                    };
                    (end, self.parse_head(&input[pos..pos + end])?)
                }
            };
            let head_bytes = &input[pos..pos + end];
            let used_head = self.scan.skipped + end;
            self.scan.reset();
            self.partial = false;
            pos += end;
            body.clear();
            let trailer_bytes = self.limits.max_head_bytes.saturating_sub(used_head);
            let trailer_lines = self
                .limits
                .max_headers
                .saturating_sub(count_lines(head_bytes));
            match BodyDecoder::new(
                framing,
                self.limits.max_body_bytes,
                trailer_bytes,
                trailer_lines,
            ) {
                None => {
                    return Ok(Decoded::Complete {
                        head,
                        consumed: pos,
                    })
                }
                Some(decoder) => {
                    self.state = RequestState::Body {
                        head,
                        body: decoder,
                    }
                }
            }
        }
        let RequestState::Body { body: decoder, .. } = &mut self.state else {
            return Ok(Decoded::NeedMore { consumed: pos });
        };
        let progress = decoder.decode(&input[pos..], body)?;
        pos += progress.consumed;
        if !progress.done {
            return Ok(Decoded::NeedMore { consumed: pos });
        }
        match std::mem::replace(&mut self.state, RequestState::Head) {
            RequestState::Body { head, .. } => Ok(Decoded::Complete {
                head,
                consumed: pos,
            }),
            RequestState::Head => Err(Error::InvalidHead),
        }
    }

    /// The usual request: a whole, valid head at the front of a fresh read, parsed in one pass
    /// without first scanning for its end. `None` for anything else (a head still arriving,
    /// blank lines before it, a head over the limits or in error), which the scan and
    /// [`Self::parse_head`] then settle, so every error and every limit is exactly theirs.
    fn quick_head(&self, input: &[u8]) -> Option<(usize, (RequestHead, Framing))> {
        if !self.scan.fresh(input) {
            return None;
        }
        let mut slots = header_slots();
        let mut req = httparse::Request::new(&mut []);
        let n = self.limits.header_slots();
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            input,
            &mut slots[..n],
        ) {
            Ok(httparse::Status::Complete(len)) if len <= self.limits.max_head_bytes => len,
            _ => return None,
        };
        let parsed = head::request_head(&req, self.limits.max_body_bytes).ok()?;
        Some((len, parsed))
    }

    /// A head still arriving whose start line is already wrong (not HTTP at all, a TLS hello
    /// on a plain port, a bad method, target or version) is refused now, not when the blank
    /// line that may never come arrives. Checked once the line is whole, and before that only
    /// its first bytes, so a dripped head costs a bounded scan. Checked first, before the
    /// head's limits, so that the error is the same however the bytes were split into reads.
    fn check_start_line(&mut self, rest: &[u8]) -> Result<(), Error> {
        /// Most bytes of a start line checked before its end arrives.
        const EARLY_LINE_CHECK_BYTES: usize = 64;
        if self.scan.line_checked || rest.is_empty() {
            return Ok(());
        }
        let line = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.scan.line_checked = true;
                &rest[..=nl]
            }
            None => &rest[..rest.len().min(EARLY_LINE_CHECK_BYTES)],
        };
        let mut req = httparse::Request::new(&mut []);
        match req.parse(line) {
            Err(e) => Err(request_parse_error(e, line)),
            Ok(_) => Ok(()),
        }
    }

    fn parse_head(&self, bytes: &[u8]) -> Result<(RequestHead, Framing), Error> {
        let mut slots = header_slots();
        let mut req = httparse::Request::new(&mut []);
        let n = self.limits.header_slots();
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            bytes,
            &mut slots[..n],
        ) {
            Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
            Ok(_) => return Err(Error::InvalidHead),
            Err(e) => return Err(request_parse_error(e, bytes)),
        }
        head::request_head(&req, self.limits.max_body_bytes)
    }
}

/// Header lines in a complete head, less the start line: what the trailers may still use of
/// the header count.
fn count_lines(head: &[u8]) -> usize {
    head.iter()
        .filter(|&&b| b == b'\n')
        .count()
        .saturating_sub(2)
}

// The head is kept inline: boxing it would cost an allocation per buyer answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum ResponseState {
    /// Waiting for (the rest of) a head; 1xx heads are consumed here.
    Head,
    /// The final head is parsed; reading its body.
    Body {
        head: ResponseHead,
        body: BodyDecoder,
    },
}

/// Decodes the responses on one buyer connection.
///
/// After an error the decoder keeps returning it: the connection must be closed.
#[derive(Debug, Clone)]
pub struct ResponseDecoder {
    limits: Limits,
    state: ResponseState,
    scan: HeadScan,
    partial: bool,
    /// 1xx heads skipped for the current response.
    informational: u32,
    /// The request being answered was HEAD: its response has no body.
    head_request: bool,
    failed: Option<Error>,
}

impl ResponseDecoder {
    /// A decoder enforcing `limits` on every response.
    pub fn new(limits: Limits) -> ResponseDecoder {
        ResponseDecoder {
            limits,
            state: ResponseState::Head,
            scan: HeadScan::default(),
            partial: false,
            informational: 0,
            head_request: false,
            failed: None,
        }
    }

    /// Forgets any message in progress and any earlier failure, as for a fresh connection.
    pub fn reset(&mut self) {
        self.state = ResponseState::Head;
        self.scan.reset();
        self.partial = false;
        self.informational = 0;
        self.head_request = false;
        self.failed = None;
    }

    /// Declares that the next response answers a HEAD request, so it has no body whatever its
    /// Content-Length says. Applies to one response.
    pub fn expect_head_response(&mut self) {
        self.head_request = true;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True between messages: nothing of a next response has been seen. A buyer connection
    /// that is idle can be reused; one that is not still owes bytes of an old answer.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, ResponseState::Head) && !self.partial && self.informational == 0
    }

    /// Decodes from `input`, which starts where the last call's `consumed` left off. The body
    /// buffer is cleared when a final head completes and then receives the (de-chunked) body.
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<Decoded<ResponseHead>, Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.decode_inner(input, body);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    /// The peer closed the connection. A close-delimited body is complete now and its head is
    /// returned; between messages this is a clean close (`Ok(None)`); in the middle of a
    /// message it is `IncompleteMessage`.
    pub fn on_eof(&mut self) -> Result<Option<ResponseHead>, Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match std::mem::replace(&mut self.state, ResponseState::Head) {
            ResponseState::Body {
                head,
                body: decoder,
            } if decoder.is_close_delimited() => {
                self.scan.reset();
                self.informational = 0;
                self.head_request = false;
                Ok(Some(head))
            }
            ResponseState::Head if self.is_idle() => Ok(None),
            _ => {
                self.failed = Some(Error::IncompleteMessage);
                Err(Error::IncompleteMessage)
            }
        }
    }

    fn decode_inner(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<Decoded<ResponseHead>, Error> {
        let mut pos = 0;
        while let ResponseState::Head = self.state {
            let (end, parsed) = match self.quick_head(&input[pos..]) {
                Some(quick) => quick,
                None => {
                    // An answer that cannot begin `HTTP/` is refused at its first bytes, not
                    // waited on for a head end that may never come.
                    if cannot_begin_http(&input[pos..]) {
                        return Err(Error::NotHttp);
                    }
                    let (skip, end) = self.scan.scan(&input[pos..], self.limits.max_head_bytes)?;
                    pos += skip;
                    let Some(end) = end else {
                        self.partial = pos < input.len();
                        return Ok(Decoded::NeedMore { consumed: pos });
                    };
                    (end, self.parse_head(&input[pos..pos + end])?)
                }
            };
            let head_bytes = &input[pos..pos + end];
            let used_head = self.scan.skipped + end;
            self.scan.reset();
            self.partial = false;
            pos += end;
            let Some((head, framing)) = parsed else {
                // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                self.informational += 1;
                if self.informational > MAX_INFORMATIONAL_HEADS {
                    return Err(Error::TooManyInformational);
                }
                continue;
            };
            self.informational = 0;
            self.head_request = false;
            body.clear();
            let trailer_bytes = self.limits.max_head_bytes.saturating_sub(used_head);
            let trailer_lines = self
                .limits
                .max_headers
                .saturating_sub(count_lines(head_bytes));
            match BodyDecoder::new(
                framing,
                self.limits.max_body_bytes,
                trailer_bytes,
                trailer_lines,
            ) {
                None => {
                    return Ok(Decoded::Complete {
                        head,
                        consumed: pos,
                    })
                }
                Some(decoder) => {
                    self.state = ResponseState::Body {
                        head,
                        body: decoder,
                    }
                }
            }
        }
        let ResponseState::Body { body: decoder, .. } = &mut self.state else {
            return Ok(Decoded::NeedMore { consumed: pos });
        };
        let progress = decoder.decode(&input[pos..], body)?;
        pos += progress.consumed;
        if !progress.done {
            return Ok(Decoded::NeedMore { consumed: pos });
        }
        match std::mem::replace(&mut self.state, ResponseState::Head) {
            ResponseState::Body { head, .. } => Ok(Decoded::Complete {
                head,
                consumed: pos,
            }),
            ResponseState::Head => Err(Error::InvalidHead),
        }
    }

    /// The usual answer: a whole, valid head at the front of a fresh read, parsed in one pass
    /// without first scanning for its end. `None` for anything else (a head still arriving,
    /// blank lines before it, a head over the limits or in error), which the scan and
    /// [`Self::parse_head`] then settle, so every error and every limit is exactly theirs, and a
    /// head that drips in is scanned once, not parsed again at every read.
    #[allow(clippy::type_complexity)]
    fn quick_head(&self, input: &[u8]) -> Option<(usize, Option<(ResponseHead, Framing)>)> {
        if !self.scan.fresh(input) {
            return None;
        }
        let mut slots = header_slots();
        let mut resp = httparse::Response::new(&mut []);
        let n = self.limits.header_slots();
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            input,
            &mut slots[..n],
        ) {
            Ok(httparse::Status::Complete(len)) if len <= self.limits.max_head_bytes => len,
            _ => return None,
        };
        match head::classify_status(resp.code?).ok()? {
            StatusClass::Informational => Some((len, None)),
            StatusClass::Final => {
                let parsed =
                    head::response_head(&resp, self.head_request, self.limits.max_body_bytes)
                        .ok()?;
                Some((len, Some(parsed)))
            }
        }
    }

    /// Parses one head; `None` for an informational (1xx) head to skip.
    fn parse_head(&self, bytes: &[u8]) -> Result<Option<(ResponseHead, Framing)>, Error> {
        let mut slots = header_slots();
        let mut resp = httparse::Response::new(&mut []);
        let n = self.limits.header_slots();
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            bytes,
            &mut slots[..n],
        ) {
            Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
            Ok(_) => return Err(Error::InvalidHead),
            Err(e) => return Err(parse_error(e, bytes)),
        }
        let status = resp.code.ok_or(Error::InvalidStatusLine)?;
        match head::classify_status(status)? {
            StatusClass::Informational => Ok(None),
            StatusClass::Final => {
                head::response_head(&resp, self.head_request, self.limits.max_body_bytes).map(Some)
            }
        }
    }
}
