//! Deterministic simulations of one lead against buyers with chosen latencies and answers.
//! Time is simulated: no sleeps, deadlines checked to the microsecond.

use super::*;

fn params(sale: SaleKind, reserve_cents: Cents) -> Params {
    Params {
        sale,
        reserve_cents,
        ping_timeout: Duration::from_millis(800),
        post_timeout: Duration::from_millis(2000),
        margin: Duration::from_millis(20),
        ping_only: false,
        in_order: false,
        answer_by: None,
        posted_before: false,
    }
}

#[derive(Clone)]
struct SimBuyer {
    ping_latency_us: u64,
    ping: PingOutcome,
    post_latency_us: u64,
    post: PostOutcome,
}

fn bid(cents: Cents, latency_ms: u64) -> SimBuyer {
    SimBuyer {
        ping_latency_us: latency_ms * 1000,
        ping: PingOutcome::Bid {
            cents,
            bid_id: None,
        },
        post_latency_us: 10_000,
        post: PostOutcome::Accepted {
            buyer_lead_id: None,
        },
    }
}

fn rejecting(mut b: SimBuyer) -> SimBuyer {
    b.post = PostOutcome::Rejected {
        reason: "duplicate".into(),
    };
    b
}

struct Run {
    outcome: Outcome,
    /// (simulated µs since arrival, action)
    log: Vec<(u64, Action)>,
    answered_at_us: u64,
}

/// Drive one auction to its answer. Events are processed in time order; a ping answer that
/// would arrive after its deadline is delivered (and must be ignored) too.
fn simulate(p: Params, buyers: &[SimBuyer]) -> Run {
    simulate_stopping(p, buyers, None)
}

/// [`simulate`] with the exchange stopping `stop_by_us` after the lead's arrival.
fn simulate_stopping(p: Params, buyers: &[SimBuyer], stop_by_us: Option<u64>) -> Run {
    let t0 = Instant::now();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let ids: Vec<usize> = (0..buyers.len()).map(|i| 100 + i).collect();
    let mut a = Auction::new(p, t0, t0, &ids);
    if let Some(us) = stop_by_us {
        a.stop_by(at(us));
    }
    // Pending events: (time µs, kind 0 = ping answer / 1 = post answer, slot)
    let mut events: Vec<(u64, u8, Slot)> = Vec::new();
    let mut log = Vec::new();
    let mut now_us = 0u64;
    let mut answered_at_us = None;
    for _ in 0..10_000 {
        while let Some(action) = a.poll_action() {
            log.push((now_us, action.clone()));
            match action {
                Action::SendPing { slot, .. } => {
                    a.ping_sent(slot, at(now_us));
                    events.push((now_us + buyers[slot].ping_latency_us, 0, slot));
                }
                Action::SendPost { slot, .. } => {
                    a.post_sent(slot, at(now_us));
                    events.push((now_us + buyers[slot].post_latency_us, 1, slot));
                }
                Action::Answer => answered_at_us = Some(now_us),
                Action::AbandonPing { .. } | Action::AbandonPost { .. } => {}
            }
        }
        if answered_at_us.is_some() {
            break;
        }
        // Next event: the earliest buyer answer or the auction's own deadline.
        events.sort();
        let next_event = events.first().map(|e| e.0);
        let next_timer = a
            .next_timeout()
            .map(|d| d.duration_since(t0).as_micros() as u64);
        match (next_event, next_timer) {
            (Some(e), Some(t)) if t < e => {
                now_us = t;
                a.on_timeout(at(now_us));
            }
            (Some(_), _) => {
                let (t, kind, slot) = events.remove(0);
                now_us = t;
                if kind == 0 {
                    a.on_ping_result(slot, at(now_us), buyers[slot].ping.clone());
                } else {
                    a.on_post_result(slot, at(now_us), buyers[slot].post.clone());
                }
            }
            (None, Some(t)) => {
                now_us = t;
                a.on_timeout(at(now_us));
            }
            (None, None) => break,
        }
    }
    assert!(a.is_done(), "auction did not finish: {:?}", log);
    Run {
        outcome: a.outcome(),
        log,
        answered_at_us: answered_at_us.unwrap_or(u64::MAX),
    }
}

fn sold_to(r: &Run) -> Vec<(usize, Cents)> {
    r.outcome
        .sales
        .iter()
        .map(|s| (s.buyer, s.price_cents))
        .collect()
}

