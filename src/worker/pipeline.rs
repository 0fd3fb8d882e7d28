//! One delivery from receipt to settlement: read the call → [`plan`] → carry the plan out
//! (callback, dead letter, settle), keeping the lease with progress acks meanwhile.
//! `docs/architecture.md` follows one delivery through it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::call::{Call, Unreadable};
use super::callback::{self, Reply};
use super::cancellations::{Admission, Running};
use super::company::Company;
use super::dead_letter;
use super::flow_gate::{self, Entered};
use super::lease::{self, Held, Lease};
use super::payload::{self, Missing};
use super::plan::{self, Attempt, Plan, RetryPlan, Settle, Signal};
use super::retry::{AttemptResult, RetryPolicy};
use super::traced;
use super::tracking;
use crate::broker::{Acker, Delivery};
use crate::invoke::InvokeError;
use crate::rng::PortJitter;

/// The status a cancelled call's callback reports (`X-Function-Status`), as nginx's "client
/// closed request".
pub const CANCELLED_STATUS: u16 = 499;

/// What running a delivery gave.
pub struct Ran {
    /// What the limiter learns.
    pub signal: Signal,
    /// The delivery itself, unsettled, when it is to run again once its function has room: the
    /// function refused it with back-pressure this worker caused (see [`plan::after_call`]),
    /// or its flow limits held it back (`held_back`).
    pub again: Option<Held>,
    /// The function's flow limits held the delivery back: it runs again after this.
    pub held_back: Option<HeldBack>,
}

/// A delivery held back by its function's flow limits (see [`super::flow_gate`]).
#[derive(Debug, Clone, Copy)]
pub struct HeldBack {
    /// Until it may be tried again.
    pub wait: std::time::Duration,
    /// The function's `max_concurrency`, when it has one.
    pub cap: Option<u32>,
    /// Its flow key's limits held it back, not its function's: the function's other calls go on.
    pub keyed: bool,
}

/// Process one delivery to the end (settled, or handed back to run again). `company`: the other
/// calls of its function in this worker, under an adaptive limit. When `abandon` fires (the shutdown grace period is over) the work stops and the
/// message is given back.
pub async fn run(
    ctx: &Context,
    held: Held,
    company: Option<&Company>,
    abandon: &CancellationToken,
) -> Ran {
    let Held {
        delivery,
        mut lease,
        pushed_back,
        paused,
    } = held;
    let acker: &dyn Acker = &*delivery.acker;
    let crowd = Crowd {
        company,
        pushed_back,
    };
    // On the heap, once: the processing future is kilobytes, and the task that runs it (and the
    // runtime, when it spawns the task) would otherwise move it several times per message.
    let lost = AtomicBool::new(false);
    let work = Box::pin(handle(ctx, &delivery, crowd, &lost));
    let (settle, signal) = tokio::select! {
        biased;
        s = lease::keep(acker, &mut lease, ctx.config.ack_wait, &lost, work) => s,
        _ = abandon.cancelled() => (Settle::Nak(None), Signal::Other),
    };
    if let Settle::Hold { wait, cap, keyed } = settle {
        let again = Held {
            delivery,
            lease,
            pushed_back,
            paused,
        };
        return Ran {
            signal,
            again: Some(again),
            held_back: Some(HeldBack { wait, cap, keyed }),
        };
    }
    if settle == Settle::Again {
        let again = Held {
            delivery,
            lease,
            pushed_back: pushed_back.saturating_add(1),
            paused,
        };
        return Ran {
            signal,
            again: Some(again),
            held_back: None,
        };
    }
    let settled = settle_delivery(&delivery, &lease, settle).await;
    if settled && settle == Settle::Ack {
        payload::discard(ctx, &delivery).await;
    }
    Ran {
        signal,
        again: None,
        held_back: None,
    }
}

/// The company a call has in this worker (see [`plan::Attempt`]).
#[derive(Clone, Copy)]
struct Crowd<'a> {
    company: Option<&'a Company>,
    pushed_back: u32,
}

/// Send the settlement. A `nak` goes only while the lease holds: after it may have run out,
/// the message is (or is about to be) another worker's, and a nak would cut that worker's
/// lease short (see [`super::lease`]); the message comes back on its own. `true` when the
/// broker took the settlement.
async fn settle_delivery(delivery: &Delivery, lease: &Lease, settle: Settle) -> bool {
    let acker: &dyn Acker = &*delivery.acker;
    let result = match settle {
        Settle::Ack => acker.ack().await,
        Settle::Nak(_) if !lease.holds(Instant::now()) => {
            tracing::info!(
                seq = delivery.stream_sequence,
                delivery = delivery.delivered,
                "Lease lost while working: not giving the message back (it is redelivered)"
            );
            return false;
        }
        Settle::Nak(delay) => acker.nak(delay).await,
        Settle::Term => acker.term().await,
        Settle::Again | Settle::Hold { .. } => {
            debug_assert!(false, "a delivery to run again is not settled");
            return false;
        }
    };
    let Err(e) = result else {
        return true;
    };
    {
        // Not fatal: the message is redelivered after ack_wait (at-least-once).
        tracing::warn!(
            seq = delivery.stream_sequence,
            error = %e,
            settle = ?settle,
            "Could not settle message; it will be redelivered"
        );
    }
    false
}

