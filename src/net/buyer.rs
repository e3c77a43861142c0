//! Buyer connections and per-worker pools.
//!
//! A pool keeps keep-alive connections to one buyer endpoint, at most `max_connections`,
//! some opened ahead of need so that a ping never waits on a handshake in steady state.
//! A connection carries one request at a time. When the lead stops waiting on it (its deadline
//! passed), the connection is *draining*: the late answer is read and thrown away before the
//! connection serves anyone else, so a stale answer can never reach the next lead.

use super::slab::Key;
use crate::http::{Limits, ResponseDecoder};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Requests waiting for a connection of one pool when all are busy; beyond it a ping fails at once.
pub const MAX_WAITERS_PER_POOL: usize = 4096;
/// First reconnect delay after a failed connect; doubles up to `MAX_BACKOFF`.
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest a buyer that is back up can go unused: leads missed after an outage are the
/// buyer's lost revenue and the seller's, against one failed connect a second per worker while
/// it stays down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How often a buyer endpoint whose TLS handshakes fail is told on stderr, per worker.
pub const TLS_ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// A connection that ends before it carried an answer and younger than this counts against
/// the warm-connection refill (`Pool::refill_failed`); one closed older, by a buyer's idle
/// timeout, does not.
pub const YOUNG_CONN: Duration = Duration::from_secs(1);
/// A connect (and, for https, its TLS handshake) that has not completed by then is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection whose TLS handshake outlived [`CONNECT_TIMEOUT`] was closed.
pub const HANDSHAKE_TIMED_OUT: &str = "TLS: handshake did not complete within 3 s";
/// A draining connection whose late answer has not come by then is closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer a buyer may send (head limits are the codec's defaults).
pub const MAX_BUYER_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Ping,
    Post,
}

/// One request on a connection, for one slot of one lead.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub lead: Key,
    pub slot: usize,
    pub kind: JobKind,
    /// Already retried once on a fresh connection.
    pub retried: bool,
    /// Since when the job has waited for the buyer's side: a connection to free up or to be
    /// established. That time is the buyer's, not the engine's, in the overhead accounting.
    pub waited_since: Option<Instant>,
}

pub struct BuyerConn {
    pub pool: usize,
    pub stream: mio::net::TcpStream,
    pub connected: bool,
    pub opened_at: Instant,
    pub idle_since: Instant,
    /// Requests fully answered on this connection (0 = fresh).
    pub served: u32,
    /// The lead of the last request written on it: a post does not follow its own lead's ping
    /// on the same connection while the pool may open another (a second answer to the ping
    /// would be taken for the post's).
    pub last_lead: Option<Key>,
    pub job: Option<Job>,
    /// The request for `job` (or for an abandoned job still being written).
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    pub rbuf: Vec<u8>,
    pub body: Vec<u8>,
    pub decoder: ResponseDecoder,
    /// Set while a request is outstanding whose lead no longer waits: read and discard its answer.
    pub draining_since: Option<Instant>,
    /// The connection is in the pool's idle list.
    pub in_idle: bool,
    /// Registered for writability: while connecting, and while a request waits for socket
    /// space; otherwise every ACK of a request would wake the loop.
    pub write_interest: bool,
    /// Some byte of the current request reached the socket (a request is retried on a fresh
    /// connection only when none did).
    pub on_wire: bool,
    /// The current request's going out was marked on its lead (the buyer's time starts).
    pub sent_marked: bool,
    /// The TLS session, for https buyers.
    pub tls: Option<Box<rustls::ClientConnection>>,
    /// The buyer closed its side, or its last answer said it closes the connection
    /// (`Connection: close`, HTTP/1.0): the answers already read are taken, but the
    /// connection is never given another request.
    pub peer_closed: bool,
}

