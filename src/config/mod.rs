//! Configuration: parse the TOML file, validate it with errors that name the key and the line,
//! and build the immutable [`Snapshot`] the engine runs on.
//!
//! A snapshot is shared read-only by every worker (`Arc<Snapshot>`); a reload builds a new one
//! and in-flight leads keep the one they started with.

mod diff;
mod locate;
mod personal;
pub mod types;
mod url;

pub use self::diff::{diff, restart_required, Changes, ConfigDiff, RestartKey};
pub use self::personal::{is_personal_field, is_personal_number, is_personal_value};
pub use self::url::{Endpoint, Scheme};
use crate::caps::CapLimits;
use crate::eligibility::{BuyerRules, CampaignRules, Matcher};
use crate::money::{dollars_f64_to_cents, Cents};
use crate::text::shown;
use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use types::*;

/// Upper bounds on operator-set numbers, so that a typo cannot ask for something absurd.
pub const MAX_WORKERS: usize = 256;
/// The largest `server.max_body_bytes`: a request body is journaled whole in one record, whose
/// payload is at most `journal::MAX_PAYLOAD_BYTES` (1 MiB); 64 KiB of it are left to the
/// record's other fields.
pub const MAX_BODY_BYTES_LIMIT: usize = 1024 * 1024 - 64 * 1024;

/// Longest seller, campaign or buyer id.
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// A worker spins at most 10 ms after its last work before it sleeps.
pub const MAX_BUSY_POLL_US: u64 = 10_000;
/// Seller-side ping-post: bids are held at most an hour.
pub const MAX_HOLD_MS: u64 = 3_600_000;
/// A campaign's `consent_max_age_hours` is at most a year.
pub const MAX_CONSENT_AGE_HOURS: u32 = 8_760;
pub const MAX_BUYER_CONNECTIONS: usize = 4096;
/// Why the start could not use `dir` as its journal directory, as far as the file system
/// says now: it is made at the start when it is not there, so something else in its place (a
/// file, a symbolic link to nothing) or a file where one of its parents should be would stop
/// the start.
fn journal_dir_problem(dir: &std::path::Path) -> Option<String> {
    let dangling = |p: &std::path::Path| std::fs::symlink_metadata(p).is_ok();
    let err = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return None,
        Ok(_) => return Some(format!("{} is there and is not a directory", dir.display())),
        Err(_) if dangling(dir) => {
            return Some(format!("{} is a symbolic link to nothing", dir.display()))
        }
        Err(e) => e,
    };
    // Not there: made under its nearest parent that is.
    for parent in dir.ancestors().skip(1) {
        if parent.as_os_str().is_empty() {
            break;
        }
        let why = match std::fs::metadata(parent) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => "is not a directory",
            Err(_) if dangling(parent) => "is a symbolic link to nothing",
            Err(_) => continue,
        };
        return Some(format!(
            "{} cannot be made: {} {why}",
            dir.display(),
            parent.display()
        ));
    }
    // Under a directory, but not to be made there all the same: `afile/` or `afile/.` with
    // `afile` a file (their parent is the directory), a directory that may not be entered...
    (err.kind() != std::io::ErrorKind::NotFound)
        .then(|| format!("{} cannot be used: {err}", dir.display()))
}

/// Lowest `idle_timeout_ms` of a buyer: its warm connections are closed and opened again at
/// this period at most.
pub const MIN_BUYER_IDLE_TIMEOUT_MS: u64 = 100;
/// Highest `server.max_connections`: seller connections across all workers.
pub const MAX_SELLER_CONNECTIONS: usize = 1_000_000;
pub const MAX_SHARED_SALES: u32 = 32;
pub const MIN_SEGMENT_BYTES: u64 = 1024 * 1024;
pub const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024 * 1024 - 4096;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `buyers[2].caps.daily` (`buyers[2]` is the third `[[buyers]]`).
    /// Empty for a syntax error on a line that names no key.
    pub key: String,
    /// 1-based line of the key in the file, when it can be found.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {}: ", l)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not TOML of the expected shape (syntax, unknown key, wrong type).
    Parse(Issue),
    /// The file parsed but its values are inconsistent or out of range.
    Invalid(Vec<Issue>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, error } => {
                write!(f, "cannot read {}: {}", path.display(), error)
            }
            ConfigError::Parse(i) => write!(f, "{}", i),
            ConfigError::Invalid(issues) => {
                for (n, i) in issues.iter().enumerate() {
                    if n > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}", i)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    PingPost,
    Waterfall,
    RoundRobin,
    Weighted,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "ping_post" => Method::PingPost,
            "waterfall" => Method::Waterfall,
            "round_robin" => Method::RoundRobin,
            "weighted" => Method::Weighted,
            _ => return None,
        })
    }

    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Method::PingPost => "ping_post",
            Method::Waterfall => "waterfall",
            Method::RoundRobin => "round_robin",
            Method::Weighted => "weighted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleKind {
    Exclusive,
    /// Sold to up to this many distinct buyers, each at its own bid.
    Shared(u32),
}

impl SaleKind {
    pub fn max_sales(self) -> usize {
        match self {
            SaleKind::Exclusive => 1,
            SaleKind::Shared(n) => n as usize,
        }
    }
}

/// Bounds of `server.dedupe_entries` (at about 60 bytes a key, the upper one is 16 GiB).
pub const MIN_DEDUPE_ENTRIES: usize = 1024;
pub const MAX_DEDUPE_ENTRIES: usize = 1 << 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payout {
    /// Seller earns this many basis points (1/10,000) of the price, rounded down to the cent.
    ShareBp(u32),
    /// Seller earns a fixed amount per sold lead.
    Fixed(Cents),
}

impl Payout {
    /// What one more sale at `price` earns the seller, after the lead's earlier sales totalling
    /// `before` (`first` when there were none). A share grows with the running total, so the
    /// sales of a shared lead add up to the share of its whole price, rounded down once (80 %
    /// of 33.33 + 33.33 + 33.34 is 80.00, not 3 × 26.66); a fixed payout comes with the first
    /// sale only.
    pub fn for_sale(self, before: Cents, price: Cents, first: bool) -> Cents {
        match self {
            Payout::ShareBp(bp) => {
                let share = |total: Cents| total * bp as Cents / 10_000;
                share(before + price) - share(before)
            }
            Payout::Fixed(c) => {
                if first {
                    c
                } else {
                    0
                }
            }
        }
    }

