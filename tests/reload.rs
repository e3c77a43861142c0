//! `POST /v1/admin/reload` on a running exchange: the next lead follows the new file, leads in
//! flight finish under the old one, caps and pauses carry over, and a bad file changes nothing.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "test-operator-token";

fn bidder(name: &str, cents: i64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None),
        Kind::Post => Reply::accepted(),
    })
}

/// The test config with the operator API on, written to a file the exchange starts from.
struct Running {
    ex: Exchange,
    admin: SocketAddr,
    path: PathBuf,
}

fn with_admin(toml: &str) -> String {
    toml.replace(
        "max_in_flight = 1000",
        &format!(
            "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"{TOKEN}\""
        ),
    )
}

fn start(toml: &str) -> Running {
    let path = temp_dir("reload").join("gavel.toml");
    std::fs::write(&path, toml).expect("write config");
    let ex = Exchange::start_file(&path);
    let admin = ex.admin_addr();
    Running { ex, admin, path }
}

fn operator(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Response {
    let mut c = Client::connect(addr);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    c.send_raw(req.as_bytes());
    c.read_response().expect("an answer")
}

impl Running {
    /// Stop the exchange and start it again from the same file.
    fn restart(self) -> Running {
        let path = self.path.clone();
        drop(self);
        let ex = Exchange::start_file(&path);
        let admin = ex.admin_addr();
        Running { ex, admin, path }
    }

    /// Write `toml` over the config file and ask for a reload.
    fn reload_with(&self, toml: &str) -> Response {
        std::fs::write(&self.path, toml).expect("write config");
        operator(self.admin, "POST", "/v1/admin/reload", Some(TOKEN))
    }

    fn stats(&self) -> Value {
        operator(self.admin, "GET", "/v1/stats", Some(TOKEN)).json()
    }

    /// `POST /v1/admin/buyers/{id}/{action}`, `pause` or `resume`.
    fn buyer_action(&self, id: &str, action: &str) -> Response {
        let path = format!("/v1/admin/buyers/{id}/{action}");
        operator(self.admin, "POST", &path, Some(TOKEN))
    }
}

/// The `/v1/post` body of the test lead for a held ping.
fn post_of(ping_id: &str) -> Vec<u8> {
    let lead: Value = serde_json::from_str(LEAD).unwrap();
    serde_json::to_vec(
        &serde_json::json!({"ping_id": ping_id, "lead": lead["lead"], "consent": lead["consent"]}),
    )
    .unwrap()
}

/// An answer's status, unsold reason and bid count.
fn outcome(v: &Value) -> (Option<&str>, Option<&str>, Option<u64>) {
    (
        v["status"].as_str(),
        v["reason"].as_str(),
        v["bids"].as_u64(),
    )
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The first buyer of `fleet` with a daily cap of `daily`, the others without caps; the
/// operator API on.
fn first_capped(fleet: &Fleet, daily: u32) -> String {
    with_admin(&config(fleet, "", |i| {
        if i == 0 {
            format!("[buyers.caps]\ndaily = {daily}")
        } else {
            String::new()
        }
    }))
}

/// The buyer a lead sold to ("" when unsold).
fn winner(c: &mut Client) -> String {
    c.lead(LEAD).json()["sales"][0]["buyer"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Buyers `first` (bids 90.00, a daily cap of 3), `second` (80.00) and `other` (10.00),
/// started, and `first` sold two leads.
fn first_sold_twice(first: &str, second: &str) -> (Fleet, String, Running, Client) {
    let fleet = Fleet::start(vec![
        bidder(first, 9000),
        bidder(second, 8000),
        bidder("other", 1000),
    ])
    .unwrap();
    let base = first_capped(&fleet, 3);
    let run = start(&base);
    let mut c = run.ex.client();
    assert_eq!([winner(&mut c), winner(&mut c)], [first, first]);
    (fleet, base, run, c)
}

/// The `[[buyers]]` table of `id` in a config made by `config`, and the config without it.
fn buyer_block<'a>(toml: &'a str, id: &str) -> (&'a str, String) {
    let block = toml
        .split("\n[[buyers]]\n")
        .find(|b| b.starts_with(&format!("id = \"{id}\"")))
        .unwrap_or_else(|| panic!("no buyer {id}"));
    (block, toml.replace(&format!("\n[[buyers]]\n{block}"), ""))
}

/// `toml` without buyer `merged`, and that config with `merged` made one with `kept` (its id
/// in `kept`'s `previous_ids`).
fn merged_into_kept(toml: &str) -> (String, String) {
    let (_, parted) = buyer_block(toml, "merged");
    let merged = parted.replace(
        "id = \"kept\"",
        "id = \"kept\"\nprevious_ids = [\"merged\"]",
    );
    (parted, merged)
}

/// The config without its last `[[buyers]]` table.
fn without_last_buyer(toml: &str) -> String {
    let at = toml.rfind("[[buyers]]").expect("a buyer");
    toml[..at].to_string()
}

#[test]
fn an_added_buyer_and_a_new_reserve_apply_to_the_next_lead() {
    let fleet = Fleet::start(vec![bidder("acme", 1000), bidder("blue", 5000)]).unwrap();
    let full = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&without_last_buyer(&full));
    let mut c = run.ex.client();
    let v = c.lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "acme", "{v}");
    assert_eq!(fleet.pings(1), 0);

    let r = run.reload_with(&full);
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["status"], "reloaded");
    assert_eq!(v["generation"], 2);
    assert_eq!(v["buyers"]["added"], serde_json::json!(["blue"]));
    assert_eq!(v["buyers"]["removed"], serde_json::json!([]));
    assert_eq!(v["buyers"]["unchanged"], 1);
    assert_eq!(v["campaigns"]["unchanged"], 2);

    // The same keep-alive connection: the next lead reaches the new buyer.
    let v = c.lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    assert_eq!(fleet.pings(1), 1);

    // A reserve above every bid: the next lead is unsold for it.
    let r = run.reload_with(&full.replace("reserve_price = 5.00", "reserve_price = 60.00"));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json()["campaigns"]["changed"],
        serde_json::json!(["auto"])
    );
    let v = c.lead(LEAD).json();
    assert_eq!(v["status"], "unsold", "{v}");
    assert_eq!(v["reason"], "below_reserve", "{v}");
    // Stats are kept by id across reloads.
    let s = run.stats();
    assert_eq!(s["campaigns"]["auto"]["leads"], 3, "{s}");
    assert_eq!(s["buyers"]["acme"]["pings"], 3, "{s}");

    // A removed buyer stays listed with what it bought, so spend still adds up to revenue.
    let r = run.reload_with(&without_last_buyer(&full));
    assert_eq!(r.status, 200, "{}", text(&r));
    let s = run.stats();
    let blue = &s["buyers"]["blue"];
    assert_eq!(blue["removed"], true, "{s}");
    assert_eq!(blue["wins"], 1, "{s}");
    assert!(blue.get("caps_left").is_none(), "{s}");
    assert_eq!(s["buyers"]["acme"]["removed"], false, "{s}");
    let spent: f64 = s["buyers"]
        .as_object()
        .unwrap()
        .values()
        .map(|b| b["spent"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(
        spent,
        s["campaigns"]["auto"]["revenue"].as_f64().unwrap(),
        "{s}"
    );
}

#[test]
fn a_lead_in_flight_finishes_under_the_config_it_started_with() {
    // "slow" bids $50 after 600 ms; "fast" bids $70 at once but only exists in the new config.
    let fleet = Fleet::start(vec![
        BuyerSpec::new("slow").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::bid(5000, None).after_ms(600),
            Kind::Post => Reply::accepted(),
        }),
        bidder("fast", 7000),
    ])
    .unwrap();
    let full = with_admin(&config(&fleet, "", |_| String::new()))
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 2000");
    let old = without_last_buyer(&full);
    let run = start(&old);
    // The new config: "slow" removed, "fast" added, a reserve above slow's bid, a lower payout.
    let slow_at = full.find("[[buyers]]").unwrap();
    let fast_at = full.rfind("[[buyers]]").unwrap();
    let new = format!("{}{}", &full[..slow_at], &full[fast_at..])
        .replace("reserve_price = 5.00", "reserve_price = 60.00")
        .replace("payout_share = 0.80", "payout_share = 0.50");

    let addr = run.ex.addr;
    let in_flight = std::thread::spawn(move || Client::connect(addr).lead(LEAD).json());
    // The lead is waiting on slow's bid when the reload happens.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fleet.pings(0) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fleet.pings(0), 1);
    let r = run.reload_with(&new);
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["buyers"]["removed"], serde_json::json!(["slow"]));
    assert_eq!(v["buyers"]["added"], serde_json::json!(["fast"]));

    // A new lead meanwhile follows the new config.
    let mut c = run.ex.client();
    let v = c.lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "fast", "{v}");
    assert_eq!(v["payout"], 35.0, "{v}");

    // The old lead: posted to the removed buyer, at its bid under the old reserve, old payout.
    let v = in_flight.join().unwrap();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "slow", "{v}");
    assert_eq!(v["price"], 50.0, "{v}");
    assert_eq!(v["payout"], 40.0, "{v}");
    assert_eq!(fleet.posts(0), 1);
    assert_eq!(fleet.pings(0), 1, "the removed buyer is not pinged again");

    // And from now on only the new config.
    let v = c.lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "fast", "{v}");
    assert_eq!(fleet.pings(0), 1);
    // The removed buyer's connections are closed once its last lead is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fleet.open_connections(0) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fleet.open_connections(0), 0);
}

