//! The async ingress (README: "HTTP endpoints"): `POST /async-function/{name}[.{ns}][/{path}]` stores an
//! invocation in JetStream and answers `202 Accepted` only once the broker has stored it.

mod admin;
pub mod body_limit;
mod budget;
mod calls;
mod cancel;
pub mod delay;
pub mod idempotency;
mod results;
mod route;
mod traced;
pub mod waiting;

pub use budget::BodyBudget;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};

use route::async_function;

use crate::broker::{Admin, BrokerError, KeyValue, Objects, Outgoing, Publish, StreamSpec};
use crate::claim_check;
use crate::clock::Clock;
use crate::config::Config;
use crate::invoke::guard;
use crate::security::auth::IngressAuth;
use crate::status::Calls;
use crate::telemetry::metrics::{Metrics, QueueLabels};
use crate::wire::{self, GoUrl, QueueRequest, parse_callback_url};

/// Longest `X-Call-Id` accepted from a caller.
pub const MAX_CALL_ID_LEN: usize = 128;

/// Shared state of the ingress routes.
pub struct Ingress {
    pub config: Arc<Config>,
    /// Where invocations are stored.
    pub publisher: Arc<dyn Publish>,
    /// Creates the queues' streams.
    pub streams: Arc<dyn Admin>,
    /// Keeps the first call id of each `Idempotency-Key`.
    pub store: Arc<dyn KeyValue>,
    /// Keeps request bodies over `payload_offload_bytes` (the claim check).
    pub objects: Arc<dyn Objects>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Credentials every route but `/healthz` requires; `None`: open.
    pub auth: Option<Arc<IngressAuth>>,
    /// Call status: recorded when a call is stored, read by `GET /system/calls/{id}`;
    /// `None`: not kept.
    pub calls: Option<Arc<Calls>>,
    /// Serves `/system/queues` and `/system/dead-letters` (`admin.rs`); `None`: not served.
    pub operator: Option<Arc<dyn crate::broker::Operator>>,
    /// Records the `publish` span of each request and carries its trace in the message.
    pub tracer: crate::trace::Tracer,
}

impl Ingress {
    /// The ingress over one broker (publishing, streams, `Idempotency-Key`s, claim checks and
    /// the admin routes), with the credentials `config` names.
    pub fn over(
        broker: Arc<dyn crate::broker::Broker>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        calls: Option<Arc<Calls>>,
    ) -> Ingress {
        Ingress {
            auth: config.ingress_auth().map(Arc::new),
            config,
            publisher: broker.clone(),
            streams: broker.clone(),
            store: broker.clone(),
            objects: broker.clone(),
            clock,
            metrics,
            calls,
            operator: Some(broker),
            tracer: crate::trace::Tracer::off(),
        }
    }

    /// Every queue the ingress may publish to: `queue_name` and the `function_queues` targets.
    pub fn queues(&self) -> Vec<String> {
        self.config.queues()
    }

    fn stream_spec(&self, queue: &str) -> StreamSpec {
        StreamSpec::work_queue(
            queue,
            self.config.nats_storage,
            self.config.nats_stream_replicas,
        )
        .with_duplicate_window(self.config.idempotency_window)
    }

    fn delayed_spec(&self, queue: &str) -> StreamSpec {
        StreamSpec::delayed(
            queue,
            self.config.nats_storage,
            self.config.nats_stream_replicas,
        )
        .with_duplicate_window(self.config.idempotency_window)
        .with_schedules(self.streams.schedules_messages())
    }

    /// Create the streams of every queue the ingress routes to (idempotent); where the server
    /// schedules messages and delayed calls are taken, also their delayed streams, so that an
    /// older one is made to hold schedules before the first is stored.
    pub async fn ensure_streams(&self) -> Result<(), BrokerError> {
        let schedules = self.streams.schedules_messages() && !self.config.max_delay.is_zero();
        for q in self.queues() {
            self.streams.ensure_stream(&self.stream_spec(&q)).await?;
            if schedules {
                self.streams.ensure_stream(&self.delayed_spec(&q)).await?;
            }
        }
        Ok(())
    }
}

/// The ingress routes: all behind the credentials when some are configured, but `/healthz`.
pub fn router(state: Arc<Ingress>) -> Router {
    let budget = BodyBudget::new(state.config.ingress_max_buffered_bytes);
    let mut routes = Router::new()
        .route("/async-function/{*rest}", any(async_function))
        // No function named: 400 from the same handler, not the router's 404.
        .route("/async-function/", any(async_function))
        .route("/async-function", any(async_function))
        .route("/system/calls/{call_id}", get(calls::call_status))
        .route("/system/calls/{call_id}/result", get(results::call_result))
        .merge(admin::routes(&state))
        .merge(console(&state));
    if let Some(auth) = &state.auth {
        routes = routes.route_layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            crate::security::auth::require,
        ));
    }
    routes
        .route("/healthz", get(|| async { "OK\n" }))
        .layer(DefaultBodyLimit::disable())
        .layer(Extension(budget))
        .with_state(state)
}

