//! The auction of one lead, as a sans-IO state machine.
//!
//! Input: the buyers to ping, their bids, the results of posts, and the clock (`now` is always
//! passed in, never read). Output: [`Action`]s for the I/O shell (send this ping, post to that
//! buyer, answer the seller). Ranking, the reserve price, exclusive and shared sales and the
//! cascade on a rejected post live here and nowhere else, so every rule is unit-tested with
//! simulated time (see `tests.rs`).
//!
//! Life of an auction:
//! 1. `new` queues one `SendPing` per eligible buyer, each told how long it has (`timeout_ms`).
//! 2. Bids arrive through `on_ping_result`. The auction closes at `arrival + ping_timeout`, or as
//!    soon as every pinged buyer has answered.
//! 3. Bids at or above the reserve are ranked: highest first, ties to the earlier bid. The top
//!    `max_sales` distinct buyers get a `SendPost` at their own bid (one for exclusive).
//! 4. A post that is rejected, fails or times out cascades to the next ranked bid, at most
//!    `MAX_POST_ATTEMPTS` posts in all for an exclusive sale (`max_sales - 1` more for a shared
//!    one, whose first posts all go), and none that could not end by `answer_by`.
//! 5. When no post is in flight and none can be made, the auction is done: `Action::Answer`.

use crate::config::SaleKind;
use crate::money::Cents;
use crate::text::SmallText;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Posts per exclusive lead, counting cascades: bounds the seller's wait when buyers keep
/// rejecting. A shared lead of `max_sales` N has N − 1 more, so that its N first posts all go
/// and it keeps the same cascade.
pub const MAX_POST_ATTEMPTS: usize = 8;
/// Buyers pinged for one lead; more eligible buyers than this are not pinged.
pub const MAX_PINGS_PER_LEAD: usize = 1024;

/// Index of a pinged buyer within one auction (its position in the list given to `new`).
pub type Slot = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub sale: SaleKind,
    pub reserve_cents: Cents,
    pub ping_timeout: Duration,
    pub post_timeout: Duration,
    /// Kept back from the time buyers are told they have, for the engine's own work.
    pub margin: Duration,
    /// Seller-side ping-post, first half: rank the bids and stop; the posts come with the
    /// seller's `/v1/post` (see [`Auction::from_held`]).
    pub ping_only: bool,
    /// Post in the order the bids were given (fixed-price distribution), not by price.
    pub in_order: bool,
    /// The campaign's `answer_timeout_ms`: a post that follows a rejected or failed one
    /// starts only if its `post_timeout` ends within this long of the lead's arrival, so a
    /// cascade of slow buyers cannot hold the seller's answer past it. The first posts always
    /// start (the deadline bounds the cascade, never the sale), and a post is never cut short.
    pub answer_by: Option<Duration>,
    /// The lead was posted to before this auction (a fallback after the auction's posts
    /// failed): its first posts are already a cascade for `answer_by`.
    pub posted_before: bool,
}

/// What a buyer's ping answer amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingOutcome {
    /// A positive bid in cents.
    Bid {
        cents: Cents,
        bid_id: Option<SmallText>,
    },
    /// `{"bid": 0}`, `{"bid": null}` or 204.
    NoBid,
    /// No whole answer by the deadline.
    Timeout,
    /// Connection refused, reset, closed, non-2xx status.
    Error(String),
    /// An answer that is not a valid bid (unparsable, negative).
    Invalid(String),
}

impl PingOutcome {
    pub fn kind(&self) -> &'static str {
        match self {
            PingOutcome::Bid { .. } => "bid",
            PingOutcome::NoBid => "no_bid",
            PingOutcome::Timeout => "timeout",
            PingOutcome::Error(_) => "error",
            PingOutcome::Invalid(_) => "invalid",
        }
    }
}

/// What a post amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Accepted {
        buyer_lead_id: Option<String>,
    },
    /// The buyer said no (`{"status": "rejected"}`), or answered something that is not a yes.
    Rejected {
        reason: String,
    },
    /// No answer within `post_timeout`.
    TimedOut,
    /// Not sent or not answered: a connection error.
    Failed {
        reason: String,
    },
    /// Not sent: the buyer's cap or budget could not take the lead at its price (other leads
    /// took the room since the ping). Not a post attempt: the cascade goes on past it.
    Capped,
    /// Not sent: the operator paused the buyer since the ping. Not a post attempt either.
    Paused,
    /// Not sent: the journal could not record the post (a full disk), and a sale the journal
    /// does not have would escape the caps after a restart. Not a post attempt either.
    Unjournaled,
    /// Not sent: no connection to the buyer came free within `post_timeout` (its others
    /// were busy with other leads), so the buyer never saw it. Not a post attempt either.
    NotWritten,
}

