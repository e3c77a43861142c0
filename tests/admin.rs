//! The operator API on a real socket: health, stats, metrics, pause and resume.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};

const TOKEN: &str = "test-operator-token";

/// The first buyer has caps (`acme_caps`, a `[buyers.caps]` table); the others have none. The
/// operator API listens on a free port.
fn config_with_admin(fleet: &Fleet, acme_caps: &str) -> String {
    let caps = |i: usize| {
        if i == 0 {
            format!("[buyers.caps]\n{acme_caps}")
        } else {
            String::new()
        }
    };
    config(fleet, "", caps).replace(
        "max_in_flight = 1000",
        &format!(
            "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"{TOKEN}\""
        ),
    )
}

/// The first buyer capped at 100 a day and daily and monthly budgets.
fn start(fleet: &Fleet) -> Exchange {
    Exchange::start(&config_with_admin(
        fleet,
        "daily = 100\ndaily_budget = 500.0\nmonthly_budget = 2000",
    ))
}

/// `acme` bids $50 and `blue` $10; both accept every post.
fn acme_and_blue() -> Fleet {
    Fleet::start(vec![
        BuyerSpec::new("acme").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(5000, None),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("blue").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(1000, None),
            Kind::Post => Reply::accepted(),
        }),
    ])
    .unwrap()
}

/// The operator API's address of a running exchange.
fn admin_addr(ex: &Exchange) -> std::net::SocketAddr {
    ex.handle
        .as_ref()
        .and_then(|h| h.admin_addr())
        .expect("admin listener")
}

fn get(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> Response {
    let mut c = Client::connect(addr);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    c.send_raw(req.as_bytes());
    c.read_response().expect("an answer")
}

/// One request on its own connection, closed after the answer: the whole answer as text,
/// head included (the client above keeps only some of the headers).
fn raw(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// An HTTP/1.0 client that asks for keep-alive is told so on each answer, and its connection
/// carries the next request; the journal's health is in the stats and the metrics.
#[test]
fn an_http10_keep_alive_operator_is_told_the_connection_stays_open() {
    use std::io::{Read, Write};
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = start(&fleet);
    let mut s = std::net::TcpStream::connect(admin_addr(&ex)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    for path in ["/healthz", "/v1/stats"] {
        let req = format!(
            "GET {path} HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 65536];
        let (head, body) = loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "{path}: closed");
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break (head.to_string(), body.to_string());
                }
            }
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(
            head.lines().any(|l| l == "Connection: keep-alive"),
            "{path}: {head}"
        );
        if path == "/v1/stats" {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["journal"]["accepting_leads"], true, "{v}");
            assert_eq!(v["journal"]["errors"], 0, "{v}");
        }
    }
    let metrics = get(admin_addr(&ex), "GET", "/metrics", Some(TOKEN));
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    for line in [
        "gavel_journal_accepting_leads 1",
        "gavel_journal_errors_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in /metrics");
    }
}

