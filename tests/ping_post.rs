//! Seller-side ping-post: `/v1/ping` gets a price before the consumer is handed over,
//! `/v1/post` delivers the full lead to the held bids.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::time::Duration;

const PING: &str = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;

fn post_body(ping_id: &str, lead: &str) -> Vec<u8> {
    let full: Value = serde_json::from_str(LEAD).unwrap();
    let mut lead_v = full["lead"].clone();
    if !lead.is_empty() {
        lead_v = serde_json::from_str(lead).unwrap();
    }
    serde_json::to_vec(
        &serde_json::json!({"ping_id": ping_id, "lead": lead_v, "consent": full["consent"]}),
    )
    .unwrap()
}

fn bidder(name: &str, cents: i64, accept: bool) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, Some("held-1")),
        Kind::Post if accept => Reply::accepted(),
        Kind::Post => Reply::rejected("duplicate"),
    })
}

#[test]
fn ping_then_post_sells_to_the_held_bid_without_pinging_again() {
    let fleet = Fleet::start(vec![
        bidder("top", 9000, true),
        bidder("second", 5000, true),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let mut c = ex.client();

    let r = c.post("/v1/ping", Some(KEY), PING.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "bid");
    assert_eq!(v["payout"], 72.0); // 80 % of the 90.00 top bid
    assert_eq!(v["expires_in_ms"], 30000);
    let ping_id = v["ping_id"].as_str().unwrap().to_string();
    assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 0));

    // The id in lower case, as a lookup takes it: the same ping.
    let r = c.post(
        "/v1/post",
        Some(KEY),
        &post_body(&ping_id.to_ascii_lowercase(), ""),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["lead_id"], ping_id.as_str());
    assert_eq!(v["status"], "sold");
    assert_eq!(v["price"], 90.0);
    assert_eq!(v["payout"], 72.0);
    assert_eq!(v["sales"][0]["buyer"], "top");
    // Posted at the held bid, echoing its bid id; nobody was pinged again.
    assert_eq!((fleet.pings(0), fleet.posts(0), fleet.pings(1)), (1, 1, 1));
    let post: Value = serde_json::from_slice(&fleet.post_bodies(0)[0]).unwrap();
    assert_eq!(post["bid_id"], "held-1");
    assert_eq!(post["lead"]["first_name"], "Ana");

    // A second post of the same ping: 409.
    let r = c.post("/v1/post", Some(KEY), &post_body(&ping_id, ""));
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "already_posted");
}

#[test]
fn unknown_expired_mismatched_and_unbid_pings() {
    let fleet = Fleet::start(vec![
        bidder("top", 9000, false),
        bidder("second", 5000, true),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 300", |_| String::new()));
    let mut c = ex.client();

    let r = c.post("/v1/post", Some(KEY), &post_body("01NOSUCHPING", ""));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_ping");

    let ping_id = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json()["ping_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The full lead says Oklahoma where the ping said Texas: refused, and the ping stays postable.
    let ok_lead = r#"{"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "7135550147",
        "state": "OK", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}"#;
    let r = c.post("/v1/post", Some(KEY), &post_body(&ping_id, ok_lead));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "ping_mismatch");
    assert_eq!(r.json()["error"]["field"], "lead.state");
    // The top bidder rejects the post: it cascades to the next held bid.
    let v = c
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""))
        .json();
    assert_eq!(v["sales"][0]["buyer"], "second", "{}", v);

    let ping_id = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json()["ping_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Past its hold, and long past it (the exchange sweeps holds every 50 ms): 410 both times,
    // never taken for a ping that never was.
    for wait_ms in [400, 1500] {
        std::thread::sleep(Duration::from_millis(wait_ms));
        let r = c.post("/v1/post", Some(KEY), &post_body(&ping_id, ""));
        assert_eq!(r.status, 410, "expired ping after {wait_ms} ms more");
        assert_eq!(r.json()["error"]["code"], "ping_expired");
        assert_eq!(r.json()["error"]["field"], "ping_id");
    }
    // A ping that was posted stays posted after its hold: 409, not 410.
    let posted = r#"{"first_name": "Ana", "last_name": "Diaz", "email": "ana2@example.com", "phone": "7135550148",
        "state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}"#;
    let ping_id = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json()["ping_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = c
        .post("/v1/post", Some(KEY), &post_body(&ping_id, posted))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let r = c.post("/v1/post", Some(KEY), &post_body(&ping_id, posted));
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "already_posted");

    // Nobody bids on a Californian: no bid, nothing held.
    let ca = PING.replace("\"TX\"", "\"CA\"");
    let fleet2 = Fleet::start(vec![
        BuyerSpec::new("never").with_responder(|_, _| Reply::no_bid())
    ])
    .unwrap();
    let ex2 = Exchange::start(&config(&fleet2, "", |_| String::new()));
    let v = ex2
        .client()
        .post("/v1/ping", Some(KEY), ca.as_bytes())
        .json();
    assert_eq!(v["status"], "no_bid");
    assert!(v.get("payout").is_none());
}

