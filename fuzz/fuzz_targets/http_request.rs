//! A seller's bytes through the request decoder: never a panic, and the same requests (or a
//! refusal) whether the bytes arrive at once or a few at a time, as they do off a socket.
#![no_main]

mod split;

use gavel::http::RequestDecoder;
use libfuzzer_sys::fuzz_target;

fn run(input: &[u8], step: usize) -> Vec<String> {
    let mut dec = RequestDecoder::new(split::LIMITS);
    split::feed(input, step, &mut Vec::new(), |buf, body| {
        dec.decode(buf, body)
    })
    .0
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, input.len().max(1));
    let split = run(input, usize::from(first % 7) + 1);
    assert_eq!(whole, split);
});
