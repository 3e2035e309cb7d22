//! Where each key of a stack file sits in its text, so every problem can name a line and column.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One key (or array element) of the document and the text it occupies.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    depth: usize,
    /// Where a message about this entry points: the key, or the element.
    anchor: usize,
    /// The text that belongs to the entry: `key = value`, or a table's header and body.
    ranges: Vec<Range<usize>>,
    /// An array element, which cannot be blanked without leaving invalid TOML behind.
    in_array: bool,
    /// Inside an inline table, where blanking must also take a comma.
    inline: bool,
}

/// Every key of a parsed document with its position.
#[derive(Debug)]
pub struct Locator {
    entries: Vec<Entry>,
    line_starts: Vec<usize>,
    len: usize,
}

impl Locator {
    /// Indexes `text`; `None` when it is not TOML at all.
    pub fn new(text: &str) -> Option<Self> {
        let doc = ImDocument::parse(text.to_owned()).ok()?;
        let mut entries = Vec::new();
        walk_table(doc.as_table(), "", 0, &mut entries);
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Some(Self {
            entries,
            line_starts,
            len: text.len(),
        })
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.len);
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        (line, col)
    }

    /// The offset a message about `path` should point to: the key itself, else its nearest parent.
    pub fn anchor(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(e) = self.entries.iter().find(|e| e.path == path) {
                return Some(e.anchor);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The deepest entry whose text holds `offset`: its path, and the ranges to blank to drop it,
    /// or `None` for ranges when it cannot be dropped without breaking the document.
    pub fn at(&self, offset: usize) -> Option<(String, Option<Vec<Range<usize>>>)> {
        let entry = self
            .entries
            .iter()
            .filter(|e| {
                e.ranges
                    .iter()
                    .any(|r| r.contains(&offset) || (r.start == offset && r.is_empty()))
            })
            .max_by_key(|e| e.depth)?;
        let droppable = !entry.in_array;
        Some((
            entry.path.clone(),
            droppable.then(|| self.subtree_ranges(entry)),
        ))
    }

    fn subtree_ranges(&self, entry: &Entry) -> Vec<Range<usize>> {
        let mut ranges = entry.ranges.clone();
        let below_dot = format!("{}.", entry.path);
        let below_index = format!("{}[", entry.path);
        for e in &self.entries {
            if e.path.starts_with(&below_dot) || e.path.starts_with(&below_index) {
                ranges.extend(e.ranges.iter().cloned());
            }
        }
        ranges
    }

    /// Whether `path` is an entry of an inline table (blanking it must take a comma too).
    pub fn is_inline(&self, path: &str) -> bool {
        self.entries.iter().any(|e| e.path == path && e.inline)
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(table: &Table, prefix: &str, depth: usize, out: &mut Vec<Entry>) {
    for (key, item) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        let path = join(prefix, key);
        let key_span = k.span();
        match item {
            Item::Value(value) => {
                let (Some(ks), Some(vs)) = (key_span.clone(), value.span()) else {
                    continue;
                };
                out.push(Entry {
                    path: path.clone(),
                    depth: depth + 1,
                    anchor: ks.start,
                    ranges: std::iter::once(ks.start..vs.end).collect(),
                    in_array: false,
                    inline: false,
                });
                walk_value(value, &path, depth + 1, out);
            }
            Item::Table(sub) => {
                let header = sub.span().or(key_span);
                if let Some(h) = header {
                    out.push(Entry {
                        path: path.clone(),
                        depth: depth + 1,
                        anchor: h.start,
                        ranges: Vec::from([h]),
                        in_array: false,
                        inline: false,
                    });
                }
                walk_table(sub, &path, depth + 1, out);
            }
            Item::ArrayOfTables(array) => {
                for (i, sub) in array.iter().enumerate() {
                    let element = format!("{path}[{i}]");
                    if let Some(h) = sub.span() {
                        out.push(Entry {
                            path: element.clone(),
                            depth: depth + 1,
                            anchor: h.start,
                            ranges: Vec::from([h]),
                            in_array: true,
                            inline: false,
                        });
                    }
                    walk_table(sub, &element, depth + 2, out);
                }
            }
            Item::None => {}
        }
    }
}

fn walk_value(value: &Value, path: &str, depth: usize, out: &mut Vec<Entry>) {
    match value {
        Value::InlineTable(table) => {
            for (key, v) in table.iter() {
                let Some((k, _)) = table.get_key_value(key) else {
                    continue;
                };
                let (Some(ks), Some(vs)) = (k.span(), v.span()) else {
                    continue;
                };
                let sub = join(path, key);
                out.push(Entry {
                    path: sub.clone(),
                    depth: depth + 1,
                    anchor: ks.start,
                    ranges: std::iter::once(ks.start..vs.end).collect(),
                    in_array: false,
                    inline: true,
                });
                walk_value(v, &sub, depth + 1, out);
            }
        }
        Value::Array(array) => {
            for (i, v) in array.iter().enumerate() {
                let Some(vs) = v.span() else { continue };
                let sub = format!("{path}[{i}]");
                out.push(Entry {
                    path: sub.clone(),
                    depth: depth + 1,
                    anchor: vs.start,
                    ranges: Vec::from([vs]),
                    in_array: true,
                    inline: false,
                });
                walk_value(v, &sub, depth + 1, out);
            }
        }
        _ => {}
    }
}
