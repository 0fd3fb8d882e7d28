//! Building the HTTP requests the worker sends (pure code, no I/O).
//!
//! - The function request: `{gateway_url}/function/{Function}{Path}{?QueryString}` with the
//!   message's method, headers and body (README: "How it works").
//! - The callback request: the function's response posted to the caller's callback URL with the
//!   `X-*` result headers (README: "Retries").

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::wire::{
    InvalidName, QueueRequest, parse_callback_url, quoted, validate_function_name, validate_path,
};

/// Characters Go's `url.PathEscape`-style path encoding leaves alone, besides alphanumerics:
/// `-_.~` and `$&+,/:;=@`. Everything else in a path is percent-encoded.
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1), plus those the
/// HTTP client computes itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Whether a header is hop-by-hop or client-computed (case-insensitive).
pub fn is_not_forwarded(name: &str) -> bool {
    NOT_FORWARDED.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A message that cannot be turned into a request: it is poison (never invocable).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// The method, quoted as far as 64 characters (it can be of any size).
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("cannot build the request URL: {0}")]
    Url(String),
}

/// `{gateway_url}/function/{function}{escaped path}{?query}`. `gateway_url` has no trailing '/'.
pub fn function_url(gateway_url: &str, req: &QueueRequest) -> Result<String, BuildError> {
    // The "teeth" check's deliberate bug may call any name the message gives.
    #[cfg(feature = "buggify")]
    let trusted = crate::buggify::on(crate::buggify::Bug::TrustFunctionNames);
    #[cfg(not(feature = "buggify"))]
    let trusted = false;
    if !trusted {
        validate_function_name(&req.function)?;
    }
    validate_path(&req.path)?;
    let mut url = String::with_capacity(
        gateway_url.len() + 10 + req.function.len() + req.path.len() + req.query_string.len() + 2,
    );
    url.push_str(gateway_url);
    url.push_str("/function/");
    url.push_str(&req.function);
    if !req.path.is_empty() {
        if !req.path.starts_with('/') {
            url.push('/');
        }
        url.extend(utf8_percent_encode(&req.path, PATH_ESCAPE));
    }
    let query = req.query_string.trim_start_matches('?');
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// The function request for one invocation.
pub fn function_request(
    gateway_url: &str,
    req: &QueueRequest,
    call_id: &str,
    start_time: &str,
) -> Result<http::Request<Bytes>, BuildError> {
    let url = function_url(gateway_url, req)?;
    let method = if req.method.is_empty() {
        http::Method::POST
    } else {
        http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| BuildError::Method(quoted(&req.method)))?
    };
    // From the `String` itself: the URI keeps its buffer instead of copying it.
    let uri = http::Uri::try_from(url).map_err(|e| BuildError::Url(format!("{e}")))?;
    let mut out = http::Request::new(req.body.clone());
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    let headers = out.headers_mut();
    // Sized once: the message's headers plus the three set below (no regrowth per message).
    headers.reserve(req.header.len() + 3);
    for (name, values) in &req.header {
        if is_not_forwarded(name)
            || name.eq_ignore_ascii_case("user-agent")
            || name.eq_ignore_ascii_case("x-call-id")
            || name.eq_ignore_ascii_case("x-start-time")
        {
            continue;
        }
        // Header names/values that HTTP cannot carry are dropped, never fatal.
        let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for v in values {
            if let Ok(hv) = HeaderValue::from_str(v) {
                headers.append(hn.clone(), hv);
            }
        }
    }
    set_header(headers, X_CALL_ID, call_id);
    set_header(headers, X_START_TIME, start_time);
    headers.insert(http::header::USER_AGENT, USER_AGENT_VALUE);
    Ok(out)
}

/// `queue-worker/<version>`: the `User-Agent` of every request the worker makes.
pub const USER_AGENT: &str = concat!("queue-worker/", env!("CARGO_PKG_VERSION"));

/// [`USER_AGENT`] as a header value, checked when compiling, not per request.
const USER_AGENT_VALUE: HeaderValue = HeaderValue::from_static(USER_AGENT);

// The names this module sets, checked when compiling, not looked up per request.
const X_CALL_ID: HeaderName = HeaderName::from_static("x-call-id");
const X_START_TIME: HeaderName = HeaderName::from_static("x-start-time");
const X_FUNCTION_STATUS: HeaderName = HeaderName::from_static("x-function-status");
const X_FUNCTION_NAME: HeaderName = HeaderName::from_static("x-function-name");
const X_DURATION_SECONDS: HeaderName = HeaderName::from_static("x-duration-seconds");
const X_RETRY: HeaderName = HeaderName::from_static("x-retry");
const X_RETRY_MAX: HeaderName = HeaderName::from_static("x-retry-max");

