//! A fleet of mock buyer endpoints on loopback, speaking the buyer protocol (PROTOCOL.md §2).
//!
//! One thread (or a few) runs a mio event loop over every endpoint's listener and connections.
//! Replies are computed when a request arrives and released when their delay has passed: a
//! binary heap of deadlines drives the poll timeout, so no reply ever blocks the loop and a slow
//! buyer costs only memory. Connections are HTTP/1.1 keep-alive and pipelining-safe: replies
//! leave in request order even when their delays differ.
//!
//! Every endpoint keeps counters, bounded logs of the bodies it received and a histogram of the
//! delay it actually applied, so integration tests can check what each buyer saw.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use serde::Serialize;

use super::dist::{BidDist, Dist, Rng, MAX_DELAY_US};
use super::load::Percentiles;
use super::wire::{self, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::money::{write_dollars, Cents};

/// Most endpoints one fleet serves.
pub const MAX_ENDPOINTS: usize = 4096;
/// Most event-loop threads one fleet runs.
pub const MAX_THREADS: usize = 16;
/// Open connections per endpoint; further connections are accepted and closed at once, as an
/// overloaded buyer would.
pub const MAX_CONNECTIONS_PER_ENDPOINT: usize = 4096;
/// Open connections per event-loop thread (the size bound of its connection slab).
pub const MAX_CONNECTIONS_PER_THREAD: usize = 65_536;
/// Requests parsed ahead of their replies on one connection; beyond this the connection is not
/// read until replies drain, which pushes back on a pipelining client.
pub const MAX_PIPELINED: usize = 256;
/// Unparsed bytes held per connection: one largest request.
pub const MAX_READ_BUFFER: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;
/// Unsent reply bytes per connection before no more replies are released to it.
pub const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Bodies kept per endpoint and kind unless `FleetOptions::body_log_limit` says otherwise.
pub const DEFAULT_BODY_LOG_LIMIT: usize = 10_000;
/// Upper bound of `FleetOptions::body_log_limit`.
pub const MAX_BODY_LOG_LIMIT: usize = 1_000_000;
/// Connections handed from the accepting thread to another thread and not yet picked up.
const INBOX_LIMIT: usize = 4096;
/// Bytes read from a socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Kernel accept queue per listener.
const LISTEN_BACKLOG: i32 = 1024;
/// Longest poll sleep, so a missed wake-up still notices `stop` soon.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Highest latency recorded in an endpoint's histogram, in microseconds (60 s).
const LATENCY_HIST_MAX_US: u64 = 60_000_000;

const WAKER_TOKEN: Token = Token(usize::MAX);
const LISTENER_TOKEN_BASE: usize = 1 << 30;

/// What a request is: a ping asks for a bid, a post delivers the lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request to a path ending in `/ping`, or to another path with no `"price"` in its body.
    Ping,
    /// A request to a path ending in `/post`, or to another path whose body has a `"price"`.
    Post,
}

/// An endpoint's answer to one request, decided by a custom responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// How long after the request arrived the reply is written, in milliseconds.
    pub delay_ms: u64,
    /// HTTP status code (ignored when `raw` is set).
    pub status: u16,
    /// JSON body; written with Content-Length (ignored when `raw` is set).
    pub body: Vec<u8>,
    /// Bytes written verbatim instead of a well-formed response: garbage, half answers,
    /// responses with wrong framing.
    pub raw: Option<Vec<u8>>,
    /// Close the connection once this reply is written; requests after it are ignored.
    pub close: bool,
}

impl Default for Reply {
    fn default() -> Reply {
        Reply {
            delay_ms: 0,
            status: 200,
            body: Vec::new(),
            raw: None,
            close: false,
        }
    }
}

