use super::*;
use crate::config;
use crate::test_rng::Rng;

fn campaign() -> Campaign {
    let snap = config::parse(include_str!("../../config/exchange.example.toml")).unwrap();
    snap.campaigns[0].clone()
}

const LEAD: &str = r#"{
  "campaign": "auto-insurance", "source": "fb-17", "test": false,
  "lead": {"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "7135550147",
           "street": "12 Main St", "city": "Houston", "state": "TX", "zip": "77002",
           "lead_type": "auto", "age": 34, "insured": true},
  "consent": {"trustedform_cert_url": "https://cert.trustedform.com/2f1e0c", "jornaya_leadid": "5A1B",
              "vertical": "auto_insurance", "disclosed_buyers": ["acme-ins", "blue-ins"],
              "consented_at": "2026-11-25T17:59:01Z"}
}"#;

fn with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(LEAD).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn refusal(body: &[u8]) -> Refusal {
    match parse_request(body) {
        Err(r) => r,
        Ok(req) => validate(&req, &campaign()).unwrap_err(),
    }
}

#[test]
fn a_good_lead_parses_and_validates() {
    let req = parse_request(LEAD.as_bytes()).unwrap();
    assert_eq!(req.campaign, "auto-insurance");
    assert_eq!(req.source.as_deref(), Some("fb-17"));
    assert!(validate(&req, &campaign()).is_ok());
    assert_eq!(
        disclosed_buyers(&req),
        Some(vec!["acme-ins".to_string(), "blue-ins".to_string()])
    );
    assert_eq!(consent_vertical(&req), Some("auto_insurance"));
}

#[test]
fn malformed_bodies_are_400() {
    for body in [
        &b"{"[..],
        b"[]",
        b"null",
        b"{\"lead\":{}}",
        b"{\"campaign\":\"x\",\"lead\":[1]}",
    ] {
        let r = parse_request(body).unwrap_err();
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn lead_and_consent_shapes_are_refused_by_field() {
    let r = parse_request(&with(|v| v["lead"] = Value::from("x"))).unwrap_err();
    assert_eq!((r.status, r.field.as_deref()), (400, Some("lead")));
    let r = parse_request(&with(|v| v["consent"] = Value::from(3))).unwrap_err();
    assert_eq!((r.status, r.field.as_deref()), (400, Some("consent")));
    let r = parse_request(&with(|v| {
        let lead = v["lead"].as_object_mut().unwrap();
        for i in 0..MAX_LEAD_FIELDS {
            lead.insert(format!("extra_{i}"), Value::from(i));
        }
    }))
    .unwrap_err();
    assert_eq!((r.status, r.field.as_deref()), (400, Some("lead")));
    assert!(r.message.contains("more than 256 fields"), "{}", r.message);
    let req = parse_request(&with(|v| v["consent"] = Value::Null)).unwrap();
    assert!(req.consent.is_none());
    // The members are read in the body's one pass: a refused consent is named as such even
    // with the lead after it, and an array (with objects inside) is not an object.
    let r = parse_request(&with(|v| {
        let consent = v["consent"].as_object_mut().unwrap();
        for i in 0..MAX_LEAD_FIELDS {
            consent.insert(format!("extra_{i}"), Value::from(i));
        }
    }))
    .unwrap_err();
    assert_eq!((r.status, r.field.as_deref()), (400, Some("consent")));
    assert!(
        r.message.contains("consent has more than 256 fields"),
        "{}",
        r.message
    );
    let r = parse_request(&with(|v| v["lead"] = serde_json::json!([{"a": 1}, [2]]))).unwrap_err();
    assert_eq!((r.status, r.field.as_deref()), (400, Some("lead")));
    assert!(
        r.message.contains("lead must be an object"),
        "{}",
        r.message
    );
    // Broken JSON after a refused member is still broken JSON.
    let mut many = String::from(r#"{"campaign":"auto-insurance","lead":{"#);
    for i in 0..=MAX_LEAD_FIELDS {
        many.push_str(&format!(r#""f{i}":{i},"#));
    }
    many.push_str(r#""last":1},"consent":{"#);
    let r = parse_request(many.as_bytes()).unwrap_err();
    assert_eq!((r.status, r.field.as_deref()), (400, None), "{}", r.message);
}

#[test]
fn the_post_keeps_every_value_as_sent() {
    // Escapes, unicode, big and fractional numbers, nested values: what the seller sent is what
    // the buyer gets, value for value.
    let body = LEAD.replace(
        "\"insured\": true}",
        r#""insured": true, "note": "line1\nline2 \"quoted\" caf\u00e9 \\",
           "income": 123456789012345678901, "score": 0.125,
           "vehicles": [ {"year": 2019, "make": "Honda"} ]}"#,
    );
    let body = body.into_bytes();
    let req = parse_request(&body).unwrap();
    let mut out = Vec::new();
    write_post(&mut out, "01J", None, 100, &campaign(), &req);
    let sent: Value = serde_json::from_slice(&body).unwrap();
    let posted: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(posted["lead"], sent["lead"]);
    assert_eq!(posted["consent"], sent["consent"]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"income\":123456789012345678901"), "{text}");
}

#[test]
fn content_refusals_are_422_with_code_and_field() {
    let r = refusal(&with(|v| {
        v["lead"].as_object_mut().unwrap().remove("phone");
    }));
    assert_eq!(
        (r.status, r.code, r.field.as_deref()),
        (422, "missing_field", Some("lead.phone"))
    );

    let r = refusal(&with(|v| v["lead"]["email"] = Value::from("  ")));
    assert_eq!(
        (r.code, r.field.as_deref()),
        ("missing_field", Some("lead.email"))
    );

    let r = refusal(&with(|v| v["lead"]["zip"] = Value::from("7700")));
    assert_eq!(
        (r.code, r.field.as_deref()),
        ("invalid_field", Some("lead.zip"))
    );

    for state in ["Texas", "XX", "T1", "ZZ"] {
        let r = refusal(&with(|v| v["lead"]["state"] = Value::from(state)));
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("lead.state")),
            "{state}"
        );
    }
    for state in ["TX", "tx", "DC", "PR", "WY", "AL", "FM", "MH", "pw"] {
        let mut v: Value = serde_json::from_str(LEAD).unwrap();
        v["lead"]["state"] = Value::from(state);
        let req = parse_request(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(validate_ping(&req, &campaign()).is_ok(), "{state}");
    }

    let r = refusal(&with(|v| v["lead"]["phone"] = Value::from("555-0147")));
    assert_eq!(
        (r.code, r.field.as_deref()),
        ("invalid_field", Some("lead.phone"))
    );

    for bad in [
        "ana.example.com",
        "ana@@example.com",
        "ana@ex@ample.com",
        "ana@example..com",
    ] {
        let r = refusal(&with(|v| v["lead"]["email"] = Value::from(bad)));
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("lead.email")),
            "{bad}"
        );
    }

    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_domain = format!("ana@{}.com", "d".repeat(250));
    for bad in [long_local, long_domain] {
        let r = refusal(&with(|v| v["lead"]["email"] = Value::from(bad.as_str())));
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("lead.email")),
            "{bad}"
        );
    }
    let ok = format!("{}@example.com", "a".repeat(64));
    let req = parse_request(&with(|v| v["lead"]["email"] = Value::from(ok.as_str()))).unwrap();
    assert!(validate(&req, &campaign()).is_ok());

    // Names and address fields are text: not numbers, not objects, no control characters.
    for (field, bad) in [
        ("first_name", serde_json::json!(5)),
        ("first_name", serde_json::json!({"a": 1})),
        ("first_name", serde_json::json!("An\u{0}a")),
        ("last_name", serde_json::json!("Di\naz")),
        ("city", serde_json::json!("Hou\u{2028}ston")),
        ("street", serde_json::json!("x".repeat(257))),
    ] {
        let r = refusal(&with(|v| v["lead"][field] = bad.clone()));
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some(format!("lead.{field}").as_str())),
            "{field}: {bad}"
        );
    }
    // An address or a name sent as an object is the seller's shape, not a bad value.
    let req = parse_request(&with(|v| {
        v["lead"]["address"] = serde_json::json!({"line1": "12 Main St", "unit": 4});
        v["lead"]["name"] = serde_json::json!({"first": "Ana", "last": "Diaz"});
    }))
    .unwrap();
    assert!(validate(&req, &campaign()).is_ok());
    for good in ["José", "O'Brien", "Anne-Marie", "Nguyễn Văn"] {
        let req = parse_request(&with(|v| v["lead"]["first_name"] = Value::from(good))).unwrap();
        assert!(validate(&req, &campaign()).is_ok(), "{good}");
    }

    let r = refusal(&with(|v| {
        v.as_object_mut().unwrap().remove("consent");
    }));
    assert_eq!(
        (r.code, r.field.as_deref()),
        ("consent_missing", Some("consent"))
    );

    let r = refusal(&with(|v| v["consent"]["vertical"] = Value::from("solar")));
    assert_eq!(
        (r.code, r.field.as_deref()),
        ("consent_mismatch", Some("consent.vertical"))
    );
}

