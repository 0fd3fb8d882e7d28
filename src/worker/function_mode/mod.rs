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
mod scheduler;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use consumers::consumer_prefix;
pub use discovery::DISCOVERY_INTERVAL;
use scheduler::Sched;

use super::Context;
use super::lease::{Held, progress_period};
use super::pending::PendingGauges;
use super::pipeline;
use super::plan::Signal;
use super::shutdown::InFlight;
use crate::broker::StreamSpec;
use crate::keep_trying::retry_until;
use crate::telemetry::server::Health;

/// The function-mode worker of one queue.
pub struct FunctionMode {
    ctx: Arc<Context>,
    stream: StreamSpec,
    health: Arc<Health>,
    sched: Arc<Mutex<Sched>>,
    /// Wakes the dispatcher: a delivery became ready, a slot or a function's room freed up.
    dispatch: Arc<Notify>,
    pending: Mutex<PendingGauges>,
}

impl FunctionMode {
    pub fn new(ctx: Arc<Context>, stream: StreamSpec, health: Arc<Health>) -> FunctionMode {
        FunctionMode {
            ctx,
            stream,
            health,
            sched: Arc::new(Mutex::new(Sched::default())),
            dispatch: Arc::new(Notify::new()),
            pending: Mutex::new(PendingGauges::default()),
        }
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
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
        self.health.set_ready(true);
        let feeders = Feeders::default();
        let in_flight = InFlight::new();
        self.serve(&in_flight, &feeders, &shutdown).await;

        // Shutdown: stop feeders (they give back what they pulled), then the common drain.
        self.health.set_ready(false);
        feeders.stop.cancel();
        feeders.tasks.close();
        feeders.tasks.wait().await;
        let unstarted = self.sched().take_ready();
        in_flight.drain(&self.ctx, unstarted).await;
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
            self.dispatch_ready(&slots, in_flight);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.dispatch.notified() => {}
                _ = discovery.tick() => self.discover(&feeders.tasks, &feeders.stop).await,
                _ = progress.tick() => self.progress_ready().await,
            }
        }
    }

    /// Start as many ready deliveries as slots and the functions' limits allow.
    fn dispatch_ready(&self, slots: &Arc<Semaphore>, in_flight: &InFlight) {
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            let picked = self.sched().pick(self.ctx.config.max_inflight);
            let Some((subject, held)) = picked else {
                return;
            };
            let ctx = self.ctx.clone();
            let sched = self.sched.clone();
            let dispatch = self.dispatch.clone();
            in_flight.spawn(|abandon| async move {
                let signal = run_ready(&ctx, held, &abandon).await;
                sched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .finished(&subject, signal);
                drop(permit);
                dispatch.notify_one();
            });
        }
    }

    /// Progress acks for deliveries waiting in ready queues.
    async fn progress_ready(&self) {
        if self.sched().ready_count() == 0 {
            return;
        }
        // Take the ready deliveries out, progress them, put them back in order.
        let mut taken: Vec<(String, VecDeque<Held>)> = {
            let mut s = self.sched();
            s.functions
                .iter_mut()
                .filter(|(_, f)| !f.ready.is_empty())
                .map(|(k, f)| (k.clone(), std::mem::take(&mut f.ready)))
                .collect()
        };
        let ack_wait = self.ctx.config.ack_wait;
        for (_, q) in &mut taken {
            for held in q.iter_mut() {
                held.renew(ack_wait).await;
            }
            // One whose lease ran out is another worker's now, or soon: leave it to that.
            q.retain(|held| held.lease.holds(tokio::time::Instant::now()));
        }
        let mut s = self.sched();
        for (k, mut q) in taken {
            if let Some(f) = s.functions.get_mut(&k) {
                q.append(&mut f.ready);
                f.ready = q;
                // Room again when leases ran out above: the feeder may pull more.
                f.room.notify_one();
            } else {
                // The function's feeder ended meanwhile: nothing will run these; give back.
                for held in q {
                    tokio::spawn(held.give_back());
                }
            }
        }
        drop(s);
        self.dispatch.notify_one();
    }
}

/// The feeder tasks, and what stops them.
#[derive(Default)]
struct Feeders {
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Run a delivery that waited in a ready queue. It may have waited since its last progress ack:
/// renew the lease before the invocation's own progress acks take over; one whose lease ran out
/// meanwhile is another worker's now (or soon) and is left to its redelivery.
async fn run_ready(ctx: &Context, mut held: Held, abandon: &CancellationToken) -> Signal {
    held.renew(ctx.config.ack_wait).await;
    if held.lease.holds(Instant::now()) {
        return pipeline::run(ctx, held, abandon).await;
    }
    tracing::info!(
        seq = held.delivery.stream_sequence,
        delivery = held.delivery.delivered,
        "Lease lost while waiting: leaving the message to its redelivery"
    );
    Signal::Other
}
