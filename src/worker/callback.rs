//! Posting a call's result to its `X-Callback-Url`, retried as [`plan::callback_step`] says.
//! A callback that fails is logged and counted; it never runs the function again.

use std::time::Duration;

use bytes::Bytes;

use super::Context;
use super::call::Call;
use super::plan::{self, CallbackAnswer, CallbackStep};
use super::traced;
use crate::invoke::request::{self, CallbackResult};
use crate::invoke::{InvokeError, guard};

/// Timeout of one callback POST.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the function answered (or what is reported in its place), for the callback.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// How long the invocation took.
    pub duration: Duration,
}

/// Post `reply` to the call's callback URL, if it has one; with traces on, in a `callback`
/// span whose context the receiver gets as `traceparent`.
pub async fn post(ctx: &Context, call: &Call<'_>, reply: Reply) {
    let Some(span) = traced::callback_span(call) else {
        let _ = deliver(ctx, call, reply, None).await;
        return;
    };
    let start = ctx.clock.now();
    if let Some(outcome) = deliver(ctx, call, reply, Some(&span)).await {
        traced::callback(ctx, call, span, start, &outcome);
    }
}

/// Post `reply`, retried as the plan says: `None` when there is nowhere to post it, else the
/// receiver's status or why it did not get it.
async fn deliver(
    ctx: &Context,
    call: &Call<'_>,
    reply: Reply,
    span: Option<&crate::trace::SpanContext>,
) -> Option<Result<u16, String>> {
    let url = match request::callback_url(&call.req) {
        None => return None,
        Some(Ok(u)) => u,
        Some(Err(why)) => {
            tracing::warn!(callId = %call.call_id, function = %call.function, error = %why, "Callback skipped");
            ctx.metrics.callback("invalid_url");
            return Some(Err(why));
        }
    };
    let info = CallbackResult {
        call_id: &call.call_id,
        // As the message names it (`figlet` or `figlet.openfaas-fn`), as OpenFaaS sends it.
        function: &call.req.function,
        status: reply.status,
        duration: reply.duration,
        start_time: &call.start_time,
        retry: call.attempt.saturating_sub(1),
        retry_max: call.policy.max_attempts.saturating_sub(1),
    };
    let log_url = request::loggable_url(&url);
    let log = Posting {
        call,
        url: &log_url,
    };
    if let Err(refused) = guard::check_url(&ctx.config.callback_allowed_hosts, &url) {
        return Some(log.refused(ctx, &refused.0));
    }
    let retries = ctx.config.callback_retries;
    for n in 0..=retries {
        let cb = match prepared(ctx, &log, (&url, &reply, &info), span, n) {
            Ok(cb) => cb,
            Err(ended) => return Some(ended),
        };
        let outcome = ctx.invoker.callback(cb, CALLBACK_TIMEOUT).await;
        if let Err(InvokeError::Refused(why)) = &outcome {
            return Some(log.refused(ctx, why));
        }
        let answer = match &outcome {
            Ok(resp) => CallbackAnswer::Status(resp.status().as_u16()),
            Err(_) => CallbackAnswer::NoAnswer,
        };
        match plan::callback_step(answer, n, retries) {
            CallbackStep::Delivered => return Some(log.delivered(ctx, answer)),
            CallbackStep::Rejected => return Some(log.rejected(ctx, &detail(&outcome))),
            CallbackStep::Failed => return Some(log.failed(ctx, &detail(&outcome), n + 1)),
            CallbackStep::Retry(delay) => {
                tracing::info!(
                    callId = %call.call_id,
                    function = %call.function,
                    url = %log_url,
                    error = %detail(&outcome),
                    delay = delay.as_secs_f64(),
                    "Callback retry"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
    None
}

/// The request of post `n` (where, what, and about which call), with its `traceparent` and
/// signature; `Err` with how the callback ended when it cannot be made.
fn prepared(
    ctx: &Context,
    log: &Posting<'_>,
    (url, reply, info): (&url::Url, &Reply, &CallbackResult<'_>),
    span: Option<&crate::trace::SpanContext>,
    n: u32,
) -> Result<http::Request<Bytes>, Result<u16, String>> {
    let mut cb = match request::callback_request(url, &reply.headers, reply.body.clone(), info) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(callId = %log.call.call_id, function = %log.call.function, url = %log.url, error = %e, "Callback skipped");
            ctx.metrics.callback("invalid_url");
            return Err(Err(e.to_string()));
        }
    };
    if let Some(span) = span {
        traced::set_traceparent(cb.headers_mut(), span);
    }
    signed(ctx, log.call, cb).ok_or_else(|| {
        log.failed(
            ctx,
            "cannot sign the callback (callback_signing_secret_file)",
            n,
        )
    })
}

/// The request with its Standard Webhooks signature when callbacks are signed; `None` when
/// they should be and cannot be (nothing unsigned is sent then).
fn signed(
    ctx: &Context,
    call: &Call<'_>,
    mut cb: http::Request<Bytes>,
) -> Option<http::Request<Bytes>> {
    let Some(signer) = &ctx.signer else {
        return Some(cb);
    };
    let now = ctx
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = cb.body().clone();
    match signer.sign(cb.headers_mut(), &call.call_id, now, &body) {
        Ok(()) => Some(cb),
        Err(e) => {
            tracing::error!(callId = %call.call_id, function = %call.function, error = %e, "Cannot sign the callback");
            None
        }
    }
}

/// What a post that did not get through got, for the logs (formatted only then).
fn detail(outcome: &Result<http::Response<Bytes>, InvokeError>) -> String {
    match outcome {
        Ok(resp) => format!("status {}", resp.status().as_u16()),
        Err(e) => e.to_string(),
    }
}

/// Logs and metrics of one callback's end.
struct Posting<'a> {
    call: &'a Call<'a>,
    url: &'a str,
}

impl Posting<'_> {
    fn delivered(&self, ctx: &Context, answer: CallbackAnswer) -> Result<u16, String> {
        let status = match answer {
            CallbackAnswer::Status(s) => s,
            CallbackAnswer::NoAnswer => 0,
        };
        tracing::info!(
            callId = %self.call.call_id,
            function = %self.call.function,
            url = %self.url,
            status,
            "Posted result"
        );
        ctx.metrics.callback("delivered");
        Ok(status)
    }

    /// The receiver answered for good with an error.
    fn rejected(&self, ctx: &Context, detail: &str) -> Result<u16, String> {
        tracing::warn!(callId = %self.call.call_id, function = %self.call.function, url = %self.url, error = %detail, "Callback rejected");
        ctx.metrics.callback("rejected");
        Err(format!("rejected: {detail}"))
    }

    /// The rules do not let it go where it was asked to: nothing was sent.
    fn refused(&self, ctx: &Context, why: &str) -> Result<u16, String> {
        tracing::warn!(callId = %self.call.call_id, function = %self.call.function, url = %self.url, reason = %why, "Callback refused");
        ctx.metrics.callback("refused");
        Err(format!("refused: {why}"))
    }

    /// Every post failed.
    fn failed(&self, ctx: &Context, detail: &str, posts: u32) -> Result<u16, String> {
        tracing::warn!(
            callId = %self.call.call_id,
            function = %self.call.function,
            url = %self.url,
            error = %detail,
            attempts = posts,
            "Callback failed"
        );
        ctx.metrics.callback("failed");
        Err(format!("failed after {posts} posts: {detail}"))
    }
}