/// As on the seller port: a client sending `Expect: 100-continue` is told to go on before it
/// sends its body (with a valid token; without one it hears 401 at once), and a request
/// without a Host header is answered 400 and closed.
#[test]
fn the_operator_port_answers_expect_continue_and_closes_after_a_bad_host() {
    use std::io::{Read, Write};
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = start(&fleet);
    let read_some = |s: &mut std::net::TcpStream| {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        String::from_utf8_lossy(&chunk[..n]).to_string()
    };
    let mut s = std::net::TcpStream::connect(admin_addr(&ex)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(
        format!(
            "POST /v1/admin/buyers/acme/pause HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let interim = read_some(&mut s);
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"{}").unwrap();
    let answer = read_some(&mut s);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Without a valid token it is not told to go on: it hears its 401 at once, before the
    // body, and the connection closes.
    for auth in ["", "Authorization: Bearer wrong-token-123\r\n"] {
        let mut s = std::net::TcpStream::connect(admin_addr(&ex)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(
            format!(
                "POST /v1/admin/buyers/acme/resume HTTP/1.1\r\nHost: x\r\n{auth}\
                 Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let all = String::from_utf8_lossy(&all);
        assert!(all.starts_with("HTTP/1.1 401"), "{all}");
        assert!(all.contains("WWW-Authenticate: Bearer"), "{all}");
        assert!(all.contains("Connection: close"), "{all}");
        assert!(!all.contains("100 Continue"), "{all}");
    }
    // The buyer stayed paused: the refused request did nothing.
    let r = get(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN));
    assert_eq!(r.json()["buyers"]["acme"]["paused"], true);

    let mut s = std::net::TcpStream::connect(admin_addr(&ex)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    assert!(all.contains("bad_host"), "{all}");
    assert!(all.contains("Connection: close"), "{all}");
    let status_lines = all.lines().filter(|l| l.starts_with("HTTP/1.1 ")).count();
    assert_eq!(status_lines, 1, "{all}");
}

/// `/healthz` says whether leads sent now would be taken: 503 `draining` once the drain began.
#[test]
fn healthz_turns_503_when_the_exchange_drains() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = start(&fleet);
    let admin = admin_addr(&ex);
    let r = get(admin, "GET", "/healthz", None);
    assert_eq!((r.status, r.json()["status"].clone()), (200, "ok".into()));
    let shared = ex.handle.as_ref().expect("running").shared().clone();
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = get(admin, "GET", "/healthz", None);
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (503, "draining".into())
    );
}

#[test]
fn a_known_path_with_another_method_is_405_with_allow() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = start(&fleet);
    let admin = admin_addr(&ex);
    for (method, path, allow) in [
        ("GET", "/v1/admin/reload", "POST"),
        ("DELETE", "/v1/stats", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("PUT", "/", "GET, HEAD"),
        ("GET", "/v1/admin/stats/reset", "POST"),
        ("GET", "/v1/admin/buyers/acme/pause", "POST"),
        ("DELETE", "/v1/admin/buyers/nobody/resume", "POST"),
    ] {
        let r = get(admin, method, path, Some(TOKEN));
        assert_eq!(r.status, 405, "{method} {path}");
        let v = r.json();
        assert_eq!(
            v["error"]["code"], "method_not_allowed",
            "{method} {path}: {v}"
        );
        assert!(v["error"]["message"].as_str().is_some(), "{v}");
        let text = raw(admin, method, path, Some(TOKEN));
        assert!(
            text.starts_with("HTTP/1.1 405 ") && text.contains(&format!("\r\nAllow: {allow}\r\n")),
            "{method} {path}: {text}"
        );
        // The token is checked first: without it, the method is not looked at.
        assert_eq!(
            get(admin, method, path, None).status,
            401,
            "{method} {path}"
        );
        assert_eq!(
            get(admin, method, path, Some("wrong-token-123")).status,
            401,
            "{method} {path}"
        );
    }
    // An unknown path stays 404 whatever the method, and a stray method on it is not a 405.
    for (method, path) in [
        ("GET", "/v1/nothing"),
        ("DELETE", "/v1/admin/buyers/acme/frob"),
    ] {
        let r = get(admin, method, path, Some(TOKEN));
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.json()["error"]["code"], "not_found");
        assert!(!raw(admin, method, path, Some(TOKEN)).contains("\r\nAllow:"));
    }
    // /healthz is open to all, and so is its 405.
    for method in ["POST", "DELETE", "OPTIONS"] {
        for token in [None, Some(TOKEN)] {
            let text = raw(admin, method, "/healthz", token);
            assert!(
                text.starts_with("HTTP/1.1 405 ") && text.contains("\r\nAllow: GET, HEAD\r\n"),
                "{method} /healthz: {text}"
            );
        }
    }
    assert!(raw(admin, "HEAD", "/healthz", None).starts_with("HTTP/1.1 200 "));
    // A pause path with more after it names the two actions, whatever the id.
    for path in [
        "/v1/admin/buyers/acme/pause/extra",
        "/v1/admin/buyers/acme/stop",
    ] {
        let r = get(admin, "POST", path, Some(TOKEN));
        assert_eq!(r.status, 404, "{path}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/pause or /resume"),
            "{path}: {v}"
        );
    }
    // The right method still works.
    assert_eq!(get(admin, "GET", "/v1/stats", Some(TOKEN)).status, 200);
}

#[test]
fn stats_metrics_pause_and_resume() {
    let fleet = acme_and_blue();
    let ex = start(&fleet);
    let admin = admin_addr(&ex);
    let mut c = ex.client();
    for _ in 0..3 {
        assert_eq!(c.lead(LEAD).json()["sales"][0]["buyer"], "acme");
    }

    assert_eq!(get(admin, "GET", "/healthz", None).status, 200);
    assert_eq!(get(admin, "GET", "/v1/stats", None).status, 401);
    assert_eq!(
        get(admin, "GET", "/v1/stats", Some("wrong-token-123")).status,
        401
    );

    let s = get(admin, "GET", "/v1/stats", Some(TOKEN)).json();
    assert_eq!(s["campaigns"]["auto"]["leads"], 3);
    assert_eq!(s["campaigns"]["auto"]["sold"], 3);
    assert_eq!(s["campaigns"]["auto"]["revenue"], 150.0);
    assert_eq!(s["campaigns"]["auto"]["payout"], 120.0);
    assert_eq!(s["campaigns"]["auto"]["profit"], 30.0);
    // A configured campaign without a lead yet is listed at zero, not left out.
    assert_eq!(s["campaigns"]["other"]["leads"], 0, "{s}");
    assert_eq!(s["campaigns"]["other"]["revenue"], 0.0);
    assert_eq!(s["buyers"]["acme"]["wins"], 3);
    assert_eq!(s["buyers"]["blue"]["pings"], 3);
    assert_eq!(s["buyers"]["blue"]["average_bid"], 10.0);
    // Caps: the limits in force beside what is left of them (three $50 sales so far).
    assert_eq!(s["buyers"]["acme"]["caps"]["daily"], 100, "{s}");
    assert_eq!(s["buyers"]["acme"]["caps"]["daily_budget"], 500.0);
    assert!(s["buyers"]["acme"]["caps"]["hourly"].is_null());
    assert_eq!(s["buyers"]["acme"]["caps_left"]["daily"], 97);
    assert_eq!(s["buyers"]["acme"]["caps_used"]["daily"], 3);
    assert_eq!(s["buyers"]["acme"]["caps_used"]["daily_budget"], 150.0);
    assert!(s["buyers"]["acme"]["caps_used"]["hourly"].is_null());
    assert_eq!(s["buyers"]["acme"]["caps_left"]["daily_budget"], 350.0);
    assert_eq!(s["buyers"]["acme"]["caps"]["monthly_budget"], 2000.0);
    assert_eq!(s["buyers"]["acme"]["caps_left"]["monthly_budget"], 1850.0);
    assert!(s["buyers"]["acme"]["caps"]["weekly_budget"].is_null());
    for w in [
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "daily_budget",
        "weekly_budget",
        "monthly_budget",
    ] {
        assert!(s["buyers"]["blue"]["caps"][w].is_null(), "{w}: {s}");
    }
    // What the dashboard's plots read.
    for b in ["acme", "blue"] {
        for k in ["bids", "no_bids", "timeouts", "errors", "invalid"] {
            assert!(s["buyers"][b][k].is_u64(), "{b}.{k}: {s}");
        }
        for k in ["p50", "p90", "p99", "p99.9", "max"] {
            assert!(s["buyers"][b]["response_us"][k].is_u64(), "{b}.{k}: {s}");
        }
    }
    assert_eq!(s["overhead_us"]["count"], 3);
    for k in ["p50", "p90", "p99", "p99.9", "p999", "max"] {
        assert!(s["overhead_us"][k].is_u64(), "{k}: {s}");
    }
    assert_eq!(s["overhead_us"]["p99.9"], s["overhead_us"]["p999"]);
    assert!(s["overhead_us"]["p99"].as_u64().is_some());
    // The overhead's stages cover the same leads, and none exceeds the whole.
    for stage in ["intake", "close", "answer"] {
        let h = &s["overhead_stages_us"][stage];
        assert_eq!(h["count"], 3, "{stage}: {h}");
        assert!(
            h["p50"].as_u64() <= s["overhead_us"]["max"].as_u64(),
            "{stage}: {h}"
        );
    }
    // The answer's send, measured apart from the overhead, once per answered lead; the
    // seller-observed time holds both.
    assert_eq!(s["answer_write_us"]["count"], 3, "{s}");
    assert!(
        s["answer_write_us"]["max"].as_u64() <= s["elapsed_us"]["max"].as_u64(),
        "{s}"
    );

    let m = get(admin, "GET", "/metrics", Some(TOKEN));
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains("gavel_leads_total{campaign=\"auto\",status=\"sold\"} 3"),
        "{}",
        text
    );
    assert!(text.contains("gavel_pings_total{buyer=\"blue\",result=\"bid\"} 3"));
    assert!(
        text.contains("gavel_buyer_spent_dollars_total{buyer=\"acme\"} 150"),
        "{text}"
    );
    exposition_is_well_formed(&text);
    assert!(text.contains("gavel_internal_overhead_seconds_count 3"));
    assert!(text.contains("gavel_internal_overhead_stage_seconds_count{stage=\"intake\"} 3"));
    assert!(
        text.contains("gavel_answer_write_seconds_count 3"),
        "{text}"
    );
    for line in [
        "gavel_cap_remaining{buyer=\"acme\",window=\"daily\"} 97",
        "gavel_cap_remaining{buyer=\"acme\",window=\"daily_budget\"} 350",
        "gavel_cap_remaining{buyer=\"acme\",window=\"monthly_budget\"} 1850",
        // The limits beside them, and what the windows have taken.
        "gavel_cap_used{buyer=\"acme\",window=\"daily\"} 3",
        "gavel_cap_used{buyer=\"acme\",window=\"daily_budget\"} 150",
        "gavel_cap_limit{buyer=\"acme\",window=\"daily\"} 100",
        "gavel_cap_limit{buyer=\"acme\",window=\"daily_budget\"} 500",
        "gavel_cap_limit{buyer=\"acme\",window=\"monthly_budget\"} 2000",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(!text.contains("window=\"weekly_budget\""), "{text}");

    // Pausing the top bidder: the next lead goes to the other and the paused one is not pinged.
    let r = get(admin, "POST", "/v1/admin/buyers/acme/pause", Some(TOKEN));
    assert_eq!(r.json()["paused"], true);
    let pings_before = fleet.pings(0);
    assert_eq!(c.lead(LEAD).json()["sales"][0]["buyer"], "blue");
    assert_eq!(fleet.pings(0), pings_before);
    assert_eq!(
        get(admin, "GET", "/v1/stats", Some(TOKEN)).json()["buyers"]["acme"]["paused"],
        true
    );
    assert_eq!(
        get(admin, "POST", "/v1/admin/buyers/acme/resume", Some(TOKEN)).json()["paused"],
        false
    );
    assert_eq!(c.lead(LEAD).json()["sales"][0]["buyer"], "acme");
    assert_eq!(
        get(admin, "POST", "/v1/admin/buyers/nobody/pause", Some(TOKEN)).status,
        404
    );
    // The id is percent-decoded, as any HTTP client encodes it.
    let r = get(admin, "POST", "/v1/admin/buyers/ac%6De/pause", Some(TOKEN));
    assert_eq!((r.status, r.json()["buyer"].as_str()), (200, Some("acme")));
    let r = get(admin, "POST", "/v1/admin/buyers/%61cme/resume", Some(TOKEN));
    assert_eq!(r.json()["paused"], false);
    // A mistyped escape is said to be one, not read as it is nor as an unknown buyer.
    for path in [
        "/v1/admin/buyers/ac%zzme/pause",
        "/v1/admin/buyers/acme%/pause",
        "/v1/admin/buyers/acme%6/pause",
        "/v1/admin/buyers/acme%C3/pause",
    ] {
        let r = get(admin, "POST", path, Some(TOKEN));
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.json()["error"]["code"], "invalid_path", "{path}");
    }
    assert_eq!(
        get(admin, "GET", "/v1/stats", Some(TOKEN)).json()["buyers"]["acme"]["paused"],
        false
    );

    assert_eq!(
        get(admin, "POST", "/v1/admin/stats/reset", Some(TOKEN)).status,
        200
    );
    assert_eq!(
        get(admin, "GET", "/v1/stats", Some(TOKEN)).json()["overhead_us"]["count"],
        0
    );
    let page = get(admin, "GET", &format!("/?token={TOKEN}"), None);
    assert_eq!(page.status, 200);
    let page = String::from_utf8_lossy(&page.body);
    // A container for each plot, drawn by the page's own script as inline SVG.
    for plot in [
        "plot-leads",
        "plot-money",
        "plot-pings",
        "plot-response",
        "plot-overhead",
        "plot-overhead-series",
        "plot-caps",
    ] {
        assert!(page.contains(&format!("<div id=\"{plot}\">")), "{plot}");
        assert!(page.contains(&format!("'{plot}'")), "{plot} is not drawn");
    }
    for f in [
        "function bars(",
        "function lines(",
        "function caps(",
        "<svg",
        "/v1/stats",
    ] {
        assert!(page.contains(f), "{f}");
    }
    // The tables stay, and the page needs nothing from outside (it works offline).
    assert!(page.contains("id=\"campaigns\"") && page.contains("id=\"buyers\""));
    assert!(!page.contains("<script src") && !page.contains("https://"));
}