impl BuyerConn {
    pub fn new(
        pool: usize,
        stream: mio::net::TcpStream,
        now: Instant,
        tls: Option<Box<rustls::ClientConnection>>,
    ) -> BuyerConn {
        BuyerConn {
            pool,
            stream,
            connected: false,
            opened_at: now,
            idle_since: now,
            served: 0,
            last_lead: None,
            job: None,
            // Empty until first used: they grow once to this buyer's request and answer sizes
            // and are reused after that. A buyer connection is held by every lead in flight
            // waiting on it, so bytes reserved here multiply by the leads in flight.
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: Vec::new(),
            body: Vec::new(),
            decoder: ResponseDecoder::new(Limits::with_max_body_bytes(MAX_BUYER_ANSWER_BYTES)),
            draining_since: None,
            in_idle: false,
            write_interest: true,
            on_wire: false,
            sent_marked: false,
            tls,
            peer_closed: false,
        }
    }

    /// A request is outstanding (for a lead or being drained).
    pub fn busy(&self) -> bool {
        self.job.is_some() || self.draining_since.is_some() || self.wpos < self.wbuf.len()
    }
}

/// Connections of one worker to one buyer endpoint.
pub struct Pool {
    pub addr: Option<SocketAddr>,
    pub max_connections: usize,
    pub min_idle: usize,
    pub idle_timeout: Duration,
    /// Open or connecting connections.
    pub total: usize,
    pub idle: Vec<Key>,
    pub waiters: VecDeque<Job>,
    /// After a failed connect: no new connection until it ends.
    pub down: Backoff,
    /// Why the last connect failed, for the pings failed while `down` lasts.
    pub down_reason: String,
    /// After a connection that was closed or failed young, before it carried any answer (the
    /// buyer accepts and hangs up, a TLS handshake fails): no warm connection is opened until
    /// it ends, so such a buyer is not reconnected to on every housekeeping tick.
    pub refill: Backoff,
    /// When a failed TLS handshake with this endpoint was last told on stderr: at most once a
    /// minute per worker (`TLS_ERROR_LOG_EVERY`), since such a buyer fails every lead.
    pub tls_error_logged: Option<Instant>,
    /// Connections accepted over the pool's life, for the operator.
    pub opened: u64,
    /// The server name to verify, for an https endpoint.
    pub tls_host: Option<String>,
    /// The trust roots of the config the pool was made under, for its https connections.
    pub tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// No buyer of the config in force uses it: it serves the leads still running under an
    /// earlier config, then its connections close.
    pub retired: bool,
    /// The buyer it serves, by index in the config in force (its pause stops the warm
    /// connections).
    pub buyer: usize,
}

impl Pool {
    pub fn new(
        addr: Option<SocketAddr>,
        max_connections: usize,
        min_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            addr,
            max_connections,
            min_idle,
            idle_timeout,
            total: 0,
            idle: Vec::new(),
            waiters: VecDeque::new(),
            down: Backoff::default(),
            down_reason: String::new(),
            refill: Backoff::default(),
            tls_error_logged: None,
            opened: 0,
            tls_host: None,
            tls_config: None,
            retired: false,
            buyer: 0,
        }
    }

    pub fn is_down(&self, now: Instant) -> bool {
        self.down.active(now)
    }

    /// A connect failed for `why`: no new connection until the backoff ends, and the pings
    /// that come meanwhile fail with `why` as their reason.
    pub fn connect_failed(&mut self, now: Instant, why: &str) {
        self.down.failed(now);
        if self.down_reason != why {
            self.down_reason.clear();
            self.down_reason.push_str(why);
        }
    }

    pub fn connect_succeeded(&mut self) {
        self.down.reset();
    }

    /// Whether the warm connections may be topped up at `now`.
    pub fn may_refill(&self, now: Instant) -> bool {
        !self.down.active(now) && !self.refill.active(now)
    }

    /// A connection ended young without an answer: warm ones wait.
    pub fn refill_failed(&mut self, now: Instant) {
        self.refill.failed(now);
    }

    /// A connection carried an answer: the buyer serves, warm connections are opened at once.
    pub fn answered(&mut self) {
        self.refill.reset();
    }
}

/// A wait after a failure, 50 ms doubling with each failure to 1 s (`MIN_BACKOFF`,
/// `MAX_BACKOFF`), cleared by a success.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            until: None,
            delay: MIN_BACKOFF,
        }
    }
}