    pub fn for_price(self, price: Cents, sold: bool) -> Cents {
        if !sold {
            return 0;
        }
        match self {
            Payout::ShareBp(bp) => price * bp as Cents / 10_000,
            Payout::Fixed(c) => c,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    Os,
    Interval,
    Always,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    /// Resolved: never 0.
    pub workers: usize,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    /// Keys the dedupe index holds before it must drop one still inside its window.
    pub dedupe_entries: usize,
    pub idle_timeout: Duration,
    pub head_timeout: Duration,
    pub engine_margin: Duration,
    /// Zero: the worker blocks in `epoll_wait` as soon as it has nothing to do.
    pub busy_poll: Duration,
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub sync: SyncPolicy,
    pub sync_interval: Duration,
    pub retain_segments: usize,
}

#[derive(Debug, Clone)]
pub struct Seller {
    pub id: String,
    pub api_key: String,
    /// Indexes into `Snapshot::campaigns`.
    pub campaigns: Vec<usize>,
    pub payout: Payout,
    pub max_leads_per_second: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: String,
    pub vertical: String,
    pub method: Method,
    pub sale: SaleKind,
    pub ping_timeout: Duration,
    pub post_timeout: Duration,
    /// See [`crate::auction::Params::answer_by`].
    pub answer_timeout: Option<Duration>,
    pub reserve_cents: Cents,
    pub ping_fields: Vec<String>,
    pub required_fields: Vec<String>,
    pub require_consent: bool,
    /// Only buyers the consent's `disclosed_buyers` names (when it names any) are eligible.
    pub disclosed_buyers_only: bool,
    /// Consent given longer ago than this is refused (`consent_expired`), and a consent
    /// without `consented_at` is refused (`missing_field`): the age must be known.
    pub consent_max_age: Option<chrono::Duration>,
    pub dedupe_days: u32,
    pub fallback: Option<Method>,
    pub hold: Duration,
    pub suppression_file: Option<PathBuf>,
    /// The suppression list, loaded from `suppression_file` (paths relative to the working directory).
    pub suppression: Option<Arc<crate::compliance::Suppression>>,
    /// Buyers (indexes into `Snapshot::buyers`) that take this campaign, in config order.
    pub buyers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Buyer {
    pub id: String,
    /// Ids it had before (`previous_ids`): the journal's records under them are its own.
    pub previous_ids: Vec<String>,
    pub campaigns: Vec<usize>,
    pub verticals: Vec<String>,
    pub ping: Option<Endpoint>,
    pub post: Option<Endpoint>,
    /// Configured headers, sent on every request to this buyer.
    pub headers: Vec<(String, String)>,
    pub max_connections: usize,
    pub min_idle: usize,
    pub idle_timeout: Duration,
    pub timezone: chrono_tz::Tz,
    /// Compiled filters, hours and verticals (the matcher holds its own copy).
    pub rules: BuyerRules,
    pub caps: CapLimits,
    /// Fixed price for fixed-price distribution; such a buyer gets posts only.
    pub price_cents: Option<Cents>,
    pub priority: u32,
    pub weight: u32,
    pub adapter: Option<AdapterConfig>,
    /// The adapter, compiled: requests built from templates, answers read through paths.
    pub codec: Option<Arc<crate::adapter::Adapter>>,
    pub paused: bool,
}

impl Buyer {
    /// The adapter that builds this buyer's pings (`post` false) or posts itself: a
    /// form-encoded adapter always (`gavel check` requires its templates), a JSON one when it
    /// has a template for the request. `None`: the native body is sent.
    pub fn templated(&self, post: bool) -> Option<&Arc<crate::adapter::Adapter>> {
        self.codec.as_ref().filter(|c| {
            c.request_kind() == crate::adapter::RequestKind::Form
                || if post {
                    c.has_post_body()
                } else {
                    c.has_ping_body()
                }
        })
    }
}

/// Things in a valid config that the operator should look at: a seller paid a fixed amount per
/// sold lead on a campaign whose leads may sell for less (a reserve price, or a fixed-price
/// buyer, below the payout), so that the exchange pays out more than it takes in for such leads.
pub fn warnings(snap: &Snapshot) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    warnings_at(snap, now)
}

/// How long before its end a seller certificate is warned of.
pub const CERT_EXPIRY_WARNING_DAYS: u64 = 14;

/// [`warnings`] at `now`, in seconds since the Unix epoch.
pub fn warnings_at(snap: &Snapshot, now: u64) -> Vec<String> {
    let mut out = snap.config_notes.clone();
    if let Some((not_before, not_after)) = snap.seller_cert_validity {
        let date = crate::net::tls::utc;
        if now >= not_after {
            out.push(format!(
                "server.tls.cert_file: the certificate expired on {}; sellers' TLS clients \
                 refuse it",
                date(not_after)
            ));
        } else if now < not_before {
            out.push(format!(
                "server.tls.cert_file: the certificate is not valid before {}; sellers' TLS \
                 clients refuse it until then",
                date(not_before)
            ));
        } else if not_after - now < CERT_EXPIRY_WARNING_DAYS * 86_400 {
            let days = (not_after - now) / 86_400;
            out.push(format!(
                "server.tls.cert_file: the certificate expires on {} (in {}); renew it and \
                 reload",
                date(not_after),
                match days {
                    0 => "less than a day".to_string(),
                    1 => "1 day".to_string(),
                    n => format!("{n} days"),
                }
            ));
        }
    }
    if snap.server.admin_listen.is_none() {
        out.push(
            "no server.admin_listen: the operator API is off (no /healthz, /metrics, /v1/stats, \
             pause or reload; SIGHUP still reloads)"
                .to_string(),
        );
    }
    if snap.server.admin_listen.is_some() && snap.admin_token.is_none() {
        out.push(
            "server.admin_listen without [admin] token: the operator API answers only /healthz \
             (every other request is 401)"
                .to_string(),
        );
    }
    for s in &snap.sellers {
        if s.campaigns.is_empty() {
            out.push(format!(
                "seller {} has no campaigns: every lead it sends is refused",
                shown(&s.id)
            ));
        }
    }
    for s in &snap.sellers {
        let Payout::Fixed(fixed) = s.payout else {
            continue;
        };
        for &ci in &s.campaigns {
            let Some(c) = snap.campaigns.get(ci) else {
                continue;
            };
            let buyers = || c.buyers.iter().filter_map(|&b| snap.buyers.get(b));
            // The auction sells at a bid of at least the reserve (and at least a cent), when
            // some buyer is pinged; fixed-price distribution, or the fallback, at a buyer's price.
            let auction_low = (c.method == Method::PingPost && buyers().any(|b| b.ping.is_some()))
                .then(|| c.reserve_cents.max(1));
            let fixed_low = (c.method != Method::PingPost || c.fallback.is_some())
                .then(|| {
                    // The fixed-price method in use: a weighted draw never draws weight 0.
                    let weighted = c.method == Method::Weighted
                        || (c.method == Method::PingPost && c.fallback == Some(Method::Weighted));
                    buyers()
                        .filter(|b| b.post.is_some() && !(weighted && b.weight == 0))
                        .filter_map(|b| b.price_cents)
                        .filter(|&p| p >= c.reserve_cents)
                        .min()
                })
                .flatten();
            let lowest = auction_low.into_iter().chain(fixed_low).min();
            if let Some(low) = lowest.filter(|&low| low < fixed) {
                out.push(format!(
                    "seller {}: payout_fixed {} is more than campaign {} may sell a lead for \
                     ({}): such a sale pays the seller more than buyers pay",
                    shown(&s.id),
                    crate::money::usd(fixed),
                    shown(&c.id),
                    crate::money::usd(low)
                ));
            }
        }
    }
    for c in &snap.campaigns {
        let buyers = || c.buyers.iter().filter_map(|&b| snap.buyers.get(b));
        let priced = buyers().any(|b| b.price_cents.is_some() && b.post.is_some());
        let pinged = buyers().any(|b| b.ping.is_some());
        let bidders = buyers().filter(|b| b.ping.is_some()).count();
        if c.method == Method::PingPost && bidders > crate::auction::MAX_PINGS_PER_LEAD {
            out.push(format!(
                "campaign {}: {bidders} of its buyers take pings, more than the {} a lead \
                 pings: a lead with more eligible pings a run of {} of them starting at a \
                 random place, so the others may not bid on it (counted in /v1/stats as \
                 buyers_not_pinged)",
                shown(&c.id),
                crate::auction::MAX_PINGS_PER_LEAD,
                crate::auction::MAX_PINGS_PER_LEAD
            ));
        }
        if let Some(answer) = c.answer_timeout.filter(|&a| a < c.post_timeout) {
            out.push(format!(
                "campaign {}: answer_timeout_ms {} is shorter than post_timeout_ms {}: no post \
                 after the first ones can end in time, so a rejected post never cascades",
                shown(&c.id),
                answer.as_millis(),
                c.post_timeout.as_millis()
            ));
        }
        // Dotted names read into nested objects in filters and adapter templates; a lead's
        // required and pinged fields are its own members, named as they are.
        for (key, names) in [
            ("required_fields", &c.required_fields),
            ("ping_fields", &c.ping_fields),
        ] {
            for name in names.iter().filter(|n| n.contains('.')) {
                let top = name.split('.').next().unwrap_or(name);
                out.push(format!(
                    "campaign {}: {key} {name:?} is the lead member of that very name, not a \
                     member nested in {top:?} (dotted names read into objects only in filters \
                     and adapter templates)",
                    shown(&c.id)
                ));
            }
        }
        if c.method == Method::PingPost && !pinged && c.fallback.is_none() {
            out.push(format!(
                "campaign {}: none of its buyers has a ping_url and there is no fallback: \
                 every lead is unsold",
                shown(&c.id)
            ));
        }
        if c.method != Method::PingPost && !priced {
            out.push(format!(
                "campaign {}: method {} posts at fixed prices, but none of its buyers has a \
                 price and a post_url: every lead is unsold",
                shown(&c.id),
                c.method.name()
            ));
        }
        let fixed = c.method != Method::PingPost || c.fallback.is_some();
        let weighted = c.method == Method::Weighted || c.fallback == Some(Method::Weighted);
        for b in buyers().filter(|b| fixed && b.post.is_some()) {
            match b.price_cents {
                Some(p) if p < c.reserve_cents => out.push(format!(
                    "campaign {}: buyer {}'s price {} is under the campaign's reserve_price {}: \
                     it is never posted to",
                    shown(&c.id),
                    shown(&b.id),
                    crate::money::usd(p),
                    crate::money::usd(c.reserve_cents)
                )),
                Some(_) if weighted && b.weight == 0 => out.push(format!(
                    "campaign {}: buyer {} has weight 0: it is never drawn",
                    shown(&c.id),
                    shown(&b.id)
                )),
                _ => {}
            }
        }
        if let Some(f) = c.fallback.filter(|_| !priced) {
            out.push(format!(
                "campaign {}: fallback {} posts at fixed prices, but none of its buyers has a \
                 price and a post_url: it never sells",
                shown(&c.id),
                f.name()
            ));
        }
    }
    for b in &snap.buyers {
        if b.campaigns.is_empty() {
            out.push(format!(
                "buyer {}: in no campaign, so it is never pinged or posted to",
                shown(&b.id)
            ));
        }
        // A lead's consent vertical must be its campaign's, so a buyer whose `verticals` leave
        // out a campaign's vertical never gets that campaign's leads (verticals are compared
        // exactly: `Solar` is not `solar`).
        if !b.verticals.is_empty() {
            for c in b.campaigns.iter().filter_map(|&c| snap.campaigns.get(c)) {
                if !b.verticals.contains(&c.vertical) {
                    out.push(format!(
                        "buyer {}: verticals {:?} leave out campaign {}'s vertical {:?}, so it never gets that campaign's leads",
                        shown(&b.id), b.verticals, shown(&c.id), c.vertical
                    ));
                }
            }
        }
        let filters = &b.rules.filters;
        for i in filters.contradictions() {
            let field = filters.fields().get(i).map_or("", |p| p.field());
            out.push(format!(
                "buyer {}: [buyers.filters] fields[{i}] cannot hold together with the filters \
                 before it on field {field:?}, so the buyer is never offered a lead",
                shown(&b.id)
            ));
        }
        let caps = &b.caps;
        let zero = [
            ("hourly", caps.hourly == Some(0)),
            ("daily", caps.daily == Some(0)),
            ("weekly", caps.weekly == Some(0)),
            ("monthly", caps.monthly == Some(0)),
            ("daily_budget", caps.daily_budget_cents == Some(0)),
            ("weekly_budget", caps.weekly_budget_cents == Some(0)),
            ("monthly_budget", caps.monthly_budget_cents == Some(0)),
        ];
        for (key, _) in zero.iter().filter(|z| z.1) {
            out.push(format!(
                "buyer {}: [buyers.caps] {key} = 0, so it is never pinged or sold to (set \
                 paused = true to say so)",
                shown(&b.id)
            ));
        }
        // A budget must hold at least the reserve for a bid to be taken (a sale never
        // overdraws one), so a budget under a campaign's reserve shuts the buyer out of it.
        let budgets = [
            ("daily_budget", caps.daily_budget_cents),
            ("weekly_budget", caps.weekly_budget_cents),
            ("monthly_budget", caps.monthly_budget_cents),
        ];
        for (key, cents) in budgets {
            let Some(cents) = cents.filter(|&c| c > 0) else {
                continue;
            };
            for c in b.campaigns.iter().filter_map(|&c| snap.campaigns.get(c)) {
                if cents < c.reserve_cents {
                    out.push(format!(
                        "buyer {}: [buyers.caps] {key} {} is under campaign {}'s reserve_price \
                         {}, so it is never sold that campaign's leads",
                        shown(&b.id),
                        crate::money::usd(cents),
                        shown(&c.id),
                        crate::money::usd(c.reserve_cents)
                    ));
                }
            }
        }
    }
    out
}

/// The validated, immutable configuration.
#[derive(Clone)]
pub struct Snapshot {
    pub path: Option<PathBuf>,
    pub server: Server,
    pub admin_token: Option<String>,
    pub journal: JournalSettings,
    pub tls_ca_files: Vec<PathBuf>,
    /// The seller listener's TLS config, built once from `[server.tls]` (None: plain HTTP).
    pub seller_tls: Option<Arc<rustls::ServerConfig>>,
    /// Warnings about values given in the file that nothing uses (`check` and a start print
    /// them with [`warnings`]).
    pub config_notes: Vec<String>,
    /// When `[server.tls]`'s certificate is valid (seconds since the Unix epoch), for the
    /// warnings of `check` and of a start.
    pub seller_cert_validity: Option<(u64, u64)>,
    /// The chain and key `[server.tls]` loaded, hashed ([`crate::net::tls::SellerTls`]).
    pub seller_cert_fingerprint: Option<u64>,
    pub sellers: Vec<Seller>,
    pub campaigns: Vec<Campaign>,
    pub buyers: Vec<Buyer>,
    /// The eligibility index over `campaigns` and `buyers`.
    pub matcher: Arc<Matcher>,
    seller_by_key: HashMap<String, usize>,
    campaign_by_id: HashMap<String, usize>,
    buyer_by_id: HashMap<String, usize>,
    /// Buyers by the ids they had before (`previous_ids`).
    buyer_by_previous_id: HashMap<String, usize>,
    /// The file as written, for telling what a reload changes.
    raw: Arc<RawConfig>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("server", &self.server)
            .field("sellers", &self.sellers.len())
            .field("campaigns", &self.campaigns.len())
            .field("buyers", &self.buyers.len())
            .finish()
    }
}

impl Snapshot {
    pub fn seller_by_key(&self, key: &str) -> Option<usize> {
        self.seller_by_key.get(key).copied()
    }
    pub fn campaign_by_id(&self, id: &str) -> Option<usize> {
        self.campaign_by_id.get(id).copied()
    }
    pub fn buyer_by_id(&self, id: &str) -> Option<usize> {
        self.buyer_by_id.get(id).copied()
    }

