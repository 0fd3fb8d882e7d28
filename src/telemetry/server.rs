//! `GET /metrics`, `GET /healthz` (process up) and `GET /readyz` (broker connected, stream and
//! consumer present) on `metrics_port`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::{CONTENT_TYPE, Metrics};
use crate::broker::Admin;

/// What `/readyz` looks at.
#[derive(Default)]
pub struct Health {
    /// Set once connected (the metrics server starts before the broker is reachable).
    broker: OnceLock<Arc<dyn Admin>>,
    /// Set by the worker once its stream and consumer exist (and by the ingress-only mode once
    /// its streams exist).
    ready: AtomicBool,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }
    pub fn set_broker(&self, broker: Arc<dyn Admin>) {
        let _ = self.broker.set(broker);
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    /// `Err(reason)` when not ready.
    pub fn check(&self) -> Result<(), &'static str> {
        if !self.broker.get().is_some_and(|b| b.is_connected()) {
            return Err("NATS not connected");
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Err("stream or consumer not ready");
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The metrics and health routes.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "OK\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.metrics.encode())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