#[test]
fn caps_and_pauses_carry_over_and_a_raised_cap_gives_room() {
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 1000)]).unwrap();
    let cap = |n: u32| {
        with_admin(&config(&fleet, "", |i| {
            if i == 0 {
                format!("[buyers.caps]\ndaily = {n}")
            } else {
                String::new()
            }
        }))
    };
    let base = cap(2);
    let run = start(&base);
    let mut c = run.ex.client();
    let winners = |c: &mut Client, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                c.lead(LEAD).json()["sales"][0]["buyer"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(winners(&mut c, 3), ["capped", "capped", "other"]);

    // Same cap, another change: still at the cap.
    let same = base.replace("reserve_price = 5.00", "reserve_price = 6.00");
    let r = run.reload_with(&same);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["buyers"]["unchanged"], 2);
    assert_eq!(winners(&mut c, 1), ["other"]);
    assert_eq!(run.stats()["buyers"]["capped"]["caps_left"]["daily"], 0);

    // Raised by one: exactly one more lead.
    let raised = same.replace("daily = 2", "daily = 3");
    let r = run.reload_with(&raised);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["buyers"]["changed"], serde_json::json!(["capped"]));
    assert_eq!(winners(&mut c, 2), ["capped", "other"]);

    // A buyer paused by the operator stays paused across a reload.
    let r = run.buyer_action("other", "pause");
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = run.reload_with(&raised.replace("daily = 3", "daily = 10"));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(run.stats()["buyers"]["other"]["paused"], true);
    let pings = fleet.pings(1);
    assert_eq!(winners(&mut c, 1), ["capped"]);
    assert_eq!(fleet.pings(1), pings, "a paused buyer is not pinged");
    assert_eq!(run.stats()["buyers"]["capped"]["caps_left"]["daily"], 6);

    // Lowered below what the day has taken: nothing left, and the operator sees how far over.
    let r = run.reload_with(&raised.replace("daily = 3", "daily = 1"));
    assert_eq!(r.status, 200, "{}", text(&r));
    let b = &run.stats()["buyers"]["capped"];
    assert_eq!(
        (
            b["caps_left"]["daily"].clone(),
            b["caps_used"]["daily"].clone()
        ),
        (0.into(), 4.into()),
        "{b}"
    );
}

/// A buyer renamed without `previous_ids` starts afresh; a reload that then names its old id
/// counts the journal's sales under that id toward its caps at once, as a restart would.
#[test]
fn a_reload_that_adds_a_previous_id_counts_that_ids_sales_at_once() {
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 1000)]).unwrap();
    let base = first_capped(&fleet, 3);
    let run = start(&base);
    let mut c = run.ex.client();
    assert_eq!([winner(&mut c), winner(&mut c)], ["capped", "capped"]);
    drop(c);
    drop(run);

    // Renamed without its old id: a buyer of its own, with a cap of its own.
    let renamed = base.replace("id = \"capped\"", "id = \"capped-v2\"");
    let run = start(&renamed);
    let mut c = run.ex.client();
    assert_eq!(winner(&mut c), "capped-v2");
    assert_eq!(run.stats()["buyers"]["capped-v2"]["caps_left"]["daily"], 2);

    // The operator pauses it, then names the old id: its two sales count now, with the one
    // since, and the pause holds.
    let r = run.buyer_action("capped-v2", "pause");
    assert_eq!(r.status, 200, "{}", text(&r));
    let named = renamed.replace(
        "id = \"capped-v2\"",
        "id = \"capped-v2\"\nprevious_ids = [\"capped\"]",
    );
    let r = run.reload_with(&named);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["sales_replayed"], 3, "{}", text(&r));
    let b = &run.stats()["buyers"]["capped-v2"];
    assert_eq!(
        (
            b["caps_left"]["daily"].clone(),
            b["caps_used"]["daily"].clone(),
            b["paused"].clone()
        ),
        (0.into(), 3.into(), true.into()),
        "{b}"
    );
    let r = run.buyer_action("capped-v2", "resume");
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(winner(&mut c), "other", "the cap holds at once");
}

/// Two buyers made one by a reload (one removed, its id in the other's `previous_ids`): told
/// as renamed, its numbers and its sales' caps under the one kept; and parted again by a
/// reload that takes the id away, the caps count only the kept buyer's own sales, as a
/// restart would.
#[test]
fn a_reload_that_merges_two_buyers_or_parts_them_recounts_the_caps() {
    let (_fleet, base, run, mut c) = first_sold_twice("kept", "merged");
    assert_eq!(run.buyer_action("kept", "pause").status, 200);
    assert_eq!(winner(&mut c), "merged");
    assert_eq!(run.buyer_action("kept", "resume").status, 200);

    // `merged` leaves the file; `kept` names it.
    let (parted, merged) = merged_into_kept(&base);
    let r = run.reload_with(&merged);
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = r.json();
    assert_eq!(
        v["buyers"]["renamed"],
        serde_json::json!(["merged -> kept"]),
        "{v}"
    );
    assert_eq!(v["buyers"]["removed"], serde_json::json!([]), "{v}");
    assert_eq!(v["sales_replayed"], 3, "{v}");
    let b = &run.stats()["buyers"];
    assert_eq!(
        (
            b["kept"]["wins"].clone(),
            b["kept"]["caps_used"]["daily"].clone(),
            b["kept"]["caps_left"]["daily"].clone()
        ),
        (3.into(), 3.into(), 0.into()),
        "{b}"
    );
    assert!(b.get("merged").is_none(), "{b}");
    assert_eq!(winner(&mut c), "other", "the merged sales fill the cap");

    // The id taken away again: only its own two sales count.
    let r = run.reload_with(&parted);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["sales_replayed"], 2, "{}", text(&r));
    let b = &run.stats()["buyers"]["kept"];
    assert_eq!(b["caps_left"]["daily"], 1, "{b}");
    assert_eq!(winner(&mut c), "kept");
    assert_eq!(winner(&mut c), "other");
}