/// Sets `name` to `value`, left out when `value` cannot be a header value.
fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The callback URL of a message: the original `X-Callback-Url` header when it is a valid
/// absolute http(s) URL (it keeps credentials that Go's encoding of `CallbackUrl` loses), else
/// the `CallbackUrl` object. `None`: no callback wanted. `Some(Err)`: one was asked for but is
/// unusable.
pub fn callback_url(req: &QueueRequest) -> Option<Result<url::Url, String>> {
    let from_header = req.header_value("X-Callback-Url").filter(|s| !s.is_empty());
    let from_object = req.callback_url.as_ref().map(|u| u.to_url_string());
    let raw = match (from_header, from_object) {
        (Some(h), _) => h.to_string(),
        (None, Some(o)) => o,
        (None, None) => return None,
    };
    Some(parse_callback_url(&raw))
}

/// A URL as it may be logged: scheme, host, port and path only (no credentials, no query),
/// cut when long.
pub fn loggable_url(u: &url::Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(u.path());
    crate::telemetry::redact::url(&s)
}

/// What the callback reports about the invocation.
#[derive(Debug, Clone)]
pub struct CallbackResult<'a> {
    pub call_id: &'a str,
    /// `X-Function-Name`: the function as the message names it (`figlet`, `figlet.ns`).
    pub function: &'a str,
    /// HTTP status of the function, or the status standing for its failure (503, 410, ...).
    pub status: u16,
    pub duration: Duration,
    pub start_time: &'a str,
    /// Retries made (attempts - 1).
    pub retry: u32,
    pub retry_max: u32,
}

