//! Deliveries pulled and waiting to run, per function, and the dispatcher that starts them.
//! Both modes use it: function mode's feeders and static mode's intake file deliveries here;
//! the dispatcher gives each free slot (`max_inflight`) to the next function in round-robin
//! order that has a ready delivery and room under its limit (`sched.rs`), so a backlog for one
//! function cannot starve the others, and a function at its limit is not sent more.
//!
//! A delivery waiting here is kept leased (a progress ack every `ack_wait / 2`), so it does not
//! come back while it waits, and costs no attempt. A call the function refused with a `429`
//! while this worker had other calls in flight to it (back-pressure the worker caused, see
//! [`super::plan`]) is filed again at the front of its function's queue.

mod sched;

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use sched::{FunctionState, Sched};

use super::Context;
use super::company::Company;
use super::lease::Held;
use super::pipeline::{self, HeldBack, Ran};
use super::plan::Signal;
use super::shutdown::InFlight;

/// The ready queues of one worker and what wakes its dispatcher.
pub(crate) struct Ready {
    ctx: Arc<Context>,
    sched: Arc<Mutex<Sched>>,
    /// Wakes the dispatcher: a delivery became ready, a slot or a function's room freed up.
    wake: Arc<Notify>,
}

impl Ready {
    pub(crate) fn new(ctx: Arc<Context>) -> Ready {
        Ready {
            ctx,
            sched: Arc::new(Mutex::new(Sched::default())),
            wake: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn sched(&self) -> MutexGuard<'_, Sched> {
        lock(&self.sched)
    }

    /// The shared schedule, for the tasks that fill it.
    pub(crate) fn shared(&self) -> Arc<Mutex<Sched>> {
        self.sched.clone()
    }

    /// What wakes the dispatcher.
    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Until something may be dispatched.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Start as many ready deliveries as slots and the functions' limits allow.
    pub(crate) fn dispatch(&self, slots: &Arc<Semaphore>, in_flight: &InFlight) {
        self.sched().unpark_due(Instant::now());
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            let picked = self.sched().pick(self.ctx.config.max_inflight);
            let Some((subject, held, company)) = picked else {
                return;
            };
            // Without an adaptive limit a 429 teaches nothing: no call runs again for it.
            let company = self.ctx.config.limiter_enabled.then_some(company);
            let ctx = self.ctx.clone();
            let sched = self.sched.clone();
            let wake = self.wake.clone();
            in_flight.spawn(|abandon| async move {
                let ran = run_ready(&ctx, held, company.as_ref(), &abandon).await;
                // The slot first: `finished` wakes the intake, which counts free slots.
                drop(permit);
                match (ran.held_back, ran.again) {
                    (Some(back), Some(held)) => hold_back(&ctx, &sched, &wake, subject, held, back),
                    (_, again) => lock(&sched).finished(&subject, ran.signal, again),
                }
                wake.notify_one();
            });
        }
    }

    /// Progress acks for deliveries waiting in ready queues; cut short when `stop` fires (a
    /// delivery whose ack did not come is kept on the lease it had).
    pub(crate) async fn progress(&self, stop: &CancellationToken) {
        if self.sched().ready_count() == 0 {
            return;
        }
        // Take the ready deliveries out, progress them, put them back in order.
        let mut taken = self.sched().take_queues();
        let ack_wait = self.ctx.config.ack_wait;
        // All at once: each waits up to a tenth of ack_wait for its confirmation.
        let renewals = taken
            .iter_mut()
            .flat_map(|t| t.all())
            .map(|held| held.renew(ack_wait));
        tokio::select! {
            biased;
            _ = stop.cancelled() => {}
            _ = futures::future::join_all(renewals) => {}
        }
        for t in &mut taken {
            // One whose lease ran out is another worker's now, or soon: leave it to that.
            t.retain(|held| held.lease.holds(Instant::now()));
        }
        let orphans = self.sched().put_back(taken);
        // Their function left the schedule meanwhile: nothing will run these; give back.
        for held in orphans {
            tokio::spawn(held.give_back());
        }
        self.wake.notify_one();
    }
}

/// Put a delivery its flow limits held back first in its queue (its function's limits) or
/// aside (its flow key's), and look again after its wait.
fn hold_back(
    ctx: &Arc<Context>,
    sched: &Arc<Mutex<Sched>>,
    wake: &Arc<Notify>,
    subject: String,
    held: Held,
    back: HeldBack,
) {
    let waiting = match back.keyed {
        true => lock(sched).parked(&subject, held, Instant::now() + back.wait),
        false => lock(sched).held_back(&subject, held, back.cap),
    };
    let function = function_of(ctx, &subject);
    ctx.metrics.flow_waiting(function, waiting);
    let (ctx, sched, wake) = (ctx.clone(), sched.clone(), wake.clone());
    tokio::spawn(async move {
        tokio::time::sleep(back.wait).await;
        let waiting = lock(&sched).look_again(&subject, Instant::now());
        ctx.metrics
            .flow_waiting(function_of(&ctx, &subject), waiting);
        wake.notify_one();
    });
}

/// The function (`name.namespace`) of a subject of this queue.
fn function_of<'a>(ctx: &Context, subject: &'a str) -> &'a str {
    subject
        .strip_prefix(ctx.config.queue_name.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(subject)
}

fn lock(sched: &Mutex<Sched>) -> MutexGuard<'_, Sched> {
    sched.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run a delivery that waited in a ready queue. It may have waited since its last progress ack:
/// renew the lease before the invocation's own progress acks take over; one whose lease ran out
/// meanwhile is another worker's now (or soon) and is left to its redelivery.
async fn run_ready(
    ctx: &Context,
    mut held: Held,
    company: Option<&Company>,
    abandon: &CancellationToken,
) -> Ran {
    held.renew_before_running(ctx.config.ack_wait).await;
    if held.paused && !still_stored(ctx, &held).await {
        tracing::info!(
            seq = held.delivery.stream_sequence,
            "Removed from the queue while paused: not run"
        );
        return Ran {
            signal: Signal::Other,
            again: None,
            held_back: None,
        };
    }
    if held.lease.holds(Instant::now()) {
        return pipeline::run(ctx, held, company, abandon).await;
    }
    tracing::info!(
        seq = held.delivery.stream_sequence,
        delivery = held.delivery.delivered,
        "Lease lost while waiting: leaving the message to its redelivery"
    );
    Ran {
        signal: Signal::Other,
        again: None,
        held_back: None,
    }
}

/// Whether the message of `held` is still in its stream (an operator's purge may have removed
/// it while it waited paused); `true` when the broker cannot say.
async fn still_stored(ctx: &Context, held: &Held) -> bool {
    let seq = held.delivery.stream_sequence;
    match ctx
        .broker
        .next_message(&ctx.config.stream_name(), seq, None)
        .await
    {
        Ok(found) => found.is_some_and(|m| m.sequence == seq),
        Err(_) => true,
    }
}
