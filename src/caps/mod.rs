//! Per-buyer lead caps and budgets, shared lock-free by every worker thread.
//!
//! Each window (hour, day, week, month, and the spend of the day, the week and the month) is two
//! `AtomicU64`s, used by turns as windows follow each other, each packing a
//! window's id in the high 32 bits and its count in the low 32 bits. Rolling a window over and
//! counting a lead into it is therefore one compare-and-swap: no lock, no reset thread, and no
//! interleaving of threads can count past a cap, because every increment is checked against the
//! cap in the same CAS that publishes it. The window before the current one keeps its count in
//! the other slot, so a lead stamped just before an edge (a worker whose clock lags another's, a
//! wall clock stepped back by less than a window) counts into its own window, as the journal's
//! replay counts it.
//!
//! Windows follow the buyer's local calendar (its `timezone`; weeks start Monday); see
//! [`calendar`] for how window ids are derived.

pub mod calendar;

#[cfg(test)]
mod tests;

use crate::config::types::CapsConfig;
use crate::money::{dollars_f64_to_cents, Cents, MAX_CENTS};
use calendar::{LocalClock, WindowIds};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Largest cap a window can hold: counts share an `AtomicU64` with a 32-bit window id.
pub const MAX_CAP_COUNT: u64 = COUNT_MASK;
/// Largest number of buyers one table holds; reservations name buyers by a `u32`.
pub const MAX_BUYERS: usize = 1 << 20;

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The windows a buyer can be capped on, in the order a reservation takes them.
const WINDOWS: usize = 7;
const HOUR: usize = 0;
const DAY: usize = 1;
const WEEK: usize = 2;
const MONTH: usize = 3;
/// Spend in cents, keyed by the local day, week and month like `DAY`, `WEEK` and `MONTH`.
const DAY_BUDGET: usize = 4;
const WEEK_BUDGET: usize = 5;
const MONTH_BUDGET: usize = 6;

/// Whether window `w` counts cents spent rather than leads.
fn is_budget(w: usize) -> bool {
    w >= DAY_BUDGET
}

/// Errors turning a buyer's `[buyers.caps]` into limits.
#[derive(Debug, Clone, PartialEq)]
pub enum CapsError {
    /// A lead-count cap exceeds [`MAX_CAP_COUNT`], which the packed counters cannot represent.
    CountTooLarge {
        /// The key under `[buyers.caps]`.
        key: &'static str,
        /// The value as written.
        value: u64,
    },
    /// A budget (`daily_budget`, `weekly_budget`, `monthly_budget`) is negative, not a number,
    /// or above the largest amount the exchange handles.
    BadBudget {
        /// The key under `[buyers.caps]`.
        key: &'static str,
        /// The value as written, in dollars.
        value: f64,
    },
}

impl CapsError {
    /// The key under `[buyers.caps]` at fault, for config errors that name it.
    pub fn key(&self) -> &'static str {
        match self {
            CapsError::CountTooLarge { key, .. } => key,
            CapsError::BadBudget { key, .. } => key,
        }
    }
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapsError::CountTooLarge { key, value } => {
                write!(
                    f,
                    "{key}: {value} is above the largest cap, {MAX_CAP_COUNT}"
                )
            }
            CapsError::BadBudget { key, value } => write!(
                f,
                "{key}: {value} must be a number of dollars between 0 and {}, with at most two decimals (whole cents)",
                MAX_CENTS / 100
            ),
        }
    }
}

impl std::error::Error for CapsError {}

/// A buyer's caps, validated and in cents. `None` means uncapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapLimits {
    /// Leads per local clock hour.
    pub hourly: Option<u64>,
    /// Leads per local calendar day.
    pub daily: Option<u64>,
    /// Leads per local week, Monday to Sunday.
    pub weekly: Option<u64>,
    /// Leads per local calendar month.
    pub monthly: Option<u64>,
    /// Cents spent per local calendar day.
    pub daily_budget_cents: Option<Cents>,
    /// Cents spent per local week, Monday to Sunday.
    pub weekly_budget_cents: Option<Cents>,
    /// Cents spent per local calendar month.
    pub monthly_budget_cents: Option<Cents>,
}

impl CapLimits {
    /// No caps at all.
    pub const UNCAPPED: CapLimits = CapLimits {
        hourly: None,
        daily: None,
        weekly: None,
        monthly: None,
        daily_budget_cents: None,
        weekly_budget_cents: None,
        monthly_budget_cents: None,
    };

