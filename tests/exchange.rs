//! The exchange end to end: a real server and real buyer endpoints on loopback sockets.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bidder(name: &str, cents: i64, delay_ms: u64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, Some("b-1")).after_ms(delay_ms),
        Kind::Post => Reply::accepted(),
    })
}

fn rejecting_bidder(name: &str, cents: i64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None),
        Kind::Post => Reply::rejected("duplicate"),
    })
}

/// `n` leads (each its own consumer) sent at once on `n` connections: their answers.
fn leads_at_once(ex: &Exchange, n: usize) -> Vec<Value> {
    send_leads_at_once(ex.addr, n)
        .iter_mut()
        .map(|c| c.read_response().expect("an answer").json())
        .collect()
}

/// One lead on `c`: the answer and how long it took.
fn timed_lead(c: &mut Client) -> (Value, Duration) {
    let t = Instant::now();
    let v = c.lead(LEAD).json();
    (v, t.elapsed())
}

fn sales(v: &Value) -> Vec<(String, f64)> {
    let mut s: Vec<(String, f64)> = v["sales"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["buyer"].as_str().unwrap_or("").to_string(),
                        s["price"].as_f64().unwrap_or(-1.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

#[test]
fn highest_bid_wins_and_the_seller_is_paid_its_share() {
    let fleet = Fleet::start(vec![
        bidder("low", 4000, 5),
        bidder("high", 12000, 20),
        bidder("mid", 9000, 1),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let r = ex.client().lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "sold");
    assert_eq!(v["price"], 120.0);
    assert_eq!(v["payout"], 96.0);
    assert_eq!(sales(&v), vec![("high".to_string(), 120.0)]);
    assert_eq!(v["bids"], 3);
    assert!(v["lead_id"].as_str().is_some_and(|s| s.len() == 26));
    assert!(v["elapsed_ms"].as_u64().is_some());
    // Only the winner got the post.
    assert_eq!((fleet.posts(0), fleet.posts(1), fleet.posts(2)), (0, 1, 0));
}

#[test]
fn a_buyer_slower_than_the_deadline_is_left_out_and_the_seller_answered_in_time() {
    // ping_timeout_ms = 300: the 2 s buyer would have won but never answers in time.
    let fleet = Fleet::start(vec![bidder("slow", 50000, 2000), bidder("quick", 3000, 10)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let t = Instant::now();
    let r = c.lead(LEAD);
    let took = t.elapsed();
    let v = r.json();
    assert_eq!(sales(&v), vec![("quick".to_string(), 30.0)]);
    assert!(
        took < Duration::from_millis(300 + 50),
        "answered after {:?}",
        took
    );
    assert!(
        took >= Duration::from_millis(290),
        "closed before the deadline: {:?}",
        took
    );

    // The slow buyer's late answer must not reach the next lead: it bids 500 again, late again.
    let r = c.lead(LEAD);
    assert_eq!(sales(&r.json()), vec![("quick".to_string(), 30.0)]);
}

#[test]
fn shared_leads_go_to_the_top_n_distinct_buyers_each_at_its_own_bid() {
    let fleet = Fleet::start(vec![
        bidder("a", 2000, 1),
        bidder("b", 5000, 2),
        bidder("c", 800, 3),
        bidder("d", 4000, 4),
        bidder("e", 3000, 5),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "sale = \"shared\"\nmax_sales = 3", |_| {
        String::new()
    }));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold");
    assert_eq!(
        sales(&v),
        vec![
            ("b".to_string(), 50.0),
            ("d".to_string(), 40.0),
            ("e".to_string(), 30.0)
        ]
    );
    assert_eq!(v["price"], 120.0);
    assert_eq!(v["payout"], 96.0);
    for (i, posted) in [(0, 0), (1, 1), (2, 0), (3, 1), (4, 1)] {
        assert_eq!(fleet.posts(i), posted, "posts to buyer {}", i);
    }
}

#[test]
fn a_shared_leads_sales_come_best_first_and_its_payout_is_the_share_of_the_whole() {
    // The best bidder answers its post last; 80 % of 33.34 + 33.33 + 33.33 is 80.00, where
    // rounding each sale down would pay 79.99.
    let slow_poster = |name: &str, cents: i64, post_ms: u64| {
        BuyerSpec::new(name).with_responder(move |kind, _| match kind {
            Kind::Ping => Reply::bid(cents, None),
            Kind::Post => Reply::accepted().after_ms(post_ms),
        })
    };
    let fleet = Fleet::start(vec![
        slow_poster("a", 3333, 1),
        slow_poster("b", 3334, 200),
        slow_poster("c", 3333, 100),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "sale = \"shared\"\nmax_sales = 3", |_| {
        String::new()
    }));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    let in_order: Vec<&str> = v["sales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["buyer"].as_str().unwrap())
        .collect();
    // Ties go to the earlier bid, so a and c may come either way round after b.
    assert_eq!(in_order[0], "b", "{v}");
    assert_eq!(in_order.len(), 3);
    assert_eq!(v["price"], 100.0);
    assert_eq!(v["payout"], 80.0, "{v}");
}

#[test]
fn bids_below_the_reserve_price_are_not_sold() {
    let fleet = Fleet::start(vec![bidder("cheap", 499, 1), bidder("cheaper", 100, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "unsold");
    assert_eq!(v["price"], 0.0);
    assert_eq!(v["payout"], 0.0);
    assert_eq!(v["bids"], 2);
    assert_eq!(v["reason"], "below_reserve");
    assert_eq!(fleet.posts(0) + fleet.posts(1), 0);
}

#[test]
fn a_rejected_post_cascades_to_the_next_bid() {
    let fleet = Fleet::start(vec![
        rejecting_bidder("top", 9000),
        bidder("second", 7000, 1),
        bidder("third", 6000, 1),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold");
    assert_eq!(sales(&v), vec![("second".to_string(), 70.0)]);
    assert_eq!((fleet.posts(0), fleet.posts(1), fleet.posts(2)), (1, 1, 0));
}

#[test]
fn no_bid_forms_and_garbage_answers_are_no_bids() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("zero").with_responder(|_, _| Reply::json(200, &b"{\"bid\":0}"[..])),
        BuyerSpec::new("null").with_responder(|_, _| Reply::json(200, &b"{\"bid\":null}"[..])),
        BuyerSpec::new("nocontent").with_responder(|_, _| Reply::no_content()),
        BuyerSpec::new("garbage")
            .with_responder(|_, _| Reply::raw(&b"this is not http\r\n\r\n"[..])),
        BuyerSpec::new("badjson").with_responder(|_, _| Reply::json(200, &b"{bid: lots"[..])),
        BuyerSpec::new("error").with_responder(|_, _| Reply::json(500, &b"{\"bid\":90}"[..])),
        BuyerSpec::new("negative").with_responder(|_, _| Reply::json(200, &b"{\"bid\":-5}"[..])),
        BuyerSpec::new("hangup").with_responder(|_, _| Reply::raw(Vec::new()).closing()),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let t = Instant::now();
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "unsold");
    assert_eq!(v["bids"], 0);
    assert_eq!(v["reason"], "no_bids");
    // Every buyer answered (or failed) at once: no waiting for the 300 ms deadline.
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "took {:?}",
        t.elapsed()
    );
    for i in 0..fleet.len() {
        assert_eq!(fleet.posts(i), 0);
    }
}

/// A ping that waits for the buyer's one connection tells the buyer the time it really has
/// left when it is written, not the time the lead had when it was matched.
#[test]
fn a_ping_that_waited_for_a_connection_tells_the_time_really_left() {
    let slow = BuyerSpec::new("one-line").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(3000, None).after_ms(400),
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![slow]).unwrap();
    let ex = Exchange::start(
        &config(&fleet, "", |_| "max_connections = 1".to_string())
            .replace("ping_timeout_ms = 300", "ping_timeout_ms = 3000"),
    );
    for v in leads_at_once(&ex, 3) {
        assert_eq!(v["status"], "sold", "{v}");
    }
    let mut told: Vec<u64> = fleet
        .ping_bodies(0)
        .iter()
        .map(|b| body_json(b)["timeout_ms"].as_u64().expect("timeout_ms"))
        .collect();
    told.sort();
    assert_eq!(told.len(), 3, "{told:?}");
    // The last ping waited for two 400 ms answers on the one connection before it was
    // written: it was told at least 800 ms less than the first (a slower machine only makes
    // the wait longer).
    assert!(told[2] <= 3000, "{told:?}");
    assert!(
        told[2] - told[0] >= 700,
        "the last ping was told what was left: {told:?}"
    );
}

/// A buyer whose answers say `Connection: close` (or are HTTP/1.0) reads nothing more on
/// that connection: a request waiting for one of its connections gets a new one, never the
/// one whose answer closed it. With one connection, leads queued behind each other and
/// every post answered with a close, every lead sells and no request goes unanswered.
#[test]
fn a_connection_whose_answer_closes_it_is_not_given_the_next_request() {
    let closer = BuyerSpec::new("closer").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(3000, None).after_ms(30),
        Kind::Post => Reply::accepted().after_ms(30).closing(),
    });
    let fleet = Fleet::start(vec![closer]).unwrap();
    let ex = Exchange::start(
        &config(&fleet, "", |_| "max_connections = 1".to_string())
            .replace("ping_timeout_ms = 300", "ping_timeout_ms = 3000"),
    );
    for v in leads_at_once(&ex, 10) {
        assert_eq!(v["status"], "sold", "{v}");
    }
    assert_eq!(fleet.pings(0), 10);
    assert_eq!(fleet.posts(0), 10);
    // Every post's answer closed its connection: each took a new one for what came next.
    assert!(fleet.accepted_connections(0) >= 10);
    let st = ex.handle.as_ref().unwrap().stats();
    let errors: u64 = st
        .buyers()
        .filter(|(id, _)| *id == "closer")
        .map(|(_, b)| b.errors)
        .sum();
    assert_eq!(errors, 0);
}

/// A buyer of its own threads that answers each request after `delay`, without
/// `Connection: close`, and closes the connection `close_after` behind its answer, as a
/// server with a one-request keep-alive does. Its URL and the posts it read whole.
fn late_closing_buyer(delay: Duration, close_after: Duration) -> (String, Arc<AtomicUsize>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(256) {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                if read_whole_request(&mut stream, &mut req).is_none() {
                    return;
                }
                let post = req.starts_with(b"POST /post");
                if post {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(delay);
                let body = if post {
                    r#"{"status": "accepted"}"#
                } else {
                    r#"{"bid": 30.00}"#
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
                std::thread::sleep(close_after);
            });
        }
    });
    (url, posts)
}

/// A buyer that closes each connection a moment after its answer, without saying
/// `Connection: close`: a post waiting for its one connection is not written on the one that
/// has just answered (the buyer closes it as the post arrives, and the sale is lost), but on
/// one idle long enough to be known open, or a new one. Every lead sells, every post reaches
/// the buyer, none counts as a rejection.
#[test]
fn a_post_is_not_lost_to_a_buyer_that_closes_after_each_answer_unannounced() {
    let (url, posts) = late_closing_buyer(Duration::from_millis(20), Duration::from_micros(300));
    let fleet = Fleet::start(vec![bidder("closer", 3000, 1)]).unwrap();
    let toml = config(&fleet, "", |_| "max_connections = 1".to_string())
        .replace(&fleet.ping_url(0), &format!("{url}/ping"))
        .replace(&fleet.post_url(0), &format!("{url}/post"))
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 5000")
        .replace("post_timeout_ms = 500", "post_timeout_ms = 5000");
    assert!(toml.contains(&url));
    let ex = Exchange::start(&toml);
    let answers = leads_at_once(&ex, 20);
    let outcomes: Vec<String> = answers
        .iter()
        .map(|v| format!("{} {}", v["status"], v["reason"]))
        .collect();
    let sold = answers.iter().filter(|v| v["status"] == "sold").count();
    assert_eq!(sold, 20, "{outcomes:?}");
    assert_eq!(posts.load(Ordering::SeqCst), 20);
    let st = ex.handle.as_ref().unwrap().stats();
    let rejects: u64 = st
        .buyers()
        .filter(|(id, _)| *id == "closer")
        .map(|(_, b)| b.post_rejects)
        .sum();
    assert_eq!(rejects, 0);
}

/// A buyer held to one connection, answering in 40 ms, while leads come every 20 ms: its
/// waiting pings are not written in turn once each has almost no time left (it could then
/// never bid in time, and would sell nothing), but newest first once the queue stands, so
/// nearly every ping it receives has the time to be answered, and sells.
#[test]
fn a_buyer_whose_one_connection_is_saturated_is_pinged_with_time_to_bid() {
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = told.clone();
    let spec = BuyerSpec::new("one-line").with_responder(move |kind, body| match kind {
        Kind::Ping => {
            let t = body_json(body)["timeout_ms"].as_u64().unwrap_or(0);
            seen.lock().unwrap().push(t);
            Reply::bid(3000, Some("b-1")).after_ms(40)
        }
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![spec]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| "max_connections = 1".to_string()));
    let addr = ex.addr;
    let start = Instant::now();
    let sellers: Vec<_> = (0..150u32)
        .map(|i| {
            let due = start + Duration::from_millis(20 * u64::from(i));
            std::thread::spawn(move || {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let mut c = Client::connect(addr);
                c.lead(&LEAD.replace("7135550147", &format!("713555{i:04}")))
                    .json()
            })
        })
        .collect();
    let answers: Vec<Value> = sellers.into_iter().map(|t| t.join().unwrap()).collect();
    let sold = answers.iter().filter(|v| v["status"] == "sold").count();
    let told = told.lock().unwrap().clone();
    let short = told.iter().filter(|&&t| t < 100).count();
    assert!(told.len() >= 10, "pings received: {}", told.len());
    assert!(
        sold * 4 >= told.len() * 3,
        "{sold} sold of {} pings received; told under 100 ms: {short}; timeout_ms told: {told:?}",
        told.len()
    );
}

#[test]
fn the_ping_carries_only_ping_fields_and_the_post_the_full_lead() {
    let fleet = Fleet::start(vec![bidder("acme", 4250, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| {
        "headers = { \"X-Api-Key\" = \"acme-secret\" }".to_string()
    }));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold");
    let pings = fleet.ping_bodies(0);
    assert_eq!(pings.len(), 1);
    let ping = body_json(&pings[0]);
    assert_eq!(ping["ping_id"], v["lead_id"]);
    assert_eq!(ping["campaign"], "auto");
    assert_eq!(ping["vertical"], "auto_insurance");
    assert_eq!(ping["test"], false);
    assert!(ping["timeout_ms"]
        .as_u64()
        .is_some_and(|t| t > 0 && t <= 300));
    let mut keys: Vec<&str> = ping["lead"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["age", "insured", "lead_type", "state", "zip"]);
    let raw = String::from_utf8_lossy(&pings[0]).to_string();
    for personal in [
        "Ana",
        "Diaz",
        "ana@example.com",
        "7135550147",
        "12 Main St",
        "trustedform",
    ] {
        assert!(!raw.contains(personal), "ping leaked {}: {}", personal, raw);
    }

    let posts = fleet.post_bodies(0);
    assert_eq!(posts.len(), 1);
    let post = body_json(&posts[0]);
    assert_eq!(post["ping_id"], v["lead_id"]);
    assert_eq!(post["bid_id"], "b-1");
    assert_eq!(post["price"], 42.5);
    assert_eq!(post["lead"]["first_name"], "Ana");
    assert_eq!(post["lead"]["phone"], "7135550147");
    assert_eq!(post["lead"]["street"], "12 Main St");
    assert_eq!(
        post["consent"]["trustedform_cert_url"],
        "https://cert.trustedform.com/2f1e0c"
    );
}

/// A seller who nests the consumer inside a ping field does not get it pinged: the nested
/// personal members are left out of the ping, and the post still carries them.
#[test]
fn personal_members_nested_in_a_ping_field_are_not_pinged() {
    let fleet = Fleet::start(vec![bidder("acme", 4250, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let nested = r#""lead_type": {"kind": "auto", "first_name": "Ana", "contact": {"email": "ana@example.com"},
        "drivers": [{"age": 34, "phone": "7135550147", "dl_number": "D1234567"}]}"#;
    let v = ex
        .client()
        .lead(&LEAD.replace(r#""lead_type": "auto""#, nested))
        .json();
    assert_eq!(v["status"], "sold", "{v}");
    let ping = body_json(&fleet.ping_bodies(0)[0]);
    assert_eq!(
        ping["lead"]["lead_type"],
        serde_json::json!({"kind": "auto", "contact": {}, "drivers": [{"age": 34}]}),
        "{ping}"
    );
    let raw = String::from_utf8_lossy(&fleet.ping_bodies(0)[0]).to_string();
    for personal in ["Ana", "ana@example.com", "7135550147", "D1234567"] {
        assert!(!raw.contains(personal), "ping leaked {personal}: {raw}");
    }
    let post = body_json(&fleet.post_bodies(0)[0]);
    assert_eq!(post["lead"]["lead_type"]["first_name"], "Ana");
    assert_eq!(
        post["lead"]["lead_type"]["drivers"][0]["dl_number"],
        "D1234567"
    );
}

#[test]
fn sequential_leads_reuse_keep_alive_buyer_connections() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 1), bidder("b", 2000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    for _ in 0..30 {
        assert_eq!(c.lead(LEAD).json()["status"], "sold");
    }
    assert_eq!(fleet.pings(0), 30);
    assert_eq!(fleet.posts(1), 30);
    // One worker, keep-alive connections reused by all 30 leads: a request prefers one idle
    // for `REUSE_AFTER` (2 ms) and opens another while none is, so leads sent back to back
    // rotate over a few (3 and 5 here, leads 1.3 ms apart; a connection per request would
    // be 30 and 60); a post never follows its own lead's ping on one connection while
    // another may be opened.
    let (a, b) = (fleet.accepted_connections(0), fleet.accepted_connections(1));
    assert!(
        (1..15).contains(&a) && (2..30).contains(&b),
        "connections opened for 30 leads: {a} to buyer a, {b} to buyer b"
    );
}

#[test]
fn a_buyer_that_is_down_costs_only_its_own_bid() {
    // Bind and drop a listener to find a port where nobody listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fleet = Fleet::start(vec![bidder("alive", 2500, 1)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"dead\"\ncampaigns = [\"auto\"]\nping_url = \"http://{dead}/ping\"\npost_url = \"http://{dead}/post\"\n"
    ));
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for _ in 0..3 {
        let t = Instant::now();
        let v = c.lead(LEAD).json();
        assert_eq!(sales(&v), vec![("alive".to_string(), 25.0)]);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "took {:?}",
            t.elapsed()
        );
    }
    drop(ex);
    // The journal says why the buyer could not be reached, in the system's words.
    let reasons: Vec<String> = gavel::journal::read_all(&journal_dir_of(&toml))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PingResult { buyer, reason, .. } if buyer == "dead" => reason,
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for r in &reasons {
        assert!(
            r.contains("connect failed: connection refused"),
            "{reasons:?}"
        );
    }
}

#[test]
fn a_buyer_that_hangs_up_on_every_connection_is_not_reconnected_to_in_a_loop() {
    // Accepts every connection and closes it at once, as a load balancer with no backend does.
    let hangup = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hangup.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        for s in hangup.incoming() {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(s);
        }
    });
    let fleet = Fleet::start(vec![bidder("alive", 2500, 1)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"hangup\"\ncampaigns = [\"auto\"]\nping_url = \"http://{addr}/ping\"\npost_url = \"http://{addr}/post\"\nmin_idle = 2\n"
    ));
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(sales(&v), vec![("alive".to_string(), 25.0)], "{v}");
    // Three seconds with nothing to send: the warm connections it keeps closing are opened
    // again after a backoff of 50 ms doubling to 1 s, about ten times, not every 50 ms (60).
    std::thread::sleep(Duration::from_secs(3));
    let n = accepted.load(Ordering::Relaxed);
    assert!(n <= 20, "{n} connections in 3 s");
    let v = ex.client().lead(LEAD).json();
    assert_eq!(sales(&v), vec![("alive".to_string(), 25.0)], "{v}");
}

/// A warm connection idle past the buyer's `idle_timeout_ms` is closed by the exchange and
/// another opened in its place, so the exchange never holds one long enough for the buyer's
/// own keep-alive timeout to close it under a request.
#[test]
fn warm_buyer_connections_idle_past_the_idle_timeout_are_replaced() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (accepted.clone(), closed.clone());
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            use std::io::Read as _;
            a.fetch_add(1, Ordering::Relaxed);
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                // Nothing is sent on a warm connection: the read ends when the exchange
                // closes it.
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                c.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let fleet = Fleet::start(vec![bidder("alive", 2500, 1)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"warm\"\ncampaigns = [\"auto\"]\nping_url = \"http://{addr}/ping\"\npost_url = \"http://{addr}/post\"\nmin_idle = 1\nidle_timeout_ms = 200\n"
    ));
    let _ex = Exchange::start(&toml);
    let deadline = Instant::now() + Duration::from_secs(20);
    while closed.load(Ordering::Relaxed) < 2 {
        assert!(
            Instant::now() < deadline,
            "warm connections never closed: {} opened, {} closed",
            accepted.load(Ordering::Relaxed),
            closed.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each one closed was replaced: one stays open.
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::Relaxed) <= closed.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "not replaced");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A ping that waits for the buyer's one connection is timed from when it is written, not
/// from when it began waiting: the buyer's response time is its own.
#[test]
fn a_buyers_response_time_does_not_count_the_wait_for_a_free_connection() {
    let fleet = Fleet::start(vec![BuyerSpec::new("one").with_responder(
        |kind, _| match kind {
            // No bid: no post competes with the pings for the one connection.
            Kind::Ping => Reply::bid(0, None).after_ms(1000),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap();
    let toml = config(&fleet, "", |_| "max_connections = 1".to_string())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 6000");
    let ex = Exchange::start(&toml);
    let leads: Vec<_> = (0..3)
        .map(|_| {
            let mut c = ex.client();
            std::thread::spawn(move || c.lead(LEAD).json())
        })
        .collect();
    for l in leads {
        let v = l.join().unwrap();
        assert_eq!(v["status"], "unsold", "{v}");
    }
    drop(ex);
    let times: Vec<u64> = gavel::journal::read_all(&journal_dir_of(&toml))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PingResult { response_us, .. } => Some(response_us),
            _ => None,
        })
        .collect();
    assert_eq!(times.len(), 3, "{times:?}");
    // One after another on the one connection, each answered a second after it was written
    // (the second and third waited one and two seconds before that).
    for t in &times {
        assert!((1_000_000..1_900_000).contains(t), "{times:?}");
    }
}

/// A post that waits for the buyer's one connection gets its whole `post_timeout_ms` once
/// written: the buyer that takes the lead in time is billed for it (it was timed out, unbilled
/// and uncapped, though it had the consumer). One that finds no connection free within its
/// time is not sent at all.
#[test]
fn a_posts_timeout_does_not_count_the_wait_for_a_free_connection() {
    let fleet = Fleet::start(vec![BuyerSpec::new("one").with_responder(
        |kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None),
            Kind::Post => Reply::accepted().after_ms(1000),
        },
    )])
    .unwrap();
    let toml = config(&fleet, "hold_ms = 60000", |_| {
        "max_connections = 1".to_string()
    })
    .replace("post_timeout_ms = 500", "post_timeout_ms = 1300");
    let ex = Exchange::start(&toml);
    // Three bids held first, then three posts: they queue for the one connection.
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let full: serde_json::Value = serde_json::from_str(LEAD).unwrap();
    let mut c = ex.client();
    let posts: Vec<_> = (0..3)
        .map(|_| {
            let v = c.post("/v1/ping", Some(KEY), ping.as_bytes()).json();
            assert_eq!(v["status"], "bid", "{v}");
            serde_json::to_vec(&serde_json::json!({
                "ping_id": v["ping_id"], "lead": full["lead"], "consent": full["consent"]
            }))
            .unwrap()
        })
        .collect();
    // Sent 200 ms apart, so they queue in that order.
    let answers: Vec<_> = posts
        .into_iter()
        .map(|body| {
            let mut c = ex.client();
            let a = std::thread::spawn(move || c.post("/v1/post", Some(KEY), &body).json());
            std::thread::sleep(Duration::from_millis(200));
            a
        })
        .collect();
    let statuses: Vec<(String, String)> = answers
        .into_iter()
        .map(|a| {
            let v = a.join().unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (s("status"), s("reason"))
        })
        .collect();
    // The first written at once, the second (waiting since 0.2 s) a second in, each answered
    // a second after it was written; the third, waiting since 0.4 s behind the second, would
    // have been written two seconds in, past its 1.3 s: the buyer was busy, it refused nothing.
    let sold = ("sold".to_string(), String::new());
    let busy = ("unsold".to_string(), "buyers_busy".to_string());
    assert_eq!(statuses, vec![sold.clone(), sold, busy]);
    assert_eq!(fleet.posts(0), 2);
    drop(ex);
    let mut results: Vec<(bool, Option<String>)> = gavel::journal::read_all(&journal_dir_of(&toml))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PostResult {
                accepted, reason, ..
            } => Some((accepted, reason)),
            _ => None,
        })
        .collect();
    results.sort();
    assert_eq!(
        results,
        vec![
            (
                false,
                Some("not sent: no free connection to the buyer within post_timeout_ms".into())
            ),
            (true, None),
            (true, None),
        ],
        "{results:?}"
    );
}

