//! Encoding as Go's `json.Marshal` encodes `QueueRequest`.

use std::io;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};

use super::decode::URL_FIELDS;

use super::*;

/// Encode as Go's `json.Marshal` encodes the current `QueueRequest` struct: fields in
/// struct order, `omitempty` fields left out when empty, map keys sorted, `Body` as
/// standard padded base64, and Go's HTML-safe string escaping.
pub fn encode(req: &QueueRequest) -> Vec<u8> {
    let estimate = 256
        + req.body.len() / 3 * 4
        + req
            .header
            .iter()
            .map(|(k, v)| k.len() + v.iter().map(|s| s.len() + 3).sum::<usize>() + 8)
            .sum::<usize>();
    let mut out = Vec::with_capacity(estimate);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Writing into a Vec has no I/O errors, and every map key is a string: this cannot fail.
    WireRequest(req)
        .serialize(&mut serializer)
        .expect("serialising a QueueRequest into memory cannot fail");
    out
}

/// serde_json's compact formatter plus Go's extra escapes: `<`, `>`, `&`, U+2028, U+2029.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut found = Candidates::default();
        let (mut start, mut i) = (0, 0);
        while let Some(at) = found.next(bytes, i) {
            let Some((escape, len)) = go_escape(&bytes[at..]) else {
                i = at + 1;
                continue;
            };
            writer.write_all(&bytes[start..at])?;
            writer.write_all(escape)?;
            i = at + len;
            start = i;
        }
        writer.write_all(&bytes[start..])
    }
}

/// Go's escape of the character starting `rest`, with its length in bytes; `None` when it is
/// written as it is.
fn go_escape(rest: &[u8]) -> Option<(&'static [u8], usize)> {
    match rest {
        [b'<', ..] => Some((b"\\u003c", 1)),
        [b'>', ..] => Some((b"\\u003e", 1)),
        [b'&', ..] => Some((b"\\u0026", 1)),
        // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8.
        [0xE2, 0x80, 0xA8, ..] => Some((b"\\u2028", 3)),
        [0xE2, 0x80, 0xA9, ..] => Some((b"\\u2029", 3)),
        _ => None,
    }
}

/// Where the next byte that may start a Go escape is (`<`, `>`, `&`, or 0xE2), found with
/// `memchr` (a body's base64 is hundreds of bytes with none of them): the next `<>&` and the
/// next 0xE2 are remembered apart, so each part of the string is searched once per kind.
#[derive(Default)]
struct Candidates {
    /// Where the last search for `<`, `>` or `&` found one (the string's length: none left).
    ascii: Option<usize>,
    /// The same for 0xE2.
    e2: Option<usize>,
}

impl Candidates {
    fn next(&mut self, bytes: &[u8], from: usize) -> Option<usize> {
        let ascii = ahead(&mut self.ascii, bytes, from, |s| {
            memchr::memchr3(b'<', b'>', b'&', s)
        });
        let e2 = ahead(&mut self.e2, bytes, from, |s| memchr::memchr(0xE2, s));
        let at = ascii.min(e2);
        (at < bytes.len()).then_some(at)
    }
}

/// The first place at or after `from` where `find` matches (`bytes.len()`: none), searching
/// again only when the one `cached` is behind `from`.
fn ahead(
    cached: &mut Option<usize>,
    bytes: &[u8],
    from: usize,
    find: impl Fn(&[u8]) -> Option<usize>,
) -> usize {
    match *cached {
        Some(at) if at >= from => at,
        _ => {
            let at = find(&bytes[from..]).map_or(bytes.len(), |p| from + p);
            *cached = Some(at);
            at
        }
    }
}

struct WireRequest<'a>(&'a QueueRequest);

impl Serialize for WireRequest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let req = self.0;
        let mut map = serializer.serialize_map(None)?;
        if !req.header.is_empty() {
            map.serialize_entry("Header", &req.header)?;
        }
        if !req.host.is_empty() {
            map.serialize_entry("Host", &req.host)?;
        }
        if !req.body.is_empty() {
            map.serialize_entry("Body", &WireBody(&req.body))?;
        }
        map.serialize_entry("Method", &req.method)?;
        if !req.path.is_empty() {
            map.serialize_entry("Path", &req.path)?;
        }
        if !req.query_string.is_empty() {
            map.serialize_entry("QueryString", &req.query_string)?;
        }
        map.serialize_entry("Function", &req.function)?;
        if !req.queue_name.is_empty() {
            map.serialize_entry("QueueName", &req.queue_name)?;
        }
        if !req.annotations.is_empty() {
            map.serialize_entry("Annotations", &req.annotations)?;
        }
        if !req.labels.is_empty() {
            map.serialize_entry("Labels", &req.labels)?;
        }
        if !req.environment.is_empty() {
            map.serialize_entry("Environment", &req.environment)?;
        }
        if let Some(url) = &req.callback_url {
            map.serialize_entry("CallbackUrl", &WireUrl(url))?;
        }
        map.end()
    }
}

/// `[]byte`: standard padded base64, written without an intermediate `String`.
struct WireBody<'a>(&'a [u8]);

impl Serialize for WireBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

struct WireUrl<'a>(&'a GoUrl);

impl Serialize for WireUrl<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let url = self.0;
        let mut s = serializer.serialize_struct("URL", URL_FIELDS.len())?;
        s.serialize_field("Scheme", &url.scheme)?;
        s.serialize_field("Opaque", &url.opaque)?;
        s.serialize_field("User", &url.user.as_ref().map(|_| WireUser))?;
        s.serialize_field("Host", &url.host)?;
        s.serialize_field("Path", &url.path)?;
        s.serialize_field("RawPath", &url.raw_path)?;
        s.serialize_field("OmitHost", &url.omit_host)?;
        s.serialize_field("ForceQuery", &url.force_query)?;
        s.serialize_field("RawQuery", &url.raw_query)?;
        s.serialize_field("Fragment", &url.fragment)?;
        s.serialize_field("RawFragment", &url.raw_fragment)?;
        s.end()
    }
}

/// `url.Userinfo` has no exported fields: Go writes `{}`.
struct WireUser;

impl Serialize for WireUser {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Go's escaping as a second, plain reading: serde_json's, then Go's extra characters.
    fn reference(s: &str) -> String {
        serde_json::to_string(s)
            .unwrap()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
    }

    fn go(s: &str) -> String {
        let mut out = Vec::new();
        s.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            GoFormatter,
        ))
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_go_escapes_and_nothing_else() {
        assert_eq!(
            go("a<b>&\u{2028}\u{2029}—é\"\\"),
            r#""a\u003cb\u003e\u0026\u2028\u2029—é\"\\""#
        );
        assert_eq!(go("\u{2028}\u{2028}<"), r#""\u2028\u2028\u003c""#);
        assert_eq!(go("——"), "\"——\"");
    }

    proptest! {
        #[test]
        fn matches_the_reference(
            s in proptest::collection::vec(
                prop::sample::select(vec!['a', '<', '>', '&', '\u{2028}', '\u{2029}', '—', '\u{20ac}', 'é', '"', '\\', '\n']),
                0..64,
            )
        ) {
            let s: String = s.into_iter().collect();
            prop_assert_eq!(go(&s), reference(&s));
        }
    }
}
