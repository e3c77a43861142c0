//! The I/O shell: thread-per-core event loops on mio that move bytes between sockets and the
//! sans-IO codecs (`http`, `lead`) and feed the auction machines.
//!
//! Each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT` listener for the seller API,
//! its seller connections (counted against `server.max_connections` across all workers), its
//! buyer connection pools, its timers and its statistics. A lead is accepted, auctioned and
//! answered on one thread and never crosses to another.

mod buyer;
pub mod clock;
pub(crate) mod deadlines;
mod held;
pub mod idempotency;
pub(crate) mod lookup;
pub(crate) mod rate;
mod reload;
mod seller_conns;
pub(crate) mod slab;
mod steps;
mod timer;
pub mod tls;
mod worker;

pub use self::reload::{reload, ReloadError, ReloadReport};
pub use self::worker::{DRAIN_LIMIT, FIRST_REQUEST_GRACE, MAX_PIPELINED};

/// The bounds on a buyer connection, shared with `gavel buyer-check` so that it holds buyers
/// to the same limits as the exchange.
pub use buyer::{CONNECT_TIMEOUT, MAX_BUYER_ANSWER_BYTES};

use crate::caps::CapTable;
use crate::compliance::DedupeIndex;
use crate::config::{Scheme, Snapshot};
use crate::journal::{
    self, Journal, JournalError, JournalOptions, Record, RecoveryReport, SyncMode,
};
use crate::stats::WorkerStats as Stats;
use crate::stats::WorkerStats;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Listen backlog of each worker's seller socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// What every worker shares: read-mostly config, lock-free counters, per-worker stats.
pub struct Shared {
    /// The config in force. Workers do not lock it per lead: each compares `generation` with
    /// its own once per loop turn and takes the new runtime only when it moved.
    runtime: Mutex<Arc<Runtime>>,
    /// The generation of `runtime`, published after it.
    generation: AtomicU64,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// The workers' wakers, so that a reload reaches idle workers at once.
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    /// The book of record; every worker appends to it without a lock.
    pub journal: Arc<Journal>,
    /// Seller-side ping-post: bids held from `/v1/ping` for `/v1/post`, by ping id, and the
    /// recently expired pings. Touched once per ping and once per post, never per buyer;
    /// bounded by `MAX_HELD_PINGS` and `MAX_EXPIRED_PINGS`.
    pub held: Mutex<held::HeldPings>,
    /// Phones and emails seen per campaign within `dedupe_days`, shared by all workers.
    pub dedupe: Arc<DedupeIndex>,
    /// The largest `server.dedupe_entries` since the start (the start's, or a reload's that
    /// raised it): a reload raises the index's size at once but lowers it only at the next
    /// start, so the index keeps room for this many until then, also when a reload begins
    /// deduping (the index was small while nothing deduped).
    pub dedupe_entries_kept: AtomicUsize,
    /// The sellers' `Idempotency-Key`s and the leads they name, shared by all workers.
    pub idempotency: idempotency::IdempotencyIndex,
    /// The time `Idempotency-Key`s and dedupe windows are measured by (see [`clock`]).
    pub clock: clock::StepFreeClock,
    /// Auctions in flight across all workers, against `server.max_in_flight`.
    pub in_flight: AtomicUsize,
    /// Seller connections across all workers, against `server.max_connections`.
    pub seller_conns: seller_conns::SellerConns,
    pub shutdown: AtomicBool,
    /// Asked to stop: take no new leads, answer the ones in flight, then exit.
    pub draining: AtomicBool,
    /// When this process started serving (unix µs): a post journaled before it and never
    /// answered was cut off by the last stop, one after it is still in flight.
    pub started_us: u64,
    pub stats: Vec<Arc<Mutex<WorkerStats>>>,
    /// `GET /v1/leads/{id}`: questions for the journal's reader thread.
    pub lookups: lookup::Lookups,
    /// The operator's pauses and resumes through the API, as persisted beside the journal.
    pause_words: Mutex<PauseWords>,
}

impl Shared {
    /// The config in force now (with its caps, resolved addresses and rate windows).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.lock().clone()
    }

    /// The generation of the config in force: 1 at start, one more per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stop taking leads, let the workers answer the ones in flight (for at most
    /// `DRAIN_LIMIT`) and exit; `ServerHandle::join` returns when they have.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for w in self.wakers.lock().iter() {
            let _ = w.wake();
        }
    }

    /// Stop at once: the workers exit at their next loop turn, leads in flight unanswered.
    pub fn stop_now(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for w in self.wakers.lock().iter() {
            let _ = w.wake();
        }
    }

    /// Wake worker `id` (a letter about seller connections is waiting for it).
    fn wake(&self, id: usize) {
        if let Some(w) = self.wakers.lock().get(id) {
            let _ = w.wake();
        }
    }

    /// Make `rt` the config in force and wake every worker to take it.
    fn publish(&self, rt: Arc<Runtime>) {
        let generation = rt.generation;
        *self.runtime.lock() = rt;
        self.generation.store(generation, Ordering::Release);
        for w in self.wakers.lock().iter() {
            let _ = w.wake();
        }
    }
}

pub use held::{EXPIRED_PING_MEMORY, MAX_EXPIRED_PINGS, MAX_HELD_PINGS};

/// The bids of a seller's `/v1/ping`, held until its `/v1/post` or until they expire.
pub struct HeldPing {
    /// The snapshot the ping ran under: `seller`, `campaign` and the bids' buyers are its
    /// indexes (a post after a reload maps them onto the new snapshot by id).
    pub snap: Arc<Snapshot>,
    pub seller: usize,
    pub campaign: usize,
    pub test: bool,
    /// (buyer, cents, bid id), best first.
    pub bids: Vec<(usize, crate::money::Cents, Option<crate::text::SmallText>)>,
    /// Positive bids the ping received, held or not: the post's answer reports them.
    pub bids_received: u32,
    /// The ping's values of the campaign's ping fields: the post must not contradict them.
    pub fields: crate::lead::Fields,
    pub expires: std::time::Instant,
    /// A post claimed it (a second post is refused with 409).
    pub posted: bool,
    /// The post that claimed it is still being checked (its content, its consumer): a
    /// refusal gives the ping back, so a post meanwhile is told `in_progress`, not
    /// `already_posted`.
    pub checking: bool,
    /// The seller's payout rule the offer was made under: the post pays by it, whatever a
    /// reload or a restart changed since.
    pub payout: crate::config::Payout,
    /// The ping's `source`, carried onto its post.
    pub source: Option<String>,
    /// Every buyer the ping's auction had a turn for (bid or not): they priced the lead
    /// themselves, so the post's fallback does not sell it to them at a fixed price.
    pub priced: Vec<usize>,
    /// A hold read back from the journal at a start: its bids and pricers by id as journaled,
    /// so that a post after a reload maps them onto that config, where a buyer the start's
    /// config did not have may be back (as a hold kept through two reloads keeps its bid).
    pub journaled: Option<Box<HeldById>>,
}

impl HeldPing {
    /// A hold with no bids, of the first seller and campaign of `snap`, under an 80% share,
    /// until `expires`: what filling the hold takes in tests.
    pub fn empty(snap: Arc<Snapshot>, expires: std::time::Instant) -> HeldPing {
        HeldPing {
            snap,
            seller: 0,
            campaign: 0,
            test: false,
            bids: Vec::new(),
            bids_received: 0,
            fields: crate::lead::Fields::default(),
            expires,
            posted: false,
            checking: false,
            payout: crate::config::Payout::ShareBp(8000),
            source: None,
            priced: Vec::new(),
            journaled: None,
        }
    }
}

/// A hold's bids (best first) and pricers by buyer id, as the journal has them.
#[derive(Debug, Clone)]
pub struct HeldById {
    pub bids: Vec<(String, crate::money::Cents, Option<crate::text::SmallText>)>,
    pub priced: Vec<String>,
}

/// The journal's form of a payout rule.
pub fn payout_terms(rule: crate::config::Payout) -> journal::PayoutTerms {
    match rule {
        crate::config::Payout::ShareBp(bp) => journal::PayoutTerms::ShareBp(bp),
        crate::config::Payout::Fixed(c) => journal::PayoutTerms::Fixed(c),
    }
}

/// A payout rule read back from the journal.
pub fn payout_rule(terms: journal::PayoutTerms) -> crate::config::Payout {
    match terms {
        journal::PayoutTerms::ShareBp(bp) => crate::config::Payout::ShareBp(bp),
        journal::PayoutTerms::Fixed(c) => crate::config::Payout::Fixed(c),
    }
}

