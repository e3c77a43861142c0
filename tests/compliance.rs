//! Compliance at the seller API: duplicates within `dedupe_days` and suppressed phones are
//! refused with 422, atomically across workers and across a restart.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet};
use std::sync::Arc;

fn with_phone_email(phone: &str, email: &str) -> String {
    LEAD.replace("7135550147", phone)
        .replace("ana@example.com", email)
}

#[test]
fn the_same_phone_or_email_within_the_window_is_a_duplicate() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = Exchange::start(&config(&fleet, "dedupe_days = 30", |_| String::new()));
    let mut c = ex.client();
    assert_eq!(c.lead(LEAD).status, 200);
    let r = c.lead(LEAD);
    assert_eq!(r.status, 422);
    let v = r.json();
    assert_eq!(v["status"], "rejected");
    assert!(v["lead_id"].is_string());
    assert_eq!(v["error"]["code"], "duplicate");
    assert_eq!(v["error"]["field"], "lead.phone");
    // Same phone in another format: still the same consumer.
    let r = c.lead(&with_phone_email("(713) 555-0147", "other@example.com"));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "lead.phone");
    // Same email in other case: the field at fault is the email.
    let r = c.lead(&with_phone_email("7135550199", "ANA@example.com"));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "lead.email");
    // Someone else entirely.
    assert_eq!(
        c.lead(&with_phone_email("7135550100", "bo@example.com"))
            .status,
        200
    );
    assert_eq!(fleet.posts(0), 2);
}

#[test]
fn of_identical_leads_racing_on_two_workers_exactly_one_passes() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let toml =
        config(&fleet, "dedupe_days = 1", |_| String::new()).replace("workers = 1", "workers = 2");
    let ex = Arc::new(Exchange::start(&toml));
    for round in 0..5 {
        let lead = with_phone_email(
            &format!("71355502{:02}", round),
            &format!("race{}@example.com", round),
        );
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (ex, lead, barrier) = (ex.clone(), lead.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut c = ex.client();
                    barrier.wait();
                    c.lead(&lead).status
                })
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{:?}",
            statuses
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 422).count(),
            7,
            "{:?}",
            statuses
        );
    }
}

#[test]
fn dedupe_survives_a_restart_through_the_journal() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let toml = config(&fleet, "dedupe_days = 30", |_| String::new());
    {
        let ex = Exchange::start(&toml);
        assert_eq!(ex.client().lead(LEAD).status, 200);
    }
    let ex = Exchange::start(&toml);
    let r = ex.client().lead(LEAD);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "duplicate");
}

#[test]
fn a_suppressed_phone_is_refused() {
    let dir = temp_dir("dnc");
    let list = dir.join("dnc.txt");
    std::fs::write(&list, "# do not call\n(713) 555-0147\n+1 212 555 0100\n").unwrap();
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = Exchange::start(&config(
        &fleet,
        &format!("suppression_file = \"{}\"", list.display()),
        |_| String::new(),
    ));
    let mut c = ex.client();
    let r = c.lead(LEAD);
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "suppressed");
    assert_eq!(r.json()["error"]["field"], "lead.phone");
    assert_eq!(
        c.lead(&with_phone_email("7135550100", "bo@example.com"))
            .status,
        200
    );
    assert_eq!(fleet.pings(0), 1);

    // An unreadable list is a config error naming the key.
    let bad = config(
        &fleet,
        "suppression_file = \"/nonexistent/dnc.txt\"",
        |_| String::new(),
    );
    match gavel::config::parse(&bad) {
        Err(gavel::config::ConfigError::Invalid(issues)) => {
            assert_eq!(issues[0].key, "campaigns[0].suppression_file");
        }
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn test_leads_are_not_deduplicated_and_do_not_block_the_real_lead() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let toml = config(&fleet, "dedupe_days = 30", |_| String::new());
    let test_lead = LEAD.replacen('{', "{\"test\": true, ", 1);
    {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        // A seller testing its integration sends the same consumer again and again.
        for _ in 0..3 {
            let r = c.lead(&test_lead);
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["status"], "sold");
        }
        // The real lead is not a duplicate of the tests; a second real one is.
        assert_eq!(c.lead(LEAD).status, 200);
        assert_eq!(c.lead(LEAD).json()["error"]["code"], "duplicate");
        // A test after the real lead is still not refused.
        assert_eq!(c.lead(&test_lead).status, 200);
    }
    // After a restart the index rebuilt from the journal holds the real lead only: a consumer
    // who was only ever tested is not a duplicate.
    let other = with_phone_email("7135550100", "bo@example.com");
    {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        assert_eq!(c.lead(LEAD).json()["error"]["code"], "duplicate");
        let r = c.lead(&other.replacen('{', "{\"test\": true, ", 1));
        assert_eq!(r.status, 200);
    }
    let ex = Exchange::start(&toml);
    assert_eq!(
        ex.client().lead(&other).status,
        200,
        "a tested consumer's real lead"
    );
}

/// A campaign that takes consent only up to an age refuses an older one before any buyer hears
/// of the consumer, and takes a fresh one.
#[test]
fn consent_older_than_the_campaigns_limit_is_refused() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let ex = Exchange::start(&config(&fleet, "consent_max_age_hours = 72", |_| {
        String::new()
    }));
    let mut c = ex.client();
    let at = |hours: i64| {
        let t = chrono::Utc::now() - chrono::Duration::hours(hours);
        let mut v: serde_json::Value = serde_json::from_str(LEAD).unwrap();
        v["consent"]["consented_at"] = serde_json::Value::from(t.to_rfc3339());
        v.to_string()
    };
    let r = c.lead(&at(100));
    assert_eq!(r.status, 422);
    let v = r.json();
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["error"]["code"], "consent_expired");
    assert_eq!(v["error"]["field"], "consent.consented_at");
    assert_eq!(fleet.pings(0), 0);
    let r = c.lead(&at(1));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "sold");
    assert_eq!(fleet.pings(0), 1);
}
