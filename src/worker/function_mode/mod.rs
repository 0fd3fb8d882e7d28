//! `scaling_mode=function`: one pull consumer per function that has work, fair scheduling
//! across functions, and (with `limiter_enabled`) adaptive concurrency per function.
//!
//! Pieces:
//! - **discovery** (every [`DISCOVERY_INTERVAL`]): the stream's per-subject counts say which
//!   functions have messages (`<queue>.<name>.<ns>`, and `<queue>` for older gateways); they
//!   feed `queue_worker_pending_messages` and start a feeder for each function without one;
//! - **feeders** (a task per function): own the function's consumer (filtered on its subject)
//!   and pull from it only what the function can start now — at most its limiter's limit minus
//!   what is in flight, and a small prefetch — into the function's ready queue; a feeder whose
//!   function stays idle for `consumer_inactive_threshold` stops pulling and ends, and the
//!   server deletes the consumer after its inactive threshold (`consumers.rs`) once no replica pulls from
//!   it or acknowledges its messages;
//! - **dispatcher**: gives each free slot (`max_inflight`) to the next function in round-robin
//!   order that has a ready delivery and room under its limit, so a backlog of thousands for one
//!   function cannot starve the others; deliveries waiting in ready queues get progress acks so
//!   their ack-wait lease never runs out while they wait.

mod consumers;
mod discovery;
mod feeder;

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use consumers::consumer_prefix;
pub use discovery::DISCOVERY_INTERVAL;

use super::Context;
use super::lease::progress_period;
use super::pauses::Pauses;
use super::pending::PendingGauges;
use super::ready::{Ready, Sched};
use super::shutdown::InFlight;
use crate::broker::StreamSpec;
use crate::keep_trying::retry_until;
use crate::telemetry::server::Health;

/// The function-mode worker of one queue.
pub struct FunctionMode {
    ctx: Arc<Context>,
    stream: StreamSpec,
    health: Arc<Health>,
    ready: Ready,
    pending: Mutex<PendingGauges>,
}

impl FunctionMode {
    pub fn new(ctx: Arc<Context>, stream: StreamSpec, health: Arc<Health>) -> FunctionMode {
        FunctionMode {
            ready: Ready::new(ctx.clone()),
            ctx,
            stream,
            health,
            pending: Mutex::new(PendingGauges::default()),
        }
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.ready.sched()
    }

    /// Set up: streams, and remove static-mode consumers (a work queue forbids overlapping
    /// consumers, so switching a queue to function mode must remove the shared one first).
    async fn prepare(&self) -> Result<(), crate::broker::BrokerError> {
        let b = &self.ctx.broker;
        b.ensure_stream(&self.ctx.dead_letters).await?;
        b.ensure_stream(&self.stream).await?;
        let prefix = consumer_prefix(&self.ctx.config.queue_name);
        for name in b.list_consumers(&self.stream.name).await? {
            if !name.starts_with(&prefix) {
                tracing::info!(consumer = %name, "Removing static-mode consumer (switching to function mode)");
                b.delete_consumer(&self.stream.name, &name).await?;
            }
        }
        Ok(())
    }

    /// Run until `shutdown`, then drain (see [`super::shutdown`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let cfg = &self.ctx.config;
        tracing::info!(
            maxInflight = cfg.max_inflight,
            stream = %self.stream.name,
            mode = cfg.scaling_mode.as_str(),
            limiter = cfg.limiter_enabled,
            "Starting"
        );
        let ready = retry_until(&shutdown, "Cannot set up the stream", || self.prepare()).await;
        if ready.is_none() {
            return;
        }
        // What is paused, before any feeder pulls.
        let mut pauses = Pauses::new(self.ctx.clone(), self.ready.shared(), self.ready.waker());
        pauses.look().await;
        let pauses_stop = CancellationToken::new();
        let pauses = tokio::spawn(pauses.run(pauses_stop.clone()));
        self.health.set_ready(true);
        let feeders = Feeders::default();
        let in_flight = InFlight::new();
        self.serve(&in_flight, &feeders, &shutdown).await;
        pauses_stop.cancel();
        let _ = pauses.await;

        // Shutdown: stop feeders (they give back what they pulled), then the common drain, all
        // within `shutdown_timeout`.
        let deadline = Instant::now() + cfg.shutdown_timeout;
        self.health.set_ready(false);
        feeders.stop.cancel();
        feeders.tasks.close();
        let stopped = tokio::time::timeout_at(deadline, feeders.tasks.wait()).await;
        if stopped.is_err() {
            tracing::warn!(
                "Shutdown timeout reached while function consumers gave back messages (is NATS reachable?); they are redelivered after ack_wait"
            );
        }
        let unstarted = self.sched().take_ready();
        in_flight.drain(&self.ctx, unstarted, deadline).await;
    }

    /// Dispatch, discover and keep ready deliveries leased until `shutdown`.
    async fn serve(&self, in_flight: &InFlight, feeders: &Feeders, shutdown: &CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.ctx.config.max_inflight));
        let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let period = progress_period(self.ctx.config.ack_wait);
        let mut progress = tokio::time::interval_at(Instant::now() + period, period);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.ready.dispatch(&slots, in_flight);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.ready.woken() => {}
                // A stream-info request can take seconds while NATS is away: shutdown does not
                // wait for it (nothing has changed until it answers).
                _ = discovery.tick() => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = self.discover(&feeders.tasks, &feeders.stop) => {}
                },
                _ = progress.tick() => self.ready.progress(shutdown).await,
            }
        }
    }
}

/// The feeder tasks, and what stops them.
#[derive(Default)]
struct Feeders {
    tasks: TaskTracker,
    stop: CancellationToken,
}
