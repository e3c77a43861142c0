//! An open-loop load generator for the seller API (`POST /v1/leads`).
//!
//! Leads are due at a fixed rate whatever the exchange does: lead `k` is due at
//! `start + k / rate`. Each lead's latency is measured from that due time, not from when a
//! connection happened to be free to send it, so a stalled exchange shows its stall in the
//! percentiles instead of hiding it by slowing the generator down (coordinated omission).
//! A connection carries one request at a time; when every connection is busy, due leads wait,
//! and the wait counts.
//!
//! One mio thread drives every connection. The poll's own timeout has millisecond resolution,
//! which would release leads in millisecond batches and charge up to a millisecond of pacing
//! to every lead; a small pacer thread therefore wakes the loop at each due time instead (at
//! most every `PACER_RESOLUTION`). `service_us` (write to answer) is reported beside the
//! due-time latency for comparison with the exchange's own numbers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;

use super::wire::{self, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::money::{parse_cents, usd, Cents};

/// Most seller connections one run opens.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Most leads in flight on one connection (HTTP/1.1 pipelining; the exchange answers up to
/// 32 pipelined requests per connection in order).
pub const MAX_PIPELINE: usize = 32;
/// Highest lead rate one run accepts.
pub const MAX_RATE_PER_S: u64 = 1_000_000;
/// Longest run (warmup plus measured duration).
pub const MAX_RUN: Duration = Duration::from_secs(24 * 3600);
/// How long answers are awaited after the last lead was due.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lead may wait for its answer before its connection is given up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the initial connections may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause before a lost connection is opened again; each failed attempt doubles it, up to
/// `RECONNECT_MAX_DELAY`, and a successful connect starts it over.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(5);
/// Longest pause between two attempts to open one connection: a dead target is not hammered,
/// and one that comes back is found again within this.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(250);
/// How long leads not yet sent wait after the schedule's end when no connection is up and
/// nothing is in flight: one longest reconnect pause, so a target that is gone ends the run
/// promptly (they count as `unsent`) while one that is back at once still gets them.
pub const UNSENT_GRACE: Duration = RECONNECT_MAX_DELAY;
/// Longest poll sleep, so timeouts and reconnects are looked at regularly.
const MAX_POLL: Duration = Duration::from_millis(100);
/// Unparsed answer bytes held per connection: one largest response.
const MAX_RESPONSE_BUFFER: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;
/// Bytes read per call.
const READ_CHUNK: usize = 64 * 1024;
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 4096;
/// Shortest pause between two wake-ups of the pacer: leads due closer together than this are
/// released together, at most this late.
const PACER_RESOLUTION: Duration = Duration::from_micros(100);
/// Longest single sleep of the pacer, so it notices the end of a run soon.
const PACER_MAX_SLEEP: Duration = Duration::from_millis(50);
/// The token of the pacer's wake-ups in the event loop.
const PACER_TOKEN: Token = Token(usize::MAX);
/// Highest latency the histograms hold, in microseconds (1 hour); longer ones saturate.
const HIST_MAX_US: u64 = 3_600_000_000;
/// Distinct error codes `by_error_code` names; answers with further codes count under
/// `OTHER_ERROR_CODE`, so a target inventing codes cannot grow the report.
pub const MAX_ERROR_CODES: usize = 32;
/// Longest error code counted under its own name, in bytes; longer ones count as other.
const MAX_ERROR_CODE_BYTES: usize = 64;
/// Where error codes beyond `MAX_ERROR_CODES` (or too long to name) are counted.
pub const OTHER_ERROR_CODE: &str = "other";
/// Number of distinct custom variables a template may use.
const MAX_TEMPLATE_VARS: usize = 64;

/// Percentiles of a latency histogram. Units are the field's name suffix where it is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
    /// Arithmetic mean, rounded down.
    pub mean: u64,
}

