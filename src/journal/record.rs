//! Journal records and their payload codec.
//!
//! Records are encoded from borrowed data ([`RecordRef`]) straight into the mapped segment, so
//! an append allocates nothing; they decode into owned [`Record`]s for replay and the CLI.
//!
//! Payload encoding (little-endian): one version byte ([`PAYLOAD_VERSION`]) then the fields in
//! declaration order:
//! - `str`: `u16` byte length + UTF-8 bytes; `Option<str>`: `u8` 0 (none) or 1 + `str`;
//! - `bytes` (the lead as received): `u32` length + bytes;
//! - `bool`: `u8` 0 or 1; money: `i64` cents; counters and durations: `u16`/`u32`/`u64`;
//! - enums: a `u8` tag; lists: `u16` count + entries.
//!
//! Decoding is total: any byte string yields a record or a [`DecodeError`], never a panic.
//! Bytes after the last known field are ignored, so a later revision may append fields
//! without a new version.

use std::fmt;

use super::JournalError;
use crate::money::Cents;

/// Version of the payload encoding written by this build.
pub const PAYLOAD_VERSION: u8 = 1;

/// Entries in an `AuctionClosed` ranking (the `u16` count's range).
pub const MAX_RANKED: usize = u16::MAX as usize;

/// Longest string field (the `u16` length prefix's range).
pub const MAX_STR_BYTES: usize = u16::MAX as usize;

/// Longest post `reason` or `buyer_lead_id` a post's result is written with (longer ones are
/// clipped to it), so that the room a post promises its result is known when it is sent.
pub const MAX_POST_TEXT_BYTES: usize = 256;

/// The most room (whole frames) a post's `PostResult` and `Sale` take, with its `reason` and
/// `buyer_lead_id` at most [`MAX_POST_TEXT_BYTES`]: what a post sent promises them (see
/// [`Journal::append_promising`](super::Journal::append_promising)).
pub fn post_promise(lead_id: &str, buyer: &str, campaign: &str, seller: &str) -> u64 {
    let result = RecordRef::PostResult {
        lead_id,
        buyer,
        accepted: false,
        reason: Some(""),
        response_us: 0,
        price_cents: 0,
        buyer_lead_id: Some(""),
    };
    let sale = RecordRef::Sale {
        lead_id,
        campaign,
        seller,
        buyer,
        price_cents: 0,
        payout_cents: 0,
        test: false,
    };
    // Strings over the length prefix's range are refused when written, not promised room.
    let len = |r: &RecordRef<'_>| r.encoded_len().unwrap_or(0) as u64;
    super::format::frame_len(len(&result) + 2 * MAX_POST_TEXT_BYTES as u64)
        + super::format::frame_len(len(&sale))
}

/// The most room (a whole frame) a lead's `LeadAnswered` takes, its unsold `reason` at most
/// [`MAX_POST_TEXT_BYTES`]: what a lead's first post sent promises it, since the answer of a
/// lead that sold belongs with its sales.
pub fn answer_promise(lead_id: &str, campaign: &str, seller: &str) -> u64 {
    let answered = RecordRef::LeadAnswered {
        lead_id,
        campaign,
        seller,
        status: LeadStatus::Sold,
        price_cents: 0,
        payout_cents: 0,
        elapsed_us: 0,
        bids: Some(0),
        reason: Some(""),
    };
    let len = answered.encoded_len().unwrap_or(0) as u64;
    super::format::frame_len(len + MAX_POST_TEXT_BYTES as u64)
}

/// Record type codes, as stored in the frame. Codes are never reused; readers skip codes they
/// do not know, so new types (ping holds, cap releases) can be added freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    /// A lead arrived and got a `lead_id`.
    LeadReceived = 1,
    /// A lead was refused for its content.
    Rejected = 2,
    /// A ping was sent to a buyer.
    PingSent = 3,
    /// A buyer's answer to a ping (or its absence).
    PingResult = 4,
    /// The auction closed with this ranking.
    AuctionClosed = 5,
    /// The full lead was posted to a buyer.
    PostSent = 6,
    /// A buyer's answer to a post.
    PostResult = 7,
    /// A buyer bought the lead.
    Sale = 8,
    /// The seller was answered: the lead's final record.
    LeadAnswered = 9,
    /// A seller's `/v1/ping` was answered: the bids held for its post, or none.
    PingAnswered = 10,
    /// A start found the lead left unsettled by the last stop and reported it.
    Recovered = 11,
}

impl RecordType {
    /// The type for a stored code, `None` for codes this build does not know.
    pub fn from_code(code: u8) -> Option<RecordType> {
        Some(match code {
            1 => RecordType::LeadReceived,
            2 => RecordType::Rejected,
            3 => RecordType::PingSent,
            4 => RecordType::PingResult,
            5 => RecordType::AuctionClosed,
            6 => RecordType::PostSent,
            7 => RecordType::PostResult,
            8 => RecordType::Sale,
            9 => RecordType::LeadAnswered,
            10 => RecordType::PingAnswered,
            11 => RecordType::Recovered,
            _ => return None,
        })
    }

    /// The snake_case name used by `journal export`.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::LeadReceived => "lead_received",
            RecordType::Rejected => "rejected",
            RecordType::PingSent => "ping_sent",
            RecordType::PingResult => "ping_result",
            RecordType::AuctionClosed => "auction_closed",
            RecordType::PostSent => "post_sent",
            RecordType::PostResult => "post_result",
            RecordType::Sale => "sale",
            RecordType::LeadAnswered => "lead_answered",
            RecordType::PingAnswered => "ping_answered",
            RecordType::Recovered => "recovered",
        }
    }
}

/// What a buyer's ping produced. Generic over the string type so the borrowed (append) and
/// owned (decoded) records share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome<S> {
    /// A bid of `cents`, with the buyer's optional bid id to quote on the post.
    Bid {
        /// The bid, in cents, rounded down.
        cents: Cents,
        /// The buyer's id for this bid, if it gave one.
        bid_id: Option<S>,
    },
    /// An explicit no-bid (`{"bid": 0}`, `null`, 204).
    NoBid,
    /// No answer before the auction's deadline.
    Timeout,
    /// A transport or HTTP error.
    Error,
    /// An answer that could not be understood (unparsable, negative, ...).
    Invalid,
}