impl PostOutcome {
    pub fn accepted(&self) -> bool {
        matches!(self, PostOutcome::Accepted { .. })
    }
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ping this buyer, telling it `timeout_ms` are left.
    SendPing { slot: Slot, timeout_ms: u64 },
    /// The ping deadline passed without an answer: the shell stops waiting on this connection
    /// (it drains or closes it so that the late answer never reaches another lead).
    AbandonPing { slot: Slot },
    /// Post the full lead to this buyer at this price.
    SendPost { slot: Slot, price_cents: Cents },
    /// The post deadline passed: the shell stops waiting on this connection.
    AbandonPost { slot: Slot },
    /// The auction is over: answer the seller with `outcome()`.
    Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PingState {
    /// Queued or written, no answer yet.
    Waiting,
    Answered {
        outcome: PingOutcome,
        seq: u32,
        /// From the ping's first byte to its answer (or to the close, for a timeout); `None`
        /// for a ping never written.
        response: Option<Duration>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PostState {
    None,
    InFlight { deadline: Instant },
    Done(PostOutcome),
}

#[derive(Debug, Clone)]
struct SlotState {
    buyer: usize,
    ping_sent_at: Option<Instant>,
    ping: PingState,
    post: PostState,
    post_sent_at: Option<Instant>,
    post_done_at: Option<Instant>,
    price_cents: Cents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pinging,
    Posting,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Sold,
    Unsold,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sold => "sold",
            Status::Unsold => "unsold",
        }
    }
}

/// Why a lead went unsold, for the seller and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsoldReason {
    NoEligibleBuyers,
    NoBids,
    BelowReserve,
    PostsRejected,
    /// No post went out: every acceptable bidder's cap or budget was spent (by other leads
    /// since the ping) when its turn came.
    BuyersCapped,
    /// No post went out: every acceptable bidder was paused by the operator since the ping
    /// (none of them capped).
    BuyersPaused,
    /// No post went out: no acceptable bidder had a free connection (all its
    /// `max_connections` busy with other leads) within `post_timeout` of its turn.
    BuyersBusy,
    /// No post could start and end before the exchange stopped (a shutdown's drain).
    ShuttingDown,
}

impl UnsoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnsoldReason::NoEligibleBuyers => "no_eligible_buyers",
            UnsoldReason::NoBids => "no_bids",
            UnsoldReason::BelowReserve => "below_reserve",
            UnsoldReason::PostsRejected => "posts_rejected",
            UnsoldReason::BuyersCapped => "buyers_capped",
            UnsoldReason::BuyersPaused => "buyers_paused",
            UnsoldReason::BuyersBusy => "buyers_busy",
            UnsoldReason::ShuttingDown => "shutting_down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub slot: Slot,
    pub buyer: usize,
    pub price_cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub unsold_reason: Option<UnsoldReason>,
    /// In rank order (best bid first; for fixed-price distribution, the plan's order).
    pub sales: Vec<Sale>,
    pub price_cents: Cents,
    /// Positive bids received (before the reserve is applied).
    pub bids: u32,
    pub elapsed: Duration,
    /// Time spent waiting on buyers (pings and posts); the rest of `elapsed` is the engine's.
    pub buyer_wait: Duration,
    /// Arrival to the first ping written (or to the close when nothing was pinged): the
    /// engine's intake of the lead, parsing, validation and matching included.
    pub intake: Duration,
}

#[derive(Debug)]
pub struct Auction {
    params: Params,
    arrival: Instant,
    ping_deadline: Instant,
    slots: Vec<SlotState>,
    phase: Phase,
    actions: VecDeque<Action>,
    /// Slots with acceptable bids, best first; filled when the auction closes.
    ranking: Vec<Slot>,
    next_rank: usize,
    posts_in_flight: usize,
    post_attempts: usize,
    sales: Vec<Sale>,
    answer_seq: u32,
    /// Posts answered, timed out or failed.
    post_results: u32,
    bids: u32,
    closed_at: Option<Instant>,
    done_at: Option<Instant>,
    ping_wait_start: Option<Instant>,
    post_wait_start: Option<Instant>,
    buyer_wait: Duration,
    first_ping_at: Option<Instant>,
    /// No post starts that would end after this (the exchange is shutting down by then).
    stop_by: Option<Instant>,
    /// A post was held back for `stop_by`.
    stopped: bool,
}