/// The operator's counters agree with every answer a seller holds: a lead's sale is in
/// `/v1/stats` and `/metrics` by the time its answer can be read, on a machine however busy,
/// across workers.
#[test]
fn every_answer_a_seller_holds_is_already_in_the_stats() {
    let fleet = acme_and_blue();
    let ex = Exchange::start(&config_with_admin(&fleet, "").replace("workers = 1", "workers = 2"));
    let admin = admin_addr(&ex);
    let mut sellers: Vec<Client> = (0..4).map(|_| ex.client()).collect();
    for i in 1..=40u64 {
        let v = sellers[i as usize % 4].lead(LEAD).json();
        assert_eq!(v["sales"][0]["buyer"], "acme", "{v}");
        let s = get(admin, "GET", "/v1/stats", Some(TOKEN)).json();
        assert_eq!(s["buyers"]["acme"]["wins"], i, "lead {i}: {s}");
        assert_eq!(s["buyers"]["blue"]["pings"], i, "lead {i}: {s}");
        assert_eq!(s["campaigns"]["auto"]["sold"], i, "lead {i}: {s}");
        assert_eq!(
            s["campaigns"]["auto"]["revenue"],
            50.0 * i as f64,
            "lead {i}: {s}"
        );
        // The worker's own counters, read in-process, the moment the answer is in.
        let st = ex.handle.as_ref().map(|h| h.stats()).unwrap_or_default();
        let wins: u64 = st
            .buyers()
            .filter(|(id, _)| *id == "acme")
            .map(|(_, b)| b.wins)
            .sum();
        assert_eq!(wins, i, "lead {i}");
    }
    let m = get(admin, "GET", "/metrics", Some(TOKEN));
    let m = String::from_utf8_lossy(&m.body);
    assert!(
        m.lines()
            .any(|l| l == "gavel_wins_total{buyer=\"acme\"} 40"),
        "{m}"
    );
}

