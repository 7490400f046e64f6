//! Where a key is in the file: the line and column of every key path (`team[1].rate`), so that a
//! problem points at the line to fix. Built from toml's spanned parse of the document.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Line and column (both from 1) of each key path in one file.
#[derive(Debug, Default)]
pub(super) struct Locations {
    /// Byte offset of each key (or, for an array element, of the element).
    offsets: HashMap<String, usize>,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    text: String,
}

impl Locations {
    pub(super) fn new(text: &str, doc: &DeTable<'_>) -> Self {
        let mut locations = Locations {
            offsets: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            text: text.to_string(),
        };
        locations.table(doc, "");
        locations
    }

    fn table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table {
            let path = join(prefix, key.get_ref());
            self.offsets.insert(path.clone(), key.span().start);
            self.value(value, &path);
        }
    }

    fn value(&mut self, value: &Spanned<DeValue<'_>>, path: &str) {
        match value.get_ref() {
            DeValue::Table(table) => self.table(table, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    self.offsets.insert(path.clone(), item.span().start);
                    self.value(item, &path);
                }
            }
            _ => {}
        }
    }

    /// Where `path` is, or the nearest key above it that the file has (a missing
    /// `account[0].api_secret` points at its `[[account]]`); `None` when not even the section is
    /// in the file.
    pub(super) fn find(&self, path: &str) -> Option<(u32, u32)> {
        let mut path = path;
        loop {
            if let Some(&offset) = self.offsets.get(path) {
                return Some(self.line_column(offset));
            }
            path = parent(path)?;
        }
    }

    /// [`find`](Self::find) for a byte offset, as toml's own errors give it.
    pub(super) fn line_column(&self, offset: usize) -> (u32, u32) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(0, |s| s.chars().count());
        (line as u32, column as u32 + 1)
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `team[1].rate` → `team[1]` → `team`; `None` at the top.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_array_elements_and_the_nearest_parent() {
        let text = "[listen]\nproxy = \"x\"\n\n[[team]]\nname = \"a\"\n[[team]]\n  rate = \"fast\"\n[routes]\nprefixes = [\"/a/\", \"b\"]\n";
        let doc = DeTable::parse(text).unwrap();
        let at = Locations::new(text, doc.get_ref());
        assert_eq!(at.find("listen.proxy"), Some((2, 1)));
        assert_eq!(at.find("team[1].rate"), Some((7, 3)));
        assert_eq!(at.find("team[1].burst"), at.find("team[1]"));
        assert_eq!(at.find("routes.prefixes[1]"), Some((9, 20)));
        assert_eq!(at.find("listen"), Some((1, 2)));
        assert_eq!(at.find("upstream.url"), None);
    }
}
