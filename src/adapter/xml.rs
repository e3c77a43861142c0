//! A small, bounded reader for the XML answers of legacy buyers: one pass over the document finds
//! the text content of the first element at each of a few element paths (`/response/price`).
//!
//! It is deliberately not a general XML parser. It checks what tells an answer from garbage
//! (one root element, start and end tags that pair up, no stray text outside the root) and skips
//! what a bid answer never needs: declarations, comments, processing instructions, attributes
//! and DOCTYPEs. Entities declared in a DOCTYPE are never expanded, so an answer cannot grow
//! itself ("billion laughs"); only the five predefined entities and character references are
//! decoded; a value with a reference to any other, or to no XML character, is
//! `Found::Unreadable` (what it says is unknown). Nesting depth and the text kept per match are capped.

use std::borrow::Cow;

use super::Found;

/// Deepest element nesting read; a deeper answer is refused rather than walked.
pub const MAX_XML_DEPTH: usize = 64;
/// Most bytes of text kept for one matched element; the rest is dropped. Bids, ids and
/// reasons are short, so this only stops an answer from making us copy all of itself.
pub const MAX_XML_TEXT_BYTES: usize = 4096;
/// Most paths looked up in one pass (bid and bid id; status, reason and lead id).
pub const MAX_XML_PATHS: usize = 4;

/// Why an answer could not be read as XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed where it matters: what went wrong, and the byte offset where it was seen.
    Malformed(&'static str, usize),
    /// Elements nested deeper than `MAX_XML_DEPTH`.
    TooDeep,
    /// More than `MAX_XML_PATHS` paths asked for at once (a programming error, not the buyer's).
    TooManyPaths,
}

