//! `POST /v1/admin/reload` (and SIGHUP): re-read the config file the exchange was started with,
//! validate it with the loader of `gavel check`, and publish a new runtime to every worker.
//!
//! What survives, keyed by id: each buyer's cap and budget counts and pause state (shared with
//! the previous runtime's cap table, so leads still running under the old config count into
//! the same windows), the sellers' rate windows, the round-robin positions, the dedupe index,
//! the statistics and the held pings of seller-side ping-post. Leads in flight keep the runtime
//! they started under to their answer.

use super::{dedupe_entries_at_least, Runtime, Shared, CAP_REPLAY_WINDOW_US};
use crate::caps::{CapTable, Carried};
use crate::config::{self, ConfigDiff, ConfigError, RestartKey, Snapshot};
use crate::journal::{self, Record};
use serde::Serialize;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// The generation now in force (1 was the config the exchange started with).
    pub generation: u64,
    /// Sellers, campaigns and buyers added, removed and changed; other settings that changed.
    #[serde(flatten)]
    pub diff: ConfigDiff,
    /// Sales of the last 32 days replayed from the journal into the caps of buyers that had no
    /// counts to carry (added, or whose time zone changed).
    pub sales_replayed: u64,
    /// Leads read from the journal into the dedupe index for campaigns whose `dedupe_days`
    /// the reload made longer (or set).
    pub dedupe_replayed: u64,
    /// What a start would warn of in the new config (a certificate near its end, a value
    /// nothing uses), and a setting the reload keeps until the next start; also in the log.
    pub warnings: Vec<String>,
}

/// Why a reload was refused; the config in force stays.
#[derive(Debug)]
pub enum ReloadError {
    /// The exchange was not started from a file.
    NoFile,
    /// The file cannot be read or is not a valid config (the same errors as `gavel check`).
    Config(ConfigError),
    /// The file changes settings fixed while the exchange runs.
    RestartRequired(Vec<RestartKey>),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoFile => write!(f, "the exchange was not started from a config file"),
            ReloadError::Config(e) => write!(f, "{}", e),
            ReloadError::RestartRequired(keys) => {
                for (n, k) in keys.iter().enumerate() {
                    if n > 0 {
                        write!(f, "; ")?;
                    }
                    write!(
                        f,
                        "{}: {} in the file, {} running",
                        k.key, k.file, k.running
                    )?;
                }
                write!(
                    f,
                    ": {} only on restart; nothing was reloaded",
                    if keys.len() == 1 {
                        "this setting changes"
                    } else {
                        "these settings change"
                    }
                )
            }
        }
    }
}

impl std::error::Error for ReloadError {}

