//! A seller's `max_leads_per_second`, over a sliding second.
//!
//! Counting per clock second lets a burst that straddles a second's boundary reach twice the
//! limit within one second. The window here slides instead: the last second is kept as
//! [`SLOTS`] counters of [`SLOT`] each, so no stretch shorter than `(SLOTS - 1) × SLOT` (990 ms)
//! ever admits more than the limit, at a fixed size whatever the limit. Time is monotonic.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Counters the sliding second is kept in.
pub const SLOTS: usize = 100;
/// The time one counter covers.
pub const SLOT: Duration = Duration::from_millis(10);

/// One seller's window. Shared by every worker, and carried across reloads by seller id.
pub struct RateWindow {
    base: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Leads admitted per slot, indexed by slot number modulo [`SLOTS`].
    counts: [u32; SLOTS],
    /// The slot last counted in (slots since `base`).
    last: u64,
    /// The sum of `counts`.
    total: u32,
}

impl RateWindow {
    pub fn new(base: Instant) -> RateWindow {
        RateWindow {
            base,
            inner: Mutex::new(Inner {
                counts: [0; SLOTS],
                last: 0,
                total: 0,
            }),
        }
    }

    /// Count one lead at `now` unless `limit` leads were counted in the second before it;
    /// false (and nothing counted) when over.
    pub fn admit(&self, limit: u32, now: Instant) -> bool {
        let slot = (now.saturating_duration_since(self.base).as_nanos() / SLOT.as_nanos()) as u64;
        let mut w = self.inner.lock();
        if slot > w.last {
            // Slots the window slid past are emptied (all of them after a quiet second).
            let gap = (slot - w.last).min(SLOTS as u64);
            for s in (slot + 1 - gap)..=slot {
                let i = (s % SLOTS as u64) as usize;
                w.total -= w.counts[i];
                w.counts[i] = 0;
            }
            w.last = slot;
        }
        // A `now` earlier than the last slot (another worker's clock read a moment before)
        // counts in the newest slot: the window never runs backwards.
        if w.total >= limit {
            return false;
        }
        let i = (w.last % SLOTS as u64) as usize;
        w.counts[i] += 1;
        w.total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(w: &RateWindow, ms: u64) -> Instant {
        w.base + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_across_a_second_boundary_gets_no_more_than_the_limit() {
        let w = RateWindow::new(Instant::now());
        // Three at 0.9 s, then three more at 1.1 s: a clock-second count would take all six.
        let first: Vec<bool> = (0..3).map(|_| w.admit(3, at(&w, 900))).collect();
        assert_eq!(first, [true, true, true]);
        let second: Vec<bool> = (0..3).map(|_| w.admit(3, at(&w, 1100))).collect();
        assert_eq!(second, [false, false, false]);
        // A second after the first three, room again.
        assert!(w.admit(3, at(&w, 1900)));
        assert!(w.admit(3, at(&w, 1905)));
        assert!(w.admit(3, at(&w, 1910)));
        assert!(!w.admit(3, at(&w, 1915)));
    }

    #[test]
    fn a_steady_stream_at_the_limit_is_admitted_whole() {
        let w = RateWindow::new(Instant::now());
        // 10 a second, evenly: every one admitted for a minute.
        for i in 0..600u64 {
            assert!(w.admit(10, at(&w, i * 100)), "lead {i}");
        }
        // One more in the same slot as the last is the eleventh in a second.
        assert!(!w.admit(10, at(&w, 59_900)));
    }

    #[test]
    fn no_stretch_under_990_ms_admits_more_than_the_limit() {
        let w = RateWindow::new(Instant::now());
        let mut admitted: Vec<u64> = Vec::new();
        // Arrivals every 7 ms, far over a limit of 20 a second.
        for t in (0..10_000u64).step_by(7) {
            if w.admit(20, at(&w, t)) {
                admitted.push(t);
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let within = admitted[i..].iter().take_while(|&&u| u < t + 990).count();
            assert!(within <= 20, "{within} admitted from {t} ms");
        }
        // And the limit is reached, not undershot: about 20 a second over 10 s.
        assert!(admitted.len() >= 190, "{}", admitted.len());
    }

    #[test]
    fn a_quiet_spell_empties_the_window_and_a_late_clock_read_counts_in_the_newest_slot() {
        let w = RateWindow::new(Instant::now());
        assert!(w.admit(1, at(&w, 50)));
        assert!(!w.admit(1, at(&w, 500)));
        // Hours later: empty.
        assert!(w.admit(1, at(&w, 7_200_000)));
        // A read from just before, as another worker may make: over the limit, not a new window.
        assert!(!w.admit(1, at(&w, 7_199_990)));
        // A `now` before the base counts as at the base.
        let early = RateWindow::new(Instant::now() + Duration::from_secs(5));
        assert!(early.admit(1, Instant::now()));
        assert!(!early.admit(1, Instant::now()));
    }
}