#[test]
fn phones_normalise() {
    assert_eq!(
        normalized_phone(Field::Str("(713) 555-0147")).as_deref(),
        Some("7135550147")
    );
    assert_eq!(
        normalized_phone(Field::Str("+1 713 555 0147")).as_deref(),
        Some("7135550147")
    );
    assert_eq!(
        normalized_phone(Field::Num("7135550147")).as_deref(),
        Some("7135550147")
    );
    assert_eq!(normalized_phone(Field::Str("713555014x")), None);
}

#[test]
fn a_phone_no_one_can_have_is_refused() {
    let c = &campaign();
    for phone in [
        "0000000000",
        "1234567890",
        "7130550147",
        "7131550147",
        "+1 013 555 0147",
    ] {
        let v = LEAD.replace("7135550147", phone);
        let req = parse_request(v.as_bytes()).unwrap();
        let r = validate(&req, c).unwrap_err();
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("lead.phone")),
            "{phone}"
        );
    }
    for phone in ["2125550100", "+1 (907) 200-0000", "9999999999"] {
        let v = LEAD.replace("7135550147", phone);
        let req = parse_request(v.as_bytes()).unwrap();
        assert_eq!(validate(&req, c), Ok(()), "{phone}");
    }
}

#[test]
fn the_ping_carries_only_ping_fields() {
    let req = parse_request(LEAD.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_ping(&mut out, "01JDQ6X8W2", &campaign(), &req, 780);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["ping_id"], "01JDQ6X8W2");
    assert_eq!(v["campaign"], "auto-insurance");
    assert_eq!(v["vertical"], "auto_insurance");
    assert_eq!(v["test"], false);
    assert_eq!(v["timeout_ms"], 780);
    let lead = v["lead"].as_object().unwrap();
    let mut keys: Vec<_> = lead.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["age", "insured", "lead_type", "state", "zip"]);
    assert_eq!(lead["age"], 34);
    assert!(v.get("consent").is_none());
    let text = String::from_utf8(out).unwrap();
    for personal in [
        "Ana",
        "Diaz",
        "ana@example.com",
        "7135550147",
        "Main St",
        "trustedform",
    ] {
        assert!(!text.contains(personal), "ping leaks {}", personal);
    }
}

#[test]
fn nested_personal_members_are_left_out_of_the_ping_only() {
    let body = LEAD.replace(
        r#""lead_type": "auto""#,
        r#""lead_type": [{"Email": "a@b.c", "k": 1}, "x"]"#,
    );
    let req = parse_request(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_ping(&mut out, "01J", &campaign(), &req, 780);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["lead_type"], serde_json::json!([{"k": 1}, "x"]));
    // The ping's field order stays the campaign's.
    let keys: Vec<_> = v["lead"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["state", "zip", "lead_type", "age", "insured"]);
    assert_eq!(ping_safe(&req.lead, ["state", "zip"]), None);
    out.clear();
    write_post(&mut out, "01J", None, 100, &campaign(), &req);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["lead_type"][0]["Email"], "a@b.c");
}

