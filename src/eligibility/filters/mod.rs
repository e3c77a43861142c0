//! A buyer's lead filters (`[buyers.filters]`), compiled once from the config into typed
//! comparators so that matching a lead does no parsing of the buyer's side.
//!
//! # Semantics
//! - `states`: the lead's `state` must be a two-letter code (any case, surrounding spaces
//!   ignored) in the list. An empty list accepts any lead, including one without a state.
//! - `zip_prefixes`: the lead's `zip`, a string or a number, must start with one of the prefixes
//!   (letters compare without case, for postal codes such as Canada's). A numeric zip is read as
//!   a five-digit US ZIP, so `7002` is `"07002"`. An empty list accepts any lead.
//! - `fields`: every predicate must hold. A field is looked up by its top-level key in the lead.
//!   - A field that is missing or `null` fails every predicate except `exists = false`, which
//!     passes: a buyer who asks about a field has not said it wants leads that lack it.
//!   - A value of a different type than the buyer's fails every operator, `!=` and `not_in`
//!     included, for the same reason.
//!   - Numbers compare exactly by the decimal value written, with no rounding through binary
//!     floating point (`20.999999999999999999` is under `21`; `1.0`, `1` and `1e0` are equal).
//!     A number written as a JSON string (`"34"`) compares as a number against a numeric value.
//!   - Strings compare exactly and with case. Two strings compare as strings under `==`, `!=`,
//!     `in` and `not_in` (so `"0770"` is not `"770"`); under `<`, `<=`, `>`, `>=` two strings
//!     that both read as numbers compare as numbers, and otherwise in byte order (ISO dates work).
//!   - Booleans match JSON booleans and the strings `"true"` / `"false"`, and take only `==`,
//!     `!=`, `in`, `not_in`.
//!   - `in` passes when the value equals one list element; `not_in` when it equals none and is
//!     comparable with at least one.
//!   - `exists` takes a boolean (default `true`): whether the field is present and not `null`.
//!   - Operators may also be written `=`, `eq`, `ne`, `lt`, `le`, `gt`, `ge` and `nin`, as
//!     buyers' own systems often spell them.

#[cfg(test)]
mod tests;

use crate::config::types::{FieldPredicateConfig, FiltersConfig};
use crate::lead::{Field, Fields, PathValue};
use std::cmp::Ordering;
use std::fmt;

/// Most `states` entries one buyer may list (there are fewer than 100 US state and territory codes).
pub const MAX_STATES: usize = 100;
/// Most `zip_prefixes` one buyer may list; buyers do send long ZIP lists.
pub const MAX_ZIP_PREFIXES: usize = 100_000;
/// Longest zip prefix, and longest lead zip considered (ZIP+4 with dash is 10; postal codes are shorter).
pub const MAX_ZIP_LEN: usize = 16;
/// Digits of a US ZIP code: the longest zip prefix a buyer may list.
pub const US_ZIP_DIGITS: usize = 5;
/// Most field predicates per buyer.
pub const MAX_FIELD_PREDICATES: usize = 64;
/// Most values in one `in` / `not_in` list.
pub const MAX_LIST_VALUES: usize = 1024;
/// Number of distinct two-letter state codes: `StateCode` values are below this.
pub const STATE_CODES: usize = 26 * 26;

/// Errors compiling a buyer's filters; each names the key at fault (relative to `[buyers.filters]`).
#[derive(Debug, Clone, PartialEq)]
pub enum FilterError {
    /// A `states` entry is not a two-letter code, so it could never match a lead.
    BadState {
        /// Position in `states`.
        index: usize,
        /// The entry as written.
        value: String,
    },
    /// A `zip_prefixes` entry is empty, too long, or holds characters other than letters and digits.
    BadZipPrefix {
        /// Position in `zip_prefixes`.
        index: usize,
        /// The entry as written.
        value: String,
    },
    /// A list is longer than its named limit.
    TooMany {
        /// The list's key.
        key: &'static str,
        /// The limit it passed.
        limit: usize,
    },
    /// `fields[i].field` is empty.
    EmptyField {
        /// Position in `fields`.
        index: usize,
    },
    /// `fields[i].op` is not one of `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not_in`, `exists`.
    UnknownOperator {
        /// Position in `fields`.
        index: usize,
        /// The operator as written.
        op: String,
    },
    /// `fields[i].value` is missing, of a type the operator cannot use, or out of range.
    BadValue {
        /// Position in `fields`.
        index: usize,
        /// What is wrong, for the operator to read.
        reason: String,
    },
}