/// What a ping must carry and what its post may change: a ping without a required field
/// buyers bid on is refused; a post may not turn a real ping into a test or a test one real
/// (the ping stays postable); a ZIP pinged as five digits may be posted as its ZIP+4; a test
/// lead's answers say it is a test.
#[test]
fn a_ping_carries_what_buyers_bid_on_and_its_post_keeps_its_test_flag() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let mut c = ex.client();

    let no_state = PING.replace("\"state\": \"TX\", ", "");
    let r = c.post("/v1/ping", Some(KEY), no_state.as_bytes());
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"]["code"], "missing_field");
    assert_eq!(v["error"]["field"], "lead.state");
    assert_eq!(fleet.pings(0), 0, "a refused ping reaches no buyer");

    let ping = |c: &mut Client, body: &str| -> String {
        let v = c.post("/v1/ping", Some(KEY), body.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        v["ping_id"].as_str().unwrap().to_string()
    };
    let with_test = |ping_id: &str, test: bool, lead: &str| {
        let mut v: Value = serde_json::from_slice(&post_body(ping_id, lead)).unwrap();
        v["test"] = Value::Bool(test);
        serde_json::to_vec(&v).unwrap()
    };
    let zip4 = r#"{"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "7135550147",
        "state": "TX", "zip": "77002-1234", "lead_type": "auto", "age": 34, "insured": true}"#;

    // A real ping posted as a test: refused, nothing sent; posted as real it sells, ZIP+4 and all.
    let real = ping(&mut c, PING);
    let r = c.post("/v1/post", Some(KEY), &with_test(&real, true, zip4));
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "ping_mismatch");
    assert_eq!(r.json()["error"]["field"], "test");
    assert_eq!(fleet.posts(0), 0);
    let v = c
        .post("/v1/post", Some(KEY), &with_test(&real, false, zip4))
        .json();
    assert_eq!(
        (v["status"].as_str(), v["price"].as_f64()),
        (Some("sold"), Some(90.0)),
        "{v}"
    );
    assert!(v.get("test").is_none(), "{v}");

    // A test ping posted as real: refused; posted as a test (or with no flag) it sells as a test.
    let test_ping = PING.replace(
        "\"campaign\": \"auto\"",
        "\"campaign\": \"auto\", \"test\": true",
    );
    let t = {
        let v = c.post("/v1/ping", Some(KEY), test_ping.as_bytes()).json();
        assert_eq!(
            (v["status"].as_str(), v["test"].as_bool()),
            (Some("bid"), Some(true)),
            "{v}"
        );
        v["ping_id"].as_str().unwrap().to_string()
    };
    let other = r#"{"first_name": "Bo", "last_name": "Diaz", "email": "bo@example.com", "phone": "7135550148",
        "state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}"#;
    let r = c.post("/v1/post", Some(KEY), &with_test(&t, false, other));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "test");
    let v = c.post("/v1/post", Some(KEY), &post_body(&t, other)).json();
    assert_eq!(
        (v["status"].as_str(), v["test"].as_bool()),
        (Some("sold"), Some(true)),
        "{v}"
    );
    let st = ex.handle.as_ref().unwrap().stats();
    let spent: i64 = st.buyers().map(|(_, b)| b.spent_cents).sum();
    assert_eq!(spent, 9000, "only the real sale is billed");
}

