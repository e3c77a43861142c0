use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buyer::{BuyerSpec, Fleet, FleetOptions, Kind, Reply};
use super::dist::{BidDist, Dist, Rng};
use super::load::{self, LeadTemplate, LoadSpec, TemplateError};
use super::wire;

const PING_BODY: &str = r#"{"ping_id":"p1","campaign":"auto-insurance","lead":{"state":"TX"}}"#;
const POST_BODY: &str =
    r#"{"ping_id":"p1","bid_id":"b-1","price":42.5,"lead":{"first_name":"Ana"}}"#;

/// A port held by a socket that is bound but not listening: it refuses connections, and stays
/// reserved (while the socket lives) so no other test can take it over meanwhile.
fn dead_port() -> (socket2::Socket, SocketAddr) {
    let holder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    holder.bind(&any.into()).expect("bind");
    let dead = holder
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    (holder, dead)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn request(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: buyer\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read one whole response (Content-Length framed, or bodiless 204) from `s`, keeping any
/// bytes after it in `buf`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(head)) = wire::parse_response(buf) {
            let len = head
                .body_len
                .expect("mock buyers always frame their bodies");
            if buf.len() >= head.head_len + len {
                let body = buf[head.head_len..head.head_len + len].to_vec();
                buf.drain(..head.head_len + len);
                return (head.status, body);
            }
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "connection closed before a whole response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn roundtrip(s: &mut TcpStream, path: &str, body: &str) -> (u16, Vec<u8>) {
    s.write_all(&request(path, body)).expect("write");
    read_response(s, &mut Vec::new())
}

fn is_no_bid(status: u16, body: &[u8]) -> bool {
    status == 204 || body == b"{\"bid\":0}" || body == b"{\"bid\":null}"
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    let (status, body) = roundtrip(&mut s, "/ping", PING_BODY);
    assert_eq!(status, 200);
    assert_eq!(body, b"{\"bid\":42.5,\"bid_id\":\"b-1\"}");
    let (status, body) = roundtrip(&mut s, "/post", POST_BODY);
    assert_eq!(status, 200);
    assert_eq!(
        body,
        b"{\"status\":\"accepted\",\"buyer_lead_id\":\"acme-2\"}"
    );
    assert_eq!(fleet.accepted_connections(0), 1);
    assert_eq!(fleet.pings(0), 1);
    assert_eq!(fleet.posts(0), 1);
    let stats = fleet.stats(0).expect("stats");
    assert_eq!((stats.bids, stats.accepted_posts), (1, 1));
}

#[test]
fn each_endpoint_has_its_own_port_and_counters() {
    let fleet = Fleet::start(vec![BuyerSpec::new("a"), BuyerSpec::new("b")]).expect("fleet");
    assert_ne!(fleet.addr(0), fleet.addr(1));
    assert_eq!(fleet.ping_url(1), format!("http://{}/ping", fleet.addr(1)));
    let mut s = connect(fleet.addr(1));
    roundtrip(&mut s, "/ping", PING_BODY);
    assert_eq!((fleet.pings(0), fleet.pings(1)), (0, 1));
    assert_eq!(fleet.pings(7), 0, "an unknown endpoint counts nothing");
}

#[test]
fn latency_is_applied_before_answering() {
    let mut spec = BuyerSpec::new("slow");
    spec.latency = Dist::Fixed(60);
    spec.post_latency = Dist::Fixed(0);
    let fleet = Fleet::start(vec![spec]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    let t0 = Instant::now();
    roundtrip(&mut s, "/ping", PING_BODY);
    let ping_time = t0.elapsed();
    assert!(
        ping_time >= Duration::from_millis(59),
        "ping answered after {ping_time:?}"
    );
    assert!(
        ping_time < Duration::from_secs(5),
        "ping answered after {ping_time:?}"
    );
    roundtrip(&mut s, "/post", POST_BODY);
    let applied = fleet.latency_us(0);
    assert_eq!(applied.count, 2);
    assert!(applied.max >= 59_000, "{applied:?}");
    assert!(applied.min < 59_000, "posts have no delay: {applied:?}");
    // Pings and posts are delayed apart, and reported apart.
    let stats = fleet.stats(0).expect("stats");
    let (ping, post) = (stats.ping_reply_us, stats.post_reply_us);
    assert_eq!((ping.count, post.count), (1, 1), "{stats:?}");
    assert!(ping.min >= 59_000, "{stats:?}");
    assert!(post.max < 59_000, "{stats:?}");
    assert_eq!(fleet.ping_reply_us(0), ping);
    assert_eq!(fleet.post_reply_us(0), post);
    let json = serde_json::to_value(&stats).expect("json");
    assert!(
        json.get("reply_us").is_none() && json.get("latency_us").is_none(),
        "{json}"
    );
    assert_eq!(json["ping_reply_us"]["count"], 1, "{json}");
    assert_eq!(json["post_reply_us"]["count"], 1, "{json}");
}

#[test]
fn pipelined_replies_keep_request_order_despite_delays() {
    // The first request is slow, the second immediate: the second must still come second.
    let seq = Arc::new(AtomicU64::new(0));
    let responder_seq = Arc::clone(&seq);
    let spec = BuyerSpec::new("order").with_responder(move |_, _| {
        let n = responder_seq.fetch_add(1, Ordering::SeqCst);
        let delay = if n == 0 { 80 } else { 0 };
        Reply::json(200, format!("{{\"n\":{n}}}")).after_ms(delay)
    });
    let fleet = Fleet::start(vec![spec]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    let mut both = request("/ping", PING_BODY);
    both.extend(request("/ping", PING_BODY));
    s.write_all(&both).expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf).1, b"{\"n\":0}");
    assert_eq!(read_response(&mut s, &mut buf).1, b"{\"n\":1}");
    assert_eq!(fleet.accepted_connections(0), 1);
}

#[test]
fn bodies_are_logged_by_kind_and_bounded() {
    let opts = FleetOptions {
        body_log_limit: 3,
        ..FleetOptions::default()
    };
    let fleet = Fleet::start_with(vec![BuyerSpec::new("log")], opts).expect("fleet");
    let mut s = connect(fleet.addr(0));
    roundtrip(&mut s, "/ping", PING_BODY);
    roundtrip(&mut s, "/post", POST_BODY);
    assert_eq!(fleet.ping_bodies(0), vec![PING_BODY.as_bytes().to_vec()]);
    assert_eq!(fleet.post_bodies(0), vec![POST_BODY.as_bytes().to_vec()]);
    let heads = fleet.request_heads(0);
    assert_eq!(heads.len(), 2);
    assert!(heads[0].starts_with(b"POST /ping HTTP/1.1\r\nHost: buyer\r\n"));
    assert!(heads[1].starts_with(b"POST /post "));
    for i in 0..5 {
        roundtrip(&mut s, "/ping", &format!("{{\"i\":{i}}}"));
    }
    let kept: Vec<String> = fleet
        .ping_bodies(0)
        .into_iter()
        .map(|b| String::from_utf8(b).expect("utf8"))
        .collect();
    assert_eq!(kept, vec!["{\"i\":2}", "{\"i\":3}", "{\"i\":4}"]);
}

#[test]
fn one_url_tells_pings_from_posts_by_the_price() {
    let fleet = Fleet::start(vec![BuyerSpec::new("one-url")]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    let (_, ping) = roundtrip(&mut s, "/api", PING_BODY);
    let (_, post) = roundtrip(&mut s, "/api", POST_BODY);
    assert!(ping.starts_with(b"{\"bid\":"));
    assert!(post.starts_with(b"{\"status\":\"accepted\""));
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 1));
}