#[test]
fn highest_bid_wins_and_auction_closes_when_all_answered() {
    let r = simulate(
        params(SaleKind::Exclusive, 500),
        &[bid(4000, 50), bid(12000, 120), bid(9000, 30)],
    );
    assert_eq!(r.outcome.status, Status::Sold);
    assert_eq!(sold_to(&r), vec![(101, 12000)]);
    assert_eq!(r.outcome.price_cents, 12000);
    assert_eq!(r.outcome.bids, 3);
    // Closed at the last answer (120 ms), post answered 10 ms later: not at the 800 ms deadline.
    assert_eq!(r.answered_at_us, 130_000);
    assert_eq!(r.outcome.elapsed, Duration::from_micros(130_000));
    assert_eq!(r.outcome.buyer_wait, Duration::from_micros(130_000));
}

#[test]
fn buyers_are_told_the_time_left_minus_the_margin() {
    let r = simulate(params(SaleKind::Exclusive, 0), &[bid(100, 1)]);
    assert_eq!(
        r.log[0].1,
        Action::SendPing {
            slot: 0,
            timeout_ms: 780
        }
    );
}

#[test]
fn without_a_margin_buyers_are_told_the_whole_window_to_the_nearest_millisecond() {
    let p = Params {
        margin: Duration::ZERO,
        ..params(SaleKind::Exclusive, 0)
    };
    let t0 = Instant::now();
    for (pinged_after_us, told_ms) in [(0, 800), (30, 800), (499, 800), (501, 799), (1_700, 798)] {
        let mut a = Auction::new(p, t0, t0 + Duration::from_micros(pinged_after_us), &[7]);
        assert_eq!(
            a.poll_action(),
            Some(Action::SendPing {
                slot: 0,
                timeout_ms: told_ms
            }),
            "pinged {pinged_after_us} us after arrival"
        );
    }
}

#[test]
fn slow_buyer_is_left_out_at_the_deadline_to_the_microsecond() {
    let r = simulate(
        params(SaleKind::Exclusive, 500),
        &[bid(50000, 900), bid(3000, 100)],
    );
    // The 900 ms buyer misses the 800 ms deadline: the 30.00 bid wins.
    assert_eq!(sold_to(&r), vec![(101, 3000)]);
    let closes: Vec<_> = r
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::AbandonPing { .. }))
        .collect();
    assert_eq!(closes, vec![&(800_000, Action::AbandonPing { slot: 0 })]);
    let post = r
        .log
        .iter()
        .find(|(_, a)| matches!(a, Action::SendPost { .. }))
        .unwrap();
    assert_eq!(post.0, 800_000);
    assert_eq!(r.answered_at_us, 810_000);
}

/// An answer read only after its deadline passed, before the deadline's timer was taken (the
/// loop woke late: a stall, a busy machine), is late all the same: a bid read past the close
/// is a timeout and takes no part in the ranking, and a post's acceptance read past its
/// `post_timeout` is a timed-out post, not a sale; the lead cascades.
#[test]
fn an_answer_read_past_its_deadline_is_late_before_the_timer_is_taken() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let bid = |cents| PingOutcome::Bid {
        cents,
        bid_id: None,
    };
    let accepted = || PostOutcome::Accepted {
        buyer_lead_id: None,
    };
    let drained = |a: &mut Auction| std::iter::from_fn(|| a.poll_action()).collect::<Vec<_>>();
    let post_written = |a: &mut Auction, slot, at| {
        a.post_sent(slot, at);
        a.written(slot, true, at);
    };
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[1, 2, 3]);
    drained(&mut a);
    for slot in 0..3 {
        a.ping_sent(slot, t0);
        a.written(slot, false, t0);
    }
    a.on_ping_result(1, ms(10), bid(500));
    a.on_ping_result(2, ms(20), bid(400));
    // The 800 ms deadline passed; the best bid is read at 801 ms, before the timer.
    a.on_ping_result(0, ms(801), bid(99_999));
    assert!(matches!(a.ping_result(0), Some((PingOutcome::Timeout, _))));
    let post_1 = Action::SendPost {
        slot: 1,
        price_cents: 500,
    };
    assert_eq!(drained(&mut a), [Action::AbandonPing { slot: 0 }, post_1]);
    // The post is written at 801 ms and due by 2,801; its acceptance is read at 2,802.
    post_written(&mut a, 1, ms(801));
    a.on_post_result(1, ms(2802), accepted());
    assert_eq!(a.post_result(1), Some(&PostOutcome::TimedOut));
    let post_2 = Action::SendPost {
        slot: 2,
        price_cents: 400,
    };
    assert_eq!(drained(&mut a), [Action::AbandonPost { slot: 1 }, post_2]);
    // An answer read in time still counts.
    post_written(&mut a, 2, ms(2802));
    a.on_post_result(2, ms(4000), accepted());
    assert!(a.is_done());
    let o = a.outcome();
    let sales: Vec<_> = o.sales.iter().map(|s| (s.buyer, s.price_cents)).collect();
    assert_eq!(sales, [(3, 400)]);
    assert_eq!(o.bids, 2);
}

