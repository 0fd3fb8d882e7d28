//! The worker's part of a call's trace (see [`crate::trace`]): the `queue wait` span, one
//! `invoke` span per attempt (each linked to the attempt before), the `callback` span, and the
//! `traceparent` the function and the callback receiver get. All are children of the span the
//! message carries; nothing here runs when traces are off.

use std::time::SystemTime;

use bytes::Bytes;

use super::Context;
use super::call::Call;
use crate::invoke::InvokeError;
use crate::trace::{Kind, Span, SpanContext, TRACEPARENT};
use crate::wire::QueueRequest;

/// The header the function and the callback receiver read.
const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The span a call's worker spans hang under; `None` when traces are off.
pub(crate) fn call_span(ctx: &Context, req: &QueueRequest, call_id: &str) -> Option<SpanContext> {
    if !ctx.tracer.is_on() {
        return None;
    }
    ctx.tracer.call_span(req.header_value(TRACEPARENT), call_id)
}

/// The span of attempt `n` under `parent`, run `reruns` times before: the same on every
/// replica.
fn attempt_span(parent: &SpanContext, n: u32, reruns: u32) -> SpanContext {
    let first = parent.derived("attempt", n);
    match reruns {
        0 => first,
        again => first.derived("again", again),
    }
}

/// The span of the call's attempt as it runs now.
fn this_attempt(parent: &SpanContext, call: &Call<'_>) -> SpanContext {
    attempt_span(parent, call.attempt, call.reruns)
}

/// The span the attempt follows: the run before it, or the attempt before it.
fn previous_run(parent: &SpanContext, call: &Call<'_>) -> Option<SpanContext> {
    match (call.attempt, call.reruns) {
        (_, again @ 1..) => Some(attempt_span(parent, call.attempt, again - 1)),
        (1, 0) => None,
        (n, 0) => Some(attempt_span(parent, n - 1, 0)),
    }
}

/// The callback's span: under the attempt whose result it posts.
pub(crate) fn callback_span(call: &Call<'_>) -> Option<SpanContext> {
    let parent = call.trace.as_ref()?;
    Some(this_attempt(parent, call).derived("callback", 0))
}

/// Give the function this attempt's `traceparent` (in place of the one the message carries).
pub(crate) fn propagate(call: &Call<'_>, req: &mut http::Request<Bytes>) {
    if let Some(parent) = &call.trace {
        set_traceparent(req.headers_mut(), &this_attempt(parent, call));
    }
}

/// Set `traceparent` to `span`'s context.
pub(crate) fn set_traceparent(headers: &mut http::HeaderMap, span: &SpanContext) {
    if let Ok(v) = http::HeaderValue::from_str(&span.header()) {
        headers.insert(TRACEPARENT_HEADER, v);
    }
}

/// The `queue wait` span: from when the broker stored the message to its first attempt.
pub(crate) fn queue_wait(ctx: &Context, call: &Call<'_>, now: SystemTime) {
    let Some(parent) = &call.trace else {
        return;
    };
    let span = Span::new(
        "queue wait",
        Kind::Internal,
        parent.derived("wait", 0),
        Some(parent),
        call.delivery.published,
        now,
    );
    ctx.tracer.record(about(span, call));
}

/// The `invoke` span of this attempt, from `start` to `end`; failed on a transport error or an
/// HTTP error status.
pub(crate) fn attempt(
    ctx: &Context,
    call: &Call<'_>,
    start: SystemTime,
    status: u16,
    error: Option<&InvokeError>,
) {
    let Some(parent) = &call.trace else {
        return;
    };
    let mut span = Span::new(
        "invoke",
        Kind::Client,
        this_attempt(parent, call),
        Some(parent),
        start,
        ctx.clock.now(),
    )
    .with("queue_worker.attempt", call.attempt)
    .with("http.response.status_code", status);
    if call.reruns > 0 {
        span = span.with("queue_worker.reruns", call.reruns);
    }
    span.links.extend(previous_run(parent, call));
    let span = match error {
        Some(e) => span.failed(e.to_string()),
        None if status >= 400 => span.failed(format!("status {status}")),
        None => span,
    };
    ctx.tracer.record(about(span, call));
}

/// The `callback` span `span` (see [`callback_span`]): `Ok` with the receiver's status, or why
/// the result was not delivered.
pub(crate) fn callback(
    ctx: &Context,
    call: &Call<'_>,
    span: SpanContext,
    start: SystemTime,
    outcome: &Result<u16, String>,
) {
    let parent = call.trace.map(|p| this_attempt(&p, call));
    let span = Span::new(
        "callback",
        Kind::Client,
        span,
        parent.as_ref(),
        start,
        ctx.clock.now(),
    );
    let span = match outcome {
        Ok(status) => span.with("http.response.status_code", *status),
        Err(why) => span.failed(why.clone()),
    };
    ctx.tracer.record(about(span, call));
}

/// The attributes every span of a call has.
fn about(span: Span, call: &Call<'_>) -> Span {
    span.with("queue_worker.call_id", call.call_id.as_str())
        .with("faas.invoked_name", call.function.as_str())
}
