//! `Idempotency-Key`: a seller that lost an answer sends the same request again under the
//! same key and hears the first answer, the consumer auctioned and sold once.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn bidder(name: &str, cents: i64, delay_ms: u64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None).after_ms(delay_ms),
        Kind::Post => Reply::accepted(),
    })
}

/// A request as `Client::request` makes it, with `extra` header lines.
fn request_with(path: &str, key: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: gavel\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nAuthorization: Bearer {key}\r\n",
        body.len()
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

fn keyed(c: &mut Client, path: &str, idem: &str, body: &str) -> Response {
    let header = format!("Idempotency-Key: {idem}");
    c.send_raw(&request_with(path, KEY, &[&header], body.as_bytes()));
    c.read_response().expect("an answer")
}

/// One request on its own connection, read raw: (head, body).
fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return (head, buf[end + 4..end + 4 + len].to_vec());
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The same lead sent again under its key is answered as the first time, field for field,
/// and no buyer hears of it twice; without the key the same consumer is a duplicate; the key
/// with another body is refused; another seller's key of the same spelling is its own.
#[test]
fn a_retry_under_its_key_hears_the_first_answer_and_sells_nothing_twice() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "dedupe_days = 30", |_| String::new()));
    let mut c = ex.client();
    let first = keyed(&mut c, "/v1/leads", "order-17", LEAD);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let answer = first.json();
    assert_eq!(answer["status"], "sold", "{answer}");

    let again = keyed(&mut c, "/v1/leads", "order-17", LEAD);
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), answer);
    let (head, body) = raw(
        ex.addr,
        &request_with(
            "/v1/leads",
            KEY,
            &["Idempotency-Key: order-17"],
            LEAD.as_bytes(),
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Idempotent-Replayed: true"), "{head}");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), answer);
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 1));

    // Another request under the key: refused, nothing auctioned.
    let other = LEAD.replace("7135550147", "7135550148");
    let r = keyed(&mut c, "/v1/leads", "order-17", &other);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"]["code"], "idempotency_key_reused", "{v}");
    let first_id = answer["lead_id"].as_str().unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains(first_id),
        "{v}"
    );
    // Without a key, the consumer is the duplicate it is.
    let r = c.lead(LEAD);
    assert_eq!(r.json()["error"]["code"], "duplicate");
    // Another seller's "order-17" is not this seller's: its request runs (and is refused for
    // a campaign it may not post to).
    let header = "Idempotency-Key: order-17";
    c.send_raw(&request_with(
        "/v1/leads",
        OTHER_KEY,
        &[header],
        LEAD.as_bytes(),
    ));
    assert_eq!(c.read_response().unwrap().status, 403);
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 1));
}

/// A seller that hung up while its lead was in the auction sends it again: while the first
/// is still running it hears 409 `in_progress` naming the lead, then the first one's sale.
#[test]
fn a_retry_during_the_auction_hears_in_progress_then_the_sale() {
    let fleet = Fleet::start(vec![bidder("slow", 7000, 1000)]).unwrap();
    let toml = config(&fleet, "", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 3000");
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let header = "Idempotency-Key: 5f0c2a9e-retry";
    c.send_raw(&request_with("/v1/leads", KEY, &[header], LEAD.as_bytes()));
    let t = Instant::now();
    while fleet.pings(0) == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let ping: Value = serde_json::from_slice(&fleet.ping_bodies(0)[0]).unwrap();
    let id = ping["ping_id"].as_str().unwrap().to_string();

    let mut c = ex.client();
    let r = keyed(&mut c, "/v1/leads", "5f0c2a9e-retry", LEAD);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    let v = r.json();
    assert_eq!(
        (
            v["lead_id"].as_str(),
            v["status"].as_str(),
            v["error"]["code"].as_str()
        ),
        (Some(id.as_str()), Some("pending"), Some("in_progress")),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let r = keyed(&mut c, "/v1/leads", "5f0c2a9e-retry", LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (v["lead_id"].as_str(), v["status"].as_str()),
        (Some(id.as_str()), Some("sold"))
    );
    assert_eq!(v["price"], 70.0);
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 1));
}

