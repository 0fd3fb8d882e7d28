//! `GET /system/calls/{call-id}`: the call's status as JSON (`200`), `404` when unknown (never
//! stored, expired after `status_ttl`, or status not kept), `503` when NATS cannot answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Ingress;
use crate::status::CallStatus;

/// The answer's body: the status with the call's id and queue.
#[derive(Serialize)]
struct Answer<'a> {
    call_id: &'a str,
    queue: &'a str,
    #[serde(flatten)]
    status: &'a CallStatus,
}

pub(super) async fn call_status(
    State(state): State<Arc<Ingress>>,
    Path(call_id): Path<String>,
) -> Response {
    let Some(calls) = &state.calls else {
        return json(
            StatusCode::NOT_FOUND,
            &error("call status is not kept here"),
        );
    };
    for queue in state.queues() {
        match calls.get(&queue, &call_id).await {
            Ok(Some(status)) => {
                let answer = Answer {
                    call_id: &call_id,
                    queue: &queue,
                    status: &status,
                };
                return json(StatusCode::OK, &answer);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read call status");
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &error("cannot read call status from NATS; try again"),
                );
            }
        }
    }
    json(
        StatusCode::NOT_FOUND,
        &error("unknown call (never stored, or older than status_ttl)"),
    )
}

pub(super) fn error(text: &str) -> serde_json::Value {
    serde_json::json!({ "error": text })
}

pub(super) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}
