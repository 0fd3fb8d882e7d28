//! `scaling_mode=static` (the default): every replica pulls from one durable consumer
//! (`nats_durable`), in stream order. The intake (`intake.rs`) files each delivery in its
//! function's ready queue and the dispatcher (`super::ready`) starts them as slots
//! (`max_inflight`) and each function's adaptive limit allow, as in function mode: a function
//! at its limit is not sent more, and its deliveries wait, leased, without holding up the
//! other functions' (within the hold's bounds).

mod intake;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::function_mode::consumer_prefix;
use super::lease::progress_period;
use super::pauses::Pauses;
use super::pending::{self, PENDING_REPORT_INTERVAL};
use super::ready::Ready;
use super::shutdown::InFlight;
use super::{Context, MAX_DEFAULT_PULL_BATCH};
use crate::broker::{BrokerError, ConsumerSpec, StreamSpec, Subscription};
use crate::telemetry::metrics::QueueLabels;
use crate::telemetry::server::Health;
use intake::Intake;

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
            memory_storage: false,
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
        let Some(subscription) = self.subscribe(&consumer, &shutdown).await else {
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
        let ready = Ready::new(self.ctx.clone());
        // What is paused, before anything is pulled.
        let mut pauses = Pauses::new(self.ctx.clone(), ready.shared(), ready.waker());
        pauses.look().await;
        let pauses = tokio::spawn(pauses.run(reporter_stop.clone()));
        let slots = Arc::new(Semaphore::new(cfg.max_inflight));
        // Stopped at shutdown, or by the intake itself when the subscription ends for good.
        let intake_stop = shutdown.child_token();
        let intake = Intake {
            ctx: self.ctx.clone(),
            sched: ready.shared(),
            dispatch: ready.waker(),
            slots: slots.clone(),
            stop: intake_stop.clone(),
        };
        let in_flight = InFlight::new();
        // In this task, not a task of its own: the subscription ends with the mode, in the
        // same order on every run (the simulation replays crashes by seed).
        let serve = async {
            self.serve(&ready, &slots, &in_flight, &intake_stop).await;
            // Shutdown: stop pulling; the intake gives back what it received but did not file.
            self.health.set_ready(false);
            intake_stop.cancel();
        };
        tokio::join!(intake.run(subscription), serve);

        // Then give back what was pulled but not started, all within `shutdown_timeout`.
        let deadline = Instant::now() + cfg.shutdown_timeout;
        reporter_stop.cancel();
        let _ = reporter.await;
        let _ = pauses.await;
        let unstarted = ready.sched().take_ready();
        in_flight.drain(&self.ctx, unstarted, deadline).await;
    }

    /// Dispatch ready deliveries and keep the waiting ones leased until `stop`.
    async fn serve(
        &self,
        ready: &Ready,
        slots: &Arc<Semaphore>,
        in_flight: &InFlight,
        stop: &CancellationToken,
    ) {
        let period = progress_period(self.ctx.config.ack_wait);
        let mut progress = tokio::time::interval_at(Instant::now() + period, period);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ready.dispatch(slots, in_flight);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = ready.woken() => {}
                _ = progress.tick() => ready.progress(stop).await,
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