/// Personal data under names no list knows, or as the value of an innocent field, is not
/// pinged either; the post still carries all of it.
#[test]
fn personal_values_and_look_alike_names_are_left_out_of_the_ping() {
    let nested = r#"{"drivers": [{"contact": {"wireless": "7135550004", "kind": "cell"},
        "xxx_certificate_url": "https://cert.trustedform.com/y", "years": 5}],
        "consent_cert": "abc", "x_forwarded_for": "10.1.2.3", "msisdn": "15551234567",
        "sms": "ok", "whatsapp": "w", "emaıl": "dotless@example.com", "ｅｍａｉｌ": "wide@example.com",
        "notes": ["call (713) 555-0147 after 5", "(713) 555-0147", "fe80::1", "a@b.co", 7135550147],
        "make": "Honda"}"#;
    let body = LEAD
        .replace(
            r#""lead_type": "auto""#,
            &format!(r#""lead_type": {nested}"#),
        )
        .replace(r#""age": 34"#, r#""age": "ana.secret2@example.com""#)
        .replace(r#""state": "TX""#, r#""state": "(713) 555-0147""#);
    let req = parse_request(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_ping(&mut out, "01J", &campaign(), &req, 780);
    let text = String::from_utf8(out.clone()).unwrap();
    for leak in [
        "7135550004",
        "trustedform",
        "abc",
        "10.1.2.3",
        "15551234567",
        "dotless@",
        "wide@",
        "secret2",
        "555-0147\"",
        "fe80",
        "a@b.co",
        "whatsapp",
        "\"sms\"",
    ] {
        assert!(!text.contains(leak), "ping leaks {leak}: {text}");
    }
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["age"], Value::Null);
    assert_eq!(v["lead"]["state"], Value::Null);
    let lt = &v["lead"]["lead_type"];
    assert_eq!(lt["make"], "Honda");
    assert_eq!(lt["drivers"][0]["years"], 5);
    assert_eq!(lt["drivers"][0]["contact"]["kind"], "cell");
    // Free text that holds a phone number is left out, and so is a number that could be one.
    assert_eq!(lt["notes"], serde_json::json!([]));
    // Numbers, zips, dates and times are not personal values.
    for fine in [
        "77002",
        "77002-1234",
        "2024-01-01",
        "2026-12-03 17:48:52",
        "2026-12-03T17:48:52.123456Z",
        "10:30:00",
        "34",
        "Honda",
        "a@b",
        "call after 5 on 12/03",
        "policy 1234-5678",
        "1,250,000.00",
        "ref 12345678",
        "100% sure",
        "50%40 split.",
        "2026\u{2013}2027 season",
        "rooms 123 45 678",
    ] {
        assert!(!crate::config::is_personal_value(fine), "{fine}");
    }
    for personal in [
        "713-555-0199 x12",
        "call Ana at 713-555-0199 after 5",
        "home: (713) 555-0199, cell 713.555.0100",
        "1-713-555-0199",
        "+44 7946 095812",
        "+447946095812",
        "ssn 123-45-6789",
        "203.0.113.7:443",
        "[2001:db8::7]:443",
        "5A1B2C3D-1111-2222-3333-444455556666",
        "5a1b2c3d-1111-2222-3333-444455556666",
        "ana.leak\u{FF20}example.com",
        "\u{FF17}\u{FF11}\u{FF13}\u{FF15}\u{FF15}\u{FF15}\u{FF10}\u{FF11}\u{FF19}\u{FF19}",
        // Written with typographic dashes, percent-encoded, or an SSN spaced out.
        "713\u{2010}555\u{2010}0147",
        "call 713\u{2013}555\u{2013}0147",
        "https://site.example/?email=ana%40example.com",
        "ana%40EXAMPLE.com",
        "100% off: write to ana%40example.com",
        "ssn: 123 45 6789",
        // A certificate or token URL, and any text naming their makers, taken for one.
        "https://cert.trustedform.com/2d5e1f0a",
        "LeadiD-verified",
        "my Jornaya lead",
    ] {
        assert!(crate::config::is_personal_value(personal), "{personal}");
    }
    for (number, personal) in [
        ("7135550199", true),
        ("17135550199", true),
        ("7135550199.0", true),
        ("-7135550199", true),
        ("77002", false),
        ("123456789", false),
        ("1234567890123456", false),
        ("7135550199.5", false),
        // A whole number of 10 to 15 digits however written.
        ("1.5e10", true),
        ("7.135550147E9", true),
        ("1.5e3", false),
        ("7.1355501475e9", false),
        ("1e15", false),
    ] {
        assert_eq!(
            crate::config::is_personal_number(number),
            personal,
            "{number}"
        );
    }
    out.clear();
    write_post(&mut out, "01J", None, 100, &campaign(), &req);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["age"], "ana.secret2@example.com");
    assert_eq!(v["lead"]["lead_type"]["msisdn"], "15551234567");
}

/// Numbers and strings nested in a lead's objects and arrays reach buyers as the seller wrote
/// them, in the post and in the ping: not as an `f64` would print them.
#[test]
fn nested_numbers_keep_their_digits_in_the_post_and_the_ping() {
    let nested = r#"{"amount": 12345678901234567890123, "rate": 3.14159265358979323846,
        "e": 1e3, "neg0": -0, "cents": 250000.10, "s": "caf\u00e9 \/",
        "arr": [18446744073709551616, 0.30000000000000000001], "mobile": "7135550147"}"#;
    let body = LEAD.replace(
        r#""lead_type": "auto""#,
        &format!(r#""lead_type": {nested}"#),
    );
    let req = parse_request(body.as_bytes()).unwrap();
    let kept = r#""amount":12345678901234567890123,"rate":3.14159265358979323846,"e":1e3,"neg0":-0,"cents":250000.10,"s":"caf\u00e9 \/","arr":[18446744073709551616,0.30000000000000000001]"#;
    let mut out = Vec::new();
    write_post(&mut out, "01J", None, 100, &campaign(), &req);
    let post = String::from_utf8(out.clone()).unwrap();
    assert!(
        post.contains(&format!(r#""lead_type":{{{kept},"mobile":"7135550147"}}"#)),
        "{post}"
    );
    out.clear();
    // The ping leaves the phone out and keeps the rest as written.
    write_ping(&mut out, "01J", &campaign(), &req, 780);
    let ping = String::from_utf8(out).unwrap();
    assert!(
        ping.contains(&format!(r#""lead_type":{{{kept}}}"#)),
        "{ping}"
    );
}

/// A member whose *name* is an email, a phone number or an SSN is not pinged either.
#[test]
fn personal_member_names_are_left_out_of_the_ping() {
    let body = LEAD.replace(
        r#""lead_type": "auto""#,
        r#""lead_type": {"ana@example.com": "primary", "7135550147": "mobile", "123-45-6789": true, "kind": "auto"}"#,
    );
    let req = parse_request(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_ping(&mut out, "01J", &campaign(), &req, 780);
    let ping = String::from_utf8(out.clone()).unwrap();
    assert!(ping.contains(r#""lead_type":{"kind":"auto"}"#), "{ping}");
    out.clear();
    write_post(&mut out, "01J", None, 100, &campaign(), &req);
    let post = String::from_utf8(out).unwrap();
    assert!(post.contains(r#""ana@example.com":"primary""#), "{post}");
}

/// A phone sent as a JSON number, as a ping field's own value or inside one, is not pinged.
#[test]
fn a_phone_as_a_number_is_left_out_of_the_ping() {
    let body = LEAD
        .replace(r#""age": 34"#, r#""age": 7135550199"#)
        .replace(
            r#""lead_type": "auto""#,
            r#""lead_type": {"callback": 17135550199, "tags": ["ok", 7135550199.0, 3]}"#,
        );
    let req = parse_request(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_ping(&mut out, "01J", &campaign(), &req, 780);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["age"], Value::Null);
    assert_eq!(
        v["lead"]["lead_type"],
        serde_json::json!({"tags": ["ok", 3]})
    );
    out.clear();
    write_post(&mut out, "01J", None, 100, &campaign(), &req);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead"]["age"], 7135550199u64);
    assert_eq!(v["lead"]["lead_type"]["callback"], 17135550199u64);
}

#[test]
fn the_post_carries_the_full_lead_and_consent() {
    let req = parse_request(LEAD.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_post(&mut out, "01J", Some("b-77"), 4250, &campaign(), &req);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["bid_id"], "b-77");
    assert_eq!(v["price"], 42.5);
    assert_eq!(v["lead"]["first_name"], "Ana");
    assert_eq!(v["lead"]["phone"], "7135550147");
    assert_eq!(
        v["consent"]["trustedform_cert_url"],
        "https://cert.trustedform.com/2f1e0c"
    );
}

#[test]
fn bid_answers() {
    assert_eq!(
        parse_bid(200, br#"{"bid": 42.5, "bid_id": "b-77"}"#),
        PingOutcome::Bid {
            cents: 4250,
            bid_id: Some("b-77".into())
        }
    );
    assert_eq!(
        parse_bid(200, br#"{"bid": 42.567}"#),
        PingOutcome::Bid {
            cents: 4256,
            bid_id: None
        }
    );
    assert_eq!(
        parse_bid(200, br#"{"bid": 12, "bid_id": 99}"#),
        PingOutcome::Bid {
            cents: 1200,
            bid_id: Some("99".into())
        }
    );
    // Money is a JSON number; the same amount in a string is not a bid.
    assert_eq!(
        parse_bid(200, br#"{"bid": "7.5"}"#),
        PingOutcome::Invalid("bid is not a number".into())
    );
    assert_eq!(
        parse_bid(200, br#"{"bid": 99999999}"#),
        PingOutcome::Invalid("bid out of range".into())
    );
    assert_eq!(
        parse_bid(200, br#"{"bid": true}"#),
        PingOutcome::Invalid("bid is not a number".into())
    );
    assert_eq!(parse_bid(200, br#"{"bid": 0}"#), PingOutcome::NoBid);
    assert_eq!(parse_bid(200, br#"{"bid": null}"#), PingOutcome::NoBid);
    assert_eq!(parse_bid(204, b""), PingOutcome::NoBid);
    assert!(matches!(
        parse_bid(500, br#"{"bid": 10}"#),
        PingOutcome::Error(_)
    ));
    assert!(matches!(
        parse_bid(200, b"garbage"),
        PingOutcome::Invalid(_)
    ));
    assert!(matches!(parse_bid(200, b""), PingOutcome::Invalid(_)));
    assert!(matches!(
        parse_bid(200, br#"{"bid": -3}"#),
        PingOutcome::Invalid(_)
    ));
    assert!(matches!(
        parse_bid(200, br#"{"bid": "lots"}"#),
        PingOutcome::Invalid(_)
    ));
    assert!(matches!(
        parse_bid(200, br#"{"price": 3}"#),
        PingOutcome::Invalid(_)
    ));
    assert!(matches!(
        parse_bid(200, br#"{"bid": 1e300}"#),
        PingOutcome::Invalid(_)
    ));
    // Only an object is an answer: serde would read an array by position as `bid, bid_id`.
    for body in [
        &br#"[44.5, "b-1"]"#[..],
        br#" [44.5]"#,
        br#"[1, 2]"#,
        b"42.5",
        br#""42""#,
    ] {
        assert_eq!(
            parse_bid(200, body),
            PingOutcome::Invalid("answer is not a JSON object".into()),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        parse_bid(200, b"[44.5"),
        PingOutcome::Invalid("unparsable answer".into())
    );
}

#[test]
fn post_answers() {
    assert_eq!(
        parse_post_answer(200, br#"{"status":"accepted","buyer_lead_id":"x1"}"#),
        PostOutcome::Accepted {
            buyer_lead_id: Some("x1".into())
        }
    );
    assert_eq!(
        parse_post_answer(200, br#"{"status":"rejected","reason":"duplicate"}"#),
        PostOutcome::Rejected {
            reason: "duplicate".into()
        }
    );
    assert!(!parse_post_answer(500, br#"{"status":"accepted"}"#).accepted());
    assert!(!parse_post_answer(200, b"ok").accepted());
    assert!(!parse_post_answer(200, br#"{"status":"maybe"}"#).accepted());
    // An array is not an answer, though serde would read `["accepted"]` as its `status`.
    for body in [
        &br#"["accepted"]"#[..],
        br#" ["accepted", null, "x"]"#,
        br#""accepted""#,
    ] {
        assert_eq!(
            parse_post_answer(200, body),
            PostOutcome::Rejected {
                reason: "answer is not a JSON object".into()
            },
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_request_body_must_be_an_object() {
    let lead = br#"["auto", "fb", false, {"state": "TX"}, null]"#;
    let Err(e) = parse_request(lead) else {
        panic!("an array is refused")
    };
    assert_eq!((e.status, e.code), (400, "bad_request"), "{}", e.message);
    assert_eq!(e.message, "body must be a JSON object");
    let post = br#"["01J", {"state": "TX"}, null, null]"#;
    let Err(e) = parse_post_request(post) else {
        panic!("an array is refused")
    };
    assert_eq!((e.status, e.code), (400, "bad_request"), "{}", e.message);
    assert_eq!(e.message, "body must be a JSON object");
    // An object with a key given twice is an object: the refusal names the key.
    for post in [
        &br#"{"ping_id": "a", "ping_id": "b", "lead": {}}"#[..],
        br#"{"ping_id": "a", "lead": {"phone": "1", "phone": "2"}}"#,
    ] {
        let Err(e) = parse_post_request(post) else {
            panic!("a key given twice is refused")
        };
        assert_eq!((e.status, e.code), (400, "bad_request"), "{}", e.message);
        assert!(e.message.contains("is given twice"), "{}", e.message);
    }
}

#[test]
fn error_bodies_have_the_contract_shape() {
    let mut out = Vec::new();
    write_error(
        &mut out,
        Some("01J"),
        "missing_field",
        "phone is required",
        Some("lead.phone"),
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["lead_id"], "01J");
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["error"]["code"], "missing_field");
    assert_eq!(v["error"]["field"], "lead.phone");
    let mut out = Vec::new();
    write_error(&mut out, None, "unauthorized", "missing api key", None);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert!(v.get("lead_id").is_none());
    assert!(v["error"].get("field").is_none());
}

/// What serde_json reads as a bid answer's `bid` and `bid_id`, or `None` when it refuses it.
fn serde_bid_fields(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let a: BidAnswer = serde_json::from_slice(body).ok()?;
    Some((
        a.bid.0.map(|r| r.get().to_string()),
        a.bid_id.map(|r| r.get().to_string()),
    ))
}

#[test]
fn post_answers_read_by_the_scan_read_as_serde_json_reads_them() {
    for (body, scanned) in [
        (&br#"{"status":"accepted","buyer_lead_id":"x1"}"#[..], true),
        (
            br#"{"status":"Rejected","reason":"duplicate","x":[1]}"#,
            false,
        ),
        (
            br#" {"status" : "rejected" , "reason": null, "n": 1.5e3} "#,
            true,
        ),
        (br#"{"status":"accepted","buyer_lead_id":12.50}"#, true),
        (br#"{"status":"accepted","buyer_lead_id":"a\"b"}"#, false),
        (br#"{"status":"accepted","status":"rejected"}"#, false),
        (br#"{"status":"accepted","meta":{"a":1}}"#, false),
        (br#"{"status":true}"#, true),
        (br#"{}"#, true),
        (b"ok", false),
    ] {
        assert_eq!(
            scan::post_fields(body).is_some(),
            scanned,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            parse_post_answer(200, body),
            post_answer_serde(body),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let long = format!(
        r#"{{"status":"accepted","buyer_lead_id":"{}"}}"#,
        "x".repeat(5000)
    );
    assert_eq!(
        parse_post_answer(200, long.as_bytes()),
        post_answer_serde(long.as_bytes())
    );
    // Random answers built from JSON pieces, well and badly formed.
    let pieces: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\"status\"",
        "\"reason\"",
        "\"buyer_lead_id\"",
        "\"x\"",
        "\"accepted\"",
        "\"ACCEPTED\"",
        "\"rejected\"",
        "\"dup\"",
        "\"a\\\"b\"",
        "\"é\"",
        "0",
        "12.50",
        "1e3",
        "-",
        "true",
        "false",
        "null",
        "\"\"",
    ];
    let mut rng = Rng(0x6A09_E667_F3BC_C908);
    let mut scanned = 0;
    for _ in 0..100_000 {
        let mut body = String::new();
        if rng.below(4) != 0 {
            // Mostly object-shaped: members of known keys and values.
            body.push('{');
            for i in 0..rng.below(4) {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(pieces[7 + rng.below(4)]);
                body.push(':');
                body.push_str(pieces[11 + rng.below(pieces.len() - 11)]);
            }
            body.push('}');
        } else {
            for _ in 0..rng.below(10) {
                body.push_str(pieces[rng.below(pieces.len())]);
            }
        }
        scanned += usize::from(scan::post_fields(body.as_bytes()).is_some());
        assert_eq!(
            parse_post_answer(200, body.as_bytes()),
            post_answer_serde(body.as_bytes()),
            "{body}"
        );
    }
    assert!(
        scanned > 20_000,
        "the random answers reach the scan ({scanned})"
    );
}

#[test]
fn the_flat_bid_scan_agrees_with_serde_wherever_it_answers() {
    let owned = |f: scan::BidFields<'_>| (f.0.map(str::to_string), f.1.map(str::to_string));
    // Answers the scan must read itself, and what it must leave to serde_json.
    for (body, scanned) in [
        (&br#"{"bid":42.5,"bid_id":"b-1"}"#[..], true),
        (
            br#" { "bid" : -0.5e+3 , "x": true, "y": null, "z": false, "bid_id": 7 } "#,
            true,
        ),
        (br#"{"bid_id":"a","bid":"7.5"}"#, true),
        (br#"{}"#, true),
        (br#"{"bid":1,"bid_id":null}"#, true),
        (b"{\"bid\":\t1\r\n}", true),
        (br#"{"bid":1,"bid":2}"#, false),
        (br#"{"bid":01}"#, false),
        (br#"{"bid":1.}"#, false),
        (br#"{"bid":.5}"#, false),
        (br#"{"bid":1e}"#, false),
        (br#"{"bid":"a\"b"}"#, false),
        (br#"{"bid":[1]}"#, false),
        (br#"{"bid":{"v":1}}"#, false),
        ("{\"bid\":1,\"note\":\"café\"}".as_bytes(), true),
        (br#"{"bid":1,"tags":["a", "b"]}"#, true),
        (b"{\"bid\":\"1\x01\"}", false),
        (b"{\"bid\":1,\"x\":\"\xff\"}", false),
        (br#"{"bid":1,}"#, false),
        (br#"{"bid":1} x"#, false),
        (br#"{"bid":nul}"#, false),
        (br#"[1]"#, false),
        (b"", false),
    ] {
        let fast = scan::bid_fields(body);
        assert_eq!(fast.is_some(), scanned, "{}", String::from_utf8_lossy(body));
        if let Some(f) = fast {
            assert_eq!(
                Some(owned(f)),
                serde_bid_fields(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
    // Random answers built from JSON pieces, well and badly formed: wherever the scan answers,
    // serde_json reads the same two values.
    let pieces: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b" ",
        b"\n",
        b"\"bid\"",
        b"\"bid_id\"",
        b"\"x\"",
        b"\"\"",
        b"\"b-1\"",
        b"\"a\\\"b\"",
        b"\"\xc3\xa9\"",
        b"0",
        b"-0",
        b"42.5",
        b"01",
        b"1.",
        b"1e5",
        b"-2E-3",
        b"1e",
        b"-",
        b"true",
        b"false",
        b"null",
        b"nul",
        b"\"7.5\"",
        b"\t",
        b"\"bid-0123456789abcdef\"",
        b"\"abcdefghij\\\"k\"",
        b"\"abcdefghij\x01k\"",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next = |n: usize| rng.below(n);
    let mut scanned = 0;
    for round in 0..200_000 {
        let mut body = Vec::new();
        if round % 2 == 0 {
            // Shaped like an answer: `{ key : value (, key : value)* }`, with noise.
            body.extend_from_slice(b"{");
            for i in 0..next(4) {
                if i > 0 {
                    body.extend_from_slice(b",");
                }
                for _ in 0..3 {
                    body.extend_from_slice(pieces[next(pieces.len())]);
                }
            }
            body.extend_from_slice(b"}");
        } else {
            for _ in 0..next(12) {
                body.extend_from_slice(pieces[next(pieces.len())]);
            }
        }
        if let Some(f) = scan::bid_fields(&body) {
            scanned += 1;
            assert_eq!(
                Some(owned(f)),
                serde_bid_fields(&body),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    assert!(
        scanned > 1_000,
        "the random answers reach the scan ({scanned})"
    );
}

fn lead_parts(r: &LeadRequest) -> String {
    format!(
        "{:?} {:?} {} {:?} {:?}",
        r.campaign,
        r.source,
        r.test,
        r.lead.iter().collect::<Vec<_>>(),
        r.consent.as_ref().map(|c| c.iter().collect::<Vec<_>>())
    )
}

#[test]
fn the_lead_scan_agrees_with_serde_wherever_it_answers() {
    let agree = |body: &[u8]| -> bool {
        let Some(fast) = scan::lead_request(body) else {
            return false;
        };
        let slow = parse_request_serde(body)
            .unwrap_or_else(|e| panic!("{:?} for {}", e, String::from_utf8_lossy(body)));
        assert_eq!(
            lead_parts(&fast),
            lead_parts(&slow),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(fast.lead, slow.lead);
        assert_eq!(fast.consent, slow.consent);
        // Both readings keep the same compact JSON, which is what buyers are sent.
        let json = |f: &Fields| {
            let mut out = Vec::new();
            f.write_json(&mut out);
            out
        };
        assert_eq!(json(&fast.lead), json(&slow.lead));
        let back: serde_json::Value = serde_json::from_slice(&json(&fast.lead)).unwrap();
        assert_eq!(back, serde_json::Value::Object(fast.lead.to_map()));
        if let (Some(f), Some(s)) = (&fast.consent, &slow.consent) {
            assert_eq!(json(f), json(s));
        }
        true
    };
    // The contract's example is read by the scan.
    assert!(agree(LEAD.as_bytes()));
    for (body, scanned) in [
        (&br#"{"campaign":"c","lead":{}}"#[..], true),
        (
            br#"{"campaign":"c","source":null,"test":null,"lead":{"a":1},"consent":null,"x":2}"#,
            true,
        ),
        (br#"{"lead":{"a":1},"campaign":"c","test":true}"#, true),
        // A key given twice is serde_json's reading's to refuse.
        (br#"{"lead":{"a":1,"a":"again"},"campaign":"c"}"#, false),
        (
            br#"{"campaign":"c","lead":{"tags":[],"t2":[ "a" , "b" ]}}"#,
            true,
        ),
        (br#"{"campaign":"","lead":{}}"#, false),
        (br#"{"campaign":"c"}"#, false),
        (br#"{"campaign":"c","lead":null}"#, false),
        (br#"{"campaign":"c","campaign":"d","lead":{}}"#, false),
        (br#"{"campaign":"c","lead":{"n":{"x":1}}}"#, false),
        (br#"{"campaign":"c","lead":{"n":[1]}}"#, false),
        (br#"{"campaign":"c","lead":{"s":"a\nb"}}"#, false),
        (br#"{"campaign":"c","lead":{},"extra":[1]}"#, false),
        (br#"{"campaign":"c","lead":{},"test":"yes"}"#, false),
        (br#"{"campaign":1,"lead":{}}"#, false),
        (br#"{"campaign":"c","lead":{}} x"#, false),
    ] {
        assert_eq!(agree(body), scanned, "{}", String::from_utf8_lossy(body));
    }
    // Over the field limit: serde_json's reading refuses it.
    let mut many = String::from(r#"{"campaign":"c","lead":{"#);
    for i in 0..=MAX_LEAD_FIELDS {
        many.push_str(&format!(r#""f{i}":{i},"#));
    }
    many.push_str(r#""last":1}}"#);
    assert!(scan::lead_request(many.as_bytes()).is_none());

    // Random requests from JSON pieces: wherever the scan answers, serde_json reads the same.
    let keys: &[&[u8]] = &[
        b"\"campaign\"",
        b"\"source\"",
        b"\"test\"",
        b"\"lead\"",
        b"\"consent\"",
        b"\"x\"",
    ];
    let values: &[&[u8]] = &[
        b"\"c\"",
        b"\"\"",
        b"\"caf\xc3\xa9\"",
        b"\"a\\\"b\"",
        b"null",
        b"true",
        b"false",
        b"0",
        b"-1.5e3",
        b"01",
        b"[]",
        b"[\"a\",\"b\"]",
        b"[1]",
        b"{}",
        b"{\"k\":\"v\"}",
        b"{\"k\":1,\"k\":[\"z\"]}",
        b"{\"k\":{\"n\":1}}",
        b"{\"a\":true,\"b\":null,\"c\":2.5}",
        b"{\"k\":\"v\",}",
        b" ",
        // Long strings, read eight bytes at a time, with what must stop the scan past byte 8.
        b"{\"url\":\"https://cert.trustedform.com/2f1e0c-0123456789\"}",
        b"{\"k\":\"abcdefghijkl\\\"mn\"}",
        b"{\"k\":\"abcdefghijkl\x01mn\"}",
        b"{\"k\":\"abcdefghijkl\x1fmn\"}",
        b"{\"k\":\"abcdefgh\xc3\xa9ijklmnop\", \"x\":[\"0123456789abcdef\"]}",
        b"{\"abcdefghijklmnopq\":\"v\", \"k\":\"0123456789abcdef\x7f\"}",
        b"{\"k\":\"abcdefghijklmnop\\u0041\"}",
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut next = |n: usize| rng.below(n);
    let mut scanned = 0;
    for _ in 0..100_000 {
        // Mostly a campaign and a lead (an object most of the time) among random members.
        let mut members: Vec<(&[u8], &[u8])> = Vec::new();
        if next(8) != 0 {
            members.push((
                keys[0],
                if next(4) == 0 {
                    values[next(values.len())]
                } else {
                    b"\"c\""
                },
            ));
        }
        if next(8) != 0 {
            members.push((keys[3], values[13 + next(values.len() - 13)]));
        }
        for _ in 0..next(4) {
            members.push((keys[next(keys.len())], values[next(values.len())]));
        }
        for i in (1..members.len()).rev() {
            members.swap(i, next(i + 1));
        }
        let mut body = b"{".to_vec();
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(if next(30) == 0 { b"" } else { b", " });
            }
            body.extend_from_slice(k);
            body.extend_from_slice(if next(30) == 0 { b" " } else { b": " });
            body.extend_from_slice(v);
        }
        body.extend_from_slice(if next(30) == 0 { b"}}" } else { b"}\n" });
        scanned += usize::from(agree(&body));
    }
    assert!(
        scanned > 5_000,
        "the random requests reach the scan ({scanned})"
    );
}

#[test]
fn the_eight_byte_string_scan_finds_quotes_backslashes_and_control_bytes() {
    let mut rng = Rng(0x853C_49E6_748F_EA9B);
    for round in 0..200_000u32 {
        let state = rng.next();
        let mut bytes = state.to_le_bytes();
        // Mostly printable text, sometimes one byte of interest placed anywhere.
        for b in bytes.iter_mut() {
            *b = 0x20 + *b % 0x60;
        }
        if round % 3 == 0 {
            let special =
                [b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff][(state >> 8) as usize % 8];
            bytes[(state >> 16) as usize % 8] = special;
        }
        if round % 5 == 0 {
            // A second one, anywhere: the lowest flagged byte must still be the first.
            let special =
                [b'"', b'\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0xff][(state >> 24) as usize % 8];
            bytes[(state >> 32) as usize % 8] = special;
        }
        let first = bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        let special = scan::special_bytes(u64::from_le_bytes(bytes));
        assert_eq!(special != 0, first.is_some(), "{bytes:?}");
        if let Some(first) = first {
            assert_eq!(special.trailing_zeros() / 8, first as u32, "{bytes:?}");
        }
    }
}

#[test]
fn strings_are_written_as_serde_json_writes_them() {
    let pieces = [
        "a", "abcdefgh", "é", "\"", "\\", "\n", "\u{1}", "\u{1f}", " ", "\u{7f}", "/", "€", "<>",
    ];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..50_000 {
        let mut s = String::new();
        for _ in 0..rng.below(24) {
            // Mostly plain text, so the eight-byte path runs, now and then a byte to escape.
            let i = rng.below(pieces.len() * 4);
            s.push_str(pieces.get(i).copied().unwrap_or("xyz12345"));
        }
        let mut out = Vec::new();
        write_json_str(&mut out, &s);
        assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
    }
}

#[test]
fn the_scans_take_every_cut_of_a_body_without_panicking() {
    // A body cut anywhere (a short read, a lying Content-Length) is never read as a whole one.
    let mut long = LEAD.replace("\"Ana\"", "\"Ana María de los Ángeles, 12345678\"");
    long.push_str("  ");
    for body in [LEAD, long.as_str()] {
        let bytes = body.as_bytes();
        assert!(
            scan::lead_request(bytes).is_some(),
            "the whole body is read"
        );
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            if part.iter().all(u8::is_ascii_whitespace)
                || !bytes[cut..].iter().all(u8::is_ascii_whitespace)
            {
                assert!(scan::lead_request(part).is_none(), "cut at {cut}");
                assert!(parse_request(part).is_err(), "cut at {cut}");
            }
        }
    }
    let answer = br#"{"bid": 42.5, "bid_id": "b-0123456789abcdef"}"#;
    for cut in 0..answer.len() {
        assert!(scan::bid_fields(&answer[..cut]).is_none(), "cut at {cut}");
        assert!(
            matches!(parse_bid(200, &answer[..cut]), PingOutcome::Invalid(_)),
            "cut at {cut}"
        );
    }
}

/// Whatever a seller posts, parsing and validating it gives an answer (a lead or a refusal
/// with a status and a code) and never panics.
#[test]
fn mutated_leads_are_parsed_or_refused_without_panic() {
    const SPECIAL: &[u8] = b"{}[]:,\"\\/ \t\r\n0123456789.eE+-tfnul\x00\x7f\xc3\xa9\xed\xa0\x80";
    let c = campaign();
    let mut rng = Rng(0x9B05_688C_2B3E_6C1F);
    for _ in 0..30_000 {
        let body = rng.mutate(LEAD.as_bytes(), SPECIAL);
        match parse_request(&body) {
            Ok(req) => {
                if let Err(r) = validate(&req, &c) {
                    assert_eq!(r.status, 422, "{r:?}");
                }
                let _ = validate_ping(&req, &c);
            }
            Err(r) => assert!(
                (400..500).contains(&r.status) && !r.code.is_empty(),
                "{r:?} for {:?}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

#[test]
fn consent_times_and_certificate_urls_are_checked() {
    for (at, why) in [
        ("yesterday", "not a time"),
        ("2026-11-25 17:59:01", "not RFC 3339"),
        ("2999-01-01T00:00:00Z", "in the future"),
        ("", "blank is left out, not refused"),
    ] {
        let body = with(|v| v["consent"]["consented_at"] = Value::from(at));
        let req = parse_request(&body).unwrap();
        let got = validate(&req, &campaign());
        if at.is_empty() {
            assert!(got.is_ok(), "{why}");
            continue;
        }
        let r = got.unwrap_err();
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("consent.consented_at")),
            "{at}: {why}"
        );
    }
    // A minute ahead is a seller's clock running fast, not consent from the future.
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let req = parse_request(&with(|v| v["consent"]["consented_at"] = Value::from(soon))).unwrap();
    assert!(validate(&req, &campaign()).is_ok());
    let offset = "2026-11-25T11:59:01-06:00";
    let req = parse_request(&with(|v| {
        v["consent"]["consented_at"] = Value::from(offset)
    }))
    .unwrap();
    assert!(validate(&req, &campaign()).is_ok());

    let long = format!(
        "https://cert.trustedform.com/{}",
        "a".repeat(MAX_CERT_URL_BYTES)
    );
    for url in [
        "http://evil.example/x",
        "cert.trustedform.com/2f1e0c",
        "https://",
        "https:///x",
        "https:// x",
        "https://cert.trustedform.com/a\nb",
        "https://x\u{0}y",
        "https://\u{202e}",
        "https://cert.trustedform.com:/x",
        "https://cert.trustedform.com/\u{e9}",
        long.as_str(),
    ] {
        let r = refusal(&with(|v| {
            v["consent"]["trustedform_cert_url"] = Value::from(url)
        }));
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("consent.trustedform_cert_url")),
            "{url}"
        );
    }
    for url in [
        "HTTPS://cert.trustedform.com/2f1e0c",
        "https://cert.trustedform.com:443/2f1e0c?sid=9#x",
        "https://cert.trustedform.com",
    ] {
        let req = parse_request(&with(|v| {
            v["consent"]["trustedform_cert_url"] = Value::from(url)
        }))
        .unwrap();
        assert!(validate(&req, &campaign()).is_ok(), "{url}");
    }

    // A LeadiD token is a string: anything else is no proof of consent, and is refused.
    let token = |t: Value| {
        with(|v| {
            v["consent"]
                .as_object_mut()
                .unwrap()
                .remove("trustedform_cert_url");
            v["consent"]["jornaya_leadid"] = t.clone();
        })
    };
    let req = parse_request(&token(Value::from("5A1B2C3D-1111-2222-3333-444455556666"))).unwrap();
    assert!(validate(&req, &campaign()).is_ok());
    for bad in [
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!(true),
        serde_json::json!(0),
        serde_json::json!(123),
    ] {
        let r = refusal(&token(bad.clone()));
        assert_eq!(r.code, "consent_missing", "{bad}");
    }
    for bad in ["a b", "tok\u{1}", &"t".repeat(MAX_LEAD_TOKEN_BYTES + 1)] {
        let r = refusal(&token(Value::from(bad)));
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("consent.jornaya_leadid")),
            "{bad}"
        );
    }
}

#[test]
fn a_bid_id_too_long_to_quote_back_whole_makes_the_answer_invalid() {
    let id = "t".repeat(MAX_BID_ID_BYTES);
    let answer = format!(r#"{{"bid": 12.5, "bid_id": "{id}"}}"#);
    match parse_bid(200, answer.as_bytes()) {
        PingOutcome::Bid { cents, bid_id } => {
            assert_eq!(cents, 1250);
            assert_eq!(bid_id.as_ref().map(|t| t.as_str()), Some(id.as_str()));
        }
        other => panic!("{other:?}"),
    }
    // One byte more, plain or escaped, or in multi-byte characters: never cut.
    let long = "t".repeat(MAX_BID_ID_BYTES + 1);
    let accents = "\u{e9}".repeat(MAX_BID_ID_BYTES / 2 + 1);
    for body in [
        format!(r#"{{"bid": 12.5, "bid_id": "{long}"}}"#),
        format!(r#"{{"bid": 12.5, "bid_id": "\"{long}"}}"#),
        format!(r#"{{"bid": 12.5, "bid_id": "{accents}"}}"#),
    ] {
        match parse_bid(200, body.as_bytes()) {
            PingOutcome::Invalid(reason) => assert!(reason.contains("bid_id"), "{reason}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

/// A `bid_id` the post could not quote back as sent (`true`, an object, an array, a lone
/// surrogate) makes the answer `invalid`, not a bid whose post lacks the buyer's reference;
/// `null` is no id, and a number is quoted back as text.
#[test]
fn a_bid_id_that_is_not_text_makes_the_answer_invalid() {
    for id in ["true", "false", r#"{"a":1}"#, r#"["x"]"#, r#""\ud800""#] {
        let body = format!(r#"{{"bid": 12.5, "bid_id": {id}}}"#);
        match parse_bid(200, body.as_bytes()) {
            PingOutcome::Invalid(reason) => {
                assert_eq!(reason, "bid_id is not a string or a number", "{body}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    for (id, want) in [
        ("null", None),
        ("77", Some("77")),
        (r#""b-\u0041""#, Some("b-A")),
    ] {
        let body = format!(r#"{{"bid": 12.5, "bid_id": {id}}}"#);
        match parse_bid(200, body.as_bytes()) {
            PingOutcome::Bid { cents, bid_id } => {
                assert_eq!(cents, 1250);
                assert_eq!(bid_id.as_ref().map(|t| t.as_str()), want, "{body}");
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn a_post_contradicts_its_ping_only_with_a_different_value() {
    let pinged = Fields::from_json(
        r#"{"age":34,"zip":"77002","state":"TX","insured":true,"n":"7","tags":["a"]}"#,
    )
    .unwrap();
    let same = Fields::from_json(
        r#"{"age":34.0,"zip":77002,"state":" tx","insured":"true","n":7,"tags":["a"],"email":"x"}"#,
    )
    .unwrap();
    assert_eq!(check_ping_match(&pinged, &same), Ok(()));
    for (k, v) in [
        ("age", "35"),
        ("zip", "\"77003\""),
        ("state", "\"OK\""),
        ("insured", "false"),
        ("n", "\"seven\""),
        ("tags", "[\"b\"]"),
        ("age", "null"),
    ] {
        let mut full = same.clone();
        full.insert(k.to_string(), serde_json::from_str(v).unwrap());
        let r = check_ping_match(&pinged, &full).unwrap_err();
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("ping_mismatch", Some(&*format!("lead.{k}"))),
            "{k}={v}"
        );
    }
    // Arrays and objects member by member, without the personal members a ping left out.
    let pinged = Fields::from_json(
        r#"{"vehicle":{"year":2019,"make":"Honda","owner_email":"a@b.c"},"code":"02134","big":9007199254740993}"#,
    )
    .unwrap();
    let full = Fields::from_json(
        r#"{"vehicle":{"make":"HONDA","year":2019.0,"owner_email":"x@y.z","vin":"1HG","color":"red"},"code":"02134","big":9007199254740993}"#,
    )
    .unwrap();
    assert_eq!(check_ping_match(&pinged, &full), Ok(()));
    for (k, v) in [
        ("vehicle", r#"{"year":2020,"make":"Honda"}"#),
        ("vehicle", r#"{"year":2019}"#),
        ("vehicle", r#"[2019,"Honda"]"#),
        ("code", "2134"),
        ("big", "9007199254740992"),
    ] {
        let mut f = full.clone();
        f.insert(k.to_string(), serde_json::from_str(v).unwrap());
        assert!(check_ping_match(&pinged, &f).is_err(), "{k}={v}");
    }
    let mut missing = Fields::from_json(r#"{"age":34}"#).unwrap();
    assert!(check_ping_match(&pinged, &missing).is_err());
    missing.insert("zip".into(), serde_json::json!("77002"));
    assert!(check_ping_match(&pinged, &missing).is_err());
}

/// Numbers are compared by their exact value, nested or not: a 23-digit integer or a long
/// decimal changed in its last digit contradicts the ping; the same value written otherwise
/// (`9007199254740993.0`, `1.2345678901234567890123e22`) does not.
/// A field pinged as `null` may be left out of the post (filters read a missing field and a
/// `null` alike); one pinged with a value may not.
#[test]
fn a_field_pinged_as_null_may_be_left_out_of_the_post() {
    let pinged = Fields::from_json(r#"{"state":"TX","v":null}"#).unwrap();
    let post = Fields::from_json(r#"{"state":"TX","phone":"7135550147"}"#).unwrap();
    assert_eq!(check_ping_match(&pinged, &post), Ok(()));
    let pinged = Fields::from_json(r#"{"state":"TX","v":1}"#).unwrap();
    assert_eq!(
        check_ping_match(&pinged, &post).map_err(|r| r.code),
        Err("ping_mismatch")
    );
    let pinged = Fields::from_json(r#"{"state":"TX","v":null}"#).unwrap();
    let post = Fields::from_json(r#"{"state":"TX","v":0}"#).unwrap();
    assert!(check_ping_match(&pinged, &post).is_err(), "null is not 0");
}

#[test]
fn a_post_is_checked_against_its_ping_digit_for_digit() {
    let pinged = Fields::from_json(
        r#"{"num":12345678901234567890123,"loan":{"amount":12345678901234567890123,"rate":3.14159265358979323846,"big":9007199254740993,"list":[0.1,-0]}}"#,
    )
    .unwrap();
    for (k, same) in [
        ("num", "12345678901234567890123.0"),
        ("num", "1.2345678901234567890123e22"),
        ("num", "\"12345678901234567890123\""),
        (
            "loan",
            r#"{"amount":1.2345678901234567890123E+22,"rate":3.141592653589793238460,"big":9007199254740993.0,"list":[1e-1,0]}"#,
        ),
        (
            "loan",
            r#"{"big":9.007199254740993e15,"rate":31.4159265358979323846e-1,"amount":12345678901234567890123,"list":[0.10,0.0],"more":1}"#,
        ),
    ] {
        let mut f = pinged.clone();
        f.insert_field(
            k,
            Fields::from_json(&format!(r#"{{"v":{same}}}"#))
                .unwrap()
                .get("v")
                .unwrap(),
        );
        assert_eq!(check_ping_match(&pinged, &f), Ok(()), "{k}={same}");
    }
    for (k, changed) in [
        ("num", "12345678901234567890124"),
        (
            "loan",
            r#"{"amount":12345678901234567890124,"rate":3.14159265358979323846,"big":9007199254740993,"list":[0.1,0]}"#,
        ),
        (
            "loan",
            r#"{"amount":12345678901234567890123,"rate":3.14159265358979323999,"big":9007199254740993,"list":[0.1,0]}"#,
        ),
        (
            "loan",
            r#"{"amount":12345678901234567890123,"rate":3.14159265358979323846,"big":9007199254740992,"list":[0.1,0]}"#,
        ),
        (
            "loan",
            r#"{"amount":12345678901234567890123,"rate":3.14159265358979323846,"big":9007199254740993,"list":[0.1,1e-400]}"#,
        ),
    ] {
        let mut f = pinged.clone();
        f.insert_field(
            k,
            Fields::from_json(&format!(r#"{{"v":{changed}}}"#))
                .unwrap()
                .get("v")
                .unwrap(),
        );
        let r = check_ping_match(&pinged, &f).unwrap_err();
        assert_eq!(
            r.field.as_deref(),
            Some(&*format!("lead.{k}")),
            "{k}={changed}"
        );
    }
}

/// A ZIP pinged as five digits is posted as its ZIP+4 (or the other way): the same place. Two
/// different ZIP+4s, or other five digits, are not.
#[test]
fn a_zip_and_its_zip_plus_4_are_the_same_place() {
    for (pinged, posted, same) in [
        ("\"77002\"", "\"77002-1234\"", true),
        ("\"77002-1234\"", "\"77002\"", true),
        ("77002", "\"77002-1234\"", true),
        ("\"77002-1234\"", "\"77002-1234\"", true),
        ("\"77002-1234\"", "\"77002-9999\"", false),
        ("\"77002\"", "\"77003-1234\"", false),
        ("\"77002\"", "\"77002-12\"", false),
    ] {
        let pinged = Fields::from_json(&format!(r#"{{"zip":{pinged}}}"#)).unwrap();
        let full = Fields::from_json(&format!(r#"{{"zip":{posted}}}"#)).unwrap();
        assert_eq!(
            check_ping_match(&pinged, &full).is_ok(),
            same,
            "{pinged:?} / {posted}"
        );
    }
    // Only the zip: another field's value with a dash is compared as it is.
    let pinged = Fields::from_json(r#"{"code":"77002"}"#).unwrap();
    let full = Fields::from_json(r#"{"code":"77002-1234"}"#).unwrap();
    assert!(check_ping_match(&pinged, &full).is_err());
}

/// A ping must carry the required fields buyers bid on (required and ping fields both); the
/// consumer's own required fields come with the post.
#[test]
fn a_ping_without_a_required_ping_field_is_refused() {
    let c = campaign();
    assert!(c.ping_fields.contains(&"state".to_string()));
    assert!(c.required_fields.contains(&"first_name".to_string()));
    let ping = |lead: &str| {
        let body = format!(r#"{{"campaign":"auto-insurance","lead":{lead}}}"#);
        validate_ping(&parse_request(body.as_bytes()).unwrap(), &c)
    };
    let r = ping(r#"{"lead_type":"auto"}"#).unwrap_err();
    assert_eq!((r.status, r.code), (422, "missing_field"));
    assert!(
        matches!(r.field.as_deref(), Some("lead.state" | "lead.zip")),
        "{r:?}"
    );
    let r = ping(r#"{"state":"TX","zip":" "}"#).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("lead.zip"));
    assert_eq!(ping(r#"{"state":"TX","zip":"77002"}"#), Ok(()));
}

/// A post's `test`, when it has one, must be its ping's.
#[test]
fn a_post_may_not_turn_a_test_ping_real_or_a_real_one_test() {
    assert_eq!(check_post_test(false, None), Ok(()));
    assert_eq!(check_post_test(true, None), Ok(()));
    assert_eq!(check_post_test(true, Some(true)), Ok(()));
    assert_eq!(check_post_test(false, Some(false)), Ok(()));
    for (pinged, posted) in [(false, true), (true, false)] {
        let r = check_post_test(pinged, Some(posted)).unwrap_err();
        assert_eq!(
            (r.status, r.code, r.field.as_deref()),
            (422, "ping_mismatch", Some("test"))
        );
    }
    let p = parse_post_request(br#"{"ping_id":"P","lead":{},"test":true}"#)
        .ok()
        .unwrap();
    assert_eq!(p.test, Some(true));
    let p = parse_post_request(br#"{"ping_id":"P","lead":{}}"#)
        .ok()
        .unwrap();
    assert_eq!(p.test, None);
    let r = parse_post_request(br#"{"ping_id":"P","lead":{},"test":"yes"}"#)
        .err()
        .unwrap();
    assert_eq!((r.status, r.field.as_deref()), (400, Some("test")));
}

/// A number beyond an `f64` is refused as strict JSON readers refuse it, rather than sent on
/// to buyers whose parsers would fail the whole ping.
#[test]
fn numbers_beyond_a_double_are_refused() {
    for number in ["1e400", "-1e400", "1E+999", &"9".repeat(400)] {
        let body = LEAD.replace("\"age\": 34", &format!("\"age\": {number}"));
        assert_ne!(body, LEAD);
        let r = parse_request(body.as_bytes())
            .err()
            .unwrap_or_else(|| panic!("{number}"));
        assert_eq!(r.status, 400, "{number}: {}", r.message);
        // The one field at fault is named, as a 422 names it.
        assert_eq!(
            r.field.as_deref(),
            Some("lead.age"),
            "{number}: {}",
            r.message
        );
    }
    for number in ["1e300", "-0.5e-400", "12345678901234567890", "1.5E2"] {
        let body = LEAD.replace("\"age\": 34", &format!("\"age\": {number}"));
        assert!(parse_request(body.as_bytes()).is_ok(), "{number}");
    }
}

#[test]
fn a_campaign_with_a_consent_age_refuses_older_or_undated_consent() {
    let hours = |h: i64| {
        let at = (chrono::Utc::now() - chrono::Duration::hours(h)).to_rfc3339();
        with(|v| v["consent"]["consented_at"] = Value::from(at.clone()))
    };
    let strict = Campaign {
        consent_max_age: Some(chrono::Duration::hours(72)),
        ..campaign()
    };
    let req = parse_request(&hours(71)).unwrap();
    assert!(validate(&req, &strict).is_ok());
    let req = parse_request(&hours(73)).unwrap();
    let r = validate(&req, &strict).unwrap_err();
    assert_eq!(
        (r.status, r.code, r.field.as_deref()),
        (422, "consent_expired", Some("consent.consented_at")),
        "{}",
        r.message
    );
    assert!(r.message.contains("72 hours"), "{}", r.message);
    // Without a limit any age goes, as before.
    assert!(validate(&req, &campaign()).is_ok());
    // The age must be known to be checked.
    let undated = with(|v| {
        v["consent"].as_object_mut().unwrap().remove("consented_at");
    });
    let req = parse_request(&undated).unwrap();
    assert!(validate(&req, &campaign()).is_ok());
    let r = validate(&req, &strict).unwrap_err();
    assert_eq!(
        (r.code, r.field.as_deref()),
        ("missing_field", Some("consent.consented_at"))
    );
    // Just over the limit: the age said is over it too, not rounded down to it.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(72 * 60 + 1)).to_rfc3339();
    let req = parse_request(&with(|v| {
        v["consent"]["consented_at"] = Value::from(at.clone())
    }))
    .unwrap();
    let r = validate(&req, &strict).unwrap_err();
    assert!(
        r.message.starts_with("consent was given 72 h 1 min ago")
            || r.message.starts_with("consent was given 72 h 2 min ago"),
        "{}",
        r.message
    );
}

#[test]
fn a_consents_age_is_told_in_hours_and_minutes_rounded_up() {
    let t = |s: i64| consent_age_text(chrono::TimeDelta::seconds(s));
    assert_eq!(t(30), "1 min");
    assert_eq!(t(3600), "1 h");
    assert_eq!(t(3601), "1 h 1 min");
    assert_eq!(t(24 * 3600 + 60 * 59 + 1), "25 h");
    assert_eq!(t(-5), "0 min");
}

#[test]
fn a_post_without_a_usable_ping_id_says_which_way_it_is_wrong() {
    for (body, says) in [
        (&br#"{"lead":{}}"#[..], "required"),
        (br#"{"ping_id":null,"lead":{}}"#, "required"),
        (br#"{"ping_id":"","lead":{}}"#, "empty"),
        (br#"{"ping_id":5,"lead":{}}"#, "must be a string"),
    ] {
        let r = match parse_post_request(body) {
            Err(r) => r,
            Ok(_) => panic!("{} was taken", String::from_utf8_lossy(body)),
        };
        assert_eq!((r.status, r.field.as_deref()), (400, Some("ping_id")));
        assert!(r.message.contains(says), "{}: {}", says, r.message);
    }
}

/// A key twice anywhere else, however deep, and a number past an `f64` in a member the
/// exchange does not read, make the request malformed too: buyers would read one lead, the
/// exchange another. A syntax error says where it is in the body.
#[test]
fn a_key_twice_or_a_huge_number_anywhere_in_the_request_is_refused() {
    let nested = |v: &str| LEAD.replace(r#""age": 34"#, &format!(r#""age": {v}"#));
    for body in [
        nested(r#"{"a": 1, "a": 2}"#),
        nested(r#"[{"k": {"x": 1, "y": 2, "x": 3}}]"#),
        nested(r#"{"first\u005fname": 1, "first_name": 2}"#),
        LEAD.replacen('{', r#"{"zz": 1, "zz": 2, "#, 1),
        LEAD.replacen('{', r#"{"zz": 1e400, "#, 1),
        LEAD.replacen('{', r#"{"zz": {"a": [1, 2], "a": 3}, "#, 1),
        LEAD.replacen('{', r#"{"zz": [1, {"n": -1E+999}], "#, 1),
    ] {
        assert_ne!(body, LEAD, "the test lead changed shape");
        let r = refusal(body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.message);
    }
    let many: String = (0..40).map(|i| format!(r#""k{i}": {i}, "#)).collect();
    let r = refusal(
        LEAD.replacen('{', &format!(r#"{{{many}"k7": 0, "#), 1)
            .as_bytes(),
    );
    assert!(
        r.message.contains("key `k7` is given twice"),
        "{}",
        r.message
    );
    // Keys that only look alike, and the same key in two objects, are fine.
    for body in [
        nested(r#"{"a": 1, "A": 2, "a ": 3}"#),
        nested(r#"[{"a": 1}, {"a": 2}]"#),
        LEAD.replacen('{', &format!("{{{many}"), 1),
    ] {
        assert!(parse_request(body.as_bytes()).is_ok(), "{body}");
    }
    // Malformed JSON inside the lead is placed in the body, not in the lead.
    let body = nested("{\"a\": tru}");
    let line = body.lines().position(|l| l.contains("tru}")).unwrap() + 1;
    let r = refusal(body.as_bytes());
    assert!(
        r.message.contains(&format!("line {line} ")),
        "{}",
        r.message
    );
    // The seller's post of a held ping is read the same way.
    for body in [
        &br#"{"ping_id": "P", "lead": {"d": {"a": 1, "a": 2}}}"#[..],
        br#"{"ping_id": "P", "x": 1, "x": 2, "lead": {}}"#,
        br#"{"ping_id": "P", "x": 1e400, "lead": {}}"#,
    ] {
        let r = parse_post_request(body).err().unwrap();
        assert_eq!(r.status, 400, "{}", r.message);
    }
}

#[test]
fn a_key_given_twice_in_the_lead_or_consent_is_refused() {
    for (body, field, key) in [
        (
            LEAD.replacen(r#""state": "TX""#, r#""state": "TX", "state": "CA""#, 1),
            "lead.state",
            "state",
        ),
        (
            LEAD.replacen(
                r#""jornaya_leadid""#,
                r#""vertical": "auto_insurance", "vertical": "solar", "jornaya_leadid""#,
                1,
            ),
            "consent.vertical",
            "vertical",
        ),
    ] {
        assert_ne!(body, LEAD, "the test lead changed shape");
        let r = refusal(body.as_bytes());
        assert_eq!(
            (r.status, r.field.as_deref()),
            (400, Some(field)),
            "{}",
            r.message
        );
        assert!(
            r.message.contains(&format!("{key} is given twice")),
            "{}",
            r.message
        );
    }
}

/// Arrays and objects nested past the limit, shallow or very deep, are refused with one
/// message that says why.
#[test]
fn a_request_nested_too_deep_is_told_so() {
    for (depth, ok) in [
        (125usize, true),
        (126, false),
        (257, false),
        (100_000, false),
    ] {
        for nested in [
            "[".repeat(depth) + &"]".repeat(depth),
            "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth),
        ] {
            let body = LEAD.replace("\"age\": 34", &format!("\"age\": 34, \"meta\": {nested}"));
            match parse_request(body.as_bytes()) {
                Ok(_) => assert!(ok, "{depth} levels taken"),
                Err(r) => {
                    assert!(!ok, "{depth}: {}", r.message);
                    assert_eq!((r.status, r.code), (400, "bad_request"));
                    assert!(
                        r.message
                            .contains("nested deeper than 127 levels of arrays and objects"),
                        "{depth}: {}",
                        r.message
                    );
                }
            }
            let post = format!("{{\"ping_id\": \"p\", \"lead\": {{\"meta\": {nested}}}}}");
            match parse_post_request(post.as_bytes()) {
                Ok(_) => assert!(ok, "post: {depth} levels taken"),
                Err(r) => {
                    assert!(
                        r.message
                            .contains("nested deeper than 127 levels of arrays and objects"),
                        "post {depth}: {}",
                        r.message
                    );
                }
            }
        }
    }
}