#[test]
fn test_leads_are_traffic_but_move_no_money_caps_or_budgets_even_after_a_restart() {
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 1\ndaily_budget = 50.0");
    let test_lead = LEAD.replacen('{', "{\"test\": true, ", 1);
    let stats = |ex: &Exchange| {
        let admin = admin_addr(ex);
        get(admin, "GET", "/v1/stats", Some(TOKEN)).json()
    };
    {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        // The seller sees what the auction made of each test lead.
        for _ in 0..3 {
            let v = c.lead(&test_lead).json();
            assert_eq!(
                (v["status"].clone(), v["price"].clone()),
                ("sold".into(), 50.0.into())
            );
            assert_eq!(v["payout"], 40.0);
        }
        let s = stats(&ex);
        let auto = &s["campaigns"]["auto"];
        assert_eq!(
            (auto["leads"].clone(), auto["sold"].clone()),
            (3.into(), 3.into()),
            "{s}"
        );
        assert_eq!(auto["test_leads"], 3);
        assert_eq!(
            (auto["revenue"].clone(), auto["payout"].clone()),
            (0.0.into(), 0.0.into())
        );
        assert_eq!(s["buyers"]["acme"]["wins"], 3);
        assert_eq!(s["buyers"]["acme"]["spent"], 0.0);
        assert_eq!(s["buyers"]["acme"]["caps_left"]["daily"], 1, "{s}");
        assert_eq!(s["buyers"]["acme"]["caps_left"]["daily_budget"], 50.0);
        // Real leads: the first takes acme's one lead a day, the second goes to blue.
        assert_eq!(c.lead(LEAD).json()["sales"][0]["buyer"], "acme");
        assert_eq!(c.lead(LEAD).json()["sales"][0]["buyer"], "blue");
        let s = stats(&ex);
        assert_eq!(s["campaigns"]["auto"]["revenue"], 60.0, "{s}");
        assert_eq!(s["campaigns"]["auto"]["payout"], 48.0);
        assert_eq!(s["campaigns"]["auto"]["test_leads"], 3);
        let admin = admin_addr(&ex);
        let m = String::from_utf8(get(admin, "GET", "/metrics", Some(TOKEN)).body).unwrap();
        assert!(
            m.contains("gavel_test_leads_total{campaign=\"auto\"} 3"),
            "{m}"
        );
    }
    // Rebuilt from the journal: the same money, the same caps.
    let ex = Exchange::start(&toml);
    let s = stats(&ex);
    let auto = &s["campaigns"]["auto"];
    assert_eq!(
        (auto["leads"].clone(), auto["test_leads"].clone()),
        (5.into(), 3.into()),
        "{s}"
    );
    assert_eq!(
        (auto["revenue"].clone(), auto["payout"].clone()),
        (60.0.into(), 48.0.into())
    );
    assert_eq!(s["buyers"]["acme"]["spent"], 50.0);
    assert_eq!(s["buyers"]["acme"]["caps_left"]["daily"], 0, "{s}");
    assert_eq!(s["buyers"]["acme"]["caps_left"]["daily_budget"], 0.0);

    // The journal, the book buyers are billed from, marks each test lead's sale, so summing
    // its sales leaves them out.
    let dir = toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("dir = \""))
        .and_then(|d| d.strip_suffix('"'))
        .expect("the journal dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["journal", "export", "--dir", dir])
        .output()
        .expect("gavel journal export");
    assert!(out.status.success());
    let sales: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["type"] == "sale")
        .collect();
    let billed: f64 = sales
        .iter()
        .filter(|v| v["test"] == false)
        .map(|v| v["price"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(sales.len(), 5);
    assert_eq!(sales.iter().filter(|v| v["test"] == true).count(), 3);
    assert_eq!(billed, 60.0, "{sales:?}");

    // With acme's cap and budget spent, a test lead gets the answer a real one would: blue,
    // at blue's price, and still takes nothing.
    let v = ex.client().lead(&test_lead).json();
    assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    assert_eq!(v["price"], 10.0, "{v}");
    assert_eq!(stats(&ex)["buyers"]["blue"]["spent"], 10.0);
}

#[test]
fn head_gets_the_headers_of_get_and_no_body() {
    let fleet = acme_and_blue();
    let ex = start(&fleet);
    let admin = admin_addr(&ex);
    for (path, token) in [
        ("/healthz", None),
        ("/v1/stats", Some(TOKEN)),
        ("/metrics", Some(TOKEN)),
    ] {
        let text = raw(admin, "HEAD", path, token);
        assert!(text.starts_with("HTTP/1.1 200 "), "HEAD {path}: {text}");
        assert!(text.contains("\r\nContent-Length: "), "HEAD {path}: {text}");
        assert!(
            text.ends_with("\r\n\r\n"),
            "HEAD {path} carried a body: {text}"
        );
    }
    // Without the token, HEAD is refused as GET is.
    let refused = raw(admin, "HEAD", "/v1/stats", None);
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    assert!(
        refused.contains("\r\nWWW-Authenticate: Bearer\r\n"),
        "{refused}"
    );
}

/// The text exposition's structure, as Prometheus reads it: each family declared once (one
/// HELP, one TYPE, before its samples), its samples in one group, histogram samples named
/// after their family.
fn exposition_is_well_formed(text: &str) {
    use std::collections::HashSet;
    let mut declared: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap().to_string();
            let kind = it.next().unwrap_or("").to_string();
            assert!(
                declared.insert(name.clone()),
                "family {name} declared twice"
            );
            if let Some((prev, _)) = current.take() {
                finished.insert(prev);
            }
            current = Some((name, kind));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = line.split(['{', ' ']).next().unwrap();
        let (family, kind) = current
            .as_ref()
            .unwrap_or_else(|| panic!("{line}: no TYPE before it"));
        let allowed: Vec<String> = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![family.clone()],
        };
        assert!(
            allowed.iter().any(|a| a == sample),
            "{line}: not of family {family}"
        );
        assert!(
            !finished.contains(family),
            "{line}: family {family} split in two groups"
        );
    }
}

/// A buyer the operator paused stays paused across a restart (the operator paused it for a
/// reason: unpaid invoices, a broken endpoint), and one resumed stays resumed.
#[test]
fn a_pause_through_the_api_survives_a_restart() {
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100");
    {
        let ex = Exchange::start(&toml);
        let admin = admin_addr(&ex);
        for id in ["acme", "blue"] {
            let r = get(
                admin,
                "POST",
                &format!("/v1/admin/buyers/{id}/pause"),
                Some(TOKEN),
            );
            assert_eq!(r.json()["persisted"], true);
        }
        get(admin, "POST", "/v1/admin/buyers/blue/resume", Some(TOKEN));
    }
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    assert_eq!(
        fleet.pings(0),
        0,
        "the paused buyer was pinged after the restart"
    );
    let s = get(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN)).json();
    assert_eq!(s["buyers"]["acme"]["paused"], true);
    assert_eq!(s["buyers"]["blue"]["paused"], false);
}

