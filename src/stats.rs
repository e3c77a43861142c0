//! Counters and latency histograms. Each worker owns one `WorkerStats` behind its own mutex
//! (uncontended on the hot path: only a scrape takes it from another thread); a scrape merges
//! them into a [`StatsView`].

use crate::money::Cents;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Histograms record microseconds up to a minute.
pub const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Two significant digits: a value is reported within 1 % (60 µs as 60 µs, 1,234 µs as
/// 1,232 µs). Each histogram then takes about 20 KiB instead of 140 KiB at three digits, which
/// matters because every buyer has one per worker (500 buyers on 8 workers: 80 MiB vs 560 MiB).
pub const HISTOGRAM_SIGFIG: u8 = 2;

pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG) {
        Ok(h) => h,
        // Constant, valid bounds: hdrhistogram only refuses bounds out of order or sigfig > 5.
        Err(e) => unreachable!("histogram bounds: {:?}", e),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignCounters {
    pub leads: u64,
    pub sold: u64,
    pub unsold: u64,
    pub rejected: u64,
    pub revenue_cents: Cents,
    pub payout_cents: Cents,
    /// Leads answered that were sent as `"test": true`, counted in `leads` and the rest as well;
    /// they move no money (no revenue, payout, spend, caps or budgets).
    pub test_leads: u64,
    /// Seller-side pings (`/v1/ping`) answered, and of those the ones answered with a bid. A
    /// ping is not a lead: the lead is counted when it is posted.
    pub pings: u64,
    pub pings_bid: u64,
    /// Pings refused for their content (422), not counted as leads.
    pub pings_refused: u64,
    /// Posts (`/v1/post`) refused for their content while the ping stays postable: attempts,
    /// not leads, so a seller correcting a post does not count one lead many times.
    pub posts_refused: u64,
    /// Eligible buyers left out of a lead's pings because more were eligible than a lead
    /// pings ([`crate::auction::MAX_PINGS_PER_LEAD`]), summed over leads, since the start.
    pub buyers_not_pinged: u64,
}

#[derive(Debug, Clone)]
pub struct BuyerCounters {
    pub pings: u64,
    pub bids: u64,
    pub no_bids: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub invalid: u64,
    pub bid_sum_cents: Cents,
    pub posts: u64,
    pub wins: u64,
    pub post_rejects: u64,
    pub spent_cents: Cents,
    pub response_us: Histogram<u64>,
}

impl BuyerCounters {
    /// Add `b`'s counts to these.
    pub fn add(&mut self, b: &BuyerCounters) {
        self.pings += b.pings;
        self.bids += b.bids;
        self.no_bids += b.no_bids;
        self.timeouts += b.timeouts;
        self.errors += b.errors;
        self.invalid += b.invalid;
        self.bid_sum_cents += b.bid_sum_cents;
        self.posts += b.posts;
        self.wins += b.wins;
        self.post_rejects += b.post_rejects;
        self.spent_cents += b.spent_cents;
        let _ = self.response_us.add(&b.response_us);
    }
}

impl Default for BuyerCounters {
    fn default() -> Self {
        BuyerCounters {
            pings: 0,
            bids: 0,
            no_bids: 0,
            timeouts: 0,
            errors: 0,
            invalid: 0,
            bid_sum_cents: 0,
            posts: 0,
            wins: 0,
            post_rejects: 0,
            spent_cents: 0,
            response_us: histogram(),
        }
    }
}

/// One worker's numbers. Keyed by id so that a config reload keeps history.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub campaigns: BTreeMap<String, CampaignCounters>,
    /// Buyer id to its index in `buyer_counters`. An index, once given, holds for the life of
    /// these stats ([`WorkerStats::reset`] zeroes the counters in place), so a worker looks each
    /// buyer of a config up once ([`WorkerStats::buyer_slot`]) and not once per ping.
    buyer_slots: BTreeMap<String, usize>,
    buyer_counters: Vec<BuyerCounters>,
    /// Indices of buyers merged into another ([`WorkerStats::rename_buyer`]) and the index
    /// their counts went to: leads still running under an older config count on there.
    merged_into: BTreeMap<usize, usize>,
    /// Engine time per lead: elapsed minus the time spent waiting on buyers.
    pub overhead_us: Histogram<u64>,
    /// Seller-observed time per lead, arrival to answer written.
    pub elapsed_us: Histogram<u64>,
    /// `overhead_us` in three stages: arrival to the first ping handed to the kernel (intake);
    /// the engine's time between the first ping and the last buyer answer (the close: ranking,
    /// caps, the post; plus loop turns spent on other work); the last buyer answer to the
    /// seller's answer handed to the kernel (answer).
    pub overhead_intake_us: Histogram<u64>,
    pub overhead_close_us: Histogram<u64>,
    pub overhead_answer_us: Histogram<u64>,
    /// The `send` of the seller's answer, outside `overhead_us` as the `send` of a ping or a
    /// post is (there it counts as the buyer's time). On loopback it includes the seller
    /// side's TCP input and wake-up, which the kernel runs inside the sender's call.
    pub answer_write_us: Histogram<u64>,
    /// Refusals before a lead got an id: auth, bad request, 429, 503.
    pub refused: BTreeMap<u16, u64>,
    /// Records the journal refused (disk full, I/O error).
    pub journal_errors: u64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            campaigns: BTreeMap::new(),
            buyer_slots: BTreeMap::new(),
            buyer_counters: Vec::new(),
            merged_into: BTreeMap::new(),
            overhead_us: histogram(),
            elapsed_us: histogram(),
            overhead_intake_us: histogram(),
            overhead_close_us: histogram(),
            overhead_answer_us: histogram(),
            answer_write_us: histogram(),
            refused: BTreeMap::new(),
            journal_errors: 0,
        }
    }
}

