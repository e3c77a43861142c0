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

/// Best-effort key path for a parse error at `offset`: the table header above it and the key on its line.
pub fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    // Count [[array]] headers to name the element index.
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for l in text[..line_start].lines() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let c = counts.entry(name.clone()).or_insert(0);
            table = format!("{}[{}]", name, *c);
            *c += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            let name = name.trim();
            // A sub-table of the latest array element: `[buyers.caps]` after `[[buyers]]`.
            let parent_prefix = table.split('[').next().unwrap_or("").to_string();
            if !parent_prefix.is_empty() && name.starts_with(&format!("{}.", parent_prefix)) {
                let base = table.split('.').next().unwrap_or("").to_string();
                table = format!("{}{}", base, &name[parent_prefix.len()..]);
            } else {
                table = name.to_string();
            }
        }
    }
    let key = if line.starts_with('[') {
        None
    } else {
        line.split('=')
            .next()
            .map(|k| k.trim().trim_matches('"').to_string())
    };
    match (table.is_empty(), key) {
        (true, Some(k)) => Some(k),
        (false, Some(k)) if !k.is_empty() => Some(format!("{}.{}", table, k)),
        (false, _) => Some(table),
        (true, None) => None,
    }
}
