//! Stopping the real binary: SIGTERM answers the leads in flight before the process exits.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn sigterm(pid: u32) {
    // SAFETY: kill(2) with a pid this test started and a plain signal number.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0, "kill -TERM");
}

/// One buyer that bids $42 and accepts every post.
fn one_bidder() -> Fleet {
    Fleet::start(vec![BuyerSpec::new("acme").with_responder(
        |kind, _| match kind {
            Kind::Ping => Reply::bid(4200, None),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap()
}

/// A lead sold on a fresh connection to `addr`.
fn sell_one(addr: std::net::SocketAddr) {
    let mut seller = Client::connect(addr);
    seller.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.as_bytes(),
    ));
    let v = seller.read_response().expect("answered").json();
    assert_eq!(v["status"], "sold", "{v}");
}

/// SIGTERM, then the exit status, which must come within 20 s (the child is killed if not).
fn stop_within_20_s(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("still running 20 s after SIGTERM {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fleet, the child, the seller address, the config text and the busy connection.
type SlowLead = (
    Fleet,
    std::process::Child,
    std::net::SocketAddr,
    String,
    Client,
);

/// `gavel serve` with one buyer that bids after `bid_after_ms`, and a lead sent to it on a
/// connection of its own: the child, the seller address, the config text and that connection.
fn serving_a_slow_lead(name: &str, bid_after_ms: u64, ping_timeout_ms: u64) -> SlowLead {
    serving_a_slow_lead_on(name, bid_after_ms, ping_timeout_ms, 1)
}

/// [`serving_a_slow_lead`] with `workers` event loops.
fn serving_a_slow_lead_on(
    name: &str,
    bid_after_ms: u64,
    ping_timeout_ms: u64,
    workers: usize,
) -> SlowLead {
    let fleet = Fleet::start(vec![BuyerSpec::new("slow").with_responder(
        move |kind, _| match kind {
            Kind::Ping => Reply::bid(4200, None).after_ms(bid_after_ms),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap();
    let dir = temp_dir(name);
    let text = config(
        &fleet,
        &format!("ping_timeout_ms = {ping_timeout_ms}"),
        |_| String::new(),
    )
    .replace("ping_timeout_ms = 300\n", "")
    .replace("workers = 1", &format!("workers = {workers}"));
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (child, addr, _) = serve_logged(&cfg);
    let mut busy = Client::connect(addr);
    busy.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.as_bytes(),
    ));
    (fleet, child, addr, text, busy)
}

#[test]
fn sigterm_answers_the_leads_in_flight_then_exits_cleanly() {
    // A lead whose buyer takes 600 ms, and an idle keep-alive connection.
    let (_fleet, mut child, addr, text, mut busy) = serving_a_slow_lead("shutdown", 600, 2000);
    let mut idle = Client::connect(addr);
    std::thread::sleep(Duration::from_millis(150));
    let stopped_at = Instant::now();
    sigterm(child.id());

    // The lead in flight is answered, sold, after the signal, and its answer says the
    // connection closes: the seller sends its next lead elsewhere, not into a closing socket.
    let r = busy
        .read_response()
        .expect("the lead in flight is answered");
    assert!(!r.keep_alive, "a drain's answer says Connection: close");
    let v = r.json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["price"], 42.0);
    assert!(busy.read_response().is_none(), "closed after the answer");
    // A new lead on an open connection is refused with 503 and the connection closed.
    let other = LEAD
        .replace("7135550147", "7135550111")
        .replace("ana@", "bea@");
    idle.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        other.as_bytes(),
    ));
    if let Some(r) = idle.read_response() {
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["code"], "shutting_down");
        assert!(idle.read_response().is_none(), "closed after the 503");
    }
    // The process exits by itself, cleanly, well before the drain limit.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(20));
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());

    // The lead's whole story is in the journal, answer included.
    let journal = journal_dir_of(&text);
    let out = gavel()
        .args(["journal", "export", "--dir"])
        .arg(&journal)
        .output()
        .expect("journal export");
    let records = String::from_utf8_lossy(&out.stdout);
    let lead_id = v["lead_id"].as_str().unwrap();
    let answered = records
        .lines()
        .filter(|l| l.contains(lead_id) && l.contains("\"lead_answered\""))
        .count();
    assert_eq!(answered, 1, "{records}");
}

#[test]
fn sigterm_exits_with_the_operator_api_open_and_an_operator_connected() {
    let fleet = one_bidder();
    let dir = temp_dir("shutdown-admin");
    // A port free a moment ago, so the test knows where the operator API listens.
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let text = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        &format!(
            "max_in_flight = 1000\nadmin_listen = \"{admin_addr}\"\n\n[admin]\ntoken = \"op-token-123456\""
        ),
    );
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (mut child, addr, _) = serve_logged(&cfg);
    sell_one(addr);
    // An operator's keep-alive connection, idle when the signal comes.
    let mut operator = None;
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(admin_addr) {
            operator = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _operator = operator.expect("the operator API listens");
    let status = stop_within_20_s(&mut child, "with the operator API open");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        TcpStream::connect(admin_addr).is_err(),
        "the operator API is closed"
    );
}