    /// Validate a buyer's `[buyers.caps]` (absent = uncapped); budgets go from dollars to cents.
    pub fn from_config(cfg: Option<&CapsConfig>) -> Result<CapLimits, CapsError> {
        let Some(cfg) = cfg else {
            return Ok(CapLimits::UNCAPPED);
        };
        let count = |key: &'static str, v: Option<u64>| match v {
            Some(value) if value > MAX_CAP_COUNT => Err(CapsError::CountTooLarge { key, value }),
            other => Ok(other),
        };
        let budget = |key: &'static str, v: Option<f64>| match v {
            None => Ok(None),
            Some(value) => match dollars_f64_to_cents(value) {
                Some(c) if (0..=MAX_CENTS).contains(&c) => Ok(Some(c)),
                _ => Err(CapsError::BadBudget { key, value }),
            },
        };
        Ok(CapLimits {
            hourly: count("hourly", cfg.hourly)?,
            daily: count("daily", cfg.daily)?,
            weekly: count("weekly", cfg.weekly)?,
            monthly: count("monthly", cfg.monthly)?,
            daily_budget_cents: budget("daily_budget", cfg.daily_budget)?,
            weekly_budget_cents: budget("weekly_budget", cfg.weekly_budget)?,
            monthly_budget_cents: budget("monthly_budget", cfg.monthly_budget)?,
        })
    }

    /// Per-window limits in reservation order; counts above what a counter can hold are clamped
    /// (a cap that large cannot be reached before the window rolls over anyway).
    fn as_array(&self) -> [Option<u64>; WINDOWS] {
        let clamp = |v: Option<u64>| v.map(|c| c.min(MAX_CAP_COUNT));
        let budget = |v: Option<Cents>| v.map(|c| c.clamp(0, MAX_CENTS) as u64);
        [
            clamp(self.hourly),
            clamp(self.daily),
            clamp(self.weekly),
            clamp(self.monthly),
            budget(self.daily_budget_cents),
            budget(self.weekly_budget_cents),
            budget(self.monthly_budget_cents),
        ]
    }
}

/// What a buyer has left now, for the operator API. `None` means that window is uncapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CapsLeft {
    /// A paused buyer is not pinged whatever its caps say.
    pub paused: bool,
    /// Leads left this local hour.
    pub hourly: Option<u64>,
    /// Leads left today (local).
    pub daily: Option<u64>,
    /// Leads left this week (local, from Monday).
    pub weekly: Option<u64>,
    /// Leads left this month (local).
    pub monthly: Option<u64>,
    /// Budget left today, in cents.
    pub daily_budget_cents: Option<Cents>,
    /// Budget left this week (local, from Monday), in cents.
    pub weekly_budget_cents: Option<Cents>,
    /// Budget left this month (local), in cents.
    pub monthly_budget_cents: Option<Cents>,
}

/// Proof that one lead was counted against a buyer's caps; hand it back to
/// [`CapTable::release`] if the sale does not happen. Dropping it keeps the sale counted.
#[must_use = "a reservation that is neither kept nor released is kept: drop it only for a completed sale"]
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    buyer: u32,
    /// Window id each amount was counted under (the counter's id at the time).
    ids: [u32; WINDOWS],
    /// Amount counted into each window; 0 where nothing was counted (a free lead).
    amounts: [u32; WINDOWS],
}

impl Reservation {
    /// The buyer this reservation counts against.
    pub fn buyer(&self) -> usize {
        self.buyer as usize
    }
}

/// One buyer's counts and pause state, on its own cache line so that workers selling to different
/// buyers do not contend. Shared (by `Arc`) between the tables of successive config snapshots
/// while the buyer keeps its id and time zone, so that leads still running under an older
/// snapshot count into the same windows as new ones.
#[repr(align(64))]
#[derive(Default)]
struct State {
    /// Per window kind, two counters taken by turns as windows follow each other ([`State::counter`]).
    counters: [[AtomicU64; 2]; WINDOWS],
    paused: AtomicBool,
    /// Posts and sales a rebuild of these counters from the journal counted while their lead
    /// was still running under an older config, which reserved in that config's counters: the
    /// lead settles each here when its post ends ([`CapTable::settle_earlier`]), so a sale is
    /// not counted twice and a rejected post does not stay counted. Touched only by reloads
    /// and by such leads; at most [`MAX_COUNTED_RUNNING`].
    running: parking_lot::Mutex<Vec<Counted>>,
}

