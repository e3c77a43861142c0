//! `GET /v1/leads/{id}`: a seller learns what became of a lead it sent, from the journal, even
//! when its connection dropped before the answer came.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::time::{Duration, Instant};

fn bidder(name: &str, cents: i64, delay_ms: u64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None).after_ms(delay_ms),
        Kind::Post => Reply::accepted(),
    })
}

fn get(c: &mut Client, id: &str, key: &str) -> Response {
    c.send_raw(&Client::request(
        "GET",
        &format!("/v1/leads/{id}"),
        Some(key),
        b"",
    ));
    c.read_response().expect("an answer")
}

/// The answer a lead got and the lookup's are the same, field for field; in either case of
/// its id; for its seller only.
#[test]
fn a_lead_is_looked_up_as_it_was_answered() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0), bidder("next", 4000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let answer = c.lead(LEAD).json();
    assert_eq!(answer["status"], "sold", "{answer}");
    let id = answer["lead_id"].as_str().unwrap().to_string();

    let r = get(&mut c, &id, KEY);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), answer);
    let r = get(&mut c, &id.to_lowercase(), KEY);
    assert_eq!(r.json(), answer);

    // Another seller's lead, an unknown id, not an id: 404, the connection still serves.
    for (id, key) in [
        (id.as_str(), OTHER_KEY),
        ("01JDQ6X8W2ABCDEFGHJKMNPQRS", KEY),
        ("not-a-lead", KEY),
    ] {
        let r = get(&mut c, id, key);
        assert_eq!(r.status, 404, "{id}");
        assert_eq!(r.json()["error"]["code"], "not_found");
    }
    let r = get(&mut c, &id, "sk-nobody");
    assert_eq!(r.status, 401);
    // `/v1/leads/` with no id is no endpoint, whatever the method: a post with a stray slash
    // is not told to use GET.
    for method in ["GET", "POST"] {
        c.send_raw(&Client::request(
            method,
            "/v1/leads/",
            Some(KEY),
            LEAD.as_bytes(),
        ));
        let r = c.read_response().expect("an answer");
        assert_eq!(r.status, 404, "{method}");
        assert_eq!(r.json()["error"]["code"], "not_found", "{method}");
    }

    // Unsold, with its reason; refused, with its code and field.
    let low = Fleet::start(vec![bidder("low", 100, 0)]).unwrap();
    let ex2 = Exchange::start(&config(&low, "", |_| String::new()));
    let mut c2 = ex2.client();
    let answer = c2.lead(LEAD).json();
    assert_eq!(answer["reason"], "below_reserve", "{answer}");
    let id = answer["lead_id"].as_str().unwrap();
    assert_eq!(get(&mut c2, id, KEY).json(), answer);
    let bad_zip = LEAD.replace("\"77002\"", "\"7700\"");
    let r = c2.lead(&bad_zip);
    assert_eq!(r.status, 422);
    let refused = r.json();
    let v = get(&mut c2, refused["lead_id"].as_str().unwrap(), KEY).json();
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["error"]["code"], "invalid_field");
    assert_eq!(v["error"]["field"], "lead.zip");
    assert_eq!(
        v, refused,
        "the refusal as it was answered, its message too"
    );
}

