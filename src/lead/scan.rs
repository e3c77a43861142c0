//! Byte scans for the usual shapes of the two bodies read most: the seller's lead request and
//! the buyer's bid answer. Each scan answers only for a strict subset of JSON (plain strings
//! without escapes or control characters, numbers, `true`, `false`, `null`, flat objects, and
//! in a lead's members arrays of plain strings) and returns `None` for anything else, which the
//! caller then reads with serde_json. Where a scan answers, serde_json reads the same values:
//! `tests.rs` checks that on random bodies.

use super::fields::{Field, FieldsBuilder, MAX_FIELDS};
use super::LeadRequest;

/// The raw JSON of a bid answer's `bid` (absent: `None`; `null`: `Some("null")`) and `bid_id`.
pub(super) type BidFields<'a> = (Option<&'a str>, Option<&'a str>);

/// `bid` and `bid_id` of a flat object of plain values. `None` for anything else (nested
/// values, escapes, a repeated `bid` or `bid_id`, invalid JSON or UTF-8).
pub(super) fn bid_fields(body: &[u8]) -> Option<BidFields<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let b = text.as_bytes();
    let (mut bid, mut bid_id) = (None, None);
    let end = object(text, skip_ws(b, 0), |key, start, end| {
        let slot = match key {
            "bid" => &mut bid,
            "bid_id" => &mut bid_id,
            _ => return true,
        };
        // A repeated field is serde_json's error to report.
        slot.replace(&text[start..end]).is_none()
    })?;
    // `bid_id: null` is no id, as serde_json reads an `Option` (`bid: null` is a no-bid).
    let bid_id = bid_id.filter(|raw| *raw != "null");
    (skip_ws(b, end) == b.len()).then_some((bid, bid_id))
}

/// The raw JSON of a post answer's `status`, `reason` and `buyer_lead_id` (absent: `None`).
pub(super) type PostFields<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// `status`, `reason` and `buyer_lead_id` of a flat object of plain values. `None` for anything
/// else (nested values, escapes, a repeated field, invalid JSON or UTF-8).
pub(super) fn post_fields(body: &[u8]) -> Option<PostFields<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let b = text.as_bytes();
    let (mut status, mut reason, mut id) = (None, None, None);
    let end = object(text, skip_ws(b, 0), |key, start, end| {
        let slot = match key {
            "status" => &mut status,
            "reason" => &mut reason,
            "buyer_lead_id" => &mut id,
            _ => return true,
        };
        // A repeated field is serde_json's error to report.
        slot.replace(&text[start..end]).is_none()
    })?;
    (skip_ws(b, end) == b.len()).then_some((status, reason, id))
}

/// Members of a lead request besides the five it knows that the scan skips itself.
const MAX_OTHER_MEMBERS: usize = 8;

