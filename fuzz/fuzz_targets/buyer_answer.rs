//! A buyer's answer body through every reader of bids and post answers: never a panic; the
//! byte scan and serde_json agree wherever the scan answers; a bid read is a sane amount.
#![no_main]

use gavel::adapter::Adapter;
use gavel::auction::{PingOutcome, PostOutcome};
use gavel::config::types::AdapterConfig;
use gavel::lead;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn adapters() -> &'static [Adapter] {
    static ADAPTERS: OnceLock<Vec<Adapter>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        [
            r#"{"response": "json", "bid_path": "/result/bid", "bid_id_path": "/result/id",
                "accepted_path": "/result/state", "accepted_values": ["ok", "1"],
                "reason_path": "/result/why"}"#,
            r#"{"response": "xml", "bid_path": "/r/offer/amount", "bid_id_path": "/r/offer/id",
                "accepted_path": "/r/state", "accepted_values": ["ok", "true"],
                "reason_path": "/r/why"}"#,
            r#"{"response": "xml", "bid_path": "/r/p"}"#,
        ]
        .iter()
        .map(|cfg| {
            let cfg: AdapterConfig = serde_json::from_str(cfg).expect("a fixed adapter config");
            Adapter::compile(&cfg).expect("a fixed adapter config compiles")
        })
        .collect()
    })
}

fn sane_bid(o: &PingOutcome) {
    if let PingOutcome::Bid { cents, bid_id } = o {
        assert!(*cents > 0);
        assert!(bid_id
            .as_ref()
            .is_none_or(|b| b.len() <= lead::MAX_BID_ID_BYTES));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let status = [200u16, 201, 204, 299, 400, 500][usize::from(first % 6)];
    sane_bid(&lead::parse_bid(status, body));
    let _: PostOutcome = lead::parse_post_answer(status, body);
    let (fast, slow) = lead::fuzzing::bid_readings(body);
    if let Some(fast) = fast {
        assert_eq!(Ok(fast), slow);
    }
    let (fast, slow) = lead::fuzzing::post_readings(body);
    if let Some(fast) = fast {
        assert_eq!(fast, slow);
    }
    for a in adapters() {
        sane_bid(&a.parse_bid(status, body));
        let _ = a.parse_post(status, body);
    }
});