impl<S> PingOutcome<S> {
    /// The snake_case name used by `journal export`.
    pub fn name(&self) -> &'static str {
        match self {
            PingOutcome::Bid { .. } => "bid",
            PingOutcome::NoBid => "no_bid",
            PingOutcome::Timeout => "timeout",
            PingOutcome::Error => "error",
            PingOutcome::Invalid => "invalid",
        }
    }
}

/// A lead's final status as answered to the seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadStatus {
    /// One or more buyers bought it.
    Sold,
    /// No acceptable bid, or every post was rejected.
    Unsold,
}

impl LeadStatus {
    /// The snake_case name used on the wire and by `journal export`.
    pub fn name(self) -> &'static str {
        match self {
            LeadStatus::Sold => "sold",
            LeadStatus::Unsold => "unsold",
        }
    }
}

/// Which seller endpoint a received lead came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadFlow {
    /// `POST /v1/leads`: auctioned and sold at once.
    Lead,
    /// `POST /v1/ping`: auctioned, the bids held for a post.
    Ping,
    /// `POST /v1/post`: the full lead of an earlier ping, sold to its held bids.
    Post,
}

impl LeadFlow {
    /// The snake_case name used by `journal export`.
    pub fn name(self) -> &'static str {
        match self {
            LeadFlow::Lead => "lead",
            LeadFlow::Ping => "ping",
            LeadFlow::Post => "post",
        }
    }

    /// Its code in a record's bytes.
    pub fn code(self) -> u8 {
        match self {
            LeadFlow::Lead => 0,
            LeadFlow::Ping => 1,
            LeadFlow::Post => 2,
        }
    }
}

/// What a start found unsettled about a lead the last stop cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unsettled {
    /// A post was out, its answer never journaled: the buyer may have taken the consumer.
    /// Counted against the buyer's caps and budget; no money booked.
    PostUnanswered,
    /// A buyer bought the lead but its seller was never answered. Counted as sold in the P&L.
    SellerUnanswered,
    /// The lead was in its auction, never posted to a buyer nor answered: nobody has it, and
    /// its seller may send it again (it is no duplicate). Reported once, by the start after.
    NeverPosted,
    /// The lead has no answer in the journal, and the start that found it also found damage
    /// and cut the journal: its posts, sales or answer may have been in what was lost, so
    /// whether a buyer has it is not known. Its posts count against the buyers' caps; it
    /// stays a duplicate; the operator settles it.
    HistoryLost,
}

impl Unsettled {
    /// The snake_case name used by `journal export`.
    pub fn name(self) -> &'static str {
        match self {
            Unsettled::PostUnanswered => "post_unanswered",
            Unsettled::SellerUnanswered => "seller_unanswered",
            Unsettled::NeverPosted => "never_posted",
            Unsettled::HistoryLost => "history_lost",
        }
    }

    fn code(self) -> u8 {
        match self {
            Unsettled::PostUnanswered => 1,
            Unsettled::SellerUnanswered => 2,
            Unsettled::NeverPosted => 3,
            Unsettled::HistoryLost => 4,
        }
    }

    fn from_code(code: u8) -> Option<Unsettled> {
        match code {
            1 => Some(Unsettled::PostUnanswered),
            2 => Some(Unsettled::SellerUnanswered),
            3 => Some(Unsettled::NeverPosted),
            4 => Some(Unsettled::HistoryLost),
            _ => None,
        }
    }
}

/// A record to append, borrowing everything it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordRef<'a> {
    /// See [`Record::LeadReceived`].
    LeadReceived {
        lead_id: &'a str,
        seller: &'a str,
        campaign: &'a str,
        source: Option<&'a str>,
        test: bool,
        lead_json: &'a [u8],
        /// `None` only to copy a record written before the field existed.
        flow: Option<LeadFlow>,
        /// The request's `Idempotency-Key` header, when it had one (written after `flow`,
        /// so only with it).
        idempotency_key: Option<&'a str>,
    },
    /// See [`Record::Rejected`].
    Rejected {
        lead_id: &'a str,
        seller: &'a str,
        campaign: &'a str,
        http_status: u16,
        code: &'a str,
        field: Option<&'a str>,
        /// The error's message as answered (written last: absent from older records).
        message: Option<&'a str>,
    },
    /// See [`Record::PingSent`].
    PingSent { lead_id: &'a str, buyer: &'a str },
    /// See [`Record::PingResult`].
    PingResult {
        lead_id: &'a str,
        buyer: &'a str,
        outcome: PingOutcomeRef<'a>,
        reason: Option<&'a str>,
        response_us: u64,
    },
    /// See [`Record::AuctionClosed`].
    AuctionClosed {
        lead_id: &'a str,
        bids: u32,
        ranked: &'a [(&'a str, Cents)],
    },
    /// See [`Record::PostSent`].
    PostSent {
        lead_id: &'a str,
        buyer: &'a str,
        price_cents: Cents,
    },
    /// See [`Record::PostResult`].
    PostResult {
        lead_id: &'a str,
        buyer: &'a str,
        accepted: bool,
        reason: Option<&'a str>,
        response_us: u64,
        price_cents: Cents,
        buyer_lead_id: Option<&'a str>,
    },
    /// See [`Record::Sale`].
    Sale {
        lead_id: &'a str,
        campaign: &'a str,
        seller: &'a str,
        buyer: &'a str,
        price_cents: Cents,
        payout_cents: Cents,
        test: bool,
    },
    /// See [`Record::LeadAnswered`].
    LeadAnswered {
        lead_id: &'a str,
        campaign: &'a str,
        seller: &'a str,
        status: LeadStatus,
        price_cents: Cents,
        payout_cents: Cents,
        elapsed_us: u64,
        /// The answer's `bids`; `None` only to copy a record written before the field.
        bids: Option<u32>,
        /// The answer's unsold `reason` (written with `bids`).
        reason: Option<&'a str>,
    },
    /// See [`Record::PingAnswered`].
    PingAnswered {
        lead_id: &'a str,
        campaign: &'a str,
        seller: &'a str,
        payout_cents: Cents,
        hold_ms: u64,
        held: &'a [(&'a str, Cents, Option<&'a str>)],
        /// The payout rule of the offer; `None` for a no-bid.
        terms: Option<PayoutTerms>,
    },
    /// See [`Record::Recovered`].
    Recovered { lead_id: &'a str, kind: Unsettled },
}

