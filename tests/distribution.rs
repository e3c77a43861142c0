//! Fixed-price distribution (waterfall, round robin, weighted) and the fallback for leads
//! nobody bids on, against real buyer endpoints on loopback.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};

fn poster(name: &str, accept: bool) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |_, _| {
        if accept {
            Reply::accepted()
        } else {
            Reply::rejected("full")
        }
    })
}

/// A campaign of `method` whose buyers are the fleet's, each at a fixed price (post only).
fn fixed_config(fleet: &Fleet, method: &str, buyers: &[(f64, u32, u32)]) -> String {
    let base = config(
        &Fleet::start(vec![]).unwrap(),
        &format!("method = \"{method}\""),
        |_| String::new(),
    );
    let mut s = base;
    for (i, (price, priority, weight)) in buyers.iter().enumerate() {
        s.push_str(&format!(
            "\n[[buyers]]\nid = \"{name}\"\ncampaigns = [\"auto\"]\npost_url = \"{post}\"\nprice = {price}\npriority = {priority}\nweight = {weight}\n",
            name = fleet.name(i),
            post = fleet.post_url(i),
        ));
    }
    s
}

#[test]
fn waterfall_posts_by_priority_at_each_buyers_price() {
    let fleet = Fleet::start(vec![
        poster("second", true),
        poster("first", false),
        poster("third", true),
    ])
    .unwrap();
    let ex = Exchange::start(&fixed_config(
        &fleet,
        "waterfall",
        &[(15.0, 2, 1), (25.0, 1, 1), (10.0, 3, 1)],
    ));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{}", v);
    assert_eq!(v["sales"][0]["buyer"], "second");
    assert_eq!(v["price"], 15.0);
    assert_eq!(v["bids"], 0);
    // Priority 1 was offered first and said no; priority 3 was never asked. Nobody was pinged.
    assert_eq!((fleet.posts(1), fleet.posts(0), fleet.posts(2)), (1, 1, 0));
    assert_eq!(fleet.pings(0) + fleet.pings(1) + fleet.pings(2), 0);
}