/// A buyer renamed by a reload to an id that already has sales in the journal (a buyer the
/// file dropped before) counts them toward its caps at once, with those under its old id, as
/// a restart would.
#[test]
fn a_buyer_renamed_to_an_id_with_sales_counts_them_at_once() {
    let (_fleet, base, run, mut c) = first_sold_twice("x", "y");
    // `x` leaves the file; `y` sells twice.
    let (_, without_x) = buyer_block(&base, "x");
    let (y, _) = buyer_block(&base, "y");
    let r = run.reload_with(&without_x);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!([winner(&mut c), winner(&mut c)], ["y", "y"]);
    // `y` is renamed `x`, with the same cap as `x` had: four sales count.
    let y_as_x = format!(
        "{}\n[buyers.caps]\ndaily = 3\n",
        y.replace("id = \"y\"", "id = \"x\"\nprevious_ids = [\"y\"]")
    );
    let renamed = without_x.replace(y, &y_as_x);
    let r = run.reload_with(&renamed);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["buyers"]["renamed"], serde_json::json!(["y -> x"]));
    assert_eq!(r.json()["sales_replayed"], 4, "{}", text(&r));
    let b = &run.stats()["buyers"]["x"];
    assert_eq!(
        (
            b["caps_used"]["daily"].clone(),
            b["caps_left"]["daily"].clone()
        ),
        (4.into(), 0.into()),
        "{b}"
    );
    assert_eq!(winner(&mut c), "other", "the cap holds at once");
}

/// A buyer renamed with its old id in `previous_ids` keeps its caps, across a reload and a
/// restart; renamed without it, it is a new buyer with caps of its own.
#[test]
fn a_renamed_buyer_keeps_its_caps_through_previous_ids() {
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 1000)]).unwrap();
    let base = first_capped(&fleet, 2);
    let run = start(&base);
    let mut c = run.ex.client();
    assert_eq!([winner(&mut c), winner(&mut c)], ["capped", "capped"]);
    // The operator pauses it too: the pause follows the rename.
    let r = run.buyer_action("capped", "pause");
    assert_eq!(r.status, 200, "{}", text(&r));

    let renamed = base.replace(
        "id = \"capped\"",
        "id = \"capped-v2\"\nprevious_ids = [\"capped\"]",
    );
    let r = run.reload_with(&renamed);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json()["buyers"]["renamed"],
        serde_json::json!(["capped -> capped-v2"]),
        "{}",
        text(&r)
    );
    assert_eq!(r.json()["buyers"]["added"], serde_json::json!([]));
    assert_eq!(winner(&mut c), "other", "the cap holds under the new id");
    let renamed_stats = |stats: &Value, id: &str, when: &str| {
        let b = &stats["buyers"];
        assert_eq!(b[id]["caps_left"]["daily"], 0, "{when}: {b}");
        assert_eq!(b[id]["wins"], 2, "{when}: its wins come along: {b}");
        assert_eq!(b[id]["spent"], 180.0, "{when}: {b}");
        assert_eq!(b[id]["paused"], true, "{when}: so does the pause: {b}");
        for old in ["capped", "capped-v2"].into_iter().filter(|o| *o != id) {
            assert!(b.get(old).is_none(), "{when}: no entry under {old}: {b}");
        }
    };
    renamed_stats(&run.stats(), "capped-v2", "after the reload");

    // A restart rebuilds the caps and the numbers from the journal, where the sales are under
    // the old id, and reads the operator's pause, now listed under the new id.
    let path = run.path.clone();
    drop(c);
    drop(run);
    let run = start(&std::fs::read_to_string(&path).unwrap());
    renamed_stats(&run.stats(), "capped-v2", "after a restart");
    drop(run);

    // Renamed again while stopped: the pause listed under the id it had follows it too.
    let again = base.replace(
        "id = \"capped\"",
        "id = \"capped-v4\"\nprevious_ids = [\"capped\", \"capped-v2\"]",
    );
    let run = start(&again);
    renamed_stats(&run.stats(), "capped-v4", "renamed while stopped");
    let r = run.buyer_action("capped-v4", "resume");
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        winner(&mut run.ex.client()),
        "other",
        "the cap holds after a restart"
    );
    drop(run);

    // Without previous_ids the renamed buyer starts afresh.
    let fresh = base.replace("id = \"capped\"", "id = \"capped-v3\"");
    std::fs::write(&path, &fresh).unwrap();
    let ex = Exchange::start_file(&path);
    assert_eq!(winner(&mut ex.client()), "capped-v3");

    // A previous id may not be a buyer's id now.
    let clash = base.replace(
        "id = \"capped\"",
        "id = \"capped\"\nprevious_ids = [\"other\"]",
    );
    match gavel::config::parse(&clash) {
        Err(e) => assert!(e.to_string().contains("buyers[0].previous_ids[0]"), "{e}"),
        Ok(_) => panic!("a previous id that is another buyer's id was accepted"),
    }
}

/// A reload keeps each seller's rate window: a seller at its limit is not let through again by
/// an operator's reload, and a raised limit gives room at once.
#[test]
fn a_reload_keeps_the_sellers_rate_window() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let full = with_admin(&config(&fleet, "", |_| String::new()));
    let limited = |n: u32| {
        full.replace(
            "payout_share = 0.80",
            &format!("payout_share = 0.80\nmax_leads_per_second = {n}"),
        )
    };
    let run = start(&limited(2));
    let mut c = run.ex.client();
    let started = std::time::Instant::now();
    assert_eq!(c.lead(LEAD).status, 200);
    assert_eq!(c.lead(LEAD).status, 200);
    // A changed campaign reserve: the seller itself is unchanged.
    let r = run.reload_with(&limited(2).replace("reserve_price = 5.00", "reserve_price = 4.00"));
    assert_eq!(r.status, 200, "{}", text(&r));
    let third = c.lead(LEAD);
    if started.elapsed() < Duration::from_millis(980) {
        assert_eq!(third.status, 429, "{}", text(&third));
    }
    // Raised to three: the two already taken count, one more fits.
    let r = run.reload_with(&limited(3));
    assert_eq!(r.status, 200, "{}", text(&r));
    let fourth = c.lead(LEAD).status;
    let fifth = c.lead(LEAD).status;
    if started.elapsed() < Duration::from_millis(980) {
        assert_eq!((fourth, fifth), (200, 429));
    }
}