/// Re-read the config file and, if it is valid and changes nothing fixed, make it the config
/// of every new lead. One reload runs at a time.
pub fn reload(shared: &Shared) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = shared.reloading.lock();
    let old = shared.runtime();
    let path = old.snap.path.clone().ok_or(ReloadError::NoFile)?;
    let mut snap = config::load(&path).map_err(ReloadError::Config)?;
    snap.path = Some(path);
    let restart = config::restart_required(&old.snap, &snap);
    if !restart.is_empty() {
        return Err(ReloadError::RestartRequired(restart));
    }
    // As a start says them: a certificate near its end, values nothing uses.
    let mut warnings = config::warnings(&snap);
    // Reloads run one at a time: nothing else moves it meanwhile.
    let kept = shared.dedupe_entries_kept.load(Ordering::Acquire);
    if snap.server.dedupe_entries < kept {
        warnings.push(format!(
            "server.dedupe_entries lowered to {}: the dedupe index keeps room for {} until the \
             next start",
            snap.server.dedupe_entries, kept
        ));
    }
    for w in &warnings {
        eprintln!("gavel: warning: {}", w);
    }
    let mut diff = config::diff(&old.snap, &snap);
    let (rt, rebuild) = Runtime::reloaded(Arc::new(snap), &old);
    // The same files with other certificates in them: a change all the same.
    if rt.tls_roots != old.tls_roots && !diff.settings.iter().any(|s| s == "tls.ca_files") {
        diff.settings.push("tls.ca_files".to_string());
    }
    // A `paused` the file changed holds from now on, after a restart too: the operator's
    // earlier pause or resume of that buyer is forgotten.
    let mut file_paused_changed = Vec::new();
    for b in &rt.snap.buyers {
        let changed = match Snapshot::predecessor(&old.snap, b) {
            Some(o) => old.snap.buyers[o].paused != b.paused,
            None => b.paused,
        };
        if changed {
            let _ = shared.forget_pause_decision(&b.id);
            file_paused_changed.push(b.id.as_str());
        }
    }
    // A buyer renamed through `previous_ids` keeps its numbers and the operator's word on it.
    for b in &rt.snap.buyers {
        for old_id in &b.previous_ids {
            for st in &shared.stats {
                st.lock().rename_buyer(old_id, &b.id);
            }
        }
    }
    let (moved, written) = shared.rename_pause_decisions(&rt.snap);
    if let Err(e) = written {
        eprintln!("gavel: warning: cannot write the operator's pauses under renamed ids: {e}");
    }
    // The word that moved holds now as it will after a restart: two buyers made one, one of
    // them paused by the operator, are one buyer paused (a pause wins over a resume).
    for id in &moved {
        let Some(i) = rt.snap.buyer_by_id(id) else {
            continue;
        };
        if file_paused_changed.contains(&id.as_str()) {
            // The file's new `paused` holds over the word of an id it took.
            let _ = shared.forget_pause_decision(id);
            continue;
        }
        match shared.pause_decision(id) {
            Some(true) => rt.caps.pause(i),
            Some(false) => rt.caps.resume(i),
            None => {}
        }
    }
    // A buyer back in the file after a reload that removed it gets the operator's word on it
    // (still in the `paused` file), as a restart would give it: not paused now and paused
    // again at the next start.
    for (i, b) in rt.snap.buyers.iter().enumerate() {
        if b.paused || Snapshot::predecessor(&old.snap, b).is_some() {
            continue;
        }
        match shared.pause_decision(&b.id) {
            Some(true) => rt.caps.pause(i),
            Some(false) => rt.caps.resume(i),
            None => {}
        }
    }
    let rebuilt = rebuild.iter().any(|&r| r);
    let (sales_replayed, replayed_to, mut tests) = if rebuilt {
        replay_caps(shared, &rt, &rebuild)
    } else {
        (0, None, std::collections::HashSet::new())
    };
    // A lowered `dedupe_entries` applies at the next start: until then the index holds what
    // the largest setting since the start promised, also when it was small because nothing
    // deduped then.
    shared
        .dedupe
        .ensure_capacity(dedupe_entries_at_least(&rt.snap, kept));
    shared
        .dedupe_entries_kept
        .store(kept.max(rt.snap.server.dedupe_entries), Ordering::Release);
    // A campaign whose `dedupe_days` grew (or began) checks leads its index never recorded
    // (received while it did not dedupe, or dropped as older than its window then): they are
    // read from the journal, as on start, before the new config is in force, and once more
    // after, for the leads the old config took meanwhile.
    let grown = grown_dedupe_windows(&old.snap, &rt.snap);
    let dedupe_replayed_from = chrono::Utc::now().timestamp_micros().max(0) as u64;
    let mut dedupe_replayed = std::collections::HashSet::new();
    if !grown.is_empty() {
        replay_dedupe(shared, &grown, 0, &mut dedupe_replayed);
    }
    shared.journal.keep_for(super::journal_keep_us(&rt.snap));
    let generation = rt.generation;
    let rt = Arc::new(rt);
    let published_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
    shared.publish(rt.clone());
    if rebuilt {
        replay_caps_after(shared, &rt, &rebuild, replayed_to, published_us, &mut tests);
    }
    drop(rt);
    if !grown.is_empty() {
        let since = dedupe_replayed_from.saturating_sub(DEDUPE_REPLAY_OVERLAP_US);
        replay_dedupe(shared, &grown, since, &mut dedupe_replayed);
    }
    Ok(ReloadReport {
        generation,
        diff,
        sales_replayed,
        dedupe_replayed: dedupe_replayed.len() as u64,
        warnings,
    })
}

