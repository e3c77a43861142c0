//! The lead's wire formats: the seller's request, its validation, the ping and post payloads sent
//! to buyers, the buyers' answers and the seller's answer. Pure functions over bytes and values.

use crate::auction::{Outcome, PingOutcome, PostOutcome};
use crate::config::Campaign;
use crate::http::push_u64;
use crate::money::{parse_cents, write_dollars, Cents, MAX_CENTS};
use crate::text::SmallText;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

pub mod fields;
mod raw;
mod scan;
mod strict;
pub use fields::{Field, Fields, Member, PathValue};

/// Longest string kept from a buyer's answer (bid ids, reasons), so a buyer cannot bloat the journal.
pub const MAX_ANSWER_STRING: usize = 128;
/// Most fields a lead may carry.
pub const MAX_LEAD_FIELDS: usize = fields::MAX_FIELDS;

/// A seller's lead as posted to `/v1/leads` or `/v1/ping`.
#[derive(Debug, Clone)]
pub struct LeadRequest {
    pub campaign: String,
    pub source: Option<String>,
    pub test: bool,
    pub lead: Fields,
    pub consent: Option<Fields>,
}

/// A request the exchange refuses. `status` is the HTTP status; `code` and `field` go in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>, field: Option<&str>) -> Refusal {
        Refusal {
            status: 400,
            code: "bad_request",
            message: message.into(),
            field: field.map(str::to_string),
        }
    }
    fn content(
        code: &'static str,
        message: impl Into<String>,
        field: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status: 422,
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

/// Whether a JSON text is an object: its first byte after white space is `{`. serde's derived
/// structs also read an array, by position (`["auto", ...]`, `[44.5, "b-1"]`), which no answer or
/// request of the protocol is; each body read into one is checked with this first.
fn json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// Whether a body is JSON other than an object (an array, a number, ...): refused as such,
/// where malformed JSON gets the parser's own explanation.
fn other_json(body: &[u8]) -> bool {
    !json_object(body) && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// Why an answer that is not a JSON object is refused: it is other JSON, or none.
fn not_an_object(body: &[u8]) -> &'static str {
    if other_json(body) {
        "answer is not a JSON object"
    } else {
        "unparsable answer"
    }
}

#[derive(Deserialize)]
struct RawRequest {
    campaign: Option<Value>,
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    test: Option<Value>,
    #[serde(default)]
    lead: Option<Member>,
    #[serde(default)]
    consent: Option<Member>,
}

/// A JSON object of the request (`lead`, `consent`), read compactly. `None` when absent or null.
fn object(member: Option<Member>, name: &str) -> Result<Option<Fields>, Refusal> {
    match member {
        None | Some(Member::Null) => Ok(None),
        Some(Member::Object(fields)) => Ok(Some(fields)),
        Some(Member::NotObject) => Err(Refusal::bad_request(
            format!("{} must be an object", name),
            Some(name),
        )),
        Some(Member::Refused(why, key)) => {
            let message = if why.starts_with(fields::TOO_MANY_FIELDS) {
                format!("{} has more than {} fields", name, MAX_LEAD_FIELDS)
            } else {
                format!("{} is not valid: {}", name, why)
            };
            // The one field at fault, when there is one (`lead.age`), as a 422 names it.
            let field = key.map(|k| format!("{name}.{k}"));
            Err(Refusal::bad_request(
                message,
                Some(field.as_deref().unwrap_or(name)),
            ))
        }
    }
}

/// Parse a seller's body. Malformed JSON or a wrong shape is a 400.
/// What a seller is told of a request nesting more arrays and objects than serde_json reads
/// (127, the request's own object included).
pub(crate) const NESTED_TOO_DEEP: &str = "nested deeper than 127 levels of arrays and objects";

/// serde_json's message for a refused body, its recursion limit said in the seller's terms.
fn said(e: &serde_json::Error) -> String {
    e.to_string()
        .replace("recursion limit exceeded", NESTED_TOO_DEEP)
}

pub fn parse_request(body: &[u8]) -> Result<LeadRequest, Refusal> {
    // The usual plain lead in one byte scan; serde_json reads the rest and explains refusals.
    match scan::lead_request(body) {
        Some(req) => Ok(req),
        None => parse_request_serde(body),
    }
}

/// A seller's body read with serde_json: any JSON, and the refusal that says what is wrong.
fn parse_request_serde(body: &[u8]) -> Result<LeadRequest, Refusal> {
    if other_json(body) {
        return Err(Refusal::bad_request("body must be a JSON object", None));
    }
    let malformed = |e: serde_json::Error| {
        Refusal::bad_request(
            format!("body is not a valid lead request: {}", said(&e)),
            None,
        )
    };
    // One pass: `lead` and `consent` become `Fields` as the body is read.
    let raw: RawRequest = Member::read_with_capacity(body.len(), || serde_json::from_slice(body))
        .map_err(|e| match strict::check(body) {
        // Malformed JSON: told where in the body, not where in its `lead`.
        Err(s) if s.is_syntax() || s.is_eof() => malformed(s),
        _ => malformed(e),
    })?;
    let campaign = match raw.campaign {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(Refusal::bad_request(
                "campaign must be a non-empty string",
                Some("campaign"),
            ))
        }
        None => {
            return Err(Refusal::bad_request(
                "campaign is required",
                Some("campaign"),
            ))
        }
    };
    let source = match raw.source {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(Refusal::bad_request(
                "source must be a string",
                Some("source"),
            ))
        }
    };
    let test = match raw.test {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(Refusal::bad_request(
                "test must be true or false",
                Some("test"),
            ))
        }
    };
    let lead = match object(raw.lead, "lead")? {
        Some(l) => l,
        None => return Err(Refusal::bad_request("lead is required", Some("lead"))),
    };
    let consent = object(raw.consent, "consent")?;
    // A key twice or a number past an `f64` anywhere else, however deep or in a member the
    // exchange does not read, is refused too: the reading above keeps one of the two keys, or
    // skips the number, where a buyer's parser may not.
    strict::check(body).map_err(malformed)?;
    Ok(LeadRequest {
        campaign,
        source,
        test,
        lead,
        consent,
    })
}

/// A string (trimmed) or a number's text.
fn as_text(v: Field<'_>) -> Option<&str> {
    match v {
        Field::Str(s) => Some(s.trim()),
        Field::Num(n) => Some(n),
        _ => None,
    }
}

