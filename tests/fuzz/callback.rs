//! Callback URLs, from the `X-Callback-Url` header or the message's `CallbackUrl` object: an
//! accepted one is an absolute http(s) URL the worker can post to, the object the ingress writes
//! for it leads to the same place, and a refusal is bounded.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queue_worker::invoke::request::{CallbackResult, callback_request, callback_url};
use queue_worker::wire::{GoUrl, GoUserinfo, QueueRequest, parse_callback_url};

use crate::{bounded, config};

const SCHEMES: &[&str] = &[
    "http",
    "https",
    "HTTP",
    "hTTpS",
    "ftp",
    "file",
    "mailto",
    "javascript",
    "",
    "h-t.t+p",
];
const SEPARATORS: &[&str] = &["://", ":", ":/", ":///", "//", ":\\\\", "://@"];
const HOSTS: &[&str] = &[
    "example.com",
    "127.0.0.1",
    "[::1]",
    "[fe80::1%25eth0]",
    "[::ffff:1.2.3.4]",
    "xn--nxasmq6b.com",
    "ünicode.example",
    "EXAMPLE.COM.",
    "a..b",
    "",
    "0x7f.1",
    "%41.com",
    "256.256.256.256",
    "a{b}`c\"d",
    "a!$&'()*+,;=b",
    "_under_score~",
];
const PORTS: &[&str] = &[
    "",
    ":",
    ":0",
    ":80",
    ":443",
    ":65535",
    ":65536",
    ":99999999999",
    ":-1",
];

/// URL-shaped strings: schemes, separators, user info, hosts and ports right and wrong, paths,
/// queries and fragments with characters to escape; also anything, and huge ones.
pub fn url_like() -> impl Strategy<Value = String> {
    let structured = (
        prop_oneof![3 => prop::sample::select(SCHEMES).prop_map(str::to_string), 1 => "[a-zA-Z][a-zA-Z0-9+.-]{0,10}"],
        prop::sample::select(SEPARATORS),
        prop_oneof![3 => Just(String::new()), 1 => "[a-z%:]{0,6}@"],
        prop_oneof![3 => prop::sample::select(HOSTS).prop_map(str::to_string), 1 => "[a-zA-Z0-9.%_~-]{0,20}"],
        prop::sample::select(PORTS),
        "(/[a-zA-Z0-9 %~!$&'()*+,;=:@.é\\[\\]|^{}<>\"`-]{0,8}){0,4}",
        prop_oneof![2 => Just(String::new()), 1 => "\\?[a-zA-Z0-9=&%+ é{}|^`<>\"-]{0,12}"],
        prop_oneof![3 => Just(String::new()), 1 => "#[a-z %é]{0,8}"],
    )
        .prop_map(|(scheme, sep, user, host, port, path, query, fragment)| {
            format!("{scheme}{sep}{user}{host}{port}{path}{query}{fragment}")
        });
    prop_oneof![
        8 => structured,
        2 => any::<String>(),
        1 => (0..100_000usize, prop::bool::ANY).prop_map(|(n, in_scheme)| if in_scheme {
            format!("{}://host/", "h".repeat(n))
        } else {
            format!("http://host/{}", "p".repeat(n))
        }),
    ]
}

/// A `CallbackUrl` object as a Go producer could write it.
fn go_url() -> impl Strategy<Value = GoUrl> {
    let text = || prop_oneof![3 => "[a-zA-Z0-9/%?#:@. -]{0,12}", 1 => any::<String>()];
    (
        prop::sample::select(SCHEMES),
        prop::sample::select(HOSTS),
        (text(), text(), text(), text()),
        (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY),
        prop_oneof![4 => Just(String::new()), 1 => text()],
    )
        .prop_map(
            |(scheme, host, (path, raw_path, raw_query, fragment), (user, omit, force), opaque)| {
                GoUrl {
                    scheme: scheme.to_string(),
                    host: host.to_string(),
                    path,
                    raw_path,
                    raw_query,
                    fragment,
                    user: user.then_some(GoUserinfo),
                    omit_host: omit,
                    force_query: force,
                    opaque,
                    ..GoUrl::default()
                }
            },
        )
}

/// A message with a callback URL in its header (in either case), its object, both or neither.
fn message() -> impl Strategy<Value = QueueRequest> {
    (
        proptest::option::of((url_like(), prop::bool::ANY)),
        proptest::option::of(go_url()),
    )
        .prop_map(|(header, callback_url)| {
            let mut req = QueueRequest {
                callback_url,
                ..QueueRequest::default()
            };
            if let Some((url, canonical)) = header {
                let key = if canonical {
                    "X-Callback-Url"
                } else {
                    "x-callback-url"
                };
                req.header.insert(key.into(), vec![url]);
            }
            req
        })
}

