//! Buyer adapters: how the exchange talks to a buyer whose API is not the native JSON protocol
//! (PROTOCOL.md §5, `[buyers.adapter]`).
//!
//! A buyer's `AdapterConfig` is compiled once into an [`Adapter`]: request templates become a
//! list of literal and placeholder parts, answer paths become lists of names. Per lead the
//! adapter then only writes bytes and reads answers, as pure functions with no sockets and no
//! clock, so that the I/O shell treats an adapted buyer like any other and every rule here is
//! testable with plain values.
//!
//! Requests: `request = "form"` writes `application/x-www-form-urlencoded` bodies,
//! `request = "json"` writes a flat JSON object; one entry per template field, in the order of
//! the field names (the config keeps them sorted). Answers: `response = "json"` reads values by
//! JSON pointer (`/response/price`), `response = "xml"` by element path (`/response/price`,
//! root element first; the text of the first match). The outcomes follow the native rules of
//! `lead::parse_bid` and `lead::parse_post_answer`.

mod json;
pub mod xml;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use crate::auction::{PingOutcome, PostOutcome};
use crate::config::is_personal_field;
use crate::config::types::AdapterConfig;
use crate::lead::{Field as LeadField, Fields, PathValue, MAX_ANSWER_STRING};
use crate::money::{parse_cents, write_dollars, Cents, MAX_CENTS};
use crate::text::SmallText;

/// Most fields one request template may have; legacy APIs take a dozen or two.
pub const MAX_TEMPLATE_FIELDS: usize = 128;
/// Longest template (name or value text) accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 1024;
/// Most names in an answer path; real answers are a few levels deep.
pub const MAX_PATH_DEPTH: usize = 16;
/// Most `accepted_values` compared against a post answer's status.
pub const MAX_ACCEPTED_VALUES: usize = 32;
/// Largest answer read. The HTTP codec already caps answers at this size; the adapter checks
/// again so that it stays safe when called from elsewhere (tools, tests).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Content-Type of form-encoded requests.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// Content-Type of JSON requests.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Why an adapter configuration cannot be compiled. `gavel check` refuses most of these first;
/// compiling checks again so that an adapter never runs on a template it cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterError {
    /// `request` is neither "json" nor "form", or `response` neither "json" nor "xml": the key
    /// and the value found.
    UnknownKind { key: &'static str, value: String },
    /// A template names a placeholder that does not exist: the body ("ping_body"/"post_body"),
    /// the field and the placeholder.
    UnknownPlaceholder {
        body: &'static str,
        field: String,
        placeholder: String,
    },
    /// A ping template names something a ping may not carry (a bid id, a price, consent, or a
    /// personal lead field): pings go to buyers before anyone bought the consumer's identity.
    NotAllowedInPing { field: String, placeholder: String },
    /// A template map or one of its templates is over `MAX_TEMPLATE_FIELDS` /
    /// `MAX_TEMPLATE_BYTES`: the body concerned.
    TemplateTooLarge { body: &'static str },
    /// An answer path that cannot be read: the key, the path and why.
    BadPath {
        key: &'static str,
        path: String,
        why: &'static str,
    },
    /// More than `MAX_ACCEPTED_VALUES` accepted values.
    TooManyAcceptedValues,
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterError::UnknownKind { key, value } => {
                write!(f, "adapter.{}: unknown kind {:?}", key, value)
            }
            AdapterError::UnknownPlaceholder {
                body,
                field,
                placeholder,
            } => write!(
                f,
                "adapter.{}.{}: unknown placeholder {{{}}}",
                body, field, placeholder
            ),
            AdapterError::NotAllowedInPing { field, placeholder } => write!(
                f,
                "adapter.ping_body.{}: {{{}}} cannot be sent in a ping",
                field, placeholder
            ),
            AdapterError::TemplateTooLarge { body } => write!(
                f,
                "adapter.{}: more than {} fields or a template over {} bytes",
                body, MAX_TEMPLATE_FIELDS, MAX_TEMPLATE_BYTES
            ),
            AdapterError::BadPath { key, path, why } => {
                write!(f, "adapter.{}: {:?}: {}", key, path, why)
            }
            AdapterError::TooManyAcceptedValues => write!(
                f,
                "adapter.accepted_values: more than {} values",
                MAX_ACCEPTED_VALUES
            ),
        }
    }
}