/// Round-robin distribution of one campaign: the first turn of each lead goes to the eligible
/// buyer whose last turn (a first offer, or a post a cascade reached) is the oldest, so a
/// buyer that matches fewer leads than the others (one state of several) still gets its share
/// of the leads it matches, which a counter modulo the number of buyers eligible for each lead
/// would not give it.
///
/// A lead a buyer rejects cascades to the others in a rotation of their own (the one the
/// longest without a cascade's post when the cascade is made first), not in the order of
/// turns: then the same buyer would follow the rejecter every time and get every lead it
/// rejected. A cascade's post is
/// not a turn, so every buyer gets the same share of first offers, and the leads rejected
/// are spread evenly over the others, however many buyers reject.
pub struct RoundRobin {
    /// First turns handed out so far.
    pub turns: AtomicU64,
    /// Per buyer of the snapshot: the turn it last had (0: none yet). Empty for a campaign
    /// that never distributes round robin.
    pub last: Vec<AtomicU64>,
    /// Cascades' posts so far.
    pub cascades: AtomicU64,
    /// Per buyer of the snapshot: the cascade's post it last had (0: none yet).
    pub last_cascade: Vec<AtomicU64>,
}

/// Attempts at taking a buyer's turn when another worker took one at the same moment, before
/// the lead goes ahead in the order it has.
pub const ROUND_ROBIN_RETRIES: usize = 4;

impl RoundRobin {
    pub fn new(c: &crate::config::Campaign, buyers: usize) -> RoundRobin {
        let used = c.method == crate::config::Method::RoundRobin
            || c.fallback == Some(crate::config::Method::RoundRobin);
        let n = if used { buyers } else { 0 };
        RoundRobin {
            turns: AtomicU64::new(0),
            last: (0..n).map(|_| AtomicU64::new(0)).collect(),
            cascades: AtomicU64::new(0),
            last_cascade: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `buyer` is posted to: a turn for a lead's first offer (a shared lead's first posts),
    /// a cascade's post for a post after one of the lead's posts ended unsold (`cascade`).
    pub fn took(&self, buyer: usize, cascade: bool) {
        let (counter, slots) = if cascade {
            (&self.cascades, &self.last_cascade)
        } else {
            (&self.turns, &self.last)
        };
        if let Some(slot) = slots.get(buyer) {
            let turn = counter.fetch_add(1, Ordering::Relaxed) + 1;
            slot.fetch_max(turn, Ordering::Relaxed);
        }
    }

    /// The cascade's post `buyer` last had (0: none yet), for a lead's cascade taken later
    /// than its order was made (`Auction::reorder_unposted`).
    pub fn last_cascade_of(&self, buyer: usize) -> u64 {
        self.last_cascade
            .get(buyer)
            .map_or(0, |t| t.load(Ordering::Relaxed))
    }

    /// Order `buyers` (eligible, sorted by priority) for one lead: the longest without a
    /// turn first, and first offered (`firsts` of them: a shared lead's first posts), the
    /// rest after them the longest without a cascade's post first; the first offers' turns
    /// are taken (the first's with a compare-and-swap).
    pub fn order(&self, buyers: &mut [usize], firsts: usize) {
        let last = |b: usize| self.last.get(b).map_or(0, |t| t.load(Ordering::Relaxed));
        let last_cascade = |b: usize| self.last_cascade_of(b);
        for _ in 0..ROUND_ROBIN_RETRIES {
            // Stable: among equals, priority and config order decide.
            buyers.sort_by_cached_key(|&b| last(b));
            let Some(&first) = buyers.first() else {
                return;
            };
            let Some(slot) = self.last.get(first) else {
                return;
            };
            let seen = slot.load(Ordering::Relaxed);
            let turn = self.turns.fetch_add(1, Ordering::Relaxed) + 1;
            if slot
                .compare_exchange(seen, turn, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
        // A shared lead's other first offers take their turns now too, in this order: all of
        // a seller's ping's are taken at the ping, and its post takes none again.
        for &b in buyers.iter().take(firsts).skip(1) {
            self.took(b, false);
        }
        // Stable too: among buyers no cascade has reached yet, the turns' order stands.
        if let Some(rest) = buyers.get_mut(firsts.max(1)..) {
            rest.sort_by_cached_key(|&b| last_cascade(b));
        }
    }
}

/// A config snapshot with what the engine derives from it: buyers' resolved addresses, their
/// caps, the sellers' rate windows. A lead keeps the runtime it started under to its answer.
pub struct Runtime {
    /// 1 at start, one more per reload.
    pub generation: u64,
    pub snap: Arc<Snapshot>,
    /// Cap and budget counters and pause state of the snapshot's buyers, lock-free. Tables of
    /// successive reloads share each kept buyer's counters.
    pub caps: CapTable,
    /// Per buyer: the resolved ping and post addresses (`None`: no URL, unresolvable, or TLS).
    pub ping_addrs: Vec<Option<SocketAddr>>,
    pub post_addrs: Vec<Option<SocketAddr>>,
    /// Per seller: its sliding second for `max_leads_per_second`, carried across reloads.
    pub rate: Vec<Arc<rate::RateWindow>>,
    /// For https buyers (`None` when the CA files could not be read: such buyers then fail).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A checksum of the CA files' paths and contents as read for `tls`: a reload that keeps
    /// the paths but finds other certificates in them (a CA rotated or revoked in place)
    /// gives buyers' https pools new sessions under the new roots.
    pub tls_roots: u32,
    /// Per campaign: round-robin turns, shared by workers.
    pub round_robin: Vec<RoundRobin>,
    /// Per buyer: the head of its ping and of its post request up to `Content-Length: `
    /// (request line, `Host`, its headers, `Content-Type`), built once per config rather than
    /// once per request. Empty without an endpoint.
    pub ping_heads: Vec<Vec<u8>>,
    pub post_heads: Vec<Vec<u8>>,
}

/// The request head prefix of a buyer's requests to `endpoint` ([`crate::http::OutgoingRequest::write_head_prefix`]).
fn request_head(b: &crate::config::Buyer, endpoint: &Option<crate::config::Endpoint>) -> Vec<u8> {
    let Some(e) = endpoint else {
        return Vec::new();
    };
    let mut out = Vec::new();
    crate::http::OutgoingRequest {
        method: "POST",
        path: &e.path,
        host: &e.host_header,
        headers: b.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        content_type: b
            .codec
            .as_ref()
            .map_or("application/json", |c| c.content_type()),
        body: &[],
    }
    .write_head_prefix(&mut out);
    out
}

/// What the operator is told of a buyer endpoint whose host does not resolve.
fn unresolved_note(buyer: &str, which: &str, host: &str) -> String {
    format!(
        "buyer {}: {which} host {host:?} does not resolve: its requests fail (`error`, \
         \"buyer endpoint unreachable\") until a reload resolves it",
        crate::text::shown(buyer)
    )
}

/// The buyer endpoints of `snap` whose host does not resolve on this machine now, as
/// `gavel check` reports them (`serve` says the same at its start and at each reload).
pub fn unresolved_endpoints(snap: &Snapshot) -> Vec<String> {
    let mut notes = Vec::new();
    for b in &snap.buyers {
        for (e, which) in [(&b.ping, "ping_url"), (&b.post, "post_url")] {
            let Some(e) = e else { continue };
            let resolves = (e.host.as_str(), e.port)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some());
            if !resolves {
                notes.push(unresolved_note(&b.id, which, &e.host));
            }
        }
    }
    notes
}

impl Runtime {
    /// The first runtime of a process: fresh caps (paused as configured).
    pub fn new(snap: Arc<Snapshot>) -> Runtime {
        let caps = caps_for(&snap);
        Runtime::with_caps(snap, caps, 1)
    }

    fn with_caps(snap: Arc<Snapshot>, caps: CapTable, generation: u64) -> Runtime {
        let resolve = |e: &Option<crate::config::Endpoint>| -> Option<SocketAddr> {
            let e = e.as_ref()?;
            (e.host.as_str(), e.port).to_socket_addrs().ok()?.next()
        };
        let needs_tls = snap.buyers.iter().any(|b| {
            [&b.ping, &b.post]
                .iter()
                .any(|e| e.as_ref().is_some_and(|e| e.scheme == Scheme::Https))
        });
        let tls = if needs_tls {
            tls::client_config(&snap.tls_ca_files).ok()
        } else {
            None
        };
        let tls_roots = snap.tls_ca_files.iter().fold(0u32, |crc, path| {
            let crc = crc32c::crc32c_append(crc, path.as_os_str().as_encoded_bytes());
            match crate::config::read_regular_file(path, crate::config::MAX_PEM_FILE_BYTES) {
                Ok(pem) => crc32c::crc32c_append(crc, &pem),
                Err(_) => crc32c::crc32c_append(crc, b"\0unreadable"),
            }
        });
        let ping_addrs: Vec<Option<SocketAddr>> =
            snap.buyers.iter().map(|b| resolve(&b.ping)).collect();
        let post_addrs: Vec<Option<SocketAddr>> =
            snap.buyers.iter().map(|b| resolve(&b.post)).collect();
        // Said at the start and at each reload, as they are resolved then: otherwise the
        // operator learns of it only from the buyer's `error` pings.
        for (i, b) in snap.buyers.iter().enumerate() {
            for (e, addr, which) in [
                (&b.ping, ping_addrs[i], "ping_url"),
                (&b.post, post_addrs[i], "post_url"),
            ] {
                if let (Some(e), None) = (e, addr) {
                    eprintln!("gavel: warning: {}", unresolved_note(&b.id, which, &e.host));
                }
            }
        }
        if needs_tls && tls.is_none() {
            eprintln!(
                "gavel: warning: the TLS trust roots (tls.ca_files) cannot be loaded: requests to \
                 https buyers fail until a reload loads them"
            );
        }
        Runtime {
            generation,
            caps,
            ping_addrs,
            post_addrs,
            rate: snap
                .sellers
                .iter()
                .map(|_| Arc::new(rate::RateWindow::new(std::time::Instant::now())))
                .collect(),
            tls,
            tls_roots,
            round_robin: snap
                .campaigns
                .iter()
                .map(|c| RoundRobin::new(c, snap.buyers.len()))
                .collect(),
            ping_heads: snap
                .buyers
                .iter()
                .map(|b| request_head(b, &b.ping))
                .collect(),
            post_heads: snap
                .buyers
                .iter()
                .map(|b| request_head(b, &b.post))
                .collect(),
            snap,
        }
    }

    /// Count one lead against the seller's `max_leads_per_second`; false when over it.
    pub fn admit_rate(&self, seller: usize, now: std::time::Instant) -> bool {
        let Some(limit) = self
            .snap
            .sellers
            .get(seller)
            .and_then(|s| s.max_leads_per_second)
        else {
            return true;
        };
        self.rate.get(seller).is_none_or(|w| w.admit(limit, now))
    }
}

/// A running exchange: its workers and the address they listen on.
pub struct ServerHandle {
    shared: Arc<Shared>,
    recovery: RecoveryReport,
    replayed: Replayed,
    admin_addr: Option<SocketAddr>,
    wakers: Vec<Arc<mio::Waker>>,
    /// The workers.
    threads: Vec<JoinHandle<()>>,
    /// Threads that serve until `shutdown` is set (the operator API's accept thread): joined
    /// after the workers.
    aux: Vec<JoinHandle<()>>,
    /// Dropped to end the lookup thread at once (it is one of `aux`).
    stop_lookups: Option<crossbeam_channel::Sender<()>>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What opening the journal found (and cut), and what was replayed into caps.
    pub fn recovery(&self) -> (&RecoveryReport, &Replayed) {
        (&self.recovery, &self.replayed)
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
        self.stop_lookups = None;
        for t in self.threads.drain(..).chain(self.aux.drain(..)) {
            let _ = t.join();
        }
    }

    /// Block until the workers exit (a drain or a stop), then end the threads that serve
    /// beside them and wait for those too.
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stop();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() || !self.aux.is_empty() {
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
    let cannot_listen = |addr: SocketAddr, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
    };
    if snap.server.listen.port() != 0 {
        // SO_REUSEPORT would let a second exchange share the port with a running one (and
        // split the sellers' connections between two journals, caps and dedupe indexes): a
        // plain bind first tells whether anyone listens there already.
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(snap.server.listen),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        probe.set_reuse_address(true)?;
        probe
            .bind(&snap.server.listen.into())
            .map_err(|e| cannot_listen(snap.server.listen, e))?;
    }
    let caps = caps_for(&snap);
    let dedupe = Arc::new(DedupeIndex::new(dedupe_entries(&snap)));
    let (journal, recovery) = open_journal(&snap)?;
    // Buyers the operator paused through the API stay paused across a restart, and those it
    // resumed though their config pauses them stay resumed.
    let mut words = PauseWords::read(journal.dir());
    if !words.rename(&snap).is_empty() {
        if let Err(e) = words.write(journal.dir()) {
            eprintln!(
                "gavel: warning: cannot write the operator's pauses and resumes under the buyers' \
                 new ids in {}: {e}",
                journal.dir().display()
            );
        }
    }
    for id in &words.resumed {
        if let Some(b) = snap.buyer_by_id(id) {
            caps.resume(b);
        }
    }
    for id in &words.paused {
        if let Some(b) = snap.buyer_by_id(id) {
            caps.pause(b);
        }
    }
    let mut pnl = Stats::default();
    let mut held = held::HeldPings::default();
    let keys = idempotency::IdempotencyIndex::default();
    // Leads left without an answer by damage this start cut out cannot be told apart from
    // leads a stop cut off: none of them is said to be safe to send again.
    let damaged = recovery.cut.is_some();
    let replayed = rebuild(
        &snap,
        &journal,
        (&caps, &dedupe, &keys),
        (&mut pnl, &mut held),
        damaged,
    )?;
    let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
    for (lead_id, kind) in &replayed.to_record {
        let rec = journal::RecordRef::Recovered {
            lead_id,
            kind: *kind,
        };
        // Unrecorded, the next start reports the lead again: nothing is lost.
        if let Err(e) = journal.append(now_us, &rec) {
            eprintln!("gavel: warning: could not record lead {lead_id} as reported: {e}");
            break;
        }
    }
    // Sellers' connections are taken only now, with the caps, dedupe index and P&L rebuilt
    // from the journal: a lead that waited in the listen queue through a long replay would
    // be answered seconds past its deadline.
    let first =
        bind_reuseport(snap.server.listen).map_err(|e| cannot_listen(snap.server.listen, e))?;
    let local_addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_reuseport(local_addr).map_err(|e| cannot_listen(local_addr, e))?);
    }
    let runtime = Runtime::with_caps(snap, caps, 1);
    // Each round-robin rotation goes on from where the last run left it (approximately: by
    // sales, which a buyer that rejects its turns has none of), not from the first buyer.
    for &(c, b) in &replayed.round_robin_sold {
        if let Some(rr) = runtime.round_robin.get(c) {
            rr.took(b, false);
        }
    }
    start_with(
        runtime,
        dedupe,
        Arc::new(journal),
        (recovery, replayed, pnl, held, words, keys),
        listeners,
        local_addr,
        workers,
    )
}