/// The seller's payout rule an offer was made under (a `PingAnswered`'s), so the post of a
/// ping held across a restart pays what was offered even if the config changed meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutTerms {
    /// Basis points (1/10,000) of the price.
    ShareBp(u32),
    /// A fixed amount per sold lead.
    Fixed(Cents),
}

/// A `Sale`'s trailing flag: the sale of a test lead.
const SALE_TEST: u8 = 1;

const TERMS_SHARE: u8 = 1;
const TERMS_FIXED: u8 = 2;

/// A ping outcome borrowing its bid id.
pub type PingOutcomeRef<'a> = PingOutcome<&'a str>;

/// A decoded record, owning its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A lead arrived and got a `lead_id`: who sent it and the lead and consent exactly as
    /// received (the evidence in a dispute).
    LeadReceived {
        lead_id: String,
        seller: String,
        campaign: String,
        source: Option<String>,
        test: bool,
        lead_json: Vec<u8>,
        /// The endpoint it came in on; `None` in records written before the field existed
        /// (a body naming a `ping_id` was then a post, any other a lead or a ping).
        flow: Option<LeadFlow>,
        /// The request's `Idempotency-Key` header: a seller's retry of the same request
        /// under it is answered with this lead's answer. `None` without one, and in records
        /// written before the field existed.
        idempotency_key: Option<String>,
    },
    /// A lead refused for its content, with the HTTP status and error code answered.
    Rejected {
        lead_id: String,
        seller: String,
        campaign: String,
        http_status: u16,
        code: String,
        field: Option<String>,
        /// The error's message as answered; `None` in records written before it was kept.
        message: Option<String>,
    },
    /// A ping was sent to `buyer`.
    PingSent { lead_id: String, buyer: String },
    /// The buyer's answer to a ping, with why it was not a bid and how long it took.
    PingResult {
        lead_id: String,
        buyer: String,
        outcome: PingOutcome<String>,
        reason: Option<String>,
        response_us: u64,
    },
    /// The auction closed: how many bids arrived and the acceptable ones in rank order.
    AuctionClosed {
        lead_id: String,
        bids: u32,
        ranked: Vec<(String, Cents)>,
    },
    /// The full lead was posted to `buyer` at `price_cents`.
    PostSent {
        lead_id: String,
        buyer: String,
        price_cents: Cents,
    },
    /// The buyer's answer to a post.
    PostResult {
        lead_id: String,
        buyer: String,
        accepted: bool,
        reason: Option<String>,
        response_us: u64,
        price_cents: Cents,
        buyer_lead_id: Option<String>,
    },
    /// A buyer bought the lead: one record per buyer. Caps and budgets are rebuilt from these,
    /// windowed by the record's timestamp.
    Sale {
        lead_id: String,
        campaign: String,
        seller: String,
        buyer: String,
        price_cents: Cents,
        payout_cents: Cents,
        /// A test lead's sale: the price and payout it would have had, moving no money
        /// (written as a trailing flag byte, only when set).
        test: bool,
    },
    /// The lead's final record, appended before the seller's answer is written: with the
    /// `sale` records before it, the seller's answer (`GET /v1/leads/{id}` reads it back).
    LeadAnswered {
        lead_id: String,
        campaign: String,
        seller: String,
        status: LeadStatus,
        price_cents: Cents,
        payout_cents: Cents,
        elapsed_us: u64,
        /// The answer's `bids` (appended later: `None` in older records).
        bids: Option<u32>,
        /// The answer's unsold `reason` (appended with `bids`).
        reason: Option<String>,
    },
    /// A `/v1/ping`'s final record, appended before the seller's answer is written: the offer
    /// (`payout_cents`, good for `hold_ms`) and the bids held for the post as (buyer, cents,
    /// bid id), best first; none for a no-bid. A restart holds them again until they expire.
    PingAnswered {
        lead_id: String,
        campaign: String,
        seller: String,
        payout_cents: Cents,
        hold_ms: u64,
        held: Vec<(String, Cents, Option<String>)>,
        /// The payout rule of the offer (appended later: `None` in older records and no-bids).
        terms: Option<PayoutTerms>,
    },
    /// Written by the start that found the lead unsettled (and warned of it), so later starts
    /// still count it but do not warn again. The operator settles it outside the exchange.
    Recovered { lead_id: String, kind: Unsettled },
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame's type code is not one this build knows (a newer record type): skip it.
    UnknownType(u8),
    /// The payload version is newer than this build understands: skip it.
    UnsupportedVersion(u8),
    /// The payload ends before the named field.
    Truncated(&'static str),
    /// The named string field is not UTF-8.
    BadUtf8(&'static str),
    /// The named enum, option or boolean field has a value outside its range.
    BadTag(&'static str),
}

impl DecodeError {
    /// Whether the record is from a newer writer (skipped silently) rather than malformed.
    pub fn is_newer(&self) -> bool {
        match self {
            DecodeError::UnknownType(_) => true,
            // An older version than any build wrote (0) is damage, not the future.
            DecodeError::UnsupportedVersion(v) => *v > PAYLOAD_VERSION,
            _ => false,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownType(t) => write!(f, "unknown record type {t}"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported payload version {v}"),
            DecodeError::Truncated(field) => write!(f, "payload truncated at {field}"),
            DecodeError::BadUtf8(field) => write!(f, "field {field} is not UTF-8"),
            DecodeError::BadTag(field) => write!(f, "field {field} has an invalid value"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Size accumulator that checks every length prefix's range.
struct Size(usize);

impl Size {
    fn fixed(&mut self, n: usize) {
        self.0 += n;
    }
    fn str(&mut self, field: &'static str, s: &str) -> Result<(), JournalError> {
        if s.len() > MAX_STR_BYTES {
            return Err(JournalError::FieldTooLong {
                field,
                len: s.len(),
            });
        }
        self.0 += 2 + s.len();
        Ok(())
    }
    fn opt_str(&mut self, field: &'static str, s: Option<&str>) -> Result<(), JournalError> {
        self.0 += 1;
        match s {
            Some(s) => self.str(field, s),
            None => Ok(()),
        }
    }
}

/// Writer into the exact-size payload region. Sizes are computed first, so the writes always
/// fit; should they not, the overflow is reported rather than panicking.
struct Out<'b> {
    buf: &'b mut [u8],
    pos: usize,
    overflow: bool,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.pos += b.len();
            }
            None => self.overflow = true,
        }
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    fn str(&mut self, s: &str) {
        self.u16(s.len() as u16);
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

impl<'a> RecordRef<'a> {
    /// The record's type code.
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordRef::LeadReceived { .. } => RecordType::LeadReceived,
            RecordRef::Rejected { .. } => RecordType::Rejected,
            RecordRef::PingSent { .. } => RecordType::PingSent,
            RecordRef::PingResult { .. } => RecordType::PingResult,
            RecordRef::AuctionClosed { .. } => RecordType::AuctionClosed,
            RecordRef::PostSent { .. } => RecordType::PostSent,
            RecordRef::PostResult { .. } => RecordType::PostResult,
            RecordRef::Sale { .. } => RecordType::Sale,
            RecordRef::LeadAnswered { .. } => RecordType::LeadAnswered,
            RecordRef::PingAnswered { .. } => RecordType::PingAnswered,
            RecordRef::Recovered { .. } => RecordType::Recovered,
        }
    }

    /// Exact payload size, checking that every field fits its length prefix.
    pub fn encoded_len(&self) -> Result<usize, JournalError> {
        let mut n = Size(1);
        match *self {
            RecordRef::LeadReceived {
                lead_id,
                seller,
                campaign,
                source,
                test: _,
                lead_json,
                flow,
                idempotency_key,
            } => {
                n.str("lead_id", lead_id)?;
                n.str("seller", seller)?;
                n.str("campaign", campaign)?;
                n.opt_str("source", source)?;
                n.fixed(1);
                if lead_json.len() > u32::MAX as usize {
                    return Err(JournalError::FieldTooLong {
                        field: "lead_json",
                        len: lead_json.len(),
                    });
                }
                n.fixed(4 + lead_json.len() + usize::from(flow.is_some()));
                if let (Some(_), Some(key)) = (flow, idempotency_key) {
                    n.str("idempotency_key", key)?;
                }
            }
            RecordRef::Rejected {
                lead_id,
                seller,
                campaign,
                http_status: _,
                code,
                field,
                message,
            } => {
                n.str("lead_id", lead_id)?;
                n.str("seller", seller)?;
                n.str("campaign", campaign)?;
                n.fixed(2);
                n.str("code", code)?;
                n.opt_str("field", field)?;
                n.opt_str("message", message)?;
            }
            RecordRef::PingSent { lead_id, buyer } => {
                n.str("lead_id", lead_id)?;
                n.str("buyer", buyer)?;
            }
            RecordRef::PingResult {
                lead_id,
                buyer,
                ref outcome,
                reason,
                response_us: _,
            } => {
                n.str("lead_id", lead_id)?;
                n.str("buyer", buyer)?;
                n.fixed(1);
                if let PingOutcome::Bid { cents: _, bid_id } = outcome {
                    n.fixed(8);
                    n.opt_str("bid_id", *bid_id)?;
                }
                n.opt_str("reason", reason)?;
                n.fixed(8);
            }
            RecordRef::AuctionClosed {
                lead_id,
                bids: _,
                ranked,
            } => {
                n.str("lead_id", lead_id)?;
                n.fixed(4);
                if ranked.len() > MAX_RANKED {
                    return Err(JournalError::FieldTooLong {
                        field: "ranked",
                        len: ranked.len(),
                    });
                }
                n.fixed(2);
                for (buyer, _) in ranked {
                    n.str("ranked.buyer", buyer)?;
                    n.fixed(8);
                }
            }
            RecordRef::PostSent {
                lead_id,
                buyer,
                price_cents: _,
            } => {
                n.str("lead_id", lead_id)?;
                n.str("buyer", buyer)?;
                n.fixed(8);
            }
            RecordRef::PostResult {
                lead_id,
                buyer,
                accepted: _,
                reason,
                response_us: _,
                price_cents: _,
                buyer_lead_id,
            } => {
                n.str("lead_id", lead_id)?;
                n.str("buyer", buyer)?;
                n.fixed(1);
                n.opt_str("reason", reason)?;
                n.fixed(16);
                n.opt_str("buyer_lead_id", buyer_lead_id)?;
            }
            RecordRef::Sale {
                lead_id,
                campaign,
                seller,
                buyer,
                price_cents: _,
                payout_cents: _,
                test,
            } => {
                n.str("lead_id", lead_id)?;
                n.str("campaign", campaign)?;
                n.str("seller", seller)?;
                n.str("buyer", buyer)?;
                n.fixed(16);
                if test {
                    n.fixed(1);
                }
            }
            RecordRef::LeadAnswered {
                lead_id,
                campaign,
                seller,
                bids,
                reason,
                ..
            } => {
                n.str("lead_id", lead_id)?;
                n.str("campaign", campaign)?;
                n.str("seller", seller)?;
                n.fixed(1 + 8 + 8 + 8);
                if bids.is_some() {
                    n.fixed(4);
                    n.opt_str("reason", reason)?;
                }
            }
            RecordRef::PingAnswered {
                lead_id,
                campaign,
                seller,
                held,
                terms,
                ..
            } => {
                n.str("lead_id", lead_id)?;
                n.str("campaign", campaign)?;
                n.str("seller", seller)?;
                n.fixed(8 + 8);
                if held.len() > MAX_RANKED {
                    return Err(JournalError::FieldTooLong {
                        field: "held",
                        len: held.len(),
                    });
                }
                n.fixed(2);
                for (buyer, _, bid_id) in held {
                    n.str("held.buyer", buyer)?;
                    n.fixed(8);
                    n.opt_str("held.bid_id", *bid_id)?;
                }
                if terms.is_some() {
                    n.fixed(1 + 8);
                }
            }
            RecordRef::Recovered { lead_id, .. } => {
                n.str("lead_id", lead_id)?;
                n.fixed(1);
            }
        }
        Ok(n.0)
    }

    /// Encode into `out`, which must be exactly [`encoded_len`](Self::encoded_len) bytes.
    /// Returns false (with `out` partly written) if it is not.
    pub fn encode_into(&self, out: &mut [u8]) -> bool {
        let expected = out.len();
        let mut o = Out {
            buf: out,
            pos: 0,
            overflow: false,
        };
        o.u8(PAYLOAD_VERSION);
        match *self {
            RecordRef::LeadReceived {
                lead_id,
                seller,
                campaign,
                source,
                test,
                lead_json,
                flow,
                idempotency_key,
            } => {
                o.str(lead_id);
                o.str(seller);
                o.str(campaign);
                o.opt_str(source);
                o.bool(test);
                o.u32(lead_json.len() as u32);
                o.bytes(lead_json);
                if let Some(flow) = flow {
                    o.u8(flow.code());
                    if let Some(key) = idempotency_key {
                        o.str(key);
                    }
                }
            }
            RecordRef::Rejected {
                lead_id,
                seller,
                campaign,
                http_status,
                code,
                field,
                message,
            } => {
                o.str(lead_id);
                o.str(seller);
                o.str(campaign);
                o.u16(http_status);
                o.str(code);
                o.opt_str(field);
                o.opt_str(message);
            }
            RecordRef::PingSent { lead_id, buyer } => {
                o.str(lead_id);
                o.str(buyer);
            }
            RecordRef::PingResult {
                lead_id,
                buyer,
                ref outcome,
                reason,
                response_us,
            } => {
                o.str(lead_id);
                o.str(buyer);
                match *outcome {
                    PingOutcome::Bid { cents, bid_id } => {
                        o.u8(OUTCOME_BID);
                        o.i64(cents);
                        o.opt_str(bid_id);
                    }
                    PingOutcome::NoBid => o.u8(OUTCOME_NO_BID),
                    PingOutcome::Timeout => o.u8(OUTCOME_TIMEOUT),
                    PingOutcome::Error => o.u8(OUTCOME_ERROR),
                    PingOutcome::Invalid => o.u8(OUTCOME_INVALID),
                }
                o.opt_str(reason);
                o.u64(response_us);
            }
            RecordRef::AuctionClosed {
                lead_id,
                bids,
                ranked,
            } => {
                o.str(lead_id);
                o.u32(bids);
                o.u16(ranked.len() as u16);
                for (buyer, cents) in ranked {
                    o.str(buyer);
                    o.i64(*cents);
                }
            }
            RecordRef::PostSent {
                lead_id,
                buyer,
                price_cents,
            } => {
                o.str(lead_id);
                o.str(buyer);
                o.i64(price_cents);
            }
            RecordRef::PostResult {
                lead_id,
                buyer,
                accepted,
                reason,
                response_us,
                price_cents,
                buyer_lead_id,
            } => {
                o.str(lead_id);
                o.str(buyer);
                o.bool(accepted);
                o.opt_str(reason);
                o.u64(response_us);
                o.i64(price_cents);
                o.opt_str(buyer_lead_id);
            }
            RecordRef::Sale {
                lead_id,
                campaign,
                seller,
                buyer,
                price_cents,
                payout_cents,
                test,
            } => {
                o.str(lead_id);
                o.str(campaign);
                o.str(seller);
                o.str(buyer);
                o.i64(price_cents);
                o.i64(payout_cents);
                if test {
                    o.u8(SALE_TEST);
                }
            }
            RecordRef::LeadAnswered {
                lead_id,
                campaign,
                seller,
                status,
                price_cents,
                payout_cents,
                elapsed_us,
                bids,
                reason,
            } => {
                o.str(lead_id);
                o.str(campaign);
                o.str(seller);
                o.u8(match status {
                    LeadStatus::Sold => STATUS_SOLD,
                    LeadStatus::Unsold => STATUS_UNSOLD,
                });
                o.i64(price_cents);
                o.i64(payout_cents);
                o.u64(elapsed_us);
                if let Some(bids) = bids {
                    o.u32(bids);
                    o.opt_str(reason);
                }
            }
            RecordRef::PingAnswered {
                lead_id,
                campaign,
                seller,
                payout_cents,
                hold_ms,
                held,
                terms,
            } => {
                o.str(lead_id);
                o.str(campaign);
                o.str(seller);
                o.i64(payout_cents);
                o.u64(hold_ms);
                o.u16(held.len() as u16);
                for (buyer, cents, bid_id) in held {
                    o.str(buyer);
                    o.i64(*cents);
                    o.opt_str(*bid_id);
                }
                match terms {
                    Some(PayoutTerms::ShareBp(bp)) => {
                        o.u8(TERMS_SHARE);
                        o.i64(i64::from(bp));
                    }
                    Some(PayoutTerms::Fixed(cents)) => {
                        o.u8(TERMS_FIXED);
                        o.i64(cents);
                    }
                    None => {}
                }
            }
            RecordRef::Recovered { lead_id, kind } => {
                o.str(lead_id);
                o.u8(kind.code());
            }
        }
        !o.overflow && o.pos == expected
    }

    /// Encode into a new vector (for tests and tools; the journal encodes in place).
    pub fn to_bytes(&self) -> Result<Vec<u8>, JournalError> {
        let mut v = vec![0u8; self.encoded_len()?];
        if self.encode_into(&mut v) {
            Ok(v)
        } else {
            Err(JournalError::FieldTooLong {
                field: "payload",
                len: v.len(),
            })
        }
    }

    /// An owned copy.
    pub fn to_record(&self) -> Record {
        let s = |v: &str| v.to_string();
        let os = |v: Option<&str>| v.map(str::to_string);
        match *self {
            RecordRef::LeadReceived {
                lead_id,
                seller,
                campaign,
                source,
                test,
                lead_json,
                flow,
                idempotency_key,
            } => Record::LeadReceived {
                lead_id: s(lead_id),
                seller: s(seller),
                campaign: s(campaign),
                source: os(source),
                test,
                lead_json: lead_json.to_vec(),
                flow,
                idempotency_key: os(idempotency_key),
            },
            RecordRef::Rejected {
                lead_id,
                seller,
                campaign,
                http_status,
                code,
                field,
                message,
            } => Record::Rejected {
                lead_id: s(lead_id),
                seller: s(seller),
                campaign: s(campaign),
                http_status,
                code: s(code),
                field: os(field),
                message: os(message),
            },
            RecordRef::PingSent { lead_id, buyer } => Record::PingSent {
                lead_id: s(lead_id),
                buyer: s(buyer),
            },
            RecordRef::PingResult {
                lead_id,
                buyer,
                ref outcome,
                reason,
                response_us,
            } => Record::PingResult {
                lead_id: s(lead_id),
                buyer: s(buyer),
                outcome: match *outcome {
                    PingOutcome::Bid { cents, bid_id } => PingOutcome::Bid {
                        cents,
                        bid_id: os(bid_id),
                    },
                    PingOutcome::NoBid => PingOutcome::NoBid,
                    PingOutcome::Timeout => PingOutcome::Timeout,
                    PingOutcome::Error => PingOutcome::Error,
                    PingOutcome::Invalid => PingOutcome::Invalid,
                },
                reason: os(reason),
                response_us,
            },
            RecordRef::AuctionClosed {
                lead_id,
                bids,
                ranked,
            } => Record::AuctionClosed {
                lead_id: s(lead_id),
                bids,
                ranked: ranked.iter().map(|(b, c)| (s(b), *c)).collect(),
            },
            RecordRef::PostSent {
                lead_id,
                buyer,
                price_cents,
            } => Record::PostSent {
                lead_id: s(lead_id),
                buyer: s(buyer),
                price_cents,
            },
            RecordRef::PostResult {
                lead_id,
                buyer,
                accepted,
                reason,
                response_us,
                price_cents,
                buyer_lead_id,
            } => Record::PostResult {
                lead_id: s(lead_id),
                buyer: s(buyer),
                accepted,
                reason: os(reason),
                response_us,
                price_cents,
                buyer_lead_id: os(buyer_lead_id),
            },
            RecordRef::Sale {
                lead_id,
                campaign,
                seller,
                buyer,
                price_cents,
                payout_cents,
                test,
            } => Record::Sale {
                lead_id: s(lead_id),
                campaign: s(campaign),
                seller: s(seller),
                buyer: s(buyer),
                price_cents,
                payout_cents,
                test,
            },
            RecordRef::LeadAnswered {
                lead_id,
                campaign,
                seller,
                status,
                price_cents,
                payout_cents,
                elapsed_us,
                bids,
                reason,
            } => Record::LeadAnswered {
                lead_id: s(lead_id),
                campaign: s(campaign),
                seller: s(seller),
                status,
                price_cents,
                payout_cents,
                elapsed_us,
                bids,
                reason: os(reason),
            },
            RecordRef::PingAnswered {
                lead_id,
                campaign,
                seller,
                payout_cents,
                hold_ms,
                held,
                terms,
            } => Record::PingAnswered {
                lead_id: s(lead_id),
                campaign: s(campaign),
                seller: s(seller),
                payout_cents,
                hold_ms,
                held: held.iter().map(|&(b, c, id)| (s(b), c, os(id))).collect(),
                terms,
            },
            RecordRef::Recovered { lead_id, kind } => Record::Recovered {
                lead_id: s(lead_id),
                kind,
            },
        }
    }
}

const OUTCOME_BID: u8 = 0;
const OUTCOME_NO_BID: u8 = 1;
const OUTCOME_TIMEOUT: u8 = 2;
const OUTCOME_ERROR: u8 = 3;
const OUTCOME_INVALID: u8 = 4;
const STATUS_SOLD: u8 = 0;
const STATUS_UNSOLD: u8 = 1;

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reader over a payload; every getter names its field so errors say where decoding stopped.
struct In<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(field))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(field))?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadTag(field)),
        }
    }
    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(field)? as usize;
        let b = self.take(n, field)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError::BadUtf8(field))
    }
    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.str(field)?)),
            _ => Err(DecodeError::BadTag(field)),
        }
    }
}

