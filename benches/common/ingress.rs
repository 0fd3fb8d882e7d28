//! The ingress over the embedded broker, driven in-process: each request goes through the
//! router as `POST /async-function/bench-fn` with a 512-byte body (tower's `oneshot`, no
//! socket), is stored and gets its `queued` status, as `queue-worker run` does with the
//! defaults. What it measures is the ingress's own work per request: routing, reading the
//! body, building the message, publishing, recording the status.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use queue_worker::broker::Broker;
use queue_worker::broker::memory::{MemoryBroker, MemoryLimits};
use queue_worker::clock::{Clock, SystemClock};
use queue_worker::ingress::{Ingress, router};
use queue_worker::status::Calls;
use queue_worker::telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::BODY_BYTES;

/// The ingress ready to take `n` requests.
pub struct IngressCase {
    router: axum::Router,
    calls: Arc<Calls>,
    body: Bytes,
    n: usize,
}

impl IngressCase {
    /// A fresh embedded broker with the queue's streams made (must run inside a tokio runtime).
    pub async fn ready(n: usize) -> IngressCase {
        let config = Arc::new(super::config(1));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(
            clock.clone(),
            MemoryLimits {
                max_messages: 10_000_000,
                max_bytes: 8 << 30,
                ..MemoryLimits::default()
            },
        ));
        let calls = Calls::start(broker.clone(), &config, CancellationToken::new());
        let metrics = Arc::new(Metrics::new());
        let ingress = Ingress::over(broker, config, clock, metrics, Some(calls.clone()));
        ingress.ensure_streams().await.expect("streams");
        IngressCase {
            router: router(Arc::new(ingress)),
            calls,
            body: Bytes::from(vec![b'a'; BODY_BYTES]),
            n,
        }
    }

    /// Send every request, one after the other, and wait for their status to be written.
    /// Returns how many were accepted (`202`).
    pub async fn run(self) -> usize {
        let mut accepted = 0;
        for _ in 0..self.n {
            let req = http::Request::post("/async-function/bench-fn")
                .header("content-type", "application/octet-stream")
                .header("user-agent", "curl/8.5.0")
                .header("content-length", BODY_BYTES)
                .body(Body::from(self.body.clone()))
                .expect("a request");
            let res = self.router.clone().oneshot(req).await.expect("an answer");
            if res.status() == http::StatusCode::ACCEPTED {
                accepted += 1;
            }
        }
        self.calls.flush(Duration::from_secs(600)).await;
        accepted
    }
}