#[test]
fn round_robin_takes_turns() {
    let fleet = Fleet::start(vec![poster("a", true), poster("b", true)]).unwrap();
    let ex = Exchange::start(&fixed_config(
        &fleet,
        "round_robin",
        &[(20.0, 1, 1), (20.0, 1, 1)],
    ));
    let mut c = ex.client();
    for _ in 0..6 {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    assert_eq!((fleet.posts(0), fleet.posts(1)), (3, 3));
}

/// A round-robin campaign of `buyers` (name, whether it accepts posts) at $20 each, sent
/// `leads` leads of distinct consumers, each sold: the fleet, for what each buyer was posted.
fn round_robin_run(buyers: &[(&str, bool)], leads: usize) -> Fleet {
    let fleet = Fleet::start(buyers.iter().map(|&(n, a)| poster(n, a)).collect()).unwrap();
    let prices = vec![(20.0, 1, 1); buyers.len()];
    let ex = Exchange::start(&fixed_config(&fleet, "round_robin", &prices));
    let mut c = ex.client();
    for i in 0..leads {
        let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
        assert_eq!(c.lead(&lead).json()["status"], "sold");
    }
    fleet
}

/// The lead field `field` of every post buyer `i` was sent, in order.
fn posted_field(fleet: &Fleet, i: usize, field: &str) -> Vec<String> {
    fleet
        .post_bodies(i)
        .iter()
        .map(|p| {
            body_json(p)["lead"][field]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// A buyer that rejects every post still has its turns, and its rejected leads cascade to the
/// others evenly: the buyer after it in the rotation does not get them all.
#[test]
fn a_rejecting_buyers_leads_are_shared_by_the_others() {
    let fleet = round_robin_run(&[("a", true), ("b", false), ("c", true)], 24);
    // a and c accept every post they get.
    let (a, c) = (fleet.posts(0), fleet.posts(2));
    assert_eq!(a + c, 24);
    // Evenly, but for where the rotation stands when the run ends.
    assert!(a.abs_diff(c) <= 2, "a and c share unevenly: {a} and {c}");
    // b is offered its turn, not every lead.
    assert!(
        fleet.posts(1) <= 12,
        "b was posted {} leads",
        fleet.posts(1)
    );
}

/// The leads a buyer rejects cascade to each of the others in turn, not every time to the one
/// after it in the rotation, which would then get nothing but the rejected leads and never a
/// lead first-hand.
#[test]
fn a_rejecting_buyers_leads_cascade_to_each_of_the_others_in_turn() {
    let fleet = round_robin_run(&[("a", true), ("b", true), ("c", true), ("x", false)], 48);
    let emails = |i: usize| -> std::collections::HashSet<String> {
        posted_field(&fleet, i, "email").into_iter().collect()
    };
    let rejected = emails(3);
    let took: Vec<usize> = (0..3)
        .map(|i| emails(i).intersection(&rejected).count())
        .collect();
    let firsthand: Vec<usize> = (0..3).map(|i| emails(i).len() - took[i]).collect();
    assert_eq!(took.iter().sum::<usize>(), rejected.len());
    assert!(
        rejected.len() >= 9,
        "x was offered {} leads",
        rejected.len()
    );
    for i in 0..3 {
        assert!(
            took[i] * 4 >= rejected.len() && firsthand[i] > 0,
            "x's {} rejected leads went {took:?}; first-hand {firsthand:?}",
            rejected.len()
        );
    }
}

/// A buyer slow to reject: the leads of its turns, sent together, are rejected together, and
/// their cascades go to each of the others in turn, as they are made; not all to the buyer
/// that was the longest without a cascade when the leads arrived.
#[test]
fn a_slow_rejecters_leads_cascade_in_turn_when_they_are_rejected() {
    let slow = BuyerSpec::new("x").with_responder(|_, _| Reply::rejected("full").after_ms(300));
    let fleet = Fleet::start(vec![
        poster("a", true),
        poster("b", true),
        poster("c", true),
        slow,
    ])
    .unwrap();
    let toml = fixed_config(&fleet, "round_robin", &[(20.0, 1, 1); 4])
        .replace("post_timeout_ms = 500", "post_timeout_ms = 2000");
    let ex = Exchange::start(&toml);
    for c in &mut send_leads_at_once(ex.addr, 12) {
        let v = c.read_response().expect("an answer").json();
        assert_eq!(v["status"], "sold", "{v}");
    }
    let emails = |i: usize| -> std::collections::HashSet<String> {
        posted_field(&fleet, i, "email").into_iter().collect()
    };
    let rejected = emails(3);
    assert_eq!(rejected.len(), 3, "x's turns of 12 leads among 4 buyers");
    let took: Vec<usize> = (0..3)
        .map(|i| emails(i).intersection(&rejected).count())
        .collect();
    assert_eq!(took, [1, 1, 1], "x's rejected leads went {took:?}");
}

/// Buyers that accept share evenly however many of the others reject every post: a rejected
/// lead's cascade is no turn, so it takes no first offer from the buyer it reached.
#[test]
fn accepting_buyers_share_evenly_however_many_reject() {
    let fleet = round_robin_run(
        &[
            ("a", true),
            ("b", true),
            ("x", false),
            ("y", false),
            ("z", false),
        ],
        40,
    );
    let (a, b) = (fleet.posts(0), fleet.posts(1));
    assert_eq!(a + b, 40);
    assert!(a.abs_diff(b) <= 2, "a sold {a}, b {b}");
}

/// A buyer priced under the campaign's reserve is never posted to, and takes no turn: the
/// others share the leads evenly rather than one of them getting its turns too.
#[test]
fn a_buyer_under_the_reserve_takes_no_turn_and_no_share() {
    for method in ["round_robin", "weighted"] {
        let fleet = Fleet::start(vec![
            poster("a", true),
            poster("cheap", true),
            poster("b", true),
        ])
        .unwrap();
        // The common config's reserve is $5.00; "cheap" offers $3.00 and weighs the most.
        let ex = Exchange::start(&fixed_config(
            &fleet,
            method,
            &[(20.0, 1, 1), (3.0, 1, 8), (20.0, 1, 1)],
        ));
        let mut c = ex.client();
        let n = if method == "round_robin" { 12 } else { 200 };
        for _ in 0..n {
            assert_eq!(c.lead(LEAD).json()["status"], "sold");
        }
        let (a, cheap, b) = (fleet.posts(0), fleet.posts(1), fleet.posts(2));
        assert_eq!(cheap, 0, "{method}: posted under the reserve");
        assert_eq!(a + b, n);
        if method == "round_robin" {
            assert_eq!((a, b), (6, 6), "{method}");
        } else {
            // Even weights: 100 expected, far inside 65..135.
            assert!((65..=135).contains(&a), "{method}: a got {a} of {n}");
        }
    }
}

#[test]
fn weighted_distribution_follows_the_weights() {
    let fleet = Fleet::start(vec![poster("heavy", true), poster("light", true)]).unwrap();
    let ex = Exchange::start(&fixed_config(
        &fleet,
        "weighted",
        &[(20.0, 1, 3), (20.0, 1, 1)],
    ));
    let mut c = ex.client();
    for _ in 0..400 {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    let heavy = fleet.posts(0);
    assert_eq!(heavy + fleet.posts(1), 400);
    // Expected 300; a 3:1 draw over 400 leads stays far inside 240..360.
    assert!(
        (240..=360).contains(&heavy),
        "heavy buyer got {} of 400",
        heavy
    );
}

/// A ping-post campaign with a waterfall fallback: the fleet's first endpoint is the bidder
/// `bidder`, its second the fixed-price buyer `fallback` at $18.00.
fn fallback_config(fleet: &Fleet, bidder: &str) -> String {
    let mut toml = config(
        &Fleet::start(vec![]).unwrap(),
        "fallback = \"waterfall\"",
        |_| String::new(),
    );
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"{bidder}\"\ncampaigns = [\"auto\"]\nping_url = \"{}\"\npost_url = \"{}\"\n",
        fleet.ping_url(0),
        fleet.post_url(0)
    ));
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"fallback\"\ncampaigns = [\"auto\"]\npost_url = \"{}\"\nprice = 18.00\npriority = 1\n",
        fleet.post_url(1)
    ));
    toml
}

#[test]
fn an_unsold_lead_falls_back_to_the_fixed_price_buyers() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("stingy").with_responder(|k, _| match k {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted(),
        }),
        poster("fallback", true),
    ])
    .unwrap();
    let ex = Exchange::start(&fallback_config(&fleet, "stingy"));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{}", v);
    assert_eq!(v["sales"][0]["buyer"], "fallback");
    assert_eq!(v["price"], 18.0);
    assert_eq!(v["payout"], 14.4);
    assert_eq!(v["bids"], 0);
    assert_eq!((fleet.pings(0), fleet.posts(0), fleet.posts(1)), (1, 0, 1));
}