/// The consent the post carries names the buyers the consumer agreed to hear from. The ping
/// carried no consent, so every buyer bid; the post may go only to a disclosed one, even when
/// another held the top bid.
#[test]
fn a_post_goes_only_to_buyers_its_consent_discloses() {
    let fleet = Fleet::start(vec![bidder("acme", 3000, true), bidder("blue", 2000, true)]).unwrap();
    let ex = Exchange::start(&config(
        &fleet,
        "hold_ms = 30000\ndisclosed_buyers_only = true",
        |_| String::new(),
    ));
    let mut c = ex.client();
    let post_disclosing = |ping_id: &str, disclosed: &[&str]| {
        let mut v: Value = serde_json::from_slice(&post_body(ping_id, "")).unwrap();
        v["consent"]["disclosed_buyers"] = serde_json::json!(disclosed);
        serde_json::to_vec(&v).unwrap()
    };

    let ping = |c: &mut Client| {
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        assert_eq!(v["payout"], 24.0, "{v}"); // 80 % of acme's 30.00
        v["ping_id"].as_str().unwrap().to_string()
    };
    let ping_id = ping(&mut c);
    let r = c.post("/v1/post", Some(KEY), &post_disclosing(&ping_id, &["blue"]));
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "blue", "{v}");
    assert_eq!(v["price"], 20.0);
    assert_eq!(
        fleet.posts(0),
        0,
        "acme was not disclosed and must not get the consumer"
    );
    assert_eq!(fleet.posts(1), 1);

    // A consent that discloses none of the bidders: nobody gets the lead.
    let ping_id = ping(&mut c);
    let v = c
        .post(
            "/v1/post",
            Some(KEY),
            &post_disclosing(&ping_id, &["someone-else"]),
        )
        .json();
    assert_eq!(v["status"], "unsold", "{v}");
    assert_eq!((fleet.posts(0), fleet.posts(1)), (0, 1));
}

/// Ping; post the full lead with a state contradicting the ping `refused` times (each 422
/// `ping_mismatch`, the ping staying postable); then post it as pinged, and it sells.
/// A ping whose consent is for another vertical than the campaign's is refused 422
/// `consent_mismatch`, as a direct lead is, rather than answered `no_bid` (no buyer takes a
/// consent for another vertical); a ping with the campaign's vertical, or none, is auctioned.
#[test]
fn a_ping_with_consent_for_another_vertical_is_told_why() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let mut c = ex.client();
    let with_consent = |vertical: &str| {
        PING.replace(
            "\"insured\": true}}",
            &format!("\"insured\": true}}, \"consent\": {{\"vertical\": \"{vertical}\"}}}}"),
        )
    };
    let r = c.post("/v1/ping", Some(KEY), with_consent("solar").as_bytes());
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "rejected", "{v}");
    assert_eq!(v["error"]["code"], "consent_mismatch", "{v}");
    assert_eq!(v["error"]["field"], "consent.vertical", "{v}");
    assert_eq!(fleet.pings(0), 0);
    let v = c
        .post(
            "/v1/ping",
            Some(KEY),
            with_consent("auto_insurance").as_bytes(),
        )
        .json();
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(fleet.pings(0), 1);
}

fn ping_refused_then_sold(c: &mut Client, refused: usize) {
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    let ping_id = v["ping_id"].as_str().unwrap().to_string();
    let ok_lead = r#"{"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "7135550147",
        "state": "OK", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}"#;
    for _ in 0..refused {
        let r = c.post("/v1/post", Some(KEY), &post_body(&ping_id, ok_lead));
        assert_eq!(r.json()["error"]["code"], "ping_mismatch");
    }
    let v = c
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
}

