//! Processing one delivery: decode → (expired?) → invoke with progress acks → decide (retry
//! policy) → callback → settle.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::dead_letter::{self, DeadLetter, Reason};
use super::lease::{self, Held, Lease};
use super::outcome::Settle;
use super::retry::{self, AttemptResult, Decision, RetryPolicy};
use crate::broker::{Acker, Delivery};
use crate::invoke::InvokeError;
use crate::invoke::request::{self, CallbackResult};
use crate::rng::PortJitter;
use crate::telemetry::metrics::FunctionLabels;
use crate::wire::{self, QueueRequest};

/// Process one delivery to the end (settled), keeping its `lease` with progress acks while it
/// works. When `abandon` fires (shutdown grace period over) the work stops and the message is
/// given back. Returns the function's status when it was invoked (for the adaptive limiter).
pub async fn run(ctx: &Context, held: Held, abandon: &CancellationToken) -> Option<u16> {
    let Held {
        delivery,
        mut lease,
    } = held;
    let acker: &dyn Acker = &*delivery.acker;
    // On the heap, once: the processing future is kilobytes, and the task that runs it (and the
    // runtime, when it spawns the task) would otherwise move it several times per message.
    let work = Box::pin(handle(ctx, &delivery));
    let (settle, status) = tokio::select! {
        biased;
        s = with_progress(acker, &mut lease, ctx.config.ack_wait, work) => s,
        _ = abandon.cancelled() => (Settle::Nak(None), None),
    };
    settle_delivery(&delivery, &lease, settle).await;
    status
}

/// Send the settlement. A `nak` goes only while the lease holds: after it may have run out,
/// the message is (or is about to be) another worker's, and a nak would cut that worker's
/// lease short (see [`super::lease`]); the message comes back on its own.
async fn settle_delivery(delivery: &Delivery, lease: &Lease, settle: Settle) {
    let acker: &dyn Acker = &*delivery.acker;
    let result = match settle {
        Settle::Ack => acker.ack().await,
        Settle::Nak(_) if !lease.holds(Instant::now()) => {
            tracing::info!(
                seq = delivery.stream_sequence,
                delivery = delivery.delivered,
                "Lease lost while working: not giving the message back (it is redelivered)"
            );
            return;
        }
        Settle::Nak(delay) => acker.nak(delay).await,
        Settle::Term => acker.term().await,
    };
    if let Err(e) = result {
        // Not fatal: the message is redelivered after ack_wait (at-least-once).
        tracing::warn!(
            seq = delivery.stream_sequence,
            error = %e,
            settle = ?settle,
            "Could not settle message; it will be redelivered"
        );
    }
}

/// How often a delivery being worked on gets a progress ack: twice per `ack_wait`.
pub fn progress_period(ack_wait: Duration) -> Duration {
    (ack_wait / 2).max(Duration::from_millis(50))
}

/// Run `work`, renewing the lease every `ack_wait / 2` (sooner after a failed progress ack).
async fn with_progress<T, F: Future<Output = T>>(
    acker: &dyn Acker,
    lease: &mut Lease,
    ack_wait: Duration,
    work: F,
) -> T {
    let period = progress_period(ack_wait);
    let ticker = async {
        let mut next = Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            #[cfg(feature = "buggify")]
            if crate::buggify::on(crate::buggify::Bug::DropProgressAcks) {
                next += period;
                continue;
            }
            let sent = Instant::now();
            next = if lease::renew(acker, lease, ack_wait).await {
                sent + period
            } else if lease.holds(Instant::now()) {
                Instant::now() + lease::progress_retry(ack_wait)
            } else {
                // Lost: nothing more to renew (see `lease::renew`).
                std::future::pending::<()>().await;
                next
            };
        }
    };
    tokio::select! {
        biased;
        s = work => s,
        never = ticker => never,
    }
}

/// The call id of a message: `X-Call-Id`, else the publisher's `Nats-Msg-Id`, else one derived
/// from the stream sequence (stable across redeliveries).
fn call_id(req: &QueueRequest, delivery: &Delivery) -> String {
    if let Some(id) = req.call_id().filter(|s| !s.is_empty()) {
        return id.to_string();
    }
    delivery
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(crate::broker::MSG_ID_HEADER))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| format!("seq-{}", delivery.stream_sequence))
}

/// When the invocation was enqueued: `X-Start-Time` (unix ns) when it parses, else the time
/// the broker stored the message.
fn enqueued_at(start_time: &str, delivery: &Delivery) -> SystemTime {
    start_time
        .parse::<u64>()
        .ok()
        .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns))
        .unwrap_or(delivery.published)
}

/// One invocation being processed (what every step needs to know).
struct Call<'a> {
    delivery: &'a Delivery,
    req: QueueRequest,
    call_id: String,
    function: String,
    labels: FunctionLabels,
    start_time: String,
    attempt: u32,
    policy: RetryPolicy,
}

