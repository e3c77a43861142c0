use super::*;
use serde_json::{json, Value};

/// The contract's example config, as shipped.
const EXAMPLE: &str = include_str!("../../config/exchange.example.toml");

fn legacy() -> Adapter {
    let snap = crate::config::parse(EXAMPLE).expect("the example config loads");
    let buyer = snap
        .buyers
        .iter()
        .find(|b| b.id == "legacy-ins")
        .expect("legacy-ins is in the example");
    let cfg = buyer.adapter.as_ref().expect("legacy-ins has an adapter");
    Adapter::compile(cfg).expect("legacy-ins compiles")
}

fn adapter(toml_text: &str) -> Adapter {
    let cfg: AdapterConfig = toml::from_str(toml_text).expect("adapter toml");
    Adapter::compile(&cfg).expect("compiles")
}

fn compile_err(toml_text: &str) -> AdapterError {
    let cfg: AdapterConfig = toml::from_str(toml_text).expect("adapter toml");
    Adapter::compile(&cfg).expect_err("refused")
}

fn obj(v: Value) -> Fields {
    match v {
        Value::Object(m) => Fields::from_map(&m),
        _ => panic!("not an object"),
    }
}

fn full_lead() -> Fields {
    obj(
        json!({"first_name": "Ana María", "last_name": "Diaz", "email": "ana+x@example.com",
        "phone": "7135550147", "street": "12 Main St", "city": "Houston", "state": "TX",
        "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}),
    )
}

fn consent() -> Fields {
    obj(
        json!({"trustedform_cert_url": "https://cert.trustedform.com/2f1e0c",
        "jornaya_leadid": "5A1B", "disclosed_buyers": ["acme-ins", "legacy-ins"]}),
    )
}

fn ping_ctx<'a>(lead: &'a Fields) -> Ctx<'a> {
    Ctx {
        ping_id: "01JDQ6X8W2",
        bid_id: None,
        price_cents: None,
        campaign: "auto-insurance",
        test: false,
        lead,
        consent: None,
    }
}

/// The ping fields of the campaign the tests' leads come in.
fn ping_fields() -> Vec<String> {
    [
        "state", "zip", "age", "insured", "note", "n1", "n2", "gone", "vehicle",
    ]
    .map(String::from)
    .to_vec()
}

