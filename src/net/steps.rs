//! Wall-clock time of each step of a lead's path through a worker, for profiling: where the
//! engine's part of a lead's time goes, step by step, at full load.
//!
//! Compiled in only with the `step-timing` cargo feature; without it every function here is
//! empty and inlined away. With it, each worker thread keeps one histogram per step and, when
//! its loop ends (SIGTERM), writes them as one JSON object a line to the file named by the
//! `GAVEL_STEP_TIMING` environment variable (appended, one line per worker):
//!
//! ```sh
//! cargo build --release --features step-timing
//! GAVEL_STEP_TIMING=/tmp/steps.jsonl target/release/gavel serve --config ...
//! ```
//!
//! The steps of one event are timed back to back from the moment the loop takes the event up,
//! so they add up to the event's handling; a step is recorded only when the step before it in
//! the same event was (`mark_after`), so interleaved leads never mix.

use std::time::Instant;

/// A timed step: the time from the previous step of the same event to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// From the poll's wake-up to the loop taking this event up (earlier events of the turn).
    TurnWait,
    /// A seller connection's `recv`.
    SellerRecv,
    /// The request's HTTP decoding and routing, to the start of the lead.
    SellerDecode,
    /// The API key and the seller's rate limit.
    AuthRate,
    /// The lead request's JSON.
    Parse,
    /// Campaign lookup, permission, in-flight count, the lead id.
    Admit,
    /// The `lead_received` journal record.
    JournalReceived,
    /// Validation, suppression, dedupe.
    Validate,
    /// Matching the buyers and building the auction.
    Match,
    /// From the auction built to the first ping handed to the kernel (the ping body, the
    /// `ping_sent` record, a connection from the pool, the request bytes).
    FirstPing,
    /// A buyer connection's `recv`.
    BuyerRecv,
    /// A buyer answer's HTTP decoding.
    BuyerDecode,
    /// A post's answer to the start of the seller's answer (the auction's result, the
    /// journal records of the post and the sale).
    PostResult,
    /// The seller's answer built, to the moment it is handed to the kernel.
    AnswerBuild,
    /// The `send` of the seller's answer.
    AnswerWrite,
    /// The `send` of a ping.
    PingWrite,
    /// The `send` of a post.
    PostWrite,
}

#[cfg(feature = "step-timing")]
const STEPS: [(Step, &str); 17] = [
    (Step::TurnWait, "turn_wait"),
    (Step::SellerRecv, "seller_recv"),
    (Step::SellerDecode, "seller_decode"),
    (Step::AuthRate, "auth_rate"),
    (Step::Parse, "parse"),
    (Step::Admit, "admit"),
    (Step::JournalReceived, "journal_received"),
    (Step::Validate, "validate"),
    (Step::Match, "match"),
    (Step::FirstPing, "first_ping"),
    (Step::BuyerRecv, "buyer_recv"),
    (Step::BuyerDecode, "buyer_decode"),
    (Step::PostResult, "post_result"),
    (Step::AnswerBuild, "answer_build"),
    (Step::AnswerWrite, "answer_write"),
    (Step::PingWrite, "ping_write"),
    (Step::PostWrite, "post_write"),
];

#[cfg(feature = "step-timing")]
mod imp {
    use super::{Step, STEPS};
    use hdrhistogram::Histogram;
    use std::cell::RefCell;
    use std::io::Write;
    use std::time::Instant;

    struct Timing {
        last: Option<(Step, Instant)>,
        hist: Vec<Histogram<u64>>,
    }

    thread_local! {
        static T: RefCell<Option<Timing>> = const { RefCell::new(None) };
    }

    fn with(f: impl FnOnce(&mut Timing)) {
        T.with(|t| {
            let mut t = t.borrow_mut();
            let t = t.get_or_insert_with(|| Timing {
                last: None,
                hist: STEPS
                    .iter()
                    .filter_map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 2).ok())
                    .collect(),
            });
            f(t)
        })
    }

    fn record(t: &mut Timing, step: Step, from: Instant, to: Instant) {
        let ns = to.saturating_duration_since(from).as_nanos();
        let i = STEPS.iter().position(|(s, _)| *s == step).unwrap_or(0);
        if let Some(h) = t.hist.get_mut(i) {
            h.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        }
    }

    pub fn event(woke: Instant) {
        let now = Instant::now();
        with(|t| {
            record(t, Step::TurnWait, woke, now);
            t.last = Some((Step::TurnWait, now));
        })
    }

    pub fn mark_after(prev: Step, step: Step) {
        let now = Instant::now();
        with(|t| match t.last {
            Some((p, from)) if p == prev => {
                record(t, step, from, now);
                t.last = Some((step, now));
            }
            _ => {}
        })
    }

    pub fn span(step: Step, from: Instant) {
        let now = Instant::now();
        with(|t| record(t, step, from, now))
    }

    pub fn dump(worker: usize) {
        let Some(path) = std::env::var_os("GAVEL_STEP_TIMING") else {
            return;
        };
        let mut line = format!("{{\"worker\":{worker}");
        with(|t| {
            for ((_, name), h) in STEPS.iter().zip(&t.hist) {
                let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                line.push_str(&format!(
                    ",\"{name}\":{{\"count\":{},\"mean\":{:.2},\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2}}}",
                    h.len(),
                    h.mean() / 1000.0,
                    us(0.5),
                    us(0.9),
                    us(0.99)
                ));
            }
        });
        line.push_str("}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("step timing: cannot write {}: {e}", path.to_string_lossy());
        }
    }
}

#[cfg(not(feature = "step-timing"))]
mod imp {
    use super::Step;
    use std::time::Instant;

    #[inline(always)]
    pub fn event(_woke: Instant) {}
    #[inline(always)]
    pub fn mark_after(_prev: Step, _step: Step) {}
    #[inline(always)]
    pub fn span(_step: Step, _from: Instant) {}
    #[inline(always)]
    pub fn dump(_worker: usize) {}
}

/// The loop takes up an event of the turn that woke at `woke`.
#[inline(always)]
pub fn event(woke: Instant) {
    imp::event(woke)
}

/// `step` ends now, if the step before it in this event was `prev`.
#[inline(always)]
pub fn mark_after(prev: Step, step: Step) {
    imp::mark_after(prev, step)
}

/// A step timed on its own, from `from` to now (a `send`).
#[inline(always)]
pub fn span(step: Step, from: Instant) {
    imp::span(step, from)
}

/// Write this worker's histograms (at the end of its loop).
#[inline(always)]
pub fn dump(worker: usize) {
    imp::dump(worker)
}