impl std::error::Error for AdapterError {}

impl AdapterError {
    /// The config key at fault under `[buyers.adapter]`: `bid_path`, `ping_body.State`, ...
    pub fn key(&self) -> String {
        match self {
            AdapterError::UnknownKind { key, .. } => key.to_string(),
            AdapterError::UnknownPlaceholder { body, field, .. } => format!("{body}.{field}"),
            AdapterError::NotAllowedInPing { field, .. } => format!("ping_body.{field}"),
            AdapterError::TemplateTooLarge { body } => body.to_string(),
            AdapterError::BadPath { key, .. } => key.to_string(),
            AdapterError::TooManyAcceptedValues => "accepted_values".to_string(),
        }
    }

    /// What is wrong, without the key ([`AdapterError::key`]).
    pub fn message(&self) -> String {
        let full = self.to_string();
        let prefix = format!("adapter.{}: ", self.key());
        match full.strip_prefix(&prefix) {
            Some(rest) => rest.to_string(),
            None => full,
        }
    }
}

impl From<AdapterError> for String {
    fn from(e: AdapterError) -> String {
        e.to_string()
    }
}

/// What one request is built from, per lead.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The lead's id, sent to buyers as the ping id.
    pub ping_id: &'a str,
    /// The buyer's own bid id from its ping answer, if it gave one (posts only).
    pub bid_id: Option<&'a str>,
    /// The price of the post, in cents (posts only).
    pub price_cents: Option<Cents>,
    /// The campaign's id.
    pub campaign: &'a str,
    /// The seller marked the lead as a test (`"test": true`): the buyer must not act on it.
    pub test: bool,
    /// The lead's fields (for a ping the caller may pass the whole lead: the compiled ping
    /// template can only name ping fields).
    pub lead: &'a Fields,
    /// The consent block, when the seller sent one.
    pub consent: Option<&'a Fields>,
}

/// How requests are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Form,
    Json,
}

/// How answers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    Json,
    Xml,
}

/// A buyer's request and answer formats, compiled once per config snapshot.
#[derive(Debug, Clone)]
pub struct Adapter {
    request: RequestKind,
    response: ResponseKind,
    ping: Vec<Field>,
    post: Vec<Field>,
    bid: Option<AnswerPath>,
    bid_id: Option<AnswerPath>,
    accepted: Option<AnswerPath>,
    accepted_values: Vec<String>,
    reason: Option<AnswerPath>,
}

/// One request field: its name and its template.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    parts: Vec<Part>,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    PingId,
    BidId,
    Price,
    Campaign,
    Test,
    Lead(String),
    Consent(String),
}

/// A compiled answer path: the text as configured (for reasons) and its names.
#[derive(Debug, Clone)]
struct AnswerPath {
    text: String,
    names: Vec<String>,
}

/// What an answer holds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'a> {
    /// Nothing at that path.
    Missing,
    /// JSON `null`.
    Null,
    /// Text: a decoded JSON string, a number or boolean as written, an object or array as its
    /// JSON text, or an XML element's trimmed text content.
    Text(Cow<'a, str>),
    /// An XML element holding child elements: no single value.
    Elements,
    /// An XML value with a reference the exchange does not expand (`&d;`, `&#0;`), or a JSON
    /// string with an escape that names no character (a lone surrogate): what it says is not
    /// known.
    Unreadable,
}

impl Found<'_> {
    /// Non-empty text, clipped to `MAX_ANSWER_STRING` so that a buyer cannot bloat the journal.
    fn clipped(&self) -> Option<String> {
        match self {
            Found::Text(t) if !t.trim().is_empty() => Some(clip(t.trim())),
            _ => None,
        }
    }
}