impl FilterError {
    /// The key at fault, relative to `[buyers.filters]`, e.g. `fields[1].op`.
    pub fn key(&self) -> String {
        match self {
            FilterError::BadState { index, .. } => format!("states[{index}]"),
            FilterError::BadZipPrefix { index, .. } => format!("zip_prefixes[{index}]"),
            FilterError::TooMany { key, .. } => (*key).to_string(),
            FilterError::EmptyField { index } => format!("fields[{index}].field"),
            FilterError::UnknownOperator { index, .. } => format!("fields[{index}].op"),
            FilterError::BadValue { index, .. } => format!("fields[{index}].value"),
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.key())?;
        match self {
            FilterError::BadState { value, .. } => {
                write!(f, "{value:?} is not a USPS state code (TX, CA, DC, PR, ...)")
            }
            FilterError::BadZipPrefix { value, .. } => write!(
                f,
                "{value:?} is not a zip prefix (1 to {US_ZIP_DIGITS} digits: a lead's zip is 5 digits or ZIP+4)"
            ),
            FilterError::TooMany { limit, .. } => write!(f, "more than {limit} entries"),
            FilterError::EmptyField { .. } => write!(f, "field name is empty"),
            FilterError::UnknownOperator { op, .. } => write!(
                f,
                "unknown operator {op:?} (expected ==, !=, <, <=, >, >=, in, not_in or exists)"
            ),
            FilterError::BadValue { reason, .. } => f.write_str(reason),
        }
    }
}

impl std::error::Error for FilterError {}

/// A US-style two-letter state code, as a dense index below [`STATE_CODES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateCode(u16);

impl StateCode {
    /// Parse two ASCII letters (any case, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<StateCode> {
        match s.trim().as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                let a = u16::from(a.to_ascii_uppercase() - b'A');
                let b = u16::from(b.to_ascii_uppercase() - b'A');
                Some(StateCode(a * 26 + b))
            }
            _ => None,
        }
    }

    /// The lead's `state`, when it is a two-letter code.
    pub fn of_lead(lead: &Fields) -> Option<StateCode> {
        match lead.get("state") {
            Some(Field::Str(s)) => StateCode::parse(s),
            _ => None,
        }
    }

    /// Dense index in `0..STATE_CODES`, for tables indexed by state.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The code as two uppercase letters.
    pub fn as_bytes(self) -> [u8; 2] {
        [b'A' + (self.0 / 26) as u8, b'A' + (self.0 % 26) as u8]
    }
}

/// A lead's zip normalised for prefix matching: uppercase, without surrounding spaces, numbers
/// padded to five digits. Lives on the stack so matching allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct ZipKey {
    buf: [u8; MAX_ZIP_LEN],
    len: u8,
}

impl ZipKey {
    /// The lead's `zip`, if it is a usable string or a non-negative integer.
    pub fn of_lead(lead: &Fields) -> Option<ZipKey> {
        match lead.get("zip")? {
            Field::Str(s) => ZipKey::from_text(s),
            Field::Num(n) => ZipKey::from_number(n.parse::<u64>().ok()?),
            _ => None,
        }
    }

