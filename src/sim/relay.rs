//! The fan-out floor: the exchange's input and output with none of its work.
//!
//! A relay takes a seller's `POST /v1/leads`, pings every buyer at once over keep-alive
//! connections with a fixed, small body, takes the highest bid when the last answer is in (or
//! at the ping deadline), posts the seller's body to that buyer and answers the seller
//! `sold` or `unsold`. It reads no field of the lead and keeps no journal, caps, filters,
//! dedupe or stats beyond its own timing: what it costs is the sockets, the HTTP framing and
//! one event loop, the part of a lead's time an exchange on this machine cannot avoid.
//!
//! Run beside the exchange on the same machine, at the same rate, with the same buyers
//! (`tools/bench.py --relay`), it answers the question the exchange's own numbers cannot:
//! how much of the overhead is the engine, and how much is the loopback and the scheduler.
//! Its overhead is accounted exactly as the exchange's (ARCHITECTURE.md, *Overhead
//! accounting*): from the poll wake-up that read the request to the answer handed to the
//! kernel, minus the time waiting on buyers, which starts just before each ping's or post's
//! `send` and ends at the wake-up that read the answer (or at the ping deadline). The
//! histograms are served as `GET /v1/stats` in the exchange's shape (`overhead_us`,
//! `overhead_stages_us`, `elapsed_us`, `answer_write_us`) and zeroed by
//! `POST /v1/admin/stats/reset`, both on the seller listener.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;

use super::load::Percentiles;
use super::wire::{self, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::money::{parse_cents, write_dollars, Cents};
use crate::net::deadlines::Deadlines;
use crate::net::slab::{Key, Slab};

/// Most buyers one relay pings per lead.
pub const MAX_BUYERS: usize = 1024;
/// Seller connections open at once; further ones are accepted and closed.
pub const MAX_SELLER_CONNECTIONS: usize = 10_000;
/// Upper bound of `RelayOptions::max_connections_per_buyer`.
pub const MAX_CONNECTIONS_PER_BUYER: usize = 4096;
/// Leads in flight; a lead beyond this is answered 503.
pub const MAX_IN_FLIGHT: usize = 100_000;
/// Requests waiting for a connection of one buyer; beyond this a ping fails at once.
pub const MAX_WAITERS_PER_BUYER: usize = 4096;
/// Unanswered seller bytes held per connection before it is closed.
pub const MAX_SELLER_WRITE_BUFFER: usize = 1024 * 1024;
/// Longest ping or post timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from a socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Kernel accept queue of the seller listener.
const LISTEN_BACKLOG: i32 = 1024;
/// Highest value the histograms hold, in microseconds (1 hour); longer ones saturate.
const HIST_MAX_US: u64 = 3_600_000_000;
/// Lowest bid taken, as the benchmark campaign's reserve.
pub const DEFAULT_RESERVE_CENTS: Cents = 500;
/// The share of the price paid to the seller, in per-mille (the benchmark seller's 80 %).
const PAYOUT_PER_MILLE: Cents = 800;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// The body of every ping: the shape and size of the exchange's ping for the benchmark
/// campaign (`tools/bench.py`), with the lead's number as its `ping_id`.
const PING_BODY_HEAD: &[u8] = b"{\"ping_id\":\"";
const PING_BODY_TAIL: &[u8] = b"\",\"campaign\":\"auto-insurance\",\"vertical\":\"auto_insurance\",\
\"test\":false,\"timeout_ms\":780,\"lead\":{\"state\":\"CA\",\"zip\":\"90210\",\"lead_type\":\"auto\",\
\"age\":35,\"insured\":true}}";

/// One buyer: where its pings and posts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayBuyer {
    pub ping: Endpoint,
    pub post: Endpoint,
}

/// A plain `http://host:port/path` URL, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port` as written, for the Host header.
    pub host: String,
    pub path: String,
}