/// The answer could not be read at all.
struct Unparsable;

impl Adapter {
    /// Checks and compiles a buyer's adapter config.
    /// Every problem `compile` would stop at the first of, in the order of the keys.
    pub fn problems(cfg: &AdapterConfig) -> Vec<AdapterError> {
        let mut out = Vec::new();
        let response = match cfg.response.as_str() {
            "json" => Some(ResponseKind::Json),
            "xml" => Some(ResponseKind::Xml),
            _ => None,
        };
        if let Err(e) = Adapter::compile(&AdapterConfig {
            ping_body: Default::default(),
            post_body: Default::default(),
            bid_path: None,
            bid_id_path: None,
            accepted_path: None,
            reason_path: None,
            accepted_values: None,
            ..cfg.clone()
        }) {
            out.push(e);
        }
        for (body, map, is_ping) in [
            ("ping_body", &cfg.ping_body, true),
            ("post_body", &cfg.post_body, false),
        ] {
            if map.len() > MAX_TEMPLATE_FIELDS {
                out.push(AdapterError::TemplateTooLarge { body });
                continue;
            }
            // One field at a time, so that each bad one is told.
            for (name, template) in map {
                let one = std::collections::BTreeMap::from([(name.clone(), template.clone())]);
                if let Err(e) = compile_body(body, &one, is_ping) {
                    out.push(e);
                }
            }
        }
        if let Some(response) = response {
            for (key, p) in [
                ("bid_path", &cfg.bid_path),
                ("bid_id_path", &cfg.bid_id_path),
                ("accepted_path", &cfg.accepted_path),
                ("reason_path", &cfg.reason_path),
            ] {
                if let Some(Err(e)) = p.as_deref().map(|t| compile_path(key, t, response)) {
                    out.push(e);
                }
            }
        }
        if cfg.accepted_values.as_ref().map_or(0, Vec::len) > MAX_ACCEPTED_VALUES {
            out.push(AdapterError::TooManyAcceptedValues);
        }
        out
    }