/// Read → plan → carry out; the settlement and what the limiter learns. `lease_lost` is set
/// once the delivery may be another worker's ([`lease::keep`]).
async fn handle(
    ctx: &Context,
    delivery: &Delivery,
    crowd: Crowd<'_>,
    lease_lost: &AtomicBool,
) -> (Settle, Signal) {
    let (mut call, http_req) = match Call::read(ctx, delivery) {
        Ok(read) => read,
        Err(Unreadable { ids, error }) => {
            let plan = plan::poison(error);
            let ids = ids.as_ref().map(|(c, f)| (c.as_str(), f.as_str()));
            return (
                carry_out_without_call(ctx, delivery, ids, &plan).await,
                plan.limiter,
            );
        }
    };
    call.reruns = crowd.pushed_back;
    let running = match admit(ctx, &call).await {
        Admission::Go(running) => running,
        Admission::Cancelled => return end_cancelled(ctx, &call, false).await,
    };
    let now = ctx.clock.now();
    if let Some(ended) = end_without_call(ctx, &call, now).await {
        return ended;
    }
    let mut http_req = match payload::fill(ctx, &call, http_req).await {
        Ok(filled) => filled,
        Err(missing) => return without_body(ctx, &call, missing).await,
    };
    // Last before the invocation, so that a call starts right when its limits let it.
    let slots = match flow_gate::enter(ctx, &call).await {
        Entered::Go(slots) => slots,
        Entered::Wait { wait, cap, keyed } => {
            return (Settle::Hold { wait, cap, keyed }, Signal::Other);
        }
    };
    // The steps above may have waited on the broker (the cancel check, the body, the limits)
    // past the lease: then the message is another worker's, and it must not run here too.
    if lease_lost.load(Ordering::Relaxed) {
        flow_gate::leave(ctx, &call, slots).await;
        tracing::info!(
            callId = %call.call_id,
            function = %call.function,
            delivery = delivery.delivered,
            "Lease lost before invoking: leaving the message to its redelivery"
        );
        return (Settle::Nak(None), Signal::Other);
    }
    // A delivery run again after back-pressure is the same attempt: counted once.
    if call.attempt == 1 && crowd.pushed_back == 0 {
        ctx.budget().record_first_attempt(&call.function, std_now());
        let waited = now.duration_since(delivery.published).unwrap_or_default();
        ctx.metrics.queue_delay(waited.as_secs_f64());
        traced::queue_wait(ctx, &call, now);
    }
    traced::propagate(&call, &mut http_req);
    let invoked = invoke_and_plan(ctx, &call, http_req, crowd, &running).await;
    flow_gate::leave(ctx, &call, slots).await;
    let Some((plan, reply)) = invoked else {
        return end_cancelled(ctx, &call, true).await;
    };
    (carry_out(ctx, &call, &plan, reply).await, plan.limiter)
}

/// End or postpone a call whose body is not in the object store: acked when the call already
/// ended (another delivery of it finished and deleted the body), dead-lettered when the body is
/// gone for good, tried again shortly when the store did not answer.
async fn without_body(ctx: &Context, call: &Call<'_>, missing: Missing) -> (Settle, Signal) {
    match missing {
        Missing::Gone(_) if payload::ended_elsewhere(ctx, call).await => {
            tracing::info!(callId = %call.call_id, function = %call.function, delivery = call.delivery.delivered, "Already ended by another delivery; its body is gone");
            (Settle::Ack, Signal::Other)
        }
        Missing::Gone(error) => {
            let plan = plan::poison(error);
            let ids = Some((call.call_id.as_str(), call.function.as_str()));
            let settle = carry_out_without_call(ctx, call.delivery, ids, &plan).await;
            (settle, plan.limiter)
        }
        Missing::Unreadable(e) => {
            tracing::warn!(callId = %call.call_id, function = %call.function, error = %e, "Cannot read the request body from the object store; trying again");
            (Settle::Nak(Some(payload::UNREADABLE_RETRY)), Signal::Other)
        }
    }
}