impl Percentiles {
    /// Summarise a histogram; all zeros when it is empty.
    pub fn from_hist(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean() as u64,
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Why a lead template could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `${` with no closing `}`; the byte offset of the `$`.
    Unclosed(usize),
    /// `${}` or a name with characters other than letters, digits and `_`.
    BadName(String),
    /// A custom variable the template uses but no value was given for.
    Unset(String),
    /// More than `MAX_TEMPLATE_VARS` distinct custom variables.
    TooManyVars,
    /// A value was given for a variable the generator fills in itself.
    BuiltIn(String),
    /// A lead made from the template, its variables filled in, is not JSON: why not.
    NotJson(String),
    /// A variable whose value is a JSON string, list or object written inside quotes
    /// (`"${vertical}"`): the lead would carry the quotes doubled, or a list as text.
    QuotedValue(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Unclosed(at) => {
                write!(f, "template: `${{` at byte {at} is never closed")
            }
            TemplateError::BadName(n) => write!(f, "template: bad variable name `{n}`"),
            TemplateError::Unset(n) => write!(f, "template: no value for `${{{n}}}`"),
            TemplateError::TooManyVars => {
                write!(
                    f,
                    "template: more than {MAX_TEMPLATE_VARS} custom variables"
                )
            }
            TemplateError::BuiltIn(n) => {
                write!(f, "template: `{n}` is filled in per lead and cannot be set")
            }
            TemplateError::NotJson(why) => {
                write!(f, "template: a lead made from it is not JSON: {why}")
            }
            TemplateError::QuotedValue(n) => write!(
                f,
                "template: `${{{n}}}` is written inside quotes but is filled with JSON of its own (a string with its quotes, a list or an object): write it without quotes"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Variables the generator fills in for every lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    /// The lead's sequence number in this run.
    Seq,
    /// A run-unique id: `<run nonce hex>-<seq>`.
    Uid,
    /// A ten-digit phone number unique within the run.
    Phone,
    /// `lead-<uid>@example.com`.
    Email,
    State,
    Zip,
    City,
    /// 21..=70.
    Age,
    /// 100..=399.
    MonthlyBill,
    /// RFC 3339 UTC time, refreshed every second.
    Now,
    /// The spec's campaign id.
    Campaign,
}

const BUILTINS: [(&str, Builtin); 11] = [
    ("seq", Builtin::Seq),
    ("uid", Builtin::Uid),
    ("phone", Builtin::Phone),
    ("email", Builtin::Email),
    ("state", Builtin::State),
    ("zip", Builtin::Zip),
    ("city", Builtin::City),
    ("age", Builtin::Age),
    ("monthly_bill", Builtin::MonthlyBill),
    ("now", Builtin::Now),
    ("campaign", Builtin::Campaign),
];

/// Places leads come from: (state, zip, city). Spread over the states the example buyers filter on.
const PLACES: [(&str, &str, &str); 10] = [
    ("TX", "77002", "Houston"),
    ("TX", "75001", "Addison"),
    ("TX", "77005", "Houston"),
    ("OK", "73301", "Oklahoma City"),
    ("LA", "70112", "New Orleans"),
    ("CA", "90001", "Los Angeles"),
    ("AZ", "85001", "Phoenix"),
    ("NV", "89101", "Las Vegas"),
    ("TX", "75201", "Dallas"),
    ("FL", "33101", "Miami"),
];

#[derive(Debug, Clone)]
enum Part {
    Lit(Vec<u8>),
    Builtin(Builtin),
    /// Index into `LeadTemplate::vars`.
    Custom(usize),
}

/// The body of every lead: JSON text with `${name}` placeholders.
///
/// Built-in names, filled per lead: `seq`, `uid`, `phone`, `email` (both unique per lead and
/// per run, so deduplication does not reject them), `state`, `zip`, `city`, `age`,
/// `monthly_bill`, `now`, `campaign`. Any other name is a custom variable whose value
/// (inserted verbatim, so JSON strings need their quotes) is set with [`LeadTemplate::set`].
/// The default template defines `vertical` (derived from the campaign id: `auto-insurance` →
/// `"auto_insurance"`) and `disclosed_buyers` (`[]`) that way.
#[derive(Debug, Clone)]
pub struct LeadTemplate {
    parts: Vec<Part>,
    vars: Vec<(String, Option<String>)>,
}

/// The default lead: the contract's example, with per-lead fields varied.
pub const DEFAULT_TEMPLATE: &str = concat!(
    r#"{"campaign":"${campaign}","source":"gavel-load","test":false,"lead":{"#,
    r#""first_name":"Ana","last_name":"Diaz","email":"${email}","phone":"${phone}","#,
    r#""street":"12 Main St","city":"${city}","state":"${state}","zip":"${zip}","#,
    r#""lead_type":"auto","age":${age},"insured":true,"roof_type":"asphalt","monthly_bill":${monthly_bill}},"#,
    r#""consent":{"trustedform_cert_url":"https://cert.trustedform.com/${uid}","jornaya_leadid":"${uid}","#,
    r#""vertical":${vertical},"disclosed_buyers":${disclosed_buyers},"consented_at":"${now}"}}"#
);

impl Default for LeadTemplate {
    fn default() -> LeadTemplate {
        match LeadTemplate::parse(DEFAULT_TEMPLATE) {
            Ok(mut t) => {
                // Both names are custom variables of the default text, so setting them cannot fail.
                let _ = t.set("disclosed_buyers", "[]");
                t
            }
            Err(_) => LeadTemplate {
                parts: Vec::new(),
                vars: Vec::new(),
            },
        }
    }
}

impl LeadTemplate {
    /// Split template text into literal bytes and placeholders.
    pub fn parse(text: &str) -> Result<LeadTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut vars: Vec<(String, Option<String>)> = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(at) = rest.find("${") {
            if at > 0 {
                parts.push(Part::Lit(rest.as_bytes()[..at].to_vec()));
            }
            let after = &rest[at + 2..];
            let Some(close) = after.find('}') else {
                return Err(TemplateError::Unclosed(offset + at));
            };
            let name = &after[..close];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(TemplateError::BadName(name.to_string()));
            }
            match BUILTINS.iter().find(|(n, _)| *n == name) {
                Some((_, b)) => parts.push(Part::Builtin(*b)),
                None => {
                    let idx = match vars.iter().position(|(n, _)| n == name) {
                        Some(i) => i,
                        None => {
                            if vars.len() >= MAX_TEMPLATE_VARS {
                                return Err(TemplateError::TooManyVars);
                            }
                            vars.push((name.to_string(), None));
                            vars.len() - 1
                        }
                    };
                    parts.push(Part::Custom(idx));
                }
            }
            let consumed = at + 2 + close + 1;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.as_bytes().to_vec()));
        }
        Ok(LeadTemplate { parts, vars })
    }

    /// Give custom variable `name` a value, inserted verbatim. Setting a name the template does
    /// not use is allowed and has no effect, so one set of values can serve several templates.
    pub fn set(&mut self, name: &str, raw_json: &str) -> Result<(), TemplateError> {
        if BUILTINS.iter().any(|(n, _)| *n == name) {
            return Err(TemplateError::BuiltIn(name.to_string()));
        }
        if let Some(v) = self.vars.iter_mut().find(|(n, _)| n == name) {
            v.1 = Some(raw_json.to_string());
        }
        Ok(())
    }

    /// Whether the template uses custom variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.vars.iter().any(|(n, _)| n == name)
    }

    /// Fill defaults for what the campaign implies, then insist every custom variable has a value.
    fn prepared(&self, campaign: &str) -> Result<LeadTemplate, TemplateError> {
        let mut t = self.clone();
        for (name, value) in &mut t.vars {
            if value.is_none() && name == "vertical" {
                *value = Some(format!("\"{}\"", campaign.replace('-', "_")));
            }
            // As in the default lead: no buyer disclosed unless `--disclosed-buyers` says so.
            if value.is_none() && name == "disclosed_buyers" {
                *value = Some("[]".to_string());
            }
        }
        if let Some((name, _)) = t.vars.iter().find(|(_, v)| v.is_none()) {
            return Err(TemplateError::Unset(name.clone()));
        }
        Ok(t)
    }

    /// Check that the leads this template makes for `campaign` are JSON, before a run sends
    /// any: one that is not would be refused (400) every time. A built-in value has one shape
    /// whatever the lead (digits, or text with no quote or backslash) and a custom one is the
    /// same in every lead, so the first leads, one from each place, stand for all of them.
    pub fn check_json(&self, campaign: &str) -> Result<(), TemplateError> {
        let t = self.prepared(campaign)?;
        let ctx = RenderCtx {
            nonce: 0,
            now: rfc3339_now(),
            campaign: campaign.to_string(),
        };
        if let Some(name) = t.quoted_json_value() {
            return Err(TemplateError::QuotedValue(name.to_string()));
        }
        let mut body = Vec::new();
        for seq in 0..PLACES.len() as u64 {
            body.clear();
            t.render(&mut body, &ctx, seq);
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return Err(TemplateError::NotJson(e.to_string()));
            }
        }
        Ok(())
    }

    /// A custom variable written alone inside quotes, `"${vertical}"`, whose value is a JSON
    /// string, list or object: its quotes doubled, or a list sent as text.
    fn quoted_json_value(&self) -> Option<&str> {
        self.parts.windows(3).find_map(|w| match w {
            [Part::Lit(before), Part::Custom(i), Part::Lit(after)]
                if before.ends_with(b"\"") && after.starts_with(b"\"") =>
            {
                match self.vars.get(*i) {
                    Some((name, Some(v))) if v.trim_start().starts_with(['"', '[', '{']) => {
                        Some(name.as_str())
                    }
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// Render lead `seq` into `out`.
    fn render(&self, out: &mut Vec<u8>, ctx: &RenderCtx, seq: u64) {
        let place =
            PLACES[(seq.wrapping_mul(7).wrapping_add(ctx.nonce) % PLACES.len() as u64) as usize];
        let mix = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ctx.nonce;
        for part in &self.parts {
            match part {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Custom(i) => {
                    if let Some((_, Some(v))) = self.vars.get(*i) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                Part::Builtin(b) => match b {
                    Builtin::Seq => wire::push_u64(out, seq),
                    Builtin::Uid => push_uid(out, ctx.nonce, seq),
                    Builtin::Email => {
                        out.extend_from_slice(b"lead-");
                        push_uid(out, ctx.nonce, seq);
                        out.extend_from_slice(b"@example.com");
                    }
                    Builtin::Phone => push_phone(out, ctx.nonce, seq),
                    Builtin::State => out.extend_from_slice(place.0.as_bytes()),
                    Builtin::Zip => out.extend_from_slice(place.1.as_bytes()),
                    Builtin::City => out.extend_from_slice(place.2.as_bytes()),
                    Builtin::Age => wire::push_u64(out, 21 + (mix >> 8) % 50),
                    Builtin::MonthlyBill => wire::push_u64(out, 100 + (mix >> 16) % 300),
                    Builtin::Now => out.extend_from_slice(ctx.now.as_bytes()),
                    Builtin::Campaign => out.extend_from_slice(ctx.campaign.as_bytes()),
                },
            }
        }
    }
}

/// Per-run values shared by every lead.
struct RenderCtx {
    /// Distinguishes this run's uids, emails and phones from earlier runs'.
    nonce: u64,
    now: String,
    campaign: String,
}

fn push_uid(out: &mut Vec<u8>, nonce: u64, seq: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((nonce >> (shift * 4)) & 0xF) as usize]);
    }
    out.push(b'-');
    wire::push_u64(out, seq);
}

/// Phone numbers in the NANP shape NXX-NXX-XXXX (no leading 0 or 1 in area code or exchange).
/// Within a run, consecutive sequence numbers map to distinct numbers until 6.4 billion leads.
fn push_phone(out: &mut Vec<u8>, nonce: u64, seq: u64) {
    const SPACE: u64 = 800 * 800 * 10_000;
    let n = (nonce % SPACE + seq % SPACE) % SPACE;
    let area = 200 + n / (800 * 10_000);
    let exchange = 200 + (n / 10_000) % 800;
    let line = n % 10_000;
    wire::push_u64(out, area);
    wire::push_u64(out, exchange);
    let line_digits = [
        (line / 1000) as u8,
        ((line / 100) % 10) as u8,
        ((line / 10) % 10) as u8,
        (line % 10) as u8,
    ];
    out.extend(line_digits.iter().map(|d| b'0' + d));
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The exchange's seller listener.
    pub target: SocketAddr,
    /// The seller's API key, sent as `Authorization: Bearer`.
    pub api_key: String,
    /// The campaign every lead is for.
    pub campaign: String,
    /// Leads due per second (1..=`MAX_RATE_PER_S`).
    pub rate_per_s: u64,
    /// How long leads are measured, after the warmup.
    pub duration: Duration,
    /// Keep-alive connections (1..=`MAX_CONNECTIONS`).
    pub connections: usize,
    /// Leads in flight on one connection (1..=`MAX_PIPELINE`): more than one pipelines
    /// requests, and answers come back in order. 1 keeps one lead per connection.
    pub pipeline: usize,
    /// What every lead looks like.
    pub lead_template: LeadTemplate,
    /// Leads due in this first stretch are sent but neither counted nor measured, so caches,
    /// pools and buyer connections are warm when measuring starts.
    pub warmup: Duration,
    /// Set from outside (a signal) to end the run early: no lead is sent after it is seen, the
    /// leads in flight are answered, and the report covers the stretch that ran.
    pub stop: Option<Arc<AtomicBool>>,
    /// Send each lead with an `Idempotency-Key` of its own (`gavel-load-<run nonce>-<seq>`),
    /// as a seller that retries safely does, so the exchange's key index is in the measure.
    pub idempotency_keys: bool,
}

impl LoadSpec {
    /// A spec with the default lead, 1,000 leads/s for 10 s over 64 connections, 1 s warmup.
    pub fn new(
        target: SocketAddr,
        api_key: impl Into<String>,
        campaign: impl Into<String>,
    ) -> LoadSpec {
        LoadSpec {
            target,
            api_key: api_key.into(),
            campaign: campaign.into(),
            rate_per_s: 1000,
            duration: Duration::from_secs(10),
            connections: 64,
            pipeline: 1,
            lead_template: LeadTemplate::default(),
            warmup: Duration::from_secs(1),
            stop: None,
            idempotency_keys: false,
        }
    }
}

/// What a run measured. Counts cover the measured leads only (not the warmup).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The exchange's address.
    pub target: String,
    /// The campaign.
    pub campaign: String,
    /// The rate asked for.
    pub rate_per_s: u64,
    /// Connections asked for.
    pub connections: usize,
    /// Connections established at the start.
    pub connected: usize,
    /// Measured stretch (the schedule), in milliseconds.
    pub duration_ms: u64,
    /// From the measured stretch's start to its last answer, or to its end if that is later,
    /// in milliseconds: longer than `duration_ms` when the target fell behind.
    pub elapsed_ms: u64,
    /// Warmup stretch, in milliseconds.
    pub warmup_ms: u64,
    /// Leads sent during the warmup (not counted below).
    pub warmup_leads: u64,
    /// Leads the schedule made due in the measured stretch.
    pub scheduled: u64,
    /// Leads written to a connection.
    pub sent: u64,
    /// Leads that got a whole HTTP answer.
    pub answered: u64,
    /// 200 with `"status":"sold"`.
    pub sold: u64,
    /// 200 with `"status":"unsold"`.
    pub unsold: u64,
    /// 422: refused for their content.
    pub rejected: u64,
    /// 429: over the seller's rate limit.
    pub throttled: u64,
    /// 503: too many auctions in flight.
    pub overloaded: u64,
    /// Any other answer.
    pub other: u64,
    /// Answers by HTTP status code.
    pub by_status_code: BTreeMap<u16, u64>,
    /// Error answers (not 2xx) by the `error.code` of their JSON body, e.g. `duplicate`:
    /// at most `MAX_ERROR_CODES` names, the rest under `other`. Answers without a code are
    /// in `by_status_code` only.
    pub by_error_code: BTreeMap<String, u64>,
    /// Leads lost to a broken connection or an unparsable answer.
    pub errors: u64,
    /// Leads whose answer took longer than `REQUEST_TIMEOUT`.
    pub timeouts: u64,
    /// Leads still waiting for a free connection when the run ended.
    pub unsent: u64,
    /// Leads sent but unanswered when the run ended.
    pub in_flight_at_end: u64,
    /// The run was stopped before its schedule ended (`LoadSpec::stop`): `scheduled`,
    /// `duration_ms` and the rate cover the stretch that ran.
    pub stopped_early: bool,
    /// Connections opened again after the exchange closed or broke them.
    pub reconnects: u64,
    /// Attempts to open a connection that failed (refused, unreachable, or not through within
    /// `CONNECT_TIMEOUT`). Each connection retries after a pause that doubles from
    /// `RECONNECT_MIN_DELAY` to `RECONNECT_MAX_DELAY`.
    pub connect_errors: u64,
    /// Connections up when the run ended: 0 with `connect_errors` means the target was gone.
    pub connected_at_end: usize,
    /// Answered leads per second of `elapsed_ms`.
    pub achieved_rate_per_s: f64,
    /// Most due leads waiting at once for a free connection.
    pub max_waiting: u64,
    /// From each lead's due time to its whole answer, in microseconds.
    pub latency_us: Percentiles,
    /// From the moment each lead's last request byte was handed to the kernel to its whole
    /// answer, in microseconds: a lead waiting behind a full socket buffer waits outside it.
    pub service_us: Percentiles,
    /// The exchange's own `elapsed_ms` from its answers.
    pub exchange_elapsed_ms: Percentiles,
    /// Sum of `price` over answers: what buyers paid.
    pub revenue_cents: Cents,
    /// Sum of `payout` over answers: what the seller earned.
    pub payout_cents: Cents,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "load      {} leads/s for {:.1} s (warmup {:.1} s, {} leads) to {} campaign {} over {}/{} connections",
            self.rate_per_s,
            self.duration_ms as f64 / 1000.0,
            self.warmup_ms as f64 / 1000.0,
            self.warmup_leads,
            self.target,
            self.campaign,
            self.connected,
            self.connections
        )?;
        writeln!(
            f,
            "leads     scheduled {} sent {} answered {} (achieved {:.1}/s over {:.1} s)",
            self.scheduled,
            self.sent,
            self.answered,
            self.achieved_rate_per_s,
            self.elapsed_ms as f64 / 1000.0
        )?;
        writeln!(
            f,
            "answers   sold {} unsold {} rejected(422) {} throttled(429) {} overloaded(503) {} other {}",
            self.sold, self.unsold, self.rejected, self.throttled, self.overloaded, self.other
        )?;
        let codes: Vec<String> = self
            .by_status_code
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        writeln!(f, "status    {}", codes.join(" "))?;
        if !self.by_error_code.is_empty() {
            let codes: Vec<String> = self
                .by_error_code
                .iter()
                .map(|(c, n)| format!("{c}:{n}"))
                .collect();
            writeln!(f, "codes     {}", codes.join(" "))?;
        }
        writeln!(
            f,
            "problems  errors {} timeouts {} unsent {} in-flight-at-end {} reconnects {} connect-errors {} max-waiting {}",
            self.errors,
            self.timeouts,
            self.unsent,
            self.in_flight_at_end,
            self.reconnects,
            self.connect_errors,
            self.max_waiting
        )?;
        if self.connected_at_end == 0 && self.connect_errors > 0 {
            writeln!(
                f,
                "target    cannot connect to {}: no connection was up at the end",
                self.target
            )?;
        }
        if self.stopped_early {
            writeln!(
                f,
                "stopped   early: the counts cover the {:.1} s of the schedule that ran",
                self.duration_ms as f64 / 1000.0
            )?;
        }
        if self.answered == 0 {
            writeln!(f, "latency none: no lead was answered")?;
        } else {
            writeln!(f, "latency   us from due time:  {}", self.latency_us)?;
            writeln!(f, "service   us from write:     {}", self.service_us)?;
            // Only the exchange's sold and unsold answers carry one; say so rather than zeros.
            if self.exchange_elapsed_ms.count == 0 {
                writeln!(
                    f,
                    "exchange  elapsed_ms:        none: no answer carried one"
                )?;
            } else {
                writeln!(
                    f,
                    "exchange  elapsed_ms:        {}",
                    self.exchange_elapsed_ms
                )?;
            }
        }
        write!(
            f,
            "money     revenue {} payout {} margin {}",
            usd(self.revenue_cents),
            usd(self.payout_cents),
            usd(self.revenue_cents - self.payout_cents)
        )
    }
}