#[test]
fn a_buyer_back_after_an_outage_is_pinged_again_within_the_backoff() {
    // The buyer's port is free while it is "down"; later a buyer bidding more listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fleet = Fleet::start(vec![bidder("alive", 2500, 1)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"phoenix\"\ncampaigns = [\"auto\"]\nping_url = \"http://127.0.0.1:{port}/ping\"\npost_url = \"http://127.0.0.1:{port}/post\"\nmin_idle = 1\n"
    ));
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    // Seven seconds down, with leads coming: every failed connect doubles the backoff, from
    // 50 ms up to its cap.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(7) {
        let v = c.lead(LEAD).json();
        assert_eq!(sales(&v), vec![("alive".to_string(), 25.0)], "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = Fleet::start_with(
        vec![bidder("phoenix", 6000, 1)],
        gavel::sim::buyer::FleetOptions {
            base_port: Some(port),
            ..Default::default()
        },
    )
    .unwrap();
    let up = Instant::now();
    let recovered = loop {
        let v = c.lead(LEAD).json();
        if sales(&v) == vec![("phoenix".to_string(), 60.0)] {
            break up.elapsed();
        }
        assert_eq!(sales(&v), vec![("alive".to_string(), 25.0)], "{v}");
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "the buyer was never used again"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The backoff is at most 1 s; the rest is slack for a loaded machine. (A cap of 5 s would
    // keep the buyer out for about 4 s here.)
    assert!(
        recovered < Duration::from_millis(2500),
        "back after {recovered:?}"
    );
    assert!(back.pings(0) >= 1);
}

#[test]
fn auth_and_error_codes() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();

    let r = c.post("/v1/leads", None, LEAD.as_bytes());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let r = c.post("/v1/leads", Some("sk-nobody-000000000"), LEAD.as_bytes());
    assert_eq!(r.status, 401);

    let r = c.post("/v1/leads", Some(OTHER_KEY), LEAD.as_bytes());
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "forbidden");

    let r = c.lead(&LEAD.replace("\"campaign\": \"auto\"", "\"campaign\": \"nope\""));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["field"], "campaign");

    let r = c.post("/v1/nothing", Some(KEY), b"{}");
    assert_eq!(r.status, 404);

    // A known path with the wrong method: 405, saying which method it takes.
    for (request, allow) in [
        (
            "GET /v1/leads HTTP/1.1\r\nHost: x\r\n\r\n",
            "Allow: POST\r\n",
        ),
        (
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "Allow: GET, HEAD\r\n",
        ),
        (
            "DELETE /v1/leads/01JD0000000000000000000000 HTTP/1.1\r\nHost: x\r\n\r\n",
            "Allow: GET\r\n",
        ),
        (
            "POST /v1/leads/01JD0000000000000000000000 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "Allow: GET\r\n",
        ),
    ] {
        let mut raw = std::net::TcpStream::connect(ex.addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut raw, request.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            match std::io::Read::read(&mut raw, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&got);
        assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
        assert!(head.contains(allow), "{head}");
    }

    let r = c.lead("{\"campaign\": \"auto\", \"lead\": ");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["code"].is_string());

    let r = c.lead(&LEAD.replace("\"phone\": \"7135550147\",", ""));
    assert_eq!(r.status, 422);
    let v = r.json();
    assert_eq!(v["status"], "rejected");
    assert!(v["lead_id"].is_string());
    assert_eq!(v["error"]["code"], "missing_field");
    assert_eq!(v["error"]["field"], "lead.phone");

    let r = c.lead(&LEAD.replace(
        "\"vertical\": \"auto_insurance\"",
        "\"vertical\": \"solar\"",
    ));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "consent_mismatch");

    // The connection stayed usable through all of that.
    assert_eq!(c.lead(LEAD).json()["status"], "sold");

    // A body over max_body_bytes (64 KiB by default): 413.
    let big = format!(
        "{{\"campaign\":\"auto\",\"lead\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(70_000)
    );
    let r = ex.client().post("/v1/leads", Some(KEY), big.as_bytes());
    assert_eq!(r.status, 413);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "body_too_large");
    assert!(
        e["message"].as_str().unwrap().contains("65536 bytes"),
        "{e}"
    );
}