/// The lead id a payload of this version names, read without decoding the record: every
/// record's payload begins with the version byte and then its lead id. `None` for a payload of
/// another version (or too short), which only a full decode can judge.
pub fn payload_lead_id(payload: &[u8]) -> Option<&[u8]> {
    if payload.first() != Some(&PAYLOAD_VERSION) {
        return None;
    }
    let n = u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]) as usize;
    payload.get(3..3 + n)
}

impl Record {
    /// Decode a payload of the given type code.
    pub fn decode(type_code: u8, payload: &[u8]) -> Result<Record, DecodeError> {
        let ty = RecordType::from_code(type_code).ok_or(DecodeError::UnknownType(type_code))?;
        let mut i = In {
            buf: payload,
            pos: 0,
        };
        let version = i.u8("version")?;
        if version != PAYLOAD_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok(match ty {
            RecordType::LeadReceived => {
                let lead_id = i.str("lead_id")?;
                let seller = i.str("seller")?;
                let campaign = i.str("campaign")?;
                let source = i.opt_str("source")?;
                let test = i.bool("test")?;
                let lead_json = {
                    let n = i.u32("lead_json")? as usize;
                    i.take(n, "lead_json")?.to_vec()
                };
                // Appended later: absent from older records.
                let flow = if i.pos < payload.len() {
                    Some(match i.u8("flow")? {
                        0 => LeadFlow::Lead,
                        1 => LeadFlow::Ping,
                        2 => LeadFlow::Post,
                        _ => return Err(DecodeError::BadTag("flow")),
                    })
                } else {
                    None
                };
                let idempotency_key = if i.pos < payload.len() {
                    Some(i.str("idempotency_key")?)
                } else {
                    None
                };
                Record::LeadReceived {
                    lead_id,
                    seller,
                    campaign,
                    source,
                    test,
                    lead_json,
                    flow,
                    idempotency_key,
                }
            }
            RecordType::Rejected => Record::Rejected {
                lead_id: i.str("lead_id")?,
                seller: i.str("seller")?,
                campaign: i.str("campaign")?,
                http_status: i.u16("http_status")?,
                code: i.str("code")?,
                field: i.opt_str("field")?,
                // Appended later: absent from older records.
                message: if i.pos < payload.len() {
                    i.opt_str("message")?
                } else {
                    None
                },
            },
            RecordType::PingSent => Record::PingSent {
                lead_id: i.str("lead_id")?,
                buyer: i.str("buyer")?,
            },
            RecordType::PingResult => Record::PingResult {
                lead_id: i.str("lead_id")?,
                buyer: i.str("buyer")?,
                outcome: match i.u8("outcome")? {
                    OUTCOME_BID => PingOutcome::Bid {
                        cents: i.i64("bid")?,
                        bid_id: i.opt_str("bid_id")?,
                    },
                    OUTCOME_NO_BID => PingOutcome::NoBid,
                    OUTCOME_TIMEOUT => PingOutcome::Timeout,
                    OUTCOME_ERROR => PingOutcome::Error,
                    OUTCOME_INVALID => PingOutcome::Invalid,
                    _ => return Err(DecodeError::BadTag("outcome")),
                },
                reason: i.opt_str("reason")?,
                response_us: i.u64("response_us")?,
            },
            RecordType::AuctionClosed => {
                let lead_id = i.str("lead_id")?;
                let bids = i.u32("bids")?;
                let n = i.u16("ranked")? as usize;
                // Each entry takes at least 10 bytes: refuse counts the payload cannot hold
                // before reserving memory for them.
                if n.saturating_mul(10) > payload.len().saturating_sub(i.pos) {
                    return Err(DecodeError::Truncated("ranked"));
                }
                let mut ranked = Vec::with_capacity(n);
                for _ in 0..n {
                    ranked.push((i.str("ranked.buyer")?, i.i64("ranked.price")?));
                }
                Record::AuctionClosed {
                    lead_id,
                    bids,
                    ranked,
                }
            }
            RecordType::PostSent => Record::PostSent {
                lead_id: i.str("lead_id")?,
                buyer: i.str("buyer")?,
                price_cents: i.i64("price")?,
            },
            RecordType::PostResult => Record::PostResult {
                lead_id: i.str("lead_id")?,
                buyer: i.str("buyer")?,
                accepted: i.bool("accepted")?,
                reason: i.opt_str("reason")?,
                response_us: i.u64("response_us")?,
                price_cents: i.i64("price")?,
                buyer_lead_id: i.opt_str("buyer_lead_id")?,
            },
            RecordType::Sale => Record::Sale {
                lead_id: i.str("lead_id")?,
                campaign: i.str("campaign")?,
                seller: i.str("seller")?,
                buyer: i.str("buyer")?,
                price_cents: i.i64("price")?,
                payout_cents: i.i64("payout")?,
                // Absent in a real sale (and in records written before the flag existed).
                test: if i.pos < payload.len() {
                    match i.u8("sale.flags")? {
                        SALE_TEST => true,
                        _ => return Err(DecodeError::BadTag("sale.flags")),
                    }
                } else {
                    false
                },
            },
            RecordType::LeadAnswered => {
                let lead_id = i.str("lead_id")?;
                let campaign = i.str("campaign")?;
                let seller = i.str("seller")?;
                let status = match i.u8("status")? {
                    STATUS_SOLD => LeadStatus::Sold,
                    STATUS_UNSOLD => LeadStatus::Unsold,
                    _ => return Err(DecodeError::BadTag("status")),
                };
                let price_cents = i.i64("price")?;
                let payout_cents = i.i64("payout")?;
                let elapsed_us = i.u64("elapsed_us")?;
                // Appended later, together: absent from older records.
                let (bids, reason) = if i.pos < payload.len() {
                    (Some(i.u32("bids")?), i.opt_str("reason")?)
                } else {
                    (None, None)
                };
                Record::LeadAnswered {
                    lead_id,
                    campaign,
                    seller,
                    status,
                    price_cents,
                    payout_cents,
                    elapsed_us,
                    bids,
                    reason,
                }
            }
            RecordType::PingAnswered => {
                let lead_id = i.str("lead_id")?;
                let campaign = i.str("campaign")?;
                let seller = i.str("seller")?;
                let payout_cents = i.i64("payout")?;
                let hold_ms = i.u64("hold_ms")?;
                let n = i.u16("held")? as usize;
                // Each entry takes at least 11 bytes: refuse counts the payload cannot hold.
                if n.saturating_mul(11) > payload.len().saturating_sub(i.pos) {
                    return Err(DecodeError::Truncated("held"));
                }
                let mut held = Vec::with_capacity(n);
                for _ in 0..n {
                    held.push((
                        i.str("held.buyer")?,
                        i.i64("held.price")?,
                        i.opt_str("held.bid_id")?,
                    ));
                }
                let terms = if i.pos < payload.len() {
                    let tag = i.u8("terms")?;
                    let value = i.i64("terms.value")?;
                    Some(match tag {
                        TERMS_SHARE => PayoutTerms::ShareBp(
                            u32::try_from(value).map_err(|_| DecodeError::BadTag("terms"))?,
                        ),
                        TERMS_FIXED => PayoutTerms::Fixed(value),
                        _ => return Err(DecodeError::BadTag("terms")),
                    })
                } else {
                    None
                };
                Record::PingAnswered {
                    lead_id,
                    campaign,
                    seller,
                    payout_cents,
                    hold_ms,
                    held,
                    terms,
                }
            }
            RecordType::Recovered => Record::Recovered {
                lead_id: i.str("lead_id")?,
                kind: Unsettled::from_code(i.u8("kind")?).ok_or(DecodeError::BadTag("kind"))?,
            },
        })
    }

