//! Reading one value out of a buyer's JSON answer by JSON pointer (RFC 6901), without building a
//! `Value` tree: every step hands back the raw text of the member it found, so a bid such as
//! `42.57` reaches `money::parse_cents` as the buyer wrote it and never passes through a float.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use super::Found;
use crate::text::JsonKey;

/// The raw value at `pointer` (already split into unescaped reference tokens) in `doc`.
/// `Ok(None)`: the document is valid JSON but has nothing there. `Err`: not valid JSON.
/// Each step re-reads only the member found by the step before; serde_json's own recursion
/// limit bounds how deep a hostile answer may nest.
pub(super) fn lookup<'a>(
    doc: &'a str,
    pointer: &[String],
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut cur: &'a RawValue = serde_json::from_str(doc)?;
    for token in pointer {
        let mut de = serde_json::Deserializer::from_str(cur.get());
        let step = Seek { token }.deserialize(&mut de)?;
        match step {
            Some(next) => cur = next,
            None => return Ok(None),
        }
        de.end()?;
    }
    Ok(Some(cur))
}

/// What a raw JSON value says as text: strings decoded, numbers and booleans as written,
/// `null` told apart, objects and arrays as their JSON text.
pub(super) fn found(raw: &RawValue) -> Found<'_> {
    let t = raw.get().trim();
    if t == "null" {
        return Found::Null;
    }
    if let Some(inner) = t.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Found::Text(Cow::Borrowed(inner));
        }
        return match serde_json::from_str::<String>(t) {
            Ok(s) => Found::Text(Cow::Owned(s)),
            // An escape that names no character (a lone surrogate, `"\ud83d"`): what the
            // string says is not known, and its escapes passed on as text would be another.
            Err(_) => Found::Unreadable,
        };
    }
    Found::Text(Cow::Borrowed(t))
}

/// Looks for one reference token in an object (by key; the key twice is an error) or an array
/// (by decimal index). Any other kind of value has no members, so the path does not exist there.
struct Seek<'k> {
    token: &'k str,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut hit = None;
        while let Some(JsonKey(key)) = map.next_key::<JsonKey<'de>>()? {
            if key == self.token {
                if hit.is_some() {
                    // Two values for the key read: which one the buyer meant is unknown, so
                    // the answer is not read at all (as the native answer's `bid` twice).
                    return Err(de::Error::custom("duplicate key on the path"));
                }
                hit = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(hit)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // RFC 6901: an index is "0" or digits without a leading zero.
        let index = match self.token.as_bytes() {
            [b'0'] => Some(0),
            [b'1'..=b'9', ..] => self.token.parse::<usize>().ok(),
            _ => None,
        };
        let mut hit = None;
        let mut i = 0usize;
        loop {
            if Some(i) == index {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => hit = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i = i.saturating_add(1);
        }
        Ok(hit)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}