/// A fixed-price lead no buyer may take (every filter says no) is answered unsold at once, not
/// left waiting.
#[test]
fn a_fixed_price_lead_nobody_may_take_is_answered_unsold() {
    let fleet = Fleet::start(vec![poster("ca-only", true)]).unwrap();
    let toml = fixed_config(&fleet, "waterfall", &[(15.0, 1, 1)])
        + "\n[buyers.filters]\nstates = [\"CA\"]\n";
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let started = std::time::Instant::now();
    let v = c.lead(LEAD).json();
    assert_eq!(v["status"], "unsold", "{v}");
    assert_eq!(v["price"], 0.0, "{v}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(fleet.posts(0), 0);
}

/// A lead whose auction ends with its posts rejected goes to the fallback; the operator's
/// counters still show the first auction's bid and rejected post, and its overhead by stage.
#[test]
fn a_fallback_keeps_the_first_auctions_counts() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("picky").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(3000, None),
            Kind::Post => Reply::rejected("not today"),
        }),
        poster("fallback", true),
    ])
    .unwrap();
    let ex = Exchange::start(&fallback_config(&fleet, "picky"));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "fallback", "{v}");
    let handle = ex.handle.as_ref().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = handle.stats();
        let wins: u64 = st.buyers().map(|(_, b)| b.wins).sum();
        let answered = st.overhead_us.len() == 1;
        if (wins == 1 && answered) || std::time::Instant::now() > deadline {
            let picky = st
                .buyers()
                .find(|(id, _)| *id == "picky")
                .map(|(_, b)| b.clone())
                .expect("picky's counters");
            assert_eq!(
                (
                    picky.pings,
                    picky.bids,
                    picky.posts,
                    picky.post_rejects,
                    picky.wins
                ),
                (1, 1, 1, 1, 0),
                "pings, bids, posts, post rejects, wins"
            );
            assert_eq!(picky.response_us.len(), 1);
            // The lead's overhead is split into its stages as any other lead's: intake in the
            // first auction, the fallback's engine time in the close.
            let stages = [
                &st.overhead_intake_us,
                &st.overhead_close_us,
                &st.overhead_answer_us,
            ];
            assert_eq!(stages.map(|h| h.len()), [1, 1, 1], "intake, close, answer");
            let whole = st.overhead_us.max();
            for h in stages {
                assert!(h.max() <= whole + whole / 50 + 1, "{} > {whole}", h.max());
            }
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Round robin is fair to a buyer that matches fewer leads than the others: with one buyer
/// taking only CA leads and TX and CA leads alternating, every buyer still gets leads of each
/// state it takes. (A start place counted modulo the number of buyers eligible for each lead
/// gave every TX lead to the first buyer and none to the second.)
#[test]
fn round_robin_is_fair_when_buyers_match_different_leads() {
    let fleet = Fleet::start(vec![
        poster("a", true),
        poster("b", true),
        poster("ca", true),
    ])
    .unwrap();
    let toml = fixed_config(
        &fleet,
        "round_robin",
        &[(20.0, 1, 1), (20.0, 1, 1), (20.0, 1, 1)],
    ) + "\n[buyers.filters]\nstates = [\"CA\"]\n";
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let ca = LEAD.replace(r#""state": "TX""#, r#""state": "CA""#);
    for _ in 0..6 {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
        assert_eq!(c.lead(&ca).json()["status"], "sold");
    }
    let states = |i: usize| posted_field(&fleet, i, "state");
    let (a, b, only_ca) = (states(0), states(1), states(2));
    assert_eq!(a.len() + b.len() + only_ca.len(), 12);
    for (name, got) in [("a", &a), ("b", &b)] {
        assert!(
            got.iter().any(|s| s == "TX") && got.iter().any(|s| s == "CA"),
            "{name} got {got:?}"
        );
    }
    assert!(
        only_ca.len() >= 2 && only_ca.iter().all(|s| s == "CA"),
        "{only_ca:?}"
    );
}

/// A buyer with weight 0 is never drawn by a weighted campaign.
#[test]
fn a_buyer_of_weight_zero_is_never_drawn() {
    let fleet = Fleet::start(vec![poster("zero", true), poster("three", true)]).unwrap();
    let ex = Exchange::start(&fixed_config(
        &fleet,
        "weighted",
        &[(20.0, 1, 0), (20.0, 1, 3)],
    ));
    let mut c = ex.client();
    for _ in 0..40 {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    assert_eq!((fleet.posts(0), fleet.posts(1)), (0, 40));
}

/// The fallback keeps the campaign's reserve (a fixed-price buyer under it is never posted to,
/// as in a fixed-price campaign), and does not post the lead again to a buyer that bid, was
/// posted to and said no, even when that buyer has a fixed price too.
#[test]
fn the_fallback_keeps_the_reserve_and_skips_buyers_already_posted_to() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("both").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(4000, None),
            Kind::Post => Reply::rejected("duplicate"),
        }),
        poster("cheap", true),
        poster("fair", true),
    ])
    .unwrap();
    let mut toml = config(
        &Fleet::start(vec![]).unwrap(),
        "fallback = \"waterfall\"",
        |_| String::new(),
    );
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"both\"\ncampaigns = [\"auto\"]\nping_url = \"{}\"\npost_url = \"{}\"\nprice = 15.00\npriority = 1\n",
        fleet.ping_url(0),
        fleet.post_url(0)
    ));
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"cheap\"\ncampaigns = [\"auto\"]\npost_url = \"{}\"\nprice = 3.00\npriority = 2\n",
        fleet.post_url(1)
    ));
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"fair\"\ncampaigns = [\"auto\"]\npost_url = \"{}\"\nprice = 12.00\npriority = 3\n",
        fleet.post_url(2)
    ));
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "fair", "{v}");
    assert_eq!(v["price"], 12.0, "{v}");
    assert_eq!((fleet.posts(0), fleet.posts(1), fleet.posts(2)), (1, 0, 1));

    // `gavel check` says why the cheap buyer never gets a lead.
    let dir = temp_dir("fallback-reserve");
    let path = dir.join("gavel.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = gavel()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("buyer cheap's price $3.00 is under the campaign's reserve_price $5.00"),
        "{text}"
    );
}

