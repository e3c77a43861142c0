//! Cost of the lead's wire formats on the exchange's hot path: reading and validating a seller's
//! lead, building the ping body (once per lead) and a post body (once per sale), and reading a
//! buyer's bid (once per pinged buyer). Output buffers are reused across iterations, as the
//! worker reuses them across leads.
//!
//! Run: `cargo bench --bench lead -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gavel::auction::PingOutcome;
use gavel::config::{self, Campaign};
use gavel::lead;

/// The contract's complete example: its `auto-insurance` campaign is the one benchmarked.
const CONFIG: &str = include_str!("../config/exchange.example.toml");

/// A typical direct-post lead, about 900 bytes of JSON, shaped like the contract's example with
/// the extra fields real auto-insurance leads carry.
const LEAD_BODY: &str = r#"{"campaign":"auto-insurance","source":"fb-17","test":false,"lead":{"first_name":"Ana","last_name":"Diaz","email":"ana.diaz@example.com","phone":"7135550147","street":"12 Main St","city":"Houston","state":"TX","zip":"77002","lead_type":"auto","age":34,"insured":true,"vehicle_year":2019,"vehicle_make":"Toyota","vehicle_model":"Camry","current_carrier":"State Farm","credit":"good","homeowner":true,"marital_status":"married","ip_address":"203.0.113.7","user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"},"consent":{"trustedform_cert_url":"https://cert.trustedform.com/2f1e0c4b8a9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f","jornaya_leadid":"5A1B2C3D-4E5F-6A7B-8C9D-0E1F2A3B4C5D","vertical":"auto_insurance","disclosed_buyers":["acme-ins","blue-ins"],"consented_at":"2026-11-25T17:59:01Z"}}"#;

/// What the mock buyers answer: a bid with an id, and the smallest no-bid.
const BID_BODY: &[u8] = br#"{"bid":42.5,"bid_id":"b-77"}"#;
const NO_BID_BODY: &[u8] = br#"{"bid":0}"#;

const PING_ID: &str = "01JDQ6X8W2K3M4N5P6Q7R8S9T0";

fn campaign() -> Campaign {
    let snap = match config::parse(CONFIG) {
        Ok(s) => s,
        Err(e) => panic!("the contract's example config must load: {e:?}"),
    };
    match snap.campaign_by_id("auto-insurance") {
        Some(i) => snap.campaigns[i].clone(),
        None => panic!("the example config has an auto-insurance campaign"),
    }
}

fn bench_lead(c: &mut Criterion) {
    let campaign = campaign();
    let mut group = c.benchmark_group("lead");

    group.throughput(Throughput::Bytes(LEAD_BODY.len() as u64));
    group.bench_function("parse_request", |b| {
        b.iter(
            || match lead::parse_request(black_box(LEAD_BODY.as_bytes())) {
                Ok(req) => black_box(req),
                Err(e) => panic!("the lead must parse: {e:?}"),
            },
        );
    });

    let req = match lead::parse_request(LEAD_BODY.as_bytes()) {
        Ok(r) => r,
        Err(e) => panic!("the lead must parse: {e:?}"),
    };
    group.bench_function("validate", |b| {
        b.iter(|| match lead::validate(black_box(&req), &campaign) {
            Ok(()) => {}
            Err(e) => panic!("the lead must be valid: {e:?}"),
        });
    });

    group.bench_function("parse_and_validate", |b| {
        b.iter(|| {
            let req = match lead::parse_request(black_box(LEAD_BODY.as_bytes())) {
                Ok(r) => r,
                Err(e) => panic!("the lead must parse: {e:?}"),
            };
            match lead::validate(&req, &campaign) {
                Ok(()) => black_box(req),
                Err(e) => panic!("the lead must be valid: {e:?}"),
            }
        });
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("write_ping", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            lead::write_ping(&mut out, black_box(PING_ID), &campaign, &req, 780);
            black_box(out.len())
        });
    });

    group.bench_function("write_post", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            lead::write_post(
                &mut out,
                black_box(PING_ID),
                Some("b-77"),
                4250,
                &campaign,
                &req,
            );
            black_box(out.len())
        });
    });

    group.throughput(Throughput::Bytes(BID_BODY.len() as u64));
    group.bench_function("parse_bid", |b| {
        b.iter(|| match lead::parse_bid(200, black_box(BID_BODY)) {
            PingOutcome::Bid { cents, bid_id } => black_box((cents, bid_id)),
            other => panic!("the answer is a bid: {other:?}"),
        });
    });

    group.throughput(Throughput::Bytes(NO_BID_BODY.len() as u64));
    group.bench_function("parse_no_bid", |b| {
        b.iter(|| match lead::parse_bid(200, black_box(NO_BID_BODY)) {
            PingOutcome::NoBid => {}
            other => panic!("the answer is a no-bid: {other:?}"),
        });
    });

    group.finish();
}

criterion_group!(benches, bench_lead);
criterion_main!(benches);