/// A seller's lead request whose members are plain: `campaign` a non-empty string, `source` a
/// string or null, `test` a boolean or null, `lead` a flat object, `consent` a flat object or
/// null, other members scalars. Each object's builder reserves the body's length, as the
/// serde_json reading does.
pub(super) fn lead_request(body: &[u8]) -> Option<LeadRequest> {
    let text = std::str::from_utf8(body).ok()?;
    let b = text.as_bytes();
    let mut campaign: Option<&str> = None;
    let mut source: Option<Option<&str>> = None;
    let mut test: Option<bool> = None;
    let mut lead = None;
    let mut consent = None;
    let mut unknown: [&str; MAX_OTHER_MEMBERS] = [""; MAX_OTHER_MEMBERS];
    let mut unknown_keys = 0;
    let mut at = skip_ws(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(b, at + 1);
    if b.get(at) == Some(&b'}') {
        return None;
    }
    loop {
        let key_end = string_end(b, at)?;
        let key = &text[at + 1..key_end - 1];
        at = skip_ws(b, key_end);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(b, at + 1);
        // Every known member once: a repeated one is serde_json's error to report.
        at = match key {
            "campaign" if campaign.is_none() => {
                let end = string_end(b, at)?;
                campaign = Some(&text[at + 1..end - 1]).filter(|c| !c.is_empty());
                campaign?;
                end
            }
            "source" if source.is_none() => {
                if b[at..].starts_with(b"null") {
                    source = Some(None);
                    at + 4
                } else {
                    let end = string_end(b, at)?;
                    source = Some(Some(&text[at + 1..end - 1]));
                    end
                }
            }
            "test" if test.is_none() => {
                let (value, end) = if b[at..].starts_with(b"true") {
                    (true, at + 4)
                } else if b[at..].starts_with(b"false") {
                    (false, at + 5)
                } else if b[at..].starts_with(b"null") {
                    (false, at + 4)
                } else {
                    return None;
                };
                test = Some(value);
                end
            }
            "lead" if lead.is_none() => {
                let (fields, end) = fields(text, at, body.len())?;
                lead = Some(fields);
                end
            }
            "consent" if consent.is_none() => {
                if b[at..].starts_with(b"null") {
                    consent = Some(None);
                    at + 4
                } else {
                    let (fields, end) = fields(text, at, body.len())?;
                    consent = Some(Some(fields));
                    end
                }
            }
            "campaign" | "source" | "test" | "lead" | "consent" => return None,
            // Other members are skipped, each once: one given twice (or more of them than
            // are compared here) is left to the strict reading.
            _ => {
                if unknown_keys == unknown.len() || unknown[..unknown_keys].contains(&key) {
                    return None;
                }
                unknown[unknown_keys] = key;
                unknown_keys += 1;
                scalar_end(b, at)?
            }
        };
        at = skip_ws(b, at);
        match b.get(at) {
            Some(b',') => at = skip_ws(b, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    if skip_ws(b, at + 1) != b.len() {
        return None;
    }
    Some(LeadRequest {
        campaign: campaign?.to_string(),
        source: source.flatten().map(str::to_string),
        test: test.unwrap_or(false),
        lead: lead?,
        consent: consent.flatten(),
    })
}

/// A flat object at `at` read into `Fields`, and where it ends. Values: plain strings,
/// numbers, `true`, `false`, `null`, arrays of plain strings (kept as compact JSON text).
fn fields(text: &str, at: usize, capacity: usize) -> Option<(super::Fields, usize)> {
    let b = text.as_bytes();
    let mut builder = FieldsBuilder::with_capacity(capacity);
    let mut keys = 0usize;
    let mut array = String::new();
    let end = object(text, at, |key, start, end| {
        keys += 1;
        let raw = &text[start..end];
        let value = match b[start] {
            b'"' => Field::Str(&raw[1..raw.len() - 1]),
            b'n' => Field::Null,
            b't' => Field::Bool(true),
            b'f' => Field::Bool(false),
            b'[' => {
                array.clear();
                string_array(text, start, &mut array);
                Field::Array(&array)
            }
            _ => Field::Num(raw),
        };
        // Over the limit, or too large: serde_json's reading gives the refusal. Keys and
        // strings here have no escapes (`string_end`), so their JSON is the text as it came;
        // a member written without spaces (`"key":value`) is copied whole.
        let key_at = (key.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize + 1);
        let member = text
            .get(key_at..end)
            .filter(|_| start == key_at + key.len() + 3 && b[start] != b'[');
        keys <= MAX_FIELDS
            && match (member, value) {
                (Some(member), _) => builder.push_member(key, value, member),
                (None, Field::Array(compact)) => builder.push_plain(key, value, compact),
                (None, _) => builder.push_plain(key, value, raw),
            }
    })?;
    if builder.has_repeated() {
        // A key given twice: serde_json's reading gives the refusal.
        return None;
    }
    Some((builder.finish(), end))
}

/// Walk the object at `at`, calling `member(key, value_start, value_end)` for each member
/// (keys are plain strings; a value is a scalar or an array of plain strings). `None` when the
/// shape is not that or `member` says no; else the offset just past the closing brace.
fn object<'t>(
    text: &'t str,
    mut at: usize,
    mut member: impl FnMut(&'t str, usize, usize) -> bool,
) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(b, at + 1);
    if b.get(at) == Some(&b'}') {
        return Some(at + 1);
    }
    loop {
        let key_end = string_end(b, at)?;
        // The quotes are ASCII: a char boundary on each side.
        let key = text.get(at + 1..key_end - 1)?;
        at = skip_ws(b, key_end);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(b, at + 1);
        let end = match b.get(at) {
            Some(b'[') => array_end(b, at)?,
            _ => scalar_end(b, at)?,
        };
        if !member(key, at, end) {
            return None;
        }
        at = skip_ws(b, end);
        match b.get(at) {
            Some(b',') => at = skip_ws(b, at + 1),
            Some(b'}') => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The end of an array of plain strings at `at`.
fn array_end(b: &[u8], at: usize) -> Option<usize> {
    let mut at = skip_ws(b, at + 1);
    if b.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        at = skip_ws(b, string_end(b, at)?);
        match b.get(at) {
            Some(b',') => at = skip_ws(b, at + 1),
            Some(b']') => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The array of plain strings at `start` (checked by `array_end`) as serde_json writes it
/// compactly: no whitespace, the strings as they are.
fn string_array(text: &str, start: usize, out: &mut String) {
    let b = text.as_bytes();
    out.push('[');
    let mut at = skip_ws(b, start + 1);
    while let Some(end) = string_end(b, at) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&text[at..end]);
        at = skip_ws(b, end);
        if b.get(at) == Some(&b',') {
            at = skip_ws(b, at + 1);
        }
    }
    out.push(']');
}

fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Eight bytes at a time: a set high bit in each byte of `v` below 0x20 or equal to `"` or
/// `\`. Exact as to whether there is one, and the lowest set bit is in the first such byte
/// (a borrow can flag a byte above a special one, never below).
pub(super) fn special_bytes(v: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
    control | zero_in(v ^ (ONES * u64::from(b'"'))) | zero_in(v ^ (ONES * u64::from(b'\\')))
}

/// True when `b` holds no `"`, `\\` or byte below 0x20: the bytes JSON must escape in a string.
pub(crate) fn is_plain(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if special_bytes(u64::from_le_bytes(word)) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
}

/// The end (past the closing quote) of a string at `at` with no escapes and no control
/// characters. The caller has checked the text is UTF-8.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let special = special_bytes(u64::from_le_bytes(word));
        if special != 0 {
            // The lowest flagged byte is the first special one: the string ends there if it is
            // the closing quote, and is not plain otherwise.
            let j = i + (special.trailing_zeros() / 8) as usize;
            return (b.get(j) == Some(&b'"')).then_some(j + 1);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' | 0x00..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// The end of a plain string, a JSON number, `true`, `false` or `null` at `at`.
fn scalar_end(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => string_end(b, at),
        b't' => b[at..].starts_with(b"true").then_some(at + 4),
        b'f' => b[at..].starts_with(b"false").then_some(at + 5),
        b'n' => b[at..].starts_with(b"null").then_some(at + 4),
        _ => number_end(b, at),
    }
}

/// Digits past which a number without an exponent may be too large for an `f64`.
const FINITE_DIGITS: usize = 300;

/// The end of a JSON number (RFC 8259 section 6) at `at`; `None` also for a number beyond
/// an `f64` (`1e400`), which strict JSON readers refuse and the request is refused for.
fn number_end(b: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(at) == Some(&b'-') {
        at += 1;
    }
    at = match b.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(b, at)?,
        _ => return None,
    };
    if b.get(at) == Some(&b'.') {
        at = digits(b, at + 1)?;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        at = digits(b, at)?;
        return finite(&b[start..at]).then_some(at);
    }
    if at - start > FINITE_DIGITS && !finite(&b[start..at]) {
        return None;
    }
    Some(at)
}

/// Whether a JSON number's text reads as a finite `f64`.
fn finite(number: &[u8]) -> bool {
    std::str::from_utf8(number)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}