    pub fn compile(cfg: &AdapterConfig) -> Result<Adapter, AdapterError> {
        let request = match cfg.request.as_str() {
            "form" => RequestKind::Form,
            "json" => RequestKind::Json,
            other => {
                return Err(AdapterError::UnknownKind {
                    key: "request",
                    value: other.to_string(),
                })
            }
        };
        let response = match cfg.response.as_str() {
            "json" => ResponseKind::Json,
            "xml" => ResponseKind::Xml,
            other => {
                return Err(AdapterError::UnknownKind {
                    key: "response",
                    value: other.to_string(),
                })
            }
        };
        let ping = compile_body("ping_body", &cfg.ping_body, true)?;
        let post = compile_body("post_body", &cfg.post_body, false)?;
        let path = |key: &'static str, p: &Option<String>| -> Result<_, AdapterError> {
            p.as_deref()
                .map(|text| compile_path(key, text, response))
                .transpose()
        };
        if cfg.accepted_values.as_ref().map_or(0, Vec::len) > MAX_ACCEPTED_VALUES {
            return Err(AdapterError::TooManyAcceptedValues);
        }
        Ok(Adapter {
            request,
            response,
            ping,
            post,
            bid: path("bid_path", &cfg.bid_path)?,
            bid_id: path("bid_id_path", &cfg.bid_id_path)?,
            accepted: path("accepted_path", &cfg.accepted_path)?,
            accepted_values: cfg.accepted_values.clone().unwrap_or_default(),
            reason: path("reason_path", &cfg.reason_path)?,
        })
    }

    /// Content-Type of the requests this adapter writes.
    pub fn content_type(&self) -> &'static str {
        match self.request {
            RequestKind::Form => FORM_CONTENT_TYPE,
            RequestKind::Json => JSON_CONTENT_TYPE,
        }
    }

    pub fn request_kind(&self) -> RequestKind {
        self.request
    }

    pub fn response_kind(&self) -> ResponseKind {
        self.response
    }

    /// Whether the config gave a ping template. Without one the ping body is empty (`{}` for
    /// JSON): the exchange sends a JSON adapter's buyer the native ping instead
    /// (`config::Buyer::templated`), and requires a form adapter's template.
    pub fn has_ping_body(&self) -> bool {
        !self.ping.is_empty()
    }

    /// Whether the config gave a post template (see `has_ping_body`).
    pub fn has_post_body(&self) -> bool {
        !self.post.is_empty()
    }

    /// Appends the ping body to `out` (like `lead::write_ping`, it does not clear `out`, so a
    /// caller may write it after other bytes). See [`Adapter::write_post`] for the rendering.
    /// A personal member nested in an array or object the template names is left out
    /// (`lead::ping_safe`). `ping_fields` are the lead's campaign's: a dotted placeholder,
    /// `{lead.vehicle.year}`, reads a member of that very name only when it is one of them,
    /// and into `vehicle` only when that is one (a seller's `"vehicle.year"` member is no
    /// ping field unless named so, and may hold anything; nor is `vehicle` because
    /// `"vehicle.year"` is).
    pub fn write_ping(&self, out: &mut Vec<u8>, ctx: &Ctx<'_>, ping_fields: &[String]) {
        let dotted = self.ping.iter().flat_map(|f| &f.parts).any(|p| match p {
            Part::Lead(f) => f.contains('.'),
            _ => false,
        });
        let only_pinged;
        let ctx = if dotted {
            only_pinged = ctx.lead.select(ping_fields.iter().map(String::as_str));
            &Ctx {
                lead: &only_pinged,
                ..*ctx
            }
        } else {
            ctx
        };
        let named = self
            .ping
            .iter()
            .flat_map(|f| &f.parts)
            .filter_map(|p| match p {
                Part::Lead(f) => Some(f.as_str()),
                _ => None,
            })
            // A dotted name reads into the object its first name holds: scrubbed whole.
            .flat_map(|f| [Some(f), f.split_once('.').map(|(head, _)| head)])
            .flatten();
        match crate::lead::ping_safe(ctx.lead, named) {
            Some(safe) => self.write_body(
                out,
                &self.ping,
                &Ctx {
                    lead: &safe,
                    ..*ctx
                },
            ),
            None => self.write_body(out, &self.ping, ctx),
        }
    }

    /// Appends the post body to `out` (not cleared first).
    ///
    /// Every placeholder renders as text: `{price}` as dollars (`42.5`), `{bid_id}` and a
    /// missing lead or consent field as the empty string, a lead number or boolean as written,
    /// an array or object as its JSON text. Form bodies percent-encode names and values.
    /// In JSON bodies a template that is exactly one placeholder keeps the JSON type of what
    /// it names (a lead's `"age": 34` stays a number, `{price}` is the number `42.5`,
    /// `disclosed_buyers` stays an array), as the native protocol would send it; a missing
    /// lead or consent field, and `{bid_id}` of a bid that came without one, is `null`, and
    /// `{price}` without a price `""`; a template mixing text and placeholders is a string.
    pub fn write_post(&self, out: &mut Vec<u8>, ctx: &Ctx<'_>) {
        self.write_body(out, &self.post, ctx);
    }

    fn write_body(&self, out: &mut Vec<u8>, fields: &[Field], ctx: &Ctx<'_>) {
        match self.request {
            RequestKind::Form => {
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b'&');
                    }
                    form_escape(out, &f.name);
                    out.push(b'=');
                    for p in &f.parts {
                        render_text(out, p, ctx, Escape::Form);
                    }
                }
            }
            RequestKind::Json => {
                out.push(b'{');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'"');
                    json_escape(out, &f.name);
                    out.extend_from_slice(b"\":");
                    match f.parts.as_slice() {
                        [only] if render_typed(out, only, ctx) => {}
                        parts => {
                            out.push(b'"');
                            for p in parts {
                                render_text(out, p, ctx, Escape::Json);
                            }
                            out.push(b'"');
                        }
                    }
                }
                out.push(b'}');
            }
        }
    }

    /// A buyer's answer to a ping, by the native rules: 204, a bid of 0, `null` or empty text is
    /// no bid; a non-2xx status is an error; an answer that cannot be read, a missing bid, a
    /// negative or non-numeric bid is invalid. With no `bid_path` a JSON answer is read as a
    /// native one (`{"bid": ...}`); an XML answer cannot be read without one.
    pub fn parse_bid(&self, status: u16, body: &[u8]) -> PingOutcome {
        if status == 204 {
            return PingOutcome::NoBid;
        }
        if !(200..300).contains(&status) {
            return PingOutcome::Error(format!("status {}", status));
        }
        let Some(bid_path) = &self.bid else {
            return match self.response {
                ResponseKind::Json => crate::lead::parse_bid(status, body),
                ResponseKind::Xml => PingOutcome::Invalid("no bid_path to read the answer".into()),
            };
        };
        let [bid, bid_id] = match self.lookup(body, [Some(bid_path), self.bid_id.as_ref()]) {
            Ok(found) => found,
            Err(Unparsable) => return PingOutcome::Invalid("unparsable answer".into()),
        };
        let text = match &bid {
            Found::Missing => {
                return PingOutcome::Invalid(format!("no bid at {}", clip(&bid_path.text)))
            }
            Found::Null => return PingOutcome::NoBid,
            Found::Unreadable => return PingOutcome::Invalid("unparsable answer".into()),
            Found::Elements => {
                return PingOutcome::Invalid(format!(
                    "{} holds elements, not a bid",
                    clip(&bid_path.text)
                ))
            }
            Found::Text(t) => t.trim(),
        };
        if text.is_empty() || text == "null" {
            return PingOutcome::NoBid;
        }
        match parse_cents(text) {
            Some(0) => PingOutcome::NoBid,
            Some(c) if c < 0 => PingOutcome::Invalid("negative bid".into()),
            Some(c) if c > MAX_CENTS => PingOutcome::Invalid("bid out of range".into()),
            // As natively: an id that is a boolean, an object or an array names no bid.
            Some(_) if !self.bid_id_is_scalar(body) => {
                PingOutcome::Invalid("bid_id is not a string or a number".into())
            }
            // Quoted back, an id must be the buyer's own text.
            Some(_) if matches!(bid_id, Found::Unreadable) => {
                PingOutcome::Invalid("unparsable answer".into())
            }
            Some(cents) => match &bid_id {
                Found::Text(t) if !t.trim().is_empty() => match SmallText::whole(t.trim()) {
                    Some(id) => PingOutcome::Bid {
                        cents,
                        bid_id: Some(id),
                    },
                    // The post quotes the id back: a cut one would name a bid never made.
                    None => PingOutcome::Invalid(format!(
                        "bid_id over {} bytes",
                        crate::lead::MAX_BID_ID_BYTES
                    )),
                },
                _ => PingOutcome::Bid {
                    cents,
                    bid_id: None,
                },
            },
            // A number all the same, but past what the exchange counts in cents (`1e12`,
            // `1e400`); Rust's own words for infinity and NaN have no digit.
            None if text
                .parse::<f64>()
                .is_ok_and(|v| v.is_infinite() || v.abs() * 100.0 > MAX_CENTS as f64)
                && text.bytes().any(|b| b.is_ascii_digit()) =>
            {
                PingOutcome::Invalid("bid out of range".into())
            }
            None => PingOutcome::Invalid("bid is not a number".into()),
        }
    }

    /// A buyer's answer to a post. A non-2xx status is a rejection, as natively. Without an
    /// `accepted_path` any 2xx is a sale. With one, the text there must equal one of
    /// `accepted_values` ignoring ASCII case (no values configured: "accepted", the native
    /// word); anything else is a rejection whose reason is the text at `reason_path`, else the
    /// status text itself. The text at `bid_id_path`, when the post answer has one, is kept as
    /// the buyer's lead id (legacy APIs often answer a post with their lead id there).
    pub fn parse_post(&self, status: u16, body: &[u8]) -> PostOutcome {
        if !(200..300).contains(&status) {
            return PostOutcome::Rejected {
                reason: format!("status {}", status),
            };
        }
        let paths = [
            self.accepted.as_ref(),
            self.reason.as_ref(),
            self.bid_id.as_ref(),
        ];
        if self.accepted.is_none() && self.response == ResponseKind::Json {
            // As the native protocol reads it: `{"status": "accepted"}`.
            return crate::lead::parse_post_answer(status, body);
        }
        let found = self.lookup(body, paths);
        let Some(accepted_path) = &self.accepted else {
            let buyer_lead_id = match &found {
                Ok([_, _, id]) => id.clipped(),
                Err(Unparsable) => None,
            };
            return PostOutcome::Accepted { buyer_lead_id };
        };
        let [status_text, reason, id] = match found {
            Ok(f) => f,
            Err(Unparsable) => {
                return PostOutcome::Rejected {
                    reason: "unparsable answer".into(),
                }
            }
        };
        let said = match &status_text {
            Found::Text(t) => t.trim(),
            Found::Unreadable => {
                return PostOutcome::Rejected {
                    reason: "unparsable answer".into(),
                }
            }
            _ => "",
        };
        let accepted = if self.accepted_values.is_empty() {
            said.eq_ignore_ascii_case("accepted")
        } else {
            self.accepted_values
                .iter()
                .any(|v| v.trim().eq_ignore_ascii_case(said))
        };
        if accepted {
            return PostOutcome::Accepted {
                buyer_lead_id: id.clipped(),
            };
        }
        let reason = match (reason.clipped(), status_text.clipped()) {
            (Some(r), _) => r,
            (None, Some(s)) => s,
            (None, None) => format!("no status at {}", clip(&accepted_path.text)),
        };
        PostOutcome::Rejected { reason }
    }

    /// Whether the JSON answer's `bid_id_path`, when it holds anything, holds a string, a
    /// number or `null` (XML text always is one).
    fn bid_id_is_scalar(&self, body: &[u8]) -> bool {
        let (ResponseKind::Json, Some(path)) = (self.response, &self.bid_id) else {
            return true;
        };
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let Ok(doc) = std::str::from_utf8(body) else {
            return true;
        };
        match json::lookup(doc, &path.names) {
            Ok(Some(raw)) => !matches!(
                raw.get().trim_start().as_bytes().first(),
                Some(b't' | b'f' | b'{' | b'[')
            ),
            _ => true,
        }
    }

    /// What the answer holds at each path (`None` paths are `Missing`).
    fn lookup<'b, const N: usize>(
        &self,
        body: &'b [u8],
        paths: [Option<&AnswerPath>; N],
    ) -> Result<[Found<'b>; N], Unparsable> {
        if body.len() > MAX_ANSWER_BYTES {
            return Err(Unparsable);
        }
        match self.response {
            // The XML reader weighs a byte order mark against the declared encoding itself.
            ResponseKind::Xml => {
                xml::find_texts(body, paths.map(|p| p.map(|p| p.names.as_slice())))
                    .map_err(|_| Unparsable)
            }
            ResponseKind::Json => {
                // Servers on some platforms start their answers with a UTF-8 byte order mark.
                let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
                let doc = std::str::from_utf8(body).map_err(|_| Unparsable)?;
                // Reject garbage even when no path is asked for.
                let mut out: [Found<'b>; N] = std::array::from_fn(|_| Found::Missing);
                if serde_json::from_str::<serde::de::IgnoredAny>(doc).is_err() {
                    return Err(Unparsable);
                }
                for (slot, path) in out.iter_mut().zip(paths) {
                    if let Some(p) = path {
                        *slot = match json::lookup(doc, &p.names) {
                            Ok(Some(raw)) => json::found(raw),
                            Ok(None) => Found::Missing,
                            Err(_) => return Err(Unparsable),
                        };
                    }
                }
                Ok(out)
            }
        }
    }
}