#[test]
fn a_late_answer_after_the_close_is_ignored() {
    let t0 = Instant::now();
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[1, 2]);
    while a.poll_action().is_some() {}
    a.on_ping_result(
        1,
        t0 + Duration::from_millis(10),
        PingOutcome::Bid {
            cents: 500,
            bid_id: None,
        },
    );
    a.on_timeout(t0 + Duration::from_millis(800));
    a.on_ping_result(
        0,
        t0 + Duration::from_millis(801),
        PingOutcome::Bid {
            cents: 99999,
            bid_id: None,
        },
    );
    let actions: Vec<_> = std::iter::from_fn(|| a.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::AbandonPing { slot: 0 },
            Action::SendPost {
                slot: 1,
                price_cents: 500
            }
        ]
    );
    assert_eq!(a.ping_result(0).unwrap().0, &PingOutcome::Timeout);
}

#[test]
fn results_are_counted_once_per_slot_as_they_come() {
    // The shell journals a ping or post result when these counts move past what it wrote.
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let bid = |cents| PingOutcome::Bid {
        cents,
        bid_id: None,
    };
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[1, 2, 3]);
    while a.poll_action().is_some() {}
    assert_eq!((a.ping_results(), a.post_results()), (0, 0));
    a.on_ping_result(2, at(5), bid(700));
    a.on_ping_result(2, at(6), bid(900));
    assert_eq!(
        a.ping_results(),
        1,
        "a second answer for a slot is not counted"
    );
    a.on_ping_result(0, at(7), bid(800));
    assert_eq!(a.ping_results(), 2);
    assert!(!a.is_closed());
    // The deadline: the third slot times out, all three have a result.
    a.on_timeout(at(800));
    assert_eq!(a.ping_results(), 3);
    assert!(a.is_closed());
    a.on_ping_result(1, at(801), bid(99_999));
    assert_eq!(
        a.ping_results(),
        3,
        "an answer after the close is not counted"
    );
    // Slot 0 (800) is posted first; its rejection cascades to slot 2 (700).
    let rejected = || PostOutcome::Rejected {
        reason: "no".into(),
    };
    a.on_post_result(1, at(805), rejected());
    assert_eq!(a.post_results(), 0, "slot 1 was never posted");
    a.on_post_result(0, at(810), rejected());
    assert_eq!(a.post_results(), 1);
    a.on_post_result(0, at(811), rejected());
    assert_eq!(a.post_results(), 1, "one result per post");
    a.on_post_result(
        2,
        at(820),
        PostOutcome::Accepted {
            buyer_lead_id: None,
        },
    );
    assert_eq!(a.post_results(), 2);
    assert_eq!(a.outcome().status, Status::Sold);
}

#[test]
fn timeout_before_deadline_does_nothing() {
    let t0 = Instant::now();
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[1]);
    while a.poll_action().is_some() {}
    a.on_timeout(t0 + Duration::from_micros(799_999));
    assert_eq!(a.poll_action(), None);
    a.on_timeout(t0 + Duration::from_micros(800_000));
    assert_eq!(a.poll_action(), Some(Action::AbandonPing { slot: 0 }));
    assert_eq!(a.poll_action(), Some(Action::Answer));
    assert_eq!(a.outcome().unsold_reason, Some(UnsoldReason::NoBids));
}

