//! `gavel buyer-check` as an operator runs it: the real binary against real buyer endpoints on
//! loopback.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Reply};
use serde_json::Value;
use std::process::{Command, Output};

fn gavel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
}

fn buyer_check(args: &[&str]) -> Output {
    gavel()
        .arg("buyer-check")
        .args(args)
        .output()
        .expect("run gavel")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The line of a check in the text report, e.g. `FAIL  http  ping 1: ...`.
fn check_line(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {} check in:\n{}", name, out))
        .to_string()
}

fn fleet(spec: BuyerSpec) -> Fleet {
    Fleet::start(vec![spec]).expect("start buyer")
}

#[test]
fn a_conformant_keep_alive_buyer_passes_on_one_connection() {
    let f = fleet(BuyerSpec::new("acme"));
    let url = f.ping_url(0);
    let o = buyer_check(&["--url", &url, "--count", "10", "--interval-ms", "0"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}{}", out, stderr(&o));
    assert!(out.contains("result: conformant"), "{}", out);
    for p in ["p50", "p90", "p99", "max"] {
        assert!(out.contains(p), "{}", out);
    }
    for check in [
        "connect",
        "http",
        "answer",
        "content_type",
        "timeout",
        "keep_alive",
        "consistent",
    ] {
        assert!(
            check_line(&out, check).trim_start().starts_with("PASS"),
            "{}",
            out
        );
    }
    assert!(out.contains("bids $42.50 .. $42.50"), "{}", out);
    assert_eq!(f.pings(0), 10);
    assert_eq!(f.accepted_connections(0), 1, "every ping on one connection");

    // The pings themselves: the sample's non-personal fields, marked as a test.
    let bodies = f.ping_bodies(0);
    assert_eq!(bodies.len(), 10);
    let v = body_json(&bodies[0]);
    assert_eq!(v["test"], true);
    assert_eq!(v["timeout_ms"], 800);
    assert_eq!(v["lead"]["state"], "TX");
    assert!(v["lead"].get("email").is_none());
    assert_ne!(body_json(&bodies[1])["ping_id"], v["ping_id"]);
}

#[test]
fn json_report_counts_and_percentiles() {
    let f = fleet(BuyerSpec::new("acme"));
    let url = f.ping_url(0);
    let o = buyer_check(&[
        "--url",
        &url,
        "--count",
        "5",
        "--interval-ms",
        "0",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["conformant"], true);
    assert_eq!(v["sent"], 5);
    assert_eq!(v["bids"], 5);
    assert_eq!(v["bid_min"], 42.5);
    assert_eq!(v["connections"], 1);
    assert_eq!(v["reconnects"], 0);
    assert_eq!(v["response_us"]["count"], 5);
    assert!(v["response_us"]["p99"].as_u64().unwrap() > 0);
    assert!(v["checks"].as_array().unwrap().len() >= 7);
}

#[test]
fn garbage_and_wrong_status_fail_the_named_check() {
    let garbage = fleet(
        BuyerSpec::new("junk").with_responder(|_, _| Reply::raw(&b"this is not http\r\n\r\n"[..])),
    );
    let o = buyer_check(&["--url", &garbage.ping_url(0), "--count", "3"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    assert!(check_line(&out, "http").contains("FAIL"), "{}", out);
    assert!(out.contains("result: NOT conformant"), "{}", out);

    let status = fleet(
        BuyerSpec::new("broken").with_responder(|_, _| Reply::json(500, &b"{\"bid\":9}"[..])),
    );
    let o = buyer_check(&["--url", &status.ping_url(0), "--count", "3"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    let line = check_line(&out, "http");
    assert!(
        line.contains("FAIL") && line.contains("status 500"),
        "{}",
        out
    );

    let unparsable =
        fleet(BuyerSpec::new("words").with_responder(|_, _| Reply::json(200, &b"bid: lots"[..])));
    let o = buyer_check(&["--url", &unparsable.ping_url(0), "--count", "3"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    let line = check_line(&out, "answer");
    assert!(
        line.contains("FAIL") && line.contains("unparsable"),
        "{}",
        out
    );
}

#[test]
fn a_buyer_closing_after_each_answer_fails_keep_alive() {
    // Says so: `Connection: close` on every answer.
    let f = fleet(BuyerSpec::new("closer").with_responder(|_, _| Reply::bid(1000, None).closing()));
    let o = buyer_check(&[
        "--url",
        &f.ping_url(0),
        "--count",
        "4",
        "--interval-ms",
        "0",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    let line = check_line(&out, "keep_alive");
    assert!(
        line.contains("FAIL") && line.contains("4 connections"),
        "{}",
        out
    );
    assert!(check_line(&out, "answer").contains("PASS"), "{}", out);
    assert_eq!(f.accepted_connections(0), 4);

    // Does not say so: a keep-alive answer, then the connection dropped.
    let silent = fleet(BuyerSpec::new("dropper").with_responder(|_, _| {
        Reply::raw(
            &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"bid\":0}"
                [..],
        )
        .closing()
    }));
    let o = buyer_check(&[
        "--url",
        &silent.ping_url(0),
        "--count",
        "3",
        "--interval-ms",
        "20",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    let line = check_line(&out, "keep_alive");
    assert!(
        line.contains("FAIL") && line.contains("closed by the buyer"),
        "{}",
        out
    );
    assert!(
        out.contains("no-bids 3"),
        "each ping was sent again and answered: {}",
        out
    );
}

/// A buyer that answers each ping twice: the second answer waits on the idle connection, and
/// taken as the next ping's it would look like an answer in no time. It is caught before the
/// next ping is written, and the connection closed, as the exchange closes it.
#[test]
fn an_answer_sent_twice_fails_keep_alive_and_is_not_taken_for_the_next() {
    const ANSWER: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"bid\":42.50}";
    let twice = format!("{ANSWER}{ANSWER}");
    let f = fleet(BuyerSpec::new("twice").with_responder(move |_, _| Reply::raw(twice.as_bytes())));
    let o = buyer_check(&[
        "--url",
        &f.ping_url(0),
        "--count",
        "3",
        "--interval-ms",
        "100",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    let line = check_line(&out, "keep_alive");
    assert!(
        line.contains("FAIL") && line.contains("nobody asked for after the answer to ping 1"),
        "{}",
        out
    );
    assert!(
        out.contains("bids 3,"),
        "every ping answered on its own: {}",
        out
    );
    assert_eq!(f.accepted_connections(0), 3, "{}", out);
}

#[test]
fn an_unreachable_port_fails_with_a_clear_message() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{}/ping", port);
    let o = buyer_check(&["--url", &url]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", out);
    let line = check_line(&out, "connect");
    assert!(
        line.contains("FAIL") && line.contains(&format!("cannot connect to 127.0.0.1:{}", port)),
        "{}",
        out
    );
    assert!(
        out.contains("pings 0 sent of 20:")
            && out.contains("errors 0,")
            && out.contains("the rest not sent: the buyer was never reached"),
        "stops after the first: {}",
        out
    );
}

/// Read one whole ping (head and JSON body) from a buyer's connection; false at its end.
fn read_ping(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"}") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// A buyer's bid of $3.50, saying `Connection: close` when `close`.
fn bid_answer(close: bool) -> Vec<u8> {
    let body = r#"{"bid": 3.5}"#;
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

/// A buyer that closes kept-alive connections after 300 ms idle (a server's keep-alive
/// timeout) is a warning naming that time and what to set, not a failure: the exchange,
/// told an `idle_timeout_ms` under it, closes them first. One that closes right after its
/// answer fails.
#[test]
fn a_buyer_idle_timeout_is_told_apart_from_a_close_after_each_answer() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().take(16) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                // Each ping answered; a connection idle 300 ms closed.
                let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(300)));
                while read_ping(&mut s) {
                    if s.write_all(&bid_answer(false)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let url = format!("http://127.0.0.1:{port}/ping");
    let o = buyer_check(&["--url", &url, "--count", "3", "--interval-ms", "800"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let line = check_line(&out, "keep_alive");
    assert!(line.trim_start().starts_with("WARN"), "{out}");
    assert!(
        line.contains("idle about 3") && line.contains("idle_timeout_ms under that"),
        "{out}"
    );
    // Pinged just as its idle timeout ends, the buyer's close meets the ping: still its idle
    // timeout, never a failure.
    let o = buyer_check(&["--url", &url, "--count", "6", "--interval-ms", "300"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!check_line(&out, "keep_alive").contains("FAIL"), "{out}");
    // Pinged within its idle timeout, it keeps the connection.
    let o = buyer_check(&["--url", &url, "--count", "3", "--interval-ms", "0"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        check_line(&out, "keep_alive")
            .trim_start()
            .starts_with("PASS"),
        "{out}"
    );
}

/// A buyer that goes away mid-run: the run stops at the first connect that fails, and the
/// report tells the pings answered from the ones never sent.
#[test]
fn a_buyer_gone_mid_run_stops_the_run_at_the_failed_connect() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Two pings answered, each on its own connection, then the port closes.
    let buyer = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            read_ping(&mut s);
            s.write_all(&bid_answer(true)).unwrap();
        }
    });
    let url = format!("http://127.0.0.1:{port}/ping");
    let o = buyer_check(&["--url", &url, "--count", "6", "--interval-ms", "200"]);
    buyer.join().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("pings 2 sent of 6:"), "{out}");
    assert!(
        out.contains("the rest not sent: a connection to the buyer could not be made"),
        "{out}"
    );
    assert!(out.contains("ping 3: cannot connect"), "{out}");
    assert!(
        !out.contains("ping 4"),
        "stops at the first failed connect: {out}"
    );
}

/// A buyer that takes a ping on its kept-alive connection and goes away without answering:
/// that ping was sent and went unanswered (an error), though the new connection for it could
/// not be made; the run stops there.
#[test]
fn a_ping_the_buyer_took_before_it_went_away_counts_as_sent_and_unanswered() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let buyer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for n in 1..=3 {
            if !read_ping(&mut s) {
                return;
            }
            if n == 3 {
                // Gone: no more connections, and this one closed with the ping unanswered.
                drop(listener);
                return;
            }
            s.write_all(&bid_answer(false)).unwrap();
        }
    });
    let url = format!("http://127.0.0.1:{port}/ping");
    let o = buyer_check(&["--url", &url, "--count", "6", "--interval-ms", "50"]);
    buyer.join().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("pings 3 sent of 6:"), "{out}");
    assert!(out.contains("errors 1"), "{out}");
    assert!(out.contains("ping 3: not answered:"), "{out}");
    assert!(
        out.contains("closed by the buyer") && out.contains("a new one could not be made"),
        "{out}"
    );
    assert!(!out.contains("ping 4"), "{out}");
}

/// `--lead` values reach the buyer as written, as the exchange passes a seller's on: nested
/// numbers keep their digits.
#[test]
fn a_lead_given_on_the_command_line_keeps_its_numbers() {
    let f = fleet(BuyerSpec::new("acme"));
    let url = f.ping_url(0);
    let o = buyer_check(&[
        "--url",
        &url,
        "--count",
        "1",
        "--lead",
        r#"{"lead_type": {"amount": 12345678901234567890123, "c": 250000.10, "e": 1e3}}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let bodies = f.ping_bodies(0);
    let ping = String::from_utf8_lossy(&bodies[0]);
    assert!(
        ping.contains(r#""lead_type":{"amount":12345678901234567890123,"c":250000.10,"e":1e3}"#),
        "{ping}"
    );
}

#[test]
fn help_and_usage_errors() {
    let o = buyer_check(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for opt in [
        "--url",
        "--campaign",
        "--config",
        "--count",
        "--timeout-ms",
        "--json",
    ] {
        assert!(help.contains(opt), "{}", help);
    }

    let dir = temp_dir("buyer-check-usage");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, campaign_config("http://127.0.0.1:9/ping")).unwrap();
    let cfg = cfg.to_str().unwrap();
    for args in [
        vec!["--url", "http://127.0.0.1:9/ping", "--nope"],
        vec![],
        vec!["--url", "gopher://x"],
        vec!["--url", "http://127.0.0.1:9/ping", "--count", "0"],
        vec!["--url", "http://127.0.0.1:9/ping", "--count", "1001"],
        // Headers every request gets from the URL and the body: not to be set.
        vec!["--url", "http://127.0.0.1:9/ping", "--header", "Host: evil"],
        vec![
            "--url",
            "http://127.0.0.1:9/ping",
            "--header",
            "content-length: 5",
        ],
        // A negative number is a value out of range, not an unknown flag.
        vec!["--url", "http://127.0.0.1:9/ping", "--count", "-3"],
        vec!["--url", "http://127.0.0.1:9/ping", "--timeout-ms", "60001"],
        vec!["--url", "http://127.0.0.1:9/ping", "--campaign", "solar"],
        vec![
            "--url",
            "http://127.0.0.1:9/ping",
            "--campaign",
            "solar",
            "--config",
            "/nonexistent/gavel.toml",
        ],
        vec![
            "--url",
            "http://127.0.0.1:9/ping",
            "--campaign",
            "nope",
            "--config",
            cfg,
        ],
        vec!["--url", "http://127.0.0.1:9/ping", "--lead", "[]"],
        // A CA file that is not there, whatever the URL's scheme.
        vec![
            "--url",
            "http://127.0.0.1:9/ping",
            "--ca-file",
            "/nonexistent/ca.pem",
        ],
        vec![
            "--url",
            "https://127.0.0.1:9/ping",
            "--ca-file",
            "/nonexistent/ca.pem",
        ],
    ] {
        let o = buyer_check(&args);
        assert_eq!(o.status.code(), Some(2), "{:?}: {}", args, stderr(&o));
        let err = stderr(&o);
        if args.contains(&"--header") {
            assert!(err.contains("is written by buyer-check itself"), "{err}");
        }
        if args.contains(&"-3") {
            assert!(err.contains("-3 is not in 1..=1000"), "{err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "{:?}: {}", args, err);
        assert!(o.stdout.is_empty(), "{:?}", args);
    }
}

/// A config with campaign `solar` pinging three fields, and buyer `sun` at `ping_url` with a
/// configured header.
fn campaign_config(ping_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
engine_margin_ms = 30

[[sellers]]
id = "seller-1"
api_key = "{KEY}"
campaigns = ["solar"]
payout_share = 0.80

[[campaigns]]
id = "solar"
vertical = "solar"
ping_timeout_ms = 450
ping_fields = ["state", "zip", "monthly_bill"]
required_fields = ["phone", "zip"]

[[buyers]]
id = "sun"
campaigns = ["solar"]
ping_url = "{ping_url}"
post_url = "{ping_url}"
headers = {{ "X-Api-Key" = "sun-secret" }}
"#
    )
}

#[test]
fn config_and_campaign_send_the_campaigns_ping_with_the_buyers_headers() {
    let f = fleet(BuyerSpec::new("sun"));
    let url = f.ping_url(0);
    let dir = temp_dir("buyer-check-config");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, campaign_config(&url)).unwrap();
    let o = buyer_check(&[
        "--url",
        &url,
        "--campaign",
        "solar",
        "--config",
        cfg.to_str().unwrap(),
        "--count",
        "3",
        "--interval-ms",
        "0",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}{}", out, stderr(&o));
    assert!(out.contains("configured buyer sun"), "{}", out);

    let bodies = f.ping_bodies(0);
    assert_eq!(bodies.len(), 3);
    for b in &bodies {
        let v = body_json(b);
        assert_eq!(v["campaign"], "solar");
        assert_eq!(v["vertical"], "solar");
        assert_eq!(v["test"], true);
        assert_eq!(
            v["timeout_ms"],
            450 - 30,
            "the window less the engine margin"
        );
        let mut keys: Vec<&str> = v["lead"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["monthly_bill", "state", "zip"]);
    }
    for head in f.request_heads(0) {
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.contains("x-api-key: sun-secret"), "{}", head);
        assert!(head.contains("content-type: application/json"), "{}", head);
    }
}

/// Which configured buyer the run speaks for is said: none (the URL matches no `ping_url`), or
/// the first of several sharing it, and `--buyer` picks another; the report says posts are
/// not tried.
#[test]
fn the_report_says_which_configured_buyer_it_checked() {
    let f = fleet(BuyerSpec::new("sun"));
    let url = f.ping_url(0);
    let dir = temp_dir("buyer-check-which");
    let cfg = dir.join("gavel.toml");
    let twin = format!(
        "{}\n[[buyers]]\nid = \"moon\"\ncampaigns = [\"solar\"]\nping_url = \"{url}\"\npost_url = \"{url}\"\nheaders = {{ \"X-Api-Key\" = \"moon-secret\" }}\n",
        campaign_config(&url)
    );
    std::fs::write(&cfg, &twin).unwrap();
    let cfg = cfg.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--url",
            &url,
            "--config",
            cfg,
            "--count",
            "2",
            "--interval-ms",
            "0",
        ];
        args.extend_from_slice(extra);
        buyer_check(&args)
    };
    let o = run(&[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("configured buyer sun"), "{out}");
    assert!(
        out.contains("note: buyers sun, moon share this ping_url: checked as sun"),
        "{out}"
    );
    assert!(out.contains("note: posts are not sent"), "{out}");

    let o = run(&["--buyer", "moon"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("configured buyer moon"), "{out}");
    let heads = f.request_heads(0);
    let last = String::from_utf8_lossy(heads.last().unwrap()).to_ascii_lowercase();
    assert!(last.contains("x-api-key: moon-secret"), "{last}");

    // A buyer checked for a campaign it is not in: said, as it is never pinged for it.
    let lunar = twin.replace(
        "id = \"moon\"\ncampaigns = [\"solar\"]",
        "id = \"moon\"\ncampaigns = [\"lunar\"]",
    ) + "\n[[campaigns]]\nid = \"lunar\"\nvertical = \"solar\"\n";
    assert_ne!(lunar, twin);
    let cfg2 = dir.join("lunar.toml");
    std::fs::write(&cfg2, &lunar).unwrap();
    let cfg2 = cfg2.to_str().unwrap();
    let in_other = |buyer: &str| {
        let o = buyer_check(&[
            "--url",
            &url,
            "--config",
            cfg2,
            "--campaign",
            "solar",
            "--buyer",
            buyer,
            "--count",
            "1",
        ]);
        stdout(&o)
    };
    let out = in_other("moon");
    assert!(
        out.contains("note: buyer moon is not in campaign solar: the exchange never pings it"),
        "{out}"
    );
    assert!(!in_other("sun").contains("is not in campaign"));
    assert!(out.contains("note: posts are not sent"), "{out}");

    let o = run(&["--buyer", "nobody"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no buyer \"nobody\""), "{}", stderr(&o));

    // A URL written otherwise than the config's matches no buyer, and the report says so.
    let other = url.replace("/ping", "/ping/");
    let o = buyer_check(&["--url", &other, "--config", cfg, "--count", "1"]);
    let out = stdout(&o);
    assert!(
        out.contains("note: no buyer in the config has this ping_url"),
        "{out}"
    );
}

#[test]
fn a_configured_adapter_buyer_is_pinged_and_read_through_its_adapter() {
    let f = fleet(BuyerSpec::new("legacy").with_responder(|_, _| {
        Reply::raw(
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 62\r\n\r\n<response><price>12.5</price><lead_id>L-1</lead_id></response>"[..],
        )
    }));
    let url = f.ping_url(0);
    let text = campaign_config(&url).replace(
        "headers = { \"X-Api-Key\" = \"sun-secret\" }",
        r#"[buyers.adapter]
request = "form"
response = "xml"
ping_body = { Key = "lx-1", State = "{lead.state}", Ref = "{ping_id}" }
post_body = { Key = "lx-1", Phone = "{lead.phone}", Price = "{price}" }
bid_path = "/response/price"
bid_id_path = "/response/lead_id""#,
    );
    let dir = temp_dir("buyer-check-adapter");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, text).unwrap();
    let o = buyer_check(&[
        "--url",
        &url,
        "--campaign",
        "solar",
        "--config",
        cfg.to_str().unwrap(),
        "--count",
        "2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["protocol"], "adapter");
    assert_eq!(v["bids"], 2);
    assert_eq!(v["bid_max"], 12.5);
    // Its form ping carries no timeout_ms, and the report does not say it does.
    assert_eq!(v["timeout_in_ping"], false);
    let o = buyer_check(&[
        "--url",
        &url,
        "--campaign",
        "solar",
        "--config",
        cfg.to_str().unwrap(),
        "--count",
        "1",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("(the adapter's ping template carries no timeout_ms)")
            && !out.contains("in the ping)")
            && !out.contains("pings said timeout_ms"),
        "{out}"
    );
    let body = String::from_utf8_lossy(&f.ping_bodies(0)[0]).into_owned();
    assert!(
        body.contains("Key=lx-1") && body.contains("State=TX"),
        "{}",
        body
    );
    assert!(
        !body.contains('{'),
        "a form body, not the native JSON: {}",
        body
    );
}

/// An https endpoint that takes the connection but never answers the TLS handshake: the check
/// says the handshake did not complete in time, not an OS error.
#[test]
fn a_stalled_tls_handshake_is_named_as_such() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for tcp in listener.incoming().take(8) {
            let Ok(mut tcp) = tcp else { return };
            let mut b = [0u8; 1024];
            let _ = tcp.set_read_timeout(Some(std::time::Duration::from_millis(200)));
            let _ = tcp.read(&mut b);
            held.push(tcp);
        }
    });
    let url = format!("https://{addr}/ping");
    let o = buyer_check(&["--url", &url, "--count", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let line = check_line(&stdout(&o), "connect");
    assert!(
        line.contains("TLS handshake") && line.contains("did not complete within 3 s"),
        "{line}"
    );
    assert!(!line.contains("os error"), "{line}");
}

/// A buyer that reads each ping and closes without an answer: the connection check says so,
/// and with no answer to time the timeout check is skipped, not passed.
#[test]
fn a_buyer_that_never_answers_has_no_timeout_pass() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(64) {
            let Ok(mut tcp) = tcp else { return };
            let mut b = [0u8; 4096];
            let _ = tcp.set_read_timeout(Some(std::time::Duration::from_millis(500)));
            let _ = tcp.read(&mut b);
            // Dropped: closed without a byte of answer.
        }
    });
    let url = format!("http://{addr}/ping");
    let o = buyer_check(&["--url", &url, "--count", "3"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = check_line(&out, "timeout");
    assert!(
        line.contains("SKIP") && line.contains("no whole answer"),
        "{out}"
    );
    assert!(check_line(&out, "http").contains("closed the connection without answering"));
}
