//! Structure-aware mutation of real messages: a fixture parsed into a tree of raw JSON pieces,
//! edited where the decoder looks (field values swapped for hostile ones, keys duplicated,
//! removed, added in Go's other spellings, values nested deep), then edited as bytes (flips,
//! insertions, deletions, truncation).

use std::sync::LazyLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use crate::hostile::{self, Raw};

/// The Go-encoded fixtures that decode (testdata/wire/README.md), but the 800 KiB one.
pub const FIXTURES: &[&str] = &[
    "full.json",
    "minimal.json",
    "legacy-2020.json",
    "dotted-name.json",
    "binary-body.json",
    "annotations.json",
    "callback-userinfo.json",
    "lowercase-keys.json",
];

/// A fixture's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/wire/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The fixtures as trees, read once.
static TREES: LazyLock<Vec<Node>> = LazyLock::new(|| {
    FIXTURES
        .iter()
        .map(|name| {
            let value: Value = serde_json::from_slice(&fixture(name)).expect("a fixture parses");
            Node::from_value(&value)
        })
        .collect()
});

/// JSON as a tree whose leaves are raw text (so a leaf can be anything, even not JSON).
#[derive(Debug, Clone)]
pub enum Node {
    Leaf(Raw),
    Object(Vec<(Raw, Node)>),
    Array(Vec<Node>),
}

impl Node {
    fn from_value(value: &Value) -> Node {
        match value {
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, v)| (Raw(json_text(k)), Node::from_value(v)))
                    .collect(),
            ),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_value).collect()),
            leaf => Node::Leaf(Raw(json_text(leaf))),
        }
    }

    fn render(&self, out: &mut Vec<u8>) {
        match self {
            Node::Leaf(raw) => out.extend_from_slice(&raw.0),
            Node::Object(members) => {
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&key.0);
                    out.push(b':');
                    value.render(out);
                }
                out.push(b'}');
            }
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.render(out);
                }
                out.push(b']');
            }
        }
    }

    /// Nodes in the tree, this one included.
    fn count(&self) -> usize {
        1 + match self {
            Node::Leaf(_) => 0,
            Node::Object(members) => members.iter().map(|(_, v)| v.count()).sum(),
            Node::Array(items) => items.iter().map(Node::count).sum(),
        }
    }

    /// String values in the tree.
    fn strings(&self) -> usize {
        match self {
            Node::Leaf(raw) => usize::from(raw.0.first() == Some(&b'"')),
            Node::Object(members) => members.iter().map(|(_, v)| v.strings()).sum(),
            Node::Array(items) => items.iter().map(Node::strings).sum(),
        }
    }

    /// The `n`th string value, in pre-order.
    fn nth_string_mut(&mut self, mut n: usize) -> Option<&mut Raw> {
        let children: Vec<&mut Node> = match self {
            Node::Leaf(raw) => return (n == 0 && raw.0.first() == Some(&b'"')).then_some(raw),
            Node::Object(members) => members.iter_mut().map(|(_, v)| v).collect(),
            Node::Array(items) => items.iter_mut().collect(),
        };
        for child in children {
            let size = child.strings();
            if n < size {
                return child.nth_string_mut(n);
            }
            n -= size;
        }
        None
    }

    /// The `n`th node in pre-order (0 is this one).
    fn nth_mut(&mut self, n: usize) -> Option<&mut Node> {
        if n == 0 {
            return Some(self);
        }
        let mut n = n - 1;
        let children: Vec<&mut Node> = match self {
            Node::Leaf(_) => return None,
            Node::Object(members) => members.iter_mut().map(|(_, v)| v).collect(),
            Node::Array(items) => items.iter_mut().collect(),
        };
        for child in children {
            let size = child.count();
            if n < size {
                return child.nth_mut(n);
            }
            n -= size;
        }
        None
    }
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON encodes")
}

/// One edit of the tree, at a node picked by `at`.
#[derive(Debug, Clone)]
pub enum Edit {
    /// The node becomes a hostile value.
    Replace { at: Index, value: Raw },
    /// A string value (the `at`th of them) becomes another string, often valid JSON.
    Restring { at: Index, value: Raw },
    /// A member of the object (or of the root) is repeated at the end: a duplicate key.
    Duplicate { at: Index, member: Index },
    /// A member of the object (or of the root) is removed.
    Remove { at: Index, member: Index },
    /// A member is added to the object (or to the root).
    Add { at: Index, key: Raw, value: Raw },
    /// The node is wrapped in `depth` arrays.
    Nest { at: Index, depth: usize },
}

/// One edit of the bytes.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    Flip { at: Index, mask: u8 },
    Insert { at: Index, bytes: Raw },
    Delete { at: Index, len: usize },
    Truncate { at: Index },
}

/// A fixture, edited.
#[derive(Debug, Clone)]
pub struct Mutated {
    pub fixture: &'static str,
    pub edits: Vec<Edit>,
    pub byte_edits: Vec<ByteEdit>,
}

impl Mutated {
    /// The message: the fixture's tree with the edits, rendered, then the byte edits.
    pub fn bytes(&self) -> Vec<u8> {
        let index = FIXTURES.iter().position(|f| *f == self.fixture);
        let mut tree = TREES[index.expect("a known fixture")].clone();
        for edit in &self.edits {
            apply(&mut tree, edit);
        }
        let mut out = Vec::new();
        tree.render(&mut out);
        for edit in &self.byte_edits {
            apply_bytes(&mut out, edit);
        }
        out
    }
}