impl Endpoint {
    /// Parse `http://host:port/path`. TLS and URLs without a port are not taken: the relay is
    /// for loopback measurements.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("`{url}` is not a usable URL"));
        }
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("`{url}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{url}`: the host resolves to no address"))?;
        Ok(Endpoint {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The seller listener (port 0: chosen by the OS).
    pub listen: SocketAddr,
    /// Every buyer is pinged for every lead.
    pub buyers: Vec<RelayBuyer>,
    /// From a lead's arrival to the close of its bidding.
    pub ping_timeout: Duration,
    /// From a post's `send` to giving up on it.
    pub post_timeout: Duration,
    /// Keep-alive connections per buyer address.
    pub max_connections_per_buyer: usize,
    /// Bids below this are not taken.
    pub reserve_cents: Cents,
}

impl Default for RelayOptions {
    fn default() -> RelayOptions {
        RelayOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            buyers: Vec::new(),
            ping_timeout: Duration::from_millis(800),
            post_timeout: Duration::from_millis(2000),
            max_connections_per_buyer: 64,
            reserve_cents: DEFAULT_RESERVE_CENTS,
        }
    }
}

/// A relay running on its own thread.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Bind the listener and start the loop.
    pub fn start(opts: RelayOptions) -> io::Result<Relay> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if opts.buyers.is_empty() || opts.buyers.len() > MAX_BUYERS {
            return Err(bad(format!("between 1 and {MAX_BUYERS} buyers")));
        }
        if opts.max_connections_per_buyer == 0
            || opts.max_connections_per_buyer > MAX_CONNECTIONS_PER_BUYER
        {
            return Err(bad(format!(
                "connections per buyer must be 1..={MAX_CONNECTIONS_PER_BUYER}"
            )));
        }
        for t in [opts.ping_timeout, opts.post_timeout] {
            if t.is_zero() || t > MAX_TIMEOUT {
                return Err(bad(format!(
                    "timeouts must be positive and at most {} s",
                    MAX_TIMEOUT.as_secs()
                )));
            }
        }
        let listener = bind(opts.listen)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut engine = Engine::new(poll, listener, &opts)?;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gavel-relay".into())
            .spawn(move || engine.run(&flag))?;
        Ok(Relay {
            addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The seller listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop the loop and wait for it; leads in flight are dropped.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// What `GET /v1/stats` answers: the exchange's keys, the relay's values.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStats {
    pub overhead_us: Percentiles,
    pub overhead_stages_us: Stages,
    pub elapsed_us: Percentiles,
    pub answer_write_us: Percentiles,
    pub leads: u64,
    pub sold: u64,
    pub unsold: u64,
    pub ping_errors: u64,
    pub ping_timeouts: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stages {
    pub intake: Percentiles,
    pub close: Percentiles,
    pub answer: Percentiles,
}

struct Hists {
    overhead: Histogram<u64>,
    intake: Histogram<u64>,
    close: Histogram<u64>,
    answer: Histogram<u64>,
    elapsed: Histogram<u64>,
    write: Histogram<u64>,
    leads: u64,
    sold: u64,
    unsold: u64,
    ping_errors: u64,
    ping_timeouts: u64,
}

impl Hists {
    fn new() -> io::Result<Hists> {
        let h = || {
            Histogram::new_with_bounds(1, HIST_MAX_US, 3)
                .map_err(|e| io::Error::other(e.to_string()))
        };
        Ok(Hists {
            overhead: h()?,
            intake: h()?,
            close: h()?,
            answer: h()?,
            elapsed: h()?,
            write: h()?,
            leads: 0,
            sold: 0,
            unsold: 0,
            ping_errors: 0,
            ping_timeouts: 0,
        })
    }

    fn reset(&mut self) {
        for h in [
            &mut self.overhead,
            &mut self.intake,
            &mut self.close,
            &mut self.answer,
            &mut self.elapsed,
            &mut self.write,
        ] {
            h.reset();
        }
        self.leads = 0;
        self.sold = 0;
        self.unsold = 0;
        self.ping_errors = 0;
        self.ping_timeouts = 0;
    }

    fn snapshot(&self) -> RelayStats {
        RelayStats {
            overhead_us: Percentiles::from_hist(&self.overhead),
            overhead_stages_us: Stages {
                intake: Percentiles::from_hist(&self.intake),
                close: Percentiles::from_hist(&self.close),
                answer: Percentiles::from_hist(&self.answer),
            },
            elapsed_us: Percentiles::from_hist(&self.elapsed),
            answer_write_us: Percentiles::from_hist(&self.write),
            leads: self.leads,
            sold: self.sold,
            unsold: self.unsold,
            ping_errors: self.ping_errors,
            ping_timeouts: self.ping_timeouts,
        }
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ping,
    Post,
}

/// A request a buyer connection carries.
#[derive(Clone, Copy)]
struct Job {
    lead: Key,
    buyer: usize,
    kind: Kind,
}

struct Seller {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The lead whose answer this connection waits for; the next request is not read before.
    busy: Option<Key>,
    keep_alive: bool,
    closing: bool,
}

struct Conn {
    stream: TcpStream,
    pool: usize,
    connected: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    job: Option<Job>,
    /// In its pool's idle list (at most once).
    idle: bool,
}

/// The connections to one buyer address.
struct Pool {
    addr: SocketAddr,
    idle: Vec<Key>,
    open: usize,
    waiting: VecDeque<Job>,
}

#[derive(PartialEq, Eq)]
enum Phase {
    Pinging,
    Posting,
}

struct Lead {
    seller: Key,
    seq: u64,
    arrival: Instant,
    deadline: Instant,
    phase: Phase,
    first_ping: Option<Instant>,
    ping_wait_start: Option<Instant>,
    post_wait_start: Option<Instant>,
    buyer_wait: Duration,
    outstanding: usize,
    /// The highest bid so far: cents, buyer, its `bid_id`.
    best: Option<(Cents, usize, Vec<u8>)>,
    /// The connection carrying each buyer's request, to abandon it at the deadline.
    conns: Vec<Option<Key>>,
    body: Vec<u8>,
}

struct Engine {
    poll: Poll,
    listener: TcpListener,
    sellers: Slab<Seller>,
    conns: Slab<Conn>,
    pools: Vec<Pool>,
    /// Each buyer's ping pool, post pool and prebuilt request heads up to Content-Length.
    buyers: Vec<(usize, usize, Vec<u8>, Vec<u8>)>,
    leads: Slab<Lead>,
    /// Ping deadlines and post deadlines, by lead; stale ones are skipped when they come.
    timers: Deadlines<(Key, Kind)>,
    hists: Hists,
    ping_timeout: Duration,
    post_timeout: Duration,
    max_per_pool: usize,
    reserve_cents: Cents,
    seq: u64,
    scratch: Vec<u8>,
    /// Seller connections whose lead finished, to read their next request from the loop (not
    /// from inside the finish, which would recurse once per pipelined request).
    ready: Vec<Key>,
    now: Instant,
}

fn seller_token(k: Key) -> Token {
    Token(2 + 2 * k.index)
}

fn conn_token(k: Key) -> Token {
    Token(3 + 2 * k.index)
}

/// A request's head up to the Content-Length value, written once per buyer.
fn request_head(ep: &Endpoint) -> Vec<u8> {
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(b"POST ");
    h.extend_from_slice(ep.path.as_bytes());
    h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    h.extend_from_slice(ep.host.as_bytes());
    h.extend_from_slice(
        b"\r\nUser-Agent: gavel-relay\r\nContent-Type: application/json\r\nContent-Length: ",
    );
    h
}

impl Engine {
    fn new(poll: Poll, mut listener: TcpListener, opts: &RelayOptions) -> io::Result<Engine> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut pools: Vec<Pool> = Vec::new();
        let mut pool_of = |addr: SocketAddr| -> usize {
            if let Some(i) = pools.iter().position(|p| p.addr == addr) {
                return i;
            }
            pools.push(Pool {
                addr,
                idle: Vec::new(),
                open: 0,
                waiting: VecDeque::new(),
            });
            pools.len() - 1
        };
        let buyers = opts
            .buyers
            .iter()
            .map(|b| {
                (
                    pool_of(b.ping.addr),
                    pool_of(b.post.addr),
                    request_head(&b.ping),
                    request_head(&b.post),
                )
            })
            .collect();
        let conn_cap = pools.len() * opts.max_connections_per_buyer;
        let now = Instant::now();
        Ok(Engine {
            poll,
            listener,
            sellers: Slab::with_capacity(MAX_SELLER_CONNECTIONS),
            conns: Slab::with_capacity(conn_cap),
            pools,
            buyers,
            leads: Slab::with_capacity(MAX_IN_FLIGHT),
            timers: Deadlines::default(),
            hists: Hists::new()?,
            ping_timeout: opts.ping_timeout,
            post_timeout: opts.post_timeout,
            max_per_pool: opts.max_connections_per_buyer,
            reserve_cents: opts.reserve_cents,
            seq: 0,
            scratch: vec![0u8; READ_CHUNK],
            ready: Vec::new(),
            now,
        })
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            // mio rounds the timeout up to whole milliseconds: a deadline is never missed.
            let timeout = self
                .timers
                .next()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            self.now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) if t % 2 == 0 => {
                        if let Some((k, _)) = self.sellers.at((t - 2) / 2) {
                            self.on_seller(k, ev.is_writable());
                        }
                    }
                    Token(t) => {
                        if let Some((k, _)) = self.conns.at((t - 3) / 2) {
                            self.on_conn(
                                k,
                                ev.is_readable() || ev.is_read_closed(),
                                ev.is_writable(),
                                ev.is_error(),
                            );
                        }
                    }
                }
                self.serve_ready();
            }
            self.fire_timers();
            self.serve_ready();
        }
    }

    fn serve_ready(&mut self) {
        while let Some(k) = self.ready.pop() {
            self.serve_seller(k);
        }
    }

    fn accept(&mut self) {
        loop {
            let (stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept: try again next time.
                Err(_) => return,
            };
            if self.sellers.is_full() {
                continue; // dropped: closed at once
            }
            let _ = stream.set_nodelay(true);
            let Some(k) = self.sellers.insert(Seller {
                stream,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                busy: None,
                keep_alive: true,
                closing: false,
            }) else {
                continue;
            };
            let ok = match self.sellers.get_mut(k) {
                Some(s) => self
                    .poll
                    .registry()
                    .register(
                        &mut s.stream,
                        seller_token(k),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_ok(),
                None => false,
            };
            if !ok {
                self.sellers.remove(k);
            }
        }
    }

    // ---- sellers ------------------------------------------------------------------------

    fn on_seller(&mut self, k: Key, writable: bool) {
        if writable && !self.flush_seller(k) {
            return;
        }
        let scratch = &mut self.scratch;
        let Some(s) = self.sellers.get_mut(k) else {
            return;
        };
        let closed = fill(&mut s.stream, &mut s.rbuf, scratch) != Filled::Open;
        if closed {
            self.close_seller(k);
            return;
        }
        self.serve_seller(k);
    }

    /// Take the requests buffered on a seller connection, one lead at a time.
    fn serve_seller(&mut self, k: Key) {
        loop {
            let Some(s) = self.sellers.get_mut(k) else {
                return;
            };
            if s.busy.is_some() || s.closing || s.rbuf.is_empty() {
                return;
            }
            let head = match wire::parse_request(&s.rbuf) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    let msg = format!("{{\"error\":\"bad_request\",\"message\":\"{e}\"}}");
                    s.rbuf.clear();
                    s.keep_alive = false;
                    self.reply(k, 400, msg.as_bytes());
                    return;
                }
            };
            let end = head.head_len + head.body_len;
            s.keep_alive = head.keep_alive;
            let method_post = s.rbuf.starts_with(b"POST ");
            match (method_post, head.path.as_str()) {
                (true, "/v1/leads") => {
                    let body = s.rbuf[head.head_len..end].to_vec();
                    s.rbuf.drain(..end);
                    self.start_lead(k, body);
                }
                (false, "/healthz") => {
                    s.rbuf.drain(..end);
                    self.reply(k, 200, b"{\"status\":\"ok\"}");
                }
                (false, "/v1/stats") => {
                    s.rbuf.drain(..end);
                    let body = serde_json::to_vec(&self.hists.snapshot()).unwrap_or_default();
                    self.reply(k, 200, &body);
                }
                (true, "/v1/admin/stats/reset") => {
                    s.rbuf.drain(..end);
                    self.hists.reset();
                    self.reply(k, 200, b"{\"reset\":true}");
                }
                _ => {
                    s.rbuf.drain(..end);
                    self.reply(k, 404, b"{\"error\":\"not_found\"}");
                }
            }
        }
    }

    /// Queue an answer on a seller connection and write what the socket takes.
    fn reply(&mut self, k: Key, status: u16, body: &[u8]) {
        let Some(s) = self.sellers.get_mut(k) else {
            return;
        };
        write_response(&mut s.wbuf, status, body, s.keep_alive);
        if !s.keep_alive {
            s.closing = true;
        }
        self.flush_seller(k);
    }

    /// Write a seller connection's pending bytes; false when it was closed.
    fn flush_seller(&mut self, k: Key) -> bool {
        let Some(s) = self.sellers.get_mut(k) else {
            return false;
        };
        while s.wpos < s.wbuf.len() {
            match s.stream.write(&s.wbuf[s.wpos..]) {
                Ok(0) => {
                    self.close_seller(k);
                    return false;
                }
                Ok(n) => s.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_seller(k);
                    return false;
                }
            }
        }
        if s.wpos == s.wbuf.len() {
            s.wbuf.clear();
            s.wpos = 0;
            if s.closing {
                self.close_seller(k);
                return false;
            }
        } else if s.wbuf.len() - s.wpos > MAX_SELLER_WRITE_BUFFER {
            self.close_seller(k);
            return false;
        }
        true
    }

    fn close_seller(&mut self, k: Key) {
        if let Some(mut s) = self.sellers.remove(k) {
            let _ = self.poll.registry().deregister(&mut s.stream);
        }
    }

    // ---- leads --------------------------------------------------------------------------

    fn start_lead(&mut self, seller: Key, body: Vec<u8>) {
        let arrival = self.now;
        self.seq += 1;
        let n = self.buyers.len();
        let Some(key) = self.leads.insert(Lead {
            seller,
            seq: self.seq,
            arrival,
            deadline: arrival + self.ping_timeout,
            phase: Phase::Pinging,
            first_ping: None,
            ping_wait_start: None,
            post_wait_start: None,
            buyer_wait: Duration::ZERO,
            outstanding: n,
            best: None,
            conns: vec![None; n],
            body,
        }) else {
            self.reply(
                seller,
                503,
                b"{\"error\":\"overloaded\",\"message\":\"too many leads in flight\"}",
            );
            return;
        };
        if let Some(s) = self.sellers.get_mut(seller) {
            s.busy = Some(key);
        }
        self.hists.leads += 1;
        self.push_timer(arrival + self.ping_timeout, key, Kind::Ping);
        for buyer in 0..n {
            self.dispatch(Job {
                lead: key,
                buyer,
                kind: Kind::Ping,
            });
        }
    }

    /// Send a ping or post on an idle connection of the buyer's pool, a new one, or queue it.
    fn dispatch(&mut self, job: Job) {
        let pool = match job.kind {
            Kind::Ping => self.buyers[job.buyer].0,
            Kind::Post => self.buyers[job.buyer].1,
        };
        if let Some(ck) = self.pools[pool].idle.pop() {
            if let Some(c) = self.conns.get_mut(ck) {
                c.idle = false;
            }
            self.send_on(ck, job);
            return;
        }
        if self.pools[pool].open < self.max_per_pool {
            match self.connect(pool) {
                Some(ck) => self.send_on(ck, job),
                None => self.job_failed(job),
            }
            return;
        }
        if self.pools[pool].waiting.len() < MAX_WAITERS_PER_BUYER {
            // The wait for a connection is the buyer's time, as in the exchange.
            self.mark_sent(job, Instant::now());
            self.pools[pool].waiting.push_back(job);
        } else {
            self.job_failed(job);
        }
    }

    fn connect(&mut self, pool: usize) -> Option<Key> {
        let addr = self.pools[pool].addr;
        let stream = TcpStream::connect(addr).ok()?;
        let _ = stream.set_nodelay(true);
        let ck = self.conns.insert(Conn {
            stream,
            pool,
            connected: false,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            job: None,
            idle: false,
        })?;
        let c = self.conns.get_mut(ck)?;
        if self
            .poll
            .registry()
            .register(
                &mut c.stream,
                conn_token(ck),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.conns.remove(ck);
            return None;
        }
        self.pools[pool].open += 1;
        Some(ck)
    }

    /// The buyer's clock starts: the first ping's starts the lead's wait on its buyers, a
    /// post's its wait on the post.
    fn mark_sent(&mut self, job: Job, at: Instant) {
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return;
        };
        match job.kind {
            Kind::Ping => {
                if lead.first_ping.is_none() {
                    lead.first_ping = Some(at);
                }
                if lead.ping_wait_start.is_none() && lead.phase == Phase::Pinging {
                    lead.ping_wait_start = Some(at);
                }
            }
            Kind::Post => {
                if lead.post_wait_start.is_none() {
                    lead.post_wait_start = Some(at);
                }
            }
        }
    }

    /// Put a request on a connection and write it if the connection is up.
    fn send_on(&mut self, ck: Key, job: Job) {
        let Some(lead) = self.leads.get_mut(job.lead) else {
            // The lead finished while the request waited: the connection goes back idle.
            self.release(ck);
            return;
        };
        lead.conns[job.buyer] = Some(ck);
        let seq = lead.seq;
        let (_, _, ping_head, post_head) = &self.buyers[job.buyer];
        let Some(c) = self.conns.get_mut(ck) else {
            self.job_failed(job);
            return;
        };
        c.wbuf.clear();
        c.wpos = 0;
        c.rbuf.clear();
        match job.kind {
            Kind::Ping => {
                let digits = seq.checked_ilog10().unwrap_or(0) as usize + 1;
                let len = PING_BODY_HEAD.len() + digits + PING_BODY_TAIL.len();
                c.wbuf.extend_from_slice(ping_head);
                wire::push_u64(&mut c.wbuf, len as u64);
                c.wbuf.extend_from_slice(b"\r\n\r\n");
                c.wbuf.extend_from_slice(PING_BODY_HEAD);
                wire::push_u64(&mut c.wbuf, seq);
                c.wbuf.extend_from_slice(PING_BODY_TAIL);
            }
            Kind::Post => {
                let (price, bid_id) = match &lead.best {
                    Some((p, _, id)) => (*p, id.as_slice()),
                    None => (0, &b""[..]),
                };
                let mut body = Vec::with_capacity(lead.body.len() + 96);
                body.extend_from_slice(b"{\"ping_id\":\"");
                wire::push_u64(&mut body, seq);
                body.extend_from_slice(b"\",\"bid_id\":\"");
                body.extend_from_slice(bid_id);
                body.extend_from_slice(b"\",\"price\":");
                write_dollars(&mut body, price);
                body.extend_from_slice(b",\"lead\":");
                body.extend_from_slice(if lead.body.is_empty() {
                    b"{}"
                } else {
                    &lead.body
                });
                body.push(b'}');
                c.wbuf.extend_from_slice(post_head);
                wire::push_u64(&mut c.wbuf, body.len() as u64);
                c.wbuf.extend_from_slice(b"\r\n\r\n");
                c.wbuf.extend_from_slice(&body);
            }
        }
        c.job = Some(job);
        let connected = c.connected;
        // Just before the `send` (or, while connecting, now: the wait for a connection is
        // the buyer's, as in the exchange).
        self.mark_sent(job, Instant::now());
        if connected {
            self.write_conn(ck);
        }
    }

    fn write_conn(&mut self, ck: Key) {
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => return self.conn_broken(ck),
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.conn_broken(ck),
            }
        }
    }

    fn on_conn(&mut self, ck: Key, readable: bool, writable: bool, error: bool) {
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        if !c.connected && (writable || error) {
            match c.stream.take_error() {
                Ok(None) if c.stream.peer_addr().is_ok() => c.connected = true,
                Ok(None) if !error => return, // not yet
                _ => return self.conn_broken(ck),
            }
            if c.job.is_some() {
                self.write_conn(ck);
            } else {
                self.release(ck);
                return;
            }
        } else if writable {
            self.write_conn(ck);
        }
        if readable {
            self.read_conn(ck);
        }
    }

    fn read_conn(&mut self, ck: Key) {
        let scratch = &mut self.scratch;
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        let eof = match fill(&mut c.stream, &mut c.rbuf, scratch) {
            Filled::Open => false,
            Filled::Eof => true,
            Filled::Broken => return self.conn_broken(ck),
        };
        let answer = match wire::parse_response(&c.rbuf) {
            Ok(Some(h)) => match h.body_len {
                Some(len) if c.rbuf.len() >= h.head_len + len => {
                    Some((h.status, h.head_len, len, h.keep_alive))
                }
                Some(_) => None,
                None => return self.conn_broken(ck), // close-delimited: not spoken here
            },
            Ok(None) => None,
            Err(_) => return self.conn_broken(ck),
        };
        match answer {
            Some((status, head_len, len, keep_alive)) => {
                let body = c.rbuf[head_len..head_len + len].to_vec();
                let job = c.job.take();
                c.rbuf.clear();
                if job.is_none() {
                    // An answer nobody asked for: the connection is not trusted again.
                    return self.drop_conn(ck);
                }
                if keep_alive && !eof {
                    self.release(ck);
                } else {
                    self.drop_conn(ck);
                }
                if let Some(job) = job {
                    self.on_answer(job, status, &body);
                }
            }
            None if eof => self.conn_broken(ck),
            None => {}
        }
    }

    /// A connection with nothing on it: to the next waiting request, or idle.
    fn release(&mut self, ck: Key) {
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.job = None;
        if c.idle {
            return;
        }
        let pool = c.pool;
        while let Some(job) = self.pools[pool].waiting.pop_front() {
            if self.leads.get(job.lead).is_some() {
                self.send_on(ck, job);
                return;
            }
        }
        if let Some(c) = self.conns.get_mut(ck) {
            c.idle = true;
        }
        self.pools[pool].idle.push(ck);
    }

    fn drop_conn(&mut self, ck: Key) {
        if let Some(mut c) = self.conns.remove(ck) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let pool = &mut self.pools[c.pool];
            pool.open -= 1;
            pool.idle.retain(|&k| k != ck);
        }
    }

    fn conn_broken(&mut self, ck: Key) {
        let job = self.conns.get_mut(ck).and_then(|c| c.job.take());
        let pool = self.conns.get(ck).map(|c| c.pool);
        self.drop_conn(ck);
        if let Some(job) = job {
            self.job_failed(job);
        }
        // A request queued for this buyer gets a new connection.
        if let Some(pool) = pool {
            if let Some(job) = self.pools[pool].waiting.pop_front() {
                self.dispatch(job);
            }
        }
    }

    fn job_failed(&mut self, job: Job) {
        if job.kind == Kind::Ping {
            self.hists.ping_errors += 1;
        }
        self.on_answer(job, 0, b"");
    }

    /// A buyer's answer (status 0: the request failed), at this turn's wake-up.
    fn on_answer(&mut self, job: Job, status: u16, body: &[u8]) {
        let now = self.now;
        let reserve = self.reserve_cents;
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return;
        };
        lead.conns[job.buyer] = None;
        match job.kind {
            Kind::Ping => {
                if lead.phase != Phase::Pinging {
                    return;
                }
                lead.outstanding = lead.outstanding.saturating_sub(1);
                if status == 200 {
                    let cents = wire::top_level_value(body, "bid")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(parse_cents)
                        .unwrap_or(0);
                    if cents > 0
                        && cents >= reserve
                        && lead.best.as_ref().is_none_or(|(b, _, _)| cents > *b)
                    {
                        let id = wire::top_level_value(body, "bid_id").unwrap_or(b"");
                        lead.best = Some((cents, job.buyer, id.to_vec()));
                    }
                }
                if lead.outstanding == 0 {
                    self.close(job.lead, now);
                }
            }
            Kind::Post => {
                if lead.phase != Phase::Posting {
                    return;
                }
                if let Some(start) = lead.post_wait_start.take() {
                    lead.buyer_wait += now.saturating_duration_since(start);
                }
                let accepted = status == 200
                    && wire::top_level_value(body, "status") == Some(&b"accepted"[..]);
                self.finish(job.lead, accepted, now);
            }
        }
    }

    /// Bidding is over: post to the highest bidder, or answer unsold.
    fn close(&mut self, key: Key, now: Instant) {
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        if let Some(start) = lead.ping_wait_start.take() {
            lead.buyer_wait += now.min(lead.deadline).saturating_duration_since(start);
        }
        lead.phase = Phase::Posting;
        match lead.best.as_ref().map(|(_, b, _)| *b) {
            Some(buyer) => {
                self.push_timer(now + self.post_timeout, key, Kind::Post);
                self.dispatch(Job {
                    lead: key,
                    buyer,
                    kind: Kind::Post,
                });
            }
            None => self.finish(key, false, now),
        }
    }

    /// A deadline for `key`; the sweep drops the deadlines of leads that ended or moved on.
    fn push_timer(&mut self, at: Instant, key: Key, kind: Kind) {
        let leads = &self.leads;
        self.timers.push(at, (key, kind), |_, (k, kind)| {
            leads.get(*k).is_some_and(|l| match kind {
                Kind::Ping => l.phase == Phase::Pinging,
                Kind::Post => l.phase == Phase::Posting,
            })
        });
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((_, (key, kind))) = self.timers.pop_due(now) {
            let Some(lead) = self.leads.get_mut(key) else {
                continue;
            };
            let expired = match kind {
                Kind::Ping => lead.phase == Phase::Pinging,
                Kind::Post => lead.phase == Phase::Posting,
            };
            if !expired {
                continue;
            }
            // Late answers would arrive on these connections: they are closed.
            let abandoned: Vec<Key> = lead.conns.iter_mut().filter_map(Option::take).collect();
            match kind {
                Kind::Ping => {
                    self.hists.ping_timeouts += lead.outstanding as u64;
                    lead.outstanding = 0;
                }
                Kind::Post => {
                    if let Some(start) = lead.post_wait_start.take() {
                        lead.buyer_wait += now.saturating_duration_since(start);
                    }
                }
            }
            for ck in abandoned {
                if let Some(c) = self.conns.get_mut(ck) {
                    c.job = None;
                }
                self.drop_conn(ck);
            }
            match kind {
                Kind::Ping => self.close(key, now),
                Kind::Post => self.finish(key, false, now),
            }
        }
    }

    /// Answer the seller and record the lead's times.
    fn finish(&mut self, key: Key, sold: bool, done_at: Instant) {
        let Some(lead) = self.leads.remove(key) else {
            return;
        };
        let price = if sold {
            lead.best.as_ref().map_or(0, |(p, _, _)| *p)
        } else {
            0
        };
        let mut body = Vec::with_capacity(160);
        body.extend_from_slice(b"{\"lead_id\":\"");
        wire::push_u64(&mut body, lead.seq);
        body.extend_from_slice(if sold {
            b"\",\"status\":\"sold\",\"price\":"
        } else {
            b"\",\"status\":\"unsold\",\"price\":"
        });
        write_dollars(&mut body, price);
        body.extend_from_slice(b",\"payout\":");
        write_dollars(&mut body, price * PAYOUT_PER_MILLE / 1000);
        body.extend_from_slice(b",\"elapsed_ms\":");
        wire::push_u64(
            &mut body,
            us(Instant::now().saturating_duration_since(lead.arrival)) / 1000,
        );
        body.push(b'}');
        if sold {
            self.hists.sold += 1;
        } else {
            self.hists.unsold += 1;
        }
        let handed = Instant::now();
        let seller = lead.seller;
        if let Some(s) = self.sellers.get_mut(seller) {
            if s.busy == Some(key) {
                s.busy = None;
                write_response(&mut s.wbuf, 200, &body, s.keep_alive);
                if !s.keep_alive {
                    s.closing = true;
                }
                self.flush_seller(seller);
            }
        }
        let written = Instant::now();
        let overhead = handed
            .saturating_duration_since(lead.arrival)
            .saturating_sub(lead.buyer_wait);
        let intake = lead
            .first_ping
            .unwrap_or(done_at)
            .saturating_duration_since(lead.arrival);
        let answer = handed.saturating_duration_since(done_at);
        let close = overhead.saturating_sub(intake).saturating_sub(answer);
        let h = &mut self.hists;
        h.overhead.saturating_record(us(overhead));
        h.intake.saturating_record(us(intake));
        h.close.saturating_record(us(close));
        h.answer.saturating_record(us(answer));
        h.elapsed
            .saturating_record(us(written.saturating_duration_since(lead.arrival)));
        h.write
            .saturating_record(us(written.saturating_duration_since(handed)));
        // The connection may hold the next request already.
        self.ready.push(seller);
    }
}

/// What reading a socket until it had nothing more left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filled {
    /// Everything available was read; the connection stays open.
    Open,
    /// The peer closed its side.
    Eof,
    /// A read error, or more unparsed bytes than one largest message.
    Broken,
}

/// Read what `stream` has into `rbuf` (through `scratch`). A short read ends it: it emptied the
/// socket, and more data is a new edge.
fn fill(stream: &mut TcpStream, rbuf: &mut Vec<u8>, scratch: &mut [u8]) -> Filled {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Filled::Eof,
            Ok(n) => {
                if rbuf.len() + n > MAX_HEAD_BYTES + MAX_BODY_BYTES {
                    return Filled::Broken;
                }
                rbuf.extend_from_slice(&scratch[..n]);
                if n < scratch.len() {
                    return Filled::Open;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Filled::Open,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Filled::Broken,
        }
    }
}

fn write_response(out: &mut Vec<u8>, status: u16, body: &[u8], keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    wire::push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(wire::reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    wire::push_u64(out, body.len() as u64);
    if !keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}
