//! Feeding a decoder the way a socket does, shared by the HTTP targets.

use gavel::http::{Decoded, Error, Limits};
use std::fmt::Debug;

/// Small limits, so that the fuzzer reaches them.
pub const LIMITS: Limits = Limits {
    max_head_bytes: 512,
    max_headers: 16,
    max_body_bytes: 256,
};

/// What `decode` (a decoder's `decode`, keeping its place across calls) made of `input` fed
/// `step` bytes at a time: each message's head and body, then `refused` if it refused the
/// stream (and kept refusing it). The second value: whether it did. `body` holds what the
/// decoder put there last (a message still open at the end keeps its body so far).
pub fn feed<H: Debug>(
    input: &[u8],
    step: usize,
    body: &mut Vec<u8>,
    mut decode: impl FnMut(&[u8], &mut Vec<u8>) -> Result<Decoded<H>, Error>,
) -> (Vec<String>, bool) {
    let (mut buf, mut seen) = (Vec::new(), Vec::new());
    let mut fed = 0;
    loop {
        let take = step.min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + take]);
        fed += take;
        loop {
            match decode(&buf, body) {
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
                    assert!(e.status() >= 400);
                    assert_eq!(decode(&buf, body).err(), Some(e));
                    seen.push("refused".into());
                    return (seen, true);
                }
            }
        }
        if fed == input.len() {
            return (seen, false);
        }
    }
}