    /// Digits of `v`, left-padded with zeros to five (a US ZIP sent as a number loses its zeros).
    fn from_number(mut v: u64) -> Option<ZipKey> {
        let mut digits = [0u8; 20];
        let mut n = 0;
        while v > 0 || n < US_ZIP_DIGITS {
            digits[n] = b'0' + (v % 10) as u8;
            v /= 10;
            n += 1;
        }
        if n > MAX_ZIP_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_ZIP_LEN];
        for (d, c) in buf.iter_mut().zip(digits[..n].iter().rev()) {
            *d = *c;
        }
        Some(ZipKey { buf, len: n as u8 })
    }

    fn from_text(s: &str) -> Option<ZipKey> {
        let s = s.trim().as_bytes();
        if s.is_empty() || s.len() > MAX_ZIP_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_ZIP_LEN];
        for (d, c) in buf.iter_mut().zip(s) {
            *d = c.to_ascii_uppercase();
        }
        Some(ZipKey {
            buf,
            len: s.len() as u8,
        })
    }

    /// The normalised bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A number of the buyer's side, as written: text in JSON's number grammar (a TOML float as
/// the config file writes it, `FieldPredicateConfig::float_texts`, else as the shortest
/// decimal that reads back as it). It compares with a lead's number by value, digit by digit: no rounding through
/// binary floating point, so `20.999999999999999999` is under `21`, and `1.0` is `1`.
#[derive(Clone, Debug, PartialEq)]
struct Num {
    text: Box<str>,
    /// The value when it is a plain integer (no point or exponent) of at most 18 digits: the
    /// common case, compared without reading digits one by one.
    int: Option<i64>,
}

impl Num {
    /// Text that is a JSON-style number (`-12`, `3.5`, `1e3`; spaces around ignored). Words such
    /// as `inf` or `nan`, hex and a leading `+` are not numbers here.
    fn parse(s: &str) -> Option<Num> {
        let s = s.trim();
        Decimal::of(s)?;
        Some(Num {
            text: s.into(),
            int: small_int(s),
        })
    }

    fn cmp(&self, other: &Num) -> Option<Ordering> {
        match (self.int, other.int) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => cmp_numbers(&self.text, &other.text),
        }
    }

    /// How a lead's number, as text, compares with this one.
    fn cmp_lead(&self, lead: &str) -> Option<Ordering> {
        match (small_int(lead.trim()), self.int) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => cmp_numbers(lead, &self.text),
        }
    }
}

/// A plain integer of at most 18 digits (so no overflow) in JSON's grammar, as `i64`.
fn small_int(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty()
        || digits.len() > 18
        || (digits[0] == b'0' && digits.len() > 1)
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
    Some(if digits.len() < b.len() { -v } else { v })
}

/// How two texts compare as numbers by their exact decimal values; `None` when either is no
/// number in JSON's grammar. Reads the texts where they are: nothing is allocated.
fn cmp_numbers(a: &str, b: &str) -> Option<Ordering> {
    Some(Decimal::of(a)?.cmp(&Decimal::of(b)?))
}

/// Largest power of ten an exponent is taken at: numbers beyond it compare as at it (no text
/// within a body's size is that long, so an order by such exponents is the true one).
const MAX_DECIMAL_EXP: i64 = 1 << 40;

/// A JSON number's text read as its value: `0.d1d2d3… × 10^exp`, the significant digits
/// `d1…` the text's digits without the leading and trailing zeros. Zero has no digits.
#[derive(Clone, Copy)]
struct Decimal<'a> {
    neg: bool,
    /// The integer part's digits and the fraction's, in the text.
    int: &'a [u8],
    frac: &'a [u8],
    /// Where the significant digits start in `int` then `frac`, and how many there are.
    first: usize,
    len: usize,
    exp: i64,
}

