//! The worker: pulls deliveries, invokes functions, posts callbacks, settles messages.
//!
//! Shape: [`Worker::run`] is the delivery loop (concurrency, shutdown); `pipeline.rs` takes one
//! delivery from receipt to settlement; what happens to it is decided by `plan.rs` (pure).

pub(crate) mod backlog;
pub(crate) mod call;
pub(crate) mod callback;
pub mod cancellations;
pub(crate) mod company;
pub(crate) mod dead_letter;
pub(crate) mod flow_gate;
pub(crate) mod function_mode;
pub(crate) mod lease;
pub(crate) mod limiter;
pub(crate) mod pauses;
pub(crate) mod payload;
pub(crate) mod pending;
pub(crate) mod pipeline;
pub(crate) mod plan;
pub(crate) mod ready;
pub mod retry;
pub(crate) mod scheduler;
pub(crate) mod shutdown;
pub(crate) mod static_mode;
pub(crate) mod ticks;
pub(crate) mod traced;
pub(crate) mod tracking;

use crate::security::secret_file::SecretFile;
use crate::security::signing::Signer;
use crate::status::Calls;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, StreamSpec};
use crate::clock::Clock;
use crate::config::{Config, ScalingMode};
use crate::flow::{self, Flow};
use crate::invoke::Invoker;
use crate::rng::Rng;
use crate::telemetry::metrics::{Metrics, QueueMetrics};
use crate::telemetry::server::Health;
use retry::{RetryBudget, RetryPolicy};

/// Upper bound on deliveries pulled at once when `consumer_pull_max_messages` is not set.
pub const MAX_DEFAULT_PULL_BATCH: usize = 256;

/// The I/O the worker runs on.
#[derive(Clone)]
pub struct Ports {
    pub broker: Arc<dyn Broker>,
    pub invoker: Arc<dyn Invoker>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Rng>,
    /// Where call status is written and read; `None`: `broker`. In production, a NATS
    /// connection of its own (see `lifecycle::serve`).
    pub status_store: Option<Arc<dyn crate::broker::KeyValue>>,
}

/// Everything one delivery's processing needs (shared by all in-flight tasks).
pub struct Context {
    pub config: Arc<Config>,
    pub broker: Arc<dyn Broker>,
    pub invoker: Arc<dyn Invoker>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Rng>,
    pub metrics: QueueMetrics,
    pub dead_letters: StreamSpec,
    /// The worker's retry policy (messages may override it with annotations).
    pub retry_policy: RetryPolicy,
    /// Retries per function are capped at `retry_budget_ratio` of recent first attempts.
    pub retry_budget: Mutex<RetryBudget>,
    /// Signs callbacks (`callback_signing_secret_file`); `None`: unsigned.
    pub signer: Option<Signer>,
    /// Where call status is recorded; `None`: not recorded.
    pub calls: Option<Arc<Calls>>,
    /// The calls cancelled on this queue; `None`: calls cannot be cancelled.
    pub cancellations: Option<Arc<cancellations::Cancellations>>,
    /// The queue's flow limits (`src/flow/`).
    pub flow: Arc<Flow>,
    /// Records the spans of each call (`src/trace/`); off unless configured.
    pub tracer: crate::trace::Tracer,
}

impl Context {
    pub fn budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.retry_budget.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The queue worker of one queue (`queue_name`).
pub struct Worker {
    ctx: Arc<Context>,
    stream: StreamSpec,
    health: Arc<Health>,
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        ports: Ports,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Worker {
        let queue = config.queue_name.clone();
        let stream =
            StreamSpec::work_queue(&queue, config.nats_storage, config.nats_stream_replicas)
                .with_duplicate_window(config.idempotency_window);
        let dead_letters = StreamSpec::dead_letters(
            &queue,
            config.nats_storage,
            config.nats_stream_replicas,
            config.dead_letter_max_age,
        );
        Worker {
            ctx: Arc::new(Context {
                metrics: metrics.for_queue(&queue),
                retry_policy: RetryPolicy::from_config(&config),
                retry_budget: Mutex::new(RetryBudget::new(
                    config.retry_budget_ratio,
                    retry::DEFAULT_BUDGET_WINDOW,
                    retry::DEFAULT_BUDGET_FUNCTIONS,
                )),
                signer: config
                    .callback_signing_secret_file
                    .as_ref()
                    .map(|path| Signer::new(SecretFile::new(path))),
                calls: None,
                cancellations: None,
                tracer: crate::trace::Tracer::off(),
                flow: Arc::new(Flow::new(ports.broker.clone(), flow::spec(&config, &queue))),
                config,
                broker: ports.broker,
                invoker: ports.invoker,
                clock: ports.clock,
                rng: ports.rng,
                dead_letters,
            }),
            stream,
            health,
        }
    }

    /// Record call status in `calls` (before [`Worker::run`]).
    pub fn with_calls(mut self, calls: Arc<Calls>) -> Worker {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.calls = Some(calls);
        }
        self
    }

    /// Record the spans of calls with `tracer` (before [`Worker::run`]).
    pub fn with_tracer(mut self, tracer: crate::trace::Tracer) -> Worker {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.tracer = tracer;
        }
        self
    }

    /// Let calls be cancelled, as `cancellations` knows them (before [`Worker::run`]).
    pub fn with_cancellations(
        mut self,
        cancellations: Arc<cancellations::Cancellations>,
    ) -> Worker {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.cancellations = Some(cancellations);
        }
        self
    }

    /// Run the configured mode until `shutdown`, then drain (see `shutdown.rs`).
    pub async fn run(self, shutdown: CancellationToken) {
        let gauges_stop = CancellationToken::new();
        let gauges = tokio::spawn(backlog::report(self.ctx.clone(), gauges_stop.clone()));
        flow_gate::look_pins(&self.ctx).await;
        let pins = tokio::spawn(flow_gate::follow_pins(
            self.ctx.clone(),
            gauges_stop.clone(),
        ));
        self.run_mode(shutdown).await;
        gauges_stop.cancel();
        let _ = gauges.await;
        let _ = pins.await;
    }

    async fn run_mode(self, shutdown: CancellationToken) {
        match self.ctx.config.scaling_mode {
            ScalingMode::Function => {
                function_mode::FunctionMode::new(self.ctx, self.stream, self.health)
                    .run(shutdown)
                    .await
            }
            ScalingMode::Static => {
                let mode = static_mode::StaticMode {
                    ctx: self.ctx,
                    stream: self.stream,
                    health: self.health,
                };
                mode.run(shutdown).await
            }
        }
    }
}
