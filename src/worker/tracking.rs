//! What the worker tells the call status store ([`crate::status`]): an attempt starts, a plan
//! is carried out. Recording never waits (the writer works in the background); a worker
//! without a store records nothing.

use super::Context;
use super::call::Call;
use super::callback::Reply;
use super::plan::{Plan, Reason, Settle};
use crate::status::{Buckets, Event, Kind, State, key, result, unix_ms};

/// Attempt `call.attempt` starts.
pub fn started(ctx: &Context, call: &Call<'_>) {
    record(
        ctx,
        &call.call_id,
        &call.req.function,
        Kind::Started {
            attempt: call.attempt,
        },
    );
}

/// `plan` is being carried out for `call` (whose function answered `status`).
pub fn planned(ctx: &Context, call: &Call<'_>, plan: &Plan, status: u16) {
    if let Some(kind) = kind_of(plan, call.attempt, Some(status)) {
        record(ctx, &call.call_id, &call.req.function, kind);
    }
}

/// `plan` ends a delivery that was not invoked (poison, past its last attempt), for the call
/// `ids` names when it could be read.
pub fn ended_without_call(ctx: &Context, ids: Option<(&str, &str)>, plan: &Plan) {
    let Some((call_id, function)) = ids else {
        return;
    };
    if let Some(kind) = kind_of(plan, 0, None) {
        record(ctx, call_id, function, kind);
    }
}

/// Keep the call's final response when `plan` ends the call and a result is wanted
/// ([`result::wanted`]). Waits for the write, so the result is there by the time the status
/// says the call ended; a failure is logged, and the call goes on.
pub async fn keep_result(ctx: &Context, call: &Call<'_>, plan: &Plan, reply: &Reply) {
    if ctx.calls.is_none() {
        return;
    }
    // The header only when the setting does not say it already. Its key as Go (the gateway)
    // and the ingress write it: one map lookup per call, not a scan of every header.
    let asked = || {
        let values = call.req.header.get(result::HEADER);
        values.and_then(|v| v.first()).map(String::as_str)
    };
    if !(ctx.config.store_results || result::wanted(false, asked())) {
        return;
    }
    let Some(Kind::Finished { state, .. }) = kind_of(plan, call.attempt, Some(reply.status)) else {
        return;
    };
    let Some(key) = key::of(&call.call_id).filter(|_| state != State::Expired) else {
        return;
    };
    let spec = Buckets::of(&ctx.config).spec(result::bucket(&ctx.config.queue_name));
    let response = (reply.status, &reply.headers, &reply.body);
    let stores = (ctx.broker.as_ref() as _, ctx.broker.as_ref() as _);
    if let Err(e) = result::keep(stores, &spec, &key, response).await {
        tracing::warn!(
            callId = %call.call_id,
            function = %call.function,
            error = %e,
            "Cannot keep the call's result"
        );
    }
}

/// The call was cancelled, after `attempts` attempts started.
pub fn cancelled(ctx: &Context, call: &Call<'_>, attempts: u32) {
    let Some(calls) = &ctx.calls else {
        return;
    };
    let at = unix_ms(ctx.clock.now());
    let event = crate::status::cancel::event(&call.req.function, attempts, at);
    calls.record(&ctx.config.queue_name, &call.call_id, event);
}

fn record(ctx: &Context, call_id: &str, function: &str, kind: Kind) {
    let Some(calls) = &ctx.calls else {
        return;
    };
    let event = Event {
        function: function.to_string(),
        at: unix_ms(ctx.clock.now()),
        kind,
    };
    calls.record(&ctx.config.queue_name, call_id, event);
}

/// The status event a plan stands for; `None` when the call goes on as it is (run again after
/// back-pressure).
pub fn kind_of(plan: &Plan, attempt: u32, status: Option<u16>) -> Option<Kind> {
    if let Some(dl) = &plan.dead_letter {
        let state = match dl.reason {
            Reason::Expired => State::Expired,
            Reason::Failed => State::Failed,
            Reason::Exhausted | Reason::Poison => State::DeadLettered,
        };
        // An expired call was not invoked this time: its attempts are those recorded.
        let attempts = if dl.reason == Reason::Expired {
            0
        } else {
            attempt
        };
        return Some(Kind::Finished {
            state,
            attempts,
            status: dl.status.or(status),
            error: Some(dl.error.clone()),
            reason: Some(dl.reason.as_str().to_string()),
        });
    }
    if let Some(retry) = plan.retry {
        return Some(Kind::Retrying {
            attempt,
            status: status.unwrap_or_default(),
            error: None,
            delay_ms: u64::try_from(retry.delay.as_millis()).unwrap_or(u64::MAX),
        });
    }
    if plan.settle == Settle::Again || !plan.processed {
        return None;
    }
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    Some(Kind::Finished {
        state: if ok { State::Succeeded } else { State::Failed },
        attempts: attempt,
        status,
        error: None,
        reason: None,
    })
}