/// The operator's counters tell pings, leads and refused posts apart: a post refused while its
/// ping stays postable is an attempt, not another rejected lead.
#[test]
fn refused_posts_and_pings_are_not_counted_as_leads() {
    let fleet = Fleet::start(vec![bidder("acme", 3000, true)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let mut c = ex.client();
    ping_refused_then_sold(&mut c, 3);
    // A ping with a state that is none: refused, and not a lead either.
    let r = c.post(
        "/v1/ping",
        Some(KEY),
        PING.replace("\"TX\"", "\"XX\"").as_bytes(),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "lead.state");

    let handle = ex.handle.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let counters = loop {
        let st = handle.stats();
        let c = st.campaigns.get("auto").cloned().unwrap_or_default();
        if c.sold == 1 || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (counters.leads, counters.sold, counters.rejected),
        (1, 1, 0),
        "{counters:?}"
    );
    assert_eq!((counters.pings, counters.pings_bid), (1, 1), "{counters:?}");
    assert_eq!(counters.posts_refused, 3, "{counters:?}");
    assert_eq!(counters.pings_refused, 1, "{counters:?}");
}

/// After a restart the counters rebuilt from the journal read as they did live: refused posts
/// apart, one lead for one consumer.
#[test]
fn refused_posts_read_the_same_after_a_restart() {
    let fleet = Fleet::start(vec![bidder("acme", 3000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let counters = |ex: &Exchange| {
        let st = ex.handle.as_ref().unwrap().stats();
        st.campaigns.get("auto").cloned().unwrap_or_default()
    };
    {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        ping_refused_then_sold(&mut c, 2);
        // A direct lead refused for its content is a rejected lead, live and after.
        let r = c.lead(&LEAD.replace("\"TX\"", "\"XX\""));
        assert_eq!(r.status, 422);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counters(&ex).sold < 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // A ping refused for its content is a refused ping, live and after.
        let r = c.post(
            "/v1/ping",
            Some(KEY),
            PING.replace("\"TX\"", "\"XX\"").as_bytes(),
        );
        assert_eq!(r.status, 422);
        let live = counters(&ex);
        assert_eq!(
            (live.leads, live.sold, live.rejected, live.posts_refused),
            (2, 1, 1, 2),
            "{live:?}"
        );
        assert_eq!(
            (live.pings, live.pings_bid, live.pings_refused),
            (1, 1, 1),
            "{live:?}"
        );
    }
    let ex = Exchange::start(&toml);
    let after = counters(&ex);
    assert_eq!(
        (after.leads, after.sold, after.rejected, after.posts_refused),
        (2, 1, 1, 2),
        "{after:?}"
    );
    assert_eq!(
        (after.pings, after.pings_bid, after.pings_refused),
        (1, 1, 1),
        "{after:?}"
    );
}

/// A restart does not cost the seller its held bids: a ping answered before it is posted
/// after it, to the bids held then, without pinging anyone again; a ping posted before is
/// still refused 409, one whose hold ran out 410.
#[test]
fn held_pings_survive_a_restart() {
    let fleet = Fleet::start(vec![
        bidder("top", 9000, true),
        bidder("second", 5000, true),
    ])
    .unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let ping = |c: &mut Client| -> String {
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        v["ping_id"].as_str().unwrap().to_string()
    };
    let (held, posted, refused) = {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        let held = ping(&mut c);
        let posted = ping(&mut c);
        let v = c
            .post("/v1/post", Some(KEY), &post_body(&posted, ""))
            .json();
        assert_eq!(v["status"], "sold", "{v}");
        // Refused for its content: the ping stays postable, across the restart too.
        let refused = ping(&mut c);
        let wrong_state = r#"{"first_name": "Ana", "email": "ana@example.com", "phone": "7135550147",
            "state": "OK", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}"#;
        let r = c.post("/v1/post", Some(KEY), &post_body(&refused, wrong_state));
        assert_eq!(r.json()["error"]["code"], "ping_mismatch");
        (held, posted, refused)
    };
    assert_eq!((fleet.pings(0), fleet.posts(0)), (3, 1));

    let ex = Exchange::start(&toml);
    // Held again: the unposted ping and the one whose post was refused, not the posted one.
    let (_, replayed) = ex.handle.as_ref().unwrap().recovery();
    assert_eq!(replayed.pings_held, 2);
    let mut c = ex.client();
    let r = c.post("/v1/post", Some(KEY), &post_body(&held, ""));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["price"].as_f64()),
        (Some("sold"), Some(90.0)),
        "{v}"
    );
    assert_eq!(v["sales"][0]["buyer"], "top");
    // Posted at the held bid with its bid id; nobody pinged again.
    assert_eq!((fleet.pings(0), fleet.posts(0), fleet.pings(1)), (3, 2, 3));
    let post: Value = serde_json::from_slice(&fleet.post_bodies(0)[1]).unwrap();
    assert_eq!(
        (post["bid_id"].as_str(), post["price"].as_f64()),
        (Some("held-1"), Some(90.0))
    );
    // The pinged fields still bind the post.
    let wrong_zip = r#"{"first_name": "Ana", "email": "ana@example.com", "phone": "7135550147",
        "state": "TX", "zip": "73301", "lead_type": "auto", "age": 34, "insured": true}"#;
    let r = c.post("/v1/post", Some(KEY), &post_body(&refused, wrong_zip));
    assert_eq!(r.json()["error"]["code"], "ping_mismatch");
    let v = c
        .post("/v1/post", Some(KEY), &post_body(&refused, ""))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
    let r = c.post("/v1/post", Some(KEY), &post_body(&posted, ""));
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (409, Some("already_posted"))
    );
    let r = c.post("/v1/post", Some(KEY), &post_body(&held, ""));
    assert_eq!(r.status, 409);
}

