//! One event-loop thread: seller connections, buyer pools, leads and their timers.

use super::buyer::*;
use super::deadlines::Deadlines;
use super::idempotency::{self, Seen};
use super::lookup;
use super::seller_conns::{Answer, Ask, Letters, Place};
use super::slab::{Key, Slab};
use super::steps::{self, Step};
use super::timer::TimerFd;
use super::{Runtime, Shared};
use crate::auction::{Action, Auction, Params, PingOutcome, PostOutcome, Status};
use crate::caps::Reservation;
use crate::config::Snapshot;
use crate::config::{Endpoint, Method as Distribution, Scheme};
use crate::http::{self, Decoded, Limits, Method, RequestDecoder, RequestHead};
use crate::journal::{self, LeadStatus, Position, RecordRef};
use crate::lead::{self, AnswerSale, LeadRequest, Refusal};
use crate::stats::WorkerStats;
use chrono::Utc;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// The precise timer; seller tokens are even from 2, buyer tokens odd from 3.
const TIMER: Token = Token(usize::MAX);
/// Events handled per poll.
const EVENTS_CAPACITY: usize = 1024;

/// `GET /v1/leads/{id}` asks what became of a lead.
const LEAD_PATH: &str = "/v1/leads/";
/// Requests a seller may pipeline on one connection before the exchange stops reading from it.
pub const MAX_PIPELINED: usize = 32;
/// Answer bytes waiting for socket space on one seller connection beyond which no further
/// request of it is taken until they have left: a client that does not read its answers
/// cannot make the exchange queue them without end.
pub const MAX_SELLER_UNSENT_BYTES: usize = 256 * 1024;
/// Bytes read from a socket per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Deadlines closer than this are armed on the timerfd; farther ones use the poll timeout.
const PRECISE_TIMER_WITHIN: Duration = Duration::from_millis(2);
/// How often connections are swept for timeouts and pools topped up.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// Longest a worker waits, once asked to stop, for its leads in flight to be answered.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Leads in flight on one worker (a hard bound under `server.max_in_flight`).
const MAX_LEADS_PER_WORKER: usize = 1 << 20;
/// Buyer connections one worker may hold across all pools.
const MAX_BUYER_CONNS_PER_WORKER: usize = 1 << 16;
/// Seller connections one worker's slab may hold: any worker may hold them all, since
/// `server.max_connections` counts across workers (the slab grows with use; it reserves nothing).
const MAX_SELLER_CONNS_PER_WORKER: usize = crate::config::MAX_SELLER_CONNECTIONS;
/// New connections one worker keeps waiting, at the limit, while other workers are asked for a
/// place; beyond them a new one is refused at once.
const MAX_WAITING_FOR_PLACE: usize = 1024;
/// How long a new connection waits for another worker's answer (normally one loop turn of it)
/// before it is refused: an answer never comes from a worker that has stopped.
const PLACE_WAIT: Duration = Duration::from_secs(1);
/// Bytes read away from a refused connection before it is closed: closing a socket with unread
/// bytes resets the connection, and a reset can destroy the 503 before the client reads it.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;
/// A buyer connection's write buffer is reserved in steps of this many bytes, once, for the
/// request it must carry: pings of one campaign differ by a few bytes, so a connection that
/// carries them keeps one buffer and allocates nothing per ping.
const REQUEST_BUFFER_GRAIN: usize = 64;
/// Bound on what a seller TLS session buffers for sending (answers encrypted and not yet on the
/// socket); rustls bounds what it has received and not yet handed over at 16 KiB of its own.
const SELLER_TLS_BUFFER: usize = 32 * 1024;

/// `Lead::journaled` flags: the slot's ping answer, its post result.
/// Longest refusal message journaled with its code (and answered again from the journal):
/// messages are the exchange's own sentences, a few quoting a field name.
const MAX_JOURNALED_MESSAGE: usize = 1024;

const PING_JOURNALED: u8 = 1;
const POST_JOURNALED: u8 = 2;
/// The slot's ping was handed to a connection (and its `ping_sent` journaled).
const PING_SENT: u8 = 4;
/// The slot's `post_sent` promised its result and sale room in the journal
/// ([`journal::post_promise`]); the lead gives back what it promised once it is answered.
const POST_PROMISED: u8 = 8;

fn seller_token(index: usize) -> Token {
    Token(2 + index * 2)
}
fn buyer_token(index: usize) -> Token {
    Token(3 + index * 2)
}

enum Reply {
    /// The answer is ready; `close` ends the connection after it.
    Ready { bytes: Vec<u8>, close: bool },
    /// A lead's auction is running; its answer fills this place.
    Waiting { close: bool },
}

struct SellerConn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    decoder: RequestDecoder,
    body: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Answers in request order; `first_seq` is the sequence number of the front.
    pending: VecDeque<Reply>,
    first_seq: u64,
    /// No more requests are read: a `Connection: close` request or a protocol error was seen.
    no_more_requests: bool,
    /// The client spoke HTTP/1.0 and asked for keep-alive: every answer kept open says
    /// `Connection: keep-alive`, or the client would take it as the last.
    announce_keep_alive: bool,
    close_after_flush: bool,
    peer_closed: bool,
    /// When the first byte of the request being read arrived.
    request_started: Option<Instant>,
    last_active: Instant,
    /// Registered for writability: only while an answer is waiting for socket space, so that
    /// the ACK of every answer does not wake the loop.
    write_interest: bool,
    /// Since when answer bytes have waited for socket space without a break: a client that
    /// does not take its answers for `server.head_timeout_ms` is closed (see `housekeeping`).
    unsent_since: Option<Instant>,
    /// The TLS session when the listener serves `[server.tls]`; `None` on plain HTTP.
    tls: Option<Box<rustls::ServerConnection>>,
    /// `100 Continue` was written for the request being read.
    continue_sent: bool,
    /// Reading stopped with `rbuf` full: the socket may hold more requests, which no new
    /// (edge-triggered) event will announce; read again once `rbuf` has room.
    read_full: bool,
    /// Requests stopped being taken with [`MAX_SELLER_UNSENT_BYTES`] of answers unsent: those
    /// in `rbuf` are taken once the answers have left.
    output_held: bool,
    /// This connection's share of `server.max_connections`, given back when it is dropped.
    place: Place,
}

impl SellerConn {
    /// What an answer says about the connection: closed after it when `close`.
    fn persist(&self, close: bool) -> http::Persist {
        if close {
            http::Persist::Close
        } else if self.announce_keep_alive {
            http::Persist::KeepAliveAnnounced
        } else {
            http::Persist::KeepAlive
        }
    }

    /// A client that asked to hear before it sends its body (`Expect: 100-continue`) is told
    /// to go on once the answers to its earlier requests have left, as their order requires.
    /// Only HTTP/1.1 clients are told (RFC 9110 §10.1.1 has servers ignore the expectation
    /// from HTTP/1.0), and only once per request.
    fn continue_if_expected(&mut self) {
        if self.continue_sent || !self.pending.is_empty() {
            return;
        }
        let expects = self
            .decoder
            .pending_head()
            .is_some_and(|h| h.expect_continue && h.version_minor >= 1);
        if expects {
            if self.wpos == self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
            }
            self.wbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.continue_sent = true;
        }
    }

    /// Every answer byte has left for the socket (for TLS: through the session, too).
    fn all_sent(&self) -> bool {
        self.wpos >= self.wbuf.len() && self.tls.as_ref().is_none_or(|t| !t.wants_write())
    }

    /// Not serving a request: none awaits its answer, no answer byte is unsent, nothing of a
    /// next request has arrived. Such a connection may be closed to make room for a new one
    /// (a keep-alive client reconnects); `last_active` says since when it has been idle (since
    /// the accept, for one that never sent a byte).
    fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && !self.close_after_flush
            && self.rbuf.is_empty()
            && self.decoder.is_idle()
            && self.all_sent()
    }

    /// Accepted less than [`FIRST_REQUEST_GRACE`] ago and nothing of a request received yet:
    /// its first request is most likely on its way, and closing it to make room would leave
    /// that request unanswered (the client cannot tell whether it was taken). A new
    /// connection at the limit is refused 503 `overloaded` instead, an answer it can act on.
    fn just_accepted(&self, now: Instant) -> bool {
        self.first_seq == 0 && now.saturating_duration_since(self.last_active) < FIRST_REQUEST_GRACE
    }

    /// Never answered, and its first request has stopped arriving for [`STRANGER_STALL`]:
    /// nothing of it was authorised or is owed an answer, so it is closed before an idle
    /// connection to make room for a new one. Half-sent heads from anyone cannot push out
    /// the sellers' kept-alive connections.
    fn is_stalled_stranger(&self, now: Instant) -> bool {
        self.first_seq == 0
            && self.pending.is_empty()
            && !self.close_after_flush
            && !(self.rbuf.is_empty() && self.decoder.is_idle())
            && self.all_sent()
            && now.saturating_duration_since(self.last_active) >= STRANGER_STALL
    }

    /// Its answers have waited for socket space for [`READ_STALL`]: the client stopped
    /// taking them. It would hold its place until `server.head_timeout_ms` closes it, and a
    /// seller reconnecting as that happens keeps every place; it is closed first, as a
    /// stalled stranger is, to make room for a new connection. Its leads stand (a lookup
    /// tells them).
    fn is_stalled_reader(&self, now: Instant) -> bool {
        self.unsent_since
            .is_some_and(|t| now.saturating_duration_since(t) >= READ_STALL)
    }

    /// Closed first to make room: a stalled stranger or a client that stopped reading.
    fn is_stalled(&self, now: Instant) -> bool {
        self.is_stalled_stranger(now) || self.is_stalled_reader(now)
    }
}

/// How long a connection's answers may wait for socket space before it is closed first when a
/// new connection needs its place (see [`SellerConn::is_stalled_reader`]).
const READ_STALL: Duration = Duration::from_secs(1);

/// How long a never-answered connection's first request may stall before the connection is
/// closed first when a new one needs its place (see [`SellerConn::is_stalled_stranger`]).
const STRANGER_STALL: Duration = Duration::from_secs(1);

/// How long a new connection that has sent nothing yet is kept from being closed to make room
/// for a newer one (see [`SellerConn::just_accepted`]).
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// A new connection accepted at the limit, waiting for another worker to give it a place.
struct WaitingConn {
    ticket: u64,
    stream: TcpStream,
    /// Other workers asked so far, in order from this worker's id.
    asked: usize,
    /// The first round: only a stalled stranger may make room (see [`Ask::strangers_only`]).
    strangers_only: bool,
    since: Instant,
}

/// Which seller API a lead came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// `/v1/leads`: auction and sale in one request.
    Direct,
    /// `/v1/ping`: the auction's bids are held, nothing is posted.
    Ping,
    /// `/v1/post`: the held bids of an earlier ping are posted to.
    Post,
}

impl Flow {
    /// As the journal names it.
    fn journal(self) -> journal::LeadFlow {
        match self {
            Flow::Direct => journal::LeadFlow::Lead,
            Flow::Ping => journal::LeadFlow::Ping,
            Flow::Post => journal::LeadFlow::Post,
        }
    }
}

struct Lead {
    id: String,
    flow: Flow,
    seller: usize,
    campaign: usize,
    /// The config generation the lead started under: it finishes under it, whatever reloads
    /// happen meanwhile (its buyers, prices, caps and pools).
    gen: Arc<Gen>,
    req: LeadRequest,
    /// The ping body, built once for all the lead's buyers without an adapter; dropped once
    /// each of their requests holds its own copy (`pings_to_attach` reaches 0), and built
    /// again with `ping_timeout_ms` for the rare retry after that.
    ping_body: Vec<u8>,
    ping_timeout_ms: u64,
    pings_to_attach: usize,
    auction: Auction,
    /// The connection serving each slot's current request.
    slot_conn: Vec<Option<Key>>,
    /// Cap reservations of posts in flight or accepted, per slot, each with the newer config
    /// whose counters it was taken from (`None`: the lead's own; see [`cap_home`]).
    reservations: Vec<Option<(Reservation, Option<Arc<Runtime>>)>>,
    /// The close (ping results, ranking) is in the journal.
    close_journaled: bool,
    /// The campaign's fallback has been tried (once per lead).
    fallback_done: bool,
    /// For a `/v1/post`: the buyers its ping's auction had a turn for, left out of its
    /// fallback as the auction's own buyers are (empty otherwise).
    priced_by_ping: Vec<usize>,
    /// The first auction's buyer wait, bids and intake, when a fallback replaced it.
    prior: Option<(Duration, u32, Duration)>,
    /// A post's: the bids its ping received, which its answer reports.
    ping_bids: Option<u32>,
    /// The auction's bids came from a held ping or fixed prices, not from its own pings.
    close_from_plan: bool,
    /// Per slot, what of it is in the journal: `PING_JOURNALED`, `POST_JOURNALED`.
    journaled: Vec<u8>,
    /// Ping and post results in the journal, against the auction's counts: the slots are
    /// searched for new results only when these fall behind.
    pings_journaled: u32,
    posts_journaled: u32,
    /// Journal room promised to the results of this lead's posts (and, once one was sent, to
    /// its answer), given back once the lead is answered.
    promised: u64,
    /// `promised` holds the room of the lead's `LeadAnswered`.
    answer_promised: bool,
    /// The slot whose answer is the one ping result not yet journaled, when that is known:
    /// journaling it then needs no search of the slots.
    ping_hint: Option<crate::auction::Slot>,
    /// What the seller earns, summed sale by sale.
    payout_cents: i64,
    /// The seller's payout rule for this lead: the config's, or for a post the one its ping
    /// was offered under (a reload in between does not change the offer).
    payout_rule: crate::config::Payout,
    sales: u32,
    /// What the buyers pay for the sales so far.
    sold_cents: i64,
    /// Where the answer goes: seller connection and request sequence number.
    origin: (Key, u64),
    timer_at: Option<Instant>,
}

impl Lead {
    /// Whether the lead's posts take round-robin turns (its campaign's method, or its
    /// fallback's once the fallback runs).
    fn round_robin(&self) -> bool {
        let c = &self.gen.rt.snap.campaigns[self.campaign];
        c.method == Distribution::RoundRobin
            || (self.fallback_done && c.fallback == Some(Distribution::RoundRobin))
    }

    /// Before a post result that may cascade: a round robin's cascade goes to the buyer the
    /// longest without a cascade's post now, not when the lead arrived (a buyer slow to
    /// reject would otherwise pass all its leads of a stretch to one buyer).
    fn cascade_in_rotation(&mut self) {
        if !self.round_robin() {
            return;
        }
        if let Some(rr) = self.gen.rt.round_robin.get(self.campaign) {
            self.auction.reorder_unposted(|b| rr.last_cascade_of(b));
        }
    }
}

pub struct Worker {
    id: usize,
    poll: Poll,
    waker: Arc<Waker>,
    timer: TimerFd,
    /// `None` once draining: the socket is closed.
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    /// The config generation new leads start under.
    gen: Arc<Gen>,
    stats: Arc<Mutex<WorkerStats>>,
    sellers: Slab<SellerConn>,
    /// New connections waiting for a place from another worker (at the limit, none of this
    /// worker's connections idle), oldest first.
    waiting: VecDeque<WaitingConn>,
    next_ticket: u64,
    conns: Slab<BuyerConn>,
    pools: Vec<Pool>,
    leads: Slab<Lead>,
    /// Leads' deadlines; an entry is live while its lead's `timer_at` names it.
    timers: Deadlines<Key>,
    /// Leads with new input whose actions must be run.
    dirty: Vec<Key>,
    /// Pools that lost a connection while jobs waited for one: served at the end of the
    /// turn's step ([`Worker::refill`]), not from inside the close.
    short_pools: Vec<usize>,
    /// Pools with a post waiting for one of their idle connections to have been idle
    /// `REUSE_AFTER`, and when the first will have: at most one entry a pool.
    cooling: Vec<(Instant, usize)>,
    /// The housekeeping sweep's list of connections, kept between sweeps so a sweep does not
    /// allocate.
    sweep_keys: Vec<Key>,
    /// Seller connections to read again on the next loop turn: their buffer was full, and
    /// room has freed up (see `SellerConn::read_full`).
    resume_sellers: Vec<Key>,
    /// The request being handled is a `HEAD`: its answer is written without a body.
    answering_head: bool,
    scratch: Vec<u8>,
    dedupe_keys: Vec<u64>,
    rng: std::cell::Cell<u64>,
    read_buf: Vec<u8>,
    limits: Limits,
    /// The seller listener's TLS config (`[server.tls]`), shared by all workers.
    seller_tls: Option<Arc<rustls::ServerConfig>>,
    now: Instant,
    /// The last loop turn that had events (`server.busy_poll_us` spins from here).
    last_work: Instant,
    next_housekeeping: Instant,
    /// Set once the process is asked to stop: no new leads, the ones in flight finish, then the
    /// loop ends (at the latest at this instant).
    drain_until: Option<Instant>,
}

/// One config generation as this worker runs it: the runtime, and which of the worker's pools
/// serve each of its buyers.
pub struct Gen {
    rt: Arc<Runtime>,
    /// Per buyer: index of its ping pool and post pool in `pools` (equal when same origin).
    ping_pool: Vec<Option<usize>>,
    post_pool: Vec<Option<usize>>,
    /// Per buyer: the index of its counters in this worker's stats (`WorkerStats::buyer_slot`).
    stat_slots: Vec<usize>,
}

/// What makes a pool's connections fit for a buyer: the buyer, the endpoint's origin and the
/// address it resolved to.
fn origin_key(buyer: &str, e: &Endpoint, addr: Option<std::net::SocketAddr>) -> String {
    format!(
        "{} {:?}://{}:{} {:?}",
        buyer, e.scheme, e.host, e.port, addr
    )
}

/// Build the pool map of `rt` over `pools`: a buyer that keeps its id and an endpoint's
/// origin and address keeps that pool (and its open connections, limits updated); other
/// endpoints get new pools. Returns the map and the pools of `old` no longer used.
fn map_pools(pools: &mut Vec<Pool>, old: Option<&Gen>, rt: &Arc<Runtime>) -> (Gen, Vec<usize>) {
    let snap = &rt.snap;
    let mut reusable: HashMap<String, usize> = HashMap::new();
    let mut before: Vec<usize> = Vec::new();
    if let Some(old) = old {
        // New trust roots (other files, or other certificates in the same files): TLS sessions
        // made under the old ones are not kept.
        let same_tls = old.rt.tls_roots == rt.tls_roots;
        for (i, b) in old.rt.snap.buyers.iter().enumerate() {
            for (e, p, addr) in [
                (&b.ping, old.ping_pool[i], old.rt.ping_addrs[i]),
                (&b.post, old.post_pool[i], old.rt.post_addrs[i]),
            ] {
                if let (Some(e), Some(p)) = (e, p) {
                    before.push(p);
                    if same_tls || e.scheme != Scheme::Https {
                        reusable.insert(origin_key(&b.id, e, addr), p);
                    }
                }
            }
        }
    }
    let mut used = HashSet::new();
    let mut take = |pools: &mut Vec<Pool>,
                    i: usize,
                    e: &Endpoint,
                    addr: Option<std::net::SocketAddr>,
                    b: &crate::config::Buyer,
                    min_idle: usize| {
        let id = b.id.as_str();
        let fresh = || Pool {
            tls_host: tls_host(&Some(e.clone())),
            tls_config: rt.tls.clone(),
            ..Pool::new(addr, b.max_connections, min_idle, b.idle_timeout)
        };
        let p = match reusable.get(&origin_key(id, e, addr)) {
            Some(&p) => {
                let pool = &mut pools[p];
                // The same roots, read again: new connections use this generation's config.
                pool.tls_config = rt.tls.clone();
                pool.max_connections = b.max_connections;
                pool.min_idle = min_idle;
                pool.idle_timeout = b.idle_timeout;
                p
            }
            None => {
                pools.push(fresh());
                pools.len() - 1
            }
        };
        pools[p].buyer = i;
        used.insert(p);
        p
    };
    let mut ping_pool = Vec::with_capacity(snap.buyers.len());
    let mut post_pool = Vec::with_capacity(snap.buyers.len());
    for (i, b) in snap.buyers.iter().enumerate() {
        let pp = b
            .ping
            .as_ref()
            .map(|e| take(pools, i, e, rt.ping_addrs[i], b, b.min_idle));
        let same = matches!((&b.ping, &b.post), (Some(a), Some(c)) if a.same_origin(c));
        let po = match (same, pp) {
            (true, Some(p)) => Some(p),
            _ => b.post.as_ref().map(|e| {
                let min_idle = if b.ping.is_some() {
                    1.min(b.min_idle)
                } else {
                    b.min_idle
                };
                take(pools, i, e, rt.post_addrs[i], b, min_idle)
            }),
        };
        ping_pool.push(pp);
        post_pool.push(po);
    }
    let mut retired: Vec<usize> = before.into_iter().filter(|p| !used.contains(p)).collect();
    retired.sort_unstable();
    retired.dedup();
    let gen = Gen {
        rt: rt.clone(),
        ping_pool,
        post_pool,
        stat_slots: Vec::new(),
    };
    (gen, retired)
}