    /// The buyer a record journaled under `id` belongs to: the buyer with that id, or the one
    /// that had it before (`previous_ids`).
    pub fn buyer_of_record(&self, id: &str) -> Option<usize> {
        self.buyer_by_id(id)
            .or_else(|| self.buyer_by_previous_id.get(id).copied())
    }

    /// The current id of the buyer a record journaled under `id` belongs to; `id` itself when
    /// no buyer of this config has or had it.
    pub fn current_id<'a>(&'a self, id: &'a str) -> &'a str {
        self.buyer_of_record(id)
            .and_then(|b| self.buyers.get(b))
            .map_or(id, |b| b.id.as_str())
    }

    /// `b`'s index in `older`, a snapshot from before a reload: by its id, else by an id it had.
    pub fn predecessor(older: &Snapshot, b: &Buyer) -> Option<usize> {
        older
            .buyer_by_id(&b.id)
            .or_else(|| b.previous_ids.iter().find_map(|p| older.buyer_by_id(p)))
    }
}

/// Largest config file read, in bytes (a config of 10,000 buyers is a few MiB).
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest PEM file (certificate chain, key, CA bundle) read, in bytes.
pub const MAX_PEM_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Read a file an operator names (the config, a PEM file): a regular file of at most `limit`
/// bytes. A path that names a FIFO, a device or a directory would block a reload or never end
/// (`/dev/zero`), so it is refused before it is opened.
pub fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Error::new(ErrorKind::InvalidInput, what));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} MiB", limit / (1024 * 1024)),
        ));
    }
    Ok(bytes)
}

/// Read and validate a config file. Relative paths inside it are taken from the current directory.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let bytes =
        read_regular_file(path, MAX_CONFIG_FILE_BYTES).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    // A file that was read but is not UTF-8 is a config error on a line, like any other.
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ConfigError::Parse(Issue {
            key: String::new(),
            line: Some(1 + valid.iter().filter(|&&b| b == b'\n').count()),
            message: "the file is not UTF-8 text".into(),
        })
    })?;
    let mut snap = parse(&text)?;
    snap.path = Some(path.to_path_buf());
    Ok(snap)
}