#[test]
fn bids_below_reserve_are_dropped() {
    let r = simulate(
        params(SaleKind::Exclusive, 1000),
        &[bid(999, 10), bid(500, 20)],
    );
    assert_eq!(r.outcome.status, Status::Unsold);
    assert_eq!(r.outcome.unsold_reason, Some(UnsoldReason::BelowReserve));
    assert_eq!(r.outcome.bids, 2);
    assert!(!r
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::SendPost { .. })));

    // A bid exactly at the reserve is acceptable.
    let r = simulate(params(SaleKind::Exclusive, 1000), &[bid(1000, 10)]);
    assert_eq!(sold_to(&r), vec![(100, 1000)]);
}

#[test]
fn ties_go_to_the_earlier_bid() {
    let r = simulate(
        params(SaleKind::Exclusive, 0),
        &[bid(5000, 60), bid(5000, 20), bid(5000, 40)],
    );
    assert_eq!(sold_to(&r), vec![(101, 5000)]);
}

#[test]
fn shared_sale_goes_to_the_top_n_each_at_its_own_bid() {
    let r = simulate(
        params(SaleKind::Shared(3), 1000),
        &[
            bid(2000, 10),
            bid(5000, 20),
            bid(800, 5),
            bid(4000, 30),
            bid(3000, 40),
        ],
    );
    let mut sales = sold_to(&r);
    sales.sort();
    assert_eq!(sales, vec![(101, 5000), (103, 4000), (104, 3000)]);
    assert_eq!(r.outcome.price_cents, 12000);
    // The three posts go out together, at the close.
    let posts: Vec<_> = r
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::SendPost { .. }))
        .collect();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|(t, _)| *t == 40_000));
}

#[test]
fn shared_sales_are_listed_best_bid_first_whatever_order_the_posts_are_answered_in() {
    // The best bidder answers its post last, the worst first.
    let slow_post = |mut b: SimBuyer, ms: u64| {
        b.post_latency_us = ms * 1000;
        b
    };
    let r = simulate(
        params(SaleKind::Shared(3), 0),
        &[
            slow_post(bid(3000, 10), 5),
            slow_post(bid(5000, 10), 300),
            slow_post(bid(4000, 10), 100),
        ],
    );
    assert_eq!(sold_to(&r), vec![(101, 5000), (102, 4000), (100, 3000)]);
}

#[test]
fn shared_sale_with_fewer_bids_than_slots_sells_what_it_can() {
    let r = simulate(
        params(SaleKind::Shared(3), 0),
        &[bid(2000, 10), PingOutcomeBuyer::no_bid()],
    );
    assert_eq!(sold_to(&r), vec![(100, 2000)]);
}

struct PingOutcomeBuyer;
impl PingOutcomeBuyer {
    fn no_bid() -> SimBuyer {
        SimBuyer {
            ping_latency_us: 5_000,
            ping: PingOutcome::NoBid,
            post_latency_us: 0,
            post: PostOutcome::Accepted {
                buyer_lead_id: None,
            },
        }
    }
}

#[test]
fn rejected_post_cascades_to_the_next_bid() {
    let r = simulate(
        params(SaleKind::Exclusive, 0),
        &[rejecting(bid(9000, 10)), bid(7000, 20), bid(8000, 30)],
    );
    // 90.00 rejects, 80.00 is next and accepts.
    assert_eq!(sold_to(&r), vec![(102, 8000)]);
    let posts: Vec<_> = r
        .log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::SendPost { slot, price_cents } => Some((*t, *slot, *price_cents)),
            _ => None,
        })
        .collect();
    assert_eq!(posts, vec![(30_000, 0, 9000), (40_000, 2, 8000)]);
}

#[test]
fn timed_out_and_failed_posts_cascade_too() {
    let mut slow_post = bid(9000, 10);
    slow_post.post_latency_us = 5_000_000;
    let mut failing = bid(8000, 10);
    failing.post = PostOutcome::Failed {
        reason: "connection reset".into(),
    };
    let r = simulate(
        params(SaleKind::Exclusive, 0),
        &[slow_post, failing, bid(100, 10)],
    );
    assert_eq!(sold_to(&r), vec![(102, 100)]);
    // Post timeout is 2 s after the 10 ms close.
    assert!(r
        .log
        .contains(&(2_010_000, Action::AbandonPost { slot: 0 })));
    assert_eq!(r.answered_at_us, 2_030_000);
}