/// A pause the exchange could not write down (`persisted: false`) is written with the next
/// one that can be: the file lists every buyer paused, and a restart keeps them all paused.
#[test]
fn a_pause_that_could_not_be_persisted_is_written_with_the_next() {
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100");
    let file = {
        let ex = Exchange::start(&toml);
        let admin = admin_addr(&ex);
        let file = ex
            .handle
            .as_ref()
            .unwrap()
            .shared()
            .journal
            .dir()
            .join("paused");
        std::fs::create_dir_all(file.join("x")).unwrap();
        let r = get(admin, "POST", "/v1/admin/buyers/acme/pause", Some(TOKEN));
        assert_eq!(r.json()["paused"], true);
        assert_eq!(r.json()["persisted"], false);
        std::fs::remove_dir_all(&file).unwrap();
        let r = get(admin, "POST", "/v1/admin/buyers/blue/pause", Some(TOKEN));
        assert_eq!(r.json()["persisted"], true);
        file
    };
    let listed = std::fs::read_to_string(&file).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), vec!["acme", "blue"]);
    let ex = Exchange::start(&toml);
    let s = get(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN)).json();
    assert_eq!(s["buyers"]["acme"]["paused"], true);
    assert_eq!(s["buyers"]["blue"]["paused"], true);
}

/// A token with characters a URL reserves (`/`, `+`, `=`, `%`, a space: a base64 token, a
/// passphrase) opens the dashboard pasted as it is (but for the space) or percent-encoded, and
/// the page's own script then reads `/v1/stats` with it (run under node when there is one, as
/// a browser runs it): the server reads the query as the script does, `%XX` as a byte and `+`
/// as itself.
#[test]
fn the_dashboard_reads_its_stats_with_a_token_a_url_must_encode() {
    const ODD: &str = "ops/Tok en+2026==%zz";
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100").replace(TOKEN, ODD);
    let ex = Exchange::start(&toml);
    let admin = admin_addr(&ex);
    let encoded = [
        // As `encodeURIComponent` writes it.
        "ops%2FTok%20en%2B2026%3D%3D%25zz",
        // Pasted as it is, but for the space (`%zz` is no escape: itself).
        "ops/Tok%20en+2026==%zz",
        "ops/Tok%20en%2B2026==%25zz",
    ];
    for form in encoded {
        let r = get(admin, "GET", &format!("/?token={form}"), None);
        assert_eq!(r.status, 200, "/?token={form}");
        // Only the page's own address may carry the token: everything else, the stats the
        // page's script reads included, takes it from the Authorization header.
        for (method, path) in [
            ("GET", "/v1/stats"),
            ("GET", "/metrics"),
            ("POST", "/v1/admin/buyers/acme/pause"),
            ("POST", "/v1/admin/reload"),
        ] {
            let r = get(admin, method, &format!("{path}?token={form}"), None);
            assert_eq!(r.status, 401, "{method} {path}?token={form}");
        }
    }
    assert_eq!(
        get(admin, "GET", "/v1/stats", None).status,
        401,
        "no token at all"
    );
    assert_eq!(get(admin, "GET", "/v1/stats", Some(ODD)).status, 200);
    // A `+` is a plus, not a space (as a form would have it), for the page as for its script.
    for path in ["/", "/v1/stats"] {
        let r = get(
            admin,
            "GET",
            &format!("{path}?token=ops/Tok+en+2026==%zz"),
            None,
        );
        assert_eq!(r.status, 401, "{path}");
    }

    let page = get(admin, "GET", &format!("/?token={}", encoded[0]), None);
    let page = String::from_utf8_lossy(&page.body).into_owned();
    let Some(script) = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(script, _)| script)
    else {
        panic!("the page has no script");
    };
    for form in encoded {
        // The page's script with a stand-in document; its fetch goes to the real listener.
        let js = format!(
            "const els = {{}};\n\
             const document = {{ getElementById: id => (els[id] = els[id] || {{ innerHTML: '', textContent: '' }}) }};\n\
             const location = {{ search: {search} }};\n\
             const f = (u, o) => fetch(new URL(u, {base}), o);\n\
             new Function('document', 'location', 'fetch', 'setInterval', {script})(document, location, f, () => 0);\n\
             const t0 = Date.now();\n\
             const wait = setInterval(() => {{\n\
               const s = (els.summary || {{}}).textContent || '';\n\
               if (s || Date.now() - t0 > 10000) {{\n\
                 clearInterval(wait);\n\
                 console.log(s);\n\
                 console.log((els.campaigns || {{}}).innerHTML || '');\n\
                 console.log((els.buyers || {{}}).innerHTML || '');\n\
               }}\n\
             }}, 20);\n",
            search = serde_json::to_string(&format!("?token={form}")).unwrap(),
            base = serde_json::to_string(&format!("http://{admin}/")).unwrap(),
            script = serde_json::to_string(script).unwrap(),
        );
        let out = match std::process::Command::new("node")
            .arg("-e")
            .arg(&js)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("no node on PATH: the page's script was not run");
                return;
            }
            Err(e) => panic!("node: {e}"),
        };
        let printed = String::from_utf8_lossy(&out.stdout);
        let mut lines = printed.lines();
        let summary = lines.next().unwrap_or("");
        assert!(
            summary.starts_with("uptime "),
            "?token={form}: the page says {summary:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        // The tables: money as dollars and cents, each buyer's state in words.
        let (campaigns, buyers) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        assert!(
            campaigns.contains("<td>$0.00</td><td>$0.00</td><td>$0.00</td></tr>"),
            "{campaigns}"
        );
        assert!(buyers.contains("<th>state</th>"), "{buyers}");
        assert!(
            buyers.contains("<tr><td>acme</td><td>active</td>"),
            "{buyers}"
        );
        assert!(buyers.contains("<td>$0.00</td>"), "{buyers}");
    }
}