/// The settlement, and the function's status when it was invoked.
async fn handle(ctx: &Context, delivery: &Delivery) -> (Settle, Option<u16>) {
    let req = match wire::decode(&delivery.payload) {
        Ok(r) => r,
        Err(reason) => {
            let settle = dead_letter::park(
                ctx,
                delivery,
                DeadLetter {
                    reason: Reason::Poison,
                    call_id: None,
                    function: None,
                    status: None,
                    error: reason.to_string(),
                },
            )
            .await;
            return (settle, None);
        }
    };
    let call_id = call_id(&req, delivery);
    let (name, namespace) = wire::split_function(&req.function, &ctx.config.default_function_name);
    let mut function = String::with_capacity(name.len() + 1 + namespace.len());
    function.push_str(name);
    function.push('.');
    function.push_str(namespace);
    let start_time = req
        .header_value("X-Start-Time")
        .map(str::to_string)
        .unwrap_or_else(|| {
            delivery
                .published
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos().to_string())
                .unwrap_or_default()
        });
    let mut http_req =
        match request::function_request(&ctx.config.gateway_url, &req, &call_id, &start_time) {
            Ok(r) => r,
            Err(e) => {
                let settle = dead_letter::park(
                    ctx,
                    delivery,
                    DeadLetter {
                        reason: Reason::Poison,
                        call_id: Some(call_id),
                        function: Some(function),
                        status: None,
                        error: e.to_string(),
                    },
                )
                .await;
                return (settle, None);
            }
        };
    let policy = if req.annotations.is_empty() {
        ctx.retry_policy.clone()
    } else {
        let (policy, warnings) = ctx.retry_policy.with_annotations(&req.annotations);
        for w in warnings {
            tracing::warn!(callId = %call_id, function = %function, "{w}");
        }
        policy
    };
    let call = Call {
        delivery,
        labels: ctx.metrics.function(&function),
        attempt: u32::try_from(delivery.delivered).unwrap_or(u32::MAX).max(1),
        req,
        call_id,
        function,
        start_time,
        policy,
    };

    // Too old to run: tell the caller (410) and keep it as a dead letter.
    let now = ctx.clock.now();
    if let Some(max_age) = ctx.config.max_message_age {
        let age = now
            .duration_since(enqueued_at(&call.start_time, delivery))
            .unwrap_or(Duration::ZERO);
        if age > max_age {
            post_callback(
                ctx,
                &call,
                410,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::ZERO,
            )
            .await;
            ctx.metrics.processed();
            let settle = dead_letter::park(
                ctx,
                delivery,
                DeadLetter {
                    reason: Reason::Expired,
                    call_id: Some(call.call_id.clone()),
                    function: Some(call.function.clone()),
                    status: Some(410),
                    error: format!(
                        "enqueued {:.3}s ago, over max_message_age {:?}",
                        age.as_secs_f64(),
                        max_age
                    ),
                },
            )
            .await;
            return (settle, None);
        }
    }

    if call.attempt == 1 {
        ctx.budget().record_first_attempt(&call.function, std_now());
        let waited = now
            .duration_since(delivery.published)
            .unwrap_or(Duration::ZERO);
        ctx.metrics.queue_delay(waited.as_secs_f64());
    }

    tracing::info!(
        callId = %call.call_id,
        function = %call.function,
        delivery = delivery.delivered,
        bytes = call.req.body.len(),
        url = %http_req.uri().path(),
        "Invoke"
    );
    #[cfg(feature = "buggify")]
    if crate::buggify::on(crate::buggify::Bug::AckBeforeInvoke) {
        let _ = delivery.acker.ack().await;
    }
    http_req
        .extensions_mut()
        .insert(crate::invoke::Attempt(delivery.delivered));
    let inflight = ctx.metrics.inflight(&call.labels);
    inflight.inc();
    let started = Instant::now();
    let result = ctx
        .invoker
        .invoke(http_req, ctx.config.upstream_timeout)
        .await;
    let duration = started.elapsed();
    inflight.dec();
    let status = match &result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status(),
    };
    log_invoked(&call, status, duration, result.as_ref().err());
    ctx.metrics
        .invocation(&call.labels, status, duration.as_secs_f64());

    let attempt_result = match &result {
        Ok(resp) => AttemptResult::Response {
            status,
            headers: resp.headers(),
        },
        Err(_) => AttemptResult::TransportError,
    };
    #[cfg(feature = "buggify")]
    let call = {
        let mut call = call;
        if crate::buggify::on(crate::buggify::Bug::IgnoreMaxRetryAttempts) {
            call.policy.max_attempts = retry::MAX_ATTEMPTS_LIMIT;
        }
        call
    };
    let decision = {
        let mut jitter = PortJitter(ctx.rng.as_ref());
        retry::decide(
            &call.policy,
            call.attempt,
            &attempt_result,
            ctx.clock.now(),
            &mut jitter,
        )
    };
    let (headers, body) = match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            (parts.headers, body)
        }
        Err(_) => (http::HeaderMap::new(), Bytes::new()),
    };
    let settle = match decision {
        Decision::Success => {
            post_callback(ctx, &call, status, headers, body, duration).await;
            ctx.metrics.processed();
            Settle::Ack
        }
        Decision::Retry { delay } => {
            let delay = if ctx.budget().try_retry(&call.function, std_now()) {
                delay
            } else {
                ctx.metrics.retry_budget_exceeded(&call.labels);
                tracing::warn!(
                    callId = %call.call_id,
                    function = %call.function,
                    "Retry budget spent; retrying after the maximum wait"
                );
                call.policy.max_wait.max(delay)
            };
            tracing::info!(
                callId = %call.call_id,
                function = %call.function,
                delivery = delivery.delivered,
                status,
                delay = delay.as_secs_f64(),
                "Retry"
            );
            ctx.metrics.retry(&call.labels, status);
            Settle::Nak(Some(delay))
        }
        Decision::Final { exhausted } => {
            post_callback(ctx, &call, status, headers, body, duration).await;
            ctx.metrics.processed();
            let (reason, error) = if exhausted {
                (
                    Reason::Exhausted,
                    format!(
                        "status {status} after {} of {} attempts",
                        call.attempt, call.policy.max_attempts
                    ),
                )
            } else {
                (Reason::Failed, format!("status {status} is not retryable"))
            };
            dead_letter::park(
                ctx,
                delivery,
                DeadLetter {
                    reason,
                    call_id: Some(call.call_id.clone()),
                    function: Some(call.function.clone()),
                    status: Some(status),
                    error,
                },
            )
            .await
        }
    };
    (settle, Some(status))
}

