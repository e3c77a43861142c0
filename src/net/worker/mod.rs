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
use crate::auction::{
    Action, Auction, Params, PingOutcome, PostOutcome, Status, MAX_PINGS_PER_LEAD,
};
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
use tls_io::*;

mod auctions;
mod buyers;
mod intake;
mod sellers;
mod tls_io;

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

/// Longest refusal message journaled with its code (and answered again from the journal):
/// messages are the exchange's own sentences, a few quoting a field name.
const MAX_JOURNALED_MESSAGE: usize = 1024;

/// `Lead::journaled` flags: the slot's ping answer, its post result.
const PING_JOURNALED: u8 = 1;
const POST_JOURNALED: u8 = 2;
/// The slot's ping was handed to a connection (and its `ping_sent` journaled).
const PING_SENT: u8 = 4;
/// The slot's `post_sent` promised its result and sale room in the journal
/// ([`journal::post_promise`]); the lead gives back what it promised once it is answered.
const POST_PROMISED: u8 = 8;
/// The slot's ping waited for a connection while the operator paused its buyer, and was
/// not written (its result a timeout, journaled as not sent for the pause).
const PING_PAUSED: u8 = 16;

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
    /// A request of it named a seller (its key was taken): until then every answer it had was
    /// a refusal, and it is a stranger (see [`SellerConn::is_stalled_stranger`]).
    authorised: bool,
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

    /// No request of it has named a seller, it is owed no answer, and either its request has
    /// stopped arriving (or never started) for [`STRANGER_STALL`], or it was answered and is
    /// between requests: nothing of it was authorised, so it is closed before an idle
    /// connection to make room for a new one. Half-sent heads, silent connections and
    /// connections kept alive by requests refused for their credentials, from anyone, cannot
    /// push out the sellers' kept-alive connections.
    fn is_stalled_stranger(&self, now: Instant) -> bool {
        !self.authorised
            && self.pending.is_empty()
            && !self.close_after_flush
            && self.all_sent()
            && ((self.first_seq > 0 && self.is_idle())
                || now.saturating_duration_since(self.last_active) >= STRANGER_STALL)
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
    /// The `Idempotency-Key` the lead was sent under (its index id), given back when the
    /// lead is turned away for want of room (a retry then runs anew).
    idempotency_key: Option<u128>,
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

/// An auction's parameters from its campaign: a lead pinged, posted best bid first, no post
/// before it.
fn campaign_params(c: &crate::config::Campaign, snap: &Snapshot) -> Params {
    Params {
        sale: c.sale,
        reserve_cents: c.reserve_cents,
        ping_timeout: c.ping_timeout,
        post_timeout: c.post_timeout,
        margin: snap.server.engine_margin,
        ping_only: false,
        in_order: false,
        answer_by: c.answer_timeout,
        posted_before: false,
    }
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
            // The timer's own wake-ups (housekeeping, a deadline) are not traffic: an idle
            // exchange does not spin for `busy_poll_us` after each.
            if events.iter().any(|e| e.token() != TIMER) {
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