/// The ping half of seller-side ping-post, for `LEAD` with its personal fields left out.
const PING: &str = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;

/// The post half for `ping_id`: `LEAD`'s full lead and consent.
fn post_of(ping_id: &str) -> Vec<u8> {
    let full: serde_json::Value = serde_json::from_str(LEAD).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "ping_id": ping_id, "lead": full["lead"], "consent": full["consent"]
    }))
    .unwrap()
}

/// A seller pinging a fixed-price campaign learns what the lead would earn (the first buyer
/// of the waterfall's price), and the post goes down the waterfall as a direct lead would.
#[test]
fn a_ping_to_a_fixed_price_campaign_is_answered_with_its_prices() {
    let fleet = Fleet::start(vec![
        poster("second", true),
        poster("first", false),
        poster("third", true),
    ])
    .unwrap();
    let ex = Exchange::start(&fixed_config(
        &fleet,
        "waterfall",
        &[(15.0, 3, 1), (25.0, 1, 1), (10.0, 2, 1)],
    ));
    let mut c = ex.client();
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(v["payout"], 20.0, "80 % of the first buyer's 25.00: {v}");
    let ping_id = v["ping_id"].as_str().unwrap().to_string();
    assert_eq!(fleet.posts(0) + fleet.posts(1) + fleet.posts(2), 0);

    let v = c.post("/v1/post", Some(KEY), &post_of(&ping_id)).json();
    assert_eq!(v["status"], "sold", "{v}");
    // Priority 1 said no; priority 2 bought at its own price: the waterfall's order, not
    // the prices' (priority 3 pays more and was never asked).
    assert_eq!(v["sales"][0]["buyer"], "third", "{v}");
    assert_eq!(v["price"], 10.0);
    assert_eq!(v["payout"], 8.0);
    assert_eq!((fleet.posts(1), fleet.posts(2), fleet.posts(0)), (1, 1, 0));
    assert_eq!(fleet.pings(0) + fleet.pings(1) + fleet.pings(2), 0);
}

/// Buyers a, b, c and d, each accepting every post.
fn four_posters() -> Fleet {
    Fleet::start(
        ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| poster(n, true))
            .collect(),
    )
    .unwrap()
}

/// A seller's ping, `leads` direct leads (each sold), then the ping's post: its answer.
fn ping_leads_post(c: &mut Client, leads: usize) -> serde_json::Value {
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["status"], "bid", "{v}");
    let ping_id = v["ping_id"].as_str().unwrap_or("").to_string();
    for _ in 0..leads {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    c.post("/v1/post", Some(KEY), &post_of(&ping_id)).json()
}

/// A seller's post of a held round-robin ping takes no second turn: the ping took its
/// buyer's turn, and the leads sent between the ping and its post do not cost that buyer
/// its next place (two of four buyers got twice the others' leads).
#[test]
fn a_sellers_post_takes_no_second_round_robin_turn() {
    let fleet = four_posters();
    let ex = Exchange::start(&fixed_config(&fleet, "round_robin", &[(20.0, 1, 1); 4]));
    let mut c = ex.client();
    for _ in 0..8 {
        assert_eq!(ping_leads_post(&mut c, 2)["status"], "sold");
    }
    let posts: Vec<u64> = (0..4).map(|i| fleet.posts(i)).collect();
    assert_eq!(posts, [6, 6, 6, 6]);
}

/// The same for a shared lead: a seller's ping takes the turns of all its first offers, and
/// its post none again; leads between them go first to the buyers the ping did not hold
/// (a ping once took only its first buyer's turn, which then never had a lead first-hand).
#[test]
fn a_shared_sellers_ping_takes_the_turns_of_all_its_first_offers() {
    let fleet = four_posters();
    let toml = fixed_config(&fleet, "round_robin", &[(10.0, 1, 1); 4]).replace(
        "method = \"round_robin\"",
        "method = \"round_robin\"\nsale = \"shared\"\nmax_sales = 3",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for _ in 0..8 {
        let v = ping_leads_post(&mut c, 1);
        assert_eq!(v["sales"].as_array().map(Vec::len), Some(3), "{v}");
    }
    let posts: Vec<u64> = (0..4).map(|i| fleet.posts(i)).collect();
    assert_eq!(posts, [12, 12, 12, 12]);
}

/// A ping nobody bids on, in a campaign with a fallback, is answered with the fallback's
/// price: what the direct lead would have sold for. A bid, when there is one, comes first.
#[test]
fn a_ping_nobody_bids_on_is_answered_with_the_fallbacks_price() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("stingy").with_responder(|k, _| match k {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted(),
        }),
        poster("fallback", true),
    ])
    .unwrap();
    let ex = Exchange::start(&fallback_config(&fleet, "stingy"));
    let mut c = ex.client();
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(v["payout"], 14.4, "80 % of the fallback's 18.00: {v}");
    assert_eq!(fleet.pings(0), 1);
    let ping_id = v["ping_id"].as_str().unwrap().to_string();
    let v = c.post("/v1/post", Some(KEY), &post_of(&ping_id)).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "fallback", "{v}");
    assert_eq!(v["price"], 18.0);
    assert_eq!((fleet.pings(0), fleet.posts(0), fleet.posts(1)), (1, 0, 1));

    // With a bid above the floor the ping holds the bid, as before.
    let fleet = Fleet::start(vec![
        BuyerSpec::new("keen").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(4000, None),
            Kind::Post => Reply::accepted(),
        }),
        poster("fallback", true),
    ])
    .unwrap();
    let ex = Exchange::start(&fallback_config(&fleet, "keen"));
    let v = ex
        .client()
        .post("/v1/ping", Some(KEY), PING.as_bytes())
        .json();
    assert_eq!(v["payout"], 32.0, "80 % of the 40.00 bid: {v}");
}