impl Reply {
    /// A response with this status and JSON body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            ..Reply::default()
        }
    }

    /// These bytes written verbatim.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            raw: Some(bytes.into()),
            ..Reply::default()
        }
    }

    /// A bid of `cents`, with an optional `bid_id`.
    pub fn bid(cents: Cents, bid_id: Option<&str>) -> Reply {
        let mut body = Vec::with_capacity(48);
        bid_body(&mut body, cents, bid_id.map(str::as_bytes), None);
        Reply::json(200, body)
    }

    /// `{"bid": 0}`.
    pub fn no_bid() -> Reply {
        Reply::json(200, &b"{\"bid\":0}"[..])
    }

    /// 204 No Content, the bodiless no-bid.
    pub fn no_content() -> Reply {
        Reply::json(204, Vec::new())
    }

    /// `{"status":"accepted"}`.
    pub fn accepted() -> Reply {
        Reply::json(200, &b"{\"status\":\"accepted\"}"[..])
    }

    /// `{"status":"rejected","reason":REASON}` (`reason` is written as given, unescaped).
    pub fn rejected(reason: &str) -> Reply {
        Reply::json(
            200,
            format!("{{\"status\":\"rejected\",\"reason\":\"{reason}\"}}"),
        )
    }

    /// This reply, written `ms` milliseconds after the request arrived.
    pub fn after_ms(mut self, ms: u64) -> Reply {
        self.delay_ms = ms;
        self
    }

    /// This reply, then the connection closed.
    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// A custom answer function: sees each request's kind and body and decides the reply.
pub type Responder = Arc<dyn Fn(Kind, &[u8]) -> Reply + Send + Sync>;

/// How one mock buyer behaves.
#[derive(Clone)]
pub struct BuyerSpec {
    /// Shown in reports; also prefixes `buyer_lead_id`s.
    pub name: String,
    /// Delay before a ping's answer, in milliseconds.
    pub latency: Dist,
    /// Bids in cents.
    pub bid: BidDist,
    /// Fraction of pings answered with no bid; the three forms (`{"bid":0}`, `{"bid":null}`,
    /// 204) take turns so the exchange's handling of each is exercised.
    pub no_bid_rate: f64,
    /// Fraction of posts answered `{"status":"rejected","reason":"duplicate"}`.
    pub reject_rate: f64,
    /// Delay before a post's answer, in milliseconds.
    pub post_latency: Dist,
    /// When set, decides every reply instead of the fields above.
    pub responder: Option<Responder>,
}

impl BuyerSpec {
    /// A buyer that bids $42.50 at once to every ping and accepts every post.
    pub fn new(name: impl Into<String>) -> BuyerSpec {
        BuyerSpec {
            name: name.into(),
            latency: Dist::Fixed(0),
            bid: BidDist::Fixed(4250),
            no_bid_rate: 0.0,
            reject_rate: 0.0,
            post_latency: Dist::Fixed(0),
            responder: None,
        }
    }

    /// This buyer with `responder` deciding every reply.
    pub fn with_responder(
        mut self,
        responder: impl Fn(Kind, &[u8]) -> Reply + Send + Sync + 'static,
    ) -> BuyerSpec {
        self.responder = Some(Arc::new(responder));
        self
    }
}

impl Default for BuyerSpec {
    fn default() -> BuyerSpec {
        BuyerSpec::new("buyer")
    }
}

impl fmt::Debug for BuyerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuyerSpec")
            .field("name", &self.name)
            .field("latency", &self.latency)
            .field("bid", &self.bid)
            .field("no_bid_rate", &self.no_bid_rate)
            .field("reject_rate", &self.reject_rate)
            .field("post_latency", &self.post_latency)
            .field("responder", &self.responder.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// How the fleet runs, beyond each buyer's behaviour.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Address every endpoint listens on.
    pub host: IpAddr,
    /// Endpoint `i` listens on `base_port + i`; `None` lets the OS pick free ports.
    pub base_port: Option<u16>,
    /// Event-loop threads (1..=`MAX_THREADS`). Connections are spread over them.
    pub threads: usize,
    /// Seed of every endpoint's random choices, so a run can be repeated.
    pub seed: u64,
    /// Bodies kept per endpoint and kind (0 keeps none, which load runs want).
    pub body_log_limit: usize,
}

impl Default for FleetOptions {
    fn default() -> FleetOptions {
        FleetOptions {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: None,
            threads: 1,
            seed: 0x6A76_656C,
            body_log_limit: DEFAULT_BODY_LOG_LIMIT,
        }
    }
}

