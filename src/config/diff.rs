//! What a reload changes: entities added, removed or changed (by id), and the settings that a
//! running exchange cannot take without a restart.

use super::{Snapshot, SyncPolicy};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Debug;

/// Ids added, removed and changed in one section (`[[sellers]]`, `[[campaigns]]`, `[[buyers]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
    /// `[[buyers]]` only: buyers whose new id lists a removed one in `previous_ids`, as
    /// `"old -> new"` (in neither `added` nor `removed`; they keep their caps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<String>,
}

impl Changes {
    fn of<'a, T: Debug + 'a>(
        old: impl Iterator<Item = (&'a str, &'a T, String)>,
        new: impl Iterator<Item = (&'a str, &'a T, String)>,
    ) -> Changes {
        let old: HashMap<&str, String> = old
            .map(|(id, raw, extra)| (id, fingerprint(raw, &extra)))
            .collect();
        let mut c = Changes::default();
        let mut seen = std::collections::HashSet::new();
        for (id, raw, extra) in new {
            seen.insert(id);
            match old.get(id) {
                None => c.added.push(id.to_string()),
                Some(f) if *f != fingerprint(raw, &extra) => c.changed.push(id.to_string()),
                Some(_) => c.unchanged += 1,
            }
        }
        let mut removed: Vec<String> = old
            .keys()
            .filter(|id| !seen.contains(*id))
            .map(|id| id.to_string())
            .collect();
        removed.sort();
        c.removed = removed;
        c
    }

    /// Nothing added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.renamed.is_empty()
    }
}

/// An entry as written in the file (ids, not indexes, name what it refers to), plus what the
/// file does not show (a suppression list's contents).
fn fingerprint<T: Debug>(raw: &T, extra: &str) -> String {
    format!("{:?}{}", raw, extra)
}

/// What differs between two configs, section by section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub sellers: Changes,
    pub campaigns: Changes,
    pub buyers: Changes,
    /// Other keys that changed and take effect on reload (`server.max_in_flight`, `admin.token`...).
    pub settings: Vec<String>,
}

/// Compare two validated configs by id.
pub fn diff(old: &Snapshot, new: &Snapshot) -> ConfigDiff {
    let (o, n) = (&old.raw, &new.raw);
    let suppression = |s: &Snapshot, id: &str| -> String {
        s.campaign_by_id(id)
            .and_then(|c| s.campaigns[c].suppression.as_ref())
            .map(|l| format!(" suppressed={}", l.len()))
            .unwrap_or_default()
    };
    let sellers = Changes::of(
        o.sellers.iter().map(|s| (s.id.as_str(), s, String::new())),
        n.sellers.iter().map(|s| (s.id.as_str(), s, String::new())),
    );
    let campaigns = Changes::of(
        o.campaigns
            .iter()
            .map(|c| (c.id.as_str(), c, suppression(old, &c.id))),
        n.campaigns
            .iter()
            .map(|c| (c.id.as_str(), c, suppression(new, &c.id))),
    );
    let mut buyers = Changes::of(
        o.buyers.iter().map(|b| (b.id.as_str(), b, String::new())),
        n.buyers.iter().map(|b| (b.id.as_str(), b, String::new())),
    );
    // A removed buyer whose id a buyer of the new file lists in `previous_ids` lives on under
    // that buyer: a rename (the new id is added) or a merge into a buyer kept (two buyers made
    // one). Either is told as renamed, in neither `added` nor `removed`.
    for b in &n.buyers {
        let was: Vec<String> = b
            .previous_ids
            .iter()
            .filter(|p| buyers.removed.contains(p))
            .cloned()
            .collect();
        if was.is_empty() {
            continue;
        }
        buyers.added.retain(|id| *id != b.id);
        for w in was {
            buyers.removed.retain(|id| *id != w);
            buyers.renamed.push(format!("{w} -> {}", b.id));
        }
    }
    let mut settings = Vec::new();
    let (os, ns) = (&o.server, &n.server);
    let mut check = |key: &str, changed: bool| {
        if changed {
            settings.push(key.to_string());
        }
    };
    check(
        "server.max_body_bytes",
        os.max_body_bytes != ns.max_body_bytes,
    );
    check("server.max_in_flight", os.max_in_flight != ns.max_in_flight);
    // Raised at once; a lower value waits for the next start (the index never shrinks), so
    // it is not a change that took effect.
    check(
        "server.dedupe_entries",
        ns.dedupe_entries > os.dedupe_entries,
    );
    check(
        "server.max_connections",
        os.max_connections != ns.max_connections,
    );
    check(
        "server.idle_timeout_ms",
        os.idle_timeout_ms != ns.idle_timeout_ms,
    );
    check(
        "server.head_timeout_ms",
        os.head_timeout_ms != ns.head_timeout_ms,
    );
    check(
        "server.engine_margin_ms",
        os.engine_margin_ms != ns.engine_margin_ms,
    );
    check("server.busy_poll_us", os.busy_poll_us != ns.busy_poll_us);
    check("tls.ca_files", o.tls.ca_files != n.tls.ca_files);
    check(
        "server.tls",
        old.server.tls != new.server.tls
            || old.seller_cert_fingerprint != new.seller_cert_fingerprint,
    );
    check("admin.token", o.admin.token != n.admin.token);
    ConfigDiff {
        sellers,
        campaigns,
        buyers,
        settings,
    }
}

/// A setting that changed in the file but is fixed while the exchange runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartKey {
    pub key: &'static str,
    pub running: String,
    pub file: String,
}

/// Settings fixed for the life of the process: the listeners, the number of workers, the
/// journal. A reload that changes any of them is refused as a whole.
pub fn restart_required(old: &Snapshot, new: &Snapshot) -> Vec<RestartKey> {
    let mut out = Vec::new();
    let mut check = |key: &'static str, running: String, file: String| {
        if running != file {
            out.push(RestartKey { key, running, file });
        }
    };
    let (os, ns) = (&old.server, &new.server);
    check(
        "server.listen",
        os.listen.to_string(),
        ns.listen.to_string(),
    );
    let addr = |a: Option<std::net::SocketAddr>| {
        a.map(|a| a.to_string()).unwrap_or_else(|| "(none)".into())
    };
    check(
        "server.admin_listen",
        addr(os.admin_listen),
        addr(ns.admin_listen),
    );
    check(
        "server.workers",
        os.workers.to_string(),
        ns.workers.to_string(),
    );
    // Whether the seller API speaks TLS is the listener's; its certificate and key are not
    // (new connections take the reloaded ones).
    let tls = |t: &Option<(std::path::PathBuf, std::path::PathBuf)>| match t {
        Some(_) => "on".to_string(),
        None => "none".to_string(),
    };
    check("server.tls", tls(&os.tls), tls(&ns.tls));
    let (oj, nj) = (&old.journal, &new.journal);
    check(
        "journal.dir",
        oj.dir.display().to_string(),
        nj.dir.display().to_string(),
    );
    check(
        "journal.segment_bytes",
        oj.segment_bytes.to_string(),
        nj.segment_bytes.to_string(),
    );
    let sync = |p: SyncPolicy| format!("{:?}", p).to_lowercase();
    check("journal.sync", sync(oj.sync), sync(nj.sync));
    if nj.sync == SyncPolicy::Interval {
        check(
            "journal.sync_interval_ms",
            oj.sync_interval.as_millis().to_string(),
            nj.sync_interval.as_millis().to_string(),
        );
    }
    check(
        "journal.retain_segments",
        oj.retain_segments.to_string(),
        nj.retain_segments.to_string(),
    );
    out
}
