//! Hostile pieces of JSON as raw text: huge, deeply nested, out of range, badly escaped, not
//! UTF-8, or not JSON at all. Raw bytes, so that they can be what no encoder would write.

use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;

/// Bytes shown as an escaped byte string (proptest prints the shrunk input with `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Pieces of a JSON string's contents: valid and invalid escapes, bytes JSON forbids in a
/// string, bytes that are not UTF-8, and what Go's encoder escapes.
const STRING_PIECES: &[&[u8]] = &[
    b"a",
    b"Z",
    b"0",
    b" ",
    b"<",
    b">",
    b"&",
    b"/",
    b".",
    b"%",
    b"=",
    b"+",
    b"\\\"",
    b"\\\\",
    b"\\/",
    b"\\b",
    b"\\n",
    b"\\r",
    b"\\t",
    b"\\u0000",
    b"\\u001f",
    b"\\u00e9",
    b"\\u2028",
    b"\\ud83d\\ude00",
    b"\\ud800",
    b"\\udc00",
    b"\\ud800\\u0041",
    b"\\u12",
    b"\\uZZZZ",
    b"\\x41",
    b"\\",
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x80\xa8",
    b"\xf4\x90\x80\x80",
    b"\xc3",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\r\n",
];

/// Numbers and near-numbers: out of every range the decoder knows (bytes, integers, floats).
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "255",
    "256",
    "-1",
    "1.5",
    "1e2",
    "1e999",
    "-1e999",
    "1E+2",
    "4.9e-324",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "01",
    "+1",
    ".5",
    "1.",
    "-",
    "NaN",
    "Infinity",
    "0x10",
];

/// Literals and misspelt literals.
const LITERALS: &[&str] = &["true", "false", "null", "tru", "nul", "fals", "nulll", ""];

/// A quoted string made of [`STRING_PIECES`], sometimes left unterminated.
pub fn escaped_string() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(prop::sample::select(STRING_PIECES), 0..24),
        prop::bool::weighted(0.95),
    )
        .prop_map(|(pieces, closed)| {
            let mut out = vec![b'"'];
            pieces.iter().for_each(|p| out.extend_from_slice(p));
            if closed {
                out.push(b'"');
            }
            out
        })
}

/// Any string, correctly encoded (what a careful producer could write).
pub fn encoded_string() -> impl Strategy<Value = Vec<u8>> {
    any::<String>().prop_map(|s| serde_json::to_vec(&s).expect("a string encodes"))
}

/// A string, valid JSON more often than not: any text, blanks around it, escapes of anything.
pub fn string() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => encoded_string(),
        3 => "[ \t\n]{0,2}[ -~]{0,10}[ \t\n]{0,2}".prop_map(|s| serde_json::to_vec(&s).expect("a string encodes")),
        1 => escaped_string(),
        1 => huge_string(),
    ]
}

/// A string of up to 64 KiB repeating one piece.
pub fn huge_string() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(STRING_PIECES), 0..=65_536usize).prop_map(|(piece, size)| {
        let mut out = vec![b'"'];
        out.extend(piece.iter().copied().cycle().take(size));
        out.push(b'"');
        out
    })
}

/// A number: one of [`NUMBERS`], any integer or float, or a long run of digits.
pub fn number() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(NUMBERS).prop_map(|n| n.as_bytes().to_vec()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        any::<f64>().prop_map(|n| format!("{n:e}").into_bytes()),
        ("-?[1-9][0-9]{0,400}(\\.[0-9]{1,40})?([eE][-+]?[0-9]{1,6})?").prop_map(String::into_bytes),
    ]
}