fn compile_body(
    body: &'static str,
    map: &std::collections::BTreeMap<String, String>,
    is_ping: bool,
) -> Result<Vec<Field>, AdapterError> {
    if map.len() > MAX_TEMPLATE_FIELDS {
        return Err(AdapterError::TemplateTooLarge { body });
    }
    let mut fields = Vec::with_capacity(map.len());
    for (name, template) in map {
        if name.len() > MAX_TEMPLATE_BYTES || template.len() > MAX_TEMPLATE_BYTES {
            return Err(AdapterError::TemplateTooLarge { body });
        }
        let parts =
            compile_template(template).map_err(|placeholder| AdapterError::UnknownPlaceholder {
                body,
                field: name.clone(),
                placeholder,
            })?;
        if is_ping {
            for p in &parts {
                let banned = match p {
                    Part::BidId => Some("bid_id".to_string()),
                    Part::Price => Some("price".to_string()),
                    Part::Consent(f) => Some(format!("consent.{}", f)),
                    Part::Lead(f) if f.split('.').any(is_personal_field) => {
                        Some(format!("lead.{}", f))
                    }
                    _ => None,
                };
                if let Some(placeholder) = banned {
                    return Err(AdapterError::NotAllowedInPing {
                        field: name.clone(),
                        placeholder,
                    });
                }
            }
        }
        fields.push(Field {
            name: name.clone(),
            parts,
        });
    }
    Ok(fields)
}