/// Where each buyer of `snap` keeps its counters in `stats`.
fn stat_slots(stats: &Mutex<WorkerStats>, snap: &crate::config::Snapshot) -> Vec<usize> {
    let mut st = stats.lock();
    snap.buyers.iter().map(|b| st.buyer_slot(&b.id)).collect()
}

/// How long a buyer connection is idle before a request prefers it: an answer the buyer sends
/// twice (the second right behind the first) reaches a connection idle this long already, and
/// closes it, rather than a request written on it since. A request takes a connection idle for
/// less only when none has been idle this long and the pool has no room for a new one.
const REUSE_AFTER: Duration = Duration::from_millis(2);

/// Least time a waiting ping must have left for its buyer to be written at all: with less, it
/// expires unsent at its close rather than hold a connection for an answer that would be late.
const MIN_PING_LEFT: Duration = Duration::from_millis(1);

/// How far the `timeout_ms` of a lead's shared ping body may run ahead of the time a ping
/// really has when it is written, in milliseconds, before the ping gets a body of its own.
const STALE_TIMEOUT_MS: u64 = 1;

/// A post of a lead that started before a reload ended (`sold`, or not). When the reload gave
/// its buyer counters of their own (its zone changed, or it was removed and added again),
/// rebuilt from the journal while the post was in flight, the post is settled there too: a
/// sale the rebuild did not see counts, a post it counted that did not sell is taken back
/// (`CapTable::settle_earlier`).
fn settle_after_reload(
    shared: &Shared,
    lead: &Lead,
    slot: usize,
    sold: bool,
    price: crate::money::Cents,
    home: Option<&Arc<Runtime>>,
) {
    // The counters the post was reserved in.
    let rt = home.unwrap_or(&lead.gen.rt);
    if lead.req.test || shared.generation() == rt.generation {
        return;
    }
    let Some(buyer) = lead.gen.rt.snap.buyers.get(lead.auction.buyer(slot)) else {
        return;
    };
    let Some(mine) = rt.snap.buyer_of_record(&buyer.id) else {
        return;
    };
    let current = shared.runtime();
    if let Some(b) = current.snap.buyer_of_record(&buyer.id) {
        if !current.caps.shares_state(b, &rt.caps, mine) {
            current
                .caps
                .settle_earlier(b, &lead.id, sold, price, Utc::now());
        }
    }
}

/// Whether the ping of `slot` reached its buyer, which then priced the lead itself (by its
/// bid, no bid or silence): its first byte was written. One queued for a connection that never
/// came before the close, or whose connect failed, did not: that buyer keeps its place in a
/// fallback (as a start's replay reads a `ping_result` with no response time).
fn ping_reached(lead: &Lead, slot: usize) -> bool {
    lead.journaled.get(slot).is_some_and(|j| j & PING_SENT != 0)
        && lead
            .auction
            .ping_result(slot)
            .is_none_or(|(_, response)| response.is_some())
}

/// Where a lead's post to `buyer` (its index in the lead's config) reserves its cap: `None`,
/// the lead's own config's counters and limits, unless a reload since still has the buyer:
/// then the config in force now and the buyer's index there. Its limits are the buyer's
/// limits now (a cap lowered while the lead was in its auction holds for the lead's post),
/// and when the reload gave the buyer counters of their own (its zone or its ids changed;
/// rebuilt from the journal), leads of both configs count into those, so neither can take the
/// buyer past a cap the other has filled.
fn cap_home(shared: &Shared, lead: &Lead, buyer: usize) -> Option<(Arc<Runtime>, usize)> {
    if shared.generation() == lead.gen.rt.generation {
        return None;
    }
    let id = &lead.gen.rt.snap.buyers.get(buyer)?.id;
    let current = shared.runtime();
    let b = current.snap.buyer_of_record(id)?;
    Some((current, b))
}

/// A held bid: (buyer, cents, bid id).
type HeldBid = (usize, i64, Option<crate::text::SmallText>);
/// A held ping a post claimed, mapped onto the config in force: its campaign, test flag, bids,
/// pinged field values, the payout rule its offer was made under, and the bids it received.
struct Claimed {
    campaign: usize,
    test: bool,
    bids: Vec<HeldBid>,
    fields: crate::lead::Fields,
    rule: Option<crate::config::Payout>,
    bids_received: u32,
    /// The ping's `source`: the post's lead is journaled under it too.
    source: Option<String>,
    /// The buyers the ping's auction had a turn for (`HeldPing::priced`).
    priced: Vec<usize>,
}