    /// Call `f` with a borrowed view of this record, e.g. to append a decoded record again
    /// (a journal copy or repair tool). Allocates only for the lists of an `AuctionClosed` or
    /// a `PingAnswered`.
    pub fn with_ref<T>(&self, f: impl FnOnce(&RecordRef<'_>) -> T) -> T {
        let ranked_refs: Vec<(&str, Cents)>;
        let held_refs: Vec<(&str, Cents, Option<&str>)>;
        let r = match self {
            Record::LeadReceived {
                lead_id,
                seller,
                campaign,
                source,
                test,
                lead_json,
                flow,
                idempotency_key,
            } => RecordRef::LeadReceived {
                lead_id,
                seller,
                campaign,
                source: source.as_deref(),
                test: *test,
                lead_json,
                flow: *flow,
                idempotency_key: idempotency_key.as_deref(),
            },
            Record::Rejected {
                lead_id,
                seller,
                campaign,
                http_status,
                code,
                field,
                message,
            } => RecordRef::Rejected {
                lead_id,
                seller,
                campaign,
                http_status: *http_status,
                code,
                field: field.as_deref(),
                message: message.as_deref(),
            },
            Record::PingSent { lead_id, buyer } => RecordRef::PingSent { lead_id, buyer },
            Record::PingResult {
                lead_id,
                buyer,
                outcome,
                reason,
                response_us,
            } => RecordRef::PingResult {
                lead_id,
                buyer,
                outcome: match outcome {
                    PingOutcome::Bid { cents, bid_id } => PingOutcome::Bid {
                        cents: *cents,
                        bid_id: bid_id.as_deref(),
                    },
                    PingOutcome::NoBid => PingOutcome::NoBid,
                    PingOutcome::Timeout => PingOutcome::Timeout,
                    PingOutcome::Error => PingOutcome::Error,
                    PingOutcome::Invalid => PingOutcome::Invalid,
                },
                reason: reason.as_deref(),
                response_us: *response_us,
            },
            Record::AuctionClosed {
                lead_id,
                bids,
                ranked,
            } => {
                ranked_refs = ranked.iter().map(|(b, c)| (b.as_str(), *c)).collect();
                RecordRef::AuctionClosed {
                    lead_id,
                    bids: *bids,
                    ranked: &ranked_refs,
                }
            }
            Record::PostSent {
                lead_id,
                buyer,
                price_cents,
            } => RecordRef::PostSent {
                lead_id,
                buyer,
                price_cents: *price_cents,
            },
            Record::PostResult {
                lead_id,
                buyer,
                accepted,
                reason,
                response_us,
                price_cents,
                buyer_lead_id,
            } => RecordRef::PostResult {
                lead_id,
                buyer,
                accepted: *accepted,
                reason: reason.as_deref(),
                response_us: *response_us,
                price_cents: *price_cents,
                buyer_lead_id: buyer_lead_id.as_deref(),
            },
            Record::Sale {
                lead_id,
                campaign,
                seller,
                buyer,
                price_cents,
                payout_cents,
                test,
            } => RecordRef::Sale {
                lead_id,
                campaign,
                seller,
                buyer,
                price_cents: *price_cents,
                payout_cents: *payout_cents,
                test: *test,
            },
            Record::LeadAnswered {
                lead_id,
                campaign,
                seller,
                status,
                price_cents,
                payout_cents,
                elapsed_us,
                bids,
                reason,
            } => RecordRef::LeadAnswered {
                lead_id,
                campaign,
                seller,
                status: *status,
                price_cents: *price_cents,
                payout_cents: *payout_cents,
                elapsed_us: *elapsed_us,
                bids: *bids,
                reason: reason.as_deref(),
            },
            Record::PingAnswered {
                lead_id,
                campaign,
                seller,
                payout_cents,
                hold_ms,
                held,
                terms,
            } => {
                held_refs = held
                    .iter()
                    .map(|(b, c, id)| (b.as_str(), *c, id.as_deref()))
                    .collect();
                RecordRef::PingAnswered {
                    lead_id,
                    campaign,
                    seller,
                    payout_cents: *payout_cents,
                    hold_ms: *hold_ms,
                    held: &held_refs,
                    terms: *terms,
                }
            }
            Record::Recovered { lead_id, kind } => RecordRef::Recovered {
                lead_id,
                kind: *kind,
            },
        };
        f(&r)
    }

    /// The record's type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::LeadReceived { .. } => RecordType::LeadReceived,
            Record::Rejected { .. } => RecordType::Rejected,
            Record::PingSent { .. } => RecordType::PingSent,
            Record::PingResult { .. } => RecordType::PingResult,
            Record::AuctionClosed { .. } => RecordType::AuctionClosed,
            Record::PostSent { .. } => RecordType::PostSent,
            Record::PostResult { .. } => RecordType::PostResult,
            Record::Sale { .. } => RecordType::Sale,
            Record::LeadAnswered { .. } => RecordType::LeadAnswered,
            Record::PingAnswered { .. } => RecordType::PingAnswered,
            Record::Recovered { .. } => RecordType::Recovered,
        }
    }

    /// The lead this record belongs to (every record names one).
    pub fn lead_id(&self) -> &str {
        match self {
            Record::LeadReceived { lead_id, .. }
            | Record::Rejected { lead_id, .. }
            | Record::PingSent { lead_id, .. }
            | Record::PingResult { lead_id, .. }
            | Record::AuctionClosed { lead_id, .. }
            | Record::PostSent { lead_id, .. }
            | Record::PostResult { lead_id, .. }
            | Record::Sale { lead_id, .. }
            | Record::LeadAnswered { lead_id, .. }
            | Record::PingAnswered { lead_id, .. }
            | Record::Recovered { lead_id, .. } => lead_id,
        }
    }
}
