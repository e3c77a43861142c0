//! `GET /v1/leads/{lead_id}`: what became of a lead, for the seller that sent it, read back from
//! the journal. A seller whose connection dropped (or whose own timeout fired) before the answer
//! came learns whether the lead sold, for how much, and what it earns, instead of guessing (and
//! sending the consumer again, to be refused as a duplicate).
//!
//! The journal is read on a thread of its own, never on a worker: a worker hands the request to
//! it through a bounded queue ([`MAX_LOOKUPS_QUEUED`]; full: 503 `overloaded`) and gets the
//! answer back as a letter, in its seller connection's answer order.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use super::slab::Key;
use super::Shared;
use crate::journal::{self, LeadFlow, LeadStatus, Record};
use crate::lead::{self, write_json_str};
use crate::money::Cents;

/// Lookups waiting for the reader thread; one more is answered 503 `overloaded`.
pub const MAX_LOOKUPS_QUEUED: usize = 64;

/// Retries under an `Idempotency-Key` waiting for the reader thread, in a queue of their own
/// that the thread serves first: sellers polling their leads cannot crowd out another
/// seller's retry. One more is answered 503 `overloaded`.
pub const MAX_REPLAYS_QUEUED: usize = 64;

/// How far past a lead's arrival a lookup reads for its story: a ping's longest hold plus a
/// post's longest cascade (posts bounded by `MAX_TIMEOUT_MS` each).
pub const LOOKUP_HORIZON_US: u64 =
    (crate::config::MAX_HOLD_MS + 20 * crate::config::MAX_TIMEOUT_MS) * 1000;

/// A jump forward between two records longer than this is taken for a wall clock stepped
/// forward (or an exchange standing idle) and left out of a lookup's horizon, so a lead whose
/// auction a step crossed still has its answer read. Steps shorter than this fit in the
/// horizon's slack.
const CLOCK_STEP_FORWARD_US: u64 = 600_000_000;

/// How far before its id's time a lead's first record may be stamped (the id is made from the
/// same clock just before; this is slack for a clock stepped back).
const BEFORE_ID_US: u64 = 2_000_000;

/// A seller's question, queued for the reader thread.
pub struct LookupRequest {
    /// The lead id, canonical (upper case).
    pub lead_id: String,
    /// The asking seller's id: another seller's lead is not found.
    pub seller: String,
    /// Where the answer goes: the worker, its seller connection and the answer's place there.
    pub worker: usize,
    pub conn: Key,
    pub seq: u64,
    /// A retry under an `Idempotency-Key` naming this lead: answered as the first request
    /// was ([`replayed_answer`]), not as a lookup.
    pub replay: bool,
    /// The retried request was a `/v1/ping`: its answer is the ping's offer, whatever a post
    /// of it did since.
    pub ping: bool,
}

/// The reader thread's answer, delivered to the asking worker.
pub struct LookupDone {
    pub conn: Key,
    pub seq: u64,
    pub status: u16,
    pub body: Vec<u8>,
    /// Answers a retry under an `Idempotency-Key`.
    pub replay: bool,
}

/// The sending side, held by the workers (through `Shared`).
pub struct Lookups {
    lookups: crossbeam_channel::Sender<LookupRequest>,
    replays: crossbeam_channel::Sender<LookupRequest>,
}

impl Lookups {
    /// Queue `req` (a replay in the replays' queue); false when its queue is full or the
    /// reader thread is gone.
    pub fn send(&self, req: LookupRequest) -> bool {
        let queue = if req.replay {
            &self.replays
        } else {
            &self.lookups
        };
        queue.try_send(req).is_ok()
    }
}

/// The reader thread and its stopper: dropping the sender ends the thread.
pub type Reader = (std::thread::JoinHandle<()>, crossbeam_channel::Sender<()>);