/// Run the load described by `spec` and report what it measured.
///
/// Fails when the spec is out of bounds, the template is unusable, or no connection to the
/// target could be opened; failures during the run are counted in the report instead.
pub fn run(spec: &LoadSpec) -> io::Result<LoadReport> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    if spec.rate_per_s == 0 || spec.rate_per_s > MAX_RATE_PER_S {
        return Err(bad(format!("rate must be 1..={MAX_RATE_PER_S} leads/s")));
    }
    if spec.connections == 0 || spec.connections > MAX_CONNECTIONS {
        return Err(bad(format!("connections must be 1..={MAX_CONNECTIONS}")));
    }
    if spec.pipeline == 0 || spec.pipeline > MAX_PIPELINE {
        return Err(bad(format!("pipeline must be 1..={MAX_PIPELINE}")));
    }
    if spec.duration.is_zero() || spec.duration + spec.warmup > MAX_RUN {
        return Err(bad(format!(
            "duration must be positive and, with warmup, at most {} s",
            MAX_RUN.as_secs()
        )));
    }
    if spec.api_key.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("api key must not contain control characters".into()));
    }
    let template = spec
        .lead_template
        .prepared(&spec.campaign)
        .map_err(|e| bad(e.to_string()))?;
    template
        .check_json(&spec.campaign)
        .map_err(|e| bad(e.to_string()))?;
    let mut gen = Generator::new(spec, template)?;
    gen.connect_all().map_err(|cause| {
        io::Error::new(
            cause.kind(),
            CannotConnect {
                target: spec.target,
                cause,
            },
        )
    })?;
    gen.run_schedule();
    Ok(gen.report())
}

