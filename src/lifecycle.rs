//! How the process lives: it stops on SIGTERM/SIGINT ([`shutdown_on_signals`]), it keeps
//! trying what needs NATS until it works or shutdown comes (`keep_trying.rs`), and [`serve`] is
//! the one way `run` and `dev` start: metrics server first (so `/healthz` answers while NATS is
//! still unreachable), then the broker, then the worker and the ingress ([`run`]); on
//! shutdown, in reverse.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::jetstream::{
    ClientCert, ConnectFailure, JetStreamBroker, NatsAuth, NatsOptions, NatsTls, Refusal,
    urls_for_logs,
};
use crate::broker::{Admin, Broker, KeyValue};
use crate::config::Config;
use crate::invoke::Invoker;
use crate::keep_trying::{Failed, retry_unless_final};
use crate::status::Calls;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::server::Health;
use crate::worker::Ports;
use crate::worker::cancellations::Cancellations;
use crate::{fds, http_server, ingress, telemetry, worker};
use prometheus_client::metrics::counter::Counter;

/// The async ingress to serve next to the worker.
pub struct IngressServer {
    pub listener: TcpListener,
    /// More routes on the same address (`dev` serves its demo functions there).
    pub extra_routes: Option<axum::Router>,
}

/// Where the broker comes from.
pub enum Backend {
    /// NATS, as configured (`nats_url`, …): connected once the metrics server is up.
    Nats,
    /// A broker that is ready (`dev`: the embedded one).
    Ready(Arc<dyn Broker>),
}

/// Already-bound listeners (bind errors surface before anything starts).
pub struct Listeners {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: TcpListener,
    pub ingress: Option<IngressServer>,
}

/// Serve until `shutdown`: the metrics server, the broker, the worker and the ingress.
///
/// # Errors
///
/// A setting the server cannot honour, found once it answers (`max_body_bytes` over what its
/// `max_payload` holds), or NATS refusing the worker for good ([`connect_nats`]): one line for
/// the operator; the process exits 2.
pub async fn serve(
    config: Arc<Config>,
    backend: Backend,
    invoker: Arc<dyn Invoker>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), String> {
    if let Ok(addr) = listeners.metrics.local_addr() {
        tracing::info!(addr = %addr, "Starting metrics server");
    }
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let metrics_stop = CancellationToken::new();
    let metrics_task = tokio::spawn(serve_metrics(
        listeners.metrics,
        metrics.clone(),
        health.clone(),
        metrics_stop.clone(),
    ));
    let (broker, status_store) = match backend {
        Backend::Ready(broker) => (Some(broker), None),
        Backend::Nats => {
            let ingress = listeners.ingress.as_ref().map(|i| &i.listener);
            match connect_waiting(&config, &metrics, ingress, &shutdown).await {
                Ok(Some(broker)) => {
                    let status = status_connection(&config, &shutdown).await;
                    (Some(Arc::new(broker) as Arc<dyn Broker>), status)
                }
                Ok(None) => (None, None),
                Err(refused) => {
                    metrics_stop.cancel();
                    let _ = metrics_task.await;
                    return Err(refused.to_string());
                }
            }
        }
    };
    if let Some(broker) = broker {
        let config = match fit_body_limit(config, broker.as_ref(), listeners.ingress.is_some()) {
            Ok(config) => config,
            Err(e) => {
                metrics_stop.cancel();
                let _ = metrics_task.await;
                return Err(e);
            }
        };
        let ports = Ports {
            broker,
            invoker,
            clock: Arc::new(crate::clock::SystemClock),
            rng: Arc::new(crate::rng::SeededRng::from_os()),
            status_store,
        };
        run(config, ports, metrics, health, listeners.ingress, shutdown).await;
    }
    metrics_stop.cancel();
    let _ = metrics_task.await;
    Ok(())
}