/// `depth` arrays or objects opened, closed or left open.
pub fn nesting() -> impl Strategy<Value = Vec<u8>> {
    (0..3_000usize, 0..3u8).prop_map(|(depth, shape)| match shape {
        0 => [b"[".repeat(depth), b"]".repeat(depth)].concat(),
        1 => [br#"{"a":"#.repeat(depth), b"0".to_vec(), b"}".repeat(depth)].concat(),
        _ => b"[{\"Function\":".repeat(depth),
    })
}

/// A `Body` written as Go's `[]byte` array: bytes, out-of-range numbers, nulls, strings.
pub fn byte_array() -> impl Strategy<Value = Vec<u8>> {
    let element = prop_oneof![
        4 => (0..=255u16).prop_map(|b| b.to_string().into_bytes()),
        1 => number(),
        1 => Just(b"null".to_vec()),
        1 => Just(b"\"a\"".to_vec()),
    ];
    vec(element, 0..64).prop_map(|items| bracketed(b'[', items, b']'))
}

/// A base64-looking string: the alphabet, padding in and out of place, JSON-escaped CR/LF.
pub fn base64_string() -> impl Strategy<Value = Vec<u8>> {
    "[A-Za-z0-9+/=]{0,40}((\\\\r|\\\\n|\\\\r\\\\n)[A-Za-z0-9+/=]{0,8}){0,3}"
        .prop_map(|s| [b"\"".as_slice(), s.as_bytes(), b"\""].concat())
}

/// A JSON array of hostile strings and other values (header value lists).
pub fn string_array() -> impl Strategy<Value = Vec<u8>> {
    let element = prop_oneof![
        3 => escaped_string(),
        1 => encoded_string(),
        1 => number(),
        1 => Just(b"null".to_vec()),
        1 => Just(b"{}".to_vec()),
    ];
    vec(element, 0..6).prop_map(|items| bracketed(b'[', items, b']'))
}

/// A JSON object with hostile keys and values (headers, annotations, a URL).
pub fn object() -> impl Strategy<Value = Vec<u8>> {
    let member = (
        prop_oneof![escaped_string(), encoded_string(), field_key()],
        prop_oneof![escaped_string(), string_array(), number(), literal()],
    )
        .prop_map(|(key, value)| [key, b":".to_vec(), value].concat());
    vec(member, 0..6).prop_map(|members| bracketed(b'{', members, b'}'))
}

/// A literal, right or misspelt.
pub fn literal() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(LITERALS).prop_map(|l| l.as_bytes().to_vec())
}

/// Any hostile value.
pub fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => escaped_string(),
        2 => encoded_string(),
        1 => huge_string(),
        3 => number(),
        2 => literal(),
        1 => nesting(),
        2 => byte_array(),
        2 => base64_string(),
        2 => string_array(),
        2 => object(),
    ]
}

/// The field names of `QueueRequest` and Go's `url.URL`.
pub const FIELDS: &[&str] = &[
    "Header",
    "Host",
    "Body",
    "Method",
    "Path",
    "QueryString",
    "Function",
    "QueueName",
    "Annotations",
    "Labels",
    "Environment",
    "CallbackUrl",
    "Scheme",
    "Opaque",
    "User",
    "RawPath",
    "OmitHost",
    "ForceQuery",
    "RawQuery",
    "Fragment",
    "RawFragment",
];

/// A quoted object key that names a field as Go would match it, or nearly: exact, other case,
/// Go's folding (`ſ` for `s`, the Kelvin sign for `k`), written with an escape, or misspelt.
pub fn field_key() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(FIELDS), 0..7u8).prop_map(|(name, variant)| {
        let key = match variant {
            0 | 1 => name.to_string(),
            2 => name.to_lowercase(),
            3 => name.to_uppercase(),
            4 => name.replace('s', "\u{17f}").replace('k', "\u{212a}"),
            5 => format!("\\u{:04x}{}", u32::from(name.as_bytes()[0]), &name[1..]),
            _ => format!("{name}x"),
        };
        format!("\"{key}\"").into_bytes()
    })
}

/// `open item,item,... close`.
fn bracketed(open: u8, items: Vec<Vec<u8>>, close: u8) -> Vec<u8> {
    let mut out = vec![open];
    out.extend(items.join(&b","[..]));
    out.push(close);
    out
}