/// The error of a run that could open no connection to its target at all.
#[derive(Debug)]
pub struct CannotConnect {
    /// The target.
    pub target: SocketAddr,
    /// Why the last attempt failed.
    pub cause: io::Error,
}

impl fmt::Display for CannotConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {}: {}", self.target, self.cause)
    }
}

impl std::error::Error for CannotConnect {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// The `error.code` of an error answer's JSON body (PROTOCOL.md §1: `{"error":{"code":..}}`).
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.error.code)
}

/// Count one answer under `code`, keeping at most `MAX_ERROR_CODES` names besides `other`.
fn count_error_code(counts: &mut BTreeMap<String, u64>, code: &str) {
    if let Some(n) = counts.get_mut(code) {
        *n += 1;
        return;
    }
    let named = counts.len() - usize::from(counts.contains_key(OTHER_ERROR_CODE));
    let key = if code.len() > MAX_ERROR_CODE_BYTES
        || code.is_empty()
        || code.chars().any(char::is_control)
        || named >= MAX_ERROR_CODES
    {
        OTHER_ERROR_CODE
    } else {
        code
    };
    *counts.entry(key.to_string()).or_insert(0) += 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    /// Connected: leads may be in flight on it (see `Conn::inflight`).
    Idle,
    Down,
}

