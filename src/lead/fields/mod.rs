//! A lead's fields, stored compactly: the object as compact JSON text, and a table of spans
//! into it. A lead waits for its buyers for up to the auction's timeout, so thousands are held
//! at once; a map of `String` keys and `serde_json::Value`s costs several allocations and about
//! 2.7 KB per lead, this costs two allocations (three when a key or a string has escapes) and
//! the size of the text plus 16 bytes a field.
//!
//! The text is the object as it is posted to a buyer (`{"key":value,...}`, no whitespace), so
//! writing the lead is one copy, and each member's `"key":value` can be copied on its own (the
//! ping's fields). Values keep their JSON type: strings are read from their JSON (a string with
//! escapes also keeps its decoded form, after the JSON), numbers as the seller wrote them (no
//! rounding through `f64`), arrays and objects as compact JSON text.

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Most keys one object may carry, repeated keys included (the lead's `MAX_LEAD_FIELDS`).
pub const MAX_FIELDS: usize = 256;
/// The start of the error for an object over [`MAX_FIELDS`].
pub const TOO_MANY_FIELDS: &str = "more than";
/// Longest text (keys and values together) one object may hold; request bodies are smaller.
pub const MAX_TEXT_BYTES: usize = u32::MAX as usize;

/// The JSON type of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Null,
    False,
    True,
    Num,
    Str,
    Array,
    Object,
}

impl Kind {
    #[inline]
    fn of(value: Field<'_>) -> Kind {
        match value {
            Field::Null => Kind::Null,
            Field::Bool(false) => Kind::False,
            Field::Bool(true) => Kind::True,
            Field::Num(_) => Kind::Num,
            Field::Str(_) => Kind::Str,
            Field::Array(_) => Kind::Array,
            Field::Object(_) => Kind::Object,
        }
    }
}