/// An accepted URL is absolute http(s) with a host, and the worker can post to it.
fn check_usable(url: &url::Url) -> Result<(), TestCaseError> {
    prop_assert!(matches!(url.scheme(), "http" | "https"));
    prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
    let result = CallbackResult {
        call_id: "id",
        function: "fn.ns",
        status: 200,
        duration: Duration::from_millis(1),
        start_time: "1",
        retry: 0,
        retry_max: 9,
    };
    let built = callback_request(url, &http::HeaderMap::new(), Bytes::new(), &result);
    prop_assert!(
        built.is_ok(),
        "accepted {:?} but cannot post to it: {:?}",
        url.as_str(),
        built.err()
    );
    Ok(())
}

/// A path with the escapes of ASCII characters decoded, but `%2F`, `%25`, `%3F` and `%23`
/// (decoding them changes what the path means), and the other escapes in upper case.
fn normal_path(path: &str) -> String {
    let mut out = String::new();
    for (i, piece) in path.split('%').enumerate() {
        let byte = piece.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok());
        match byte {
            Some(b) if i > 0 && b.is_ascii() && !matches!(b, b'/' | b'%' | b'?' | b'#') => {
                out.push(char::from(b));
                out.push_str(&piece[2..]);
            }
            Some(_) if i > 0 => {
                out.push_str(&format!(
                    "%{}{}",
                    piece[..2].to_ascii_uppercase(),
                    &piece[2..]
                ));
            }
            // A `%` that starts no escape stands for itself, as `%25` does.
            _ if i > 0 => out.push_str(&format!("%25{piece}")),
            _ => out.push_str(piece),
        }
    }
    out
}

/// Paths whose object cannot lead to the same place, known and left as they are:
/// - a `%` that starts no escape: Go's url.Parse refuses the URL (so no Go gateway writes such
///   a message); the url crate keeps it, and the object prints it as `%25`, and every escape
///   after it too;
/// - an escape of a byte that is not UTF-8 (`/%8A`) where the path also has a character Go
///   escapes (`|`): JSON carries the byte as U+FFFD and the escaping hint cannot be used, so the
///   object leads to `/%EF%BF%BD`, as Go's own encoding of the URL does.
fn go_cannot_carry(path: &str) -> bool {
    let bytes = path.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%' && !(bytes.get(i + 1..i + 3)).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    let not_utf8 = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_err();
    let go_escapes = path
        .bytes()
        .any(|b| !b.is_ascii_alphanumeric() && !b"-_.~$&+,/:;=@!'()*[]%".contains(&b));
    bad_escape || (not_utf8 && go_escapes)
}

proptest! {
    #![proptest_config(config("proptest-regressions/fuzz/callback.txt"))]

    #[test]
    fn accepted_callback_urls_are_usable_and_refusals_short(raw in url_like()) {
        match parse_callback_url(&raw) {
            Ok(url) => check_usable(&url)?,
            Err(e) => prop_assert!(bounded(&e), "{} characters", e.chars().count()),
        }
    }

    /// The ingress keeps `X-Callback-Url` and writes it as Go's `CallbackUrl` object too, which
    /// is what a Go worker reads: the object must lead to the same place.
    #[test]
    fn callback_objects_lead_where_the_header_did(raw in url_like()) {
        let Ok(url) = parse_callback_url(&raw) else { return Ok(()) };
        if go_cannot_carry(url.path()) {
            return Ok(());
        }
        let printed = GoUrl::from_url(&url).to_url_string();
        let again = parse_callback_url(&printed);
        prop_assert!(again.is_ok(), "{:?} printed as {:?}: {:?}", url.as_str(), printed, again);
        let again = again.unwrap();
        prop_assert_eq!(again.scheme(), url.scheme());
        prop_assert_eq!(again.host_str(), url.host_str(), "{:?} printed as {:?}", url.as_str(), printed);
        prop_assert_eq!(again.port_or_known_default(), url.port_or_known_default());
        prop_assert_eq!(normal_path(again.path()), normal_path(url.path()), "{:?} printed as {:?}", url.as_str(), printed);
        prop_assert_eq!(again.query(), url.query(), "{:?} printed as {:?}", url.as_str(), printed);
    }

    #[test]
    fn message_callback_urls_are_usable_or_refused_briefly(req in message()) {
        let asked = req.header_value("X-Callback-Url").is_some_and(|h| !h.is_empty())
            || req.callback_url.is_some();
        match callback_url(&req) {
            None => prop_assert!(!asked),
            Some(Ok(url)) => check_usable(&url)?,
            Some(Err(e)) => prop_assert!(bounded(&e), "{} characters", e.chars().count()),
        }
    }
}
