//! The ingress before NATS first answers: the port is served at once, and every request is
//! answered `503` with `Retry-After` (as when NATS is lost later), instead of connections
//! waiting unanswered in the listen backlog. `/healthz` says the process is up.

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http_server::{self, Limits};

/// Seconds a caller is asked to wait before trying again.
const RETRY_AFTER_SECS: &str = "1";
/// Connections answered at once while waiting (each answer is immediate).
const CONNECTIONS: usize = 64;

/// The server's limits while it waits: few connections, the ingress's header deadline.
pub fn limits(config: &crate::config::Config) -> Limits {
    Limits {
        max_connections: CONNECTIONS.min(config.ingress_max_connections),
        header_timeout: config.ingress_header_timeout,
        max_head_bytes: super::body_limit::HEAD_LIMIT,
    }
}

/// What the ingress answers while it waits for NATS.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK\n" }))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(RETRY_AFTER, RETRY_AFTER_SECS)],
                "NATS is not connected yet; try again shortly\n",
            )
                .into_response()
        })
}

/// Run `work` (connecting to NATS) while `listener`, when there is one, answers as
/// [`router`] does; the listener is free again when this returns (requests in progress have
/// had their answer).
pub async fn answer_while<T>(
    listener: Option<&TcpListener>,
    limits: Limits,
    work: impl Future<Output = T>,
) -> T {
    let Some(listener) = listener else {
        return work.await;
    };
    let stop = CancellationToken::new();
    let serving = http_server::serve_on(listener, router(), limits, stop.clone());
    let working = async {
        let done = work.await;
        stop.cancel();
        done
    };
    let (done, ()) = tokio::join!(working, serving);
    done
}