/// A lead queued on a connection and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    lead: u64,
    intended: Instant,
    /// When it was queued for writing: its answer timeout runs from here.
    queued: Instant,
    /// Where its request ends in the connection's byte stream (`Conn::queued_bytes`).
    end: u64,
    /// When its last byte was handed to the kernel: `service_us` runs from here.
    written: Option<Instant>,
}

struct Conn {
    stream: Option<TcpStream>,
    state: State,
    /// Leads written and not answered, oldest first (answers come back in this order).
    inflight: VecDeque<InFlight>,
    /// Whether the connection is in the generator's `idle` queue (it has room for a lead).
    queued: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Request bytes queued on this connection since it was opened.
    queued_bytes: u64,
    /// Of those, bytes the kernel has taken.
    written_bytes: u64,
    /// Pause before the next attempt to open it (see `RECONNECT_MIN_DELAY`).
    backoff: Duration,
    /// When the current attempt to open it began.
    connect_started: Instant,
}

/// Counters and histograms of the measured leads.
struct Tally {
    sent: u64,
    answered: u64,
    sold: u64,
    unsold: u64,
    rejected: u64,
    throttled: u64,
    overloaded: u64,
    other: u64,
    by_status_code: BTreeMap<u16, u64>,
    by_error_code: BTreeMap<String, u64>,
    errors: u64,
    timeouts: u64,
    revenue_cents: Cents,
    payout_cents: Cents,
    latency_us: Histogram<u64>,
    service_us: Histogram<u64>,
    elapsed_ms: Histogram<u64>,
    /// When the last measured answer came.
    last_answer: Option<Instant>,
}

struct Generator<'a> {
    spec: &'a LoadSpec,
    template: LeadTemplate,
    ctx: RenderCtx,
    now_refreshed: Instant,
    poll: Poll,
    conns: Vec<Conn>,
    idle: VecDeque<usize>,
    /// Connections waiting to be opened again, soonest retry first.
    down: BinaryHeap<Reverse<(Instant, usize)>>,
    busy: usize,
    connected: usize,
    reconnects: u64,
    connect_errors: u64,
    warmup_leads: u64,
    total_leads: u64,
    next_lead: u64,
    max_waiting: u64,
    start: Instant,
    /// When `LoadSpec::stop` was seen.
    stopped_at: Option<Instant>,
    head: Vec<u8>,
    body: Vec<u8>,
    scratch: Vec<u8>,
    tally: Tally,
}

fn hist() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).map_err(|e| io::Error::other(e.to_string()))
}

