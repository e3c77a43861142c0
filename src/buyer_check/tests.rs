use super::*;

fn args(url: &str) -> BuyerCheckArgs {
    BuyerCheckArgs {
        url: url.to_string(),
        campaign: None,
        config: None,
        buyer: None,
        count: 4,
        timeout_ms: None,
        interval_ms: 0,
        headers: Vec::new(),
        lead: None,
        ca_files: Vec::new(),
        json: false,
    }
}

fn sample_plan() -> Plan {
    match plan(&args("http://127.0.0.1:9/ping")) {
        Ok(p) => p,
        Err(code) => panic!("plan refused: exit {}", code),
    }
}

fn answer(n: u32, status: u16, body: &[u8], keep_alive: bool, reused: bool) -> PingRecord {
    PingRecord {
        n,
        result: PingResult::Answer {
            status,
            version_minor: 1,
            keep_alive,
            content_type: Some("application/json".into()),
            body_bytes: body.len(),
            outcome: lead::parse_bid(status, body),
        },
        elapsed: Duration::from_millis(5 + u64::from(n)),
        reused,
        opened: !reused,
        retried: String::new(),
        idle_closed_after: None,
        unasked: 0,
        delivered: false,
    }
}

fn verdict(r: &Report, name: &str) -> Verdict {
    match r.checks.iter().find(|c| c.name == name) {
        Some(c) => c.verdict,
        None => panic!("no check {}", name),
    }
}

#[test]
fn the_sample_lead_has_every_sample_ping_field() {
    let lead = sample_lead();
    for f in SAMPLE_PING_FIELDS {
        assert!(lead.contains_key(*f), "{}", f);
    }
    assert!(
        lead.contains_key("email"),
        "personal fields are there to be left out"
    );
}

#[test]
fn the_sample_ping_is_the_exchanges_ping_with_test_set_and_the_window_less_the_margin() {
    let p = sample_plan();
    assert_eq!(p.timeout_ms, DEFAULT_TIMEOUT_MS - DEFAULT_ENGINE_MARGIN_MS);
    let mut out = Vec::new();
    lead::write_ping(&mut out, "id-1", &p.campaign, &p.lead, p.timeout_ms);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["test"], true);
    assert_eq!(v["timeout_ms"], 800);
    assert_eq!(v["campaign"], SAMPLE_CAMPAIGN);
    let keys: Vec<&str> = v["lead"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, SAMPLE_PING_FIELDS);
}