#[test]
fn malformed_http_is_400_and_the_connection_closed() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));

    let mut c = ex.client();
    c.send_raw(b"POST /v1/leads HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 400);
    assert!(!r.keep_alive);
    assert!(c.read_response().is_none(), "connection must be closed");

    let mut c = ex.client();
    let mut req = b"POST /v1/leads HTTP/1.1\r\nHost: x\r\n".to_vec();
    req.extend_from_slice(format!("X-Big: {}\r\n", "a".repeat(17 * 1024)).as_bytes());
    req.extend_from_slice(b"\r\n");
    c.send_raw(&req);
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 400);
    assert!(c.read_response().is_none());

    let mut c = ex.client();
    let mut req = b"POST /v1/leads HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..101 {
        req.extend_from_slice(format!("X-H{}: v\r\n", i).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    c.send_raw(&req);
    assert_eq!(c.read_response().expect("an answer").status, 400);

    let mut c = ex.client();
    c.send_raw(b"POST /v1/leads HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    assert_eq!(c.read_response().expect("an answer").status, 400);
    assert!(c.read_response().is_none());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // The first lead waits on a 100 ms buyer; the health check behind it must still come second.
    let fleet = Fleet::start(vec![bidder("a", 1000, 100)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let mut bytes = Client::request("POST", "/v1/leads", Some(KEY), LEAD.as_bytes());
    bytes.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    bytes.extend_from_slice(&Client::request("POST", "/v1/leads", None, b"{}"));
    c.send_raw(&bytes);
    let first = c.read_response().unwrap();
    let second = c.read_response().unwrap();
    let third = c.read_response().unwrap();
    assert_eq!(first.json()["status"], "sold");
    assert_eq!(second.status, 200);
    assert_eq!(third.status, 401);
}

#[test]
fn chunked_requests_and_connection_close_are_honoured() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let body = LEAD.as_bytes();
    let (a, b) = body.split_at(100);
    let mut req = format!(
        "POST /v1/leads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        KEY
    )
    .into_bytes();
    for part in [a, b] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send_raw(&req);
    let r = c.read_response().unwrap();
    assert_eq!(r.json()["status"], "sold");
    assert!(!r.keep_alive);
    assert!(c.read_response().is_none());
}

#[test]
fn too_many_auctions_in_flight_is_503_with_retry_after() {
    let fleet = Fleet::start(vec![bidder("slow", 1000, 200)]).unwrap();
    let toml =
        config(&fleet, "", |_| String::new()).replace("max_in_flight = 1000", "max_in_flight = 1");
    let ex = Exchange::start(&toml);
    let mut first = ex.client();
    first.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.as_bytes(),
    ));
    std::thread::sleep(Duration::from_millis(50));
    let r = ex.client().lead(LEAD);
    assert_eq!(r.status, 503);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert_eq!(first.read_response().unwrap().json()["status"], "sold");
    // Once the first finished, there is room again.
    assert_eq!(ex.client().lead(LEAD).status, 200);
}