/// Start the reader thread for the journal in `dir`. It ends when the exchange stops: the
/// returned stopper is dropped (at once), or its `Shared` is gone or stopping.
pub fn start(
    dir: PathBuf,
) -> (
    Lookups,
    impl FnOnce(Weak<Shared>) -> std::io::Result<Reader>,
) {
    let (tx, rx) = crossbeam_channel::bounded::<LookupRequest>(MAX_LOOKUPS_QUEUED);
    let (replay_tx, replay_rx) = crossbeam_channel::bounded::<LookupRequest>(MAX_REPLAYS_QUEUED);
    let spawn = move |shared: Weak<Shared>| {
        // Nothing is ever sent: dropping the sender wakes the thread to end.
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let alive = shared.clone();
        // Answer one request; false when the exchange is gone or stopping.
        let answer = move |req: LookupRequest| {
            let (status, body) = if req.replay {
                replayed_answer(&dir, &req.lead_id, &req.seller, req.ping)
            } else {
                lead_status(&dir, &req.lead_id, &req.seller)
            };
            let Some(shared) = shared.upgrade() else {
                return false;
            };
            let done = LookupDone {
                conn: req.conn,
                seq: req.seq,
                status,
                body,
                replay: req.replay,
            };
            if shared.seller_conns.deliver_lookup(req.worker, done) {
                shared.wake(req.worker);
            }
            !shared.shutdown.load(std::sync::atomic::Ordering::Acquire)
        };
        let thread = std::thread::Builder::new()
            .name("gavel-lookup".into())
            .spawn(move || loop {
                // Replays first, every time round.
                while let Ok(req) = replay_rx.try_recv() {
                    if !answer(req) {
                        return;
                    }
                }
                let req = crossbeam_channel::select! {
                    recv(replay_rx) -> req => req,
                    recv(rx) -> req => req,
                    recv(stop_rx) -> _ => return,
                    default(Duration::from_millis(100)) => {
                        let stopping = alive.upgrade().is_none_or(|shared| {
                            shared.shutdown.load(std::sync::atomic::Ordering::Acquire)
                        });
                        if stopping {
                            return;
                        }
                        continue;
                    }
                };
                // A closed queue: the exchange is gone.
                let Ok(req) = req else { return };
                if !answer(req) {
                    return;
                }
            })?;
        Ok((thread, stop_tx))
    };
    let lookups = Lookups {
        lookups: tx,
        replays: replay_tx,
    };
    (lookups, spawn)
}

/// A lead id as the exchange writes it (a ULID, upper case), from a seller's spelling of it
/// (either case); `None` when it is not one.
pub fn canonical_lead_id(s: &str) -> Option<String> {
    // 26 base-32 digits hold 130 bits: a ULID's 128 leave its first digit at most 7. The
    // parser would take a larger one modulo 2^128, naming another lead.
    if s.len() != ulid::ULID_LEN || !matches!(s.as_bytes()[0], b'0'..=b'7') {
        return None;
    }
    ulid::Ulid::from_string(s).ok().map(|u| u.to_string())
}

/// The lead's state as its seller's answer said it, read from the journal in `dir`: the HTTP
/// status of the lookup and its JSON body.
///
/// - answered: the answer as it was written (`sold` / `unsold`, price, payout, sales, bids,
///   elapsed_ms, reason, test);
/// - refused for its content: `"status": "rejected"` with the error's code and field;
/// - a `/v1/ping` not posted (yet): its answer, `expires_in_ms` counting down to 0;
/// - still in its auction, or cut off by a stop before any post: `"status": "pending"`, until
///   a start reports it (`recovered` `never_posted`): then `"status": "interrupted"` with the
///   code `never_posted` (no buyer has it; the seller may send it again);
/// - cut off later and reported unsettled by a start: `sold` (`"reason": "interrupted"`) when
///   a buyer bought it, else `"status": "interrupted"` (`post_unanswered`), for good;
/// - unknown, or another seller's: 404 `not_found`.
pub fn lead_status(dir: &Path, lead_id: &str, seller: &str) -> (u16, Vec<u8>) {
    match read_story(dir, lead_id, seller, false) {
        Some(story) => (200, story.answer(lead_id, true)),
        None => {
            let mut out = Vec::with_capacity(96);
            crate::lead::write_error(
                &mut out,
                None,
                "not_found",
                &format!("no lead {lead_id} from this seller"),
                Some("lead_id"),
            );
            (404, out)
        }
    }
}

