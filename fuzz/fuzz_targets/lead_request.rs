//! A seller's body through the lead reader: never a panic; the byte scan and serde_json read
//! the same lead wherever the scan answers; a lead read is written back as valid JSON, its
//! ping-safe copy too, and a lead never contradicts itself as a post of its own ping.
#![no_main]

use gavel::lead::{self, fields::Fields};
use libfuzzer_sys::fuzz_target;

fn json(f: &Fields) -> Vec<u8> {
    let mut out = Vec::new();
    f.write_json(&mut out);
    out
}

fn valid(bytes: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(bytes) {
        panic!("{e}: {}", String::from_utf8_lossy(bytes));
    }
}

fuzz_target!(|data: &[u8]| {
    let (fast, slow) = lead::fuzzing::lead_readings(data);
    if let Some(fast) = &fast {
        let slow = match &slow {
            Ok(s) => s,
            Err(e) => panic!("the scan read a body serde_json refuses: {e:?}"),
        };
        assert_eq!(
            (&fast.campaign, &fast.source, fast.test),
            (&slow.campaign, &slow.source, slow.test)
        );
        assert_eq!(fast.lead, slow.lead);
        assert_eq!(json(&fast.lead), json(&slow.lead));
        assert_eq!(
            fast.consent.as_ref().map(json),
            slow.consent.as_ref().map(json)
        );
    }
    let Ok(req) = lead::parse_request(data) else {
        return;
    };
    valid(&json(&req.lead));
    if let Some(c) = &req.consent {
        valid(&json(c));
    }
    let names: Vec<&str> = req.lead.iter().map(|(k, _)| k).collect();
    if let Some(safe) = lead::ping_safe(&req.lead, names.iter().copied()) {
        valid(&json(&safe));
        // What a ping shows of a lead, the lead itself never contradicts.
        assert!(lead::check_ping_match(&safe, &req.lead).is_ok());
    }
    for (_, v) in req.lead.iter() {
        assert!(lead::same_value(v, v));
    }
    assert!(lead::check_ping_match(&req.lead, &req.lead).is_ok());
});