/// A ping whose id a seller learnt from a retry's 409 `in_progress` holds nothing until its
/// auction answers: its post hears 404 `unknown_ping` saying so, and, once the ping answered,
/// sells at the offer.
#[test]
fn a_ping_posted_before_its_auction_answered_is_told_to_wait() {
    let fleet = Fleet::start(vec![bidder("slow", 7000, 800)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 3000");
    let ex = Exchange::start(&toml);
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let mut first = ex.client();
    let header = "Idempotency-Key: ping-early-1";
    first.send_raw(&request_with("/v1/ping", KEY, &[header], ping.as_bytes()));
    let t = Instant::now();
    while fleet.pings(0) == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = ex.client();
    let r = keyed(&mut c, "/v1/ping", "ping-early-1", ping);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["lead_id"].as_str().unwrap().to_string();
    let full: Value = serde_json::from_str(LEAD).unwrap();
    let post = serde_json::to_vec(
        &serde_json::json!({"ping_id": id, "lead": full["lead"], "consent": full["consent"]}),
    )
    .unwrap();
    let early = c.post("/v1/post", Some(KEY), &post);
    assert_eq!(
        early.status,
        404,
        "{}",
        String::from_utf8_lossy(&early.body)
    );
    let v = early.json();
    assert_eq!(v["error"]["code"], "unknown_ping", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("not answered yet"), "{v}");
    let offer = first.read_response().expect("the ping's answer").json();
    assert_eq!(offer["ping_id"].as_str(), Some(id.as_str()), "{offer}");
    let sold = c.post("/v1/post", Some(KEY), &post).json();
    assert_eq!(sold["status"], "sold", "{sold}");
    assert_eq!(sold["price"], 70.0);
    assert_eq!(sold["payout"], offer["payout"], "{sold} {offer}");
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 1));
}

/// A lead refused for its content is refused again under its key, with its status, id and
/// code; a ping's retry hears the ping's offer.
#[test]
fn a_refusal_and_a_ping_are_answered_again_as_they_were() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let mut c = ex.client();
    let bad_zip = LEAD.replace("\"77002\"", "\"7700\"");
    let first = keyed(&mut c, "/v1/leads", "bad-1", &bad_zip);
    assert_eq!(first.status, 422);
    let refused = first.json();
    std::thread::sleep(Duration::from_millis(20));
    let again = keyed(&mut c, "/v1/leads", "bad-1", &bad_zip);
    assert_eq!(
        again.status,
        422,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    let v = again.json();
    assert_eq!(v["lead_id"], refused["lead_id"]);
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["error"]["code"], "invalid_field");
    assert_eq!(v["error"]["field"], "lead.zip");
    assert_eq!(v, refused, "field for field, the message too");

    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let offer = keyed(&mut c, "/v1/ping", "ping-1", ping).json();
    assert_eq!(offer["status"], "bid", "{offer}");
    let again = keyed(&mut c, "/v1/ping", "ping-1", ping);
    assert_eq!(again.status, 200);
    let v = again.json();
    assert_eq!(
        (v["ping_id"].clone(), v["status"].clone()),
        (offer["ping_id"].clone(), offer["status"].clone())
    );
    assert_eq!(v["payout"], offer["payout"]);
    // A post refused for its content is told its refusal again, though its ping stays
    // postable.
    let mut full: Value = serde_json::from_str(LEAD).unwrap();
    full["lead"]["state"] = "CA".into();
    let wrong = serde_json::json!({"ping_id": offer["ping_id"], "lead": full["lead"], "consent": full["consent"]}).to_string();
    let first = keyed(&mut c, "/v1/post", "post-1", &wrong);
    assert_eq!(first.status, 422);
    std::thread::sleep(Duration::from_millis(20));
    let again = keyed(&mut c, "/v1/post", "post-1", &wrong);
    assert_eq!(again.status, 422);
    assert_eq!(again.json(), first.json());
    assert_eq!(again.json()["error"]["code"], "ping_mismatch");
    // The same body on /v1/leads is another request.
    let r = keyed(&mut c, "/v1/leads", "ping-1", ping);
    assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
    assert_eq!(fleet.pings(0), 1);
    // Once the ping is posted and sold, a retry of the ping still hears the ping's answer,
    // not the post's: a ping client reads `bid` or `no_bid`.
    let full: Value = serde_json::from_str(LEAD).unwrap();
    let right = serde_json::json!({"ping_id": offer["ping_id"], "lead": full["lead"], "consent": full["consent"]}).to_string();
    let sold = c.post("/v1/post", Some(KEY), right.as_bytes()).json();
    assert_eq!(sold["status"], "sold", "{sold}");
    let again = keyed(&mut c, "/v1/ping", "ping-1", ping);
    assert_eq!(again.status, 200);
    let v = again.json();
    assert_eq!(v["ping_id"], offer["ping_id"], "{v}");
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(v["payout"], offer["payout"], "{v}");
    assert!(v.get("sales").is_none(), "{v}");
    assert_eq!(fleet.pings(0), 1);
}