/// How long the journal must keep records: the caps' longest window, and the longest
/// `dedupe_days`, since the dedupe index is rebuilt from the journal too.
pub fn journal_keep_us(snap: &Snapshot) -> u64 {
    snap.campaigns
        .iter()
        .map(|c| u64::from(c.dedupe_days) * 86_400_000_000)
        .max()
        .unwrap_or(0)
        .max(journal::CAP_WINDOW_US)
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
        keep_us: journal_keep_us(snap),
    };
    Journal::open(opts).map_err(|e| match e {
        // These name the journal's directory themselves.
        JournalError::Locked(_)
        | JournalError::NotFound(_)
        | JournalError::NewestMissing { .. }
        | JournalError::OldestMissing { .. }
        | JournalError::BadHead { .. } => io::Error::other(e.to_string()),
        e => io::Error::other(format!("journal {}: {}", j.dir.display(), e)),
    })
}

/// The file beside the journal's segments that lists, one id a line, the buyers paused through
/// the operator API (`POST /v1/admin/buyers/{id}/pause`), so that a restart keeps them paused.
pub const PAUSED_FILE: &str = "paused";

/// Beside it, the buyers the operator resumed through the API although their config says
/// `paused = true`, so that a restart does not pause them again.
pub const RESUMED_FILE: &str = "resumed";

/// The ids in the journal directory's [`PAUSED_FILE`] (none when it is missing or unreadable).
/// Each line is an id exactly as written, spaces included: ` acme` and `acme` are two buyers
/// (an id holds no control character, so no line break).
pub fn read_paused(dir: &std::path::Path) -> Vec<String> {
    read_ids(dir, PAUSED_FILE)
}

/// The operator's last word on each buyer it paused or resumed through the API, as listed in
/// [`PAUSED_FILE`] and [`RESUMED_FILE`]. Kept in memory and written whole on each change, so a
/// write that failed (and was answered `persisted: false`) is made good by the next one.
#[derive(Debug, Default)]
pub struct PauseWords {
    paused: Vec<String>,
    resumed: Vec<String>,
}

impl PauseWords {
    /// The lists in `dir`, warning on stderr of one that is there but cannot be read.
    pub fn read(dir: &std::path::Path) -> PauseWords {
        PauseWords {
            paused: read_ids(dir, PAUSED_FILE),
            resumed: read_ids(dir, RESUMED_FILE),
        }
    }

