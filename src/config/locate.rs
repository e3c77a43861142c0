//! Finding a key's line in the config text, so that every error names the key and the line.

use toml_edit::{ImDocument, Item, Table, Value};

/// 1-based line of a byte offset.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

/// One step of a key path: `name` or `name[3]`.
fn steps(path: &str) -> Vec<(&str, Option<usize>)> {
    path.split('.')
        .map(|part| match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
            None => (part, None),
        })
        .collect()
}

/// Line of a dotted key path such as `buyers[2].caps.daily`. When the exact key is absent (a
/// missing key), the line of the nearest enclosing table that exists.
pub fn line_of_key(text: &str, path: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut best: Option<usize> = None;
    for (name, index) in steps(path) {
        let (next, key_span) = match node {
            Node::Table(t) => (
                t.get(name).map(Node::Item),
                t.key(name).and_then(|k| k.span()),
            ),
            Node::Item(Item::Table(t)) => (
                t.get(name).map(Node::Item),
                t.key(name).and_then(|k| k.span()),
            ),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                (
                    t.get(name).map(Node::Value),
                    t.key(name).and_then(|k| k.span()),
                )
            }
            _ => (None, None),
        };
        if let Some(span) = key_span {
            best = Some(span.start);
        }
        let Some(mut n) = next else { break };
        if let Some(i) = index {
            let elem = match n {
                Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(Node::Table),
                Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                    a.get(i).map(Node::Value)
                }
                _ => None,
            };
            match elem {
                Some(e) => {
                    let span = match &e {
                        Node::Table(t) => t.span(),
                        Node::Value(v) => v.span(),
                        Node::Item(it) => it.span(),
                    };
                    if let Some(s) = span {
                        best = Some(s.start);
                    }
                    n = e;
                }
                None => break,
            }
        }
        node = n;
    }
    best.map(|o| line_of_offset(text, o))
}

/// Whether `span` (serde's span of an error) is the document's root table's: `0..0` when the
/// file has no top-level key, else from the start to its last top-level key. None (no span)
/// counts as the root too: no table of the file is named by it.
pub fn is_root_span(text: &str, span: Option<std::ops::Range<usize>>) -> bool {
    let Some(span) = span else { return true };
    ImDocument::parse(text)
        .ok()
        .and_then(|doc| doc.as_table().span())
        .is_some_and(|root| root == span)
}

/// Key path of the narrowest key, value or table of the parsed document whose span holds
/// `offset`: where serde put an error (an unknown key's name, a value of the wrong type, the
/// whole table that misses a key). `buyers[2]` is the third `[[buyers]]`; `bogus` a top-level
/// `[bogus]`. None when the text does not parse or nothing holds the offset.
pub fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut finder = Finder {
        offset,
        found: None,
    };
    finder.table(doc.as_table(), "");
    finder.found.map(|(_, path)| path)
}

struct Finder {
    offset: usize,
    /// Length of the narrowest span holding the offset so far, and its key path.
    found: Option<(usize, String)>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{}.{}", path, key)
    }
}

impl Finder {
    fn consider(&mut self, span: Option<std::ops::Range<usize>>, path: &str) {
        let Some(span) = span else { return };
        let holds = if span.is_empty() {
            span.start == self.offset
        } else {
            span.contains(&self.offset)
        };
        if path.is_empty() || !holds {
            return;
        }
        // Children come after their parent: on a tie the deeper path wins.
        if self
            .found
            .as_ref()
            .is_none_or(|(len, _)| span.len() <= *len)
        {
            self.found = Some((span.len(), path.to_string()));
        }
    }

    fn table(&mut self, t: &Table, path: &str) {
        self.consider(t.span(), path);
        for (key, item) in t.iter() {
            let p = join(path, key);
            self.consider(t.key(key).and_then(|k| k.span()), &p);
            self.item(item, &p);
        }
    }

    fn item(&mut self, item: &Item, path: &str) {
        match item {
            Item::None => {}
            Item::Value(v) => self.value(v, path),
            Item::Table(t) => self.table(t, path),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    self.table(t, &format!("{}[{}]", path, i));
                }
            }
        }
    }

    fn value(&mut self, v: &Value, path: &str) {
        self.consider(v.span(), path);
        match v {
            Value::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    self.value(e, &format!("{}[{}]", path, i));
                }
            }
            Value::InlineTable(t) => {
                for (key, e) in t.iter() {
                    let p = join(path, key);
                    self.consider(t.key(key).and_then(|k| k.span()), &p);
                    self.value(e, &p);
                }
            }
            _ => {}
        }
    }
}