#[test]
fn a_seller_over_its_rate_gets_429_with_retry_after() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "payout_share = 0.80",
        "payout_share = 0.80\nmax_leads_per_second = 3",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = (0..10).map(|_| c.lead(LEAD).status).collect();
    assert!(statuses.contains(&429), "{:?}", statuses);
    // The second slides: however the ten fall across a clock second's boundary, no more
    // than three are taken while they are sent within 990 ms.
    if started.elapsed() < Duration::from_millis(990) {
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            3,
            "{statuses:?}"
        );
    }
    let r = c.lead(LEAD);
    if r.status == 429 {
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert_eq!(r.json()["error"]["code"], "rate_limited");
    }
}

/// A seller at its limit just before a clock second's boundary gets nothing more just after it:
/// `max_leads_per_second` holds over any second, not per clock second.
#[test]
fn a_sellers_rate_holds_across_a_clock_seconds_boundary() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "payout_share = 0.80",
        "payout_share = 0.80\nmax_leads_per_second = 2",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    // Wait for 700 ms into a clock second, take the two, then cross into the next second.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = u64::from(now.subsec_millis());
    std::thread::sleep(Duration::from_millis((1700 - into) % 1000));
    let started = std::time::Instant::now();
    assert_eq!(c.lead(LEAD).status, 200);
    assert_eq!(c.lead(LEAD).status, 200);
    let to_boundary = 1000
        - u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_millis(),
        );
    std::thread::sleep(Duration::from_millis(to_boundary + 50));
    let r = c.lead(LEAD);
    // Only meaningful when the machine kept the three within the second they must share.
    if started.elapsed() < Duration::from_millis(980) {
        assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    }
    // A second after the first two (and a slot's width more), room again.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed()));
    assert_eq!(c.lead(LEAD).status, 200);
}

/// Pipelined requests beyond what the exchange buffers at once are read as room frees up,
/// on plain connections whose bytes all arrived in one burst (no later event announces them).
#[test]
fn a_burst_of_pipelined_requests_larger_than_the_buffer_is_answered_in_full() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    // A small body limit makes the buffer (head + body limits) small.
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nmax_body_bytes = 4096",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let pad = "x".repeat(400);
    let one = format!("GET /nope HTTP/1.1\r\nHost: gavel\r\nX-Pad: {pad}\r\n\r\n");
    let n = 400; // about 180 KB: many times the buffer
    let burst = one.repeat(n).into_bytes();
    let mut writer = c.stream.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&burst).is_ok()
    });
    for i in 0..n {
        let r = c.read_response();
        assert_eq!(r.map(|r| r.status), Some(404), "answer {i} of {n}");
    }
    assert!(sent.join().unwrap());
}

/// Leads pipelined past the pipeline limit wait in the buffer while the earlier ones are
/// auctioned; that wait is the exchange's, so the head timeout does not cut the connection
/// (and with it the answers of the leads in flight).
#[test]
fn leads_pipelined_past_the_limit_are_all_answered_however_long_the_auctions() {
    let fleet = Fleet::start(vec![bidder("slow", 1000, 400)]).unwrap();
    let toml = config(&fleet, "", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 1000")
        .replace(
            "max_in_flight = 1000",
            "max_in_flight = 1000\nhead_timeout_ms = 150",
        );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let n = gavel::net::MAX_PIPELINED + 8;
    let mut burst = Vec::new();
    for _ in 0..n {
        burst.extend_from_slice(&Client::request(
            "POST",
            "/v1/leads",
            Some(KEY),
            LEAD.as_bytes(),
        ));
    }
    c.send_raw(&burst);
    for i in 0..n {
        let r = c.read_response();
        assert_eq!(r.map(|r| r.status), Some(200), "answer {i} of {n}");
    }
}

/// `Connection: close` (or HTTP/1.0) ends the connection after its answer, whatever the client
/// sent after it.
#[test]
fn a_request_asking_to_close_closes_even_with_more_bytes_behind_it() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    for first in [
        "GET /healthz HTTP/1.1\r\nHost: gavel\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.0\r\n\r\n",
    ] {
        let mut c = ex.client();
        c.send_raw(format!("{first}GET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n").as_bytes());
        let r = c.read_response().expect("the first answer");
        assert!(
            !r.keep_alive,
            "{first:?}: the answer must say Connection: close"
        );
        let t = Instant::now();
        assert!(
            c.read_response().is_none(),
            "{first:?}: the second request was answered"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{first:?}: closed after {:?}",
            t.elapsed()
        );
    }
}

/// `answer_timeout_ms`: a cascade post that could not be answered by then is not started,
/// so buyers that each reject slowly cannot hold the seller's answer; without it the cascade
/// goes on to the buyer that accepts.
#[test]
fn the_answer_timeout_stops_a_slow_cascade() {
    let slow_reject = |name: &str, cents: i64| {
        BuyerSpec::new(name).with_responder(move |kind, _| match kind {
            Kind::Ping => Reply::bid(cents, None),
            Kind::Post => Reply::rejected("full").after_ms(450),
        })
    };
    for bounded in [false, true] {
        let fleet = Fleet::start(vec![
            slow_reject("slow-1", 9000),
            slow_reject("slow-2", 8000),
            bidder("fast", 7000, 0),
        ])
        .unwrap();
        // post_timeout_ms is 500: the third post could end no earlier than 450 + 450 + 500 ms
        // after the close, past 1,300.
        let extra = if bounded {
            "answer_timeout_ms = 1300"
        } else {
            ""
        };
        let ex = Exchange::start(&config(&fleet, extra, |_| String::new()));
        let v = ex.client().lead(LEAD).json();
        assert_eq!(fleet.posts(0), 1, "{v}");
        if bounded {
            assert_eq!(v["status"], "unsold", "{v}");
            assert_eq!(v["reason"], "posts_rejected", "{v}");
            assert_eq!(fleet.posts(2), 0, "posted past the answer timeout: {v}");
        } else {
            assert_eq!(v["status"], "sold", "{v}");
            assert_eq!(v["sales"][0]["buyer"], "fast", "{v}");
        }
    }
}

/// Reads one answer's raw head and body off `stream` (Content-Length framed).
fn raw_answer(stream: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let n = std::io::Read::read(stream, &mut chunk).expect("read answer");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP/1.0 client that asks for keep-alive is told `Connection: keep-alive` on every
/// answer (without it, such a client takes the answer as the connection's last), and the
/// connection carries its next request; an HTTP/1.1 client is told nothing.
#[test]
fn an_http10_keep_alive_client_is_told_the_connection_stays_open() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut stream = std::net::TcpStream::connect(ex.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let lead = LEAD;
    let requests = [
        "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_string(),
        format!(
            "POST /v1/leads HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{lead}",
            lead.len()
        ),
        "GET /v1/nothing HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_string(),
    ];
    for (req, status) in requests.iter().zip(["200", "200", "404"]) {
        std::io::Write::write_all(&mut stream, req.as_bytes()).unwrap();
        let (head, body) = raw_answer(&mut stream, &mut buf);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{req:?}: {head}\n{}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            head.lines().any(|l| l == "Connection: keep-alive"),
            "{req:?}: the answer must announce keep-alive:\n{head}"
        );
    }
    // HTTP/1.1 keeps the connection by default: nothing is announced.
    let mut stream = std::net::TcpStream::connect(ex.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n")
        .unwrap();
    let (head, _) = raw_answer(&mut stream, &mut Vec::new());
    assert!(!head.to_ascii_lowercase().contains("connection:"), "{head}");
}

/// A client that sends its request and then closes its side gets its answer and the
/// connection closed at once, not at the idle timeout.
#[test]
fn a_client_that_half_closes_is_answered_and_closed() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    for _ in 0..20 {
        let mut c = ex.client();
        c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n");
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(c.read_response().map(|r| r.status), Some(200));
        let t = Instant::now();
        assert!(c.read_response().is_none());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "closed after {:?}",
            t.elapsed()
        );
    }
}