#[test]
fn an_invalid_file_is_refused_with_key_and_line_and_the_old_config_stays() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let good = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&good);
    let mut c = run.ex.client();
    assert_eq!(c.lead(LEAD).json()["status"], "sold");

    let bad = good.replace("reserve_price = 5.00", "reserve_price = -3.0\n");
    let line = bad
        .lines()
        .position(|l| l.starts_with("reserve_price = -3.0"))
        .unwrap()
        + 1;
    let r = run.reload_with(&bad);
    assert_eq!(r.status, 422, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["error"]["code"], "invalid_config", "{v}");
    assert_eq!(v["error"]["field"], "campaigns[0].reserve_price", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("line {line}: campaigns[0].reserve_price")),
        "{message}"
    );
    assert_eq!(v["issues"][0]["line"], line);

    // Not TOML of the expected shape: an unknown key, named with its line.
    let r = run.reload_with(&good.replace("reserve_price = 5.00", "reserve_prise = 5.00"));
    assert_eq!(r.status, 422, "{}", text(&r));
    assert!(text(&r).contains("reserve_prise"), "{}", text(&r));

    // Not TOML at all: the line is named, and no `field`, since no key is at fault.
    let r = run.reload_with(&format!("{good}\n!!! not toml\n"));
    assert_eq!(r.status, 422, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["error"]["code"], "invalid_config", "{v}");
    assert!(v["error"].get("field").is_none(), "{v}");
    assert!(v["issues"][0]["line"].as_u64().is_some(), "{v}");
    assert!(v["issues"][0].get("key").is_none(), "{v}");

    // Leads still flow under the old config.
    let v = c.lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "acme");
    assert_eq!(run.stats()["campaigns"]["auto"]["sold"], 2);
    // And the good file reloads.
    let r = run.reload_with(&good);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["generation"], 2);
}

#[test]
fn a_restart_only_setting_refuses_the_whole_reload() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let good = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&good);
    let mut c = run.ex.client();
    let changed = good
        .replace("workers = 1", "workers = 2")
        .replace("reserve_price = 5.00", "reserve_price = 60.00");
    let r = run.reload_with(&changed);
    assert_eq!(r.status, 409, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["error"]["code"], "restart_required", "{v}");
    assert_eq!(v["error"]["field"], "server.workers", "{v}");
    assert_eq!(v["restart_required"][0]["key"], "server.workers", "{v}");
    assert_eq!(v["restart_required"][0]["running"], "1", "{v}");
    assert_eq!(v["restart_required"][0]["file"], "2", "{v}");
    // Nothing of that file applies, not even the reserve.
    let v = c.lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(run.stats()["workers"], 1);
}

#[test]
fn reload_needs_the_operator_token_and_can_change_it() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let good = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&good);
    std::fs::write(
        &run.path,
        good.replace("reserve_price = 5.00", "reserve_price = 60.00"),
    )
    .unwrap();
    for token in [None, Some("wrong-token-123")] {
        let r = operator(run.admin, "POST", "/v1/admin/reload", token);
        assert_eq!(r.status, 401, "{}", text(&r));
    }
    let mut c = run.ex.client();
    assert_eq!(c.lead(LEAD).json()["status"], "sold", "not reloaded");

    // A new token takes effect with the reload that brings it.
    let rotated = good.replace(TOKEN, "rotated-operator-token");
    let r = run.reload_with(&rotated);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["settings"], serde_json::json!(["admin.token"]));
    assert_eq!(
        operator(run.admin, "GET", "/v1/stats", Some(TOKEN)).status,
        401
    );
    assert_eq!(
        operator(
            run.admin,
            "GET",
            "/v1/stats",
            Some("rotated-operator-token")
        )
        .status,
        200
    );
}

/// A ping held across a restart under a config without its bidder, then a reload that brings
/// the bidder back: the held bid is the buyer's again, as through two reloads.
#[test]
fn a_held_bid_whose_buyer_a_restart_left_out_is_posted_when_a_reload_brings_it_back() {
    let fleet = Fleet::start(vec![bidder("gone", 9000), bidder("kept", 5000)]).unwrap();
    let full = with_admin(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let run = start(&full);
    let r = run.ex.client().post(
        "/v1/ping",
        Some(KEY),
        br#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    let ping_id = r.json()["ping_id"].as_str().unwrap_or("").to_string();
    drop(run);

    let (_, without) = buyer_block(&full, "gone");
    let run = start(&without);
    let r = run.reload_with(&full);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["buyers"]["added"], serde_json::json!(["gone"]));
    let body = post_of(&ping_id);
    let v = run.ex.client().post("/v1/post", Some(KEY), &body).json();
    assert_eq!(
        (v["sales"][0]["buyer"].as_str(), v["price"].as_f64()),
        (Some("gone"), Some(90.0)),
        "{v}"
    );
    assert_eq!((fleet.posts(0), fleet.posts(1)), (1, 0));
}

/// A ping held, then its campaign taken out of the config: its post is told the campaign is
/// no longer configured, after the reload and after a restart alike, and nothing is posted;
/// once a reload brings the campaign back, its bids are held again and it sells, once, as
/// through two reloads.
#[test]
fn a_held_ping_whose_campaign_was_removed_is_told_so_across_a_restart() {
    const PING: &str = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let fleet = Fleet::start(vec![bidder("acme", 9000)]).unwrap();
    let full = with_admin(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let run = start(&full);
    let r = run.ex.client().post("/v1/ping", Some(KEY), PING.as_bytes());
    assert_eq!(r.status, 200, "{}", text(&r));
    let ping_id = r.json()["ping_id"].as_str().unwrap_or("").to_string();
    assert!(!ping_id.is_empty());

    let without = full
        .replace("id = \"auto\"", "id = \"auto-2\"")
        .replace("campaigns = [\"auto\"]", "campaigns = [\"auto-2\"]");
    let r = run.reload_with(&without);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json()["campaigns"]["removed"],
        serde_json::json!(["auto"])
    );
    let body = post_of(&ping_id);
    let post = |run: &Running| {
        let r = run.ex.client().post("/v1/post", Some(KEY), &body);
        (r.status, r.json())
    };
    let gone = "the campaign of this ping is no longer configured";
    let (status, v) = post(&run);
    assert_eq!(status, 404, "{v}");
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["message"].as_str()),
        (Some("unknown_ping"), Some(gone)),
        "{v}"
    );
    let run = run.restart();
    let (status, v) = post(&run);
    assert_eq!(status, 404, "{v}");
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["message"].as_str()),
        (Some("unknown_ping"), Some(gone)),
        "after a restart: {v}"
    );
    // Another seller is not told of it.
    let r = run.ex.client().post("/v1/post", Some(OTHER_KEY), &body);
    assert_eq!(r.status, 404, "{}", text(&r));
    assert_ne!(r.json()["error"]["message"], gone);

    // The campaign back by a reload: the bids are held again, and the post sells, once; a
    // restart then knows the ping was posted.
    let r = run.reload_with(&full);
    assert_eq!(r.status, 200, "{}", text(&r));
    let (status, v) = post(&run);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["price"].as_f64()),
        (Some("sold"), Some(90.0)),
        "{v}"
    );
    assert_eq!(fleet.posts(0), 1);
    let (status, v) = post(&run);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("already_posted")),
        "{v}"
    );
    let run = run.restart();
    let (status, v) = post(&run);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("already_posted")),
        "{v}"
    );
    assert_eq!(fleet.posts(0), 1);
}

#[test]
fn a_ping_held_before_a_reload_is_posted_after_it() {
    const PING: &str = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let fleet = Fleet::start(vec![bidder("gone", 9000), bidder("kept", 5000)]).unwrap();
    let full = with_admin(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let run = start(&full);
    let mut c = run.ex.client();
    let r = c.post("/v1/ping", Some(KEY), PING.as_bytes());
    assert_eq!(r.status, 200, "{}", text(&r));
    let ping_id = r.json()["ping_id"].as_str().unwrap().to_string();

    // "gone" (the top bid) is removed, and "kept" moves to the first place in the file.
    let gone_at = full.find("[[buyers]]").unwrap();
    let kept_at = full.rfind("[[buyers]]").unwrap();
    let new = format!("{}{}", &full[..gone_at], &full[kept_at..]);
    let r = run.reload_with(&new);
    assert_eq!(r.status, 200, "{}", text(&r));

    let body = post_of(&ping_id);
    let r = c.post("/v1/post", Some(KEY), &body);
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "kept", "{v}");
    assert_eq!(v["price"], 50.0, "{v}");
    assert_eq!(fleet.posts(0), 0, "the removed buyer's held bid is dropped");
}