/// `answer_by`: a cascade post starts only if its post timeout ends by the deadline; the first
/// post always goes, and none is cut short.
#[test]
fn the_answer_deadline_stops_a_cascade_that_could_not_end_in_time() {
    let slow = |cents| {
        let mut b = rejecting(bid(cents, 10));
        b.post_latency_us = 5_000_000;
        b
    };
    let timed = |by_ms| Params {
        answer_by: Some(Duration::from_millis(by_ms)),
        ..params(SaleKind::Exclusive, 0)
    };
    // Close at 10 ms; each post times out 2 s later. With 4.5 s the second post (2.01 s +
    // 2 s = 4.01 s) fits, the third (4.01 + 2 = 6.01 s) does not: answered at 4.01 s, unsold.
    let r = simulate(timed(4_500), &[slow(9000), slow(8000), bid(7000, 10)]);
    let posts: Vec<_> = r
        .log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::SendPost { slot, .. } => Some((*t, *slot)),
            _ => None,
        })
        .collect();
    assert_eq!(posts, vec![(10_000, 0), (2_010_000, 1)]);
    assert_eq!(r.answered_at_us, 4_010_000);
    assert_eq!(r.outcome.status, Status::Unsold);
    assert_eq!(r.outcome.unsold_reason, Some(UnsoldReason::PostsRejected));
    // Without it the cascade reaches the third bid, which buys.
    let r = simulate(
        params(SaleKind::Exclusive, 0),
        &[slow(9000), slow(8000), bid(7000, 10)],
    );
    assert_eq!(sold_to(&r), vec![(102, 7000)]);
    assert_eq!(r.answered_at_us, 4_020_000);
    // A deadline shorter than the first post's timeout never stops the first post, and the
    // post is not cut short: the buyer that takes 1.5 s to accept buys.
    let mut slow_buyer = bid(9000, 10);
    slow_buyer.post_latency_us = 1_500_000;
    let r = simulate(timed(900), &[slow_buyer, bid(8000, 10)]);
    assert_eq!(sold_to(&r), vec![(100, 9000)]);
    assert_eq!(r.answered_at_us, 1_510_000);
    // Shared: the first posts all start; a quick reject is replaced while there is time.
    let r = simulate(
        Params {
            answer_by: Some(Duration::from_millis(2_100)),
            ..params(SaleKind::Shared(2), 0)
        },
        &[rejecting(bid(9000, 10)), bid(8000, 10), bid(7000, 10)],
    );
    let mut sales = sold_to(&r);
    sales.sort();
    assert_eq!(sales, vec![(101, 8000), (102, 7000)]);
}

/// A fallback after failed posts is a cascade from its first post (`posted_before`).
#[test]
fn posts_after_earlier_posts_are_a_cascade_from_the_start() {
    let t0 = Instant::now();
    let p = Params {
        answer_by: Some(Duration::from_millis(1_000)),
        posted_before: true,
        in_order: true,
        ..params(SaleKind::Exclusive, 0)
    };
    // 1.5 s after arrival a post could end no earlier than 3.5 s: nothing is posted.
    let later = t0 + Duration::from_millis(1_500);
    let mut a = Auction::from_held(p, t0, later, &[(7, 2500, None)]);
    assert_eq!(a.poll_action(), Some(Action::Answer));
    assert_eq!(a.outcome().status, Status::Unsold);
    // Within the deadline (10 ms after arrival, 2.01 s < 3 s) it is posted.
    let p = Params {
        answer_by: Some(Duration::from_millis(3_000)),
        ..p
    };
    let mut a = Auction::from_held(p, t0, t0 + Duration::from_millis(10), &[(7, 2500, None)]);
    assert!(matches!(
        a.poll_action(),
        Some(Action::SendPost { slot: 0, .. })
    ));
}

#[test]
fn shared_cascade_keeps_buyers_distinct() {
    let r = simulate(
        params(SaleKind::Shared(2), 0),
        &[
            rejecting(bid(9000, 10)),
            bid(8000, 10),
            bid(7000, 10),
            bid(6000, 10),
        ],
    );
    let mut sales = sold_to(&r);
    sales.sort();
    assert_eq!(sales, vec![(101, 8000), (102, 7000)]);
}

#[test]
fn every_post_rejected_is_unsold() {
    let r = simulate(
        params(SaleKind::Exclusive, 0),
        &[rejecting(bid(9000, 10)), rejecting(bid(8000, 10))],
    );
    assert_eq!(r.outcome.status, Status::Unsold);
    assert_eq!(r.outcome.unsold_reason, Some(UnsoldReason::PostsRejected));
}

