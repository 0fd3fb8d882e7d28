//! Built-in demo functions and a callback inbox for `queue-worker dev`, served on the ingress
//! address so that the default `gateway_url` of `dev` points at them:
//!
//! - `POST /function/echo` answers with the request body (and its `Content-Type`);
//! - `POST /function/sleep?ms=N` (or a body holding N) waits N milliseconds (at most 10 min);
//! - `POST /function/flaky?fail=N` answers `429` N times per call id (default 2), then `200`;
//!   the worker's exponential back-off spaces the attempts, unless `&retry_after=S` makes the
//!   `429` carry `Retry-After: S`, which the worker follows instead;
//! - `POST /callback` records a callback and logs it; `GET /callbacks` lists the last ones,
//!   each with its headers and body (cut at [`CALLBACK_BODY`] bytes).
//!
//! Everything is bounded: call-id counters and the callback inbox keep the newest entries only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

/// Longest `sleep`.
pub const MAX_SLEEP: Duration = Duration::from_secs(600);
/// Call ids remembered by `flaky`.
const FLAKY_MEMORY: usize = 10_000;
/// Callbacks kept for `GET /callbacks`.
const CALLBACK_MEMORY: usize = 100;
/// Bytes of a callback's body kept (as text).
pub const CALLBACK_BODY: usize = 4096;
/// Headers of a callback kept, and bytes of each value.
const CALLBACK_HEADERS: usize = 64;
const CALLBACK_HEADER_BYTES: usize = 1024;

#[derive(Default)]
struct Demo {
    flaky: Mutex<(HashMap<String, u32>, VecDeque<String>)>,
    callbacks: Mutex<VecDeque<serde_json::Value>>,
}

/// The demo routes (merge them into the ingress router).
pub fn router() -> Router {
    Router::new()
        .route("/function/echo", post(echo))
        .route("/function/sleep", post(sleep))
        .route("/function/flaky", post(flaky))
        .route("/callback", post(callback))
        .route("/callbacks", get(callbacks))
        .with_state(Arc::new(Demo::default()))
}

async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| header::HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

#[derive(Deserialize)]
struct SleepQuery {
    ms: Option<u64>,
}

async fn sleep(Query(q): Query<SleepQuery>, body: Bytes) -> Response {
    let from_body = std::str::from_utf8(&body)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let Some(ms) = q.ms.or(from_body) else {
        return (
            StatusCode::BAD_REQUEST,
            "give the time to sleep as ?ms=N or as the body\n",
        )
            .into_response();
    };
    let d = Duration::from_millis(ms).min(MAX_SLEEP);
    tokio::time::sleep(d).await;
    format!("slept {} ms\n", d.as_millis()).into_response()
}

#[derive(Deserialize)]
struct FlakyQuery {
    fail: Option<u32>,
    /// Seconds for a `Retry-After` on the `429`s (none by default).
    retry_after: Option<u32>,
}

async fn flaky(
    State(demo): State<Arc<Demo>>,
    Query(q): Query<FlakyQuery>,
    headers: HeaderMap,
) -> Response {
    let fail = q.fail.unwrap_or(2);
    let call_id = headers
        .get("x-call-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let seen = {
        let mut guard = demo.flaky.lock().unwrap_or_else(|e| e.into_inner());
        let (counts, order) = &mut *guard;
        if !counts.contains_key(&call_id) {
            order.push_back(call_id.clone());
            if order.len() > FLAKY_MEMORY
                && let Some(old) = order.pop_front()
            {
                counts.remove(&old);
            }
        }
        let n = counts.entry(call_id).or_insert(0);
        *n += 1;
        *n
    };
    if seen <= fail {
        let mut busy = (
            StatusCode::TOO_MANY_REQUESTS,
            format!("busy (attempt {seen} of {})\n", fail + 1),
        )
            .into_response();
        if let Some(secs) = q.retry_after {
            busy.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        busy
    } else {
        format!("ok after {} attempts\n", seen).into_response()
    }
}

async fn callback(State(demo): State<Arc<Demo>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
    let entry = serde_json::json!({
        "callId": text("x-call-id").unwrap_or_default(),
        "function": text("x-function-name").unwrap_or_default(),
        "status": number("x-function-status"),
        "retry": number("x-retry"),
        "durationSeconds": text("x-duration-seconds").and_then(|v| v.parse::<f64>().ok()),
        "bytes": body.len(),
        "headers": kept_headers(&headers),
        "body": String::from_utf8_lossy(&body[..body.len().min(CALLBACK_BODY)]),
        "bodyCut": body.len() > CALLBACK_BODY,
    });
    tracing::info!(
        callId = text("x-call-id").unwrap_or_default(),
        function = text("x-function-name").unwrap_or_default(),
        status = number("x-function-status").unwrap_or_default(),
        retry = number("x-retry").unwrap_or_default(),
        "Callback received"
    );
    let mut list = demo.callbacks.lock().unwrap_or_else(|e| e.into_inner());
    list.push_back(entry);
    while list.len() > CALLBACK_MEMORY {
        list.pop_front();
    }
    StatusCode::OK
}

/// A callback's headers for `GET /callbacks`: name → values, bounded in count and length.
fn kept_headers(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut kept = serde_json::Map::new();
    for name in headers.keys().take(CALLBACK_HEADERS) {
        let values = headers.get_all(name).iter().map(|v| {
            let v = String::from_utf8_lossy(v.as_bytes());
            serde_json::Value::from(v.chars().take(CALLBACK_HEADER_BYTES).collect::<String>())
        });
        kept.insert(name.to_string(), values.collect());
    }
    kept
}

async fn callbacks(State(demo): State<Arc<Demo>>) -> Response {
    let list = demo.callbacks.lock().unwrap_or_else(|e| e.into_inner());
    let v: Vec<_> = list.iter().cloned().collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(v).to_string() + "\n",
    )
        .into_response()
}