/// One value of a lead, borrowed from its [`Fields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    Null,
    Bool(bool),
    /// A number as its JSON text.
    Num(&'a str),
    /// A string, decoded.
    Str(&'a str),
    /// An array as compact JSON text.
    Array(&'a str),
    /// An object as compact JSON text.
    Object(&'a str),
}

impl<'a> Field<'a> {
    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }

    /// Null, or a string of nothing but whitespace.
    pub fn is_blank(&self) -> bool {
        match *self {
            Field::Null => true,
            Field::Str(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// The value as JSON text.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match *self {
            Field::Null => out.extend_from_slice(b"null"),
            Field::Bool(true) => out.extend_from_slice(b"true"),
            Field::Bool(false) => out.extend_from_slice(b"false"),
            Field::Str(s) => write_json_str(out, s),
            Field::Num(t) | Field::Array(t) | Field::Object(t) => {
                out.extend_from_slice(t.as_bytes())
            }
        }
    }

    /// The value as a `serde_json::Value` (allocates; for reports and tests, not the hot path).
    pub fn to_value(&self) -> Value {
        match *self {
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Bool(b),
            Field::Str(s) => Value::String(s.to_string()),
            Field::Num(t) | Field::Array(t) | Field::Object(t) => {
                serde_json::from_str(t).unwrap_or(Value::Null)
            }
        }
    }

    /// The strings of an array value (other elements skipped); `None` if it is not an array.
    pub fn array_strings(&self) -> Option<Vec<String>> {
        match *self {
            Field::Array(t) => match serde_json::from_str::<Value>(t) {
                Ok(Value::Array(items)) => Some(
                    items
                        .into_iter()
                        .filter_map(|v| match v {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the value is an array of strings only.
    pub fn is_string_array(&self) -> bool {
        match *self {
            Field::Array(t) => matches!(
                serde_json::from_str::<Value>(t),
                Ok(Value::Array(items)) if items.iter().all(Value::is_string)
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Field<'_> {
    /// JSON text, like `serde_json::Value`'s `Display`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_json(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Field::Null => s.serialize_unit(),
            Field::Bool(b) => s.serialize_bool(b),
            Field::Str(t) => s.serialize_str(t),
            _ => self.to_value().serialize(s),
        }
    }
}

use super::scan::is_plain;
use super::write_json_str;

/// A stored member: its `"key":value` JSON at `start` in the text, `key_len` bytes of key
/// (quotes included), a colon, then `val_len` bytes of value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    start: u32,
    key_len: u32,
    val_len: u32,
    kind: Kind,
    /// The key or the (string) value has escapes: its decoded form is in the escapes table.
    escaped: bool,
    /// [`key_tag`] of the (decoded) key: a lookup compares the key only where this matches.
    tag: u16,
}

impl Entry {
    #[inline]
    fn key_json<'t>(&self, text: &'t str) -> &'t str {
        let s = self.start as usize;
        text.get(s..s + self.key_len as usize).unwrap_or("\"\"")
    }

    #[inline]
    fn value_json<'t>(&self, text: &'t str) -> &'t str {
        let s = self.start as usize + self.key_len as usize + 1;
        text.get(s..s + self.val_len as usize).unwrap_or("null")
    }

    #[inline]
    fn member_json<'t>(&self, text: &'t str) -> &'t str {
        let s = self.start as usize;
        let len = self.key_len as usize + 1 + self.val_len as usize;
        text.get(s..s + len).unwrap_or("")
    }
}

/// The decoded key and string value of a member with escapes (either may have none), as
/// spans of the decoded text kept after the JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decoded {
    /// The entry's index.
    entry: u32,
    key: Option<(u32, u32)>,
    value: Option<(u32, u32)>,
}

#[inline]
fn span(text: &str, (start, len): (u32, u32)) -> &str {
    let s = start as usize;
    text.get(s..s + len as usize).unwrap_or("")
}

#[inline]
fn unquote(json: &str) -> &str {
    json.get(1..json.len().saturating_sub(1)).unwrap_or("")
}

/// The spans shared by [`Fields`] and [`FieldsBuilder`]: the JSON, the decoded text of the
/// members with escapes, and where those are.
#[derive(Clone, Copy)]
struct View<'a> {
    json: &'a str,
    decoded: &'a str,
    escapes: &'a [Decoded],
}

impl<'a> View<'a> {
    #[inline]
    fn decoded_of(&self, index: usize) -> Option<&'a Decoded> {
        self.escapes.iter().find(|d| d.entry as usize == index)
    }

    #[inline]
    fn key(&self, index: usize, e: &Entry) -> &'a str {
        if e.escaped {
            if let Some(k) = self.decoded_of(index).and_then(|d| d.key) {
                return span(self.decoded, k);
            }
        }
        unquote(e.key_json(self.json))
    }

    #[inline]
    fn has_key(&self, index: usize, e: &Entry, key: &str) -> bool {
        if e.escaped {
            return self.key(index, e) == key;
        }
        let s = e.start as usize + 1;
        e.key_len as usize == key.len() + 2
            && self.json.as_bytes().get(s..s + key.len()) == Some(key.as_bytes())
    }

    #[inline]
    fn value(&self, index: usize, e: &Entry) -> Field<'a> {
        let t = e.value_json(self.json);
        match e.kind {
            Kind::Null => Field::Null,
            Kind::False => Field::Bool(false),
            Kind::True => Field::Bool(true),
            Kind::Num => Field::Num(t),
            Kind::Str => {
                if e.escaped {
                    if let Some(v) = self.decoded_of(index).and_then(|d| d.value) {
                        return Field::Str(span(self.decoded, v));
                    }
                }
                Field::Str(unquote(t))
            }
            Kind::Array => Field::Array(t),
            Kind::Object => Field::Object(t),
        }
    }
}

/// A value read by [`Fields::get_path`]: borrowed from the lead, or, for a string with escapes
/// inside a nested object, decoded into its own text (the lead keeps nested objects as JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathValue<'a> {
    Field(Field<'a>),
    Decoded(Box<str>),
}