#[test]
fn cascade_is_bounded() {
    let buyers: Vec<_> = (0..20).map(|i| rejecting(bid(1000 + i, 10))).collect();
    let r = simulate(params(SaleKind::Exclusive, 0), &buyers);
    let posts = r
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::SendPost { .. }))
        .count();
    assert_eq!(posts, MAX_POST_ATTEMPTS);
    assert_eq!(r.outcome.status, Status::Unsold);
}

/// A shared sale of more buyers than an exclusive lead's post bound: every one of its first
/// posts goes, and the cascade after them is as long as an exclusive lead's.
#[test]
fn a_wide_shared_sale_posts_to_all_its_buyers_and_cascades_as_far() {
    let accepting: Vec<_> = (0..12).map(|i| bid(10_000 - i * 100, 10)).collect();
    let r = simulate(params(SaleKind::Shared(10), 0), &accepting);
    assert_eq!(r.outcome.sales.len(), 10);
    // All 20 reject: 10 first posts and 7 replacements.
    let rejecting_all: Vec<_> = (0..20)
        .map(|i| rejecting(bid(10_000 - i * 100, 10)))
        .collect();
    let r = simulate(params(SaleKind::Shared(10), 0), &rejecting_all);
    let posts = r
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::SendPost { .. }))
        .count();
    assert_eq!(posts, MAX_POST_ATTEMPTS + 9);
}

#[test]
fn no_bid_forms_errors_and_invalid_answers_are_no_bids() {
    let mut buyers = vec![bid(0, 10), bid(-500, 10)];
    for o in [
        PingOutcome::NoBid,
        PingOutcome::Error("status 500".into()),
        PingOutcome::Invalid("unparsable".into()),
    ] {
        buyers.push(SimBuyer {
            ping_latency_us: 10_000,
            ping: o,
            post_latency_us: 0,
            post: PostOutcome::Accepted {
                buyer_lead_id: None,
            },
        });
    }
    let r = simulate(params(SaleKind::Exclusive, 0), &buyers);
    assert_eq!(r.outcome.status, Status::Unsold);
    assert_eq!(r.outcome.bids, 0);
    assert_eq!(r.outcome.unsold_reason, Some(UnsoldReason::NoBids));
    // Closed as soon as all five answered.
    assert_eq!(r.answered_at_us, 10_000);
}

#[test]
fn no_eligible_buyers_answers_at_once() {
    let t0 = Instant::now();
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[]);
    assert_eq!(a.poll_action(), Some(Action::Answer));
    assert_eq!(
        a.outcome().unsold_reason,
        Some(UnsoldReason::NoEligibleBuyers)
    );
    assert_eq!(a.outcome().elapsed, Duration::ZERO);
}

#[test]
fn buyer_wait_excludes_engine_time() {
    // Pings written 100 µs after arrival (engine time), one buyer answers 5 ms later,
    // the post is written 50 µs after the close and answered 3 ms later.
    let t0 = Instant::now();
    let us = |n: u64| t0 + Duration::from_micros(n);
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, us(100), &[7]);
    assert!(matches!(a.poll_action(), Some(Action::SendPing { .. })));
    a.ping_sent(0, us(100));
    a.on_ping_result(
        0,
        us(5_100),
        PingOutcome::Bid {
            cents: 100,
            bid_id: Some("b1".into()),
        },
    );
    assert_eq!(
        a.poll_action(),
        Some(Action::SendPost {
            slot: 0,
            price_cents: 100
        })
    );
    assert_eq!(a.bid_id(0), Some("b1"));
    a.post_sent(0, us(5_150));
    a.on_post_result(
        0,
        us(8_150),
        PostOutcome::Accepted {
            buyer_lead_id: None,
        },
    );
    assert_eq!(a.poll_action(), Some(Action::Answer));
    let o = a.outcome();
    assert_eq!(o.elapsed, Duration::from_micros(8_150));
    assert_eq!(o.buyer_wait, Duration::from_micros(8_000));
    assert_eq!(
        a.ping_result(0).unwrap().1,
        Some(Duration::from_micros(5_000))
    );
}