/// A campaign (`campaign` lines) over two buyers of `fleet`: "both" (its first endpoint), which
/// takes pings and has a price of $25.00 at priority 1, and `fixed` (its second), post only, at
/// `price` and priority 2.
fn both_and_fixed_config(fleet: &Fleet, campaign: &str, fixed: &str, price: f64) -> String {
    let mut toml = config(&Fleet::start(vec![]).unwrap(), campaign, |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"both\"\ncampaigns = [\"auto\"]\nping_url = \"{}\"\npost_url = \"{}\"\nprice = 25.00\npriority = 1\n",
        fleet.ping_url(0),
        fleet.post_url(0)
    ));
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"{fixed}\"\ncampaigns = [\"auto\"]\npost_url = \"{}\"\nprice = {price:.2}\npriority = 2\n",
        fleet.post_url(1)
    ));
    toml
}

/// A seller's post whose held bids are all rejected goes to the fallback, which leaves out
/// every buyer the ping's auction pinged, as a direct lead's fallback does: one that bid
/// nothing (or under the reserve) is not sold the lead at its fixed price. So also for a
/// ping held across a restart.
#[test]
fn a_posts_fallback_skips_the_buyers_its_ping_pinged() {
    for restart in [false, true] {
        let fleet = Fleet::start(vec![
            BuyerSpec::new("both").with_responder(|k, _| match k {
                Kind::Ping => Reply::no_bid(),
                Kind::Post => Reply::accepted(),
            }),
            poster("fallback", true),
            BuyerSpec::new("top").with_responder(|k, _| match k {
                Kind::Ping => Reply::bid(3000, None),
                Kind::Post => Reply::rejected("no thanks"),
            }),
        ])
        .unwrap();
        let mut toml = both_and_fixed_config(
            &fleet,
            "fallback = \"waterfall\"\nhold_ms = 60000",
            "fallback",
            18.0,
        );
        toml.push_str(&format!(
            "\n[[buyers]]\nid = \"top\"\ncampaigns = [\"auto\"]\nping_url = \"{}\"\npost_url = \"{}\"\n",
            fleet.ping_url(2),
            fleet.post_url(2)
        ));
        let mut ex = Exchange::start(&toml);
        let v = ex
            .client()
            .post("/v1/ping", Some(KEY), PING.as_bytes())
            .json();
        assert_eq!(v["status"], "bid", "{v}");
        assert_eq!((fleet.pings(0), fleet.pings(2)), (1, 1));
        if restart {
            drop(ex);
            ex = Exchange::start(&toml);
        }
        let full: serde_json::Value = serde_json::from_str(LEAD).unwrap();
        let post = serde_json::json!({
            "ping_id": v["ping_id"], "lead": full["lead"], "consent": full["consent"]
        });
        let v = ex
            .client()
            .post("/v1/post", Some(KEY), post.to_string().as_bytes())
            .json();
        assert_eq!(v["status"], "sold", "restart {restart}: {v}");
        assert_eq!(v["sales"][0]["buyer"], "fallback", "restart {restart}: {v}");
        assert_eq!(v["price"], 18.0, "restart {restart}: {v}");
        assert_eq!(
            (fleet.posts(0), fleet.posts(1), fleet.posts(2)),
            (0, 1, 1),
            "restart {restart}"
        );
    }
}

/// A buyer that takes pings and has a fixed price too, in a fixed-price campaign: a seller's
/// ping is answered from the prices, as a direct lead is sold, and nobody is pinged.
#[test]
fn a_ping_to_a_fixed_price_campaign_pings_no_buyer_that_also_bids() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("both").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(3000, None),
            Kind::Post => Reply::accepted(),
        }),
        poster("fixed", true),
    ])
    .unwrap();
    let toml = both_and_fixed_config(
        &fleet,
        "method = \"waterfall\"\nsale = \"shared\"\nmax_sales = 2",
        "fixed",
        20.0,
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(v["payout"], 36.0, "80 % of 25.00 + 20.00: {v}");
    let ping_id = v["ping_id"].as_str().unwrap().to_string();
    let v = c.post("/v1/post", Some(KEY), &post_of(&ping_id)).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["price"], 45.0, "{v}");
    assert_eq!(v["payout"], 36.0, "{v}");
    let mut sold: Vec<(String, f64)> = v["sales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["buyer"].as_str().unwrap().to_string(),
                s["price"].as_f64().unwrap(),
            )
        })
        .collect();
    sold.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sold,
        vec![("both".to_string(), 25.0), ("fixed".to_string(), 20.0)]
    );
    assert_eq!(fleet.pings(0), 0, "a fixed-price campaign pings nobody");
    // A direct lead: the same.
    let v = c.lead(LEAD).json();
    assert_eq!(v["price"], 45.0, "{v}");
    assert_eq!(fleet.pings(0), 0);
}

