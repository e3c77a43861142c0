//! The shared duplicate index: when each dedupe key was last recorded, with bounded memory.

use super::MixState;
use parking_lot::{Mutex, MutexGuard};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// Independent locks. Two leads contend only when their keys fall in the same shard, so with 64
/// shards and a handful of workers a check almost never waits.
pub const DEDUPE_SHARDS: usize = 64;
/// Oldest entries a shard may drop per key recorded. Each record pushes one entry on the
/// shard's order queue and may pop up to this many, so the queue drains faster than it fills
/// while over its limit, and no single insert does unbounded work while holding the lock.
pub const EVICT_STEPS_PER_KEY: usize = 2;
/// Largest `max_entries` honoured; beyond it the index would not fit a sane appliance.
const MAX_DEDUPE_ENTRIES: usize = 1 << 30;

/// When each dedupe key was last recorded (unix µs), shared by every worker.
///
/// # Memory bound
/// Each of the [`DEDUPE_SHARDS`] shards holds at most `cap` keys ([`shard_cap`]: a 64th of
/// `max_entries` and room for the keys' uneven spread across the shards, so that the index as a
/// whole holds at least `max_entries` before any shard is full) in a map (allocated up front, so the hot path never rehashes a large table under its lock) and a
/// FIFO of (key, time) in recording order of at most `cap + cap / 4 + 1` slots; a key recorded
/// again after its window leaves a stale slot behind, which is why the queue has the extra
/// quarter. The map briefly exceeds `cap` only by stale slots still waiting in the queue, never
/// beyond the queue's own limit. In bytes: about 17 bytes per map bucket (hashbrown rounds
/// buckets up to a power of two at 7/8 load) plus 16 per queue slot, so between roughly 40 and
/// 60 bytes per key held: 1 M entries (1,098,240 places with the spread's room) cost about
/// 60 MB at worst.
///
/// # Time
/// Times are wall-clock unix microseconds, not monotonic: the window spans days and must
/// survive a restart, when the index is rebuilt from the journal's timestamps.
///
/// # Cost
/// A check of a new two-key lead takes two shard locks, two probes and up to four evictions.
/// `benches/compliance.rs` measured it at about 0.2 µs on an index that fits in cache and
/// 0.85 µs on a full 1 M-entry index (cache misses dominate), and a refused duplicate at
/// about 0.05 µs, on a busy 2-core machine.
///
/// # Sizing
/// A full shard drops its oldest entry even when still inside the window, and a duplicate of
/// that lead would then pass. Keys fall in shards at random, so shards fill unevenly: each has
/// room for six standard deviations of that spread over its share, and the index holds
/// `max_entries` keys with none dropped (short of odds below one in a hundred million). Size `max_entries` to at least (leads per day × the longest
/// `dedupe_days` × keys per lead); [`DedupeIndex::forced_evictions`] counts the shortfall.
pub struct DedupeIndex {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard and the bucket of a key; seeded per process (see [`MixState`]).
    mix: MixState,
    /// Longest window any caller has asked for. Entries older than that are useless to every
    /// campaign and are dropped as they reach the front of their queue; 0 until the first check,
    /// so a replay on start drops nothing by age.
    widest_window_us: AtomicU64,
    /// Entries dropped for room while still inside `widest_window_us`.
    forced_evictions: AtomicU64,
}

struct Shard {
    /// Key → last recorded time (unix µs).
    seen: HashMap<u64, u64, MixState>,
    /// (key, time) in recording order. The front is the oldest; a slot is live only while
    /// `seen[key] == time`, otherwise the key was re-recorded or dropped since.
    order: VecDeque<(u64, u64)>,
    /// Keys this shard may hold.
    cap: usize,
    /// Slots the order queue may hold.
    order_cap: usize,
}