impl<'a> Decimal<'a> {
    fn of(s: &'a str) -> Option<Decimal<'a>> {
        let b = s.trim().as_bytes();
        if !looks_numeric(b) {
            return None;
        }
        let neg = b.first() == Some(&b'-');
        let rest = if neg { &b[1..] } else { b };
        let mantissa_end = rest
            .iter()
            .position(|&c| c == b'e' || c == b'E')
            .unwrap_or(rest.len());
        let (mantissa, exp_text) = rest.split_at(mantissa_end);
        let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
            Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
            None => (mantissa, &mantissa[mantissa.len()..]),
        };
        let mut e: i64 = 0;
        if let Some((&sign, digits)) = exp_text.get(1..).and_then(|t| t.split_first()) {
            let (neg_exp, digits) = match sign {
                b'-' => (true, digits),
                b'+' => (false, digits),
                _ => (false, &exp_text[1..]),
            };
            for &d in digits {
                e = (e * 10 + i64::from(d - b'0')).min(MAX_DECIMAL_EXP);
            }
            if neg_exp {
                e = -e;
            }
        }
        let digit = |i: usize| {
            if i < int.len() {
                int[i]
            } else {
                frac[i - int.len()]
            }
        };
        let total = int.len() + frac.len();
        let first = (0..total).find(|&i| digit(i) != b'0').unwrap_or(total);
        let end = (first..total)
            .rev()
            .find(|&i| digit(i) != b'0')
            .map_or(first, |i| i + 1);
        Some(Decimal {
            neg,
            int,
            frac,
            first,
            len: end - first,
            exp: int.len() as i64 - first as i64 + e,
        })
    }

    /// The `i`th significant digit, `b'0'` past the last.
    fn digit(&self, i: usize) -> u8 {
        if i >= self.len {
            return b'0';
        }
        let at = self.first + i;
        if at < self.int.len() {
            self.int[at]
        } else {
            self.frac[at - self.int.len()]
        }
    }

    /// -1, 0 or 1.
    fn sign(&self) -> i8 {
        match (self.len, self.neg) {
            (0, _) => 0,
            (_, true) => -1,
            (_, false) => 1,
        }
    }

