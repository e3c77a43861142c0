//! The event loop's deadlines: a min-heap of `(instant, item)`.
//!
//! An entry is not removed when what it times out ends early (a lead answered long before its
//! ping deadline): the loop recognises such an entry when it comes due and ignores it. Left at
//! that, the heap holds every lead of the last timeout window — 4,000 entries at 2,000 leads/s
//! and a 2 s deadline, when a few dozen leads are in flight — and every push and pop pays for
//! its depth. So when the heap has grown to twice what its last sweep kept, one pass drops the
//! entries its owner no longer wants: the heap stays within about twice the live deadlines, for
//! an amortised constant cost per push.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The smallest heap that is swept: below it a sweep costs more than it saves.
pub const MIN_SWEEP_LEN: usize = 64;

pub struct Deadlines<T> {
    heap: BinaryHeap<Reverse<(Instant, T)>>,
    /// The length at which the next push sweeps first.
    sweep_at: usize,
}

impl<T: Ord + Copy> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            sweep_at: MIN_SWEEP_LEN,
        }
    }
}

impl<T: Ord + Copy> Deadlines<T> {
    /// Add a deadline. When the heap has doubled since the last sweep, the entries for which
    /// `wanted(at, &item)` is false are dropped first.
    pub fn push(&mut self, at: Instant, item: T, wanted: impl FnMut(Instant, &T) -> bool) {
        if self.heap.len() >= self.sweep_at {
            self.sweep(wanted);
        }
        self.heap.push(Reverse((at, item)));
    }

    /// Drop every entry for which `wanted` is false.
    pub fn sweep(&mut self, mut wanted: impl FnMut(Instant, &T) -> bool) {
        self.heap.retain(|Reverse((at, item))| wanted(*at, item));
        self.sweep_at = self.heap.len().saturating_mul(2).max(MIN_SWEEP_LEN);
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest entry if it is due by `now`, taken out.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_in_order_and_later_ones_stay() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for (ms, id) in [(30u64, 3u32), (10, 1), (20, 2), (40, 4)] {
            d.push(t0 + Duration::from_millis(ms), id, |_, _| true);
        }
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(10)));
        let now = t0 + Duration::from_millis(30);
        let mut out = Vec::new();
        while let Some((_, id)) = d.pop_due(now) {
            out.push(id);
        }
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(40)));
    }

    #[test]
    fn entries_no_longer_wanted_do_not_pile_up() {
        // A steady stream where each item ends long before its deadline: the heap must stay
        // near the live count instead of growing with every item ever pushed.
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let mut live: HashSet<u32> = HashSet::new();
        let mut max_len = 0;
        for id in 0..100_000u32 {
            live.insert(id);
            d.push(t0 + Duration::from_secs(2), id, |_, x| live.contains(x));
            // Ten items are live at any time; the rest ended early.
            if id >= 10 {
                live.remove(&(id - 10));
            }
            max_len = max_len.max(d.len());
        }
        assert!(max_len <= MIN_SWEEP_LEN + 1, "heap grew to {max_len}");
        // Every live item still has its entry.
        let due: HashSet<u32> = std::iter::from_fn(|| d.pop_due(t0 + Duration::from_secs(3)))
            .map(|(_, id)| id)
            .collect();
        assert!(live.iter().all(|id| due.contains(id)));
    }

    #[test]
    fn a_heap_of_live_entries_grows_as_needed() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for id in 0..1_000u32 {
            d.push(
                t0 + Duration::from_millis(u64::from(id % 97)),
                id,
                |_, _| true,
            );
        }
        assert_eq!(d.len(), 1_000);
        let mut last = None;
        let mut n = 0;
        while let Some((at, _)) = d.pop_due(t0 + Duration::from_secs(1)) {
            assert!(last.is_none_or(|l| l <= at));
            last = Some(at);
            n += 1;
        }
        assert_eq!(n, 1_000);
        assert!(d.is_empty());
    }
}
