//! Buyers get only the leads they asked for, and never one more than their caps: checked at the
//! buyer endpoints, with leads sent concurrently over real sockets to two workers.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use std::sync::Arc;

fn bidder(name: &str, cents: i64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None).after_ms(2),
        Kind::Post => Reply::accepted(),
    })
}

/// A config in which the first buyer alone has `extra` (its caps, filters or hours).
fn first_buyer_with(fleet: &Fleet, extra: &str) -> String {
    config(fleet, "", |i| {
        if i == 0 {
            extra.to_string()
        } else {
            String::new()
        }
    })
}

/// `per_thread` leads from each of four threads, each lead on a connection of its own so the
/// kernel spreads them over the workers; every lead must sell. The winner of each.
fn concurrent_winners(ex: &Arc<Exchange>, per_thread: usize) -> Vec<String> {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ex = ex.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|_| {
                        let v = ex.client().lead(LEAD).json();
                        assert_eq!(v["status"], "sold", "{v}");
                        v["sales"][0]["buyer"].as_str().unwrap_or("").to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

#[test]
fn a_daily_cap_is_never_exceeded_by_concurrent_leads_on_two_workers() {
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 3000)]).unwrap();
    let toml =
        first_buyer_with(&fleet, "[buyers.caps]\ndaily = 5").replace("workers = 1", "workers = 2");
    let ex = Arc::new(Exchange::start(&toml));
    let winners = concurrent_winners(&ex, 10);
    assert_eq!(winners.len(), 40);
    assert_eq!(
        winners.iter().filter(|w| *w == "capped").count(),
        5,
        "{:?}",
        winners
    );
    assert_eq!(winners.iter().filter(|w| *w == "other").count(), 35);
    assert_eq!(fleet.posts(0), 5, "posts that reached the capped buyer");
    // Once at its cap, the buyer is not even pinged.
    assert!(
        fleet.pings(0) < 40,
        "capped buyer was pinged {} times",
        fleet.pings(0)
    );
}

#[test]
fn a_lead_from_a_state_outside_the_buyers_list_never_reaches_it() {
    let fleet = Fleet::start(vec![bidder("texas-only", 9000), bidder("anywhere", 1000)]).unwrap();
    let toml = first_buyer_with(
        &fleet,
        "[buyers.filters]\nstates = [\"TX\", \"OK\"]\nfields = [ { field = \"age\", op = \">=\", value = 21 } ]",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let ca = LEAD
        .replace("\"state\": \"TX\"", "\"state\": \"CA\"")
        .replace("\"zip\": \"77002\"", "\"zip\": \"90001\"");
    for _ in 0..5 {
        let v = c.lead(&ca).json();
        assert_eq!(v["sales"][0]["buyer"], "anywhere");
    }
    assert_eq!(
        fleet.pings(0),
        0,
        "the TX/OK buyer must never see a CA lead"
    );
    // Under 21: filtered out by the field predicate.
    let young = LEAD.replace("\"age\": 34", "\"age\": 19");
    assert_eq!(c.lead(&young).json()["sales"][0]["buyer"], "anywhere");
    assert_eq!(fleet.pings(0), 0);
    // A Texan adult reaches it.
    assert_eq!(c.lead(LEAD).json()["sales"][0]["buyer"], "texas-only");
    assert_eq!(fleet.pings(0), 1);
}

#[test]
fn a_buyer_outside_its_hours_is_not_pinged() {
    use chrono::{Datelike, Duration, Utc};
    // Open only on the day after tomorrow (UTC): closed now, whatever the time of day.
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][(Utc::now() + Duration::days(2))
        .weekday()
        .num_days_from_monday()
        as usize];
    let fleet = Fleet::start(vec![bidder("closed", 9000), bidder("always", 1000)]).unwrap();
    let toml = first_buyer_with(
        &fleet,
        &format!("timezone = \"UTC\"\nhours = [\"{} 00:00-23:59\"]", day),
    );
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "always");
    assert_eq!(fleet.pings(0), 0);
}

