//! `server.max_connections` as a seller sees it: a limit across all workers, at which an idle
//! connection makes room for a new one, and a new one is told 503 `overloaded` only when every
//! open connection is serving a request.
//!
//! Every test runs two workers, so connections land on either as the kernel spreads them, and
//! none depends on which: a worker with no idle connection of its own gets one from the other.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-operator-token";
/// Longest a test waits for something the exchange does at once (a slow, shared machine).
const PATIENCE: Duration = Duration::from_secs(20);

fn bidder(name: &str, cents: i64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None),
        Kind::Post => Reply::accepted(),
    })
}

/// The test config with two workers, `max_connections` seller connections in all, and the
/// operator API on.
fn with_limit(toml: &str, max_connections: usize) -> String {
    toml.replace(
        "workers = 1\n",
        &format!(
            "workers = 2\nmax_connections = {max_connections}\nadmin_listen = \"127.0.0.1:0\"\n"
        ),
    )
    .replace(
        "[journal]",
        &format!("[admin]\ntoken = \"{TOKEN}\"\n\n[journal]"),
    )
}

fn exchange(toml: String, max_connections: usize) -> (Exchange, SocketAddr) {
    let ex = Exchange::start(&with_limit(&toml, max_connections));
    let admin = admin_of(&ex);
    (ex, admin)
}

/// The exchange's operator listener.
fn admin_of(ex: &Exchange) -> SocketAddr {
    ex.admin_addr()
}