#[test]
fn a_ping_whose_hold_ran_out_before_a_restart_is_expired_after_it() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 300", |_| String::new());
    let (ping_id, _) = ping_on_an_exchange_that_then_stops(&toml);
    std::thread::sleep(Duration::from_millis(400));
    let ex = Exchange::start(&toml);
    let r = ex
        .client()
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""));
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (410, Some("ping_expired"))
    );
    assert_eq!(fleet.posts(0), 0);
}

/// A restart between ping and post does not change what the post pays: the offer's payout
/// rule is journaled with it, so a config changed across the restart binds new pings only.
#[test]
fn a_restart_between_ping_and_post_keeps_the_offer() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let (ping_id, v) = ping_on_an_exchange_that_then_stops(&toml);
    assert_eq!(v["payout"], 72.0, "{v}");
    let ex = Exchange::start(&toml.replace("payout_share = 0.80", "payout_share = 0.50"));
    let mut c = ex.client();
    let v = c
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""))
        .json();
    assert_eq!(
        (
            v["status"].as_str(),
            v["price"].as_f64(),
            v["payout"].as_f64()
        ),
        (Some("sold"), Some(90.0), Some(72.0)),
        "{v}"
    );
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["payout"], 45.0, "{v}");
}

/// Two buyers made one across a restart (one removed, its id in the other's `previous_ids`)
/// held a bid each for a ping: the one buyer is offered the lead once. When it rejects, the
/// lead goes on to the next buyer, not back to it at its other bid.
#[test]
fn a_ping_held_by_two_buyers_made_one_offers_the_lead_to_that_buyer_once() {
    let fleet = Fleet::start(vec![
        bidder("kept", 9000, false),
        bidder("merged", 8000, true),
        bidder("other", 5000, true),
    ])
    .unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let (ping_id, v) = ping_on_an_exchange_that_then_stops(&toml);
    assert_eq!(v["payout"], 72.0, "{v}");
    let merged_block = toml
        .split("\n[[buyers]]\n")
        .find(|b| b.starts_with("id = \"merged\""))
        .expect("the merged buyer's table");
    let one = toml
        .replace(&format!("\n[[buyers]]\n{merged_block}"), "")
        .replace(
            "id = \"kept\"",
            "id = \"kept\"\nprevious_ids = [\"merged\"]",
        );
    let ex = Exchange::start(&one);
    let (_, replayed) = ex.handle.as_ref().unwrap().recovery();
    assert_eq!(replayed.pings_held, 1);
    let v = ex
        .client()
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""))
        .json();
    assert_eq!(
        (v["status"].as_str(), v["sales"][0]["buyer"].as_str()),
        (Some("sold"), Some("other")),
        "{v}"
    );
    assert_eq!(v["price"], 50.0, "{v}");
    assert_eq!(
        (fleet.posts(0), fleet.posts(1), fleet.posts(2)),
        (1, 0, 1),
        "the kept buyer is offered the lead once"
    );
}

