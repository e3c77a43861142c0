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
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Requests waiting for a connection of one pool when all are busy; beyond it a ping fails at once.
pub const MAX_WAITERS_PER_POOL: usize = 4096;
/// First reconnect delay after a failed connect; doubles up to `MAX_BACKOFF`.
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connect that has not completed by then is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A draining connection whose late answer has not come by then is closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer a buyer may send (head limits are the codec's defaults).
pub const MAX_BUYER_ANSWER_BYTES: usize = 64 * 1024;
/// Read buffer chunk for buyer sockets.
pub const BUYER_READ_CHUNK: usize = 4096;

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
}

impl BuyerConn {
    pub fn new(pool: usize, stream: mio::net::TcpStream, now: Instant) -> BuyerConn {
        BuyerConn {
            pool,
            stream,
            connected: false,
            opened_at: now,
            idle_since: now,
            served: 0,
            job: None,
            wbuf: Vec::with_capacity(1024),
            wpos: 0,
            rbuf: Vec::with_capacity(BUYER_READ_CHUNK),
            body: Vec::with_capacity(256),
            decoder: ResponseDecoder::new(Limits::with_max_body_bytes(MAX_BUYER_ANSWER_BYTES)),
            draining_since: None,
            in_idle: false,
            write_interest: true,
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
    /// After a failed connect: no new connection before this instant.
    pub down_until: Option<Instant>,
    pub backoff: Duration,
    /// Connections accepted over the pool's life, for the operator.
    pub opened: u64,
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
            down_until: None,
            backoff: MIN_BACKOFF,
            opened: 0,
        }
    }

    pub fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|t| now < t)
    }

    pub fn connect_failed(&mut self, now: Instant) {
        self.down_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    pub fn connect_succeeded(&mut self) {
        self.down_until = None;
        self.backoff = MIN_BACKOFF;
    }
}