/// A snapshot of one endpoint's counters.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStats {
    /// The buyer's name.
    pub name: String,
    /// Where it listens.
    pub addr: String,
    /// Connections accepted since start.
    pub accepted_connections: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Connections closed at once because the endpoint was at its connection limit.
    pub refused_connections: u64,
    /// Pings received.
    pub pings: u64,
    /// Pings answered with a bid by the built-in behaviour.
    pub bids: u64,
    /// Pings answered with no bid by the built-in behaviour.
    pub no_bids: u64,
    /// Posts received.
    pub posts: u64,
    /// Posts accepted by the built-in behaviour.
    pub accepted_posts: u64,
    /// Posts rejected by the built-in behaviour.
    pub rejected_posts: u64,
    /// Requests that did not parse (answered 400 and closed).
    pub bad_requests: u64,
    /// Time from a ping's arrival to its reply being released for writing, in microseconds.
    pub ping_reply_us: Percentiles,
    /// Time from a post's arrival to its reply being released for writing, in microseconds.
    pub post_reply_us: Percentiles,
}

/// A bounded log of request bodies: the newest `limit` are kept.
struct BodyLog {
    entries: VecDeque<Vec<u8>>,
    limit: usize,
}

impl BodyLog {
    fn push(&mut self, body: &[u8]) {
        if self.limit == 0 {
            return;
        }
        while self.entries.len() >= self.limit {
            self.entries.pop_front();
        }
        self.entries.push_back(body.to_vec());
    }
}

/// What the fleet handle and the event loops share about one endpoint.
struct Shared {
    name: String,
    addr: SocketAddr,
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    pings: AtomicU64,
    bids: AtomicU64,
    no_bids: AtomicU64,
    posts: AtomicU64,
    accepted_posts: AtomicU64,
    rejected_posts: AtomicU64,
    bad_requests: AtomicU64,
    /// Source of `bid_id`s and `buyer_lead_id`s, unique across threads.
    seq: AtomicU64,
    ping_log: Mutex<BodyLog>,
    post_log: Mutex<BodyLog>,
    head_log: Mutex<BodyLog>,
    /// Reply delays of pings and of posts, apart: they are configured apart.
    ping_reply_us: Mutex<Histogram<u64>>,
    post_reply_us: Mutex<Histogram<u64>>,
}

/// A running fleet of mock buyers. Stops (and joins its threads) on `stop` or drop.
pub struct Fleet {
    endpoints: Vec<Arc<Shared>>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    /// Start one endpoint per spec on `127.0.0.1`, on ports the OS picks, one thread.
    pub fn start(specs: Vec<BuyerSpec>) -> io::Result<Fleet> {
        Fleet::start_with(specs, FleetOptions::default())
    }