/// Why a request header is one the exchange writes itself (so a configured one would never be
/// sent), or `None` for a header a buyer's config may set.
pub fn written_by_the_exchange(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "host" => Some("from the URL's host (put the name in ping_url and post_url)"),
        "content-type" => Some("for the body it sends (JSON, or the adapter's form)"),
        "content-length" | "transfer-encoding" => Some("for each body"),
        "connection" => Some("to keep the buyer's connections alive"),
        "expect" => Some("never: each body is sent at once, without waiting for 100 Continue"),
        "upgrade" => Some("never: buyers are spoken to in HTTP/1.1"),
        _ => None,
    }
}

/// Most headers a buyer's requests carry from its config, and their bytes in all (`name: value`
/// lines): the exchange's own heads stay well within what an HTTP server takes.
pub const MAX_BUYER_HEADERS: usize = 64;
pub const MAX_BUYER_HEADER_BYTES: usize = 8 * 1024;

/// Most problems one config check reports: past this many, fixing some first is quicker.
pub const MAX_CONFIG_ISSUES: usize = 64;

/// Parse and validate config text.
///
/// A key of the wrong type or an unknown key does not hide the rest: it is reported, taken out
/// of the text (blanked, so every other key keeps its line), and the text read again, up to
/// [`MAX_CONFIG_ISSUES`]. Once the shape is right, the values are validated, except in the
/// tables a key was taken out of, whose checks would only repeat the same problem. A syntax
/// error or a missing key stops the reading there.
/// Each field filter's floats as the file writes them (TOML reads them as doubles), for
/// filters that compare with the decimal written.
fn float_texts(text: &str, raw: &mut RawConfig) {
    let mut paths = Vec::new();
    for (i, b) in raw.buyers.iter().enumerate() {
        let Some(f) = &b.filters else { continue };
        for (j, p) in f.fields.iter().enumerate() {
            let at = format!("buyers[{i}].filters.fields[{j}].value");
            match &p.value {
                Some(toml::Value::Float(_)) => paths.push(at),
                Some(toml::Value::Array(items)) => paths.extend(
                    items
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_float())
                        .map(|(k, _)| format!("{at}[{k}]")),
                ),
                _ => {}
            }
        }
    }
    if paths.is_empty() {
        return;
    }
    let mut texts = locate::value_texts(text, &paths).into_iter();
    for b in raw.buyers.iter_mut() {
        let Some(f) = &mut b.filters else { continue };
        for p in f.fields.iter_mut() {
            p.float_texts = match &p.value {
                Some(toml::Value::Float(_)) => vec![texts.next().flatten()],
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        if v.is_float() {
                            texts.next().flatten()
                        } else {
                            None
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
        }
    }
}

pub fn parse(text: &str) -> Result<Snapshot, ConfigError> {
    let mut shape: Vec<Issue> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    let mut current = std::borrow::Cow::Borrowed(text);
    // The reading stopped at the limit: more problems may lie after the last one read.
    let mut cut_short = false;
    let raw = loop {
        match toml::from_str::<RawConfig>(&current) {
            Ok(raw) => break Some(raw),
            Err(e) => {
                let mut issue = parse_issue(&current, &e);
                let missing = e.message().starts_with("missing field");
                let again = taken.contains(&issue.key);
                if missing && again {
                    // The key taken out for its type is the one now missing: said already.
                    break None;
                }
                if again {
                    // The value put in for one of the wrong type is refused in turn (an empty
                    // list where a key wants one item at least): said already; the key is
                    // taken out instead.
                    match locate::blank_key(&current, &issue.key) {
                        Some(next) => {
                            current = std::borrow::Cow::Owned(next);
                            continue;
                        }
                        None => break None,
                    }
                }
                if !taken.is_empty() {
                    issue.line = locate::line_of_key(text, &issue.key).or(issue.line);
                }
                let key = issue.key.clone();
                shape.push(issue);
                if missing || key.is_empty() {
                    break None;
                }
                if shape.len() >= MAX_CONFIG_ISSUES {
                    cut_short = true;
                    break None;
                }
                // A value of the wrong type is replaced by one of the type expected (so that a
                // required key is not then missing), anything else taken out. Nothing after a
                // syntax error can be read: both answer only for text that parses.
                let next = placeholder(e.message())
                    .and_then(|with| locate::replace_value(&current, &key, with))
                    .or_else(|| locate::blank_key(&current, &key));
                let Some(next) = next else {
                    break None;
                };
                taken.push(key);
                current = std::borrow::Cow::Owned(next);
            }
        }
    };
    let raw = raw.map(|mut raw| {
        float_texts(&current, &mut raw);
        raw
    });
    let Some(raw) = raw else {
        return Err(if shape.len() == 1 {
            ConfigError::Parse(shape.remove(0))
        } else {
            if cut_short {
                shape.push(Issue {
                    key: String::new(),
                    line: None,
                    message: format!(
                        "the reading stopped at {MAX_CONFIG_ISSUES} problems, and there may be \
                         more: fix these first"
                    ),
                });
            }
            ConfigError::Invalid(in_line_order(shape))
        });
    };
    let mut v = Validator {
        text,
        issues: Vec::new(),
        notes: Vec::new(),
        unread: taken.clone(),
    };
    let mut snap = v.build(&raw);
    snap.config_notes = std::mem::take(&mut v.notes);
    // The table a key was taken out of (the key itself, at the top level).
    let within = |issue: &Issue, key: &String| {
        let scope = key.rsplit_once('.').map_or(key.as_str(), |(t, _)| t);
        issue.key == scope
            || issue.key.starts_with(&format!("{scope}."))
            || issue.key.starts_with(&format!("{scope}["))
    };
    let semantic: Vec<Issue> = v
        .issues
        .into_iter()
        .filter(|i| !taken.iter().any(|k| within(i, k)))
        .collect();
    if semantic.is_empty() && shape.len() == 1 {
        return Err(ConfigError::Parse(shape.remove(0)));
    }
    shape.extend(semantic);
    if shape.is_empty() {
        return Ok(snap);
    }
    let mut shape = in_line_order(shape);
    if shape.len() > MAX_CONFIG_ISSUES {
        let more = shape.len() - MAX_CONFIG_ISSUES;
        shape.truncate(MAX_CONFIG_ISSUES);
        shape.push(Issue {
            key: String::new(),
            line: None,
            message: format!(
                "{more} more problem(s) after these, not listed (at most {MAX_CONFIG_ISSUES} \
                 are): fix these first"
            ),
        });
    }
    Err(ConfigError::Invalid(shape))
}

/// Problems as the file has them, top to bottom; those with no line (a missing top-level
/// key, a count of the rest) last. Problems of one line keep the order they were found in.
fn in_line_order(mut issues: Vec<Issue>) -> Vec<Issue> {
    issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
    issues
}

/// A TOML value of the type a serde "invalid type" message expects, when it names a plain one.
fn placeholder(message: &str) -> Option<&'static str> {
    if !message.starts_with("invalid type") {
        return None;
    }
    let expected = message.rsplit_once("expected ")?.1.trim();
    Some(match expected {
        "a string" | "a borrowed string" | "string" => "\"\"",
        "a boolean" | "bool" => "false",
        "a sequence" => "[]",
        "f32" | "f64" | "a float" => "0.0",
        e if e.starts_with('u') || e.starts_with('i') => "0",
        _ => return None,
    })
}

fn parse_issue(text: &str, e: &toml::de::Error) -> Issue {
    let offset = e.span().map(|s| s.start);
    let line = offset.map(|o| locate::line_of_offset(text, o));
    // A syntax error: the document cannot be read at all, so the key comes from the text of
    // the error's line, when it names one.
    if toml_edit::ImDocument::parse(text).is_err() {
        return Issue {
            key: offset
                .and_then(|o| {
                    locate::syntax_key(text, o, e.message().contains("expected `.`, `=`"))
                })
                .unwrap_or_default(),
            line,
            message: plain_types(&one_line(e.message())),
        };
    }
    // A shape error: serde's span is the unknown key, the wrong value, or the table that
    // misses a key; a missing key is named under its table.
    let message = plain_types(&one_line(e.message()));
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next());
    if let Some(missing) = missing {
        // Missing from the top level (`server`): the span is the root table's, which is empty
        // at the start of a file without top-level keys and so would name the first table
        // there. The key is missing from the whole file: no line shows it.
        if locate::is_root_span(text, e.span()) {
            return Issue {
                key: missing.to_string(),
                line: None,
                message,
            };
        }
    }
    let mut key = offset
        .and_then(|o| locate::key_at_offset(text, o))
        .unwrap_or_default();
    if let Some(missing) = missing {
        key = if key.is_empty() {
            missing.to_string()
        } else {
            format!("{}.{}", key, missing)
        };
    }
    Issue { key, line, message }
}