#[test]
fn a_ping_only_auction_ranks_and_stops() {
    let p = Params {
        ping_only: true,
        ..params(SaleKind::Exclusive, 500)
    };
    let r = simulate(p, &[bid(4000, 10), bid(9000, 20), bid(100, 5)]);
    assert_eq!(r.outcome.status, Status::Unsold);
    assert!(!r
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::SendPost { .. })));
    assert_eq!(r.answered_at_us, 20_000);
}

#[test]
fn no_held_bids_answers_unsold_at_once() {
    let t0 = Instant::now();
    let mut a = Auction::from_held(params(SaleKind::Exclusive, 500), t0, t0, &[]);
    assert_eq!(a.poll_action(), Some(Action::Answer));
    assert_eq!(a.poll_action(), None);
    assert_eq!(a.next_timeout(), None);
    let o = a.outcome();
    assert_eq!(o.status, Status::Unsold);
    assert!(o.sales.is_empty());
}

#[test]
fn held_bids_are_posted_in_rank_order_with_cascade() {
    let t0 = Instant::now();
    let held = vec![
        (7, 4000, None),
        (8, 9000, Some(SmallText::new("b-8"))),
        (9, 6000, None),
    ];
    let mut a = Auction::from_held(params(SaleKind::Exclusive, 500), t0, t0, &held);
    assert_eq!(
        a.poll_action(),
        Some(Action::SendPost {
            slot: 1,
            price_cents: 9000
        })
    );
    assert_eq!(a.bid_id(1), Some("b-8"));
    assert_eq!(a.poll_action(), None);
    a.on_post_result(
        1,
        t0,
        PostOutcome::Rejected {
            reason: "dup".into(),
        },
    );
    assert_eq!(
        a.poll_action(),
        Some(Action::SendPost {
            slot: 2,
            price_cents: 6000
        })
    );
    a.on_post_result(
        2,
        t0,
        PostOutcome::Accepted {
            buyer_lead_id: None,
        },
    );
    assert_eq!(a.poll_action(), Some(Action::Answer));
    assert_eq!(
        a.outcome().sales,
        vec![Sale {
            slot: 2,
            buyer: 9,
            price_cents: 6000
        }]
    );
}

/// When the exchange is about to stop, no post starts that would end after it: the top bid's
/// post goes (it fits), its rejection does not start the next one (it would not), and the lead
/// is unsold `shutting_down`. Posts that fit go as ever.
#[test]
fn no_post_starts_that_the_shutdown_would_cut_off() {
    let buyers = [rejecting(bid(5000, 10)), bid(3000, 20)];
    let mut slow = buyers.clone();
    slow[0].post_latency_us = 1_500_000;
    // Pings answered by 20 ms; the first post (2 s timeout) ends by 2.02 s, rejected at 1.52 s.
    let r = simulate_stopping(params(SaleKind::Exclusive, 0), &slow, Some(2_500_000));
    let posts: Vec<_> = r
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::SendPost { .. }))
        .collect();
    assert_eq!(posts.len(), 1, "{:?}", r.log);
    assert_eq!(r.outcome.status, Status::Unsold);
    assert_eq!(r.outcome.unsold_reason, Some(UnsoldReason::ShuttingDown));
    // With room for both posts, the cascade sells as ever.
    let r = simulate_stopping(params(SaleKind::Exclusive, 0), &slow, Some(10_000_000));
    assert_eq!(sold_to(&r), vec![(101, 3000)]);
    // No room even for the first: no post at all.
    let r = simulate_stopping(params(SaleKind::Exclusive, 0), &buyers, Some(1_000_000));
    assert!(
        !r.log
            .iter()
            .any(|(_, a)| matches!(a, Action::SendPost { .. })),
        "{:?}",
        r.log
    );
    assert_eq!(r.outcome.unsold_reason, Some(UnsoldReason::ShuttingDown));
}

/// Drive an exclusive auction of two bids (slot 0 the higher) to its first post at 10 ms,
/// the post queued for a connection. Returns the auction and the arrival time.
fn first_post_queued() -> (Auction, Instant) {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[100, 101]);
    while a.poll_action().is_some() {}
    for (slot, cents) in [(0, 9000), (1, 4000)] {
        a.ping_sent(slot, t0);
        a.on_ping_result(
            slot,
            ms(10),
            PingOutcome::Bid {
                cents,
                bid_id: None,
            },
        );
    }
    let posts: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
    assert_eq!(
        posts,
        vec![Action::SendPost {
            slot: 0,
            price_cents: 9000
        }]
    );
    (a, t0)
}