#[test]
fn no_bid_and_reject_rates_are_roughly_honoured() {
    let mut spec = BuyerSpec::new("rates");
    spec.no_bid_rate = 0.3;
    spec.reject_rate = 0.2;
    spec.bid = BidDist::Uniform(500, 8000);
    let fleet = Fleet::start(vec![spec]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    const N: usize = 300;
    // Pipelined in one write: also shows many requests in flight on one connection are fine.
    let mut pings = Vec::new();
    for _ in 0..N {
        pings.extend(request("/ping", PING_BODY));
    }
    s.write_all(&pings).expect("write");
    let mut buf = Vec::new();
    let mut no_bids = 0;
    let mut forms = HashSet::new();
    for _ in 0..N {
        let (status, body) = read_response(&mut s, &mut buf);
        if is_no_bid(status, &body) {
            no_bids += 1;
            forms.insert((status, body));
        } else {
            let text = std::str::from_utf8(&body).expect("utf8");
            let bid = wire::top_level_value(&body, "bid").expect("bid");
            let cents = crate::money::parse_cents(std::str::from_utf8(bid).expect("utf8"))
                .expect("a bid in dollars");
            assert!((500..=8000).contains(&cents), "{text}");
        }
    }
    assert!((45..=135).contains(&no_bids), "{no_bids} no-bids of {N}");
    assert_eq!(forms.len(), 3, "every no-bid form is used: {forms:?}");

    let mut posts = Vec::new();
    for _ in 0..N {
        posts.extend(request("/post", POST_BODY));
    }
    s.write_all(&posts).expect("write");
    let mut rejects = 0;
    for _ in 0..N {
        let (_, body) = read_response(&mut s, &mut buf);
        if body == b"{\"status\":\"rejected\",\"reason\":\"duplicate\"}" {
            rejects += 1;
        }
    }
    assert!((25..=105).contains(&rejects), "{rejects} rejects of {N}");
    assert_eq!(fleet.accepted_connections(0), 1);
    assert_eq!(fleet.pings(0), N as u64);
}

#[test]
fn custom_responder_garbage_is_written_verbatim() {
    let garbage: &[u8] = b"\x00\xffnot http at all\r\n\r\n";
    let spec = BuyerSpec::new("garbage").with_responder(move |kind, body| {
        assert_eq!(kind, Kind::Ping);
        assert!(body.starts_with(b"{\"ping_id\""));
        Reply::raw(garbage).closing()
    });
    let fleet = Fleet::start(vec![spec]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    s.write_all(&request("/ping", PING_BODY)).expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to the close");
    assert_eq!(got, garbage);
}

#[test]
fn a_bad_request_gets_400_and_a_close() {
    let fleet = Fleet::start(vec![BuyerSpec::new("strict")]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    s.write_all(b"BLAH\x01 / HTTP/1.1\r\n\r\n").expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to the close");
    assert!(
        got.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(fleet.stats(0).expect("stats").bad_requests, 1);
}

#[test]
fn connection_close_is_honoured() {
    let fleet = Fleet::start(vec![BuyerSpec::new("closer")]).expect("fleet");
    let mut s = connect(fleet.addr(0));
    let req = format!(
        "POST /ping HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PING_BODY}",
        PING_BODY.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to the close");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
}

#[test]
fn several_threads_share_the_connections() {
    let opts = FleetOptions {
        threads: 3,
        ..FleetOptions::default()
    };
    let fleet = Fleet::start_with(vec![BuyerSpec::new("mt")], opts).expect("fleet");
    let mut conns: Vec<TcpStream> = (0..6).map(|_| connect(fleet.addr(0))).collect();
    for s in &mut conns {
        assert_eq!(roundtrip(s, "/ping", PING_BODY).0, 200);
    }
    assert_eq!(fleet.accepted_connections(0), 6);
    assert_eq!(fleet.pings(0), 6);
}

#[test]
fn stop_closes_the_listeners() {
    let mut fleet = Fleet::start(vec![BuyerSpec::new("gone")]).expect("fleet");
    let addr = fleet.addr(0);
    fleet.stop();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn distributions_stay_in_range_and_match_their_medians() {
    let mut rng = Rng::new(7);
    for _ in 0..1000 {
        let us = Dist::Uniform(10, 20).sample_us(&mut rng);
        assert!((10_000..=20_000).contains(&us));
        let c = BidDist::Uniform(500, 600).sample(&mut rng);
        assert!((500..=600).contains(&c));
    }
    let mut samples: Vec<u64> = (0..2001)
        .map(|_| {
            Dist::LogNormal {
                median: 20.0,
                p99: 100.0,
            }
            .sample_us(&mut rng)
        })
        .collect();
    samples.sort_unstable();
    let median = samples[1000];
    assert!((16_000..=24_000).contains(&median), "median {median} us");
    let p99 = samples[1980];
    assert!((60_000..=160_000).contains(&p99), "p99 {p99} us");
    assert_eq!(Dist::Fixed(3).sample_us(&mut rng), 3000);
    // The same seed gives the same stream.
    assert_eq!(Rng::new(42).next_u64(), Rng::new(42).next_u64());
    assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
}

#[test]
fn top_level_json_values_ignore_nested_keys() {
    let body = br#"{"lead_id":"01J","sales":[{"buyer":"a","price":1.0}],"status":"sold","price":120.0,"payout":96.0,"elapsed_ms":412,"note":"x \"price\": 5"}"#;
    assert_eq!(wire::top_level_value(body, "price"), Some(&b"120.0"[..]));
    assert_eq!(wire::top_level_value(body, "status"), Some(&b"sold"[..]));
    assert_eq!(wire::top_level_value(body, "elapsed_ms"), Some(&b"412"[..]));
    assert_eq!(wire::top_level_value(body, "sales"), None);
    assert_eq!(wire::top_level_value(body, "missing"), None);
    assert_eq!(wire::top_level_value(b"not json", "price"), None);
    assert_eq!(
        wire::top_level_value(b"{\"price\" : 7 }", "price"),
        Some(&b"7"[..])
    );
}

#[test]
fn wire_refuses_conflicting_lengths_and_chunked_bodies() {
    let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(
        wire::parse_request(two),
        Err(wire::WireError::BadContentLength)
    );
    let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        wire::parse_request(chunked),
        Err(wire::WireError::UnsupportedTransferEncoding)
    );
    assert_eq!(
        wire::parse_request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
        Ok(None)
    );
}

#[test]
fn templates_fill_builtins_and_refuse_unset_variables() {
    let t = LeadTemplate::parse(r#"{"x":${custom},"e":"${email}"}"#).expect("parse");
    assert!(t.uses("custom"));
    assert_eq!(
        LeadTemplate::parse("${oops").err(),
        Some(TemplateError::Unclosed(0))
    );
    assert_eq!(
        LeadTemplate::parse("${bad name}").err(),
        Some(TemplateError::BadName("bad name".into()))
    );
    let mut t2 = t.clone();
    assert_eq!(
        t2.set("email", "1").err(),
        Some(TemplateError::BuiltIn("email".into()))
    );
    // A run with an unset variable fails before connecting anywhere.
    let mut spec = LoadSpec::new("127.0.0.1:9".parse().expect("addr"), "k", "c");
    spec.lead_template = t;
    let err = load::run(&spec).expect_err("unset variable");
    assert!(err.to_string().contains("custom"), "{err}");
}

#[test]
fn a_template_that_does_not_make_json_is_refused_before_connecting() {
    let ok = |text: &str, vars: &[(&str, &str)]| {
        let mut t = LeadTemplate::parse(text).expect("parse");
        for (n, v) in vars {
            t.set(n, v).expect("set");
        }
        t.check_json("auto-insurance")
    };
    assert_eq!(
        ok(load::DEFAULT_TEMPLATE, &[("disclosed_buyers", "[]")]),
        Ok(())
    );
    assert_eq!(
        ok(r#"{"a":${x},"city":"${city}","n":${seq}}"#, &[("x", "[1]")]),
        Ok(())
    );
    // A trailing comma, a built-in string left without its quotes, two values side by side.
    for (text, vars) in [
        (r#"{"a":"${email}",}"#, &[][..]),
        (r#"{"city":${city}}"#, &[]),
        (r#"{"a":${x}${x}}"#, &[("x", "1.5")]),
    ] {
        match ok(text, vars) {
            Err(TemplateError::NotJson(_)) => {}
            other => panic!("{text}: {other:?}"),
        }
    }
    // A run with such a template fails before connecting anywhere, as a usage error.
    let mut spec = LoadSpec::new("127.0.0.1:9".parse().expect("addr"), "k", "c");
    spec.lead_template = LeadTemplate::parse(r#"{"a":1,}"#).expect("parse");
    let err = load::run(&spec).expect_err("not JSON");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
}

/// A tiny seller-API stand-in: one thread per connection, every lead answered unsold. Records
/// each lead body so the test can check them.
fn unsold_server() -> (SocketAddr, Arc<parking_lot::Mutex<Vec<Vec<u8>>>>) {
    // A short think time so answers overlap and connections are really shared.
    unsold_server_thinking(Duration::from_millis(2))
}

fn unsold_server_thinking(think: Duration) -> (SocketAddr, Arc<parking_lot::Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let bodies = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || serve_unsold(stream, &seen, think));
        }
    });
    (addr, bodies)
}

fn serve_unsold(stream: TcpStream, seen: &parking_lot::Mutex<Vec<Vec<u8>>>, think: Duration) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut auth_ok = false;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first {
                assert!(line.starts_with("POST /v1/leads HTTP/1.1"), "{line}");
                first = false;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
            if line.trim_end() == "Authorization: Bearer sk-test" {
                auth_ok = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().push(body);
        let answer = if auth_ok {
            r#"{"lead_id":"01J","status":"unsold","price":0.0,"payout":0.0,"bids":0,"elapsed_ms":3}"#
        } else {
            r#"{"error":{"code":"unauthorized","message":"no key"}}"#
        };
        let status = if auth_ok {
            "200 OK"
        } else {
            "401 Unauthorized"
        };
        std::thread::sleep(think);
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn load_generator_sends_the_scheduled_leads_and_measures_them() {
    let (addr, bodies) = unsold_server();
    let mut spec = LoadSpec::new(addr, "sk-test", "auto-insurance");
    spec.rate_per_s = 200;
    spec.duration = Duration::from_secs(1);
    spec.warmup = Duration::from_millis(100);
    spec.connections = 4;
    let t0 = Instant::now();
    let report = load::run(&spec).expect("run");
    let took = t0.elapsed();
    // Every assertion prints the whole report, so a failure shows what the run saw.
    let r = report.to_string();
    assert!(took < Duration::from_secs(8), "run took {took:?}\n{r}");
    assert_eq!(report.connected, 4, "{r}");
    assert_eq!(report.warmup_leads, 20, "{r}");
    assert_eq!(report.scheduled, 200, "{r}");
    assert_eq!(report.sent, 200, "{r}");
    assert_eq!(report.answered, 200, "{r}");
    assert_eq!(report.unsold, 200, "{r}");
    assert_eq!(report.by_status_code.get(&200), Some(&200), "{r}");
    let lost = report.errors + report.timeouts + report.unsent + report.in_flight_at_end;
    assert_eq!(lost, 0, "{r}");
    let rate = report.achieved_rate_per_s;
    assert!(rate > 150.0 && rate < 250.0, "{r}");
    let l = report.latency_us;
    assert_eq!(l.count, 200, "{r}");
    assert!(l.min >= 2000, "the server thinks for 2 ms\n{r}");
    assert!(
        l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{r}"
    );
    assert!(l.max < 5_000_000, "{r}");
    assert!(
        report.service_us.p50 <= l.p50 + 1,
        "service never exceeds time since due\n{r}"
    );
    assert_eq!(report.exchange_elapsed_ms.p50, 3, "{r}");
    assert_eq!(report.revenue_cents, 0, "{r}");

    // Every lead is a distinct, well-formed JSON body with unique email and phone.
    let bodies = bodies.lock();
    assert_eq!(bodies.len(), 220);
    let mut emails = HashSet::new();
    let mut phones = HashSet::new();
    for b in bodies.iter() {
        let v: serde_json::Value = serde_json::from_slice(b).expect("lead JSON");
        assert_eq!(v["campaign"], "auto-insurance");
        assert_eq!(v["consent"]["vertical"], "auto_insurance");
        let phone = v["lead"]["phone"].as_str().expect("phone").to_string();
        assert_eq!(phone.len(), 10, "{phone}");
        emails.insert(v["lead"]["email"].as_str().expect("email").to_string());
        phones.insert(phone);
    }
    assert_eq!(emails.len(), 220);
    assert_eq!(phones.len(), 220);

    let text = report.to_string();
    assert!(text.contains("unsold 200"), "{text}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["answered"], 200);
}

/// A seller-API stand-in that answers only once `batch` requests have arrived on a
/// connection, then answers all of them in order: only a pipelining client gets answers.
fn batching_server(batch: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let Ok(mut out) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut n = 0u64;
                loop {
                    for _ in 0..batch {
                        let mut len = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                len = v.trim().parse().expect("length");
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0u8; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                    }
                    let mut resp = Vec::new();
                    for _ in 0..batch {
                        n += 1;
                        let answer = format!(
                            r#"{{"lead_id":"L{n}","status":"sold","price":2.00,"payout":1.00,"bids":1,"elapsed_ms":{n}}}"#
                        );
                        resp.extend_from_slice(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                                answer.len()
                            )
                            .as_bytes(),
                        );
                    }
                    if out.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A target slower than the rate: the backlog is sent through the drain and no further, and
/// every lead written is waited for, so none is left in flight that the target answers.
#[test]
fn a_target_that_falls_behind_has_every_lead_written_answered() {
    let (addr, bodies) = unsold_server_thinking(Duration::from_millis(300));
    let mut spec = LoadSpec::new(addr, "sk-test", "auto-insurance");
    spec.rate_per_s = 50;
    spec.duration = Duration::from_secs(1);
    spec.warmup = Duration::ZERO;
    spec.connections = 1;
    let report = load::run(&spec).expect("run");
    let r = report.to_string();
    assert_eq!(report.scheduled, 50, "{r}");
    assert!(report.unsent > 0, "the drain ends before the backlog: {r}");
    assert_eq!(report.sent + report.unsent, 50, "{r}");
    assert_eq!(report.in_flight_at_end, 0, "{r}");
    assert_eq!(report.answered, report.sent, "{r}");
    assert_eq!(bodies.lock().len() as u64, report.sent, "{r}");
}

#[test]
fn pipelined_leads_share_a_connection_and_each_gets_its_answer() {
    let addr = batching_server(4);
    let mut spec = LoadSpec::new(addr, "sk-test", "auto-insurance");
    spec.rate_per_s = 200;
    spec.duration = Duration::from_millis(500);
    spec.warmup = Duration::ZERO;
    spec.connections = 1;
    spec.pipeline = 4;
    let report = load::run(&spec).expect("run");
    let r = report.to_string();
    // 100 leads over one connection, answered four at a time: every lead got its own answer.
    assert_eq!(report.sent, 100, "{r}");
    assert_eq!(report.answered, 100, "{r}");
    assert_eq!(report.sold, 100, "{r}");
    assert_eq!(report.revenue_cents, 20_000, "{r}");
    let lost = report.errors + report.timeouts + report.unsent + report.in_flight_at_end;
    assert_eq!(lost, 0, "{r}");
    assert_eq!(report.reconnects, 0, "{r}");
    // The answers' elapsed_ms count 1..=100 in order: all were matched, none twice.
    assert_eq!(report.exchange_elapsed_ms.count, 100, "{r}");
    assert_eq!(report.exchange_elapsed_ms.max, 100, "{r}");

    spec.pipeline = 0;
    assert!(load::run(&spec).is_err());
    spec.pipeline = load::MAX_PIPELINE + 1;
    assert!(load::run(&spec).is_err());
}

#[test]
fn load_generator_counts_other_statuses_and_fails_without_a_target() {
    let (addr, _) = unsold_server();
    let mut spec = LoadSpec::new(addr, "wrong-key", "solar");
    spec.rate_per_s = 100;
    spec.duration = Duration::from_millis(300);
    spec.warmup = Duration::ZERO;
    spec.connections = 2;
    let report = load::run(&spec).expect("run");
    assert_eq!(report.answered, 30);
    assert_eq!(report.other, 30);
    assert_eq!(report.by_status_code.get(&401), Some(&30));
    // The error body's code, read from {"error":{"code":"unauthorized",..}}.
    assert_eq!(report.by_error_code.get("unauthorized"), Some(&30));
    assert_eq!(report.by_error_code.len(), 1);
    // No answer carried the exchange's elapsed_ms: the text says so rather than print zeros.
    let r = report.to_string();
    assert!(
        r.contains("\nexchange  elapsed_ms:        none: no answer carried one\n"),
        "{r}"
    );
    assert!(!r.contains("(n=0)"), "{r}");

    let (_holder, dead) = dead_port();
    let mut spec = LoadSpec::new(dead, "k", "c");
    spec.connections = 2;
    assert!(load::run(&spec).is_err());
}

#[test]
fn handles_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Fleet>();
    shareable::<BuyerSpec>();
    shareable::<LoadSpec>();
}

// ---- the relay (the fan-out floor) ----------------------------------------------------------

use super::relay::{Endpoint, Relay, RelayBuyer, RelayOptions};

/// Every buyer of `fleet`, as the relay takes them.
fn relay_buyers(fleet: &Fleet) -> Vec<RelayBuyer> {
    (0..fleet.len())
        .map(|i| RelayBuyer {
            ping: Endpoint::parse(&fleet.ping_url(i)).expect("ping url"),
            post: Endpoint::parse(&fleet.post_url(i)).expect("post url"),
        })
        .collect()
}

fn relay_for(fleet: &Fleet, ping_timeout_ms: u64) -> Relay {
    Relay::start(RelayOptions {
        buyers: relay_buyers(fleet),
        ping_timeout: Duration::from_millis(ping_timeout_ms),
        ..RelayOptions::default()
    })
    .expect("relay")
}

/// One request on a keep-alive connection to the relay: status and parsed JSON body.
fn relay_call(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let (status, body) = read_response(s, buf);
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, v)
}

const RELAY_LEAD: &str =
    r#"{"campaign":"auto-insurance","lead":{"first_name":"Ana","state":"TX"}}"#;

#[test]
fn relay_posts_the_seller_body_to_the_highest_bid_and_accounts_its_overhead() {
    let bids = [1000, 3000, 2000];
    let mut fleet = Fleet::start(
        bids.iter()
            .enumerate()
            .map(|(i, &cents)| {
                BuyerSpec::new(format!("b{i}")).with_responder(move |k, _| match k {
                    Kind::Ping => Reply::bid(cents, Some("win-me")).after_ms(20),
                    Kind::Post => Reply::accepted(),
                })
            })
            .collect(),
    )
    .expect("fleet");
    let mut relay = relay_for(&fleet, 800);
    let mut s = connect(relay.addr());
    let mut buf = Vec::new();
    let (status, v) = relay_call(&mut s, &mut buf, "POST", "/v1/leads", RELAY_LEAD);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["price"], 30.0, "{v}");
    assert_eq!(v["payout"], 24.0, "{v}");
    // Every buyer pinged once; only the highest bidder posted, with the seller's lead in it.
    for i in 0..3 {
        assert_eq!(fleet.pings(i), 1, "buyer {i}");
        assert_eq!(fleet.posts(i), u64::from(i == 1), "buyer {i}");
    }
    let post = fleet.post_bodies(1).pop().expect("the post's body");
    let post: serde_json::Value = serde_json::from_slice(&post).expect("post JSON");
    assert_eq!(post["bid_id"], "win-me");
    assert_eq!(post["price"], 30.0);
    // The seller's request as it came, under `lead`: the relay reads none of it.
    assert_eq!(post["lead"]["lead"]["first_name"], "Ana");
    // The 20 ms the buyers took is theirs: the overhead is far below it, the elapsed time above.
    let (status, st) = relay_call(&mut s, &mut buf, "GET", "/v1/stats", "");
    assert_eq!(status, 200);
    assert_eq!(st["leads"], 1);
    assert_eq!(st["sold"], 1);
    assert_eq!(st["overhead_us"]["count"], 1);
    assert!(
        st["elapsed_us"]["p50"].as_u64().unwrap_or(0) >= 20_000,
        "{st}"
    );
    let overhead = st["overhead_us"]["max"].as_u64().unwrap_or(u64::MAX);
    assert!(overhead < 20_000, "{st}");
    for stage in ["intake", "close", "answer"] {
        assert_eq!(st["overhead_stages_us"][stage]["count"], 1, "{stage}: {st}");
    }
    // A reset zeroes the histograms and counters.
    let (status, _) = relay_call(&mut s, &mut buf, "POST", "/v1/admin/stats/reset", "");
    assert_eq!(status, 200);
    let (_, st) = relay_call(&mut s, &mut buf, "GET", "/v1/stats", "");
    assert_eq!(st["leads"], 0, "{st}");
    assert_eq!(st["overhead_us"]["count"], 0, "{st}");
    relay.stop();
    fleet.stop();
}

#[test]
fn relay_answers_unsold_without_bids_and_closes_at_the_deadline_without_a_silent_buyer() {
    let mut fleet = Fleet::start(vec![
        BuyerSpec::new("none").with_responder(|k, _| match k {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted(),
        }),
        // Answers long after the relay's 150 ms deadline.
        BuyerSpec::new("late").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(9000, None).after_ms(2000),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("low").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(100, None), // below the $5 reserve
            Kind::Post => Reply::accepted(),
        }),
    ])
    .expect("fleet");
    let mut relay = relay_for(&fleet, 150);
    let mut s = connect(relay.addr());
    let mut buf = Vec::new();
    let t0 = Instant::now();
    let (status, v) = relay_call(&mut s, &mut buf, "POST", "/v1/leads", RELAY_LEAD);
    let took = t0.elapsed();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "unsold", "{v}");
    assert!(
        took >= Duration::from_millis(150),
        "closed before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "waited for the late buyer: {took:?}"
    );
    for i in 0..3 {
        assert_eq!(fleet.posts(i), 0, "buyer {i}");
    }
    let (_, st) = relay_call(&mut s, &mut buf, "GET", "/v1/stats", "");
    assert_eq!(st["unsold"], 1, "{st}");
    assert_eq!(st["ping_timeouts"], 1, "{st}");
    // The buyers' wait ends at the deadline: the overhead is not the 150 ms.
    assert!(
        st["overhead_us"]["max"].as_u64().unwrap_or(u64::MAX) < 100_000,
        "{st}"
    );
    relay.stop();
    fleet.stop();
}

#[test]
fn relay_keeps_its_buyer_connections_alive_and_survives_a_dead_buyer() {
    let mut fleet = Fleet::start(vec![BuyerSpec::new("a"), BuyerSpec::new("b")]).expect("fleet");
    // A third buyer on a port nobody listens on: its pings fail, the others still count.
    let (_holder, dead) = dead_port();
    let mut buyers = relay_buyers(&fleet);
    let dead_url = format!("http://{dead}/ping");
    buyers.push(RelayBuyer {
        ping: Endpoint::parse(&dead_url).expect("url"),
        post: Endpoint::parse(&dead_url).expect("url"),
    });
    let mut relay = Relay::start(RelayOptions {
        buyers,
        ..RelayOptions::default()
    })
    .expect("relay");
    let mut s = connect(relay.addr());
    let mut buf = Vec::new();
    for _ in 0..40 {
        let (status, v) = relay_call(&mut s, &mut buf, "POST", "/v1/leads", RELAY_LEAD);
        assert_eq!(status, 200, "{v}");
        assert!(v["status"] == "sold" || v["status"] == "unsold", "{v}");
    }
    let (_, st) = relay_call(&mut s, &mut buf, "GET", "/v1/stats", "");
    assert_eq!(st["leads"], 40, "{st}");
    assert_eq!(st["ping_errors"], 40, "{st}");
    // One lead at a time: one connection per buyer carries every ping and post.
    for i in 0..2 {
        assert_eq!(fleet.pings(i), 40, "buyer {i}");
        assert_eq!(fleet.accepted_connections(i), 1, "buyer {i}");
    }
    // Anything but the routes is 404; a malformed request 400 and the connection closed.
    let (status, _) = relay_call(&mut s, &mut buf, "GET", "/nowhere", "");
    assert_eq!(status, 404);
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").expect("write");
    let (status, _) = read_response(&mut s, &mut buf);
    assert_eq!(status, 400);
    relay.stop();
    fleet.stop();
}

#[test]
fn relay_answers_thousands_of_pipelined_leads_whose_buyers_are_all_down() {
    // Every ping fails (port 0 cannot be connected to), so a lead can finish while its own
    // request is still being taken; thousands pipelined on one connection must each get their
    // answer, in order.
    let url = "http://127.0.0.1:0/ping";
    let mut relay = Relay::start(RelayOptions {
        buyers: vec![RelayBuyer {
            ping: Endpoint::parse(url).expect("url"),
            post: Endpoint::parse(url).expect("url"),
        }],
        ..RelayOptions::default()
    })
    .expect("relay");
    const LEADS: usize = 5000;
    let one = format!(
        "POST /v1/leads HTTP/1.1\r\nHost: relay\r\nContent-Length: {}\r\n\r\n{RELAY_LEAD}",
        RELAY_LEAD.len()
    );
    let all = one.repeat(LEADS);
    let mut s = connect(relay.addr());
    let writer = {
        let mut w = s.try_clone().expect("clone");
        std::thread::spawn(move || w.write_all(all.as_bytes()))
    };
    let mut buf = Vec::new();
    for _ in 0..LEADS {
        let (status, body) = read_response(&mut s, &mut buf);
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["status"], "unsold", "{v}");
    }
    writer.join().expect("writer").expect("write");
    relay.stop();
}

#[test]
fn relay_refuses_options_out_of_bounds() {
    assert!(Relay::start(RelayOptions::default()).is_err(), "no buyers");
    assert!(Endpoint::parse("https://127.0.0.1:1/ping").is_err());
    assert!(Endpoint::parse("http:///ping").is_err());
    let ep = Endpoint::parse("http://127.0.0.1:9/p").expect("url");
    let one = || RelayBuyer {
        ping: ep.clone(),
        post: ep.clone(),
    };
    for opts in [
        RelayOptions {
            buyers: vec![one()],
            max_connections_per_buyer: 0,
            ..RelayOptions::default()
        },
        RelayOptions {
            buyers: vec![one()],
            ping_timeout: Duration::ZERO,
            ..RelayOptions::default()
        },
    ] {
        assert!(Relay::start(opts).is_err());
    }
}

/// Read one request (head and `Content-Length` body) from `reader`; `false` at its end.
fn read_one_request(reader: &mut BufReader<TcpStream>) -> bool {
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).is_ok()
}

fn write_answer(out: &mut TcpStream, status: &str, body: &str) -> bool {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    out.write_all(resp.as_bytes()).is_ok()
}

const UNSOLD_ANSWER: &str =
    r#"{"lead_id":"01J","status":"unsold","price":0.0,"payout":0.0,"bids":0,"elapsed_ms":1}"#;

#[test]
fn service_time_runs_from_the_last_byte_written_not_from_the_queueing() {
    // The server reads nothing for a while, so a lead far larger than the socket buffers
    // cannot be written until it does; once it reads, it answers at once. The wait for the
    // buffer is the client's: it counts from the due time, not in the service time.
    const HOLD: Duration = Duration::from_millis(400);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        std::thread::sleep(HOLD);
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        while read_one_request(&mut reader) {
            if !write_answer(&mut out, "200 OK", UNSOLD_ANSWER) {
                return;
            }
        }
    });
    let mut template =
        LeadTemplate::parse(r#"{"campaign":"${campaign}","pad":${pad}}"#).expect("template");
    let pad = format!("\"{}\"", "x".repeat(16 << 20));
    template.set("pad", &pad).expect("set");
    let mut spec = LoadSpec::new(addr, "sk-test", "c");
    spec.rate_per_s = 1;
    spec.duration = Duration::from_secs(1);
    spec.warmup = Duration::ZERO;
    spec.connections = 1;
    spec.lead_template = template;
    let report = load::run(&spec).expect("run");
    let r = report.to_string();
    assert_eq!(report.answered, 1, "{r}");
    assert!(
        report.latency_us.max >= HOLD.as_micros() as u64,
        "from the due time the lead waited for the server\n{r}"
    );
    assert!(
        report.service_us.max < HOLD.as_micros() as u64 / 2,
        "the service time starts when the last byte is written\n{r}"
    );
}

/// A seller-API stand-in that answers every lead unsold for `life`, then closes its
/// connections and its listener: an exchange that goes away in the middle of a run.
fn vanishing_server(life: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let end = Instant::now() + life;
    std::thread::spawn(move || {
        let mut open = Vec::new();
        while Instant::now() < end {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let (Ok(keep), Ok(mut out)) = (stream.try_clone(), stream.try_clone()) else {
                continue;
            };
            open.push(keep);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                while read_one_request(&mut reader) {
                    if !write_answer(&mut out, "200 OK", UNSOLD_ANSWER) {
                        return;
                    }
                }
            });
        }
        drop(listener);
        for s in open {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    });
    addr
}

#[test]
fn a_target_that_goes_away_is_retried_with_backoff_and_the_run_ends_promptly() {
    let addr = vanishing_server(Duration::from_millis(300));
    let mut spec = LoadSpec::new(addr, "sk-test", "c");
    spec.rate_per_s = 100;
    spec.duration = Duration::from_secs(1);
    spec.warmup = Duration::ZERO;
    spec.connections = 2;
    let t0 = Instant::now();
    let report = load::run(&spec).expect("run");
    let took = t0.elapsed();
    let r = report.to_string();
    // Leads that find no connection once the schedule is over are given up after
    // `UNSENT_GRACE`, not after the 10 s drain meant for answers still coming.
    assert!(took < Duration::from_secs(3), "took {took:?}\n{r}");
    assert!(report.answered > 0 && report.answered < 100, "{r}");
    let lost = report.errors + report.timeouts + report.unsent + report.in_flight_at_end;
    assert_eq!(report.answered + lost, report.scheduled, "{r}");
    assert!(report.unsent > 0, "{r}");
    assert_eq!(report.connected_at_end, 0, "{r}");
    // Down for about 0.95 s: pauses of 5, 10, 20, ... up to 250 ms make about eight attempts
    // per connection where a fixed 50 ms pause would make nineteen.
    assert!(report.connect_errors >= 2, "{r}");
    assert!(report.connect_errors <= 2 * 11, "{r}");
    assert!(r.contains(&format!("cannot connect to {addr}")), "{r}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["connect_errors"], report.connect_errors);
}

#[test]
fn a_target_that_refuses_every_connection_is_named_in_the_error() {
    let (_holder, dead) = dead_port();
    let mut spec = LoadSpec::new(dead, "k", "c");
    spec.connections = 3;
    let t0 = Instant::now();
    let err = load::run(&spec).expect_err("nothing listens");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to {dead}: ")),
        "{err}"
    );
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<load::CannotConnect>());
    assert!(inner.is_some_and(|c| c.target == dead), "{err:?}");
}