/// Whether the call may be invoked now, or was cancelled ([`super::cancellations`]).
async fn admit(ctx: &Context, call: &Call<'_>) -> Admission {
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::IgnoreCancels) {
        return Admission::Go(Running::unregistered());
    }
    match &ctx.cancellations {
        Some(cancellations) => cancellations.admit(&call.call_id).await,
        None => Admission::Go(Running::unregistered()),
    }
}

/// End a cancelled call: not invoked (or its invocation aborted, `aborted`); its status says
/// cancelled, its callback (if any) is sent with status 499, and the message is acked.
async fn end_cancelled(ctx: &Context, call: &Call<'_>, aborted: bool) -> (Settle, Signal) {
    tracing::info!(
        callId = %call.call_id,
        function = %call.function,
        delivery = call.delivery.delivered,
        aborted,
        "Cancelled; not invoked again"
    );
    let attempts = if aborted {
        call.attempt
    } else {
        call.attempt.saturating_sub(1)
    };
    tracking::cancelled(ctx, call, attempts);
    let reply = Reply {
        status: CANCELLED_STATUS,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
        duration: std::time::Duration::ZERO,
    };
    callback::post(ctx, call, reply).await;
    ctx.metrics.processed();
    (Settle::Ack, Signal::Other)
}

/// A call that ends without invoking the function: older than `max_message_age` (a 410
/// callback), or delivered past its last attempt (no callback). `None` when it may run.
async fn end_without_call(
    ctx: &Context,
    call: &Call<'_>,
    now: std::time::SystemTime,
) -> Option<(Settle, Signal)> {
    // The age only when there is a limit: parsing X-Start-Time costs hundreds of instructions.
    let expired = ctx
        .config
        .max_message_age
        .and_then(|max| plan::expired(call.age(now), max));
    if let Some(plan) = expired {
        let reply = Reply {
            status: 410,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            duration: std::time::Duration::ZERO,
        };
        return Some((carry_out(ctx, call, &plan, reply).await, plan.limiter));
    }
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::IgnoreLastAttempt) {
        return None;
    }
    let max_attempts = effective_policy(&call.policy).max_attempts;
    let plan = plan::past_last_attempt(call.attempt, max_attempts)?;
    tracing::warn!(
        callId = %call.call_id,
        function = %call.function,
        delivery = call.delivery.delivered,
        max_attempts,
        "Delivered past the last attempt; not invoked again"
    );
    let ids = Some((call.call_id.as_str(), call.function.as_str()));
    let settle = carry_out_without_call(ctx, call.delivery, ids, &plan).await;
    Some((settle, plan.limiter))
}

/// Call the function and plan from what it answered.
async fn invoke_and_plan(
    ctx: &Context,
    call: &Call<'_>,
    http_req: http::Request<bytes::Bytes>,
    crowd: Crowd<'_>,
    running: &Running,
) -> Option<(Plan, Reply)> {
    tracking::started(ctx, call);
    let invoked = invoke(ctx, call, http_req, running).await?;
    let result = match &invoked.result {
        Ok(resp) => AttemptResult::Response {
            status: invoked.status,
            headers: resp.headers(),
        },
        Err(_) => AttemptResult::TransportError,
    };
    let policy = effective_policy(&call.policy);
    let attempt = Attempt {
        policy: &policy,
        number: call.attempt,
        result,
        status: invoked.status,
        now: ctx.clock.now(),
        crowded: crowd.company.is_some_and(Company::crowded),
        pushed_back: crowd.pushed_back,
    };
    let plan = plan::after_call(&attempt, &mut PortJitter(ctx.rng.as_ref()), || {
        ctx.budget().try_retry(&call.function, std_now())
    });
    Some((plan, invoked.into_reply()))
}

/// The call's retry policy (the "teeth" check's deliberate bug may ignore its attempts).
fn effective_policy(policy: &RetryPolicy) -> Cow<'_, RetryPolicy> {
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::IgnoreMaxRetryAttempts) {
        let mut policy = policy.clone();
        policy.max_attempts = super::retry::MAX_ATTEMPTS_LIMIT;
        return Cow::Owned(policy);
    }
    Cow::Borrowed(policy)
}

/// What one invocation gave.
struct Invoked {
    status: u16,
    result: Result<http::Response<bytes::Bytes>, InvokeError>,
    duration: std::time::Duration,
}

impl Invoked {
    fn into_reply(self) -> Reply {
        let (headers, body) = match self.result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                (parts.headers, body)
            }
            Err(_) => (http::HeaderMap::new(), bytes::Bytes::new()),
        };
        Reply {
            status: self.status,
            headers,
            body,
            duration: self.duration,
        }
    }
}