/// For each path (element names, root first), the text of its first matching element:
/// `Found::Text` with its character data, trimmed; `Found::Elements` when it holds child
/// elements (`<price>12<b/>5</price>` is no price, and `<price><value>12</value></price>`
/// is read at `/price/value`); `Found::Missing` when no element matches. A path segment
/// without a namespace prefix also matches a prefixed element of that local name (`price`
/// matches `ns:price`).
pub fn find_texts<'a, const N: usize>(
    doc: &[u8],
    paths: [Option<&[String]>; N],
) -> Result<[Found<'a>; N], XmlError> {
    if N > MAX_XML_PATHS {
        return Err(XmlError::TooManyPaths);
    }
    // Servers on some platforms start their answers with a UTF-8 byte order mark: it says
    // UTF-8, so a declaration of another encoding contradicts it (XML 1.0, 4.3.3) and the
    // text could not be read as its writer meant.
    let bom = doc.starts_with(b"\xEF\xBB\xBF");
    let doc = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(doc);
    let latin1 = match declared_encoding(doc) {
        None => false,
        Some(e)
            if bom && !e.eq_ignore_ascii_case(b"utf-8") && !e.eq_ignore_ascii_case(b"us-ascii") =>
        {
            return Err(XmlError::Malformed(
                "a UTF-8 byte order mark before another encoding's declaration",
                0,
            ))
        }
        Some(e) if e.eq_ignore_ascii_case(b"utf-8") || e.eq_ignore_ascii_case(b"us-ascii") => false,
        Some(e) if LATIN1_NAMES.iter().any(|n| e.eq_ignore_ascii_case(n)) => true,
        // UTF-16 and the rest: the text could not be read as written.
        Some(_) => return Err(XmlError::Malformed("unsupported encoding", 0)),
    };
    // ISO-8859-1 read as UTF-8: every byte is the code point of the same number.
    let transcoded: Vec<u8>;
    let doc = if latin1 && !doc.is_ascii() {
        transcoded = doc
            .iter()
            .flat_map(|&b| {
                let mut tmp = [0u8; 2];
                let n = char::from(b).encode_utf8(&mut tmp).len();
                tmp.into_iter().take(n)
            })
            .collect();
        &transcoded[..]
    } else {
        doc
    };
    let mut r = Reader {
        doc,
        pos: 0,
        stack: Vec::with_capacity(MAX_XML_DEPTH),
    };
    // Per path: None before its match, Some((depth, text)) while inside or after it.
    let mut hits: [Option<(usize, Vec<u8>)>; N] = std::array::from_fn(|_| None);
    // Per path: its element holds a child element.
    let mut nested = [false; N];
    let mut open = [false; N];
    // Per path: its text holds a reference the exchange does not expand.
    let mut unknown = [false; N];
    let mut root_seen = false;
    let mut root_closed = false;

    while r.pos < doc.len() {
        let lt = find(&doc[r.pos..], b"<").map(|i| r.pos + i);
        let text_end = lt.unwrap_or(doc.len());
        let text = &doc[r.pos..text_end];
        if r.stack.is_empty() {
            if !text.iter().all(u8::is_ascii_whitespace) {
                return Err(XmlError::Malformed("text outside the root element", r.pos));
            }
        } else {
            append_text(&mut hits, &open, &mut unknown, text, true);
        }
        let Some(lt) = lt else { break };
        r.pos = lt;
        let rest = &doc[lt..];
        if rest.starts_with(b"<?") {
            r.skip_past(b"?>", "unterminated processing instruction")?;
        } else if rest.starts_with(b"<!--") {
            r.skip_past(b"-->", "unterminated comment")?;
        } else if rest.starts_with(b"<![CDATA[") {
            if r.stack.is_empty() {
                return Err(XmlError::Malformed("CDATA outside the root element", lt));
            }
            let start = lt + 9;
            let end = find(&doc[start..], b"]]>")
                .map(|i| start + i)
                .ok_or(XmlError::Malformed("unterminated CDATA", lt))?;
            append_text(&mut hits, &open, &mut unknown, &doc[start..end], false);
            r.pos = end + 3;
        } else if rest.starts_with(b"<!") {
            if root_seen {
                return Err(XmlError::Malformed("declaration inside the document", lt));
            }
            r.skip_doctype()?;
        } else if rest.starts_with(b"</") {
            r.pos = lt + 2;
            let name = r.name()?;
            r.skip_ws();
            if doc.get(r.pos) != Some(&b'>') {
                return Err(XmlError::Malformed("end tag without '>'", r.pos));
            }
            r.pos += 1;
            match r.stack.pop() {
                Some(top) if &doc[top.0..top.1] == name => {}
                _ => return Err(XmlError::Malformed("end tag does not match", lt)),
            }
            close(&mut hits, &mut open, r.stack.len());
            if r.stack.is_empty() {
                root_closed = true;
            }
        } else {
            r.pos = lt + 1;
            if root_closed {
                return Err(XmlError::Malformed("a second root element", lt));
            }
            let name_start = r.pos;
            let name = r.name()?;
            let name_range = (name_start, name_start + name.len());
            let self_closing = r.skip_attributes()?;
            if r.stack.len() >= MAX_XML_DEPTH {
                return Err(XmlError::TooDeep);
            }
            for (n, &is_open) in nested.iter_mut().zip(&open) {
                *n |= is_open;
            }
            r.stack.push(name_range);
            root_seen = true;
            for (i, path) in paths.iter().enumerate() {
                if let Some(path) = path {
                    if hits[i].is_none() && r.stack_is(path) {
                        hits[i] = Some((r.stack.len(), Vec::new()));
                        open[i] = true;
                    }
                }
            }
            if self_closing {
                r.stack.pop();
                close(&mut hits, &mut open, r.stack.len());
                if r.stack.is_empty() {
                    root_closed = true;
                }
            }
        }
    }
    if !r.stack.is_empty() {
        return Err(XmlError::Malformed("unclosed element", doc.len()));
    }
    if !root_seen {
        return Err(XmlError::Malformed("no root element", doc.len()));
    }
    let mut hits = hits.into_iter();
    // Bytes that are not UTF-8 in a document that says it is (or says nothing): the value
    // cannot be read as the buyer meant it, and an id quoted back changed would name nothing.
    let mut undecodable = false;
    let found = std::array::from_fn(|i| match (hits.next().flatten(), nested[i]) {
        (None, _) => Found::Missing,
        (Some(_), true) => Found::Elements,
        (Some(_), false) if unknown[i] => Found::Unreadable,
        (Some((_, bytes)), false) => {
            let s = String::from_utf8(bytes).unwrap_or_else(|e| {
                // A character cut by `MAX_XML_TEXT_BYTES` at the end is only cut; any other
                // bad byte is not text.
                let valid = e.utf8_error().valid_up_to();
                let clipped = e.as_bytes().len() + 3 >= MAX_XML_TEXT_BYTES;
                if clipped && e.utf8_error().error_len().is_none() {
                    let mut b = e.into_bytes();
                    b.truncate(valid);
                    String::from_utf8(b).unwrap_or_default()
                } else {
                    undecodable = true;
                    String::new()
                }
            });
            Found::Text(Cow::Owned(s.trim().to_string()))
        }
    });
    if undecodable {
        return Err(XmlError::Malformed("text is not UTF-8", 0));
    }
    Ok(found)
}