/// The callback request: the function's response body and headers (minus hop-by-hop ones)
/// plus the result headers the README lists ("Quick start").
pub fn callback_request(
    url: &url::Url,
    response_headers: &HeaderMap,
    body: Bytes,
    result: &CallbackResult<'_>,
) -> Result<http::Request<Bytes>, BuildError> {
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e| BuildError::Url(format!("{e}")))?;
    let mut out = http::Request::new(body);
    *out.method_mut() = http::Method::POST;
    *out.uri_mut() = uri;
    let headers = out.headers_mut();
    for (name, value) in response_headers {
        if !is_not_forwarded(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    set_header(headers, X_CALL_ID, result.call_id);
    headers.insert(X_FUNCTION_STATUS, HeaderValue::from(result.status));
    set_header(headers, X_FUNCTION_NAME, result.function);
    set_header(
        headers,
        X_DURATION_SECONDS,
        &format!("{:.6}", result.duration.as_secs_f64()),
    );
    set_header(headers, X_START_TIME, result.start_time);
    headers.insert(X_RETRY, HeaderValue::from(result.retry));
    headers.insert(X_RETRY_MAX, HeaderValue::from(result.retry_max));
    headers.insert(http::header::USER_AGENT, USER_AGENT_VALUE);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn msg(function: &str, path: &str, query: &str) -> QueueRequest {
        QueueRequest {
            function: function.into(),
            path: path.into(),
            query_string: query.into(),
            method: "POST".into(),
            ..Default::default()
        }
    }

    #[test]
    fn url_without_path_has_no_trailing_slash() {
        let u = function_url("http://gw:8080", &msg("sleep", "", "")).unwrap();
        assert_eq!(u, "http://gw:8080/function/sleep");
    }

    #[test]
    fn url_with_namespace_path_and_query() {
        let u = function_url(
            "http://gw:8080",
            &msg("figlet.openfaas-fn", "/employees/100", "user=1&tag=a%20b"),
        )
        .unwrap();
        assert_eq!(
            u,
            "http://gw:8080/function/figlet.openfaas-fn/employees/100?user=1&tag=a%20b"
        );
    }

    #[test]
    fn decoded_path_is_re_escaped() {
        let u = function_url("http://gw", &msg("f", "/a/b c/ü?#", "")).unwrap();
        assert_eq!(u, "http://gw/function/f/a/b%20c/%C3%BC%3F%23");
    }

    #[test]
    fn path_without_leading_slash_gets_one() {
        let u = function_url("http://gw", &msg("f", "x", "?q=1")).unwrap();
        assert_eq!(u, "http://gw/function/f/x?q=1");
    }

    #[test]
    fn bad_function_names_and_dot_segments_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a b", "a?b", "../system"] {
            assert!(
                function_url("http://gw", &msg(bad, "", "")).is_err(),
                "{bad:?} accepted"
            );
        }
        for bad in ["/..", "/a/../b", "/./x"] {
            assert!(
                function_url("http://gw", &msg("f", bad, "")).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(function_url("http://gw", &msg("dev.figlet.openfaas-fn", "/a..b", "")).is_ok());
    }

    #[test]
    fn request_carries_method_headers_body_and_our_headers() {
        let mut header = BTreeMap::new();
        header.insert("Content-Type".to_string(), vec!["text/plain".to_string()]);
        header.insert(
            "X-Multi".to_string(),
            vec!["a".to_string(), "b".to_string()],
        );
        header.insert("Connection".to_string(), vec!["close".to_string()]);
        header.insert("Host".to_string(), vec!["evil".to_string()]);
        header.insert("Content-Length".to_string(), vec!["999".to_string()]);
        header.insert("User-Agent".to_string(), vec!["curl/8".to_string()]);
        header.insert("X-Call-Id".to_string(), vec!["stale".to_string()]);
        header.insert("Bad Name".to_string(), vec!["x".to_string()]);
        header.insert("X-Bad-Value".to_string(), vec!["a\nb".to_string()]);
        let m = QueueRequest {
            header,
            method: "PUT".into(),
            body: Bytes::from_static(b"hello"),
            ..msg("fn", "/p", "q=1")
        };
        let r = function_request("http://gw", &m, "call-1", "123").unwrap();
        assert_eq!(r.method(), http::Method::PUT);
        assert_eq!(r.uri().to_string(), "http://gw/function/fn/p?q=1");
        assert_eq!(r.body().as_ref(), b"hello");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/plain");
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, vec!["a", "b"]);
        assert!(h.get("connection").is_none());
        assert!(h.get("host").is_none());
        assert!(h.get("content-length").is_none());
        assert!(h.get("x-bad-value").is_none());
        assert_eq!(h["x-call-id"], "call-1");
        assert_eq!(h["x-start-time"], "123");
        assert_eq!(h["user-agent"], format!("queue-worker/{}", crate::VERSION));
    }

    #[test]
    fn empty_method_means_post_and_bad_method_is_refused() {
        let m = QueueRequest {
            method: String::new(),
            ..msg("f", "", "")
        };
        assert_eq!(
            function_request("http://gw", &m, "c", "1")
                .unwrap()
                .method(),
            http::Method::POST
        );
        let m = QueueRequest {
            method: "GE T".into(),
            ..msg("f", "", "")
        };
        assert!(matches!(
            function_request("http://gw", &m, "c", "1"),
            Err(BuildError::Method(_))
        ));
        // Found by tests/fuzz: a message's method of any size was quoted whole.
        let m = QueueRequest {
            method: "G E T ".repeat(1_000),
            ..msg("f", "", "")
        };
        let err = function_request("http://gw", &m, "c", "1").unwrap_err();
        assert!(err.to_string().len() < 120, "{err}");
    }

    #[test]
    fn callback_has_every_result_header_and_forwards_response_headers() {
        let url = parse_callback_url("http://user:pw@receiver:9000/cb?x=1").unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("content-type", HeaderValue::from_static("application/json"));
        resp.insert("x-custom", HeaderValue::from_static("1"));
        resp.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        resp.insert("content-length", HeaderValue::from_static("5"));
        let r = callback_request(
            &url,
            &resp,
            Bytes::from_static(b"{}"),
            &CallbackResult {
                call_id: "c1",
                function: "fn.ns",
                status: 201,
                duration: Duration::from_millis(1500),
                start_time: "99",
                retry: 0,
                retry_max: 10,
            },
        )
        .unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri().to_string(), "http://user:pw@receiver:9000/cb?x=1");
        let h = r.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-custom"], "1");
        assert!(h.get("transfer-encoding").is_none());
        assert!(h.get("content-length").is_none());
        assert_eq!(h["x-call-id"], "c1");
        assert_eq!(h["x-function-status"], "201");
        assert_eq!(h["x-function-name"], "fn.ns");
        assert_eq!(h["x-duration-seconds"], "1.500000");
        assert_eq!(h["x-start-time"], "99");
        assert_eq!(h["x-retry"], "0");
        assert_eq!(h["x-retry-max"], "10");
        assert_eq!(h["user-agent"], USER_AGENT);
        assert_eq!(r.body().as_ref(), b"{}");
    }

    #[test]
    fn callback_url_prefers_the_header_and_validates() {
        let mut m = msg("f", "", "");
        assert!(callback_url(&m).is_none());
        m.header
            .insert("X-Callback-Url".into(), vec!["http://a:b@host:1/cb".into()]);
        assert_eq!(
            callback_url(&m).unwrap().unwrap().as_str(),
            "http://a:b@host:1/cb"
        );
        m.header
            .insert("X-Callback-Url".into(), vec!["ftp://host/x".into()]);
        assert!(callback_url(&m).unwrap().is_err());
        assert!(parse_callback_url("/relative").is_err());
        assert_eq!(
            loggable_url(&parse_callback_url("https://u:p@h:8443/p/q?token=s").unwrap()),
            "https://h:8443/p/q"
        );
    }

    proptest! {
        /// Whatever the (decoded) path, the URL parses and keeps the function prefix.
        #[test]
        fn any_path_gives_a_valid_url(path in "/[ -~\u{80}-\u{10ffff}]{0,40}", query in "[a-z0-9=&%]{0,20}") {
            let m = msg("fn.ns", &path, &query);
            match function_url("http://gw:8080", &m) {
                Ok(u) => {
                    let parsed: http::Uri = u.parse().expect("valid URI");
                    prop_assert!(parsed.path().starts_with("/function/fn.ns"));
                    prop_assert_eq!(parsed.query().unwrap_or(""), query.as_str());
                    let decoded = percent_encoding::percent_decode_str(
                        parsed.path().strip_prefix("/function/fn.ns").unwrap()
                    ).decode_utf8().unwrap().to_string();
                    prop_assert_eq!(decoded, path);
                }
                Err(BuildError::Name(InvalidName::Path(_))) => prop_assert!(path.split('/').any(|s| s == "." || s == "..")),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
