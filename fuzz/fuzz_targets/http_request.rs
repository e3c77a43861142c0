//! A seller's bytes through the request decoder: never a panic, and the same requests (or a
//! refusal) whether the bytes arrive at once or a few at a time, as they do off a socket.
#![no_main]

use gavel::http::{Decoded, Limits, RequestDecoder};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_head_bytes: 512,
    max_headers: 16,
    max_body_bytes: 256,
};

/// What the decoder made of `input` fed `step` bytes at a time: each request's head and
/// body, then `refused` if it refused the stream.
fn run(input: &[u8], step: usize) -> Vec<String> {
    let mut dec = RequestDecoder::new(LIMITS);
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
                    // A refusal is sticky, and answered with a 4xx or 5xx.
                    assert!(e.status() >= 400);
                    assert_eq!(dec.decode(&buf, &mut body).err(), Some(e));
                    seen.push("refused".into());
                    return seen;
                }
            }
        }
        if fed == input.len() {
            return seen;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, input.len().max(1));
    let split = run(input, usize::from(first % 7) + 1);
    assert_eq!(whole, split);
});
