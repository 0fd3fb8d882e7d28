//! The callback URL as Go's `net/url` reads and prints it.

use super::*;

// --- URLs ----------------------------------------------------------------------------

fn go_url(text: &str) -> GoUrl {
    GoUrl::from_url(&url::Url::parse(text).expect("valid url"))
}

#[test]
fn from_url_matches_go_parse() {
    assert_eq!(
        go_url("http://Gateway.OpenFaaS:8080/function/receiver?batch=7#frag"),
        GoUrl {
            fragment: "frag".into(),
            ..url(
                "http",
                "gateway.openfaas:8080",
                "/function/receiver",
                "batch=7"
            )
        }
    );
    // Default escaping of the decoded path: no RawPath.
    assert_eq!(go_url("http://h/a b"), url("http", "h", "/a b", ""));
    assert_eq!(go_url("http://h/a%20b"), url("http", "h", "/a b", ""));
    // Escaping that differs from Go's default is kept in RawPath.
    assert_eq!(
        go_url("http://h/a%2Fb"),
        GoUrl {
            raw_path: "/a%2Fb".into(),
            ..url("http", "h", "/a/b", "")
        }
    );
    assert_eq!(
        go_url("http://h/%e2%82%ac"),
        GoUrl {
            raw_path: "/%e2%82%ac".into(),
            ..url("http", "h", "/€", "")
        }
    );
    // Credentials: User = Some, never the secret.
    assert_eq!(
        go_url("https://user:secret@h/cb"),
        GoUrl {
            user: Some(GoUserinfo),
            ..url("https", "h", "/cb", "")
        }
    );
    assert_eq!(
        go_url("http://h/?"),
        GoUrl {
            force_query: true,
            ..url("http", "h", "/", "")
        }
    );
    assert_eq!(go_url("http://[::1]:9/x"), url("http", "[::1]:9", "/x", ""));
    assert_eq!(
        go_url("mailto:ops@example.com"),
        GoUrl {
            scheme: "mailto".into(),
            opaque: "ops@example.com".into(),
            ..GoUrl::default()
        }
    );
    assert_eq!(
        go_url("foo:/bar"),
        GoUrl {
            omit_host: true,
            ..url("foo", "", "/bar", "")
        }
    );
    assert_eq!(
        go_url("http://h/p#a%20b"),
        GoUrl {
            fragment: "a b".into(),
            ..url("http", "h", "/p", "")
        }
    );
    assert_eq!(
        go_url("http://h/p#a%2Fb"),
        GoUrl {
            fragment: "a/b".into(),
            raw_fragment: "a%2Fb".into(),
            ..url("http", "h", "/p", "")
        }
    );
}

#[test]
fn to_url_string_cases() {
    let cases = [
        "http://receiver.example.com:8888/cb/path?batch=7",
        "http://h/a%20b",
        "http://h/a%2Fb",
        "http://h/%e2%82%ac",
        "http://h/?",
        "http://h/p?x=1&y=%20#frag",
        "http://h/p#a%2Fb",
        "http://[::1]:9/x",
        "mailto:ops@example.com",
        "foo:/bar",
        "https://h/a;b,c=d@e$f",
    ];
    for text in cases {
        assert_eq!(go_url(text).to_url_string(), text, "{text}");
    }
    // Userinfo is dropped.
    assert_eq!(
        go_url("https://user:secret@h:8443/cb?x=1").to_url_string(),
        "https://h:8443/cb?x=1"
    );
    // A Path without RawPath is escaped the way Go's EscapedPath does.
    assert_eq!(
        url("http", "h", "/a b", "").to_url_string(),
        "http://h/a%20b"
    );
    assert_eq!(
        url("http", "h", "/€?#|", "").to_url_string(),
        "http://h/%E2%82%AC%3F%23%7C"
    );
    // Go leaves RFC 3986 sub-delims, `:` and `@` unescaped in a path.
    assert_eq!(
        url("http", "h", "/a;b,c=d@e$f:g+h&i'j(k)*l!m", "").to_url_string(),
        "http://h/a;b,c=d@e$f:g+h&i%27j%28k%29%2Al%21m"
    );
    assert_eq!(go_url("https://h/a;b,c=d@e$f").raw_path, "");
    assert_eq!(url("http", "h", "p", "").to_url_string(), "http://h/p");
    assert_eq!(url("http", "h", "", "").to_url_string(), "http://h");
    // A RawPath that does not encode Path is ignored.
    assert_eq!(
        GoUrl {
            raw_path: "/other".into(),
            ..url("http", "h", "/a b", "")
        }
        .to_url_string(),
        "http://h/a%20b"
    );
    // Relative references.
    assert_eq!(
        url("", "", "/just/path", "q").to_url_string(),
        "/just/path?q"
    );
    assert_eq!(url("", "", "a:b", "").to_url_string(), "./a:b");
    // An IPv6 zone's % is escaped, as Go does.
    assert_eq!(
        url("http", "[fe80::1%en0]:8080", "/", "").to_url_string(),
        "http://[fe80::1%25en0]:8080/"
    );
    // Non-UTF-8 decoded paths keep their escaping through RawPath.
    let odd = go_url("http://h/%FF");
    assert_eq!(odd.path, "/\u{FFFD}");
    assert_eq!(odd.raw_path, "/%FF");
    assert_eq!(odd.to_url_string(), "http://h/%FF");
}