/// Key path for a syntax error at `offset`, read from the text (which does not parse): the
/// header on the error's line (`[admin` → `admin`), or the key of a `key = value` line under
/// the latest header (`admin.token`). None when the line names no plausible key, e.g. inside a
/// multi-line array: a made-up key would mislead more than none. `wants_equals`: the parser
/// read a key on that line and wanted its `=` (its message is "expected `.`, `=`"), so the
/// line's first word is a key even with no `=` on it (`workers 4`, `workers` alone).
pub fn syntax_key(text: &str, offset: usize, wants_equals: bool) -> Option<String> {
    let offset = floor_char_boundary(text, offset);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let mut tables = Tables::default();
    for l in text[..line_start].lines() {
        tables.header(l);
    }
    if line.starts_with('[') {
        tables.header(line)?;
        return Some(tables.current).filter(|t| !t.is_empty());
    }
    // Only what comes before a comment: a `=` in it (`workers 4  # 0 = one per core`) is not
    // the key's.
    let code = line.split_once('#').map_or(line, |(l, _)| l).trim_end();
    let key = if wants_equals {
        // A key with no `=` after it (`workers 4`, `workers` alone): the key, when the parser
        // read it as one.
        code.split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or(code)
    } else {
        match code.split_once('=') {
            Some((key, _)) => key,
            // A word inside a multi-line array is a value, and names nothing.
            None => return None,
        }
    };
    let key = plausible_key(key)?;
    Some(join(&tables.current, &key))
}

/// The largest char boundary at or below `offset`, within the text.
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

/// A dotted key as written, without quotes around its parts; None unless every part is a bare
/// key (letters, digits, `_`, `-`) or a simple quoted one.
fn plausible_key(raw: &str) -> Option<String> {
    let parts: Option<Vec<&str>> = raw
        .split('.')
        .map(|p| {
            let p = p.trim();
            let p = p
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(p);
            let bare = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            bare.then_some(p)
        })
        .collect();
    parts.map(|p| p.join("."))
}

/// The table a line of the text is in, from the headers above it: `[[buyers]]` headers counted
/// to name the element (`buyers[2]`), `[buyers.caps]` after one read as that element's table.
#[derive(Default)]
struct Tables {
    current: String,
    /// `[[name]]` headers seen, by name.
    counts: std::collections::HashMap<String, usize>,
    /// The latest `[[name]]` header and its index, for the sub-tables that follow it.
    array: Option<(String, usize)>,
}

impl Tables {
    /// Read `line` if it is a table header (written `[name`, `[[name`, with or without the
    /// closing brackets); None when it is not one or names no plausible key.
    fn header(&mut self, line: &str) -> Option<()> {
        let line = line.trim();
        let line = line.split_once('#').map_or(line, |(l, _)| l).trim_end();
        if let Some(rest) = line.strip_prefix("[[") {
            let name = plausible_key(rest.trim_end_matches(']'))?;
            let count = self.counts.entry(name.clone()).or_insert(0);
            let index = *count;
            *count += 1;
            self.current = format!("{}[{}]", name, index);
            self.array = Some((name, index));
        } else if let Some(rest) = line.strip_prefix('[') {
            let name = plausible_key(rest.trim_end_matches(']'))?;
            self.current = match &self.array {
                Some((array, index)) if name.starts_with(&format!("{}.", array)) => {
                    format!("{}[{}]{}", array, index, &name[array.len()..])
                }
                _ => name,
            };
        }
        Some(())
    }
}

