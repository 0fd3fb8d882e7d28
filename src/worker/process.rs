//! Processing one delivery: decode → invoke (with progress acks) → callback → settle.

use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::Context;
use super::dead_letter::{self, DeadLetter, Reason};
use super::outcome::{self, Settle};
use crate::broker::{Acker, Delivery};
use crate::invoke::request::{self, CallbackResult};
use crate::wire::{self, QueueRequest};

/// Process one delivery to the end (settled), sending progress acks while it works. When
/// `abandon` fires (shutdown grace period over) the work stops and the message is given back.
pub async fn run(ctx: &Context, delivery: Delivery, abandon: &CancellationToken) {
    let acker: &dyn Acker = &*delivery.acker;
    let work = handle(ctx, &delivery);
    let settle = tokio::select! {
        s = with_progress(acker, ctx.config.ack_wait, work) => s,
        _ = abandon.cancelled() => Settle::Nak(None),
    };
    let result = match settle {
        Settle::Ack => acker.ack().await,
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

/// Run `work`, telling the broker every `ack_wait / 2` that the message is still in progress.
async fn with_progress<F: Future<Output = Settle>>(
    acker: &dyn Acker,
    ack_wait: Duration,
    work: F,
) -> Settle {
    let period = (ack_wait / 2).max(Duration::from_millis(50));
    let ticker = async {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = acker.progress().await {
                tracing::debug!(error = %e, "Progress ack failed");
            }
        }
    };
    tokio::select! {
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

async fn handle(ctx: &Context, delivery: &Delivery) -> Settle {
    let req = match wire::decode(&delivery.payload) {
        Ok(r) => r,
        Err(reason) => {
            return dead_letter::park(
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
        }
    };
    let call_id = call_id(&req, delivery);
    let (name, namespace) = wire::split_function(&req.function, &ctx.config.default_function_name);
    let function = format!("{name}.{namespace}");
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

    let http_req =
        match request::function_request(&ctx.config.gateway_url, &req, &call_id, &start_time) {
            Ok(r) => r,
            Err(e) => {
                return dead_letter::park(
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
            }
        };

    let labels = ctx.metrics.function(&function);
    if delivery.delivered == 1 {
        let waited = ctx
            .clock
            .now()
            .duration_since(delivery.published)
            .unwrap_or(Duration::ZERO);
        ctx.metrics.queue_delay(waited.as_secs_f64());
    }
    tracing::info!(
        callId = %call_id,
        function = %function,
        delivery = delivery.delivered,
        bytes = req.body.len(),
        url = %http_req.uri().path(),
        "Invoke"
    );
    let inflight = ctx.metrics.inflight(&labels);
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
    match &result {
        Ok(_) => tracing::info!(
            callId = %call_id,
            function = %function,
            delivery = delivery.delivered,
            status,
            duration = duration.as_secs_f64(),
            "Invoked"
        ),
        Err(e) => tracing::warn!(
            callId = %call_id,
            function = %function,
            delivery = delivery.delivered,
            status,
            duration = duration.as_secs_f64(),
            error = %e,
            "Invoked"
        ),
    }
    ctx.metrics
        .invocation(&labels, status, duration.as_secs_f64());

    let decision = outcome::decide(status);
    let attempts = u32::try_from(delivery.delivered).unwrap_or(u32::MAX);
    let result_info = CallbackResult {
        call_id: &call_id,
        function: &function,
        status,
        duration,
        start_time: &start_time,
        retry: attempts.saturating_sub(1),
        retry_max: ctx.config.max_retry_attempts,
    };
    post_callback(ctx, &req, result, &result_info).await;
    ctx.metrics.processed();
    decision
}

/// Post the final result to the message's callback URL, if it has one. A callback failure is
/// logged and counted; it never causes the function to run again.
async fn post_callback(
    ctx: &Context,
    req: &QueueRequest,
    result: Result<http::Response<bytes::Bytes>, crate::invoke::InvokeError>,
    info: &CallbackResult<'_>,
) {
    let url = match request::callback_url(req) {
        None => return,
        Some(Ok(u)) => u,
        Some(Err(why)) => {
            tracing::warn!(callId = %info.call_id, function = %info.function, error = %why, "Callback skipped");
            ctx.metrics.callback("invalid_url");
            return;
        }
    };
    let (headers, body) = match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            (parts.headers, body)
        }
        Err(_) => (http::HeaderMap::new(), bytes::Bytes::new()),
    };
    let log_url = request::loggable_url(&url);
    let cb = match request::callback_request(&url, &headers, body, info) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(callId = %info.call_id, function = %info.function, url = %log_url, error = %e, "Callback skipped");
            ctx.metrics.callback("invalid_url");
            return;
        }
    };
    match ctx.invoker.callback(cb, super::CALLBACK_TIMEOUT).await {
        Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => {
            tracing::info!(
                callId = %info.call_id,
                function = %info.function,
                url = %log_url,
                status = resp.status().as_u16(),
                "Posted result"
            );
            ctx.metrics.callback("delivered");
        }
        Ok(resp) => {
            tracing::warn!(
                callId = %info.call_id,
                function = %info.function,
                url = %log_url,
                status = resp.status().as_u16(),
                "Callback rejected"
            );
            ctx.metrics.callback("rejected");
        }
        Err(e) => {
            tracing::warn!(
                callId = %info.call_id,
                function = %info.function,
                url = %log_url,
                error = %e,
                "Callback failed"
            );
            ctx.metrics.callback("failed");
        }
    }
}
