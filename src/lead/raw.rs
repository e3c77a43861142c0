//! Arrays and objects of a lead copied token by token from the seller's JSON: numbers and
//! strings keep the bytes the seller sent, so a buyer gets the very values (a 23-digit
//! integer, `250000.10`, `1e3`), not what an `f64` makes of them. Only the whitespace between
//! tokens goes, and, for a ping, the members and items a filter picks.
//!
//! The text given is JSON a parser has already accepted; text that is not (which cannot come
//! from a seller's request) gives `None`, never a panic.

/// Deeper than this is refused; serde_json refuses a request nested past 128 levels first.
const MAX_DEPTH: usize = 256;

/// Whether a member (`key` is its decoded name) or an array item (`key` is `None`) whose raw
/// JSON text is `value` is left out.
pub type Filter<'f> = &'f dyn Fn(Option<&str>, &str) -> bool;

/// `raw` without whitespace between tokens, every token as written.
pub fn compact(raw: &str) -> Option<String> {
    copy(raw, None).map(|(text, _)| text)
}

/// `raw` compacted, with every member or item `filter` picks left out at any depth, and
/// whether any was.
pub fn filtered(raw: &str, filter: Filter<'_>) -> Option<(String, bool)> {
    copy(raw, Some(filter))
}

fn copy(raw: &str, filter: Option<Filter<'_>>) -> Option<(String, bool)> {
    let mut c = Copier {
        s: raw.as_bytes(),
        i: 0,
        out: Vec::with_capacity(raw.len()),
        filter,
        dropped: false,
    };
    c.value(0)?;
    c.ws();
    if c.i != c.s.len() {
        return None;
    }
    // Whole tokens of valid UTF-8 were copied, so this holds; checked all the same.
    String::from_utf8(c.out).ok().map(|t| (t, c.dropped))
}

/// A JSON string token (with its quotes), decoded.
pub fn decode_str(token: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = token.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(token)
            .ok()
            .map(std::borrow::Cow::Owned)
    } else {
        Some(std::borrow::Cow::Borrowed(inner))
    }
}

struct Copier<'a, 'f> {
    s: &'a [u8],
    i: usize,
    out: Vec<u8>,
    filter: Option<Filter<'f>>,
    dropped: bool,
}

impl Copier<'_, '_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => {
                let (a, b) = self.string()?;
                self.out.extend_from_slice(self.s.get(a..b)?);
                Some(())
            }
            _ => {
                let a = self.i;
                while let Some(&c) = self.s.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b':' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                if a == self.i {
                    return None;
                }
                self.out.extend_from_slice(self.s.get(a..self.i)?);
                Some(())
            }
        }
    }

    /// At a `"`: the span of the string token, quotes included.
    fn string(&mut self) -> Option<(usize, usize)> {
        let a = self.i;
        self.i += 1;
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some((a, self.i));
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    /// Whether the member or item just copied from `self.s[from..self.i]` is left out.
    fn picked(&self, key: Option<&str>, from: usize) -> Option<bool> {
        let Some(filter) = self.filter else {
            return Some(false);
        };
        let text = std::str::from_utf8(self.s.get(from..self.i)?).ok()?;
        Some(filter(key, text))
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        self.out.push(b'{');
        let mut first = true;
        loop {
            self.ws();
            match *self.s.get(self.i)? {
                b'}' => {
                    self.i += 1;
                    self.out.push(b'}');
                    return Some(());
                }
                b',' => {
                    self.i += 1;
                    continue;
                }
                b'"' => {}
                _ => return None,
            }
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            let (ka, kb) = self.string()?;
            self.out.extend_from_slice(self.s.get(ka..kb)?);
            self.ws();
            if self.s.get(self.i) != Some(&b':') {
                return None;
            }
            self.i += 1;
            self.out.push(b':');
            self.ws();
            let from = self.i;
            self.value(depth + 1)?;
            let drop = match self.filter {
                None => false,
                Some(_) => {
                    let key = std::str::from_utf8(self.s.get(ka..kb)?).ok()?;
                    let key = decode_str(key)?;
                    self.picked(Some(&key), from)?
                }
            };
            if drop {
                self.out.truncate(mark);
                self.dropped = true;
            } else {
                first = false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        self.out.push(b'[');
        let mut first = true;
        loop {
            self.ws();
            match *self.s.get(self.i)? {
                b']' => {
                    self.i += 1;
                    self.out.push(b']');
                    return Some(());
                }
                b',' => {
                    self.i += 1;
                    continue;
                }
                _ => {}
            }
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            let from = self.i;
            self.value(depth + 1)?;
            if self.picked(None, from)? {
                self.out.truncate(mark);
                self.dropped = true;
            } else {
                first = false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