/// The parser's message with the value it expected in words instead of a Rust type name:
/// "invalid type: string \"x\", expected usize" reads "..., expected a whole number, 0 or more".
fn plain_types(message: &str) -> String {
    let Some((head, expected)) = message.rsplit_once("expected ") else {
        return message.to_string();
    };
    let words = match expected.trim() {
        // Not the type's own range: each key has a narrower one, said once the value is a
        // whole number (`max_sales` 1 to 32), and the type's would name values it refuses.
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a borrowed string" | "string" => "a string",
        "bool" => "true or false",
        "char" => "a single character",
        _ => return message.to_string(),
    };
    format!("{head}expected {words}")
}

/// The parser's message on one line, so that `gavel check` prints one line per problem: a
/// syntax error's "invalid table header" and "expected ..." lines become
/// "invalid table header: expected ...".
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = lines.next().unwrap_or("invalid TOML").to_string();
    for (n, l) in lines.enumerate() {
        out.push_str(if n == 0 { ": " } else { "; " });
        out.push_str(l);
    }
    out
}

struct Validator<'a> {
    text: &'a str,
    issues: Vec<Issue>,
    /// Warnings only the file's own values show (a value given that nothing uses).
    notes: Vec<String>,
    /// Keys whose value was of the wrong shape, read as a placeholder so that the rest can be
    /// checked: what other tables are checked against them waits until they are fixed.
    unread: Vec<String>,
}

