//! The worker: pulls deliveries, invokes functions, posts callbacks, settles messages.
//!
//! Shape: [`Worker::run`] is the delivery loop (concurrency, shutdown); [`pipeline`] takes one
//! delivery from receipt to settlement; what happens to it is decided by [`plan`] (pure).

pub mod call;
pub mod callback;
pub mod dead_letter;
pub mod function_mode;
pub mod lease;
pub mod limiter;
pub mod pipeline;
pub mod plan;
pub mod retry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, ConsumerSpec, StreamSpec};
use crate::clock::Clock;
use crate::config::Config;
use crate::invoke::Invoker;
use crate::rng::Rng;
use crate::telemetry::metrics::{Metrics, QueueMetrics};
use crate::telemetry::server::Health;
use retry::{RetryBudget, RetryPolicy};

/// How often static mode refreshes `queue_worker_pending_messages` from the stream.
pub const PENDING_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Upper bound on deliveries pulled ahead of the worker when `consumer_pull_max_messages` is
/// not set.
pub const MAX_DEFAULT_PULL_BATCH: usize = 256;

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
}

impl Context {
    pub fn budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.retry_budget.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The end of a graceful shutdown (SPEC §12): let in-flight invocations (`tasks`, closed) finish
/// for up to `shutdown_timeout`, then cancel `abandon` so the rest give their messages back;
/// flush the acknowledgements.
async fn finish_in_flight(ctx: &Context, tasks: &TaskTracker, abandon: &CancellationToken) {
    if tokio::time::timeout(ctx.config.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tasks.len(),
            "Shutdown timeout reached: giving back unfinished invocations"
        );
        abandon.cancel();
        tasks.wait().await;
    }
    if let Err(e) = ctx.broker.flush().await {
        tracing::warn!(error = %e, "Could not flush acknowledgements; those messages are redelivered");
    }
    tracing::info!("Stopped");
}

/// The queue worker of one queue (`queue_name`).
pub struct Worker {
    ctx: Arc<Context>,
    stream: StreamSpec,
    consumer: ConsumerSpec,
    health: Arc<Health>,
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        ports: crate::Ports,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Worker {
        let queue = config.queue_name.clone();
        let stream =
            StreamSpec::work_queue(&queue, config.nats_storage, config.nats_stream_replicas);
        let dead_letters = StreamSpec::dead_letters(
            &queue,
            config.nats_storage,
            config.nats_stream_replicas,
            config.dead_letter_max_age,
        );
        let consumer = ConsumerSpec {
            stream: stream.name.clone(),
            name: config.nats_durable.clone(),
            filter_subject: None,
            ack_wait: config.ack_wait,
            inactive_threshold: None,
            pull_batch: config
                .consumer_pull_max_messages
                .unwrap_or_else(|| config.max_inflight.clamp(1, MAX_DEFAULT_PULL_BATCH)),
            recreate: true,
        };
        Worker {
            ctx: Arc::new(Context {
                metrics: metrics.for_queue(&queue),
                retry_policy: RetryPolicy::from_config(&config),
                retry_budget: Mutex::new(RetryBudget::new(
                    config.retry_budget_ratio,
                    retry::DEFAULT_BUDGET_WINDOW,
                    retry::DEFAULT_BUDGET_FUNCTIONS,
                )),
                config,
                broker: ports.broker,
                invoker: ports.invoker,
                clock: ports.clock,
                rng: ports.rng,
                dead_letters,
            }),
            stream,
            consumer,
            health,
        }
    }