/// A reload that makes two buyers one (one removed, its id in the other's `previous_ids`)
/// while a ping holds a bid of each: a shared post sells to that buyer once, at its best bid,
/// and to the next distinct buyer.
#[test]
fn a_ping_held_before_two_buyers_were_made_one_sells_to_each_buyer_once() {
    let fleet = Fleet::start(vec![
        bidder("kept", 9000),
        bidder("merged", 8000),
        bidder("other", 5000),
    ])
    .unwrap();
    let full = with_admin(&config(
        &fleet,
        "hold_ms = 30000\nsale = \"shared\"\nmax_sales = 2",
        |_| String::new(),
    ));
    let run = start(&full);
    let mut c = run.ex.client();
    let r = c.post(
        "/v1/ping",
        Some(KEY),
        br#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["payout"], 136.0, "{}", text(&r));
    let ping_id = r.json()["ping_id"].as_str().unwrap_or("").to_string();

    let (_, merged) = merged_into_kept(&full);
    let r = run.reload_with(&merged);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json()["buyers"]["renamed"],
        serde_json::json!(["merged -> kept"])
    );

    let body = post_of(&ping_id);
    let v = c.post("/v1/post", Some(KEY), &body).json();
    let sales: Vec<(&str, f64)> = v["sales"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        s["buyer"].as_str().unwrap_or(""),
                        s["price"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(sales, [("kept", 90.0), ("other", 50.0)], "{v}");
    assert_eq!(v["price"], 140.0, "{v}");
    assert_eq!(
        (fleet.posts(0), fleet.posts(1), fleet.posts(2)),
        (1, 0, 1),
        "one post to the buyer the two became"
    );
}

/// A seller's post after the operator paused a held bidder: the paused buyer gets no post and
/// the journal says it was paused; the next held bid is posted; with every held bidder
/// paused the post is unsold `buyers_paused`, as a direct lead's would be.
#[test]
fn a_post_whose_held_bidders_were_paused_says_so() {
    const PING: &str = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let fleet = Fleet::start(vec![bidder("top", 9000), bidder("second", 5000)]).unwrap();
    let toml = with_admin(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let run = start(&toml);
    let mut c = run.ex.client();
    let lead: Value = serde_json::from_str(LEAD).unwrap();
    let mut ping_and_post = |n: usize, pause: &[&str]| -> Value {
        let r = c.post("/v1/ping", Some(KEY), PING.as_bytes());
        assert_eq!(r.status, 200, "{}", text(&r));
        let ping_id = r.json()["ping_id"].as_str().unwrap().to_string();
        for id in pause {
            assert_eq!(run.buyer_action(id, "pause").status, 200);
        }
        let mut consumer = lead["lead"].clone();
        consumer["email"] = Value::from(format!("held{n}@example.com"));
        let body =
            serde_json::json!({"ping_id": ping_id, "lead": consumer, "consent": lead["consent"]});
        let r = c.post("/v1/post", Some(KEY), body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", text(&r));
        r.json()
    };
    let v = ping_and_post(0, &["top"]);
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "second", "{v}");
    assert_eq!(fleet.posts(0), 0);
    assert_eq!(run.buyer_action("top", "resume").status, 200);
    let v = ping_and_post(1, &["top", "second"]);
    assert_eq!(
        outcome(&v),
        (Some("unsold"), Some("buyers_paused"), Some(2)),
        "{v}"
    );
    assert_eq!(fleet.posts(0), 0);
    assert_eq!(fleet.posts(1), 1);
    let dir = journal_dir_of(&toml);
    let paused: Vec<String> = gavel::journal::read_all(&dir)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PostResult { buyer, reason, .. } => {
                (reason.as_deref() == Some("not sent: buyer paused")).then_some(buyer)
            }
            _ => None,
        })
        .collect();
    assert_eq!(paused, ["top", "top", "second"]);
}

/// The config of `fleet` with its first buyer in Chicago with a daily cap of 2, posts given
/// 5 s to answer.
fn chicago_capped(fleet: &Fleet) -> String {
    with_admin(
        &config(fleet, "", |i| {
            if i == 0 {
                "timezone = \"America/Chicago\"\n[buyers.caps]\ndaily = 2".to_string()
            } else {
                String::new()
            }
        })
        .replace("post_timeout_ms = 500", "post_timeout_ms = 5000"),
    )
}

/// `LEAD` with an email of its own.
fn lead_n(i: usize) -> String {
    LEAD.replace("ana@example.com", &format!("ana{i}@example.com"))
}

/// Two leads sent on connections of their own, waiting until both posts reached the first
/// buyer; their answers are still to be read.
fn two_posts_in_flight(r: &Running, fleet: &Fleet) -> Vec<Client> {
    let clients = send_leads_at_once(r.ex.addr, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fleet.posts(0) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both posts reach the buyer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    clients
}

/// A reload that changes a buyer's time zone gives it new counters, rebuilt from the journal;
/// sales still in flight then are not in the journal yet. They count once they are made, so
/// the buyer's cap holds across the change.
#[test]
fn sales_in_flight_across_a_zone_change_count_toward_the_cap() {
    let slow = BuyerSpec::new("slow").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(9000, None),
        Kind::Post => Reply::accepted().after_ms(1500),
    });
    let fleet = Fleet::start(vec![slow, bidder("other", 2000)]).unwrap();
    let chicago = chicago_capped(&fleet);
    let toml_for = |tz: &str| chicago.replace("America/Chicago", tz);
    let r = start(&toml_for("America/Chicago"));
    let lead = lead_n;
    let mut clients = two_posts_in_flight(&r, &fleet);
    let reload = r.reload_with(&toml_for("America/New_York"));
    assert_eq!(reload.status, 200, "{}", text(&reload));
    for c in &mut clients {
        let v = c.read_response().expect("an answer").json();
        assert_eq!(v["sales"][0]["buyer"], "slow", "{v}");
    }
    // Two sold of a daily cap of 2: the next lead goes to the other buyer.
    let v = r.ex.client().lead(&lead(9)).json();
    assert_eq!(v["sales"][0]["buyer"], "other", "{v}");
    assert_eq!(r.stats()["buyers"]["slow"]["caps_left"]["daily"], 0);
}