fn operator_get(admin: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(admin);
    c.send_raw(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    c.read_response().expect("an answer")
}

/// `/v1/stats` `connections`.
fn connections(admin: SocketAddr) -> Value {
    operator_get(admin, "/v1/stats").json()["connections"].clone()
}

/// Wait until `cond` holds; false when it did not within `PATIENCE`.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + PATIENCE;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Whether the exchange has closed this connection, without waiting: EOF (or a reset) is
/// waiting to be read, rather than nothing.
fn closed_now(s: &TcpStream) -> bool {
    let mut b = [0u8; 16];
    let _ = s.set_nonblocking(true);
    let closed = match (&*s).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    closed
}

/// Four keep-alive sellers that each sold a lead and now sit idle hold all four places: a fifth
/// seller is served all the same, and the connection idle the longest on its worker (or on the
/// other one) is closed to make room. The others keep serving.
#[test]
fn an_idle_keep_alive_connection_makes_room_for_a_new_seller() {
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    let (ex, admin) = exchange(config(&fleet, "", |_| String::new()), 4);
    let mut old: Vec<Client> = (0..4).map(|_| ex.client()).collect();
    for c in &mut old {
        let r = c.lead(LEAD);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], "sold");
    }
    assert_eq!(connections(admin)["sellers_open"], 4);

    let mut new = ex.client();
    let r = new.lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "sold");

    // The evicted one reads EOF (its close went out before the new one was even read).
    assert!(
        eventually(|| old.iter().any(|c| closed_now(&c.stream))),
        "no idle connection was closed"
    );
    let (closed, mut open): (Vec<Client>, Vec<Client>) =
        old.into_iter().partition(|c| closed_now(&c.stream));
    assert_eq!(closed.len(), 1, "one connection makes room for one");
    for c in &mut open {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    let conns = connections(admin);
    assert_eq!(conns["sellers_open"], 4, "{conns}");
    assert_eq!(conns["sellers_max"], 4, "{conns}");
    assert_eq!(conns["sellers_evicted"], 1, "{conns}");
    assert_eq!(conns["sellers_refused"], 0, "{conns}");
    let metrics = String::from_utf8(operator_get(admin, "/metrics").body).unwrap();
    for line in [
        "gavel_seller_connections_open 4",
        "gavel_seller_connections_evicted_total 1",
        "gavel_seller_connections_refused_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

/// Every connection has a lead in flight (the buyer is slow to bid): none is closed for a new
/// connection, which is answered 503 `overloaded` with `Retry-After` and closed. The leads in
/// flight are answered as usual.
#[test]
fn with_every_connection_serving_a_new_one_is_told_overloaded() {
    let pinged = Arc::new(AtomicUsize::new(0));
    let seen = pinged.clone();
    let slow = BuyerSpec::new("slow").with_responder(move |kind, _| match kind {
        Kind::Ping => {
            seen.fetch_add(1, Ordering::SeqCst);
            // Long enough that the leads are still in flight when the fifth connection comes,
            // however slow the machine; well inside `ping_timeout_ms`.
            Reply::bid(5000, None).after_ms(5000)
        }
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![slow]).unwrap();
    let toml = config(&fleet, "", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 30000");
    let (ex, admin) = exchange(toml, 4);
    let mut busy: Vec<Client> = (0..4).map(|_| ex.client()).collect();
    for c in &mut busy {
        c.send_raw(&Client::request(
            "POST",
            "/v1/leads",
            Some(KEY),
            LEAD.as_bytes(),
        ));
    }
    assert!(
        eventually(|| pinged.load(Ordering::SeqCst) == 4),
        "the four leads did not reach the buyer"
    );

    // The refusal comes unasked: the client sends nothing, so nothing of its own can reset
    // the connection before it reads the answer.
    let mut fifth = TcpStream::connect(ex.addr).unwrap();
    fifth.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    fifth.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{answer}");
    for header in [
        "retry-after: 1",
        "connection: close",
        "content-type: application/json",
    ] {
        assert!(head.lines().any(|l| l == header), "{header}: {answer}");
    }
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded", "{answer}");
    assert_eq!(v["error"]["message"], "too many seller connections");

    for c in &mut busy {
        let r = c.read_response().expect("the lead in flight is answered");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], "sold");
    }
    let conns = connections(admin);
    assert_eq!(conns["sellers_refused"], 1, "{conns}");
    assert_eq!(conns["sellers_evicted"], 0, "{conns}");
    assert_eq!(conns["sellers_open"], 4, "{conns}");
    // The 503 the seller read is among the refusals by status.
    let refused = operator_get(admin, "/v1/stats").json()["refused"].clone();
    assert_eq!(refused, serde_json::json!({"503": 1}), "{refused}");

    // The operator's reset zeroes the connection counts with the rest; open is no count.
    let mut c = Client::connect(admin);
    c.send_raw(
        format!(
            "POST /v1/admin/stats/reset HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().expect("an answer").status, 200);
    let conns = connections(admin);
    assert_eq!(conns["sellers_refused"], 0, "{conns}");
    assert_eq!(conns["sellers_open"], 4, "{conns}");
    let metrics = String::from_utf8_lossy(&operator_get(admin, "/metrics").body).to_string();
    for line in [
        "gavel_seller_connections_refused_total 0",
        "gavel_seller_connections_evicted_total 0",
        "gavel_seller_connections_open 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
}

/// Connections that never send a byte hold every place, and the head timeout is long: a real
/// seller is served at once all the same, one of them closed for it.
#[test]
fn connections_that_never_send_a_byte_do_not_lock_sellers_out() {
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nhead_timeout_ms = 60000",
    );
    let (ex, admin) = exchange(toml, 4);
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(ex.addr).unwrap())
        .collect();
    assert!(
        eventually(|| connections(admin)["sellers_open"] == 4),
        "the silent connections were not all accepted"
    );
    // A connection is kept a second for its first request before it can be taken for idle.
    std::thread::sleep(gavel::net::FIRST_REQUEST_GRACE + Duration::from_millis(100));

    let mut seller = ex.client();
    let r = seller.lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "sold");
    assert!(
        eventually(|| silent.iter().filter(|s| closed_now(s)).count() == 1),
        "one silent connection is closed for the seller"
    );
    let conns = connections(admin);
    assert_eq!(conns["sellers_evicted"], 1, "{conns}");
    assert_eq!(conns["sellers_refused"], 0, "{conns}");
}

/// `max_connections` follows a reload: a raised limit takes a new connection without closing
/// anything; a lowered one closes nothing at once, and a new connection over it takes an idle
/// connection's place, so the count does not grow.
#[test]
fn the_limit_follows_a_reload() {
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    let base = config(&fleet, "", |_| String::new());
    let path = temp_dir("connections").join("gavel.toml");
    let write = |max: usize| std::fs::write(&path, with_limit(&base, max)).expect("write config");
    write(2);
    let ex = Exchange::start_file(&path);
    let admin = admin_of(&ex);
    let reload = || {
        let r = operator_request(admin, "POST", "/v1/admin/reload", TOKEN);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    let mut sellers: Vec<Client> = (0..2).map(|_| ex.client()).collect();
    for c in &mut sellers {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }

    write(3);
    reload();
    sellers.push(ex.client());
    for c in &mut sellers {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    let conns = connections(admin);
    assert_eq!(conns["sellers_open"], 3, "{conns}");
    assert_eq!(
        conns["sellers_evicted"], 0,
        "raised: room without a close: {conns}"
    );

    write(1);
    reload();
    for c in &mut sellers {
        assert_eq!(
            c.lead(LEAD).json()["status"],
            "sold",
            "lowered: open connections keep serving"
        );
    }
    let mut late = ex.client();
    assert_eq!(late.lead(LEAD).json()["status"], "sold");
    assert!(
        eventually(|| sellers.iter().filter(|c| closed_now(&c.stream)).count() == 1),
        "one idle connection makes room"
    );
    let conns = connections(admin);
    assert_eq!(
        conns["sellers_open"], 3,
        "over a lowered limit, not growing: {conns}"
    );
    assert_eq!(conns["sellers_max"], 1, "{conns}");
    assert_eq!(conns["sellers_evicted"], 1, "{conns}");
}

/// Connections that never finished a first request (half-sent heads, from anyone) are closed
/// for a new seller before a seller's idle kept-alive connection on the same worker.
#[test]
fn stalled_strangers_make_room_before_an_idle_seller() {
    strangers_make_room_before_an_idle_seller(b"POST /v1/leads HTTP/1.1\r\nHost: x\r\n");
}

/// So do connections that never sent a byte, once their first second is over: a flood of
/// them does not push out a seller's kept-alive connection, idle for longer than they are.
#[test]
fn silent_strangers_make_room_before_an_idle_seller() {
    strangers_make_room_before_an_idle_seller(b"");
}

fn strangers_make_room_before_an_idle_seller(first_bytes: &[u8]) {
    use std::io::Write;
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    // Two workers: the kernel may put the seller and the new connection on one and the
    // strangers on the other, and a stranger is still closed first.
    let toml = with_limit(&config(&fleet, "", |_| String::new()), 4);
    assert!(toml.contains("workers = 2\n"));
    let ex = Exchange::start(&toml);
    let admin = admin_of(&ex);
    let mut seller = ex.client();
    assert_eq!(seller.lead(LEAD).json()["status"], "sold");
    // The seller's connection is idle for longer than the strangers are old.
    std::thread::sleep(Duration::from_millis(300));
    let strangers: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(ex.addr).unwrap();
            s.write_all(first_bytes).unwrap();
            s
        })
        .collect();
    assert!(eventually(|| connections(admin)["sellers_open"] == 4));
    // Stalled past `STRANGER_STALL` (and `FIRST_REQUEST_GRACE`).
    std::thread::sleep(Duration::from_millis(1500));

    let mut new = ex.client();
    let r = new.lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(|| strangers.iter().any(closed_now)),
        "no stalled stranger was closed"
    );
    assert!(!closed_now(&seller.stream), "the idle seller was closed");
    assert_eq!(seller.lead(LEAD).json()["status"], "sold");
    assert_eq!(connections(admin)["sellers_evicted"], 1);
}

/// Connections kept alive by requests refused for their credentials are strangers however
/// recently they sent one: at the limit one of them makes room for a new seller, and the
/// seller's kept-alive connection, idle longer than they are, stays open.
#[test]
fn refused_connections_make_room_before_an_idle_seller() {
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    // One worker: every connection is on it, and the seller's is the one idle the longest.
    let toml = with_limit(&config(&fleet, "", |_| String::new()), 4)
        .replace("workers = 2\n", "workers = 1\n");
    let ex = Exchange::start(&toml);
    let admin = admin_of(&ex);
    let mut seller = ex.client();
    assert_eq!(seller.lead(LEAD).json()["status"], "sold");
    std::thread::sleep(Duration::from_millis(300));
    let mut refused: Vec<Client> = (0..3).map(|_| ex.client()).collect();
    for c in &mut refused {
        let r = c.post("/v1/leads", Some("not-a-key"), LEAD.as_bytes());
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        let r = c.post("/v1/leads", None, LEAD.as_bytes());
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(connections(admin)["sellers_open"], 4);

    let mut new = ex.client();
    let r = new.lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(|| refused.iter().any(|c| closed_now(&c.stream))),
        "no refused connection was closed"
    );
    assert!(!closed_now(&seller.stream), "the idle seller was closed");
    assert_eq!(seller.lead(LEAD).json()["status"], "sold");
    assert_eq!(connections(admin)["sellers_evicted"], 1);
}

/// A connection to the exchange with a small receive buffer, never read here, whose writes
/// give up after 200 ms.
fn non_reading_seller(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
}

/// A thousand pipelined requests, each answered 404.
fn unread_requests() -> Vec<u8> {
    let request = format!(
        "GET /v1/no-such-path HTTP/1.1\r\nHost: gavel\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    );
    request.repeat(1_000).into_bytes()
}

/// A seller that stops taking its answers (pipelining requests into a socket it never reads,
/// until the buffers on both sides are full) is closed once its answers have waited
/// `server.head_timeout_ms`, giving back its place, rather than holding it for ever; another
/// seller is served meanwhile and after.
#[test]
fn a_seller_that_stops_reading_its_answers_is_closed_after_the_head_timeout() {
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    let toml = with_limit(&config(&fleet, "", |_| String::new()), 8)
        .replace("workers = 2\n", "workers = 2\nhead_timeout_ms = 1000\n");
    let ex = Exchange::start(&toml);
    let admin = admin_of(&ex);
    let stream = non_reading_seller(ex.addr);
    let batch = unread_requests();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let until = Instant::now() + PATIENCE;
            let mut sent = 0usize;
            // Until the exchange stops reading (the buffers full) and then closes.
            while Instant::now() < until && sent < 400 {
                match stream.write_all(&batch) {
                    Ok(()) => sent += 1,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return true,
                }
            }
            false
        })
    };
    assert!(
        eventually(|| connections(admin)["sellers_open"] == 1),
        "{}",
        connections(admin)
    );
    // Another seller is served while the first sits on its answers.
    let mut other = ex.client();
    assert_eq!(other.lead(LEAD).json()["status"], "sold");
    drop(other);
    assert!(
        eventually(|| connections(admin)["sellers_open"] == 0),
        "the seller that stopped reading is still open: {}",
        connections(admin)
    );
    assert!(writer.join().unwrap(), "its writes never failed");
    let mut after = ex.client();
    let r = after.lead(&LEAD.replace("ana@example.com", "bo@example.com"));
    assert_eq!(
        r.json()["status"],
        "sold",
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Sellers that stop taking their answers while holding every place (pipelining requests
/// into sockets they never read) do not lock the others out until the head timeout closes
/// them: once their answers have waited a second for socket space, a new connection takes one
/// of their places.
#[test]
fn sellers_that_stop_reading_make_room_for_a_new_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    let toml = with_limit(&config(&fleet, "", |_| String::new()), 2)
        .replace("workers = 2\n", "workers = 2\nhead_timeout_ms = 60000\n");
    let ex = Exchange::start(&toml);
    let admin = admin_of(&ex);
    let batch = unread_requests();
    // Writers whose writes have stopped going through: the exchange holds their answers.
    let blocked = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for _ in 0..2 {
        let stream = non_reading_seller(ex.addr);
        let mut writing = stream.try_clone().unwrap();
        let (batch, blocked) = (batch.clone(), blocked.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let until = Instant::now() + PATIENCE;
            let mut counted = false;
            while Instant::now() < until {
                match writing.write_all(&batch) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if !counted {
                            counted = true;
                            blocked.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        streams.push(stream);
    }
    assert!(
        eventually(|| blocked.load(Ordering::SeqCst) == 2),
        "the sellers' writes never stopped"
    );
    assert_eq!(connections(admin)["sellers_open"], 2);
    // Well within the head timeout (60 s): a new seller is served.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        // Refused, a connection is told 503 unasked; taken in, it hears nothing.
        let mut c = Client::connect(ex.addr);
        c.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if c.stream.peek(&mut [0u8; 1]).is_err() {
            c.stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let r = c.lead(LEAD);
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["status"], "sold");
            break;
        }
        assert!(
            Instant::now() < until,
            "a new seller was never served: {}",
            connections(admin)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(connections(admin)["sellers_evicted"].as_u64() >= Some(1));
    drop(streams);
}

/// A seller that has just connected and is about to send its lead is not closed to make room
/// for one that connects a moment later (its lead would go unanswered, and it could not tell
/// whether it was taken): the later one is told 503 `overloaded`, an answer it can act on.
#[test]
fn a_seller_that_just_connected_keeps_its_place_and_the_next_is_told_overloaded() {
    let fleet = Fleet::start(vec![bidder("acme", 5000)]).unwrap();
    let (ex, admin) = exchange(config(&fleet, "", |_| String::new()), 1);
    let t = Instant::now();
    let mut first = ex.client();
    assert!(
        eventually(|| connections(admin)["sellers_open"] == 1),
        "the first connection was not accepted"
    );
    let mut second = ex.client();
    let refused = second.lead(LEAD);
    let r = first.lead(LEAD);
    if t.elapsed() >= gavel::net::FIRST_REQUEST_GRACE {
        // A machine too slow to tell: the first connection was old enough to be taken.
        return;
    }
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"]["code"], "overloaded");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "sold");
    assert_eq!(connections(admin)["sellers_evicted"], 0);
}