/// How far back the second dedupe replay of a reload reads from where the first began: more
/// than a lead takes from its check to its journal record.
const DEDUPE_REPLAY_OVERLAP_US: u64 = 1_000_000;

/// Campaigns whose dedupe window is longer in `new` than in `old` (a new campaign that
/// dedupes included): (id, window in µs).
fn grown_dedupe_windows(old: &Snapshot, new: &Snapshot) -> Vec<(String, u64)> {
    new.campaigns
        .iter()
        .filter(|c| c.dedupe_days > 0)
        .filter(|c| {
            let was = old
                .campaign_by_id(&c.id)
                .map_or(0, |o| old.campaigns[o].dedupe_days);
            c.dedupe_days > was
        })
        .map(|c| (c.id.clone(), u64::from(c.dedupe_days) * 86_400_000_000))
        .collect()
}

/// Record into the dedupe index the leads of the `campaigns` (id, window) the journal holds
/// within each window and from `since_us` on, as a start does: not tests or pings, not leads
/// refused, not leads the last stop cut off before any post (a seller's retry of those is no
/// duplicate). The leads recorded are added to `recorded`. A read error ends the replay with
/// what was read.
fn replay_dedupe(
    shared: &Shared,
    campaigns: &[(String, u64)],
    since_us: u64,
    recorded: &mut std::collections::HashSet<String>,
) {
    use std::collections::HashMap;
    let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
    let widest = campaigns.iter().map(|c| c.1).max().unwrap_or(0);
    let since = since_us.max(now_us.saturating_sub(widest));
    // Leads received, by id: (when, keys, settled: posted, sold or answered).
    let mut received: HashMap<String, (u64, Vec<u64>, bool)> = HashMap::new();
    let mut take = |e: &journal::Entry| {
        if e.ts_us < since {
            return;
        }
        match &e.record {
            Record::LeadReceived {
                lead_id,
                campaign,
                lead_json,
                test,
                flow,
                ..
            } => {
                let Some(&(_, window)) = campaigns.iter().find(|c| &c.0 == campaign) else {
                    return;
                };
                if *test
                    || *flow == Some(journal::LeadFlow::Ping)
                    || e.ts_us < now_us.saturating_sub(window)
                {
                    return;
                }
                let keys = super::journaled_dedupe_keys(campaign, lead_json);
                if !keys.is_empty() {
                    received.insert(lead_id.clone(), (e.ts_us, keys, false));
                }
            }
            Record::Rejected { lead_id, .. } => {
                received.remove(lead_id);
            }
            Record::PostSent { lead_id, .. }
            | Record::Sale { lead_id, .. }
            | Record::LeadAnswered { lead_id, .. } => {
                if let Some(r) = received.get_mut(lead_id) {
                    r.2 = true;
                }
            }
            _ => {}
        }
    };
    let Ok(reader) = journal::Reader::open_since(shared.journal.dir(), since) else {
        return;
    };
    for item in reader {
        let Ok(e) = item else { break };
        take(&e);
    }
    for (lead_id, (ts, keys, settled)) in received {
        // Cut off by the last stop before any buyer had the consumer: the seller heard
        // nothing, and a retry of it is no duplicate (this process's own leads are still
        // running, or answered).
        if !settled && ts < shared.started_us {
            continue;
        }
        shared.dedupe.replay(&keys, ts);
        recorded.insert(lead_id);
    }
}