    fn cmp(&self, other: &Decimal<'_>) -> Ordering {
        let sign = self.sign().cmp(&other.sign());
        if sign != Ordering::Equal || self.sign() == 0 {
            return sign;
        }
        let magnitude = self.exp.cmp(&other.exp).then_with(|| {
            (0..self.len.max(other.len))
                .map(|i| self.digit(i).cmp(&other.digit(i)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        if self.neg {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

/// JSON's number grammar: an integer part without a leading zero (`"0770"`, a code, is no
/// number, as a post is checked against its ping), an optional fraction and exponent.
fn looks_numeric(b: &[u8]) -> bool {
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == int_start || (b[int_start] == b'0' && i - int_start > 1) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// The buyer's side of a comparison, typed at compile time.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Num(Num),
    /// A string, with its numeric reading when it has one.
    Str(Box<str>, Option<Num>),
    Bool(bool),
}

/// How a lead value relates to an operand: `None` when they cannot be compared (type mismatch).
fn compare(v: Field<'_>, o: &Operand, ordering: bool) -> Option<Ordering> {
    match (v, o) {
        // A JSON number's text is a number to `Num::parse`.
        (Field::Num(n), Operand::Num(b)) => b.cmp_lead(n),
        (Field::Str(s), Operand::Num(b)) => b.cmp_lead(s),
        (Field::Num(n), Operand::Str(_, Some(b))) => b.cmp_lead(n),
        (Field::Str(s), Operand::Str(text, num)) => {
            // A number written as a string orders as that number, as `value = 21` does: a lead
            // value that is no number (`"unknown"`, `"N/A"`, a code such as `"0770"`) is not
            // on that scale at all, so no operator holds for it, `!=` and `not_in` included.
            // Two numeric strings are equal as written (`"30.0"` is not `"30"`), as a post is
            // checked against its ping.
            match num {
                Some(b) => {
                    let n = b.cmp_lead(s)?;
                    if ordering {
                        return Some(n);
                    }
                }
                // A lead's number written as a string is a number against a word too, as a
                // JSON number is: of another type.
                None if Decimal::of(s).is_some() => return None,
                None => {}
            }
            // Without surrounding space or ASCII case, as states are read and as a seller's
            // post is checked against its ping (`lead::same_value`): `"Auto"` is `"auto"`.
            Some(folded(s).cmp(folded(text)))
        }
        (Field::Bool(a), Operand::Bool(b)) => Some(a.cmp(b)),
        // `value = "true"` as `value = true`, as a lead's `"true"` meets `value = true` below.
        (Field::Bool(a), Operand::Str(text, None)) if !ordering => {
            let t = text.trim();
            if t.eq_ignore_ascii_case("true") {
                Some(a.cmp(&true))
            } else if t.eq_ignore_ascii_case("false") {
                Some(a.cmp(&false))
            } else {
                None
            }
        }
        (Field::Str(s), Operand::Bool(b)) => {
            let s = s.trim();
            if s.eq_ignore_ascii_case("true") {
                Some(true.cmp(b))
            } else if s.eq_ignore_ascii_case("false") {
                Some(false.cmp(b))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A string's bytes without surrounding space, in ASCII lower case.
fn folded(t: &str) -> impl Iterator<Item = u8> + '_ {
    t.trim().bytes().map(|c| c.to_ascii_lowercase())
}

/// A predicate's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`: equal to one of a list.
    In,
    /// `not_in`: equal to none of a list.
    NotIn,
    /// `exists`: present and not null (or, with `false`, absent or null).
    Exists,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s.trim() {
            "==" | "=" | "eq" => Op::Eq,
            "!=" | "ne" => Op::Ne,
            "<" | "lt" => Op::Lt,
            "<=" | "le" => Op::Le,
            ">" | "gt" => Op::Gt,
            ">=" | "ge" => Op::Ge,
            "in" => Op::In,
            "not_in" | "nin" => Op::NotIn,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Rhs {
    One(Operand),
    List(Box<[Operand]>),
    Exists(bool),
}

/// One compiled `fields` predicate.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldPredicate {
    field: Box<str>,
    op: Op,
    rhs: Rhs,
}

impl FieldPredicate {
    /// The lead field this predicate reads: a top-level key, or a dotted path into nested
    /// objects when the lead has no key of that name (see [`Fields::get_path`]).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The operator.
    pub fn op(&self) -> Op {
        self.op
    }

    /// Whether the predicate holds for the lead's value of the field (`None` = field absent).
    pub fn test(&self, value: Option<Field<'_>>) -> bool {
        let present = match value {
            None | Some(Field::Null) => None,
            Some(v) => Some(v),
        };
        match (&self.rhs, present) {
            (Rhs::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Rhs::One(o), Some(v)) => match compare(v, o, self.op.is_ordering()) {
                None => false,
                Some(ord) => match self.op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Ne => ord != Ordering::Equal,
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                    Op::In | Op::NotIn | Op::Exists => false,
                },
            },
            (Rhs::List(list), Some(v)) => {
                let mut comparable = false;
                for o in list.iter() {
                    match compare(v, o, false) {
                        Some(Ordering::Equal) => return self.op == Op::In,
                        Some(_) => comparable = true,
                        None => {}
                    }
                }
                self.op == Op::NotIn && comparable
            }
        }
    }

    fn compile(index: usize, cfg: &FieldPredicateConfig) -> Result<FieldPredicate, FilterError> {
        let field = cfg.field.trim();
        if field.is_empty() {
            return Err(FilterError::EmptyField { index });
        }
        let op = Op::parse(&cfg.op).ok_or_else(|| FilterError::UnknownOperator {
            index,
            op: cfg.op.clone(),
        })?;
        let bad = |reason: String| FilterError::BadValue { index, reason };
        let rhs = match (op, &cfg.value) {
            (Op::Exists, None) => Rhs::Exists(true),
            (Op::Exists, Some(toml::Value::Boolean(b))) => Rhs::Exists(*b),
            (Op::Exists, Some(v)) => {
                return Err(bad(format!(
                    "exists takes true or false, not {}",
                    v.type_str()
                )));
            }
            (_, None) => return Err(bad(format!("operator {:?} needs a value", cfg.op.trim()))),
            (Op::In | Op::NotIn, Some(toml::Value::Array(items))) => {
                if items.is_empty() {
                    return Err(bad("the list is empty".to_string()));
                }
                if items.len() > MAX_LIST_VALUES {
                    return Err(bad(format!("more than {MAX_LIST_VALUES} values")));
                }
                let list = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let written = cfg.float_texts.get(i).and_then(Option::as_deref);
                        operand(v, written).map_err(|r| bad(format!("item {i}: {r}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Rhs::List(list.into_boxed_slice())
            }
            (Op::In | Op::NotIn, Some(v)) => {
                return Err(bad(format!(
                    "{:?} takes a list, not {}",
                    cfg.op.trim(),
                    v.type_str()
                )));
            }
            (op, Some(v)) => {
                let written = cfg.float_texts.first().and_then(Option::as_deref);
                let o = operand(v, written).map_err(bad)?;
                if op.is_ordering() && matches!(o, Operand::Bool(_)) {
                    return Err(bad(format!(
                        "{:?} needs a number or a string, not a boolean",
                        cfg.op.trim()
                    )));
                }
                Rhs::One(o)
            }
        };
        Ok(FieldPredicate {
            field: field.into(),
            op,
            rhs,
        })
    }
}

/// One side of a number range a predicate asks of a field.
#[derive(Clone, Copy, Debug)]
enum Bound<'a> {
    /// At least (`inclusive`) or more than the number.
    Low(&'a Num, bool),
    /// At most (`inclusive`) or less than the number.
    High(&'a Num, bool),
    /// Exactly the number.
    Exactly(&'a Num),
}

type Side<'a> = Option<(&'a Num, bool)>;

impl<'a> Bound<'a> {
    /// Tighten `lo` and `hi` by this bound.
    fn narrow(self, lo: &mut Side<'a>, hi: &mut Side<'a>) {
        // Whether `a` leaves out more than `b` does, `inward` the way a bound narrows: a
        // greater low, a lesser high, or the same number with its end left out.
        let tighter = |a: (&Num, bool), b: Side<'_>, inward: Ordering| match b {
            None => true,
            Some(b) => match a.0.cmp(b.0) {
                Some(Ordering::Equal) => !a.1 && b.1,
                o => o == Some(inward),
            },
        };
        let (l, h) = match self {
            Bound::Low(n, inc) => (Some((n, inc)), None),
            Bound::High(n, inc) => (None, Some((n, inc))),
            Bound::Exactly(n) => (Some((n, true)), Some((n, true))),
        };
        if let Some(l) = l.filter(|&l| tighter(l, *lo, Ordering::Greater)) {
            *lo = Some(l);
        }
        if let Some(h) = h.filter(|&h| tighter(h, *hi, Ordering::Less)) {
            *hi = Some(h);
        }
    }

    /// Whether no number lies within `lo` and `hi`.
    fn empty(lo: Side<'_>, hi: Side<'_>) -> bool {
        let (Some((l, li)), Some((h, hi))) = (lo, hi) else {
            return false;
        };
        match l.cmp(h) {
            Some(Ordering::Greater) => true,
            Some(Ordering::Equal) => !(li && hi),
            _ => false,
        }
    }
}

impl FieldPredicate {
    /// The number range this predicate asks of its field, when it asks one: an ordering
    /// against a number (or a number written as a string, which orders as that number), or
    /// `==` a number. Equality with a numeric string is equality as written, so no bound.
    fn bound(&self) -> Option<Bound<'_>> {
        let Rhs::One(o) = &self.rhs else {
            return None;
        };
        let n = match (o, self.op) {
            (Operand::Num(n), _) => n,
            (Operand::Str(_, Some(n)), op) if op.is_ordering() => n,
            _ => return None,
        };
        Some(match self.op {
            Op::Lt => Bound::High(n, false),
            Op::Le => Bound::High(n, true),
            Op::Gt => Bound::Low(n, false),
            Op::Ge => Bound::Low(n, true),
            Op::Eq => Bound::Exactly(n),
            _ => return None,
        })
    }
}

/// A TOML number's text as an operand.
fn number(text: &str) -> Result<Operand, String> {
    Num::parse(text)
        .map(Operand::Num)
        .ok_or_else(|| format!("{text} is no number"))
}

/// A TOML value as a typed operand; a float as `written` in the file when that is given.
fn operand(v: &toml::Value, written: Option<&str>) -> Result<Operand, String> {
    match v {
        toml::Value::Integer(i) => number(&i.to_string()),
        toml::Value::Float(f) if f.is_finite() => {
            // The decimal written (TOML's `_` between digits and a leading `+` aside), when
            // it is that float; else Display's shortest decimal that reads back as it,
            // never in exponent form: JSON's grammar either way.
            let text = written
                .map(|w| w.replace('_', ""))
                .map(|w| w.strip_prefix('+').map(str::to_string).unwrap_or(w))
                .filter(|w| Decimal::of(w).is_some() && w.parse::<f64>().ok() == Some(*f))
                .unwrap_or_else(|| f.to_string());
            number(&text)
        }
        toml::Value::Float(_) => Err("the number must be finite".to_string()),
        toml::Value::String(s) => Ok(Operand::Str(s.as_str().into(), Num::parse(s))),
        toml::Value::Boolean(b) => Ok(Operand::Bool(*b)),
        other => Err(format!(
            "expected a number, string or boolean, not {}",
            other.type_str()
        )),
    }
}

/// A buyer's compiled filters. The default accepts every lead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    /// Sorted, deduplicated; empty = any state.
    states: Vec<StateCode>,
    /// Normalised (uppercase), sorted, deduplicated; empty = any zip.
    zip_prefixes: Vec<Box<[u8]>>,
    /// The distinct prefix lengths present, ascending, so a zip is tested with one binary search
    /// per length rather than one comparison per prefix.
    zip_prefix_lens: Vec<u8>,
    fields: Vec<FieldPredicate>,
}

/// Why a lead failed a buyer's filters, for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMiss {
    /// The lead's state is not in the buyer's `states` (or the lead has none).
    State,
    /// The lead's zip starts with none of the buyer's `zip_prefixes` (or the lead has none).
    Zip,
    /// `fields[i]` does not hold.
    Field(usize),
}

impl Filters {
    /// Compile a buyer's `[buyers.filters]`.
    pub fn compile(cfg: &FiltersConfig) -> Result<Filters, FilterError> {
        if cfg.states.len() > MAX_STATES {
            return Err(FilterError::TooMany {
                key: "states",
                limit: MAX_STATES,
            });
        }
        if cfg.zip_prefixes.len() > MAX_ZIP_PREFIXES {
            return Err(FilterError::TooMany {
                key: "zip_prefixes",
                limit: MAX_ZIP_PREFIXES,
            });
        }
        if cfg.fields.len() > MAX_FIELD_PREDICATES {
            return Err(FilterError::TooMany {
                key: "fields",
                limit: MAX_FIELD_PREDICATES,
            });
        }
        let mut states = Vec::with_capacity(cfg.states.len());
        for (index, s) in cfg.states.iter().enumerate() {
            let code = StateCode::parse(s)
                .filter(|_| crate::lead::is_us_state(s.trim()))
                .ok_or_else(|| FilterError::BadState {
                    index,
                    value: s.clone(),
                })?;
            states.push(code);
        }
        states.sort_unstable();
        states.dedup();

        let mut zip_prefixes = Vec::with_capacity(cfg.zip_prefixes.len());
        for (index, z) in cfg.zip_prefixes.iter().enumerate() {
            let t = z.trim();
            // A lead's zip is five digits, or ZIP+4: a prefix of anything else never matches.
            if t.is_empty() || t.len() > US_ZIP_DIGITS || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FilterError::BadZipPrefix {
                    index,
                    value: z.clone(),
                });
            }
            zip_prefixes.push(t.to_ascii_uppercase().into_bytes().into_boxed_slice());
        }
        zip_prefixes.sort_unstable();
        zip_prefixes.dedup();
        let mut zip_prefix_lens: Vec<u8> = zip_prefixes.iter().map(|p| p.len() as u8).collect();
        zip_prefix_lens.sort_unstable();
        zip_prefix_lens.dedup();

        let fields = cfg
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| FieldPredicate::compile(i, f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filters {
            states,
            zip_prefixes,
            zip_prefix_lens,
            fields,
        })
    }

    /// Fields whose predicates no lead value can meet all of, each as the index of the first
    /// predicate that cannot hold with those before it on the same field: a
    /// number bound that crosses another (`> 50` with `< 20`, `== 7` with `>= 8`), or a value
    /// asked of a field that `exists = false` wants absent (or `exists` both ways). Such a buyer
    /// is never offered a lead; the config is still valid, so this is for `gavel check` to say.
    pub fn contradictions(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, p) in self.fields.iter().enumerate() {
            let before = &self.fields[..i];
            let same = || before.iter().filter(|q| q.field == p.field);
            let absent_wanted = |q: &FieldPredicate| q.rhs == Rhs::Exists(false);
            let present_wanted = |q: &FieldPredicate| !absent_wanted(q);
            let clash = if absent_wanted(p) {
                same().any(present_wanted)
            } else {
                same().any(absent_wanted)
                    || p.bound().is_some_and(|b| {
                        let (mut lo, mut hi) = (None, None);
                        for q in same().filter_map(FieldPredicate::bound) {
                            q.narrow(&mut lo, &mut hi);
                        }
                        b.narrow(&mut lo, &mut hi);
                        Bound::empty(lo, hi)
                    })
            };
            if clash {
                out.push(i);
            }
        }
        out
    }

    /// Filters that accept every lead.
    pub fn any() -> Filters {
        Filters::default()
    }

    /// Whether the lead passes every filter.
    pub fn matches(&self, lead: &Fields) -> bool {
        self.check(lead).is_ok()
    }

    /// Like [`Filters::matches`], saying which filter failed first.
    pub fn check(&self, lead: &Fields) -> Result<(), FilterMiss> {
        if !self.state_allows(StateCode::of_lead(lead)) {
            return Err(FilterMiss::State);
        }
        if !self.zip_prefixes.is_empty() && !self.zip_allows(ZipKey::of_lead(lead).as_ref()) {
            return Err(FilterMiss::Zip);
        }
        for (i, p) in self.fields.iter().enumerate() {
            if !p.test(lead.get_path(p.field()).as_ref().map(PathValue::field)) {
                return Err(FilterMiss::Field(i));
            }
        }
        Ok(())
    }

    /// The accepted states, sorted; empty = any.
    pub fn states(&self) -> &[StateCode] {
        &self.states
    }

    /// Whether a lead with this state (`None` = none or not a code) passes `states`.
    pub fn state_allows(&self, state: Option<StateCode>) -> bool {
        self.states.is_empty() || state.is_some_and(|s| self.states.binary_search(&s).is_ok())
    }

    /// True when the buyer filters on zip at all.
    pub fn has_zip_filter(&self) -> bool {
        !self.zip_prefixes.is_empty()
    }

    /// Whether a lead with this zip (`None` = none or unusable) passes `zip_prefixes`.
    pub fn zip_allows(&self, zip: Option<&ZipKey>) -> bool {
        if self.zip_prefixes.is_empty() {
            return true;
        }
        let Some(zip) = zip else { return false };
        let z = zip.as_bytes();
        self.zip_prefix_lens.iter().any(|&len| {
            let len = usize::from(len);
            len <= z.len()
                && self
                    .zip_prefixes
                    .binary_search_by(|p| p.as_ref().cmp(&z[..len]))
                    .is_ok()
        })
    }

    /// The field predicates, in config order.
    pub fn fields(&self) -> &[FieldPredicate] {
        &self.fields
    }
}