impl Shard {
    /// Records `key` at `ts` (the later time wins when it is already there), then drops
    /// from the front of the queue what is stale, expired, or over the limits, at most
    /// [`EVICT_STEPS_PER_KEY`] slots.
    fn record(&mut self, key: u64, ts: u64, horizon_us: Option<u64>, forced: &AtomicU64) {
        // One probe each, through the entry API: on a full index these are cache misses.
        let pushed = match self.seen.entry(key) {
            Entry::Occupied(mut e) => {
                let newer = *e.get() < ts;
                if newer {
                    e.insert(ts);
                }
                newer
            }
            Entry::Vacant(e) => {
                e.insert(ts);
                true
            }
        };
        if pushed {
            self.order.push_back((key, ts));
        }
        for _ in 0..EVICT_STEPS_PER_KEY {
            let Some(&(k, t)) = self.order.front() else {
                break;
            };
            let expired = horizon_us.is_some_and(|h| t < h);
            let over = self.seen.len() > self.cap || self.order.len() > self.order_cap;
            match self.seen.entry(k) {
                // Live: the key's latest slot. Dropped only when expired or for room.
                Entry::Occupied(e) if *e.get() == t => {
                    if !(expired || over) {
                        break;
                    }
                    e.remove();
                    if !expired {
                        forced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Stale: the key was recorded again since, or dropped; the slot is free to go.
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

/// Keys one shard may hold for an index of `max_entries`: its share, and room for the spread
/// of a random split (the count in one shard is binomial, its standard deviation under the
/// square root of the share) of six standard deviations and 8, so that the whole index holds
/// `max_entries` before any shard is full. About 4.7% over the share at 1 M entries.
pub fn shard_cap(max_entries: usize) -> usize {
    let share = max_entries
        .min(MAX_DEDUPE_ENTRIES)
        .div_ceil(DEDUPE_SHARDS)
        .max(1);
    share + (6.0 * (share as f64).sqrt()).ceil() as usize + 8
}

impl DedupeIndex {
    /// An index holding at least `max_entries` keys in all before it drops any for room.
    /// Allocates its whole bound now; see the type's memory bound.
    pub fn new(max_entries: usize) -> DedupeIndex {
        let cap = shard_cap(max_entries);
        let order_cap = cap + cap / 4 + 1;
        let mix = MixState::random();
        let shards = (0..DEDUPE_SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    seen: HashMap::with_capacity_and_hasher(cap + 1, mix),
                    // One slot of slack: a record pushes before it pops.
                    order: VecDeque::with_capacity(order_cap + 1),
                    cap,
                    order_cap,
                })
            })
            .collect();
        DedupeIndex {
            shards,
            mix,
            widest_window_us: AtomicU64::new(0),
            forced_evictions: AtomicU64::new(0),
        }
    }

    /// Raise the bound to about `max_entries` keys (a reload that turns dedupe on); never
    /// lowers it. The memory grows with use from here, not at once.
    pub fn ensure_capacity(&self, max_entries: usize) {
        let cap = shard_cap(max_entries);
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            if cap > s.cap {
                s.cap = cap;
                s.order_cap = cap + cap / 4 + 1;
            }
        }
    }

    fn shard_of(&self, key: u64) -> usize {
        // The top bits: the map inside the shard uses the same mix, mostly its low bits.
        (self.mix.mix(key) >> (64 - DEDUPE_SHARDS.trailing_zeros())) as usize
    }

    /// Atomically: if any of `keys` was recorded at or after `now_us - window_us`, returns
    /// false (a duplicate) and records nothing; otherwise records every key at `now_us` and
    /// returns true. Two threads racing with a common key: exactly one gets true.
    ///
    /// A duplicate records nothing so that a consumer who keeps resubmitting is refused only
    /// for the window after the lead that was accepted, not forever. `window_us == 0` means
    /// dedupe is off for the campaign: always true, nothing recorded.
    ///
    /// Every shard the keys touch is locked, in ascending shard order (so two calls can never
    /// wait on each other in a cycle), before anything is read; no allocation.
    pub fn check_and_insert(&self, keys: &[u64], now_us: u64, window_us: u64) -> bool {
        self.first_seen(keys, now_us, window_us).is_none()
    }

    /// [`Self::check_and_insert`], telling which key was seen: the index in `keys` of the
    /// first one recorded within the window (nothing recorded then), or `None` when none was
    /// (all recorded now).
    pub fn first_seen(&self, keys: &[u64], now_us: u64, window_us: u64) -> Option<usize> {
        if window_us == 0 || keys.is_empty() {
            return None;
        }
        self.widest_window_us
            .fetch_max(window_us, Ordering::Relaxed);
        let mut wanted = 0u64;
        for &k in keys {
            wanted |= 1 << self.shard_of(k);
        }
        let mut guards: [Option<MutexGuard<'_, Shard>>; DEDUPE_SHARDS] =
            std::array::from_fn(|_| None);
        let mut bits = wanted;
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(shard) = self.shards.get(s) {
                guards[s] = Some(shard.lock());
            }
        }
        let since = now_us.saturating_sub(window_us);
        for (i, &k) in keys.iter().enumerate() {
            if let Some(Some(g)) = guards.get(self.shard_of(k)) {
                if g.seen.get(&k).is_some_and(|&t| t >= since) {
                    return Some(i);
                }
            }
        }
        let horizon = self.horizon(now_us);
        for &k in keys {
            if let Some(Some(g)) = guards.get_mut(self.shard_of(k)) {
                g.record(k, now_us, horizon, &self.forced_evictions);
            }
        }
        None
    }

    /// Records `keys` at `ts_us` whatever is there: the rebuild on start from the journal's
    /// `lead_received` records, oldest first. A key already recorded later keeps its later time.
    pub fn replay(&self, keys: &[u64], ts_us: u64) {
        let horizon = self.horizon(ts_us);
        for &k in keys {
            if let Some(shard) = self.shards.get(self.shard_of(k)) {
                shard
                    .lock()
                    .record(k, ts_us, horizon, &self.forced_evictions);
            }
        }
    }

    /// Keys held now, across all shards (each shard locked in turn, so only approximate while
    /// workers insert).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().seen.len()).sum()
    }

    /// Keys the index may hold at most, across its shards.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().cap).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries dropped for room while still inside the widest window seen: each is a duplicate
    /// that could now pass. Non-zero means `max_entries` is too small for the traffic.
    pub fn forced_evictions(&self) -> u64 {
        self.forced_evictions.load(Ordering::Relaxed)
    }

    /// Zero the forced evictions count (the operator's stats reset).
    pub fn reset_forced_evictions(&self) {
        self.forced_evictions.store(0, Ordering::Relaxed);
    }

    /// Time before which no caller's window reaches, once any window is known.
    fn horizon(&self, now_us: u64) -> Option<u64> {
        match self.widest_window_us.load(Ordering::Relaxed) {
            0 => None,
            w => Some(now_us.saturating_sub(w)),
        }
    }
}