/// Check a lead against its campaign: required fields, the shape of well-known fields, consent.
pub fn validate(req: &LeadRequest, campaign: &Campaign) -> Result<(), Refusal> {
    for f in &campaign.required_fields {
        match req.lead.get(f) {
            Some(v) if !v.is_blank() => {}
            _ => {
                return Err(Refusal::content(
                    "missing_field",
                    format!("{} is required for campaign {}", f, campaign.id),
                    format!("lead.{}", f),
                ))
            }
        }
    }
    validate_shapes(req)?;
    validate_consent(req, campaign)
}

/// A seller-side ping: the shape of the fields it carries, and the campaign's required fields
/// that are also ping fields (what buyers price on; the other required fields and the consent
/// come with its post).
pub fn validate_ping(req: &LeadRequest, campaign: &Campaign) -> Result<(), Refusal> {
    for f in &campaign.required_fields {
        if !campaign.ping_fields.contains(f) {
            continue;
        }
        match req.lead.get(f) {
            Some(v) if !v.is_blank() => {}
            _ => {
                return Err(Refusal::content(
                    "missing_field",
                    format!(
                        "{} is required for campaign {}, in its ping too (buyers bid on it)",
                        f, campaign.id
                    ),
                    format!("lead.{}", f),
                ))
            }
        }
    }
    validate_shapes(req)?;
    // A ping's consent is checked with its post; one already for another vertical would only
    // find no buyer (they are chosen by it) and be told no_bid: the seller hears why instead.
    match &req.consent {
        Some(c) => check_consent_vertical(c, campaign),
        None => Ok(()),
    }
}

/// USPS codes of the states, the District of Columbia, the inhabited territories, the freely
/// associated states (FM, MH, PW, served by USPS) and the armed forces' postal regions, sorted
/// for a binary search.
const US_STATES: [&str; 62] = [
    "AA", "AE", "AK", "AL", "AP", "AR", "AS", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "FM", "GA",
    "GU", "HI", "IA", "ID", "IL", "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MH", "MI", "MN", "MO",
    "MP", "MS", "MT", "NC", "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA", "PR",
    "PW", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VI", "VT", "WA", "WI", "WV", "WY",
];

/// A USPS state code, in either case.
pub(crate) fn is_us_state(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 2 {
        return false;
    }
    let upper = [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()];
    US_STATES
        .binary_search_by(|code| code.as_bytes().cmp(&upper[..]))
        .is_ok()
}

/// A lead's `state` and `zip` as buyers get them: a USPS code the seller wrote in lower case
/// or with blanks around it (` tx`) becomes its code (`TX`); a zip code with blanks around it
/// (` 77002`) or sent as a JSON number (`77002`) becomes its string (`"77002"`); anything else
/// is left as sent, for validation to judge. The canonical spellings, the usual ones, cost a
/// check and no copy.
pub fn normalize_codes(lead: &mut Fields) {
    let state = match lead.get("state") {
        Some(Field::Str(s)) => {
            let t = s.trim();
            (is_us_state(t) && !(t.len() == s.len() && t.bytes().all(|b| b.is_ascii_uppercase())))
                .then(|| t.to_ascii_uppercase())
        }
        _ => None,
    };
    if let Some(code) = state {
        lead.insert("state".to_string(), Value::String(code));
    }
    let zip = match lead.get("zip") {
        Some(Field::Str(s)) => {
            let t = s.trim();
            (t.len() != s.len() && is_zip(t)).then(|| t.to_string())
        }
        Some(Field::Num(n)) => is_zip(n).then(|| n.to_string()),
        _ => None,
    };
    if let Some(zip) = zip {
        lead.insert("zip".to_string(), Value::String(zip));
    }
}

/// Five digits, or ZIP+4 (`77002-1234`).
fn is_zip(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() == 5 && b.iter().all(u8::is_ascii_digit))
        || (b.len() == 10 && b[5] == b'-' && b[..5].iter().chain(&b[6..]).all(u8::is_ascii_digit))
}

/// The shape of well-known fields, where present: state, zip, phone, email.
/// Longest `source` a seller may send (a traffic source's id; journaled with the lead).
pub const MAX_SOURCE_BYTES: usize = 256;

/// `s` cut to at most `max` bytes at a character boundary.
pub fn clip_str(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// The consumer's name and address fields: text a buyer's system files as it is, so a
/// number, an object or a control character in one is refused rather than passed on. (Fields
/// such as `address` or `name` are left alone: sellers send them as objects too.)
const TEXT_FIELDS: [&str; 4] = ["first_name", "last_name", "street", "city"];

/// Longest name or address field, in bytes.
pub const MAX_TEXT_FIELD_BYTES: usize = 256;

/// Longest email address (RFC 5321: a 254-byte path less its angle brackets) and local part.
pub const MAX_EMAIL_BYTES: usize = 254;
pub const MAX_EMAIL_LOCAL_BYTES: usize = 64;

/// U+2028 and U+2029 end a line in JavaScript and in many log readers, like a newline.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

fn validate_shapes(req: &LeadRequest) -> Result<(), Refusal> {
    if req
        .source
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SOURCE_BYTES)
    {
        return Err(Refusal::content(
            "invalid_field",
            format!("source must be at most {MAX_SOURCE_BYTES} bytes"),
            "source",
        ));
    }
    if let Some(v) = req.lead.get("state").filter(|v| !v.is_blank()) {
        if !as_text(v).is_some_and(is_us_state) {
            return Err(Refusal::content(
                "invalid_field",
                "state must be a two-letter USPS code (TX, CA, DC, PR, ...)",
                "lead.state",
            ));
        }
    }
    if let Some(v) = req.lead.get("zip").filter(|v| !v.is_blank()) {
        let ok = as_text(v).is_some_and(is_zip);
        if !ok {
            return Err(Refusal::content(
                "invalid_field",
                "zip must be 5 digits (or ZIP+4)",
                "lead.zip",
            ));
        }
    }
    if let Some(v) = req.lead.get("phone").filter(|v| !v.is_blank()) {
        if !normalized_phone(v).is_some_and(|d| is_nanp(&d)) {
            return Err(Refusal::content(
                "invalid_field",
                "phone must be a 10-digit US number, its area code and exchange starting \
                 with 2 to 9 (NXX-NXX-XXXX)",
                "lead.phone",
            ));
        }
    }
    for name in TEXT_FIELDS {
        let Some(v) = req.lead.get(name).filter(|v| !v.is_blank()) else {
            continue;
        };
        let ok = match v {
            // Decoded: `\u0000` in the JSON is a control character here.
            Field::Str(s) => {
                s.len() <= MAX_TEXT_FIELD_BYTES
                    && !s.chars().any(|c| c.is_control() || is_line_separator(c))
            }
            _ => false,
        };
        if !ok {
            return Err(Refusal::content(
                "invalid_field",
                format!(
                    "{name} must be text of at most {MAX_TEXT_FIELD_BYTES} bytes, without control characters"
                ),
                format!("lead.{name}"),
            ));
        }
    }
    if let Some(v) = req.lead.get("email").filter(|v| !v.is_blank()) {
        let ok = match v {
            Field::Str(s) => {
                let s = s.trim();
                s.len() <= MAX_EMAIL_BYTES
                    && match s.split_once('@') {
                        Some((local, domain)) => {
                            local.len() <= MAX_EMAIL_LOCAL_BYTES
                                && !local.is_empty()
                                && !domain.contains('@')
                                && domain.contains('.')
                                && !domain.starts_with('.')
                                && !domain.ends_with('.')
                                && !domain.contains("..")
                                && !s.contains(char::is_whitespace)
                        }
                        None => false,
                    }
            }
            _ => false,
        };
        if !ok {
            return Err(Refusal::content(
                "invalid_field",
                "email is not an address",
                "lead.email",
            ));
        }
    }
    Ok(())
}