impl Runtime {
    /// The runtime of a reloaded snapshot, carrying over from `old` by id what must survive.
    /// Also returns, per buyer, whether its caps must be rebuilt from the journal.
    pub fn reloaded(snap: Arc<Snapshot>, old: &Runtime) -> (Runtime, Vec<bool>) {
        let old_buyer: Vec<Option<usize>> = snap
            .buyers
            .iter()
            .map(|b| Snapshot::predecessor(&old.snap, b))
            .collect();
        let limits: Vec<_> = snap.buyers.iter().map(|b| (b.caps, b.timezone)).collect();
        // A buyer whose ids changed (its own, by a rename, or its `previous_ids`): one it
        // answers to now may have journaled sales its counts never held (an id a buyer had
        // before, even its new own), and one it no longer answers to has sales they hold.
        // Either way its counts are rebuilt from the journal, as a start would build them.
        let history: Vec<bool> = snap
            .buyers
            .iter()
            .zip(&old_buyer)
            .map(|(b, was)| {
                was.is_some_and(|o| {
                    let o = &old.snap.buyers[o];
                    fn ids(b: &crate::config::Buyer) -> Vec<&str> {
                        let mut v: Vec<&str> = std::iter::once(b.id.as_str())
                            .chain(b.previous_ids.iter().map(String::as_str))
                            .collect();
                        v.sort_unstable();
                        v
                    }
                    ids(b) != ids(o)
                })
            })
            .collect();
        let (caps, how) = CapTable::carried_over_changed(&limits, &old.caps, &old_buyer, &history);
        for (i, b) in snap.buyers.iter().enumerate() {
            // `paused` in the file: applied when it changed there (or for a new buyer);
            // otherwise the operator's pause or resume stands.
            let file_changed = match old_buyer[i] {
                Some(o) => old.snap.buyers[o].paused != b.paused,
                None => b.paused,
            };
            if file_changed {
                if b.paused {
                    caps.pause(i);
                } else {
                    caps.resume(i);
                }
            }
        }
        let rebuild: Vec<bool> = how.iter().map(|h| *h != Carried::Shared).collect();
        let mut rt = Runtime::with_caps(snap, caps, old.generation + 1);
        // Rate windows, by seller id: a reload does not open a seller's second afresh.
        for (s, w) in rt.snap.sellers.iter().zip(rt.rate.iter_mut()) {
            if let Some(o) = old.snap.sellers.iter().position(|o| o.id == s.id) {
                if let Some(was) = old.rate.get(o) {
                    *w = was.clone();
                }
            }
        }
        // Round-robin turns, by campaign and buyer id.
        for (c, rr) in rt.snap.campaigns.iter().zip(&rt.round_robin) {
            let Some(o) = old
                .snap
                .campaign_by_id(&c.id)
                .and_then(|o| old.round_robin.get(o))
            else {
                continue;
            };
            rr.turns
                .store(o.turns.load(Ordering::Relaxed), Ordering::Relaxed);
            rr.cascades
                .store(o.cascades.load(Ordering::Relaxed), Ordering::Relaxed);
            for (b, (slot, cascade)) in rt
                .snap
                .buyers
                .iter()
                .zip(rr.last.iter().zip(&rr.last_cascade))
            {
                let was = Snapshot::predecessor(&old.snap, b);
                let load = |v: &[std::sync::atomic::AtomicU64]| {
                    was.and_then(|ob| v.get(ob))
                        .map_or(0, |t| t.load(Ordering::Relaxed))
                };
                slot.store(load(&o.last), Ordering::Relaxed);
                cascade.store(load(&o.last_cascade), Ordering::Relaxed);
            }
        }
        (rt, rebuild)
    }
}

