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
use crate::journal::{self, Journal, JournalOptions, Record, RecoveryReport, SyncMode};
use crate::stats::WorkerStats as Stats;
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
    /// The book of record; every worker appends to it without a lock.
    pub journal: Arc<Journal>,
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
    recovery: RecoveryReport,
    replayed: u64,
    admin_addr: Option<SocketAddr>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What opening the journal found (and cut), and how many sales were replayed into caps.
    pub fn recovery(&self) -> (&RecoveryReport, u64) {
        (&self.recovery, self.replayed)
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
    let (journal, recovery) = open_journal(&snap)?;
    let mut pnl = Stats::default();
    let replayed = rebuild(&snap, &journal, &caps, &mut pnl)?;
    start_with(
        snap,
        caps,
        Arc::new(journal),
        (recovery, replayed, pnl),
        listeners,
        local_addr,
        workers,
    )
}

/// Open (and so recover) the journal the config names.
pub fn open_journal(snap: &Snapshot) -> io::Result<(Journal, RecoveryReport)> {
    let j = &snap.journal;
    let sync = match j.sync {
        crate::config::SyncPolicy::Os => SyncMode::Os,
        crate::config::SyncPolicy::Interval => SyncMode::Interval(j.sync_interval),
        crate::config::SyncPolicy::Always => SyncMode::Always,
    };
    let opts = JournalOptions {
        dir: j.dir.clone(),
        segment_bytes: j.segment_bytes,
        sync,
        retain_segments: j.retain_segments,
    };
    Journal::open(opts).map_err(|e| io::Error::other(format!("journal {}: {}", j.dir.display(), e)))
}

/// The longest cap window (a month) plus a day: sales older than this count toward no open window.
pub const CAP_REPLAY_WINDOW_US: u64 = 32 * 24 * 3600 * 1_000_000;

/// Rebuild from the journal what must survive a restart: each buyer's caps and budget for the
/// windows still open (so a restart never lets a buyer exceed a cap), and the P&L of that period.
fn rebuild(
    snap: &Snapshot,
    journal: &Journal,
    caps: &CapTable,
    pnl: &mut Stats,
) -> io::Result<u64> {
    let now = chrono::Utc::now();
    let now_us = now.timestamp_micros().max(0) as u64;
    let since = now_us.saturating_sub(CAP_REPLAY_WINDOW_US);
    let mut sales = 0u64;
    let reader = journal::Reader::open_since(journal.dir(), since)
        .map_err(|e| io::Error::other(format!("journal replay: {}", e)))?;
    for item in reader {
        let e = item.map_err(|e| io::Error::other(format!("journal replay: {}", e)))?;
        if e.ts_us < since {
            continue;
        }
        match &e.record {
            Record::Sale {
                buyer, price_cents, ..
            } => {
                if let Some(b) = snap.buyer_by_id(buyer) {
                    let ts = chrono::DateTime::from_timestamp_micros(e.ts_us as i64).unwrap_or(now);
                    caps.replay_sale(b, ts, *price_cents, now);
                }
                let s = pnl.buyer(buyer);
                s.wins += 1;
                s.spent_cents += price_cents;
                sales += 1;
            }
            Record::LeadAnswered {
                campaign,
                status,
                price_cents,
                payout_cents,
                ..
            } => {
                let c = pnl.campaign(campaign);
                c.leads += 1;
                match status {
                    journal::LeadStatus::Sold => c.sold += 1,
                    journal::LeadStatus::Unsold => c.unsold += 1,
                }
                c.revenue_cents += price_cents;
                c.payout_cents += payout_cents;
            }
            Record::Rejected { campaign, .. } => {
                let c = pnl.campaign(campaign);
                c.leads += 1;
                c.rejected += 1;
            }
            _ => {}
        }
    }
    Ok(sales)
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

fn start_with(
    snap: Arc<Snapshot>,
    caps: Arc<CapTable>,
    journal: Arc<Journal>,
    (recovery, replayed, pnl): (RecoveryReport, u64, Stats),
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    workers: usize,
) -> io::Result<ServerHandle> {
    let runtime = Arc::new(Runtime::new(snap));
    let shared = Arc::new(Shared {
        runtime,
        caps,
        journal,
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
    // The P&L rebuilt from the journal starts the first worker's counters.
    if let Some(first) = shared.stats.first() {
        first.lock().merge(&pnl);
    }
    let admin_addr = match shared.runtime.snap.server.admin_listen {
        Some(addr) => {
            Some(crate::admin::start(addr, shared.clone(), std::time::Instant::now())?.local_addr)
        }
        None => None,
    };
    Ok(ServerHandle {
        shared,
        recovery,
        replayed,
        admin_addr,
        wakers,
        threads,
        local_addr,
    })
}