/// Call the function once, with the logs and metrics of an invocation; `None` when the call
/// was cancelled first (`running` aborted: the request is dropped, its connection closed).
async fn invoke(
    ctx: &Context,
    call: &Call<'_>,
    http_req: http::Request<bytes::Bytes>,
    running: &Running,
) -> Option<Invoked> {
    tracing::info!(
        callId = %call.call_id,
        function = %call.function,
        delivery = call.delivery.delivered,
        bytes = http_req.body().len(),
        url = %crate::telemetry::redact::short(http_req.uri().path()),
        "Invoke"
    );
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::AckBeforeInvoke) {
        let _ = call.delivery.acker.ack().await;
    }
    let inflight = ctx.metrics.inflight(&call.metrics);
    inflight.inc();
    let began = call.trace.map(|_| ctx.clock.now());
    let started = Instant::now();
    let invocation = ctx.invoker.invoke(
        http_req,
        ctx.config.upstream_timeout,
        crate::invoke::Attempt(call.delivery.delivered),
    );
    let result = tokio::select! {
        biased;
        result = invocation => result,
        () = running.aborted() => {
            inflight.dec();
            return None;
        }
    };
    let duration = started.elapsed();
    inflight.dec();
    let status = match &result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status(),
    };
    log_invoked(call, status, duration, result.as_ref().err());
    if let Some(began) = began {
        traced::attempt(ctx, call, began, status, result.as_ref().err());
    }
    ctx.metrics
        .invocation(&call.metrics, status, duration.as_secs_f64());
    Some(Invoked {
        status,
        result,
        duration,
    })
}

/// Carry out the plan of a call: retry bookkeeping, callback, processed count, dead letter.
async fn carry_out(ctx: &Context, call: &Call<'_>, plan: &Plan, reply: Reply) -> Settle {
    tracking::keep_result(ctx, call, plan, &reply).await;
    tracking::planned(ctx, call, plan, reply.status);
    if plan.settle == Settle::Again {
        note_pushed_back(ctx, call);
    }
    if let Some(retry) = plan.retry {
        note_retry(ctx, call, reply.status, retry);
    }
    if let Some(status) = plan.callback {
        debug_assert_eq!(
            status, reply.status,
            "the callback reports the reply's status"
        );
        callback::post(ctx, call, reply).await;
    }
    if plan.processed {
        ctx.metrics.processed();
    }
    match &plan.dead_letter {
        Some(dl) => {
            let ids = Some((call.call_id.as_str(), call.function.as_str()));
            dead_letter::park(ctx, call.delivery, ids, dl).await
        }
        None => plan.settle,
    }
}

/// Carry out the plan of a delivery that is not invoked (a dead letter only): poison, or
/// delivered past its last attempt.
async fn carry_out_without_call(
    ctx: &Context,
    delivery: &Delivery,
    ids: Option<(&str, &str)>,
    plan: &Plan,
) -> Settle {
    debug_assert!(plan.callback.is_none() && plan.retry.is_none() && !plan.processed);
    tracking::ended_without_call(ctx, ids, plan);
    match &plan.dead_letter {
        Some(dl) => dead_letter::park(ctx, delivery, ids, dl).await,
        None => plan.settle,
    }
}

/// The log and metric of a call refused with back-pressure this worker caused.
fn note_pushed_back(ctx: &Context, call: &Call<'_>) {
    tracing::info!(
        callId = %call.call_id,
        function = %call.function,
        delivery = call.delivery.delivered,
        "Function busy (429 while this worker ran other calls of it); waiting for room"
    );
    ctx.metrics.pushed_back(&call.metrics);
}

/// The logs and metrics of a retry.
fn note_retry(ctx: &Context, call: &Call<'_>, status: u16, retry: RetryPlan) {
    if retry.budget_spent {
        ctx.metrics.retry_budget_exceeded(&call.metrics);
        tracing::warn!(
            callId = %call.call_id,
            function = %call.function,
            "Retry budget spent; retrying after the maximum wait"
        );
    }
    tracing::info!(
        callId = %call.call_id,
        function = %call.function,
        delivery = call.delivery.delivered,
        status,
        delay = retry.delay.as_secs_f64(),
        "Retry"
    );
    ctx.metrics.retry(&call.metrics, status);
}

/// `std::time::Instant` for the retry budget, from tokio's clock (simulated in tests).
fn std_now() -> std::time::Instant {
    Instant::now().into_std()
}

fn log_invoked(
    call: &Call<'_>,
    status: u16,
    duration: std::time::Duration,
    err: Option<&InvokeError>,
) {
    match err {
        None => tracing::info!(
            callId = %call.call_id,
            function = %call.function,
            delivery = call.delivery.delivered,
            status,
            duration = duration.as_secs_f64(),
            "Invoked"
        ),
        Some(e) => tracing::warn!(
            callId = %call.call_id,
            function = %call.function,
            delivery = call.delivery.delivered,
            status,
            duration = duration.as_secs_f64(),
            error = %e,
            "Invoked"
        ),
    }
}