impl Validator<'_> {
    /// A campaign's `id` was of the wrong shape: which ids there are is not known until it is
    /// fixed, so no reference to one is called unknown.
    fn campaign_id_unread(&self) -> bool {
        self.unread
            .iter()
            .any(|k| k.starts_with("campaigns[") && k.ends_with("].id"))
    }

    /// `key`, or a part of it (a list's item), was of the wrong shape.
    fn is_unread(&self, key: &str) -> bool {
        self.unread.iter().any(|k| {
            k.strip_prefix(key).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('[') || rest.starts_with('.')
            })
        })
    }

    fn err(&mut self, key: String, message: impl Into<String>) {
        let line = locate::line_of_key(self.text, &key);
        self.issues.push(Issue {
            key,
            line,
            message: message.into(),
        });
    }

    fn socket_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(a),
            _ => {
                self.err(key.to_string(), format!("not a host:port address: {:?}", s));
                None
            }
        }
    }

    fn timeout(&mut self, key: String, ms: u64) -> Duration {
        if ms == 0 || ms > MAX_TIMEOUT_MS {
            self.err(
                key,
                format!("must be between 1 and {} ms, got {}", MAX_TIMEOUT_MS, ms),
            );
        }
        Duration::from_millis(ms)
    }

    fn cents(&mut self, key: String, dollars: f64) -> Cents {
        match dollars_f64_to_cents(dollars) {
            Some(c) if c >= 0 => c,
            _ => {
                let max = crate::money::MAX_CENTS / 100;
                let why = if dollars.is_finite() && dollars > max as f64 {
                    format!("must be at most {max} dollars, got {dollars}")
                } else {
                    format!(
                        "must be a non-negative amount in dollars with at most two decimals (whole cents), got {dollars}"
                    )
                };
                self.err(key, why);
                0
            }
        }
    }

    fn build(&mut self, raw: &RawConfig) -> Snapshot {
        let fallback_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let s = &raw.server;
        let listen = self
            .socket_addr("server.listen", &s.listen)
            .unwrap_or(fallback_addr);
        let admin_listen = s
            .admin_listen
            .as_ref()
            .and_then(|a| self.socket_addr("server.admin_listen", a));
        if let Some(admin) = admin_listen {
            // Both listeners on one port: the second cannot bind (port 0 picks two ports).
            let same_port = admin.port() != 0 && admin.port() == listen.port();
            let overlap = admin.ip() == listen.ip()
                || admin.ip().is_unspecified()
                || listen.ip().is_unspecified();
            if same_port && overlap {
                self.err(
                    "server.admin_listen".into(),
                    format!(
                        "{admin} takes the seller API's port ({listen}): the operator API needs its own"
                    ),
                );
            }
        }
        if s.workers > MAX_WORKERS {
            self.err(
                "server.workers".into(),
                format!("at most {} workers", MAX_WORKERS),
            );
        }
        let workers = if s.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            s.workers.min(MAX_WORKERS)
        };
        if s.max_body_bytes < 256 || s.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            self.err(
                "server.max_body_bytes".into(),
                format!("must be between 256 and {}", MAX_BODY_BYTES_LIMIT),
            );
        }
        if s.max_in_flight == 0 || s.max_in_flight > 1_000_000 {
            self.err(
                "server.max_in_flight".into(),
                "must be between 1 and 1000000",
            );
        }
        if !(MIN_DEDUPE_ENTRIES..=MAX_DEDUPE_ENTRIES).contains(&s.dedupe_entries) {
            self.err(
                "server.dedupe_entries".into(),
                format!("must be between {MIN_DEDUPE_ENTRIES} and {MAX_DEDUPE_ENTRIES}"),
            );
        }
        if s.max_connections == 0 || s.max_connections > MAX_SELLER_CONNECTIONS {
            self.err(
                "server.max_connections".into(),
                format!("must be between 1 and {MAX_SELLER_CONNECTIONS}"),
            );
        }
        let head_timeout = self.timeout("server.head_timeout_ms".into(), s.head_timeout_ms);
        if s.idle_timeout_ms == 0 {
            self.err("server.idle_timeout_ms".into(), "must be at least 1 ms");
        }
        let idle_timeout = Duration::from_millis(s.idle_timeout_ms.max(1));
        if s.engine_margin_ms > 1000 {
            self.err("server.engine_margin_ms".into(), "at most 1000 ms");
        }
        if s.busy_poll_us > MAX_BUSY_POLL_US {
            self.err(
                "server.busy_poll_us".into(),
                format!("at most {MAX_BUSY_POLL_US} us"),
            );
        }
        let tls = s
            .tls
            .as_ref()
            .map(|t| (PathBuf::from(&t.cert_file), PathBuf::from(&t.key_file)));
        // Loaded now, so that `gavel check` and a start both refuse a missing or bad file.
        let seller_tls = match &tls {
            Some((cert, key)) => match crate::net::tls::server_config(cert, key) {
                Ok(c) => Some(c),
                Err(errors) => {
                    for e in errors {
                        match e {
                            crate::net::tls::ServerTlsError::CertFile(m) => {
                                self.err("server.tls.cert_file".into(), m)
                            }
                            crate::net::tls::ServerTlsError::KeyFile(m) => {
                                self.err("server.tls.key_file".into(), m)
                            }
                        }
                    }
                    None
                }
            },
            None => None,
        };
        let server = Server {
            listen,
            admin_listen,
            workers,
            max_body_bytes: s.max_body_bytes,
            max_in_flight: s.max_in_flight,
            max_connections: s.max_connections,
            dedupe_entries: s.dedupe_entries,
            idle_timeout,
            head_timeout,
            engine_margin: Duration::from_millis(s.engine_margin_ms),
            busy_poll: Duration::from_micros(s.busy_poll_us),
            tls,
        };

        let j = &raw.journal;
        let sync = match j.sync.as_str() {
            "os" => SyncPolicy::Os,
            "interval" => SyncPolicy::Interval,
            "always" => SyncPolicy::Always,
            other => {
                self.err(
                    "journal.sync".into(),
                    format!(
                        "must be \"os\", \"interval\" or \"always\", got {:?}",
                        other
                    ),
                );
                SyncPolicy::Interval
            }
        };
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&j.segment_bytes) {
            self.err(
                "journal.segment_bytes".into(),
                format!(
                    "must be between {} and {}",
                    MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES
                ),
            );
        }
        if j.retain_segments == 0 {
            self.err("journal.retain_segments".into(), "must be at least 1");
        }
        if j.dir.trim().is_empty() {
            self.err("journal.dir".into(), "must name a directory");
        } else if let Some(why) = journal_dir_problem(std::path::Path::new(&j.dir)) {
            self.err("journal.dir".into(), why);
        }
        if sync == SyncPolicy::Interval && (j.sync_interval_ms == 0 || j.sync_interval_ms > 60_000)
        {
            self.err(
                "journal.sync_interval_ms".into(),
                "must be between 1 and 60000",
            );
        }
        let journal = JournalSettings {
            dir: PathBuf::from(&j.dir),
            segment_bytes: j.segment_bytes,
            sync,
            sync_interval: Duration::from_millis(j.sync_interval_ms.max(1)),
            retain_segments: j.retain_segments.max(1),
        };

        // Campaigns first: sellers and buyers refer to them.
        let mut campaign_by_id = HashMap::new();
        let mut campaigns = Vec::with_capacity(raw.campaigns.len());
        for (i, c) in raw.campaigns.iter().enumerate() {
            let k = |f: &str| format!("campaigns[{}].{}", i, f);
            self.check_id(k("id"), &c.id);
            if campaign_by_id.insert(c.id.clone(), i).is_some() {
                self.err(k("id"), format!("duplicate campaign id {:?}", c.id));
            }
            let method = Method::parse(&c.method).unwrap_or_else(|| {
                self.err(
                    k("method"),
                    format!(
                        "must be \"ping_post\", \"waterfall\", \"round_robin\" or \"weighted\", got {:?}",
                        c.method
                    ),
                );
                Method::PingPost
            });
            let sale = match c.sale.as_str() {
                "exclusive" => {
                    if c.max_sales > 1 {
                        self.notes.push(format!(
                            "campaign {:?}: max_sales = {} is not used by sale = \"exclusive\" \
                             (each lead sells once); for up to {} buyers set sale = \"shared\"",
                            c.id, c.max_sales, c.max_sales
                        ));
                    }
                    SaleKind::Exclusive
                }
                "shared" => {
                    if c.max_sales == 1 {
                        self.notes.push(format!(
                            "campaign {:?}: sale = \"shared\" with max_sales = 1 (the default) \
                             sells each lead to one buyer, as \"exclusive\" does; set max_sales",
                            c.id
                        ));
                    }
                    if c.max_sales == 0 || c.max_sales > MAX_SHARED_SALES {
                        self.err(
                            k("max_sales"),
                            format!("must be between 1 and {}", MAX_SHARED_SALES),
                        );
                    }
                    SaleKind::Shared(c.max_sales.clamp(1, MAX_SHARED_SALES))
                }
                other => {
                    self.err(
                        k("sale"),
                        format!("must be \"exclusive\" or \"shared\", got {:?}", other),
                    );
                    SaleKind::Exclusive
                }
            };
            let fallback = match c.fallback.as_str() {
                "none" => None,
                other => match Method::parse(other) {
                    Some(Method::PingPost) | None => {
                        self.err(
                            k("fallback"),
                            format!(
                                "must be \"none\", \"waterfall\", \"round_robin\" or \"weighted\", got {:?}",
                                other
                            ),
                        );
                        None
                    }
                    Some(m) => Some(m),
                },
            };
            for (fi, f) in c.ping_fields.iter().enumerate() {
                if is_personal_field(f) {
                    self.err(
                        format!("campaigns[{}].ping_fields[{}]", i, fi),
                        format!("{:?} is personal and may never be sent in a ping", f),
                    );
                }
            }
            let ping_timeout = self.timeout(k("ping_timeout_ms"), c.ping_timeout_ms);
            if raw.server.engine_margin_ms >= c.ping_timeout_ms && c.ping_timeout_ms > 0 {
                self.err(
                    k("ping_timeout_ms"),
                    format!(
                        "{} ms leaves buyers no time: server.engine_margin_ms ({} ms) is kept \
                         back from it, so every ping would say timeout_ms 1",
                        c.ping_timeout_ms, raw.server.engine_margin_ms
                    ),
                );
            }
            let post_timeout = self.timeout(k("post_timeout_ms"), c.post_timeout_ms);
            let answer_timeout = c
                .answer_timeout_ms
                .map(|ms| self.timeout(k("answer_timeout_ms"), ms));
            let reserve_cents = self.cents(k("reserve_price"), c.reserve_price);
            if let Some(h) = c.consent_max_age_hours {
                if h == 0 || h > MAX_CONSENT_AGE_HOURS {
                    self.err(
                        k("consent_max_age_hours"),
                        format!("must be between 1 and {MAX_CONSENT_AGE_HOURS} hours"),
                    );
                }
            }
            if c.hold_ms == 0 || c.hold_ms > MAX_HOLD_MS {
                self.err(
                    k("hold_ms"),
                    format!("must be between 1 and {} ms", MAX_HOLD_MS),
                );
            }
            campaigns.push(Campaign {
                id: c.id.clone(),
                vertical: c.vertical.clone(),
                method,
                sale,
                ping_timeout,
                post_timeout,
                answer_timeout,
                reserve_cents,
                // Refused above; left out besides, so that no ping can carry one whatever
                // builds pings from this campaign.
                ping_fields: c
                    .ping_fields
                    .iter()
                    .filter(|f| !is_personal_field(f))
                    .cloned()
                    .collect(),
                required_fields: c.required_fields.clone(),
                require_consent: c.require_consent,
                disclosed_buyers_only: c.disclosed_buyers_only,
                consent_max_age: c
                    .consent_max_age_hours
                    .map(|h| chrono::Duration::hours(i64::from(h.min(MAX_CONSENT_AGE_HOURS)))),
                dedupe_days: c.dedupe_days,
                fallback,
                hold: Duration::from_millis(c.hold_ms.clamp(1, MAX_HOLD_MS)),
                suppression_file: c.suppression_file.as_ref().map(PathBuf::from),
                suppression: c.suppression_file.as_ref().and_then(|f| {
                    match crate::compliance::Suppression::load(std::path::Path::new(f)) {
                        Ok(s) => Some(Arc::new(s)),
                        Err(e) => {
                            self.err(k("suppression_file"), e.to_string());
                            None
                        }
                    }
                }),
                buyers: Vec::new(),
            });
        }

        let mut seller_by_key = HashMap::new();
        let mut seller_ids = HashMap::new();
        let mut sellers = Vec::with_capacity(raw.sellers.len());
        for (i, s) in raw.sellers.iter().enumerate() {
            let k = |f: &str| format!("sellers[{}].{}", i, f);
            self.check_id(k("id"), &s.id);
            if seller_ids.insert(s.id.clone(), i).is_some() {
                self.err(k("id"), format!("duplicate seller id {:?}", s.id));
            }
            if s.api_key.len() < 8 {
                self.err(k("api_key"), "must be at least 8 characters");
            }
            if seller_by_key.insert(s.api_key.clone(), i).is_some() {
                self.err(k("api_key"), "another seller has the same api_key");
            }
            let mut cs = Vec::new();
            for (ci, c) in s.campaigns.iter().enumerate() {
                match campaign_by_id.get(c) {
                    Some(&idx) => cs.push(idx),
                    None if self.campaign_id_unread() => {}
                    None => self.err(
                        format!("sellers[{}].campaigns[{}]", i, ci),
                        format!("unknown campaign {:?}", c),
                    ),
                }
            }
            let payout = match (s.payout_share, s.payout_fixed) {
                (Some(_), Some(_)) => {
                    self.err(
                        k("payout_fixed"),
                        "set payout_share or payout_fixed, not both",
                    );
                    Payout::ShareBp(10_000)
                }
                (Some(share), None) => {
                    let bp = share * 10_000.0;
                    if !(0.0..=1.0).contains(&share) {
                        self.err(
                            k("payout_share"),
                            format!("must be between 0.0 and 1.0, got {}", share),
                        );
                    } else if (bp - bp.round()).abs() > 1e-6 {
                        // Held in basis points: a finer share would be rounded, paying the
                        // seller other than the config says.
                        self.err(
                            k("payout_share"),
                            format!(
                                "must have at most 4 decimals (a whole basis point), got {}",
                                share
                            ),
                        );
                    }
                    Payout::ShareBp((share.clamp(0.0, 1.0) * 10_000.0).round() as u32)
                }
                (None, Some(fixed)) => Payout::Fixed(self.cents(k("payout_fixed"), fixed)),
                // No rule written: the seller earns the whole price (the exchange takes no margin).
                (None, None) => Payout::ShareBp(10_000),
            };
            if s.max_leads_per_second == Some(0) {
                self.err(
                    k("max_leads_per_second"),
                    "must be at least 1 (leave it out for no limit)",
                );
            }
            sellers.push(Seller {
                id: s.id.clone(),
                api_key: s.api_key.clone(),
                campaigns: cs,
                payout,
                max_leads_per_second: s.max_leads_per_second,
            });
        }

        let mut buyer_by_id = HashMap::new();
        let mut buyers = Vec::with_capacity(raw.buyers.len());
        for (i, b) in raw.buyers.iter().enumerate() {
            let k = |f: &str| format!("buyers[{}].{}", i, f);
            self.check_id(k("id"), &b.id);
            if buyer_by_id.insert(b.id.clone(), i).is_some() {
                self.err(k("id"), format!("duplicate buyer id {:?}", b.id));
            }
            let mut cs = Vec::new();
            for (ci, c) in b.campaigns.iter().enumerate() {
                match campaign_by_id.get(c) {
                    Some(&idx) => {
                        cs.push(idx);
                        campaigns[idx].buyers.push(i);
                    }
                    None if self.campaign_id_unread() => {}
                    None => self.err(
                        format!("buyers[{}].campaigns[{}]", i, ci),
                        format!("unknown campaign {:?}", c),
                    ),
                }
            }
            let ping = b.ping_url.as_ref().and_then(|u| match Endpoint::parse(u) {
                Ok(e) => Some(e),
                Err(m) => {
                    self.err(k("ping_url"), m);
                    None
                }
            });
            let post = b.post_url.as_ref().and_then(|u| match Endpoint::parse(u) {
                Ok(e) => Some(e),
                Err(m) => {
                    self.err(k("post_url"), m);
                    None
                }
            });
            if b.post_url.is_none() {
                self.err(k("post_url"), "every buyer needs a post_url");
            }
            let price_cents = b.price.map(|p| self.cents(k("price"), p));
            if price_cents == Some(0) && b.price.is_some_and(|p| p == 0.0) {
                // A fixed-price post at $0 is no sale (as a bid of 0 is no bid): such a
                // buyer would never be posted to.
                self.err(
                    k("price"),
                    "must be at least 0.01: a lead is not sold for $0 (leave `price` out for a buyer that only bids)",
                );
            }
            if b.ping_url.is_none() && price_cents.is_none() {
                self.err(
                    k("ping_url"),
                    "a buyer needs a ping_url (to bid) or a fixed price (for fixed-price distribution)",
                );
            }
            let mut headers = Vec::new();
            for (name, value) in &b.headers {
                let bad_name = name.is_empty()
                    || !name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
                if bad_name {
                    self.err(
                        format!("buyers[{}].headers", i),
                        format!("invalid header name {:?}", name),
                    );
                }
                if let Some(why) = written_by_the_exchange(name) {
                    self.err(
                        format!("buyers[{}].headers.{}", i, name),
                        format!("the exchange writes {:?} itself, {}", name, why),
                    );
                }
                if value.bytes().any(|c| c == b'\r' || c == b'\n') {
                    self.err(
                        format!("buyers[{}].headers", i),
                        format!("header {:?} has a line break in its value", name),
                    );
                } else if value.bytes().any(|c| c < b' ' && c != b'\t' || c == 0x7f) {
                    self.err(
                        format!("buyers[{}].headers", i),
                        format!("header {:?} has a control character in its value", name),
                    );
                } else if value.trim_matches([' ', '\t']).len() != value.len() {
                    self.err(
                        format!("buyers[{}].headers", i),
                        format!(
                            "header {:?} starts or ends with a space, which the buyer's HTTP \
                             parser drops",
                            name
                        ),
                    );
                }
                if headers
                    .iter()
                    .any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(name))
                {
                    self.err(
                        format!("buyers[{}].headers", i),
                        format!(
                            "header {:?} is given twice (header names are not case-sensitive)",
                            name
                        ),
                    );
                }
                headers.push((name.clone(), value.clone()));
            }
            let head_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
            if headers.len() > MAX_BUYER_HEADERS || head_bytes > MAX_BUYER_HEADER_BYTES {
                self.err(
                    format!("buyers[{}].headers", i),
                    format!(
                        "at most {MAX_BUYER_HEADERS} headers of {MAX_BUYER_HEADER_BYTES} bytes in \
                         all (as sellers' requests are held to 100 and 16 KiB), got {} of {}",
                        headers.len(),
                        head_bytes
                    ),
                );
            }
            if b.max_connections == 0 || b.max_connections > MAX_BUYER_CONNECTIONS {
                self.err(
                    k("max_connections"),
                    format!("must be between 1 and {}", MAX_BUYER_CONNECTIONS),
                );
            }
            if b.idle_timeout_ms < MIN_BUYER_IDLE_TIMEOUT_MS {
                self.err(
                    k("idle_timeout_ms"),
                    format!("must be at least {MIN_BUYER_IDLE_TIMEOUT_MS} ms"),
                );
            }
            if b.timezone.as_deref().is_some_and(|t| t.trim().is_empty()) {
                self.err(
                    k("timezone"),
                    "is empty: name an IANA zone (America/Chicago), or leave it out for UTC",
                );
            }
            // An unknown zone is reported by the rules below (under `timezone`).
            let timezone = b
                .timezone
                .as_deref()
                .and_then(|name| name.parse::<chrono_tz::Tz>().ok())
                .unwrap_or(chrono_tz::UTC);
            let rules = match BuyerRules::from_config(b) {
                Ok(r) => r,
                Err(e) => {
                    let key = format!("buyers[{}].{}", i, e.key());
                    let text = e.to_string();
                    let message = text
                        .strip_prefix(&format!("{}: ", e.key()))
                        .unwrap_or(&text)
                        .to_string();
                    self.err(key, message);
                    BuyerRules::default()
                }
            };
            let caps = match CapLimits::from_config(b.caps.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    // The key is named once, by the issue's own key.
                    let text = e.to_string();
                    let message = text
                        .strip_prefix(&format!("{}: ", e.key()))
                        .unwrap_or(&text)
                        .to_string();
                    self.err(format!("buyers[{}].caps.{}", i, e.key()), message);
                    CapLimits::UNCAPPED
                }
            };
            let mut codec = None;
            if let Some(a) = &b.adapter {
                let issues_before = self.issues.len();
                self.check_adapter(i, a, &cs, &campaigns);
                let bid_path_told = self.issues[issues_before..]
                    .iter()
                    .any(|x| x.key == format!("buyers[{}].adapter.bid_path", i));
                if a.response == "xml"
                    && b.ping_url.is_some()
                    && a.bid_path.is_none()
                    && !bid_path_told
                {
                    self.err(
                        format!("buyers[{}].adapter.bid_path", i),
                        "an XML answer to a ping is read at a bid_path: none is set",
                    );
                }
                if a.request == "form" {
                    // A form body is only what its template says: without one the buyer would
                    // get no lead at all.
                    if b.ping_url.is_some() && a.ping_body.is_empty() {
                        self.err(
                            format!("buyers[{}].adapter.ping_body", i),
                            "a form-encoded adapter needs a ping_body for its ping_url",
                        );
                    }
                    if b.post_url.is_some() && a.post_body.is_empty() {
                        self.err(
                            format!("buyers[{}].adapter.post_body", i),
                            "a form-encoded adapter needs a post_body for its post_url (the lead's fields to send)",
                        );
                    }
                }
                match crate::adapter::Adapter::compile(a) {
                    Ok(c) => codec = Some(Arc::new(c)),
                    Err(_) => {
                        // Every problem, each at its own key and line; one the checks above
                        // found is told once.
                        for e in crate::adapter::Adapter::problems(a) {
                            let key = format!("buyers[{}].adapter.{}", i, e.key());
                            if !self.issues[issues_before..].iter().any(|x| x.key == key) {
                                self.err(key, e.message());
                            }
                        }
                    }
                }
            }
            buyers.push(Buyer {
                id: b.id.clone(),
                previous_ids: b.previous_ids.clone(),
                campaigns: cs,
                verticals: b.verticals.clone(),
                ping,
                post,
                headers,
                max_connections: b.max_connections.clamp(1, MAX_BUYER_CONNECTIONS),
                min_idle: b.min_idle.min(b.max_connections),
                idle_timeout: Duration::from_millis(
                    b.idle_timeout_ms.max(MIN_BUYER_IDLE_TIMEOUT_MS),
                ),
                timezone,
                rules,
                caps,
                price_cents,
                priority: b.priority.unwrap_or(u32::MAX),
                weight: b.weight.unwrap_or(1),
                adapter: b.adapter.clone(),
                codec,
                paused: b.paused,
            });
        }
        // A previous id names one buyer's past: not a buyer's id now, nor another's past.
        let mut buyer_by_previous_id = HashMap::new();
        for (i, b) in raw.buyers.iter().enumerate() {
            for (p, id) in b.previous_ids.iter().enumerate() {
                let key = format!("buyers[{}].previous_ids[{}]", i, p);
                self.check_id(key.clone(), id);
                if buyer_by_id.contains_key(id) {
                    self.err(key, format!("{:?} is a buyer's id", id));
                } else if let Some(other) = buyer_by_previous_id.insert(id.clone(), i) {
                    self.err(
                        key,
                        format!("{:?} is already a previous id of buyers[{}]", id, other),
                    );
                }
            }
        }

        let mut tls_ca_files = Vec::new();
        for (i, f) in raw.tls.ca_files.iter().enumerate() {
            let path = PathBuf::from(f);
            if let Err(m) = crate::net::tls::client_config(std::slice::from_ref(&path)) {
                self.err(format!("tls.ca_files[{}]", i), m);
            }
            tls_ca_files.push(path);
        }
        if let Some(t) = &raw.admin.token {
            if t.len() < 8 {
                self.err("admin.token".into(), "must be at least 8 characters");
            }
        }

        let campaign_rules: Vec<CampaignRules> = raw
            .campaigns
            .iter()
            .map(|c| CampaignRules {
                min_price_cents: campaigns
                    .iter()
                    .find(|x| x.id == c.id)
                    .map_or(1, |x| x.reserve_cents.max(1)),
                ..CampaignRules::from_config(c)
            })
            .collect();
        let buyer_rules: Vec<BuyerRules> = buyers.iter().map(|b| b.rules.clone()).collect();
        let matcher = Arc::new(Matcher::new(&campaign_rules, &buyer_rules));
        Snapshot {
            path: None,
            matcher,
            server,
            admin_token: raw.admin.token.clone(),
            journal,
            tls_ca_files,
            config_notes: Vec::new(),
            seller_cert_validity: seller_tls.as_ref().and_then(|t| t.validity),
            seller_cert_fingerprint: seller_tls.as_ref().map(|t| t.fingerprint),
            seller_tls: seller_tls.map(|t| t.config),
            sellers,
            campaigns,
            buyers,
            seller_by_key,
            campaign_by_id,
            buyer_by_id,
            buyer_by_previous_id,
            raw: Arc::new(raw.clone()),
        }
    }

    /// An id is journaled with every record and printed on one line by `journal show`: 1 to
    /// `MAX_ID_BYTES` bytes, no control characters.
    fn check_id(&mut self, key: String, id: &str) {
        if id.is_empty() {
            self.err(key, "must not be empty");
        } else if id.len() > MAX_ID_BYTES {
            self.err(key, format!("must be at most {} bytes", MAX_ID_BYTES));
        } else if id.chars().any(char::is_control) {
            self.err(key, format!("{:?} has a control character", id));
        }
    }

    fn check_adapter(&mut self, i: usize, a: &AdapterConfig, cs: &[usize], campaigns: &[Campaign]) {
        let k = |f: &str| format!("buyers[{}].adapter.{}", i, f);
        if a.request != "json" && a.request != "form" {
            self.err(
                k("request"),
                format!("must be \"json\" or \"form\", got {:?}", a.request),
            );
        }
        if a.response != "json" && a.response != "xml" {
            self.err(
                k("response"),
                format!("must be \"json\" or \"xml\", got {:?}", a.response),
            );
        }
        for (body_key, body, is_ping) in [
            ("ping_body", &a.ping_body, true),
            ("post_body", &a.post_body, false),
        ] {
            for (name, template) in body {
                if let Some(why) = unbalanced_brace(template) {
                    self.err(
                        format!("buyers[{}].adapter.{}.{}", i, body_key, name),
                        format!("{why}: a placeholder is written {{lead.FIELD}}"),
                    );
                    continue;
                }
                for ph in placeholders(template) {
                    let ok_fixed =
                        matches!(ph, "ping_id" | "bid_id" | "price" | "campaign" | "test");
                    let lead_field = ph.strip_prefix("lead.");
                    let consent_field = ph.strip_prefix("consent.");
                    if is_ping {
                        if let Some(f) = lead_field {
                            // `vehicle.year` reads into the ping field `vehicle`.
                            let head = f.split_once('.').map_or(f, |(h, _)| h);
                            for &c in cs {
                                // A campaign's `ping_fields` of the wrong shape is its own
                                // error: not this buyer's.
                                if self.is_unread(&format!("campaigns[{c}].ping_fields")) {
                                    continue;
                                }
                                if !campaigns[c].ping_fields.iter().any(|p| p == f || p == head) {
                                    self.err(
                                        format!("buyers[{}].adapter.{}.{}", i, body_key, name),
                                        format!(
                                            "{{lead.{}}} is not in campaign {:?}'s ping_fields: a ping may carry only those",
                                            f, campaigns[c].id
                                        ),
                                    );
                                }
                            }
                            continue;
                        }
                        if consent_field.is_some() || ph == "bid_id" || ph == "price" {
                            self.err(
                                format!("buyers[{}].adapter.{}.{}", i, body_key, name),
                                format!("{{{}}} cannot be used in a ping", ph),
                            );
                            continue;
                        }
                    }
                    if !(ok_fixed || lead_field.is_some() || consent_field.is_some()) {
                        self.err(
                            format!("buyers[{}].adapter.{}.{}", i, body_key, name),
                            format!("unknown placeholder {{{}}}", ph),
                        );
                    }
                }
            }
        }
        if a.bid_path.is_none() && !a.ping_body.is_empty() {
            self.err(
                k("bid_path"),
                "an adapter with a ping_body needs a bid_path",
            );
        }
        match a.accepted_values.as_deref() {
            Some([]) => self.err(
                k("accepted_values"),
                "an empty list: leave the key out to take the native word, \"accepted\", for \
                 a sale",
            ),
            Some(values) if values.iter().any(|v| v.trim().is_empty()) => self.err(
                k("accepted_values"),
                "a blank value would take an answer with no status at accepted_path for a sale",
            ),
            _ => {}
        }
        if a.accepted_values.is_some() && a.accepted_path.is_none() {
            self.err(
                k("accepted_values"),
                "needs an accepted_path to read the post answer's status from (without one any \
                 2xx answer is a sale, or a JSON one is read as {\"status\": \"accepted\"})",
            );
        }
    }
}

/// Why a template's braces do not pair up into placeholders, if they do not.
fn unbalanced_brace(template: &str) -> Option<&'static str> {
    let mut open = false;
    for c in template.chars() {
        match c {
            '{' if open => return Some("a '{' inside a placeholder"),
            '{' => open = true,
            '}' if !open => return Some("a '}' with no '{' before it"),
            '}' => open = false,
            _ => {}
        }
    }
    if open {
        Some("a '{' with no '}' after it")
    } else {
        None
    }
}

/// `{name}` placeholders of a template, in order.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

#[cfg(test)]
mod tests;
