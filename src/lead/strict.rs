//! The whole request read once more, strictly, when it is not the usual plain shape: a key
//! given twice in any object, however deep (`"details": {"a": 1, "a": 2}`) and however it is
//! escaped (`first\u005fname`), and a number beyond an `f64` anywhere (`"note": 1e400`) make
//! the request malformed. A JSON reader that keeps the last of two keys, or one that keeps the
//! first, would otherwise see a different lead than the exchange passes on.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use crate::text::JsonKey;

/// Keys of one object compared pairwise up to this many; past it, through a hash set.
const PAIRWISE_KEYS: usize = 16;

/// `Err` with serde_json's message (which gives the line and column in the body) when `body`
/// is not JSON, holds a key twice in one object, or a number no `f64` holds.
pub(super) fn check(body: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Strict.deserialize(&mut de)?;
    de.end()
}

#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(JsonKey(key)) = map.next_key::<JsonKey<'de>>()? {
            let twice = if few.len() < PAIRWISE_KEYS {
                few.contains(&key)
            } else {
                if many.is_empty() {
                    many.extend(few.iter().cloned());
                }
                many.contains(&key)
            };
            if twice {
                return Err(de::Error::custom(format_args!(
                    "key `{}` is given twice",
                    crate::lead::clip_str(&key, 64)
                )));
            }
            if few.len() < PAIRWISE_KEYS {
                few.push(key);
            } else {
                many.insert(key);
            }
            map.next_value_seed(Strict)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strict)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        // serde_json refuses a number past an `f64` before it gets here.
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}