/// The answer to a seller's retry of a request under the `Idempotency-Key` that first named
/// `lead_id`: the first request's answer with its own status (200 sold, unsold or a ping's
/// offer; a refusal's 4xx), or, while it has none (still in its auction, or cut off by a stop
/// after a buyer was posted to), 409 `in_progress` naming the lead, with `"status": "pending"`.
pub fn replayed_answer(dir: &Path, lead_id: &str, seller: &str, ping: bool) -> (u16, Vec<u8>) {
    let story = read_story(dir, lead_id, seller, ping);
    if let Some(story) = &story {
        if let Some(status) = story.answered_status() {
            return (status, story.answer(lead_id, false));
        }
    }
    // The key named this lead, yet the journal holds no record of it at all, long after its
    // arrival was journaled (before its key could be retried): its records were lost to
    // damage (a segment cut short or replaced), so it is not "in progress" but unsettled for
    // good, as a start reports such a lead, and not to be sent again.
    if story.is_none() && lead_age_us(lead_id).is_some_and(|age| age >= RECORDS_LOST_AFTER_US) {
        let mut out = Vec::with_capacity(256);
        write_interrupted(&mut out, lead_id, false, journal::Unsettled::HistoryLost);
        return (200, out);
    }
    let test = story
        .as_ref()
        .and_then(|s| s.received.as_ref())
        .is_some_and(|r| r.1);
    let mut out = Vec::with_capacity(256);
    write_pending(&mut out, lead_id, test);
    out.extend_from_slice(b",\"error\":{\"code\":\"in_progress\",\"message\":");
    write_json_str(
        &mut out,
        &format!(
            "the request this Idempotency-Key names (lead {lead_id}) has no answer yet; \
             send it again in a moment, or GET /v1/leads/{lead_id}"
        ),
    );
    out.extend_from_slice(b"}}");
    (409, out)
}

/// How long after a lead's arrival a retry of its key that finds no record of it in the
/// journal calls it lost rather than in progress: its `lead_received` is journaled before its
/// auction starts, microseconds after the key is recorded.
const RECORDS_LOST_AFTER_US: u64 = 5_000_000;

/// How long ago the lead arrived, by its id's time (`None` for an id that is no ULID).
fn lead_age_us(lead_id: &str) -> Option<u64> {
    let id_ms = ulid::Ulid::from_string(lead_id).ok()?.timestamp_ms();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(now_ms.saturating_sub(id_ms) * 1000)
}

/// How far a record's time may run past the creation of the segment after it for a lookup's
/// first reading: a writer stamps a record just before appending it, so by far less unless
/// the clock was stepped back. A busy journal starts a segment every minute or two; the
/// reading allowing for an hour's step would go through an hour of them.
const LOOKUP_SKEW_US: u64 = 60_000_000;

/// The lead's records as far as its answer needs them; `None` when it is unknown or another
/// seller's. `ping_only`: the story of its `/v1/ping`, ending where a post of it begins.
/// Read first from the segments near its time; when they do not hold its arrival, again
/// allowing for a clock stepped back by up to an hour (`journal::SEGMENT_SKEW_US`), as a
/// start's replay of the caps does; and then once more past the records stamped after its
/// time, in case it came after a clock stepped back further (a clock that ran a day ahead,
/// then corrected): the journal began a segment at the step, passed over here by its
/// creation time unless it is older than the lead's horizon.
fn read_story(dir: &Path, lead_id: &str, seller: &str, ping_only: bool) -> Option<Story> {
    let mut found = None;
    for (skew_us, per_segment) in [
        (LOOKUP_SKEW_US, false),
        (journal::SEGMENT_SKEW_US, false),
        (journal::SEGMENT_SKEW_US, true),
    ] {
        match read_story_within(dir, lead_id, seller, ping_only, skew_us, per_segment) {
            Some(story) if story.received.is_some() => return Some(story),
            other => found = other,
        }
    }
    found
}