#[test]
fn consent_disclosing_buyers_limits_who_is_pinged_when_the_campaign_says_so() {
    let lead = LEAD.replace(
        "\"vertical\": \"auto_insurance\"",
        "\"vertical\": \"auto_insurance\", \"disclosed_buyers\": [\"named\"]",
    );
    let fleet = Fleet::start(vec![bidder("named", 2000), bidder("unnamed", 9000)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "disclosed_buyers_only = true", |_| {
        String::new()
    }));
    let v = ex.client().lead(&lead).json();
    assert_eq!(v["sales"][0]["buyer"], "named");
    assert_eq!(fleet.pings(1), 0);

    // By default the list is the consumer's record, not a filter: the best bid wins.
    let fleet = Fleet::start(vec![bidder("named", 2000), bidder("unnamed", 9000)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let v = ex
        .client()
        .lead(&lead.replace("7135550147", "7135550199"))
        .json();
    assert_eq!(v["sales"][0]["buyer"], "unnamed", "{v}");
    assert_eq!(fleet.pings(0), 1);
}

#[test]
fn a_monthly_budget_is_never_overspent_and_holds_after_a_restart() {
    let fleet = Fleet::start(vec![bidder("budgeted", 9000), bidder("other", 3000)]).unwrap();
    // $200 a month at $90 a lead: two sales, and a third would pass it.
    let toml = first_buyer_with(&fleet, "[buyers.caps]\nmonthly_budget = 200.00")
        .replace("workers = 1", "workers = 2");
    let run = |leads: usize| {
        let ex = Arc::new(Exchange::start(&toml));
        let winners = concurrent_winners(&ex, leads / 4);
        winners.iter().filter(|w| *w == "budgeted").count()
    };
    assert_eq!(run(20), 2, "sales to the budgeted buyer");
    assert_eq!(fleet.posts(0), 2);
    // The same journal after a restart: the month's spend is rebuilt, so no third sale.
    assert_eq!(run(8), 0, "sales after the restart");
    assert_eq!(fleet.posts(0), 2);
}

/// Buyers whose budget cannot pay their bid are still pinged (some budget is left), but their
/// posts are never sent, and that takes nothing from the cascade: however many of them rank
/// first, the lead goes to the buyer who can pay, and nobody is counted as rejecting a post.
#[test]
fn bids_over_the_buyers_budget_do_not_use_up_the_cascade() {
    let mut specs: Vec<BuyerSpec> = (0..9).map(|i| bidder(&format!("rich{i}"), 3000)).collect();
    specs.push(bidder("modest", 1000));
    let fleet = Fleet::start(specs).unwrap();
    let toml = config(&fleet, "", |i| {
        if i < 9 {
            "[buyers.caps]\ndaily_budget = 25.00".to_string()
        } else {
            String::new()
        }
    });
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(v["sales"][0]["buyer"], "modest", "{v}");
    assert_eq!(v["price"], 10.0, "{v}");
    for i in 0..9 {
        assert_eq!(
            fleet.posts(i),
            0,
            "rich{i} got a post its budget cannot pay"
        );
    }
    let st = ex.handle.as_ref().unwrap().stats();
    for (id, b) in st.buyers() {
        assert_eq!(b.post_rejects, 0, "{id}: {b:?}");
    }
    // A seller's ping is offered only what a buyer can pay.
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    drop(ex);
    let ex = Exchange::start(&toml.replace(
        "require_consent = true",
        "require_consent = true\nhold_ms = 30000",
    ));
    let v = ex
        .client()
        .post("/v1/ping", Some(KEY), ping.as_bytes())
        .json();
    assert_eq!(v["status"], "bid", "{v}");
    assert_eq!(v["payout"], 8.0, "80 % of the 10.00 a buyer can pay: {v}");
}

/// A blank consent vertical reads as none, as validation reads it: the campaign's vertical
/// decides which buyers' `verticals` match, so a buyer taking that vertical is pinged.
#[test]
fn a_blank_consent_vertical_reads_as_the_campaigns() {
    let fleet = Fleet::start(vec![bidder("auto-only", 2000)]).unwrap();
    let ex = Exchange::start(&first_buyer_with(
        &fleet,
        "verticals = [\"auto_insurance\"]",
    ));
    let mut c = ex.client();
    for (i, blank) in ["\"\"", "\"  \""].iter().enumerate() {
        let lead = LEAD
            .replace(
                "\"vertical\": \"auto_insurance\"",
                &format!("\"vertical\": {blank}"),
            )
            .replace("7135550147", &format!("713555020{i}"))
            .replace("ana@example.com", &format!("ana{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["status"], "sold", "{blank}: {v}");
    }
    assert_eq!(fleet.pings(0), 2);
}

/// Two leads in their auctions at once, one buyer with room for one sale a day: one lead buys,
/// the other's post is never sent (the cap is spent by then), and its seller hears why:
/// `buyers_capped`, not `posts_rejected`, since no buyer rejected anything.
#[test]
fn a_lead_whose_only_bidder_was_capped_meanwhile_is_unsold_buyers_capped() {
    let slow = BuyerSpec::new("capped").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(9000, None).after_ms(150),
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![slow]).unwrap();
    let toml = first_buyer_with(&fleet, "[buyers.caps]\ndaily = 1")
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 1000");
    let ex = Arc::new(Exchange::start(&toml));
    let leads: Vec<_> = (0..2)
        .map(|i| {
            let ex = ex.clone();
            std::thread::spawn(move || {
                let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
                ex.client().lead(&lead).json()
            })
        })
        .collect();
    let mut answers: Vec<serde_json::Value> =
        leads.into_iter().map(|t| t.join().unwrap()).collect();
    answers.sort_by_key(|v| v["status"].as_str().unwrap_or("").to_string());
    assert_eq!(answers[0]["status"], "sold", "{answers:?}");
    assert_eq!(answers[1]["status"], "unsold", "{answers:?}");
    assert_eq!(answers[1]["reason"], "buyers_capped", "{answers:?}");
    assert_eq!(fleet.posts(0), 1);
}

/// A filter on a dotted field reads the lead's nested object: only leads whose vehicle is
/// recent enough reach the buyer.
#[test]
fn a_filter_on_a_nested_field_reads_into_the_lead() {
    let fleet = Fleet::start(vec![bidder("recent-cars", 9000), bidder("anywhere", 1000)]).unwrap();
    let toml = first_buyer_with(
        &fleet,
        "[buyers.filters]\nfields = [ { field = \"vehicle.year\", op = \">=\", value = 2015 } ]",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let with_year = |year: u32, phone: &str| {
        LEAD.replace(
            "\"insured\": true}",
            &format!("\"insured\": true, \"vehicle\": {{\"make\": \"Ford\", \"year\": {year}}}}}"),
        )
        .replace("7135550147", phone)
    };
    let v = c.lead(&with_year(2009, "7135550301")).json();
    assert_eq!(v["sales"][0]["buyer"], "anywhere", "{v}");
    assert_eq!(fleet.pings(0), 0);
    let v = c.lead(&with_year(2019, "7135550302")).json();
    assert_eq!(v["sales"][0]["buyer"], "recent-cars", "{v}");
    assert_eq!(fleet.pings(0), 1);
    // No vehicle at all: not for it.
    let v = c.lead(&LEAD.replace("7135550147", "7135550303")).json();
    assert_eq!(v["sales"][0]["buyer"], "anywhere", "{v}");
    assert_eq!(fleet.pings(0), 1);
}

/// A buyer whose budget has less left than the campaign's reserve price can pay for no sale:
/// it is not pinged at all (no consumer data to it, no bid counted), and the lead goes to a
/// buyer who can pay.
#[test]
fn a_buyer_whose_budget_left_is_under_the_reserve_is_not_pinged() {
    let fleet = Fleet::start(vec![bidder("budgeted", 2500), bidder("other", 1000)]).unwrap();
    // Reserve 5.00: after one sale at 25.00, 2.00 is left.
    let ex = Exchange::start(&first_buyer_with(
        &fleet,
        "[buyers.caps]\ndaily_budget = 27.00",
    ));
    let mut c = ex.client();
    let v = c.lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "budgeted", "{v}");
    assert_eq!(fleet.pings(0), 1);
    for i in 0..3 {
        let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(v["status"], "sold", "{v}");
        assert_eq!(v["sales"][0]["buyer"], "other", "{v}");
    }
    assert_eq!(
        fleet.pings(0),
        1,
        "a buyer that cannot pay the reserve was pinged"
    );
    assert_eq!(fleet.pings(1), 4);
}

/// A seller's ping held the only bidder's bid; before the post, another lead took that
/// buyer's last sale of the day. The post is unsold `buyers_capped` (a cap spent between the
/// bid and its turn), not `no_eligible_buyers`, and the buyer gets no second post.
#[test]
fn a_post_whose_held_bidder_was_capped_meanwhile_is_unsold_buyers_capped() {
    let fleet = Fleet::start(vec![bidder("capped", 3000)]).unwrap();
    let toml = first_buyer_with(&fleet, "[buyers.caps]\ndaily = 1").replace(
        "require_consent = true",
        "require_consent = true\nhold_ms = 30000",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let v = c.post("/v1/ping", Some(KEY), ping.as_bytes()).json();
    assert_eq!(v["status"], "bid", "{v}");
    let ping_id = v["ping_id"].as_str().unwrap().to_string();
    let other = LEAD.replace("ana@example.com", "other@example.com");
    let v = c.lead(&other).json();
    assert_eq!(v["status"], "sold", "{v}");
    let full: serde_json::Value = serde_json::from_str(LEAD).unwrap();
    let post =
        serde_json::json!({"ping_id": ping_id, "lead": full["lead"], "consent": full["consent"]});
    let r = c.post("/v1/post", Some(KEY), post.to_string().as_bytes());
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["status"], "unsold", "{v}");
    assert_eq!(v["reason"], "buyers_capped", "{v}");
    assert_eq!(fleet.posts(0), 1);
}
