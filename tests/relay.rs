//! `gavel-relay`, the fan-out floor of the benchmarks, as `tools/bench.py --relay` runs it:
//! three real processes (the mock buyers, the relay, the load tool) on loopback.

mod common;

use common::finish_within;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first `n` lines a child prints.
fn lines(child: &mut Child, n: usize) -> Vec<String> {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < n {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        lines.push(line.trim_end().to_string());
    }
    lines
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).expect("connect to the relay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn the_relay_binary_auctions_a_load_run_and_reports_its_overhead() {
    let mut buyers = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"))
        .args(["--count", "4", "--latency-ms", "1", "--no-bid-rate", "0.2"])
        .args(["--reject-rate", "0", "--duration-s", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gavel-mock-buyers");
    let urls: Vec<String> = lines(&mut buyers, 4)
        .iter()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.len() == 3).then(|| format!("{},{}", p[1], p[2]))
        })
        .collect();
    let _buyers = Proc(buyers);
    assert_eq!(urls.len(), 4, "mock buyers did not start");

    let mut relay = Command::new(env!("CARGO_BIN_EXE_gavel-relay"));
    for u in &urls {
        relay.args(["--buyer", u]);
    }
    let mut relay = relay
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gavel-relay");
    let first = lines(&mut relay, 1);
    let _relay = Proc(relay);
    let addr = first
        .first()
        .and_then(|l| l.strip_prefix("listening "))
        .expect("the relay prints where it listens")
        .to_string();

    let report = load_for_a_second(&addr, 200, 8);
    let answered = report["answered"].as_u64().unwrap_or(0);
    assert_eq!(
        answered,
        report["scheduled"].as_u64().unwrap_or(u64::MAX),
        "{report}"
    );
    assert_eq!(
        report["sold"].as_u64().unwrap_or(0) + report["unsold"].as_u64().unwrap_or(0),
        answered,
        "{report}"
    );
    // With four buyers each bidding on 80 % of pings, nearly every lead sells.
    assert!(
        report["sold"].as_u64().unwrap_or(0) * 10 > answered * 9,
        "{report}"
    );

    let st = get_json(&addr, "/v1/stats");
    assert_eq!(st["leads"].as_u64(), Some(answered), "{st}");
    assert_eq!(st["overhead_us"]["count"].as_u64(), Some(answered), "{st}");
    assert_eq!(st["ping_errors"], 0, "{st}");
    assert_eq!(st["ping_timeouts"], 0, "{st}");
    // Each lead waited at least the buyers' 1 ms; the relay's own share is what is left.
    assert!(
        st["elapsed_us"]["p50"].as_u64().unwrap_or(0) >= 1000,
        "{st}"
    );
    assert_eq!(get_json(&addr, "/healthz")["status"], "ok");
}