/// A hand-made buyer endpoint: for each request on each connection, run `behave` on the socket.
fn raw_buyer(behave: fn(&mut std::net::TcpStream)) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                // One request per connection is enough to misbehave on.
                if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    behave(&mut s);
                }
            });
        }
    });
    addr
}

#[test]
fn hostile_buyers_cost_only_their_own_bid() {
    use std::io::Write;
    let drip = raw_buyer(|s| {
        // A valid head, then the body one byte every 100 ms: never whole before the deadline.
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n");
        for b in b"{\"bid\": 999.0}" {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(&[*b]).is_err() {
                return;
            }
        }
    });
    let half_close = raw_buyer(|s| {
        let _ = s.shutdown(std::net::Shutdown::Write);
        std::thread::sleep(Duration::from_secs(2));
    });
    let reset = raw_buyer(|s| {
        // Linger 0: close with a TCP reset instead of a FIN.
        let sock = socket2::SockRef::from(&*s);
        let _ = sock.set_linger(Some(Duration::ZERO));
    });
    let silent = raw_buyer(|_| std::thread::sleep(Duration::from_secs(3)));
    let fleet = Fleet::start(vec![bidder("honest", 2500, 5)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    for (name, addr) in [
        ("drip", drip),
        ("halfclose", half_close),
        ("reset", reset),
        ("silent", silent),
    ] {
        toml.push_str(&format!(
            "\n[[buyers]]\nid = \"{name}\"\ncampaigns = [\"auto\"]\nping_url = \"http://{addr}/ping\"\npost_url = \"http://{addr}/post\"\nmin_idle = 0\n"
        ));
    }
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for _ in 0..3 {
        let (v, took) = timed_lead(&mut c);
        assert_eq!(sales(&v), vec![("honest".to_string(), 25.0)], "{}", v);
        assert_eq!(v["bids"], 1);
        assert!(
            took < Duration::from_millis(300 + 50),
            "answered after {:?}",
            took
        );
    }
}

/// A buyer whose answers carry both Content-Length and Transfer-Encoding (the response-
/// splitting pattern): each answer is read by its Transfer-Encoding, so its bid counts and
/// the lead sells to it, but no connection of its carries a second request.
#[test]
fn an_answer_framed_both_ways_is_read_but_its_connection_is_not_used_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static MOST_ON_ONE: AtomicUsize = AtomicUsize::new(0);
    static REQUESTS: AtomicUsize = AtomicUsize::new(0);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                use std::io::Write;
                let mut req = Vec::new();
                let mut served = 0;
                loop {
                    let Some(len) = read_whole_request(&mut s, &mut req) else {
                        return;
                    };
                    let body: &[u8] = if req.starts_with(b"POST /post") {
                        br#"{"status": "accepted"}"#
                    } else {
                        br#"{"bid": 50.0}"#
                    };
                    req.drain(..len);
                    served += 1;
                    REQUESTS.fetch_add(1, Ordering::SeqCst);
                    MOST_ON_ONE.fetch_max(served, Ordering::SeqCst);
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 200\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                        body.len()
                    )
                    .into_bytes();
                    answer.extend_from_slice(body);
                    answer.extend_from_slice(b"\r\n0\r\n\r\n");
                    if s.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let fleet = Fleet::start(vec![bidder("honest", 2500, 5)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"mixed\"\ncampaigns = [\"auto\"]\nping_url = \"http://{addr}/ping\"\npost_url = \"http://{addr}/post\"\nmin_idle = 0\n"
    ));
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..3 {
        let lead = LEAD.replace("ana@example.com", &format!("mixed{i}@example.com"));
        let v = c.lead(&lead).json();
        assert_eq!(sales(&v), vec![("mixed".to_string(), 50.0)], "{v}");
    }
    assert_eq!(
        REQUESTS.load(Ordering::SeqCst),
        6,
        "a ping and a post a lead"
    );
    assert_eq!(
        MOST_ON_ONE.load(Ordering::SeqCst),
        1,
        "a connection was used again"
    );
}

/// The length of the whole request at the start of `req` (its head, then Content-Length bytes
/// of body), once it is all there.
fn whole_request_len(req: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(req);
    let end = text.find("\r\n\r\n")?;
    let len = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    (req.len() >= end + 4 + len).then_some(end + 4 + len)
}

/// Read from `s` into `req` until it holds a whole request: its length, `None` when the peer
/// closed (or the read failed) first.
fn read_whole_request(s: &mut std::net::TcpStream, req: &mut Vec<u8>) -> Option<usize> {
    use std::io::Read;
    let mut buf = [0u8; 8192];
    loop {
        if let Some(len) = whole_request_len(req) {
            return Some(len);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
}

/// A buyer that answers each request and closes the connection in the same TCP segment (as a
/// plain HTTP/1.0 server does): `framed` answers carry a Content-Length, the others end at the
/// close. Counts the posts it accepted.
fn closing_buyer(
    framed: bool,
    posts: &'static std::sync::atomic::AtomicUsize,
) -> std::net::SocketAddr {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(256) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut req = Vec::new();
                if read_whole_request(&mut s, &mut req).is_none() {
                    return;
                }
                let body: &[u8] = if req.starts_with(b"POST /post") {
                    posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    br#"{"status": "accepted"}"#
                } else {
                    br#"{"bid": 40.0}"#
                };
                let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
                if framed {
                    answer.extend_from_slice(
                        format!("Content-Length: {}\r\n", body.len()).as_bytes(),
                    );
                }
                answer.extend_from_slice(b"\r\n");
                answer.extend_from_slice(body);
                // Corked, the answer and the FIN leave as one segment.
                let one: libc::c_int = 1;
                // SAFETY: setsockopt on a socket this thread owns, with a c_int option value.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_CORK,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
                let _ = s.write_all(&answer);
                let _ = s.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// An answer that arrives together with the buyer's close is still the buyer's answer: its
/// bid counts, its acceptance is a sale, and the connection is not given another request.
#[test]
fn answers_that_arrive_with_the_close_are_taken() {
    static UNFRAMED_POSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static FRAMED_POSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for (framed, posts) in [(false, &UNFRAMED_POSTS), (true, &FRAMED_POSTS)] {
        let closer = closing_buyer(framed, posts);
        let fleet = Fleet::start(vec![bidder("honest", 2500, 0)]).unwrap();
        let mut toml = config(&fleet, "", |_| String::new())
            .replace("ping_timeout_ms = 300", "ping_timeout_ms = 2000");
        toml.push_str(&format!(
            "\n[[buyers]]\nid = \"closer\"\ncampaigns = [\"auto\"]\nping_url = \"http://{closer}/ping\"\npost_url = \"http://{closer}/post\"\nmin_idle = 1\n"
        ));
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        for i in 0..5 {
            let (v, took) = timed_lead(&mut c);
            assert_eq!(
                sales(&v),
                vec![("closer".to_string(), 40.0)],
                "framed {framed}, lead {i}: {v}"
            );
            assert_eq!(v["bids"], 2, "{v}");
            // Every buyer answered: the auction closed without waiting out its 2 s.
            assert!(
                took < Duration::from_millis(1500),
                "framed {framed}: answered after {took:?}"
            );
        }
        assert_eq!(
            posts.load(std::sync::atomic::Ordering::SeqCst),
            5,
            "framed {framed}"
        );
        assert_eq!(
            fleet.posts(0),
            0,
            "framed {framed}: the lead went to a second buyer"
        );
    }
}

/// An HTTP/1.1 200 answer carrying `body`.
fn http_ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A hand-made keep-alive buyer on loopback: each whole request on a connection goes to
/// `on_request(is_post, n, stream)`, `n` counting requests of that kind on the connection from
/// 1, which writes what it likes; `false` hangs up. At most 256 connections.
fn keep_alive_buyer(
    on_request: impl Fn(bool, usize, &mut std::net::TcpStream) -> bool + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let on_request = std::sync::Arc::new(on_request);
    std::thread::spawn(move || {
        for s in l.incoming().take(256) {
            let Ok(mut s) = s else { return };
            let on_request = on_request.clone();
            std::thread::spawn(move || {
                let mut req: Vec<u8> = Vec::new();
                let mut buf = [0u8; 8192];
                let mut seen = [0usize; 2];
                loop {
                    let whole = loop {
                        if let Some(n) = whole_request_len(&req) {
                            break n;
                        }
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    };
                    let post = req.starts_with(b"POST /post");
                    req.drain(..whole);
                    seen[usize::from(post)] += 1;
                    if !on_request(post, seen[usize::from(post)], &mut s) {
                        return; // the stream is dropped: the buyer hangs up
                    }
                }
            });
        }
    });
    addr
}

/// A keep-alive buyer that answers each ping twice: its bid, then 1 ms later an unasked
/// `accepted`. Its real answer to a post is a rejection, 20 ms later. Counts the posts.
fn answering_twice_buyer(posts: &'static std::sync::atomic::AtomicUsize) -> std::net::SocketAddr {
    use std::io::Write;
    keep_alive_buyer(move |post, _, s| {
        let sent = if post {
            posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(http_ok(r#"{"status": "rejected", "reason": "dup"}"#).as_bytes())
        } else {
            s.write_all(http_ok(r#"{"bid": 30.0}"#).as_bytes())
                .and_then(|_| {
                    std::thread::sleep(Duration::from_millis(1));
                    s.write_all(http_ok(r#"{"status": "accepted"}"#).as_bytes())
                })
        };
        sent.is_ok()
    })
}

/// A second answer a buyer sends to its ping is never taken for its answer to the post that
/// follows: the post goes on another connection, the stray answer closes the one it lands on,
/// and the buyer's real rejection of the post stands. It is never billed; the next bid buys.
#[test]
fn a_buyers_second_answer_to_a_ping_is_not_its_answer_to_the_post() {
    static POSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    leads_to_a_buyer_answering_twice(&POSTS, 2);
}

/// The same when the connection that carried the ping is the buyer's only idle one: the post
/// is not written on the connection of its own lead's ping, but on a new one.
#[test]
fn a_buyers_second_answer_to_a_ping_is_not_its_answer_to_the_post_on_its_only_connection() {
    static POSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    leads_to_a_buyer_answering_twice(&POSTS, 1);
}

/// A second answer written with the first, in one write, is read with it: the connection is
/// closed, not handed to the ping waiting for it, which would take the extra answer for its own.
/// With the buyer held to one connection, ten leads at once all sell at the buyer's real bid.
#[test]
fn a_second_answer_read_with_the_first_is_not_given_to_the_request_waiting() {
    use std::io::Write;
    let both = keep_alive_buyer(|post, _, s| {
        let sent = if post {
            s.write_all(http_ok(r#"{"status": "accepted"}"#).as_bytes())
        } else {
            let twice = http_ok(r#"{"bid": 30.0}"#) + &http_ok(r#"{"bid": 99.0}"#);
            s.write_all(twice.as_bytes())
        };
        sent.is_ok()
    });
    let fleet = Fleet::start(vec![bidder("honest", 2000, 0)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 3000");
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"both\"\ncampaigns = [\"auto\"]\nping_url = \"http://{both}/ping\"\npost_url = \"http://{both}/post\"\nmin_idle = 1\nmax_connections = 1\n"
    ));
    let ex = Exchange::start(&toml);
    for v in leads_at_once(&ex, 10) {
        assert_eq!(sales(&v), vec![("both".to_string(), 30.0)], "{v}");
    }
}

/// An answer of the wrong kind (a post's answer to a ping, a bid to a post) may be one the
/// buyer sent for another request: the connection it came on is closed rather than given the
/// next request, while a buyer answering in kind keeps its connection.
#[test]
fn a_connection_that_answers_out_of_kind_is_not_used_again() {
    let fleet = Fleet::start(vec![
        BuyerSpec::new("odd").with_responder(|k, _| match k {
            Kind::Ping => Reply::json(200, r#"{"status": "accepted"}"#),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("good").with_responder(|k, _| match k {
            Kind::Ping => Reply::bid(1000, None),
            Kind::Post => Reply::json(200, r#"{"bid": 10}"#),
        }),
    ])
    .unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    for _ in 0..4 {
        let v = c.lead(LEAD).json();
        // The good buyer's post answer is a bid: not a sale.
        assert_eq!(
            (v["status"].as_str(), v["reason"].as_str()),
            (Some("unsold"), Some("posts_rejected")),
            "{v}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((fleet.pings(0), fleet.pings(1), fleet.posts(1)), (4, 4, 4));
    // Each out-of-kind answer closed its connection: a new one for every lead.
    assert!(
        fleet.accepted_connections(0) >= 4,
        "odd: {}",
        fleet.accepted_connections(0)
    );
    assert!(
        fleet.accepted_connections(1) >= 4,
        "good: {}",
        fleet.accepted_connections(1)
    );
}

/// Leads sent together to a buyer that answers each ping twice, its bid and 300 µs later an
/// unasked higher one: no lead takes another lead's stray answer for its bid or for its
/// post's answer while the buyer has connections idle longer, or room for another (every sale
/// at the real bid, every post the buyer took billed).
#[test]
fn leads_sent_together_never_take_another_leads_second_answer() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static POSTS: AtomicUsize = AtomicUsize::new(0);
    // The longest the buyer took between its two answers, in µs: a machine too busy to write
    // the second within the exchange's `REUSE_AFTER` (2 ms) of the first is no test of it.
    static GAP_US: AtomicUsize = AtomicUsize::new(0);
    let twice = keep_alive_buyer(|post, _, s| {
        let sent = if post {
            POSTS.fetch_add(1, Ordering::SeqCst);
            s.write_all(http_ok(r#"{"status": "accepted"}"#).as_bytes())
        } else {
            let first = Instant::now();
            s.write_all(http_ok(r#"{"bid": 30.0}"#).as_bytes())
                .and_then(|_| {
                    std::thread::sleep(Duration::from_micros(300));
                    let sent = s.write_all(http_ok(r#"{"bid": 31.0}"#).as_bytes());
                    GAP_US.fetch_max(first.elapsed().as_micros() as usize, Ordering::SeqCst);
                    sent
                })
        };
        sent.is_ok()
    });
    let fleet = Fleet::start(vec![bidder("honest", 2000, 0)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"twice\"\ncampaigns = [\"auto\"]\nping_url = \"http://{twice}/ping\"\npost_url = \"http://{twice}/post\"\nmin_idle = 4\nmax_connections = 16\n"
    ));
    let ex = Exchange::start(&toml);
    let mut answers = Vec::new();
    for _ in 0..10 {
        // Time for the stray answers to close their connections, and warm ones to open.
        std::thread::sleep(Duration::from_millis(50));
        answers.extend(leads_at_once(&ex, 4));
    }
    let gap = GAP_US.load(Ordering::SeqCst);
    if gap > 1_500 {
        eprintln!("the buyer's two answers came up to {gap} µs apart: not judged");
        return;
    }
    for (i, v) in answers.iter().enumerate() {
        assert_eq!(sales(v), vec![("twice".to_string(), 30.0)], "lead {i}: {v}");
    }
    let st = ex.handle.as_ref().unwrap().stats();
    let wins: u64 = st
        .buyers()
        .filter(|(id, _)| *id == "twice")
        .map(|(_, b)| b.wins)
        .sum();
    assert_eq!(wins, 40);
    assert_eq!(POSTS.load(Ordering::SeqCst), 40);
}

/// Eight leads, one at a time, to [`answering_twice_buyer`] (`min_idle` warm connections, at
/// most 4) and an honest buyer bidding less: each is sold to the honest one, and the one
/// answering twice is posted every lead and billed none.
fn leads_to_a_buyer_answering_twice(posts: &'static std::sync::atomic::AtomicUsize, min_idle: u32) {
    let twice = answering_twice_buyer(posts);
    let fleet = Fleet::start(vec![bidder("honest", 2000, 0)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"twice\"\ncampaigns = [\"auto\"]\nping_url = \"http://{twice}/ping\"\npost_url = \"http://{twice}/post\"\nmin_idle = {min_idle}\nmax_connections = 4\n"
    ));
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for i in 0..8 {
        // Time for the stray answer to close its connection, and the warm ones to open again.
        std::thread::sleep(Duration::from_millis(150));
        let v = c.lead(LEAD).json();
        assert_eq!(
            sales(&v),
            vec![("honest".to_string(), 20.0)],
            "lead {i}: {v}"
        );
    }
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 8);
    let st = ex.handle.as_ref().unwrap().stats();
    let twice_spent: i64 = st
        .buyers()
        .filter(|(id, _)| *id == "twice")
        .map(|(_, b)| b.spent_cents)
        .sum();
    assert_eq!(twice_spent, 0);
}

#[test]
fn a_client_sending_its_head_too_slowly_is_disconnected() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    // 10 s in production; 300 ms here so the test is quick.
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nhead_timeout_ms = 300",
    );
    let ex = Exchange::start(&toml);
    // A client that connects and sends nothing at all is a head that never comes.
    let mut silent = ex.client();
    let t = Instant::now();
    assert!(silent.read_response().is_none());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "a silent connection was closed after {waited:?}"
    );
    let mut c = ex.client();
    let t = Instant::now();
    for b in b"POST /v1/leads HTTP/1.1\r\nHo" {
        c.send_raw(&[*b]);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Nothing more: the exchange must hang up by itself, with no answer. Its 300 ms run from
    // the accept, which may come a moment before `t` (as for the silent client above).
    assert!(c.read_response().is_none());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {:?}",
        waited
    );
    assert!(
        waited < Duration::from_secs(3),
        "closed too late: {:?}",
        waited
    );
    // Other clients are unaffected.
    assert_eq!(ex.client().lead(LEAD).json()["status"], "sold");
}

#[test]
fn a_buyer_behind_a_form_and_xml_adapter_bids_and_buys() {
    let legacy = BuyerSpec::new("legacy").with_responder(|_, body| {
        let text = String::from_utf8_lossy(body);
        if text.contains("Mode=ping") {
            Reply::json(200, &b"<?xml version=\"1.0\"?><response><price>31.50</price><lead_id>L-9</lead_id></response>"[..])
        } else {
            Reply::json(200, &b"<response><status>Matched</status></response>"[..])
        }
    });
    let fleet = Fleet::start(vec![legacy, bidder("native", 2000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |i| {
        if i == 0 {
            r#"[buyers.adapter]
request = "form"
response = "xml"
ping_body = { Key = "lx-123", Mode = "ping", State = "{lead.state}", Zip = "{lead.zip}", Ref = "{ping_id}" }
post_body = { Key = "lx-123", Mode = "post", Lead_ID = "{bid_id}", First_Name = "{lead.first_name}", Phone = "{lead.phone}", Price = "{price}", TrustedForm = "{consent.trustedform_cert_url}" }
bid_path = "/response/price"
bid_id_path = "/response/lead_id"
accepted_path = "/response/status"
accepted_values = ["Matched", "Accepted"]
"#
            .to_string()
        } else {
            String::new()
        }
    }));
    let v = ex.client().lead(LEAD).json();
    assert_eq!(sales(&v), vec![("legacy".to_string(), 31.5)], "{}", v);
    let ping = String::from_utf8(fleet.ping_bodies(0).remove(0)).unwrap();
    assert!(
        ping.contains("Mode=ping") && ping.contains("State=TX") && ping.contains("Zip=77002"),
        "{}",
        ping
    );
    assert!(
        !ping.contains("Ana") && !ping.contains("7135550147"),
        "the ping leaked personal data: {}",
        ping
    );
    let post = fleet
        .ping_bodies(0)
        .into_iter()
        .chain(fleet.post_bodies(0))
        .map(|b| String::from_utf8(b).unwrap())
        .find(|b| b.contains("Mode=post"))
        .expect("a post");
    assert!(
        post.contains("First_Name=Ana")
            && post.contains("Price=31.5")
            && post.contains("Lead_ID=L-9"),
        "{}",
        post
    );
    assert!(
        post.contains("TrustedForm=https%3A%2F%2Fcert.trustedform.com%2F2f1e0c"),
        "{}",
        post
    );
    let head = String::from_utf8(fleet.request_heads(0).remove(0))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/x-www-form-urlencoded"),
        "{}",
        head
    );
}

/// A JSON adapter that only says where its bids and answers are gets the native ping and post
/// bodies (never an empty one), and its post answers are read as the native protocol's: a 2xx
/// that does not say `accepted` is no sale.
#[test]
fn a_json_adapter_without_templates_gets_the_native_bodies() {
    let odd = |name: &str, accept: bool| {
        BuyerSpec::new(name).with_responder(move |kind, _| match kind {
            Kind::Ping => Reply::json(200, &br#"{"offer": {"amount": 44.0}}"#[..]),
            Kind::Post if accept => Reply::json(200, &br#"{"status": "accepted"}"#[..]),
            Kind::Post => Reply::json(200, &br#"{"received": true}"#[..]),
        })
    };
    let fleet = Fleet::start(vec![odd("takes", true), odd("shrugs", false)]).unwrap();
    let adapter =
        "[buyers.adapter]\nrequest = \"json\"\nresponse = \"json\"\nbid_path = \"/offer/amount\"\n";
    let ex = Exchange::start(&config(&fleet, "", |_| adapter.to_string()));
    let v = ex.client().lead(LEAD).json();
    // Both bid 44; whichever won first, only the one that says "accepted" bought it.
    assert_eq!(sales(&v), vec![("takes".to_string(), 44.0)], "{v}");
    for i in 0..2 {
        let ping: Value = serde_json::from_slice(&fleet.ping_bodies(i)[0]).unwrap();
        assert_eq!(ping["lead"]["zip"], "77002", "{ping}");
        assert_eq!(ping["lead"].get("first_name"), None, "{ping}");
        assert!(ping["ping_id"].is_string(), "{ping}");
    }
    let post: Value = serde_json::from_slice(&fleet.post_bodies(0)[0]).unwrap();
    assert_eq!(post["lead"]["first_name"], "Ana", "{post}");
    assert_eq!(post["price"], 44.0, "{post}");
    assert_eq!(
        post["consent"]["trustedform_cert_url"],
        "https://cert.trustedform.com/2f1e0c"
    );
}

#[test]
fn a_form_adapter_without_templates_is_a_config_error() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| {
        "[buyers.adapter]\nrequest = \"form\"\nresponse = \"xml\"\nbid_path = \"/r/price\"\nping_body = { State = \"{lead.state}\" }\n".to_string()
    });
    let issues = match gavel::config::parse(&toml) {
        Err(gavel::config::ConfigError::Invalid(issues)) => issues,
        Ok(_) => panic!("a form adapter with no post_body loaded"),
        Err(e) => panic!("{e}"),
    };
    assert!(
        issues
            .iter()
            .any(|i| i.key == "buyers[0].adapter.post_body" && i.message.contains("post_body")),
        "{issues:?}"
    );
}

#[test]
fn a_busy_polling_exchange_sells_and_still_closes_at_the_deadline() {
    // Spinning 10 ms after every event (the most allowed): the workers' timers must still fire
    // at the deadline, and shutdown must not wait on a spinning loop.
    let fleet = Fleet::start(vec![bidder("slow", 50000, 2000), bidder("quick", 3000, 1)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nbusy_poll_us = 10000",
    );
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    for _ in 0..3 {
        let (v, took) = timed_lead(&mut c);
        assert_eq!(v["status"], "sold", "{v}");
        assert_eq!(sales(&v), vec![("quick".to_string(), 30.0)]);
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(300 + 50),
            "answered after {took:?}"
        );
    }
    // Several sellers at once, each answered.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| ex.client().lead(LEAD).json()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for v in answers {
        assert_eq!(v["status"], "sold", "{v}");
    }
    let t = Instant::now();
    drop(ex);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        t.elapsed()
    );
}

/// HEAD gets the headers a GET would and no body, so a keep-alive client reads the next answer
/// from its first byte.
#[test]
fn head_requests_are_answered_without_a_body() {
    use std::io::{Read, Write};
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut s = std::net::TcpStream::connect(ex.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /v1/leads HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"{\"status\":\"ok\"}") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{text}");
    assert!(answers[0].starts_with("200 "), "{text}");
    assert!(answers[0].contains("Content-Length: 15\r\n"), "{text}");
    assert!(
        answers[0].ends_with("\r\n\r\n"),
        "a body after HEAD's head: {text}"
    );
    assert!(answers[1].starts_with("405 "), "{text}");
    assert!(answers[1].contains("Allow: POST\r\n"), "{text}");
    assert!(
        answers[1].ends_with("\r\n\r\n"),
        "a body after HEAD's head: {text}"
    );
    assert!(answers[2].starts_with("200 "), "{text}");
    assert!(
        answers[2].ends_with("\r\n\r\n{\"status\":\"ok\"}"),
        "{text}"
    );
}

/// A client that sends `Expect: 100-continue` waits to be told before it sends the body: it is
/// told at once, and its lead is then sold as any other.
#[test]
fn a_client_expecting_100_continue_is_told_to_send_its_body() {
    use std::io::Read;
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let head = format!(
        "POST /v1/leads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        LEAD.len()
    );
    c.send_raw(head.as_bytes());
    let mut interim = [0u8; 25];
    c.stream
        .read_exact(&mut interim)
        .expect("100 Continue before the body is sent");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send_raw(LEAD.as_bytes());
    let r = c.read_response().unwrap();
    assert_eq!(r.json()["status"], "sold");

    // The next request on the connection, without the expectation, gets no interim answer.
    let r = c.lead(LEAD);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "sold");
}

/// A client expecting `100 Continue` with a key that names no seller hears 401 instead, before
/// it sends its body, and the connection closes; the buyers hear nothing.
#[test]
fn a_client_expecting_100_continue_with_a_wrong_key_is_refused_before_its_body() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 1)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    for auth in ["Authorization: Bearer not-a-key\r\n", ""] {
        let mut c = ex.client();
        let head = format!(
            "POST /v1/leads HTTP/1.1\r\nHost: x\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            LEAD.len()
        );
        c.send_raw(head.as_bytes());
        let r = c.read_response().expect("an answer before the body");
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        assert!(!r.keep_alive, "{auth:?}: the connection must close");
        assert!(c.read_response().is_none());
    }
    assert_eq!(fleet.pings(0), 0);
}

/// A second exchange configured on the port of a running one does not start: sharing it would
/// split the sellers' connections between two journals, cap tables and dedupe indexes.
#[test]
fn a_second_exchange_on_a_port_in_use_does_not_start() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let first = Exchange::start(&config(&fleet, "", |_| String::new()));
    let toml = config(&fleet, "", |_| String::new()).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", first.addr),
    );
    let snap = gavel::config::parse(&toml).unwrap();
    match gavel::net::start(std::sync::Arc::new(snap)) {
        Ok(_) => panic!("a second exchange started on {}", first.addr),
        Err(e) => assert!(e.to_string().contains("cannot listen"), "{e}"),
    }
    assert_eq!(first.client().lead(LEAD).json()["status"], "sold");
}

/// A `source` longer than the exchange keeps is refused as content (422 with the lead's id,
/// journaled), never as a journal outage that the seller would retry forever.
#[test]
fn an_overlong_source_is_a_rejected_lead_not_a_503() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nmax_body_bytes = 131072",
    );
    let ex = Exchange::start(&toml);
    // The second is longer than a journal string can be.
    for len in [gavel::lead::MAX_SOURCE_BYTES + 1, 70_000] {
        let lead = LEAD.replace("\"fb-17\"", &format!("\"{}\"", "s".repeat(len)));
        let r = ex.client().lead(&lead);
        assert_eq!(r.status, 422, "{len}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["error"]["field"], "source", "{v}");
        assert!(v["lead_id"].is_string(), "{v}");
    }
    let ok = LEAD.replace(
        "\"fb-17\"",
        &format!("\"{}\"", "s".repeat(gavel::lead::MAX_SOURCE_BYTES)),
    );
    assert_eq!(ex.client().lead(&ok).json()["status"], "sold");
}

/// `server.max_connections` holds however small: a connection beyond it takes the place of
/// the one idle the longest, which is closed (tests/connections.rs has the rest).
#[test]
fn seller_connections_beyond_the_limit_take_an_idle_ones_place() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nmax_connections = 3",
    );
    let ex = Exchange::start(&toml);
    let mut open: Vec<Client> = (0..3).map(|_| ex.client()).collect();
    for c in &mut open {
        c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n");
        assert_eq!(c.read_response().map(|r| r.status), Some(200));
    }
    let mut over = ex.client();
    over.send_raw(b"GET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n");
    assert_eq!(over.read_response().map(|r| r.status), Some(200));
    // The first is the one idle the longest; its close went out before the fourth was read.
    assert!(
        open[0].closed_by_peer(),
        "the oldest idle connection is closed"
    );
    for c in &mut open[1..] {
        c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n");
        assert_eq!(c.read_response().map(|r| r.status), Some(200));
    }
}

/// The request target and Host rules of RFC 9112: an absolute-form target is served like its
/// path, and an HTTP/1.1 request with no Host, or two, is 400 and the connection closed.
#[test]
fn absolute_form_targets_are_served_and_host_is_required() {
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |_| String::new()));
    let mut c = ex.client();
    let target = format!("http://{}/v1/leads", ex.addr);
    c.send_raw(&Client::request(
        "POST",
        &target,
        Some(KEY),
        LEAD.as_bytes(),
    ));
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "sold");
    for (bad, what) in [
        ("GET /healthz HTTP/1.1\r\n\r\n", "no Host"),
        (
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "two Hosts",
        ),
    ] {
        let mut c = ex.client();
        c.send_raw(bad.as_bytes());
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.json()["error"]["code"], "bad_host", "{what}");
        assert!(
            c.read_response().is_none(),
            "{what}: the connection stayed open"
        );
    }
    // HTTP/1.0 has no Host requirement.
    let mut c = ex.client();
    c.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().map(|r| r.status), Some(200));
}

/// A ping that waited for a free connection to its buyer until the close was never sent: the
/// journal has no `ping_sent` for it, and its timeout says so.
#[test]
fn a_ping_that_never_got_a_connection_is_journaled_as_never_sent() {
    let silent = raw_buyer(|_| std::thread::sleep(Duration::from_secs(2)));
    let fleet = Fleet::start(vec![bidder("honest", 2500, 0)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"silent\"\ncampaigns = [\"auto\"]\nping_url = \"http://{silent}/ping\"\npost_url = \"http://{silent}/post\"\nmin_idle = 1\nmax_connections = 1\n"
    ));
    let ex = Exchange::start(&toml);
    // Two leads at once: the second's ping to `silent` waits behind the first's.
    let mut a = ex.client();
    let mut b = ex.client();
    a.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.as_bytes(),
    ));
    b.send_raw(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.replace("ana@example.com", "ana2@example.com")
            .as_bytes(),
    ));
    for c in [&mut a, &mut b] {
        assert_eq!(c.read_response().unwrap().json()["status"], "sold");
    }
    let dir = journal_dir_of(&toml);
    let records = gavel::journal::read_all(&dir).unwrap();
    let sent = records
        .iter()
        .filter(|e| matches!(&e.record, gavel::journal::Record::PingSent { buyer, .. } if buyer == "silent"))
        .count();
    let reasons: Vec<Option<String>> = records
        .iter()
        .filter_map(|e| match &e.record {
            gavel::journal::Record::PingResult { buyer, reason, .. } if buyer == "silent" => {
                Some(reason.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent, 1, "{reasons:?}");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_deref().is_some_and(|r| r.starts_with("not sent"))),
        "{reasons:?}"
    );
}

/// Blank lines before a request are allowed (RFC 9112 §2.2) but are no request: a client that
/// sends only them is closed at the head timeout, not kept for the idle timeout or longer.
#[test]
fn blank_lines_alone_do_not_hold_a_connection_past_the_head_timeout() {
    use std::io::{Read, Write};
    let fleet = Fleet::start(vec![bidder("a", 1000, 0)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nhead_timeout_ms = 300",
    );
    let ex = Exchange::start(&toml);
    let mut s = std::net::TcpStream::connect(ex.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    // Well inside the idle timeout (60 s): only the head timeout can close it.
    while started.elapsed() < Duration::from_secs(20) {
        if s.write_all(b"\r\n").is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "still open after {:?} of blank lines",
        started.elapsed()
    );
    // A request after blank lines is served as ever.
    let mut c = ex.client();
    c.send_raw(b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: gavel\r\n\r\n");
    assert_eq!(c.read_response().map(|r| r.status), Some(200));
}

/// A state written in lower case or with blanks reaches buyers as its USPS code, and a zip
/// with blanks or sent as a number as its string, in the ping and in the post; the journal
/// keeps the lead as the seller sent it.
#[test]
fn buyers_get_the_state_as_its_usps_code_and_the_zip_as_its_string() {
    let fleet = Fleet::start(vec![bidder("top", 9000, 0)]).unwrap();
    let ex = Exchange::start(&config(&fleet, "", |i| {
        if i == 0 {
            "[buyers.filters]\nstates = [\"TX\"]".to_string()
        } else {
            String::new()
        }
    }));
    let mut c = ex.client();
    let v = c.lead(&LEAD.replace("\"TX\"", "\" tx \"")).json();
    assert_eq!(v["status"], "sold", "{v}");
    let ping = body_json(&fleet.ping_bodies(0)[0]);
    assert_eq!(ping["lead"]["state"], "TX", "{ping}");
    let post = body_json(&fleet.post_bodies(0)[0]);
    assert_eq!(post["lead"]["state"], "TX", "{post}");
    // Only the spelling changed: the fields keep their order and the rest its values.
    let keys: Vec<&str> = post["lead"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys[6..8], ["state", "zip"], "{post}");

    for (zip, n) in [("\" 77002\\t\"", 1), ("77002", 2)] {
        let lead = LEAD
            .replace("\"77002\"", zip)
            .replace("7135550147", &format!("713555030{n}"));
        let v = c.lead(&lead).json();
        assert_eq!(v["status"], "sold", "{v}");
        let ping = body_json(&fleet.ping_bodies(0)[n]);
        assert_eq!(ping["lead"]["zip"], "77002", "{ping}");
        let post = body_json(&fleet.post_bodies(0)[n]);
        assert_eq!(post["lead"]["zip"], "77002", "{post}");
    }
}

/// A keep-alive buyer whose idle timeout fires as a request arrives: on each connection it
/// answers every request, except the second ping (or, `on_post`, the second post), which it
/// reads and then hangs up on without a byte of answer. Bids 40.00, accepts posts. Counts the
/// pings and posts it read.
fn hanging_up_buyer(
    on_post: bool,
    counts: &'static [std::sync::atomic::AtomicUsize; 2],
) -> std::net::SocketAddr {
    use std::io::Write;
    keep_alive_buyer(move |post, n, s| {
        counts[usize::from(post)].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if post == on_post && n == 2 {
            return false;
        }
        let body = if post {
            r#"{"status": "accepted"}"#
        } else {
            r#"{"bid": 40.0}"#
        };
        s.write_all(http_ok(body).as_bytes()).is_ok()
    })
}

fn hanging_up_exchange(
    on_post: bool,
    counts: &'static [std::sync::atomic::AtomicUsize; 2],
) -> Exchange {
    let racy = hanging_up_buyer(on_post, counts);
    let fleet = Fleet::start(vec![]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"racy\"\ncampaigns = [\"auto\"]\nping_url = \"http://{racy}/ping\"\npost_url = \"http://{racy}/post\"\nmax_connections = 1\n"
    ));
    Exchange::start(&toml)
}

/// A ping lost to a buyer closing a reused keep-alive connection as it arrived is asked again,
/// once, on a fresh connection: the buyer still gets to bid, and wins. A post lost so is not
/// sent again (the buyer may have taken the consumer): it counts as rejected.
#[test]
fn a_ping_a_buyer_hung_up_on_is_asked_again_and_a_post_is_not() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    static PINGS_LOST: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let ex = hanging_up_exchange(false, &PINGS_LOST);
    let mut c = ex.client();
    for i in 0..3 {
        let v = c
            .lead(&LEAD.replace("7135550147", &format!("713555020{i}")))
            .json();
        assert_eq!(sales(&v), vec![("racy".to_string(), 40.0)], "lead {i}: {v}");
    }
    // Each later lead's ping was read twice: on the connection the buyer then hung up on (its
    // second ping there), and again on a fresh one.
    assert_eq!(PINGS_LOST[0].load(SeqCst), 5);
    assert_eq!(PINGS_LOST[1].load(SeqCst), 3);

    static POSTS_LOST: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let ex = hanging_up_exchange(true, &POSTS_LOST);
    let mut c = ex.client();
    let v = c.lead(LEAD).json();
    assert_eq!(sales(&v), vec![("racy".to_string(), 40.0)], "{v}");
    let v = c.lead(&LEAD.replace("7135550147", "7135550201")).json();
    assert_eq!(v["status"], "unsold", "{v}");
    assert_eq!(v["reason"], "posts_rejected", "{v}");
    assert_eq!(POSTS_LOST[1].load(SeqCst), 2);
}

/// A buyer URL that points at a port whose server greets every client first (an SSH banner):
/// its ping is an error at once, not a wait to the close, and its pool backs off as from a
/// failed connect instead of opening warm connections at every housekeeping tick.
#[test]
fn a_port_that_greets_before_any_request_costs_its_own_bid_and_is_backed_off() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    static ACCEPTS: AtomicUsize = AtomicUsize::new(0);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let banner = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(10_000) {
            let Ok(mut s) = s else { return };
            ACCEPTS.fetch_add(1, SeqCst);
            std::thread::spawn(move || {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let fleet = Fleet::start(vec![bidder("honest", 2000, 0)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"banner\"\ncampaigns = [\"auto\"]\nping_url = \"http://{banner}/ping\"\npost_url = \"http://{banner}/post\"\nmin_idle = 2\n"
    ));
    let ex = Exchange::start(&toml);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(sales(&v), vec![("honest".to_string(), 20.0)], "{v}");
    // The buyer's error may be counted after the lead's answer, when its connection is read.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let st = ex.handle.as_ref().unwrap().stats();
        let (_, b) = st.buyers().find(|(id, _)| *id == "banner").unwrap();
        let counted = (b.pings, b.errors, b.timeouts);
        if counted.1 + counted.2 > 0 || std::time::Instant::now() > until {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(counted, (1, 1, 0));
    // Two seconds idle: without a backoff, every worker's two warm connections would be opened
    // again at each 50 ms housekeeping tick (80 a second).
    let before = ACCEPTS.load(SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    let opened = ACCEPTS.load(SeqCst) - before;
    assert!(opened <= 24, "{opened} connections in 2 s");
}