/// Splits a template into parts the way `config::placeholders` reads it: `{name}` is a
/// placeholder, a `{` with no `}` after it is literal text. Err: an unknown placeholder.
fn compile_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut pieces = template.split('{');
    if let Some(first) = pieces.next() {
        literal.push_str(first);
    }
    for piece in pieces {
        let Some((name, after)) = piece.split_once('}') else {
            literal.push('{');
            literal.push_str(piece);
            continue;
        };
        let part = match name {
            "ping_id" => Part::PingId,
            "bid_id" => Part::BidId,
            "price" => Part::Price,
            "campaign" => Part::Campaign,
            "test" => Part::Test,
            _ => match (name.strip_prefix("lead."), name.strip_prefix("consent.")) {
                (Some(f), _) if !f.is_empty() => Part::Lead(f.to_string()),
                (_, Some(f)) if !f.is_empty() => Part::Consent(f.to_string()),
                _ => return Err(name.to_string()),
            },
        };
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
        literal.push_str(after);
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

fn compile_path(
    key: &'static str,
    text: &str,
    response: ResponseKind,
) -> Result<AnswerPath, AdapterError> {
    let bad = |why: &'static str| AdapterError::BadPath {
        key,
        path: text.to_string(),
        why,
    };
    let names = match response {
        ResponseKind::Xml => xml::parse_path(text).map_err(bad)?,
        ResponseKind::Json => parse_pointer(text).map_err(bad)?,
    };
    if names.len() > MAX_PATH_DEPTH {
        return Err(bad("deeper than the path limit"));
    }
    Ok(AnswerPath {
        text: text.to_string(),
        names,
    })
}