/// A consent given for another vertical than the campaign's covers none of its buyers.
fn check_consent_vertical(c: &Fields, campaign: &Campaign) -> Result<(), Refusal> {
    if let Some(v) = c.get("vertical").filter(|v| !v.is_blank()) {
        if v.as_str() != Some(campaign.vertical.as_str()) {
            return Err(Refusal::content(
                "consent_mismatch",
                format!(
                    "consent was given for vertical {}, not {}",
                    v, campaign.vertical
                ),
                "consent.vertical",
            ));
        }
    }
    Ok(())
}

fn validate_consent(req: &LeadRequest, campaign: &Campaign) -> Result<(), Refusal> {
    match &req.consent {
        None if campaign.require_consent => {
            return Err(Refusal::content(
                "consent_missing",
                format!("campaign {} requires consent", campaign.id),
                "consent",
            ))
        }
        None => {}
        Some(c) => {
            // A proof is a string: `[]`, `true` or `0` prove nothing (and are refused below).
            let has_proof = ["trustedform_cert_url", "jornaya_leadid"].iter().any(|k| {
                c.get(k)
                    .is_some_and(|v| !v.is_blank() && v.as_str().is_some())
            });
            if campaign.require_consent && !has_proof {
                return Err(Refusal::content(
                    "consent_missing",
                    "consent needs a trustedform_cert_url or a jornaya_leadid",
                    "consent",
                ));
            }
            check_consent_vertical(c, campaign)?;
            match c.get("consented_at").filter(|v| !v.is_blank()) {
                Some(v) => {
                    check_consented_at(v.as_str(), chrono::Utc::now(), campaign)?;
                }
                None if campaign.consent_max_age.is_some() => {
                    return Err(Refusal::content(
                        "missing_field",
                        format!(
                            "campaign {} takes consent only with its consented_at time",
                            campaign.id
                        ),
                        "consent.consented_at",
                    ));
                }
                None => {}
            }
            if let Some(v) = c.get("trustedform_cert_url").filter(|v| !v.is_blank()) {
                if !v.as_str().is_some_and(is_cert_url) {
                    return Err(Refusal::content(
                        "invalid_field",
                        format!(
                            "trustedform_cert_url must be an https:// certificate URL of at \
                             most {MAX_CERT_URL_BYTES} bytes, with a host and no spaces or \
                             control characters"
                        ),
                        "consent.trustedform_cert_url",
                    ));
                }
            }
            if let Some(v) = c.get("jornaya_leadid").filter(|v| !v.is_blank()) {
                if !v.as_str().is_some_and(is_lead_token) {
                    return Err(Refusal::content(
                        "invalid_field",
                        format!(
                            "jornaya_leadid must be a token string of at most \
                             {MAX_LEAD_TOKEN_BYTES} bytes, with no spaces or control characters"
                        ),
                        "consent.jornaya_leadid",
                    ));
                }
            }
            if let Some(v) = c.get("disclosed_buyers") {
                let ok = v.is_null() || v.is_string_array();
                if !ok {
                    return Err(Refusal::content(
                        "invalid_field",
                        "disclosed_buyers must be a list of buyer ids",
                        "consent.disclosed_buyers",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Longest consent certificate URL taken (TrustedForm's are about 70 bytes; browsers keep URLs
/// of a few KiB).
pub const MAX_CERT_URL_BYTES: usize = 2048;

/// Longest lead token taken (a LeadiD token is a 36-byte UUID).
pub const MAX_LEAD_TOKEN_BYTES: usize = 128;

/// A certificate URL a buyer can open: `https://`, a host of letters, digits, `.` and `-`
/// (a port after `:` allowed), and nothing but printable ASCII (RFC 3986 URLs have no space,
/// control character or raw non-ASCII byte; those travel percent-encoded).
fn is_cert_url(u: &str) -> bool {
    let Some(rest) = u
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &u[8..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    u.len() <= MAX_CERT_URL_BYTES
        && u.bytes().all(|b| b.is_ascii_graphic())
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A lead token: printable ASCII, no space, at most [`MAX_LEAD_TOKEN_BYTES`].
fn is_lead_token(t: &str) -> bool {
    t.len() <= MAX_LEAD_TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_graphic())
}

/// How far ahead of the exchange's clock a consent's `consented_at` may be: the seller's
/// clock may run a little fast, but consent given in the future was not given.
pub const CONSENT_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// `consented_at` must be an RFC 3339 time (`2026-11-25T17:59:01Z`) no later than `now` plus
/// [`CONSENT_CLOCK_SKEW`], and no older than the campaign's `consent_max_age` when it has one.
fn check_consented_at(
    v: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    campaign: &Campaign,
) -> Result<(), Refusal> {
    let field = "consent.consented_at";
    let at = v
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
        .ok_or_else(|| {
            Refusal::content(
                "invalid_field",
                "consented_at must be an RFC 3339 time, e.g. 2026-11-25T17:59:01Z",
                field,
            )
        })?;
    if at.with_timezone(&chrono::Utc) > now + CONSENT_CLOCK_SKEW {
        return Err(Refusal::content(
            "invalid_field",
            "consented_at is in the future",
            field,
        ));
    }
    if let Some(max) = campaign.consent_max_age {
        let age = now.signed_duration_since(at.with_timezone(&chrono::Utc));
        if age > max {
            return Err(Refusal::content(
                "consent_expired",
                format!(
                    "consent was given {} ago; campaign {} takes consent at most {} hours old",
                    consent_age_text(age),
                    campaign.id,
                    max.num_hours()
                ),
                field,
            ));
        }
    }
    Ok(())
}

/// A consent's age for a refusal, never rounded down to the limit it broke: whole hours and
/// minutes past them (`24 h 1 min`); at least a minute over the whole hours when any is.
fn consent_age_text(age: chrono::TimeDelta) -> String {
    let minutes = (age.num_seconds().max(0) + 59) / 60;
    let (h, m) = (minutes / 60, minutes % 60);
    match (h, m) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The body of a seller's `/v1/post`: the ping it completes, the full lead, the consent.
pub struct PostRequest {
    pub ping_id: String,
    pub lead: Fields,
    pub consent: Option<Fields>,
    /// The post's `test`, if it has one: it must say what its ping said.
    pub test: Option<bool>,
}

#[derive(Deserialize)]
struct RawPost {
    #[serde(default)]
    ping_id: Option<Value>,
    #[serde(default)]
    lead: Option<Member>,
    #[serde(default)]
    consent: Option<Member>,
    #[serde(default)]
    test: Option<Value>,
}

pub fn parse_post_request(body: &[u8]) -> Result<PostRequest, Refusal> {
    if other_json(body) {
        return Err(Refusal::bad_request("body must be a JSON object", None));
    }
    let m: RawPost = Member::read_with_capacity(body.len(), || serde_json::from_slice(body))
        .map_err(|e| {
            let message = match strict::check(body) {
                // Malformed, or a key given twice: said so, and where.
                Err(s) => format!("body is not a valid post: {}", said(&s)),
                _ if e.is_data() => "body must be a JSON object".to_string(),
                _ => format!("body is not a valid post: {}", said(&e)),
            };
            Refusal::bad_request(message, None)
        })?;
    let ping_id = match m.ping_id {
        Some(Value::String(s)) if !s.is_empty() => s,
        None | Some(Value::Null) => {
            return Err(Refusal::bad_request("ping_id is required", Some("ping_id")))
        }
        Some(Value::String(_)) => {
            return Err(Refusal::bad_request("ping_id is empty", Some("ping_id")))
        }
        Some(_) => {
            return Err(Refusal::bad_request(
                "ping_id must be a string: the ping_id of the /v1/ping answer",
                Some("ping_id"),
            ))
        }
    };
    let lead = match object(m.lead, "lead")? {
        Some(l) => l,
        None => return Err(Refusal::bad_request("lead must be an object", Some("lead"))),
    };
    let consent = object(m.consent, "consent")?;
    let test = match m.test {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => {
            return Err(Refusal::bad_request(
                "test must be true or false",
                Some("test"),
            ))
        }
    };
    strict::check(body).map_err(|e| {
        Refusal::bad_request(format!("body is not a valid post: {}", said(&e)), None)
    })?;
    Ok(PostRequest {
        ping_id,
        lead,
        consent,
        test,
    })
}

/// A post whose `test` is not its ping's: a test ping is posted as a test (no money moves), a
/// real one as real (the buyer pays), never the one turned into the other.
pub fn check_post_test(pinged_test: bool, post_test: Option<bool>) -> Result<(), Refusal> {
    match post_test {
        Some(t) if t != pinged_test => Err(Refusal::content(
            "ping_mismatch",
            if pinged_test {
                "test is false but the ping was a test: send a real consumer with a real ping"
            } else {
                "test is true but the ping was not a test: send test data with a test ping"
            },
            "test",
        )),
        _ => Ok(()),
    }
}

/// A full lead must not contradict what its ping said: every pinged field must hold the same
/// value ([`same_value`]); a field pinged as `null` may be left out, as filters read both alike.
pub fn check_ping_match(pinged: &Fields, full: &Fields) -> Result<(), Refusal> {
    for (k, v) in pinged.iter() {
        let same = |f: Field<'_>| same_value(v, f) || (k == "zip" && same_zip(v, f));
        if !same(full.get(k).unwrap_or(Field::Null)) {
            return Err(Refusal::content(
                "ping_mismatch",
                format!("{} differs from the value pinged", k),
                format!("lead.{}", k),
            ));
        }
    }
    Ok(())
}

/// A ZIP code and its ZIP+4 (`77002`, `"77002-1234"`) name the same place: the five digits
/// agree and at least one of the two is the five digits alone.
fn same_zip(a: Field<'_>, b: Field<'_>) -> bool {
    let zip = |f: Field<'_>| -> Option<String> {
        let s = match f {
            Field::Str(s) => s.trim().to_string(),
            Field::Num(n) => n.to_string(),
            _ => return None,
        };
        let b = s.as_bytes();
        let ok = (b.len() == 5 && b.iter().all(u8::is_ascii_digit))
            || (b.len() == 10
                && b[5] == b'-'
                && b[..5].iter().chain(&b[6..]).all(u8::is_ascii_digit));
        ok.then_some(s)
    };
    match (zip(a), zip(b)) {
        (Some(x), Some(y)) => x[..5] == y[..5] && (x.len() == 5 || y.len() == 5),
        _ => false,
    }
}

/// Whether `b` (a post's value of a field) says what `a` (its ping's) said, as validation and
/// buyer filters read values: numbers by value (`34` and `34.0`), a number and a string holding
/// it (`77002` and `"77002"`, but not `"02134"` and `2134`), strings without surrounding space
/// or ASCII case (`"TX"` and `"tx"`), a boolean and its string; arrays element by element and
/// objects member by member the same way (the post may add members to an object: that adds to
/// the ping, it does not contradict it), leaving out the personal members a ping never carried
/// ([`ping_safe`]).
pub fn same_value(a: Field<'_>, b: Field<'_>) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Field::Array(x) | Field::Object(x), Field::Array(y) | Field::Object(y)) => {
            same_raw(x, y).unwrap_or(false)
        }
        _ => same_scalar(scalar(a), scalar(b)),
    }
}

/// [`same_value`] of two arrays or objects as JSON text, numbers compared by their exact
/// decimal value (a 23-digit integer is not an `f64`); personal members and items (those a
/// ping leaves out, [`personal_member`]) are not compared. `None` for text that is not JSON.
fn same_raw(a: &str, b: &str) -> Option<bool> {
    use serde_json::value::RawValue;
    type Members<'a> = std::collections::HashMap<String, &'a RawValue>;
    let (a, b) = (a.trim(), b.trim());
    let kept = |key: Option<&str>, v: &RawValue| !personal_member(key, v.get().trim());
    Some(match (a.as_bytes().first()?, b.as_bytes().first()?) {
        (b'{', b'{') => {
            let (x, y): (Members<'_>, Members<'_>) =
                (serde_json::from_str(a).ok()?, serde_json::from_str(b).ok()?);
            // The post may add members: that adds to the ping, it does not contradict it.
            for (k, v) in x.iter().filter(|(k, v)| kept(Some(k), v)) {
                match y.get(k).filter(|w| kept(Some(k), w)) {
                    Some(w) if same_raw(v.get(), w.get())? => {}
                    _ => return Some(false),
                }
            }
            true
        }
        (b'[', b'[') => {
            let (x, y): (Vec<&RawValue>, Vec<&RawValue>) =
                (serde_json::from_str(a).ok()?, serde_json::from_str(b).ok()?);
            let x: Vec<_> = x.into_iter().filter(|v| kept(None, v)).collect();
            let y: Vec<_> = y.into_iter().filter(|v| kept(None, v)).collect();
            if x.len() != y.len() {
                return Some(false);
            }
            for (v, w) in x.iter().zip(&y) {
                if !same_raw(v.get(), w.get())? {
                    return Some(false);
                }
            }
            true
        }
        (b'{' | b'[', _) | (_, b'{' | b'[') => false,
        _ => {
            let (da, db) = (raw::decode_str(a), raw::decode_str(b));
            same_scalar(raw_scalar(a, da.as_deref()), raw_scalar(b, db.as_deref()))
        }
    })
}

/// A scalar's JSON text as a [`Scalar`]; `decoded` is the string's value when it is one.
fn raw_scalar<'a>(text: &'a str, decoded: Option<&'a str>) -> Scalar<'a> {
    match text.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Bool(true),
        Some(b'f') => Scalar::Bool(false),
        Some(b'"') => decoded.map_or(Scalar::Other, Scalar::Str),
        _ => Scalar::Num(text),
    }
}

/// A value that is neither an array nor an object, for [`same_value`].
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Num(&'a str),
    Str(&'a str),
    Other,
}

fn scalar(f: Field<'_>) -> Scalar<'_> {
    match f {
        Field::Null => Scalar::Null,
        Field::Bool(b) => Scalar::Bool(b),
        Field::Num(n) => Scalar::Num(n),
        Field::Str(s) => Scalar::Str(s),
        Field::Array(_) | Field::Object(_) => Scalar::Other,
    }
}

fn same_scalar(a: Scalar<'_>, b: Scalar<'_>) -> bool {
    fn number(text: &str) -> Option<Decimal> {
        let t = text.trim();
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        // A string with a leading zero ("02134") is a code, not a number.
        if digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.") {
            return None;
        }
        Decimal::parse(t)
    }
    fn boolean(s: Scalar<'_>) -> Option<bool> {
        match s {
            Scalar::Bool(b) => Some(b),
            Scalar::Str(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Scalar::Str(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
    match (a, b) {
        (Scalar::Other, _) | (_, Scalar::Other) => false,
        (Scalar::Null, Scalar::Null) => true,
        (Scalar::Str(x), Scalar::Str(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        (Scalar::Num(x), Scalar::Num(y) | Scalar::Str(y)) | (Scalar::Str(x), Scalar::Num(y)) => {
            matches!((number(x), number(y)), (Some(x), Some(y)) if x == y)
        }
        (Scalar::Bool(_), _) | (_, Scalar::Bool(_)) => {
            matches!((boolean(a), boolean(b)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

/// A number's exact value, however it is written (`9007199254740993`, `9007199254740993.0`,
/// `9.007199254740993e15`): its sign, its significant digits and the power of ten of the
/// last of them. Zero is unsigned.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// `[+-]digits[.digits][(e|E)[+-]digits]`, a digit on at least one side of the point.
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => {
                let e = &rest[i + 1..];
                let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
                // Far past any value a lead means; an i64 holds the arithmetic below.
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                (&rest[..i], e.parse::<i64>().ok()?)
            }
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let mut exponent = exponent - frac.len() as i64;
        let lead = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..lead);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Some(Decimal {
            negative,
            digits,
            exponent,
        })
    }
}

/// The answer to `/v1/ping`: a payout the seller can count on while the bids are held, or no bid.
pub fn write_ping_answer(
    out: &mut Vec<u8>,
    ping_id: &str,
    payout_cents: Option<Cents>,
    expires_in_ms: u64,
    test: bool,
) {
    out.extend_from_slice(b"{\"ping_id\":");
    write_json_str(out, ping_id);
    match payout_cents {
        Some(p) => {
            out.extend_from_slice(b",\"status\":\"bid\",\"payout\":");
            write_dollars(out, p);
            out.extend_from_slice(b",\"expires_in_ms\":");
            push_u64(out, expires_in_ms);
        }
        None => out.extend_from_slice(b",\"status\":\"no_bid\""),
    }
    if test {
        out.extend_from_slice(b",\"test\":true");
    }
    out.push(b'}');
}

/// Room a ping body gets up front: the envelope and a handful of short ping fields.
const PING_BODY_RESERVE: usize = 512;

/// The phone's 10 digits, without formatting or a leading country code 1.
pub fn normalized_phone(v: Field<'_>) -> Option<String> {
    let s = as_text(v)?;
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let bad_chars = s
        .chars()
        .any(|c| !(c.is_ascii_digit() || " ()-.+".contains(c)));
    if bad_chars {
        return None;
    }
    match digits.len() {
        10 => Some(digits),
        11 if digits.starts_with('1') => Some(digits[1..].to_string()),
        _ => None,
    }
}

/// Whether 10 digits can be a North American number: neither the area code nor the exchange
/// starts with 0 or 1 (`0000000000` or `1234567890` is no one's phone).
pub fn is_nanp(digits: &str) -> bool {
    let b = digits.as_bytes();
    b.len() == 10 && (b'2'..=b'9').contains(&b[0]) && (b'2'..=b'9').contains(&b[3])
}

/// The buyers the consumer agreed to hear from, when the consent names them.
pub fn disclosed_buyers(req: &LeadRequest) -> Option<Vec<String>> {
    let list = req
        .consent
        .as_ref()?
        .get("disclosed_buyers")?
        .array_strings()?;
    if list.is_empty() {
        return None;
    }
    Some(list)
}

/// The consent's vertical, when given.
pub fn consent_vertical(req: &LeadRequest) -> Option<&str> {
    // Blank reads as absent, as validation reads it: the campaign's vertical then.
    req.consent
        .as_ref()?
        .get("vertical")
        .filter(|v| !v.is_blank())?
        .as_str()
}

/// JSON string escaping (serde_json's), without building a `Value`.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Most strings need no escape: copied as they are after a check eight bytes at a time.
    // The check covers exactly what serde_json escapes (`"`, `\`, bytes below 0x20).
    if scan::is_plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The lead as a ping may show it, when that differs from the lead: a ping field holding an
/// array or an object keeps its shape but loses every member whose name is personal
/// (`config::is_personal_field`) and every string that is (`config::is_personal_value`: an
/// email, a phone number, an IP address, a consent certificate URL) or number that could be a
/// phone (`config::is_personal_number`), at any depth, so
/// `"vehicles": [{"year": 2019, "vin": ...}]` is pinged without the VIN and posted with it; a
/// ping field whose string or number is personal is pinged as `null`. `None`, the usual case, when no
/// field of `names` holds such a value.
pub fn ping_safe<'k>(lead: &Fields, names: impl IntoIterator<Item = &'k str>) -> Option<Fields> {
    let mut safe: Option<Fields> = None;
    for k in names {
        let text = match lead.get(k) {
            Some(Field::Array(t) | Field::Object(t)) => t,
            Some(Field::Str(s)) if crate::config::is_personal_value(s) => {
                safe.get_or_insert_with(|| lead.clone())
                    .insert(k.to_string(), Value::Null);
                continue;
            }
            Some(Field::Num(n)) if crate::config::is_personal_number(n) => {
                safe.get_or_insert_with(|| lead.clone())
                    .insert(k.to_string(), Value::Null);
                continue;
            }
            _ => continue,
        };
        let is_array = text.starts_with('[');
        let Some((kept, true)) = raw::filtered(text, &personal_member) else {
            continue;
        };
        let kept = if is_array {
            Field::Array(&kept)
        } else {
            Field::Object(&kept)
        };
        safe.get_or_insert_with(|| lead.clone())
            .insert_field(k, kept);
    }
    safe
}

/// Whether a member (named `key`) or an array item (`key` is `None`) whose JSON text is
/// `value` is personal: by its name (`config::is_personal_field`, or a name that is itself an
/// email, a phone number, ...: `{"ana@example.com": "primary"}`) or by its value, a string
/// or number that is one.
fn personal_member(key: Option<&str>, value: &str) -> bool {
    if let Some(k) = key {
        if crate::config::is_personal_field(k) || crate::config::is_personal_value(k) {
            return true;
        }
    }
    match value.as_bytes().first() {
        Some(b'"') => raw::decode_str(value).is_some_and(|s| crate::config::is_personal_value(&s)),
        Some(b'-' | b'0'..=b'9') => crate::config::is_personal_number(value),
        _ => false,
    }
}

/// The ping body: the campaign's `ping_fields` and nothing else. The same bytes go to every
/// buyer of the lead (they are all pinged at once, with the same `timeout_ms`). No personal
/// field is among them: config validation refuses one, and leaves it out of the campaign besides
/// (`config::is_personal_field`, too slow to repeat for every ping); a personal member nested
/// in an array or object a ping field holds is left out ([`ping_safe`]).
pub fn write_ping(
    out: &mut Vec<u8>,
    ping_id: &str,
    campaign: &Campaign,
    req: &LeadRequest,
    timeout_ms: u64,
) {
    // One allocation for the usual ping, not a doubling series from a few bytes.
    out.reserve(PING_BODY_RESERVE);
    out.extend_from_slice(b"{\"ping_id\":");
    write_json_str(out, ping_id);
    out.extend_from_slice(b",\"campaign\":");
    write_json_str(out, &campaign.id);
    out.extend_from_slice(b",\"vertical\":");
    write_json_str(out, &campaign.vertical);
    out.extend_from_slice(if req.test {
        b",\"test\":true"
    } else {
        b",\"test\":false"
    });
    out.extend_from_slice(b",\"timeout_ms\":");
    push_u64(out, timeout_ms);
    out.extend_from_slice(b",\"lead\":{");
    let safe = ping_safe(&req.lead, campaign.ping_fields.iter().map(String::as_str));
    let lead = safe.as_ref().unwrap_or(&req.lead);
    let mut first = true;
    for f in &campaign.ping_fields {
        if let Some(member) = lead.member_json(f) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(member.as_bytes());
        }
    }
    out.extend_from_slice(b"}}");
}

/// The post body: the full lead and its consent, at the buyer's price.
pub fn write_post(
    out: &mut Vec<u8>,
    ping_id: &str,
    bid_id: Option<&str>,
    price_cents: Cents,
    campaign: &Campaign,
    req: &LeadRequest,
) {
    out.extend_from_slice(b"{\"ping_id\":");
    write_json_str(out, ping_id);
    if let Some(b) = bid_id {
        out.extend_from_slice(b",\"bid_id\":");
        write_json_str(out, b);
    }
    out.extend_from_slice(b",\"price\":");
    write_dollars(out, price_cents);
    out.extend_from_slice(b",\"campaign\":");
    write_json_str(out, &campaign.id);
    out.extend_from_slice(if req.test {
        b",\"test\":true"
    } else {
        b",\"test\":false"
    });
    out.extend_from_slice(b",\"lead\":");
    req.lead.write_json(out);
    if let Some(c) = &req.consent {
        out.extend_from_slice(b",\"consent\":");
        c.write_json(out);
    }
    out.push(b'}');
}

/// A JSON field that may be absent, told apart from one that is `null`
/// (`Option` would fold the two together).
#[derive(Default)]
struct Present<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| Present(Some(r)))
    }
}

#[derive(Deserialize)]
struct BidAnswer<'a> {
    #[serde(borrow, default)]
    bid: Present<'a>,
    #[serde(borrow, default)]
    bid_id: Option<&'a RawValue>,
}

fn clip(mut s: String) -> String {
    let cut = clip_str(&s, MAX_ANSWER_STRING).len();
    s.truncate(cut);
    s
}

/// Longest bid id a buyer may give: the post quotes it back whole, so a longer one makes the
/// answer `invalid` rather than cut.
pub const MAX_BID_ID_BYTES: usize = crate::text::SMALL_TEXT_BYTES;

/// Why a bid's `bid_id` makes the answer `invalid`.
enum BadBidId {
    /// Longer than [`MAX_BID_ID_BYTES`].
    TooLong,
    /// `true`, an object, an array, or a string that is not text (a lone surrogate): nothing
    /// the post could quote back as the buyer sent it.
    NotText,
}

/// A bid id as text, without allocating for the usual plain string or number; `None` for
/// `null`.
fn raw_to_text(raw: &str) -> Result<Option<SmallText>, BadBidId> {
    let t = raw.trim();
    let whole = |s: &str| SmallText::whole(s).map(Some).ok_or(BadBidId::TooLong);
    if let Some(inner) = t.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        if !inner.contains('\\') {
            return whole(inner);
        }
        // Escapes: let serde_json decode them (rare, so the allocation is acceptable).
        return match serde_json::from_str::<Value>(t) {
            Ok(Value::String(s)) => whole(&s),
            _ => Err(BadBidId::NotText),
        };
    }
    if t == "null" {
        return Ok(None);
    }
    if !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return whole(t);
    }
    Err(BadBidId::NotText)
}

/// A bid answer's `bid` and `bid_id` as serde_json reads them, for the answers the scan leaves
/// (off the usual path, so kept out of `parse_bid`'s code); `Err` with why it is no answer.
#[cold]
#[inline(never)]
fn bid_fields_serde(body: &[u8]) -> Result<scan::BidFields<'_>, &'static str> {
    if !json_object(body) {
        return Err(not_an_object(body));
    }
    match serde_json::from_slice::<BidAnswer>(body) {
        Ok(a) => Ok((a.bid.0.map(RawValue::get), a.bid_id.map(RawValue::get))),
        Err(_) => Err("unparsable answer"),
    }
}

/// Whether a buyer's answer, by the reason it was not a bid or a sale, is not of the kind its
/// request asked for (a ping's answer with no bid field, a post's neither accepted nor
/// rejected) or not JSON at all. Such an answer may be one the buyer sent for another request
/// (twice, or before any was written), so the connection it came on is out of step with its
/// requests: it is closed rather than given the next one, whose answer could be this one's.
pub fn answer_out_of_step(reason: &str) -> bool {
    matches!(
        reason,
        "no bid field"
            | "answer is neither accepted nor rejected"
            | "unparsable answer"
            | "answer is not a JSON object"
    )
}

/// A buyer's answer to a ping. 204, `{"bid": 0}` and `{"bid": null}` are no-bids; anything that
/// is not a 2xx with a valid bid is a no-bid with its reason (`error` or `invalid`).
pub fn parse_bid(status: u16, body: &[u8]) -> PingOutcome {
    if status == 204 {
        return PingOutcome::NoBid;
    }
    if !(200..300).contains(&status) {
        return PingOutcome::Error(format!("status {}", status));
    }
    // Most answers are a flat object of plain values, read here in one scan; anything else
    // goes through serde_json, whose reading the scan agrees with wherever it answers.
    let fields = match scan::bid_fields(body) {
        Some(f) => f,
        None => match bid_fields_serde(body) {
            Ok(f) => f,
            Err(why) => return PingOutcome::Invalid(why.into()),
        },
    };
    let (Some(raw), bid_id) = fields else {
        return PingOutcome::Invalid("no bid field".into());
    };
    let text = raw.trim();
    if text == "null" {
        return PingOutcome::NoBid;
    }
    // Money travels as JSON numbers: a bid in a string (`"42.5"`) is not one.
    if !matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
        return PingOutcome::Invalid("bid is not a number".into());
    }
    match parse_cents(text) {
        Some(0) => PingOutcome::NoBid,
        Some(c) if c < 0 => PingOutcome::Invalid("negative bid".into()),
        Some(c) if c > MAX_CENTS => PingOutcome::Invalid("bid out of range".into()),
        Some(cents) => match bid_id.map(raw_to_text).transpose() {
            Ok(bid_id) => PingOutcome::Bid {
                cents,
                bid_id: bid_id.flatten(),
            },
            Err(BadBidId::TooLong) => {
                PingOutcome::Invalid(format!("bid_id over {MAX_BID_ID_BYTES} bytes"))
            }
            Err(BadBidId::NotText) => {
                PingOutcome::Invalid("bid_id is not a string or a number".into())
            }
        },
        // A JSON number all the same (the scan and serde_json only pass numbers on), but more
        // than the largest amount accepted.
        None => PingOutcome::Invalid("bid out of range".into()),
    }
}

#[derive(Deserialize)]
struct PostAnswer {
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    reason: Option<Value>,
    #[serde(default)]
    buyer_lead_id: Option<Value>,
}

/// A buyer's answer to a post: only a 2xx with `"status": "accepted"` is a sale.
pub fn parse_post_answer(status: u16, body: &[u8]) -> PostOutcome {
    if !(200..300).contains(&status) {
        return PostOutcome::Rejected {
            reason: format!("status {}", status),
        };
    }
    // The usual answer, a flat object of plain strings, is read by a byte scan; anything else
    // (numbers among the three fields, escapes, nesting) by serde_json.
    post_answer_scanned(body).unwrap_or_else(|| post_answer_serde(body))
}

/// A 2xx post answer read by the byte scan, when it is a flat object whose three fields are
/// plain strings (or null, or absent). `None`: serde_json's to read.
fn post_answer_scanned(body: &[u8]) -> Option<PostOutcome> {
    let (st, reason, id) = scan::post_fields(body)?;
    fn plain(raw: Option<&str>) -> Result<Option<&str>, ()> {
        match raw {
            None | Some("null") => Ok(None),
            Some(r) if r.starts_with('"') => Ok(r.get(1..r.len() - 1)),
            Some(_) => Err(()),
        }
    }
    let (Ok(st), Ok(reason), Ok(id)) = (plain(st), plain(reason), plain(id)) else {
        return None;
    };
    let text = |s: Option<&str>| s.map(|s| clip(s.to_string()));
    Some(post_outcome(st, text(reason), text(id)))
}

/// A 2xx post answer read by serde_json.
fn post_answer_serde(body: &[u8]) -> PostOutcome {
    if !json_object(body) {
        return PostOutcome::Rejected {
            reason: not_an_object(body).into(),
        };
    }
    let answer: PostAnswer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(_) => {
            return PostOutcome::Rejected {
                reason: "unparsable answer".into(),
            }
        }
    };
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(clip(s)),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    post_outcome(
        answer.status.as_ref().and_then(Value::as_str),
        text(answer.reason),
        text(answer.buyer_lead_id),
    )
}

/// What a readable 2xx post answer means, from its `status`, `reason` and `buyer_lead_id`.
fn post_outcome(
    status: Option<&str>,
    reason: Option<String>,
    buyer_lead_id: Option<String>,
) -> PostOutcome {
    match status {
        Some(s) if s.eq_ignore_ascii_case("accepted") => PostOutcome::Accepted { buyer_lead_id },
        Some(s) if s.eq_ignore_ascii_case("rejected") => PostOutcome::Rejected {
            reason: reason.unwrap_or_else(|| "rejected".into()),
        },
        _ => PostOutcome::Rejected {
            reason: "answer is neither accepted nor rejected".into(),
        },
    }
}

/// One sale in the seller's answer.
pub struct AnswerSale<'a> {
    pub buyer: &'a str,
    pub price_cents: Cents,
}

/// The seller's answer to `/v1/leads`.
pub fn write_answer(
    out: &mut Vec<u8>,
    lead_id: &str,
    outcome: &Outcome,
    sales: &[AnswerSale<'_>],
    payout_cents: Cents,
    test: bool,
) {
    write_answer_fields(
        out,
        lead_id,
        &AnswerFields {
            status: outcome.status.as_str(),
            price_cents: outcome.price_cents,
            payout_cents,
            sales,
            bids: outcome.bids,
            elapsed_ms: u64::try_from(outcome.elapsed.as_millis()).unwrap_or(u64::MAX),
            reason: outcome.unsold_reason.map(|r| r.as_str()),
            test,
        },
    );
}

/// A sold/unsold answer's fields, as the live auction has them or as the journal kept them.
pub struct AnswerFields<'a> {
    pub status: &'a str,
    pub price_cents: Cents,
    pub payout_cents: Cents,
    pub sales: &'a [AnswerSale<'a>],
    pub bids: u32,
    pub elapsed_ms: u64,
    pub reason: Option<&'a str>,
    pub test: bool,
}

/// The one writer of a sold/unsold answer: `/v1/leads`, `/v1/post` and `GET /v1/leads/{id}`.
pub fn write_answer_fields(out: &mut Vec<u8>, lead_id: &str, a: &AnswerFields<'_>) {
    out.extend_from_slice(b"{\"lead_id\":");
    write_json_str(out, lead_id);
    out.extend_from_slice(b",\"status\":");
    write_json_str(out, a.status);
    out.extend_from_slice(b",\"price\":");
    write_dollars(out, a.price_cents);
    out.extend_from_slice(b",\"payout\":");
    write_dollars(out, a.payout_cents);
    out.extend_from_slice(b",\"sales\":[");
    for (i, s) in a.sales.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"buyer\":");
        write_json_str(out, s.buyer);
        out.extend_from_slice(b",\"price\":");
        write_dollars(out, s.price_cents);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"bids\":");
    push_u64(out, u64::from(a.bids));
    out.extend_from_slice(b",\"elapsed_ms\":");
    push_u64(out, a.elapsed_ms);
    if let Some(r) = a.reason {
        out.extend_from_slice(b",\"reason\":");
        write_json_str(out, r);
    }
    if a.test {
        // A test lead's sale moves no money: the price and payout are what it would have had.
        out.extend_from_slice(b",\"test\":true");
    }
    out.push(b'}');
}