/// Keys are read back from the journal at a start: a retry after a restart still hears the
/// first answer.
#[test]
fn keys_outlive_a_restart() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new());
    let answer = {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        let v = keyed(&mut c, "/v1/leads", "order-99", LEAD).json();
        assert_eq!(v["status"], "sold", "{v}");
        v
    };
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let r = keyed(&mut c, "/v1/leads", "order-99", LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), answer);
    let other = LEAD.replace("7135550147", "7135550148");
    let r = keyed(&mut c, "/v1/leads", "order-99", &other);
    assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 1));
}

/// A key that is empty, too long or not printable ASCII is refused 400 and the connection
/// still serves; two keys on one request are malformed HTTP.
#[test]
fn malformed_keys_are_refused() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let long = "k".repeat(129);
    for k in ["", long.as_str()] {
        let r = keyed(&mut c, "/v1/leads", k, LEAD);
        assert_eq!(r.status, 400, "{k:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_idempotency_key");
    }
    assert_eq!(fleet.pings(0), 0);
    c.send_raw(&request_with(
        "/v1/leads",
        KEY,
        &["Idempotency-Key: a", "Idempotency-Key: b"],
        LEAD.as_bytes(),
    ));
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert!(!r.keep_alive);
    assert_eq!(fleet.pings(0), 0);
}

