//! A buyer's bytes through the response decoder: never a panic, and the same answers (or a
//! refusal) whether the bytes arrive at once or a few at a time, then the buyer's close.
#![no_main]

use gavel::http::{Decoded, Limits, ResponseDecoder};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_head_bytes: 512,
    max_headers: 16,
    max_body_bytes: 256,
};

/// What the decoder made of `input` fed `step` bytes at a time and then the close: each
/// answer's head and body, then `refused` if it refused the stream.
fn run(input: &[u8], step: usize, head_request: bool) -> Vec<String> {
    let mut dec = ResponseDecoder::new(LIMITS);
    if head_request {
        dec.expect_head_response();
    }
    let (mut buf, mut body, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    let mut fed = 0;
    loop {
        let take = step.min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + take]);
        fed += take;
        loop {
            match dec.decode(&buf, &mut body) {
                Ok(Decoded::NeedMore { consumed }) => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                    break;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    assert!(consumed <= buf.len() && body.len() <= LIMITS.max_body_bytes);
                    seen.push(format!("{head:?} {body:?}"));
                    buf.drain(..consumed);
                }
                Err(e) => {
                    assert_eq!(dec.decode(&buf, &mut body).err(), Some(e));
                    seen.push("refused".into());
                    return seen;
                }
            }
        }
        if fed == input.len() {
            break;
        }
    }
    match dec.on_eof() {
        Ok(Some(head)) => seen.push(format!("{head:?} {body:?} at the close")),
        Ok(None) => seen.push("closed".into()),
        Err(_) => seen.push("cut off".into()),
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let head_request = first & 0x80 != 0;
    let whole = run(input, input.len().max(1), head_request);
    let split = run(input, usize::from(first % 7) + 1, head_request);
    assert_eq!(whole, split);
});