    /// Run until `shutdown` is cancelled, then drain as SPEC §12 says: stop pulling, let
    /// in-flight invocations finish for up to `shutdown_timeout`, give back (nak, no delay)
    /// whatever is left.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.ctx.config.scaling_mode == crate::config::ScalingMode::Function {
            return function_mode::FunctionMode::new(self.ctx, self.stream, self.health)
                .run(shutdown)
                .await;
        }
        let cfg = &self.ctx.config;
        tracing::info!(
            maxInflight = cfg.max_inflight,
            stream = %self.stream.name,
            durable = %self.consumer.name,
            mode = cfg.scaling_mode.as_str(),
            "Starting"
        );
        let Some(mut subscription) = self.connect_consumer(&shutdown).await else {
            return;
        };
        self.ctx
            .metrics
            .all()
            .consumers
            .get_or_create(&crate::telemetry::metrics::QueueLabels {
                queue_name: cfg.queue_name.clone(),
            })
            .set(1);
        self.health.set_ready(true);
        let reporter_stop = CancellationToken::new();
        let reporter = tokio::spawn(function_mode::report_pending(
            self.ctx.clone(),
            self.stream.name.clone(),
            PENDING_REPORT_INTERVAL,
            reporter_stop.clone(),
        ));

        let slots = Arc::new(Semaphore::new(cfg.max_inflight));
        let tasks = TaskTracker::new();
        // Cancelled when the shutdown grace period is over: in-flight work gives its message back.
        let abandon = CancellationToken::new();
        let mut error_backoff = Duration::from_millis(100);
        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // Free slots, counting the one just taken.
            subscription.set_demand(slots.available_permits() + 1);
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                n = subscription.next() => n,
            };
            match next {
                Some(Ok(delivery)) => {
                    error_backoff = Duration::from_millis(100);
                    let ctx = self.ctx.clone();
                    let abandon = abandon.clone();
                    let held = lease::Held::received(delivery, cfg.ack_wait);
                    tasks.spawn(async move {
                        pipeline::run(&ctx, held, &abandon).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    drop(permit);
                    tracing::warn!(error = %e, "Pull failed; retrying");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(error_backoff) => {}
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                }
                None => {
                    drop(permit);
                    tracing::error!("Subscription closed");
                    break;
                }
            }
        }

        // Shutdown: stop pulling; give back what was pulled but not started.
        self.health.set_ready(false);
        reporter_stop.cancel();
        let _ = reporter.await;
        let buffered = subscription.drain_buffered();
        drop(subscription);
        let given_back = buffered.len();
        for d in buffered {
            lease::Held::received(d, cfg.ack_wait).give_back().await;
        }
        tasks.close();
        let in_flight = tasks.len();
        tracing::info!(
            inFlight = in_flight,
            givenBack = given_back,
            timeout = ?cfg.shutdown_timeout,
            "Stopping: waiting for in-flight invocations"
        );
        finish_in_flight(&self.ctx, &tasks, &abandon).await;
    }

    /// A work queue forbids overlapping consumers: switching a queue from function mode to
    /// static mode removes the per-function consumers first.
    async fn remove_function_consumers(&self) -> Result<(), crate::broker::BrokerError> {
        let prefix = function_mode::consumer_prefix(&self.ctx.config.queue_name);
        for name in self.ctx.broker.list_consumers(&self.stream.name).await? {
            if name.starts_with(&prefix) {
                tracing::info!(consumer = %name, "Removing function-mode consumer (switching to static mode)");
                self.ctx
                    .broker
                    .delete_consumer(&self.stream.name, &name)
                    .await?;
            }
        }
        Ok(())
    }

    /// Ensure streams and the consumer, retrying with back-off until it works or shutdown.
    async fn connect_consumer(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<Box<dyn crate::broker::Subscription>> {
        let mut delay = Duration::from_millis(250);
        loop {
            let attempt = async {
                self.ctx
                    .broker
                    .ensure_stream(&self.ctx.dead_letters)
                    .await?;
                self.remove_function_consumers().await?;
                self.ctx
                    .broker
                    .subscribe(&self.stream, &self.consumer)
                    .await
            };
            let err = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                r = attempt => match r {
                    Ok(sub) => return Some(sub),
                    Err(e) => e,
                },
            };
            tracing::warn!(error = %err, retryIn = ?delay, "Cannot set up the stream and consumer");
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
