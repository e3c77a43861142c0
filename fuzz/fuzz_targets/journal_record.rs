//! A journal record's payload, as a damaged or foreign segment may hold it: decoding never
//! panics, and what decodes is exported as one valid JSON object and described for
//! `journal show` without a panic either.
#![no_main]

use gavel::journal::{cli, Entry, Position, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (ts, rest) = data.split_at(8);
    let ts_us = u64::from_le_bytes(ts.try_into().expect("8 bytes"));
    let (&code, payload) = rest.split_first().expect("9 bytes or more");
    let Ok(record) = Record::decode(code, payload) else {
        return;
    };
    let _ = cli::describe_record(&record);
    let entry = Entry {
        pos: Position {
            segment: 0,
            offset: 0,
        },
        ts_us,
        record,
    };
    let mut line = Vec::new();
    cli::entry_json(&entry, &mut line);
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&line) {
        panic!("{e}: {}", String::from_utf8_lossy(&line));
    }
});