impl Backoff {
    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }

    pub fn failed(&mut self, now: Instant) {
        self.until = Some(now + self.delay);
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// What a round of socket writes achieved.
pub enum Flush {
    /// Everything written.
    Done,
    /// The socket is full: wait for writability.
    Blocked,
    /// The peer is gone.
    Failed,
}

/// Write `buf[*pos..]` until done, the socket is full, or it fails.
pub fn flush<W: Write>(stream: &mut W, buf: &[u8], pos: &mut usize) -> Flush {
    while *pos < buf.len() {
        match stream.write(&buf[*pos..]) {
            Ok(0) => return Flush::Failed,
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
            Err(_) => return Flush::Failed,
        }
    }
    Flush::Done
}

impl BuyerConn {
    /// The current request has reached the buyer's socket: some of its bytes were written, or
    /// over TLS, the handshake is done and records went out after it (a request buffered in a
    /// session whose handshake then fails never reached the buyer).
    pub fn request_written(&self) -> bool {
        match &self.tls {
            None => self.wpos > 0,
            Some(tls) => self.wpos > 0 && self.on_wire && !tls.is_handshaking(),
        }
    }

    /// Move the request toward the buyer: straight to the socket, or through the TLS session
    /// (which also carries its own handshake records).
    pub fn write_out(&mut self) -> Flush {
        let Some(tls) = self.tls.as_mut() else {
            let before = self.wpos;
            let r = flush(&mut self.stream, &self.wbuf, &mut self.wpos);
            self.on_wire |= self.wpos > before;
            return r;
        };
        while self.wpos < self.wbuf.len() {
            match tls.writer().write(&self.wbuf[self.wpos..]) {
                Ok(0) => break, // rustls's buffer is full: drain it to the socket first
                Ok(n) => self.wpos += n,
                Err(_) => return Flush::Failed,
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Flush::Failed,
                Ok(_) => self.on_wire = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(_) => return Flush::Failed,
            }
        }
        if self.wpos < self.wbuf.len() {
            // More plaintext than rustls buffers at once: the rest goes on the next round.
            return Flush::Blocked;
        }
        Flush::Done
    }

    /// Read what the buyer sent into `rbuf` (decrypted for TLS): `Ok(true)` at the end of the
    /// stream, `Err` with the reason when the connection is broken. `peer_closed` (the event
    /// said the buyer closed its side) reads on to the end of the stream; otherwise a short
    /// read, which drained the socket, ends the call without the read that would say so.
    pub fn read_in(&mut self, scratch: &mut [u8], peer_closed: bool) -> Result<bool, String> {
        let limit = MAX_BUYER_ANSWER_BYTES + 16 * 1024;
        let too_long = || format!("answer over {limit} bytes");
        let Some(tls) = self.tls.as_mut() else {
            loop {
                if self.rbuf.len() >= limit {
                    return Err(too_long());
                }
                match self.stream.read(scratch) {
                    Ok(0) => return Ok(true),
                    Ok(n) => {
                        self.rbuf.extend_from_slice(&scratch[..n]);
                        if n < scratch.len() && !peer_closed {
                            return Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(format!("connection error: {e}")),
                }
            }
        };
        let mut eof = false;
        // A transport error (a reset) after records that carried a whole answer: the answer
        // is still taken, as on a plain connection, where the bytes read before the error
        // are in `rbuf`. The caller decodes what was read before it fails the connection.
        let mut failed = None;
        loop {
            match tls.read_tls(&mut self.stream) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // An untrusted certificate, a wrong host name, a protocol error.
                        return Err(format!("TLS: {}", crate::net::tls::reason(&e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed = Some(format!("connection error: {e}"));
                    break;
                }
            }
        }
        let read = loop {
            if self.rbuf.len() >= limit {
                return Err(too_long());
            }
            match tls.reader().read(scratch) {
                // close_notify: the buyer ended the session cleanly.
                Ok(0) => break Ok(true),
                Ok(n) => self.rbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(eof),
                // The transport ended without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(true),
                Err(e) => return Err(format!("TLS: {e}")),
            }
        };
        match failed {
            Some(reason) => Err(reason),
            None => read,
        }
    }

    /// The TLS session has records to send (handshake, or plaintext queued during it).
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}