/// The web console at `/ui`, where the ingress has an operator (none: not served, 404).
fn console<S: Clone + Send + Sync + 'static>(state: &Ingress) -> Router<S> {
    let Some(op) = state.operator.clone() else {
        return Router::new();
    };
    let console = crate::console::Console::new(
        op,
        state.calls.clone(),
        state.config.clone(),
        state.metrics.clone(),
    );
    crate::console::routes(console)
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
    /// The message id standing for the request's `Idempotency-Key` ([`idempotency::msg_id`]).
    pub idempotency: Option<String>,
    /// `X-Callback-Url`, checked against `callback_allowed_hosts` by host (its addresses are
    /// checked by [`check_callback_addresses`]).
    pub callback: Option<url::Url>,
    /// A delayed call's due time (unix milliseconds): it goes to the queue's delayed stream.
    pub not_before: Option<u64>,
    /// A body over `payload_offload_bytes`: the object name it is stored under, and the body
    /// (the message carries only the name, see [`claim_check`]).
    pub offloaded: Option<(String, bytes::Bytes)>,
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
    let call_id = call_id_of(&mut header)?;
    let idempotency = idempotency::key_of(header.get(idempotency::HEADER))?
        .map(|key| idempotency::msg_id(&function, key));
    let not_before = delay::not_before(cfg, crate::status::unix_ms(clock.now()), &header)?;
    crate::flow::limits::check_headers(&header)?;
    let start_time = clock.unix_nanos().to_string();
    header
        .entry("X-Start-Time".into())
        .or_default()
        .push(start_time.clone());

    let callback = match header.get("X-Callback-Url").and_then(|v| v.first()) {
        Some(raw) => Some(allowed_callback(cfg, raw)?),
        None => None,
    };
    let callback_url = callback.as_ref().map(GoUrl::from_url);

    let (body, offloaded) = claim_check::split(cfg, body);
    let routed = cfg.routed_queue(&function).is_some();
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
    let msg_id = idempotency.clone().unwrap_or_else(|| call_id.clone());
    let (subject, mut headers) = match not_before {
        Some(at) => delay::route(&queue, subject, at, &msg_id),
        None => (subject, Vec::new()),
    };
    if let Some((name, body)) = &offloaded {
        headers.extend(claim_check::headers(name, body.len()));
    }
    Ok(Prepared {
        outgoing: Outgoing {
            subject,
            msg_id: Some(msg_id),
            headers,
            payload: bytes::Bytes::from(wire::encode(&msg)),
        },
        call_id,
        start_time,
        queue,
        function,
        idempotency,
        callback,
        not_before,
        offloaded,
    })
}

/// The caller's `X-Call-Id` when valid; a new one (added to `header`) when none was given.
fn call_id_of(header: &mut BTreeMap<String, Vec<String>>) -> Result<String, String> {
    match header.get("X-Call-Id").and_then(|v| v.first()) {
        Some(id) if !id.is_empty() => {
            if id.len() > MAX_CALL_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "invalid X-Call-Id: at most {MAX_CALL_ID_LEN} printable ASCII characters"
                ));
            }
            Ok(id.clone())
        }
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            header.insert("X-Call-Id".into(), vec![id.clone()]);
            Ok(id)
        }
    }
}

/// The callback URL, valid and to a host `callback_allowed_hosts` allows.
fn allowed_callback(cfg: &Config, raw: &str) -> Result<url::Url, String> {
    let url = parse_callback_url(raw)?;
    guard::check_url(&cfg.callback_allowed_hosts, &url)
        .map_err(|r| format!("X-Callback-Url {r}"))?;
    Ok(url)
}

/// The addresses of the callback's host, when only they can allow it: `Err` (a `400`) when
/// the host resolves and none of its addresses is allowed.
pub async fn check_callback_addresses(cfg: &Config, p: &Prepared) -> Result<(), String> {
    let Some(url) = &p.callback else {
        return Ok(());
    };
    guard::check_url_resolved(&cfg.callback_allowed_hosts, url)
        .await
        .map_err(|r| format!("X-Callback-Url {r}"))
}

