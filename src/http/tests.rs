use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers: a caller that feeds bytes the way the event loop does.
// ---------------------------------------------------------------------------------------------

/// What a whole byte stream decoded to: the messages, then the error that stopped it, if any.
#[derive(Debug)]
struct Outcome<H> {
    messages: Vec<(H, Vec<u8>)>,
    error: Option<Error>,
    /// Bytes left in the caller's buffer at the end (an unfinished message).
    leftover: usize,
}

/// Feeds `input` in pieces of at most `step` bytes, draining `consumed` after every call and
/// decoding again after every complete message (pipelining).
fn run_requests(limits: Limits, input: &[u8], step: usize) -> Outcome<RequestHead> {
    run_request_pieces(limits, input.chunks(step.max(1)))
}

/// Feeds the given pieces in order, as successive socket reads.
fn run_request_pieces<'a>(
    limits: Limits,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome<RequestHead> {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = Vec::new();
    let mut body = Vec::new();
    let mut messages = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&buf, &mut body) {
                Ok(Decoded::NeedMore { consumed }) => {
                    buf.drain(..consumed);
                    break;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    buf.drain(..consumed);
                    messages.push((head, body.clone()));
                }
                Err(e) => {
                    return Outcome {
                        messages,
                        error: Some(e),
                        leftover: buf.len(),
                    }
                }
            }
        }
    }
    Outcome {
        messages,
        error: None,
        leftover: buf.len(),
    }
}

/// Like `run_requests` for responses, and the stream ends with the peer closing.
fn run_responses(limits: Limits, input: &[u8], step: usize) -> Outcome<ResponseHead> {
    run_response_pieces(limits, input.chunks(step.max(1)))
}

fn run_response_pieces<'a>(
    limits: Limits,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome<ResponseHead> {
    let mut decoder = ResponseDecoder::new(limits);
    let mut buf = Vec::new();
    let mut body = Vec::new();
    let mut messages = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&buf, &mut body) {
                Ok(Decoded::NeedMore { consumed }) => {
                    buf.drain(..consumed);
                    break;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    buf.drain(..consumed);
                    messages.push((head, body.clone()));
                }
                Err(e) => {
                    return Outcome {
                        messages,
                        error: Some(e),
                        leftover: buf.len(),
                    }
                }
            }
        }
    }
    match decoder.on_eof() {
        Ok(Some(head)) => messages.push((head, body.clone())),
        Ok(None) => {}
        Err(e) => {
            return Outcome {
                messages,
                error: Some(e),
                leftover: buf.len(),
            }
        }
    }
    Outcome {
        messages,
        error: None,
        leftover: buf.len(),
    }
}

fn requests(input: &[u8]) -> Outcome<RequestHead> {
    run_requests(Limits::default(), input, input.len())
}

fn responses(input: &[u8]) -> Outcome<ResponseHead> {
    run_responses(Limits::default(), input, input.len())
}

/// The one request `input` holds, or the test fails with what happened instead.
fn one_request(input: &[u8]) -> (RequestHead, Vec<u8>) {
    let mut out = requests(input);
    assert_eq!(
        out.error,
        None,
        "unexpected error for {:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(
        out.messages.len(),
        1,
        "expected one request in {:?}",
        String::from_utf8_lossy(input)
    );
    out.messages.remove(0)
}

fn one_response(input: &[u8]) -> (ResponseHead, Vec<u8>) {
    let mut out = responses(input);
    assert_eq!(
        out.error,
        None,
        "unexpected error for {:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(
        out.messages.len(),
        1,
        "expected one response in {:?}",
        String::from_utf8_lossy(input)
    );
    out.messages.remove(0)
}

fn request_error(input: &[u8]) -> Error {
    match requests(input).error {
        Some(e) => e,
        None => panic!("expected an error for {:?}", String::from_utf8_lossy(input)),
    }
}

fn response_error(input: &[u8]) -> Error {
    match responses(input).error {
        Some(e) => e,
        None => panic!("expected an error for {:?}", String::from_utf8_lossy(input)),
    }
}

/// Asserts that feeding `input` a byte at a time, and split in two at every position, gives
/// exactly what feeding it whole gives.
fn assert_split_invariant_requests(limits: Limits, input: &[u8]) {
    let whole = run_requests(limits, input, input.len());
    let bytewise = run_requests(limits, input, 1);
    let what = String::from_utf8_lossy(input);
    assert_eq!(
        bytewise.messages, whole.messages,
        "byte at a time: {what:?}"
    );
    assert_eq!(bytewise.error, whole.error, "byte at a time: {what:?}");
    for cut in 1..input.len() {
        let split = run_request_pieces(limits, [&input[..cut], &input[cut..]]);
        assert_eq!(split.messages, whole.messages, "cut at {cut}: {what:?}");
        assert_eq!(split.error, whole.error, "cut at {cut}: {what:?}");
    }
}