/// A post that waited for a free connection gets its whole `post_timeout` from its first
/// byte: answered 1.5 s after it was written (2.5 s after it was queued) it sells.
#[test]
fn a_posts_timeout_runs_from_when_it_was_written() {
    let (mut a, t0) = first_post_queued();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // Written a second after it was queued: due by 3.01 s, not 2.01 s.
    a.post_sent(0, ms(10));
    a.written(0, true, ms(1010));
    assert_eq!(a.next_timeout(), Some(ms(3010)));
    a.on_timeout(ms(2010));
    assert!(a.poll_action().is_none());
    a.on_post_result(
        0,
        ms(2510),
        PostOutcome::Accepted {
            buyer_lead_id: None,
        },
    );
    assert!(a.is_done());
    assert_eq!(a.outcome().sales.len(), 1);
    assert_eq!(a.outcome().sales[0].buyer, 100);
    assert_eq!(a.post_response(0), Duration::from_millis(1500));

    // Once the exchange is stopping, no later than the stop.
    let (mut a, t0) = first_post_queued();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    a.stop_by(ms(2500));
    a.post_sent(0, ms(10));
    a.written(0, true, ms(1010));
    assert_eq!(a.next_timeout(), Some(ms(2500)));
}

/// A post that finds no free connection within its `post_timeout` is not sent at all: not a
/// timeout of the buyer's, not a post attempt; the lead cascades.
#[test]
fn a_post_never_written_in_its_time_is_not_sent_and_cascades() {
    let (mut a, t0) = first_post_queued();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    a.on_timeout(ms(2010));
    let actions: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::AbandonPost { slot: 0 },
            Action::SendPost {
                slot: 1,
                price_cents: 4000
            }
        ]
    );
    assert_eq!(a.post_result(0), Some(&PostOutcome::NotWritten));
    a.post_sent(1, ms(2010));
    a.written(1, true, ms(2010));
    a.on_post_result(
        1,
        ms(2020),
        PostOutcome::Accepted {
            buyer_lead_id: None,
        },
    );
    let o = a.outcome();
    assert_eq!(sold_to_outcome(&o), vec![(101, 4000)]);
    // The 2 s the first post waited for a connection are the buyer's, not the engine's.
    assert_eq!(o.elapsed, Duration::from_millis(2020));
    assert_eq!(o.buyer_wait, Duration::from_millis(2020));
}

/// When no acceptable bidder had a free connection in its time, the lead is unsold
/// `buyers_busy`: no buyer turned it down.
#[test]
fn a_lead_whose_posts_all_found_no_connection_is_unsold_buyers_busy() {
    let (mut a, t0) = first_post_queued();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    a.on_timeout(ms(2010));
    let actions: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
    assert_eq!(actions.first(), Some(&Action::AbandonPost { slot: 0 }));
    let mut t = 2010;
    while !a.is_done() && t < 20_000 {
        t += 10;
        a.on_timeout(ms(t));
        while a.poll_action().is_some() {}
    }
    assert!(a.is_done());
    assert_eq!(a.post_result(1), Some(&PostOutcome::NotWritten));
    let o = a.outcome();
    assert_eq!(o.status, Status::Unsold);
    assert_eq!(o.unsold_reason, Some(UnsoldReason::BuyersBusy));
    assert_eq!(
        o.unsold_reason.map(UnsoldReason::as_str),
        Some("buyers_busy")
    );
}

fn sold_to_outcome(o: &Outcome) -> Vec<(usize, Cents)> {
    o.sales.iter().map(|s| (s.buyer, s.price_cents)).collect()
}

/// A ping that waited for a connection and was never written (its buyer's pool busy until
/// the close): the wait is the buyer's, not the engine's; the intake ends when it began.
#[test]
fn a_ping_never_written_waits_on_the_buyer_not_the_engine() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut a = Auction::new(params(SaleKind::Exclusive, 0), t0, t0, &[100]);
    while a.poll_action().is_some() {}
    a.ping_waiting(ms(1));
    a.on_timeout(ms(800));
    while a.poll_action().is_some() {}
    let o = a.outcome();
    assert_eq!(o.status, Status::Unsold);
    assert_eq!(o.elapsed, Duration::from_millis(800));
    assert_eq!(o.buyer_wait, Duration::from_millis(799));
    assert_eq!(o.intake, Duration::from_millis(1));
}
