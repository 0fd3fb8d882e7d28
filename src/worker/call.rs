//! Reading a delivery: the invocation it carries, and everything the steps after need to know
//! of it (call id, function, attempt, retry policy, its metrics, the function request).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::Context;
use super::retry::RetryPolicy;
use crate::broker::{Delivery, MSG_ID_HEADER};
use crate::invoke::request;
use crate::telemetry::metrics::FunctionMetrics;
use crate::wire::{self, QueueRequest};

/// One invocation being processed.
pub struct Call<'a> {
    pub delivery: &'a Delivery,
    pub req: QueueRequest,
    pub call_id: String,
    /// `name.namespace`.
    pub function: String,
    pub metrics: FunctionMetrics,
    /// `X-Start-Time` (unix ns), or when the broker stored the message.
    pub start_time: String,
    /// JetStream's delivery count (1 = first attempt).
    pub attempt: u32,
    /// The worker's policy with the message's annotations applied.
    pub policy: RetryPolicy,
    /// The span its worker spans hang under (see [`super::traced`]); `None`: traces off.
    pub trace: Option<crate::trace::SpanContext>,
    /// Times this attempt ran before, refused with back-pressure this worker caused (it runs
    /// again without spending an attempt, see [`super::plan::after_call`]).
    pub reruns: u32,
}

/// A delivery that cannot be invoked (poison).
pub struct Unreadable {
    /// Call id and function, when the message said them.
    pub ids: Option<(String, String)>,
    /// Why, in one line.
    pub error: String,
}

impl<'a> Call<'a> {
    /// Decode the delivery and build the function request.
    pub fn read(
        ctx: &Context,
        delivery: &'a Delivery,
    ) -> Result<(Call<'a>, http::Request<Bytes>), Unreadable> {
        let mut req = wire::decode(&delivery.payload).map_err(|reason| Unreadable {
            ids: None,
            error: reason.to_string(),
        })?;
        let call_id = call_id(&req, delivery);
        let function = function_name(&req.function, &ctx.config.default_function_name);
        let start_time = start_time(&req, delivery);
        let built = request::function_request(&ctx.config.gateway_url, &req, &call_id, &start_time);
        let http_req = match built {
            Ok(r) => r,
            Err(e) => {
                return Err(Unreadable {
                    ids: Some((call_id, function)),
                    error: e.to_string(),
                });
            }
        };
        // The request holds the body from here on, and lets go of it once sent: nothing after
        // needs it (a dead letter keeps the delivery's own bytes).
        req.body = Bytes::new();
        let policy = policy(ctx, &req, &call_id, &function);
        let trace = super::traced::call_span(ctx, &req, &call_id);
        let call = Call {
            delivery,
            metrics: ctx.metrics.function(&function),
            attempt: u32::try_from(delivery.delivered).unwrap_or(u32::MAX).max(1),
            req,
            call_id,
            function,
            start_time,
            policy,
            trace,
            reruns: 0,
        };
        Ok((call, http_req))
    }

    /// How long ago the invocation was enqueued (at `now`).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(enqueued_at(&self.start_time, self.delivery))
            .unwrap_or(Duration::ZERO)
    }
}

/// `name.namespace`, the namespace defaulting to `default_namespace`.
fn function_name(function: &str, default_namespace: &str) -> String {
    let (name, namespace) = wire::split_function(function, default_namespace);
    let mut out = String::with_capacity(name.len() + 1 + namespace.len());
    out.push_str(name);
    out.push('.');
    out.push_str(namespace);
    out
}

/// `X-Start-Time` as sent, else when the broker stored the message (unix ns).
fn start_time(req: &QueueRequest, delivery: &Delivery) -> String {
    req.header_value("X-Start-Time")
        .map(str::to_string)
        .unwrap_or_else(|| {
            delivery
                .published
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos().to_string())
                .unwrap_or_default()
        })
}

/// The worker's policy, with the message's `com.openfaas.retry.*` annotations applied (bad
/// values are ignored with a warning).
fn policy(ctx: &Context, req: &QueueRequest, call_id: &str, function: &str) -> RetryPolicy {
    if req.annotations.is_empty() {
        return ctx.retry_policy.clone();
    }
    let (policy, warnings) = ctx.retry_policy.with_annotations(&req.annotations);
    for w in warnings {
        tracing::warn!(callId = %call_id, function = %function, "{w}");
    }
    policy
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
        .find(|(k, _)| k.eq_ignore_ascii_case(MSG_ID_HEADER))
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
