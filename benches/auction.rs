//! Cost of one lead's auction state machine, driven to its answer with simulated time, at 10 and
//! 50 buyers per lead: `Auction::new` → every ping sent → every answer → close and ranking →
//! post(s) → post result(s) → `Action::Answer` → `outcome()`. This is all the auction logic a
//! worker runs for a lead, without the sockets; the end-to-end benchmark (`tools/bench.py`)
//! measures the rest.
//!
//! Run: `cargo bench --bench auction -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use gavel::auction::{Action, Auction, Params, PingOutcome, PostOutcome};
use gavel::config::SaleKind;
use std::time::{Duration, Instant};

/// Upper bound on the actions one simulated auction may produce, so a state machine that never
/// answers fails the benchmark instead of spinning forever.
const MAX_ACTIONS_PER_LEAD: usize = 4 * 1024;

/// How one benchmarked lead plays out.
#[derive(Clone, Copy)]
struct Scenario {
    sale: SaleKind,
    /// Every n-th buyer answers no bid (0 = all bid).
    no_bid_every: usize,
    /// Every n-th buyer never answers, so the auction closes on its deadline (0 = all answer).
    silent_every: usize,
    /// Posts rejected before one is accepted (the cascade).
    rejected_posts: usize,
}

fn params(sale: SaleKind) -> Params {
    Params {
        sale,
        reserve_cents: 500,
        ping_timeout: Duration::from_millis(800),
        post_timeout: Duration::from_millis(2000),
        margin: Duration::from_millis(20),
        ping_only: false,
        in_order: false,
        answer_by: None,
        posted_before: false,
    }
}

/// Distinct bids, not in slot order, so ranking has real work to do.
fn bid_cents(slot: usize) -> i64 {
    600 + ((slot * 7919) % 97) as i64 * 50
}

/// Run one auction to its answer; returns the number of sales so the work cannot be skipped.
fn run_lead(s: Scenario, buyers: &[usize], t0: Instant) -> usize {
    let at = |us: u64| t0 + Duration::from_micros(us);
    let mut a = Auction::new(params(s.sale), t0, at(5), buyers);
    let mut rejected = 0;
    let mut posts: Vec<usize> = Vec::with_capacity(8);
    let mut now_us = 5;
    for _ in 0..MAX_ACTIONS_PER_LEAD {
        let Some(action) = a.poll_action() else {
            if !posts.is_empty() {
                // The buyers answer the posts that went out, 2 ms later.
                now_us += 2_000;
                for slot in std::mem::take(&mut posts) {
                    let outcome = if rejected < s.rejected_posts {
                        rejected += 1;
                        PostOutcome::Rejected {
                            reason: "duplicate".into(),
                        }
                    } else {
                        PostOutcome::Accepted {
                            buyer_lead_id: None,
                        }
                    };
                    a.on_post_result(slot, at(now_us), outcome);
                }
                continue;
            }
            if a.is_done() {
                break;
            }
            // Pings are all written: answers come back 1 ms later, the last one a microsecond
            // after the other, and silent buyers leave the close to the deadline.
            for slot in 0..a.slots() {
                now_us += 1;
                if s.silent_every > 0 && slot % s.silent_every == 0 {
                    continue;
                }
                let outcome = if s.no_bid_every > 0 && slot % s.no_bid_every == 0 {
                    PingOutcome::NoBid
                } else {
                    PingOutcome::Bid {
                        cents: bid_cents(slot),
                        bid_id: Some(format!("b-{slot}").as_str().into()),
                    }
                };
                a.on_ping_result(slot, at(1_000 + now_us), outcome);
            }
            now_us += 1_000;
            if (0..a.slots()).any(|slot| a.ping_result(slot).is_none()) {
                // Some buyer is silent: the auction closes at its deadline.
                let deadline = a.ping_deadline();
                now_us = deadline.saturating_duration_since(t0).as_micros() as u64;
                a.on_timeout(deadline);
            }
            continue;
        };
        match action {
            Action::SendPing { slot, .. } => a.ping_sent(slot, at(now_us)),
            Action::SendPost { slot, .. } => {
                a.post_sent(slot, at(now_us));
                posts.push(slot);
            }
            Action::Answer => {
                let outcome = a.outcome();
                return black_box(outcome).sales.len();
            }
            Action::AbandonPing { .. } | Action::AbandonPost { .. } => {}
        }
    }
    panic!("the auction did not answer within {MAX_ACTIONS_PER_LEAD} actions");
}

fn bench_auction(c: &mut Criterion) {
    let scenarios = [
        (
            "exclusive_all_answer",
            Scenario {
                sale: SaleKind::Exclusive,
                no_bid_every: 5,
                silent_every: 0,
                rejected_posts: 0,
            },
            1,
        ),
        (
            "shared3_all_answer",
            Scenario {
                sale: SaleKind::Shared(3),
                no_bid_every: 5,
                silent_every: 0,
                rejected_posts: 0,
            },
            3,
        ),
        (
            "exclusive_deadline_cascade2",
            Scenario {
                sale: SaleKind::Exclusive,
                no_bid_every: 5,
                silent_every: 7,
                rejected_posts: 2,
            },
            1,
        ),
    ];
    let mut group = c.benchmark_group("auction");
    for buyers in [10usize, 50] {
        let ids: Vec<usize> = (0..buyers).map(|i| 100 + i).collect();
        for (name, scenario, sales) in scenarios {
            let t0 = Instant::now();
            assert_eq!(
                run_lead(scenario, &ids, t0),
                sales,
                "{name} at {buyers} buyers must sell {sales} time(s)"
            );
            group.bench_with_input(BenchmarkId::new(name, buyers), &ids, |b, ids| {
                b.iter(|| run_lead(scenario, black_box(ids), t0));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_auction);
criterion_main!(benches);
