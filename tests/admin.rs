//! The operator API on a real socket: health, stats, metrics, pause and resume.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};

const TOKEN: &str = "test-operator-token";

fn start(fleet: &Fleet) -> Exchange {
    let toml = config(fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        &format!(
            "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"{TOKEN}\""
        ),
    );
    Exchange::start(&toml)
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

#[test]
fn stats_metrics_pause_and_resume() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("acme").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(5000, None),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("blue").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(1000, None),
            Kind::Post => Reply::accepted(),
        }),
    ])
    .unwrap();
    let ex = start(&fleet);
    let admin = ex
        .handle
        .as_ref()
        .unwrap()
        .admin_addr()
        .expect("admin listener");
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
    assert_eq!(s["overhead_us"]["count"], 3);
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

    let m = get(admin, "GET", "/metrics", Some(TOKEN));
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains("gavel_leads_total{campaign=\"auto\",status=\"sold\"} 3"),
        "{}",
        text
    );
    assert!(text.contains("gavel_pings_total{buyer=\"blue\",result=\"bid\"} 3"));
    assert!(text.contains("gavel_internal_overhead_seconds_count 3"));
    assert!(text.contains("gavel_internal_overhead_stage_seconds_count{stage=\"intake\"} 3"));

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
    assert!(String::from_utf8_lossy(&page.body).contains("<canvas"));
}