impl Auction {
    /// Start the auction of a lead that arrived at `arrival`, pinging `buyers` (indexes into the
    /// config's buyers, distinct). `now` is when the pings will be written.
    pub fn new(params: Params, arrival: Instant, now: Instant, buyers: &[usize]) -> Auction {
        let ping_deadline = arrival + params.ping_timeout;
        let buyers = &buyers[..buyers.len().min(MAX_PINGS_PER_LEAD)];
        let mut a = Auction {
            params,
            arrival,
            ping_deadline,
            slots: buyers
                .iter()
                .map(|&buyer| SlotState {
                    buyer,
                    ping_sent_at: None,
                    ping: PingState::Waiting,
                    post: PostState::None,
                    post_sent_at: None,
                    post_done_at: None,
                    price_cents: 0,
                })
                .collect(),
            phase: Phase::Pinging,
            actions: VecDeque::with_capacity(buyers.len() + 2),
            ranking: Vec::new(),
            next_rank: 0,
            posts_in_flight: 0,
            post_attempts: 0,
            sales: Vec::new(),
            answer_seq: 0,
            post_results: 0,
            bids: 0,
            closed_at: None,
            done_at: None,
            ping_wait_start: None,
            post_wait_start: None,
            buyer_wait: Duration::ZERO,
            first_ping_at: None,
            stop_by: None,
            stopped: false,
        };
        if a.slots.is_empty() {
            a.close(now);
            return a;
        }
        let timeout_ms = a.ping_timeout_ms_at(now);
        for slot in 0..a.slots.len() {
            a.actions.push_back(Action::SendPing { slot, timeout_ms });
        }
        a
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The exchange stops at `t`: from now on no post starts whose `post_timeout` would end
    /// after it (the buyer would get the consumer and nobody would read its answer); a lead
    /// left without a sale for it is unsold `shutting_down`.
    pub fn stop_by(&mut self, t: Instant) {
        self.stop_by = Some(t);
    }

    pub fn buyer(&self, slot: Slot) -> usize {
        self.slots[slot].buyer
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn arrival(&self) -> Instant {
        self.arrival
    }

    /// The time a ping written at `now` really has for its buyer: to the close, less the
    /// engine's margin (0 once past it).
    pub fn ping_time_left(&self, now: Instant) -> Duration {
        self.ping_deadline
            .saturating_duration_since(now)
            .saturating_sub(self.params.margin)
    }

    /// The `timeout_ms` a ping written at `now` tells its buyer: the time left to the close
    /// less the engine's margin, at least 1. To the nearest millisecond: a lead pinged 30 µs
    /// after it arrived still tells its buyers the campaign's whole window (800, not 799).
    pub fn ping_timeout_ms_at(&self, now: Instant) -> u64 {
        let left = self
            .ping_deadline
            .saturating_duration_since(now)
            .saturating_sub(self.params.margin);
        (((left.as_micros() + 500) / 1000) as u64).max(1)
    }

    pub fn ping_deadline(&self) -> Instant {
        self.ping_deadline
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Bidding is over: every ping has its final outcome and the ranking is fixed.
    pub fn is_closed(&self) -> bool {
        self.phase != Phase::Pinging
    }

    /// Slots with acceptable bids, best first (empty until closed).
    pub fn ranking(&self) -> &[Slot] {
        &self.ranking
    }

    /// Positive bids received so far.
    pub fn outcome_bids(&self) -> u32 {
        self.bids
    }

    /// How long the buyer took to answer the post (to the result, whatever it was).
    pub fn post_response(&self, slot: Slot) -> Duration {
        self.slots
            .get(slot)
            .and_then(|s| Some(s.post_done_at?.saturating_duration_since(s.post_sent_at?)))
            .unwrap_or(Duration::ZERO)
    }

    /// The price a slot is posted at (its bid), once posted.
    pub fn post_price(&self, slot: Slot) -> Cents {
        self.slots.get(slot).map(|s| s.price_cents).unwrap_or(0)
    }

    /// The bid id a buyer gave with its bid, to echo in its post.
    pub fn bid_id(&self, slot: Slot) -> Option<&str> {
        match &self.slots.get(slot)?.ping {
            PingState::Answered {
                outcome: PingOutcome::Bid { bid_id, .. },
                ..
            } => bid_id.as_deref(),
            _ => None,
        }
    }

    /// The shell wrote the ping's first byte at `now`: the buyer's response time counts from here.
    pub fn ping_sent(&mut self, slot: Slot, now: Instant) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.ping_sent_at.is_none() {
                s.ping_sent_at = Some(now);
            }
        }
        if self.phase == Phase::Pinging && self.ping_wait_start.is_none() {
            self.ping_wait_start = Some(now);
        }
        if self.first_ping_at.is_none() {
            self.first_ping_at = Some(now);
        }
    }

    /// A ping waits for a connection to its buyer from `now` (a connect, or a busy pool): the
    /// engine's intake of the lead is over, and the wait is the buyers', whether or not the
    /// ping is ever written (its buyer's response time still starts at [`Auction::ping_sent`]).
    pub fn ping_waiting(&mut self, now: Instant) {
        if self.phase == Phase::Pinging && self.ping_wait_start.is_none() {
            self.ping_wait_start = Some(now);
        }
        if self.first_ping_at.is_none() {
            self.first_ping_at = Some(now);
        }
    }

    /// The buyer's answer (or failure) to the ping. Answers after the close are ignored.
    pub fn on_ping_result(&mut self, slot: Slot, now: Instant, outcome: PingOutcome) {
        // An answer read only after the deadline passed (the loop woke late: a stall, a busy
        // machine) is late, whatever order the loop takes its events in: the close comes
        // first, and the answer finds the bidding over. (While bidding, the ping deadline is
        // the only one: no post is out yet.)
        if self.phase == Phase::Pinging && now >= self.ping_deadline {
            self.close(now);
        }
        self.ping_result_at(slot, now, outcome);
    }

    /// [`Auction::on_ping_result`] once the deadlines due are applied.
    fn ping_result_at(&mut self, slot: Slot, now: Instant, outcome: PingOutcome) {
        if self.phase != Phase::Pinging {
            return;
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.ping != PingState::Waiting {
            return;
        }
        if let PingOutcome::Bid { cents, .. } = outcome {
            if cents > 0 {
                self.bids += 1;
            }
        }
        let outcome = match outcome {
            PingOutcome::Bid { cents, .. } if cents <= 0 => PingOutcome::NoBid,
            o => o,
        };
        let response = s.ping_sent_at.map(|t| now.saturating_duration_since(t));
        s.ping = PingState::Answered {
            outcome,
            seq: self.answer_seq,
            response,
        };
        self.answer_seq += 1;
        // Every slot leaves `Waiting` once, taking the next `answer_seq`.
        if self.answer_seq as usize >= self.slots.len() {
            self.close(now);
        }
    }

    /// The ping's outcome and the buyer's response time, once answered or timed out: for a
    /// timeout the time waited, for a ping never written (no connection) `None`.
    pub fn ping_result(&self, slot: Slot) -> Option<(&PingOutcome, Option<Duration>)> {
        match &self.slots.get(slot)?.ping {
            PingState::Answered {
                outcome, response, ..
            } => Some((outcome, *response)),
            PingState::Waiting => None,
        }
    }

    /// The request's first byte for the slot's ping or post went out at `now` (after any wait
    /// for a free connection, and again for a retry on a fresh connection): the buyer's
    /// response time counts from here. [`Auction::ping_sent`] and [`Auction::post_sent`]
    /// keep the time the request began waiting, for the auction's own accounting.
    ///
    /// A post's `post_timeout` runs from here too: a post that waited for a free connection
    /// gets its whole time once the buyer has it (its buyer would otherwise take the lead and
    /// answer in time, yet be timed out and never billed). Its wait for a connection is
    /// bounded by `post_timeout` (see [`PostOutcome::NotWritten`]); once the exchange is
    /// stopping, the deadline does not pass the stop.
    pub fn written(&mut self, slot: Slot, post: bool, now: Instant) {
        let post_timeout = self.params.post_timeout;
        let stop_by = self.stop_by;
        if let Some(s) = self.slots.get_mut(slot) {
            if post {
                s.post_sent_at = Some(now);
                if let PostState::InFlight { deadline } = &mut s.post {
                    let mut full = now + post_timeout;
                    if let Some(t) = stop_by {
                        full = full.min(t);
                    }
                    *deadline = (*deadline).max(full);
                }
            } else {
                s.ping_sent_at = Some(now);
            }
        }
    }

    /// The shell wrote the post at `now`.
    pub fn post_sent(&mut self, slot: Slot, now: Instant) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.post_sent_at.is_none() {
                s.post_sent_at = Some(now);
            }
        }
        if self.post_wait_start.is_none() && self.posts_in_flight > 0 {
            self.post_wait_start = Some(now);
        }
    }