/// Count the journal's sales of the windows still open into the caps of the buyers marked in
/// `only`, as on start (the files recovery set aside included), and, as on start, the posts
/// the last stop cut off before their answer (journaled before this process started). A read
/// error ends the replay with what was read so far.
/// Returns the sales counted, where the read ended, and the test leads it met.
fn replay_caps(
    shared: &Shared,
    rt: &Runtime,
    only: &[bool],
) -> (
    u64,
    Option<journal::Position>,
    std::collections::HashSet<String>,
) {
    let now = chrono::Utc::now();
    let now_us = now.timestamp_micros().max(0) as u64;
    let since = now_us.saturating_sub(CAP_REPLAY_WINDOW_US);
    let mut n = 0;
    // Test leads take no cap or budget (as on start).
    let mut tests = std::collections::HashSet::new();
    // Posts from before this process whose answer the journal does not have, by lead:
    // (buyer, price, when sent).
    let mut open_posts: std::collections::HashMap<String, Vec<(usize, crate::money::Cents, u64)>> =
        std::collections::HashMap::new();
    // Posts and sales of this process's leads not answered yet: they may still be running
    // under the older config, reserved in its counters, not in these (buyer, price, when).
    type Running = std::collections::HashMap<String, Vec<(usize, crate::money::Cents, u64)>>;
    let mut running_posts: Running = Running::new();
    let mut running_sales: Running = Running::new();
    // When each post now being answered was sent: a sale counts in its post's cap window, as
    // the live counters have it.
    let mut posted_at: std::collections::HashMap<(String, usize), u64> =
        std::collections::HashMap::new();
    let mut take = |e: &journal::Entry| {
        if e.ts_us < since {
            return;
        }
        if let Record::LeadReceived {
            lead_id,
            test: true,
            ..
        } = &e.record
        {
            tests.insert(lead_id.clone());
        }
        match &e.record {
            Record::PostSent {
                lead_id,
                buyer,
                price_cents,
            } if !tests.contains(lead_id) => {
                if let Some(b) = rt
                    .snap
                    .buyer_of_record(buyer)
                    .filter(|&b| only.get(b) == Some(&true))
                {
                    posted_at.insert((lead_id.clone(), b), e.ts_us);
                    let posts = if e.ts_us < shared.started_us {
                        &mut open_posts
                    } else {
                        &mut running_posts
                    };
                    posts
                        .entry(lead_id.clone())
                        .or_default()
                        .push((b, *price_cents, e.ts_us));
                }
            }
            Record::PostResult {
                lead_id,
                buyer,
                accepted,
                ..
            } => {
                let Some(b) = rt.snap.buyer_of_record(buyer) else {
                    return;
                };
                if !accepted {
                    posted_at.remove(&(lead_id.clone(), b));
                }
                for open in [&mut open_posts, &mut running_posts] {
                    if let Some(posts) = open.get_mut(lead_id) {
                        if let Some(i) = posts.iter().position(|p| p.0 == b) {
                            posts.swap_remove(i);
                        }
                        if posts.is_empty() {
                            open.remove(lead_id);
                        }
                    }
                }
            }
            Record::LeadAnswered { lead_id, .. } => {
                open_posts.remove(lead_id);
                running_posts.remove(lead_id);
                // The lead is over: its sales are plain sales.
                for (b, price_cents, ts_us) in running_sales.remove(lead_id).into_iter().flatten() {
                    let ts = chrono::DateTime::from_timestamp_micros(ts_us as i64).unwrap_or(now);
                    rt.caps.replay_sale(b, ts, price_cents, now);
                    n += 1;
                }
            }
            _ => {}
        }
        if let Record::Sale {
            lead_id,
            buyer,
            price_cents,
            ..
        } = &e.record
        {
            let Some(b) = rt.snap.buyer_of_record(buyer) else {
                return;
            };
            if tests.contains(lead_id) {
                return;
            }
            if only.get(b).copied().unwrap_or(false) {
                let sent_us = posted_at.remove(&(lead_id.clone(), b)).unwrap_or(e.ts_us);
                if e.ts_us >= shared.started_us {
                    // Counted when the lead is found answered, or at the end as running.
                    running_sales.entry(lead_id.clone()).or_default().push((
                        b,
                        *price_cents,
                        sent_us,
                    ));
                    return;
                }
                let ts = chrono::DateTime::from_timestamp_micros(sent_us as i64).unwrap_or(now);
                rt.caps.replay_sale(b, ts, *price_cents, now);
                n += 1;
            }
        }
    };
    let mut last = None;
    if let Ok(reader) = journal::Reader::open_since(shared.journal.dir(), since) {
        for item in reader {
            let Ok(e) = item else { break };
            take(&e);
            last = Some(e.pos);
        }
    }
    let _ = journal::replay_set_aside(shared.journal.dir(), since, &mut take);
    for (b, price_cents, ts_us) in open_posts.into_values().flatten() {
        let ts = chrono::DateTime::from_timestamp_micros(ts_us as i64).unwrap_or(now);
        rt.caps.replay_sale(b, ts, price_cents, now);
        n += 1;
    }
    // Leads of this process still running: their posts without an answer and their sales
    // count now, remembered so that each lead settles them when its post ends
    // (`CapTable::settle_earlier`): a buyer never has more sold or in flight than its caps.
    for (running, sold) in [(running_posts, false), (running_sales, true)] {
        for (lead_id, posts) in running {
            for (b, price_cents, ts_us) in posts {
                let ts = chrono::DateTime::from_timestamp_micros(ts_us as i64).unwrap_or(now);
                rt.caps
                    .replay_running(b, &lead_id, ts, price_cents, sold, now);
                n += u64::from(sold);
            }
        }
    }
    (n, last, tests)
}

