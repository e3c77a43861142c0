//! `server.max_connections`: seller connections counted across all workers, not split between
//! them, since the kernel's `SO_REUSEPORT` spreads connections unevenly and a per-worker share
//! refused sellers well below the configured number.
//!
//! Each open seller connection holds a [`Place`]; dropping it (however the connection ends)
//! gives the place back, so no close path can forget to. At the limit a worker makes room by
//! closing one of its own idle connections and handing its place to the new one; when it has
//! none it asks the other workers, one at a time, through their [`Mailbox`]es: a worker asked
//! gives up the place of its connection idle the longest, or says it has none. Stalled
//! strangers go first everywhere: the asks go round once for a stranger only, and only if no
//! worker has one does the asking worker close its own idle connection or ask again for any. The count never
//! goes over the limit for this: a place changes hands, it is not added.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What all workers share about seller connections.
pub struct SellerConns {
    /// Open seller connections across all workers (and places on their way between workers).
    open: Arc<AtomicUsize>,
    /// Idle connections closed to make room for a new one.
    evicted: AtomicU64,
    /// New connections refused at the limit (answered 503, or closed under TLS).
    refused: AtomicU64,
    /// Per worker, by id: asks for a place and the answers to its own asks.
    mail: Vec<Mailbox>,
}

/// One seller connection's share of `server.max_connections`, given back when dropped.
pub struct Place {
    open: Arc<AtomicUsize>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A worker at the limit with no idle connection of its own asks another for a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The asking worker: the answer goes to its mailbox.
    pub from: usize,
    /// Matches the answer to the connection waiting for it.
    pub ticket: u64,
    /// Only a stalled stranger may be closed for it (the first round of asks): a seller's
    /// idle connection anywhere is closed only when no worker has a stranger to close.
    pub strangers_only: bool,
}

/// The answer to an [`Ask`]: a place (an idle connection closed, or one free), or `None`.
pub struct Answer {
    pub ticket: u64,
    pub place: Option<Place>,
}

#[derive(Default)]
pub struct Mailbox {
    /// Something was posted since the worker last looked: one load per loop turn, no lock.
    flag: AtomicBool,
    inner: Mutex<Letters>,
}

#[derive(Default)]
pub struct Letters {
    pub asks: Vec<Ask>,
    pub answers: Vec<Answer>,
    /// Answers to the lookups (`GET /v1/leads/{id}`) this worker's sellers asked for.
    pub lookups: Vec<super::lookup::LookupDone>,
}

impl SellerConns {
    pub fn new(workers: usize) -> SellerConns {
        SellerConns {
            open: Arc::new(AtomicUsize::new(0)),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            mail: (0..workers).map(|_| Mailbox::default()).collect(),
        }
    }

    /// A place under `limit`; `None` when `limit` places (or more, after a lowered limit) are
    /// taken.
    pub fn take(&self, limit: usize) -> Option<Place> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Place {
                open: self.open.clone(),
            })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Zero the evicted and refused counts (the operator's stats reset); open connections
    /// are a gauge, not a count, and stay.
    pub fn reset_counts(&self) {
        self.evicted.store(0, Ordering::Relaxed);
        self.refused.store(0, Ordering::Relaxed);
    }

    pub fn count_eviction(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Workers that can be asked for a place.
    pub fn workers(&self) -> usize {
        self.mail.len()
    }

    /// Post an ask to worker `to`; false when there is no such worker. The caller wakes it.
    pub fn ask(&self, to: usize, ask: Ask) -> bool {
        self.post(to, |l| l.asks.push(ask))
    }

    /// Post an answer to worker `to`; a place for a worker that does not exist is given back.
    pub fn answer(&self, to: usize, answer: Answer) -> bool {
        self.post(to, |l| l.answers.push(answer))
    }

    /// Post a lookup's answer to worker `to`. The caller wakes it.
    pub fn deliver_lookup(&self, to: usize, done: super::lookup::LookupDone) -> bool {
        self.post(to, |l| l.lookups.push(done))
    }

    fn post(&self, to: usize, put: impl FnOnce(&mut Letters)) -> bool {
        let Some(m) = self.mail.get(to) else {
            return false;
        };
        put(&mut m.inner.lock());
        // After the letter: a worker that sees the flag finds it.
        m.flag.store(true, Ordering::Release);
        true
    }

    /// Worker `id`'s letters since it last looked; `None` (without a lock) when there are none.
    pub fn collect(&self, id: usize) -> Option<Letters> {
        let m = self.mail.get(id)?;
        if !m.flag.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(std::mem::take(&mut *m.inner.lock()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_until_dropped_and_never_over_the_limit() {
        let conns = SellerConns::new(2);
        let a = conns.take(2);
        let b = conns.take(2);
        assert!(a.is_some() && b.is_some());
        assert!(conns.take(2).is_none(), "the limit holds");
        assert_eq!(conns.open(), 2);
        drop(a);
        assert_eq!(conns.open(), 1);
        let c = conns.take(2);
        assert!(c.is_some(), "a place given back is taken again");
        // A lowered limit: the places held stay, no new one is given.
        assert!(conns.take(1).is_none());
        drop((b, c));
        assert_eq!(conns.open(), 0);
    }

    #[test]
    fn letters_reach_their_worker_once() {
        let conns = SellerConns::new(2);
        assert!(conns.collect(1).is_none(), "nothing posted");
        let ask = |ticket| Ask {
            from: 0,
            ticket,
            strangers_only: false,
        };
        assert!(conns.ask(1, ask(7)));
        assert!(!conns.ask(5, ask(8)), "no such worker");
        let place = conns.take(1);
        assert!(conns.answer(0, Answer { ticket: 7, place }));
        let to_1 = conns.collect(1).map(|l| l.asks).unwrap_or_default();
        assert_eq!(to_1, vec![ask(7)]);
        assert!(conns.collect(1).is_none(), "taken once");
        let to_0 = conns.collect(0).map(|l| l.answers).unwrap_or_default();
        assert_eq!(to_0.len(), 1);
        assert_eq!(conns.open(), 1, "the place travels with its answer");
        drop(to_0);
        assert_eq!(conns.open(), 0);
    }
}
