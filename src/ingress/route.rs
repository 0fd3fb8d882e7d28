//! The HTTP route `POST /async-function/{name}[.{ns}][/{path}]`: read and check the request,
//! prepare the message, store it, answer `202` only once the broker has it. `DELETE
//! /async-function/{call-id}` cancels a call (`cancel.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use percent_encoding::percent_decode_str;

use super::budget::{BodyBudget, Hold};
use super::{
    Ingress, Prepared, Stored, Submission, check_callback_addresses, prepare, submit_once,
};
use crate::broker::BrokerError;
use crate::config::Config;
use crate::wire::{canonical_header_key, validate_function_name, validate_path};

pub(super) async fn async_function(
    State(state): State<Arc<Ingress>>,
    Extension(budget): Extension<BodyBudget>,
    req: Request,
) -> Response {
    if req.method() == axum::http::Method::DELETE {
        return super::cancel::cancel_call(&state, req.uri().path()).await;
    }
    if req.method() != axum::http::Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(axum::http::header::ALLOW, "POST, DELETE")],
            "async invocations use POST; DELETE /async-function/<call-id> cancels one\n",
        )
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let (function, path) = match read_target(&parts) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (body, _hold) = match receive_body(&state.config, &budget, &parts, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut header = go_headers(&parts.headers);
    let publish = super::traced::start(&state.tracer, state.clock.as_ref(), &mut header);
    let submission = Submission {
        function,
        path,
        query: parts.uri.query().unwrap_or("").to_string(),
        header,
        host,
        body,
    };
    let prepared = match prepare(&state.config, state.clock.as_ref(), submission) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = check_callback_addresses(&state.config, &prepared).await {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let stored = submit_once(&state, &prepared).await;
    if let Some(publish) = publish {
        publish.end(&state.tracer, state.clock.now(), &prepared, &stored);
    }
    match stored {
        Ok(stored) => accepted(&prepared, stored),
        Err(e) => not_stored(&prepared, e),
    }
}

/// The function and sub-path the request names, checked.
fn read_target(parts: &Parts) -> Result<(String, String), String> {
    let (function, path) = split_target(parts.uri.path())?;
    validate_function_name(&function).map_err(|e| e.to_string())?;
    validate_path(&path).map_err(|e| e.to_string())?;
    Ok((function, path))
}

/// The body and its hold on the ingress's memory: `413` past `max_body_bytes` (on the declared
/// length, before reading, or while reading), `503` when the bodies held already fill
/// `ingress_max_buffered_bytes`, `408` when it does not arrive within `ingress_body_timeout`.
async fn receive_body(
    config: &Config,
    budget: &BodyBudget,
    parts: &Parts,
    body: Body,
) -> Result<(Bytes, Hold), Response> {
    let limit = config.max_body_bytes;
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let room = declared.map_or(limit, |len| len as usize);
    let Some(hold) = budget.hold(room) else {
        return Err(busy());
    };
    let deadline = config.ingress_body_timeout;
    match tokio::time::timeout(deadline, read_body(body, limit)).await {
        Ok(read) => read.map(|bytes| (bytes, hold)),
        Err(_) => Err(body_too_slow(deadline)),
    }
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large: the limit is {limit} bytes (max_body_bytes)"),
    )
}

/// `503` with `Retry-After: 1`: the ingress holds as many bodies as it may.
fn busy() -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the ingress is receiving as many request bodies as it may hold \
         (ingress_max_buffered_bytes); try again shortly",
    );
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    );
    resp
}

/// `408`, and the connection is closed (the rest of the body may still come).
fn body_too_slow(deadline: std::time::Duration) -> Response {
    let mut resp = error(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "request body not received within {} (ingress_body_timeout)",
            crate::config::format_go_duration(deadline)
        ),
    );
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    resp
}

/// The body, at most `limit` bytes (`413` past it).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes reports the limit through a LengthLimitError source.
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large(limit);
            }
            src = s.source();
        }
        error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
    })
}

/// `202` with the call's id and start time, and `X-Duplicate: true` when the call id or the
/// `Idempotency-Key` was already stored (this request's content was not; for a key, the id is
/// the first call's). `409` with `Retry-After: 1` when the key's first call is still being
/// stored.
fn accepted(prepared: &Prepared, stored: Stored) -> Response {
    let Some(call_id) = stored.call_id(prepared) else {
        let mut resp = error(
            StatusCode::CONFLICT,
            "a call with this Idempotency-Key is being queued right now; ask again shortly \
             for its X-Call-Id",
        );
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return resp;
    };
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(call_id) {
        resp.headers_mut().insert("x-call-id", v);
    }
    if (stored == Stored::New || stored == Stored::Duplicate)
        && let Ok(v) = HeaderValue::from_str(&prepared.start_time)
    {
        resp.headers_mut().insert("x-start-time", v);
    }
    if stored != Stored::New {
        resp.headers_mut()
            .insert("x-duplicate", HeaderValue::from_static("true"));
    }
    resp
}

/// The broker did not store the message: `413` when it is too large, else `503`.
fn not_stored(prepared: &Prepared, e: BrokerError) -> Response {
    if let BrokerError::TooLarge(why) = e {
        let msg = format!("message too large for the queue: {why}");
        return error(StatusCode::PAYLOAD_TOO_LARGE, msg);
    }
    tracing::warn!(callId = %prepared.call_id, function = %prepared.function, error = %e, "Cannot queue request");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot queue the request, try again later: {e}"),
    )
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (status, body).into_response()
}

/// Inbound headers as Go's `http.Header` (canonical keys, all values in order), without `Host`
/// (Go keeps it in `r.Host`).
fn go_headers(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name == axum::http::header::HOST {
            continue;
        }
        // Non-UTF-8 header values cannot be carried in the JSON message; drop them.
        if let Ok(v) = value.to_str() {
            out.entry(canonical_header_key(name.as_str()))
                .or_default()
                .push(v.to_string());
        }
    }
    out
}

/// Split `/async-function/<rest>` into the function (decoded) and the sub-path (decoded, as
/// Go's `r.URL.Path`).
fn split_target(raw_path: &str) -> Result<(String, String), String> {
    let rest = raw_path
        .strip_prefix("/async-function/")
        .ok_or_else(|| "expected /async-function/<name>".to_string())?;
    let (name_raw, sub_raw) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let name = percent_decode_str(name_raw)
        .decode_utf8()
        .map_err(|_| "function name is not UTF-8".to_string())?
        .into_owned();
    let sub = percent_decode_str(sub_raw)
        .decode_utf8()
        .map_err(|_| "path is not UTF-8".to_string())?
        .into_owned();
    // `/async-function/fn/` is the function root, as the gateway's route for it.
    let sub = if sub == "/" { String::new() } else { sub };
    Ok((name, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_function_and_decoded_path() {
        assert_eq!(
            split_target("/async-function/figlet").unwrap(),
            ("figlet".into(), "".into())
        );
        assert_eq!(
            split_target("/async-function/figlet/").unwrap(),
            ("figlet".into(), "".into())
        );
        assert_eq!(
            split_target("/async-function/figlet.ns/a/b%20c").unwrap(),
            ("figlet.ns".into(), "/a/b c".into())
        );
        assert!(split_target("/other").is_err());
    }
}