    /// The result of a post. A post that is not accepted cascades to the next ranked bid.
    pub fn on_post_result(&mut self, slot: Slot, now: Instant, outcome: PostOutcome) {
        // Posts whose time ran out by `now` time out first: an acceptance read after its
        // `post_timeout` finds its post over (timed out, the lead cascading), and is not a
        // sale, whatever order the loop takes its events in.
        self.on_timeout(now);
        self.post_result_at(slot, now, outcome);
    }

    /// [`Auction::on_post_result`] once the deadlines due are applied.
    fn post_result_at(&mut self, slot: Slot, now: Instant, outcome: PostOutcome) {
        if self.phase != Phase::Posting {
            return;
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if !matches!(s.post, PostState::InFlight { .. }) {
            return;
        }
        if outcome.accepted() {
            let sale = Sale {
                slot,
                buyer: s.buyer,
                price_cents: s.price_cents,
            };
            // Kept in rank order, whatever order the buyers answered their posts in.
            let ranking = &self.ranking;
            let rank = |slot: Slot| ranking.iter().position(|&r| r == slot);
            let at = self
                .sales
                .partition_point(|earlier| rank(earlier.slot) < rank(slot));
            self.sales.insert(at, sale);
        }
        if matches!(
            outcome,
            PostOutcome::Capped
                | PostOutcome::Paused
                | PostOutcome::Unjournaled
                | PostOutcome::NotWritten
        ) {
            // Nothing went to the buyer: the attempt is given back to the cascade.
            self.post_attempts = self.post_attempts.saturating_sub(1);
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.post = PostState::Done(outcome);
        s.post_done_at = Some(now);
        self.post_results += 1;
        self.posts_in_flight -= 1;
        if self.posts_in_flight == 0 {
            if let Some(start) = self.post_wait_start.take() {
                self.buyer_wait += now.saturating_duration_since(start);
            }
        }
        self.fill_posts(now);
    }

    /// How many pings have a result (answered or timed out): each slot's counts once.
    pub fn ping_results(&self) -> u32 {
        self.answer_seq
    }

    /// How many posts have a result (answered, timed out or failed).
    pub fn post_results(&self) -> u32 {
        self.post_results
    }

    pub fn post_result(&self, slot: Slot) -> Option<&PostOutcome> {
        match &self.slots.get(slot)?.post {
            PostState::Done(o) => Some(o),
            _ => None,
        }
    }

    /// When the shell must call `on_timeout` next (the earliest pending deadline).
    pub fn next_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Pinging => Some(self.ping_deadline),
            Phase::Posting => self
                .slots
                .iter()
                .filter_map(|s| match s.post {
                    PostState::InFlight { deadline } => Some(deadline),
                    _ => None,
                })
                .min(),
            Phase::Done => None,
        }
    }