fn assert_split_invariant_responses(limits: Limits, input: &[u8]) {
    let whole = run_responses(limits, input, input.len());
    for step in [1, 2, 3, 7] {
        let split = run_responses(limits, input, step);
        assert_eq!(
            split.messages,
            whole.messages,
            "step {step}: {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            split.error,
            whole.error,
            "step {step}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
    for cut in 1..input.len() {
        let split = run_response_pieces(limits, [&input[..cut], &input[cut..]]);
        assert_eq!(
            split.messages,
            whole.messages,
            "cut at {cut}: {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            split.error,
            whole.error,
            "cut at {cut}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Every error the codec can return.
const ALL_ERRORS: [Error; 25] = [
    Error::HeadTooLarge,
    Error::TooManyHeaders,
    Error::InvalidRequestLine,
    Error::InvalidStatusLine,
    Error::UnsupportedVersion,
    Error::InvalidHeaderName,
    Error::InvalidHeaderValue,
    Error::ObsoleteLineFolding,
    Error::InvalidLineEnding,
    Error::InvalidHead,
    Error::DuplicateHeader,
    Error::InvalidContentLength,
    Error::ConflictingContentLength,
    Error::InvalidTransferEncoding,
    Error::ContentLengthWithTransferEncoding,
    Error::TransferEncodingInHttp10,
    Error::InvalidChunkSize,
    Error::InvalidChunk,
    Error::ChunkExtensionTooLarge,
    Error::InvalidTrailer,
    Error::TrailersTooLarge,
    Error::BodyTooLarge,
    Error::UnexpectedSwitchingProtocols,
    Error::TooManyInformational,
    Error::IncompleteMessage,
];

const LEAD_JSON: &str = r#"{"campaign":"auto-insurance","lead":{"state":"TX","zip":"77002"}}"#;

fn post_leads(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/leads HTTP/1.1\r\nHost: gavel.test\r\nAuthorization: Bearer sk-acme-0123456789\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Requests: the happy paths.
// ---------------------------------------------------------------------------------------------

#[test]
fn get_request_has_its_fields_and_no_body() {
    let (head, body) = one_request(b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.path, "/healthz?x=1");
    assert_eq!(head.version_minor, 1);
    assert!(head.keep_alive);
    assert_eq!(head.content_length, None);
    assert!(!head.chunked);
    assert_eq!(head.authorization, None);
    assert!(body.is_empty());
}

#[test]
fn seller_post_carries_auth_content_type_and_body() {
    let (head, body) = one_request(&post_leads(LEAD_JSON));
    assert_eq!(head.method, Method::Post);
    assert_eq!(head.path, "/v1/leads");
    assert_eq!(
        head.authorization.as_deref(),
        Some("Bearer sk-acme-0123456789")
    );
    assert_eq!(head.content_type.as_deref(), Some("application/json"));
    assert_eq!(head.content_length, Some(LEAD_JSON.len() as u64));
    assert_eq!(body, LEAD_JSON.as_bytes());
}

#[test]
fn methods_are_recognised_case_sensitively() {
    for (token, method) in [
        ("GET", Method::Get),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("HEAD", Method::Head),
        ("PATCH", Method::Other),
        ("get", Method::Other),
    ] {
        let (head, _) = one_request(format!("{token} / HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(head.method, method, "{token}");
    }
}

#[test]
fn post_without_length_or_chunking_has_an_empty_body() {
    let out = requests(b"POST /v1/leads HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(out.error, None);
    assert_eq!(
        out.messages.len(),
        2,
        "the bytes after the head are the next request"
    );
    assert!(out.messages[0].1.is_empty());
    assert_eq!(out.messages[1].0.method, Method::Get);
}

#[test]
fn pipelined_requests_in_one_buffer_come_out_in_order() {
    let mut input = post_leads(LEAD_JSON);
    input.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
    input.extend_from_slice(
        b"POST /v1/ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    input.extend_from_slice(&post_leads("{}"));
    let out = requests(&input);
    assert_eq!(out.error, None);
    let got: Vec<(&str, &[u8])> = out
        .messages
        .iter()
        .map(|(h, b)| (h.path.as_str(), b.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/v1/leads", LEAD_JSON.as_bytes()),
            ("/healthz", &b""[..]),
            ("/v1/ping", &b"abc"[..]),
            ("/v1/leads", &b"{}"[..]),
        ]
    );
    assert_eq!(out.leftover, 0);
}

#[test]
fn complete_returns_only_the_first_of_pipelined_requests() {
    let mut input = post_leads("{}");
    let first_len = input.len();
    input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut body = Vec::new();
    match decoder.decode(&input, &mut body) {
        Ok(Decoded::Complete { consumed, .. }) => assert_eq!(consumed, first_len),
        other => panic!("expected the first request, got {other:?}"),
    }
    assert!(decoder.is_idle());
}

#[test]
fn leading_blank_lines_before_a_request_are_ignored() {
    let (head, _) = one_request(b"\r\n\r\n\nGET /a HTTP/1.1\r\n\r\n");
    assert_eq!(head.path, "/a");
}

#[test]
fn bare_lf_line_endings_are_accepted_in_heads() {
    let (head, body) = one_request(b"POST /a HTTP/1.1\nContent-Length: 2\n\nhi");
    assert_eq!(head.path, "/a");
    assert_eq!(body, b"hi");
}

#[test]
fn expect_continue_is_visible_before_the_body_arrives() {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut body = Vec::new();
    let head = b"POST /v1/leads HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n";
    match decoder.decode(head, &mut body) {
        Ok(Decoded::NeedMore { consumed }) => assert_eq!(consumed, head.len()),
        other => panic!("expected NeedMore, got {other:?}"),
    }
    let pending = decoder.pending_head().map(|h| h.expect_continue);
    assert_eq!(pending, Some(true));
    assert!(!decoder.is_idle());
    match decoder.decode(b"{}", &mut body) {
        Ok(Decoded::Complete { head, consumed }) => {
            assert!(head.expect_continue);
            assert_eq!(consumed, 2);
            assert_eq!(body, b"{}");
        }
        other => panic!("expected Complete, got {other:?}"),
    }
    assert_eq!(decoder.pending_head(), None);
}

#[test]
fn body_buffer_is_cleared_per_message_and_reused_without_growing() {
    let one = post_leads(LEAD_JSON);
    let mut input = Vec::new();
    for _ in 0..50 {
        input.extend_from_slice(&one);
    }
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut body = Vec::with_capacity(1024);
    let capacity = body.capacity();
    let mut rest: &[u8] = &input;
    let mut count = 0;
    while !rest.is_empty() {
        match decoder.decode(rest, &mut body) {
            Ok(Decoded::Complete { consumed, .. }) => {
                assert_eq!(
                    body,
                    LEAD_JSON.as_bytes(),
                    "no bytes of an earlier body remain"
                );
                rest = &rest[consumed..];
                count += 1;
            }
            other => panic!("expected Complete, got {other:?}"),
        }
    }
    assert_eq!(count, 50);
    assert_eq!(body.capacity(), capacity);
}

// ---------------------------------------------------------------------------------------------
// Keep-alive.
// ---------------------------------------------------------------------------------------------

#[test]
fn keep_alive_follows_version_and_connection_tokens() {
    let cases: [(&str, bool); 9] = [
        ("GET / HTTP/1.1\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            "GET / HTTP/1.0\r\nConnection: foo,  keep-alive \r\n\r\n",
            true,
        ),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        ),
    ];
    for (input, keep_alive) in cases {
        let (head, _) = one_request(input.as_bytes());
        assert_eq!(head.keep_alive, keep_alive, "{input:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Head limits and syntax.
// ---------------------------------------------------------------------------------------------

fn request_with_header_bytes(filler: usize) -> Vec<u8> {
    let mut s = String::from("GET / HTTP/1.1\r\nX-Fill: ");
    s.push_str(&"a".repeat(filler));
    s.push_str("\r\n\r\n");
    s.into_bytes()
}

#[test]
fn head_of_exactly_the_limit_is_accepted_and_one_more_byte_is_not() {
    let overhead = request_with_header_bytes(0).len();
    let at_limit = request_with_header_bytes(DEFAULT_MAX_HEAD_BYTES - overhead);
    assert_eq!(at_limit.len(), DEFAULT_MAX_HEAD_BYTES);
    one_request(&at_limit);
    let over = request_with_header_bytes(DEFAULT_MAX_HEAD_BYTES - overhead + 1);
    let e = request_error(&over);
    assert_eq!(e, Error::HeadTooLarge);
    assert_eq!(e.status(), 400);
    assert_eq!(e.code(), "header_too_large");
}

#[test]
fn oversized_head_is_refused_before_it_is_complete() {
    // No blank line ever arrives: the decoder must not wait for one.
    let mut input = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
    input.resize(DEFAULT_MAX_HEAD_BYTES + 1, b'a');
    let out = run_requests(Limits::default(), &input, 1024);
    assert_eq!(out.error, Some(Error::HeadTooLarge));
    let at_limit = &input[..DEFAULT_MAX_HEAD_BYTES];
    let out = run_requests(Limits::default(), at_limit, 1024);
    assert_eq!(out.error, None, "a head at the limit may still complete");
}

#[test]
fn endless_blank_lines_count_against_the_head_limit() {
    let input = b"\r\n".repeat(DEFAULT_MAX_HEAD_BYTES);
    let out = run_requests(Limits::default(), &input, 4096);
    assert_eq!(out.error, Some(Error::HeadTooLarge));
}

fn request_with_headers(n: usize) -> Vec<u8> {
    let mut s = String::from("GET / HTTP/1.1\r\n");
    for i in 0..n {
        s.push_str(&format!("X-H{i}: v\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

#[test]
fn one_hundred_headers_pass_and_one_hundred_and_one_do_not() {
    one_request(&request_with_headers(DEFAULT_MAX_HEADERS));
    let e = request_error(&request_with_headers(DEFAULT_MAX_HEADERS + 1));
    assert_eq!(e, Error::TooManyHeaders);
    assert_eq!(e.status(), 400);
}

#[test]
fn a_smaller_configured_header_count_is_enforced() {
    let limits = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    assert_eq!(
        run_requests(limits, &request_with_headers(3), 64).error,
        None
    );
    assert_eq!(
        run_requests(limits, &request_with_headers(4), 64).error,
        Some(Error::TooManyHeaders)
    );
}

#[test]
fn folded_headers_are_refused() {
    let e = request_error(b"GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n");
    assert_eq!(e, Error::ObsoleteLineFolding);
    let e = request_error(b"GET / HTTP/1.1\r\nX-A: one\r\n\ttwo\r\n\r\n");
    assert_eq!(e, Error::ObsoleteLineFolding);
    let e = response_error(b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(e, Error::ObsoleteLineFolding);
}

#[test]
fn invalid_header_names_are_refused() {
    for input in [
        "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length : 0\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nX(y): 1\r\n\r\n",
    ] {
        let e = request_error(input.as_bytes());
        assert_eq!(e, Error::InvalidHeaderName, "{input:?}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn control_bytes_in_header_values_are_refused() {
    let e = request_error(b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n");
    assert_eq!(e, Error::InvalidHeaderValue);
}

/// Bytes over 0x7F are legal in a header value (obs-text): the request is read, and what
/// reads the value decides (a key that is not UTF-8 matches no seller: 401, not a 400 that
/// closes the connection).
#[test]
fn obs_text_in_authorization_and_idempotency_key_is_read() {
    let (head, _) = one_request(
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-\xe9\r\nIdempotency-Key: k\xe9\r\n\r\n",
    );
    assert_eq!(head.authorization.as_deref(), Some("Bearer sk-\u{FFFD}"));
    assert_eq!(head.idempotency_key.as_deref(), Some("k\u{FFFD}"));
}

/// A start line that is already wrong is refused while the rest of the head is awaited: a
/// client that never sends the blank line still hears its 400 at once.
#[test]
fn a_bad_start_line_is_refused_before_the_head_ends() {
    for (input, want) in [
        (&b"\x16\x03\x01\x02\x00\x01"[..], Error::InvalidRequestLine),
        (b"G\x00ET /healthz HTTP/1.1\r\n", Error::InvalidRequestLine),
        (b"GET /healthz HTTP/9.9\r\n", Error::UnsupportedVersion),
        (b"POST /v1/le ads HTTP/1.1\r\n", Error::InvalidRequestLine),
        (b"GET / FOO/1.1\r\nHost: x\r\n", Error::InvalidRequestLine),
        (
            b"GET /healthz HTTP/9.9\r\nHost: x\r\n",
            Error::UnsupportedVersion,
        ),
    ] {
        for step in [1, input.len()] {
            let out = run_requests(Limits::default(), input, step);
            assert_eq!(
                out.error,
                Some(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
    // Good lines still wait for the rest of the head, however they arrive.
    for input in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..],
        b"POST /v1/leads HTTP/1.1\r\n",
        b"\r\nGET / HTTP/1.0\r\n",
        b"GET /a-long-target-well-past-the-early-check-of-sixty-four-bytes-of-line HTTP/1.1\r\n",
    ] {
        for step in [1, 7, input.len()] {
            let out = run_requests(Limits::default(), input, step);
            assert_eq!(out.error, None, "{:?}", String::from_utf8_lossy(input));
            assert!(out.messages.is_empty());
        }
    }
}

#[test]
fn malformed_request_lines_and_versions_are_refused() {
    assert_eq!(
        request_error(b"GET / HTTP/2.0\r\n\r\n"),
        Error::UnsupportedVersion
    );
    assert_eq!(
        request_error(b"GET / FOO/1.1\r\n\r\n"),
        Error::InvalidRequestLine
    );
    // A space in the target leaves a request line of four parts, not an odd version.
    assert_eq!(
        request_error(b"POST /v1/le ads HTTP/1.1\r\n\r\n"),
        Error::InvalidRequestLine
    );
    assert_eq!(
        request_error(b"\r\nGET / HTTP/1.2\r\n\r\n"),
        Error::UnsupportedVersion
    );
    assert_eq!(
        request_error(b"G@T / HTTP/1.1\r\n\r\n"),
        Error::InvalidRequestLine
    );
    assert_eq!(request_error(b"GET\r\n\r\n").status(), 400);
    assert_eq!(request_error(b"GET / HTTP/1.1\rX: y\r\n\r\n").status(), 400);
}

#[test]
fn duplicate_authorization_is_refused() {
    let e = request_error(
        b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
    );
    assert_eq!(e, Error::DuplicateHeader);
}

// ---------------------------------------------------------------------------------------------
// Content-Length.
// ---------------------------------------------------------------------------------------------

fn with_content_length(values: &[&str], body: &str) -> Vec<u8> {
    let mut s = String::from("POST / HTTP/1.1\r\n");
    for v in values {
        s.push_str(&format!("Content-Length: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

#[test]
fn content_length_must_be_plain_digits() {
    for bad in [
        "+5",
        "-5",
        "5 5",
        "0x5",
        "five",
        "",
        "5.0",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let e = request_error(&with_content_length(&[bad], "hello"));
        assert_eq!(e, Error::InvalidContentLength, "{bad:?}");
        assert_eq!(e.status(), 400);
    }
    let (_, body) = one_request(&with_content_length(&["  5\t"], "hello"));
    assert_eq!(body, b"hello", "blanks around the value are not part of it");
    let (_, body) = one_request(&with_content_length(&["005"], "hello"));
    assert_eq!(body, b"hello");
}

#[test]
fn identical_content_lengths_are_accepted_and_differing_ones_are_not() {
    let (head, body) = one_request(&with_content_length(&["5", "5"], "hello"));
    assert_eq!(head.content_length, Some(5));
    assert_eq!(body, b"hello");
    let (_, body) = one_request(&with_content_length(&["5, 5"], "hello"));
    assert_eq!(body, b"hello");
    for values in [&["5", "6"][..], &["5, 6"][..], &["5", "5, 6"][..]] {
        let e = request_error(&with_content_length(values, "hello!"));
        assert_eq!(e, Error::ConflictingContentLength, "{values:?}");
        assert_eq!(e.code(), "conflicting_content_length");
    }
    assert_eq!(
        request_error(&with_content_length(&["5,"], "hello")),
        Error::InvalidContentLength
    );
}

// ---------------------------------------------------------------------------------------------
// Transfer-Encoding.
// ---------------------------------------------------------------------------------------------

#[test]
fn request_transfer_encoding_must_be_chunked() {
    for te in [
        "gzip",
        "chunked, gzip",
        "gzip, chunked",
        "chunked, chunked",
        "identity",
        "",
        // `chunked` has no parameters: a coding with one is not the chunked this server reads.
        "chunked;q=1",
        "chunked ; x=y",
    ] {
        let input = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let e = request_error(input.as_bytes());
        assert_eq!(e, Error::InvalidTransferEncoding, "{te:?}");
        assert_eq!(e.status(), 400);
    }
    let (head, body) =
        one_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    assert!(head.chunked);
    assert_eq!(head.content_length, None);
    assert_eq!(body, b"ok");
}

#[test]
fn transfer_encoding_split_over_two_headers_is_judged_as_one_list() {
    let e = request_error(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(e, Error::InvalidTransferEncoding);
}

#[test]
fn request_with_both_transfer_encoding_and_content_length_is_refused() {
    let e = request_error(
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(e, Error::ContentLengthWithTransferEncoding);
    let e = request_error(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(e, Error::ContentLengthWithTransferEncoding);
    assert_eq!(e.status(), 400);
}

#[test]
fn http10_request_with_transfer_encoding_is_refused() {
    let e = request_error(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(e, Error::TransferEncodingInHttp10);
    assert_eq!(e.status(), 400);
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies.
// ---------------------------------------------------------------------------------------------

fn chunked_request(chunks: &str) -> Vec<u8> {
    format!("POST /v1/leads HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}").into_bytes()
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_decoded() {
    let input = chunked_request(
        "5;name=value;flag\r\nhello\r\n1 ; x=\"q\"\r\n \r\nA\r\n0123456789\r\n0;last\r\nX-Checksum: abc\r\nX-Other:\r\n\r\n",
    );
    let (head, body) = one_request(&input);
    assert!(head.chunked);
    assert_eq!(body, b"hello 0123456789");
}

#[test]
fn chunk_sizes_are_hex_in_either_case() {
    let body = "x".repeat(0x1f);
    let (_, got) = one_request(&chunked_request(&format!("1F\r\n{body}\r\n0\r\n\r\n")));
    assert_eq!(got.len(), 0x1f);
    let (_, got) = one_request(&chunked_request(&format!("001f\r\n{body}\r\n0\r\n\r\n")));
    assert_eq!(got.len(), 0x1f);
}

#[test]
fn invalid_chunk_framing_is_refused() {
    let cases: [(&str, Error); 10] = [
        ("zz\r\nhello\r\n0\r\n\r\n", Error::InvalidChunkSize),
        ("\r\nhello\r\n0\r\n\r\n", Error::InvalidChunkSize),
        ("-5\r\nhello\r\n0\r\n\r\n", Error::InvalidChunkSize),
        ("5 x\r\nhello\r\n0\r\n\r\n", Error::InvalidChunkSize),
        ("5\nhello\r\n0\r\n\r\n", Error::InvalidChunk),
        ("5\rhello\r\n0\r\n\r\n", Error::InvalidChunk),
        ("5\r\nhelloX\r\n0\r\n\r\n", Error::InvalidChunk),
        ("5\r\nhello\rX0\r\n\r\n", Error::InvalidChunk),
        ("5;a\nb\r\nhello\r\n0\r\n\r\n", Error::InvalidChunk),
        ("0\r\n\rX", Error::InvalidChunk),
    ];
    for (chunks, want) in cases {
        let e = request_error(&chunked_request(chunks));
        assert_eq!(e, want, "{chunks:?}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn chunk_sizes_that_overflow_or_run_long_are_refused() {
    let limits = Limits {
        max_body_bytes: usize::MAX,
        ..Limits::default()
    };
    for size in [
        "10000000000000000",
        "0000000000000000001",
        "FFFFFFFFFFFFFFFFF",
    ] {
        let out = run_requests(limits, &chunked_request(&format!("{size}\r\n")), 4096);
        assert_eq!(out.error, Some(Error::InvalidChunkSize), "{size}");
    }
}

#[test]
fn chunk_extensions_are_bounded() {
    let ext = "a".repeat(MAX_CHUNK_EXTENSION_BYTES + 1);
    let e = request_error(&chunked_request(&format!("1;{ext}\r\nx\r\n0\r\n\r\n")));
    assert_eq!(e, Error::ChunkExtensionTooLarge);
    // Spread over many chunks the total still counts.
    let mut chunks = String::new();
    for _ in 0..(MAX_CHUNK_EXTENSION_BYTES / 8 + 1) {
        chunks.push_str("1;abcdefg\r\nx\r\n");
    }
    chunks.push_str("0\r\n\r\n");
    assert_eq!(
        request_error(&chunked_request(&chunks)),
        Error::ChunkExtensionTooLarge
    );
}

#[test]
fn trailers_count_against_the_head_limits() {
    let big = "v".repeat(DEFAULT_MAX_HEAD_BYTES);
    let e = request_error(&chunked_request(&format!("0\r\nX-Big: {big}\r\n\r\n")));
    assert_eq!(e, Error::TrailersTooLarge);
    assert_eq!(e.status(), 400);
    let mut many = String::from("0\r\n");
    for i in 0..DEFAULT_MAX_HEADERS {
        many.push_str(&format!("T{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        request_error(&chunked_request(&many)),
        Error::TrailersTooLarge
    );
}

#[test]
fn malformed_trailers_are_refused() {
    for trailer in [
        " folded: x\r\n",
        "no colon\r\n",
        "X-A: a\x01b\r\n",
        "X-A: a\rb\r\n",
    ] {
        let e = request_error(&chunked_request(&format!("0\r\nX-Ok: 1\r\n{trailer}\r\n")));
        assert_eq!(e, Error::InvalidTrailer, "{trailer:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Body size limit.
// ---------------------------------------------------------------------------------------------

#[test]
fn declared_content_length_over_the_limit_is_413_before_any_body_byte() {
    let limits = Limits::with_max_body_bytes(10);
    let mut decoder = RequestDecoder::new(limits);
    let mut body = Vec::new();
    let e = decoder.decode(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", &mut body);
    assert_eq!(e, Err(Error::BodyTooLarge));
    assert_eq!(Error::BodyTooLarge.status(), 413);
    assert_eq!(Error::BodyTooLarge.code(), "body_too_large");
    let out = run_requests(
        limits,
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
        3,
    );
    assert_eq!(out.error, None);
    assert_eq!(out.messages[0].1, b"0123456789");
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let limits = Limits::with_max_body_bytes(10);
    let ok = chunked_request("5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n");
    assert_eq!(run_requests(limits, &ok, ok.len()).error, None);
    let over = chunked_request("5\r\n01234\r\n6\r\n");
    let out = run_requests(limits, &over, over.len());
    assert_eq!(
        out.error,
        Some(Error::BodyTooLarge),
        "refused from the declared chunk size"
    );
    let huge = chunked_request("FFFFFFFFFFFFFFFF\r\n");
    assert_eq!(
        run_requests(limits, &huge, huge.len()).error,
        Some(Error::BodyTooLarge)
    );
}

// ---------------------------------------------------------------------------------------------
// Decoder lifecycle.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_error_is_sticky_until_reset() {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut body = Vec::new();
    let bad = b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n";
    assert_eq!(
        decoder.decode(bad, &mut body),
        Err(Error::InvalidContentLength)
    );
    let good = b"GET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        decoder.decode(good, &mut body),
        Err(Error::InvalidContentLength)
    );
    decoder.reset();
    assert!(matches!(
        decoder.decode(good, &mut body),
        Ok(Decoded::Complete { .. })
    ));
}

#[test]
fn request_decoder_knows_when_it_is_mid_message() {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut body = Vec::new();
    assert!(decoder.is_idle());
    assert_eq!(
        decoder.decode(b"GET / HT", &mut body),
        Ok(Decoded::NeedMore { consumed: 0 })
    );
    assert!(!decoder.is_idle());
    assert!(matches!(
        decoder.decode(b"GET / HTTP/1.1\r\n\r\n", &mut body),
        Ok(Decoded::Complete { .. })
    ));
    assert!(decoder.is_idle());
}

// ---------------------------------------------------------------------------------------------
// Every split position gives the same result.
// ---------------------------------------------------------------------------------------------

#[test]
fn requests_decode_the_same_however_the_bytes_are_split() {
    let mut pipelined = post_leads(LEAD_JSON);
    pipelined.extend_from_slice(b"\r\nGET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    pipelined.extend_from_slice(&chunked_request("4;ext=1\r\nabcd\r\n0\r\nT: v\r\n\r\n"));
    let inputs: Vec<Vec<u8>> = vec![
        post_leads(LEAD_JSON),
        pipelined,
        chunked_request("5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"),
        b"GET / HTTP/1.1\nHost: a\n\n".to_vec(),
        // Failures must be found at the same point too.
        chunked_request("5\r\nhelloX"),
        with_content_length(&["5", "6"], "hello!"),
        b"GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n".to_vec(),
    ];
    for input in &inputs {
        assert_split_invariant_requests(Limits::default(), input);
    }
    // And the limits: an oversized body found mid-stream.
    assert_split_invariant_requests(
        Limits::with_max_body_bytes(4),
        &chunked_request("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
    );
}

// ---------------------------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------------------------

const BID: &str = r#"{"bid": 42.5, "bid_id": "b-77"}"#;

fn bid_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        BID.len(),
        BID
    )
    .into_bytes()
}

#[test]
fn buyer_bid_response_is_decoded() {
    let (head, body) = one_response(&bid_response());
    assert_eq!(head.status, 200);
    assert_eq!(head.version_minor, 1);
    assert!(head.keep_alive);
    assert_eq!(head.content_length, Some(BID.len() as u64));
    assert!(!head.close_delimited);
    assert_eq!(head.content_type.as_deref(), Some("application/json"));
    assert_eq!(body, BID.as_bytes());
}

#[test]
fn interim_100_continue_heads_are_skipped() {
    let mut input =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n".to_vec();
    input.extend_from_slice(&bid_response());
    let (head, body) = one_response(&input);
    assert_eq!(head.status, 200);
    assert_eq!(body, BID.as_bytes());
    assert_split_invariant_responses(Limits::default(), &input);
}

#[test]
fn switching_protocols_and_endless_interim_heads_are_refused() {
    assert_eq!(
        response_error(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        Error::UnexpectedSwitchingProtocols
    );
    let input = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INFORMATIONAL_HEADS as usize + 1);
    assert_eq!(response_error(&input), Error::TooManyInformational);
}

#[test]
fn status_codes_outside_the_valid_range_are_refused() {
    assert_eq!(
        response_error(b"HTTP/1.1 099 Odd\r\n\r\n"),
        Error::InvalidStatusLine
    );
    assert_eq!(
        response_error(b"HTTP/1.1 600 Odd\r\n\r\n"),
        Error::InvalidStatusLine
    );
    assert_eq!(
        response_error(b"HTTP/1.1 2000 OK\r\n\r\n"),
        Error::InvalidStatusLine
    );
    assert_eq!(response_error(b"garbage\r\n\r\n"), Error::NotHttp);
    assert_eq!(
        response_error(b"HTTP/2.0 200 OK\r\n\r\n"),
        Error::UnsupportedVersion
    );
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let out = responses(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(out.error, None);
    let got: Vec<(u16, &[u8])> = out
        .messages
        .iter()
        .map(|(h, b)| (h.status, b.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![(204, &b""[..]), (304, &b""[..]), (200, &b"ok"[..])]
    );
    assert!(out.messages[0].0.keep_alive);
}

#[test]
fn response_to_head_has_no_body_whatever_its_length_says() {
    let mut decoder = ResponseDecoder::new(Limits::default());
    let mut body = Vec::new();
    decoder.expect_head_response();
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    match decoder.decode(input, &mut body) {
        Ok(Decoded::Complete { head, consumed }) => {
            assert_eq!(head.content_length, Some(100));
            assert_eq!(consumed, input.len());
        }
        other => panic!("expected Complete, got {other:?}"),
    }
    // Only for one response.
    assert!(matches!(
        decoder.decode(input, &mut body),
        Ok(Decoded::NeedMore { .. })
    ));
}

#[test]
fn response_without_length_runs_to_the_close() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"bid\": 0}";
    let (head, body) = one_response(input);
    assert!(head.close_delimited);
    assert!(!head.keep_alive);
    assert_eq!(body, b"{\"bid\": 0}");
    assert_split_invariant_responses(Limits::default(), input);
}

#[test]
fn close_delimited_body_is_bounded_too() {
    let limits = Limits::with_max_body_bytes(4);
    let out = run_responses(limits, b"HTTP/1.1 200 OK\r\n\r\n12345", 2);
    assert_eq!(out.error, Some(Error::BodyTooLarge));
}

#[test]
fn eof_mid_message_is_incomplete_and_eof_between_messages_is_clean() {
    let out = responses(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    assert_eq!(out.error, Some(Error::IncompleteMessage));
    assert_eq!(out.error.map(|e| e.code()), Some("incomplete_message"));
    let out = responses(b"HTTP/1.1 200 OK\r\nContent-Le");
    assert_eq!(out.error, Some(Error::IncompleteMessage));
    let out = responses(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(
        out.error,
        Some(Error::IncompleteMessage),
        "an interim head is not an answer"
    );
    let out = responses(&bid_response());
    assert_eq!(out.error, None);
    assert_eq!(out.messages.len(), 1);
    let mut decoder = ResponseDecoder::new(Limits::default());
    assert_eq!(decoder.on_eof(), Ok(None));
}

#[test]
fn response_transfer_encoding_chunked_wins_over_content_length() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (head, body) = one_response(input);
    assert!(head.chunked);
    // Read, but the connection is not used again: such framing is suspect.
    assert!(!head.keep_alive);
    assert_eq!(body, b"hello");
    // Either alone keeps it.
    let (head, _) = one_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(head.keep_alive);
    assert_split_invariant_responses(Limits::default(), input);
}

#[test]
fn response_with_a_final_coding_other_than_chunked_runs_to_the_close() {
    let (head, body) = one_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz");
    assert!(head.close_delimited);
    assert!(!head.chunked);
    assert_eq!(body, b"zzz");
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        Error::InvalidTransferEncoding
    );
    assert_eq!(
        response_error(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        Error::TransferEncodingInHttp10
    );
}

#[test]
fn response_keep_alive_rules() {
    let (head, _) =
        one_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert!(!head.keep_alive);
    let (head, _) = one_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(!head.keep_alive);
    let (head, _) =
        one_response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    assert!(head.keep_alive);
}

#[test]
fn response_content_length_guards_match_requests() {
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
        Error::ConflictingContentLength
    );
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        Error::InvalidContentLength
    );
    let limits = Limits::with_max_body_bytes(4);
    let out = run_responses(limits, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 64);
    assert_eq!(out.error, Some(Error::BodyTooLarge));
}

#[test]
fn retry_after_is_kept() {
    let (head, _) = one_response(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After:  30 \r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(head.status, 503);
    assert_eq!(head.retry_after.as_deref(), Some("30"));
}

#[test]
fn pipelined_responses_and_every_split_agree() {
    let mut input = bid_response();
    input.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    input.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    );
    input.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\ntail");
    let out = responses(&input);
    assert_eq!(out.error, None);
    let bodies: Vec<&[u8]> = out.messages.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(
        bodies,
        vec![BID.as_bytes(), &b""[..], &b"abc"[..], &b"tail"[..]]
    );
    assert_split_invariant_responses(Limits::default(), &input);
}

/// A whole head in one read is parsed in one pass; a head in pieces is scanned for its end
/// first. Both must reach the same answer, error or limit for every kind of head.
#[test]
fn a_head_read_whole_and_a_head_read_in_pieces_decode_alike() {
    let mut many_headers = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        many_headers.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let mut long_head = b"HTTP/1.1 200 OK\r\nX-Fill: ".to_vec();
    long_head.resize(16 * 1024 - 20, b'a');
    long_head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
    let mut over_head = long_head.clone();
    over_head.splice(30..30, *b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    let cases: Vec<Vec<u8>> = vec![
        bid_response(),
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok".to_vec(),
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx".to_vec(),
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 999 Odd\r\n\r\n".to_vec(),
        b"HTTP/2.0 200 OK\r\n\r\n".to_vec(),
        b"HTTP/1.1 20 OK\r\n\r\n".to_vec(),
        b"garbage\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\rX: y\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n".to_vec(),
        b"HTTP/1.0 200 OK\r\n\r\nto the close".to_vec(),
        many_headers,
        long_head,
        over_head,
    ];
    for input in &cases {
        assert_split_invariant_responses(Limits::default(), input);
    }
}

// ---------------------------------------------------------------------------------------------
// Writing, and reading back what was written.
// ---------------------------------------------------------------------------------------------

#[test]
fn written_request_is_exactly_the_expected_bytes() {
    let mut out = Vec::new();
    write_request(
        &mut out,
        "POST",
        "/ping",
        "buyer.example:9101",
        [("X-Api-Key", "acme-secret")],
        "application/json",
        b"{}",
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "POST /ping HTTP/1.1\r\nHost: buyer.example:9101\r\nX-Api-Key: acme-secret\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    );
}

#[test]
fn written_request_reads_back_through_the_request_decoder() {
    let body = br#"{"ping_id":"01JDQ6X8W2","lead":{"state":"TX"}}"#;
    // Shaped like a buyer's configured `headers` table.
    let headers = std::collections::BTreeMap::from([
        ("Authorization".to_string(), "Bearer k".to_string()),
        ("X-A".to_string(), "1".to_string()),
    ]);
    let mut out = Vec::new();
    write_request(
        &mut out,
        "POST",
        "/v1/ping?src=a b",
        "h",
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        "application/json",
        body,
    );
    let (head, got) = one_request(&out);
    assert_eq!(head.method, Method::Post);
    assert_eq!(
        head.path, "/v1/ping?src=a%20b",
        "a space cannot end the target early"
    );
    assert!(head.keep_alive);
    assert_eq!(head.authorization.as_deref(), Some("Bearer k"));
    assert_eq!(head.content_type.as_deref(), Some("application/json"));
    assert_eq!(head.content_length, Some(body.len() as u64));
    assert_eq!(got, body);
}

#[test]
fn written_request_never_lets_configured_headers_break_framing() {
    let mut out = Vec::new();
    write_request(
        &mut out,
        "POST",
        "/p",
        "h\r\nX-Injected: 1",
        [
            ("Content-Length", "999"),
            ("Transfer-Encoding", "chunked"),
            ("host", "other"),
            ("X-Evil", "a\r\nContent-Length: 0"),
            ("Bad Name", "x"),
            ("X-Good", "yes"),
        ],
        "application/json",
        b"abc",
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(
        text.matches("Content-Length").count(),
        2,
        "ours, and the harmless text inside X-Evil: {text}"
    );
    assert!(!text.contains("Transfer-Encoding"));
    assert!(!text.contains("Bad Name"));
    assert!(!text.contains("\r\nX-Injected"));
    let (head, body) = one_request(&out);
    assert_eq!(head.content_length, Some(3));
    assert_eq!(body, b"abc");
}

#[test]
fn written_response_is_exactly_the_expected_bytes() {
    let mut out = Vec::new();
    write_response(
        &mut out,
        200,
        &[("Content-Type", "application/json")],
        b"{}",
        true,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    );
    out.clear();
    write_response(&mut out, 400, &[], b"", false);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    out.clear();
    write_response(&mut out, 200, &[], b"", Persist::KeepAliveAnnounced);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn an_http10_keep_alive_request_gets_its_answer_announced() {
    assert_eq!(Persist::for_request(true, 0), Persist::KeepAliveAnnounced);
    assert_eq!(Persist::for_request(true, 1), Persist::KeepAlive);
    assert_eq!(Persist::for_request(false, 0), Persist::Close);
    assert_eq!(Persist::for_request(false, 1), Persist::Close);
}

#[test]
fn written_responses_read_back_through_the_response_decoder() {
    let mut out = Vec::new();
    write_response(
        &mut out,
        200,
        &[("Content-Type", "application/json")],
        BID.as_bytes(),
        true,
    );
    write_response(&mut out, 204, &[], b"ignored", true);
    write_response(
        &mut out,
        503,
        &[("Retry-After", "1"), ("Content-Length", "77")],
        b"{}",
        false,
    );
    let out = responses(&out);
    assert_eq!(out.error, None);
    let got: Vec<(u16, bool, &[u8])> = out
        .messages
        .iter()
        .map(|(h, b)| (h.status, h.keep_alive, b.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            (200, true, BID.as_bytes()),
            (204, true, &b""[..]),
            (503, false, &b"{}"[..])
        ]
    );
    assert_eq!(out.messages[2].0.retry_after.as_deref(), Some("1"));
}

#[test]
fn written_request_into_a_reused_buffer_does_not_grow_it() {
    let mut out = Vec::with_capacity(1024);
    let capacity = out.capacity();
    for _ in 0..100 {
        out.clear();
        write_request(
            &mut out,
            "POST",
            "/ping",
            "h",
            [("X-A", "1"), ("X-B", "2"), ("X-C", "3")],
            "application/json",
            b"{}",
        );
    }
    assert_eq!(out.capacity(), capacity);
}

#[test]
fn request_len_bound_is_exact_for_clean_requests_and_never_short() {
    let big = vec![b'x'; 123_456];
    let clean = [
        OutgoingRequest {
            method: "POST",
            path: "/ping",
            host: "buyer.example:9101",
            headers: &[("X-Api-Key", "k")][..],
            content_type: "application/json",
            body: b"{}",
        },
        OutgoingRequest {
            method: "POST",
            path: "/p",
            host: "h",
            headers: &[][..],
            content_type: "",
            body: b"",
        },
        OutgoingRequest {
            method: "GET",
            path: "",
            host: "h",
            headers: &[][..],
            content_type: "",
            body: b"",
        },
        OutgoingRequest {
            method: "POST",
            path: "/post",
            host: "h",
            headers: &[("A", "1"), ("B", "2")][..],
            content_type: "text/xml",
            body: &big,
        },
    ];
    // Bytes left out or percent-encoded: the bound may be over, never under.
    let dirty = [
        OutgoingRequest {
            method: "",
            path: "/a b\x01",
            host: "h\r\n",
            headers: &[("Content-Length", "9"), ("Bad Name", "v\n")][..],
            content_type: "a\rb",
            body: b"z",
        },
        OutgoingRequest {
            method: "P O\tST",
            path: "/%",
            host: "h",
            headers: &[("host", "x")][..],
            content_type: "",
            body: b"yyyyyyyyy",
        },
    ];
    for (i, request) in clean.iter().chain(&dirty).enumerate() {
        let request = OutgoingRequest {
            method: request.method,
            path: request.path,
            host: request.host,
            headers: request.headers.iter().copied(),
            content_type: request.content_type,
            body: request.body,
        };
        let bound = request.len_bound();
        let mut out = Vec::new();
        request.clone().write(&mut out);
        assert!(
            bound >= out.len(),
            "case {i}: bound {bound} < written {}",
            out.len()
        );
        if i < clean.len() {
            assert_eq!(bound, out.len(), "case {i}: clean input, exact length");
        }
        // A prefix built once (with no body) and completed per request writes the same bytes.
        let mut prefix = Vec::new();
        OutgoingRequest {
            body: &[][..],
            ..request.clone()
        }
        .write_head_prefix(&mut prefix);
        let mut reused = prefix.clone();
        finish_request(&mut reused, request.body);
        assert_eq!(reused, out, "case {i}: prefix and finish differ from write");
        assert!(prefix.len() + finish_request_len(request.body.len()) >= out.len());
    }
}

#[test]
fn out_of_range_status_is_written_as_500() {
    let mut out = Vec::new();
    write_response(&mut out, 1000, &[], b"", true);
    assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
}

#[test]
fn header_validity_check_matches_what_can_be_written() {
    assert!(is_valid_header("X-Api-Key", "acme secret\tvalue"));
    assert!(!is_valid_header("", "v"));
    assert!(!is_valid_header("X Key", "v"));
    assert!(!is_valid_header("X-Key", "a\r\nb"));
    assert!(!is_valid_header("X-Key", "a\u{7f}"));
}

#[test]
fn reason_phrases_cover_the_exchange_statuses() {
    for (status, reason) in [
        (200, "OK"),
        (204, "No Content"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (409, "Conflict"),
        (410, "Gone"),
        (413, "Content Too Large"),
        (422, "Unprocessable Content"),
        (429, "Too Many Requests"),
        (503, "Service Unavailable"),
        (799, "Unknown"),
    ] {
        assert_eq!(reason_phrase(status), reason);
    }
}

#[test]
fn error_codes_are_distinct_snake_case_and_statuses_are_400_or_413() {
    let all = ALL_ERRORS;
    let mut codes: Vec<&str> = all.iter().map(|e| e.code()).collect();
    for code in &codes {
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{code}"
        );
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    for e in all {
        let want = if e == Error::BodyTooLarge { 413 } else { 400 };
        assert_eq!(e.status(), want, "{e}");
        assert!(e.to_string().contains(e.code()));
    }
}

#[test]
fn refused_requests_are_answered_in_the_contract_error_shape_and_closed() {
    for error in ALL_ERRORS {
        let mut out = Vec::new();
        write_error_response(&mut out, error);
        let (head, body) = one_response(&out);
        assert_eq!(head.status, error.status());
        assert!(!head.keep_alive, "the connection is closed after a refusal");
        assert_eq!(head.content_type.as_deref(), Some("application/json"));
        let json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => panic!(
                "error body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            ),
        };
        assert_eq!(json["error"]["code"], error.code());
        assert_eq!(json["error"]["message"], error.message());
    }
}

#[test]
fn interim_continue_is_written_without_length_or_body() {
    let mut out = Vec::new();
    write_response(&mut out, 100, &[], b"", true);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn token_characters_are_exactly_those_of_rfc_9110() {
    let tchars: Vec<u8> = (0..=255u8).filter(|&b| body::is_tchar(b)).collect();
    let mut want: Vec<u8> = b"!#$%&'*+-.^_`|~".to_vec();
    want.extend(b'0'..=b'9');
    want.extend(b'A'..=b'Z');
    want.extend(b'a'..=b'z');
    want.sort_unstable();
    assert_eq!(tchars, want);
}

// ---------------------------------------------------------------------------------------------
// Mutated input: whatever the bytes, no panic, the limits hold, and how the bytes are split
// across reads changes nothing.
// ---------------------------------------------------------------------------------------------

/// The bytes HTTP framing turns on, for mutations to insert.
const FRAMING: &[u8] = b"\r\n:; \t0123456789abcdefABCDEF,-\"\x00\x7f\xff";

fn assert_within_limits<H>(limits: Limits, outcome: &Outcome<H>, what: &[u8]) {
    for (_, body) in &outcome.messages {
        assert!(
            body.len() <= limits.max_body_bytes,
            "a body of {} bytes passed a limit of {}: {:?}",
            body.len(),
            limits.max_body_bytes,
            String::from_utf8_lossy(what)
        );
    }
}

#[test]
fn mutated_requests_decode_alike_however_they_are_split_and_within_the_limits() {
    let chunked = b"POST /v1/leads HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer k\r\n\
        Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\nX-T: 1\r\n\r\n"
        .to_vec();
    let pipelined = [post_leads(LEAD_JSON), post_leads("{}")].concat();
    let get = b"GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: keep-alive\r\n\r\n".to_vec();
    let corpus = [post_leads(LEAD_JSON), chunked, pipelined, get];
    // Small limits, so that mutations cross them too.
    let limits = Limits {
        max_head_bytes: 160,
        max_headers: 6,
        max_body_bytes: 80,
    };
    let mut rng = crate::test_rng::Rng(0xB504_F333_F9DE_6484);
    for round in 0..20_000 {
        let input = rng.mutate(&corpus[round % corpus.len()], FRAMING);
        let whole = run_requests(limits, &input, input.len());
        assert_within_limits(limits, &whole, &input);
        let what = String::from_utf8_lossy(&input);
        let bytewise = run_requests(limits, &input, 1);
        assert_eq!(
            bytewise.messages, whole.messages,
            "byte at a time: {what:?}"
        );
        assert_eq!(bytewise.error, whole.error, "byte at a time: {what:?}");
        for _ in 0..3 {
            let cut = rng.below(input.len() + 1);
            let split = run_request_pieces(limits, [&input[..cut], &input[cut..]]);
            assert_eq!(split.messages, whole.messages, "cut at {cut}: {what:?}");
            assert_eq!(split.error, whole.error, "cut at {cut}: {what:?}");
        }
    }
}

#[test]
fn mutated_responses_decode_alike_however_they_are_split_and_within_the_limits() {
    let bid = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n\
        {\"bid\": 42.5, \"bid_id\": \"b-77\"}"
        .to_vec();
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        a\r\n{\"bid\": 1}\r\n0\r\n\r\n"
        .to_vec();
    let continued = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_vec();
    let close_delimited =
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"status\":\"accepted\"}".to_vec();
    let corpus = [bid, chunked, continued, close_delimited];
    let limits = Limits {
        max_head_bytes: 160,
        max_headers: 6,
        max_body_bytes: 80,
    };
    let mut rng = crate::test_rng::Rng(0x3C6E_F372_FE94_F82B);
    for round in 0..20_000 {
        let input = rng.mutate(&corpus[round % corpus.len()], FRAMING);
        let whole = run_responses(limits, &input, input.len());
        assert_within_limits(limits, &whole, &input);
        let what = String::from_utf8_lossy(&input);
        for step in [1, 1 + rng.below(16)] {
            let split = run_responses(limits, &input, step);
            assert_eq!(split.messages, whole.messages, "step {step}: {what:?}");
            assert_eq!(split.error, whole.error, "step {step}: {what:?}");
        }
    }
}

#[test]
fn absolute_form_targets_become_their_path_and_hosts_are_counted() {
    for (target, path) in [
        ("http://gavel.example:8080/v1/leads?x=1", "/v1/leads?x=1"),
        ("HTTPS://gavel.example/v1/ping", "/v1/ping"),
        ("http://gavel.example", "/"),
        ("http://gavel.example?x", "/"),
        ("/v1/leads", "/v1/leads"),
    ] {
        let (head, _) = one_request(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(head.path, path, "{target}");
        assert!(host_ok(&head));
    }
    let (head, _) = one_request(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(head.host_count, 0);
    assert!(!host_ok(&head));
    let (head, _) = one_request(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
    assert!(!host_ok(&head));
    let (head, _) = one_request(b"GET / HTTP/1.0\r\n\r\n");
    assert!(host_ok(&head));
}

#[test]
fn an_answer_that_cannot_begin_http_is_refused_at_its_first_bytes() {
    for input in [
        &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
        b"{\"bid\": 12.5}",
        b"\r\n220 mail ESMTP\r\n",
        b"HTTX/1.1 200 OK\r\n",
        b"http/1.1 200 OK\r\n\r\n",
    ] {
        // Whole, and a byte at a time: refused without waiting for a head's end.
        for step in [input.len(), 1] {
            let out = run_responses(Limits::default(), input, step);
            assert_eq!(out.error, Some(Error::NotHttp), "{input:?} by {step}");
            assert!(out.messages.is_empty());
        }
    }
    // The start of a real answer, however it is cut, waits for the rest.
    let whole = b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    for step in 1..whole.len() {
        let out = run_responses(Limits::default(), whole, step);
        assert_eq!(out.error, None, "by {step}");
        assert_eq!(out.messages.len(), 1, "by {step}");
    }
    // An interim answer, then a banner where the final one should be.
    let out = run_responses(
        Limits::default(),
        b"HTTP/1.1 100 Continue\r\n\r\nSSH-2.0\r\n",
        1,
    );
    assert_eq!(out.error, Some(Error::NotHttp));
}

#[test]
fn an_unreadable_answer_names_the_limit_it_broke() {
    let limits = Limits::with_max_body_bytes(65_536);
    assert_eq!(
        Error::BodyTooLarge.answer_reason(&limits),
        "answer body larger than 65536 bytes"
    );
    assert_eq!(
        Error::HeadTooLarge.answer_reason(&limits),
        format!(
            "malformed HTTP answer: its head is larger than {} bytes",
            limits.max_head_bytes
        )
    );
    assert_eq!(
        Error::TooManyHeaders.answer_reason(&limits),
        format!(
            "malformed HTTP answer: more than {} header lines",
            limits.max_headers
        )
    );
    assert_eq!(
        Error::NotHttp.answer_reason(&limits),
        "not an HTTP answer: it does not begin HTTP/"
    );
    assert_eq!(
        Error::InvalidChunk.answer_reason(&limits),
        "malformed HTTP answer: malformed chunked framing"
    );
    // A body too large is found from its Content-Length, before any of it is read.
    let out = run_responses(
        limits,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n",
        64,
    );
    assert_eq!(out.error, Some(Error::BodyTooLarge));
}

/// A target with a fragment is malformed (origin-form is a path and a query, RFC 9112 §3.2):
/// refused, not routed as an unknown path.
#[test]
fn a_request_target_with_a_fragment_is_refused() {
    for target in ["/v1/leads#frag", "/healthz#", "http://host/v1/leads?a=1#f"] {
        let input = format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let e = request_error(input.as_bytes());
        assert_eq!(e, Error::InvalidRequestLine, "{target}");
        assert_eq!((e.status(), e.code()), (400, "invalid_request_line"));
    }
    let (head, _) = one_request(b"POST /v1/leads?a=b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.path, "/v1/leads?a=b");
}