/// The operator's resume of a buyer its config pauses holds across a restart, as a pause
/// does; a later pause holds too; a reload that changes the file's `paused` has the last word.
#[test]
fn an_operators_resume_of_a_buyer_the_config_pauses_survives_a_restart() {
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100").replacen(
        "id = \"acme\"\n",
        "id = \"acme\"\npaused = true\n",
        1,
    );
    assert!(toml.contains("paused = true"));
    let paused = |ex: &Exchange| {
        get(admin_addr(ex), "GET", "/v1/stats", Some(TOKEN)).json()["buyers"]["acme"]["paused"]
            .clone()
    };
    let op = |ex: &Exchange, action: &str| {
        let path = format!("/v1/admin/buyers/acme/{action}");
        let r = get(admin_addr(ex), "POST", &path, Some(TOKEN));
        assert_eq!(r.json()["persisted"], true, "{action}");
    };
    {
        let ex = Exchange::start(&toml);
        assert_eq!(paused(&ex), true);
        op(&ex, "resume");
        assert_eq!(ex.client().lead(LEAD).json()["sales"][0]["buyer"], "acme");
    }
    {
        let ex = Exchange::start(&toml);
        assert_eq!(paused(&ex), false, "the restart undid the resume");
        assert_eq!(ex.client().lead(LEAD).json()["sales"][0]["buyer"], "acme");
        op(&ex, "pause");
    }
    let ex = Exchange::start(&toml);
    assert_eq!(paused(&ex), true, "the restart undid the pause");
    op(&ex, "resume");
    drop(ex);
    let ex = Exchange::start(&toml);
    assert_eq!(paused(&ex), false);
}

/// A pause survives a restart on the buyer it was made for, even when another buyer's id
/// differs from it only by a space before it.
#[test]
fn a_persisted_pause_keeps_an_id_with_spaces_exact() {
    let fleet = acme_and_blue();
    // `acme` bids $50, ` acme` (blue's endpoint) $10.
    let toml = config_with_admin(&fleet, "daily = 100").replace("id = \"blue\"", "id = \" acme\"");
    {
        let ex = Exchange::start(&toml);
        let r = get(
            admin_addr(&ex),
            "POST",
            "/v1/admin/buyers/%20acme/pause",
            Some(TOKEN),
        );
        assert_eq!(
            (r.json()["buyer"].clone(), r.json()["persisted"].clone()),
            (" acme".into(), true.into())
        );
    }
    let ex = Exchange::start(&toml);
    let s = get(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN)).json();
    assert_eq!(s["buyers"][" acme"]["paused"], true, "{s}");
    assert_eq!(s["buyers"]["acme"]["paused"], false, "{s}");
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "acme", "{v}");
    assert_eq!(
        fleet.pings(1),
        0,
        "the paused buyer was pinged after the restart"
    );
}

/// True once the exchange has closed `s` (EOF or reset), reading for at most `within`.
fn closed_within(s: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    let until = std::time::Instant::now() + within;
    let mut b = [0u8; 256];
    while std::time::Instant::now() < until {
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(50)));
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Idle connections never lock the operator out: at the limit, the one idle the longest is
/// closed to make room, so `/healthz` (and every other path) answers.
#[test]
fn idle_operator_connections_make_room_for_a_new_one() {
    use gavel::admin::MAX_ADMIN_CONNECTIONS;
    use std::io::{Read, Write};
    let fleet = acme_and_blue();
    let ex = start(&fleet);
    let admin = admin_addr(&ex);
    let mut idle: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..MAX_ADMIN_CONNECTIONS {
        idle.push(std::net::TcpStream::connect(admin).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..3 {
        assert_eq!(get(admin, "GET", "/healthz", None).status, 200);
    }
    assert_eq!(get(admin, "GET", "/v1/stats", Some(TOKEN)).status, 200);
    // The oldest made room (the later requests may have found the earlier ones' places free
    // again); the newest is still served.
    assert!(closed_within(
        &mut idle[0],
        std::time::Duration::from_secs(2)
    ));
    let mut newest = idle.pop().unwrap();
    newest
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    newest
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 64];
    let n = newest.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 "));
}

/// A request head that does not arrive whole within `server.head_timeout_ms` closes the
/// operator connection, as on the seller port: a client that sends nothing, or drips a head.
/// A kept-alive connection between requests is idle, not slow.
#[test]
fn a_slow_head_closes_an_operator_connection() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100")
        .replace("workers = 1", "workers = 1\nhead_timeout_ms = 400");
    let ex = Exchange::start(&toml);
    let admin = admin_addr(&ex);

    let t0 = Instant::now();
    let mut silent = std::net::TcpStream::connect(admin).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)));
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let mut drip = std::net::TcpStream::connect(admin).unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut closed = false;
    while t0.elapsed() < Duration::from_secs(3) {
        // A byte every 10 ms, faster than any poll of the connection.
        if drip.write_all(b"X").is_err() || closed_within(&mut drip, Duration::from_millis(10)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dripped head kept its connection open for 3 s");
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );

    let mut c = Client::connect(admin);
    for _ in 0..2 {
        c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().map(|r| r.status), Some(200));
        std::thread::sleep(Duration::from_millis(700));
    }
}