    /// Apply every deadline that has passed by `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Pinging && now >= self.ping_deadline {
            self.close(now);
        }
        if self.phase == Phase::Posting {
            let expired: Vec<Slot> = self
                .slots
                .iter()
                .enumerate()
                .filter(
                    |(_, s)| matches!(s.post, PostState::InFlight { deadline } if now >= deadline),
                )
                .map(|(i, _)| i)
                .collect();
            for slot in expired {
                // Never written: it waited for a connection all its time. That wait is the
                // buyer's capacity (a connection busy or slow to be had), not the engine's
                // time, as it is for a post that got one (`post_sent` from its wait's start).
                let outcome = match self.slots[slot].post_sent_at {
                    Some(_) => PostOutcome::TimedOut,
                    None => {
                        if let PostState::InFlight { deadline } = self.slots[slot].post {
                            let from = deadline
                                .checked_sub(self.params.post_timeout)
                                .unwrap_or(deadline);
                            self.post_wait_start =
                                Some(self.post_wait_start.map_or(from, |s| s.min(from)));
                        }
                        PostOutcome::NotWritten
                    }
                };
                self.actions.push_back(Action::AbandonPost { slot });
                self.post_result_at(slot, now, outcome);
            }
        }
    }

    /// Close the bidding: unanswered pings time out, bids are ranked, posts start.
    fn close(&mut self, now: Instant) {
        debug_assert_eq!(self.phase, Phase::Pinging);
        let mut seq = self.answer_seq;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if s.ping == PingState::Waiting {
                let response = s.ping_sent_at.map(|t| now.saturating_duration_since(t));
                s.ping = PingState::Answered {
                    outcome: PingOutcome::Timeout,
                    seq,
                    response,
                };
                seq += 1;
                self.actions.push_back(Action::AbandonPing { slot });
            }
        }
        self.answer_seq = seq;
        if let Some(start) = self.ping_wait_start.take() {
            // Waiting ends when the last answer came or at the deadline, whichever is first: time
            // past the deadline before the engine noticed is the engine's, not the buyers'.
            let end = now.min(self.ping_deadline);
            self.buyer_wait += end.saturating_duration_since(start);
        }
        self.closed_at = Some(now);
        let reserve = self.params.reserve_cents;
        // Sized up front: a growing Vec here would cost allocations in proportion to the
        // number of buyers pinged.
        let mut ranked: Vec<(Cents, u32, Slot)> = Vec::with_capacity(self.slots.len());
        ranked.extend(
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| match &s.ping {
                    PingState::Answered {
                        outcome: PingOutcome::Bid { cents, .. },
                        seq,
                        ..
                    } if *cents > 0 && *cents >= reserve => Some((*cents, *seq, slot)),
                    _ => None,
                }),
        );
        // Highest bid first; among equal bids, the one that arrived first. Fixed-price
        // distribution keeps its own order (priority, rotation or weighted draw).
        if self.params.in_order {
            ranked.sort_by_key(|r| r.2);
        } else {
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        self.ranking = ranked.into_iter().map(|(_, _, slot)| slot).collect();
        self.phase = Phase::Posting;
        if self.params.ping_only {
            // Nothing is posted: the ranking is what the seller's ping is answered with.
            self.phase = Phase::Done;
            self.done_at = Some(now);
            self.actions.push_back(Action::Answer);
            return;
        }
        self.fill_posts(now);
    }

    /// Seller-side ping-post, second half: an auction whose bids were collected by an earlier
    /// ping and held; it starts at the posts. `bids` are (buyer, cents, bid id) in any order.
    pub fn from_held(
        params: Params,
        arrival: Instant,
        now: Instant,
        bids: &[(usize, Cents, Option<SmallText>)],
    ) -> Auction {
        let buyers: Vec<usize> = bids.iter().map(|b| b.0).collect();
        let params = Params {
            ping_only: false,
            ..params
        };
        let mut a = Auction::new(params, arrival, now, &buyers);
        if a.slots.is_empty() {
            // Nothing to post to (every held bid left out, no fixed-price buyer): `new` closed
            // the auction, and its answer (unsold) is the one action left.
            return a;
        }
        a.actions.clear();
        for (slot, (_, cents, bid_id)) in bids.iter().enumerate().take(a.slots.len()) {
            a.slots[slot].ping_sent_at = Some(now);
            // Collected earlier (a ping's hold, a fallback's plan): no deadline applies.
            a.ping_result_at(
                slot,
                now,
                PingOutcome::Bid {
                    cents: *cents,
                    bid_id: *bid_id,
                },
            );
        }
        // Answering every slot closed the auction; the pings were never sent by this one.
        a.actions.retain(|x| !matches!(x, Action::SendPing { .. }));
        a
    }

    /// Reorders the ranked bids not yet posted to (the cascade's), stably, by `key` of each
    /// one's buyer: a fixed-price plan whose cascade order depends on what other leads did
    /// since it was made (round robin's) is brought up to date before a cascade takes from it.
    pub fn reorder_unposted<K: Ord>(&mut self, mut key: impl FnMut(usize) -> K) {
        let slots = &self.slots;
        if let Some(rest) = self.ranking.get_mut(self.next_rank..) {
            rest.sort_by_cached_key(|&slot| key(slots[slot].buyer));
        }
    }

    /// Positive bids received so far (before the reserve is applied), as `Outcome::bids`.
    pub fn bids(&self) -> u32 {
        self.bids
    }

    /// The held bids of a ping-only auction: (buyer, cents, bid id), best first.
    pub fn ranked_bids(&self) -> Vec<(usize, Cents, Option<SmallText>)> {
        self.ranking
            .iter()
            .filter_map(|&slot| match &self.slots[slot].ping {
                PingState::Answered {
                    outcome: PingOutcome::Bid { cents, bid_id },
                    ..
                } => Some((self.slots[slot].buyer, *cents, *bid_id)),
                _ => None,
            })
            .collect()
    }

    /// Keep up to `max_sales` posts sold or in flight, taking the next ranked bids.
    fn fill_posts(&mut self, now: Instant) {
        let max_sales = self.params.sale.max_sales();
        while self.sales.len() + self.posts_in_flight < max_sales
            && self.next_rank < self.ranking.len()
            && self.post_attempts < MAX_POST_ATTEMPTS + max_sales.saturating_sub(1)
            && !self.past_answer_by(now)
        {
            if self
                .stop_by
                .is_some_and(|t| now + self.params.post_timeout > t)
            {
                self.stopped = true;
                break;
            }
            let slot = self.ranking[self.next_rank];
            self.next_rank += 1;
            let s = &mut self.slots[slot];
            let price_cents = match &s.ping {
                PingState::Answered {
                    outcome: PingOutcome::Bid { cents, .. },
                    ..
                } => *cents,
                _ => continue,
            };
            s.price_cents = price_cents;
            s.post = PostState::InFlight {
                deadline: now + self.params.post_timeout,
            };
            self.posts_in_flight += 1;
            self.post_attempts += 1;
            self.actions
                .push_back(Action::SendPost { slot, price_cents });
        }
        if self.posts_in_flight == 0 && self.phase == Phase::Posting {
            self.phase = Phase::Done;
            self.done_at = Some(now);
            self.actions.push_back(Action::Answer);
        }
    }

    /// A post starting now would follow a finished one and could end past `answer_by`.
    fn past_answer_by(&self, now: Instant) -> bool {
        let Some(by) = self.params.answer_by else {
            return false;
        };
        let cascading = self.params.posted_before || self.post_attempts > self.posts_in_flight;
        cascading && now + self.params.post_timeout > self.arrival + by
    }

    /// The result, once done (`Action::Answer` was emitted).
    pub fn outcome(&self) -> Outcome {
        let price_cents = self.sales.iter().map(|s| s.price_cents).sum();
        let status = if self.sales.is_empty() {
            Status::Unsold
        } else {
            Status::Sold
        };
        let unsold_reason = if status == Status::Sold {
            None
        } else if self.slots.is_empty() {
            Some(UnsoldReason::NoEligibleBuyers)
        } else if self.bids == 0 {
            Some(UnsoldReason::NoBids)
        } else if self.ranking.is_empty() {
            Some(UnsoldReason::BelowReserve)
        } else if self.stopped {
            Some(UnsoldReason::ShuttingDown)
        } else if self.post_attempts > 0 {
            Some(UnsoldReason::PostsRejected)
        } else {
            // No post went out: why the first of these kept one back, in this order.
            let kept_back = |why: PostOutcome| {
                self.slots
                    .iter()
                    .any(|s| matches!(&s.post, PostState::Done(o) if *o == why))
            };
            Some(if kept_back(PostOutcome::Capped) {
                UnsoldReason::BuyersCapped
            } else if kept_back(PostOutcome::Paused) {
                UnsoldReason::BuyersPaused
            } else if kept_back(PostOutcome::NotWritten) {
                UnsoldReason::BuyersBusy
            } else {
                UnsoldReason::PostsRejected
            })
        };
        let end = self.done_at.or(self.closed_at).unwrap_or(self.arrival);
        Outcome {
            status,
            unsold_reason,
            sales: self.sales.clone(),
            price_cents,
            bids: self.bids,
            elapsed: end.saturating_duration_since(self.arrival),
            buyer_wait: self.buyer_wait,
            intake: self
                .first_ping_at
                .or(self.closed_at)
                .unwrap_or(end)
                .saturating_duration_since(self.arrival),
        }
    }
}

#[cfg(test)]
mod tests;