/// [`connect_nats`], the ingress (if any) answering `503` meanwhile
/// ([`ingress::waiting`]).
async fn connect_waiting(
    config: &Config,
    metrics: &Arc<Metrics>,
    ingress: Option<&TcpListener>,
    shutdown: &CancellationToken,
) -> Result<Option<JetStreamBroker>, Refusal> {
    let connecting = connect_nats(config, metrics, shutdown);
    let limits = ingress::waiting::limits(config);
    ingress::waiting::answer_while(ingress, limits, connecting).await
}

/// `config` with the limit of bodies carried in messages fitted to the server's `max_payload`
/// ([`ingress::body_limit`]): the default lowered (logged), a value set too large refused. That
/// limit is `payload_offload_bytes` when larger bodies go to the object store, else
/// `max_body_bytes`.
fn fit_body_limit(
    config: Arc<Config>,
    broker: &dyn Broker,
    with_ingress: bool,
) -> Result<Arc<Config>, String> {
    if !with_ingress {
        return Ok(config);
    }
    let offloading = config.payload_offload_bytes > 0;
    let (setting, configured, default) = if offloading {
        let default = crate::config::DEFAULT_PAYLOAD_OFFLOAD_BYTES;
        (
            "payload_offload_bytes",
            config.payload_offload_bytes,
            default,
        )
    } else {
        let default = crate::config::DEFAULT_MAX_BODY_BYTES;
        ("max_body_bytes", config.max_body_bytes, default)
    };
    let max_payload = broker.max_payload();
    let fitted = ingress::body_limit::fit(setting, configured, configured == default, max_payload)?;
    if fitted == configured {
        return Ok(config);
    }
    tracing::info!(
        setting,
        bytes = fitted,
        maxPayload = max_payload.unwrap_or_default(),
        "Body limit of messages set to what NATS max_payload holds"
    );
    let mut fitted_config = (*config).clone();
    match offloading {
        true => fitted_config.payload_offload_bytes = fitted,
        false => fitted_config.max_body_bytes = fitted,
    }
    Ok(Arc::new(fitted_config))
}

/// Run the worker (and the ingress when one is given) until `shutdown`, then drain
/// gracefully. `health` must be the one served on the metrics listener. No globals: tests and
/// the simulation run several in one process.
pub async fn run(
    config: Arc<Config>,
    ports: Ports,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    ingress: Option<IngressServer>,
    shutdown: CancellationToken,
) {
    health.set_broker(ports.broker.clone());
    let shutdown_timeout = config.shutdown_timeout;
    let stopping_since = when_cancelled(&shutdown);
    let status_stop = CancellationToken::new();
    let calls = (!config.status_ttl.is_zero())
        .then(|| Calls::start(status_store(&ports), &config, status_stop.clone()));
    // Calls can be cancelled where their status is kept (the cancel API needs it).
    let cancellations = calls.as_ref().map(|_| {
        Cancellations::start(
            ports.broker.clone(),
            &config.queue_name,
            status_stop.clone(),
        )
    });
    let tracer = crate::trace::Tracer::start(config.traces.as_ref());
    let mut servers = tokio::task::JoinSet::new();
    if let Some(server) = ingress {
        let state = Arc::new(ingress::Ingress {
            tracer: tracer.clone(),
            ..ingress::Ingress::over(
                ports.broker.clone(),
                config.clone(),
                ports.clock.clone(),
                metrics.clone(),
                calls.clone(),
            )
        });
        servers.spawn(serve_ingress(state, server, shutdown.clone()));
    }
    servers.spawn(crate::worker::scheduler::run(
        ports.broker.clone(),
        config.clone(),
        ports.clock.clone(),
        shutdown.clone(),
    ));
    let mut worker =
        worker::Worker::new(config, ports, metrics, health).with_tracer(tracer.clone());
    if let Some(calls) = &calls {
        worker = worker.with_calls(calls.clone());
    }
    if let Some(cancellations) = cancellations {
        worker = worker.with_cancellations(cancellations);
    }
    worker.run(shutdown).await;
    while servers.join_next().await.is_some() {}
    // What the worker and the ingress recorded last is written before the process ends,
    // within what is left of `shutdown_timeout` (the shutdown stays bounded by it).
    status_stop.cancel();
    if let Some(calls) = &calls {
        let spent = stopping_since
            .get()
            .map_or(Duration::ZERO, |at| at.elapsed());
        let left = shutdown_timeout
            .saturating_sub(spent)
            .min(crate::status::DRAIN);
        calls.flush(left).await;
    }
    // The last spans, briefly: an exporter that cannot reach its endpoint delays no stop.
    tracer.flush(TRACE_FLUSH).await;
}

