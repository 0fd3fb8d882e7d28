//! `GET /system/calls/{call-id}/result[?wait=DURATION]`: the call's kept final response as the
//! function gave it (its status, headers and body, plus `X-Call-Id` and `X-Call-State`).
//! With `wait`, the request waits (at most [`MAX_WAIT`]) until the call has ended (or, for a
//! call not known yet, until it is). `404` when the call is unknown, or ended without a kept
//! result (the JSON body says its state); `408`
//! when it has not ended within the wait (without `wait`: not yet ended); `400` for a bad
//! `wait`; `503` when NATS cannot answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::Ingress;
use super::calls::{error, json};
use crate::config::parse_go_duration;
use crate::status::{CallStatus, result};

/// The longest `wait` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Time between two looks at a call's status while waiting.
const POLL: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    wait: Option<String>,
}

pub(super) async fn call_result(
    State(state): State<Arc<Ingress>>,
    Path(call_id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Response {
    if state.calls.is_none() {
        let why = "call status (and so results) is not kept here (status_ttl=0)";
        return json(StatusCode::NOT_FOUND, &error(why));
    }
    let wait = match wait_of(query.wait.as_deref()) {
        Ok(w) => w,
        Err(why) => return json(StatusCode::BAD_REQUEST, &error(&why)),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = match find(&state, &call_id).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        let out_of_time = tokio::time::Instant::now() + POLL > deadline;
        let Some((queue, status)) = found else {
            // A call just accepted is known about 50 ms later: waiting covers that.
            if out_of_time {
                let why = "unknown call (never stored, or older than status_ttl)";
                return json(StatusCode::NOT_FOUND, &error(why));
            }
            tokio::time::sleep(POLL).await;
            continue;
        };
        if status.state.is_terminal() {
            return kept(&state, &queue, &call_id, &status).await;
        }
        if out_of_time {
            let body = serde_json::json!({
                "call_id": call_id,
                "state": status.state.as_str(),
                "error": "the call has not ended yet",
            });
            return json(StatusCode::REQUEST_TIMEOUT, &body);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The `wait` asked for: zero when absent.
fn wait_of(raw: Option<&str>) -> Result<Duration, String> {
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    let wait = parse_go_duration(raw).map_err(|e| format!("wait: {e}"))?;
    if wait > MAX_WAIT {
        return Err(format!("wait: at most {}s", MAX_WAIT.as_secs()));
    }
    Ok(wait)
}

/// The call's queue and status; `Err` is the answer when NATS cannot tell.
async fn find(state: &Ingress, call_id: &str) -> Result<Option<(String, CallStatus)>, Response> {
    let Some(calls) = &state.calls else {
        return Ok(None);
    };
    for queue in state.queues() {
        match calls.get(&queue, call_id).await {
            Ok(Some(status)) => return Ok(Some((queue, status))),
            Ok(None) => {}
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Ok(None)
}

/// The kept result of an ended call, or `404` saying it has none.
async fn kept(state: &Ingress, queue: &str, call_id: &str, status: &CallStatus) -> Response {
    let stores = (state.store.as_ref(), state.objects.as_ref());
    let kept = match result::read(stores, queue, call_id).await {
        Ok(k) => k,
        Err(e) => return unavailable(&e),
    };
    let Some(kept) = kept else {
        let body = serde_json::json!({
            "call_id": call_id,
            "state": status.state.as_str(),
            "error": "no result kept for this call (store_results is off and the request did \
                      not say X-Store-Result: true, or it ended without an answer)",
        });
        return json(StatusCode::NOT_FOUND, &body);
    };
    let code = StatusCode::from_u16(kept.meta.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::new(Body::from(kept.body));
    *resp.status_mut() = code;
    let headers = resp.headers_mut();
    for (name, values) in &kept.meta.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(name.clone(), v);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(call_id) {
        headers.insert("x-call-id", v);
    }
    headers.insert(
        "x-call-state",
        HeaderValue::from_static(status.state.as_str()),
    );
    if kept.meta.truncated {
        headers.insert("x-result-truncated", HeaderValue::from_static("true"));
    }
    resp
}

fn unavailable(e: &crate::broker::BrokerError) -> Response {
    tracing::warn!(error = %e, "Cannot read a call's result");
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &error("cannot read the call from NATS; try again"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_bounded() {
        assert_eq!(wait_of(None), Ok(Duration::ZERO));
        assert_eq!(wait_of(Some("30s")), Ok(Duration::from_secs(30)));
        assert!(wait_of(Some("61s")).unwrap_err().contains("at most 60s"));
        assert!(wait_of(Some("soon")).is_err());
    }
}