    /// List under its current id each buyer listed under an id it had before
    /// (`previous_ids`), so the operator's word follows a renamed buyer. Returns the current
    /// ids that took the word of another id (empty when no list changed). Two buyers made one
    /// can leave the one kept in both lists: a pause wins, as [`PauseWords::apply`] reads them.
    pub fn rename(&mut self, snap: &Snapshot) -> Vec<String> {
        let mut moved: Vec<String> = Vec::new();
        for list in [&mut self.paused, &mut self.resumed] {
            let mut renamed: Vec<String> = Vec::with_capacity(list.len());
            for id in list.iter() {
                let current = snap.current_id(id);
                if current != id.as_str() && !moved.iter().any(|x| x == current) {
                    moved.push(current.to_string());
                }
                if !renamed.iter().any(|x| x == current) {
                    renamed.push(current.to_string());
                }
            }
            *list = renamed;
        }
        moved
    }

    /// The operator's word on buyer `id`: `Some(true)` paused (a pause wins where a merge left
    /// the buyer in both lists), `Some(false)` resumed, `None` none.
    fn word(&self, id: &str) -> Option<bool> {
        if self.paused.iter().any(|x| x == id) {
            Some(true)
        } else if self.resumed.iter().any(|x| x == id) {
            Some(false)
        } else {
            None
        }
    }

    /// Write both lists to `dir`.
    fn write(&self, dir: &std::path::Path) -> io::Result<()> {
        write_ids(dir, PAUSED_FILE, &self.paused)?;
        write_ids(dir, RESUMED_FILE, &self.resumed)
    }
}

impl Shared {
    /// Record the operator's pause (`paused`) or resume of buyer `id`, whose config says
    /// `config_paused`: a pause is listed in [`PAUSED_FILE`]; a resume of a buyer the config
    /// pauses is listed in [`RESUMED_FILE`]. Each is the operator's last word on that buyer.
    pub fn write_pause_decision(
        &self,
        id: &str,
        paused: bool,
        config_paused: bool,
    ) -> io::Result<()> {
        let mut w = self.pause_words.lock();
        set_listed(&mut w.paused, id, paused);
        set_listed(&mut w.resumed, id, !paused && config_paused);
        w.write(self.journal.dir())
    }

    /// After a reload: the operator's word on a buyer renamed through `previous_ids` moves to
    /// its new id, in the files; returns the ids that took another id's word (to be applied
    /// now, as a start would apply them) and whether the files could be written.
    pub fn rename_pause_decisions(&self, snap: &Snapshot) -> (Vec<String>, io::Result<()>) {
        let mut w = self.pause_words.lock();
        let moved = w.rename(snap);
        let written = if moved.is_empty() {
            Ok(())
        } else {
            w.write(self.journal.dir())
        };
        (moved, written)
    }

    /// The operator's word on buyer `id`: `Some(true)` paused, `Some(false)` resumed, `None`
    /// none.
    pub fn pause_decision(&self, id: &str) -> Option<bool> {
        self.pause_words.lock().word(id)
    }

    /// Forget the operator's word on buyer `id`: its config's `paused` changed, and the file's
    /// new value holds, now and after a restart.
    pub fn forget_pause_decision(&self, id: &str) -> io::Result<()> {
        let mut w = self.pause_words.lock();
        if !w.paused.iter().chain(&w.resumed).any(|x| x == id) {
            return Ok(());
        }
        set_listed(&mut w.paused, id, false);
        set_listed(&mut w.resumed, id, false);
        w.write(self.journal.dir())
    }
}

fn set_listed(ids: &mut Vec<String>, id: &str, present: bool) {
    ids.retain(|x| x != id);
    if present {
        ids.push(id.to_string());
    }
}

fn read_ids(dir: &std::path::Path, name: &str) -> Vec<String> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(t) => t
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            eprintln!(
                "gavel: warning: cannot read {}: {e}; the operator's pauses and resumes listed \
                 there are not applied",
                dir.join(name).display()
            );
            Vec::new()
        }
    }
}