/// `{"error": {...}}`, with `lead_id` and `"status": "rejected"` when the lead got an id.
pub fn write_error(
    out: &mut Vec<u8>,
    lead_id: Option<&str>,
    code: &str,
    message: &str,
    field: Option<&str>,
) {
    write_refusal(out, lead_id.map(|id| (id, false)), code, message, field);
}

/// [`write_error`] for a lead that may be a test: `"test": true` follows the status of a
/// test lead's refusal, as it follows a test lead's other answers.
pub fn write_refusal(
    out: &mut Vec<u8>,
    lead: Option<(&str, bool)>,
    code: &str,
    message: &str,
    field: Option<&str>,
) {
    out.push(b'{');
    if let Some((id, test)) = lead {
        out.extend_from_slice(b"\"lead_id\":");
        write_json_str(out, id);
        out.extend_from_slice(b",\"status\":\"rejected\",");
        if test {
            out.extend_from_slice(b"\"test\":true,");
        }
    }
    out.extend_from_slice(b"\"error\":{\"code\":");
    write_json_str(out, code);
    out.extend_from_slice(b",\"message\":");
    write_json_str(out, message);
    if let Some(f) = field {
        out.extend_from_slice(b",\"field\":");
        write_json_str(out, f);
    }
    out.extend_from_slice(b"}}");
}

/// The two readings of each body the exchange reads by a byte scan with serde_json behind it,
/// for the fuzz targets in `fuzz/` (built with `--cfg fuzzing` only): wherever the scan
/// answers, serde_json must read the same.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// A seller's body: the scan's reading (`None`: passed on) and serde_json's.
    pub fn lead_readings(body: &[u8]) -> (Option<LeadRequest>, Result<LeadRequest, Refusal>) {
        (scan::lead_request(body), parse_request_serde(body))
    }

    /// A bid answer's `bid` and `bid_id` texts: the scan's reading and serde_json's.
    #[allow(clippy::type_complexity)]
    pub fn bid_readings(
        body: &[u8],
    ) -> (
        Option<(Option<&str>, Option<&str>)>,
        Result<(Option<&str>, Option<&str>), &'static str>,
    ) {
        (scan::bid_fields(body), bid_fields_serde(body))
    }

    /// A 2xx post answer: what the scan makes of it when it reads it whole, and serde_json.
    pub fn post_readings(body: &[u8]) -> (Option<PostOutcome>, PostOutcome) {
        (post_answer_scanned(body), post_answer_serde(body))
    }
}

#[cfg(test)]
mod tests;