/// `std::time::Instant` for the retry budget, from tokio's clock (simulated in tests).
fn std_now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn log_invoked(call: &Call<'_>, status: u16, duration: Duration, err: Option<&InvokeError>) {
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

/// Delay before callback retry `n` (0-based): 1 s, 2 s, 4 s, ... at most 30 s.
pub fn callback_retry_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(5)).min(Duration::from_secs(30))
}

/// Post the final result to the message's callback URL, if it has one. Transport errors and
/// 5xx (and 408/429) answers are retried `callback_retries` times with back-off; other answers
/// are final. A callback failure is logged and counted; it never causes the function to run
/// again.
async fn post_callback(
    ctx: &Context,
    call: &Call<'_>,
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    duration: Duration,
) {
    let url = match request::callback_url(&call.req) {
        None => return,
        Some(Ok(u)) => u,
        Some(Err(why)) => {
            tracing::warn!(callId = %call.call_id, function = %call.function, error = %why, "Callback skipped");
            ctx.metrics.callback("invalid_url");
            return;
        }
    };
    let info = CallbackResult {
        call_id: &call.call_id,
        function: &call.function,
        status,
        duration,
        start_time: &call.start_time,
        retry: call.attempt.saturating_sub(1),
        retry_max: call.policy.max_attempts.saturating_sub(1),
    };
    let log_url = request::loggable_url(&url);
    let retries = ctx.config.callback_retries;
    for n in 0..=retries {
        let cb = match request::callback_request(&url, &headers, body.clone(), &info) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(callId = %call.call_id, function = %call.function, url = %log_url, error = %e, "Callback skipped");
                ctx.metrics.callback("invalid_url");
                return;
            }
        };
        let outcome = ctx.invoker.callback(cb, super::CALLBACK_TIMEOUT).await;
        let retryable = match &outcome {
            Ok(resp) => {
                let s = resp.status();
                if s.is_success() || s.is_redirection() || s.is_informational() {
                    tracing::info!(
                        callId = %call.call_id,
                        function = %call.function,
                        url = %log_url,
                        status = s.as_u16(),
                        "Posted result"
                    );
                    ctx.metrics.callback("delivered");
                    return;
                }
                s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429
            }
            Err(_) => true,
        };
        let detail = match &outcome {
            Ok(resp) => format!("status {}", resp.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if !retryable {
            tracing::warn!(callId = %call.call_id, function = %call.function, url = %log_url, error = %detail, "Callback rejected");
            ctx.metrics.callback("rejected");
            return;
        }
        if n == retries {
            tracing::warn!(
                callId = %call.call_id,
                function = %call.function,
                url = %log_url,
                error = %detail,
                attempts = n + 1,
                "Callback failed"
            );
            ctx.metrics.callback("failed");
            return;
        }
        let delay = callback_retry_delay(n);
        tracing::info!(
            callId = %call.call_id,
            function = %call.function,
            url = %log_url,
            error = %detail,
            delay = delay.as_secs_f64(),
            "Callback retry"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_retry_delays_double_and_cap() {
        let d: Vec<u64> = (0..8).map(|n| callback_retry_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