/// A shared lead sold through its fallback lists its sales in the plan's order, live and
/// looked up alike, whatever order the buyers answered their posts in.
#[test]
fn a_shared_fallback_sale_is_looked_up_in_the_order_it_was_answered() {
    let poster = |name: &str, delay_ms: u64| {
        BuyerSpec::new(name).with_responder(move |kind, _| match kind {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted().after_ms(delay_ms),
        })
    };
    // The first in the plan answers last.
    let fleet = Fleet::start(vec![
        poster("stingy", 0),
        poster("f1", 300),
        poster("f2", 150),
        poster("f3", 0),
    ])
    .unwrap();
    let mut toml = config(
        &Fleet::start(vec![]).unwrap(),
        "fallback = \"waterfall\"\nsale = \"shared\"\nmax_sales = 3",
        |_| String::new(),
    );
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"stingy\"\ncampaigns = [\"auto\"]\nping_url = \"{}\"\npost_url = \"{}\"\n",
        fleet.ping_url(0),
        fleet.post_url(0)
    ));
    for (i, price) in [(1, "7.77"), (2, "9.99"), (3, "5.55")] {
        toml.push_str(&format!(
            "\n[[buyers]]\nid = \"f{i}\"\ncampaigns = [\"auto\"]\npost_url = \"{}\"\nprice = {price}\npriority = {i}\n",
            fleet.post_url(i)
        ));
    }
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let answer = c.lead(LEAD).json();
    assert_eq!(answer["status"], "sold", "{answer}");
    let order: Vec<&str> = answer["sales"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["buyer"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(order, vec!["f1", "f2", "f3"], "{answer}");
    let id = answer["lead_id"].as_str().unwrap().to_string();
    let r = get(&mut c, &id, KEY);
    assert_eq!(r.json(), answer);
}

/// A seller that hangs up while its lead is in the auction asks again on a new connection: the
/// lead is pending until it is answered, then sold, as the journal has it.
#[test]
fn a_seller_that_hung_up_learns_its_lead_sold() {
    let fleet = Fleet::start(vec![bidder("slow", 7000, 1000)]).unwrap();
    let toml = config(&fleet, "", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 3000");
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    c.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.as_bytes(),
    ));
    // The lead is in its auction once the buyer has its ping: hang up then.
    let t = Instant::now();
    while fleet.pings(0) == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    // The buyer's ping names the lead by its id.
    let ping: Value = serde_json::from_slice(&fleet.ping_bodies(0)[0]).unwrap();
    let id = ping["ping_id"].as_str().unwrap().to_string();
    let mut c = ex.client();
    let v = get(&mut c, &id, KEY).json();
    assert_eq!(v["status"], "pending", "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    let v = get(&mut c, &id, KEY).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["price"], 70.0);
    assert_eq!(v["payout"], 56.0);
    assert_eq!(v["sales"][0]["buyer"], "slow");
    assert_eq!(fleet.posts(0), 1);
}

/// A ping is looked up as its answer, the hold counting down; once posted, as the post's.
#[test]
fn a_ping_is_looked_up_as_its_offer_then_as_its_sale() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "hold_ms = 30000", |_| String::new()));
    let mut c = ex.client();
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let offer = c.post("/v1/ping", Some(KEY), ping.as_bytes()).json();
    let id = offer["ping_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(50));
    let v = get(&mut c, &id, KEY).json();
    assert_eq!(
        (v["ping_id"].as_str(), v["status"].as_str()),
        (Some(&*id), Some("bid")),
        "{v}"
    );
    assert_eq!(v["payout"], 72.0);
    let left = v["expires_in_ms"].as_u64().unwrap();
    assert!(left < 30_000 && left > 20_000, "{left}");

    let full: Value = serde_json::from_str(LEAD).unwrap();
    // A post refused for its content leaves the ping postable: the lookup still tells the offer.
    let mut moved = full["lead"].clone();
    moved["state"] = "CA".into();
    let wrong = serde_json::json!({"ping_id": id, "lead": moved, "consent": full["consent"]});
    let r = c.post("/v1/post", Some(KEY), &serde_json::to_vec(&wrong).unwrap());
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "ping_mismatch");
    let v = get(&mut c, &id, KEY).json();
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(v["payout"], 72.0);
    assert!(v["expires_in_ms"].as_u64().unwrap() <= left, "{v}");

    let post = serde_json::json!({"ping_id": id, "lead": full["lead"], "consent": full["consent"]});
    let sold = c
        .post("/v1/post", Some(KEY), &serde_json::to_vec(&post).unwrap())
        .json();
    assert_eq!(sold["status"], "sold", "{sold}");
    assert_eq!(get(&mut c, &id, KEY).json(), sold);
}

/// Lookups are answered in their place among pipelined requests.
#[test]
fn a_lookup_keeps_its_place_among_pipelined_requests() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let answer = c.lead(LEAD).json();
    let id = answer["lead_id"].as_str().unwrap().to_string();
    let mut burst = Client::request("GET", &format!("/v1/leads/{id}"), Some(KEY), b"");
    burst.extend(Client::request("GET", "/healthz", None, b""));
    burst.extend(Client::request(
        "GET",
        &format!("/v1/leads/{id}"),
        Some(KEY),
        b"",
    ));
    c.send_raw(&burst);
    let first = c.read_response().unwrap();
    let second = c.read_response().unwrap();
    let third = c.read_response().unwrap();
    assert_eq!(first.json(), answer);
    assert_eq!(second.json()["status"], "ok");
    assert_eq!(third.json(), answer);
}

/// A test lead refused for its content says it was a test, as its other answers do, and so
/// does its lookup; a real lead's refusal does not.
#[test]
fn a_refused_test_lead_says_it_was_a_test() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let no_phone = LEAD.replace("\"phone\": \"7135550147\",", "");
    assert_ne!(no_phone, LEAD);
    let test = no_phone.replacen('{', "{\"test\": true, ", 1);
    let r = c.lead(&test);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "rejected", "{v}");
    assert_eq!(v["test"], true, "{v}");
    assert_eq!(v["error"]["code"], "missing_field", "{v}");
    let id = v["lead_id"].as_str().unwrap().to_string();
    let looked: Value = get(&mut c, &id, KEY).json();
    assert_eq!(looked["test"], true, "{looked}");
    assert_eq!(looked["status"], "rejected", "{looked}");

    let v = c.lead(&no_phone).json();
    assert_eq!(v["status"], "rejected", "{v}");
    assert!(v.get("test").is_none(), "{v}");
}
