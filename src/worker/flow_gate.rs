//! A call's pass through flow control (`src/flow/`) right before it is invoked: calls of a
//! function without limits go straight on; a limited one takes its slot and its place in the
//! pace, or is held back to wait in the ready queue (`ready/`), costing no attempt.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use super::call::Call;
use super::ticks::Ticks;
use crate::flow::{Gate, Limits, Slot, gate, limits, pins};

/// What the gate said of one call.
pub(super) enum Entered {
    /// Invoke it; give the slots back once it ends.
    Go(Vec<Slot>),
    /// Hold it back this long. `cap`: the function's `max_concurrency`, so the worker starts no
    /// more of it at once than that; `keyed`: its flow key's limits held it back, not its
    /// function's, so the function's other calls may go on.
    Wait {
        wait: Duration,
        cap: Option<u32>,
        keyed: bool,
    },
}

/// Pass `call` through its flow key's limits and its function's (each: the operator's pin,
/// else what the message says). A call let through by the first and held back by the second
/// gives its slot of the first back.
pub(super) async fn enter(ctx: &Context, call: &Call<'_>) -> Entered {
    let function = limits(ctx, call);
    let key = flow_key(ctx, call);
    if function.is_none() && key.is_none() {
        return Entered::Go(Vec::new());
    }
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::IgnoreFlowLimits) {
        return Entered::Go(Vec::new());
    }
    let mut slots = Vec::new();
    if let Some((k, limits)) = &key {
        match pass(ctx, call, &gate::key_of_flow_key(k), limits).await {
            Ok(slot) => slots.extend(slot),
            Err(wait) => {
                let (cap, keyed) = (None, true);
                return Entered::Wait { wait, cap, keyed };
            }
        }
    }
    if !function.is_none() {
        match pass(ctx, call, &gate::key_of(&call.function), &function).await {
            Ok(slot) => slots.extend(slot),
            Err(wait) => {
                leave(ctx, call, slots).await;
                let (cap, keyed) = (function.max_concurrency, false);
                return Entered::Wait { wait, cap, keyed };
            }
        }
    }
    Entered::Go(slots)
}

/// One gate (the bucket's `key`): its slot when it lets the call through, else how long to wait.
async fn pass(
    ctx: &Context,
    call: &Call<'_>,
    key: &str,
    limits: &Limits,
) -> Result<Option<Slot>, Duration> {
    let id = format!("{}/{}", call.call_id, call.attempt);
    let now_us = || u64::try_from(ctx.clock.unix_nanos() / 1_000).unwrap_or(u64::MAX);
    let hold = ctx.config.upstream_timeout + gate::HOLD_MARGIN;
    match ctx.flow.enter(key, limits, &id, &now_us, hold).await {
        Ok(Gate::Go(slot)) => Ok(slot),
        Ok(Gate::Wait(wait)) => {
            tracing::debug!(callId = %call.call_id, function = %call.function, wait_ms = wait.as_millis() as u64, "Held back by flow limits");
            Err(wait)
        }
        Err(e) => {
            tracing::warn!(callId = %call.call_id, function = %call.function, error = %e, "Cannot reach the flow limits in NATS; the call waits");
            Err(gate::UNSURE_WAIT)
        }
    }
}

/// Give back the slots a call held (a slot NATS does not take back lapses on its own).
pub(super) async fn leave(ctx: &Context, call: &Call<'_>, slots: Vec<Slot>) {
    for slot in slots {
        if let Err(e) = ctx.flow.leave(slot).await {
            tracing::warn!(callId = %call.call_id, function = %call.function, error = %e, "Cannot give the call's flow slot back; it lapses after upstream_timeout");
        }
    }
}

/// The flow key of `call` (`X-Flow-Control-Key`) and its limits (pinned, else the message's
/// `X-Flow-Control-Value`); `None` without a key or without limits for it. A bad key or value
/// is ignored with a warning.
fn flow_key(ctx: &Context, call: &Call<'_>) -> Option<(String, Limits)> {
    let key = call.req.header_value(limits::KEY_HEADER)?;
    if let Err(e) = limits::check_key(key) {
        tracing::warn!(callId = %call.call_id, function = %call.function, "Ignoring the flow key: {e}");
        return None;
    }
    let from_message = match call.req.header_value(limits::VALUE_HEADER) {
        None => None,
        Some(value) => match Limits::parse_value(value) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(callId = %call.call_id, function = %call.function, "Ignoring the flow value: {e}");
                None
            }
        },
    };
    let limits = ctx.flow.key_limits(key, from_message)?;
    Some((key.to_string(), limits))
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