/// Write the list `ids` as the journal directory's file `name`: whole, to a temporary file,
/// synced, and renamed over the old one, so a crash leaves either list, never half of one.
fn write_ids(dir: &std::path::Path, name: &str, ids: &[String]) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for x in ids {
            writeln!(f, "{x}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The longest cap window (a month) plus a day: sales older than this count toward no open window.
pub const CAP_REPLAY_WINDOW_US: u64 = 32 * 24 * 3600 * 1_000_000;

/// Rebuild from the journal what must survive a restart: each buyer's caps and budget for the
/// windows still open (so a restart never lets a buyer exceed a cap), and the P&L of that period.
/// Phones and emails the dedupe index keeps: `server.dedupe_entries` when any campaign dedupes
/// (memory grows with use, about 60 bytes an entry), next to nothing otherwise.
fn dedupe_entries(snap: &Snapshot) -> usize {
    dedupe_entries_at_least(snap, 0)
}

/// [`dedupe_entries`], and no fewer than `floor` when any campaign dedupes.
fn dedupe_entries_at_least(snap: &Snapshot, floor: usize) -> usize {
    if snap.campaigns.iter().any(|c| c.dedupe_days > 0) {
        snap.server.dedupe_entries.max(floor)
    } else {
        crate::compliance::DEDUPE_SHARDS
    }
}

const DAY_US: u64 = 24 * 3600 * 1_000_000;

/// The dedupe keys of a journaled request body (a lead's or a post's) in `campaign`: none
/// when the body holds no lead.
pub(crate) fn journaled_dedupe_keys(campaign: &str, lead_json: &[u8]) -> Vec<u64> {
    /// The part of a journaled request body the dedupe index needs.
    #[derive(serde::Deserialize)]
    struct Body {
        lead: Option<crate::lead::Fields>,
    }
    let mut keys = Vec::new();
    let body = serde_json::from_slice::<Body>(lead_json).ok();
    if let Some(lead) = body.and_then(|b| b.lead) {
        crate::compliance::dedupe_keys(campaign, &lead, &mut keys);
    }
    keys
}

fn rebuild(
    snap: &Arc<Snapshot>,
    journal: &Journal,
    (caps, dedupe, idem): (&CapTable, &DedupeIndex, &idempotency::IdempotencyIndex),
    (pnl, held): (&mut Stats, &mut held::HeldPings),
    damaged: bool,
) -> io::Result<Replayed> {
    let now = chrono::Utc::now();
    let now_us = now.timestamp_micros().max(0) as u64;
    let dedupe_window_us = snap
        .campaigns
        .iter()
        .map(|c| c.dedupe_days as u64)
        .max()
        .unwrap_or(0)
        * DAY_US;
    let since_dedupe = now_us.saturating_sub(dedupe_window_us);
    let since_caps = now_us.saturating_sub(CAP_REPLAY_WINDOW_US);
    let since = since_caps.min(since_dedupe);
    // Dedupe keys of the leads received in the window, dropped again for leads refused.
    let mut received: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
    // Leads (not pings) neither posted to a buyer nor answered nor refused yet: at the end,
    // those a stop cut off mid-auction. No buyer has their consumer and the seller heard
    // nothing, so the seller's retry is not refused as a duplicate of them; each is reported
    // once (a `recovered` `never_posted` record), and a lookup says so from then on.
    let mut unsettled: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Leads sent as tests: their sales count as traffic but take no cap, budget or money.
    let mut tests: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Leads whose last `lead_received` was a seller's `/v1/post` (its body names a ping): a
    // refusal of it is a refused post, not a rejected lead, as the live counters have it.
    let mut posting: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Posts sent whose answer the journal does not have, by lead: (buyer, price, when sent).
    let mut open_posts: HashMap<String, Vec<(String, crate::money::Cents, u64)>> = HashMap::new();
    // When each post now being answered was sent, by (lead, buyer): a sale counts in the cap
    // window of its post, as the live counters (which take the room when the post is sent)
    // have it, even when the buyer's answer comes in the next window.
    let mut posted_at: HashMap<(String, String), u64> = HashMap::new();
    // Posts a buyer accepted whose `sale` record has not been read (yet), by (lead, buyer):
    // (price, when sent). One still here at the end lost its sale record to damage (or to a
    // stop between the two records): the buyer took the consumer, so it counts against its
    // caps and budgets as the sale would.
    let mut accepted_posts: HashMap<(String, String), (crate::money::Cents, u64)> = HashMap::new();
    // Leads whose last `lead_received` was a `/v1/ping`: a refusal of it is a refused ping.
    let mut pinging: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Pings whose held bids may still be posted, or whose expiry a post must still hear of:
    // the bodies of the pings recent enough to be held still, until their answer is read. A
    // ping is held for the `hold_ms` it was answered with, which a config changed since may
    // have shortened: any hold the config allows is read.
    let since_held = now_us.saturating_sub(crate::config::MAX_HOLD_MS * 1000);
    let since_expired = now_us
        .saturating_sub(crate::config::MAX_HOLD_MS * 1000)
        .saturating_sub(EXPIRED_PING_MEMORY.as_micros() as u64);
    // Bodies of pings whose hold may be live, by ping: (test, body, bids received when
    // known, buyers pinged).
    type PingBody = (bool, Vec<u8>, Option<u32>, Vec<String>);
    let mut ping_bodies: HashMap<String, PingBody> = HashMap::new();
    // Sales of leads whose answer the journal does not have yet, by lead: (campaign, price,
    // payout, when first sold).
    let mut unanswered: HashMap<String, (String, crate::money::Cents, crate::money::Cents, u64)> =
        HashMap::new();
    // Leads an earlier start already found unsettled and reported (its `recovered` records):
    // still counted, not reported again.
    let mut reported: std::collections::HashSet<(String, journal::Unsettled)> =
        std::collections::HashSet::new();
    // Leads and pings sent under an `Idempotency-Key` within its window, in the journal's
    // order: (lead, key's identity, what it names). Those still open at the end (neither
    // refused, posted, sold nor answered: cut off by the last stop before any buyer had the
    // consumer) are left out, so the seller's retry runs as a new request.
    let since_keys = now_us.saturating_sub(idempotency::IDEMPOTENCY_WINDOW_US);
    let mut keyed: Vec<(String, u128, idempotency::Entry)> = Vec::new();
    let mut keyed_open: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mono_now = std::time::Instant::now();
    // Pings sent whose result the journal does not have (yet), by lead: the buyers'. A ping's
    // result follows it within its deadline, so those left at the end were cut off by a stop
    // (`kill -9`); the live counters had counted them as pings.
    let mut pings_open: HashMap<String, Vec<String>> = HashMap::new();
    // Set while the records recovery set aside are read, after the journal's own.
    let aside_pass = std::cell::Cell::new(false);
    // Leads whose arrival the journal has and its answer (or refusal) not, so far.
    let mut no_answer: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Pings the journal has answered whose post it has not (yet) seen arrive.
    let mut pinged_unposted: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Those of them whose story goes on in the files set aside (records cut out with damage).
    let mut settled_aside: std::collections::HashSet<String> = std::collections::HashSet::new();
    // The last sale of each (campaign, buyer), by its stamp: a start gives each round-robin
    // rotation back its place, the buyer sold to the longest ago first.
    let mut last_sold: HashMap<(usize, usize), u64> = HashMap::new();
    // Counts one record; true for a sale.
    let mut take = |e: &journal::Entry| -> bool {
        if e.ts_us < since {
            return false;
        }
        if let Record::LeadReceived {
            lead_id,
            campaign,
            lead_json,
            test,
            flow,
            seller,
            idempotency_key,
            ..
        } = &e.record
        {
            if *test {
                tests.insert(lead_id.clone());
            }
            if !aside_pass.get() {
                no_answer.insert(lead_id.clone());
                pinged_unposted.remove(lead_id);
            }
            let keyed_flow = match flow {
                Some(f @ (journal::LeadFlow::Lead | journal::LeadFlow::Ping)) => Some(*f),
                _ => None,
            };
            if let (Some(key), Some(f), true) = (idempotency_key, keyed_flow, e.ts_us >= since_keys)
            {
                let lead = ulid::Ulid::from_string(lead_id).map(|u| u.0);
                if let Ok(lead) = lead {
                    let entry = idempotency::Entry {
                        lead_id: lead,
                        fingerprint: idem.fingerprint(f.code(), lead_json),
                        ts_us: e.ts_us,
                    };
                    keyed.push((lead_id.clone(), idem.id(seller, key), entry));
                    keyed_open.insert(lead_id.clone());
                }
            }
            /// Whether a journaled request body is a `/v1/post` (it names its ping).
            #[derive(serde::Deserialize)]
            struct PostProbe {
                ping_id: Option<serde::de::IgnoredAny>,
            }
            let is_post = match flow {
                Some(f) => *f == journal::LeadFlow::Post,
                // Written before records named their flow.
                None => serde_json::from_slice::<PostProbe>(lead_json)
                    .is_ok_and(|p| p.ping_id.is_some()),
            };
            if is_post {
                posting.insert(lead_id.clone());
                // The post claimed its ping: a second one hears 409.
                held.set_posted(lead_id, true);
            } else {
                posting.remove(lead_id);
            }
            if *flow == Some(journal::LeadFlow::Ping) {
                pinging.insert(lead_id.clone());
                if e.ts_us >= since_held {
                    ping_bodies.insert(
                        lead_id.clone(),
                        (*test, lead_json.clone(), None, Vec::new()),
                    );
                }
            } else {
                pinging.remove(lead_id);
            }
            // Test leads and pings never entered the index (see `Worker::compliance`): a
            // ping is checked when it is posted.
            let checked = !*test && *flow != Some(journal::LeadFlow::Ping);
            // Until a post, an answer or a refusal (a ping: its answer, `ping_answered`): a
            // lead or ping a stop may cut off before any post.
            unsettled.insert(lead_id.clone());
            if dedupe_window_us > 0 && e.ts_us >= since_dedupe && checked {
                let keys = journaled_dedupe_keys(campaign, lead_json);
                if !keys.is_empty() {
                    received.insert(lead_id.clone(), (e.ts_us, keys));
                }
            }
        }
        if aside_pass.get() {
            let lead_id = e.record.lead_id();
            if no_answer.contains(lead_id) || pinged_unposted.contains(lead_id) {
                settled_aside.insert(lead_id.to_string());
            }
        }
        match &e.record {
            Record::Rejected {
                lead_id,
                http_status,
                ..
            } => {
                received.remove(lead_id);
                unsettled.remove(lead_id);
                // A ping turned away for want of room (503) gave its key back: a retry runs
                // anew, after a start as before it.
                if *http_status < 500 {
                    keyed_open.remove(lead_id);
                }
                if !aside_pass.get() {
                    no_answer.remove(lead_id);
                }
            }
            Record::PostSent { lead_id, .. } | Record::Sale { lead_id, .. } => {
                unsettled.remove(lead_id);
                keyed_open.remove(lead_id);
            }
            Record::LeadAnswered { lead_id, .. } | Record::PingAnswered { lead_id, .. } => {
                unsettled.remove(lead_id);
                keyed_open.remove(lead_id);
                if !aside_pass.get() {
                    no_answer.remove(lead_id);
                    if matches!(e.record, Record::PingAnswered { .. }) {
                        pinged_unposted.insert(lead_id.clone());
                    }
                }
            }
            _ => {}
        }
        if e.ts_us < since_caps {
            // Older than any cap window or P&L period: only dedupe needed it.
            return false;
        }
        match &e.record {
            Record::Recovered { lead_id, kind } => {
                reported.insert((lead_id.clone(), *kind));
                if *kind == journal::Unsettled::HistoryLost {
                    // A ping whose post was lost to damage may have sold: not postable again.
                    held.set_posted(lead_id, true);
                }
            }
            Record::PingSent { lead_id, buyer } => {
                pings_open
                    .entry(lead_id.clone())
                    .or_default()
                    .push(buyer.clone());
            }
            Record::PingResult {
                lead_id,
                buyer,
                outcome,
                response_us,
                ..
            } => {
                if let Some(open) = pings_open.get_mut(lead_id) {
                    if let Some(i) = open.iter().position(|b| b == buyer) {
                        open.swap_remove(i);
                    }
                    if open.is_empty() {
                        pings_open.remove(lead_id);
                    }
                }
                // A ping never written (`response_us` 0) was not seen by its buyer.
                if let Some(p) = ping_bodies.get_mut(lead_id).filter(|_| *response_us > 0) {
                    if p.3.len() < crate::caps::MAX_BUYERS {
                        p.3.push(buyer.clone());
                    }
                }
                // One result per ping, sent or not (as the live counter counts them).
                let b = pnl.buyer(snap.current_id(buyer));
                b.pings += 1;
                match outcome {
                    journal::PingOutcome::Bid { cents, .. } => {
                        b.bids += 1;
                        b.bid_sum_cents += cents;
                    }
                    journal::PingOutcome::NoBid => b.no_bids += 1,
                    journal::PingOutcome::Timeout => b.timeouts += 1,
                    journal::PingOutcome::Error => b.errors += 1,
                    journal::PingOutcome::Invalid => b.invalid += 1,
                }
                // As the live counters: timeouts at the time waited, pings never written
                // (0) not at all.
                if *response_us > 0 {
                    b.response_us.saturating_record(*response_us);
                }
            }
            Record::PostSent {
                lead_id,
                buyer,
                price_cents,
            } => {
                pnl.buyer(snap.current_id(buyer)).posts += 1;
                if !tests.contains(lead_id) {
                    posted_at.insert((lead_id.clone(), buyer.clone()), e.ts_us);
                }
                // A test lead's post too: left unanswered, its seller is told so.
                open_posts.entry(lead_id.clone()).or_default().push((
                    buyer.clone(),
                    *price_cents,
                    e.ts_us,
                ));
            }
            Record::PostResult {
                lead_id,
                buyer,
                accepted,
                price_cents,
                ..
            } => {
                if *accepted {
                    let key = (lead_id.clone(), buyer.clone());
                    let sent_us = posted_at.get(&key).copied().unwrap_or(e.ts_us);
                    accepted_posts.insert(key, (*price_cents, sent_us));
                }
                // As the live counters: a post whose `post_sent` was recorded and that was
                // not accepted is a rejection of the buyer's (one never given a connection has
                // no `post_sent`).
                let sent = open_posts
                    .get(lead_id)
                    .is_some_and(|posts| posts.iter().any(|p| &p.0 == buyer));
                if !accepted && sent {
                    pnl.buyer(snap.current_id(buyer)).post_rejects += 1;
                }
                if !accepted {
                    posted_at.remove(&(lead_id.clone(), buyer.clone()));
                }
                if let Some(posts) = open_posts.get_mut(lead_id) {
                    if let Some(i) = posts.iter().position(|p| &p.0 == buyer) {
                        posts.swap_remove(i);
                    }
                    if posts.is_empty() {
                        open_posts.remove(lead_id);
                    }
                }
            }
            Record::Sale {
                lead_id,
                campaign,
                buyer,
                price_cents,
                payout_cents,
                test,
                ..
            } => {
                // A test lead's sale says so itself: it moves no money even when its arrival
                // record (which says so first) was lost to damage.
                if *test && !tests.contains(lead_id) {
                    tests.insert(lead_id.clone());
                }
                let paid = !tests.contains(lead_id);
                let u = unanswered
                    .entry(lead_id.clone())
                    .or_insert_with(|| (campaign.clone(), 0, 0, e.ts_us));
                u.1 += price_cents;
                u.2 += payout_cents;
                accepted_posts.remove(&(lead_id.clone(), buyer.clone()));
                if let (Some(c), Some(b)) =
                    (snap.campaign_by_id(campaign), snap.buyer_of_record(buyer))
                {
                    let last = last_sold.entry((c, b)).or_insert(0);
                    *last = (*last).max(e.ts_us);
                }
                let sent_us = posted_at
                    .remove(&(lead_id.clone(), buyer.clone()))
                    .unwrap_or(e.ts_us);
                if let Some(b) = snap.buyer_of_record(buyer).filter(|_| paid) {
                    let ts = chrono::DateTime::from_timestamp_micros(sent_us as i64).unwrap_or(now);
                    caps.replay_sale(b, ts, *price_cents, now);
                }
                let s = pnl.buyer(snap.current_id(buyer));
                s.wins += 1;
                if paid {
                    s.spent_cents += price_cents;
                }
                // Counted as replayed into caps and budgets: a test sale took none.
                return paid;
            }
            Record::LeadAnswered {
                lead_id,
                campaign,
                status,
                price_cents,
                payout_cents,
                ..
            } => {
                // A post still open at its lead's answer had its result and sale written
                // before the answer, in bytes damage took (its `post_sent` survived): the
                // buyer may have the consumer, so it counts against the caps as a post left
                // unanswered by a crash does (no money: no sale says what it was).
                if let Some(posts) = open_posts.remove(lead_id) {
                    if !tests.contains(lead_id) {
                        for (buyer, price_cents, ts_us) in posts {
                            if let Some(b) = snap.buyer_of_record(&buyer) {
                                let ts = chrono::DateTime::from_timestamp_micros(ts_us as i64)
                                    .unwrap_or(now);
                                caps.replay_sale(b, ts, price_cents, now);
                            }
                        }
                    }
                }
                unanswered.remove(lead_id);
                let c = pnl.campaign(campaign);
                c.leads += 1;
                match status {
                    journal::LeadStatus::Sold => c.sold += 1,
                    journal::LeadStatus::Unsold => c.unsold += 1,
                }
                if tests.contains(lead_id) {
                    c.test_leads += 1;
                } else {
                    c.revenue_cents += price_cents;
                    c.payout_cents += payout_cents;
                }
            }
            Record::AuctionClosed { lead_id, bids, .. } => {
                if let Some(p) = ping_bodies.get_mut(lead_id) {
                    p.2 = Some(*bids);
                }
            }
            Record::Rejected {
                lead_id,
                campaign,
                http_status,
                ..
            } => {
                let c = pnl.campaign(campaign);
                if *http_status >= 500 && pinging.contains(lead_id) {
                    // A ping turned away for want of room to hold its bids: counted under
                    // `refused` while serving, which a start does not rebuild.
                    ping_bodies.remove(lead_id);
                } else if posting.contains(lead_id) {
                    c.posts_refused += 1;
                    // A refused post gives its ping back.
                    held.set_posted(lead_id, false);
                } else if pinging.contains(lead_id) {
                    c.pings_refused += 1;
                    ping_bodies.remove(lead_id);
                } else {
                    c.leads += 1;
                    c.rejected += 1;
                    c.test_leads += u64::from(tests.contains(lead_id));
                }
            }
            Record::PingAnswered {
                lead_id,
                campaign,
                seller,
                hold_ms,
                held: bids,
                terms,
                ..
            } => {
                let c = pnl.campaign(campaign);
                c.pings += 1;
                c.pings_bid += u64::from(!bids.is_empty());
                let body = ping_bodies.remove(lead_id);
                if bids.is_empty() || e.ts_us < since_expired {
                    return false;
                }
                let expires_us = e.ts_us.saturating_add(hold_ms.saturating_mul(1000));
                let live = expires_us > now_us;
                match (live, body) {
                    (true, Some((test, body, received, pinged))) => {
                        if let Some(h) =
                            restore_hold(snap, seller, campaign, test, bids, *terms, &body, &pinged)
                        {
                            // Older journals: at least the bids that were held.
                            let received = received.unwrap_or(bids.len() as u32);
                            // Never more than the hold itself: a ping stamped while the wall
                            // clock ran ahead (corrected before this start) is not held longer.
                            let left = std::time::Duration::from_micros(expires_us - now_us)
                                .min(std::time::Duration::from_millis(*hold_ms));
                            let h = HeldPing {
                                expires: mono_now + left,
                                bids_received: received,
                                ..h
                            };
                            held.insert(lead_id.clone(), h, mono_now);
                        } else if snap.campaign_by_id(campaign).is_none() {
                            // Kept to be held again once a reload brings the campaign back,
                            // as a hold kept through a reload that removed its campaign and
                            // one that brought it back is (and as a later start holds it).
                            let left = std::time::Duration::from_micros(expires_us - now_us)
                                .min(std::time::Duration::from_millis(*hold_ms));
                            let (seller_id, campaign_id) = (seller.clone(), campaign.clone());
                            let (bids, terms, pinged) = (bids.clone(), *terms, pinged.clone());
                            let received = received.unwrap_or(bids.len() as u32);
                            let restore = move |snap: &Arc<Snapshot>| {
                                restore_hold(
                                    snap,
                                    &seller_id,
                                    &campaign_id,
                                    test,
                                    &bids,
                                    terms,
                                    &body,
                                    &pinged,
                                )
                                .map(|h| HeldPing {
                                    bids_received: received,
                                    ..h
                                })
                            };
                            held.insert_campaign_gone(
                                lead_id.clone(),
                                seller.clone(),
                                held::GoneHold {
                                    campaign: campaign.clone(),
                                    restore: Box::new(restore),
                                    expires: mono_now + left,
                                },
                                mono_now,
                            );
                        }
                    }
                    (true, None) => {}
                    (false, _) => {
                        let ago = std::time::Duration::from_micros(now_us - expires_us);
                        let at = mono_now.checked_sub(ago).unwrap_or(mono_now);
                        held.insert_expired(lead_id.clone(), seller.clone(), false, at);
                    }
                }
            }
            _ => {}
        }
        false
    };
    // Leads posted to a buyer in the files set aside whose arrival record is in neither those
    // files nor the journal (it was in what the damage took): their consumers are not in the
    // dedupe index, which only an arrival feeds, so the operator is told. Found by a look at
    // the files first, then the journal's arrivals taken off the list as the replay reads them.
    let mut arrival_lost: HashMap<String, u64> = HashMap::new();
    {
        let mut arrived_aside: std::collections::HashSet<String> = std::collections::HashSet::new();
        journal::replay_set_aside(journal.dir(), since, |e| match &e.record {
            // A test lead is never deduplicated: its arrival lost nothing to tell.
            Record::LeadReceived { lead_id, .. }
            | Record::Sale {
                lead_id,
                test: true,
                ..
            } => {
                arrived_aside.insert(lead_id.clone());
            }
            Record::PostSent { lead_id, .. } | Record::Sale { lead_id, .. } => {
                arrival_lost.entry(lead_id.clone()).or_insert(e.ts_us);
            }
            _ => {}
        })
        .map_err(|e| io::Error::other(format!("journal replay of the files set aside: {}", e)))?;
        arrival_lost.retain(|id, _| !arrived_aside.contains(id));
    }
    let mut sales = 0u64;
    let reader = journal::Reader::open_since(journal.dir(), since)
        .map_err(|e| io::Error::other(format!("journal replay: {}", e)))?;
    for item in reader {
        let e = item.map_err(|e| io::Error::other(format!("journal replay: {}", e)))?;
        if !arrival_lost.is_empty() {
            if let Record::LeadReceived { lead_id, .. } = &e.record {
                arrival_lost.remove(lead_id);
            }
        }
        if take(&e) {
            sales += 1;
        }
    }
    // The records a recovery cut out of the journal were sold, capped and deduplicated all the
    // same: they count too, from the files it kept, for as long as those are there.
    let mut aside_sales = 0u64;
    aside_pass.set(true);
    let aside = journal::replay_set_aside(journal.dir(), since, |e| {
        if take(e) {
            aside_sales += 1;
        }
    })
    .map_err(|e| io::Error::other(format!("journal replay of the files set aside: {}", e)))?;
    // A lead whose arrival the journal has, and whose story without its answer goes on in
    // the files set aside, has no answer in the journal a start had to cut: it is
    // `history_lost` (not left to look like one a stop cut off before any post once the
    // operator has settled and renamed those files). Found at every start while the files
    // stay, not only the one that cut: that one may have died before it could record it.
    let lost_aside = settled_aside;
    for id in &lost_aside {
        // A ping whose post only the files set aside tell (its arrival may be the damaged
        // record itself): claimed, as its `history_lost` record will say at later starts.
        held.set_posted(id, true);
    }
    // A ping a stop cut off before its result: a ping all the same, as the live count had it.
    for buyers in pings_open.values() {
        for buyer in buyers {
            pnl.buyer(snap.current_id(buyer)).pings += 1;
        }
    }
    // A post the buyer accepted whose sale record is not there: counted as sold in its
    // buyer's caps and budgets (its money is not booked: no sale says what it was).
    for ((lead_id, buyer), (price_cents, sent_us)) in &accepted_posts {
        if tests.contains(lead_id) {
            continue;
        }
        if let Some(b) = snap.buyer_of_record(buyer) {
            let ts = chrono::DateTime::from_timestamp_micros(*sent_us as i64).unwrap_or(now);
            caps.replay_sale(b, ts, *price_cents, now);
        }
    }
    // A post the process died waiting on: the buyer may well have taken the consumer, so it
    // counts against the buyer's caps and budgets as a sale would (erring toward selling less);
    // its money is not booked, since nobody was told of a sale.
    let mut unresolved: Vec<(String, u64)> = Vec::new();
    let mut unresolved_posts = 0u64;
    let mut to_record: Vec<(String, journal::Unsettled)> = Vec::new();
    let lost = journal::Unsettled::HistoryLost;
    // With `damaged`: leads without an answer, by their first post or arrival.
    let mut history_lost: Vec<(String, u64)> = Vec::new();
    for (lead_id, posts) in open_posts {
        // A test lead's posts take no cap or budget, answered or not.
        let paid = !tests.contains(&lead_id);
        for (buyer, price_cents, ts_us) in posts.iter().filter(|_| paid) {
            if let Some(b) = snap.buyer_of_record(buyer) {
                let ts = chrono::DateTime::from_timestamp_micros(*ts_us as i64).unwrap_or(now);
                caps.replay_sale(b, ts, *price_cents, now);
            }
        }
        let key = (lead_id, journal::Unsettled::PostUnanswered);
        if reported.contains(&key)
            || reported.contains(&(key.0.clone(), lost))
            || lost_aside.contains(&key.0)
        {
            continue;
        }
        let lead_id = key.0;
        let first = posts.iter().map(|p| p.2).min().unwrap_or(0);
        if damaged {
            history_lost.push((lead_id, first));
            continue;
        }
        unresolved_posts += posts.len() as u64;
        to_record.push((lead_id.clone(), journal::Unsettled::PostUnanswered));
        unresolved.push((lead_id, first));
    }
    // Leads a buyer bought whose answer the last stop cut off (a shared lead's other post was
    // still out): sold all the same, so the campaign's P&L counts them as the buyers' does.
    let mut unanswered: Vec<(
        String,
        (String, crate::money::Cents, crate::money::Cents, u64),
    )> = unanswered.into_iter().collect();
    unanswered.sort_by_key(|u| u.1 .3);
    for (lead_id, (campaign, price, payout, _)) in &unanswered {
        let c = pnl.campaign(campaign);
        c.leads += 1;
        c.sold += 1;
        if tests.contains(lead_id) {
            c.test_leads += 1;
        } else {
            c.revenue_cents += price;
            c.payout_cents += payout;
        }
    }
    unanswered.retain(|u| {
        !reported.contains(&(u.0.clone(), journal::Unsettled::SellerUnanswered))
            && !reported.contains(&(u.0.clone(), lost))
            && !lost_aside.contains(&u.0)
    });
    let unanswered_sold = unanswered.len() as u64;
    to_record.extend(
        unanswered
            .iter()
            .map(|u| (u.0.clone(), journal::Unsettled::SellerUnanswered)),
    );
    let unanswered_leads: Vec<String> = unanswered
        .into_iter()
        .take(MAX_UNRESOLVED_LISTED)
        .map(|u| u.0)
        .collect();
    unresolved.sort_by_key(|u| u.1);
    let unresolved_leads: Vec<String> = unresolved
        .into_iter()
        .take(MAX_UNRESOLVED_LISTED)
        .map(|u| u.0)
        .collect();
    // Reported once: a `recovered` record says an earlier start told of it.
    let mut unposted: Vec<String> = Vec::new();
    for id in unsettled {
        if reported.contains(&(id.clone(), lost)) || lost_aside.contains(&id) {
            continue; // still a duplicate: it may have been sold in what was lost
        }
        let told = reported.contains(&(id.clone(), journal::Unsettled::NeverPosted));
        if damaged && !told {
            // The same: it stays in the dedupe index.
            let at = received.get(&id).map_or(0, |r| r.0);
            history_lost.push((id, at));
            continue;
        }
        received.remove(&id);
        if posting.contains(&id) {
            // A `/v1/post` cut off before any buyer had the lead: its ping is postable
            // again (while its hold lasts), as the seller is told to send it again.
            held.set_posted(&id, false);
        }
        if !told {
            unposted.push(id);
        }
    }
    unposted.sort();
    let cut_off_unposted = unposted.len() as u64;
    to_record.extend(
        unposted
            .into_iter()
            .map(|id| (id, journal::Unsettled::NeverPosted)),
    );
    for id in lost_aside {
        if !reported.contains(&(id.clone(), lost)) {
            let at = received.get(&id).map_or(0, |r| r.0);
            history_lost.push((id, at));
        }
    }
    history_lost.sort_by_key(|l| l.1);
    let history_lost_count = history_lost.len() as u64;
    let history_lost_leads: Vec<String> = history_lost
        .iter()
        .take(MAX_UNRESOLVED_LISTED)
        .map(|l| l.0.clone())
        .collect();
    to_record.extend(history_lost.into_iter().map(|l| (l.0, lost)));
    let mut arrival_lost: Vec<(String, u64)> = arrival_lost.into_iter().collect();
    arrival_lost.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let arrival_lost_count = arrival_lost.len() as u64;
    let arrival_lost_leads: Vec<String> = arrival_lost
        .into_iter()
        .take(MAX_UNRESOLVED_LISTED)
        .map(|l| l.0)
        .collect();
    let mut replay: Vec<(u64, Vec<u64>)> = received.into_values().collect();
    replay.sort_by_key(|r| r.0);
    for (ts, keys) in replay {
        dedupe.replay(&keys, ts);
    }
    for (lead_id, id, entry) in keyed {
        if !keyed_open.contains(&lead_id) {
            idem.replay(id, entry, now_us);
        }
    }
    let mut round_robin_sold: Vec<((usize, usize), u64)> = last_sold.into_iter().collect();
    round_robin_sold.sort_by_key(|&(cb, ts)| (ts, cb));
    Ok(Replayed {
        round_robin_sold: round_robin_sold.into_iter().map(|(cb, _)| cb).collect(),
        sales: sales + aside_sales,
        set_aside_sales: aside_sales,
        set_aside: aside,
        unresolved_posts,
        unresolved_leads,
        // Those a post has not taken since: a posted ping is kept only to answer 409.
        pings_held: held.postable_len() as u64,
        unanswered_sold,
        cut_off_unposted,
        unanswered_leads,
        history_lost: history_lost_count,
        history_lost_leads,
        arrival_lost: arrival_lost_count,
        arrival_lost_leads,
        to_record,
    })
}

/// A ping's hold as journaled, mapped onto `snap` by id: `None` when its seller or campaign
/// is no longer configured (held with no bids when none of its bidders is). The pinged fields are read again from
/// the ping's body, for the post's `ping_mismatch` check; `pinged` are the buyers its
/// auction had a turn for. `expires` is left for the caller.
#[allow(clippy::too_many_arguments)]
fn restore_hold(
    snap: &Arc<Snapshot>,
    seller: &str,
    campaign: &str,
    test: bool,
    bids: &[(String, crate::money::Cents, Option<String>)],
    terms: Option<journal::PayoutTerms>,
    body: &[u8],
    pinged: &[String],
) -> Option<HeldPing> {
    let seller = snap.sellers.iter().position(|s| s.id == seller)?;
    let campaign = snap.campaign_by_id(campaign)?;
    let journaled = HeldById {
        bids: bids
            .iter()
            .map(|(b, cents, id)| {
                (
                    b.clone(),
                    *cents,
                    id.as_deref().map(crate::text::SmallText::new),
                )
            })
            .collect(),
        priced: pinged.to_vec(),
    };
    // Under the buyers that answer to the journaled ids now: one bid per buyer, its best,
    // where the config started with made two buyers one.
    let bids: Vec<_> = held::one_bid_per_buyer(bids.iter().filter_map(|(b, cents, id)| {
        let b = snap.buyer_of_record(b)?;
        Some((b, (*cents, id.as_deref().map(crate::text::SmallText::new))))
    }))
    .into_iter()
    .map(|(b, (cents, id))| (b, cents, id))
    .collect();
    // No held buyer still configured: held all the same, as a reload keeps it, so its post is
    // answered as one after that reload is (unsold, nobody eligible; a second post 409), not
    // as a ping never made.
    /// The part of a journaled ping body the hold needs.
    #[derive(serde::Deserialize)]
    struct Body {
        lead: Option<crate::lead::Fields>,
        /// Read loosely, so that no shape of it can cost the hold its fields.
        source: Option<serde_json::Value>,
    }
    let body = serde_json::from_slice::<Body>(body).ok();
    let source = body
        .as_ref()
        .and_then(|b| b.source.as_ref()?.as_str().map(str::to_string));
    let fields = body
        .and_then(|b| b.lead)
        .map(|l| {
            l.select(
                snap.campaigns[campaign]
                    .ping_fields
                    .iter()
                    .map(String::as_str),
            )
        })
        .unwrap_or_default();
    Some(HeldPing {
        snap: snap.clone(),
        seller,
        campaign,
        test,
        bids_received: bids.len() as u32,
        bids,
        fields,
        expires: std::time::Instant::now(),
        posted: false,
        checking: false,
        // A record from before the rule was journaled: the rule in force now.
        payout: terms.map_or(snap.sellers[seller].payout, payout_rule),
        source,
        priced: held::each_buyer_once(pinged.iter().filter_map(|b| snap.buyer_of_record(b))),
        journaled: Some(Box::new(journaled)),
    })
}

/// What a start replayed from the journal into caps, budgets, dedupe and P&L.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Sales of the open cap windows counted: from the journal and from the files set aside.
    pub sales: u64,
    /// Of `sales`, those read back from files a recovery set aside.
    pub set_aside_sales: u64,
    /// What was read from the files recovery set aside (records cut out of the journal).
    pub set_aside: journal::SetAsideReport,
    /// Posts sent before the last stop whose answer the journal does not have (the process was
    /// killed while the buyer decided): counted against the buyer's caps and budgets.
    pub unresolved_posts: u64,
    /// Their leads, by when the post was sent, at most [`MAX_UNRESOLVED_LISTED`], for the operator to settle
    /// with the buyers.
    pub unresolved_leads: Vec<String>,
    /// Pings whose bids were held again from the journal, still postable until they expire.
    pub pings_held: u64,
    /// Leads sold to a buyer whose seller was never answered (the last stop came while a
    /// shared lead's other posts were out): counted as sold in the campaign's P&L.
    pub unanswered_sold: u64,
    /// Their ids, oldest first, at most [`MAX_UNRESOLVED_LISTED`], for the operator to settle
    /// with the sellers.
    pub unanswered_leads: Vec<String>,
    /// Leads the last stop cut off before any post or answer: left out of the dedupe index, so
    /// the seller may send them again.
    pub cut_off_unposted: u64,
    /// Leads without an answer found by a start that cut damage out of the journal: their
    /// records may have been in what was lost, so none is said to be safe to send again
    /// (`recovered` `history_lost`); their posts count against the buyers' caps.
    pub history_lost: u64,
    /// Their ids, oldest first, at most [`MAX_UNRESOLVED_LISTED`].
    pub history_lost_leads: Vec<String>,
    /// Leads posted to a buyer (in the files a recovery set aside) whose arrival record was
    /// lost to the damage: their consumers are not in the dedupe index, so the same consumer
    /// sent again is not refused as a duplicate. Reported at every start while the files stay.
    pub arrival_lost: u64,
    /// Their ids, by their first post, at most [`MAX_UNRESOLVED_LISTED`].
    pub arrival_lost_leads: Vec<String>,
    /// The unsettled leads this start found and reports, all of them: each gets a `recovered`
    /// record, so later starts count them without reporting them again.
    pub to_record: Vec<(String, journal::Unsettled)>,
    /// (campaign, buyer) of the open cap windows' sales, by the last sale of each, oldest
    /// first: the round-robin turns they took, given back to the rotations at a start.
    pub round_robin_sold: Vec<(usize, usize)>,
}

/// The reason journaled for a post the buyer's caps kept back (never sent; not a rejection).
pub const POST_NOT_SENT_CAPPED: &str = "not sent: cap or budget reached";

/// The reason journaled for a post to a buyer the operator paused since its bid, and for a
/// ping that waited for a connection to a buyer paused meanwhile (its result a timeout,
/// never written).
pub const NOT_SENT_PAUSED: &str = "not sent: buyer paused";

/// The reason journaled (if the journal has come back by then) for a post whose `post_sent`
/// the journal refused: never sent, not a rejection.
pub const POST_NOT_SENT_UNJOURNALED: &str = "not sent: the journal could not record it";

/// The reason journaled for a post that waited its whole `post_timeout_ms` for a free
/// connection to the buyer: never sent, not a rejection.
pub const POST_NOT_SENT_NO_CONNECTION: &str =
    "not sent: no free connection to the buyer within post_timeout_ms";

/// Leads with unanswered posts a start lists by id; the count covers them all.
pub const MAX_UNRESOLVED_LISTED: usize = 20;

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
    runtime: Runtime,
    dedupe: Arc<DedupeIndex>,
    journal: Arc<Journal>,
    (recovery, replayed, pnl, held, words, idempotency): (
        RecoveryReport,
        Replayed,
        Stats,
        held::HeldPings,
        PauseWords,
        idempotency::IdempotencyIndex,
    ),
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    workers: usize,
) -> io::Result<ServerHandle> {
    let (lookups, spawn_lookups) = lookup::start(journal.dir().to_path_buf());
    let dedupe_entries_kept = AtomicUsize::new(runtime.snap.server.dedupe_entries);
    let shared = Arc::new(Shared {
        lookups,
        pause_words: Mutex::new(words),
        generation: AtomicU64::new(runtime.generation),
        runtime: Mutex::new(Arc::new(runtime)),
        reloading: Mutex::new(()),
        wakers: Mutex::new(Vec::new()),
        journal,
        held: Mutex::new(held),
        dedupe,
        dedupe_entries_kept,
        idempotency,
        clock: clock::StepFreeClock::new(),
        in_flight: AtomicUsize::new(0),
        seller_conns: seller_conns::SellerConns::new(listeners.len()),
        shutdown: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        started_us: chrono::Utc::now().timestamp_micros().max(0) as u64,
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
    *shared.wakers.lock() = wakers.clone();
    // Joined at the stop like the operator API's thread: the journal it reads, and the
    // `Shared` it borrows for each answer, are let go before the stop returns.
    let (lookup_thread, stop_lookups) = spawn_lookups(Arc::downgrade(&shared))?;
    // The P&L rebuilt from the journal starts the first worker's counters.
    if let Some(first) = shared.stats.first() {
        first.lock().merge(&pnl);
    }
    let mut aux = vec![lookup_thread];
    let admin_addr = match shared.runtime().snap.server.admin_listen {
        Some(addr) => {
            let admin = crate::admin::start(addr, shared.clone(), std::time::Instant::now())?;
            // Joined after the workers: a stopped exchange holds nothing, its journal included.
            aux.push(admin.thread);
            Some(admin.local_addr)
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
        aux,
        stop_lookups: Some(stop_lookups),
        local_addr,
    })
}