/// At a start, the keys come back from the journal: a lead answered before the stop is
/// answered again, one the stop cut off before any post frees its key (its retry runs as a
/// new lead), and a key older than a day is forgotten.
#[test]
fn a_start_puts_back_the_keys_of_answered_leads_only() {
    use gavel::journal::{LeadFlow, LeadStatus, RecordRef};
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new());
    let dir = journal_dir(&toml);
    let now_us = chrono::Utc::now().timestamp_micros() as u64;
    let answered = ulid::Ulid::new().to_string();
    let cut_off = ulid::Ulid::new().to_string();
    let day_old = ulid::Ulid::from_parts(now_us / 1000 - 25 * 3_600_000, 7).to_string();
    {
        let j = open_journal(dir.clone());
        let received = |id, key| RecordRef::LeadReceived {
            lead_id: id,
            seller: "seller-1",
            campaign: "auto",
            source: Some("fb-17"),
            test: false,
            lead_json: LEAD.as_bytes(),
            flow: Some(LeadFlow::Lead),
            idempotency_key: Some(key),
        };
        let recs = [
            (now_us - 25 * 3_600_000_000, received(&day_old, "k-old")),
            (now_us - 3_000_000, received(&answered, "k-answered")),
            (
                now_us - 2_700_000,
                RecordRef::LeadAnswered {
                    lead_id: &answered,
                    campaign: "auto",
                    seller: "seller-1",
                    status: LeadStatus::Unsold,
                    price_cents: 0,
                    payout_cents: 0,
                    elapsed_us: 300_000,
                    bids: Some(0),
                    reason: Some("no_bids"),
                },
            ),
            (now_us - 2_000_000, received(&cut_off, "k-cut")),
            (
                now_us - 1_999_000,
                RecordRef::PingSent {
                    lead_id: &cut_off,
                    buyer: "top",
                },
            ),
        ];
        for (ts, r) in &recs {
            j.append(*ts, r).unwrap();
        }
    }
    let ex = Exchange::start(&toml);
    // The leads cut off before any post (the day-old one too) are reported once, and a lookup
    // says they were interrupted.
    assert_eq!(ex.handle.as_ref().unwrap().recovery().1.cut_off_unposted, 2);
    let mut c = ex.client();
    c.send_raw(&Client::request(
        "GET",
        &format!("/v1/leads/{cut_off}"),
        Some(KEY),
        b"",
    ));
    let v = c.read_response().unwrap().json();
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("interrupted"), Some("never_posted")),
        "{v}"
    );
    let r = keyed(&mut c, "/v1/leads", "k-answered", LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (
            v["lead_id"].as_str(),
            v["status"].as_str(),
            v["reason"].as_str()
        ),
        (Some(answered.as_str()), Some("unsold"), Some("no_bids")),
        "{v}"
    );
    assert_eq!(fleet.pings(0), 0);
    for key in ["k-cut", "k-old"] {
        let v = keyed(&mut c, "/v1/leads", key, LEAD).json();
        assert_eq!(v["status"], "sold", "{key}: {v}");
        assert_ne!(v["lead_id"].as_str(), Some(cut_off.as_str()));
        assert_ne!(v["lead_id"].as_str(), Some(day_old.as_str()));
    }
    assert_eq!(fleet.pings(0), 2);
    // The next start does not report it again.
    drop(c);
    drop(ex);
    let ex = Exchange::start(&toml);
    assert_eq!(ex.handle.as_ref().unwrap().recovery().1.cut_off_unposted, 0);
}

/// `gavel-load --idempotency-keys`: every lead carries a key of its own, and the exchange
/// journals each with its lead.
#[test]
fn the_load_tool_sends_a_key_with_each_lead() {
    use gavel::journal::{Reader, Record};
    use gavel::sim::load::{self, LoadSpec};
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    // The tool's leads give the campaign id as their consent's vertical.
    let toml = config(&fleet, "", |_| String::new()).replace(
        "id = \"auto\"\nvertical = \"auto_insurance\"",
        "id = \"auto\"\nvertical = \"auto\"",
    );
    let dir = journal_dir(&toml);
    let ex = Exchange::start(&toml);
    let mut spec = LoadSpec::new(ex.addr, KEY, "auto");
    spec.rate_per_s = 100;
    spec.duration = Duration::from_millis(500);
    spec.warmup = Duration::ZERO;
    spec.connections = 4;
    spec.idempotency_keys = true;
    let report = load::run(&spec).unwrap();
    assert_eq!(report.answered, 50, "{report}");
    assert_eq!(report.sold, 50, "{report}");
    drop(ex);
    let mut keys = std::collections::HashSet::new();
    for e in Reader::open_since(std::path::Path::new(&dir), 0).unwrap() {
        if let Record::LeadReceived {
            idempotency_key, ..
        } = e.unwrap().record
        {
            let k = idempotency_key.expect("every lead carries a key");
            assert!(k.starts_with("gavel-load-"), "{k}");
            keys.insert(k);
        }
    }
    assert_eq!(keys.len(), 50);
}