    /// Start one endpoint per spec with the given options.
    pub fn start_with(specs: Vec<BuyerSpec>, opts: FleetOptions) -> io::Result<Fleet> {
        if specs.len() > MAX_ENDPOINTS {
            return Err(invalid(format!("at most {MAX_ENDPOINTS} buyer endpoints")));
        }
        if opts.threads == 0 || opts.threads > MAX_THREADS {
            return Err(invalid(format!("threads must be 1..={MAX_THREADS}")));
        }
        let log_limit = opts.body_log_limit.min(MAX_BODY_LOG_LIMIT);

        let mut listeners = Vec::with_capacity(specs.len());
        let mut shared = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let port = match opts.base_port {
                None => 0,
                Some(base) => u16::try_from(i)
                    .ok()
                    .and_then(|i| base.checked_add(i))
                    .ok_or_else(|| invalid("base port plus buyer count exceeds 65535".into()))?,
            };
            // Named, so that "Address already in use" says which address.
            let at = SocketAddr::new(opts.host, port);
            let listener =
                bind_listener(at).map_err(|e| io::Error::new(e.kind(), format!("{at}: {e}")))?;
            let addr = listener.local_addr()?;
            let hist = Histogram::new_with_bounds(1, LATENCY_HIST_MAX_US, 2)
                .map_err(|e| io::Error::other(e.to_string()))?;
            shared.push(Arc::new(Shared {
                name: spec.name.clone(),
                addr,
                accepted: AtomicU64::new(0),
                open: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                pings: AtomicU64::new(0),
                bids: AtomicU64::new(0),
                no_bids: AtomicU64::new(0),
                posts: AtomicU64::new(0),
                accepted_posts: AtomicU64::new(0),
                rejected_posts: AtomicU64::new(0),
                bad_requests: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                ping_log: Mutex::new(BodyLog {
                    entries: VecDeque::new(),
                    limit: log_limit,
                }),
                post_log: Mutex::new(BodyLog {
                    entries: VecDeque::new(),
                    limit: log_limit,
                }),
                head_log: Mutex::new(BodyLog {
                    entries: VecDeque::new(),
                    limit: log_limit,
                }),
                ping_reply_us: Mutex::new(hist.clone()),
                post_reply_us: Mutex::new(hist),
            }));
            listeners.push(listener);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut polls = Vec::with_capacity(opts.threads);
        let mut wakers = Vec::with_capacity(opts.threads);
        let mut inboxes = Vec::with_capacity(opts.threads);
        let mut outboxes = Vec::with_capacity(opts.threads);
        for _ in 0..opts.threads {
            let poll = Poll::new()?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?));
            polls.push(poll);
            let (tx, rx) = crossbeam_channel::bounded(INBOX_LIMIT);
            outboxes.push(tx);
            inboxes.push(rx);
        }

        let mut workers = Vec::with_capacity(opts.threads);
        for (id, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
            let endpoints = specs
                .iter()
                .zip(&shared)
                .enumerate()
                .map(|(i, (spec, sh))| EndpointRt {
                    spec: spec.clone(),
                    rng: Rng::new(opts.seed ^ ((i as u64) << 8) ^ id as u64),
                    shared: Arc::clone(sh),
                })
                .collect();
            let peers = if id == 0 {
                outboxes
                    .iter()
                    .cloned()
                    .zip(wakers.iter().cloned())
                    .collect()
            } else {
                Vec::new()
            };
            workers.push(Worker {
                poll,
                listeners: Vec::new(),
                peers,
                inbox,
                endpoints,
                conns: Vec::new(),
                free: Vec::new(),
                next_gen: 0,
                timers: BinaryHeap::new(),
                stop: Arc::clone(&stop),
                next_peer: 0,
                scratch: vec![0u8; READ_CHUNK],
            });
        }
        if let Some(first) = workers.first_mut() {
            for (i, mut listener) in listeners.into_iter().enumerate() {
                first.poll.registry().register(
                    &mut listener,
                    Token(LISTENER_TOKEN_BASE + i),
                    Interest::READABLE,
                )?;
                first.listeners.push(listener);
            }
        }

        let mut threads = Vec::with_capacity(workers.len());
        let mut fleet = Fleet {
            endpoints: shared,
            wakers,
            threads: Vec::new(),
            stop,
        };
        for (id, worker) in workers.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("gavel-buyers-{id}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    fleet.threads = threads;
                    fleet.stop();
                    return Err(e);
                }
            }
        }
        fleet.threads = threads;
        Ok(fleet)
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the fleet has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Where endpoint `i` listens. Panics when `i >= len()`, a caller's indexing mistake.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.endpoints[i].addr
    }

    /// Endpoint `i`'s name. Panics when `i >= len()`.
    pub fn name(&self, i: usize) -> &str {
        &self.endpoints[i].name
    }

    /// `http://ADDR/ping` for endpoint `i`, ready for a buyer's `ping_url`.
    pub fn ping_url(&self, i: usize) -> String {
        format!("http://{}/ping", self.addr(i))
    }

    /// `http://ADDR/post` for endpoint `i`, ready for a buyer's `post_url`.
    pub fn post_url(&self, i: usize) -> String {
        format!("http://{}/post", self.addr(i))
    }

    fn counter(&self, i: usize, f: impl Fn(&Shared) -> &AtomicU64) -> u64 {
        self.endpoints
            .get(i)
            .map_or(0, |s| f(s).load(Ordering::Acquire))
    }

    /// Connections endpoint `i` accepted since start (0 for an unknown endpoint).
    pub fn accepted_connections(&self, i: usize) -> u64 {
        self.counter(i, |s| &s.accepted)
    }

    /// Connections open at endpoint `i` now.
    pub fn open_connections(&self, i: usize) -> u64 {
        self.counter(i, |s| &s.open)
    }

    /// Pings endpoint `i` received.
    pub fn pings(&self, i: usize) -> u64 {
        self.counter(i, |s| &s.pings)
    }

    /// Posts endpoint `i` received.
    pub fn posts(&self, i: usize) -> u64 {
        self.counter(i, |s| &s.posts)
    }

    /// The newest ping bodies endpoint `i` received, oldest first (bounded by the body log limit).
    pub fn ping_bodies(&self, i: usize) -> Vec<Vec<u8>> {
        self.endpoints.get(i).map_or_else(Vec::new, |s| {
            s.ping_log.lock().entries.iter().cloned().collect()
        })
    }

    /// The newest post bodies endpoint `i` received, oldest first.
    pub fn post_bodies(&self, i: usize) -> Vec<Vec<u8>> {
        self.endpoints.get(i).map_or_else(Vec::new, |s| {
            s.post_log.lock().entries.iter().cloned().collect()
        })
    }

    /// The raw heads (request line and headers) of the newest requests of either kind endpoint
    /// `i` received, oldest first: for checking `Host`, `Content-Type` and configured headers.
    pub fn request_heads(&self, i: usize) -> Vec<Vec<u8>> {
        self.endpoints.get(i).map_or_else(Vec::new, |s| {
            s.head_log.lock().entries.iter().cloned().collect()
        })
    }

    /// Percentiles of the time from a request's arrival to its reply being written at
    /// endpoint `i`, in microseconds: pings and posts together.
    pub fn latency_us(&self, i: usize) -> Percentiles {
        self.endpoints
            .get(i)
            .map_or_else(Percentiles::default, |s| {
                let mut all = s.ping_reply_us.lock().clone();
                // Both histograms have the same bounds, so adding cannot fail.
                let _ = all.add(&*s.post_reply_us.lock());
                Percentiles::from_hist(&all)
            })
    }

    /// Like [`Fleet::latency_us`], for pings only.
    pub fn ping_reply_us(&self, i: usize) -> Percentiles {
        self.endpoints
            .get(i)
            .map_or_else(Percentiles::default, |s| {
                Percentiles::from_hist(&s.ping_reply_us.lock())
            })
    }

    /// Like [`Fleet::latency_us`], for posts only.
    pub fn post_reply_us(&self, i: usize) -> Percentiles {
        self.endpoints
            .get(i)
            .map_or_else(Percentiles::default, |s| {
                Percentiles::from_hist(&s.post_reply_us.lock())
            })
    }

    /// All of endpoint `i`'s counters at once; `None` for an unknown endpoint.
    pub fn stats(&self, i: usize) -> Option<EndpointStats> {
        let s = self.endpoints.get(i)?;
        let load = |c: &AtomicU64| c.load(Ordering::Acquire);
        Some(EndpointStats {
            name: s.name.clone(),
            addr: s.addr.to_string(),
            accepted_connections: load(&s.accepted),
            open_connections: load(&s.open),
            refused_connections: load(&s.refused),
            pings: load(&s.pings),
            bids: load(&s.bids),
            no_bids: load(&s.no_bids),
            posts: load(&s.posts),
            accepted_posts: load(&s.accepted_posts),
            rejected_posts: load(&s.rejected_posts),
            bad_requests: load(&s.bad_requests),
            ping_reply_us: Percentiles::from_hist(&s.ping_reply_us.lock()),
            post_reply_us: Percentiles::from_hist(&s.post_reply_us.lock()),
        })
    }

    /// Stop every event loop, close every socket and join the threads. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            // A failed wake only delays the stop until the next idle poll.
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            // A panicked loop has nothing left to clean up; stopping must not panic in turn.
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A listening socket with SO_REUSEADDR, so a fleet restarted on fixed ports does not wait
/// out TIME_WAIT.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// One endpoint as one event loop sees it: the spec, this thread's random stream, the counters.
struct EndpointRt {
    spec: BuyerSpec,
    rng: Rng,
    shared: Arc<Shared>,
}

