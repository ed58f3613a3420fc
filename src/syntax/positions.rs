//! A YAML document as a tree whose every node and key remembers where it was written.
//!
//! serde stops at the first type error and forgets positions, while `gitopsd check` must
//! report every problem at the key or value that causes it. So the text is read with
//! yaml-rust2's event parser into [`Node`]s carrying 1-based line and column numbers, and the
//! schema decoder and the validator work on that tree, collecting [`Problem`]s as they go.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// A position in the config text: 1-based line and 1-based column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    #[cfg(test)]
    pub fn new(line: usize, column: usize) -> Self {
        Pos { line, column }
    }

    fn from_marker(marker: &Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos {
            line: marker.line().max(1),
            column: marker.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong with the config, without the file name (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
}

/// The problems found so far; every stage appends and carries on.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Problems(Vec::new())
    }

    pub fn push(&mut self, pos: Pos, message: impl Into<String>) {
        self.0.push(Problem {
            pos,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// A value with the position where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Spanned<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Spanned { value, pos }
    }
}

impl Spanned<String> {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where the node starts: the first key of a block mapping, `{`, `[`, `-`, or the scalar.
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// `~`, `null`, or nothing at all after a key.
    Null,
    /// Any other scalar, as written (after YAML unescaping and folding). Numbers and booleans
    /// are kept as text: the validator decides what each field accepts.
    Scalar(String),
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

impl NodeKind {
    /// How a message names this kind of node: "a mapping", "a list", ...
    pub fn describe(&self) -> &'static str {
        match self {
            NodeKind::Null => "null",
            NodeKind::Scalar(_) => "a scalar",
            NodeKind::Sequence(_) => "a list",
            NodeKind::Mapping(_) => "a mapping",
        }
    }
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// Deeper than this is not a config file; refuse it rather than risk the stack.
const MAX_DEPTH: usize = 128;

/// How many nodes the tree may hold once aliases are expanded. Every alias copies its
/// anchor's subtree, so a few hundred bytes of nested aliases ("billion laughs") would
/// otherwise expand into gigabytes; a real config with thousands of sources stays far below.
pub const MAX_NODES: usize = 250_000;

/// Parses one YAML document. A syntax error is fatal and comes back alone as `Err`;
/// structural problems that still leave a usable tree (duplicate keys, non-string keys, a
/// second document) are pushed to `problems` and parsing goes on.
pub fn parse(text: &str, problems: &mut Problems) -> Result<Node, Problem> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        problems,
    };
    builder.document()
}

struct Builder<'t, 'p> {
    parser: Parser<std::str::Chars<'t>>,
    /// Each anchored node with the number of nodes in its subtree.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes in the tree so far, aliases counted as the copies they become.
    nodes: usize,
    problems: &'p mut Problems,
}

fn syntax_error(err: ScanError) -> Problem {
    Problem {
        pos: Pos::from_marker(err.marker()),
        message: format!("YAML syntax error: {}", err.info()),
    }
}

impl Builder<'_, '_> {
    fn next(&mut self) -> Result<(Event, Pos), Problem> {
        let (event, marker) = self.parser.next_token().map_err(syntax_error)?;
        Ok((event, Pos::from_marker(&marker)))
    }

    fn document(&mut self) -> Result<Node, Problem> {
        let (event, pos) = self.next()?;
        if event != Event::StreamStart {
            return Err(Problem {
                pos,
                message: "YAML syntax error: expected the start of the stream".into(),
            });
        }
        let (event, pos) = self.next()?;
        let root = match event {
            Event::StreamEnd => {
                return Ok(Node {
                    pos: Pos::START,
                    kind: NodeKind::Null,
                })
            }
            Event::DocumentStart => {
                let (event, pos) = self.next()?;
                let root = self.node(event, pos, 0)?;
                // The parser always closes a document before anything else.
                self.next()?;
                root
            }
            other => {
                return Err(Problem {
                    pos,
                    message: format!("YAML syntax error: unexpected {other:?}"),
                })
            }
        };
        let (event, pos) = self.next()?;
        if event == Event::DocumentStart {
            self.problems.push(
                pos,
                "the config file must hold a single YAML document; remove this `---` and what follows or merge it into the first",
            );
        }
        Ok(root)
    }

    /// Count `added` more nodes in the tree, refusing to go past [`MAX_NODES`].
    fn grow(&mut self, added: usize, pos: Pos) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            return Err(Problem {
                pos,
                message: format!(
                    "YAML aliases expand this document to more than {MAX_NODES} values; \
                     a config file never needs that many (is this an alias bomb?)"
                ),
            });
        }
        Ok(())
    }

    fn node(&mut self, event: Event, pos: Pos, depth: usize) -> Result<Node, Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem {
                pos,
                message: format!("YAML nested more than {MAX_DEPTH} levels deep"),
            });
        }
        if let Event::Alias(id) = event {
            let Some((node, size)) = self.anchors.get(&id) else {
                return Err(Problem {
                    pos,
                    message: "YAML alias refers to an unknown anchor".into(),
                });
            };
            let (node, size) = (node.clone(), *size);
            // Checked before the copy is made: the copy is what would exhaust memory.
            self.grow(size, pos)?;
            return Ok(node);
        }
        self.grow(1, pos)?;
        let before = self.nodes;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let kind = if style == TScalarStyle::Plain && tag.is_none() && is_null(&text) {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar(text)
                };
                (Node { pos, kind }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, item_pos) = self.next()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(event, item_pos, depth + 1)?);
                }
                let kind = NodeKind::Sequence(items);
                (Node { pos, kind }, anchor)
            }
            Event::MappingStart(anchor, _) => (self.mapping(pos, depth)?, anchor),
            other => {
                return Err(Problem {
                    pos,
                    message: format!("YAML syntax error: unexpected {other:?}"),
                })
            }
        };
        if anchor != 0 {
            let size = self.nodes - before + 1;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok(node)
    }

    fn mapping(&mut self, start: Pos, depth: usize) -> Result<Node, Problem> {
        let mut entries: Vec<Entry> = Vec::new();
        // A block mapping's start marker lands after its first key's first character; the
        // first key is the better place to point at.
        let mut pos = start;
        loop {
            let (event, key_pos) = self.next()?;
            if event == Event::MappingEnd {
                break;
            }
            if entries.is_empty() {
                pos = pos.min(key_pos);
            }
            let key = match event {
                Event::Scalar(text, _, _, _) => Some(text),
                other => {
                    // Parse and drop the complex key so the rest of the mapping still loads.
                    self.node(other, key_pos, depth + 1)?;
                    self.problems
                        .push(key_pos, "mapping keys must be plain strings");
                    None
                }
            };
            let (event, value_pos) = self.next()?;
            let value = self.node(event, value_pos, depth + 1)?;
            let Some(key) = key else { continue };
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                let message = format!(
                    "duplicate key `{key}` (first defined at line {})",
                    first.key_pos.line
                );
                self.problems.push(key_pos, message);
                continue;
            }
            entries.push(Entry {
                key,
                key_pos,
                value,
            });
        }
        Ok(Node {
            pos,
            kind: NodeKind::Mapping(entries),
        })
    }
}

