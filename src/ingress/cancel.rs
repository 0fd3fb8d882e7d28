//! `DELETE /async-function/{call-id}`: cancel a call ([`crate::status::cancel`]). `202` once
//! no new attempt of it can start; `404` unknown (never stored, older than `status_ttl`, or a
//! gateway-published call not yet delivered); `409` already final; `501` when call status is
//! not kept (`status_ttl=0`); `503` when NATS cannot answer.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use percent_encoding::percent_decode_str;

use super::Ingress;
use super::calls::{error, json};
use crate::status::cancel::Outcome;
use crate::status::unix_ms;

/// Cancel the call named by `raw_path` (`/async-function/<call-id>`, percent-encoded).
pub(super) async fn cancel_call(state: &Arc<Ingress>, raw_path: &str) -> Response {
    let Some(call_id) = call_id_of(raw_path) else {
        return json(
            StatusCode::BAD_REQUEST,
            &error("expected DELETE /async-function/<call-id>"),
        );
    };
    let Some(calls) = &state.calls else {
        return json(
            StatusCode::NOT_IMPLEMENTED,
            &error("calls cannot be cancelled here: call status is not kept (status_ttl=0)"),
        );
    };
    let at = unix_ms(state.clock.now());
    for queue in state.queues() {
        let outcome = match calls.cancel(&queue, &call_id, at).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot cancel a call");
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &error("cannot cancel the call: NATS did not answer; try again"),
                );
            }
        };
        let answer =
            |state: &str| serde_json::json!({ "call_id": call_id, "queue": queue, "state": state });
        match outcome {
            Outcome::Unknown => continue,
            Outcome::Cancelled => {
                tracing::info!(callId = %call_id, queue = %queue, "Call cancelled");
                return json(StatusCode::ACCEPTED, &answer("cancelled"));
            }
            Outcome::Final(s) => {
                let mut body = answer(s.as_str());
                body["error"] = format!("the call has already ended ({})", s.as_str()).into();
                return json(StatusCode::CONFLICT, &body);
            }
        }
    }
    json(
        StatusCode::NOT_FOUND,
        &error("unknown call (never stored, older than status_ttl, or not yet delivered)"),
    )
}

/// The call id of `/async-function/<call-id>`; `None` when it is empty, has a `/`, or is not
/// UTF-8.
fn call_id_of(raw_path: &str) -> Option<String> {
    let raw = raw_path.strip_prefix("/async-function/")?;
    let id = percent_decode_str(raw).decode_utf8().ok()?;
    (!id.is_empty() && !id.contains('/')).then(|| id.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_come_from_the_path() {
        assert_eq!(
            call_id_of("/async-function/abc-1").as_deref(),
            Some("abc-1")
        );
        assert_eq!(call_id_of("/async-function/a%20b").as_deref(), Some("a b"));
        assert_eq!(call_id_of("/async-function/"), None);
        assert_eq!(call_id_of("/async-function/a/b"), None);
        assert_eq!(call_id_of("/async-function"), None);
        assert_eq!(call_id_of("/async-function/%FF"), None);
    }
}
