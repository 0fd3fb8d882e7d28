//! A call's pass through flow control (`src/flow/`) right before it is invoked: calls of a
//! function without limits go straight on; a limited one takes its slot and its place in the
//! pace, or is held back to wait in the ready queue (`ready/`), costing no attempt.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use super::call::Call;
use super::ticks::Ticks;
use crate::flow::{Gate, Limits, Slot, gate, pins};

/// What the gate said of one call.
pub(super) enum Entered {
    /// Invoke it; give the slot back once it ends.
    Go(Option<Slot>),
    /// Hold it back this long; `cap` is the function's `max_concurrency`, so the worker starts
    /// no more of it at once than that.
    Wait { wait: Duration, cap: Option<u32> },
}

/// Pass `call` through its function's flow limits (the operator's pin, else its annotations).
pub(super) async fn enter(ctx: &Context, call: &Call<'_>) -> Entered {
    let limits = limits(ctx, call);
    if limits.is_none() {
        return Entered::Go(None);
    }
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::IgnoreFlowLimits) {
        return Entered::Go(None);
    }
    let id = format!("{}/{}", call.call_id, call.attempt);
    let now_us = || u64::try_from(ctx.clock.unix_nanos() / 1_000).unwrap_or(u64::MAX);
    let hold = ctx.config.upstream_timeout + gate::HOLD_MARGIN;
    let cap = limits.max_concurrency;
    match ctx
        .flow
        .enter(&call.function, &limits, &id, &now_us, hold)
        .await
    {
        Ok(Gate::Go(slot)) => Entered::Go(slot),
        Ok(Gate::Wait(wait)) => {
            tracing::debug!(callId = %call.call_id, function = %call.function, wait_ms = wait.as_millis() as u64, "Held back by the function's flow limits");
            Entered::Wait { wait, cap }
        }
        Err(e) => {
            tracing::warn!(callId = %call.call_id, function = %call.function, error = %e, "Cannot reach the flow limits in NATS; the call waits");
            Entered::Wait {
                wait: gate::UNSURE_WAIT,
                cap,
            }
        }
    }
}

/// Give back the slot a call held (a slot NATS does not take back lapses on its own).
pub(super) async fn leave(ctx: &Context, call: &Call<'_>, slot: Option<Slot>) {
    let Some(slot) = slot else { return };
    if let Err(e) = ctx.flow.leave(slot).await {
        tracing::warn!(callId = %call.call_id, function = %call.function, error = %e, "Cannot give the call's flow slot back; it lapses after upstream_timeout");
    }
}

/// The limits of `call`'s function: pinned, else from its annotations (bad ones are ignored
/// with a warning).
fn limits(ctx: &Context, call: &Call<'_>) -> Limits {
    let from_message = if call.req.annotations.is_empty() {
        Limits::default()
    } else {
        let (limits, warnings) = Limits::from_annotations(&call.req.annotations);
        for w in warnings {
            tracing::warn!(callId = %call.call_id, function = %call.function, "{w}");
        }
        limits
    };
    ctx.flow.limits(&call.function, from_message)
}

/// Follow the limits an operator pinned, every [`pins::LOOK_EVERY`] until `stop` (looked up
/// once by the caller first, so a worker never starts a pinned function's call unpinned).
pub(super) async fn follow_pins(ctx: std::sync::Arc<Context>, stop: CancellationToken) {
    let mut ticks = Ticks::new(pins::LOOK_EVERY, &stop);
    while ticks.next().await {
        if ticks.run(look_pins(&ctx)).await.is_none() {
            return;
        }
    }
}

/// Read the pinned limits once; when NATS cannot say, the ones followed so far stay.
pub(super) async fn look_pins(ctx: &Context) {
    let bucket = crate::flow::bucket(&ctx.config.queue_name);
    match pins::read(ctx.broker.as_ref(), &bucket).await {
        Ok((pinned, _)) => ctx.flow.set_pins(pinned),
        Err(e) => tracing::debug!(error = %e, "Cannot read pinned flow limits"),
    }
}