#[test]
fn the_relay_binary_refuses_a_bad_command_line() {
    for args in [
        vec![],
        vec!["--buyer", "http://127.0.0.1:1/ping"],
        vec![
            "--buyer",
            "https://127.0.0.1:1/ping,https://127.0.0.1:1/post",
        ],
        vec![
            "--buyer",
            "http://127.0.0.1:1/a,http://127.0.0.1:1/b",
            "--reserve",
            "lots",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gavel-relay"))
            .args(&args)
            .output()
            .expect("run gavel-relay");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn the_relay_binary_serves_on_when_its_reader_goes_and_stops_on_a_full_disk() {
    let buyer = "http://127.0.0.1:1/ping,http://127.0.0.1:1/post";
    // The reader has gone before the address is written (`gavel-relay ... | true`): the relay
    // serves on, on the port asked for.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) fills the two descriptors; each is owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created by pipe(2) and are owned by nothing else.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read_end);
    let child = Command::new(env!("CARGO_BIN_EXE_gavel-relay"))
        .args(["--buyer", buyer, "--listen", &addr])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-relay");
    let child = Proc(child);
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(&addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "the relay never listened on {addr}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get_json(&addr, "/healthz")["status"], "ok");
    let mut child = child;
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the relay exited"
    );
    let pid = libc::pid_t::try_from(child.0.id()).expect("pid");
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "quiet: {err}");

    // The address cannot be written at all: the relay stops with one line.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let child = Command::new(env!("CARGO_BIN_EXE_gavel-relay"))
        .args(["--buyer", buyer])
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-relay");
    let (code, err) = finish_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("gavel-relay: cannot write the output: "),
        "{err}"
    );
}

/// The one mock buyer's `host:port`, from the line it prints.
fn mock_buyer(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"))
        .args(["--count", "1", "--duration-s", "120"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gavel-mock-buyers");
    let addr = lines(&mut child, 1)
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|url| url.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string)
        .expect("the mock buyer prints its URLs");
    (Proc(child), addr)
}

#[test]
fn the_load_binary_rates_a_slow_target_over_the_time_its_answers_took() {
    // One connection to a buyer that answers after 20 ms carries about 50 leads/s: the 100
    // leads due in the first second are answered over about two.
    let (_buyer, addr) = mock_buyer(&["--latency-ms", "20"]);
    let report = load_for_a_second(&addr, 100, 1);
    assert_eq!(report["answered"], 100, "{report}");
    assert_eq!(report["duration_ms"], 1000, "the schedule\n{report}");
    let elapsed_ms = report["elapsed_ms"].as_u64().unwrap_or(0);
    assert!(elapsed_ms >= 1900, "100 answers 20 ms apart\n{report}");
    let rate = report["achieved_rate_per_s"].as_f64().unwrap_or(f64::MAX);
    assert!(rate < 55.0, "answers over the time they took\n{report}");
    let expected = 100.0 * 1000.0 / elapsed_ms as f64;
    assert!((rate - expected).abs() < 1.0, "{report}");
}

#[test]
fn the_load_binary_refuses_a_template_variable_no_var_gives() {
    let dir = std::env::temp_dir().join(format!("gavel-load-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let template = dir.join("lead.json");
    std::fs::write(
        &template,
        r#"{"campaign":"${campaign}","source":${source},"sub":${sub},"lead":{"phone":"${phone}"}}"#,
    )
    .expect("write the template");
    // Nothing listens on port 1: a usage error must be found before connecting at all.
    let out = Command::new(env!("CARGO_BIN_EXE_gavel-load"))
        .args(["--target", "127.0.0.1:1", "--key", "k", "--campaign", "c"])
        .args(["--duration-s", "1", "--template"])
        .arg(&template)
        .args(["--var", "source=\"fb-17\""])
        .output()
        .expect("run gavel-load");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("${sub}"), "names the variable: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_mock_buyer_binary_refuses_flags_it_could_not_honour() {
    // --duration-s ends a fleet that wrongly starts.
    for args in [
        vec!["--count", "2", "--base-port", "65535"],
        vec!["--latency-ms", "20", "--latency-p99-ms", "5"],
        vec!["--latency-ms", "20", "--latency-p99-ms", "NaN"],
        vec!["--latency-ms", "0", "--latency-p99-ms", "50"],
        vec!["--latency-jitter-ms", "5", "--latency-p99-ms", "50"],
        vec!["--latency-ms", "5", "--latency-jitter-ms", "10"],
        // Bids are whole cents: a bound with a fraction of one is refused, not rounded.
        vec!["--bid-min", "7.999", "--bid-max", "8.001"],
        vec!["--bid-min", "0.005", "--bid-max", "1"],
        vec!["--bid-min", "5", "--bid-max", "5e-3"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"))
            .args(["--duration-s", "1"])
            .args(&args)
            .output()
            .expect("run gavel-mock-buyers");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty(), "{args:?} started buyers");
    }
}

#[test]
fn the_mock_buyer_binary_names_the_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    // Buyer 0 gets a free port of its own; buyer 1 is the taken one.
    let base = port.checked_sub(1).expect("a port above 1");
    let out = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"))
        .args(["--count", "2", "--base-port", &base.to_string()])
        .args(["--duration-s", "1"])
        .output()
        .expect("run gavel-mock-buyers");
    let err = String::from_utf8_lossy(&out.stderr);
    // Port `base` may be another process's: that names `base` instead, as it should.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}:")) || err.contains(&format!("127.0.0.1:{base}:")),
        "names the address: {err}"
    );
    assert!(out.stdout.is_empty(), "no buyer was listed");
}

#[test]
fn the_mock_buyer_binary_bids_within_its_range_to_the_cent() {
    let (_buyer, addr) = mock_buyer(&[
        "--latency-ms",
        "0",
        "--no-bid-rate",
        "0",
        "--bid-min",
        "7.99",
        "--bid-max",
        "8.00",
    ]);
    let mut s = TcpStream::connect(&addr).expect("connect to the buyer");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = r#"{"ping_id":"p1"}"#;
    for _ in 0..40 {
        write!(
            s,
            "POST /ping HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
    }
    write!(
        s,
        "POST /ping HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let bids: Vec<f64> = text
        .split("\r\n\r\n")
        .filter_map(|b| {
            serde_json::Deserializer::from_str(b)
                .into_iter::<serde_json::Value>()
                .next()
        })
        .filter_map(|v| v.ok()?["bid"].as_f64())
        .collect();
    assert_eq!(bids.len(), 41, "{text}");
    for bid in &bids {
        assert!((7.99..=8.0).contains(bid), "bid {bid} outside [7.99, 8.00]");
    }
    assert!(bids.contains(&7.99) && bids.contains(&8.0), "{bids:?}");
}

#[test]
fn the_mock_buyer_binary_serves_on_when_its_reader_goes_and_stops_on_a_full_disk() {
    // More URL lines than a pipe holds: the fleet is still listing them when the reader goes
    // (`| head -1`), and the rest of the listing meets a closed pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"))
        .args(["--count", "1500", "--latency-ms", "0", "--no-bid-rate", "0"])
        .args(["--duration-s", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-mock-buyers");
    let first = lines(&mut child, 1);
    let urls: Vec<&str> = first
        .first()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(urls.len(), 3, "{first:?}");
    // The reader is gone (`lines` dropped it); the fleet still answers.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        buyer_call(urls[1], r#"{"ping_id":"p1"}"#).contains(" 200 "),
        "the fleet stopped serving"
    );
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the fleet exited"
    );
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, err) = finish_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "quiet: {err}");

    // A listing that cannot be written at all is lost to the operator: the fleet stops.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let child = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"))
        .args(["--count", "2", "--duration-s", "120"])
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-mock-buyers");
    let (code, err) = finish_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: cannot write the output: "), "{err}");
}

/// `gavel-load` at `rate` leads/s for one second over `connections`: its JSON report.
fn load_for_a_second(addr: &str, rate: u32, connections: u32) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gavel-load"))
        .args(["--target", addr, "--key", "k", "--campaign", "c"])
        .args([
            "--rate",
            &rate.to_string(),
            "--duration-s",
            "1",
            "--warmup-ms",
            "0",
        ])
        .args(["--connections", &connections.to_string(), "--json"])
        .output()
        .expect("run gavel-load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("load JSON")
}

/// One request to a mock buyer over a fresh connection; the answer's status line.
fn buyer_call(url: &str, body: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_at(rest.find('/').expect("path"));
    let mut s = TcpStream::connect(addr).expect("connect to the buyer");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text.lines().next().unwrap_or("").to_string()
}

/// A one-buyer fleet for `--duration-s 2`, pinged and posted once: everything it printed
/// after its URL line.
fn buyer_run(json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gavel-mock-buyers"));
    cmd.args([
        "--count",
        "1",
        "--latency-ms",
        "40",
        "--post-latency-ms",
        "0",
    ])
    .args([
        "--no-bid-rate",
        "0",
        "--reject-rate",
        "0",
        "--duration-s",
        "2",
    ]);
    if json {
        cmd.arg("--json");
    }
    let mut child = Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gavel-mock-buyers"),
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("URL line");
    let urls: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(urls.len(), 3, "{first}");
    assert!(buyer_call(urls[1], r#"{"ping_id":"p1"}"#).contains(" 200 "));
    assert!(buyer_call(urls[2], r#"{"ping_id":"p1","price":5.0}"#).contains(" 200 "));
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read the counters");
    rest
}

#[test]
fn the_mock_buyer_binary_reports_ping_and_post_delays_apart_under_their_json_names() {
    let json: serde_json::Value = serde_json::from_str(&buyer_run(true)).expect("JSON counters");
    let stats = &json[0];
    assert!(stats.get("reply_us").is_none(), "{stats}");
    assert_eq!(stats["ping_reply_us"]["count"], 1, "{stats}");
    assert_eq!(stats["post_reply_us"]["count"], 1, "{stats}");
    assert!(
        stats["ping_reply_us"]["min"].as_u64() >= Some(39_000),
        "{stats}"
    );
    assert!(
        stats["post_reply_us"]["max"]
            .as_u64()
            .is_some_and(|v| v < 39_000),
        "{stats}"
    );

    // Every name=value of the text is a JSON field (a.b: field b of field a).
    let text = buyer_run(false);
    let line = text.lines().next().expect("a line per buyer");
    let pairs: Vec<(&str, &str)> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect();
    assert!(pairs.len() >= 10, "{line}");
    for (name, value) in &pairs {
        let field = name.split('.').fold(stats, |v, k| &v[k]);
        assert!(field.is_u64(), "`{name}` is not a JSON field: {line}");
        assert!(value.parse::<u64>().is_ok(), "{line}");
    }
    for name in ["ping_reply_us.p50", "post_reply_us.max", "accepted_posts"] {
        assert!(pairs.iter().any(|(n, _)| *n == name), "{name}: {line}");
    }
}