/// An older segment cut short (or corrupt) takes its own records, not a later segment's: a
/// lead whose records are all in a whole segment after it is still looked up, and its
/// `Idempotency-Key` retry still answered, as it was answered; a retry of a lead whose records
/// were all in the lost bytes is told its history was lost, not that it is in progress.
#[test]
fn damage_in_an_older_segment_leaves_later_leads_answerable() {
    let fleet = Fleet::start(vec![BuyerSpec::new("only").with_responder(
        |k, _| match k {
            Kind::Ping => Reply::bid(2000, None),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap();
    let toml = config(&fleet, "", |_| String::new())
        .replace("sync = \"os\"", "sync = \"os\"\nsegment_bytes = 1048576");
    let dir = journal_dir_of(&toml);
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    // 40 KB of notes a lead: a 1 MiB segment holds about 25.
    let notes = "n".repeat(40_000);
    let lead = |i: usize| {
        LEAD.replace("7135550147", &format!("71355{:05}", i))
            .replace("ana@example.com", &format!("ana{i}@example.com"))
            .replace(
                "\"insured\": true",
                &format!("\"insured\": true, \"notes\": \"{notes}\""),
            )
    };
    // A lead wholly in segment 0, which the damage takes.
    let first = keyed(&mut c, "/v1/leads", "lost-with-segment-0", &lead(0)).json();
    assert_eq!(first["status"], "sold", "{first}");
    let first_at = Instant::now();
    let mut i = 1;
    while !dir.join("00000000000000000001.seg").exists() {
        assert_eq!(c.lead(&lead(i)).json()["status"], "sold");
        i += 1;
        assert!(i < 200, "the journal never rotated");
    }
    // A lead wholly in segment 1.
    c.lead(&lead(i));
    let body = lead(i + 1);
    let answer = keyed(&mut c, "/v1/leads", "after-the-damage", &body).json();
    assert_eq!(answer["status"], "sold", "{answer}");
    let id = answer["lead_id"].as_str().unwrap().to_string();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("00000000000000000000.seg"))
        .unwrap()
        .set_len(2000)
        .unwrap();
    let r = {
        c.send_raw(&Client::request(
            "GET",
            &format!("/v1/leads/{id}"),
            Some(KEY),
            b"",
        ));
        c.read_response().expect("an answer")
    };
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), answer);
    let again = keyed(&mut c, "/v1/leads", "after-the-damage", &body);
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json(), answer);
    // The lead whose records the damage took is not "in progress" to its retry: it is lost
    // history, not to be sent again, once it is well past its arrival.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(first_at.elapsed()));
    let lost = keyed(&mut c, "/v1/leads", "lost-with-segment-0", &lead(0));
    assert_eq!(lost.status, 200, "{}", String::from_utf8_lossy(&lost.body));
    let lost = lost.json();
    assert_eq!(lost["lead_id"], first["lead_id"], "{lost}");
    assert_eq!(lost["status"], "interrupted", "{lost}");
    assert_eq!(lost["error"]["code"], "history_lost", "{lost}");
    // `journal show` tells the lead's history, and warns of the damage.
    drop(c);
    drop(ex);
    let out = gavel()
        .args(["journal", "show", "--dir"])
        .arg(&dir)
        .arg(&id)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("sale") && stdout.contains("lead_answered"),
        "{stdout}"
    );
    assert!(stderr.contains("warning:"), "{stderr}");
    assert_eq!(out.status.code(), Some(1));
}

/// Fill the exchange's hold with pings that expire in a minute, up to `n` in all.
fn fill_hold(ex: &Exchange, n: usize) {
    let shared = ex.handle.as_ref().expect("running").shared().clone();
    let snap = shared.runtime().snap.clone();
    let mut held = shared.held.lock();
    let expires = Instant::now() + Duration::from_secs(60);
    let mut i = held.len();
    while held.len() < n {
        let ping = gavel::net::HeldPing::empty(snap.clone(), expires);
        assert!(held.insert(format!("filler-{i}"), ping, Instant::now()));
        i += 1;
    }
}

