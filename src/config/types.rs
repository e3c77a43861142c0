//! The TOML shape of the exchange's configuration, as written by operators.
//!
//! These are the raw, deserialised types: amounts are still dollars as written,
//! durations carry their unit in the key name. `super::Snapshot` is the validated,
//! immutable form the engine runs on (amounts in cents, indexes built).

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: ServerConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(default)]
    pub sellers: Vec<SellerConfig>,
    #[serde(default)]
    pub campaigns: Vec<CampaignConfig>,
    #[serde(default)]
    pub buyers: Vec<BuyerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Event-loop threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Seller connections per worker before new ones are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A seller connection with no request in progress is closed after this long.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Phones and emails the dedupe index holds (two a lead with both), across campaigns.
    #[serde(default = "default_dedupe_entries")]
    pub dedupe_entries: usize,
    /// A client must deliver a whole request head within this long.
    #[serde(default = "default_head_timeout_ms")]
    pub head_timeout_ms: u64,
    /// Time the engine keeps for itself out of the ping window (told to buyers as less `timeout_ms`).
    #[serde(default = "default_engine_margin_ms")]
    pub engine_margin_ms: u64,
    /// After a loop turn with work, a worker polls its sockets without sleeping for this long
    /// before it blocks; 0 = always block. For a host whose cores belong to the exchange.
    #[serde(default)]
    pub busy_poll_us: u64,
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_files: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    #[serde(default = "default_journal_dir")]
    pub dir: String,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    #[serde(default = "default_sync")]
    pub sync: String,
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    #[serde(default = "default_retain_segments")]
    pub retain_segments: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: default_journal_dir(),
            segment_bytes: default_segment_bytes(),
            sync: default_sync(),
            sync_interval_ms: default_sync_interval_ms(),
            retain_segments: default_retain_segments(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerConfig {
    pub id: String,
    pub api_key: String,
    #[serde(default)]
    pub campaigns: Vec<String>,
    /// Share of the price paid to the seller, 0.0..=1.0.
    #[serde(default)]
    pub payout_share: Option<f64>,
    /// Fixed dollars per sold lead.
    #[serde(default)]
    pub payout_fixed: Option<f64>,
    #[serde(default)]
    pub max_leads_per_second: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    pub id: String,
    pub vertical: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_sale")]
    pub sale: String,
    #[serde(default = "default_max_sales")]
    pub max_sales: u32,
    #[serde(default = "default_ping_timeout_ms")]
    pub ping_timeout_ms: u64,
    #[serde(default = "default_post_timeout_ms")]
    pub post_timeout_ms: u64,
    /// A post after a rejected or failed one (the cascade, the fallback after posts) starts
    /// only if its `post_timeout_ms` ends within this long of the lead's arrival; unset, the
    /// cascade is bounded by its post count alone.
    #[serde(default)]
    pub answer_timeout_ms: Option<u64>,
    #[serde(default)]
    pub reserve_price: f64,
    #[serde(default)]
    pub ping_fields: Vec<String>,
    #[serde(default)]
    pub required_fields: Vec<String>,
    #[serde(default)]
    pub require_consent: bool,
    /// Only buyers named in the consent's `disclosed_buyers` (when it names any) may get the
    /// lead: one-to-one consent.
    #[serde(default)]
    pub disclosed_buyers_only: bool,
    /// Consent older than this many hours (by its `consented_at`) is refused; unset, any age.
    #[serde(default)]
    pub consent_max_age_hours: Option<u32>,
    #[serde(default)]
    pub dedupe_days: u32,
    #[serde(default = "default_fallback")]
    pub fallback: String,
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
    #[serde(default)]
    pub suppression_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerConfig {
    pub id: String,
    /// Ids this buyer had before: the journal's records under them count as its own (caps and
    /// budgets on start and reload, held bids), so a rename does not reset its caps.
    #[serde(default)]
    pub previous_ids: Vec<String>,
    #[serde(default)]
    pub campaigns: Vec<String>,
    #[serde(default, deserialize_with = "non_empty_list")]
    pub verticals: Vec<String>,
    #[serde(default)]
    pub ping_url: Option<String>,
    #[serde(default)]
    pub post_url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_buyer_max_connections")]
    pub max_connections: usize,
    /// Warm connections opened per worker ahead of need.
    #[serde(default = "default_buyer_min_idle")]
    pub min_idle: usize,
    /// Idle pooled connections are closed after this long (before the buyer's own keep-alive timeout).
    #[serde(default = "default_buyer_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub hours: Vec<String>,
    #[serde(default)]
    pub filters: Option<FiltersConfig>,
    #[serde(default)]
    pub caps: Option<CapsConfig>,
    /// Fixed price in dollars, for waterfall / round robin / weighted / fallback buyers.
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub adapter: Option<AdapterConfig>,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersConfig {
    #[serde(default, deserialize_with = "non_empty_list")]
    pub states: Vec<String>,
    #[serde(default, deserialize_with = "non_empty_list")]
    pub zip_prefixes: Vec<String>,
    #[serde(default)]
    pub fields: Vec<FieldPredicateConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPredicateConfig {
    pub field: String,
    pub op: String,
    #[serde(default)]
    pub value: Option<toml::Value>,
    /// The file's text of each float in `value` (the value itself, or each item of a list, in
    /// order; `None` for what is no float): TOML reads a float as a double, and a filter
    /// compares with the decimal written. Filled in after parsing.
    #[serde(skip)]
    pub float_texts: Vec<Option<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {
    #[serde(default)]
    pub hourly: Option<u64>,
    #[serde(default)]
    pub daily: Option<u64>,
    #[serde(default)]
    pub weekly: Option<u64>,
    #[serde(default)]
    pub monthly: Option<u64>,
    /// Dollars per day.
    #[serde(default)]
    pub daily_budget: Option<f64>,
    /// Dollars per week (Monday to Sunday).
    #[serde(default)]
    pub weekly_budget: Option<f64>,
    /// Dollars per calendar month.
    #[serde(default)]
    pub monthly_budget: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    #[serde(default = "default_adapter_kind")]
    pub request: String,
    #[serde(default = "default_adapter_kind")]
    pub response: String,
    #[serde(default)]
    pub ping_body: BTreeMap<String, String>,
    #[serde(default)]
    pub post_body: BTreeMap<String, String>,
    #[serde(default)]
    pub bid_path: Option<String>,
    #[serde(default)]
    pub bid_id_path: Option<String>,
    #[serde(default)]
    pub accepted_path: Option<String>,
    /// `None`: the key is left out (the native word, "accepted"); an empty list is refused.
    #[serde(default)]
    pub accepted_values: Option<Vec<String>>,
    #[serde(default)]
    pub reason_path: Option<String>,
}

fn default_max_body_bytes() -> usize {
    65536
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_dedupe_entries() -> usize {
    1 << 20
}
fn default_max_connections() -> usize {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_head_timeout_ms() -> u64 {
    10_000
}
fn default_engine_margin_ms() -> u64 {
    0
}
fn default_journal_dir() -> String {
    "data/journal".to_string()
}
fn default_segment_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_sync() -> String {
    "interval".to_string()
}
fn default_sync_interval_ms() -> u64 {
    10
}
fn default_retain_segments() -> usize {
    64
}
fn default_method() -> String {
    "ping_post".to_string()
}
fn default_sale() -> String {
    "exclusive".to_string()
}
fn default_max_sales() -> u32 {
    1
}
fn default_ping_timeout_ms() -> u64 {
    800
}
fn default_post_timeout_ms() -> u64 {
    2000
}
fn default_fallback() -> String {
    "none".to_string()
}
fn default_hold_ms() -> u64 {
    30_000
}
fn default_buyer_max_connections() -> usize {
    32
}
fn default_buyer_min_idle() -> usize {
    2
}
fn default_buyer_idle_timeout_ms() -> u64 {
    30_000
}
fn default_adapter_kind() -> String {
    "json".to_string()
}

/// A list that restricts when given (`states`, `zip_prefixes`, `verticals`): left out, there is
/// no restriction; written empty it would read as "nothing" to an operator and as "anything"
/// to the matcher, so it is refused.
fn non_empty_list<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom(
            "an empty list would match every lead: leave the key out for no restriction, \
             or pause the buyer to send it nothing",
        ));
    }
    Ok(v)
}