/// After the reload is in force: the posts, rejections and sales the older config's leads
/// journaled between the rebuild's read (`after`) and the publish (`until_us`), which those
/// leads settled in their own counters only (the reload was not in force yet), are counted
/// in the rebuilt ones as the rebuild would have counted them. Later ones each lead settles
/// itself (`settle_earlier`). `tests` are the test leads the rebuild met.
fn replay_caps_after(
    shared: &Shared,
    rt: &Runtime,
    only: &[bool],
    after: Option<journal::Position>,
    until_us: u64,
    tests: &mut std::collections::HashSet<String>,
) {
    let now = chrono::Utc::now();
    // From where the rebuild stopped; when it read nothing (no record in the cap window),
    // from the window's start, as it did, not from the journal's first segment.
    let dir = shared.journal.dir();
    let reader = match after {
        Some(p) => journal::Reader::open_from(dir, p.segment),
        None => journal::Reader::open_since(dir, until_us.saturating_sub(CAP_REPLAY_WINDOW_US)),
    };
    let Ok(reader) = reader else {
        return;
    };
    for item in reader {
        let Ok(e) = item else { break };
        if after.is_some_and(|p| e.pos <= p) || e.ts_us >= until_us {
            continue;
        }
        let rebuilt = |buyer: &str| {
            rt.snap
                .buyer_of_record(buyer)
                .filter(|&b| only.get(b) == Some(&true))
        };
        match &e.record {
            Record::LeadReceived {
                lead_id,
                test: true,
                ..
            } => {
                tests.insert(lead_id.clone());
            }
            Record::PostSent {
                lead_id,
                buyer,
                price_cents,
            } if !tests.contains(lead_id) => {
                if let Some(b) = rebuilt(buyer).filter(|&b| !rt.caps.remembers(b, lead_id)) {
                    let ts = chrono::DateTime::from_timestamp_micros(e.ts_us as i64).unwrap_or(now);
                    rt.caps
                        .replay_running(b, lead_id, ts, *price_cents, false, now);
                }
            }
            Record::PostResult {
                lead_id,
                buyer,
                accepted: false,
                ..
            } if !tests.contains(lead_id) => {
                if let Some(b) = rebuilt(buyer) {
                    rt.caps.settle_earlier(b, lead_id, false, 0, now);
                }
            }
            Record::Sale {
                lead_id,
                buyer,
                price_cents,
                ..
            } if !tests.contains(lead_id) => {
                if let Some(b) = rebuilt(buyer) {
                    rt.caps.settle_earlier(b, lead_id, true, *price_cents, now);
                }
            }
            _ => {}
        }
    }
}