/// [`read_story`] from the segments a record of the lead's time may be in when times run at
/// most `skew_us` past the next segment's creation.
fn read_story_within(
    dir: &Path,
    lead_id: &str,
    seller: &str,
    ping_only: bool,
    skew_us: u64,
    per_segment: bool,
) -> Option<Story> {
    let id_ms = ulid::Ulid::from_string(lead_id)
        .ok()
        .map(|u| u.timestamp_ms())?;
    let since = (id_ms * 1000).saturating_sub(BEFORE_ID_US);
    let mut until = (id_ms * 1000).saturating_add(LOOKUP_HORIZON_US);
    let mut reader = journal::Reader::open_since_within(dir, since, skew_us)
        .ok()?
        .only_lead(lead_id)
        .past_damage()
        .collapse_gaps_over(CLOCK_STEP_FORWARD_US);
    if per_segment {
        reader = reader.stop_per_segment();
    }
    reader.stop_after(until);
    let mut story = Story::default();
    let mut told = false;
    while let Some(item) = reader.next() {
        // Damage ends only the segment it is in: the lead's records may be in whole ones
        // after it (what the damage took is looked for among the records set aside, below).
        let Ok(e) = item else { continue };
        if e.record.lead_id() != lead_id {
            continue;
        }
        let post_begins = matches!(
            e.record,
            Record::LeadReceived {
                flow: Some(LeadFlow::Post),
                ..
            }
        );
        if ping_only && post_begins && story.received.is_some() {
            break;
        }
        if story.take(e.ts_us, e.record) {
            told = true;
            break;
        }
        if let Some((at_us, _, hold_ms, _)) = story.pinged {
            // Its post, if any, came within the hold and took at most a cascade after it.
            let post_span_us = 20 * crate::config::MAX_TIMEOUT_MS * 1000;
            until = until.min(at_us + hold_ms * 1000 + post_span_us);
            reader.stop_after(until);
        }
    }
    if !told && !ping_only {
        // The rest of its story may be in what a recovery cut out of the journal and kept
        // aside (the records after damage), which the start counted too.
        let _ = journal::replay_set_aside(dir, since, |e| {
            if !told && e.ts_us <= until && e.record.lead_id() == lead_id {
                told = story.take(e.ts_us, e.record.clone());
            }
        });
    }
    match (&story.received, &story.named_seller) {
        (Some((from, _, _)), _) if from == seller => Some(story),
        // Its arrival lost to damage, its sale and answer kept aside: still the seller's.
        (None, Some(from)) if from == seller => Some(story),
        _ => None,
    }
}

/// A `lead_answered`: (status, price, payout, elapsed µs, bids, reason).
type Answered = (LeadStatus, Cents, Cents, u64, Option<u32>, Option<String>);

/// Posts a story keeps the order of: more than any lead sends (a lead is posted to at most
/// once per buyer, and a campaign's buyers are bounded well below this).
const MAX_POSTS_ORDERED: usize = 1024;

/// The `reason` of a sale whose seller was never answered (the exchange stopped first).
const INTERRUPTED: &str = "interrupted";

/// A lead's records, as far as its answer needs them.
#[derive(Default)]
struct Story {
    /// The last `lead_received`: (seller, test, flow).
    received: Option<(String, bool, Option<LeadFlow>)>,
    /// The seller a `sale` or `lead_answered` names: whose lead it is when its
    /// `lead_received` was lost to damage and the rest kept aside.
    named_seller: Option<String>,
    /// A `sale` says it was a test lead's (read when its `lead_received` was lost).
    test_sale: bool,
    /// A refusal of the last request: (HTTP status, code, field, message).
    rejected: Option<(u16, String, Option<String>, Option<String>)>,
    /// The last ranking: (bids, ranked buyers).
    closed: Option<(u32, Vec<String>)>,
    /// Each sale: (buyer, price, the seller's payout of it).
    sales: Vec<(String, Cents, Cents)>,
    /// The buyers posted to, in the order the posts were sent: a fixed-price plan's order
    /// (a fallback's buyers are not in the auction's ranking).
    posted: Vec<String>,
    /// A later start found the lead unsettled (`recovered`) after a post: it will never be
    /// answered.
    recovered: Option<journal::Unsettled>,
    /// A later start found the lead cut off before any post (`recovered` `never_posted`).
    never_posted: bool,
    /// The final record.
    answered: Option<Answered>,
    /// A ping's answer: (when, payout, hold ms, bid).
    pinged: Option<(u64, Cents, u64, bool)>,
}