/// RFC 6901 reference tokens, unescaped (`~1` is `/`, `~0` is `~`). "" is the whole answer.
fn parse_pointer(text: &str) -> Result<Vec<String>, &'static str> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Err("a JSON pointer starts with '/'");
    };
    let mut out = Vec::new();
    for token in rest.split('/') {
        let mut s = String::with_capacity(token.len());
        let mut chars = token.chars();
        while let Some(c) = chars.next() {
            if c != '~' {
                s.push(c);
                continue;
            }
            match chars.next() {
                Some('0') => s.push('~'),
                Some('1') => s.push('/'),
                _ => return Err("'~' in a JSON pointer is written ~0, and '/' ~1"),
            }
        }
        out.push(s);
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Escape {
    Form,
    Json,
}

/// A placeholder as text, escaped for where it goes.
fn render_text(out: &mut Vec<u8>, part: &Part, ctx: &Ctx<'_>, esc: Escape) {
    let put = |out: &mut Vec<u8>, s: &str| match esc {
        Escape::Form => form_escape(out, s),
        Escape::Json => json_escape(out, s),
    };
    match part {
        Part::Literal(s) => put(out, s),
        Part::PingId => put(out, ctx.ping_id),
        Part::BidId => put(out, ctx.bid_id.unwrap_or("")),
        Part::Campaign => put(out, ctx.campaign),
        Part::Test => put(out, if ctx.test { "true" } else { "false" }),
        // Dollars are digits, '.' and '-': nothing to escape in either encoding.
        // In text (a form value, a JSON string) a price is written as money is on a form:
        // dollars and two decimals, `42.50`.
        Part::Price => {
            if let Some(c) = ctx.price_cents {
                let (whole, cents) = (c / 100, (c % 100).abs());
                if c < 0 && whole == 0 {
                    out.push(b'-');
                }
                out.extend_from_slice(format!("{whole}.{cents:02}").as_bytes());
            }
        }
        Part::Lead(f) => value_text(
            out,
            ctx.lead.get_path(f).as_ref().map(PathValue::field),
            esc,
        ),
        Part::Consent(f) => value_text(
            out,
            ctx.consent
                .and_then(|c| c.get_path(f))
                .as_ref()
                .map(PathValue::field),
            esc,
        ),
    }
}

fn value_text(out: &mut Vec<u8>, v: Option<LeadField<'_>>, esc: Escape) {
    match v {
        None | Some(LeadField::Null) => {}
        // A number's text is digits, '.', '-', '+', 'e': nothing to escape in a JSON string,
        // but a form reads `+` as a space (`1e+3` would reach the buyer as `1e 3`).
        Some(LeadField::Num(n)) => match esc {
            Escape::Form => form_escape(out, n),
            Escape::Json => out.extend_from_slice(n.as_bytes()),
        },
        Some(LeadField::Bool(b)) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Some(LeadField::Str(text) | LeadField::Array(text) | LeadField::Object(text)) => {
            match esc {
                Escape::Form => form_escape(out, text),
                Escape::Json => json_escape(out, text),
            }
        }
    }
}

/// A JSON body's value for a template that is one placeholder, in its own JSON type. False
/// when the part is rendered as a string instead (literals, ids, a missing value).
fn render_typed(out: &mut Vec<u8>, part: &Part, ctx: &Ctx<'_>) -> bool {
    let v = match part {
        Part::Price => match ctx.price_cents {
            Some(c) => {
                write_dollars(out, c);
                return true;
            }
            None => return false,
        },
        Part::Test => {
            out.extend_from_slice(if ctx.test { b"true" } else { b"false" });
            return true;
        }
        // The bid's own id, a string; a bid that came without one has none, as a missing
        // lead field has none (the native post leaves `bid_id` out).
        Part::BidId if ctx.bid_id.is_none() => {
            out.extend_from_slice(b"null");
            return true;
        }
        Part::Lead(f) => ctx.lead.get_path(f),
        Part::Consent(f) => ctx.consent.and_then(|c| c.get_path(f)),
        _ => return false,
    };
    match v.as_ref().map(PathValue::field) {
        // A field the lead does not have (or has as null) is null, as a native ping says,
        // rather than an empty string a buyer would take for a value.
        None | Some(LeadField::Null) => {
            out.extend_from_slice(b"null");
            true
        }
        Some(LeadField::Str(_)) => false,
        Some(v) => {
            v.write_json(out);
            true
        }
    }
}

/// application/x-www-form-urlencoded (WHATWG URL standard): ASCII alphanumerics and `*-._` as
/// they are, space as `+`, every other byte of the UTF-8 text as `%XX`.
pub fn form_escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
    }
}

/// The inside of a JSON string (no quotes): `"` `\` and control characters escaped.
fn json_escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
}

fn clip(s: &str) -> String {
    let mut cut = s.len().min(MAX_ANSWER_STRING);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}
