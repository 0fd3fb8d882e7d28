//! The ingress route in process (the router over an in-memory broker): any request gets an
//! answer, never a panic; `202` exactly when one message was stored, and that message is the
//! request (function, body, query, call id); a refusal is a short `4xx`.

use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use percent_encoding::percent_decode_str;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queue_worker::broker::memory::{MemoryBroker, MemoryLimits};
use queue_worker::broker::{BrokerError, Outgoing, PubAck, Publish};
use queue_worker::config::Config;
use queue_worker::ingress::{Ingress, router};
use queue_worker::telemetry::metrics::Metrics;
use queue_worker::wire::decode;
use tower::ServiceExt;

use crate::hostile::Raw;
use crate::ingress::{FixedClock, routing_config};
use crate::{bounded, config};

/// The largest body accepted here: small, so that `413` is reached often.
const MAX_BODY: usize = 1024;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

static METRICS: LazyLock<Arc<Metrics>> = LazyLock::new(|| Arc::new(Metrics::new()));

/// The broker, remembering what it stored.
struct Recording {
    broker: MemoryBroker,
    stored: Mutex<Vec<Outgoing>>,
}

#[async_trait]
impl Publish for Recording {
    async fn publish(&self, msg: Outgoing) -> Result<PubAck, BrokerError> {
        let ack = self.broker.publish(msg.clone()).await?;
        self.stored.lock().expect("not poisoned").push(msg);
        Ok(ack)
    }
}

/// A request as generated: kept apart so that a failure prints it readably.
#[derive(Debug, Clone)]
pub struct Case {
    method: String,
    target: String,
    headers: Vec<(String, Raw)>,
    body: Raw,
}

/// Pieces of a request target, all valid in a URI: name characters, dots, escapes of anything
/// (`%2F`, `%00`, `%FF`, a bad `%`), slashes.
const TARGET_PIECES: &[&str] = &[
    "fn", "a", "Z", "0", "-", "_", ".", "..", "/", "//", "%2e", "%2E", "%2F", "%20", "%00", "%FF",
    "%C3%A9", "%", "%G1", "~", "*", "%3E", ";", "=", "@", ":", "!", "$", "'", "(", "é",
];

const PREFIXES: &[&str] = &[
    "/async-function/",
    "/async-function/",
    "/async-function/",
    "/async-function",
    "/async-function//",
    "/ASYNC-FUNCTION/",
    "/",
    "/healthz",
    "/other/",
];

fn target() -> impl Strategy<Value = String> {
    (
        prop::sample::select(PREFIXES),
        vec(prop::sample::select(TARGET_PIECES), 0..12),
        0..300usize,
        proptest::option::of(vec(prop::sample::select(TARGET_PIECES), 0..8)),
    )
        .prop_map(|(prefix, pieces, long, query)| {
            let mut t = format!("{prefix}{}", pieces.concat());
            t.push_str(&"f".repeat(long.saturating_sub(250)));
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q.concat().replace('/', "&"));
            }
            t
        })
}

/// Header values a client can send: any byte but CR, LF, NUL and DEL (not UTF-8 too).
fn header_value() -> impl Strategy<Value = Raw> {
    let byte = prop_oneof![
        8 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ];
    vec(byte, 0..40).prop_map(Raw)
}

fn header() -> impl Strategy<Value = (String, Raw)> {
    let callback = crate::callback::url_like().prop_map(|u| {
        let valid = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
        Raw(u.bytes().filter(valid).collect())
    });
    prop_oneof![
        2 => (Just("x-call-id".to_string()), prop_oneof![header_value(), "[!-~]{1,140}".prop_map(|s| Raw(s.into_bytes()))]),
        2 => (Just("x-callback-url".to_string()), prop_oneof![header_value(), callback]),
        1 => (Just("content-length".to_string()), "[0-9]{1,6}|-1|x".prop_map(|s| Raw(s.into_bytes()))),
        1 => (Just("host".to_string()), header_value()),
        1 => ("[a-z0-9!#$%&'*+.^_`|~-]{1,20}", header_value()),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![6 => Just("POST".to_string()), 1 => "GET|PUT|DELETE|OPTIONS|[A-Z]{1,10}"],
        target(),
        vec(header(), 0..6),
        prop_oneof![4 => vec(any::<u8>(), 0..64), 1 => vec(any::<u8>(), 900..1100)].prop_map(Raw),
    )
        .prop_map(|(method, target, headers, body)| Case {
            method,
            target,
            headers,
            body,
        })
}