impl Story {
    /// Take one of the lead's records; true when its story is told to the end.
    fn take(&mut self, ts_us: u64, r: Record) -> bool {
        match r {
            Record::LeadReceived {
                seller, test, flow, ..
            } => {
                // A post continues its ping's story: what the post did is the answer now.
                self.rejected = None;
                self.sales.clear();
                self.posted.clear();
                self.answered = None;
                self.received = Some((seller, test, flow));
            }
            Record::Rejected {
                http_status,
                code,
                field,
                message,
                ..
            } => self.rejected = Some((http_status, code, field, message)),
            Record::AuctionClosed { bids, ranked, .. } => {
                self.closed = Some((bids, ranked.into_iter().map(|r| r.0).collect()));
            }
            Record::PostSent { buyer, .. }
                if !self.posted.contains(&buyer) && self.posted.len() < MAX_POSTS_ORDERED =>
            {
                self.posted.push(buyer);
            }
            Record::Sale {
                buyer,
                price_cents,
                payout_cents,
                seller,
                test,
                ..
            } => {
                self.named_seller.get_or_insert(seller);
                self.test_sale |= test;
                self.sales.push((buyer, price_cents, payout_cents))
            }
            // No buyer has it: a retry under its key runs it again, a lookup says so.
            Record::Recovered {
                kind: journal::Unsettled::NeverPosted,
                ..
            } => self.never_posted = true,
            Record::Recovered { kind, .. } => self.recovered = Some(kind),
            Record::LeadAnswered {
                status,
                price_cents,
                payout_cents,
                elapsed_us,
                bids,
                reason,
                seller,
                ..
            } => {
                self.named_seller.get_or_insert(seller);
                self.answered = Some((status, price_cents, payout_cents, elapsed_us, bids, reason));
                return true;
            }
            Record::PingAnswered {
                payout_cents,
                hold_ms,
                held,
                ..
            } => self.pinged = Some((ts_us, payout_cents, hold_ms, !held.is_empty())),
            _ => {}
        }
        false
    }

    /// The HTTP status the request's answer had, once it has one: a refusal's own, 200 for
    /// a lead answered or a ping's offer.
    fn answered_status(&self) -> Option<u16> {
        let flow = self.received.as_ref().and_then(|r| r.2);
        if let Some((status, ..)) = &self.rejected {
            Some(*status)
        } else if self.answered.is_some()
            || self.recovered.is_some()
            || (self.pinged.is_some() && flow == Some(LeadFlow::Ping))
        {
            Some(200)
        } else {
            None
        }
    }