/// Leads sent while posts made before a zone change are still in flight: the rebuilt
/// counters count those posts, so the buyer never has more sold or in flight than its cap;
/// and posts that then fail give their room back.
#[test]
fn posts_in_flight_across_a_zone_change_hold_the_cap_for_new_leads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for accept_first in [true, false] {
        let accept = Arc::new(AtomicBool::new(accept_first));
        let flag = accept.clone();
        let slow = BuyerSpec::new("slow").with_responder(move |kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None),
            Kind::Post if flag.load(Ordering::SeqCst) => Reply::accepted().after_ms(1500),
            Kind::Post => Reply::rejected("full").after_ms(1500),
        });
        let fleet = Fleet::start(vec![slow, bidder("other", 2000)]).unwrap();
        let chicago = chicago_capped(&fleet);
        let r = start(&chicago);
        let lead = lead_n;
        let mut clients = two_posts_in_flight(&r, &fleet);
        let reload = r.reload_with(&chicago.replace("America/Chicago", "America/New_York"));
        assert_eq!(reload.status, 200, "{}", text(&reload));
        // Two posts in flight fill a daily cap of 2: this lead goes to the other buyer.
        let v = r.ex.client().lead(&lead(3)).json();
        assert_eq!(
            v["sales"][0]["buyer"], "other",
            "accept {accept_first}: {v}"
        );
        for c in &mut clients {
            let v = c.read_response().expect("an answer").json();
            let to = if accept_first { "slow" } else { "other" };
            assert_eq!(v["sales"][0]["buyer"], to, "accept {accept_first}: {v}");
        }
        accept.store(true, Ordering::SeqCst);
        let v = r.ex.client().lead(&lead(4)).json();
        if accept_first {
            // Two sold: still capped.
            assert_eq!(v["sales"][0]["buyer"], "other", "{v}");
            assert_eq!(r.stats()["buyers"]["slow"]["caps_left"]["daily"], 0);
            assert_eq!(r.stats()["buyers"]["slow"]["wins"], 2);
        } else {
            // Both posts were rejected: the buyer's room came back.
            assert_eq!(v["sales"][0]["buyer"], "slow", "{v}");
            assert_eq!(r.stats()["buyers"]["slow"]["caps_left"]["daily"], 1);
        }
    }
}

/// A lead still in its auction when a reload changes a buyer's time zone posts into the
/// buyer's new counters, as leads of the new config do: between them, the buyer never gets
/// more than its cap (each config's counters used to let one through).
#[test]
fn a_lead_auctioned_across_a_zone_change_posts_into_the_new_counters() {
    let slow = BuyerSpec::new("slow").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(9000, None).after_ms(400),
        // Still in flight when the second lead's post is due.
        Kind::Post => Reply::accepted().after_ms(600),
    });
    let fleet = Fleet::start(vec![slow, bidder("other", 2000)]).unwrap();
    let chicago = with_admin(
        &config(&fleet, "", |i| {
            if i == 0 {
                "timezone = \"America/Chicago\"\n[buyers.caps]\ndaily = 1".to_string()
            } else {
                String::new()
            }
        })
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 1000")
        .replace("post_timeout_ms = 500", "post_timeout_ms = 5000"),
    );
    let r = start(&chicago);
    let mut before = r.ex.client();
    before.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        lead_n(1).as_bytes(),
    ));
    std::thread::sleep(Duration::from_millis(100));
    let reload = r.reload_with(&chicago.replace("America/Chicago", "America/New_York"));
    assert_eq!(reload.status, 200, "{}", text(&reload));
    let mut after = r.ex.client();
    after.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        lead_n(2).as_bytes(),
    ));
    let mut to = Vec::new();
    for c in [&mut before, &mut after] {
        let v = c.read_response().expect("an answer").json();
        to.push(v["sales"][0]["buyer"].as_str().unwrap_or("").to_string());
    }
    to.sort();
    assert_eq!(to, ["other", "slow"], "one lead for a daily cap of 1");
    assert_eq!(fleet.posts(0), 1);
    assert_eq!(r.stats()["buyers"]["slow"]["caps_left"]["daily"], 0);
}

/// A cap lowered by a reload while leads are still in their auction holds for their posts:
/// the buyer gets no more leads than its new cap, not one per lead that had its ping before
/// the reload.
#[test]
fn a_cap_lowered_while_leads_are_in_their_auction_holds_for_their_posts() {
    let slow = BuyerSpec::new("slow").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(9000, None).after_ms(500),
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![slow, bidder("other", 2000)]).unwrap();
    let base = first_capped(&fleet, 10).replace("ping_timeout_ms = 300", "ping_timeout_ms = 1000");
    let r = start(&base);
    let mut clients = send_leads_at_once(r.ex.addr, 4);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fleet.pings(0) < 4 {
        assert!(std::time::Instant::now() < deadline, "every lead pings");
        std::thread::sleep(Duration::from_millis(5));
    }
    let reload = r.reload_with(&base.replace("daily = 10", "daily = 1"));
    assert_eq!(reload.status, 200, "{}", text(&reload));
    let mut to = Vec::new();
    for c in &mut clients {
        let v = c.read_response().expect("an answer").json();
        to.push(v["sales"][0]["buyer"].as_str().unwrap_or("").to_string());
    }
    to.sort();
    assert_eq!(to, ["other", "other", "other", "slow"], "a daily cap of 1");
    assert_eq!(fleet.posts(0), 1);
    let slow = &r.stats()["buyers"]["slow"];
    assert_eq!(
        (slow["caps_used"]["daily"].as_u64(), slow["wins"].as_u64()),
        (Some(1), Some(1)),
        "{slow}"
    );
}

/// A reload that lowers a buyer's `max_connections` holds at once: the connections it had
/// warm beyond the new limit are closed, not used for the next leads.
#[test]
fn a_lowered_connection_limit_holds_right_after_the_reload() {
    let fleet = Fleet::start(vec![BuyerSpec::new("slow").with_responder(
        |kind, _| match kind {
            Kind::Ping => Reply::bid(2000, None).after_ms(1500),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap();
    let toml = config(&fleet, "", |_| {
        "min_idle = 2\nmax_connections = 2".to_string()
    })
    .replace("min_idle = 1\n", "");
    let path = temp_dir("reload-conns").join("gavel.toml");
    std::fs::write(&path, &toml).unwrap();
    let mut snap = gavel::config::load(&path).unwrap();
    snap.path = Some(path.clone());
    let handle = gavel::net::start(std::sync::Arc::new(snap)).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // two connections warm
    std::fs::write(
        &path,
        toml.replace(
            "min_idle = 2\nmax_connections = 2",
            "min_idle = 1\nmax_connections = 1",
        ),
    )
    .unwrap();
    gavel::net::reload(handle.shared()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Three leads at once: one ping goes out, the others find no free connection.
    for mut c in send_leads_at_once(handle.local_addr(), 3) {
        assert!(c.read_response().is_some());
    }
    assert_eq!(fleet.pings(0), 1, "pings sent past the lowered limit");
}

/// A buyer paused while a lead it bid on is still in its auction gets no post: the journal
/// says it was paused (not capped), and a lead whose every bidder was paused so answers
/// `buyers_paused`.
#[test]
fn a_buyer_paused_during_an_auction_is_not_posted_and_the_reason_says_paused() {
    // "fast" bids at once; "slow" holds the auction open until its bid at 400 ms.
    let fleet = Fleet::start(vec![
        bidder("fast", 5000),
        BuyerSpec::new("slow").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::bid(1000, None).after_ms(400),
            Kind::Post => Reply::accepted(),
        }),
    ])
    .unwrap();
    let toml = with_admin(&config(&fleet, "", |_| String::new()))
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 2000");
    let run = start(&toml);
    let sell = |pause: &[&str]| {
        let addr = run.ex.addr;
        let pinged = fleet.pings(1);
        let lead = std::thread::spawn(move || Client::connect(addr).lead(LEAD).json());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fleet.pings(1) == pinged && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for id in pause {
            assert_eq!(run.buyer_action(id, "pause").status, 200);
        }
        lead.join().unwrap()
    };
    // The top bidder paused mid-auction: the next bid wins.
    let v = sell(&["fast"]);
    assert_eq!(v["sales"][0]["buyer"], "slow", "{v}");
    assert_eq!(fleet.posts(0), 0);
    run.buyer_action("fast", "resume");
    // Both paused: unsold, and the seller is told why.
    let v = sell(&["fast", "slow"]);
    assert_eq!(
        outcome(&v),
        (Some("unsold"), Some("buyers_paused"), Some(2)),
        "{v}"
    );
    let dir = journal_dir_of(&toml);
    let reasons: Vec<Option<String>> = gavel::journal::read_all(&dir)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PostResult { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            Some("not sent: buyer paused".to_string()),
            None,
            Some("not sent: buyer paused".to_string()),
            Some("not sent: buyer paused".to_string()),
        ]
    );
    // Not a rejection of the buyer's.
    assert_eq!(run.stats()["buyers"]["fast"]["post_rejects"], 0);
}

/// The operator's pause of a buyer holds when a reload removes the buyer and a later one
/// brings it back, as it does across a restart.
#[test]
fn a_pause_holds_for_a_buyer_removed_and_added_back() {
    let fleet = Fleet::start(vec![bidder("acme", 1000), bidder("blue", 5000)]).unwrap();
    let full = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&full);
    assert_eq!(run.buyer_action("blue", "pause").status, 200);
    let r = run.reload_with(&without_last_buyer(&full));
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = run.reload_with(&full);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["buyers"]["added"], serde_json::json!(["blue"]));
    assert_eq!(run.stats()["buyers"]["blue"]["paused"], true);
    let v = run.ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "acme", "{v}");
    assert_eq!(fleet.pings(1), 0, "the paused buyer was pinged");
}