fn request(case: &Case) -> Request<Body> {
    let mut req = Request::new(Body::from(case.body.0.clone()));
    *req.method_mut() = Method::from_bytes(case.method.as_bytes()).expect("a valid method");
    *req.uri_mut() = case.target.parse().expect("a valid target");
    for (name, value) in &case.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid name");
        let value = HeaderValue::from_bytes(&value.0).expect("a valid value");
        req.headers_mut().append(name, value);
    }
    req
}

/// Send the request to a fresh ingress; its answer (status, call id header, body) and what the
/// broker stored.
fn answer(case: &Case) -> (StatusCode, Option<String>, Bytes, Vec<Outgoing>) {
    let cfg = Config {
        max_body_bytes: MAX_BODY,
        ..routing_config()
    };
    let broker = MemoryBroker::new(Arc::new(FixedClock), MemoryLimits::default());
    let recording = Arc::new(Recording {
        broker: broker.clone(),
        stored: Mutex::default(),
    });
    let state = Arc::new(Ingress {
        config: Arc::new(cfg),
        publisher: recording.clone(),
        streams: Arc::new(broker.clone()),
        store: Arc::new(broker.clone()),
        objects: Arc::new(broker),
        clock: Arc::new(FixedClock),
        metrics: METRICS.clone(),
        auth: None,
        calls: None,
        operator: None,
        tracer: Default::default(),
    });
    RUNTIME.block_on(async {
        let resp = router(state)
            .oneshot(request(case))
            .await
            .expect("infallible");
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-call-id")
            .map(|v| v.to_str().unwrap_or("?").to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("a body");
        let stored = std::mem::take(&mut *recording.stored.lock().expect("not poisoned"));
        (status, id, body, stored)
    })
}

/// The stored message is the request's.
fn check_stored(
    case: &Case,
    call_id: Option<String>,
    stored: &[Outgoing],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(stored.len(), 1, "202 but {} messages stored", stored.len());
    let msg = decode(&stored[0].payload);
    prop_assert!(
        msg.is_ok(),
        "stored a message that does not decode: {:?}",
        msg
    );
    let msg = msg.unwrap();
    let uri: http::Uri = case.target.parse().expect("a valid target");
    let rest = uri.path().strip_prefix("/async-function/").unwrap_or("");
    let name = rest.split('/').next().unwrap_or("");
    let name = percent_decode_str(name).decode_utf8_lossy();
    prop_assert_eq!(&msg.function, &name);
    prop_assert_eq!(msg.body.as_ref(), case.body.0.as_slice());
    prop_assert_eq!(msg.query_string.as_str(), uri.query().unwrap_or(""));
    prop_assert_eq!(msg.call_id(), call_id.as_deref());
    prop_assert_eq!(stored[0].msg_id.as_deref(), call_id.as_deref());
    Ok(())
}

proptest! {
    #![proptest_config(config("proptest-regressions/fuzz/route.txt"))]

    #[test]
    fn every_request_gets_an_answer_and_202_means_stored(case in case()) {
        let (status, call_id, body, stored) = answer(&case);
        match status.as_u16() {
            202 => check_stored(&case, call_id, &stored)?,
            200 => prop_assert!(case.target.starts_with("/healthz") && stored.is_empty()),
            // A cancel, where no call status is kept.
            501 => prop_assert!(case.method == "DELETE" && stored.is_empty()),
            400 | 404 | 405 | 413 => {
                prop_assert!(stored.is_empty(), "{status} but a message was stored");
                let text = String::from_utf8_lossy(&body);
                prop_assert!(bounded(&text), "{status} with {} characters", text.chars().count());
            }
            _ => prop_assert!(false, "answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }
}
