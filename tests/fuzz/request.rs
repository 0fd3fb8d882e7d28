//! The function request built from a message (`invoke::request::function_request`): it goes to
//! `{gateway}/function/{function}{path}?{query}` exactly when the name and path are valid, the
//! path and query survive, hop-by-hop headers never pass, and refusals are bounded.

use std::collections::BTreeMap;

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queue_worker::invoke::request::{BuildError, function_request, is_not_forwarded};
use queue_worker::wire::{QueueRequest, validate_function_name, validate_path};

use crate::names::{name_like, path_like};
use crate::{bounded, config};

/// Gateway URLs as the configuration leaves them (absolute, no trailing `/`).
const GATEWAYS: &[&str] = &[
    "http://gateway.openfaas:8080",
    "http://127.0.0.1:8080",
    "https://gw.example.com/prefix",
    "http://[::1]:31112",
];

/// Header names the worker treats specially, in several cases.
const HEADER_NAMES: &[&str] = &[
    "Connection",
    "keep-alive",
    "TE",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Connection",
    "Trailer",
    "Host",
    "content-length",
    "X-Call-Id",
    "x-call-id",
    "User-Agent",
    "X-Start-Time",
    "Content-Type",
    "X-Multi",
    "Bad Name",
    "",
];

/// Headers of one hop (RFC 9110 §7.6.1) and those the HTTP client computes: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

#[derive(Debug, Clone)]
pub struct Case {
    gateway: &'static str,
    req: QueueRequest,
    call_id: String,
    start_time: String,
}

fn header_map() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
    let name = prop_oneof![
        3 => prop::sample::select(HEADER_NAMES).prop_map(str::to_string),
        1 => "[!#$%&'*+.^_`|~0-9a-zA-Z-]{1,16}",
        1 => any::<String>(),
    ];
    let value = prop_oneof![3 => "[ -~]{0,20}", 1 => any::<String>()];
    btree_map(name, vec(value, 0..3), 0..6)
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&["", "POST", "GET", "PUT", "DELETE", "PATCH", "post"][..])
            .prop_map(str::to_string),
        1 => "[A-Z]{1,20}",
        1 => any::<String>(),
        1 => (0..5_000usize).prop_map(|n| "G E T ".repeat(n)),
    ]
}

/// Queries: RFC 3986 query characters, with `?`, `#`, spaces and anything.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9=&%+._~!$'()*,;:@/?-]{0,30}",
        1 => "[a-z=&# é\"<>{}|^`\\\\]{0,12}",
        1 => any::<String>(),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(GATEWAYS),
        (name_like(), path_like(), query(), method(), header_map()),
        prop_oneof!["[0-9a-f-]{1,36}", any::<String>()],
        prop_oneof!["[0-9]{1,19}", any::<String>()],
    )
        .prop_map(
            |(gateway, (function, path, query_string, method, header), call_id, start_time)| {
                let req = QueueRequest {
                    function,
                    path,
                    query_string,
                    method,
                    header,
                    body: Bytes::from_static(b"body"),
                    ..QueueRequest::default()
                };
                Case {
                    gateway,
                    req,
                    call_id,
                    start_time,
                }
            },
        )
}

/// Characters RFC 3986 allows in a query (`%` too: a query is passed on as it is).
fn plain_query(query: &str) -> bool {
    query
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// The URL names the function under the gateway, with the path (decoded) and query.
fn check_url(case: &Case, built: &http::Request<Bytes>) -> Result<(), TestCaseError> {
    let req = &case.req;
    let uri = built.uri().to_string();
    let prefix = format!("{}/function/{}", case.gateway, req.function);
    prop_assert!(uri.starts_with(&prefix), "{uri:?} is not under {prefix:?}");
    let prefix_path = prefix.splitn(4, '/').nth(3).map(|p| format!("/{p}"));
    let rest = built
        .uri()
        .path()
        .strip_prefix(prefix_path.as_deref().unwrap_or(""));
    let decoded = percent_decode_str(rest.unwrap_or("!")).decode_utf8().ok();
    let expected = match req.path.as_str() {
        "" => String::new(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    prop_assert_eq!(
        decoded.as_deref(),
        Some(expected.as_str()),
        "path of {}",
        uri
    );
    let query = req.query_string.trim_start_matches('?');
    let sent = query.split('#').next().unwrap_or("");
    prop_assert_eq!(built.uri().query().unwrap_or(""), sent, "query of {}", uri);
    Ok(())
}

/// The method, and headers: hop-by-hop ones never pass, ours are set, others are kept.
fn check_headers(case: &Case, built: &http::Request<Bytes>) -> Result<(), TestCaseError> {
    let req = &case.req;
    let want = if req.method.is_empty() {
        "POST"
    } else {
        &req.method
    };
    prop_assert_eq!(built.method().as_str(), want);
    let headers = built.headers();
    for name in HOP_BY_HOP {
        prop_assert!(headers.get(*name).is_none(), "{name} forwarded");
    }
    let call_id = headers.get("x-call-id").map(|v| v.as_bytes());
    let valid = http::HeaderValue::from_str(&case.call_id).is_ok();
    prop_assert_eq!(call_id, valid.then_some(case.call_id.as_bytes()));
    for (name, values) in &req.header {
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let ours = ["x-call-id", "x-start-time", "user-agent"].contains(&name.as_str());
        if ours || HOP_BY_HOP.contains(&name.as_str()) || is_not_forwarded(name.as_str()) {
            continue;
        }
        for value in values
            .iter()
            .filter(|v| http::HeaderValue::from_str(v).is_ok())
        {
            let sent = headers
                .get_all(&name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes());
            prop_assert!(sent, "{name}: {value:?} not forwarded");
        }
    }
    Ok(())
}

/// Why a request could not be built, and that it should not have been.
fn check_refusal(case: &Case, error: &BuildError) -> Result<(), TestCaseError> {
    let req = &case.req;
    prop_assert!(
        bounded(&error.to_string()),
        "{} characters",
        error.to_string().chars().count()
    );
    let valid_name = validate_function_name(&req.function).is_ok();
    let valid_path = validate_path(&req.path).is_ok();
    match error {
        BuildError::Name(_) => prop_assert!(!valid_name || !valid_path),
        BuildError::Method(_) => {
            prop_assert!(http::Method::from_bytes(req.method.as_bytes()).is_err())
        }
        BuildError::Url(why) => {
            let short = req.path.len() * 9 + req.query_string.len() < 60_000;
            prop_assert!(
                !(short && plain_query(&req.query_string)),
                "a valid name, path and query, refused: {why}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config("proptest-regressions/fuzz/request.txt"))]

    #[test]
    fn function_requests_go_where_the_message_says(case in case()) {
        match function_request(case.gateway, &case.req, &case.call_id, &case.start_time) {
            Ok(built) => {
                prop_assert!(validate_function_name(&case.req.function).is_ok());
                prop_assert!(validate_path(&case.req.path).is_ok());
                check_url(&case, &built)?;
                check_headers(&case, &built)?;
            }
            Err(e) => check_refusal(&case, &e)?,
        }
    }
}