/// A dedupe index too small for its window drops phones and emails still inside it: the
/// operator sees how many in `/v1/stats` and `/metrics`, and a duplicate of a dropped lead
/// gets through, which is what `server.dedupe_entries` is sized against.
#[test]
fn a_dedupe_index_too_small_for_its_window_says_so() {
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100000")
        .replace(
            "require_consent = true",
            "require_consent = true\ndedupe_days = 30",
        )
        .replace(
            "max_in_flight = 1000",
            "max_in_flight = 1000\ndedupe_entries = 1024",
        );
    let ex = Exchange::start(&toml);
    let admin = admin_addr(&ex);
    let mut c = ex.client();
    let lead = |i: usize| {
        LEAD.replace("7135550147", &format!("71355{i:05}"))
            .replace("ana@example.com", &format!("ana{i}@example.com"))
    };
    let stats = |admin| get(admin, "GET", "/v1/stats", Some(TOKEN)).json();
    assert_eq!(stats(admin)["dedupe"]["forced_evictions"], 0);
    assert_eq!(stats(admin)["dedupe"]["entries"], 1024);
    assert_eq!(c.lead(&lead(0)).status, 200);
    assert_eq!(c.lead(&lead(0)).json()["error"]["code"], "duplicate");
    // 1,024 phones and emails are held before any is dropped.
    for i in 1..512 {
        assert_eq!(c.lead(&lead(i)).status, 200, "lead {i}");
    }
    let d = stats(admin)["dedupe"].clone();
    assert_eq!(
        (d["held"].as_u64(), d["forced_evictions"].as_u64()),
        (Some(1024), Some(0)),
        "{d}"
    );
    let capacity = d["capacity"].as_u64().unwrap_or(0);
    assert!(capacity >= 1024, "{d}");
    for i in 512..2500 {
        assert_eq!(c.lead(&lead(i)).status, 200, "lead {i}");
    }
    let d = stats(admin)["dedupe"].clone();
    let evicted = d["forced_evictions"].as_u64().unwrap();
    assert!(evicted > 0, "{d}");
    let held = d["held"].as_u64().unwrap_or(0);
    assert!(held <= capacity + 64 && held >= 1024, "{d}");
    let metrics = String::from_utf8(get(admin, "GET", "/metrics", Some(TOKEN)).body).unwrap();
    assert!(
        metrics.contains(&format!("gavel_dedupe_forced_evictions_total {evicted}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("gavel_dedupe_keys_held {held}")),
        "{metrics}"
    );
    // The first lead's keys were dropped within its window: its duplicate passes.
    assert_eq!(c.lead(&lead(0)).status, 200);
}

/// A buyer's response time counts a timeout at the time waited (the least its answer would
/// have taken) and leaves out a ping never written (no connection to the buyer): an always
/// late buyer does not look fast and a dead one has no response time at all. A restart
/// rebuilds the same from the journal.
#[test]
fn response_times_count_timeouts_as_waited_and_leave_out_pings_never_sent() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("fast").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(2000, None),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("late").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(9000, None).after_ms(1500),
            Kind::Post => Reply::accepted(),
        }),
    ])
    .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut toml = config_with_admin(&fleet, "");
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"dead\"\ncampaigns = [\"auto\"]\nping_url = \"http://{dead}/ping\"\npost_url = \"http://{dead}/post\"\n"
    ));
    let check = |ex: &Exchange, when: &str| {
        let s = get(admin_addr(ex), "GET", "/v1/stats", Some(TOKEN)).json();
        let rt = |b: &str| s["buyers"][b]["response_us"].clone();
        assert_eq!(rt("fast")["count"], 2, "{when}: {s}");
        assert_eq!(rt("late")["count"], 2, "{when}: {s}");
        assert_eq!(s["buyers"]["late"]["timeouts"], 2, "{when}: {s}");
        // The campaign's ping timeout is 300 ms: waited from the ping's first byte.
        let p50 = rt("late")["p50"].as_u64().unwrap_or(0);
        assert!((250_000..1_500_000).contains(&p50), "{when}: {p50}");
        assert_eq!(s["buyers"]["dead"]["errors"], 2, "{when}: {s}");
        assert_eq!(rt("dead")["count"], 0, "{when}: {s}");
        let metrics = get(admin_addr(ex), "GET", "/metrics", Some(TOKEN));
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        assert!(
            text.lines()
                .any(|l| l == "gavel_buyer_response_seconds_count{buyer=\"dead\"} 0"),
            "{when}: {text}"
        );
        assert!(!text.contains(" -0\n"), "{when}: {text}");
    };
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..2 {
        let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["sales"][0]["buyer"], "fast", "{v}");
    }
    // The late answers are drained, not counted again.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    check(&ex, "live");
    drop(c);
    drop(ex);
    check(&Exchange::start(&toml), "rebuilt from the journal");
}

/// A paused buyer gets no warm connections opened for it: it is sent nothing until it is
/// resumed, so connections held open would only use its sockets. Resumed, it is warmed again.
#[test]
fn a_paused_buyer_is_not_kept_warm_until_it_is_resumed() {
    let fleet = acme_and_blue();
    let toml = config_with_admin(&fleet, "daily = 100").replacen(
        "id = \"acme\"\n",
        "id = \"acme\"\npaused = true\n",
        1,
    );
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    // Several housekeeping ticks (50 ms each) after the start and the lead.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        fleet.accepted_connections(0),
        0,
        "the paused buyer was connected to"
    );
    assert!(fleet.accepted_connections(1) > 0);
    let r = get(
        admin_addr(&ex),
        "POST",
        "/v1/admin/buyers/acme/resume",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fleet.accepted_connections(0) == 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        fleet.accepted_connections(0) > 0,
        "not warmed after the resume"
    );
}

/// A post that fails before it is written (the buyer's post endpoint refusing connections, so
/// its pool is down) is no post of the buyer's: every buyer's `wins` and `post_rejects` add up
/// to its `posts`, live and as rebuilt from the journal.
#[test]
fn posts_never_written_are_neither_posts_nor_rejections() {
    let fleet = acme_and_blue();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = config_with_admin(&fleet, "").replacen(
        &fleet.post_url(0),
        &format!("http://{dead}/post"),
        1,
    );
    let check = |ex: &Exchange, when: &str| {
        let s = get(admin_addr(ex), "GET", "/v1/stats", Some(TOKEN)).json();
        for b in ["acme", "blue"] {
            let n = |k: &str| s["buyers"][b][k].as_u64().unwrap_or(u64::MAX);
            assert_eq!(
                n("wins") + n("post_rejects"),
                n("posts"),
                "{when}: {b}: {s}"
            );
        }
        assert_eq!(s["buyers"]["blue"]["wins"], 4, "{when}: {s}");
        assert_eq!(s["buyers"]["acme"]["wins"], 0, "{when}: {s}");
    };
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..4 {
        let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    }
    check(&ex, "live");
    drop(c);
    drop(ex);
    check(&Exchange::start(&toml), "rebuilt from the journal");
}

/// A listener that never accepts, its queue filled: connects to it hang. Its address, and
/// the sockets that keep it so (held by the caller).
fn hanging_listener() -> (std::net::SocketAddr, Vec<socket2::Socket>) {
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    full.listen(0).unwrap();
    let addr = full.local_addr().unwrap().as_socket().unwrap();
    let mut held: Vec<_> = (0..4)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.set_nonblocking(true).ok()?;
            let _ = s.connect(&addr.into());
            Some(s)
        })
        .collect();
    held.push(full);
    std::thread::sleep(std::time::Duration::from_millis(100));
    (addr, held)
}

/// A ping whose connection never came before the close (the buyer's ping endpoint takes no
/// connection: its listen queue is full) waited on the buyer: the exchange's overhead does
/// not count the auction's second it spent waiting.
#[test]
fn a_ping_whose_connection_never_came_is_not_the_exchanges_overhead() {
    let fleet = acme_and_blue();
    let (addr, _full) = hanging_listener();
    // Neither buyer's ping is ever written.
    let toml = config_with_admin(&fleet, "")
        .replacen(&fleet.ping_url(0), &format!("http://{addr}/ping"), 1)
        .replacen(&fleet.ping_url(1), &format!("http://{addr}/ping"), 1)
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 1000");
    assert!(toml.contains("ping_timeout_ms = 1000"));
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..2 {
        let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["status"], "unsold", "{v}");
    }
    let s = get(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN)).json();
    assert_eq!(s["buyers"]["acme"]["timeouts"], 2, "{s}");
    assert_eq!(s["buyers"]["blue"]["timeouts"], 2, "{s}");
    let max = s["overhead_us"]["max"].as_u64().unwrap_or(u64::MAX);
    assert!(max < 250_000, "overhead max {max} µs: {s}");
    let intake = s["overhead_stages_us"]["intake"]["max"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(intake < 250_000, "intake max {intake} µs: {s}");
}