impl PathValue<'_> {
    /// The value as a [`Field`] (a decoded string as [`Field::Str`]).
    #[inline]
    pub fn field(&self) -> Field<'_> {
        match self {
            PathValue::Field(f) => *f,
            PathValue::Decoded(s) => Field::Str(s),
        }
    }
}

/// The member `key` of the JSON object `object`, borrowing from its text (the last one, should
/// the key be given twice, as the lead's own fields keep). A string with escapes is decoded.
fn nested_member<'a>(object: &'a str, key: &str) -> Option<PathValue<'a>> {
    let members = serde_json::from_str::<MemberList<'a>>(object).ok()?.0;
    let raw = members.into_iter().rev().find(|(k, _)| k == key)?.1.get();
    Some(PathValue::Field(match raw.as_bytes().first()? {
        b'n' => Field::Null,
        b't' => Field::Bool(true),
        b'f' => Field::Bool(false),
        b'"' => {
            let inner = raw.get(1..raw.len() - 1)?;
            if inner.contains('\\') {
                let s = serde_json::from_str::<String>(raw).ok()?;
                return Some(PathValue::Decoded(s.into_boxed_str()));
            }
            Field::Str(inner)
        }
        b'[' => Field::Array(raw),
        b'{' => Field::Object(raw),
        _ => Field::Num(raw),
    }))
}

