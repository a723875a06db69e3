//! Property tests of the config file decoder: what it builds is what the file says,
//! and what it refuses it refuses for the documented reasons. For generated documents
//! (block and flow YAML, JSON, keys quoted three ways, scalars full of brackets and
//! quotes): a key twice in one mapping is refused, and only then; nesting past
//! [`MAX_CONFIG_DEPTH`] is refused, and the linear pre-pass (`yaml_depth`) measures
//! flow nesting exactly as deep as libyaml does (never less, or the scanner's
//! quadratic cost is back; never more, or good files are refused); a byte that is not
//! UTF-8 is refused at its line and offset. For any bytes nothing panics or loops, and
//! YAML aliases cannot make a small file a large value (bounded memory).

use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;
use crate::props::{CASE_LIMIT, config, terminates};

/// A document as generated: what it means, and how it is written.
#[derive(Debug, Clone)]
enum Node {
    /// A string, and which of [`scalar`]'s spellings writes it.
    Scalar(String, u8),
    Seq(Vec<Node>),
    /// Keys may repeat; each with its spelling.
    Map(Vec<(String, u8, Node)>),
}

impl Node {
    fn depth(&self) -> usize {
        match self {
            Node::Scalar(..) => 0,
            Node::Seq(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Node::Map(entries) => 1 + entries.iter().map(|(_, _, v)| v.depth()).max().unwrap_or(0),
        }
    }

    fn has_duplicate_key(&self) -> bool {
        match self {
            Node::Scalar(..) => false,
            Node::Seq(items) => items.iter().any(Node::has_duplicate_key),
            Node::Map(entries) => {
                let mut keys: Vec<&str> = entries.iter().map(|(k, _, _)| k.as_str()).collect();
                keys.sort_unstable();
                keys.windows(2).any(|w| w[0] == w[1])
                    || entries.iter().any(|(_, _, v)| v.has_duplicate_key())
            }
        }
    }

    /// The value it means (for a document without duplicate keys).
    fn value(&self) -> serde_json::Value {
        match self {
            Node::Scalar(s, _) => s.clone().into(),
            Node::Seq(items) => items.iter().map(Node::value).collect(),
            Node::Map(entries) => entries
                .iter()
                .map(|(k, _, v)| (k.clone(), v.value()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// In flow style: `{a: [x, 'y']}`.
    fn flow(&self, out: &mut String) {
        match self {
            Node::Scalar(s, style) => out.push_str(&scalar(s, *style)),
            Node::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.flow(out);
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push('{');
                for (i, (k, style, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&scalar(k, *style));
                    out.push_str(": ");
                    v.flow(out);
                }
                out.push('}');
            }
        }
    }

    /// In block style, `indent` spaces in; empty collections in flow style.
    fn block(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        let child = |v: &Node, out: &mut String| match v {
            Node::Seq(items) if !items.is_empty() => {
                out.push('\n');
                v.block(indent + 2, out);
            }
            Node::Map(entries) if !entries.is_empty() => {
                out.push('\n');
                v.block(indent + 2, out);
            }
            _ => {
                out.push(' ');
                v.flow(out);
                out.push('\n');
            }
        };
        match self {
            Node::Seq(items) if !items.is_empty() => {
                for item in items {
                    out.push_str(&pad);
                    out.push('-');
                    child(item, out);
                }
            }
            Node::Map(entries) if !entries.is_empty() => {
                for (k, style, v) in entries {
                    let _ = write!(out, "{pad}{}:", scalar(k, *style));
                    child(v, out);
                }
            }
            _ => {
                out.push_str(&pad);
                self.flow(out);
                out.push('\n');
            }
        }
    }
}

/// `s` written plain (where that reads back as the same string), single-quoted,
/// double-quoted, or double-quoted with its first character escaped.
fn scalar(s: &str, style: u8) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./'".contains(&b))
        && s.as_bytes()[0].is_ascii_alphabetic();
    match style % 4 {
        0 if plain => s.to_owned(),
        1 => format!("'{}'", s.replace('\'', "''")),
        3 => match s.bytes().next() {
            Some(c) if c.is_ascii() => {
                let rest = serde_json::to_string(&s[1..]).unwrap_or_default();
                format!("\"\\u{c:04x}{}", &rest[1..])
            }
            _ => serde_json::to_string(s).unwrap_or_default(),
        },
        _ => serde_json::to_string(s).unwrap_or_default(),
    }
}

/// Strings with what scanners trip on: brackets, quotes, `#`, `: `, commas, escapes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["web", "x", "a-b", "v1.2", "it's", "a'b", "path/to", "n8"])
            .prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "[[", "]", "{", "}", "a: b", "#x", " # y", "\"", "'", "''", "\\", "é", ",", "x, y",
            "[[[1]]]", "{a: [", "\t", "", "!tag", "&a", "*a", "- x", "? k", "|", ">", "%", "@",
        ])
        .prop_map(str::to_owned),
        1 => "[\\[\\]{}'\",:#a-z ]{0,8}",
    ]
}