/// A post given a connection that could not be had within `post_timeout` (the buyer's post
/// endpoint takes no connection: its listen queue is full) is journaled as sent and answered
/// "not sent": it counts in `posts` and so among `post_rejects`, live and rebuilt alike, and
/// its wait is the buyer's time, not the exchange's overhead.
#[test]
fn a_post_whose_connection_never_came_is_a_post_and_a_rejection() {
    let fleet = acme_and_blue();
    let (addr, _full) = hanging_listener();
    let toml = config_with_admin(&fleet, "").replacen(
        &fleet.post_url(0),
        &format!("http://{addr}/post"),
        1,
    );
    let check = |ex: &Exchange, when: &str| {
        let s = get(admin_addr(ex), "GET", "/v1/stats", Some(TOKEN)).json();
        let n = |b: &str, k: &str| s["buyers"][b][k].as_u64().unwrap_or(u64::MAX);
        assert_eq!(n("acme", "posts"), 2, "{when}: {s}");
        assert_eq!(n("acme", "post_rejects"), 2, "{when}: {s}");
        assert_eq!(n("acme", "wins"), 0, "{when}: {s}");
        assert_eq!(n("blue", "wins"), 2, "{when}: {s}");
    };
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..2 {
        let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    }
    check(&ex, "live");
    // The 500 ms each lead's first post waited for its connection are the buyer's time, not
    // the exchange's overhead.
    let s = get(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN)).json();
    let max = s["overhead_us"]["max"].as_u64().unwrap_or(u64::MAX);
    assert!(max < 250_000, "overhead max {max} µs: {s}");
    drop(c);
    drop(ex);
    let results: Vec<_> = gavel::journal::read_all(&journal_dir_of(&toml))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PostResult { buyer, reason, .. } if buyer == "acme" => reason,
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    check(&Exchange::start(&toml), "rebuilt from the journal");
}

/// The soft limit on open files raised toward the hard one (as far as `want`): this process
/// holds both ends of every buyer connection.
fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A campaign with more buyers eligible than a lead pings (1024): each lead pings a run of
/// 1024 of them, a different run from lead to lead, so no buyer late in the config is shut
/// out for good, and the operator is told at the start and in the stats how many were left out.
#[test]
fn a_lead_with_more_eligible_buyers_than_it_pings_pings_a_different_run_of_them_each_time() {
    const BUYERS: usize = 1030;
    const LEADS: usize = 12;
    const PINGED: usize = gavel::auction::MAX_PINGS_PER_LEAD;
    // Each buyer holds a listener, a connection to it and the exchange's end of it.
    let open_files = raise_open_files(8192);
    assert!(
        open_files >= 4 * BUYERS as u64,
        "this test needs {} open files; the hard limit allows {open_files}",
        4 * BUYERS
    );
    // Buyer i bids $5.00 + i cents: the best bid of a lead is that of the last buyer it pings.
    let fleet = Fleet::start(
        (0..BUYERS)
            .map(|i| {
                BuyerSpec::new(format!("b{i}")).with_responder(move |k, _| match k {
                    Kind::Ping => Reply::bid(500 + i as i64, None),
                    Kind::Post => Reply::accepted(),
                })
            })
            .collect(),
    )
    .unwrap();
    let toml = config(&fleet, "", |_| String::new())
        .replace("min_idle = 1", "min_idle = 0")
        .replace(
            "max_in_flight = 1000",
            &format!(
                "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"{TOKEN}\""
            ),
        );
    let snap = gavel::config::parse(&toml).unwrap();
    let warnings = gavel::config::warnings(&snap);
    assert!(
        warnings.iter().any(
            |w| w.contains("campaign auto: 1030 of its buyers take pings")
                && w.contains("buyers_not_pinged")
        ),
        "{warnings:#?}"
    );

    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let mut before = vec![0u64; BUYERS];
    let mut runs = std::collections::BTreeSet::new();
    for n in 0..LEADS {
        let lead = LEAD.replace("ana@example.com", &format!("ana{n}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["status"], "sold", "{v}");
        assert_eq!(v["bids"], PINGED as u64, "{v}");
        let pinged: Vec<usize> = (0..BUYERS)
            .filter(|&i| fleet.pings(i) > before[i])
            .collect();
        assert_eq!(pinged.len(), PINGED, "lead {n}");
        // A run: the buyers left out are consecutive in the config, wrapping past its end.
        let left_out: Vec<usize> = (0..BUYERS).filter(|i| !pinged.contains(i)).collect();
        let consecutive = left_out.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(
            consecutive == 0
                || (consecutive == 1 && left_out[0] == 0 && left_out.last() == Some(&(BUYERS - 1))),
            "lead {n} left out {left_out:?}"
        );
        // Sold to the best bid among those pinged.
        let best = pinged.iter().copied().max().unwrap_or(0);
        assert_eq!(v["sales"][0]["buyer"], format!("b{best}"), "{v}");
        assert_eq!(
            (v["price"].as_f64().unwrap_or(0.0) * 100.0).round() as usize,
            500 + best,
            "{v}"
        );
        runs.insert(left_out);
        for (i, b) in before.iter_mut().enumerate() {
            *b = fleet.pings(i);
        }
    }
    // Twelve runs starting at random places among 1030: all the same only by a fluke of
    // odds 1 in 1030^11.
    assert!(runs.len() > 1, "every lead left out the same buyers");
    let never = (0..BUYERS).filter(|&i| fleet.pings(i) == 0).count();
    assert!(never < BUYERS - PINGED, "{never} buyers never pinged");

    // Answers too long for the test client's limits, with a thousand buyers in them.
    let s = raw(admin_addr(&ex), "GET", "/v1/stats", Some(TOKEN));
    let s = body_json(s.split_once("\r\n\r\n").map_or("", |(_, b)| b).as_bytes());
    assert_eq!(
        s["campaigns"]["auto"]["buyers_not_pinged"],
        ((BUYERS - PINGED) * LEADS) as u64,
        "{}",
        s["campaigns"]["auto"]
    );
    let m = raw(admin_addr(&ex), "GET", "/metrics", Some(TOKEN));
    assert!(
        m.contains(&format!(
            "gavel_buyers_not_pinged_total{{campaign=\"auto\"}} {}",
            (BUYERS - PINGED) * LEADS
        )),
        "{m}"
    );
}