/// Names of ISO-8859-1 in XML declarations (IANA's, and the aliases seen in answers).
const LATIN1_NAMES: [&[u8]; 5] = [b"iso-8859-1", b"iso_8859-1", b"latin1", b"latin-1", b"l1"];

/// The `encoding` of the XML declaration that opens `doc`, if any.
fn declared_encoding(doc: &[u8]) -> Option<&[u8]> {
    let decl = doc.strip_prefix(b"<?xml")?;
    if !decl.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let end = decl.windows(2).position(|w| w == b"?>")?;
    let decl = &decl[..end];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let rest = decl[at + 8..].trim_ascii_start();
    let rest = rest.strip_prefix(b"=")?.trim_ascii_start();
    let quote = *rest.first().filter(|q| **q == b'"' || **q == b'\'')?;
    let value = &rest[1..];
    let close = value.iter().position(|&b| b == quote)?;
    Some(&value[..close])
}

/// Element names of a path written like `/response/price`: root first, none empty.
pub fn parse_path(path: &str) -> Result<Vec<String>, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("an XML path starts with '/' and the root element's name");
    };
    let mut out = Vec::new();
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err("an XML path has no empty element names");
        }
        if seg
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b"<>&\"'=".contains(&b))
        {
            return Err("an XML element name has no spaces or markup characters");
        }
        if seg.bytes().any(|b| b"@[]()*|,".contains(&b)) {
            return Err(
                "an XML path names elements only: no attributes (@), predicates or wildcards",
            );
        }
        out.push(seg.to_string());
    }
    Ok(out)
}

struct Reader<'d> {
    doc: &'d [u8],
    pos: usize,
    /// Byte ranges of the names of the open elements, root first.
    stack: Vec<(usize, usize)>,
}

impl<'d> Reader<'d> {
    fn skip_past(&mut self, end: &[u8], what: &'static str) -> Result<(), XmlError> {
        match find(&self.doc[self.pos..], end) {
            Some(i) => {
                self.pos += i + end.len();
                Ok(())
            }
            None => Err(XmlError::Malformed(what, self.pos)),
        }
    }

    /// `<!DOCTYPE ...>`, with an internal subset in `[...]` skipped whole.
    fn skip_doctype(&mut self) -> Result<(), XmlError> {
        let start = self.pos;
        let mut in_subset = false;
        let mut quote: Option<u8> = None;
        while let Some(&b) = self.doc.get(self.pos) {
            self.pos += 1;
            match (quote, b) {
                (Some(q), _) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'[') => in_subset = true,
                (None, b']') => in_subset = false,
                (None, b'>') if !in_subset => return Ok(()),
                _ => {}
            }
        }
        Err(XmlError::Malformed("unterminated declaration", start))
    }

    fn name(&mut self) -> Result<&'d [u8], XmlError> {
        let start = self.pos;
        while let Some(&b) = self.doc.get(self.pos) {
            if b.is_ascii_whitespace() || b"/>=<\"'".contains(&b) {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(XmlError::Malformed("tag without a name", start));
        }
        Ok(&self.doc[start..self.pos])
    }

    fn skip_ws(&mut self) {
        while self.doc.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// Skips a start tag's attributes up to its `>`; true when the tag closes itself (`/>`).
    fn skip_attributes(&mut self) -> Result<bool, XmlError> {
        let start = self.pos;
        let mut quote: Option<u8> = None;
        let mut last = 0u8;
        while let Some(&b) = self.doc.get(self.pos) {
            self.pos += 1;
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None => match b {
                    b'"' | b'\'' => quote = Some(b),
                    b'<' => return Err(XmlError::Malformed("'<' inside a tag", self.pos - 1)),
                    b'>' => return Ok(last == b'/'),
                    _ => {}
                },
            }
            if !b.is_ascii_whitespace() {
                last = b;
            }
        }
        Err(XmlError::Malformed("unterminated start tag", start))
    }

    /// Whether the open elements are exactly `path`.
    fn stack_is(&self, path: &[String]) -> bool {
        self.stack.len() == path.len()
            && self
                .stack
                .iter()
                .zip(path)
                .all(|(&(s, e), want)| name_matches(&self.doc[s..e], want.as_bytes()))
    }
}