/// A buyer pinged for a lead priced it itself: when it bids nothing, or under the reserve, the
/// fallback does not post it the lead at its fixed price; the other fixed-price buyers have it.
#[test]
fn the_fallback_skips_a_buyer_that_was_pinged_for_the_lead() {
    for (bid, why) in [(None, "no bid"), (Some(400), "a bid under the reserve")] {
        let fleet = Fleet::start(vec![
            BuyerSpec::new("both").with_responder(move |k, _| match (k, bid) {
                (Kind::Ping, Some(cents)) => Reply::bid(cents, None),
                (Kind::Ping, None) => Reply::no_bid(),
                (Kind::Post, _) => Reply::accepted(),
            }),
            poster("fallback", true),
        ])
        .unwrap();
        let toml = both_and_fixed_config(&fleet, "fallback = \"waterfall\"", "fallback", 18.0);
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        let v = c.lead(LEAD).json();
        assert_eq!(v["status"], "sold", "{why}: {v}");
        assert_eq!(v["sales"][0]["buyer"], "fallback", "{why}: {v}");
        assert_eq!(v["price"], 18.0, "{why}: {v}");
        assert_eq!((fleet.pings(0), fleet.posts(0)), (1, 0), "{why}");
        // A seller's ping is offered the fallback's price, not the pinged buyer's.
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        assert_eq!(
            v["payout"], 14.4,
            "{why}: 80 % of the fallback's 18.00: {v}"
        );
    }
}

/// The fleet's first two endpoints as `busy`, a bidder held to one connection with a fixed price
/// of $12.00 first in the waterfall, and `fallback`, post only at $18.00 after it.
fn busy_and_fallback(fleet: &Fleet) -> String {
    buyer_table(
        "busy",
        Some(fleet.ping_url(0)),
        fleet.post_url(0),
        "min_idle = 1\nmax_connections = 1\nprice = 12.00\npriority = 0\n",
    ) + &buyer_table(
        "fallback",
        None,
        fleet.post_url(1),
        "price = 18.00\npriority = 1\n",
    )
}

/// Buyers "busy" (one connection; no bid, 450 ms late) and "fallback" (posts only): the fleet
/// and a config with `campaign_extra` and their tables.
fn busy_fleet(campaign_extra: &str) -> (Fleet, String) {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("busy").with_responder(|k, _| match k {
            Kind::Ping => Reply::no_bid().after_ms(450),
            Kind::Post => Reply::accepted(),
        }),
        poster("fallback", true),
    ])
    .unwrap();
    let mut toml = config(&Fleet::start(vec![]).unwrap(), campaign_extra, |_| {
        String::new()
    });
    toml.push_str(&busy_and_fallback(&fleet));
    (fleet, toml)
}

/// Post the full lead for each held ping of `ids`, in order, each answered sold: (buyer,
/// price) of each first sale.
fn post_each_sold(ex: &Exchange, ids: &[serde_json::Value], what: &str) -> Vec<(String, f64)> {
    let full: serde_json::Value = serde_json::from_str(LEAD).unwrap();
    ids.iter()
        .map(|id| {
            let post = serde_json::json!({
                "ping_id": id, "lead": full["lead"], "consent": full["consent"]
            });
            let v = ex
                .client()
                .post("/v1/post", Some(KEY), post.to_string().as_bytes())
                .json();
            assert_eq!(v["status"], "sold", "{what}: {v}");
            (
                v["sales"][0]["buyer"].as_str().unwrap_or("").to_string(),
                v["price"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

/// `n` seller `/v1/ping`s sent at once, each on a connection of its own, not yet read.
fn pings_at_once(ex: &Exchange, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let mut c = Client::connect(ex.addr);
            c.send_raw(&Client::request(
                "POST",
                "/v1/ping",
                Some(KEY),
                PING.as_bytes(),
            ));
            c
        })
        .collect()
}

/// A `[[buyers]]` table on campaign `auto`: its id, endpoints and `extra` lines.
fn buyer_table(id: &str, ping: Option<String>, post: String, extra: &str) -> String {
    let ping = ping.map_or(String::new(), |u| format!("ping_url = \"{u}\"\n"));
    format!(
        "\n[[buyers]]\nid = \"{id}\"\ncampaigns = [\"auto\"]\n{ping}post_url = \"{post}\"\n{extra}"
    )
}

/// Pings still waiting for a busy buyer's only connection when the auction closes belong to
/// that auction: the fallback that replaces it numbers its buyers afresh, and the connection,
/// freed by the late answer while the fallback's post is out, must not take those pings for
/// the fallback's. (The stale ping's place, the late bidder's second, was past the end of the
/// fallback's one, and the worker stopped with every lead in it unanswered.)
#[test]
fn pings_queued_behind_a_late_bidder_are_dropped_when_the_lead_falls_back() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("stingy").with_responder(|k, _| match k {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("late").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(3000, None).after_ms(450),
            Kind::Post => Reply::accepted(),
        }),
        // Still posting to the fallback buyer when the late answer comes.
        BuyerSpec::new("fallback").with_responder(|_, _| Reply::accepted().after_ms(300)),
    ])
    .unwrap();
    let (stingy, late) = (0, 1);
    let mut toml = config(
        &Fleet::start(vec![]).unwrap(),
        "fallback = \"waterfall\"",
        |_| String::new(),
    );
    for i in [stingy, late] {
        let limit = if i == late {
            "min_idle = 1\nmax_connections = 1\n"
        } else {
            ""
        };
        toml.push_str(&buyer_table(
            fleet.name(i),
            Some(fleet.ping_url(i)),
            fleet.post_url(i),
            limit,
        ));
    }
    toml.push_str(&buyer_table(
        "fallback",
        None,
        fleet.post_url(2),
        "price = 18.00\npriority = 1\n",
    ));
    let ex = Exchange::start(&toml);
    let mut sellers = send_leads_at_once(ex.addr, 3);
    for c in &mut sellers {
        let v = c.read_response().expect("the lead is answered").json();
        assert_eq!(v["status"], "sold", "{v}");
        assert_eq!(v["sales"][0]["buyer"], "fallback", "{v}");
    }
    // The late answer to the one ping written freed the connection; the exchange goes on.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "fallback", "{v}");
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(fleet.posts(2), 4, "the fallback buyer took every lead");
    assert_eq!(fleet.pings(stingy), 4, "the quick buyer saw every lead");
    // Two of the first three leads' pings never got the connection; the fourth's did.
    assert_eq!(
        fleet.pings(late),
        2,
        "no ping written after its auction closed"
    );
    assert_eq!(fleet.posts(late) + fleet.posts(stingy), 0);
}