/// How a submission was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A new message.
    New,
    /// Its call id was stored within `idempotency_window`: nothing new was stored, whatever
    /// this request carried.
    Duplicate,
    /// Its `Idempotency-Key` was used within `idempotency_window`, by the call with this id:
    /// nothing new was stored.
    Repeat(String),
    /// Its `Idempotency-Key` is being stored by another request whose call id is not known
    /// yet: nothing new was stored; asking again shortly gives [`Stored::Repeat`].
    RepeatInFlight,
}

impl Stored {
    /// The id of the call that holds the request: its own, or the first one of its key.
    pub fn call_id<'a>(&'a self, p: &'a Prepared) -> Option<&'a str> {
        match self {
            Stored::New | Stored::Duplicate => Some(&p.call_id),
            Stored::Repeat(first) => Some(first),
            Stored::RepeatInFlight => None,
        }
    }
}

/// Publish a prepared message and wait for the broker to store it, or to say it is already
/// stored (by call id or `Idempotency-Key`). A missing stream (deleted to reset the queue, or
/// never created) is created and the publish tried once more.
pub async fn submit_once(state: &Ingress, p: &Prepared) -> Result<Stored, BrokerError> {
    let keys = idempotency::Keys {
        store: state.store.as_ref(),
        config: &state.config,
    };
    if let Some(id) = &p.idempotency
        && let Some(first) = keys.first_call(&p.queue, id).await?
    {
        return Ok(Stored::Repeat(first));
    }
    if let Some((name, body)) = &p.offloaded {
        let spec = claim_check::spec(&state.config, &p.queue);
        claim_check::store(state.objects.as_ref(), &spec, name, body.clone()).await?;
    }
    let result = publish(state, p).await;
    if let Some((name, _)) = &p.offloaded
        && !matches!(result, Ok(ref ack) if !ack.duplicate)
    {
        // Not stored, or stored before with its own body: this one is nobody's.
        claim_check::discard(state.objects.as_ref(), &p.queue, name).await;
    }
    if result?.duplicate {
        let Some(id) = &p.idempotency else {
            tracing::info!(callId = %p.call_id, function = %p.function, "Duplicate call id: not stored again");
            return Ok(Stored::Duplicate);
        };
        tracing::info!(function = %p.function, "Repeated Idempotency-Key: not stored again");
        return Ok(match keys.wait_first_call(&p.queue, id).await? {
            Some(first) => Stored::Repeat(first),
            None => Stored::RepeatInFlight,
        });
    }
    if let Some(id) = &p.idempotency {
        remember_first_call(&keys, p, id).await;
    }
    state
        .metrics
        .messages_submitted
        .get_or_create(&QueueLabels {
            queue_name: p.queue.clone(),
        })
        .inc();
    tracing::debug!(callId = %p.call_id, function = %p.function, queue = %p.queue, "Queued");
    if let Some(calls) = &state.calls {
        let event = crate::status::Event {
            function: p.function.clone(),
            at: crate::status::unix_ms(state.clock.now()),
            kind: match p.not_before {
                Some(not_before) => crate::status::Kind::Delayed { not_before },
                None => crate::status::Kind::Queued,
            },
        };
        calls.record(&p.queue, &p.call_id, event);
    }
    Ok(Stored::New)
}

/// Publish `p` (a delayed call as a schedule where the server has them and it is due late
/// enough, see [`delay::scheduled`]), creating its stream once when it is missing.
async fn publish(state: &Ingress, p: &Prepared) -> Result<crate::broker::PubAck, BrokerError> {
    let now = crate::status::unix_ms(state.clock.now());
    let outgoing = match p.not_before {
        Some(at) if at > now + delay::SCHEDULE_AFTER_MS && state.streams.schedules_messages() => {
            let name = claim_check::new_name();
            delay::scheduled(p.outgoing.clone(), &p.queue, at, &name)
        }
        _ => p.outgoing.clone(),
    };
    let result = state.publisher.publish(outgoing.clone()).await;
    if let Err(BrokerError::NoStream { .. }) = &result {
        let spec = match p.not_before {
            Some(_) => state.delayed_spec(&p.queue),
            None => state.stream_spec(&p.queue),
        };
        state.streams.ensure_stream(&spec).await?;
        return state.publisher.publish(outgoing).await;
    }
    result
}

/// Record the call id of a new keyed call, trying three times: the message is stored already,
/// so a failure only leaves repeats without the first id (they are answered `409` and still not
/// queued again, by the message id).
async fn remember_first_call(keys: &idempotency::Keys<'_>, p: &Prepared, id: &str) {
    let mut last = None;
    for pause in [0, 100, 400] {
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        match keys.remember(&p.queue, id, &p.call_id).await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::warn!(callId = %p.call_id, function = %p.function, error = %crate::telemetry::redact::text(&e.to_string()), "Cannot record the call of an Idempotency-Key");
    }
}