fn post_ctx<'a>(lead: &'a Fields, consent: Option<&'a Fields>) -> Ctx<'a> {
    Ctx {
        ping_id: "01JDQ6X8W2",
        bid_id: Some("LX-9"),
        price_cents: Some(4250),
        campaign: "auto-insurance",
        test: false,
        lead,
        consent,
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf-8")
}

fn bid(cents: Cents, id: Option<&str>) -> PingOutcome {
    PingOutcome::Bid {
        cents,
        bid_id: id.map(SmallText::new),
    }
}

fn rejected(reason: &str) -> PostOutcome {
    PostOutcome::Rejected {
        reason: reason.into(),
    }
}

// ---- The contract's legacy-ins buyer, end to end ----

#[test]
fn legacy_ping_is_a_form_with_only_the_templated_ping_fields() {
    let a = legacy();
    assert_eq!(a.content_type(), "application/x-www-form-urlencoded");
    let lead = full_lead();
    let mut out = b"kept".to_vec();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    assert_eq!(
        text(&out),
        "keptKey=lx-123&Mode=ping&Ref=01JDQ6X8W2&State=TX&Zip=77002"
    );
}

#[test]
fn legacy_xml_bid_is_read_in_cents_with_its_lead_id() {
    let a = legacy();
    let answer = br#"<?xml version="1.0" encoding="UTF-8"?>
<response>
  <status>OK</status>
  <price>42.50</price>
  <lead_id>LX-9</lead_id>
</response>"#;
    assert_eq!(a.parse_bid(200, answer), bid(4250, Some("LX-9")));
    // A byte order mark before the document is not garbage.
    let answer = b"\xEF\xBB\xBF<response><price>7</price></response>";
    assert_eq!(a.parse_bid(200, answer), bid(700, None));
    // More than two decimals is rounded down to the cent.
    let answer = b"<response><price>12.349</price></response>";
    assert_eq!(a.parse_bid(200, answer), bid(1234, None));
}

/// A UTF-8 byte order mark says UTF-8: with UTF-8 (or ASCII) declared, the id is read as
/// written; with ISO-8859-1 declared the answer contradicts itself, and reading either way
/// could quote the bid id back changed (`Aé` as `AÃ©`): no bid.
#[test]
fn a_byte_order_mark_and_another_declared_encoding_are_no_bid() {
    let a = legacy();
    for decl in [
        "",
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<?xml version="1.0" encoding="us-ascii"?>"#,
    ] {
        let answer =
            format!("\u{feff}{decl}<response><price>5</price><lead_id>Aé</lead_id></response>");
        assert_eq!(
            a.parse_bid(200, answer.as_bytes()),
            bid(500, Some("Aé")),
            "{decl}"
        );
    }
    let answer = "\u{feff}<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><response><price>5</price><lead_id>Aé</lead_id></response>";
    assert!(
        matches!(a.parse_bid(200, answer.as_bytes()), PingOutcome::Invalid(_)),
        "{:?}",
        a.parse_bid(200, answer.as_bytes())
    );
    // Without the mark, ISO-8859-1 bytes are read as declared.
    let mut latin =
        br#"<?xml version="1.0" encoding="ISO-8859-1"?><response><price>5</price><lead_id>A"#
            .to_vec();
    latin.extend_from_slice(b"\xE9</lead_id></response>");
    assert_eq!(a.parse_bid(200, &latin), bid(500, Some("Aé")));
}

#[test]
fn legacy_xml_no_bid_answers() {
    let a = legacy();
    for answer in [
        &b"<response><price>0</price><lead_id>LX-9</lead_id></response>"[..],
        b"<response><price>0.00</price></response>",
        b"<response><price/></response>",
        b"<response><price>  </price></response>",
    ] {
        assert_eq!(
            a.parse_bid(200, answer),
            PingOutcome::NoBid,
            "{:?}",
            text(answer)
        );
    }
    assert_eq!(a.parse_bid(204, b""), PingOutcome::NoBid);
}

#[test]
fn legacy_xml_garbage_and_errors_cost_only_the_bid() {
    let a = legacy();
    for answer in [
        &b""[..],
        b"not xml at all",
        b"<html><body>Internal error",
        b"<response><price>12</pricex></response>",
        b"<response><price>12</price></response><response/>",
        b"<response><price>12</price></response> trailing",
        b"\xff\xfe<response>",
    ] {
        assert_eq!(
            a.parse_bid(200, answer),
            PingOutcome::Invalid("unparsable answer".into()),
            "{:?}",
            String::from_utf8_lossy(answer)
        );
    }
    assert_eq!(
        a.parse_bid(200, b"<response><price>-3</price></response>"),
        PingOutcome::Invalid("negative bid".into())
    );
    assert_eq!(
        a.parse_bid(200, b"<response><price>$12</price></response>"),
        PingOutcome::Invalid("bid is not a number".into())
    );
    for (text, want) in [
        ("1e12", "bid out of range"),
        ("99999999999", "bid out of range"),
        ("1e400", "bid out of range"),
        ("inf", "bid is not a number"),
        ("NaN", "bid is not a number"),
    ] {
        let body = format!("<response><price>{text}</price></response>");
        assert_eq!(
            a.parse_bid(200, body.as_bytes()),
            PingOutcome::Invalid(want.into()),
            "{text}"
        );
    }
    assert_eq!(
        a.parse_bid(200, b"<response><status>OK</status></response>"),
        PingOutcome::Invalid("no bid at /response/price".into())
    );
    assert_eq!(
        a.parse_bid(500, b"<response><price>12</price></response>"),
        PingOutcome::Error("status 500".into())
    );
}

#[test]
fn legacy_post_is_the_full_form_at_the_price_with_consent() {
    let a = legacy();
    let lead = full_lead();
    let consent = consent();
    let mut out = Vec::new();
    a.write_post(&mut out, &post_ctx(&lead, Some(&consent)));
    assert_eq!(
        text(&out),
        "Email=ana%2Bx%40example.com&First_Name=Ana+Mar%C3%ADa&Key=lx-123&Last_Name=Diaz\
         &Lead_ID=LX-9&Mode=post&Phone=7135550147&Price=42.50\
         &TrustedForm=https%3A%2F%2Fcert.trustedform.com%2F2f1e0c&Zip=77002"
    );
}

#[test]
fn legacy_post_accepted_on_either_configured_word_in_any_case() {
    let a = legacy();
    for word in ["Matched", "Accepted", "accepted", "MATCHED", " Matched "] {
        let answer = format!(
            "<response><status>{}</status><lead_id>B-1</lead_id></response>",
            word
        );
        assert_eq!(
            a.parse_post(200, answer.as_bytes()),
            PostOutcome::Accepted {
                buyer_lead_id: Some("B-1".into())
            },
            "{}",
            word
        );
    }
    assert_eq!(
        a.parse_post(201, b"<response><status>Matched</status></response>"),
        PostOutcome::Accepted {
            buyer_lead_id: None
        }
    );
}

#[test]
fn legacy_post_rejected_with_the_buyers_reason() {
    let a = legacy();
    assert_eq!(
        a.parse_post(
            200,
            b"<response><status>Rejected</status><error>Duplicate lead</error></response>"
        ),
        rejected("Duplicate lead")
    );
    // Without a reason, the status the buyer gave says why.
    assert_eq!(
        a.parse_post(200, b"<response><status>NoMatch</status></response>"),
        rejected("NoMatch")
    );
    assert_eq!(
        a.parse_post(200, b"<response><error>bad zip</error></response>"),
        rejected("bad zip")
    );
    assert_eq!(
        a.parse_post(200, b"<response/>"),
        rejected("no status at /response/status")
    );
    assert_eq!(
        a.parse_post(200, b"Service Unavailable"),
        rejected("unparsable answer")
    );
    assert_eq!(
        a.parse_post(503, b"<response><status>Matched</status></response>"),
        rejected("status 503")
    );
}

#[test]
fn a_long_reason_is_clipped() {
    let a = legacy();
    let answer = format!(
        "<response><status>Rejected</status><error>{}</error></response>",
        "x".repeat(5000)
    );
    match a.parse_post(200, answer.as_bytes()) {
        PostOutcome::Rejected { reason } => assert_eq!(reason.len(), MAX_ANSWER_STRING),
        other => panic!("{:?}", other),
    }
}

// ---- Requests ----

#[test]
fn form_escaping_follows_urlencoded_rules() {
    let mut out = Vec::new();
    form_escape(&mut out, "a b&c=d/é*-._~+%\n");
    assert_eq!(text(&out), "a+b%26c%3Dd%2F%C3%A9*-._%7E%2B%25%0A");
}

/// A number is sent with its very digits, so its exponent's `+` must reach a form buyer as
/// `+`, not as the space a bare `+` means in a form.
#[test]
fn a_form_value_keeps_a_numbers_plus_sign() {
    let a = adapter(
        r#"request = "form"
response = "xml"
bid_path = "/r/p"
ping_body = { n1 = "{lead.n1}", n2 = "{lead.n2}", mix = "x{lead.note}y{lead.n1}" }"#,
    );
    let lead = Fields::from_json(r#"{"n1":1e+3,"n2":-2.5E+1,"note":"1e+3"}"#).unwrap();
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    assert_eq!(text(&out), "mix=x1e%2B3y1e%2B3&n1=1e%2B3&n2=-2.5E%2B1");
}

#[test]
fn form_names_and_literals_are_escaped_too() {
    let a = adapter(
        r#"request = "form"
response = "xml"
bid_path = "/r/p"
ping_body = { "the key" = "a&b={ping_id}", "k" = "{lead.note}" }"#,
    );
    let lead = obj(json!({"note": "x=1&y=2"}));
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    assert_eq!(text(&out), "k=x%3D1%26y%3D2&the+key=a%26b%3D01JDQ6X8W2");
}

#[test]
fn missing_fields_render_empty() {
    let a = legacy();
    let lead = obj(json!({"state": "TX", "first_name": "Ana"}));
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    assert_eq!(
        text(&out),
        "Key=lx-123&Mode=ping&Ref=01JDQ6X8W2&State=TX&Zip="
    );
    out.clear();
    let ctx = Ctx {
        bid_id: None,
        price_cents: None,
        consent: None,
        ..post_ctx(&lead, None)
    };
    a.write_post(&mut out, &ctx);
    assert_eq!(
        text(&out),
        "Email=&First_Name=Ana&Key=lx-123&Last_Name=&Lead_ID=&Mode=post&Phone=&Price=\
         &TrustedForm=&Zip="
    );
}

#[test]
fn lead_values_render_as_text() {
    let a = adapter(
        r#"request = "form"
post_body = { Age = "{lead.age}", Ins = "{lead.insured}", Nil = "{lead.gone}", Buyers = "{consent.disclosed_buyers}", C = "{campaign}" }"#,
    );
    let lead = obj(json!({"age": 34, "insured": true, "gone": null}));
    let consent = consent();
    let mut out = Vec::new();
    a.write_post(&mut out, &post_ctx(&lead, Some(&consent)));
    assert_eq!(
        text(&out),
        "Age=34&Buyers=%5B%22acme-ins%22%2C%22legacy-ins%22%5D&C=auto-insurance&Ins=true&Nil="
    );
}

#[test]
fn json_requests_keep_the_type_of_a_lone_placeholder() {
    let a = adapter(
        r#"request = "json"
response = "json"
bid_path = "/bid"
ping_body = { ref = "{ping_id}", age = "{lead.age}", insured = "{lead.insured}", zip = "{lead.zip}", tag = "zip-{lead.zip}", gone = "{lead.gone}", quote = "say \"hi\"\n" }
post_body = { price = "{price}", label = "${price}", bid = "{bid_id}", buyers = "{consent.disclosed_buyers}", name = "{lead.first_name}" }"#,
    );
    assert_eq!(a.content_type(), "application/json");
    let lead = full_lead();
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    let v: Value = serde_json::from_slice(&out).expect("ping is JSON");
    assert_eq!(
        v,
        json!({"age": 34, "gone": null, "insured": true, "quote": "say \"hi\"\n",
               "ref": "01JDQ6X8W2", "tag": "zip-77002", "zip": "77002"})
    );
    out.clear();
    let consent = consent();
    a.write_post(&mut out, &post_ctx(&lead, Some(&consent)));
    assert_eq!(
        text(&out),
        r#"{"bid":"LX-9","buyers":["acme-ins","legacy-ins"],"label":"$42.50","name":"Ana María","price":42.5}"#
    );
    // Without a price (never the case for a real post) the value is an empty string, not a
    // broken document.
    out.clear();
    let ctx = Ctx {
        price_cents: None,
        ..post_ctx(&lead, None)
    };
    a.write_post(&mut out, &ctx);
    let v: Value = serde_json::from_slice(&out).expect("post is JSON");
    assert_eq!(v["price"], json!(""));
    // A consent the post does not have: null, as for a missing lead field.
    assert_eq!(v["buyers"], json!(null));
    // A bid that came without an id: null, not an empty id the buyer would look up; within
    // text, empty.
    let b = adapter(
        r#"request = "json"
response = "json"
bid_path = "/bid"
post_body = { bid = "{bid_id}", ref = "bid-{bid_id}" }"#,
    );
    out.clear();
    let ctx = Ctx {
        bid_id: None,
        ..post_ctx(&lead, None)
    };
    b.write_post(&mut out, &ctx);
    assert_eq!(text(&out), r#"{"bid":null,"ref":"bid-"}"#);
}

#[test]
fn braces_without_a_placeholder_are_literal() {
    let a = adapter(
        r#"request = "form"
post_body = { a = "{x", b = "}{ping_id}{" }"#,
    );
    let lead = Fields::default();
    let mut out = Vec::new();
    a.write_post(&mut out, &post_ctx(&lead, None));
    assert_eq!(text(&out), "a=%7Bx&b=%7D01JDQ6X8W2%7B");
}

#[test]
fn an_empty_template_writes_an_empty_body() {
    let a = adapter(r#"request = "json""#);
    assert!(!a.has_ping_body() && !a.has_post_body());
    let lead = Fields::default();
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    assert_eq!(text(&out), "{}");
    assert!(legacy().has_ping_body());
}

// ---- JSON answers ----

/// Answers in JSON, read by pointer: the bid, its id, the post's state and reason.
fn json_answers() -> Adapter {
    adapter(
        r#"response = "json"
bid_path = "/result/offer/amount"
bid_id_path = "/result/offer/id"
accepted_path = "/result/state"
accepted_values = ["OK"]
reason_path = "/result/why"
"#,
    )
}

#[test]
fn json_answers_are_read_by_pointer() {
    let a = json_answers();
    let answer = br#"{"result": {"offer": {"amount": 12.34, "id": 77}}}"#;
    assert_eq!(a.parse_bid(200, answer), bid(1234, Some("77")));
    let answer = b"\xEF\xBB\xBF{\"result\": {\"offer\": {\"amount\": 1}}}";
    assert_eq!(a.parse_bid(200, answer), bid(100, None));
    let answer = br#"{"result": {"offer": {"amount": "12.34", "id": "a\"b"}}}"#;
    assert_eq!(a.parse_bid(200, answer), bid(1234, Some("a\"b")));
    for no in [
        &br#"{"result": {"offer": {"amount": 0}}}"#[..],
        br#"{"result": {"offer": {"amount": null}}}"#,
        br#"{"result": {"offer": {"amount": ""}}}"#,
    ] {
        assert_eq!(a.parse_bid(200, no), PingOutcome::NoBid);
    }
    assert_eq!(
        a.parse_bid(200, br#"{"result": {}}"#),
        PingOutcome::Invalid("no bid at /result/offer/amount".into())
    );
    assert_eq!(
        a.parse_bid(200, br#"{"result": {"offer": {"amount": {}}}}"#),
        PingOutcome::Invalid("bid is not a number".into())
    );
    assert_eq!(
        a.parse_bid(200, br#"{"result": {"offer": {"amount": 5}}"#),
        PingOutcome::Invalid("unparsable answer".into())
    );
    assert_eq!(
        a.parse_post(200, br#"{"result": {"state": "ok", "offer": {"id": 9}}}"#),
        PostOutcome::Accepted {
            buyer_lead_id: Some("9".into())
        }
    );
    assert_eq!(
        a.parse_post(200, br#"{"result": {"state": "DENIED", "why": "dup"}}"#),
        rejected("dup")
    );
    assert_eq!(a.parse_post(200, b"{"), rejected("unparsable answer"));
}

#[test]
fn json_pointers_index_arrays_and_unescape_tokens() {
    let a = adapter(
        r#"bid_path = "/offers/1/a~1b~0c"
bid_id_path = "/offers/1/id"
"#,
    );
    let answer = br#"{"offers": [{"a/b~c": 1}, {"a/b~c": 2.5, "id": "second"}]}"#;
    assert_eq!(a.parse_bid(200, answer), bid(250, Some("second")));
    // "01" is not an array index in RFC 6901.
    let a = adapter(r#"bid_path = "/offers/01""#);
    assert_eq!(
        a.parse_bid(200, br#"{"offers": [1, 2]}"#),
        PingOutcome::Invalid("no bid at /offers/01".into())
    );
    // A key on the path given twice makes an answer that says two things: it is not read,
    // as the native answer with `bid` twice. A key off the path may repeat.
    let a = adapter(r#"bid_path = "/result/bid""#);
    for twice in [
        &br#"{"result": {"bid": 3, "bid": 4}}"#[..],
        br#"{"result": {"bid": 3}, "result": {"bid": 4}}"#,
    ] {
        assert_eq!(
            a.parse_bid(200, twice),
            PingOutcome::Invalid("unparsable answer".into())
        );
    }
    assert_eq!(
        a.parse_bid(200, br#"{"note": 1, "note": 2, "result": {"bid": 3}}"#),
        bid(300, None)
    );
    assert_eq!(
        crate::lead::parse_bid(200, br#"{"bid": 3, "bid": 4}"#),
        PingOutcome::Invalid("unparsable answer".into())
    );
}

#[test]
fn json_without_paths_follows_the_native_protocol() {
    let a = adapter(r#"request = "form""#);
    assert_eq!(
        a.parse_bid(200, br#"{"bid": 42.5, "bid_id": "b-77"}"#),
        bid(4250, Some("b-77"))
    );
    assert_eq!(a.parse_bid(200, br#"{"bid": 0}"#), PingOutcome::NoBid);
    // No accepted_path: the native answer, `{"status": "accepted"}`; a 2xx that does not say
    // so is no sale.
    assert_eq!(
        a.parse_post(200, br#"{"status": "accepted", "buyer_lead_id": "B-1"}"#),
        PostOutcome::Accepted {
            buyer_lead_id: Some("B-1".into())
        }
    );
    assert!(matches!(
        a.parse_post(200, b"thanks!"),
        PostOutcome::Rejected { .. }
    ));
    assert!(matches!(
        a.parse_post(200, br#"{"received": true}"#),
        PostOutcome::Rejected { .. }
    ));
    assert_eq!(a.parse_post(404, b""), rejected("status 404"));
    // An XML answer has no native form: without accepted_path any 2xx is a sale.
    let x = adapter("response = \"xml\"\nbid_path = \"/r/bid\"");
    assert_eq!(
        x.parse_post(200, b"<ok/>"),
        PostOutcome::Accepted {
            buyer_lead_id: None
        }
    );
}

#[test]
fn accepted_path_without_values_means_the_native_word() {
    let a = adapter(r#"accepted_path = "/status""#);
    assert_eq!(
        a.parse_post(200, br#"{"status": "Accepted"}"#),
        PostOutcome::Accepted {
            buyer_lead_id: None
        }
    );
    assert_eq!(
        a.parse_post(200, br#"{"status": "maybe"}"#),
        rejected("maybe")
    );
}

#[test]
fn an_answer_over_the_limit_is_not_read() {
    let a = adapter(r#"bid_path = "/bid""#);
    let mut big = br#"{"bid": 5, "pad": ""#.to_vec();
    big.resize(MAX_ANSWER_BYTES + 1, b'x');
    big.extend_from_slice(b"\"}");
    assert_eq!(
        a.parse_bid(200, &big),
        PingOutcome::Invalid("unparsable answer".into())
    );
}

// ---- XML details ----

fn xml_adapter(bid_path: &str) -> Adapter {
    adapter(&format!("response = \"xml\"\nbid_path = \"{}\"", bid_path))
}

#[test]
fn xml_reads_namespaced_soap_answers_with_entities_cdata_and_comments() {
    let a = adapter(
        r#"response = "xml"
bid_path = "/Envelope/Body/Quote/Price"
bid_id_path = "/Envelope/Body/Quote/Ref"
"#,
    );
    let answer = br#"<?xml version="1.0"?>
<!DOCTYPE x [ <!ENTITY boom "boom"> ]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <!-- a comment with <Price>99</Price> inside -->
    <q:Quote xmlns:q="urn:q" currency='USD' note="a > b">
      <q:Price><![CDATA[ 17.5 ]]></q:Price>
      <q:Ref>A&amp;B &#x41;&#66; &amp;boom; Smith & Sons</q:Ref>
    </q:Quote>
  </soap:Body>
</soap:Envelope>"#;
    assert_eq!(
        a.parse_bid(200, answer),
        bid(1750, Some("A&B AB &boom; Smith & Sons"))
    );
    // An entity the exchange does not expand (declared in the DOCTYPE, or nowhere, or a
    // character reference to no character) would be quoted back as other text than the
    // buyer's: the answer is not read.
    let text = std::str::from_utf8(answer).unwrap();
    for reference in [
        "&boom;",
        "&nowhere;",
        "&#xFFFFFFFF;",
        "&#0;",
        "&#x1F;",
        "&#xFFFE;",
        "&#X41;",
    ] {
        let changed = text.replace("Smith & Sons", &format!("Smith {reference}"));
        assert_eq!(
            a.parse_bid(200, changed.as_bytes()),
            PingOutcome::Invalid("unparsable answer".into()),
            "{reference}"
        );
        // In the price too; in an element not read it changes nothing.
        let a = xml_adapter("/r/p");
        let in_price = format!("<r><p>17.5{reference}</p></r>");
        assert_eq!(
            a.parse_bid(200, in_price.as_bytes()),
            PingOutcome::Invalid("unparsable answer".into()),
            "{reference}"
        );
        let elsewhere = format!("<r><p>17.5</p><note>{reference}</note></r>");
        assert_eq!(a.parse_bid(200, elsewhere.as_bytes()), bid(1750, None));
    }
    // A post answer's status decides; a reference in its reason does not overturn it.
    let a =
        adapter("response = \"xml\"\naccepted_path = \"/r/status\"\nreason_path = \"/r/error\"");
    assert_eq!(
        a.parse_post(
            200,
            b"<r><status>Accepted</status><error>x&#x1F;</error></r>"
        ),
        PostOutcome::Accepted {
            buyer_lead_id: None
        }
    );
    assert_eq!(
        a.parse_post(200, b"<r><status>Acc&foo;</status></r>"),
        PostOutcome::Rejected {
            reason: "unparsable answer".into()
        }
    );
}

#[test]
fn xml_takes_the_first_match_and_an_element_with_children_is_no_value() {
    let a = xml_adapter("/r/p");
    assert_eq!(
        a.parse_bid(200, b"<r><x><p>9</p></x><p>12</p><p>3</p></r>"),
        bid(1200, None)
    );
    // Text around a child element is not one value: `12<b/>5` is no $125 bid.
    for answer in [
        &b"<r><p>12<b/>5</p></r>"[..],
        b"<r><p>1<b>2</b></p></r>",
        b"<r><p><value>12</value></p></r>",
    ] {
        assert_eq!(
            a.parse_bid(200, answer),
            PingOutcome::Invalid("/r/p holds elements, not a bid".into()),
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
    assert_eq!(
        xml_adapter("/r/p/value").parse_bid(200, b"<r><p><value>12</value></p></r>"),
        bid(1200, None)
    );
    // A post's status that holds elements is no "accepted".
    let a = adapter("response = \"xml\"\naccepted_path = \"/r/s\"");
    assert!(matches!(
        a.parse_post(200, b"<r><s>accepted<x/></s></r>"),
        PostOutcome::Rejected { .. }
    ));
    // A path must start at the root element.
    let a = xml_adapter("/p");
    assert_eq!(
        a.parse_bid(200, b"<r><p>1</p></r>"),
        PingOutcome::Invalid("no bid at /p".into())
    );
}

#[test]
fn xml_nesting_is_bounded() {
    let a = xml_adapter("/r/p");
    let depth = xml::MAX_XML_DEPTH + 1;
    let answer = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    assert_eq!(
        a.parse_bid(200, answer.as_bytes()),
        PingOutcome::Invalid("unparsable answer".into())
    );
    let ok = xml::MAX_XML_DEPTH;
    let answer = format!(
        "<r><p>2</p>{}{}</r>",
        "<a>".repeat(ok - 1),
        "</a>".repeat(ok - 1)
    );
    assert_eq!(a.parse_bid(200, answer.as_bytes()), bid(200, None));
}

#[test]
fn xml_reader_reports_where_it_failed() {
    let path = vec!["r".to_string()];
    assert_eq!(
        xml::find_texts(b"<r></s>", [Some(path.as_slice())]),
        Err(xml::XmlError::Malformed("end tag does not match", 3))
    );
    assert_eq!(
        xml::find_texts(b"<r><!-- open", [Some(path.as_slice())]),
        Err(xml::XmlError::Malformed("unterminated comment", 3))
    );
    assert_eq!(
        xml::find_texts(b"<r>a &lt; b</r>", [Some(path.as_slice())]),
        Ok([Found::Text("a < b".into())])
    );
}

// ---- Compile ----

#[test]
fn compile_refuses_what_it_cannot_honour() {
    assert!(matches!(
        compile_err(r#"request = "soap""#),
        AdapterError::UnknownKind { key: "request", .. }
    ));
    assert!(matches!(
        compile_err(r#"response = "yaml""#),
        AdapterError::UnknownKind {
            key: "response",
            ..
        }
    ));
    assert_eq!(
        compile_err(r#"post_body = { a = "{lead}" }"#),
        AdapterError::UnknownPlaceholder {
            body: "post_body",
            field: "a".into(),
            placeholder: "lead".into()
        }
    );
    for (ph, shown) in [
        ("{price}", "price"),
        ("{bid_id}", "bid_id"),
        ("{consent.jornaya_leadid}", "consent.jornaya_leadid"),
        ("{lead.email}", "lead.email"),
    ] {
        let e = compile_err(&format!(
            "bid_path = \"/b\"\nping_body = {{ a = \"{}\" }}",
            ph
        ));
        assert_eq!(
            e,
            AdapterError::NotAllowedInPing {
                field: "a".into(),
                placeholder: shown.into()
            }
        );
    }
    assert!(matches!(
        compile_err(r#"bid_path = "bid""#),
        AdapterError::BadPath {
            key: "bid_path",
            ..
        }
    ));
    assert!(matches!(
        compile_err(r#"bid_path = "/a/~2""#),
        AdapterError::BadPath { .. }
    ));
    assert!(matches!(
        compile_err("response = \"xml\"\nreason_path = \"/r//e\""),
        AdapterError::BadPath {
            key: "reason_path",
            ..
        }
    ));
    for path in ["/response/@price", "/r/p[1]", "/r/*"] {
        let e = compile_err(&format!("response = \"xml\"\nbid_path = \"{path}\""));
        assert!(e.to_string().contains("names elements only"), "{path}: {e}");
    }
    let deep = "/a".repeat(MAX_PATH_DEPTH + 1);
    assert!(matches!(
        compile_err(&format!("bid_path = \"{}\"", deep)),
        AdapterError::BadPath { .. }
    ));
    let msg: String = compile_err(r#"request = "soap""#).into();
    assert!(msg.contains("adapter.request"), "{}", msg);
}

/// Whatever a buyer answers, reading it neither panics nor yields a bid outside (0, $10M].
#[test]
fn mutated_answers_are_read_without_panic_and_bids_stay_in_range() {
    let xml = legacy();
    let json = json_answers();
    let xml_answers: [&[u8]; 3] = [
        br#"<?xml version="1.0"?><response><status>Matched</status><price>42.50</price><lead_id>LX-9</lead_id></response>"#,
        b"<response><![CDATA[x]]><!-- c --><price>1&amp;2</price><error>dup &lt;x&gt;</error></response>",
        b"\xEF\xBB\xBF<response a='1' b=\"2\"><price/><status>Accepted</status></response>",
    ];
    let json_answers: [&[u8]; 2] = [
        br#"{"result": {"offer": {"amount": 12.34, "id": 77}, "state": "OK"}}"#,
        br#"{"result": {"offer": {"amount": "9.5", "id": "a\"b\u00e9"}, "state": "no", "why": ["x", {"y": null}]}}"#,
    ];
    const SPECIAL: &[u8] = b"<>/=&;!?[]-\"'{}:,.0123456789e+-\\ \x00\xc3\xa9";
    let mut rng = crate::test_rng::Rng(0x510E_527F_ADE6_82D1);
    for round in 0..40_000 {
        let (a, base) = if round % 2 == 0 {
            (&xml, xml_answers[round / 2 % xml_answers.len()])
        } else {
            (&json, json_answers[round / 2 % json_answers.len()])
        };
        let answer = rng.mutate(base, SPECIAL);
        if let PingOutcome::Bid { cents, .. } = a.parse_bid(200, &answer) {
            assert!(
                cents > 0 && cents <= crate::money::MAX_CENTS,
                "{cents} from {:?}",
                text(&answer)
            );
        }
        // A post's answer is read the same way; any outcome will do, so long as it is one.
        let _ = a.parse_post(200, &answer);
    }
}

#[test]
fn an_adapter_bid_id_too_long_to_quote_back_is_invalid() {
    let a = adapter("response = \"json\"\nbid_path = \"/bid\"\nbid_id_path = \"/id\"");
    let long = "x".repeat(crate::lead::MAX_BID_ID_BYTES + 1);
    let body = format!(r#"{{"bid": 3, "id": "{long}"}}"#);
    assert!(matches!(
        a.parse_bid(200, body.as_bytes()),
        PingOutcome::Invalid(_)
    ));
    let fits = "x".repeat(crate::lead::MAX_BID_ID_BYTES);
    let body = format!(r#"{{"bid": 3, "id": "{fits}"}}"#);
    assert_eq!(a.parse_bid(200, body.as_bytes()), bid(300, Some(&fits)));
}

/// A bid id whose escape names no character (a lone surrogate) cannot be quoted back as the
/// buyer's own text: the answer is invalid, as an XML id with a reference left unexpanded is,
/// and a pair that names one character is that character.
#[test]
fn an_adapter_bid_id_with_a_lone_surrogate_is_invalid() {
    let a =
        adapter("response = \"json\"\nbid_path = \"/data/0/bid\"\nbid_id_path = \"/data/0/id\"");
    let body = br#"{"data":[{"bid":14.1,"id":"\ud83d"}]}"#;
    assert_eq!(
        a.parse_bid(200, body),
        PingOutcome::Invalid("unparsable answer".into())
    );
    let body = br#"{"data":[{"bid":14.1,"id":"\ud83d\ude00"}]}"#;
    assert_eq!(a.parse_bid(200, body), bid(1410, Some("\u{1F600}")));
}

/// A bid id that is a boolean, an object or an array is refused, as from a native buyer: the
/// post would quote back an id the buyer never gave.
#[test]
fn an_adapter_bid_id_that_is_not_a_string_or_a_number_is_invalid() {
    let a = adapter("response = \"json\"\nbid_path = \"/data/bid\"\nbid_id_path = \"/data/id\"");
    for id in ["true", "false", r#"{"a": 1}"#, "[1]", " [] "] {
        let body = format!(r#"{{"data": {{"bid": 8.6, "id": {id}}}}}"#);
        assert_eq!(
            a.parse_bid(200, body.as_bytes()),
            PingOutcome::Invalid("bid_id is not a string or a number".into()),
            "{body}"
        );
    }
    for (id, want) in [
        (r#""b-1""#, Some("b-1")),
        ("77", Some("77")),
        ("null", None),
    ] {
        let body = format!(r#"{{"data": {{"bid": 8.6, "id": {id}}}}}"#);
        assert_eq!(a.parse_bid(200, body.as_bytes()), bid(860, want), "{body}");
    }
    let body = r#"{"data": {"bid": 8.6}}"#;
    assert_eq!(a.parse_bid(200, body.as_bytes()), bid(860, None));
}

#[test]
fn a_ping_template_leaves_out_personal_members_nested_in_a_field() {
    let a = adapter(
        r#"request = "json"
response = "json"
bid_path = "/bid"
ping_body = { zip = "{lead.zip}", vehicle = "{lead.vehicle}", note = "v: {lead.vehicle}" }
post_body = { vehicle = "{lead.vehicle}" }"#,
    );
    let lead = Fields::from_json(
        r#"{"zip":"77002","vehicle":{"year":2019,"vin":"1HGCM82633A004352","owner":{"full_name":"Ana"}}}"#,
    )
    .unwrap();
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    let v: Value = serde_json::from_slice(&out).expect("ping is JSON");
    assert_eq!(
        v,
        json!({"zip": "77002", "vehicle": {"year": 2019, "owner": {}},
               "note": "v: {\"year\":2019,\"owner\":{}}"})
    );
    out.clear();
    a.write_post(&mut out, &post_ctx(&lead, None));
    assert!(text(&out).contains("1HGCM82633A004352"));
}

/// `{test}` tells a template buyer the lead is a seller's test, as the native `"test"` does.
#[test]
fn the_test_placeholder_marks_a_test_lead() {
    let form = adapter(
        r#"request = "form"
ping_body = { T = "{test}" }
bid_path = "/bid"
post_body = { T = "{test}", S = "{lead.state}" }"#,
    );
    let json = adapter(
        r#"request = "json"
post_body = { test = "{test}", note = "test={test}" }"#,
    );
    let lead = obj(json!({"state": "TX"}));
    for test in [false, true] {
        let ctx = Ctx {
            test,
            ..post_ctx(&lead, None)
        };
        let mut out = Vec::new();
        form.write_ping(
            &mut out,
            &Ctx {
                test,
                ..ping_ctx(&lead)
            },
            &ping_fields(),
        );
        assert_eq!(text(&out), format!("T={test}"));
        out.clear();
        form.write_post(&mut out, &ctx);
        assert_eq!(text(&out), format!("S=TX&T={test}"));
        out.clear();
        json.write_post(&mut out, &ctx);
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v, json!({"test": test, "note": format!("test={test}")}));
    }
}

/// `{lead.vehicle.year}` reads into nested objects as buyer filters do; in a ping the object
/// it reads from is scrubbed of personal members first.
#[test]
fn a_dotted_placeholder_reads_into_nested_objects() {
    let a = adapter(
        r#"request = "json"
bid_path = "/bid"
ping_body = { year = "{lead.vehicle.year}", owner = "{lead.vehicle.owner_contact}", make = "{lead.vehicle.make}", deep = "{lead.vehicle.engine.cc}" }
post_body = { year = "{lead.vehicle.year}", owner = "{lead.vehicle.owner_contact}", text = "y{lead.vehicle.year}" }"#,
    );
    let lead = obj(
        json!({"state": "TX", "vehicle": {"year": 2018, "make": "Honda \"Fit\"",
        "owner_contact": "ana@example.com", "engine": {"cc": 1500}}}),
    );
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    let v: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(
        v,
        json!({"year": 2018, "owner": null, "make": "Honda \"Fit\"", "deep": 1500})
    );
    out.clear();
    a.write_post(&mut out, &post_ctx(&lead, None));
    let v: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(
        v,
        json!({"year": 2018, "owner": "ana@example.com", "text": "y2018"})
    );
    // A personal name anywhere in the path is refused in a ping.
    assert!(matches!(
        compile_err("bid_path = \"/b\"\nping_body = { a = \"{lead.vehicle.email}\" }"),
        AdapterError::NotAllowedInPing { .. }
    ));
}

/// A seller's member named with a dot, `"vehicle.year"`, is no ping field when only `vehicle`
/// is: a ping's `{lead.vehicle.year}` reads into `vehicle`, never that member, whatever it
/// holds (a post reads it, as buyer filters do). Named in `ping_fields` itself, it is read.
#[test]
fn a_dotted_placeholder_in_a_ping_reads_no_member_that_is_not_a_ping_field() {
    let a = adapter(
        r#"request = "form"
bid_path = "/bid"
ping_body = { year = "{lead.vehicle.year}", other = "{lead.state.x}", first = "{lead.vehicle.}" }
post_body = { year = "{lead.vehicle.year}" }"#,
    );
    let lead = obj(json!({"state": "TX", "vehicle": {"year": 2018},
        "vehicle.year": "Ana Diaz, 12 Main St", "state.x": "Diaz", "vehicle.": "12 Main St"}));
    let mut out = Vec::new();
    a.write_ping(&mut out, &ping_ctx(&lead), &ping_fields());
    assert_eq!(text(&out), "first=&other=&year=2018");
    out.clear();
    a.write_post(&mut out, &post_ctx(&lead, None));
    assert_eq!(text(&out), "year=Ana+Diaz%2C+12+Main+St");
    out.clear();
    let mut fields = ping_fields();
    fields.push("vehicle.year".into());
    let lead = obj(json!({"vehicle": {"year": 2018}, "vehicle.year": "2019"}));
    a.write_ping(&mut out, &ping_ctx(&lead), &fields);
    assert_eq!(text(&out), "first=&other=&year=2019");
    // "vehicle.year" a ping field, `vehicle` not: nothing is read into `vehicle`.
    out.clear();
    fields.retain(|f| f != "vehicle");
    let lead = obj(json!({"vehicle": {"year": 2018}}));
    a.write_ping(&mut out, &ping_ctx(&lead), &fields);
    assert_eq!(text(&out), "first=&other=&year=");
}

#[test]
fn an_xml_answer_is_read_in_its_declared_encoding() {
    let a = legacy();
    // ISO-8859-1: the byte 0xE9 is 'é', quoted back as the buyer wrote it.
    let answer = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><response><price>15.75</price><lead_id>X-\xE9</lead_id></response>";
    assert_eq!(a.parse_bid(200, answer), bid(1575, Some("X-\u{e9}")));
    let answer = b"<?xml version='1.0' encoding='latin1'?><response><price>2</price></response>";
    assert_eq!(a.parse_bid(200, answer), bid(200, None));
    // The same byte in a document that says UTF-8, or says nothing: not text, so not a bid
    // whose id would be quoted back changed.
    for answer in [
        &b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><response><price>15.75</price><lead_id>X-\xE9</lead_id></response>"[..],
        b"<response><price>15.75</price><lead_id>X-\xE9</lead_id></response>",
    ] {
        assert_eq!(
            a.parse_bid(200, answer),
            PingOutcome::Invalid("unparsable answer".into())
        );
    }
    // An encoding the exchange does not read.
    let answer =
        b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><response><price>1</price></response>";
    assert_eq!(
        a.parse_bid(200, answer),
        PingOutcome::Invalid("unparsable answer".into())
    );
    // UTF-8 text is read whole.
    let answer = "<response><price>3</price><lead_id>Ü-7</lead_id></response>";
    assert_eq!(a.parse_bid(200, answer.as_bytes()), bid(300, Some("Ü-7")));
}

#[test]
fn a_badly_written_bid_is_not_a_number_and_a_huge_one_out_of_range() {
    let a = legacy();
    for price in ["+15", "15.", ".5", "1,000.00", "$4"] {
        let answer = format!("<response><price>{price}</price></response>");
        assert_eq!(
            a.parse_bid(200, answer.as_bytes()),
            PingOutcome::Invalid("bid is not a number".into()),
            "{price}"
        );
    }
    for price in ["1e12", "1e400", "20000000"] {
        let answer = format!("<response><price>{price}</price></response>");
        assert_eq!(
            a.parse_bid(200, answer.as_bytes()),
            PingOutcome::Invalid("bid out of range".into()),
            "{price}"
        );
    }
}