/// A ping whose held buyers are all gone from the config it is restarted under is still the
/// seller's ping, as after a reload that removes them: its post is answered unsold (nobody
/// eligible) and a second post 409; one posted before the restart is 409 after it.
#[test]
fn a_ping_whose_held_buyers_left_the_config_across_a_restart_is_still_known() {
    let fleet = Fleet::start(vec![bidder("gone", 9000, true), bidder("stays", 0, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let (held, _) = ping_on_an_exchange_that_then_stops(&toml);
    let posted = {
        let (posted, _) = ping_on_an_exchange_that_then_stops(&toml);
        let ex = Exchange::start(&toml);
        let v = ex
            .client()
            .post("/v1/post", Some(KEY), &post_body(&posted, ""))
            .json();
        assert_eq!(v["status"], "sold", "{v}");
        posted
    };
    let gone_block = toml
        .split("\n[[buyers]]\n")
        .find(|b| b.starts_with("id = \"gone\""))
        .expect("the gone buyer's table");
    let without = toml.replace(&format!("\n[[buyers]]\n{gone_block}"), "");
    let ex = Exchange::start(&without);
    let mut c = ex.client();
    let r = c.post("/v1/post", Some(KEY), &post_body(&held, ""));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("unsold"), Some("no_eligible_buyers")),
        "{v}"
    );
    for ping_id in [&held, &posted] {
        let r = c.post("/v1/post", Some(KEY), &post_body(ping_id, ""));
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (409, Some("already_posted")),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(fleet.posts(0), 1, "only the post made before the restart");
}

/// A ping is held for the time it was offered with: a restart under a config whose `hold_ms`
/// is shorter than the ping's age so far still holds it, and its post sells.
#[test]
fn a_restart_under_a_shorter_hold_keeps_a_ping_held_for_longer() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let (ping_id, v) = ping_on_an_exchange_that_then_stops(&toml);
    assert_eq!(v["expires_in_ms"], 30000, "{v}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Every campaign's hold shorter than the ping's age.
    let shorter = toml.replace("hold_ms = 30000", "hold_ms = 100").replace(
        "vertical = \"solar\"",
        "vertical = \"solar\"\nhold_ms = 100",
    );
    assert!(shorter.matches("hold_ms = 100").count() == 2);
    let ex = Exchange::start(&shorter);
    let v = ex
        .client()
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["payout"], 72.0, "{v}");
}

/// The payout a ping offered is what its post pays, even when a reload changed the seller's
/// payout rule in between; a new ping gets the new rule.
#[test]
fn a_reload_between_ping_and_post_keeps_the_offer() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let path = temp_dir("offer-reload").join("gavel.toml");
    std::fs::write(&path, &toml).unwrap();
    let mut snap = gavel::config::load(&path).unwrap();
    snap.path = Some(path.clone());
    let handle = gavel::net::start(std::sync::Arc::new(snap)).unwrap();
    let mut c = Client::connect(handle.local_addr());
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["payout"], 72.0, "{v}");
    let ping_id = v["ping_id"].as_str().unwrap().to_string();

    std::fs::write(
        &path,
        toml.replace("payout_share = 0.80", "payout_share = 0.50"),
    )
    .unwrap();
    gavel::net::reload(handle.shared()).unwrap();

    let v = c
        .post("/v1/post", Some(KEY), &post_body(&ping_id, ""))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(
        (v["price"].as_f64(), v["payout"].as_f64()),
        (Some(90.0), Some(72.0)),
        "{v}"
    );
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["payout"], 45.0, "{v}");
}