fn apply(tree: &mut Node, edit: &Edit) {
    let count = tree.count();
    match edit {
        Edit::Replace { at, value } => {
            *node(tree, at, count) = Node::Leaf(value.clone());
        }
        Edit::Restring { at, value } => {
            let strings = tree.strings();
            if strings > 0 {
                *tree
                    .nth_string_mut(at.index(strings))
                    .expect("below the count") = value.clone();
            }
        }
        Edit::Duplicate { at, member } => {
            if let Some(members) = members(tree, at, count) {
                let copy = members[member.index(members.len())].clone();
                members.push(copy);
            }
        }
        Edit::Remove { at, member } => {
            if let Some(members) = members(tree, at, count) {
                members.remove(member.index(members.len()));
            }
        }
        Edit::Add { at, key, value } => {
            if let Some(members) = object_or_root(tree, at, count) {
                members.push((key.clone(), Node::Leaf(value.clone())));
            }
        }
        Edit::Nest { at, depth } => {
            let target = node(tree, at, count);
            for _ in 0..*depth {
                *target = Node::Array(vec![target.clone()]);
            }
        }
    }
}

fn node<'a>(tree: &'a mut Node, at: &Index, count: usize) -> &'a mut Node {
    tree.nth_mut(at.index(count))
        .expect("an index below the count")
}

/// The members of the object at `at`, else of the root object; `None` when both are empty.
fn members<'a>(tree: &'a mut Node, at: &Index, count: usize) -> Option<&'a mut Vec<(Raw, Node)>> {
    object_or_root(tree, at, count).filter(|m| !m.is_empty())
}

fn object_or_root<'a>(
    tree: &'a mut Node,
    at: &Index,
    count: usize,
) -> Option<&'a mut Vec<(Raw, Node)>> {
    let is_object = matches!(tree.nth_mut(at.index(count)), Some(Node::Object(_)));
    let target = if is_object {
        node(tree, at, count)
    } else {
        tree
    };
    match target {
        Node::Object(members) => Some(members),
        _ => None,
    }
}

fn apply_bytes(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    match edit {
        ByteEdit::Flip { at, mask } => {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
        }
        ByteEdit::Insert { at, bytes: insert } => {
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, insert.0.iter().copied());
        }
        ByteEdit::Delete { at, len } => {
            let i = at.index(bytes.len() + 1);
            bytes.drain(i..(i + len).min(bytes.len()));
        }
        ByteEdit::Truncate { at } => {
            let keep = at.index(bytes.len() + 1);
            bytes.truncate(keep);
        }
    }
}

fn raw(strategy: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Raw> {
    strategy.prop_map(Raw)
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), raw(hostile::value())).prop_map(|(at, value)| Edit::Replace { at, value }),
        6 => (any::<Index>(), raw(hostile::string())).prop_map(|(at, value)| Edit::Restring { at, value }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(at, member)| Edit::Duplicate { at, member }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, member)| Edit::Remove { at, member }),
        3 => (any::<Index>(), raw(hostile::field_key()), raw(hostile::value()))
            .prop_map(|(at, key, value)| Edit::Add { at, key, value }),
        1 => (any::<Index>(), 1..200usize).prop_map(|(at, depth)| Edit::Nest { at, depth }),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| ByteEdit::Flip { at, mask }),
        2 => (any::<Index>(), raw(prop_oneof![vec(any::<u8>(), 1..8), hostile::value()]))
            .prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
        1 => (any::<Index>(), 1..16usize).prop_map(|(at, len)| ByteEdit::Delete { at, len }),
        1 => any::<Index>().prop_map(|at| ByteEdit::Truncate { at }),
    ]
}

/// A fixture with up to 4 edits of its structure and up to 3 of its bytes (often none, so
/// that most inputs stay close enough to JSON to reach the decoder's field rules).
pub fn mutated_fixture() -> impl Strategy<Value = Mutated> {
    (
        prop::sample::select(FIXTURES),
        vec(edit(), 1..5),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(byte_edit(), 1..4)],
    )
        .prop_map(|(fixture, edits, byte_edits)| Mutated {
            fixture,
            edits,
            byte_edits,
        })
}

/// Tokens of JSON and of the message's vocabulary, for token soup.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b" ",
    b"\n",
    b"null",
    b"true",
    b"0",
    b"-1e999",
    b"256",
    b"\"Function\"",
    b"\"function\"",
    b"\"Body\"",
    b"\"Header\"",
    b"\"X-Call-Id\"",
    b"\"CallbackUrl\"",
    b"\"User\"",
    b"\"OmitHost\"",
    b"\"Annotations\"",
    b"\"fn\"",
    b"\"YQ==\"",
    b"\"YQ=\"",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"\xff",
    b"\\",
];

/// A sequence of [`TOKENS`], mostly starting as an object.
pub fn token_soup() -> impl Strategy<Value = Raw> {
    (
        prop::bool::weighted(0.9),
        vec(prop::sample::select(TOKENS), 0..80),
    )
        .prop_map(|(object, tokens)| {
            let mut out = if object { b"{".to_vec() } else { Vec::new() };
            tokens.iter().for_each(|t| out.extend_from_slice(t));
            Raw(out)
        })
}