    /// The answer's body: to a lookup (`lookup`), or to a retry of the request.
    fn answer(&self, lead_id: &str, lookup: bool) -> Vec<u8> {
        let test = self.received.as_ref().map_or(self.test_sale, |r| r.1);
        let flow = self.received.as_ref().and_then(|r| r.2);
        let mut out = Vec::with_capacity(256);
        // A `/v1/post` refused for its content leaves its ping postable: a lookup tells the
        // ping's offer, counting down; a retry of that post is told its refusal again.
        let post_refused = self.rejected.is_some() && flow == Some(LeadFlow::Post);
        let offer =
            self.pinged.is_some() && (flow == Some(LeadFlow::Ping) || lookup && post_refused);
        if let Some((_, code, field, message)) = self.rejected.as_ref().filter(|_| !offer) {
            // Records from before the message was kept say only the code.
            let message = match message {
                Some(m) => m.clone(),
                None => format!("the request was refused: {code}"),
            };
            lead::write_refusal(
                &mut out,
                Some((lead_id, test)),
                code,
                &message,
                field.as_deref(),
            );
            return out;
        }
        // A lead a stop cut off: sold if a buyer bought it (the seller is owed its payout),
        // else interrupted while a post was out.
        let cut_off = match (&self.answered, self.recovered) {
            // Lost to damage: the sales the journal kept may not be all of them.
            (None, Some(kind))
                if !self.sales.is_empty() && kind != journal::Unsettled::HistoryLost =>
            {
                Some((
                    LeadStatus::Sold,
                    self.sales.iter().map(|s| s.1).sum(),
                    self.sales.iter().map(|s| s.2).sum(),
                    0,
                    None,
                    Some(INTERRUPTED.to_string()),
                ))
            }
            (None, Some(kind)) => {
                write_interrupted(&mut out, lead_id, test, kind);
                return out;
            }
            _ => None,
        };
        if let Some((status, price, payout, elapsed_us, bids, reason)) =
            self.answered.as_ref().or(cut_off.as_ref())
        {
            // In the answer's order: the ranking's, then (a fallback's fixed-price plan,
            // whose buyers were not ranked) the order their posts were sent in.
            let rank = |b: &str| {
                let ranked = self
                    .closed
                    .as_ref()
                    .and_then(|c| c.1.iter().position(|r| r == b))
                    .unwrap_or(usize::MAX);
                let posted = self.posted.iter().position(|p| p == b);
                (ranked, posted.unwrap_or(usize::MAX))
            };
            let mut sales: Vec<lead::AnswerSale<'_>> = self
                .sales
                .iter()
                .map(|(buyer, cents, _)| lead::AnswerSale {
                    buyer,
                    price_cents: *cents,
                })
                .collect();
            sales.sort_by_key(|s| rank(s.buyer));
            let fields = lead::AnswerFields {
                status: status.name(),
                price_cents: *price,
                payout_cents: *payout,
                sales: &sales,
                bids: bids.or(self.closed.as_ref().map(|c| c.0)).unwrap_or(0),
                elapsed_ms: elapsed_us / 1000,
                reason: reason.as_deref(),
                test,
            };
            lead::write_answer_fields(&mut out, lead_id, &fields);
            return out;
        }
        if let Some((at_us, payout, hold_ms, bid)) = self.pinged.filter(|_| offer) {
            let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
            let ends_us = at_us.saturating_add(hold_ms.saturating_mul(1000));
            // By the wall clock, and never more than the hold (a ping stamped while the clock
            // ran ahead).
            let expires_in_ms = (ends_us.saturating_sub(now_us) / 1000).min(hold_ms);
            lead::write_ping_answer(
                &mut out,
                lead_id,
                bid.then_some(payout),
                expires_in_ms,
                test,
            );
            return out;
        }
        if self.never_posted && lookup {
            out.extend_from_slice(b"{\"lead_id\":");
            write_json_str(&mut out, lead_id);
            out.extend_from_slice(b",\"status\":\"interrupted\"");
            if test {
                out.extend_from_slice(b",\"test\":true");
            }
            out.extend_from_slice(b",\"error\":{\"code\":\"never_posted\",\"message\":");
            write_json_str(
                &mut out,
                "the exchange stopped while this lead was in its auction, before any buyer was \
                 posted to: no buyer has it; send it again (it is no duplicate)",
            );
            out.extend_from_slice(b"}}");
            return out;
        }
        write_pending(&mut out, lead_id, test);
        out.push(b'}');
        out
    }
}

/// `{"lead_id": ..., "status": "pending"` (and `"test": true` for a test lead), left open for
/// the members that follow.
/// `{"lead_id", "status": "interrupted", "error": {...}}` for a lead a stop or damage left
/// unsettled.
fn write_interrupted(out: &mut Vec<u8>, lead_id: &str, test: bool, kind: journal::Unsettled) {
    out.extend_from_slice(b"{\"lead_id\":");
    write_json_str(out, lead_id);
    out.extend_from_slice(b",\"status\":\"interrupted\"");
    if test {
        out.extend_from_slice(b",\"test\":true");
    }
    let (code, message) = if kind == journal::Unsettled::HistoryLost {
        (
            "history_lost",
            "this lead's records after its arrival were lost to damage in the exchange's \
             journal: whether a buyer has it is settled by the operator, not here; do not send \
             it again before that",
        )
    } else {
        (
            "post_unanswered",
            "the exchange stopped while a buyer had this lead's post, before its answer: \
             whether it bought the lead is settled by the operator, not here",
        )
    };
    out.extend_from_slice(b",\"error\":{\"code\":");
    write_json_str(out, code);
    out.extend_from_slice(b",\"message\":");
    write_json_str(out, message);
    out.extend_from_slice(b"}}");
}

