//! The async ingress (SPEC §7): `POST /async-function/{name}[.{ns}][/{path}]` stores an
//! invocation in JetStream and answers `202 Accepted` only once the broker has stored it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use percent_encoding::percent_decode_str;

use crate::broker::{Broker, BrokerError, Outgoing, StreamSpec};
use crate::clock::Clock;
use crate::config::Config;
use crate::telemetry::metrics::{Metrics, QueueLabels};
use crate::wire::{self, GoUrl, QueueRequest};
use crate::wire::{
    canonical_header_key, parse_callback_url, validate_function_name, validate_path,
};

/// Longest `X-Call-Id` accepted from a caller.
pub const MAX_CALL_ID_LEN: usize = 128;

/// Shared state of the ingress routes.
pub struct Ingress {
    pub config: Arc<Config>,
    pub broker: Arc<dyn Broker>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

impl Ingress {
    /// Every queue the ingress may publish to: `queue_name` and the `function_queues` targets.
    pub fn queues(&self) -> Vec<String> {
        let mut qs = vec![self.config.queue_name.clone()];
        for q in self.config.function_queues.values() {
            if !qs.contains(q) {
                qs.push(q.clone());
            }
        }
        qs
    }

    fn stream_spec(&self, queue: &str) -> StreamSpec {
        StreamSpec::work_queue(
            queue,
            self.config.nats_storage,
            self.config.nats_stream_replicas,
        )
    }

    /// Create the streams of every queue the ingress routes to (idempotent).
    pub async fn ensure_streams(&self) -> Result<(), BrokerError> {
        for q in self.queues() {
            self.broker.ensure_stream(&self.stream_spec(&q)).await?;
        }
        Ok(())
    }
}

/// The ingress routes.
pub fn router(state: Arc<Ingress>) -> Router {
    Router::new()
        .route("/async-function/{*rest}", any(async_function))
        .route("/healthz", get(|| async { "OK\n" }))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
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

async fn async_function(State(state): State<Arc<Ingress>>, req: Request) -> Response {
    if req.method() != axum::http::Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(axum::http::header::ALLOW, "POST")],
            "async invocations use POST\n",
        )
            .into_response();
    }
    let cfg = &state.config;
    let (parts, body) = req.into_parts();
    let (function, path) = match split_target(parts.uri.path()) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = validate_function_name(&function) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Err(e) = validate_path(&path) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }

    // Body, bounded: refuse early on a declared length, and while reading otherwise.
    let limit = cfg.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: the limit is {limit} bytes (max_body_bytes)"),
        )
    };
    if let Some(len) = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return too_large();
    }
    let body = match axum::body::to_bytes(Body::new(body), limit).await {
        Ok(b) => b,
        Err(e) => {
            // to_bytes reports the limit through a LengthLimitError source.
            let mut src: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                src = s.source();
            }
            return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"));
        }
    };

    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let submission = Submission {
        function,
        path,
        query: parts.uri.query().unwrap_or("").to_string(),
        header: go_headers(&parts.headers),
        host,
        body,
    };
    let prepared = match prepare(cfg, state.clock.as_ref(), submission) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match submit(&state, &prepared).await {
        Ok(()) => {
            let mut resp = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&prepared.call_id) {
                resp.headers_mut().insert("x-call-id", v);
            }
            if let Ok(v) = HeaderValue::from_str(&prepared.start_time) {
                resp.headers_mut().insert("x-start-time", v);
            }
            resp
        }
        Err(BrokerError::TooLarge(why)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("message too large for the queue: {why}"),
        ),
        Err(e) => {
            tracing::warn!(callId = %prepared.call_id, function = %prepared.function, error = %e, "Cannot queue request");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot queue the request, try again later: {e}"),
            )
        }
    }
}

/// An invocation as received (by the HTTP ingress or the `publish` command).
#[derive(Debug, Clone)]
pub struct Submission {
    /// `name` or `name.namespace`, already validated.
    pub function: String,
    /// Decoded sub-path (`/a/b`), empty for the function root.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Headers with canonical keys (`X-Call-Id`).
    pub header: BTreeMap<String, Vec<String>>,
    pub host: String,
    pub body: bytes::Bytes,
}

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub outgoing: Outgoing,
    pub call_id: String,
    pub start_time: String,
    pub queue: String,
    pub function: String,
}

/// Turn a submission into the OpenFaaS message and its subject: assign `X-Call-Id` (unless the
/// caller gave a valid one), add `X-Start-Time`, check `X-Callback-Url`, route to a queue.
/// `Err` is a one-line reason for a 400.
pub fn prepare(cfg: &Config, clock: &dyn Clock, sub: Submission) -> Result<Prepared, String> {
    let Submission {
        function,
        path,
        query,
        mut header,
        host,
        body,
    } = sub;
    let call_id = match header.get("X-Call-Id").and_then(|v| v.first()) {
        Some(id) if !id.is_empty() => {
            if id.len() > MAX_CALL_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "invalid X-Call-Id: at most {MAX_CALL_ID_LEN} printable ASCII characters"
                ));
            }
            id.clone()
        }
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            header.insert("X-Call-Id".into(), vec![id.clone()]);
            id
        }
    };
    let start_time = clock.unix_nanos().to_string();
    header
        .entry("X-Start-Time".into())
        .or_default()
        .push(start_time.clone());

    let callback_url = match header.get("X-Callback-Url").and_then(|v| v.first()) {
        Some(raw) => Some(GoUrl::from_url(&parse_callback_url(raw)?)),
        None => None,
    };

    let routed = cfg.function_queues.contains_key(&function)
        || cfg
            .function_queues
            .contains_key(wire::split_function(&function, "").0);
    let queue = cfg.queue_for_function(&function).to_string();
    let (name, namespace) = wire::split_function(&function, &cfg.default_function_name);
    let subject = format!("{queue}.{name}.{namespace}");
    let msg = QueueRequest {
        header,
        host,
        body,
        method: "POST".into(),
        path,
        query_string: query,
        function: function.clone(),
        queue_name: if routed { queue.clone() } else { String::new() },
        callback_url,
        ..Default::default()
    };
    Ok(Prepared {
        outgoing: Outgoing {
            subject,
            msg_id: Some(call_id.clone()),
            headers: Vec::new(),
            payload: bytes::Bytes::from(wire::encode(&msg)),
        },
        call_id,
        start_time,
        queue,
        function,
    })
}

/// Publish a prepared message and wait for the broker to store it. A missing stream (deleted to
/// reset the queue, or never created) is created and the publish tried once more.
pub async fn submit(state: &Ingress, p: &Prepared) -> Result<(), BrokerError> {
    let mut result = state.broker.publish(p.outgoing.clone()).await;
    if let Err(BrokerError::NoStream { .. }) = &result {
        state
            .broker
            .ensure_stream(&state.stream_spec(&p.queue))
            .await?;
        result = state.broker.publish(p.outgoing.clone()).await;
    }
    result?;
    state
        .metrics
        .messages_submitted
        .get_or_create(&QueueLabels {
            queue_name: p.queue.clone(),
        })
        .inc();
    tracing::debug!(callId = %p.call_id, function = %p.function, queue = %p.queue, "Queued");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys_like_go() {
        assert_eq!(canonical_header_key("x-call-id"), "X-Call-Id");
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_header_key("X-CALLBACK-URL"), "X-Callback-Url");
        assert_eq!(canonical_header_key("bad key"), "bad key");
    }

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