/// A `/v1/post` completes a ping that `max_leads_per_second` already counted: a seller at one
/// lead a second can ping and post each second (the post used to be counted again and
/// refused 429).
#[test]
fn a_post_is_not_counted_again_against_the_sellers_rate() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new()).replace(
        "payout_share = 0.80",
        "payout_share = 0.80\nmax_leads_per_second = 1",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..2 {
        // A second after the last ping, so that this one is within the limit.
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1050));
        }
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        let ping_id = v["ping_id"].as_str().unwrap().to_string();
        let lead = format!(
            r#"{{"first_name": "Ana", "email": "ana{i}@example.com", "phone": "713555014{i}",
            "state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#
        );
        let r = c.post("/v1/post", Some(KEY), &post_body(&ping_id, &lead));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], "sold");
        // A second ping within the second is over the rate.
        assert_eq!(c.post("/v1/ping", Some(KEY), PING.as_bytes()).status, 429);
    }
}

/// One `/v1/ping` answered with a bid by an exchange on `toml`, stopped afterwards: the ping
/// id and the answer.
fn ping_on_an_exchange_that_then_stops(toml: &str) -> (String, Value) {
    let ex = Exchange::start(toml);
    let v = ex
        .client()
        .post("/v1/ping", Some(KEY), PING.as_bytes())
        .json();
    assert_eq!(v["status"], "bid", "{v}");
    (v["ping_id"].as_str().unwrap().to_string(), v)
}

/// A post's answer counts the bids its ping received, as a direct lead's answer counts its
/// auction's: those under the reserve too, before and after a restart, and its lookup agrees.
#[test]
fn a_posts_answer_counts_the_bids_its_ping_received() {
    let fleet = Fleet::start(vec![
        bidder("top", 9000, true),
        bidder("second", 5000, true),
        bidder("under-reserve", 300, true),
    ])
    .unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let ping = |c: &mut Client| -> String {
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        v["ping_id"].as_str().unwrap().to_string()
    };
    let later = {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        let direct = c.lead(LEAD).json();
        assert_eq!(
            (direct["status"].as_str(), direct["bids"].as_u64()),
            (Some("sold"), Some(3))
        );
        let now = ping(&mut c);
        let later = ping(&mut c);
        let v = c.post("/v1/post", Some(KEY), &post_body(&now, "")).json();
        assert_eq!(
            (v["status"].as_str(), v["bids"].as_u64()),
            (Some("sold"), Some(3)),
            "{v}"
        );
        c.send_raw(&Client::request(
            "GET",
            &format!("/v1/leads/{now}"),
            Some(KEY),
            b"",
        ));
        let looked = c.read_response().unwrap().json();
        assert_eq!(looked["bids"], 3, "{looked}");
        later
    };
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let v = c.post("/v1/post", Some(KEY), &post_body(&later, "")).json();
    assert_eq!(
        (v["status"].as_str(), v["bids"].as_u64()),
        (Some("sold"), Some(3)),
        "{v}"
    );
}