impl State {
    /// The counter of window kind `w` that window `id` counts in: windows next to each other
    /// share one only where a zone's offset changes by less than an hour (an hour then takes
    /// the counter of the one before it, as if that were two windows back).
    fn counter(&self, w: usize, id: u32) -> &AtomicU64 {
        // Hour ids are minutes (60 apart), week ids days (7 apart), days and months count by one.
        let step = match w {
            HOUR => 60,
            WEEK | WEEK_BUDGET => 7,
            _ => 1,
        };
        &self.counters[w][((id / step) & 1) as usize]
    }

    /// What window kind `w` has counted in window `id` ([`count_for`]).
    fn count_in(&self, w: usize, id: u32) -> u64 {
        count_for(self.counter(w, id).load(Ordering::Acquire), id)
    }
}

/// A post or sale of a running lead that a rebuild counted (see [`State::running`]).
struct Counted {
    lead_id: Box<str>,
    ts: DateTime<Utc>,
    price_cents: Cents,
    sold: bool,
}

/// Most running posts one buyer's rebuilt counters remember. Beyond it a post is still
/// counted but not remembered, so its sale may be counted twice: the buyer under-sells, never
/// over-sells.
pub const MAX_COUNTED_RUNNING: usize = 1 << 16;

/// One buyer of one snapshot: its limits and zone, and its (possibly shared) state.
struct Entry {
    tz: Tz,
    limits: [Option<u64>; WINDOWS],
    state: Arc<State>,
}

impl std::ops::Deref for Entry {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

/// Caps, spend and pause state of every buyer of one config snapshot. `Send + Sync`: share it as
/// an `Arc` between workers. Buyers are named by their index in the config.
pub struct CapTable {
    entries: Box<[Entry]>,
}

/// How a buyer's state came into a table built by [`CapTable::carried_over`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// Same id and zone: the counts and pause state are the old table's own (shared).
    Shared,
    /// Same id, another zone: pause state copied, counts start at zero (window ids of another
    /// zone mean other hours); rebuild them from the journal.
    ZoneChanged,
    /// A buyer the old table did not have: zero counts, not paused; rebuild from the journal.
    Added,
    /// Same zone, but the ids it answers to changed (renamed, or `previous_ids`: one added
    /// whose sales its counts never held, or one taken away whose sales they hold): pause
    /// state copied, counts start at zero; rebuild them from the journal, where the sales
    /// under every id it answers to now are.
    HistoryChanged,
}

fn pack(id: u32, count: u64) -> u64 {
    (u64::from(id) << COUNT_BITS) | (count & COUNT_MASK)
}

fn unpack(v: u64) -> (u32, u64) {
    ((v >> COUNT_BITS) as u32, v & COUNT_MASK)
}

fn window_id(w: &WindowIds, window: usize) -> u32 {
    match window {
        HOUR => w.hour,
        WEEK | WEEK_BUDGET => w.week,
        MONTH | MONTH_BUDGET => w.month,
        _ => w.day,
    }
}

/// The count a counter holds for window `id`: its own count when it is in that window or a later
/// one (a clock stepped back by two windows or more: counting the later window's
/// leads errs toward refusing, never past a cap), 0 when the counter still holds an earlier
/// window.
fn count_for(v: u64, id: u32) -> u64 {
    let (cid, count) = unpack(v);
    if cid >= id {
        count
    } else {
        0
    }
}

impl CapTable {
    /// A table with one entry per buyer, in config order: its limits and its time zone. Buyers
    /// beyond [`MAX_BUYERS`] are not given entries and so are never eligible.
    pub fn new(buyers: &[(CapLimits, Tz)]) -> CapTable {
        let entries = buyers
            .iter()
            .take(MAX_BUYERS)
            .map(|(limits, tz)| Entry {
                tz: *tz,
                limits: limits.as_array(),
                state: Arc::default(),
            })
            .collect();
        CapTable { entries }
    }

