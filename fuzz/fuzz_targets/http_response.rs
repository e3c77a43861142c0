//! A buyer's bytes through the response decoder: never a panic, and the same answers (or a
//! refusal) whether the bytes arrive at once or a few at a time, then the buyer's close.
#![no_main]

mod split;

use gavel::http::ResponseDecoder;
use libfuzzer_sys::fuzz_target;

fn run(input: &[u8], step: usize, head_request: bool) -> Vec<String> {
    let mut dec = ResponseDecoder::new(split::LIMITS);
    if head_request {
        dec.expect_head_response();
    }
    let mut body = Vec::new();
    let (mut seen, refused) =
        split::feed(input, step, &mut body, |buf, body| dec.decode(buf, body));
    if !refused {
        seen.push(match dec.on_eof() {
            Ok(Some(head)) => format!("{head:?} {body:?} at the close"),
            Ok(None) => "closed".into(),
            Err(_) => "cut off".into(),
        });
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