impl WorkerStats {
    /// The counters of a campaign; the id is copied only the first time it is seen.
    pub fn campaign(&mut self, id: &str) -> &mut CampaignCounters {
        entry(&mut self.campaigns, id)
    }

    /// The counters of a buyer; the id is copied only the first time it is seen.
    pub fn buyer(&mut self, id: &str) -> &mut BuyerCounters {
        let slot = self.buyer_slot(id);
        &mut self.buyer_counters[slot]
    }

    /// The index of a buyer's counters for [`WorkerStats::buyer_at`], given on first sight.
    pub fn buyer_slot(&mut self, id: &str) -> usize {
        if let Some(&slot) = self.buyer_slots.get(id) {
            return slot;
        }
        let slot = self.buyer_counters.len();
        self.buyer_counters.push(BuyerCounters::default());
        self.buyer_slots.insert(id.to_string(), slot);
        slot
    }

    /// Keep the counters of `old` under `new`, a buyer's id after a rename: moved there when
    /// `new` has none yet (the index stays), added to its own when it has (two buyers made
    /// one; the old index then counts into the new one's). Either way leads running under
    /// the older config count on under `new`. False when `old` has no counters.
    pub fn rename_buyer(&mut self, old: &str, new: &str) -> bool {
        let Some(from) = self.buyer_slots.remove(old) else {
            return false;
        };
        let Some(&to) = self.buyer_slots.get(new) else {
            self.buyer_slots.insert(new.to_string(), from);
            return true;
        };
        if from != to {
            let taken = self
                .buyer_counters
                .get_mut(from)
                .map(std::mem::take)
                .unwrap_or_default();
            if let Some(into) = self.buyer_counters.get_mut(to) {
                into.add(&taken);
            }
            for into in self.merged_into.values_mut() {
                if *into == from {
                    *into = to;
                }
            }
            self.merged_into.insert(from, to);
        }
        true
    }

    /// The counters at an index from [`WorkerStats::buyer_slot`] of these same stats.
    pub fn buyer_at(&mut self, slot: usize) -> Option<&mut BuyerCounters> {
        let slot = match self.merged_into.is_empty() {
            true => slot,
            false => self.merged_into.get(&slot).copied().unwrap_or(slot),
        };
        self.buyer_counters.get_mut(slot)
    }

    /// A buyer's counters, if it has any.
    pub fn buyer_counters(&self, id: &str) -> Option<&BuyerCounters> {
        self.buyer_slots
            .get(id)
            .and_then(|&slot| self.buyer_counters.get(slot))
    }

    /// Every buyer's counters, in id order.
    pub fn buyers(&self) -> impl Iterator<Item = (&str, &BuyerCounters)> {
        self.buyer_slots.iter().filter_map(|(id, &slot)| {
            self.buyer_counters
                .get(slot)
                .map(|counters| (id.as_str(), counters))
        })
    }

    /// Zero every counter and histogram. Buyers keep their indices, so a worker's cached
    /// [`WorkerStats::buyer_slot`]s stay valid.
    pub fn reset(&mut self) {
        let slots = std::mem::take(&mut self.buyer_slots);
        let merged = std::mem::take(&mut self.merged_into);
        let buyers = self.buyer_counters.len();
        *self = WorkerStats::default();
        self.buyer_slots = slots;
        self.merged_into = merged;
        self.buyer_counters
            .resize_with(buyers, BuyerCounters::default);
    }

    pub fn merge(&mut self, other: &WorkerStats) {
        for (k, c) in &other.campaigns {
            let m = self.campaign(k);
            m.leads += c.leads;
            m.sold += c.sold;
            m.unsold += c.unsold;
            m.rejected += c.rejected;
            m.revenue_cents += c.revenue_cents;
            m.payout_cents += c.payout_cents;
            m.test_leads += c.test_leads;
            m.pings += c.pings;
            m.pings_bid += c.pings_bid;
            m.pings_refused += c.pings_refused;
            m.posts_refused += c.posts_refused;
            m.buyers_not_pinged += c.buyers_not_pinged;
        }
        for (k, b) in other.buyers() {
            self.buyer(k).add(b);
        }
        let _ = self.overhead_us.add(&other.overhead_us);
        let _ = self.elapsed_us.add(&other.elapsed_us);
        let _ = self.overhead_intake_us.add(&other.overhead_intake_us);
        let _ = self.overhead_close_us.add(&other.overhead_close_us);
        let _ = self.overhead_answer_us.add(&other.overhead_answer_us);
        let _ = self.answer_write_us.add(&other.answer_write_us);
        self.journal_errors += other.journal_errors;
        for (k, v) in &other.refused {
            *self.refused.entry(*k).or_default() += v;
        }
    }
}