/// Keys from a few, so that some mappings repeat one.
fn key() -> impl Strategy<Value = (String, u8)> {
    (
        prop::sample::select(vec!["a", "b", "name", "c", "listeners", "it's"]),
        any::<u8>(),
    )
        .prop_map(|(k, style)| (k.to_owned(), style))
}

fn node(depth: u32) -> impl Strategy<Value = Node> {
    let leaf = (text(), any::<u8>()).prop_map(|(s, style)| Node::Scalar(s, style));
    leaf.prop_recursive(depth, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Node::Seq),
            prop::collection::vec((key(), inner), 0..4).prop_map(|entries| {
                Node::Map(entries.into_iter().map(|((k, s), v)| (k, s, v)).collect())
            }),
        ]
    })
}

/// A top-level mapping, whose keys do not repeat.
fn document() -> impl Strategy<Value = Node> {
    prop::collection::vec(node(5), 1..4).prop_map(|values| {
        Node::Map(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("k{i}"), 0, v))
                .collect(),
        )
    })
}

/// Block-style lines whose scalars hide brackets in quotes, comments and block
/// scalars: none nests anything (from `yaml_depth`'s tests, and more).
fn hiding_lines() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "h0: it's [[[\n",
            "h1: x 'y [[\n",
            "h2: b:\"c [[\n",
            "h3: |\n  ' [[[\n  {{{\n",
            "h4: >-\n  \" [[[\n",
            "h5: !t'x v[[\n",
            "h6: plain\n  'continued [[[\n",
            "h7: # ' [[[\n",
            "h8: '[[[ it''s ['\n",
            "h9: \"[[[ \\\" [[[\"\n",
            "# [[[[[[ {{{{\n",
            "h10: http://x/[[[[\n",
            "h11: !<tag:x[[[[> v\n",
            "h12: a [[[[\n  continued [[[[\n",
        ]),
        0..4,
    )
}

/// What `parse` builds from `text` before it reads it as a ProxyConfig.
fn checked(text: &str) -> Result<serde_json::Value, String> {
    let max_values = (text.len() + 1) * MAX_VALUES_PER_BYTE;
    checked_value(serde_norway::Deserializer::from_str(text), max_values)
}

fn count_nodes(value: &serde_json::Value) -> usize {
    1 + match value {
        serde_json::Value::Array(items) => items.iter().map(count_nodes).sum(),
        serde_json::Value::Object(entries) => entries.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Bytes that proptest prints as a byte string.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Bytes that look like YAML, for the parsers' error paths.
fn yaml_soup() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec![
                "[", "]", "{", "}", ",", ":", ": ", "- ", "\n", "  ", "'", "\"", "#", "&a ", "*a",
                "!t ", "|", ">", "? ", "key", "1", "---\n", "...\n", "\t", "%YAML 1.2\n", "\\",
                "\u{a0}", "\r", "<<: ", "listeners", "version", "\u{feff}", "\u{85}", "~",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..4),
        ],
        0..64,
    )
    .prop_map(|parts| Bytes(parts.concat()))
}