fn name_matches(name: &[u8], want: &[u8]) -> bool {
    if name == want {
        return true;
    }
    if want.contains(&b':') {
        return false;
    }
    match name.iter().position(|&b| b == b':') {
        Some(i) => &name[i + 1..] == want,
        None => false,
    }
}

/// Character data goes to every path whose element is open; entities decoded unless `raw` (CDATA).
/// Marks `unknown` the paths whose text holds an entity reference that is not one of the
/// five nor a reference to an XML character (`&d;`, declared in a DOCTYPE or not at all;
/// `&#0;`): that value is not known, and a bid id quoted back with it would not be the
/// buyer's. The other paths' values are read as ever.
fn append_text<const N: usize>(
    hits: &mut [Option<(usize, Vec<u8>)>; N],
    open: &[bool; N],
    unknown: &mut [bool; N],
    text: &[u8],
    decode: bool,
) {
    for ((hit, &is_open), unknown) in hits.iter_mut().zip(open).zip(unknown.iter_mut()) {
        if let (Some((_, buf)), true) = (hit, is_open) {
            if decode {
                *unknown |= !decode_into(buf, text);
            } else {
                push_bounded(buf, text);
            }
        }
    }
}

/// An element at `depth` (the stack length after its end tag was popped) just closed.
fn close<const N: usize>(
    hits: &mut [Option<(usize, Vec<u8>)>; N],
    open: &mut [bool; N],
    depth: usize,
) {
    for (hit, is_open) in hits.iter().zip(open.iter_mut()) {
        if let Some((d, _)) = hit {
            if *is_open && *d == depth + 1 {
                *is_open = false;
            }
        }
    }
}

fn push_bounded(buf: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_XML_TEXT_BYTES.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Decodes `&lt; &gt; &amp; &quot; &apos; &#N; &#xH;`. A bare `&` (`Smith & Sons`) is kept as
/// written, since a sloppy legacy answer is still worth reading; a reference to any other
/// entity (`&d;`, `&#xFFFFFFFF;`) is kept too but makes this return false.
fn decode_into(buf: &mut Vec<u8>, text: &[u8]) -> bool {
    let mut known = true;
    let mut i = 0;
    while i < text.len() && buf.len() < MAX_XML_TEXT_BYTES {
        let b = text[i];
        if b == b'&' {
            if let Some(semi) = text[i + 1..].iter().take(32).position(|&c| c == b';') {
                let ent = &text[i + 1..i + 1 + semi];
                if let Some(c) = entity(ent) {
                    let mut tmp = [0u8; 4];
                    push_bounded(buf, c.encode_utf8(&mut tmp).as_bytes());
                    i += semi + 2;
                    continue;
                }
                known &= !is_reference(ent);
            }
        }
        buf.push(b);
        i += 1;
    }
    known
}

/// Whether `&ent;` has the shape of an entity or character reference (a name, or `#` and
/// digits), as opposed to a bare `&` in sloppy text (`a & b; c`).
fn is_reference(ent: &[u8]) -> bool {
    match ent {
        [b'#', rest @ ..] => !rest.is_empty() && rest.iter().all(u8::is_ascii_alphanumeric),
        [first, rest @ ..] => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b':')
                && rest
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || b"._-:".contains(&c))
        }
        [] => false,
    }
}

fn entity(ent: &[u8]) -> Option<char> {
    // XML's characters: a reference to any other (`&#0;`) is no character.
    let xml_char = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    match ent {
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"amp" => Some('&'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        // `&#x`, lower case only: `&#X41;` is no reference.
        [b'#', b'x', hex @ ..] => u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16)
            .ok()
            .and_then(char::from_u32)
            .filter(|&c| xml_char(c)),
        [b'#', dec @ ..] => std::str::from_utf8(dec)
            .ok()?
            .parse::<u32>()
            .ok()
            .and_then(char::from_u32)
            .filter(|&c| xml_char(c)),
        _ => None,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