    /// The table of a reloaded config: one entry per buyer with its new limits and zone.
    /// `old_index[i]` is buyer i's index in `old` (same id), if it had one. A buyer that kept
    /// its zone shares its counters and pause state with the old table, so leads still running
    /// under the old snapshot and new leads count into the same windows, and new limits apply
    /// to the carried counts at once. Buyers of `old` that are not named are dropped with it.
    pub fn carried_over(
        buyers: &[(CapLimits, Tz)],
        old: &CapTable,
        old_index: &[Option<usize>],
    ) -> (CapTable, Vec<Carried>) {
        CapTable::carried_over_changed(buyers, old, old_index, &[])
    }

    /// As [`CapTable::carried_over`], with `changed[i]` true for a buyer whose history
    /// changed (the ids it answers to: a rename onto an id with sales of its own, ids added to
    /// or taken from its `previous_ids`, a merge): its counts are rebuilt, not shared.
    pub fn carried_over_changed(
        buyers: &[(CapLimits, Tz)],
        old: &CapTable,
        old_index: &[Option<usize>],
        changed: &[bool],
    ) -> (CapTable, Vec<Carried>) {
        let mut how = Vec::with_capacity(buyers.len());
        let entries = buyers
            .iter()
            .take(MAX_BUYERS)
            .enumerate()
            .map(|(i, (limits, tz))| {
                let prev = old_index
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|o| old.entries.get(o));
                let history = changed.get(i).copied().unwrap_or(false);
                let state = match prev {
                    Some(o) if o.tz == *tz && !history => {
                        how.push(Carried::Shared);
                        o.state.clone()
                    }
                    Some(o) => {
                        how.push(if o.tz == *tz {
                            Carried::HistoryChanged
                        } else {
                            Carried::ZoneChanged
                        });
                        let s = State::default();
                        s.paused
                            .store(o.paused.load(Ordering::Acquire), Ordering::Release);
                        Arc::new(s)
                    }
                    None => {
                        how.push(Carried::Added);
                        Arc::default()
                    }
                };
                Entry {
                    tz: *tz,
                    limits: limits.as_array(),
                    state,
                }
            })
            .collect();
        (CapTable { entries }, how)
    }

    /// Number of buyers in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no buyers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `buyer` here and `other_buyer` in `other` count into the same counters (a
    /// reload carried them over). False when either is unknown.
    pub fn shares_state(&self, buyer: usize, other: &CapTable, other_buyer: usize) -> bool {
        match (self.entries.get(buyer), other.entries.get(other_buyer)) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.state, &b.state),
            _ => false,
        }
    }

    /// The zone a buyer's windows follow, if the buyer exists.
    pub fn tz(&self, buyer: usize) -> Option<Tz> {
        self.entries.get(buyer).map(|e| e.tz)
    }

    /// The calendar view of `clock`'s instant in `e`'s zone, reusing `clock` when it matches.
    fn windows_for(e: &Entry, clock: &LocalClock) -> WindowIds {
        if clock.tz == e.tz {
            clock.windows
        } else {
            LocalClock::at(e.tz, clock.now).windows
        }
    }

    /// Reserve one lead at `price_cents` against every capped window of `buyer`: all or nothing.
    /// Uncapped windows count it as well, without a limit.
    /// `None` when the buyer is paused or unknown, the price is out of range, or any window or
    /// budget would be exceeded. Never overshoots a cap under any interleaving of threads;
    /// while two threads race at the edge of two caps, one may be refused a lead that a strictly
    /// serial order would have granted (it under-sells, never over-sells).
    pub fn reserve(
        &self,
        buyer: usize,
        now: DateTime<Utc>,
        price_cents: Cents,
    ) -> Option<Reservation> {
        let e = self.entries.get(buyer)?;
        self.reserve_at(buyer, &LocalClock::at(e.tz, now), price_cents)
    }

    /// [`CapTable::reserve`] with the buyer's calendar view already computed (one per zone per lead).
    pub fn reserve_at(
        &self,
        buyer: usize,
        clock: &LocalClock,
        price_cents: Cents,
    ) -> Option<Reservation> {
        let e = self.entries.get(buyer)?;
        if !(0..=MAX_CENTS).contains(&price_cents) || e.paused.load(Ordering::Acquire) {
            return None;
        }
        let windows = Self::windows_for(e, clock);
        let mut r = Reservation {
            buyer: buyer as u32,
            ids: [0; WINDOWS],
            amounts: [0; WINDOWS],
        };
        for w in 0..WINDOWS {
            let amount = if is_budget(w) { price_cents as u64 } else { 1 };
            if amount == 0 {
                continue;
            }
            let id = window_id(&windows, w);
            // Uncapped windows are counted too, never refusing: a cap a reload adds later
            // applies to the window's sales so far, as a changed cap does.
            let counted = match e.limits[w] {
                Some(limit) => try_add(e.counter(w, id), id, amount, limit),
                None => Some(add_saturating(e.counter(w, id), id, amount)),
            };
            match counted {
                Some(id) => {
                    r.ids[w] = id;
                    r.amounts[w] = amount as u32;
                }
                None => {
                    self.release(r);
                    return None;
                }
            }
        }
        Some(r)
    }

    /// Undo a reservation (post rejected, failed or timed out). Windows that have rolled over
    /// since are left alone: the lead no longer counts there anyway.
    pub fn release(&self, r: Reservation) {
        let Some(e) = self.entries.get(r.buyer as usize) else {
            return;
        };
        for w in 0..WINDOWS {
            if r.amounts[w] > 0 {
                subtract(e.counter(w, r.ids[w]), r.ids[w], u64::from(r.amounts[w]));
            }
        }
    }

    /// True when the buyer is known, not paused, and has room for one more lead now in every
    /// window, with some of every budget left. At-cap buyers are not pinged.
    pub fn has_room(&self, buyer: usize, now: DateTime<Utc>) -> bool {
        match self.entries.get(buyer) {
            Some(e) => self.has_room_at(buyer, &LocalClock::at(e.tz, now)),
            None => false,
        }
    }

    /// [`CapTable::has_room`] with the calendar view already computed.
    pub fn has_room_at(&self, buyer: usize, clock: &LocalClock) -> bool {
        self.has_room_above(buyer, clock, 1)
    }

    /// [`CapTable::has_room_at`], and every budget has at least `floor` cents left (the least
    /// a sale can cost: a campaign's reserve price).
    pub fn has_room_above(&self, buyer: usize, clock: &LocalClock, floor: Cents) -> bool {
        let Some(e) = self.entries.get(buyer) else {
            return false;
        };
        if e.paused.load(Ordering::Acquire) {
            return false;
        }
        if e.limits.iter().all(Option::is_none) {
            return true;
        }
        let windows = Self::windows_for(e, clock);
        let floor = floor.max(1) as u64;
        (0..WINDOWS).all(|w| match e.limits[w] {
            None => true,
            Some(limit) => {
                let need = if is_budget(w) { floor } else { 1 };
                e.count_in(w, window_id(&windows, w)).saturating_add(need) <= limit
            }
        })
    }

    /// [`CapTable::has_room`], and every budget has at least `price_cents` left: whether a
    /// sale at that price would be taken now.
    pub fn has_room_for(&self, buyer: usize, now: DateTime<Utc>, price_cents: Cents) -> bool {
        let Some(e) = self.entries.get(buyer) else {
            return false;
        };
        let clock = LocalClock::at(e.tz, now);
        if !self.has_room_at(buyer, &clock) {
            return false;
        }
        let windows = Self::windows_for(e, &clock);
        (0..WINDOWS)
            .filter(|&w| is_budget(w))
            .all(|w| match e.limits[w] {
                None => true,
                Some(limit) => {
                    let spent = e.count_in(w, window_id(&windows, w));
                    spent.saturating_add(price_cents.max(0) as u64) <= limit
                }
            })
    }

    /// Count a past sale from the journal on start: it counts toward each window of the sale that
    /// is still the current window at `now`, or a later one (a sale stamped while the wall clock
    /// ran ahead of where it is now: it counts once the clock gets there); older windows are
    /// simply over. Caps are not checked
    /// (the sale happened), so a cap lowered since can leave a buyer at or over it.
    pub fn replay_sale(
        &self,
        buyer: usize,
        sale_ts: DateTime<Utc>,
        price_cents: Cents,
        now: DateTime<Utc>,
    ) {
        // Uncapped windows too: a cap added by a reload starts from the window's sales.
        self.in_open_windows(buyer, sale_ts, price_cents, now, force_add);
    }

    /// `f(counter, window id, current window id, amount)` for each window of a sale at `ts` that
    /// is the current window at `now` or a later one: one lead, or `price_cents` for a budget.
    fn in_open_windows(
        &self,
        buyer: usize,
        ts: DateTime<Utc>,
        price_cents: Cents,
        now: DateTime<Utc>,
        f: fn(&AtomicU64, u32, u32, u64),
    ) {
        let Some(e) = self.entries.get(buyer) else {
            return;
        };
        let then = LocalClock::at(e.tz, ts).windows;
        let current = LocalClock::at(e.tz, now).windows;
        for w in 0..WINDOWS {
            let id = window_id(&then, w);
            let now_id = window_id(&current, w);
            if id < now_id {
                continue;
            }
            let amount = if is_budget(w) {
                price_cents.clamp(0, MAX_CENTS) as u64
            } else {
                1
            };
            f(e.counter(w, id), id, now_id, amount);
        }
    }

    /// Count into a rebuilt buyer's counters a post (`sold` false: sent, no answer yet) or a
    /// sale of a lead still running under an older config, and remember it for
    /// [`CapTable::settle_earlier`].
    pub fn replay_running(
        &self,
        buyer: usize,
        lead_id: &str,
        ts: DateTime<Utc>,
        price_cents: Cents,
        sold: bool,
        now: DateTime<Utc>,
    ) {
        let Some(e) = self.entries.get(buyer) else {
            return;
        };
        self.replay_sale(buyer, ts, price_cents, now);
        let mut running = e.running.lock();
        if running.len() < MAX_COUNTED_RUNNING {
            running.push(Counted {
                lead_id: lead_id.into(),
                ts,
                price_cents,
                sold,
            });
        }
    }

    /// Whether a rebuild counted a post or sale of `lead_id` to `buyer` that its lead has not
    /// settled yet ([`CapTable::replay_running`]).
    pub fn remembers(&self, buyer: usize, lead_id: &str) -> bool {
        self.entries
            .get(buyer)
            .is_some_and(|e| e.running.lock().iter().any(|c| *c.lead_id == *lead_id))
    }

    /// A post of a lead that started under an older config, whose counters for `buyer` are not
    /// these (a reload rebuilt them), ended: `sold`, or not. Counts the sale here unless the
    /// rebuild already did; takes back a post the rebuild counted that did not sell.
    pub fn settle_earlier(
        &self,
        buyer: usize,
        lead_id: &str,
        sold: bool,
        price_cents: Cents,
        now: DateTime<Utc>,
    ) {
        let Some(e) = self.entries.get(buyer) else {
            return;
        };
        let counted = {
            let mut running = e.running.lock();
            running
                .iter()
                .position(|c| *c.lead_id == *lead_id)
                .map(|i| running.swap_remove(i))
        };
        match counted {
            // Counted as a post with no answer yet, and it did not sell: take it back.
            Some(c) if !c.sold && !sold => self.unreplay(buyer, c.ts, c.price_cents, now),
            Some(_) => {}
            None if sold => self.replay_sale(buyer, now, price_cents, now),
            None => {}
        }
    }

    /// Undo [`CapTable::replay_sale`] in the windows still open.
    fn unreplay(&self, buyer: usize, ts: DateTime<Utc>, price_cents: Cents, now: DateTime<Utc>) {
        self.in_open_windows(buyer, ts, price_cents, now, |c, id, _, amount| {
            subtract(c, id, amount)
        });
    }

    /// What `buyer` has left in each window now. An unknown buyer reports no room anywhere.
    pub fn remaining(&self, buyer: usize, now: DateTime<Utc>) -> CapsLeft {
        let Some(e) = self.entries.get(buyer) else {
            return CapsLeft {
                paused: false,
                hourly: Some(0),
                daily: Some(0),
                weekly: Some(0),
                monthly: Some(0),
                daily_budget_cents: Some(0),
                weekly_budget_cents: Some(0),
                monthly_budget_cents: Some(0),
            };
        };
        let windows = LocalClock::at(e.tz, now).windows;
        let left = |w: usize| {
            e.limits[w].map(|limit| limit.saturating_sub(e.count_in(w, window_id(&windows, w))))
        };
        CapsLeft {
            paused: e.paused.load(Ordering::Acquire),
            hourly: left(HOUR),
            daily: left(DAY),
            weekly: left(WEEK),
            monthly: left(MONTH),
            daily_budget_cents: left(DAY_BUDGET).map(|c| c as Cents),
            weekly_budget_cents: left(WEEK_BUDGET).map(|c| c as Cents),
            monthly_budget_cents: left(MONTH_BUDGET).map(|c| c as Cents),
        }
    }

    /// What each capped window of a buyer has taken so far, in the shape of [`CapsLeft`]
    /// (`None` where the window has no limit). It can be over the limit: leads sold under an
    /// earlier config before a reload lowered or added the cap.
    pub fn used(&self, buyer: usize, now: DateTime<Utc>) -> CapsLeft {
        let Some(e) = self.entries.get(buyer) else {
            return CapsLeft::default();
        };
        let windows = LocalClock::at(e.tz, now).windows;
        let used = |w: usize| e.limits[w].map(|_| e.count_in(w, window_id(&windows, w)));
        CapsLeft {
            paused: e.paused.load(Ordering::Acquire),
            hourly: used(HOUR),
            daily: used(DAY),
            weekly: used(WEEK),
            monthly: used(MONTH),
            daily_budget_cents: used(DAY_BUDGET).map(|c| c as Cents),
            weekly_budget_cents: used(WEEK_BUDGET).map(|c| c as Cents),
            monthly_budget_cents: used(MONTH_BUDGET).map(|c| c as Cents),
        }
    }

    /// Stop pinging and selling to a buyer until [`CapTable::resume`]; counts are kept.
    pub fn pause(&self, buyer: usize) {
        if let Some(e) = self.entries.get(buyer) {
            e.paused.store(true, Ordering::Release);
        }
    }

    /// Undo [`CapTable::pause`].
    pub fn resume(&self, buyer: usize) {
        if let Some(e) = self.entries.get(buyer) {
            e.paused.store(false, Ordering::Release);
        }
    }

    /// Whether the operator paused this buyer (unknown buyers read as not paused).
    pub fn is_paused(&self, buyer: usize) -> bool {
        self.entries
            .get(buyer)
            .is_some_and(|e| e.paused.load(Ordering::Acquire))
    }
}

