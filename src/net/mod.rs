//! The I/O shell: thread-per-core event loops on mio that move bytes between sockets and the
//! sans-IO codecs (`http`, `lead`) and feed the auction machines.
//!
//! Each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT` listener for the seller API,
//! its seller connections, its buyer connection pools, its timers and its statistics. A lead
//! is accepted, auctioned and answered on one thread and never crosses to another.

mod buyer;
mod slab;
mod timer;
mod worker;

use crate::caps::CapTable;
use crate::config::{Scheme, Snapshot};
use crate::stats::WorkerStats;
use parking_lot::Mutex;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Listen backlog of each worker's seller socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// What every worker shares: read-mostly config, lock-free counters, per-worker stats.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    /// Cap and budget counters of every buyer, shared lock-free by all workers.
    pub caps: Arc<CapTable>,
    /// Auctions in flight across all workers, against `server.max_in_flight`.
    pub in_flight: AtomicUsize,
    pub shutdown: AtomicBool,
    pub stats: Vec<Arc<Mutex<WorkerStats>>>,
}

/// A config snapshot with what the engine derives from it at start: buyers' resolved addresses
/// and the sellers' rate windows.
pub struct Runtime {
    pub snap: Arc<Snapshot>,
    /// Per buyer: the resolved ping and post addresses (`None`: no URL, unresolvable, or TLS).
    pub ping_addrs: Vec<Option<SocketAddr>>,
    pub post_addrs: Vec<Option<SocketAddr>>,
    /// Per seller: (unix second << 32 | leads in that second), for `max_leads_per_second`.
    pub rate: Vec<AtomicU64>,
}

impl Runtime {
    pub fn new(snap: Arc<Snapshot>) -> Runtime {
        let resolve = |e: &Option<crate::config::Endpoint>| -> Option<SocketAddr> {
            let e = e.as_ref()?;
            if e.scheme == Scheme::Https {
                return None;
            }
            (e.host.as_str(), e.port).to_socket_addrs().ok()?.next()
        };
        Runtime {
            ping_addrs: snap.buyers.iter().map(|b| resolve(&b.ping)).collect(),
            post_addrs: snap.buyers.iter().map(|b| resolve(&b.post)).collect(),
            rate: snap.sellers.iter().map(|_| AtomicU64::new(0)).collect(),
            snap,
        }
    }

    /// Count one lead against the seller's per-second limit; false when over it.
    pub fn admit_rate(&self, seller: usize, unix_s: u64) -> bool {
        let Some(limit) = self
            .snap
            .sellers
            .get(seller)
            .and_then(|s| s.max_leads_per_second)
        else {
            return true;
        };
        let Some(cell) = self.rate.get(seller) else {
            return true;
        };
        let mut cur = cell.load(Ordering::Relaxed);
        loop {
            let (sec, count) = (cur >> 32, cur & 0xffff_ffff);
            let next = if sec == (unix_s & 0xffff_ffff) {
                if count >= limit as u64 {
                    return false;
                }
                cur + 1
            } else {
                ((unix_s & 0xffff_ffff) << 32) | 1
            };
            match cell.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// A running exchange: its workers and the address they listen on.
pub struct ServerHandle {
    shared: Arc<Shared>,
    admin_addr: Option<SocketAddr>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the operator API listens, when `server.admin_listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// All workers' stats merged.
    pub fn stats(&self) -> WorkerStats {
        let mut total = WorkerStats::default();
        for s in &self.shared.stats {
            total.merge(&s.lock());
        }
        total
    }

    /// Stop accepting, let the workers exit, and wait for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Block until the workers exit (on shutdown).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// Bind a seller listener with SO_REUSEPORT so that every worker accepts on the same port and
/// the kernel spreads connections across them.
fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// Start the exchange's workers on `snap.server.listen` (port 0 picks a free port, shared by
/// all workers).
pub fn start(snap: Arc<Snapshot>) -> io::Result<ServerHandle> {
    let workers = snap.server.workers.max(1);
    let first = bind_reuseport(snap.server.listen)?;
    let local_addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_reuseport(local_addr)?);
    }
    let caps = Arc::new(caps_for(&snap));
    start_with_caps(snap, caps, listeners, local_addr, workers)
}

/// The cap table for a snapshot: each buyer's limits on its own calendar, paused as configured.
pub fn caps_for(snap: &Snapshot) -> CapTable {
    let limits: Vec<_> = snap.buyers.iter().map(|b| (b.caps, b.timezone)).collect();
    let table = CapTable::new(&limits);
    for (i, b) in snap.buyers.iter().enumerate() {
        if b.paused {
            table.pause(i);
        }
    }
    table
}

fn start_with_caps(
    snap: Arc<Snapshot>,
    caps: Arc<CapTable>,
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    workers: usize,
) -> io::Result<ServerHandle> {
    let runtime = Arc::new(Runtime::new(snap));
    let shared = Arc::new(Shared {
        runtime,
        caps,
        in_flight: AtomicUsize::new(0),
        shutdown: AtomicBool::new(false),
        stats: (0..workers)
            .map(|_| Arc::new(Mutex::new(WorkerStats::default())))
            .collect(),
    });
    let mut wakers = Vec::new();
    let mut threads = Vec::new();
    for (id, l) in listeners.into_iter().enumerate() {
        let w = worker::Worker::new(id, shared.clone(), mio::net::TcpListener::from_std(l))?;
        wakers.push(w.waker());
        let t = std::thread::Builder::new()
            .name(format!("gavel-worker-{}", id))
            .spawn(move || w.run())?;
        threads.push(t);
    }
    let admin_addr = match shared.runtime.snap.server.admin_listen {
        Some(addr) => {
            Some(crate::admin::start(addr, shared.clone(), std::time::Instant::now())?.local_addr)
        }
        None => None,
    };
    Ok(ServerHandle {
        shared,
        admin_addr,
        wakers,
        threads,
        local_addr,
    })
}
