//! A short string kept inline, so that values read on the hot path (a buyer's bid id, a
//! response's Content-Type) cost no allocation; and ids as a person reads them in a report.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// An id (of a seller, campaign or buyer; a bid id, a source) as a report for a person shows
/// it: as it is when it is plain (ASCII letters, digits, `-`, `_`, `.`, `/`, `@`, `+`), else in
/// double quotes with quotes, backslashes and characters that do not print escaped as Rust
/// writes them (`"acme \"ins\""`, `"a\u{2028}b"`). Ids may hold spaces, `:`, `$` and commas,
/// so one shown bare could read as part of the line around it (`evil: bid $99.00`).
pub fn shown(id: &str) -> Cow<'_, str> {
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@' | '+');
    if !id.is_empty() && id.chars().all(plain) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("{id:?}"))
    }
}

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

    #[test]
    fn an_id_that_could_read_as_part_of_a_line_is_quoted() {
        assert_eq!(shown("acme-ins_2.b/x@y+z"), "acme-ins_2.b/x@y+z");
        assert_eq!(shown("evil: bid $99.00, x"), "\"evil: bid $99.00, x\"");
        assert_eq!(shown("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(shown("a\u{2028}b"), "\"a\\u{2028}b\"");
        assert_eq!(shown("x\u{202e}y"), "\"x\\u{202e}y\"");
        assert_eq!(shown("é中"), "\"é中\"");
        assert_eq!(shown(""), "\"\"");
    }
}