/// A buyer that bids and has a fixed price too keeps its place in the fallback for a lead
/// whose ping never got its one connection before the close: it did not see that lead, so it
/// did not price it. The lead whose ping it did see (and let time out) goes to the next.
#[test]
fn a_buyer_whose_ping_was_never_written_keeps_its_fallback_turn() {
    let (fleet, toml) = busy_fleet("fallback = \"waterfall\"");
    let ex = Exchange::start(&toml);
    let mut sales: Vec<(String, f64)> = send_leads_at_once(ex.addr, 2)
        .iter_mut()
        .map(|c| {
            let v = c.read_response().expect("the lead is answered").json();
            assert_eq!(v["status"], "sold", "{v}");
            (
                v["sales"][0]["buyer"].as_str().unwrap_or("").to_string(),
                v["price"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    sales.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sales,
        vec![("busy".to_string(), 12.0), ("fallback".to_string(), 18.0)]
    );
    assert_eq!((fleet.pings(0), fleet.posts(0), fleet.posts(1)), (1, 1, 1));
}

/// A seller's `/v1/ping` nobody bid on is answered from the fallback's buyers: one whose ping
/// never got its one connection before the close did not see the lead and keeps its place
/// there (its price offered and its post made), as for a lead; the one that saw its ping
/// does not.
#[test]
fn a_pings_fallback_offer_keeps_a_buyer_its_ping_never_reached() {
    let (fleet, toml) = busy_fleet("fallback = \"waterfall\"\nhold_ms = 60000");
    let ex = Exchange::start(&toml);
    let mut pingers = pings_at_once(&ex, 2);
    let mut offers: Vec<(f64, serde_json::Value)> = pingers
        .iter_mut()
        .map(|c| {
            let v = c.read_response().expect("the ping's answer").json();
            assert_eq!(v["status"], "bid", "{v}");
            (v["payout"].as_f64().unwrap_or(0.0), v["ping_id"].clone())
        })
        .collect();
    offers.sort_by(|a, b| a.0.total_cmp(&b.0));
    // 80% of the busy buyer's 12.00 (first in the waterfall), of the fallback's 18.00.
    assert_eq!((offers[0].0, offers[1].0), (9.6, 14.4), "{offers:?}");
    assert_eq!(
        fleet.pings(0),
        1,
        "one ping got the busy buyer's connection"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ids: Vec<serde_json::Value> = offers.into_iter().map(|(_, id)| id).collect();
    let sales = post_each_sold(&ex, &ids, "");
    assert_eq!(
        sales,
        vec![("busy".to_string(), 12.0), ("fallback".to_string(), 18.0)]
    );
    assert_eq!((fleet.posts(0), fleet.posts(1)), (1, 1));
}

/// A waterfall fallback of "dead" (30.00, first; its ping to `ping_url`, dialled for the
/// ping, as `min_idle = 0` keeps no connection warm) and "fallback" (18.00), both taking
/// posts: the exchange, once a lead sent to it has sold to "dead", whose ping never reached
/// it.
fn sold_to_a_buyer_its_ping_never_reached(ping_url: String) -> (Fleet, Exchange) {
    let fleet = Fleet::start(vec![poster("dead", true), poster("fallback", true)]).unwrap();
    let mut toml = config(
        &Fleet::start(vec![]).unwrap(),
        "fallback = \"waterfall\"\nhold_ms = 60000",
        |_| String::new(),
    );
    toml.push_str(&buyer_table(
        "dead",
        Some(ping_url),
        fleet.post_url(0),
        "min_idle = 0\nprice = 30.00\npriority = 0\n",
    ));
    toml.push_str(&buyer_table(
        "fallback",
        None,
        fleet.post_url(1),
        "price = 18.00\npriority = 1\n",
    ));
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(
        (v["sales"][0]["buyer"].as_str(), v["price"].as_f64()),
        (Some("dead"), Some(30.0)),
        "{v}"
    );
    (fleet, ex)
}

/// A buyer whose ping is dialled on a connection that is refused never saw the lead: it keeps
/// its fallback place, for a lead and for a `/v1/ping`'s offer alike, as one whose ping waited
/// for a connection that never came does.
#[test]
fn a_buyer_whose_ping_connect_was_refused_keeps_its_fallback_turn() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (fleet, ex) =
        sold_to_a_buyer_its_ping_never_reached(format!("http://127.0.0.1:{refused}/ping"));
    let v = ex
        .client()
        .post("/v1/ping", Some(KEY), PING.as_bytes())
        .json();
    assert_eq!(
        (v["status"].as_str(), v["payout"].as_f64()),
        (Some("bid"), Some(24.0)),
        "{v}"
    );
    assert_eq!(fleet.posts(1), 0);
}

/// The same over TLS: a buyer whose ping went to a port that does not speak TLS never had
/// the ping (its handshake failed with the request still in the session), and keeps its
/// fallback place.
#[test]
fn a_buyer_whose_ping_handshake_failed_keeps_its_fallback_turn() {
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in plain.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (fleet, _ex) =
        sold_to_a_buyer_its_ping_never_reached(format!("https://127.0.0.1:{port}/ping"));
    assert_eq!(fleet.posts(1), 0);
}

/// The same for a seller's `/v1/post`: a buyer whose ping for the `/v1/ping` never got its
/// one connection keeps its fallback turn when the held bids are all rejected, also for a ping
/// held across a restart; the one that saw its ping does not.
#[test]
fn a_posts_fallback_keeps_a_buyer_its_ping_never_reached() {
    for restart in [false, true] {
        let fleet = Fleet::start(vec![
            BuyerSpec::new("busy").with_responder(|k, _| match k {
                Kind::Ping => Reply::no_bid().after_ms(450),
                Kind::Post => Reply::accepted(),
            }),
            poster("fallback", true),
            BuyerSpec::new("top").with_responder(|k, _| match k {
                Kind::Ping => Reply::bid(3000, None),
                Kind::Post => Reply::rejected("no thanks"),
            }),
        ])
        .unwrap();
        let mut toml = config(
            &Fleet::start(vec![]).unwrap(),
            "fallback = \"waterfall\"\nhold_ms = 60000",
            |_| String::new(),
        );
        toml.push_str(&busy_and_fallback(&fleet));
        toml.push_str(&buyer_table(
            "top",
            Some(fleet.ping_url(2)),
            fleet.post_url(2),
            "",
        ));
        let mut ex = Exchange::start(&toml);
        let mut pingers = pings_at_once(&ex, 2);
        let ids: Vec<serde_json::Value> = pingers
            .iter_mut()
            .map(|c| {
                let v = c.read_response().expect("the ping's answer").json();
                assert_eq!(v["status"], "bid", "{v}");
                v["ping_id"].clone()
            })
            .collect();
        // The late answer frees the busy buyer's connection.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!((fleet.pings(0), fleet.pings(2)), (1, 2));
        if restart {
            drop(ex);
            ex = Exchange::start(&toml);
        }
        let mut sales = post_each_sold(&ex, &ids, &format!("restart {restart}"));
        sales.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            sales,
            vec![("busy".to_string(), 12.0), ("fallback".to_string(), 18.0)],
            "restart {restart}"
        );
        assert_eq!(
            (fleet.posts(0), fleet.posts(1), fleet.posts(2)),
            (1, 1, 2),
            "restart {restart}"
        );
    }
}

/// A round-robin fallback leaves out a buyer the auction pinged (one with a price of its own
/// that bid nothing) before it takes turns: the left-out buyer's turn does not pass to the
/// buyer after it, and the fixed-price buyers share the leads evenly, for a direct lead's
/// fallback and for a seller's ping priced from it.
#[test]
fn a_round_robin_fallback_shares_evenly_around_a_pinged_buyer() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("both").with_responder(|k, _| match k {
            Kind::Ping => Reply::no_bid(),
            Kind::Post => Reply::accepted(),
        }),
        poster("f1", true),
        poster("f2", true),
        poster("f3", true),
    ])
    .unwrap();
    let mut toml = config(
        &Fleet::start(vec![]).unwrap(),
        "fallback = \"round_robin\"",
        |_| String::new(),
    );
    toml.push_str(&buyer_table(
        "both",
        Some(fleet.ping_url(0)),
        fleet.post_url(0),
        "price = 25.00\n",
    ));
    for i in 1..4 {
        toml.push_str(&buyer_table(
            fleet.name(i),
            None,
            fleet.post_url(i),
            "price = 18.00\n",
        ));
    }
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let sold_to = sales_by_buyer((0..12).map(|_| c.lead(LEAD).json()));
    assert_eq!(sold_to, each_of(&["f1", "f2", "f3"], 4), "direct leads");
    assert_eq!(fleet.posts(0), 0, "the pinged buyer is never posted to");
    // A seller's ping nobody bids on is priced from the fallback's next turn: the same turns.
    let offered = sales_by_buyer((0..6).map(|_| {
        let v = c.post("/v1/ping", Some(KEY), PING.as_bytes()).json();
        assert_eq!(v["status"], "bid", "{v}");
        let id = v["ping_id"].as_str().unwrap_or("").to_string();
        c.post("/v1/post", Some(KEY), &post_of(&id)).json()
    }));
    assert_eq!(offered, each_of(&["f1", "f2", "f3"], 2), "seller pings");
}