fn leads_in(d: Duration, rate: u64) -> u64 {
    // Leads due strictly before `d`: k with floor(k * 1e9 / rate) < d_ns, i.e. ceil(d_ns * rate / 1e9).
    let n = (d.as_nanos() * u128::from(rate)).div_ceil(1_000_000_000);
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Wake the event loop when each lead falls due, until the schedule ends or `stop` is set.
/// Leads due within `PACER_RESOLUTION` of each other share one wake-up.
fn pace(start: Instant, rate: u64, total: u64, waker: &Waker, stop: &AtomicBool) {
    let intended = |k: u64| {
        let ns = u128::from(k) * 1_000_000_000 / u128::from(rate);
        start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    };
    let mut next = 0u64;
    let mut last_wake = start;
    while next < total && !stop.load(Ordering::Acquire) {
        let target = intended(next).max(last_wake + PACER_RESOLUTION);
        let now = Instant::now();
        if target > now {
            std::thread::sleep((target - now).min(PACER_MAX_SLEEP));
            continue;
        }
        // A failed wake costs precision only: the loop's own timeout still releases the lead.
        let _ = waker.wake();
        last_wake = now;
        next = leads_in(
            now.saturating_duration_since(start) + Duration::from_nanos(1),
            rate,
        );
    }
}

fn rfc3339_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl<'a> Generator<'a> {
    fn new(spec: &'a LoadSpec, template: LeadTemplate) -> io::Result<Generator<'a>> {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let nonce = super::dist::Rng::new(wall ^ u64::from(std::process::id())).next_u64();
        let head = format!(
            "POST /v1/leads HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: ",
            spec.target, spec.api_key
        )
        .into_bytes();
        let warmup_leads = leads_in(spec.warmup, spec.rate_per_s);
        let total_leads = leads_in(spec.warmup + spec.duration, spec.rate_per_s);
        Ok(Generator {
            spec,
            template,
            ctx: RenderCtx {
                nonce,
                now: rfc3339_now(),
                campaign: spec.campaign.clone(),
            },
            now_refreshed: Instant::now(),
            poll: Poll::new()?,
            conns: Vec::with_capacity(spec.connections),
            idle: VecDeque::with_capacity(spec.connections),
            down: BinaryHeap::with_capacity(spec.connections),
            busy: 0,
            connected: 0,
            reconnects: 0,
            connect_errors: 0,
            warmup_leads,
            total_leads,
            next_lead: 0,
            max_waiting: 0,
            start: Instant::now(),
            stopped_at: None,
            head,
            body: Vec::with_capacity(4096),
            scratch: vec![0u8; READ_CHUNK],
            tally: Tally {
                sent: 0,
                answered: 0,
                sold: 0,
                unsold: 0,
                rejected: 0,
                throttled: 0,
                overloaded: 0,
                other: 0,
                by_status_code: BTreeMap::new(),
                by_error_code: BTreeMap::new(),
                errors: 0,
                timeouts: 0,
                revenue_cents: 0,
                payout_cents: 0,
                latency_us: hist()?,
                service_us: hist()?,
                elapsed_ms: hist()?,
                last_answer: None,
            },
        })
    }

    /// Open every connection and wait until each is up or has failed. Failed ones are retried
    /// during the run; failing all of them is an error.
    fn connect_all(&mut self) -> io::Result<()> {
        let mut last_err: Option<io::Error> = None;
        for i in 0..self.spec.connections {
            self.conns.push(Conn {
                stream: None,
                state: State::Down,
                inflight: VecDeque::with_capacity(self.spec.pipeline),
                queued: false,
                rbuf: Vec::with_capacity(1024),
                wbuf: Vec::with_capacity(2048),
                wpos: 0,
                queued_bytes: 0,
                written_bytes: 0,
                backoff: RECONNECT_MIN_DELAY,
                connect_started: Instant::now(),
            });
            if let Err(e) = self.open(i) {
                self.connect_errors += 1;
                last_err = Some(e);
            }
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while self.conns.iter().any(|c| c.state == State::Connecting) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(deadline - now)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if let Err(e) = self.check_connected(i) {
                    self.connect_errors += 1;
                    last_err = Some(e);
                }
            }
        }
        let now = Instant::now();
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Idle => continue,
                // Still not connected at the deadline: a failed attempt too.
                State::Connecting => {
                    self.connect_errors += 1;
                    self.close_stream(i);
                }
                State::Down => {}
            }
            self.retry_later(i, now);
        }
        self.connected = self.idle.len();
        if self.connected == 0 {
            return Err(last_err.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no connection to {} within {:?}",
                        self.spec.target, CONNECT_TIMEOUT
                    ),
                )
            }));
        }
        Ok(())
    }

    fn open(&mut self, i: usize) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.spec.target)?;
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let conn = &mut self.conns[i];
        conn.stream = Some(stream);
        conn.state = State::Connecting;
        conn.connect_started = Instant::now();
        conn.rbuf.clear();
        conn.wbuf.clear();
        conn.wpos = 0;
        conn.queued_bytes = 0;
        conn.written_bytes = 0;
        Ok(())
    }

    /// A connecting socket became ready: see whether it is connected.
    fn check_connected(&mut self, i: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(i) else {
            return Ok(());
        };
        if conn.state != State::Connecting {
            return Ok(());
        }
        let Some(stream) = conn.stream.as_ref() else {
            return Ok(());
        };
        if let Ok(Some(e)) | Err(e) = stream.take_error() {
            conn.stream = None;
            conn.state = State::Down;
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                let _ = stream.set_nodelay(true);
                conn.state = State::Idle;
                conn.backoff = RECONNECT_MIN_DELAY;
                conn.queued = true;
                self.idle.push_back(i);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => {
                conn.stream = None;
                conn.state = State::Down;
                Err(e)
            }
        }
    }

    fn intended(&self, lead: u64) -> Instant {
        let ns = u128::from(lead) * 1_000_000_000 / u128::from(self.spec.rate_per_s);
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Leads due by `now`.
    fn due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        leads_in(elapsed + Duration::from_nanos(1), self.spec.rate_per_s).min(self.total_leads)
    }

    fn measured(&self, lead: u64) -> bool {
        lead >= self.warmup_leads
    }

    fn run_schedule(&mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        self.start = Instant::now();
        // Without a pacer the loop still runs, on the poll timeout's coarser clock.
        let stop = Arc::new(AtomicBool::new(false));
        let pacer = Waker::new(self.poll.registry(), PACER_TOKEN)
            .ok()
            .and_then(|waker| {
                let (start, rate, total) = (self.start, self.spec.rate_per_s, self.total_leads);
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name("gavel-load-pacer".into())
                    .spawn(move || pace(start, rate, total, &waker, &stop))
                    .ok()
            });
        self.schedule_loop(&mut events);
        stop.store(true, Ordering::Release);
        if let Some(p) = pacer {
            // A panicked pacer only cost precision; the counts are already taken.
            let _ = p.join();
        }
    }

    fn schedule_loop(&mut self, events: &mut Events) {
        let schedule_end = self.intended(self.total_leads);
        let hard_end = schedule_end + DRAIN_TIMEOUT;
        let mut last_sweep = self.start;
        loop {
            let now = Instant::now();
            if now.duration_since(self.now_refreshed) >= Duration::from_secs(1) {
                self.ctx.now = rfc3339_now();
                self.now_refreshed = now;
            }
            if self.stopped_at.is_none()
                && self
                    .spec
                    .stop
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Acquire))
            {
                // The schedule ends here; what is in flight is still answered, and the leads
                // already due that no connection took (a stalled target holds them all) are
                // part of the stretch that ran: they count as unsent, never sent after.
                self.stopped_at = Some(now);
                self.total_leads = self.due(now).max(self.next_lead);
            }
            // Past the drain no lead is written: each one written is waited for, up to its
            // own `REQUEST_TIMEOUT`, so a run never ends with a lead the target is answering.
            let sending = now < hard_end && self.stopped_at.is_none();
            let due = if sending {
                self.due(now)
            } else {
                self.next_lead
            };
            while self.next_lead < due {
                let Some(i) = self.idle.pop_front() else {
                    break;
                };
                let pipeline = self.spec.pipeline;
                let Some(c) = self.conns.get_mut(i) else {
                    continue;
                };
                c.queued = false;
                // An entry goes stale when its connection was closed while queued; it is
                // queued again once reconnected.
                if !(c.state == State::Idle && c.stream.is_some() && c.inflight.len() < pipeline) {
                    continue;
                }
                let lead = self.next_lead;
                self.next_lead += 1;
                self.send(i, lead, now);
            }
            self.max_waiting = self.max_waiting.max(due - self.next_lead);
            if (self.next_lead >= self.total_leads || self.stopped_at.is_some()) && self.busy == 0 {
                break;
            }
            // Nothing in flight yet leads to send means no connection is up: past the
            // schedule, they wait for one only so long, then count as unsent.
            if self.busy == 0 && now >= schedule_end + UNSENT_GRACE {
                break;
            }
            if now >= hard_end && self.busy == 0 {
                break;
            }
            if now >= hard_end + REQUEST_TIMEOUT {
                break;
            }
            while let Some(&Reverse((at, i))) = self.down.peek() {
                if at > now {
                    break;
                }
                self.down.pop();
                if self.open(i).is_err() {
                    self.connect_failed(i, now);
                }
            }
            if now.duration_since(last_sweep) >= MAX_POLL {
                last_sweep = now;
                self.expire(now);
            }

            let mut timeout = MAX_POLL;
            if sending && self.next_lead < self.total_leads && self.next_lead >= due {
                timeout = timeout.min(self.intended(self.next_lead).saturating_duration_since(now));
            }
            if let Some(&Reverse((at, _))) = self.down.peek() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if sending && self.busy == 0 && self.next_lead < self.total_leads {
                timeout = timeout.min((schedule_end + UNSENT_GRACE).saturating_duration_since(now));
            }
            if let Err(e) = self.poll.poll(events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                if ev.token() != PACER_TOKEN {
                    self.on_ready(ev.token().0, now);
                }
            }
        }
    }

    fn send(&mut self, i: usize, lead: u64, now: Instant) {
        let intended = self.intended(lead);
        self.body.clear();
        self.template.render(&mut self.body, &self.ctx, lead);
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.wpos >= conn.wbuf.len() {
            conn.wbuf.clear();
            conn.wpos = 0;
        }
        let before = conn.wbuf.len();
        conn.wbuf.extend_from_slice(&self.head);
        wire::push_u64(&mut conn.wbuf, self.body.len() as u64);
        if self.spec.idempotency_keys {
            conn.wbuf
                .extend_from_slice(b"\r\nIdempotency-Key: gavel-load-");
            push_uid(&mut conn.wbuf, self.ctx.nonce, lead);
        }
        conn.wbuf.extend_from_slice(b"\r\n\r\n");
        conn.wbuf.extend_from_slice(&self.body);
        let bytes = conn.wbuf.len() - before;
        conn.queued_bytes += bytes as u64;
        conn.inflight.push_back(InFlight {
            lead,
            intended,
            queued: now,
            end: conn.queued_bytes,
            written: None,
        });
        // Room for another lead: back in the queue, behind the other connections.
        if conn.inflight.len() < self.spec.pipeline && !conn.queued {
            conn.queued = true;
            self.idle.push_back(i);
        }
        self.busy += 1;
        if self.measured(lead) {
            self.tally.sent += 1;
        }
        self.pump(i, now);
    }

    fn on_ready(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns.get(i) else {
            return;
        };
        match conn.state {
            State::Connecting => match self.check_connected(i) {
                // A reconnect that fails goes back to the retry queue, a longer pause away.
                Err(_) => self.connect_failed(i, now),
                Ok(()) => {
                    if self.conns.get(i).is_some_and(|c| c.state == State::Idle) {
                        self.reconnects += 1;
                    }
                }
            },
            State::Idle => self.pump(i, now),
            State::Down => {}
        }
    }

    /// Write what is pending, read what arrived, and finish the lead when its answer is whole.
    fn pump(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let mut wrote = false;
        while conn.wpos < conn.wbuf.len() {
            match stream.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => return self.fail(i, now, false),
                Ok(n) => {
                    conn.wpos += n;
                    conn.written_bytes += n as u64;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, now, false),
            }
        }
        if wrote {
            // Service time runs from the moment a request's last byte left for the kernel,
            // not from when it was queued: a full socket buffer is the client's wait.
            let at = Instant::now();
            for f in conn.inflight.iter_mut().rev() {
                if f.written.is_some() {
                    break;
                }
                if f.end <= conn.written_bytes {
                    f.written = Some(at);
                }
            }
        }
        let mut eof = false;
        loop {
            if conn.rbuf.len() >= MAX_RESPONSE_BUFFER {
                return self.fail(i, now, false);
            }
            match stream.read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => conn.rbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, now, false),
            }
        }
        if conn.inflight.is_empty() {
            // Bytes or a close on an idle connection: the exchange gave up on it. Not a lost lead.
            if eof || !conn.rbuf.is_empty() {
                self.fail(i, now, false);
            }
            return;
        }
        // Every whole answer in the buffer, each for the oldest lead in flight.
        let mut consumed = 0;
        loop {
            let Some(conn) = self.conns.get(i) else {
                return;
            };
            if conn.inflight.is_empty() {
                if consumed < conn.rbuf.len() {
                    // An answer nobody asked for.
                    return self.fail(i, now, false);
                }
                break;
            }
            let rest = &conn.rbuf[consumed..];
            let head = match wire::parse_response(rest) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if eof {
                        return self.fail(i, now, false);
                    }
                    break;
                }
                Err(_) => return self.fail(i, now, false),
            };
            let body_end = match head.body_len {
                Some(n) if rest.len() >= head.head_len + n => head.head_len + n,
                Some(_) => {
                    if eof {
                        return self.fail(i, now, false);
                    }
                    break;
                }
                None if eof => rest.len(),
                None => break,
            };
            let keep = head.keep_alive && !(eof && rest.len() == body_end);
            let (start, end) = (consumed + head.head_len, consumed + body_end);
            self.finish(i, head.status, start, end, now);
            consumed = end;
            if !keep {
                // Leads still in flight on it are lost.
                return self.fail(i, now, false);
            }
        }
        let pipeline = self.spec.pipeline;
        if let Some(conn) = self.conns.get_mut(i) {
            conn.rbuf.drain(..consumed);
            if eof {
                return self.fail(i, now, false);
            }
            if conn.inflight.len() < pipeline && !conn.queued {
                conn.queued = true;
                self.idle.push_back(i);
            }
        }
    }

    /// Count one whole answer, for the oldest lead in flight on the connection.
    fn finish(&mut self, i: usize, status: u16, body_start: usize, body_end: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        let Some(InFlight {
            lead,
            intended,
            written,
            ..
        }) = conn.inflight.pop_front()
        else {
            return;
        };
        let conn = &self.conns[i];
        self.busy = self.busy.saturating_sub(1);
        if !self.measured(lead) {
            return;
        }
        let body = &conn.rbuf[body_start..body_end];
        let t = &mut self.tally;
        t.answered += 1;
        t.last_answer = Some(now);
        *t.by_status_code.entry(status).or_insert(0) += 1;
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        t.latency_us
            .saturating_record(us(now.saturating_duration_since(intended)));
        t.service_us
            .saturating_record(us(now.saturating_duration_since(written.unwrap_or(now))));
        if !(200..300).contains(&status) {
            if let Some(code) = error_code(body) {
                count_error_code(&mut t.by_error_code, &code);
            }
        }
        let field = |k: &str| wire::top_level_value(body, k);
        match status {
            200 => match field("status") {
                Some(b"sold") => t.sold += 1,
                Some(b"unsold") => t.unsold += 1,
                _ => t.other += 1,
            },
            422 => t.rejected += 1,
            429 => t.throttled += 1,
            503 => t.overloaded += 1,
            _ => t.other += 1,
        }
        let cents = |v: Option<&[u8]>| {
            v.and_then(|b| std::str::from_utf8(b).ok())
                .and_then(parse_cents)
                .unwrap_or(0)
        };
        t.revenue_cents = t.revenue_cents.saturating_add(cents(field("price")));
        t.payout_cents = t.payout_cents.saturating_add(cents(field("payout")));
        if let Some(ms) = field("elapsed_ms")
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok())
        {
            t.elapsed_ms.saturating_record(ms.max(1));
        }
    }

    /// The connection broke or misbehaved: the leads on it are lost (errors, or timeouts).
    fn fail(&mut self, i: usize, now: Instant, timed_out: bool) {
        if let Some(conn) = self.conns.get_mut(i) {
            let lost = std::mem::take(&mut conn.inflight);
            for f in lost {
                self.busy = self.busy.saturating_sub(1);
                if f.lead >= self.warmup_leads {
                    if timed_out {
                        self.tally.timeouts += 1;
                    } else {
                        self.tally.errors += 1;
                    }
                }
            }
        }
        self.drop_conn(i, now);
    }

    /// Close the connection's socket, if any, and mark it down.
    fn close_stream(&mut self, i: usize) {
        if let Some(conn) = self.conns.get_mut(i) {
            if let Some(mut s) = conn.stream.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            conn.state = State::Down;
        }
    }

    /// Queue connection `i` to be opened again after its pause, and double the next pause.
    fn retry_later(&mut self, i: usize, now: Instant) {
        if let Some(conn) = self.conns.get_mut(i) {
            let delay = conn.backoff;
            conn.backoff = delay.saturating_mul(2).min(RECONNECT_MAX_DELAY);
            self.down.push(Reverse((now + delay, i)));
        }
    }

    /// An attempt to open connection `i` failed: count it and try again later.
    fn connect_failed(&mut self, i: usize, now: Instant) {
        self.connect_errors += 1;
        self.close_stream(i);
        self.retry_later(i, now);
    }

    /// Close the connection and queue it to be opened again.
    fn drop_conn(&mut self, i: usize, now: Instant) {
        self.close_stream(i);
        if let Some(conn) = self.conns.get_mut(i) {
            conn.inflight.clear();
            conn.rbuf.clear();
            conn.wbuf.clear();
            conn.wpos = 0;
            conn.queued_bytes = 0;
            conn.written_bytes = 0;
        }
        self.retry_later(i, now);
    }

    /// Give up on leads that waited longer than `REQUEST_TIMEOUT`, and on reconnects still not
    /// through after `CONNECT_TIMEOUT`.
    fn expire(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            if conn.state == State::Connecting
                && now.saturating_duration_since(conn.connect_started) >= CONNECT_TIMEOUT
            {
                self.connect_failed(i, now);
                continue;
            }
            if let Some(f) = self.conns[i].inflight.front() {
                if now.saturating_duration_since(f.queued) >= REQUEST_TIMEOUT {
                    self.fail(i, now, true);
                }
            }
        }
    }

    fn report(&self) -> LoadReport {
        let t = &self.tally;
        let scheduled = self.total_leads.saturating_sub(self.warmup_leads);
        let sent_all = self.next_lead;
        let unsent = if sent_all >= self.warmup_leads {
            self.total_leads - sent_all
        } else {
            scheduled
        };
        let in_flight_at_end = self
            .conns
            .iter()
            .flat_map(|c| c.inflight.iter())
            .filter(|f| f.lead >= self.warmup_leads)
            .count() as u64;
        // A stopped run measured from the warmup's end to the stop.
        let measured = match self.stopped_at {
            Some(at) => at
                .saturating_duration_since(self.start + self.spec.warmup)
                .min(self.spec.duration),
            None => self.spec.duration,
        };
        // A target that falls behind is still answering after the schedule's end (the backlog
        // drains for up to `DRAIN_TIMEOUT`): the rate is over the time the answers took.
        let measured_from = self.start + self.spec.warmup;
        let elapsed = t
            .last_answer
            .map_or(measured, |at| at.saturating_duration_since(measured_from))
            .max(measured);
        let secs = elapsed.as_secs_f64();
        LoadReport {
            target: self.spec.target.to_string(),
            campaign: self.spec.campaign.clone(),
            rate_per_s: self.spec.rate_per_s,
            connections: self.spec.connections,
            connected: self.connected,
            duration_ms: u64::try_from(measured.as_millis()).unwrap_or(u64::MAX),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            warmup_ms: u64::try_from(self.spec.warmup.as_millis()).unwrap_or(u64::MAX),
            warmup_leads: self.warmup_leads.min(sent_all),
            scheduled,
            sent: t.sent,
            answered: t.answered,
            sold: t.sold,
            unsold: t.unsold,
            rejected: t.rejected,
            throttled: t.throttled,
            overloaded: t.overloaded,
            other: t.other,
            by_status_code: t.by_status_code.clone(),
            by_error_code: t.by_error_code.clone(),
            errors: t.errors,
            timeouts: t.timeouts,
            unsent,
            in_flight_at_end,
            stopped_early: self.stopped_at.is_some(),
            reconnects: self.reconnects,
            connect_errors: self.connect_errors,
            connected_at_end: self.conns.iter().filter(|c| c.state == State::Idle).count(),
            achieved_rate_per_s: if secs > 0.0 {
                t.answered as f64 / secs
            } else {
                0.0
            },
            max_waiting: self.max_waiting,
            latency_us: Percentiles::from_hist(&t.latency_us),
            service_us: Percentiles::from_hist(&t.service_us),
            exchange_elapsed_ms: Percentiles::from_hist(&t.elapsed_ms),
            revenue_cents: t.revenue_cents,
            payout_cents: t.payout_cents,
        }
    }
}