/// YAML 1.2 core schema nulls (plain scalars only; `"null"` quoted is a string).
fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> (Node, Vec<Problem>) {
        let mut problems = Problems::new();
        let node = parse(text, &mut problems).expect("no syntax error");
        (node, problems.into_vec())
    }

    fn entries(node: &Node) -> &[Entry] {
        match &node.kind {
            NodeKind::Mapping(entries) => entries,
            other => panic!("expected a mapping, got {other:?}"),
        }
    }

    #[test]
    fn positions_of_keys_and_values_are_one_based() {
        let (root, problems) = parse_ok("a: 1\nlist:\n  - x: {c: \"d\"}\n    y: [1, 2]\nempty:\n");
        assert!(problems.is_empty());
        assert_eq!(root.pos, Pos::new(1, 1));
        let top = entries(&root);
        assert_eq!(top[0].key_pos, Pos::new(1, 1));
        assert_eq!(top[0].value.pos, Pos::new(1, 4));
        assert_eq!(top[0].value.kind, NodeKind::Scalar("1".into()));
        let NodeKind::Sequence(items) = &top[1].value.kind else {
            panic!("list expected")
        };
        assert_eq!(top[1].value.pos, Pos::new(3, 3));
        // The block mapping inside the list item starts at its first key.
        assert_eq!(items[0].pos, Pos::new(3, 5));
        let item = entries(&items[0]);
        assert_eq!(item[0].value.pos, Pos::new(3, 8));
        let inner = entries(&item[0].value);
        assert_eq!(inner[0].key_pos, Pos::new(3, 9));
        assert_eq!(inner[0].value.pos, Pos::new(3, 12));
        assert_eq!(item[1].key_pos, Pos::new(4, 5));
        assert_eq!(top[2].key, "empty");
        assert_eq!(top[2].value.kind, NodeKind::Null);
    }

    #[test]
    fn quoted_null_is_a_string() {
        let (root, _) = parse_ok("a: 'null'\nb: ~\n");
        let top = entries(&root);
        assert_eq!(top[0].value.kind, NodeKind::Scalar("null".into()));
        assert_eq!(top[1].value.kind, NodeKind::Null);
    }

    #[test]
    fn syntax_error_has_the_scanner_position() {
        let mut problems = Problems::new();
        let err = parse("a: 1\nb: [1, 2\nc: 3\n", &mut problems).unwrap_err();
        assert_eq!(err.pos, Pos::new(3, 2));
        assert!(
            err.message.starts_with("YAML syntax error"),
            "{}",
            err.message
        );

        let err = parse("a: \"abc\n", &mut problems).unwrap_err();
        assert_eq!(err.pos, Pos::new(1, 4));
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second() {
        let (root, problems) = parse_ok("a: 1\nb: 2\na: 3\n");
        assert_eq!(entries(&root).len(), 2);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].pos, Pos::new(3, 1));
        assert_eq!(
            problems[0].message,
            "duplicate key `a` (first defined at line 1)"
        );
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let (root, problems) = parse_ok("a: &x {b: 1}\nc: *x\n");
        assert!(problems.is_empty());
        let top = entries(&root);
        assert_eq!(top[0].value.kind, top[1].value.kind);
    }

    #[test]
    fn empty_text_is_null_and_second_document_is_reported() {
        let (root, _) = parse_ok("");
        assert_eq!(root.kind, NodeKind::Null);
        let (_, problems) = parse_ok("a: 1\n---\nb: 2\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].pos.line, 2);
    }
}