/// An object's members in order, each value as its raw JSON text.
struct MemberList<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for MemberList<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MemberList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MemberList<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    let v = map.next_value::<&'de RawValue>()?;
                    out.push((k, v));
                }
                Ok(MemberList(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object's fields in the order they came, compactly (see the module docs).
#[derive(Clone, Default)]
pub struct Fields {
    /// The compact JSON object (`json_len` bytes; empty for an empty object), then the decoded
    /// keys and strings of members with escapes.
    text: Box<str>,
    json_len: u32,
    entries: Box<[Entry]>,
    escapes: Box<[Decoded]>,
}

impl Fields {
    #[inline]
    fn view(&self) -> View<'_> {
        let (json, decoded) = self.text.split_at(self.json_len as usize);
        View {
            json,
            decoded,
            escapes: &self.escapes,
        }
    }

    /// The entry of `key` when no key or string has escapes (the usual lead): each key is its
    /// JSON without the quotes, and each string its JSON.
    #[inline(always)]
    fn find_plain(&self, key: &str) -> Option<&Entry> {
        let json = self.text.as_bytes();
        let (tag, want) = (key_tag(key), key.len() + 2);
        self.entries.iter().find(|e| {
            let s = e.start as usize + 1;
            e.tag == tag
                && e.key_len as usize == want
                && json.get(s..s + key.len()) == Some(key.as_bytes())
        })
    }

    /// The index of `key`'s entry, whatever the escapes.
    fn find_any(&self, key: &str) -> Option<usize> {
        let v = self.view();
        let tag = key_tag(key);
        self.entries
            .iter()
            .enumerate()
            .position(|(i, e)| e.tag == tag && v.has_key(i, e, key))
    }

    /// The value of `key`. Inlined: most callers name a key known when compiled, and the
    /// search then compares each key's length and bytes with constants.
    #[inline(always)]
    pub fn get(&self, key: &str) -> Option<Field<'_>> {
        if self.escapes.is_empty() {
            let e = self.find_plain(key)?;
            // A string's text is its JSON within the quotes.
            let s = e.start as usize + e.key_len as usize + 1;
            let (from, to) = match e.kind {
                Kind::Str => (s + 1, (s + e.val_len as usize).saturating_sub(1)),
                _ => (s, s + e.val_len as usize),
            };
            let t = self.text.get(from..to).unwrap_or("");
            return Some(match e.kind {
                Kind::Null => Field::Null,
                Kind::False => Field::Bool(false),
                Kind::True => Field::Bool(true),
                Kind::Num => Field::Num(t),
                Kind::Str => Field::Str(t),
                Kind::Array => Field::Array(t),
                Kind::Object => Field::Object(t),
            });
        }
        let i = self.find_any(key)?;
        self.entries.get(i).map(|e| self.view().value(i, e))
    }

    /// The value at `path`: the member named `path` when there is one, else, for a path with
    /// dots (`vehicle.year`), the member `year` of the object `vehicle`, at any depth. A string
    /// found inside a nested object is decoded like the lead's own (allocating only when it
    /// has escapes).
    pub fn get_path(&self, path: &str) -> Option<PathValue<'_>> {
        if let Some(v) = self.get(path) {
            return Some(PathValue::Field(v));
        }
        let (head, mut rest) = path.split_once('.')?;
        let Field::Object(mut object) = self.get(head)? else {
            return None;
        };
        loop {
            let (key, more) = match rest.split_once('.') {
                Some((k, m)) => (k, Some(m)),
                None => (rest, None),
            };
            let value = nested_member(object, key)?;
            match (more, value) {
                (None, v) => return Some(v),
                (Some(m), PathValue::Field(Field::Object(inner))) => (object, rest) = (inner, m),
                (Some(_), _) => return None,
            }
        }
    }

    /// `"key":value` as JSON, as it is written in the object.
    #[inline]
    pub fn member_json(&self, key: &str) -> Option<&str> {
        let e = if self.escapes.is_empty() {
            self.find_plain(key)?
        } else {
            self.entries.get(self.find_any(key)?)?
        };
        Some(e.member_json(&self.text))
    }

    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        if self.escapes.is_empty() {
            self.find_plain(key).is_some()
        } else {
            self.find_any(key).is_some()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys and values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Field<'_>)> {
        let v = self.view();
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, e)| (v.key(i, e), v.value(i, e)))
    }

    /// The object as compact JSON: one copy of the stored text.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if self.json_len == 0 {
            out.extend_from_slice(b"{}");
        } else {
            out.extend_from_slice(self.view().json.as_bytes());
        }
    }

    /// The fields as a `serde_json` map.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_value()))
            .collect()
    }

    /// Fields from a `serde_json` map, in its order.
    pub fn from_map(map: &Map<String, Value>) -> Fields {
        let mut b = FieldsBuilder::default();
        for (k, v) in map {
            b.push_value(k, v);
        }
        b.finish()
    }

    /// Read a JSON object.
    pub fn from_json(text: &str) -> Result<Fields, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(FieldsVisitor {
            text_capacity: text.len(),
        })?;
        de.end()?;
        Ok(fields)
    }

    /// Set `key` (replacing its value in place, or appended).
    /// Set `key` to `value` (the JSON text of an array or object as it is).
    pub fn insert_field(&mut self, key: &str, value: Field<'_>) {
        let mut b = FieldsBuilder::default();
        for (k, v) in self.iter() {
            b.push(k, v);
        }
        b.push(key, value);
        *self = b.finish();
    }

    pub fn insert(&mut self, key: String, value: Value) {
        let mut b = FieldsBuilder::default();
        for (k, v) in self.iter() {
            b.push(k, v);
        }
        b.push_value(&key, &value);
        *self = b.finish();
    }

    /// The fields named by `keys` that are present, in the order of `keys`.
    pub fn select<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Fields {
        let mut b = FieldsBuilder::default();
        for k in keys {
            if let Some(v) = self.get(k) {
                b.push(k, v);
            }
        }
        b.finish()
    }
}