/// The value under `id`, inserted (with one copy of the key) only when missing: `entry()`
/// would copy the key on every call, an allocation per ping on the hot path.
fn entry<'a, V: Default>(map: &'a mut BTreeMap<String, V>, id: &str) -> &'a mut V {
    if !map.contains_key(id) {
        map.insert(id.to_string(), V::default());
    }
    match map.get_mut(id) {
        Some(v) => v,
        None => unreachable!("inserted above"),
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// A text histogram for people: one line per bucket with a bar.
pub fn render_histogram(h: &Histogram<u64>, unit: &str) -> String {
    let mut out = String::new();
    if h.is_empty() {
        out.push_str("  (no samples)\n");
        return out;
    }
    let quantiles = [0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0];
    for q in quantiles {
        let v = h.value_at_quantile(q);
        let bar_len = ((v as f64).ln_1p() / (h.max() as f64).ln_1p() * 40.0) as usize;
        out.push_str(&format!(
            "  p{:<6} {:>9} {}  {}\n",
            format!("{}", q * 100.0),
            v,
            unit,
            "#".repeat(bar_len.max(1))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buyer_slots_survive_a_reset_and_counters_merge_by_id() {
        let mut a = WorkerStats::default();
        let zed = a.buyer_slot("zed");
        let amy = a.buyer_slot("amy");
        assert_eq!(a.buyer_slot("zed"), zed, "a slot is given once");
        if let Some(b) = a.buyer_at(zed) {
            b.pings += 3;
        }
        a.buyer("amy").bids += 2;
        assert_eq!(a.buyer_counters("zed").map(|b| b.pings), Some(3));
        let ids: Vec<&str> = a.buyers().map(|(id, _)| id).collect();
        assert_eq!(ids, ["amy", "zed"], "listed in id order, not slot order");

        let mut total = WorkerStats::default();
        total.buyer("zed").pings += 1;
        total.merge(&a);
        assert_eq!(total.buyer_counters("zed").map(|b| b.pings), Some(4));
        assert_eq!(total.buyer_counters("amy").map(|b| b.bids), Some(2));

        a.overhead_us.saturating_record(40);
        a.reset();
        assert!(a.overhead_us.is_empty());
        assert_eq!(a.buyer_counters("zed").map(|b| b.pings), Some(0));
        assert_eq!(a.buyer_slot("zed"), zed, "a reset keeps the slots");
        assert_eq!(a.buyer_slot("amy"), amy);
        if let Some(b) = a.buyer_at(zed) {
            b.pings += 1;
        }
        assert_eq!(a.buyer_counters("zed").map(|b| b.pings), Some(1));
        assert!(a.buyer_at(99).is_none());
    }

    /// A rename moves a buyer's counters to its new id; a merge into a buyer that has its own
    /// adds them, and the old index (held by leads of an older config) counts on into the
    /// kept one, through a reset and a second merge too.
    #[test]
    fn renamed_and_merged_buyers_keep_counting_under_the_new_id() {
        let mut a = WorkerStats::default();
        let old = a.buyer_slot("old");
        a.buyer("old").wins += 2;
        assert!(a.rename_buyer("old", "new"));
        assert_eq!(a.buyer_slot("new"), old, "a rename keeps the index");
        assert!(
            !a.rename_buyer("old", "new"),
            "nothing left under the old id"
        );

        let other = a.buyer_slot("other");
        a.buyer("other").wins += 5;
        assert!(a.rename_buyer("other", "new"));
        assert_eq!(a.buyer_counters("new").map(|b| b.wins), Some(7));
        assert!(a.buyer_counters("other").is_none());
        let ids: Vec<&str> = a.buyers().map(|(id, _)| id).collect();
        assert_eq!(ids, ["new"]);
        if let Some(b) = a.buyer_at(other) {
            b.wins += 1;
        }
        assert_eq!(a.buyer_counters("new").map(|b| b.wins), Some(8));

        // Merged on into a third: both older indices follow.
        a.reset();
        let third = a.buyer_slot("third");
        assert!(a.rename_buyer("new", "third"));
        for slot in [old, other, third] {
            if let Some(b) = a.buyer_at(slot) {
                b.wins += 1;
            }
        }
        assert_eq!(a.buyer_counters("third").map(|b| b.wins), Some(3));
    }
}