#[test]
fn usage_problems_exit_2() {
    let mut a = args("ftp://x/ping");
    assert_eq!(plan(&a).err(), Some(2));
    a = args("http://127.0.0.1:9/ping");
    a.headers = vec!["no colon".into()];
    assert_eq!(plan(&a).err(), Some(2));
    a.headers = vec!["Bad Name: v".into()];
    assert_eq!(plan(&a).err(), Some(2));
    a.headers = vec!["X-Api-Key: k".into()];
    assert!(plan(&a).is_ok());
    a.lead = Some("[1]".into());
    assert_eq!(plan(&a).err(), Some(2));
    a.lead = Some("{not json".into());
    assert_eq!(plan(&a).err(), Some(2));
    a.lead = Some(r#"{"state": "CA"}"#.into());
    let p = plan(&a).unwrap();
    assert_eq!(p.lead.lead.get("state"), Some(lead::Field::Str("CA")));
    assert_eq!(
        p.lead.lead.get("zip"),
        Some(lead::Field::Str("77002")),
        "merged over the sample"
    );
    a.ca_files = vec!["/nonexistent/ca.pem".into()];
    a.url = "https://127.0.0.1:9/ping".into();
    assert_eq!(plan(&a).err(), Some(2));
}

#[test]
fn a_keep_alive_buyer_answering_bids_and_no_bids_is_conformant() {
    let p = sample_plan();
    let recs = vec![
        answer(1, 200, br#"{"bid": 42.5, "bid_id": "b-1"}"#, true, false),
        answer(2, 200, br#"{"bid": 0}"#, true, true),
        answer(3, 204, b"", true, true),
        answer(4, 200, br#"{"bid": 12.999}"#, true, true),
    ];
    let r = judge(&p, &recs, Some("127.0.0.1:9".parse().unwrap()));
    assert!(r.conformant, "{}", r.text());
    // The same amount in a string is not a JSON number, so not a bid: the buyer is told.
    let mut quoted = recs.clone();
    quoted[3] = answer(4, 200, br#"{"bid": "12.999"}"#, true, true);
    let q = judge(&p, &quoted, Some("127.0.0.1:9".parse().unwrap()));
    assert!(!q.conformant);
    assert!(q.text().contains("bid is not a number"), "{}", q.text());
    assert_eq!((r.bids, r.no_bids, r.bids_with_id), (2, 2, 1));
    assert_eq!(r.bid_range_cents, Some((1299, 4250)));
    assert_eq!(r.connections, 1);
    assert_eq!(r.reconnects, 0);
    assert_eq!(r.response_us.count, 4);
    assert_eq!(verdict(&r, "keep_alive"), Verdict::Pass);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["bid_min"], 12.99);
    assert_eq!(json["bid_max"], 42.5);
    assert!(r.text().contains("p99"));
}

#[test]
fn each_failure_names_its_check() {
    let p = sample_plan();
    let peer = Some("127.0.0.1:9".parse().unwrap());
    let ok = |n| answer(n, 200, br#"{"bid": 1}"#, true, n > 1);

    let r = judge(
        &p,
        &[ok(1), answer(2, 500, b"{}", true, true), ok(3), ok(4)],
        peer,
    );
    assert!(!r.conformant);
    assert_eq!(verdict(&r, "http"), Verdict::Fail);
    assert_eq!(verdict(&r, "consistent"), Verdict::Fail);
    assert_eq!(verdict(&r, "answer"), Verdict::Pass);

    let r = judge(
        &p,
        &[ok(1), answer(2, 200, b"<bid/>", true, true), ok(3), ok(4)],
        peer,
    );
    assert_eq!(verdict(&r, "answer"), Verdict::Fail);
    assert!(
        r.text().contains("ping 2: unparsable answer"),
        "{}",
        r.text()
    );

    let r = judge(
        &p,
        &[
            ok(1),
            answer(2, 200, br#"{"bid": -3}"#, true, true),
            ok(3),
            ok(4),
        ],
        peer,
    );
    assert_eq!(verdict(&r, "answer"), Verdict::Fail);
    assert_eq!(r.invalid, 1);

    let mut late = ok(2);
    late.elapsed = p.window + Duration::from_millis(1);
    let r = judge(&p, &[ok(1), late, ok(3), ok(4)], peer);
    assert_eq!(verdict(&r, "timeout"), Verdict::Fail);

    let mut timeout = ok(2);
    timeout.result = PingResult::Timeout;
    let r = judge(&p, &[ok(1), timeout, ok(3), ok(4)], peer);
    assert_eq!(verdict(&r, "timeout"), Verdict::Fail);
    assert_eq!(r.timeouts, 1);
    assert_eq!(r.response_us.count, 3, "a timeout has no response time");

    let closing: Vec<_> = (1..=4)
        .map(|n| answer(n, 200, br#"{"bid": 1}"#, false, false))
        .collect();
    let r = judge(&p, &closing, peer);
    assert_eq!(verdict(&r, "keep_alive"), Verdict::Fail);
    assert_eq!(verdict(&r, "answer"), Verdict::Pass);

    let mut wrong_type = ok(1);
    if let PingResult::Answer { content_type, .. } = &mut wrong_type.result {
        *content_type = Some("text/html".into());
    }
    let r = judge(&p, &[wrong_type, ok(2), ok(3), ok(4)], peer);
    assert_eq!(verdict(&r, "content_type"), Verdict::Warn);
    assert!(
        r.conformant,
        "a wrong Content-Type is a warning: the exchange ignores it"
    );
}

#[test]
fn an_unreachable_buyer_fails_connect_and_skips_the_rest() {
    let p = sample_plan();
    let recs = vec![PingRecord {
        n: 1,
        result: PingResult::NoConnection("cannot connect to 127.0.0.1:9: refused".into()),
        elapsed: Duration::ZERO,
        reused: false,
        opened: false,
        retried: String::new(),
        idle_closed_after: None,
        unasked: 0,
        delivered: false,
    }];
    let r = judge(&p, &recs, None);
    assert!(!r.conformant);
    assert_eq!(verdict(&r, "connect"), Verdict::Fail);
    assert_eq!(verdict(&r, "keep_alive"), Verdict::Skip);
    assert!(r.text().contains("refused"));
    // Nothing reached the buyer.
    assert_eq!(r.sent, 0);
    assert!(r.text().contains("pings 0 sent of"), "{}", r.text());
}

/// `--lead` values reach the buyer as the exchange would send them: a state as its USPS code.
#[test]
fn a_lead_given_on_the_command_line_is_normalised_as_the_exchange_does() {
    let mut a = args("http://127.0.0.1:9/ping");
    a.lead = Some(r#"{"state": " tx"}"#.to_string());
    let p = match plan(&a) {
        Ok(p) => p,
        Err(code) => panic!("plan refused: exit {}", code),
    };
    let mut out = Vec::new();
    lead::write_ping(&mut out, "id-1", &p.campaign, &p.lead, p.timeout_ms);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["state"], "TX");
}