/// A ping never posted is not a lead cut off mid-auction: a restart does not report it, and
/// the consumer it named (a seller may ping the phone along) is no duplicate afterwards, as it
/// was none before.
#[test]
fn an_unposted_ping_is_not_reported_cut_off_by_a_restart() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 1\ndedupe_days = 30", |_| String::new());
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto",
        "age": 34, "insured": true, "phone": "7135550147", "email": "ana@example.com"}}"#;
    {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        let v = c.post("/v1/ping", Some(KEY), ping.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
    }
    let ex = Exchange::start(&toml);
    assert_eq!(ex.handle.as_ref().unwrap().recovery().1.cut_off_unposted, 0);
    let r = ex.client().lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// The sources a seller's posts are journaled under: each post's `lead_received`.
fn post_sources(dir: &str) -> Vec<Option<String>> {
    use gavel::journal::{LeadFlow, Reader, Record};
    Reader::open_since(std::path::Path::new(dir), 0)
        .unwrap()
        .filter_map(|e| match e.unwrap().record {
            Record::LeadReceived {
                flow: Some(LeadFlow::Post),
                source,
                ..
            } => Some(source),
            _ => None,
        })
        .collect()
}

/// A post is journaled under its ping's `source`, so the journal attributes the sale without
/// a join back to the ping; across a restart too.
#[test]
fn a_post_carries_its_pings_source_into_the_journal() {
    let fleet = Fleet::start(vec![bidder("top", 9000, true)]).unwrap();
    let toml = config(&fleet, "hold_ms = 30000", |_| String::new());
    let dir = journal_dir(&toml);
    let sourced = PING.replace("{\"campaign\"", "{\"source\": \"fb-17\", \"campaign\"");
    let ping = |c: &mut Client| -> String {
        let v = c.post("/v1/ping", Some(KEY), sourced.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        v["ping_id"].as_str().unwrap().to_string()
    };
    let later = {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        let now = ping(&mut c);
        let v = c.post("/v1/post", Some(KEY), &post_body(&now, "")).json();
        assert_eq!(v["status"], "sold", "{v}");
        ping(&mut c)
    };
    let ex = Exchange::start(&toml);
    let v = ex
        .client()
        .post("/v1/post", Some(KEY), &post_body(&later, ""))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
    drop(ex);
    assert_eq!(
        post_sources(&dir),
        vec![Some("fb-17".to_string()), Some("fb-17".to_string())]
    );
}

/// Two posts of one ping sent at once, one refused for its content: the refused one gives the
/// ping back, so the other is never told `already_posted` for a ping nobody bought. Whichever
/// a worker checks second hears either `already_posted` (the first was taken) or, while the
/// first is still being checked, `in_progress`, and a retry of it then sells.
#[test]
fn a_post_racing_a_refused_post_of_its_ping_is_never_told_it_was_posted() {
    let fleet = Fleet::start(vec![bidder("acme", 3000, true)]).unwrap();
    let toml =
        config(&fleet, "hold_ms = 30000", |_| String::new()).replace("workers = 1", "workers = 2");
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let bad_lead = r#"{"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "123",
        "state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}"#;
    const TRIALS: usize = 200;
    let mut raced = 0;
    for trial in 0..TRIALS {
        // The second post follows the first by 0 to 76 µs: some land while the first is
        // being checked, on the other worker.
        let gap = Duration::from_micros(4 * (trial as u64 % 20));
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        let ping_id = v["ping_id"].as_str().unwrap().to_string();
        let mut refused = Client::connect(ex.addr);
        let mut good = Client::connect(ex.addr);
        let bad = Client::request(
            "POST",
            "/v1/post",
            Some(KEY),
            &post_body(&ping_id, bad_lead),
        );
        let ok = Client::request("POST", "/v1/post", Some(KEY), &post_body(&ping_id, ""));
        refused.send_raw(&bad);
        let sent = std::time::Instant::now();
        while sent.elapsed() < gap {
            std::hint::spin_loop();
        }
        good.send_raw(&ok);
        let r = refused
            .read_response()
            .expect("an answer to the refused post");
        let code = r.json()["error"]["code"].as_str().unwrap_or("").to_string();
        assert!(
            ["invalid_field", "already_posted", "in_progress"].contains(&code.as_str()),
            "trial {trial}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let mut answer = good.read_response().expect("an answer to the good post");
        let mut retries = 0;
        while answer.status == 409 && answer.json()["error"]["code"] == "in_progress" {
            raced += 1;
            retries += 1;
            assert!(retries < 100, "trial {trial}: in_progress for good");
            assert_eq!(answer.retry_after.as_deref(), Some("1"));
            std::thread::sleep(Duration::from_millis(5));
            answer = good.post("/v1/post", Some(KEY), &post_body(&ping_id, ""));
        }
        let v = answer.json();
        assert_eq!(
            (answer.status, v["status"].as_str()),
            (200, Some("sold")),
            "trial {trial}: the good post of a ping no one bought: {v}"
        );
    }
    assert_eq!(fleet.posts(0), TRIALS as u64, "one post per ping");
    eprintln!("{raced} posts met another still being checked");
}
