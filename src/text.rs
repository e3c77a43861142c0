//! A short string kept inline, so that values read on the hot path (a buyer's bid id, a
//! response's Content-Type) cost no allocation.

use std::fmt;
use std::ops::Deref;

/// Bytes an inline string holds; longer values are cut at a character boundary.
pub const SMALL_TEXT_BYTES: usize = 120;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmallText {
    len: u8,
    buf: [u8; SMALL_TEXT_BYTES],
}

impl SmallText {
    /// `s`, cut to at most `SMALL_TEXT_BYTES` at a character boundary.
    pub fn new(s: &str) -> SmallText {
        let mut cut = s.len().min(SMALL_TEXT_BYTES);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = [0u8; SMALL_TEXT_BYTES];
        buf[..cut].copy_from_slice(&s.as_bytes()[..cut]);
        SmallText {
            len: cut as u8,
            buf,
        }
    }

    /// `s` when it fits whole; `None` when it would be cut.
    pub fn whole(s: &str) -> Option<SmallText> {
        (s.len() <= SMALL_TEXT_BYTES).then(|| SmallText::new(s))
    }

    pub fn as_str(&self) -> &str {
        let bytes = &self.buf[..usize::from(self.len)];
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: the fields are private and `new` is the only constructor: it copies whole
        // characters of a `str` (cut at a char boundary), so `buf[..len]` is always UTF-8.
        // Checking it again on every read cost ~80 instructions per bid id read.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl Deref for SmallText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SmallText {
    fn from(s: &str) -> SmallText {
        SmallText::new(s)
    }
}

impl fmt::Debug for SmallText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SmallText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for SmallText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// A JSON object key read through serde, borrowed from the text unless it had escapes to
/// decode (`first\u005fname`), for readers that compare keys without building a `Value`.
pub(crate) struct JsonKey<'a>(pub std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for JsonKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Visitor};
        use std::borrow::Cow;
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = JsonKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: Error>(self, s: &'de str) -> Result<JsonKey<'de>, E> {
                Ok(JsonKey(Cow::Borrowed(s)))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<JsonKey<'de>, E> {
                Ok(JsonKey(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: Error>(self, s: String) -> Result<JsonKey<'de>, E> {
                Ok(JsonKey(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(SmallText::new("b-77").as_str(), "b-77");
        let long = "é".repeat(100);
        let t = SmallText::new(&long);
        assert_eq!(t.len(), 120);
        assert!(long.starts_with(t.as_str()));
        assert_eq!(Some(SmallText::new("x")).as_deref(), Some("x"));
    }
}