/// How many of `answers` each buyer bought; every answer must be a sale.
fn sales_by_buyer(
    answers: impl Iterator<Item = serde_json::Value>,
) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for v in answers {
        assert_eq!(v["status"], "sold", "{v}");
        let buyer = v["sales"][0]["buyer"].as_str().unwrap_or("").to_string();
        *by.entry(buyer).or_insert(0) += 1;
    }
    by
}

/// `n` for each of `buyers`.
fn each_of(buyers: &[&str], n: usize) -> std::collections::BTreeMap<String, usize> {
    buyers.iter().map(|b| (b.to_string(), n)).collect()
}

/// A restart gives a round-robin rotation back its place from the journal's sales: the next
/// lead goes to the buyer whose turn it was, not to the first buyer again.
#[test]
fn a_restart_keeps_the_round_robin_rotation() {
    let fleet = Fleet::start(vec![
        poster("a", true),
        poster("b", true),
        poster("c", true),
    ])
    .unwrap();
    let toml = fixed_config(&fleet, "round_robin", &[(20.0, 1, 1); 3]);
    let mut sold_to = Vec::new();
    for _ in 0..4 {
        let ex = Exchange::start(&toml);
        let v = ex.client().lead(LEAD).json();
        assert_eq!(v["status"], "sold", "{v}");
        sold_to.push(v["sales"][0]["buyer"].as_str().unwrap_or("").to_string());
        drop(ex);
    }
    assert_eq!(sold_to, ["a", "b", "c", "a"]);
}