/// A reply computed and waiting for its release time.
struct Pending {
    due: Instant,
    received: Instant,
    /// What it answers; `None` for the 400 to a request that did not parse.
    kind: Option<Kind>,
    bytes: Vec<u8>,
    close: bool,
}

struct Conn {
    stream: TcpStream,
    ep: usize,
    gen: u64,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    queue: VecDeque<Pending>,
    /// The client closed its side; answer what was asked, then close.
    peer_done: bool,
    /// A reply will close the connection; later requests are not read.
    stop_parsing: bool,
    /// A closing reply was released; close once it is written.
    closing: bool,
    /// The deadline a timer is armed for, to avoid piling duplicate timers.
    timer_at: Option<Instant>,
}

/// The way into another event loop: its inbox of (endpoint, connection) and its waker.
type Handoff = (Sender<(usize, TcpStream)>, Arc<Waker>);

struct Worker {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Where the accepting thread hands connections to the others (empty elsewhere).
    peers: Vec<Handoff>,
    inbox: Receiver<(usize, TcpStream)>,
    endpoints: Vec<EndpointRt>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_gen: u64,
    /// Reply release deadlines: (due, slot, connection generation).
    timers: BinaryHeap<std::cmp::Reverse<(Instant, usize, u64)>>,
    stop: Arc<AtomicBool>,
    next_peer: usize,
    scratch: Vec<u8>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let timeout = self
                .timers
                .peek()
                .map_or(IDLE_POLL, |t| t.0 .0.saturating_duration_since(now))
                .min(IDLE_POLL);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER_TOKEN => self.adopt_inbox(now),
                    Token(t) if t >= LISTENER_TOKEN_BASE => {
                        self.accept(t - LISTENER_TOKEN_BASE, now)
                    }
                    Token(slot) => self.drive(slot, now),
                }
            }
            while let Some(std::cmp::Reverse((due, slot, gen))) = self.timers.peek().copied() {
                if due > now {
                    break;
                }
                self.timers.pop();
                let live = match self.conns.get_mut(slot).and_then(Option::as_mut) {
                    Some(c) if c.gen == gen => {
                        c.timer_at = None;
                        true
                    }
                    _ => false,
                };
                if live {
                    self.drive(slot, now);
                }
            }
        }
    }

    fn accept(&mut self, ep: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(ep) else {
                return;
            };
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept: drop it, keep serving.
                Err(_) => return,
            };
            let Some(endpoint) = self.endpoints.get(ep) else {
                return;
            };
            let shared = &endpoint.shared;
            if shared.open.load(Ordering::Acquire) >= MAX_CONNECTIONS_PER_ENDPOINT as u64 {
                shared.refused.fetch_add(1, Ordering::AcqRel);
                continue;
            }
            shared.accepted.fetch_add(1, Ordering::AcqRel);
            shared.open.fetch_add(1, Ordering::AcqRel);
            // Latency to the exchange matters more than packet count on loopback.
            let _ = stream.set_nodelay(true);
            self.dispatch(ep, stream, now);
        }
    }

    /// Give the connection to the next thread in turn; keep it when that is this thread or the
    /// other thread's inbox is full.
    fn dispatch(&mut self, ep: usize, stream: TcpStream, now: Instant) {
        let n = self.peers.len().max(1);
        let target = self.next_peer % n;
        self.next_peer = self.next_peer.wrapping_add(1);
        if target == 0 {
            self.adopt(ep, stream, now);
            return;
        }
        let Some((tx, waker)) = self.peers.get(target) else {
            self.adopt(ep, stream, now);
            return;
        };
        match tx.try_send((ep, stream)) {
            Ok(()) => {
                let _ = waker.wake();
            }
            Err(TrySendError::Full((ep, stream)))
            | Err(TrySendError::Disconnected((ep, stream))) => self.adopt(ep, stream, now),
        }
    }

    fn adopt_inbox(&mut self, now: Instant) {
        while let Ok((ep, stream)) = self.inbox.try_recv() {
            self.adopt(ep, stream, now);
        }
    }

    fn adopt(&mut self, ep: usize, mut stream: TcpStream, now: Instant) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.conns.len() < MAX_CONNECTIONS_PER_THREAD => {
                self.conns.push(None);
                self.conns.len() - 1
            }
            None => {
                self.release_count(ep);
                return;
            }
        };
        let registered = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.free.push(slot);
            self.release_count(ep);
            return;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        self.conns[slot] = Some(Conn {
            stream,
            ep,
            gen: self.next_gen,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            queue: VecDeque::new(),
            peer_done: false,
            stop_parsing: false,
            closing: false,
            timer_at: None,
        });
        self.drive(slot, now);
    }

    fn release_count(&self, ep: usize) {
        if let Some(e) = self.endpoints.get(ep) {
            e.shared.open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn drive(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(ep) = self.endpoints.get_mut(conn.ep) else {
            return;
        };
        if step(conn, ep, &mut self.scratch, now) {
            if let Some(front) = conn.queue.front() {
                if front.due > now && conn.timer_at.is_none_or(|t| t > front.due) {
                    self.timers
                        .push(std::cmp::Reverse((front.due, slot, conn.gen)));
                    conn.timer_at = Some(front.due);
                }
            }
            return;
        }
        let ep = conn.ep;
        if let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            // Half-close first so the last reply is delivered before the socket goes away.
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        self.free.push(slot);
        self.release_count(ep);
    }
}

/// Move bytes for one connection as far as they go without blocking. `false`: close it.
fn step(conn: &mut Conn, ep: &mut EndpointRt, scratch: &mut [u8], now: Instant) -> bool {
    loop {
        let mut progressed = false;
        if !conn.peer_done && !conn.stop_parsing {
            while conn.rbuf.len() < MAX_READ_BUFFER {
                let room = (MAX_READ_BUFFER - conn.rbuf.len()).min(scratch.len());
                match conn.stream.read(&mut scratch[..room]) {
                    Ok(0) => {
                        conn.peer_done = true;
                        break;
                    }
                    Ok(n) => conn.rbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
        }

        let mut consumed = 0;
        while !conn.stop_parsing && conn.queue.len() < MAX_PIPELINED {
            let rest = &conn.rbuf[consumed..];
            match wire::parse_request(rest) {
                Ok(Some(head)) => {
                    let end = head.head_len + head.body_len;
                    ep.shared.head_log.lock().push(&rest[..head.head_len]);
                    let body = &rest[head.head_len..end];
                    let pending = handle(ep, &head, body, now);
                    if pending.close {
                        conn.stop_parsing = true;
                    }
                    conn.queue.push_back(pending);
                    consumed += end;
                    progressed = true;
                }
                Ok(None) => break,
                Err(_) => {
                    ep.shared.bad_requests.fetch_add(1, Ordering::AcqRel);
                    let reply = Reply::json(400, &b"{\"error\":\"bad request\"}"[..]);
                    conn.queue.push_back(Pending {
                        due: now,
                        received: now,
                        kind: None,
                        bytes: encode(&reply, true),
                        close: true,
                    });
                    conn.stop_parsing = true;
                    progressed = true;
                }
            }
        }
        if consumed > 0 {
            conn.rbuf.drain(..consumed);
        }

        while !conn.closing && conn.wbuf.len() - conn.wpos < MAX_WRITE_BUFFER {
            match conn.queue.front() {
                Some(p) if p.due <= now => {}
                _ => break,
            }
            let Some(p) = conn.queue.pop_front() else {
                break;
            };
            let waited = now.saturating_duration_since(p.received).as_micros();
            let hist = match p.kind {
                Some(Kind::Ping) => Some(&ep.shared.ping_reply_us),
                Some(Kind::Post) => Some(&ep.shared.post_reply_us),
                None => None,
            };
            if let Some(h) = hist {
                h.lock()
                    .saturating_record(u64::try_from(waited).unwrap_or(u64::MAX));
            }
            conn.wbuf.extend_from_slice(&p.bytes);
            if p.close {
                conn.closing = true;
                conn.queue.clear();
            }
            progressed = true;
        }

        while conn.wpos < conn.wbuf.len() {
            match conn.stream.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => return false,
                Ok(n) => conn.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if conn.wpos == conn.wbuf.len() {
            conn.wbuf.clear();
            conn.wpos = 0;
            if conn.closing {
                return false;
            }
            if conn.peer_done && conn.queue.is_empty() {
                return false;
            }
        }
        if !progressed {
            return true;
        }
    }
}

/// Count, log and answer one request; the reply waits in the connection's queue until due.
fn handle(ep: &mut EndpointRt, head: &wire::RequestHead, body: &[u8], now: Instant) -> Pending {
    let kind = if head.path.ends_with("/ping") {
        Kind::Ping
    } else if head.path.ends_with("/post") || contains(body, b"\"price\"") {
        Kind::Post
    } else {
        Kind::Ping
    };
    let shared = &ep.shared;
    match kind {
        Kind::Ping => {
            shared.pings.fetch_add(1, Ordering::AcqRel);
            shared.ping_log.lock().push(body);
        }
        Kind::Post => {
            shared.posts.fetch_add(1, Ordering::AcqRel);
            shared.post_log.lock().push(body);
        }
    }
    let (reply, delay_us) = match &ep.spec.responder {
        Some(responder) => {
            let reply = responder(kind, body);
            let delay_us = reply.delay_ms.saturating_mul(1000).min(MAX_DELAY_US);
            (reply, delay_us)
        }
        None => built_in(ep, kind),
    };
    let close = reply.close || !head.keep_alive;
    Pending {
        due: now + Duration::from_micros(delay_us),
        received: now,
        kind: Some(kind),
        bytes: encode(&reply, close),
        close,
    }
}

/// The spec's own behaviour: bid or not, accept or reject, after a sampled delay.
fn built_in(ep: &mut EndpointRt, kind: Kind) -> (Reply, u64) {
    let shared = &ep.shared;
    let n = shared.seq.fetch_add(1, Ordering::AcqRel) + 1;
    match kind {
        Kind::Ping => {
            let delay_us = ep.spec.latency.sample_us(&mut ep.rng);
            if ep.rng.chance(ep.spec.no_bid_rate) {
                let count = shared.no_bids.fetch_add(1, Ordering::AcqRel);
                let reply = match count % 3 {
                    0 => Reply::no_bid(),
                    1 => Reply::json(200, &b"{\"bid\":null}"[..]),
                    _ => Reply::no_content(),
                };
                return (reply, delay_us);
            }
            shared.bids.fetch_add(1, Ordering::AcqRel);
            let cents = ep.spec.bid.sample(&mut ep.rng);
            let mut body = Vec::with_capacity(48);
            bid_body(&mut body, cents, None, Some(n));
            (Reply::json(200, body), delay_us)
        }
        Kind::Post => {
            let delay_us = ep.spec.post_latency.sample_us(&mut ep.rng);
            if ep.rng.chance(ep.spec.reject_rate) {
                shared.rejected_posts.fetch_add(1, Ordering::AcqRel);
                return (Reply::rejected("duplicate"), delay_us);
            }
            shared.accepted_posts.fetch_add(1, Ordering::AcqRel);
            let mut body = Vec::with_capacity(64);
            body.extend_from_slice(b"{\"status\":\"accepted\",\"buyer_lead_id\":\"");
            body.extend(shared.name.bytes().filter(|b| *b != b'"' && *b != b'\\'));
            body.push(b'-');
            wire::push_u64(&mut body, n);
            body.extend_from_slice(b"\"}");
            (Reply::json(200, body), delay_us)
        }
    }
}

/// `{"bid":42.5,"bid_id":"..."}`; the id is `bid_id` when given, else `b-<seq>`.
fn bid_body(out: &mut Vec<u8>, cents: Cents, bid_id: Option<&[u8]>, seq: Option<u64>) {
    out.extend_from_slice(b"{\"bid\":");
    write_dollars(out, cents);
    match (bid_id, seq) {
        (Some(id), _) => {
            out.extend_from_slice(b",\"bid_id\":\"");
            out.extend_from_slice(id);
            out.push(b'"');
        }
        (None, Some(n)) => {
            out.extend_from_slice(b",\"bid_id\":\"b-");
            wire::push_u64(out, n);
            out.push(b'"');
        }
        (None, None) => {}
    }
    out.push(b'}');
}

/// The bytes of a reply: the raw bytes when given, else a response with Content-Length.
fn encode(reply: &Reply, close: bool) -> Vec<u8> {
    if let Some(raw) = &reply.raw {
        return raw.clone();
    }
    let bodiless = reply.status == 204 || reply.status == 304 || (100..200).contains(&reply.status);
    let mut out = Vec::with_capacity(128 + reply.body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    wire::push_u64(&mut out, u64::from(reply.status));
    out.push(b' ');
    out.extend_from_slice(wire::reason(reply.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        wire::push_u64(&mut out, reply.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(&reply.body);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
