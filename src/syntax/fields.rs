//! Reading one mapping of the config: which keys it may have, and each key's shape.
//!
//! Every section owner (the top level, a configuration, each source kind) declares its keys
//! and reads them through [`Fields`], so an unknown key, a list where a single value belongs
//! or a missing required key is reported the same way everywhere, at its position, with a
//! suggestion when the key looks like a typo of a known one.

use super::positions::{Entry, Node, NodeKind, Pos, Problems, Spanned};

/// A scalar value as written, with the position of the value.
pub type Text = Spanned<String>;

/// The section name [`Fields::open`] gives the file's root mapping.
pub const TOP_LEVEL: &str = "";

/// The keys of one mapping, already checked against the keys its section allows.
pub struct Fields<'n> {
    pub pos: Pos,
    pub entries: &'n [Entry],
}

impl<'n> Fields<'n> {
    /// Opens `node` as the mapping of `section` ([`TOP_LEVEL`] for the file itself), whose
    /// keys must be among `known`. A null node is an empty mapping.
    pub fn open(
        node: &'n Node,
        section: &str,
        known: &[&str],
        problems: &mut Problems,
    ) -> Option<Self> {
        let entries: &[Entry] = match &node.kind {
            NodeKind::Mapping(entries) => entries,
            NodeKind::Null => &[],
            other => {
                let what = if section == TOP_LEVEL {
                    "the file".to_string()
                } else {
                    format!("`{section}`")
                };
                problems.push(
                    node.pos,
                    format!(
                        "expected {what} to be a mapping, found {}",
                        other.describe()
                    ),
                );
                return None;
            }
        };
        for entry in entries {
            if !known.contains(&entry.key.as_str()) {
                problems.push(
                    entry.key_pos,
                    unknown_field_message(&entry.key, section, known),
                );
            }
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    /// The entry for `key` unless absent or null.
    pub fn get(&self, key: &str) -> Option<&'n Entry> {
        self.entries
            .iter()
            .find(|e| e.key == key && e.value.kind != NodeKind::Null)
    }

    pub fn text(&self, key: &str, problems: &mut Problems) -> Option<Text> {
        let entry = self.get(key)?;
        match &entry.value.kind {
            NodeKind::Scalar(text) => Some(Spanned::new(text.clone(), entry.value.pos)),
            other => {
                problems.push(
                    entry.value.pos,
                    format!(
                        "expected a single value for `{key}`, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    pub fn list(&self, key: &str, problems: &mut Problems) -> Option<&'n [Node]> {
        let entry = self.get(key)?;
        match &entry.value.kind {
            NodeKind::Sequence(items) => Some(items),
            other => {
                problems.push(
                    entry.value.pos,
                    format!("expected a list for `{key}`, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// The mapping under `key`; its section is named after the key.
    pub fn mapping(
        &self,
        key: &str,
        known: &[&str],
        problems: &mut Problems,
    ) -> Option<Fields<'n>> {
        Fields::open(&self.get(key)?.value, key, known, problems)
    }

    /// Reports `key` as missing when it is absent or null; a present value of the wrong shape
    /// was reported by the getter already.
    pub fn require(&self, key: &str, problems: &mut Problems) {
        match self.entries.iter().find(|e| e.key == key) {
            None => problems.push(self.pos, format!("missing required field `{key}`")),
            Some(entry) if entry.value.kind == NodeKind::Null => {
                problems.push(entry.key_pos, format!("`{key}` must have a value"))
            }
            Some(_) => {}
        }
    }
}

pub fn unknown_field_message(key: &str, section: &str, known: &[&str]) -> String {
    let context = if section == TOP_LEVEL {
        "at the top level".to_string()
    } else {
        format!("in `{section}`")
    };
    let expected = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(key, known) {
        Some(guess) => {
            format!("unknown field `{key}` {context} (did you mean `{guess}`?), expected one of {expected}")
        }
        None => format!("unknown field `{key}` {context}, expected one of {expected}"),
    }
}

/// A known key the unknown one is probably a typo of: same letters ignoring case and
/// separators, or at most two edits away.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let squashed = squash(key);
    if let Some(same) = known.iter().find(|k| squash(k) == squashed) {
        return Some(same);
    }
    let limit = if key.chars().count() <= 3 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&squashed, &squash(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