fn write_pending(out: &mut Vec<u8>, lead_id: &str, test: bool) {
    out.extend_from_slice(b"{\"lead_id\":");
    write_json_str(out, lead_id);
    out.extend_from_slice(b",\"status\":\"pending\"");
    if test {
        out.extend_from_slice(b",\"test\":true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(replay: bool) -> LookupRequest {
        LookupRequest {
            lead_id: "01JDQ6X8W2AAAAAAAAAAAAAAAA".into(),
            seller: "s".into(),
            worker: 0,
            conn: Key { index: 0, gen: 0 },
            seq: 0,
            replay,
            ping: false,
        }
    }

    /// Now, in unix microseconds: the journal stamps its first segment with the clock.
    fn now_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    /// A scratch journal directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Test helpers' results: the journal's and the file system's errors.
    type Tried<T> = Result<T, Box<dyn std::error::Error>>;

    fn scratch(name: &str) -> Tried<(Scratch, journal::Journal)> {
        let dir = std::env::temp_dir().join(format!("gavel-lookup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = journal::JournalOptions {
            dir: dir.clone(),
            segment_bytes: journal::MIN_SEGMENT_BYTES,
            sync: journal::SyncMode::Os,
            retain_segments: 0,
            keep_us: journal::CAP_WINDOW_US,
        };
        let (j, _) = journal::Journal::open(opts)?;
        Ok((Scratch(dir), j))
    }

    fn append(j: &journal::Journal, ts: u64, r: &Record) -> Tried<journal::Position> {
        Ok(r.with_ref(|rr| j.append(ts, rr))?)
    }

    /// Other leads' records stamped `ts` until one starts a new segment (made at `ts`); the
    /// position of the first.
    fn fill_segment(j: &journal::Journal, ts: u64) -> Tried<journal::Position> {
        let filler = Record::PingSent {
            lead_id: "01JDQ6X8W2FFFFFFFFFFFFFFFF".into(),
            buyer: "b".repeat(200),
        };
        let first = append(j, ts, &filler)?;
        while append(j, ts, &filler)?.segment == first.segment {}
        Ok(first)
    }

    /// A lead arrived at `ts` and sold, as its records say: its id.
    fn sold_lead(j: &journal::Journal, ts: u64) -> Tried<String> {
        let id = ulid::Ulid::from_parts(ts / 1000, 7).to_string();
        received(j, &id, ts)?;
        answered_sold(j, &id, ts + 1_000)?;
        Ok(id)
    }

    fn received(j: &journal::Journal, id: &str, ts: u64) -> Tried<journal::Position> {
        append(
            j,
            ts,
            &Record::LeadReceived {
                lead_id: id.into(),
                seller: "s".into(),
                campaign: "auto".into(),
                source: None,
                test: false,
                lead_json: br#"{"lead":{"zip":"77002"}}"#.to_vec(),
                flow: Some(LeadFlow::Lead),
                idempotency_key: None,
            },
        )
    }

    fn answered_sold(j: &journal::Journal, id: &str, ts: u64) -> Tried<journal::Position> {
        append(
            j,
            ts,
            &Record::LeadAnswered {
                lead_id: id.into(),
                campaign: "auto".into(),
                seller: "s".into(),
                status: LeadStatus::Sold,
                price_cents: 4200,
                payout_cents: 3000,
                elapsed_us: 1_000,
                bids: Some(1),
                reason: None,
            },
        )
    }

    /// Each lead is answered by its id as sold.
    fn assert_sold(dir: &Path, leads: &[&String]) {
        for lead in leads {
            let (code, body) = status(dir, lead);
            assert_eq!(code, 200, "{lead}: {body}");
            assert!(body.contains("\"status\":\"sold\""), "{lead}: {body}");
        }
    }

    /// Until the journal's spare segment is made (at most 10 s).
    fn wait_for_spare(j: &journal::Journal) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !j.spare_ready() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn status(dir: &Path, id: &str) -> (u16, String) {
        let (code, body) = lead_status(dir, id, "s");
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// A lookup reads the segments near its lead's time, not every segment made in the hour
    /// before it: one from ten minutes before is never opened (here it is damaged, which
    /// would end the reading before the lead).
    #[test]
    fn a_lookup_reads_only_the_segments_near_its_leads_time() -> Tried<()> {
        let (dir, j) = scratch("near")?;
        let t = now_us();
        let old = fill_segment(&j, t)?;
        fill_segment(&j, t + 300_000_000)?;
        let id = sold_lead(&j, t + 600_000_000)?;
        drop(j);
        let seg = journal::segment_path(&dir.0, old.segment);
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&seg)?;
            f.write_all_at(&[0x5a, 0xa5], old.offset + 40)?;
        }
        let (code, body) = status(&dir.0, &id);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"status\":\"sold\""), "{body}");
        Ok(())
    }

    /// A lead whose records went into a segment before a clock stepped back by minutes,
    /// the next segment stamped earlier than them: the lookup reads again allowing for the
    /// step, and finds it.
    #[test]
    fn a_lookup_finds_a_lead_written_before_the_clock_stepped_back() -> Tried<()> {
        let (dir, j) = scratch("stepped")?;
        let t = now_us();
        let id = sold_lead(&j, t + 600_000_000)?;
        fill_segment(&j, t + 300_000_000)?;
        fill_segment(&j, t + 301_000_000)?;
        drop(j);
        let (code, body) = status(&dir.0, &id);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"status\":\"sold\""), "{body}");
        Ok(())
    }

    /// A lead that came after the clock was stepped back by more than an hour (it ran two
    /// days ahead, then was corrected): its records follow records stamped two days later,
    /// in the segment the journal began at the step, and the lookup finds it there.
    #[test]
    fn a_lookup_finds_a_lead_that_came_after_the_clock_stepped_back_days() -> Tried<()> {
        let (dir, j) = scratch("stepped-days")?;
        wait_for_spare(&j);
        let t = now_us();
        let ahead = sold_lead(&j, t + 2 * 86_400_000_000)?;
        let id = sold_lead(&j, t)?;
        drop(j);
        assert_sold(&dir.0, &[&ahead, &id]);
        // The step began a segment of its own.
        let ids: Vec<_> = journal::read_all(&dir.0)?
            .into_iter()
            .filter(|e| e.record.lead_id() == id)
            .map(|e| e.pos.segment)
            .collect();
        assert_eq!(ids, vec![1, 1], "{ids:?}");
        Ok(())
    }

    /// A start while the wall clock is behind the journal's latest record (stepped back while
    /// the exchange was down): the first lead after it is found too, as after a step back
    /// while running.
    #[test]
    fn a_lookup_finds_a_lead_that_came_after_a_start_behind_the_journal() -> Tried<()> {
        let (dir, j) = scratch("start-behind")?;
        let t = now_us();
        let ahead = sold_lead(&j, t + 2 * 86_400_000_000)?;
        drop(j);
        let opts = journal::JournalOptions {
            dir: dir.0.clone(),
            segment_bytes: journal::MIN_SEGMENT_BYTES,
            sync: journal::SyncMode::Os,
            retain_segments: 0,
            keep_us: journal::CAP_WINDOW_US,
        };
        let (j, _) = journal::Journal::open(opts)?;
        wait_for_spare(&j);
        let id = sold_lead(&j, t)?;
        drop(j);
        assert_sold(&dir.0, &[&ahead, &id]);
        Ok(())
    }

    /// A wall clock stepped a day forward while a lead was in its auction: its answer is
    /// stamped a day after its arrival, past its horizon, and is still read.
    #[test]
    fn a_lookup_reads_an_answer_a_clock_stepped_forward_put_a_day_later() -> Tried<()> {
        let (dir, j) = scratch("stepped-forward")?;
        let t = now_us();
        let day = 86_400_000_000;
        let before = sold_lead(&j, t - 2 * day)?;
        let id = ulid::Ulid::from_parts(t / 1000, 9).to_string();
        received(&j, &id, t)?;
        // Other leads' records after the step.
        let after = sold_lead(&j, t + day)?;
        answered_sold(&j, &id, t + day + 2_000)?;
        drop(j);
        assert_sold(&dir.0, &[&before, &id, &after]);
        Ok(())
    }

    /// Lookups that fill their queue leave the replays' queue its own room.
    #[test]
    fn replays_have_a_queue_of_their_own() {
        // The reader thread is not started: nothing drains the queues.
        let (lookups, _spawn) = start(std::env::temp_dir());
        for _ in 0..MAX_LOOKUPS_QUEUED {
            assert!(lookups.send(request(false)));
        }
        assert!(!lookups.send(request(false)), "the lookups' queue is full");
        for _ in 0..MAX_REPLAYS_QUEUED {
            assert!(lookups.send(request(true)));
        }
        assert!(!lookups.send(request(true)), "the replays' queue is full");
    }
}