/// A ping with no room to hold its bids is turned away 503 `overloaded` with `Retry-After`,
/// before its buyers are pinged when the hold is full at its arrival, and after its auction
/// when the hold filled meanwhile; either way its `Idempotency-Key` is free again, so the
/// seller's retry runs as a new ping and gets its offer once there is room (not a 409 for
/// ever); a lookup of the one turned away after its auction says so; it counts under
/// `refused`, not as a ping answered.
#[test]
fn a_ping_turned_away_for_a_full_hold_leaves_its_key_free_for_the_retry() {
    // The buyer takes 300 ms to bid, so the hold can fill while the auction runs.
    let fleet = Fleet::start(vec![bidder("top", 9000, 300)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 2000");
    let ex = Exchange::start(&toml);
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let full = gavel::net::MAX_HELD_PINGS;
    let header = "Idempotency-Key: ping-full";
    let turned_away = |head: &str, body: &[u8]| {
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(head.lines().any(|l| l == "Retry-After: 1"), "{head}");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["error"]["code"], "overloaded", "{v}");
        assert_eq!(v["error"]["message"], "too many pings held", "{v}");
        v
    };

    // Full at its arrival: no buyer hears of it.
    fill_hold(&ex, full);
    let (head, body) = raw(
        ex.addr,
        &request_with("/v1/ping", KEY, &[header], ping.as_bytes()),
    );
    turned_away(&head, &body);
    assert_eq!(fleet.pings(0), 0);

    // Room at its arrival, none when its bid is to be held.
    ex.handle
        .as_ref()
        .unwrap()
        .shared()
        .held
        .lock()
        .sweep(Instant::now() + Duration::from_secs(61));
    fill_hold(&ex, full - 1);
    let addr = ex.addr;
    let first = std::thread::spawn(move || {
        raw(
            addr,
            &request_with("/v1/ping", KEY, &[header], ping.as_bytes()),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while fleet.pings(0) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    fill_hold(&ex, full);
    let (head, body) = first.join().unwrap();
    let v = turned_away(&head, &body);
    assert_eq!(fleet.pings(0), 1);
    let first_id = v["lead_id"].as_str().unwrap_or("").to_string();
    // Looked up, it is the refusal it was.
    let mut c = ex.client();
    c.send_raw(
        format!("GET /v1/leads/{first_id} HTTP/1.1\r\nHost: gavel\r\nAuthorization: Bearer {KEY}\r\n\r\n")
            .as_bytes(),
    );
    let looked = c.read_response().expect("an answer");
    assert_eq!(
        looked.json()["error"]["code"],
        "overloaded",
        "{}",
        String::from_utf8_lossy(&looked.body)
    );

    assert_eq!(
        ex.handle.as_ref().unwrap().stats().refused.get(&503),
        Some(&2)
    );

    // After a restart (the hold empty again: its fillers were never journaled), the retry
    // under the same key is a new ping, offered the bid: the start gave the key back too.
    drop(ex);
    let ex = Exchange::start(&toml);
    let (head, body) = raw(
        ex.addr,
        &request_with("/v1/ping", KEY, &[header], ping.as_bytes()),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "bid", "{v}");
    assert_ne!(v["ping_id"], first_id.as_str());
    // And from then on the key names that ping.
    let (head, again) = raw(
        ex.addr,
        &request_with("/v1/ping", KEY, &[header], ping.as_bytes()),
    );
    assert!(head.contains("Idempotent-Replayed: true"), "{head}");
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(
        (&again["ping_id"], &again["payout"]),
        (&v["ping_id"], &v["payout"])
    );

    let stats = ex.handle.as_ref().unwrap().stats();
    let auto = &stats.campaigns["auto"];
    // The turned-away ping is no ping answered, before the restart or after it.
    assert_eq!((auto.pings, auto.pings_bid, auto.pings_refused), (1, 1, 0));
}