/// Count `amount` into window `id` unless that would pass `limit`. If the counter already holds
/// a later window (two or more windows later: a wall clock stepped back that far), the amount is
/// counted there instead. Returns the id the amount was counted under.
fn try_add(counter: &AtomicU64, id: u32, amount: u64, limit: u64) -> Option<u32> {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        let (cid, count) = unpack(cur);
        let (id, base) = if cid >= id { (cid, count) } else { (id, 0) };
        let next = base.checked_add(amount)?;
        if next > limit || next > COUNT_MASK {
            return None;
        }
        match counter.compare_exchange_weak(
            cur,
            pack(id, next),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(id),
            Err(actual) => cur = actual,
        }
    }
}

/// Count `amount` into window `id` with no limit, saturating at what a counter holds; like
/// [`try_add`], into the counter's later window if it already holds one. Returns the id the
/// amount was counted under.
fn add_saturating(counter: &AtomicU64, id: u32, amount: u64) -> u32 {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        let (cid, count) = unpack(cur);
        let (id, base) = if cid >= id { (cid, count) } else { (id, 0) };
        let next = pack(id, base.saturating_add(amount).min(COUNT_MASK));
        match counter.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return id,
            Err(actual) => cur = actual,
        }
    }
}

/// Take `amount` back out of window `id`, if the counter is still in it.
fn subtract(counter: &AtomicU64, id: u32, amount: u64) {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        let (cid, count) = unpack(cur);
        if cid != id {
            return;
        }
        let next = pack(id, count.saturating_sub(amount));
        match counter.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// Count `amount` into window `id` whatever the limit (journal replay), saturating. `current`
/// is the window of the moment of the replay: a counter holding it or a window after it keeps
/// its count, carried into window `id` if that is later still (a sale stamped while the clock
/// ran ahead sharing a counter with the current window), or takes the amount into its own
/// later window: either way counts err toward refusing, never past a cap.
fn force_add(counter: &AtomicU64, id: u32, current: u32, amount: u64) {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        let (cid, count) = unpack(cur);
        let (id, base) = if cid >= id {
            (cid, count)
        } else if cid >= current {
            (id, count)
        } else {
            (id, 0)
        };
        let next = pack(id, base.saturating_add(amount).min(COUNT_MASK));
        match counter.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}