/// Two buyers made one by a reload, one of them paused by the operator: the one kept is paused
/// from the reload on, as it is after a restart (the pause moves to its id; a pause wins over
/// the other buyer's standing).
#[test]
fn a_pause_of_a_buyer_merged_into_another_holds_now_and_after_a_restart() {
    let fleet = Fleet::start(vec![
        bidder("kept", 9000),
        bidder("merged", 8000),
        bidder("other", 1000),
    ])
    .unwrap();
    let full = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&full);
    assert_eq!(run.buyer_action("merged", "pause").status, 200);
    let mut c = run.ex.client();
    assert_eq!(winner(&mut c), "kept");

    let (_, merged) = merged_into_kept(&full);
    let r = run.reload_with(&merged);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(run.stats()["buyers"]["kept"]["paused"], true);
    assert_eq!(winner(&mut c), "other", "paused from the reload on");
    let kept_posts = fleet.posts(0);
    drop(c);
    drop(run);

    let run = start(&merged);
    assert_eq!(run.stats()["buyers"]["kept"]["paused"], true);
    assert_eq!(
        winner(&mut run.ex.client()),
        "other",
        "paused after a restart"
    );
    assert_eq!(fleet.posts(0), kept_posts);
    // The operator's resume of the one buyer holds.
    assert_eq!(run.buyer_action("kept", "resume").status, 200);
    assert_eq!(winner(&mut run.ex.client()), "kept");
}

/// Dedupe switched on by a reload knows the leads received before it, as a restart would: a
/// consumer sold while the campaign did not dedupe is a duplicate from the reload on. A lead
/// refused is not remembered, and a campaign's window made longer reaches back as far.
#[test]
fn dedupe_set_by_a_reload_knows_the_leads_received_before_it() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let on = with_admin(&config(&fleet, "dedupe_days = 30", |_| String::new()));
    let off = on.replace("dedupe_days = 30", "dedupe_days = 0");
    assert_ne!(off, on);
    let run = start(&off);
    let mut c = run.ex.client();
    let other = LEAD
        .replace("7135550147", "7135550100")
        .replace("ana@", "bo@");
    assert_eq!(c.lead(LEAD).json()["status"], "sold");
    assert_eq!(c.lead(LEAD).json()["status"], "sold", "no dedupe yet");
    // Refused for its content: never sold, so not remembered.
    let refused = other.replace("\"state\": \"TX\"", "\"state\": \"ZZ\"");
    assert_ne!(refused, other);
    assert_eq!(c.lead(&refused).status, 422);

    let r = run.reload_with(&on);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["dedupe_replayed"], 2, "{}", text(&r));
    let r = c.lead(LEAD);
    assert_eq!(r.status, 422, "{}", text(&r));
    assert_eq!(r.json()["error"]["code"], "duplicate");
    assert_eq!(c.lead(&other).json()["status"], "sold");
    assert_eq!(c.lead(&other).status, 422, "recorded live from now on");

    // A reload that changes nothing of dedupe reads nothing.
    let r = run.reload_with(&on.replace("reserve_price = 5.00", "reserve_price = 6.00"));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["dedupe_replayed"], 0, "{}", text(&r));
    // The config's own warnings, as `check` gives them; none of the dedupe index.
    let warns = |r: &Response, start: &str| {
        let w = r.json()["warnings"].clone();
        let found = w.as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().is_some_and(|w| w.starts_with(start)))
        });
        assert!(found, "no warning {start:?}: {}", text(r));
    };
    warns(&r, "campaign other: none of its buyers");
    assert!(!text(&r).contains("dedupe_entries"), "{}", text(&r));

    // A smaller index applies at the next start: the answer warns of it, as the log does.
    let r = run.reload_with(&with_dedupe_entries(&on, 1024));
    assert_eq!(r.status, 200, "{}", text(&r));
    warns(&r, "server.dedupe_entries lowered to 1024");
}

/// `toml` with `server.dedupe_entries` set to `n`.
fn with_dedupe_entries(toml: &str, n: usize) -> String {
    let set = toml.replace(
        "max_in_flight = 1000",
        &format!("max_in_flight = 1000\ndedupe_entries = {n}"),
    );
    assert_ne!(set, toml);
    set
}

/// A lowered `dedupe_entries` applies at the next start, also when the reload that lowers it
/// is the one that begins deduping (the index was small, nothing deduped): the index gets
/// room for what the start's setting promised, and the answer says the lower size waits.
#[test]
fn a_reload_that_begins_deduping_with_a_lowered_size_keeps_the_starts() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let on = with_admin(&config(&fleet, "dedupe_days = 30", |_| String::new()));
    let off = on.replace("dedupe_days = 30", "dedupe_days = 0");
    let run = start(&off);
    let dedupe = |run: &Running| run.stats()["dedupe"].clone();
    assert_eq!(dedupe(&run)["entries"], 1_048_576, "{}", dedupe(&run));
    let lowered = with_dedupe_entries(&on, 1024);
    let r = run.reload_with(&lowered);
    assert_eq!(r.status, 200, "{}", text(&r));
    let said = text(&r);
    assert!(
        said.contains(
            "server.dedupe_entries lowered to 1024: the dedupe index keeps room for 1048576 \
             until the next start"
        ),
        "{said}"
    );
    let d = dedupe(&run);
    assert!(
        d["capacity"].as_u64().is_some_and(|c| c >= 1_048_576),
        "{d}"
    );
    // Reloaded again, the lower size still waits for the start, and is said to.
    let r = run.reload_with(&lowered);
    assert!(text(&r).contains("lowered to 1024"), "{}", text(&r));
    // Raised, it takes effect at once; lowered from there, but not below the start's, the
    // index keeps the raised size, and the answer says which.
    let raised = with_dedupe_entries(&on, 2_000_000);
    let r = run.reload_with(&raised);
    assert!(
        text(&r).contains("\"settings\":[\"server.dedupe_entries\"]"),
        "{}",
        text(&r)
    );
    let capacity = dedupe(&run)["capacity"].as_u64().unwrap_or(0);
    assert!(capacity >= 2_000_000, "{}", dedupe(&run));
    let between = with_dedupe_entries(&on, 1_500_000);
    let r = run.reload_with(&between);
    assert!(
        text(&r).contains("lowered to 1500000: the dedupe index keeps room for 2000000"),
        "{}",
        text(&r)
    );
    assert_eq!(dedupe(&run)["capacity"].as_u64(), Some(capacity));
}

