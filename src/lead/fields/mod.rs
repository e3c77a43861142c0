//! A lead's fields, stored compactly: one text buffer with every key and value, and a table of
//! spans into it. A lead waits for its buyers for up to the auction's timeout, so thousands are
//! held at once; a map of `String` keys and `serde_json::Value`s costs several allocations and
//! about 2.7 KB per lead, this costs two allocations and the size of the text plus 16 bytes a
//! field.
//!
//! Values keep their JSON type: strings are stored decoded, numbers as the seller wrote them
//! (no rounding through `f64`), arrays and objects as compact JSON text.

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Where the key starts; the value follows the key.
    start: u32,
    key_len: u32,
    val_len: u32,
    kind: Kind,
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

use super::write_json_str;

/// A JSON object's fields in the order they came, compactly (see the module docs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    text: Box<str>,
    entries: Box<[Entry]>,
}

impl Fields {
    fn key_of(&self, e: &Entry) -> &str {
        let s = e.start as usize;
        self.text.get(s..s + e.key_len as usize).unwrap_or("")
    }

    fn value_of(&self, e: &Entry) -> Field<'_> {
        let s = e.start as usize + e.key_len as usize;
        let t = self.text.get(s..s + e.val_len as usize).unwrap_or("");
        match e.kind {
            Kind::Null => Field::Null,
            Kind::False => Field::Bool(false),
            Kind::True => Field::Bool(true),
            Kind::Num => Field::Num(t),
            Kind::Str => Field::Str(t),
            Kind::Array => Field::Array(t),
            Kind::Object => Field::Object(t),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Field<'_>> {
        self.entries
            .iter()
            .find(|e| self.has_key(e, key))
            .map(|e| self.value_of(e))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.iter().any(|e| self.has_key(e, key))
    }

    /// Whether `e` is under `key`: the lengths first, which tell most keys apart.
    fn has_key(&self, e: &Entry, key: &str) -> bool {
        let s = e.start as usize;
        e.key_len as usize == key.len()
            && self.text.as_bytes().get(s..s + key.len()) == Some(key.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys and values, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Field<'_>)> {
        self.entries
            .iter()
            .map(move |e| (self.key_of(e), self.value_of(e)))
    }

    /// The object as compact JSON text.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(out, k);
            out.push(b':');
            v.write_json(out);
        }
        out.push(b'}');
    }

    /// The fields as a `serde_json` map (allocates; for reports and tests).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_value()))
            .collect()
    }

    /// The fields of a `serde_json` map (allocates; for tools and tests).
    pub fn from_map(map: &Map<String, Value>) -> Fields {
        let mut b = FieldsBuilder::default();
        for (k, v) in map {
            b.push_value(k, v);
        }
        b.finish()
    }

    /// The fields of a JSON object's text.
    pub fn from_json(text: &str) -> Result<Fields, serde_json::Error> {
        // The stored text is never longer than the JSON it came from: reserve it once.
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(FieldsVisitor {
            text_capacity: text.len(),
        })?;
        de.end()?;
        Ok(fields)
    }

    /// Set `key` (rebuilds the text; for tools and tests, not the hot path).
    pub fn insert(&mut self, key: String, value: Value) {
        let mut b = FieldsBuilder::default();
        for (k, v) in self.iter() {
            b.push(k, v);
        }
        b.push_value(&key, &value);
        *self = b.finish();
    }

    /// Only the named keys, in the order named (missing keys skipped).
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

/// Builds a [`Fields`]; a key pushed twice keeps its first place and its last value (as a JSON
/// object read into a map does).
#[derive(Default)]
pub struct FieldsBuilder {
    text: String,
    entries: Vec<Entry>,
}

impl FieldsBuilder {
    /// A builder with room for `text_bytes` of keys and values.
    pub fn with_capacity(text_bytes: usize) -> FieldsBuilder {
        FieldsBuilder {
            text: String::with_capacity(text_bytes.min(MAX_TEXT_BYTES)),
            entries: Vec::with_capacity(TYPICAL_FIELDS),
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
        let (kind, text) = match value {
            Field::Null => (Kind::Null, ""),
            Field::Bool(false) => (Kind::False, ""),
            Field::Bool(true) => (Kind::True, ""),
            Field::Num(t) => (Kind::Num, t),
            Field::Str(t) => (Kind::Str, t),
            Field::Array(t) => (Kind::Array, t),
            Field::Object(t) => (Kind::Object, t),
        };
        self.push_raw(key, kind, text)
    }

    fn push_raw(&mut self, key: &str, kind: Kind, value: &str) -> bool {
        if self.text.len() + key.len() + value.len() > MAX_TEXT_BYTES {
            return false;
        }
        let entry = Entry {
            start: self.text.len() as u32,
            key_len: key.len() as u32,
            val_len: value.len() as u32,
            kind,
        };
        self.text.push_str(key);
        self.text.push_str(value);
        let text = self.text.as_bytes();
        let same_key = |e: &&mut Entry| {
            let s = e.start as usize;
            e.key_len as usize == key.len() && text.get(s..s + key.len()) == Some(key.as_bytes())
        };
        // The key's first copy is the one just written at the end of `text`.
        match self.entries.iter_mut().find(same_key) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
        true
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
            Some(b'[' | b'{') => {
                let v: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
                self.push_value(key, &v)
            }
            Some(_) => self.push(key, Field::Num(raw)),
            None => return Err("empty value".into()),
        };
        if ok {
            Ok(())
        } else {
            Err("object too large".into())
        }
    }

    pub fn finish(self) -> Fields {
        // Spare room is not shrunk in place but the contents copied to an allocation of their
        // exact size: a builder reserves for the whole request body, and the tail an in-place
        // shrink frees would stay stuck between the blocks of leads still in flight.
        let text = if self.text.capacity() == self.text.len() {
            self.text.into_boxed_str()
        } else {
            Box::from(self.text.as_str())
        };
        let entries = if self.entries.capacity() == self.entries.len() {
            self.entries.into_boxed_slice()
        } else {
            Box::from(&self.entries[..])
        };
        Fields { text, entries }
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
        read_object(&mut map, self.text_capacity)?.map_err(de::Error::custom)
    }
}

/// Read an object's entries into `Fields`. An object `Fields` refuses (over [`MAX_FIELDS`]
/// keys, too large) is read to its end and its refusal returned as the inner `Err`, so the
/// JSON around it can still be read; JSON syntax errors are the outer `Err`.
fn read_object<'de, A: MapAccess<'de>>(
    map: &mut A,
    text_capacity: usize,
) -> Result<Result<Fields, String>, A::Error> {
    let mut b = FieldsBuilder::with_capacity(text_capacity);
    // Repeated keys count too: each one is a scan of the keys so far, so an object of
    // one key repeated thousands of times must not get past the limit.
    let mut keys = 0usize;
    let mut refused = None;
    while let Some(key) = map.next_key_seed(KeySeed)? {
        keys += 1;
        let raw: &RawValue = map.next_value()?;
        if let Err(e) = b.push_raw_json(&key, raw.get()) {
            refused = Some(e);
            break;
        }
        if keys > MAX_FIELDS {
            refused = Some(format!("{} {} fields", TOO_MANY_FIELDS, MAX_FIELDS));
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
    /// an object over [`MAX_FIELDS`] keys).
    Refused(String),
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
        Ok(match read_object(&mut map, capacity)? {
            Ok(fields) => Member::Object(fields),
            Err(why) => Member::Refused(why),
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
