//! queue-worker: a scale-out queue for invoking HTTP functions asynchronously on NATS
//! JetStream, compatible with the OpenFaaS JetStream queue-worker.
//!
//! The worker's decisions live in plain functions; I/O goes through four ports:
//! [`broker::Broker`], [`invoke::Invoker`], [`clock::Clock`] (and, with retries, an RNG).
//! [`run`] wires a worker (plus optionally the ingress) to ports and listeners it is given: no
//! globals, so tests and the simulation run several in one process.

pub mod broker;
#[cfg(feature = "buggify")]
pub mod buggify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ingress;
pub mod invoke;
pub mod rng;
pub mod telemetry;
pub mod wire;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::broker::jetstream::{JetStreamBroker, NatsOptions};
use crate::clock::Clock;
use crate::config::Config;
use crate::invoke::Invoker;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::server::Health;

/// The crate version (`User-Agent: queue-worker/<version>`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The I/O the worker runs on.
#[derive(Clone)]
pub struct Ports {
    pub broker: Arc<dyn Broker>,
    pub invoker: Arc<dyn Invoker>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn rng::Rng>,
}

/// Already-bound listeners (bind errors surface before anything starts).
pub struct Listeners {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: TcpListener,
    /// The async ingress, when enabled.
    pub ingress: Option<TcpListener>,
}

/// Connect to NATS, retrying with back-off until it works or `shutdown` fires. Each failure is
/// logged once per attempt; attempts are spaced up to 10 s apart.
pub async fn connect_nats(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Option<JetStreamBroker> {
    let opts = NatsOptions {
        urls: config.nats_urls.clone(),
        credentials_file: config.nats_credentials_file.clone(),
        name: "queue-worker".into(),
        request_timeout: Duration::from_secs(10),
        publish_timeout: Duration::from_secs(5),
    };
    let mut delay = Duration::from_millis(250);
    loop {
        let reconnects = metrics.nats_reconnects.clone();
        let attempt = JetStreamBroker::connect(&opts, move || {
            reconnects.inc();
        });
        let err = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = attempt => match r {
                Ok(b) => {
                    tracing::info!(url = %opts.urls.join(","), "Connected to NATS");
                    return Some(b);
                }
                Err(e) => e,
            },
        };
        tracing::warn!(error = %err, retryIn = ?delay, "NATS not reachable");
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The async ingress to serve next to the worker.
pub struct IngressServer {
    pub listener: TcpListener,
    /// More routes on the same address (`dev` serves its demo functions there).
    pub extra_routes: Option<axum::Router>,
}

/// Run the worker (and the ingress when one is given) until `shutdown`, then drain
/// gracefully (SPEC §12). `health` must be the one served on the metrics listener.
pub async fn run(
    config: Arc<Config>,
    ports: Ports,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    ingress: Option<IngressServer>,
    shutdown: CancellationToken,
) {
    health.set_broker(ports.broker.clone());
    let mut servers = tokio::task::JoinSet::new();
    if let Some(IngressServer {
        listener,
        extra_routes,
    }) = ingress
    {
        let state = Arc::new(ingress::Ingress {
            config: config.clone(),
            broker: ports.broker.clone(),
            clock: ports.clock.clone(),
            metrics: metrics.clone(),
        });
        if let Err(e) = state.ensure_streams().await {
            tracing::warn!(error = %e, "Cannot create the queues' streams yet; the ingress retries on publish");
        }
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = %addr, "Ingress listening");
        }
        // The ingress stops taking requests as soon as shutdown starts.
        let stop = shutdown.clone();
        servers.spawn(async move {
            let mut app = ingress::router(state);
            if let Some(extra) = extra_routes {
                app = app.merge(extra);
            }
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "Ingress server failed");
            }
        });
    }
    let worker = worker::Worker::new(config, ports, metrics, health);
    worker.run(shutdown).await;
    while servers.join_next().await.is_some() {}
}

/// Serve `/metrics`, `/healthz`, `/readyz` until `stop`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let app = telemetry::server::router(metrics, health);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "Metrics server failed");
    }
}
