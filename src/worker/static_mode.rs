//! `scaling_mode=static` (the default): every replica pulls from one durable consumer
//! (`nats_durable`), in stream order, never more than it has free slots for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::function_mode::consumer_prefix;
use super::lease::Held;
use super::pending::{self, PENDING_REPORT_INTERVAL};
use super::pipeline;
use super::shutdown::InFlight;
use super::{Context, MAX_DEFAULT_PULL_BATCH};
use crate::broker::{BrokerError, ConsumerSpec, StreamSpec, Subscription};
use crate::telemetry::metrics::QueueLabels;
use crate::telemetry::server::Health;

/// The static-mode worker of one queue.
pub struct StaticMode {
    pub ctx: Arc<Context>,
    pub stream: StreamSpec,
    pub health: Arc<Health>,
}

impl StaticMode {
    /// The shared durable consumer.
    fn consumer(&self) -> ConsumerSpec {
        let config = &self.ctx.config;
        ConsumerSpec {
            stream: self.stream.name.clone(),
            name: config.nats_durable.clone(),
            filter_subject: None,
            ack_wait: config.ack_wait,
            inactive_threshold: None,
            pull_batch: config
                .consumer_pull_max_messages
                .unwrap_or_else(|| config.max_inflight.clamp(1, MAX_DEFAULT_PULL_BATCH)),
            recreate: true,
        }
    }

    /// Run until `shutdown`, then drain (see [`super::shutdown`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let cfg = &self.ctx.config;
        let consumer = self.consumer();
        tracing::info!(
            maxInflight = cfg.max_inflight,
            stream = %self.stream.name,
            durable = %consumer.name,
            mode = cfg.scaling_mode.as_str(),
            "Starting"
        );
        let Some(mut subscription) = self.subscribe(&consumer, &shutdown).await else {
            return;
        };
        let gauge = QueueLabels {
            queue_name: cfg.queue_name.clone(),
        };
        self.ctx
            .metrics
            .all()
            .consumers
            .get_or_create(&gauge)
            .set(1);
        self.health.set_ready(true);
        let reporter_stop = CancellationToken::new();
        let reporter = tokio::spawn(pending::report(
            self.ctx.clone(),
            self.stream.name.clone(),
            PENDING_REPORT_INTERVAL,
            reporter_stop.clone(),
        ));
        let in_flight = InFlight::new();
        self.pull(&mut *subscription, &in_flight, &shutdown).await;

        // Shutdown: stop pulling; give back what was pulled but not started.
        self.health.set_ready(false);
        reporter_stop.cancel();
        let _ = reporter.await;
        let unstarted = subscription
            .drain_buffered()
            .into_iter()
            .map(|d| Held::received(d, cfg.ack_wait))
            .collect();
        drop(subscription);
        in_flight.drain(&self.ctx, unstarted).await;
    }

    /// Take a delivery for every free slot until `shutdown` (or the subscription ends).
    async fn pull(
        &self,
        subscription: &mut dyn Subscription,
        in_flight: &InFlight,
        shutdown: &CancellationToken,
    ) {
        let cfg = &self.ctx.config;
        let slots = Arc::new(Semaphore::new(cfg.max_inflight));
        let mut error_backoff = PULL_RETRY_FIRST;
        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            // Free slots, counting the one just taken.
            subscription.set_demand(slots.available_permits() + 1);
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                n = subscription.next() => n,
            };
            match next {
                Some(Ok(delivery)) => {
                    error_backoff = PULL_RETRY_FIRST;
                    let ctx = self.ctx.clone();
                    let held = Held::received(delivery, cfg.ack_wait);
                    in_flight.spawn(|abandon| async move {
                        pipeline::run(&ctx, held, &abandon).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    drop(permit);
                    tracing::warn!(error = %e, "Pull failed; retrying");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(error_backoff) => {}
                    }
                    error_backoff = (error_backoff * 2).min(PULL_RETRY_MAX);
                }
                None => {
                    tracing::error!("Subscription closed");
                    return;
                }
            }
        }
    }

    /// Ensure the streams and the consumer, retrying until it works or shutdown.
    async fn subscribe(
        &self,
        consumer: &ConsumerSpec,
        shutdown: &CancellationToken,
    ) -> Option<Box<dyn Subscription>> {
        let broker = &self.ctx.broker;
        crate::keep_trying::retry_until(
            shutdown,
            "Cannot set up the stream and consumer",
            || async {
                broker.ensure_stream(&self.ctx.dead_letters).await?;
                self.remove_function_consumers().await?;
                broker.subscribe(&self.stream, consumer).await
            },
        )
        .await
    }

    /// A work queue forbids overlapping consumers: switching a queue from function mode to
    /// static mode removes the per-function consumers first.
    async fn remove_function_consumers(&self) -> Result<(), BrokerError> {
        let prefix = consumer_prefix(&self.ctx.config.queue_name);
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
}

/// First wait after a failed pull; doubling up to [`PULL_RETRY_MAX`].
const PULL_RETRY_FIRST: Duration = Duration::from_millis(100);
const PULL_RETRY_MAX: Duration = Duration::from_secs(5);