impl PartialEq for Fields {
    /// The same keys with the same values in the same order.
    fn eq(&self, other: &Fields) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Fields {
        Fields::from_map(&map)
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Fields a builder has room for before it grows (a typical lead has 10 to 20).
const TYPICAL_FIELDS: usize = 16;

/// A 16-bit hash of a key (its length, first, second and last bytes), kept in each entry.
#[inline]
fn key_tag(key: &str) -> u16 {
    let b = key.as_bytes();
    let at = |i: usize| u32::from(b.get(i).copied().unwrap_or(0));
    let last = u32::from(b.last().copied().unwrap_or(0));
    let h = (b.len() as u32)
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(at(0) << 16 | at(1) << 8 | last)
        .wrapping_mul(0x85EB_CA6B);
    (h >> 16) as u16
}

/// A one-in-64 filter on a key, so that most pushes need not compare their key with every key
/// before them to find a repeat.
#[inline]
fn key_bit(key: &str) -> u64 {
    let b = key.as_bytes();
    let first = b.first().copied().unwrap_or(0) as usize;
    let last = b.last().copied().unwrap_or(0) as usize;
    1u64 << ((b.len().wrapping_mul(7) ^ first ^ last.wrapping_mul(3)) & 63)
}

/// Appends `s` to `out` as a JSON string; false when it needed escapes.
fn push_json_str(out: &mut String, s: &str) -> bool {
    if is_plain(s.as_bytes()) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        true
    } else {
        let mut bytes = Vec::with_capacity(s.len() + 8);
        write_json_str(&mut bytes, s);
        // serde_json writes valid UTF-8 (the input's text and ASCII escapes).
        out.push_str(&String::from_utf8_lossy(&bytes));
        false
    }
}

/// Builds a [`Fields`]; a key pushed twice keeps its first place and its last value (as a JSON
/// object read into a map does).
pub struct FieldsBuilder {
    /// `{` and the members so far, comma-separated.
    text: String,
    entries: Vec<Entry>,
    /// Decoded keys and strings of members with escapes.
    decoded: String,
    escapes: Vec<Decoded>,
    /// [`key_bit`] of every key so far.
    seen: u64,
    /// A key came twice: the text holds a member no entry points at any more.
    repeated: bool,
}

impl Default for FieldsBuilder {
    fn default() -> FieldsBuilder {
        FieldsBuilder::with_capacity(0)
    }
}

impl FieldsBuilder {
    /// A builder whose text (the object's JSON) has room for `text_bytes`.
    pub fn with_capacity(text_bytes: usize) -> FieldsBuilder {
        let mut text = String::with_capacity(text_bytes.clamp(2, MAX_TEXT_BYTES));
        text.push('{');
        FieldsBuilder {
            text,
            entries: Vec::with_capacity(TYPICAL_FIELDS),
            decoded: String::new(),
            escapes: Vec::new(),
            seen: 0,
            repeated: false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add `key` = `value`. False (and nothing added) when the text would outgrow
    /// [`MAX_TEXT_BYTES`].
    pub fn push(&mut self, key: &str, value: Field<'_>) -> bool {
        let (mark, decoded_mark) = (self.text.len(), self.decoded.len());
        let start = self.member_start();
        let key_plain = push_json_str(&mut self.text, key);
        let key_len = self.text.len() - start;
        self.text.push(':');
        let value_start = self.text.len();
        let mut value_plain = true;
        let kind = match value {
            Field::Null => {
                self.text.push_str("null");
                Kind::Null
            }
            Field::Bool(false) => {
                self.text.push_str("false");
                Kind::False
            }
            Field::Bool(true) => {
                self.text.push_str("true");
                Kind::True
            }
            Field::Str(s) => {
                value_plain = push_json_str(&mut self.text, s);
                Kind::Str
            }
            Field::Num(t) => {
                self.text.push_str(t);
                Kind::Num
            }
            Field::Array(t) => {
                self.text.push_str(t);
                Kind::Array
            }
            Field::Object(t) => {
                self.text.push_str(t);
                Kind::Object
            }
        };
        let decoded = (!key_plain || !value_plain).then(|| {
            let mut keep = |s: &str| {
                let at = (self.decoded.len() as u32, s.len() as u32);
                self.decoded.push_str(s);
                at
            };
            Decoded {
                entry: 0,
                key: (!key_plain).then(|| keep(key)),
                value: match value {
                    Field::Str(s) if !value_plain => Some(keep(s)),
                    _ => None,
                },
            }
        });
        if self.text.len() + self.decoded.len() + 1 > MAX_TEXT_BYTES {
            self.text.truncate(mark);
            self.decoded.truncate(decoded_mark);
            return false;
        }
        let entry = Entry {
            start: start as u32,
            key_len: key_len as u32,
            val_len: (self.text.len() - value_start) as u32,
            kind,
            escaped: decoded.is_some(),
            tag: key_tag(key),
        };
        self.add(key, entry, decoded);
        true
    }

    /// Add a member whose key and string value are known to need no escapes (a byte scan of
    /// the request checked them): `value_json` is the value's JSON as it is to be written, a
    /// string with its quotes. False (and nothing added) when the text would outgrow
    /// [`MAX_TEXT_BYTES`].
    #[inline]
    pub(super) fn push_plain(&mut self, key: &str, value: Field<'_>, value_json: &str) -> bool {
        debug_assert!(is_plain(key.as_bytes()));
        debug_assert!(value.as_str().is_none_or(|s| is_plain(s.as_bytes())));
        if self.text.len() + key.len() + value_json.len() + 5 > MAX_TEXT_BYTES {
            return false;
        }
        let start = self.member_start();
        self.text.push('"');
        self.text.push_str(key);
        self.text.push_str("\":");
        self.text.push_str(value_json);
        self.add_plain(key, value, start, value_json.len());
        true
    }

    /// Add a member from its JSON as it came (`"key":value`, no spaces), whose key and string
    /// value are known to need no escapes. False (and nothing added) when the text would
    /// outgrow [`MAX_TEXT_BYTES`].
    #[inline]
    pub(super) fn push_member(&mut self, key: &str, value: Field<'_>, member: &str) -> bool {
        debug_assert!(is_plain(key.as_bytes()));
        debug_assert!(value.as_str().is_none_or(|s| is_plain(s.as_bytes())));
        debug_assert!(member.len() > key.len() + 3 && member[1..].starts_with(key));
        if self.text.len() + member.len() + 2 > MAX_TEXT_BYTES {
            return false;
        }
        let start = self.member_start();
        self.text.push_str(member);
        self.add_plain(key, value, start, member.len() - key.len() - 3);
        true
    }

    /// The entry of a member without escapes just written at `start` (`"key":` and a value of
    /// `val_len` bytes).
    #[inline(always)]
    fn add_plain(&mut self, key: &str, value: Field<'_>, start: usize, val_len: usize) {
        let entry = Entry {
            start: start as u32,
            key_len: key.len() as u32 + 2,
            val_len: val_len as u32,
            kind: Kind::of(value),
            escaped: false,
            tag: key_tag(key),
        };
        self.add(key, entry, None);
    }

    /// Where the next member starts, after its separating comma.
    #[inline]
    fn member_start(&mut self) -> usize {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.text.len()
    }

    fn view(&self) -> View<'_> {
        View {
            json: &self.text,
            decoded: &self.decoded,
            escapes: &self.escapes,
        }
    }

    #[inline(always)]
    fn add(&mut self, key: &str, entry: Entry, decoded: Option<Decoded>) {
        let bit = key_bit(key);
        let old = if self.seen & bit != 0 {
            let v = self.view();
            self.entries
                .iter()
                .enumerate()
                .position(|(i, e)| e.tag == entry.tag && v.has_key(i, e, key))
        } else {
            None
        };
        self.seen |= bit;
        let index = match old {
            Some(i) => {
                self.repeated = true;
                self.entries[i] = entry;
                self.escapes.retain(|d| d.entry as usize != i);
                i
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        if let Some(d) = decoded {
            self.escapes.push(Decoded {
                entry: index as u32,
                ..d
            });
        }
    }

    /// Add a `serde_json` value (arrays and objects become compact JSON text).
    pub fn push_value(&mut self, key: &str, value: &Value) -> bool {
        match value {
            Value::Null => self.push(key, Field::Null),
            Value::Bool(b) => self.push(key, Field::Bool(*b)),
            Value::Number(n) => self.push(key, Field::Num(&n.to_string())),
            Value::String(s) => self.push(key, Field::Str(s)),
            Value::Array(_) => self.push(key, Field::Array(&value.to_string())),
            Value::Object(_) => self.push(key, Field::Object(&value.to_string())),
        }
    }

    /// Add a value from its JSON text (as serde_json's `RawValue` gives it).
    fn push_raw_json(&mut self, key: &str, raw: &str) -> Result<(), String> {
        let raw = raw.trim();
        let ok = match raw.as_bytes().first() {
            Some(b'"') => match raw.get(1..raw.len() - 1) {
                Some(inner) if !inner.contains('\\') => self.push(key, Field::Str(inner)),
                _ => {
                    let s: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
                    self.push(key, Field::Str(&s))
                }
            },
            Some(b'n') => self.push(key, Field::Null),
            Some(b't') => self.push(key, Field::Bool(true)),
            Some(b'f') => self.push(key, Field::Bool(false)),
            // Copied as the seller wrote them, whitespace aside: a number nested in an
            // object reaches buyers with its very digits.
            Some(b'[') => {
                let t = super::raw::compact(raw)
                    .ok_or_else(|| format!("{key}: {}", super::NESTED_TOO_DEEP))?;
                self.push(key, Field::Array(&t))
            }
            Some(b'{') => {
                let t = super::raw::compact(raw)
                    .ok_or_else(|| format!("{key}: {}", super::NESTED_TOO_DEEP))?;
                self.push(key, Field::Object(&t))
            }
            Some(_) => {
                // Beyond an `f64` (`1e400`): strict JSON readers refuse it, and so would a
                // buyer's parser the whole ping that carried it.
                if !raw.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(format!("{key}: number out of range"));
                }
                self.push(key, Field::Num(raw))
            }
            None => return Err("empty value".into()),
        };
        if ok {
            Ok(())
        } else {
            Err("object too large".into())
        }
    }

    /// A key was given more than once (the later value replaced the earlier).
    pub fn has_repeated(&self) -> bool {
        self.repeated
    }

    pub fn finish(self) -> Fields {
        if self.repeated {
            // The text still holds the members that later ones replaced: written again from
            // the entries, in their order.
            let stale = self.assemble();
            let mut b = FieldsBuilder::with_capacity(stale.text.len());
            for (k, v) in stale.iter() {
                b.push(k, v);
            }
            return b.assemble();
        }
        self.assemble()
    }

    /// The fields as they stand. The contents are copied to an allocation of their exact
    /// size, not shrunk in place: a builder reserves for the whole request body, and the tail
    /// an in-place shrink frees would stay stuck between the blocks of leads still in flight.
    fn assemble(self) -> Fields {
        let json_len = if self.entries.is_empty() {
            0
        } else {
            self.text.len() + 1
        };
        let mut text = String::with_capacity(json_len + self.decoded.len());
        if json_len > 0 {
            text.push_str(&self.text);
            text.push('}');
        }
        text.push_str(&self.decoded);
        let entries = if self.entries.capacity() == self.entries.len() {
            self.entries.into_boxed_slice()
        } else {
            Box::from(&self.entries[..])
        };
        Fields {
            text: text.into_boxed_str(),
            json_len: json_len as u32,
            entries,
            escapes: self.escapes.into_boxed_slice(),
        }
    }
}

/// A key, borrowed from the input unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// Reads an object; `text_capacity` is reserved for its text up front.
struct FieldsVisitor {
    text_capacity: usize,
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        read_object(&mut map, self.text_capacity, false)?.map_err(|(why, _)| de::Error::custom(why))
    }
}

/// Why [`read_object`] refused an object, and the key at fault when one is.
type ObjectRefusal = (String, Option<String>);

/// Read an object's entries into `Fields`. An object `Fields` refuses (over [`MAX_FIELDS`]
/// keys, too large, a key given twice when `refuse_repeated`) is read to its end and its
/// refusal returned as the inner `Err` (why, and the key at fault when one is), so the JSON
/// around it can still be read; JSON syntax errors are the outer `Err`.
fn read_object<'de, A: MapAccess<'de>>(
    map: &mut A,
    text_capacity: usize,
    refuse_repeated: bool,
) -> Result<Result<Fields, ObjectRefusal>, A::Error> {
    let mut b = FieldsBuilder::with_capacity(text_capacity);
    // Repeated keys count too: each one is a scan of the keys so far, so an object of
    // one key repeated thousands of times must not get past the limit.
    let mut keys = 0usize;
    let mut refused = None;
    while let Some(key) = map.next_key_seed(KeySeed)? {
        keys += 1;
        let raw: &RawValue = map.next_value()?;
        if let Err(e) = b.push_raw_json(&key, raw.get()) {
            refused = Some((e, Some(key.to_string())));
            break;
        }
        if refuse_repeated && b.has_repeated() {
            refused = Some((format!("{key} is given twice"), Some(key.to_string())));
            break;
        }
        if keys > MAX_FIELDS {
            refused = Some((format!("{} {} fields", TOO_MANY_FIELDS, MAX_FIELDS), None));
            break;
        }
    }
    if let Some(why) = refused {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        return Ok(Err(why));
    }
    Ok(Ok(b.finish()))
}

/// A member of a request that must be a JSON object (`lead`, `consent`), read in the same pass
/// as the request around it: an object becomes [`Fields`] at once, without being scanned
/// first as raw JSON and parsed again.
#[derive(Debug)]
pub enum Member {
    Null,
    Object(Fields),
    /// An object `Fields` refused; the text says why (it starts with [`TOO_MANY_FIELDS`] for
    /// an object over [`MAX_FIELDS`] keys), with the key at fault when one is.
    Refused(String, Option<String>),
    /// A string, number, boolean or array.
    NotObject,
}

thread_local! {
    /// The text capacity a [`Member`] object reserves: set by [`Member::read_with_capacity`]
    /// to the length of the body being read, which no member's text can exceed.
    static MEMBER_TEXT_CAPACITY: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Member {
    /// Run `read` (a parse of a body `body_len` bytes long) with every `Member` object it
    /// meets reserving its text once, at `body_len` bytes, instead of growing it.
    pub fn read_with_capacity<T>(body_len: usize, read: impl FnOnce() -> T) -> T {
        let before = MEMBER_TEXT_CAPACITY.with(|c| c.replace(body_len));
        let out = read();
        MEMBER_TEXT_CAPACITY.with(|c| c.set(before));
        out
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Member, E> {
        Ok(Member::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Member, E> {
        Ok(Member::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Member, E> {
        Ok(Member::NotObject)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Member, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Member::NotObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member, A::Error> {
        let capacity = MEMBER_TEXT_CAPACITY.with(|c| c.get());
        // A key given twice in a request is refused: readers of the journaled body that keep
        // the first value would see another lead than the one auctioned.
        Ok(match read_object(&mut map, capacity, true)? {
            Ok(fields) => Member::Object(fields),
            Err((why, key)) => Member::Refused(why, key),
        })
    }
}

impl<'de> Deserialize<'de> for Member {
    /// Only from serde_json (values are read as `RawValue`s).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        d.deserialize_any(MemberVisitor)
    }
}

impl<'de> Deserialize<'de> for Fields {
    /// A JSON object; only from serde_json (values are read as `RawValue`s).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(FieldsVisitor { text_capacity: 0 })
    }
}

#[cfg(test)]
mod tests;