/// Longest wait at shutdown for the last spans to be exported.
const TRACE_FLUSH: Duration = Duration::from_secs(2);

/// Where call status is written: [`Ports::status_store`], else the broker.
fn status_store(ports: &Ports) -> Arc<dyn KeyValue> {
    match &ports.status_store {
        Some(store) => store.clone(),
        None => ports.broker.clone(),
    }
}

/// Set to the time `token` is cancelled.
fn when_cancelled(token: &CancellationToken) -> Arc<std::sync::OnceLock<tokio::time::Instant>> {
    let at = Arc::new(std::sync::OnceLock::new());
    let (set, token) = (at.clone(), token.clone());
    tokio::spawn(async move {
        token.cancelled().await;
        let _ = set.set(tokio::time::Instant::now());
    });
    at
}

/// The ingress, until `stop` (it stops taking requests as soon as shutdown starts).
async fn serve_ingress(
    state: Arc<ingress::Ingress>,
    server: IngressServer,
    stop: CancellationToken,
) {
    if let Err(e) = state.ensure_streams().await {
        tracing::warn!(error = %e, "Cannot create the queues' streams yet; the ingress retries on publish");
    }
    if let Ok(addr) = server.listener.local_addr() {
        tracing::info!(addr = %addr, "Ingress listening");
    }
    let limits = ingress_limits(&state.config);
    let mut app = ingress::router(state);
    if let Some(extra) = server.extra_routes {
        app = app.merge(extra);
    }
    http_server::serve(server.listener, app, limits, stop).await;
}

/// The ingress's connection limit and header deadline: `ingress_max_connections`, lowered
/// (with a warning) to what the file descriptor limit leaves after the worker's own needs.
fn ingress_limits(config: &Config) -> http_server::Limits {
    let configured = config.ingress_max_connections;
    let nofile = fds::raise_limit();
    let max_connections = fds::ingress_connections(configured, config.max_inflight, nofile);
    if max_connections < configured {
        tracing::warn!(
            ingressMaxConnections = configured,
            allowed = max_connections,
            nofile = nofile.unwrap_or_default(),
            "The file descriptor limit leaves the ingress fewer connections than configured; raise `ulimit -n`"
        );
    }
    http_server::Limits {
        max_connections,
        header_timeout: config.ingress_header_timeout,
        max_head_bytes: ingress::body_limit::HEAD_LIMIT,
    }
}

/// Serve `/metrics`, `/healthz`, `/readyz` until `stop`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let app = telemetry::server::router(metrics, health);
    let limits = http_server::Limits {
        max_connections: fds::METRICS_CONNECTIONS,
        header_timeout: METRICS_HEADER_TIMEOUT,
        max_head_bytes: ingress::body_limit::HEAD_LIMIT,
    };
    http_server::serve(listener, app, limits, stop).await;
}