/// Wall-clock microseconds for journal records (cap windows are calendar time).
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>, listener: TcpListener) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let timer = TimerFd::new(poll.registry(), TIMER)?;
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let rt = shared.runtime();
        let snap = rt.snap.clone();
        let mut pools = Vec::new();
        let (mut gen, _) = map_pools(&mut pools, None, &rt);
        gen.stat_slots = stat_slots(&shared.stats[id], &snap);
        let now = Instant::now();
        Ok(Worker {
            id,
            poll,
            waker,
            timer,
            listener: Some(listener),
            stats: shared.stats[id].clone(),
            shared,
            gen: Arc::new(gen),
            sellers: Slab::with_capacity(MAX_SELLER_CONNS_PER_WORKER),
            waiting: VecDeque::new(),
            next_ticket: 0,
            conns: Slab::with_capacity(MAX_BUYER_CONNS_PER_WORKER),
            pools,
            leads: Slab::with_capacity(MAX_LEADS_PER_WORKER.min(snap.server.max_in_flight + 1)),
            timers: Deadlines::default(),
            dirty: Vec::new(),
            short_pools: Vec::new(),
            cooling: Vec::new(),
            sweep_keys: Vec::new(),
            resume_sellers: Vec::new(),
            answering_head: false,
            scratch: Vec::with_capacity(4096),
            dedupe_keys: Vec::with_capacity(crate::compliance::MAX_KEYS_PER_LEAD),
            rng: std::cell::Cell::new(
                0x9E37_79B9_7F4A_7C15 ^ (unix_micros() | 1) ^ ((id as u64) << 32),
            ),
            read_buf: vec![0u8; READ_CHUNK],
            limits: Limits::with_max_body_bytes(snap.server.max_body_bytes),
            seller_tls: snap.seller_tls.clone(),
            now,
            last_work: now,
            next_housekeeping: now,
            drain_until: None,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        self.now = Instant::now();
        self.housekeeping();
        loop {
            if self.shared.shutdown.load(Ordering::Relaxed) {
                break;
            }
            if self.shared.draining.load(Ordering::Relaxed) {
                let until = match self.drain_until {
                    Some(t) => t,
                    None => self.begin_drain(),
                };
                if self.drained() || Instant::now() >= until {
                    break;
                }
            }
            let mut next = self
                .timers
                .next()
                .unwrap_or(self.next_housekeeping)
                .min(self.next_housekeeping);
            if let Some(due) = self.cooling.iter().map(|c| c.0).min() {
                next = next.min(due);
            }
            if !self.resume_sellers.is_empty() {
                next = Instant::now();
            }
            if let Err(e) = self.wait(&mut events, next) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            self.now = Instant::now();
            if !events.is_empty() {
                self.last_work = self.now;
            }
            // A reload: one atomic load per loop turn, before any of this turn's requests.
            if self.shared.generation() != self.gen.rt.generation {
                self.adopt();
            }
            // Asks for a seller connection's place, and answers to this worker's asks.
            if let Some(letters) = self.shared.seller_conns.collect(self.id) {
                self.read_mail(letters);
            }
            // The turn's short work first: buyers' answers (a ping's bid, a post's answer
            // and the seller's answer it finishes) and the deadlines due (a close and its
            // post), then the sellers' requests, each of which costs a lead's whole fan-out
            // of pings. A lead's answer then never waits behind another lead's pings in
            // the same turn; a new lead waits only behind that short work.
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    TIMER => self.timer.acknowledge(),
                    Token(t) if t >= 3 && t % 2 == 1 => {
                        steps::event(self.now);
                        self.on_buyer_event(
                            (t - 3) / 2,
                            ev.is_readable() || ev.is_read_closed(),
                            ev.is_read_closed(),
                            ev.is_writable(),
                            ev.is_error(),
                        );
                        self.drive_dirty();
                    }
                    _ => {}
                }
            }
            self.fire_timers();
            self.serve_cooled();
            self.drive_dirty();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    Token(t) if t >= 2 && t % 2 == 0 => {
                        steps::event(self.now);
                        self.on_seller_event(
                            (t - 2) / 2,
                            ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                            ev.is_read_closed() || ev.is_error(),
                            ev.is_writable(),
                        );
                    }
                    _ => continue,
                }
                self.drive_dirty();
            }
            // Connections whose full buffer has room again, once per turn each (a client
            // streaming requests shares the loop with everyone else).
            for key in std::mem::take(&mut self.resume_sellers) {
                self.read_seller(key, false);
                self.drive_dirty();
            }
            if self.now >= self.next_housekeeping {
                self.housekeeping();
                self.drive_dirty();
            }
        }
        steps::dump(self.id);
    }

    /// Wait for the next events, or until `next` (a timer's deadline) comes. With
    /// `server.busy_poll_us` set, a worker that had work within that window polls without
    /// sleeping first: the next event is taken at once, on a core whose caches still hold the
    /// exchange, instead of after a wake-up.
    fn wait(&mut self, events: &mut Events, next: Instant) -> io::Result<()> {
        let busy = self.gen.rt.snap.server.busy_poll;
        if !busy.is_zero() {
            let spin_until = (self.last_work + busy).min(next);
            loop {
                self.poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() || Instant::now() >= spin_until {
                    break;
                }
                std::hint::spin_loop();
            }
            if !events.is_empty() {
                return Ok(());
            }
        }
        // A deadline close at hand is left to the timerfd, which wakes the loop to the
        // microsecond; a far one to the poll timeout (whole milliseconds, woken a little
        // early), which spares a timerfd_settime per loop turn.
        let until = next.saturating_duration_since(Instant::now());
        let timeout = if until <= PRECISE_TIMER_WITHIN {
            self.timer.arm(next);
            until + Duration::from_millis(1)
        } else {
            until - Duration::from_millis(1)
        };
        self.poll.poll(events, Some(timeout))
    }

    /// Stop taking new leads: the listener is closed (the other workers' listeners close too,
    /// so the kernel refuses new connections), and a request on an open connection is answered
    /// 503 `shutting_down` and its connection closed. The leads in flight run to their answers.
    fn begin_drain(&mut self) -> Instant {
        let until = Instant::now() + DRAIN_LIMIT;
        self.drain_until = Some(until);
        // No post starts that the drain would cut off: the buyer would get the consumer and
        // the seller no answer.
        for key in self.leads.keys() {
            if let Some(lead) = self.leads.get_mut(key) {
                lead.auction.stop_by(until);
            }
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // Connections still waiting for a place close with the listener.
        self.waiting.clear();
        until
    }

    /// Draining and nothing left to do: no lead in flight here or on any other worker (while
    /// another still has some, this one stays to answer requests on its open connections 503
    /// `shutting_down` rather than drop them unanswered), every answer written.
    fn drained(&self) -> bool {
        self.leads.is_empty()
            && self.shared.in_flight.load(Ordering::Acquire) == 0
            && self
                .sellers
                .values()
                .all(|c| c.pending.is_empty() && c.all_sent())
    }

    /// Take the config now in force for new leads: map its buyers onto pools (kept where a
    /// buyer's endpoint did not change), retire the pools nobody in the new config uses (their
    /// idle connections close now, busy ones after the running leads' last request), and apply
    /// the worker-level limits. Leads in flight keep their own generation.
    fn adopt(&mut self) {
        let rt = self.shared.runtime();
        if rt.generation == self.gen.rt.generation {
            return;
        }
        let (mut gen, retired) = map_pools(&mut self.pools, Some(&self.gen), &rt);
        gen.stat_slots = stat_slots(&self.stats, &rt.snap);
        self.gen = Arc::new(gen);
        // A lowered `max_connections` holds at once: idle connections over it close now (busy
        // ones close instead of going idle, in `release_conn`).
        for p in 0..self.pools.len() {
            while self.pools[p].total > self.pools[p].max_connections {
                let Some(ck) = self.pools[p].idle.pop() else {
                    break;
                };
                if let Some(c) = self.conns.get_mut(ck) {
                    c.in_idle = false;
                }
                self.close_conn(ck);
            }
        }
        for p in retired {
            let pool = &mut self.pools[p];
            pool.retired = true;
            pool.min_idle = 0;
            let idle = std::mem::take(&mut pool.idle);
            for ck in idle {
                if let Some(c) = self.conns.get_mut(ck) {
                    c.in_idle = false;
                }
                self.close_conn(ck);
            }
        }
        let server = &rt.snap.server;
        self.limits = Limits::with_max_body_bytes(server.max_body_bytes);
        // A lowered `max_connections` closes nothing: connections over it stay until they end
        // (or, idle, make room for a new one), and no new one is taken while over it.
        self.leads
            .set_capacity(MAX_LEADS_PER_WORKER.min(server.max_in_flight + 1));
    }

    // ----- seller side -------------------------------------------------------------------

    fn accept(&mut self) {
        // This worker's idle connections, oldest last, listed once per burst of accepts.
        let mut idle: Option<Vec<(bool, Key)>> = None;
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    let limit = self.gen.rt.snap.server.max_connections;
                    if let Some(place) = self.shared.seller_conns.take(limit) {
                        self.admit(stream, place);
                        continue;
                    }
                    // At `server.max_connections`: a stalled stranger makes room, this
                    // worker's or another's; else this worker's connection idle the longest,
                    // else another worker's; else the new one is refused.
                    let idle = idle.get_or_insert_with(|| self.idle_sellers());
                    if let Some(place) = self.evict_idle(idle, true) {
                        self.admit(stream, place);
                        continue;
                    }
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    self.ask_for_place(WaitingConn {
                        ticket,
                        stream,
                        asked: 0,
                        strangers_only: true,
                        since: self.now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept: try again on the next event.
                Err(_) => break,
            }
        }
    }

    /// Serve a new seller connection that holds a place.
    fn admit(&mut self, stream: TcpStream, place: Place) {
        let _ = stream.set_nodelay(true);
        let tls = match &self.seller_tls {
            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                Ok(mut session) => {
                    session.set_buffer_limit(Some(SELLER_TLS_BUFFER));
                    Some(Box::new(session))
                }
                Err(_) => return,
            },
            None => None,
        };
        // The first request's head (and a TLS handshake before it) runs under the head timeout
        // from the accept: a client that connects and sends nothing is closed like one that
        // stalls in a head. Between requests a keep-alive connection may then idle for
        // `idle_timeout`.
        let request_started = Some(self.now);
        let conn = SellerConn {
            stream,
            // Reads go through the worker's buffer; this one grows to what a connection leaves
            // unparsed, not to a read's size.
            rbuf: Vec::new(),
            decoder: RequestDecoder::new(self.limits),
            body: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            pending: VecDeque::new(),
            first_seq: 0,
            no_more_requests: false,
            announce_keep_alive: false,
            close_after_flush: false,
            peer_closed: false,
            request_started,
            last_active: self.now,
            write_interest: false,
            unsent_since: None,
            tls,
            continue_sent: false,
            read_full: false,
            output_held: false,
            place,
        };
        // Full only at `MAX_SELLER_CONNS_PER_WORKER`, which the count of places keeps it under;
        // the connection (and its place) is dropped then.
        let Some(key) = self.sellers.insert(conn) else {
            return;
        };
        let token = seller_token(key.index);
        let registered = match self.sellers.get_mut(key) {
            Some(c) => self
                .poll
                .registry()
                .register(&mut c.stream, token, Interest::READABLE)
                .is_ok(),
            None => false,
        };
        if !registered {
            self.sellers.remove(key);
        }
    }

    /// This worker's connections that may be closed for a new one, the first to close last:
    /// idle ones, the one idle the longest last, and after them (so before them when taken
    /// from the end) stalled strangers, the one stalled the longest last.
    fn idle_sellers(&self) -> Vec<(bool, Key)> {
        let now = self.now;
        let mut idle: Vec<(bool, Instant, Key)> = self
            .sellers
            .iter()
            .filter_map(|(k, c)| {
                if c.is_stalled(now) {
                    Some((true, c.last_active, k))
                } else if c.is_idle() && !c.just_accepted(now) {
                    Some((false, c.last_active, k))
                } else {
                    None
                }
            })
            .collect();
        idle.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        idle.into_iter()
            .map(|(stranger, _, k)| (stranger, k))
            .collect()
    }

    /// Close the connection idle the longest of `idle` (from [`Worker::idle_sellers`]; one
    /// that has turned busy since is passed over) and take its place for a new one. With
    /// `strangers_only`, only a stalled stranger.
    fn evict_idle(&mut self, idle: &mut Vec<(bool, Key)>, strangers_only: bool) -> Option<Place> {
        let now = self.now;
        while let Some(&(stranger, key)) = idle.last() {
            if strangers_only && !stranger {
                // Strangers are listed last: none is left.
                return None;
            }
            idle.pop();
            if strangers_only && !self.sellers.get(key).is_some_and(|c| c.is_stalled(now)) {
                continue;
            }
            // Bytes waiting in the socket are a request arriving (its event not handled yet):
            // closing would reset it. An end of stream waiting there is a fine one to close, and
            // so are the requests a client that stopped taking its answers still sends.
            let arriving = |c: &SellerConn| matches!(c.stream.peek(&mut [0u8; 1]), Ok(n) if n > 0);
            if !self.sellers.get(key).is_some_and(|c| {
                c.is_stalled_reader(now)
                    || ((c.is_idle() || c.is_stalled_stranger(now)) && !arriving(c))
            }) {
                continue;
            }
            if let Some(place) = self.remove_seller(key) {
                self.shared.seller_conns.count_eviction();
                return Some(place);
            }
        }
        None
    }

    /// A new connection at the limit with no idle connection here: ask the next other worker
    /// for a place (it waits for the answer, unread), or refuse it when every worker has been
    /// asked or too many wait already.
    fn ask_for_place(&mut self, mut w: WaitingConn) {
        let conns = &self.shared.seller_conns;
        let workers = conns.workers();
        if self.waiting.len() < MAX_WAITING_FOR_PLACE {
            while w.asked + 1 < workers {
                let to = (self.id + 1 + w.asked) % workers;
                w.asked += 1;
                let ask = Ask {
                    from: self.id,
                    ticket: w.ticket,
                    strangers_only: w.strangers_only,
                };
                if conns.ask(to, ask) {
                    self.shared.wake(to);
                    self.waiting.push_back(w);
                    return;
                }
            }
        }
        if w.strangers_only {
            // No stalled stranger anywhere: this worker's connection idle the longest, else
            // the other workers' are asked again, for any idle one.
            let mut idle = self.idle_sellers();
            if let Some(place) = self.evict_idle(&mut idle, false) {
                self.admit(w.stream, place);
                return;
            }
            w.strangers_only = false;
            w.asked = 0;
            self.ask_for_place(w);
            return;
        }
        self.refuse_connection(w.stream);
    }

    /// Letters from the other workers: asks for a place (given from a free place if one has
    /// come up, else by closing this worker's connection idle the longest, else none), and
    /// answers to this worker's asks (the waiting connection is served, or the next worker
    /// asked).
    fn read_mail(&mut self, letters: Letters) {
        let limit = self.gen.rt.snap.server.max_connections;
        let mut idle: Option<Vec<(bool, Key)>> = None;
        for ask in letters.asks {
            let place = match self.shared.seller_conns.take(limit) {
                Some(place) => Some(place),
                None => {
                    let idle = idle.get_or_insert_with(|| self.idle_sellers());
                    self.evict_idle(idle, ask.strangers_only)
                }
            };
            let answer = Answer {
                ticket: ask.ticket,
                place,
            };
            if self.shared.seller_conns.answer(ask.from, answer) {
                self.shared.wake(ask.from);
            }
        }
        for done in letters.lookups {
            self.looked_up(done);
        }
        for answer in letters.answers {
            // A connection refused after `PLACE_WAIT` (or closed by a drain) is not waiting any
            // more: its place, if one came, is given back as the answer drops.
            let Some(i) = self.waiting.iter().position(|w| w.ticket == answer.ticket) else {
                continue;
            };
            let Some(w) = self.waiting.remove(i) else {
                continue;
            };
            match answer
                .place
                .or_else(|| self.shared.seller_conns.take(limit))
            {
                Some(place) => self.admit(w.stream, place),
                None => self.ask_for_place(w),
            }
        }
    }

    /// Refuse a new connection at `server.max_connections`: a 503 `overloaded` the client can
    /// tell from a network fault, written only if the socket takes it at once (the worker never
    /// waits on it), then closed. Under TLS a plaintext answer means nothing: closed only.
    fn refuse_connection(&mut self, mut stream: TcpStream) {
        self.shared.seller_conns.count_refusal();
        if self.seller_tls.is_some() {
            return;
        }
        // A 503 a seller reads, as one for `max_in_flight` is (a TLS listener's refusal is
        // a close, before any session: counted by the connection counters only).
        self.count_refusal(503);
        let mut body = Vec::with_capacity(96);
        lead::write_error(
            &mut body,
            None,
            "overloaded",
            "too many seller connections",
            None,
        );
        let mut answer = Vec::with_capacity(body.len() + 128);
        http::write_response(
            &mut answer,
            503,
            &[("Content-Type", "application/json"), ("Retry-After", "1")],
            &body,
            false,
        );
        let mut sent = 0;
        while sent < answer.len() {
            match io::Write::write(&mut stream, &answer[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut self.read_buf) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Connections that waited `PLACE_WAIT` for another worker's answer are refused.
    fn expire_waiting(&mut self, now: Instant) {
        if self.waiting.is_empty() {
            return;
        }
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now.duration_since(w.since) >= PLACE_WAIT);
        self.waiting = waiting;
        for w in expired {
            self.refuse_connection(w.stream);
        }
    }

    fn on_seller_event(&mut self, index: usize, readable: bool, read_closed: bool, writable: bool) {
        let Some((key, _)) = self.sellers.at(index) else {
            return;
        };
        if writable {
            self.write_seller(key);
            self.resume_if_room(key);
        }
        if readable {
            self.read_seller(key, read_closed);
        }
    }

    /// A connection that stopped reading with a full buffer, or stopped taking requests for
    /// answers unsent, is read again (next turn) once the buffer has room, the pipeline takes
    /// more requests and its answers are written.
    fn resume_if_room(&mut self, key: Key) {
        let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        if (c.read_full || c.output_held)
            && c.rbuf.len() < cap
            && c.pending.len() < MAX_PIPELINED
            && !c.no_more_requests
            && c.all_sent()
        {
            c.read_full = false;
            c.output_held = false;
            self.resume_sellers.push(key);
        }
    }

    /// `read_closed`: the event says the client closed its side (or failed): read to the end
    /// of the stream, since with edge-triggered events no later one will come for it.
    fn read_seller(&mut self, key: Key, read_closed: bool) {
        let now = self.now;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        if c.tls.is_some() {
            return self.read_seller_tls(key);
        }
        if c.no_more_requests {
            // Still read to notice a close, but discard: nothing more will be answered.
            loop {
                match c.stream.read(&mut self.read_buf) {
                    Ok(0) => {
                        c.peer_closed = true;
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.peer_closed = true;
                        break;
                    }
                }
            }
        } else {
            // Read while there is room for more pipelined requests; the rest waits in the socket.
            let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
            while c.rbuf.len() < cap {
                match c.stream.read(&mut self.read_buf) {
                    Ok(0) => {
                        c.peer_closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.rbuf.extend_from_slice(&self.read_buf[..n]);
                        c.last_active = now;
                        if c.request_started.is_none() {
                            c.request_started = Some(now);
                        }
                        if n < self.read_buf.len() && !read_closed {
                            // A short read drained the socket: skip the read that would say so.
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.peer_closed = true;
                        break;
                    }
                }
            }
            c.read_full = c.rbuf.len() >= cap;
        }
        steps::mark_after(Step::TurnWait, Step::SellerRecv);
        self.process_seller(key);
        self.finish_seller_io(key);
    }

    /// `read_seller` for a TLS connection: records from the socket through the session, its
    /// plaintext into `rbuf`; then the same request handling as plain HTTP.
    fn read_seller_tls(&mut self, key: Key) {
        let now = self.now;
        let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let Some(tls) = c.tls.as_mut() else {
            return;
        };
        let handshaking = tls.is_handshaking();
        let discard = c.no_more_requests;
        let (got, state) = tls_read(
            tls,
            &mut c.stream,
            &mut c.rbuf,
            &mut self.read_buf,
            cap,
            discard,
        );
        if state == TlsRead::Broken {
            // Not TLS (plain HTTP, garbage) or a TLS error: send the session's alert if it has
            // one and close this connection only.
            let _ = tls.write_tls(&mut c.stream);
            c.tls = None;
            self.close_seller(key);
            return;
        }
        if state == TlsRead::Closed {
            c.peer_closed = true;
        }
        c.read_full = !discard && c.rbuf.len() >= cap;
        if handshaking && !tls.is_handshaking() {
            // From here the connection is a keep-alive HTTP connection with no request yet.
            c.request_started = None;
            c.last_active = now;
        }
        if got > 0 && !discard {
            c.last_active = now;
            if c.request_started.is_none() {
                c.request_started = Some(now);
            }
        }
        self.process_seller(key);
        self.finish_seller_io(key);
    }

    /// Parse and start every complete request in the buffer, up to the pipeline limit.
    fn process_seller(&mut self, key: Key) {
        loop {
            let Some(c) = self.sellers.get_mut(key) else {
                return;
            };
            if c.pending.len() >= MAX_PIPELINED && !c.no_more_requests {
                // The client waits on the exchange, not the other way round: the requests
                // held in the buffer are not slow heads.
                c.request_started = None;
                return;
            }
            if c.wbuf.len().saturating_sub(c.wpos) >= MAX_SELLER_UNSENT_BYTES && !c.no_more_requests
            {
                // The client is not taking its answers: no more are made for it until it
                // does (or it is closed for it, `housekeeping`).
                c.request_started = None;
                c.output_held = true;
                return;
            }
            if c.no_more_requests || c.rbuf.is_empty() {
                return;
            }
            let result = c.decoder.decode(&c.rbuf, &mut c.body);
            match result {
                Ok(Decoded::NeedMore { consumed }) => {
                    c.rbuf.drain(..consumed);
                    // Blank lines before a request (RFC 9112 §2.2) are skipped but do not end
                    // the wait for it: the head timeout still runs from their arrival, so a
                    // client sending only them is closed like one sending a head too slowly.
                    if c.request_started.is_none() {
                        c.request_started = Some(self.now);
                    }
                    // A client waiting for `100 Continue` with credentials that name no seller
                    // hears 401 at once instead, and does not send the body (RFC 9110 §10.1.1);
                    // the connection closes after it, the body's bytes unread.
                    let waiting = !c.continue_sent
                        && c.pending.is_empty()
                        && !c.no_more_requests
                        && c.decoder.pending_head().is_some_and(|h| {
                            h.expect_continue
                                && h.version_minor >= 1
                                && matches!(
                                    h.path.split('?').next(),
                                    Some("/v1/leads" | "/v1/ping" | "/v1/post")
                                )
                        });
                    let auth = if waiting {
                        c.decoder.pending_head().map(|h| h.authorization.clone())
                    } else {
                        None
                    };
                    if let Some(auth) = auth {
                        if let Err(r) = self.authenticate_value(auth.as_deref()) {
                            if let Some(c) = self.sellers.get_mut(key) {
                                c.no_more_requests = true;
                                c.rbuf.clear();
                                c.request_started = None;
                            }
                            self.refuse(key, &r, None, &[]);
                            return;
                        }
                    }
                    if let Some(c) = self.sellers.get_mut(key) {
                        c.continue_if_expected();
                    }
                    return;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    c.rbuf.drain(..consumed);
                    c.continue_sent = false;
                    c.request_started = if c.rbuf.is_empty() {
                        None
                    } else {
                        Some(self.now)
                    };
                    let body = std::mem::take(&mut c.body);
                    if head.keep_alive && head.version_minor == 0 {
                        c.announce_keep_alive = true;
                    }
                    if !head.keep_alive {
                        // Whatever the client sent after it is not read.
                        c.no_more_requests = true;
                        c.rbuf.clear();
                        c.request_started = None;
                    }
                    self.handle_request(key, &head, &body);
                    self.answering_head = false;
                    if let Some(c) = self.sellers.get_mut(key) {
                        let mut body = body;
                        body.clear();
                        c.body = body;
                    }
                }
                Err(e) => {
                    c.rbuf.clear();
                    c.no_more_requests = true;
                    let mut out = Vec::new();
                    let limit;
                    let message = match e {
                        // Which limit: the seller sizes its batches by it.
                        http::Error::BodyTooLarge => {
                            limit = format!(
                                "body is larger than the limit of {} bytes",
                                self.limits.max_body_bytes
                            );
                            limit.as_str()
                        }
                        _ => e.message(),
                    };
                    lead::write_error(&mut out, None, e.code(), message, None);
                    let status = e.status();
                    self.count_refusal(status);
                    self.push_reply(key, status, &[], &out, true);
                    return;
                }
            }
        }
    }

    fn count_refusal(&self, status: u16) {
        *self.stats.lock().refused.entry(status).or_default() += 1;
    }

    /// Queue a ready answer for the request being handled (it goes after earlier answers).
    fn push_reply(
        &mut self,
        key: Key,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        close: bool,
    ) {
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let close = close || c.no_more_requests;
        let persist = c.persist(close);
        let mut bytes = Vec::with_capacity(body.len() + 160);
        let mut hs: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        hs.push(("Content-Type", "application/json"));
        hs.extend_from_slice(headers);
        if self.answering_head {
            // The headers a GET would get, no body.
            http::write_response_head(&mut bytes, status, &hs, body.len(), persist);
        } else {
            http::write_response(&mut bytes, status, &hs, body, persist);
        }
        c.pending.push_back(Reply::Ready { bytes, close });
    }

    /// Answer a refusal; `lead` is the lead's id and whether it is a test, once it has one.
    fn refuse(
        &mut self,
        key: Key,
        r: &Refusal,
        lead: Option<(&str, bool)>,
        headers: &[(&str, &str)],
    ) {
        let mut out = Vec::with_capacity(160);
        lead::write_refusal(&mut out, lead, r.code, &r.message, r.field.as_deref());
        self.count_refusal(r.status);
        // RFC 9110 §11.6.1: a 401 names the scheme it wants.
        let bearer = [("WWW-Authenticate", "Bearer")];
        let headers = if r.status == 401 {
            &bearer[..]
        } else {
            headers
        };
        self.push_reply(key, r.status, headers, &out, false);
    }

    fn handle_request(&mut self, key: Key, head: &RequestHead, body: &[u8]) {
        let path = head.path.split('?').next().unwrap_or("");
        // Every answer to a HEAD request is written synchronously, by `push_reply`.
        self.answering_head = head.method == Method::Head;
        if !http::host_ok(head) {
            let mut out = Vec::with_capacity(160);
            lead::write_error(
                &mut out,
                None,
                "bad_host",
                "an HTTP/1.1 request carries exactly one Host header",
                None,
            );
            self.count_refusal(400);
            if let Some(c) = self.sellers.get_mut(key) {
                c.no_more_requests = true;
                c.rbuf.clear();
            }
            return self.push_reply(key, 400, &[], &out, true);
        }
        if self.drain_until.is_some() && path != "/healthz" {
            let mut out = Vec::with_capacity(160);
            lead::write_error(
                &mut out,
                None,
                "shutting_down",
                "the exchange is shutting down; send the lead again in a moment",
                None,
            );
            self.count_refusal(503);
            if let Some(c) = self.sellers.get_mut(key) {
                c.no_more_requests = true;
            }
            return self.push_reply(key, 503, &[("Retry-After", "1")], &out, true);
        }
        match (head.method, path) {
            (Method::Post, "/v1/leads") => self.start_lead(key, head, body, Flow::Direct),
            (Method::Post, "/v1/ping") => self.start_lead(key, head, body, Flow::Ping),
            (Method::Post, "/v1/post") => self.start_lead(key, head, body, Flow::Post),
            (Method::Get | Method::Head, "/healthz") => {
                self.push_reply(key, 200, &[], b"{\"status\":\"ok\"}", false)
            }
            // `/v1/leads/` names no lead: an unknown endpoint below (a seller's stray slash on
            // a post is not told to use GET).
            (Method::Get, p) if p.len() > LEAD_PATH.len() && p.starts_with(LEAD_PATH) => {
                self.look_up(key, head, &p[LEAD_PATH.len()..])
            }
            (_, p)
                if matches!(p, "/v1/leads" | "/v1/ping" | "/v1/post" | "/healthz")
                    || (p.len() > LEAD_PATH.len() && p.starts_with(LEAD_PATH)) =>
            {
                let allow = match p {
                    "/healthz" => "GET, HEAD",
                    p if p.starts_with(LEAD_PATH) => "GET",
                    _ => "POST",
                };
                let r = Refusal {
                    status: 405,
                    code: "method_not_allowed",
                    message: format!("{} takes {}", path, allow),
                    field: None,
                };
                self.refuse(key, &r, None, &[("Allow", allow)]);
            }
            _ => {
                let r = Refusal {
                    status: 404,
                    code: "not_found",
                    message: format!("no such endpoint: {}", path),
                    field: None,
                };
                self.refuse(key, &r, None, &[]);
            }
        }
    }

    /// `GET /v1/leads/{id}`: queue the question for the journal's reader thread; its answer
    /// comes back as a letter ([`Worker::read_mail`]) and takes this request's place in the
    /// connection's answer order.
    fn look_up(&mut self, key: Key, head: &RequestHead, id: &str) {
        let seller = match self.authenticate(head) {
            Ok(s) => s,
            Err(r) => return self.refuse(key, &r, None, &[]),
        };
        let Some(lead_id) = lookup::canonical_lead_id(id) else {
            let r = Refusal {
                status: 404,
                code: "not_found",
                message: format!("{id:?} is not a lead id"),
                field: Some("lead_id".into()),
            };
            return self.refuse(key, &r, None, &[]);
        };
        self.queue_lookup(key, seller, lead_id, None);
    }

    /// Hand a question about `lead_id` to the journal's reader thread; its answer takes this
    /// request's place in the connection's answer order. `replay`: the kind of a request
    /// retried under an `Idempotency-Key`, answered as the first request was.
    fn queue_lookup(&mut self, key: Key, seller: usize, lead_id: String, replay: Option<Flow>) {
        let Some(conn) = self.sellers.get_mut(key) else {
            return;
        };
        let close = conn.no_more_requests;
        let seq = conn.first_seq + conn.pending.len() as u64;
        let request = lookup::LookupRequest {
            lead_id,
            seller: self.gen.rt.snap.sellers[seller].id.clone(),
            worker: self.id,
            conn: key,
            seq,
            replay: replay.is_some(),
            ping: replay == Some(Flow::Ping),
        };
        if !self.shared.lookups.send(request) {
            let r = Refusal {
                status: 503,
                code: "overloaded",
                message: "too many lead lookups waiting".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        conn.pending.push_back(Reply::Waiting { close });
    }

    /// A lookup's answer from the reader thread: written in its place in the answer order.
    fn looked_up(&mut self, done: lookup::LookupDone) {
        let Some(c) = self.sellers.get_mut(done.conn) else {
            return; // the seller hung up meanwhile
        };
        let Some(idx) = done.seq.checked_sub(c.first_seq).map(|i| i as usize) else {
            return;
        };
        if let Some(Reply::Waiting { close }) = c.pending.get(idx) {
            let close = *close || closing_for_drain(self.drain_until, c, idx);
            let persist = c.persist(close);
            let mut bytes = Vec::with_capacity(done.body.len() + 160);
            let json = ("Content-Type", "application/json");
            let headers: &[(&str, &str)] = match (done.replay, done.status) {
                (true, 409) => &[json, ("Retry-After", "1")],
                (true, _) => &[json, ("Idempotent-Replayed", "true")],
                _ => &[json],
            };
            http::write_response(&mut bytes, done.status, headers, &done.body, persist);
            c.pending[idx] = Reply::Ready { bytes, close };
            self.finish_seller_io(done.conn);
        }
    }

    fn authenticate(&self, head: &RequestHead) -> Result<usize, Refusal> {
        self.authenticate_value(head.authorization.as_deref())
    }

    /// The seller an `Authorization` value names.
    fn authenticate_value(&self, authorization: Option<&str>) -> Result<usize, Refusal> {
        let unauthorized = |m: &str| Refusal {
            status: 401,
            code: "unauthorized",
            message: m.to_string(),
            field: None,
        };
        let Some(auth) = authorization else {
            return Err(unauthorized("missing Authorization: Bearer <api key>"));
        };
        let token = match auth.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(unauthorized("Authorization must be Bearer <api key>")),
        };
        self.gen
            .rt
            .snap
            .seller_by_key(token)
            .ok_or_else(|| unauthorized("unknown api key"))
    }

    fn start_lead(&mut self, key: Key, head: &RequestHead, body: &[u8], flow: Flow) {
        let arrival = self.now;
        steps::mark_after(Step::SellerRecv, Step::SellerDecode);
        let seller = match self.authenticate(head) {
            Ok(s) => s,
            Err(r) => return self.refuse(key, &r, None, &[]),
        };
        // A retry under a key already used is answered from the first request, before it
        // counts against the seller's rate. A `/v1/post` needs no key: its ping id is one.
        let mut keyed: Option<(u128, u64, &str)> = None;
        if let (Some(k), false) = (head.idempotency_key.as_deref(), flow == Flow::Post) {
            if let Err(m) = idempotency::check_key(k) {
                let r = Refusal {
                    status: 400,
                    code: "invalid_idempotency_key",
                    message: m.to_string(),
                    field: None,
                };
                return self.refuse(key, &r, None, &[]);
            }
            let idem = &self.shared.idempotency;
            let id = idem.id(&self.gen.rt.snap.sellers[seller].id, k);
            let fp = idem.fingerprint(flow.journal().code(), body);
            match idem.get(id, fp, self.shared.clock.now_us()) {
                Seen::New => keyed = Some((id, fp, k)),
                seen => return self.answer_keyed_retry(key, seller, seen, flow),
            }
        }
        // A `/v1/post` completes a ping that was counted: one lead, counted once.
        if flow != Flow::Post && !self.gen.rt.admit_rate(seller, self.now) {
            let r = Refusal {
                status: 429,
                code: "rate_limited",
                message: "over this seller's max_leads_per_second".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        steps::mark_after(Step::SellerDecode, Step::AuthRate);
        let gen = self.gen.clone();
        let snap = &gen.rt.snap;
        // A post completes a held ping: it names the ping, and the ping names the campaign.
        let mut held: Option<(String, Vec<HeldBid>, crate::lead::Fields)> = None;
        let mut held_rule: Option<crate::config::Payout> = None;
        let mut ping_bids: Option<u32> = None;
        let mut priced_by_ping: Vec<usize> = Vec::new();
        let mut post_test_mismatch: Option<Refusal> = None;
        let mut req = if flow == Flow::Post {
            let mut post = match lead::parse_post_request(body) {
                Ok(p) => p,
                Err(r) => return self.refuse(key, &r, None, &[]),
            };
            // The id in either case, as a lookup takes it.
            if let Some(id) = super::lookup::canonical_lead_id(&post.ping_id) {
                post.ping_id = id;
            }
            let Claimed {
                campaign,
                test,
                bids,
                fields,
                rule,
                bids_received: received,
                source,
                priced,
            } = match self.claim_held(&post.ping_id, snap, seller) {
                Ok(h) => h,
                Err(r) if r.code == "in_progress" => {
                    return self.refuse(key, &r, None, &[("Retry-After", "1")])
                }
                Err(r) => return self.refuse(key, &r, None, &[]),
            };
            post_test_mismatch = lead::check_post_test(test, post.test).err();
            held = Some((post.ping_id, bids, fields));
            held_rule = rule;
            ping_bids = Some(received);
            priced_by_ping = priced;
            LeadRequest {
                campaign: snap.campaigns[campaign].id.clone(),
                source,
                test,
                lead: post.lead,
                consent: post.consent,
            }
        } else {
            match lead::parse_request(body) {
                Ok(r) => r,
                Err(r) => return self.refuse(key, &r, None, &[]),
            }
        };
        // Buyers get a state as its USPS code, however the seller spelt it (` tx`).
        lead::normalize_codes(&mut req.lead);
        steps::mark_after(Step::AuthRate, Step::Parse);
        // Whatever refuses a post below gives its ping back, so the seller may post again
        // (its hold may have run out meanwhile: a later post is then told 410, not 409).
        let unclaim = |w: &Self, held: &Option<(String, Vec<HeldBid>, crate::lead::Fields)>| {
            if let Some((id, _, _)) = held {
                w.shared.held.lock().set_posted(id, false);
            }
        };
        let Some(campaign) = snap.campaign_by_id(&req.campaign) else {
            let r = Refusal {
                status: 404,
                code: "unknown_campaign",
                message: format!("no campaign {:?}", req.campaign),
                field: Some("campaign".into()),
            };
            return self.refuse(key, &r, None, &[]);
        };
        if !snap.sellers[seller].campaigns.contains(&campaign) {
            // A reload took the campaign from the seller since its ping.
            unclaim(self, &held);
            let r = Refusal {
                status: 403,
                code: "forbidden",
                message: format!(
                    "seller {} may not post to campaign {}",
                    snap.sellers[seller].id, req.campaign
                ),
                field: Some("campaign".into()),
            };
            return self.refuse(key, &r, None, &[]);
        }
        let in_flight = self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if in_flight >= snap.server.max_in_flight || self.leads.is_full() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            unclaim(self, &held);
            let r = Refusal {
                status: 503,
                code: "overloaded",
                message: "too many auctions in flight".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        // A post keeps its ping's id, so the journal tells the whole story under one lead id.
        let ulid = ulid::Ulid::new();
        let lead_id = match &held {
            Some((id, _, _)) => id.clone(),
            None => ulid.to_string(),
        };
        // The key names this lead from now on, unless a retry racing this one on another
        // connection took it first.
        if let Some((id, fp, _)) = keyed {
            let now_us = self.shared.clock.now_us();
            let seen = self.shared.idempotency.claim(id, fp, ulid.0, now_us);
            if seen != Seen::New {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                return self.answer_keyed_retry(key, seller, seen, flow);
            }
        }
        let forget_key = |w: &Self| {
            if let Some((id, _, _)) = keyed {
                w.shared.idempotency.forget(id, ulid.0);
            }
        };
        let c = &snap.campaigns[campaign];
        let seller_id = snap.sellers[seller].id.as_str();
        steps::mark_after(Step::Parse, Step::Admit);
        // Nothing is auctioned that the journal did not take: no record, no sale. Nor is a
        // lead taken whose later records (posts, sales) might find no room: on a full disk
        // the journal keeps what room is left for the leads already running.
        let record = RecordRef::LeadReceived {
            lead_id: &lead_id,
            seller: seller_id,
            campaign: &c.id,
            // An over-long source is refused just below; the record keeps its start (and the
            // body, all of it).
            source: req
                .source
                .as_deref()
                .map(|s| lead::clip_str(s, lead::MAX_SOURCE_BYTES)),
            test: req.test,
            lead_json: body,
            flow: Some(flow.journal()),
            idempotency_key: keyed.map(|k| k.2),
        };
        let received = if self.shared.journal.accepts_leads() {
            self.journal(&record)
        } else {
            None
        };
        if received.is_none() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            unclaim(self, &held);
            forget_key(self);
            let r = Refusal {
                status: 503,
                code: "journal_unavailable",
                message: "the journal cannot record leads right now".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        steps::mark_after(Step::Admit, Step::JournalReceived);
        let valid = match (&held, flow) {
            (_, Flow::Ping) => lead::validate_ping(&req, c),
            (Some((_, _, fields)), _) => lead::validate(&req, c)
                .and_then(|()| lead::check_ping_match(fields, &req.lead))
                .and_then(|()| post_test_mismatch.map_or(Ok(()), Err)),
            (None, _) => lead::validate(&req, c),
        };
        // Compliance, for leads that carry the consumer (a ping does not): suppression first,
        // so that a suppressed consumer takes no room in the dedupe index.
        let valid = match valid {
            Ok(()) if flow != Flow::Ping => self.compliance(c, &req),
            other => other,
        };
        if let Err(r) = valid {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            unclaim(self, &held);
            if let Some(pos) = self.journal(&RecordRef::Rejected {
                lead_id: &lead_id,
                seller: seller_id,
                campaign: &c.id,
                http_status: r.status,
                code: r.code,
                field: r.field.as_deref(),
                message: Some(lead::clip_str(&r.message, MAX_JOURNALED_MESSAGE)),
            }) {
                self.sync_journal(pos);
            }
            {
                let mut st = self.stats.lock();
                let cs = st.campaign(&c.id);
                if held.is_some() {
                    // The ping stays postable: a refused post is an attempt, not a lead.
                    cs.posts_refused += 1;
                } else if flow == Flow::Ping {
                    cs.pings_refused += 1;
                } else {
                    cs.leads += 1;
                    cs.rejected += 1;
                    cs.test_leads += u64::from(req.test);
                }
            }
            return self.refuse(key, &r, Some((&lead_id, req.test)), &[]);
        }
        // The post is taken: the ping is posted for good.
        if let Some((id, _, _)) = &held {
            if let Some(h) = self.shared.held.lock().get_mut(id) {
                h.checking = false;
            }
        }

        let params = Params {
            sale: c.sale,
            reserve_cents: c.reserve_cents,
            ping_timeout: c.ping_timeout,
            post_timeout: c.post_timeout,
            margin: snap.server.engine_margin,
            ping_only: flow == Flow::Ping,
            in_order: false,
            answer_by: c.answer_timeout,
            posted_before: false,
        };
        steps::mark_after(Step::JournalReceived, Step::Validate);
        let fixed_price = c.method != Distribution::PingPost && flow == Flow::Direct;
        // Bids already collected (a held ping) or fixed prices: nothing to ping, and the
        // ping results are not journaled again.
        let from_plan = held.is_some() || fixed_price;
        // Posts down a list in its order, not re-ranked by price.
        let in_order = Params {
            in_order: true,
            ..params
        };
        let auction = match &held {
            Some((_, bids, _)) => {
                // The full lead and its consent decide again who may have it: the ping carried
                // neither the consumer nor, often, the consent (its disclosed buyers and
                // vertical), and caps, hours and pauses may have changed since.
                let eligible = self.eligible_buyers(&gen.rt, campaign, &req, |_| true);
                // A bidder the operator paused, or whose cap or budget other leads used up,
                // since its bid stays in the list: its turn finds it paused or capped, the
                // journal says so, and the seller hears `buyers_paused` or `buyers_capped`,
                // not that nobody was eligible.
                let bids: Vec<HeldBid> = bids
                    .iter()
                    .filter(|(b, _, _)| {
                        eligible.contains(b)
                            || self.only_paused_or_at_cap(&gen.rt, campaign, &req, *b)
                    })
                    .cloned()
                    .collect();
                // Down the held list: bids were held best first, fixed prices in their
                // method's order.
                Auction::from_held(in_order, arrival, self.now, &bids)
            }
            // Fixed-price distribution: no pings, posts in the method's order at each price.
            None if fixed_price => {
                let plan = self.fixed_price_plan(&gen.rt, campaign, &req, c.method);
                Auction::from_held(in_order, arrival, self.now, &plan)
            }
            // A fixed-price campaign's ping pings nobody: it is answered from its buyers'
            // prices (`hold_bids`), whether or not they also take pings elsewhere.
            None if c.method != Distribution::PingPost => {
                Auction::new(params, arrival, self.now, &[])
            }
            None => {
                let eligible = self.eligible_buyers(&gen.rt, campaign, &req, |b| b.ping.is_some());
                Auction::new(params, arrival, self.now, &eligible)
            }
        };
        steps::mark_after(Step::Validate, Step::Match);
        let slots = auction.slots();
        let Some(conn) = self.sellers.get_mut(key) else {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let close = conn.no_more_requests;
        let seq = conn.first_seq + conn.pending.len() as u64;
        conn.pending.push_back(Reply::Waiting { close });
        let lead = Lead {
            id: lead_id,
            flow,
            seller,
            campaign,
            gen: gen.clone(),
            req,
            ping_body: Vec::new(),
            ping_timeout_ms: 0,
            pings_to_attach: 0,
            auction,
            slot_conn: vec![None; slots],
            reservations: (0..slots).map(|_| None).collect(),
            close_journaled: from_plan,
            journaled: vec![0; slots],
            pings_journaled: 0,
            posts_journaled: 0,
            promised: 0,
            answer_promised: false,
            ping_hint: None,
            fallback_done: false,
            priced_by_ping,
            prior: None,
            ping_bids,
            close_from_plan: from_plan,
            payout_cents: 0,
            payout_rule: held_rule.unwrap_or(snap.sellers[seller].payout),
            sold_cents: 0,
            sales: 0,
            origin: (key, seq),
            timer_at: None,
        };
        match self.leads.insert(lead) {
            Some(lk) => self.dirty.push(lk),
            None => {
                // Unreachable: fullness was checked above; answer 503 rather than lose the request.
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                if let Some((id, _, _)) = keyed {
                    self.shared.idempotency.forget(id, ulid.0);
                }
                if let Some(conn) = self.sellers.get_mut(key) {
                    conn.pending.pop_back();
                }
                let r = Refusal {
                    status: 503,
                    code: "overloaded",
                    message: "too many auctions in flight".into(),
                    field: None,
                };
                self.refuse(key, &r, None, &[("Retry-After", "1")]);
            }
        }
    }

    /// A request whose `Idempotency-Key` already names a lead: the same request again gets
    /// that lead's answer (read back from the journal, in this request's place), a different
    /// one 422 `idempotency_key_reused`.
    fn answer_keyed_retry(&mut self, key: Key, seller: usize, seen: Seen, flow: Flow) {
        match seen {
            Seen::Same(e) => {
                let lead_id = ulid::Ulid(e.lead_id).to_string();
                self.queue_lookup(key, seller, lead_id, Some(flow));
            }
            Seen::Different(e) => {
                let r = Refusal {
                    status: 422,
                    code: "idempotency_key_reused",
                    message: format!(
                        "this Idempotency-Key was first sent with another request (lead {}); \
                         a new request takes a new key",
                        ulid::Ulid(e.lead_id)
                    ),
                    field: None,
                };
                self.refuse(key, &r, None, &[]);
            }
            Seen::New => {}
        }
    }

    /// Fixed-price buyers of the campaign that may take this lead, in the order the method
    /// posts to them: waterfall by `priority`, round robin rotating one place per lead across
    /// all workers, weighted by a draw without replacement in proportion to `weight`.
    fn fixed_price_plan(
        &self,
        rt: &Runtime,
        campaign: usize,
        req: &LeadRequest,
        method: Distribution,
    ) -> Vec<HeldBid> {
        let snap = &rt.snap;
        // A price under the campaign's reserve is never posted to: such a buyer takes no turn
        // of the round robin and no share of the weighted draw, which would otherwise pass to
        // the buyer after it.
        let reserve = snap.campaigns[campaign].reserve_cents;
        let mut buyers = self.eligible_buyers(rt, campaign, req, |b| {
            b.price_cents.is_some_and(|p| p >= reserve) && b.post.is_some()
        });
        buyers.sort_by_key(|&b| (snap.buyers[b].priority, b));
        match method {
            Distribution::RoundRobin => {
                let firsts = snap.campaigns[campaign].sale.max_sales();
                rt.round_robin[campaign].order(&mut buyers, firsts)
            }
            Distribution::Weighted => {
                // Weight 0: never drawn.
                buyers.retain(|&b| snap.buyers[b].weight > 0);
                let mut drawn = Vec::with_capacity(buyers.len());
                while !buyers.is_empty() {
                    let total: u64 = buyers
                        .iter()
                        .map(|&b| u64::from(snap.buyers[b].weight))
                        .sum();
                    let mut pick = self.next_random() % total.max(1);
                    let mut at = 0;
                    for (i, &b) in buyers.iter().enumerate() {
                        let w = u64::from(snap.buyers[b].weight);
                        if pick < w {
                            at = i;
                            break;
                        }
                        pick -= w;
                    }
                    drawn.push(buyers.remove(at));
                }
                buyers = drawn;
            }
            _ => {}
        }
        buyers
            .into_iter()
            .map(|b| (b, snap.buyers[b].price_cents.unwrap_or(0), None))
            .collect()
    }

    /// xorshift64*: the weighted draw needs no cryptographic quality, only spread.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 422 `suppressed` for a phone on the campaign's suppression list; 422 `duplicate` for a
    /// phone or email already seen in the campaign within `dedupe_days` (atomically across
    /// workers: of two identical leads at once, exactly one passes).
    fn compliance(
        &mut self,
        c: &crate::config::Campaign,
        req: &LeadRequest,
    ) -> Result<(), Refusal> {
        if let Some(list) = &c.suppression {
            let phone = req.lead.get("phone").and_then(lead::normalized_phone);
            if phone.is_some_and(|p| list.contains(&p)) {
                return Err(Refusal {
                    status: 422,
                    code: "suppressed",
                    message: "this phone number is on the suppression list".into(),
                    field: Some("lead.phone".into()),
                });
            }
        }
        // A test lead is neither checked against the index nor put in it: a seller testing its
        // integration with a real consumer's data must not make that consumer's real lead a
        // duplicate.
        if c.dedupe_days > 0 && !req.test {
            crate::compliance::dedupe_keys(&c.id, &req.lead, &mut self.dedupe_keys);
            let window_us = u64::from(c.dedupe_days) * 86_400_000_000;
            // The exchange's own clock, as for `Idempotency-Key`s: a wall clock stepped a day
            // forward must not let the consumer just sold through again.
            let now_us = self.shared.clock.now_us();
            if let Some(seen) = self
                .shared
                .dedupe
                .first_seen(&self.dedupe_keys, now_us, window_us)
            {
                // The phone's key comes first when the lead has one (`dedupe_keys`).
                let has_phone = req
                    .lead
                    .get("phone")
                    .and_then(lead::normalized_phone)
                    .is_some();
                let field = if seen == 0 && has_phone {
                    "phone"
                } else {
                    "email"
                };
                return Err(Refusal {
                    status: 422,
                    code: "duplicate",
                    message: format!(
                        "the same {} was received in this campaign within {} day{}",
                        field,
                        c.dedupe_days,
                        if c.dedupe_days == 1 { "" } else { "s" }
                    ),
                    field: Some(format!("lead.{field}")),
                });
            }
        }
        Ok(())
    }

    /// Claim a held ping for its post: 404 when unknown (or another seller's), 410 when
    /// expired, 409 when already posted. A ping held under an earlier config is mapped onto
    /// `snap` by id: its campaign (404 when gone) and its bids (those of buyers still
    /// configured).
    fn claim_held(
        &self,
        ping_id: &str,
        snap: &Snapshot,
        seller: usize,
    ) -> Result<Claimed, Refusal> {
        let refusal = |status, code: &'static str, message: &str| Refusal {
            status,
            code,
            message: message.to_string(),
            field: Some("ping_id".into()),
        };
        let same_seller = |id: Option<&str>| id == snap.sellers.get(seller).map(|s| s.id.as_str());
        let mut held = self.shared.held.lock();
        let h = match held.lookup(ping_id, Instant::now()) {
            super::held::Lookup::Live(h)
                if same_seller(h.snap.sellers.get(h.seller).map(|s| s.id.as_str())) =>
            {
                h
            }
            super::held::Lookup::Expired { seller: s, posted } if same_seller(Some(s)) => {
                return Err(if posted {
                    refusal(409, "already_posted", "this ping was already posted")
                } else {
                    refusal(410, "ping_expired", "the bids held for this ping expired")
                });
            }
            // A ping still in its auction holds nothing yet (its id is learnt early only
            // from an `Idempotency-Key` retry's 409 `in_progress`).
            _ => {
                return Err(refusal(
                    404,
                    "unknown_ping",
                    "no such ping holds bids (or its auction has not answered yet)",
                ))
            }
        };
        if h.posted && h.checking {
            // Another post of it is being checked right now: whether it takes the ping is
            // not known yet (a refusal gives it back).
            return Err(refusal(
                409,
                "in_progress",
                "another post of this ping is being checked; send again in a moment \
                 (it stays postable if that post is refused)",
            ));
        }
        if h.posted {
            return Err(refusal(
                409,
                "already_posted",
                "this ping was already posted",
            ));
        }
        let rule = Some(h.payout);
        if std::ptr::eq(&*h.snap, snap) {
            h.posted = true;
            h.checking = true;
            return Ok(Claimed {
                campaign: h.campaign,
                test: h.test,
                bids: h.bids.clone(),
                fields: h.fields.clone(),
                rule,
                bids_received: h.bids_received,
                source: h.source.clone(),
                priced: h.priced.clone(),
            });
        }
        // Held before a reload.
        let Some(campaign) = h
            .snap
            .campaigns
            .get(h.campaign)
            .and_then(|c| snap.campaign_by_id(&c.id))
        else {
            return Err(refusal(
                404,
                "unknown_ping",
                "the campaign of this ping is no longer configured",
            ));
        };
        h.posted = true;
        h.checking = true;
        // Each bid under the buyer that answers to its id now: one per buyer, its best
        // (bids are held best first), where a reload made two buyers one. A hold read back
        // at a start maps its journaled ids, which may name a buyer that config lacked.
        let (bid_ids, priced_ids): (Vec<_>, Vec<&str>) = match &h.journaled {
            Some(j) => (
                j.bids
                    .iter()
                    .map(|(id, cents, bid_id)| (id.as_str(), *cents, *bid_id))
                    .collect(),
                j.priced.iter().map(String::as_str).collect(),
            ),
            None => (
                h.bids
                    .iter()
                    .filter_map(|(b, cents, bid_id)| {
                        Some((h.snap.buyers.get(*b)?.id.as_str(), *cents, *bid_id))
                    })
                    .collect(),
                h.priced
                    .iter()
                    .filter_map(|b| Some(h.snap.buyers.get(*b)?.id.as_str()))
                    .collect(),
            ),
        };
        let bids =
            super::held::one_bid_per_buyer(bid_ids.into_iter().filter_map(
                |(id, cents, bid_id)| Some((snap.buyer_of_record(id)?, (cents, bid_id))),
            ))
            .into_iter()
            .map(|(b, (cents, bid_id))| (b, cents, bid_id))
            .collect();
        let priced = super::held::each_buyer_once(
            priced_ids
                .into_iter()
                .filter_map(|id| snap.buyer_of_record(id)),
        );
        Ok(Claimed {
            campaign,
            test: h.test,
            bids,
            fields: h.fields.clone(),
            rule,
            bids_received: h.bids_received,
            source: h.source.clone(),
            priced,
        })
    }

    /// Buyers of the campaign that may take this lead: filters, consent vertical, hours, pause
    /// and caps (the matcher), the consumer's disclosed buyers when the campaign has
    /// `disclosed_buyers_only`, and `keep` (a ping URL for an auction, a fixed price for
    /// fixed-price distribution).
    fn eligible_buyers(
        &self,
        rt: &Runtime,
        campaign: usize,
        req: &LeadRequest,
        keep: impl Fn(&crate::config::Buyer) -> bool,
    ) -> Vec<usize> {
        let snap = &rt.snap;
        let mut out = Vec::with_capacity(snap.campaigns[campaign].buyers.len());
        snap.matcher.eligible(
            campaign,
            &req.lead,
            lead::consent_vertical(req),
            Utc::now(),
            &rt.caps,
            &mut out,
        );
        let disclosed = if snap.campaigns[campaign].disclosed_buyers_only {
            lead::disclosed_buyers(req)
        } else {
            None
        };
        out.retain(|&b| {
            let buyer = &snap.buyers[b];
            keep(buyer) && disclosed.as_ref().is_none_or(|d| d.contains(&buyer.id))
        });
        out
    }

    /// Whether `buyer` would be eligible for the lead but for an operator's pause or a cap or
    /// budget used up.
    #[cold]
    fn only_paused_or_at_cap(
        &self,
        rt: &Runtime,
        campaign: usize,
        req: &LeadRequest,
        buyer: usize,
    ) -> bool {
        use crate::eligibility::index::Skip;
        let snap = &rt.snap;
        let held_back = matches!(
            snap.matcher.explain(
                campaign,
                buyer,
                &req.lead,
                lead::consent_vertical(req),
                Utc::now(),
                &rt.caps,
            ),
            Err(Skip::Paused | Skip::AtCap)
        );
        held_back
            && (!snap.campaigns[campaign].disclosed_buyers_only
                || lead::disclosed_buyers(req).is_none_or(|d| d.contains(&snap.buyers[buyer].id)))
    }

    /// Move ready answers to the write buffer, write, and close when due.
    fn finish_seller_io(&mut self, key: Key) {
        self.flush_ready(key);
        self.write_seller(key);
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let all_written = c.all_sent();
        let done = (c.close_after_flush && all_written)
            || (c.peer_closed && c.pending.is_empty() && all_written);
        if done {
            self.close_seller(key);
        } else {
            self.resume_if_room(key);
        }
    }

    fn flush_ready(&mut self, key: Key) {
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let mut resumed = false;
        while let Some(Reply::Ready { .. }) = c.pending.front() {
            if let Some(Reply::Ready { bytes, close }) = c.pending.pop_front() {
                c.first_seq += 1;
                if c.wpos == c.wbuf.len() {
                    c.wbuf.clear();
                    c.wpos = 0;
                }
                c.wbuf.extend_from_slice(&bytes);
                resumed = true;
                if close {
                    c.close_after_flush = true;
                    c.pending.clear();
                    break;
                }
            }
        }
        if resumed && !c.no_more_requests {
            // A request whose body waits on `100 Continue` may be told now.
            c.continue_if_expected();
        }
        if resumed && !c.rbuf.is_empty() && !c.no_more_requests {
            // Room freed in the pipeline: parse requests that were waiting in the buffer.
            if let Some(tls) = c.tls.as_mut() {
                // Plaintext the session held back while `rbuf` was full.
                let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
                let (_, state) = tls_plaintext(tls, &mut c.rbuf, &mut self.read_buf, cap, false);
                if state == Some(TlsRead::Closed) {
                    c.peer_closed = true;
                }
            }
            self.process_seller(key);
            if let Some(c) = self.sellers.get_mut(key) {
                if matches!(c.pending.front(), Some(Reply::Ready { .. })) {
                    self.flush_ready(key);
                }
            }
        }
    }

    fn write_seller(&mut self, key: Key) {
        let now = self.now;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let registry = self.poll.registry();
        let token = seller_token(key.index);
        let flushed = match c.tls.as_mut() {
            None => flush(&mut c.stream, &c.wbuf, &mut c.wpos),
            Some(tls) => tls_flush(tls, &mut c.stream, &c.wbuf, &mut c.wpos),
        };
        match flushed {
            Flush::Blocked => {
                c.unsent_since.get_or_insert(now);
                return want_write(registry, &mut c.stream, token, &mut c.write_interest, true);
            }
            Flush::Failed => {
                // The seller is gone: its pending answers are dropped (leads still settle).
                c.wbuf.clear();
                c.wpos = 0;
                c.close_after_flush = true;
                c.peer_closed = true;
            }
            Flush::Done => {}
        }
        c.unsent_since = None;
        want_write(registry, &mut c.stream, token, &mut c.write_interest, false);
        if !c.wbuf.is_empty() {
            // An answer written is activity too: a connection is idle from its last answer,
            // not from its last request, for the idle timeout and for making room.
            c.last_active = now;
        }
        c.wbuf.clear();
        c.wpos = 0;
        if c.close_after_flush {
            self.close_seller(key);
        }
    }

    fn close_seller(&mut self, key: Key) {
        // The place goes back to the count here, as the connection is dropped.
        drop(self.remove_seller(key));
    }

    /// Close a seller connection and hand back its place (to give to a new connection, or to
    /// drop); `None` when there is no such connection.
    fn remove_seller(&mut self, key: Key) -> Option<Place> {
        let mut c = self.sellers.remove(key)?;
        if let Some(tls) = c.tls.as_mut() {
            // Say goodbye properly when the socket takes it; never wait for it.
            tls.send_close_notify();
            while tls.wants_write() {
                match tls.write_tls(&mut c.stream) {
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        Some(c.place)
    }

    // ----- journal -----------------------------------------------------------------------

    /// Append a record; `None` (and an error counted) when the journal refuses it.
    fn journal(&self, rec: &RecordRef<'_>) -> Option<Position> {
        match self.shared.journal.append(unix_micros(), rec) {
            Ok(pos) => Some(pos),
            Err(_) => {
                self.stats.lock().journal_errors += 1;
                None
            }
        }
    }

    /// With `sync = "always"`, make the record durable before the seller hears of it.
    fn sync_journal(&self, pos: Position) {
        if self.shared.journal.sync_to(pos).is_err() {
            self.stats.lock().journal_errors += 1;
        }
    }

    /// Journal what happened to a lead since the last call: each ping's answer as it comes
    /// (while the lead waits on its other buyers, not on the close's path), at the close the
    /// timeouts and the ranking, then each post's result and sale as it becomes known.
    fn journal_progress(&mut self, key: Key) {
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        let snap = &lead.gen.rt.snap;
        // Bids from a held ping or fixed prices were journaled by the auction they came from.
        let results = lead.auction.ping_results();
        if !lead.close_from_plan && lead.pings_journaled < results {
            // The usual case, one answer since the last call, is that answer's slot; otherwise
            // (timeouts at the close, failures) every slot is looked at.
            let hint = lead.ping_hint.take();
            let one = hint.filter(|_| lead.pings_journaled + 1 == results);
            let slots = match one {
                Some(s) => s..s + 1,
                None => 0..lead.auction.slots(),
            };
            for s in slots {
                let Some((o, rt)) = lead.auction.ping_result(s) else {
                    continue;
                };
                if lead.journaled[s] & PING_JOURNALED != 0 {
                    continue;
                }
                lead.journaled[s] |= PING_JOURNALED;
                lead.pings_journaled += 1;
                let (outcome, reason) = match o {
                    PingOutcome::Bid { cents, bid_id } => (
                        journal::PingOutcome::Bid {
                            cents: *cents,
                            bid_id: bid_id.as_deref(),
                        },
                        None,
                    ),
                    PingOutcome::NoBid => (journal::PingOutcome::NoBid, None),
                    PingOutcome::Timeout if lead.journaled[s] & PING_SENT == 0 => (
                        journal::PingOutcome::Timeout,
                        Some("not sent: no free connection to the buyer before the close"),
                    ),
                    PingOutcome::Timeout => (journal::PingOutcome::Timeout, None),
                    PingOutcome::Error(r) => (journal::PingOutcome::Error, Some(r.as_str())),
                    PingOutcome::Invalid(r) => (journal::PingOutcome::Invalid, Some(r.as_str())),
                };
                let buyer = lead.auction.buyer(s);
                if lead.journaled[s] & PING_SENT == 0 {
                    // A ping never written (no free connection before the close, or no way
                    // to the buyer): counted with its result, as it has no `ping_sent`.
                    if let Some(b) = self.stats.lock().buyer_at(lead.gen.stat_slots[buyer]) {
                        b.pings += 1;
                    }
                }
                let rec = RecordRef::PingResult {
                    lead_id: &lead.id,
                    buyer: &snap.buyers[buyer].id,
                    outcome,
                    reason,
                    // 0: never written. A ping written gets at least 1 µs.
                    response_us: rt.map_or(0, |d| (d.as_micros() as u64).max(1)),
                };
                append(&self.shared, &self.stats, &rec);
            }
        }
        if lead.auction.is_closed() && !lead.close_journaled {
            lead.close_journaled = true;
            let ranked: Vec<(&str, i64)> = lead
                .auction
                .ranking()
                .iter()
                .map(|&s| {
                    (
                        snap.buyers[lead.auction.buyer(s)].id.as_str(),
                        bid_of(&lead.auction, s),
                    )
                })
                .collect();
            let bids = lead.auction.outcome_bids();
            append(
                &self.shared,
                &self.stats,
                &RecordRef::AuctionClosed {
                    lead_id: &lead.id,
                    bids,
                    ranked: &ranked,
                },
            );
        }
        let payout_rule = lead.payout_rule;
        let campaign = &snap.campaigns[lead.campaign].id;
        let seller = &snap.sellers[lead.seller].id;
        let post_slots = if lead.posts_journaled < lead.auction.post_results() {
            0..lead.journaled.len()
        } else {
            0..0
        };
        for slot in post_slots {
            if lead.journaled[slot] & POST_JOURNALED != 0 {
                continue;
            }
            let Some(o) = lead.auction.post_result(slot) else {
                continue;
            };
            lead.journaled[slot] |= POST_JOURNALED;
            lead.posts_journaled += 1;
            let buyer = &snap.buyers[lead.auction.buyer(slot)].id;
            let price = lead.auction.post_price(slot);
            let (accepted, reason, buyer_lead_id) = match o {
                PostOutcome::Accepted { buyer_lead_id } => (
                    true,
                    None,
                    buyer_lead_id
                        .as_deref()
                        .map(|b| lead::clip_str(b, journal::MAX_POST_TEXT_BYTES)),
                ),
                PostOutcome::Rejected { reason } | PostOutcome::Failed { reason } => {
                    (false, Some(reason.as_str()), None)
                }
                PostOutcome::TimedOut => (false, Some("timeout"), None),
                PostOutcome::Capped => (false, Some(super::POST_NOT_SENT_CAPPED), None),
                PostOutcome::Paused => (false, Some(super::POST_NOT_SENT_PAUSED), None),
                PostOutcome::Unjournaled => (false, Some(super::POST_NOT_SENT_UNJOURNALED), None),
                PostOutcome::NotWritten => (false, Some(super::POST_NOT_SENT_NO_CONNECTION), None),
            };
            let reason = reason.map(|r| lead::clip_str(r, journal::MAX_POST_TEXT_BYTES));
            // A post sent promised its result and sale room: they may use it (a post never
            // sent, capped or paused, promised none).
            let promised = lead.journaled[slot] & POST_PROMISED != 0;
            let append = if promised { append_money } else { append };
            append(
                &self.shared,
                &self.stats,
                &RecordRef::PostResult {
                    lead_id: &lead.id,
                    buyer,
                    accepted,
                    reason,
                    response_us: lead.auction.post_response(slot).as_micros() as u64,
                    price_cents: price,
                    buyer_lead_id,
                },
            );
            if accepted {
                let payout = payout_rule.for_sale(lead.sold_cents, price, lead.sales == 0);
                lead.sales += 1;
                lead.sold_cents += price;
                lead.payout_cents += payout;
                append(
                    &self.shared,
                    &self.stats,
                    &RecordRef::Sale {
                        lead_id: &lead.id,
                        campaign,
                        seller,
                        buyer,
                        price_cents: price,
                        payout_cents: payout,
                        test: lead.req.test,
                    },
                );
                let home = lead.reservations[slot].as_ref().and_then(|r| r.1.as_ref());
                settle_after_reload(&self.shared, lead, slot, true, price, home);
            }
        }
    }

    // ----- leads -------------------------------------------------------------------------

    fn drive_dirty(&mut self) {
        loop {
            while let Some(k) = self.dirty.pop() {
                self.drive_lead(k);
            }
            let Some(p) = self.short_pools.pop() else {
                return;
            };
            self.refill(p);
        }
    }

    /// Jobs waiting for a connection of pool `p`, which lost one: each still wanted gets a
    /// new connection while the pool has room. Otherwise a buyer that closes after its
    /// answers would leave them waiting for a release that never comes.
    fn refill(&mut self, p: usize) {
        while self.pools[p].total < self.pools[p].max_connections && !self.pools[p].retired {
            let Some(job) = self.next_waiter(p) else {
                return;
            };
            self.dispatch(job);
        }
    }

    /// The waiting job of pool `p` that a free connection serves next, taken from the queue:
    /// its first post; else the oldest ping while it still has half its window (`ping_timeout_ms`
    /// as first told) left; else, the queue standing longer than the buyer can drain it, the
    /// newest ping, which has the most time for the buyer to bid in, the older ones expiring
    /// unsent at their close. A ping with less than [`MIN_PING_LEFT`] left is never written.
    /// Jobs no longer wanted are dropped on the way. `None`: nothing worth a connection.
    fn next_waiter(&mut self, p: usize) -> Option<Job> {
        while let Some(job) = self.pools[p].waiters.front() {
            if self.job_still_wanted(job) {
                break;
            }
            self.pools[p].waiters.pop_front();
        }
        let front = self.pools[p].waiters.front()?;
        if front.kind == JobKind::Post {
            return self.pools[p].waiters.pop_front();
        }
        // Posts wait ahead of every ping, so from here on the queue holds pings only.
        let (left, window) = self.ping_left(front)?;
        if left >= MIN_PING_LEFT && left * 2 >= window {
            return self.pools[p].waiters.pop_front();
        }
        while let Some(job) = self.pools[p].waiters.back() {
            if !self.job_still_wanted(job) {
                self.pools[p].waiters.pop_back();
                continue;
            }
            let (left, _) = self.ping_left(job)?;
            // The newest has the most time left: none older is worth writing either.
            return if left >= MIN_PING_LEFT {
                self.pools[p].waiters.pop_back()
            } else {
                None
            };
        }
        None
    }

    /// A waiting ping's time left for its buyer and its lead's whole ping window.
    fn ping_left(&self, job: &Job) -> Option<(Duration, Duration)> {
        let lead = self.leads.get(job.lead)?;
        Some((
            lead.auction.ping_time_left(self.now),
            Duration::from_millis(lead.ping_timeout_ms),
        ))
    }

    /// Serve pool `p`'s waiting posts at `at`, when one of its idle connections will have been
    /// idle `REUSE_AFTER` (the earlier time is kept when one is already set).
    fn cool_at(&mut self, p: usize, at: Instant) {
        match self.cooling.iter_mut().find(|c| c.1 == p) {
            Some(c) => c.0 = c.0.min(at),
            None => self.cooling.push((at, p)),
        }
    }

    /// When the first of pool `p`'s idle connections has been (or will have been) idle
    /// `REUSE_AFTER`; `None` with none idle.
    fn first_cooled(&self, p: usize) -> Option<Instant> {
        self.pools[p]
            .idle
            .iter()
            .filter_map(|k| self.conns.get(*k))
            .map(|c| c.idle_since + REUSE_AFTER)
            .min()
    }

    /// Jobs waiting for pools whose idle connections have cooled (see [`Worker::cool_at`]):
    /// in queue order, a post once a connection has been idle `REUSE_AFTER` (or the pool has
    /// room for a new one), a ping behind it on any idle connection.
    fn serve_cooled(&mut self) {
        if self.cooling.is_empty() {
            return;
        }
        let now = Instant::now();
        self.now = now;
        let mut i = 0;
        while i < self.cooling.len() {
            if self.cooling[i].0 > now {
                i += 1;
                continue;
            }
            let p = self.cooling.swap_remove(i).1;
            // Each waiting job is looked at once at most.
            for _ in 0..self.pools[p].waiters.len() {
                let Some(job) = self.pools[p].waiters.front() else {
                    break;
                };
                if !self.job_still_wanted(job) {
                    self.pools[p].waiters.pop_front();
                    continue;
                }
                let pool = &self.pools[p];
                let cools = self.first_cooled(p);
                let ready = match job.kind {
                    JobKind::Post => {
                        pool.total < pool.max_connections || cools.is_some_and(|t| t <= now)
                    }
                    JobKind::Ping => !pool.idle.is_empty(),
                };
                if !ready {
                    // Still cooling: `dispatch` is not asked, the post keeps its place.
                    if let Some(at) = cools {
                        self.cool_at(p, at);
                    }
                    break;
                }
                match self.next_waiter(p) {
                    Some(job) => self.dispatch(job),
                    None => break,
                }
            }
        }
    }

    /// Give back the cap reservations of posts that ended without a sale.
    fn release_unsold(&mut self, key: Key) {
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        for slot in 0..lead.reservations.len() {
            let unsold = lead
                .auction
                .post_result(slot)
                .is_some_and(|o| !o.accepted());
            if unsold {
                if let Some((r, home)) = lead.reservations[slot].take() {
                    home.as_ref().unwrap_or(&lead.gen.rt).caps.release(r);
                    settle_after_reload(&self.shared, lead, slot, false, 0, home.as_ref());
                }
            }
        }
    }

    /// Carry out the auction's actions until it waits on a buyer or a deadline.
    fn drive_lead(&mut self, key: Key) {
        self.release_unsold(key);
        self.journal_progress(key);
        loop {
            let Some(lead) = self.leads.get_mut(key) else {
                return;
            };
            let Some(action) = lead.auction.poll_action() else {
                break;
            };
            if matches!(action, Action::SendPost { .. } | Action::Answer) {
                // The close (and earlier posts' results) go in the journal before what follows.
                self.journal_progress(key);
            }
            let Some(lead) = self.leads.get_mut(key) else {
                return;
            };
            match action {
                Action::SendPing { slot, timeout_ms } => {
                    if lead.ping_body.is_empty() {
                        let snap = &lead.gen.rt.snap;
                        let c = &snap.campaigns[lead.campaign];
                        lead::write_ping(&mut lead.ping_body, &lead.id, c, &lead.req, timeout_ms);
                        lead.ping_timeout_ms = timeout_ms;
                        lead.pings_to_attach = (0..lead.auction.slots())
                            .filter(|&s| {
                                snap.buyers[lead.auction.buyer(s)]
                                    .templated(false)
                                    .is_none()
                            })
                            .count();
                    }
                    // `ping_sent` is journaled when the ping is handed to a connection
                    // (`attach`); one that waits for a free connection past the close is
                    // journaled as a timeout that was never sent. The buyer's `pings` counts
                    // it at either record, as a restart rebuilds it from them.
                    self.dispatch(Job {
                        lead: key,
                        slot,
                        kind: JobKind::Ping,
                        retried: false,
                        waited_since: None,
                    });
                }
                Action::SendPost { slot, price_cents } => {
                    let buyer = lead.auction.buyer(slot);
                    let home = cap_home(&self.shared, lead, buyer);
                    let (caps, cap_buyer) = match &home {
                        Some((rt, b)) => (&rt.caps, *b),
                        None => (&lead.gen.rt.caps, buyer),
                    };
                    // A buyer the operator paused since its bid gets no post: the pause is
                    // meant to stop leads at once, running auctions' included.
                    if caps.is_paused(cap_buyer) {
                        let now = self.now;
                        lead.cascade_in_rotation();
                        lead.auction.on_post_result(slot, now, PostOutcome::Paused);
                        continue;
                    }
                    // The cap is taken before the post goes out, so no interleaving of workers
                    // can sell past it; it is given back if the post does not end in a sale.
                    // A test lead is not paid for, so it takes nothing from caps or budgets;
                    // where they would turn a real lead away, it is turned away too, so that
                    // its answer is the one the same real lead would get.
                    let reserved = if lead.req.test {
                        let room = caps.has_room_for(cap_buyer, Utc::now(), price_cents);
                        (!room).then_some(None)
                    } else {
                        Some(caps.reserve(cap_buyer, Utc::now(), price_cents))
                    };
                    match reserved {
                        None => {}
                        Some(Some(r)) => {
                            lead.reservations[slot] = Some((r, home.map(|(rt, _)| rt)));
                        }
                        Some(None) => {
                            let now = self.now;
                            lead.cascade_in_rotation();
                            lead.auction.on_post_result(slot, now, PostOutcome::Capped);
                            continue;
                        }
                    }
                    // `post_sent` is journaled, with its promise, when the post gets a
                    // connection (`attach`): one that waits for a connection the whole of its
                    // time is never sent, and a crash meanwhile must not leave it for a post
                    // the buyer has.
                    // A round robin's first offers take turns, its cascades' posts a rotation
                    // of their own (`RoundRobin`).
                    // The plan's first offers had their turns taken when the plan was ordered
                    // (`RoundRobin::order`): for a seller's post, at its ping, and other
                    // leads may have had turns since.
                    if lead.round_robin() && lead.auction.post_results() > 0 {
                        if let Some(rr) = lead.gen.rt.round_robin.get(lead.campaign) {
                            rr.took(buyer, true);
                        }
                    }
                    self.dispatch(Job {
                        lead: key,
                        slot,
                        kind: JobKind::Post,
                        retried: false,
                        waited_since: None,
                    });
                }
                Action::AbandonPing { slot } | Action::AbandonPost { slot } => {
                    self.abandon(key, slot)
                }
                Action::Answer => {
                    self.finish_lead(key);
                    return;
                }
            }
        }
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        let Some(t) = lead.auction.next_timeout() else {
            return;
        };
        if lead.timer_at == Some(t) {
            return;
        }
        lead.timer_at = Some(t);
        let leads = &self.leads;
        self.timers.push(t, key, |at, k| {
            leads.get(*k).is_some_and(|l| l.timer_at == Some(at))
        });
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        self.now = now;
        while let Some((t, key)) = self.timers.pop_due(now) {
            if let Some(lead) = self.leads.get_mut(key) {
                if lead.timer_at == Some(t) {
                    lead.timer_at = None;
                }
                lead.cascade_in_rotation();
                lead.auction.on_timeout(now);
                self.dirty.push(key);
            }
        }
    }

    fn finish_lead(&mut self, key: Key) {
        steps::mark_after(Step::BuyerDecode, Step::PostResult);
        self.release_unsold(key);
        self.journal_progress(key);
        if self.start_fallback(key) {
            return;
        }
        let Some(mut lead) = self.leads.remove(key) else {
            return;
        };
        // The reservations left belong to accepted posts: they stay counted.
        for (r, _) in lead.reservations.iter_mut().filter_map(Option::take) {
            let _sold: Reservation = r;
        }
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut outcome = lead.auction.outcome();
        if let Some((wait, bids, intake)) = lead.prior {
            outcome.buyer_wait += wait;
            outcome.bids = bids;
            // The lead's intake was the first auction's; the fallback's is part of its close.
            outcome.intake = intake;
        } else if lead.close_from_plan && lead.flow == Flow::Direct {
            outcome.bids = 0; // fixed-price distribution takes no bids
        }
        if let Some(bids) = lead.ping_bids {
            // A post's bids were taken by its ping: the answer counts those, as the ping's
            // auction did, not the held ones still eligible.
            outcome.bids = bids;
        }
        let snap = &lead.gen.rt.snap;
        let campaign = &snap.campaigns[lead.campaign];
        let sold = outcome.status == Status::Sold;
        // The sum of the per-sale payouts journaled with each Sale, so the book adds up.
        let payout = lead.payout_cents;
        let mut status = 200;
        let mut body = Vec::with_capacity(256);
        let mut offered = false;
        if lead.flow == Flow::Ping {
            match self.hold_bids(&lead) {
                Ok((offer, pos)) => {
                    // The offer is on disk (with sync = "always") before the seller hears it.
                    if let Some(pos) = pos {
                        self.sync_journal(pos);
                    }
                    offered = offer.is_some();
                    lead::write_ping_answer(
                        &mut body,
                        &lead.id,
                        offer,
                        campaign.hold.as_millis() as u64,
                        lead.req.test,
                    )
                }
                Err(r) => {
                    status = r.status;
                    lead::write_refusal(
                        &mut body,
                        Some((&lead.id, lead.req.test)),
                        r.code,
                        &r.message,
                        None,
                    );
                }
            }
        }
        let answered = if lead.flow == Flow::Ping {
            None // a ping sells nothing: its story ends with the close already journaled
        } else {
            let rec = RecordRef::LeadAnswered {
                lead_id: &lead.id,
                campaign: &campaign.id,
                seller: &snap.sellers[lead.seller].id,
                status: if sold {
                    LeadStatus::Sold
                } else {
                    LeadStatus::Unsold
                },
                price_cents: outcome.price_cents,
                payout_cents: payout,
                elapsed_us: outcome.elapsed.as_micros() as u64,
                bids: Some(outcome.bids),
                reason: outcome.unsold_reason.map(|r| r.as_str()),
            };
            // A lead that sent a post was promised room for its answer.
            if lead.answer_promised {
                append_money(&self.shared, &self.stats, &rec)
            } else {
                append(&self.shared, &self.stats, &rec)
            }
        };
        // Every post's result and the answer are written: nothing promised is left to keep.
        if lead.promised > 0 {
            self.shared.journal.release(lead.promised);
            lead.promised = 0;
        }
        // The lead's final record is in the map (and with sync = "always", on disk) before
        // the seller's answer is written.
        if let Some(pos) = answered {
            self.sync_journal(pos);
        }
        let sales: Vec<AnswerSale> = outcome
            .sales
            .iter()
            .map(|s| AnswerSale {
                buyer: &snap.buyers[s.buyer].id,
                price_cents: s.price_cents,
            })
            .collect();
        if lead.flow != Flow::Ping {
            lead::write_answer(&mut body, &lead.id, &outcome, &sales, payout, lead.req.test);
        }

        // The operator's counters, before the seller has the answer: whoever reads
        // `/v1/stats` after an answer sees it counted.
        {
            let mut st = self.stats.lock();
            // Held or fixed-price "bids" were not pings of this auction: not counted again.
            count_answers(
                &mut st,
                &lead.auction,
                &lead.gen.stat_slots,
                &lead.journaled,
                !lead.close_from_plan,
            );
            // A test lead counts as the traffic it was, but moves no money.
            let paid = !lead.req.test;
            for s in &outcome.sales {
                if let Some(b) = st.buyer_at(lead.gen.stat_slots[s.buyer]) {
                    b.wins += 1;
                    if paid {
                        b.spent_cents += s.price_cents;
                    }
                }
            }
            let cs = st.campaign(&campaign.id);
            cs.leads += u64::from(lead.flow != Flow::Ping);
            if lead.flow == Flow::Ping {
                // The lead is counted when posted.
                cs.pings += 1;
                cs.pings_bid += u64::from(offered);
            } else if sold {
                cs.sold += 1;
            } else {
                cs.unsold += 1;
            }
            if paid {
                cs.revenue_cents += outcome.price_cents;
                cs.payout_cents += payout;
            } else if lead.flow != Flow::Ping {
                cs.test_leads += 1;
            }
        }
        let (conn_key, seq) = lead.origin;
        // The engine's time ends when the answer is handed to the kernel, as a buyer's time
        // starts when its request is: the `send` itself (on loopback it also runs the
        // receiver's TCP input and wake-up) is measured on its own, `answer_write_us`.
        let mut handed = None;
        if let Some(c) = self.sellers.get_mut(conn_key) {
            if let Some(idx) = seq.checked_sub(c.first_seq).map(|i| i as usize) {
                if let Some(Reply::Waiting { close }) = c.pending.get(idx) {
                    let close = *close || closing_for_drain(self.drain_until, c, idx);
                    let persist = c.persist(close);
                    let mut bytes = Vec::with_capacity(body.len() + 128);
                    http::write_response(
                        &mut bytes,
                        status,
                        &[("Content-Type", "application/json")],
                        &body,
                        persist,
                    );
                    c.pending[idx] = Reply::Ready { bytes, close };
                }
            }
            steps::mark_after(Step::PostResult, Step::AnswerBuild);
            handed = Some(Instant::now());
            self.finish_seller_io(conn_key);
            steps::mark_after(Step::AnswerBuild, Step::AnswerWrite);
        }
        let written = Instant::now();
        let handed = handed.unwrap_or(written);
        let elapsed = written.saturating_duration_since(lead.auction.arrival());
        let overhead = handed
            .saturating_duration_since(lead.auction.arrival())
            .saturating_sub(outcome.buyer_wait);
        let mut st = self.stats.lock();
        st.overhead_us
            .saturating_record(overhead.as_micros() as u64);
        st.elapsed_us.saturating_record(elapsed.as_micros() as u64);
        st.answer_write_us
            .saturating_record(written.saturating_duration_since(handed).as_micros() as u64);
        // A lead that went on to a fallback: its intake is the first auction's, the
        // fallback's posts are buyer time, and the engine's work between them is close.
        let answer = handed
            .saturating_duration_since(lead.auction.arrival())
            .saturating_sub(outcome.elapsed);
        let close = overhead
            .saturating_sub(outcome.intake)
            .saturating_sub(answer);
        st.overhead_intake_us
            .saturating_record(outcome.intake.as_micros() as u64);
        st.overhead_close_us
            .saturating_record(close.as_micros() as u64);
        st.overhead_answer_us
            .saturating_record(answer.as_micros() as u64);
    }

    /// An unsold lead of a campaign with a `fallback` goes to its fixed-price buyers, in the
    /// fallback method's order, before the seller is answered. True when a fallback started.
    fn start_fallback(&mut self, key: Key) -> bool {
        let Some(lead) = self.leads.get(key) else {
            return false;
        };
        let c = &lead.gen.rt.snap.campaigns[lead.campaign];
        let Some(method) = c.fallback else {
            return false;
        };
        if lead.fallback_done
            || lead.flow == Flow::Ping
            || lead.auction.outcome().status == Status::Sold
        {
            return false;
        }
        let rt = lead.gen.rt.clone();
        let snap = rt.snap.clone();
        let mut plan = self.fixed_price_plan(&rt, lead.campaign, &lead.req, method);
        // A buyer the first auction sent the lead to (one that bids and has a fixed price too)
        // is not sent it at its fixed price: it priced this lead itself, by no bid, a bid
        // under the reserve, or a post it rejected, or it bought. One whose ping never got a
        // connection before the close did not see it. A post's ping's auction likewise.
        let in_auction: Vec<usize> = (0..lead.auction.slots())
            .filter(|s| {
                lead.close_from_plan
                    || ping_reached(lead, *s)
                    || lead.auction.post_result(*s).is_some()
            })
            .map(|s| lead.auction.buyer(s))
            .chain(lead.priced_by_ping.iter().copied())
            .collect();
        let posted = (0..lead.auction.slots()).any(|s| lead.auction.post_result(s).is_some());
        plan.retain(|(b, _, _)| !in_auction.contains(b));
        let Some(lead) = self.leads.get_mut(key) else {
            return false;
        };
        lead.fallback_done = true;
        if plan.is_empty() {
            return false;
        }
        // The first auction's requests are done with: one still waiting for a connection, or
        // on one, names a place in it, and the fallback numbers its buyers afresh.
        let pools: Vec<usize> = (0..lead.auction.slots())
            .flat_map(|s| {
                let b = lead.auction.buyer(s);
                [lead.gen.ping_pool.get(b), lead.gen.post_pool.get(b)]
            })
            .filter_map(|p| p.copied().flatten())
            .collect();
        let on_conn: Vec<usize> = (0..lead.slot_conn.len())
            .filter(|s| lead.slot_conn[*s].is_some())
            .collect();
        for p in pools {
            if let Some(pool) = self.pools.get_mut(p) {
                pool.waiters.retain(|j| j.lead != key);
            }
        }
        for slot in on_conn {
            self.abandon(key, slot);
        }
        let Some(lead) = self.leads.get_mut(key) else {
            return false;
        };
        let first = lead.auction.outcome();
        lead.prior = Some((first.buyer_wait, first.bids, first.intake));
        // The first auction's pings and rejected posts, for the operator, before the auction
        // is replaced.
        count_answers(
            &mut self.stats.lock(),
            &lead.auction,
            &lead.gen.stat_slots,
            &lead.journaled,
            !lead.close_from_plan,
        );
        lead.close_from_plan = true;
        let c = &snap.campaigns[lead.campaign];
        let params = Params {
            sale: c.sale,
            // The campaign's floor holds for every sale, as for its auction.
            reserve_cents: c.reserve_cents,
            ping_timeout: c.ping_timeout,
            post_timeout: c.post_timeout,
            margin: snap.server.engine_margin,
            ping_only: false,
            in_order: true,
            answer_by: c.answer_timeout,
            // After posts that failed, the fallback's posts are a cascade.
            posted_before: posted,
        };
        lead.auction = Auction::from_held(params, lead.auction.arrival(), Instant::now(), &plan);
        if let Some(until) = self.drain_until {
            lead.auction.stop_by(until);
        }
        let slots = lead.auction.slots();
        lead.slot_conn = vec![None; slots];
        lead.reservations = (0..slots).map(|_| None).collect();
        lead.journaled = vec![0; slots];
        lead.posts_journaled = 0;
        lead.ping_hint = None;
        lead.close_journaled = true;
        self.dirty.push(key);
        true
    }

    /// Hold a ping's bids for its post, and journal the answer (`PingAnswered`, with its
    /// position). The offer is what the seller would earn from the top `max_sales` bids; `None`
    /// when nobody bid (nothing is held).
    fn hold_bids(&self, lead: &Lead) -> Result<(Option<i64>, Option<Position>), Refusal> {
        let snap = &lead.gen.rt.snap;
        let campaign = &snap.campaigns[lead.campaign];
        let seller = &snap.sellers[lead.seller].id;
        // No offer on a bid the buyer's budget cannot pay now.
        let affordable = |bids: &mut Vec<HeldBid>| {
            if !lead.req.test {
                let caps = &lead.gen.rt.caps;
                let now = Utc::now();
                bids.retain(|&(b, cents, _)| caps.has_room_for(b, now, cents));
            }
        };
        let mut bids = lead.auction.ranked_bids();
        affordable(&mut bids);
        if bids.is_empty() {
            // Fixed prices answer a ping as they would take the lead: a fixed-price campaign's
            // buyers, or a ping-post campaign's fallback when no bid is left, in the method's
            // order at each buyer's price, above the campaign's floor. The post goes down
            // that order (`in_order`).
            let method = match campaign.method {
                Distribution::PingPost => campaign.fallback,
                fixed => Some(fixed),
            };
            if let Some(method) = method {
                bids = self.fixed_price_plan(&lead.gen.rt, lead.campaign, &lead.req, method);
                // A buyer pinged for this lead priced it itself (no bid, or under the reserve).
                // One whose ping never got a connection before the close did not see it, and
                // keeps its place, as in a lead's fallback.
                let pinged: Vec<usize> = (0..lead.auction.slots())
                    .filter(|s| ping_reached(lead, *s))
                    .map(|s| lead.auction.buyer(s))
                    .collect();
                bids.retain(|&(b, cents, _)| {
                    cents > 0 && cents >= campaign.reserve_cents && !pinged.contains(&b)
                });
                affordable(&mut bids);
            }
        }
        if bids.is_empty() {
            let pos = self.journal(&RecordRef::PingAnswered {
                lead_id: &lead.id,
                campaign: &campaign.id,
                seller,
                payout_cents: 0,
                hold_ms: 0,
                held: &[],
                terms: None,
            });
            return Ok((None, pos));
        }
        let rule = snap.sellers[lead.seller].payout;
        let price: i64 = bids
            .iter()
            .take(campaign.sale.max_sales())
            .map(|&(_, cents, _)| cents)
            .sum();
        let offer = rule.for_price(price, true);
        let fields = lead
            .req
            .lead
            .select(campaign.ping_fields.iter().map(String::as_str));
        let held_ms = campaign.hold.as_millis().min(u64::MAX as u128) as u64;
        let listed: Vec<(&str, i64, Option<&str>)> = bids
            .iter()
            .map(|(b, cents, id)| {
                (
                    snap.buyers[*b].id.as_str(),
                    *cents,
                    id.as_ref().map(|t| t.as_str()),
                )
            })
            .collect();
        let record = RecordRef::PingAnswered {
            lead_id: &lead.id,
            campaign: &campaign.id,
            seller,
            payout_cents: offer,
            hold_ms: held_ms,
            held: &listed,
            terms: Some(super::payout_terms(rule)),
        };
        let now = Instant::now();
        let mut held = self.shared.held.lock();
        if !held.has_room(now) {
            return Err(Refusal {
                status: 503,
                code: "overloaded",
                message: "too many pings held".into(),
                field: None,
            });
        }
        // Journaled under the lock, so the record precedes any post's claim of the hold.
        let pos = self.journal(&record);
        held.insert(
            lead.id.clone(),
            super::HeldPing {
                snap: snap.clone(),
                seller: lead.seller,
                campaign: lead.campaign,
                test: lead.req.test,
                bids,
                bids_received: lead.auction.bids(),
                fields,
                expires: now + campaign.hold,
                posted: false,
                checking: false,
                payout: rule,
                source: lead.req.source.clone(),
                // The buyers that saw the ping: one whose ping never got a connection did
                // not price the lead.
                priced: (0..lead.auction.slots())
                    .filter(|s| ping_reached(lead, *s))
                    .map(|s| lead.auction.buyer(s))
                    .collect(),
                journaled: None,
            },
            now,
        );
        Ok((Some(offer), pos))
    }

    // ----- buyer side --------------------------------------------------------------------

    fn pool_of(&self, job: &Job) -> Option<usize> {
        let lead = self.leads.get(job.lead)?;
        let buyer = lead.auction.buyer(job.slot);
        match job.kind {
            JobKind::Ping => lead.gen.ping_pool.get(buyer).copied().flatten(),
            JobKind::Post => lead.gen.post_pool.get(buyer).copied().flatten(),
        }
    }

    /// Give a job a connection: an idle one, a new one, or a place in the pool's queue.
    fn dispatch(&mut self, job: Job) {
        let now = self.now;
        let Some(p) = self.pool_of(&job) else {
            return self.fail_job(job, "buyer has no endpoint for this request");
        };
        if self.pools[p].addr.is_none() {
            return self.fail_job(job, "buyer endpoint unreachable (unresolved host or TLS)");
        }
        // A post waiting for a connection to cool is not overtaken by a new ping taking it:
        // the ping queues behind the post (pings go to the queue's end anyway).
        let post_waiting = job.kind == JobKind::Ping
            && self.pools[p]
                .waiters
                .front()
                .is_some_and(|w| w.kind == JobKind::Post);
        if !job.retried && !post_waiting {
            loop {
                let conns = &self.conns;
                let pool = &self.pools[p];
                let cool = |k: &Key| {
                    conns
                        .get(*k)
                        .is_some_and(|c| now.duration_since(c.idle_since) >= REUSE_AFTER)
                };
                // The idle connection to take, and whether it has been idle `REUSE_AFTER`: a
                // second answer a buyer sends to a ping it just answered may still be on its
                // way to one idle for less, and would pass for this request's answer. When it
                // has not, a new one while the pool has room.
                let pick = match job.kind {
                    // The one idle the shortest of those idle `REUSE_AFTER`, else the one idle
                    // the shortest.
                    JobKind::Ping => pool
                        .idle
                        .iter()
                        .rposition(cool)
                        .map(|i| (i, true))
                        .or_else(|| pool.idle.len().checked_sub(1).map(|i| (i, false))),
                    // A post, the sale, takes the connection idle the longest. Not the one
                    // that carried this lead's ping, though, while there is another or the
                    // pool may open one.
                    JobKind::Post => pool
                        .idle
                        .iter()
                        .position(|k| conns.get(*k).is_none_or(|c| c.last_lead != Some(job.lead)))
                        .map(|i| (i, pool.idle.get(i).is_some_and(cool)))
                        .or_else(|| (!pool.idle.is_empty()).then_some((0, false))),
                };
                let room = pool.total < pool.max_connections;
                // A post is never written on a connection that answered less than
                // `REUSE_AFTER` ago: a buyer that closes right after an answer (without
                // `Connection: close`) would have the sale written into a closed connection
                // and lost, where a ping is asked again. With no room for a new connection it
                // takes one that has cooled (the one that carried its ping, if no other has),
                // or waits for one to cool, or for a new one if the buyer closes it.
                let pick = match pick {
                    Some((_, false)) if job.kind == JobKind::Post && !room => {
                        match pool.idle.iter().position(cool) {
                            Some(i) => Some((i, true)),
                            None => {
                                let at = self.first_cooled(p).unwrap_or(now + REUSE_AFTER);
                                self.cool_at(p, at);
                                break;
                            }
                        }
                    }
                    pick => pick,
                };
                if pick.is_some_and(|(_, cool)| !cool) && room {
                    if let Some(ck) = self.open_conn(p) {
                        self.buyer_wait_begins(&job);
                        let job = Job {
                            waited_since: job.waited_since.or(Some(now)),
                            ..job
                        };
                        return self.attach(ck, job);
                    }
                }
                let ck = pick.map(|(i, _)| self.pools[p].idle.remove(i));
                let Some(ck) = ck else { break };
                let quiet = match self.conns.get_mut(ck) {
                    // Bytes that arrived since the last event-loop turn are not an answer to
                    // the post about to be written: one read (a syscall, so for the post, the
                    // sale, only; a ping's connection is closed by them at the next turn).
                    Some(c) if !c.busy() && job.kind == JobKind::Post => {
                        c.in_idle = false;
                        matches!(c.read_in(&mut self.read_buf, false), Ok(false))
                            && c.rbuf.is_empty()
                    }
                    Some(c) if !c.busy() => {
                        c.in_idle = false;
                        true
                    }
                    Some(c) => {
                        c.in_idle = false;
                        continue;
                    }
                    None => continue,
                };
                if quiet {
                    return self.attach(ck, job);
                }
                self.close_conn(ck);
            }
        }
        let pool = &self.pools[p];
        if pool.is_down(now) {
            let why = format!("buyer unreachable (reconnecting): {}", pool.down_reason);
            return self.fail_job(job, &why);
        }
        if pool.total < pool.max_connections || job.retried {
            match self.open_conn(p) {
                Some(ck) => {
                    self.buyer_wait_begins(&job);
                    let job = Job {
                        waited_since: job.waited_since.or(Some(now)),
                        ..job
                    };
                    return self.attach(ck, job);
                }
                None => return self.fail_job(job, "cannot connect to buyer"),
            }
        }
        if self.pools[p].waiters.len() < MAX_WAITERS_PER_POOL {
            self.buyer_wait_begins(&job);
            let pool = &mut self.pools[p];
            let job = Job {
                waited_since: job.waited_since.or(Some(now)),
                ..job
            };
            // A winner's post goes ahead of pings (a sale waiting costs more than a bid), and
            // after the posts already waiting: each waits its own `post_timeout` at most.
            match job.kind {
                JobKind::Post => {
                    let at = pool
                        .waiters
                        .iter()
                        .position(|j| j.kind == JobKind::Ping)
                        .unwrap_or(pool.waiters.len());
                    pool.waiters.insert(at, job);
                }
                JobKind::Ping => pool.waiters.push_back(job),
            }
        } else {
            self.fail_job(job, "all connections to the buyer are busy");
        }
    }

    /// A ping waits for a connection (a connect, or a free one in the pool) from now: the
    /// wait is the buyer's, its bid or timeout coming whether or not the ping is ever written.
    fn buyer_wait_begins(&mut self, job: &Job) {
        if job.kind == JobKind::Ping && job.waited_since.is_none() {
            if let Some(lead) = self.leads.get_mut(job.lead) {
                lead.auction.ping_waiting(self.now);
            }
        }
    }

    fn open_conn(&mut self, p: usize) -> Option<Key> {
        let now = self.now;
        let addr = self.pools[p].addr?;
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(_) => {
                self.pools[p].connect_failed(now, "connect failed");
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = match &self.pools[p].tls_host {
            None => None,
            Some(host) => {
                let session = self.pools[p]
                    .tls_config
                    .as_ref()
                    .and_then(|cfg| super::tls::connect(cfg, host).ok());
                match session {
                    Some(s) => Some(Box::new(s)),
                    None => {
                        self.pools[p].connect_failed(now, "TLS session could not be set up");
                        return None;
                    }
                }
            }
        };
        let key = self.conns.insert(BuyerConn::new(p, stream, now, tls))?;
        let ok = match self.conns.get_mut(key) {
            Some(c) => self
                .poll
                .registry()
                .register(
                    &mut c.stream,
                    buyer_token(key.index),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok(),
            None => false,
        };
        if !ok {
            self.conns.remove(key);
            return None;
        }
        self.pools[p].total += 1;
        self.pools[p].opened += 1;
        Some(key)
    }

    /// Put a job's request on a connection and start writing it.
    fn attach(&mut self, ck: Key, job: Job) {
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return self.release_conn(ck);
        };
        if job.kind == JobKind::Post
            && lead.journaled[job.slot] & POST_PROMISED == 0
            && !journal_post_sent(&self.shared, &self.stats, lead, job.slot)
        {
            // No post the journal does not have: its sale could not be replayed into the
            // caps after a restart. The reservation is given back with the result.
            self.release_conn(ck);
            let now = self.now;
            if let Some(lead) = self.leads.get_mut(job.lead) {
                lead.cascade_in_rotation();
                lead.auction
                    .on_post_result(job.slot, now, PostOutcome::Unjournaled);
            }
            self.dirty.push(job.lead);
            return;
        }
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return self.release_conn(ck);
        };
        let buyer = lead.auction.buyer(job.slot);
        let b = &lead.gen.rt.snap.buyers[buyer];
        let templated = b.templated(job.kind == JobKind::Post);
        let plain_ping = job.kind == JobKind::Ping && templated.is_none();
        let (endpoint, body): (_, &[u8]) = match (job.kind, templated) {
            // A buyer with its own API: its request is built from its templates.
            (kind, Some(codec)) => {
                self.scratch.clear();
                let price = lead_price(&lead.auction, job.slot);
                let ctx = crate::adapter::Ctx {
                    ping_id: &lead.id,
                    bid_id: lead.auction.bid_id(job.slot),
                    price_cents: (kind == JobKind::Post).then_some(price),
                    campaign: &lead.gen.rt.snap.campaigns[lead.campaign].id,
                    test: lead.req.test,
                    lead: &lead.req.lead,
                    consent: lead.req.consent.as_ref(),
                };
                match kind {
                    JobKind::Ping => {
                        let c = &lead.gen.rt.snap.campaigns[lead.campaign];
                        codec.write_ping(&mut self.scratch, &ctx, &c.ping_fields);
                        (b.ping.as_ref(), &self.scratch)
                    }
                    JobKind::Post => {
                        codec.write_post(&mut self.scratch, &ctx);
                        (b.post.as_ref(), &self.scratch)
                    }
                }
            }
            (JobKind::Ping, None) => {
                let c = &lead.gen.rt.snap.campaigns[lead.campaign];
                let timeout_ms = lead.auction.ping_timeout_ms_at(self.now);
                if timeout_ms + STALE_TIMEOUT_MS < lead.ping_timeout_ms {
                    // This ping waited for a connection (or is a retry): it tells the buyer
                    // the time it really has, not the time it had when the lead was matched.
                    self.scratch.clear();
                    lead::write_ping(&mut self.scratch, &lead.id, c, &lead.req, timeout_ms);
                    (b.ping.as_ref(), &self.scratch)
                } else {
                    if lead.ping_body.is_empty() {
                        // A retry after every request took its copy: the same body again.
                        let timeout_ms = lead.ping_timeout_ms;
                        lead::write_ping(&mut lead.ping_body, &lead.id, c, &lead.req, timeout_ms);
                    }
                    (b.ping.as_ref(), &lead.ping_body)
                }
            }
            (JobKind::Post, None) => {
                self.scratch.clear();
                let price = match lead.auction.post_result(job.slot) {
                    None => lead_price(&lead.auction, job.slot),
                    Some(_) => 0,
                };
                let c = &lead.gen.rt.snap.campaigns[lead.campaign];
                lead::write_post(
                    &mut self.scratch,
                    &lead.id,
                    lead.auction.bid_id(job.slot),
                    price,
                    c,
                    &lead.req,
                );
                (b.post.as_ref(), &self.scratch)
            }
        };
        if endpoint.is_none() {
            self.release_conn(ck);
            return self.fail_job(job, "buyer has no endpoint for this request");
        }
        let Some(c) = self.conns.get_mut(ck) else {
            return self.fail_job(job, "connection lost");
        };
        c.wbuf.clear();
        c.wpos = 0;
        c.on_wire = false;
        c.sent_marked = false;
        c.last_lead = Some(job.lead);
        // The head up to `Content-Length` was built with the config (`Runtime::ping_heads`).
        let rt = &lead.gen.rt;
        let head = match job.kind {
            JobKind::Ping => rt.ping_heads.get(buyer),
            JobKind::Post => rt.post_heads.get(buyer),
        };
        let Some(head) = head.filter(|h| !h.is_empty()) else {
            self.release_conn(ck);
            return self.fail_job(job, "buyer has no endpoint for this request");
        };
        let need = head.len() + http::finish_request_len(body.len());
        if c.wbuf.capacity() < need {
            // One allocation of the request's size, not a doubling series from 8 bytes.
            c.wbuf
                .reserve_exact(need.next_multiple_of(REQUEST_BUFFER_GRAIN));
        }
        c.wbuf.extend_from_slice(head);
        http::finish_request(&mut c.wbuf, body);
        c.job = Some(job);
        lead.slot_conn[job.slot] = Some(ck);
        if job.kind == JobKind::Ping && lead.journaled[job.slot] & PING_SENT == 0 {
            lead.journaled[job.slot] |= PING_SENT;
            if let Some(b) = self.stats.lock().buyer_at(lead.gen.stat_slots[buyer]) {
                b.pings += 1;
            }
            append(
                &self.shared,
                &self.stats,
                &RecordRef::PingSent {
                    lead_id: &lead.id,
                    buyer: &rt.snap.buyers[buyer].id,
                },
            );
        }
        if plain_ping {
            // This request holds its own copy; a lead waiting on its buyers keeps no other.
            lead.pings_to_attach = lead.pings_to_attach.saturating_sub(1);
            if lead.pings_to_attach == 0 {
                lead.ping_body = Vec::new();
            }
        }
        if c.connected {
            self.write_buyer(ck);
        }
    }

    fn write_buyer(&mut self, ck: Key) {
        // The moment the request goes out: the buyer's time starts here, not at the poll
        // wake-up (everything before it, parsing and matching included, is the engine's).
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        let first_byte = c.wpos == 0 && !c.wbuf.is_empty();
        if first_byte {
            steps::mark_after(Step::Match, Step::FirstPing);
        }
        let result = c.write_out();
        if let Some(job) = c.job.filter(|_| first_byte) {
            let step = match job.kind {
                JobKind::Ping => Step::PingWrite,
                JobKind::Post => Step::PostWrite,
            };
            steps::span(step, now);
        }
        if !c.sent_marked && c.request_written() {
            c.sent_marked = true;
            if let Some(job) = c.job {
                if let Some(lead) = self.leads.get_mut(job.lead) {
                    // The wait for a free connection is the buyer's capacity, not the
                    // engine's time; the buyer's response time starts at this write.
                    let sent = job.waited_since.unwrap_or(now);
                    match job.kind {
                        JobKind::Ping => lead.auction.ping_sent(job.slot, sent),
                        JobKind::Post => lead.auction.post_sent(job.slot, sent),
                    }
                    lead.auction
                        .written(job.slot, job.kind == JobKind::Post, now);
                }
            }
        }
        let registry = self.poll.registry();
        let token = buyer_token(ck.index);
        match result {
            Flush::Blocked => {
                want_write(registry, &mut c.stream, token, &mut c.write_interest, true)
            }
            Flush::Failed => self.conn_broken(ck, "write failed"),
            Flush::Done if c.connected && !c.tls_wants_write() => {
                want_write(registry, &mut c.stream, token, &mut c.write_interest, false)
            }
            Flush::Done => {}
        }
    }

    fn on_buyer_event(
        &mut self,
        index: usize,
        readable: bool,
        read_closed: bool,
        writable: bool,
        error: bool,
    ) {
        let now = self.now;
        let Some((ck, c)) = self.conns.at(index) else {
            return;
        };
        if !c.connected {
            if !(writable || error || readable) {
                return;
            }
            let failed = match c.stream.take_error() {
                Ok(Some(_)) | Err(_) => true,
                Ok(None) => c.stream.peer_addr().is_err(),
            };
            if failed {
                let p = c.pool;
                self.pools[p].connect_failed(now, "connect failed");
                return self.conn_broken(ck, "connect failed");
            }
            c.connected = true;
            let p = c.pool;
            let has_job = c.job.is_some();
            // Over TLS the connect has succeeded once the handshake has: at the first answer.
            if c.tls.is_none() {
                self.pools[p].connect_succeeded();
            }
            // Writes the waiting request, if any, and drops the interest in writability.
            self.write_buyer(ck);
            if !has_job {
                self.release_conn(ck);
            }
        } else if writable {
            self.write_buyer(ck);
        }
        if readable {
            self.read_buyer(ck, read_closed);
        }
    }

    /// `read_closed`: the buyer's FIN (or RST) is in: read to the end of the stream, since
    /// with edge-triggered events no later one will come for it.
    fn read_buyer(&mut self, ck: Key, read_closed: bool) {
        let (eof, broken) = match self.conns.get_mut(ck) {
            Some(c) => match c.read_in(&mut self.read_buf, read_closed) {
                Ok(eof) => {
                    // An answer read along with the close is still taken, but the
                    // connection gets no other request.
                    c.peer_closed |= eof;
                    (eof, None)
                }
                Err(reason) => (false, Some(reason)),
            },
            None => return,
        };
        steps::mark_after(Step::TurnWait, Step::BuyerRecv);
        loop {
            let Some(c) = self.conns.get_mut(ck) else {
                return;
            };
            if c.rbuf.is_empty() {
                break;
            }
            if !c.busy() {
                // Bytes nobody asked for: this connection cannot be trusted with the next lead.
                // On a connection that never carried an answer (a port that greets every
                // client: an SSH or SMTP banner) it is a failed connect, backed off like one,
                // not a connection to open again at the next housekeeping tick.
                if c.served == 0 {
                    return self.conn_broken(ck, "bytes before any request: not an HTTP server");
                }
                return self.close_conn(ck);
            }
            match c.decoder.decode(&c.rbuf, &mut c.body) {
                Ok(Decoded::NeedMore { consumed }) => {
                    c.rbuf.drain(..consumed);
                    break;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    c.rbuf.drain(..consumed);
                    let keep = head.keep_alive;
                    // An answer that closes the connection (`Connection: close`, HTTP/1.0):
                    // the connection is not handed to a waiting request as the answer is
                    // taken (`release_conn`), as the buyer reads nothing more on it.
                    c.peer_closed |= !keep;
                    self.on_answer(ck, head.status);
                    if !keep {
                        return self.close_conn(ck);
                    }
                }
                Err(e) => {
                    let limits = crate::http::Limits::with_max_body_bytes(
                        super::buyer::MAX_BUYER_ANSWER_BYTES,
                    );
                    return self.conn_broken(ck, &e.answer_reason(&limits));
                }
            }
        }
        if self.conns.get(ck).is_some_and(|c| c.tls_wants_write()) {
            // The TLS session has records to answer with (handshake, plaintext queued in it).
            self.write_buyer(ck);
        }
        if eof {
            let ended = match self.conns.get_mut(ck) {
                Some(c) if c.busy() => c.decoder.on_eof().ok().flatten().map(|h| h.status),
                Some(_) => None,
                // Closed once its last answer was taken.
                None => return,
            };
            match ended {
                Some(status) => {
                    self.on_answer(ck, status);
                    self.close_conn(ck);
                }
                None => self.conn_broken(ck, "connection closed by buyer"),
            }
        } else if let Some(reason) = broken {
            self.conn_broken(ck, &reason);
        }
    }

    /// A whole answer arrived on a connection: hand it to the lead that waits on it, if any.
    fn on_answer(&mut self, ck: Key, status: u16) {
        let now = self.now;
        steps::mark_after(Step::BuyerRecv, Step::BuyerDecode);
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.served += 1;
        if c.served == 1 {
            let pool = &mut self.pools[c.pool];
            pool.answered();
            pool.connect_succeeded();
        }
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.wbuf.clear();
        c.wpos = 0;
        c.decoder.reset();
        let body = std::mem::take(&mut c.body);
        let job = c.job.take();
        c.draining_since = None;
        if job.is_some_and(|j| j.kind == JobKind::Post) {
            // A post carries the full lead: give its buffer back, or every connection that ever
            // carried one would keep a post-sized buffer. The next request reserves its own size.
            c.wbuf = Vec::new();
        }
        // The answer was not of the kind asked for: see `lead::answer_out_of_step`.
        let mut out_of_step = false;
        if let Some(job) = job {
            if let Some(lead) = self.leads.get_mut(job.lead) {
                if lead.slot_conn[job.slot] == Some(ck) {
                    lead.slot_conn[job.slot] = None;
                    let codec = lead.gen.rt.snap.buyers[lead.auction.buyer(job.slot)]
                        .codec
                        .clone();
                    let results = lead.auction.ping_results();
                    if job.kind == JobKind::Post {
                        lead.cascade_in_rotation();
                    }
                    match job.kind {
                        JobKind::Ping => {
                            let outcome = match &codec {
                                None => lead::parse_bid(status, &body),
                                Some(c) => c.parse_bid(status, &body),
                            };
                            out_of_step = matches!(
                                &outcome,
                                PingOutcome::Invalid(r) if lead::answer_out_of_step(r)
                            );
                            lead.auction.on_ping_result(job.slot, now, outcome);
                        }
                        JobKind::Post => {
                            let outcome = match &codec {
                                None => lead::parse_post_answer(status, &body),
                                Some(c) => c.parse_post(status, &body),
                            };
                            out_of_step = matches!(
                                &outcome,
                                PostOutcome::Rejected { reason } if lead::answer_out_of_step(reason)
                            );
                            lead.auction.on_post_result(job.slot, now, outcome);
                        }
                    }
                    if lead.auction.ping_results() == results + 1 {
                        lead.ping_hint = Some(job.slot);
                    }
                    self.dirty.push(job.lead);
                }
            }
        }
        if let Some(c) = self.conns.get_mut(ck) {
            let mut body = body;
            body.clear();
            c.body = body;
        }
        if out_of_step {
            return self.close_conn(ck);
        }
        self.release_conn(ck);
    }

    /// A connection with nothing outstanding: give it to a waiting job or make it idle.
    fn release_conn(&mut self, ck: Key) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        if c.busy() || !c.connected || c.in_idle {
            return;
        }
        // Bytes already read past the answer just taken (a second answer sent with it) are
        // an answer nobody asked for: a waiting request given this connection would take them
        // for its own.
        if c.peer_closed || !c.rbuf.is_empty() {
            return self.close_conn(ck);
        }
        let p = c.pool;
        if self.pools[p].total > self.pools[p].max_connections && !self.pools[p].retired {
            // A reload lowered the buyer's connection limit: this one is over it.
            return self.close_conn(ck);
        }
        while let Some(job) = self.pools[p].waiters.front() {
            if !self.job_still_wanted(job) {
                self.pools[p].waiters.pop_front();
                continue;
            }
            if job.kind == JobKind::Post && !self.pools[p].retired {
                // Not on a connection that has just answered: see `dispatch`. It goes idle,
                // and the post takes it once it has cooled, if the buyer has not closed it.
                self.cool_at(p, now + REUSE_AFTER);
                break;
            }
            match self.next_waiter(p) {
                Some(job) => return self.attach(ck, job),
                None => break,
            }
        }
        if self.pools[p].retired {
            // The buyer left the config (or moved): its last leads are done with it.
            return self.close_conn(ck);
        }
        if let Some(c) = self.conns.get_mut(ck) {
            c.in_idle = true;
            c.idle_since = now;
            self.pools[p].idle.push(ck);
        }
    }

    fn job_still_wanted(&self, job: &Job) -> bool {
        let Some(lead) = self.leads.get(job.lead) else {
            return false;
        };
        if lead.slot_conn.get(job.slot).is_none_or(Option::is_some) {
            return false;
        }
        match job.kind {
            JobKind::Ping => lead.auction.ping_result(job.slot).is_none(),
            JobKind::Post => lead.auction.post_result(job.slot).is_none(),
        }
    }

    /// The lead no longer waits on this slot's request.
    fn abandon(&mut self, lead_key: Key, slot: usize) {
        let now = self.now;
        let Some(lead) = self.leads.get_mut(lead_key) else {
            return;
        };
        let Some(ck) = lead.slot_conn.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.job = None;
        if c.wpos == 0 && c.wbuf.is_empty() {
            return self.release_conn(ck);
        }
        if c.wpos == 0 {
            // Not a byte written yet: simply forget the request.
            c.wbuf.clear();
            return self.release_conn(ck);
        }
        // Partly or wholly written: the buyer will answer; read that answer and discard it.
        c.draining_since = Some(now);
    }

    /// A job could not be carried out: its slot gets an error (ping) or a failure (post).
    fn fail_job(&mut self, job: Job, reason: &str) {
        let now = self.now;
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return;
        };
        if lead.slot_conn[job.slot].is_some() {
            lead.slot_conn[job.slot] = None;
        }
        match job.kind {
            JobKind::Ping => {
                lead.auction
                    .on_ping_result(job.slot, now, PingOutcome::Error(reason.to_string()))
            }
            JobKind::Post => {
                lead.cascade_in_rotation();
                lead.auction.on_post_result(
                    job.slot,
                    now,
                    PostOutcome::Failed {
                        reason: reason.to_string(),
                    },
                )
            }
        }
        self.dirty.push(job.lead);
    }

    /// A connection failed. Its job is retried once on a fresh connection when the connection
    /// was a reused one that the buyer had closed under us: no byte of the request was
    /// written, or, for a ping, the request went out and the connection ended without a byte
    /// of answer (the buyer's keep-alive timeout fired as it arrived; a ping only asks for a
    /// bid, so asking again is safe, where a post, which sells the consumer, is not sent
    /// twice). Otherwise the job fails.
    fn conn_broken(&mut self, ck: Key, reason: &str) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        if c.served == 0 {
            let pool = &mut self.pools[c.pool];
            if c.connected && c.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                // A TLS handshake that failed (an untrusted certificate, a peer that hung up
                // in it) is a failed connect, with its backoff. (A TCP connect that failed
                // was counted where it failed.) Every lead's ping to this buyer
                // fails the same way, so the operator is told, now and then.
                pool.connect_failed(now, reason);
                let quiet = pool
                    .tls_error_logged
                    .is_some_and(|t| now.saturating_duration_since(t) < TLS_ERROR_LOG_EVERY);
                if !quiet {
                    pool.tls_error_logged = Some(now);
                    let host = pool.tls_host.as_deref().unwrap_or("?");
                    let port = pool.addr.map_or(0, |a| a.port());
                    let why = reason.strip_prefix("TLS: ").unwrap_or(reason);
                    eprintln!(
                        "gavel: warning: https://{host}:{port}: TLS handshake failed: {why} \
                         (its pings fail until it succeeds; told at most once a minute)"
                    );
                }
            }
            if now.saturating_duration_since(c.opened_at) < YOUNG_CONN {
                pool.refill_failed(now);
            }
        }
        let job = c.job.take();
        let unanswered = c.decoder.is_idle() && c.rbuf.is_empty() && c.body.is_empty();
        let ping = job.is_some_and(|j| j.kind == JobKind::Ping);
        let retry = c.served > 0 && (!c.on_wire || (ping && unanswered));
        if let Some(lead) = job.and_then(|j| self.leads.get_mut(j.lead).map(|l| (l, j))) {
            let (lead, j) = lead;
            if lead.slot_conn[j.slot] == Some(ck) {
                lead.slot_conn[j.slot] = None;
            }
        }
        self.close_conn(ck);
        if let Some(job) = job {
            if retry && !job.retried {
                self.dispatch(Job {
                    retried: true,
                    ..job
                });
            } else {
                self.fail_job(job, reason);
            }
        }
    }

    fn close_conn(&mut self, ck: Key) {
        let Some(mut c) = self.conns.remove(ck) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let pool = &mut self.pools[c.pool];
        pool.total = pool.total.saturating_sub(1);
        if c.in_idle {
            pool.idle.retain(|k| *k != ck);
        }
        if !pool.waiters.is_empty() && !self.short_pools.contains(&c.pool) {
            self.short_pools.push(c.pool);
        }
        if let Some(job) = c.job {
            if let Some(lead) = self.leads.get_mut(job.lead) {
                if lead.slot_conn[job.slot] == Some(ck) {
                    lead.slot_conn[job.slot] = None;
                    self.fail_job(job, "connection closed");
                }
            }
        }
    }

    // ----- housekeeping ------------------------------------------------------------------

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.now = now;
        self.next_housekeeping = now + HOUSEKEEPING;
        let head_timeout = self.gen.rt.snap.server.head_timeout;
        let idle_timeout = self.gen.rt.snap.server.idle_timeout;
        let mut keys = std::mem::take(&mut self.sweep_keys);
        self.sellers.keys_into(&mut keys);
        for &key in &keys {
            let Some(c) = self.sellers.get(key) else {
                continue;
            };
            // A full pipeline is the exchange's to answer, not a slow client.
            let slow_request = c.pending.len() < MAX_PIPELINED
                && c.request_started
                    .is_some_and(|t| now.duration_since(t) > head_timeout);
            let idle = c.pending.is_empty()
                && c.wbuf.is_empty()
                && c.rbuf.is_empty()
                && now.duration_since(c.last_active) > idle_timeout;
            // A client that stopped taking its answers (the socket's buffers full for the
            // head timeout) would hold its place, and the answers queued for it, for ever.
            // Its leads stand: it learns their outcome by looking them up.
            let not_reading = c
                .unsent_since
                .is_some_and(|t| now.duration_since(t) > head_timeout);
            if slow_request || idle || not_reading {
                self.close_seller(key);
            }
        }
        self.expire_waiting(now);
        self.conns.keys_into(&mut keys);
        for &key in &keys {
            let Some(c) = self.conns.get(key) else {
                continue;
            };
            let pool = &self.pools[c.pool];
            // Only a connection still connecting or in its handshake can be late: the clock
            // is read for those, not for every open connection at every sweep.
            let opening = !c.connected || c.tls.as_ref().is_some_and(|t| t.is_handshaking());
            let late = opening && now.duration_since(c.opened_at) > CONNECT_TIMEOUT;
            if !c.connected && late {
                let p = c.pool;
                self.pools[p].connect_failed(now, "connect timed out");
                self.conn_broken(key, "connect timed out");
            } else if late {
                // A buyer that takes the connection but never finishes the handshake: a
                // failed connect like any other, told to the operator, and the warm
                // connection is not kept waiting for ever.
                self.conn_broken(key, HANDSHAKE_TIMED_OUT);
            } else {
                // A late answer that never came, or a connection idle past `idle_timeout`,
                // warm ones included: kept longer, it would meet the buyer's own keep-alive
                // timeout, and a request written as the buyer closes it is lost. The warm
                // ones are opened again below.
                let drain_expired = c
                    .draining_since
                    .is_some_and(|t| now.duration_since(t) > DRAIN_TIMEOUT);
                let idle_expired =
                    c.in_idle && now.duration_since(c.idle_since) > pool.idle_timeout;
                if drain_expired || idle_expired {
                    self.close_conn(key);
                }
            }
        }
        self.sweep_keys = keys;
        // Held pings past their expiry are forgotten (a post then gets 404).
        if self.id == 0 {
            self.shared.held.lock().sweep(now);
        }
        // Keep warm connections open ahead of need; none for a buyer the operator paused,
        // which gets no request until it is resumed. (A retired pool wants none.)
        for p in 0..self.pools.len() {
            let pool = &self.pools[p];
            let want = pool.min_idle.min(pool.max_connections);
            if pool.total >= want
                || pool.addr.is_none()
                || !pool.may_refill(now)
                || self.gen.rt.caps.is_paused(pool.buyer)
            {
                continue;
            }
            let mut have = pool.total;
            while have < want {
                if self.open_conn(p).is_none() {
                    break;
                }
                have += 1;
            }
        }
    }
}

fn lead_price(a: &Auction, slot: usize) -> i64 {
    match a.ping_result(slot) {
        Some((PingOutcome::Bid { cents, .. }, _)) => *cents,
        _ => 0,
    }
}

/// Append a record from code that holds a borrow of a lead (so not through `&self`).
fn append(shared: &Shared, stats: &Mutex<WorkerStats>, rec: &RecordRef<'_>) -> Option<Position> {
    match shared.journal.append(unix_micros(), rec) {
        Ok(pos) => Some(pos),
        Err(_) => {
            stats.lock().journal_errors += 1;
            None
        }
    }
}

/// While the exchange drains, the last answer a connection waits for says `Connection: close`
/// (and no request after it is read): the process closes the connection once it is done, and
/// a seller told so sends its next lead elsewhere rather than into a closing socket. An
/// answer with others queued behind it leaves the saying to the last of them.
fn closing_for_drain(drain_until: Option<Instant>, c: &mut SellerConn, idx: usize) -> bool {
    let last = drain_until.is_some() && idx + 1 == c.pending.len();
    if last {
        c.no_more_requests = true;
    }
    last
}

/// Journal a post about to be written, `post_sent`, with the room its result and sale (and
/// the lead's answer, on its first post) are promised; false when the journal refused it.
fn journal_post_sent(
    shared: &Shared,
    stats: &Mutex<WorkerStats>,
    lead: &mut Lead,
    slot: usize,
) -> bool {
    let snap = &lead.gen.rt.snap;
    let buyer = lead.auction.buyer(slot);
    let buyer_id = &snap.buyers[buyer].id;
    let (campaign_id, seller_id) = (
        &snap.campaigns[lead.campaign].id,
        &snap.sellers[lead.seller].id,
    );
    // The post's result and sale will find room in the journal even if no next segment can
    // be made: a sale is never left unwritten for want of it.
    let mut promise = journal::post_promise(&lead.id, buyer_id, campaign_id, seller_id);
    // The first post also promises the lead's answer its room.
    if !lead.answer_promised {
        promise += journal::answer_promise(&lead.id, campaign_id, seller_id);
    }
    let appended = shared.journal.append_promising(
        unix_micros(),
        &RecordRef::PostSent {
            lead_id: &lead.id,
            buyer: buyer_id,
            price_cents: lead.auction.post_price(slot),
        },
        promise,
    );
    let mut stats = stats.lock();
    if appended.is_err() {
        stats.journal_errors += 1;
        return false;
    }
    lead.journaled[slot] |= POST_PROMISED;
    lead.promised += promise;
    lead.answer_promised = true;
    if let Some(b) = stats.buyer_at(lead.gen.stat_slots[buyer]) {
        b.posts += 1;
    }
    true
}

/// Append a post's result or sale, which may use the room its post promised.
fn append_money(
    shared: &Shared,
    stats: &Mutex<WorkerStats>,
    rec: &RecordRef<'_>,
) -> Option<Position> {
    match shared.journal.append_promised(unix_micros(), rec) {
        Ok(pos) => Some(pos),
        Err(_) => {
            stats.lock().journal_errors += 1;
            None
        }
    }
}

fn bid_of(a: &Auction, slot: usize) -> i64 {
    match a.ping_result(slot) {
        Some((PingOutcome::Bid { cents, .. }, _)) => *cents,
        _ => 0,
    }
}

/// Register for writability only while a write waits for socket space: otherwise the ACK of
/// every request or answer would wake the loop.
fn want_write(
    registry: &mio::Registry,
    stream: &mut TcpStream,
    token: Token,
    current: &mut bool,
    want: bool,
) {
    if *current == want {
        return;
    }
    *current = want;
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    let _ = registry.reregister(stream, token, interest);
}

/// What a round of reads on a seller TLS session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsRead {
    /// The connection is open (and the socket drained, or `rbuf` full).
    Open,
    /// The seller ended the session (close_notify, or the transport ended).
    Closed,
    /// Not TLS, or a TLS error: the connection must go.
    Broken,
}

/// Move decrypted bytes out of the session into `rbuf` (dropped when `discard`) while `rbuf`
/// has room. Returns the bytes moved and, when the session has no more to give, how it stands.
fn tls_plaintext(
    tls: &mut rustls::ServerConnection,
    rbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    cap: usize,
    discard: bool,
) -> (usize, Option<TlsRead>) {
    let mut got = 0;
    loop {
        if !discard && rbuf.len() >= cap {
            // Back-pressure: the rest waits in the session and the socket.
            return (got, Some(TlsRead::Open));
        }
        match tls.reader().read(scratch) {
            // close_notify: the seller ended the session cleanly.
            Ok(0) => return (got, Some(TlsRead::Closed)),
            Ok(n) => {
                got += n;
                if !discard {
                    rbuf.extend_from_slice(&scratch[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, None),
            // The transport ended without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return (got, Some(TlsRead::Closed))
            }
            Err(_) => return (got, Some(TlsRead::Broken)),
        }
    }
}

/// Read TLS records from the socket until it is drained, `rbuf` is full, or the session ends;
/// the plaintext goes into `rbuf`. The session's plaintext is always emptied before more
/// records are read, so rustls never holds more than one read's worth.
fn tls_read(
    tls: &mut rustls::ServerConnection,
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    cap: usize,
    discard: bool,
) -> (usize, TlsRead) {
    let mut got = 0;
    loop {
        let (n, state) = tls_plaintext(tls, rbuf, scratch, cap, discard);
        got += n;
        if let Some(state) = state {
            return (got, state);
        }
        match tls.read_tls(stream) {
            // End of stream: the next round of plaintext says how the session ended.
            Ok(0) => {
                let (n, state) = tls_plaintext(tls, rbuf, scratch, cap, discard);
                return (got + n, state.unwrap_or(TlsRead::Closed));
            }
            Ok(_) => {
                if tls.process_new_packets().is_err() {
                    return (got, TlsRead::Broken);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, TlsRead::Open),
            Err(_) => return (got, TlsRead::Broken),
        }
    }
}

/// Write `buf[*pos..]` through the session to the socket: plaintext in (as much as the bounded
/// session takes), records out, until everything is on the socket, the socket is full, or it
/// fails. Also sends what the session has of its own (handshake records, alerts).
fn tls_flush(
    tls: &mut rustls::ServerConnection,
    stream: &mut TcpStream,
    buf: &[u8],
    pos: &mut usize,
) -> Flush {
    use std::io::Write;
    loop {
        while *pos < buf.len() {
            match tls.writer().write(&buf[*pos..]) {
                Ok(0) => break,
                Ok(n) => *pos += n,
                Err(_) => return Flush::Failed,
            }
        }
        if !tls.wants_write() {
            if *pos < buf.len() {
                // Only during a handshake: the session takes no more until the peer speaks.
                return Flush::Blocked;
            }
            return Flush::Done;
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Flush::Failed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(_) => return Flush::Failed,
            }
        }
    }
}

/// The name to verify for an https endpoint.
fn tls_host(e: &Option<Endpoint>) -> Option<String> {
    e.as_ref()
        .filter(|e| e.scheme == Scheme::Https)
        .map(|e| e.host.clone())
}

/// The operator's per-buyer counters for one auction's answers: each ping's outcome and
/// response time (`pinged`: not for bids that were held or fixed prices) and each post sent
/// (`journaled`: its `post_sent` recorded, so counted in `posts`) that did not sell.
fn count_answers(
    st: &mut WorkerStats,
    auction: &Auction,
    stat_slots: &[usize],
    journaled: &[u8],
    pinged: bool,
) {
    for slot in 0..auction.slots() {
        let Some(b) = stat_slots
            .get(auction.buyer(slot))
            .and_then(|&i| st.buyer_at(i))
        else {
            continue;
        };
        if let Some((o, rt)) = auction.ping_result(slot).filter(|_| pinged) {
            match o {
                PingOutcome::Bid { cents, .. } => {
                    b.bids += 1;
                    b.bid_sum_cents += cents;
                }
                PingOutcome::NoBid => b.no_bids += 1,
                PingOutcome::Timeout => b.timeouts += 1,
                PingOutcome::Error(_) => b.errors += 1,
                PingOutcome::Invalid(_) => b.invalid += 1,
            }
            // A timeout at the time waited, the least its answer would have taken; a ping
            // never written has no response time.
            if let Some(rt) = rt {
                b.response_us
                    .saturating_record((rt.as_micros() as u64).max(1));
            }
        }
        // A post counts in `posts` once its `post_sent` is journaled (it was given a
        // connection); every such post not accepted is among the buyer's rejections, one whose
        // connection was not had or written within `post_timeout` included. One never given
        // a connection (kept back by caps or a pause, its buyer unreachable, none free) is
        // no post of the buyer's, so no rejection either.
        let sent = journaled.get(slot).is_some_and(|j| j & POST_PROMISED != 0);
        match auction.post_result(slot) {
            Some(PostOutcome::Accepted { .. }) | None => {}
            Some(_) if sent => b.post_rejects += 1,
            Some(_) => {}
        }
    }
}