/// `text` with the key at `path` taken out, every byte of it but its line breaks turned into
/// spaces, so that every other key keeps its offset and line: a `key = value` (with its comma
/// in an inline table), a whole `[table]` or every `[[table]]` of an array, up to the next
/// header. `None` when the path names nothing that can be taken out that way (an element of
/// an array, a dotted or implicit table) or the text without it no longer parses.
pub fn blank_key(text: &str, path: &str) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let steps = steps(path);
    let ((last, None), parents) = steps.split_last()? else {
        return None;
    };
    let node = walk(doc.as_table(), parents)?;
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    match node {
        Node::Table(t) | Node::Item(Item::Table(t)) => {
            let key = t.key(last)?.span()?;
            match t.get(last)? {
                Item::Value(v) => ranges.push(key.start..v.span()?.end),
                Item::Table(sub) if !sub.is_implicit() && !sub.is_dotted() => {
                    ranges.push(section(text, sub.span()?.start))
                }
                Item::ArrayOfTables(a) => {
                    for sub in a.iter() {
                        ranges.push(section(text, sub.span()?.start));
                    }
                }
                _ => return None,
            }
        }
        Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
            let key = t.key(last)?.span()?;
            let end = t.get(last)?.span()?.end;
            ranges.push(with_comma(text, key.start..end));
        }
        _ => return None,
    }
    let mut out = text.as_bytes().to_vec();
    for r in ranges {
        for b in out.get_mut(r)? {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    }
    let out = String::from_utf8(out).ok()?;
    ImDocument::parse(out.as_str()).ok()?;
    Some(out)
}

/// The node at the end of `steps` from `root`, every step present.
fn walk<'a>(root: &'a Table, steps: &[(&str, Option<usize>)]) -> Option<Node<'a>> {
    let mut node = Node::Table(root);
    for &(name, index) in steps {
        let next = match node {
            Node::Table(t) | Node::Item(Item::Table(t)) => t.get(name).map(Node::Item),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                t.get(name).map(Node::Value)
            }
            _ => None,
        }?;
        node = match (index, next) {
            (None, n) => n,
            (Some(i), Node::Item(Item::ArrayOfTables(a))) => Node::Table(a.get(i)?),
            (Some(i), Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a))) => {
                Node::Value(a.get(i)?)
            }
            _ => return None,
        };
    }
    Some(node)
}

/// From a table header at `start` to the next header (a line that starts with `[`) or the end.
fn section(text: &str, start: usize) -> std::ops::Range<usize> {
    let mut at = text[start..]
        .find('\n')
        .map_or(text.len(), |i| start + i + 1);
    while at < text.len() {
        if text[at..].trim_start_matches([' ', '\t']).starts_with('[') {
            break;
        }
        at = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
    }
    start..at
}

/// A member of an inline table with the comma that follows it, or else the one before it.
fn with_comma(text: &str, r: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let after = text[r.end..].trim_start_matches([' ', '\t']);
    if after.starts_with(',') {
        return r.start..text.len() - after.len() + 1;
    }
    let before = text[..r.start].trim_end_matches([' ', '\t']);
    if before.ends_with(',') {
        return before.len() - 1..r.end;
    }
    r
}

/// `text` with the value at `path` (a key's value or an element of an array) written as
/// `with`. `None` when the path names no value, or the text with the change does not parse.
pub fn replace_value(text: &str, path: &str, with: &str) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let span = match walk(doc.as_table(), &steps(path))? {
        Node::Item(Item::Value(v)) | Node::Value(v) => v.span()?,
        _ => return None,
    };
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(text.get(..span.start)?);
    out.push_str(with);
    out.push_str(text.get(span.end..)?);
    ImDocument::parse(out.as_str()).ok()?;
    Some(out)
}

/// The text of the value at each dotted key path (`buyers[0].filters.fields[1].value`,
/// `...value[2]` for a list's item) as the file writes it; `None` where a path names no value.
/// The file is parsed once for all of them.
pub fn value_texts(text: &str, paths: &[String]) -> Vec<Option<String>> {
    let Ok(doc) = ImDocument::parse(text) else {
        return vec![None; paths.len()];
    };
    let value_at = |path: &str| -> Option<String> {
        let mut node = Node::Table(doc.as_table());
        for (name, index) in steps(path) {
            let mut n = match node {
                Node::Table(t) | Node::Item(Item::Table(t)) => t.get(name).map(Node::Item)?,
                Node::Item(Item::Value(Value::InlineTable(t)))
                | Node::Value(Value::InlineTable(t)) => t.get(name).map(Node::Value)?,
                _ => return None,
            };
            if let Some(i) = index {
                n = match n {
                    Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(Node::Table)?,
                    Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                        a.get(i).map(Node::Value)?
                    }
                    _ => return None,
                };
            }
            node = n;
        }
        let value = match node {
            Node::Value(v) | Node::Item(Item::Value(v)) => v,
            _ => return None,
        };
        text.get(value.span()?).map(|t| t.trim().to_string())
    };
    paths.iter().map(|p| value_at(p)).collect()
}