/// A seller-API stand-in answering every lead 422 with error code `code-<n % codes>`, n
/// counting the leads on each connection.
fn coded_server(codes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let Ok(mut out) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut n = 0;
                while read_one_request(&mut reader) {
                    let body = format!(
                        r#"{{"error":{{"code":"code-{}","message":"no"}}}}"#,
                        n % codes
                    );
                    n += 1;
                    if !write_answer(&mut out, "422 Unprocessable Entity", &body) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn error_answers_are_counted_by_their_code_up_to_a_bound() {
    let addr = coded_server(load::MAX_ERROR_CODES + 8);
    let mut spec = LoadSpec::new(addr, "sk-test", "c");
    spec.rate_per_s = 400;
    spec.duration = Duration::from_millis(250);
    spec.warmup = Duration::ZERO;
    spec.connections = 1;
    let report = load::run(&spec).expect("run");
    let r = report.to_string();
    assert_eq!(report.answered, 100, "{r}");
    assert_eq!(report.rejected, 100, "{r}");
    let codes = &report.by_error_code;
    assert_eq!(codes.values().sum::<u64>(), 100, "{r}");
    assert_eq!(codes.len(), load::MAX_ERROR_CODES + 1, "{r}");
    assert_eq!(codes.get("code-0"), Some(&3), "{r}");
    assert_eq!(codes.get(load::OTHER_ERROR_CODE), Some(&(8 * 2)), "{r}");
    assert!(r.contains("codes     code-0:3 "), "{r}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["by_error_code"]["code-1"], 3);
}

#[test]
fn a_run_without_answers_says_so_instead_of_printing_zero_latencies() {
    // Every connection is closed as soon as its first lead arrives: nothing is answered.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let _ = read_one_request(&mut reader);
            });
        }
    });
    let mut spec = LoadSpec::new(addr, "sk-test", "c");
    spec.rate_per_s = 100;
    spec.duration = Duration::from_millis(300);
    spec.warmup = Duration::ZERO;
    spec.connections = 2;
    let report = load::run(&spec).expect("run");
    let r = report.to_string();
    assert_eq!(report.answered, 0, "{r}");
    assert!(report.errors > 0, "{r}");
    assert!(r.contains("\nlatency none: no lead was answered\n"), "{r}");
    assert!(!r.contains("us from due time"), "{r}");
}
