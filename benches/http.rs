//! Cost of the HTTP codec on the exchange's hot path: reading a seller's lead, reading a
//! buyer's bid, and writing a ping. Buffers are reused across iterations, as the event loop
//! reuses them across messages.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gavel::http::{write_request, Decoded, Limits, RequestDecoder, ResponseDecoder};

/// A typical direct-post lead, about 700 bytes of JSON.
const LEAD_BODY: &str = r#"{"campaign":"auto-insurance","source":"fb-17","test":false,"lead":{"first_name":"Ana","last_name":"Diaz","email":"ana.diaz@example.com","phone":"7135550147","street":"12 Main St","city":"Houston","state":"TX","zip":"77002","lead_type":"auto","age":34,"insured":true,"vehicle_year":2019,"vehicle_make":"Toyota","vehicle_model":"Camry","current_carrier":"State Farm","credit":"good","homeowner":true,"marital_status":"married","ip_address":"203.0.113.7","user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"},"consent":{"trustedform_cert_url":"https://cert.trustedform.com/2f1e0c4b8a9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f","jornaya_leadid":"5A1B2C3D-4E5F-6A7B-8C9D-0E1F2A3B4C5D","vertical":"auto_insurance","disclosed_buyers":["acme-ins","blue-ins"],"consented_at":"2026-11-25T17:59:01Z"}}"#;

const BID_BODY: &str = r#"{"bid": 42.5, "bid_id": "b-77"}"#;

fn seller_request() -> Vec<u8> {
    format!(
        "POST /v1/leads HTTP/1.1\r\nHost: gavel.example.com\r\nUser-Agent: lead-router/2.3\r\n\
         Accept: application/json\r\nAuthorization: Bearer sk-acme-0123456789\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        LEAD_BODY.len(),
        LEAD_BODY
    )
    .into_bytes()
}

fn buyer_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        BID_BODY.len(),
        BID_BODY
    )
    .into_bytes()
}

fn bench_codec(c: &mut Criterion) {
    let request = seller_request();
    let mut group = c.benchmark_group("http");

    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("parse_seller_post", |b| {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut body = Vec::with_capacity(4096);
        b.iter(|| match decoder.decode(black_box(&request), &mut body) {
            Ok(Decoded::Complete { head, consumed }) => black_box((head, consumed)),
            other => panic!("the seller request must parse whole: {other:?}"),
        });
    });

    let response = buyer_response();
    group.throughput(Throughput::Bytes(response.len() as u64));
    group.bench_function("parse_buyer_bid", |b| {
        let mut decoder = ResponseDecoder::new(Limits::default());
        let mut body = Vec::with_capacity(4096);
        b.iter(|| match decoder.decode(black_box(&response), &mut body) {
            Ok(Decoded::Complete { head, consumed }) => black_box((head, consumed)),
            other => panic!("the buyer response must parse whole: {other:?}"),
        });
    });

    let ping = br#"{"ping_id":"01JDQ6X8W2K3M4N5P6Q7R8S9T0","campaign":"auto-insurance","vertical":"auto_insurance","test":false,"timeout_ms":800,"lead":{"state":"TX","zip":"77002","lead_type":"auto","age":34,"insured":true}}"#;
    let headers = [
        ("X-Api-Key", "acme-secret-0123456789"),
        ("X-Partner-Id", "gavel-17"),
        ("Accept", "application/json"),
    ];
    group.throughput(Throughput::Bytes(ping.len() as u64));
    group.bench_function("write_ping_request", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            write_request(
                &mut out,
                "POST",
                black_box("/ping"),
                black_box("buyer.example.com:9101"),
                headers.iter().copied(),
                "application/json",
                black_box(ping),
            );
            black_box(out.len())
        });
    });

    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