/// Header deadline of the metrics server (scrapers and probes send at once).
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to NATS, retrying until it works or `shutdown` fires (`Ok(None)`).
///
/// # Errors
///
/// NATS refuses the worker in a way no retry changes (credentials refused, a TLS certificate
/// problem, a secret or certificate file that cannot be used): the reason, naming the setting.
pub async fn connect_nats(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<Option<JetStreamBroker>, Refusal> {
    if config.nats_tls_insecure {
        tracing::warn!("nats_tls_insecure: the NATS server's certificate is not checked");
    }
    let reconnects = Some(metrics.nats_reconnects.clone());
    connect_nats_as(config, reconnects, shutdown, CONNECTION_NAME).await
}

/// The name the worker's connection gives NATS (seen in the server's connection list).
const CONNECTION_NAME: &str = "queue-worker";
/// The name of the connection call status is written on.
const STATUS_CONNECTION_NAME: &str = "queue-worker-status";

/// A connection of its own for call status, when status is kept. The status writer sends a
/// round of writes at once; on the worker's connection the server would store them all before
/// it reads the deliveries' acks, pull requests and the ingress's publishes sent after them
/// (queue delay p99 at 2,500 msg/s: 10 ms shared, 6 ms apart; docs/performance.md). `None`
/// (status shares the worker's connection) when status is off or NATS refuses a second one.
async fn status_connection(
    config: &Config,
    shutdown: &CancellationToken,
) -> Option<Arc<dyn KeyValue>> {
    if config.status_ttl.is_zero() {
        return None;
    }
    // Reconnections are counted on the worker's connection (both see the same outages).
    match connect_nats_as(config, None, shutdown, STATUS_CONNECTION_NAME).await {
        Ok(connected) => connected.map(|b| Arc::new(b) as Arc<dyn KeyValue>),
        Err(refused) => {
            tracing::warn!(error = %refused, "A second NATS connection, for call status, was refused; status shares the worker's connection");
            None
        }
    }
}

/// [`connect_nats`] with the connection named `name`, counting its reconnections in
/// `reconnects` (when given).
async fn connect_nats_as(
    config: &Config,
    reconnects: Option<Counter>,
    shutdown: &CancellationToken,
    name: &str,
) -> Result<Option<JetStreamBroker>, Refusal> {
    let opts = nats_options(config, name);
    let connected = retry_unless_final(shutdown, "NATS not reachable", || {
        let reconnects = reconnects.clone();
        let attempt = JetStreamBroker::connect(&opts, move || {
            if let Some(counter) = &reconnects {
                counter.inc();
            }
        });
        async move {
            attempt.await.map_err(|failure| match failure {
                ConnectFailure::Unreachable(e) => Failed::Again(e),
                ConnectFailure::Refused(refusal) => Failed::Final(refusal),
            })
        }
    })
    .await?;
    let Some(broker) = connected else {
        return Ok(None);
    };
    let server = broker
        .server_version()
        .map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let urls = urls_for_logs(&opts.urls);
    tracing::info!(url = %urls, server = %server, connection = name, "Connected to NATS");
    Ok(Some(broker))
}

/// How [`connect_nats`] reaches NATS: `config`'s servers, credentials and TLS settings, on a
/// connection named `name`.
fn nats_options(config: &Config, name: &str) -> NatsOptions {
    let client_cert = match (&config.nats_tls_cert_file, &config.nats_tls_key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        }),
        _ => None,
    };
    NatsOptions {
        urls: config.nats_urls.clone(),
        auth: nats_auth(config),
        tls: NatsTls {
            ca_file: config.nats_tls_ca_file.clone(),
            client_cert,
            insecure: config.nats_tls_insecure,
        },
        name: name.into(),
        request_timeout: Duration::from_secs(10),
        publish_timeout: Duration::from_secs(5),
    }
}

/// The one way to authenticate `config` sets (its validation refuses more than one).
fn nats_auth(config: &Config) -> NatsAuth {
    if let Some(path) = &config.nats_credentials_file {
        return NatsAuth::CredentialsFile(path.clone());
    }
    if let (Some(user), Some(password_file)) = (&config.nats_user, &config.nats_password_file) {
        return NatsAuth::UserPassword {
            user: user.clone(),
            password_file: password_file.clone(),
        };
    }
    match &config.nats_token_file {
        Some(path) => NatsAuth::TokenFile(path.clone()),
        None => NatsAuth::None,
    }
}

/// Cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Signal received: shutting down");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