proptest! {
    #![proptest_config(config(4))]

    /// Whatever the bytes, the file decoder and the stream's decoder return.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop_oneof![
        yaml_soup(),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Bytes),
    ]) {
        terminates(CASE_LIMIT, move || {
            let _ = parse(Path::new("c.yaml"), &bytes.0);
            let _ = parse_json(&bytes.0);
            if let Ok(text) = std::str::from_utf8(&bytes.0) {
                let _ = yaml_depth::check(text, 3);
            }
        });
    }

    /// A document is refused for a repeated key when one of its mappings repeats a key
    /// (however the two are quoted), and only then; otherwise it decodes to exactly
    /// what was written.
    #[test]
    fn duplicate_keys_and_only_they_are_refused(doc in document(), flow in any::<bool>()) {
        let mut text = String::new();
        if flow {
            doc.flow(&mut text);
        } else {
            doc.block(0, &mut text);
        }
        let got = terminates(CASE_LIMIT, {
            let text = text.clone();
            move || checked(&text)
        });
        if doc.has_duplicate_key() {
            prop_assert!(
                matches!(&got, Err(e) if e.contains("duplicate key")),
                "{text}\n{got:?}"
            );
        } else {
            prop_assert_eq!(got, Ok(doc.value()), "{}", text);
        }
    }

    /// The pre-pass measures the flow depth libyaml reaches, past quotes, comments,
    /// block scalars and tags that hide brackets.
    #[test]
    fn the_pre_pass_measures_flow_depth_exactly(
        doc in node(7),
        hiding in hiding_lines(),
        limit in 0usize..9,
    ) {
        let mut text: String = hiding.concat();
        text.push_str("node: ");
        doc.flow(&mut text);
        text.push('\n');
        let depth = doc.depth();
        let (measured, parsed) = terminates(CASE_LIMIT, {
            let text = text.clone();
            move || (yaml_depth::check(&text, limit), serde_norway::from_str::<serde::de::IgnoredAny>(&text))
        });
        prop_assert!(parsed.is_ok(), "not YAML: {text}\n{parsed:?}");
        prop_assert_eq!(measured.is_ok(), depth <= limit, "depth {} limit {}: {}", depth, limit, text);
    }

    /// Nesting past the limit is refused, by the pre-pass (flow) or while building the
    /// value (block), and nesting up to it is not.
    #[test]
    fn nesting_past_the_limit_is_refused(depth in 1usize..100, style in 0u8..4) {
        let text = match style {
            0 => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
            2 => (0..depth).map(|i| format!("{}k:\n", " ".repeat(i))).collect(),
            _ => (0..depth).map(|i| format!("{}-\n", " ".repeat(2 * i))).collect(),
        };
        let result = terminates(CASE_LIMIT, {
            let text = text.clone();
            move || parse(Path::new("c.yaml"), text.as_bytes()).map(drop).map_err(|e| e.to_string())
        });
        let deep = matches!(&result, Err(e) if e.contains("nested deeper than"));
        // Block mappings end in a null; sequences of them likewise count one level each.
        prop_assert_eq!(deep, depth > MAX_CONFIG_DEPTH, "{:?}", result);
    }

    /// A byte that is not UTF-8 is refused, at its line and byte offset.
    #[test]
    fn invalid_utf8_is_refused_where_it_is(
        doc in document(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec![&b"\xff"[..], b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]),
    ) {
        let mut text = String::new();
        doc.block(0, &mut text);
        // At a character boundary, so that everything before it is valid.
        let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let offset = boundaries[at.index(boundaries.len())];
        let mut bytes = text.as_bytes().to_vec();
        bytes.splice(offset..offset, bad.iter().copied());
        let line = text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        let err = parse(Path::new("c.yaml"), &bytes).map(drop).map_err(|e| e.to_string());
        let want = format!("not UTF-8: invalid byte at line {line} (byte offset {offset})");
        prop_assert!(matches!(&err, Err(e) if e.contains(&want)), "{err:?}, want {want}");
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// Bounded memory: YAML aliases repeat what an anchor holds, but the value built
    /// from a file stays within a small multiple of the file's size, or the file is
    /// refused ("billion laughs", deep or wide).
    #[test]
    fn aliases_cannot_make_a_small_file_a_large_value(
        levels in 1usize..6,
        fanout in 2usize..40,
        wide in 1usize..400,
    ) {
        // Each level repeats the one before `fanout` times; the first is `wide` wide.
        let mut text = format!("l0: &l0 [{}]\n", vec!["x"; wide].join(", "));
        for level in 1..=levels {
            let _ = writeln!(text, "l{level}: &l{level} [{}]", vec![format!("*l{}", level - 1); fanout].join(", "));
        }
        let len = text.len();
        let result = terminates(CASE_LIMIT, move || checked(&text).map(|v| count_nodes(&v)));
        if let Ok(nodes) = result {
            prop_assert!(nodes <= MAX_VALUES_PER_BYTE * (len + 1), "{nodes} values from {len} bytes");
        }
    }
}

#[test]
fn the_generators_write_what_they_mean() {
    let doc = Node::Map(vec![
        (
            "a".into(),
            1,
            Node::Seq(vec![
                Node::Scalar("it's".into(), 0),
                Node::Scalar("[[".into(), 3),
            ]),
        ),
        ("b".into(), 2, Node::Map(Vec::new())),
    ]);
    let (mut flow, mut block) = (String::new(), String::new());
    doc.flow(&mut flow);
    doc.block(0, &mut block);
    assert_eq!(flow, r#"{'a': [it's, "\u005b["], "b": {}}"#);
    assert_eq!(block, "'a':\n  - it's\n  - \"\\u005b[\"\n\"b\": {}\n");
    for text in [flow, block] {
        assert_eq!(checked(&text), Ok(doc.value()), "{text}");
    }
}