/// A config path that names no regular file (a FIFO nobody writes to, `/dev/zero`) is refused
/// at once as unreadable, instead of a reload that blocks or reads without end; the running
/// config is untouched and the next good file reloads.
#[test]
fn a_config_that_is_not_a_regular_file_is_refused_at_once() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let good = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&good);
    let fifo = run.path.with_extension("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for target in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        std::fs::remove_file(&run.path).expect("remove config");
        std::os::unix::fs::symlink(target, &run.path).expect("symlink");
        let r = operator(run.admin, "POST", "/v1/admin/reload", Some(TOKEN));
        assert_eq!(r.status, 422, "{}: {}", target.display(), text(&r));
        let v = r.json();
        assert_eq!(v["error"]["code"], "config_unreadable", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("not a regular file"), "{message}");
    }
    let v = run.ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "acme", "{v}");
    std::fs::remove_file(&run.path).expect("remove config");
    let r = run.reload_with(&good);
    assert_eq!(r.status, 200, "{}", text(&r));
}

/// A config file over the size limit is refused as unreadable without being read whole.
#[test]
fn a_config_larger_than_the_limit_is_refused() {
    let fleet = Fleet::start(vec![bidder("acme", 1000)]).unwrap();
    let good = with_admin(&config(&fleet, "", |_| String::new()));
    let run = start(&good);
    let big = gavel::config::MAX_CONFIG_FILE_BYTES as usize + 1;
    let mut text_ = good.clone().into_bytes();
    text_.resize(big, b'\n');
    std::fs::write(&run.path, &text_).expect("write config");
    let r = operator(run.admin, "POST", "/v1/admin/reload", Some(TOKEN));
    assert_eq!(r.status, 422, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["error"]["code"], "config_unreadable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("larger than 64 MiB"),
        "{v}"
    );
}

/// The reasons journaled for pings and posts not sent because their buyer was paused.
fn not_sent_for_pause(toml: &str) -> (usize, usize) {
    let mut pings = 0;
    let mut posts = 0;
    for e in gavel::journal::read_all(&journal_dir_of(toml)).unwrap() {
        match e.record {
            gavel::journal::Record::PingResult { reason, .. }
                if reason.as_deref() == Some("not sent: buyer paused") =>
            {
                pings += 1
            }
            gavel::journal::Record::PostResult { reason, .. }
                if reason.as_deref() == Some("not sent: buyer paused") =>
            {
                posts += 1
            }
            _ => {}
        }
    }
    (pings, posts)
}

/// Wait until `f` holds, at most five seconds.
fn wait_until(f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A pause holds at once for pings already waiting for the buyer's one connection: none of
/// them is written once the connection is free, each ends as a timeout never sent, journaled
/// as not sent for the pause, and the leads sell to the other buyer.
#[test]
fn pings_waiting_for_a_paused_buyers_connection_are_not_written() {
    // "busy" bids best, on one connection, answering each ping in 400 ms.
    let fleet = Fleet::start(vec![
        BuyerSpec::new("busy").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::bid(5000, None).after_ms(400),
            Kind::Post => Reply::accepted(),
        }),
        bidder("other", 1000),
    ])
    .unwrap();
    let toml = with_admin(&config(&fleet, "", |i| {
        if i == 0 {
            "max_connections = 1".to_string()
        } else {
            String::new()
        }
    }))
    .replace("ping_timeout_ms = 300", "ping_timeout_ms = 2000")
    .replace("min_idle = 1", "min_idle = 0");
    let run = start(&toml);
    let clients = send_leads_at_once(run.ex.addr, 4);
    // One ping is out on the one connection, three wait behind it.
    wait_until(|| fleet.pings(0) >= 1);
    assert_eq!(run.buyer_action("busy", "pause").status, 200);
    for mut c in clients {
        let v = c.read_response().expect("an answer").json();
        assert_eq!(v["status"], "sold", "{v}");
        assert_eq!(v["sales"][0]["buyer"], "other", "{v}");
    }
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 0));
    // The first lead's bid of "busy" came after the pause: its post was not sent either.
    assert_eq!(not_sent_for_pause(&toml), (3, 1));
    let busy = &run.stats()["buyers"]["busy"];
    assert_eq!(
        (busy["pings"].as_u64(), busy["timeouts"].as_u64()),
        (Some(4), Some(3)),
        "{busy}"
    );
    assert_eq!(busy["post_rejects"], 0, "{busy}");
}

/// A pause holds at once for posts already waiting for the buyer's one connection: none of
/// them is written (no sale the operator did not want), each is journaled as not sent for the
/// pause, its cap reservation is given back, and the lead cascades to the next buyer.
#[test]
fn posts_waiting_for_a_paused_buyers_connection_are_not_written() {
    // A waterfall whose first buyer takes one post at a time, answering in 500 ms.
    let fleet = Fleet::start(vec![
        BuyerSpec::new("busy").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted().after_ms(500),
        }),
        bidder("other", 1000),
    ])
    .unwrap();
    let mut toml = with_admin(&config(
        &Fleet::start(vec![]).unwrap(),
        "method = \"waterfall\"",
        |_| String::new(),
    ))
    .replace("post_timeout_ms = 500", "post_timeout_ms = 2000");
    for (i, (price, priority, extra)) in [
        (
            50.0,
            1,
            "max_connections = 1\nmin_idle = 0\n[buyers.caps]\ndaily = 10",
        ),
        (10.0, 2, ""),
    ]
    .iter()
    .enumerate()
    {
        toml.push_str(&format!(
            "\n[[buyers]]\nid = \"{name}\"\ncampaigns = [\"auto\"]\npost_url = \"{post}\"\nprice = {price}\npriority = {priority}\n{extra}\n",
            name = fleet.name(i),
            post = fleet.post_url(i),
        ));
    }
    let run = start(&toml);
    let clients = send_leads_at_once(run.ex.addr, 3);
    // One post is out on the one connection, two wait behind it.
    wait_until(|| fleet.posts(0) >= 1);
    assert_eq!(run.buyer_action("busy", "pause").status, 200);
    let mut buyers: Vec<String> = clients
        .into_iter()
        .map(|mut c| {
            let v = c.read_response().expect("an answer").json();
            assert_eq!(v["status"], "sold", "{v}");
            v["sales"][0]["buyer"].as_str().unwrap_or("").to_string()
        })
        .collect();
    buyers.sort();
    assert_eq!(buyers, ["busy", "other", "other"]);
    assert_eq!(fleet.posts(0), 1);
    assert_eq!(not_sent_for_pause(&toml), (0, 2));
    let busy = &run.stats()["buyers"]["busy"];
    assert_eq!(
        (busy["wins"].as_u64(), busy["post_rejects"].as_u64()),
        (Some(1), Some(0)),
        "{busy}"
    );
    // Only the one sale counts toward its cap: the two not sent gave theirs back.
    assert_eq!(busy["caps_used"]["daily"], 1, "{busy}");
}