#[test]
fn sigterm_still_stops_the_exchange_after_its_log_reader_went_away() {
    use std::io::{BufRead, BufReader};
    let fleet = one_bidder();
    let dir = temp_dir("shutdown-stderr");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, config(&fleet, "", |_| String::new())).unwrap();
    let mut child = spawn_serve_piped(&cfg);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut addr = None;
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(rest) = line.split("serving sellers on ").nth(1) {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            break;
        }
    }
    let addr: std::net::SocketAddr = addr.expect("gavel serve announced its address");
    // Whoever read the log is gone: the next line the exchange writes meets a closed pipe.
    drop(stderr);
    sell_one(addr);
    let status = stop_within_20_s(&mut child, "with its stderr closed");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the seller port is closed"
    );
}

#[test]
fn a_second_sigterm_exits_at_once_with_status_1_when_leads_are_left_unanswered() {
    let (_fleet, mut child, _, _, mut busy) = serving_a_slow_lead("shutdown-forced", 3000, 5000);
    std::thread::sleep(Duration::from_millis(150));
    sigterm(child.id());
    std::thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    let status = stop_within_20_s(&mut child, "sent twice");
    // At once: long before the buyer's 3 s answer.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    // The lead got no answer: its connection is closed without one.
    assert!(busy.read_response().is_none());
}

/// While any worker still has a lead in flight, a request on any open connection, whichever
/// worker holds it, is answered 503 `shutting_down`: a worker with nothing of its own in
/// flight does not drop its connections unanswered while the process is still stopping.
#[test]
fn every_worker_answers_503_while_another_finishes_its_leads() {
    // Two workers: the idle connections land on both.
    let (_fleet, mut child, addr, _text, mut busy) =
        serving_a_slow_lead_on("shutdown-workers", 2500, 4000, 2);
    let mut idle: Vec<Client> = (0..12).map(|_| Client::connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(child.id());
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in idle.iter_mut().enumerate() {
        let other = LEAD
            .replace("7135550147", &format!("71355502{i:02}"))
            .replace("ana@", &format!("ana{i}@"));
        c.send_raw(&Client::request(
            "POST",
            "/v1/leads",
            Some(KEY),
            other.as_bytes(),
        ));
        let r = c
            .read_response()
            .unwrap_or_else(|| panic!("connection {i} closed unanswered"));
        assert_eq!(r.status, 503, "connection {i}");
        assert_eq!(r.json()["error"]["code"], "shutting_down");
    }
    let v = busy.read_response().expect("the lead in flight").json();
    assert_eq!(v["status"], "sold", "{v}");
    let status = stop_within_20_s(&mut child, "after the last lead");
    assert!(status.success() || status.code() == Some(1), "{status:?}");
}
