//! The retry policy (pure: no I/O, no clock reads, no global RNG).
//!
//! Decides what happens after one attempt to invoke a function: [`Decision::Success`], a
//! [`Decision::Retry`] after a delay (the caller naks the message with that delay), or a
//! [`Decision::Final`] outcome (the caller posts the callback and, when `exhausted`,
//! dead-letters the message).
//!
//! # What is retried
//!
//! - a status listed in `retry_http_codes` (`com.openfaas.retry.codes`), whatever its class:
//!   the list is honoured as written;
//! - a transport error (connect error, timeout, reset), reported as status 503;
//! - any status >= 400 whose response carries `X-OpenFaaS-Internal` (faas-provider sets it on
//!   its own errors, e.g. a 502 from the gateway while the function scales).
//!
//! Any other status >= 400 (or outside 100–599) is final at once; 1xx, 2xx and 3xx are a
//! success. The attempt number is the JetStream delivery count (1 = first attempt), and
//! `max_retry_attempts` counts every attempt, the first included: with 10, a message is
//! invoked at most 10 times (9 retries).
//!
//! # Delays
//!
//! The delay after attempt `n` is `initial_retry_wait · 2^(n-1)`, capped at `max_retry_wait`,
//! then spread by `backoff`: `exponential` (uniform in `[d - d/5, d]`), `full` (uniform in
//! `[0, d]`) or `equal` (uniform in `[d/2, d]`). Every delay is spread, so calls that failed
//! together do not come back together. A spread delay is never below `min(d, 1ms)`
//! ([`MIN_JITTERED_DELAY`]), so a retry is never immediate unless `initial_retry_wait` is zero:
//! `initial_retry_wait=0s` means "retry at once" (every retry is then immediate, since
//! `0 · 2^n = 0`).
//!
//! On a 429 or 503 carrying a valid `Retry-After` (delta-seconds or an HTTP-date), its value
//! replaces the computed delay, clamped to `[initial_retry_wait, max_retry_wait]`, and spread
//! over a fifth of it upwards (`[r, r + r/5]`, moved down to end at `max_retry_wait` when it
//! would pass it). An invalid `Retry-After` falls back to the computed delay.
//!
//! Worked example with the defaults (10 attempts, 10s initial, 120s max, `exponential`), for a
//! function that always answers 500:
//!
//! | attempt | delay before the next attempt |
//! |--------:|-------------------------------|
//! | 1       | 8–10s                         |
//! | 2       | 16–20s                        |
//! | 3       | 32–40s                        |
//! | 4       | 64–80s                        |
//! | 5 – 9   | 96–120s each (capped)         |
//! | 10      | final: exhausted (callback, then dead letter) |
//!
//! A message that always fails is thus dead-lettered after 675–750s (about 12 minutes) of
//! waiting in total, plus the time of its 10 invocations.
//!
//! # Per-function overrides
//!
//! [`RetryPolicy::with_annotations`] applies `com.openfaas.retry.attempts`,
//! `com.openfaas.retry.codes`, `com.openfaas.retry.min_wait` and `com.openfaas.retry.max_wait`
//! over the worker's defaults. Invalid values are ignored (the default stays) with a warning for
//! the caller to log; an empty value means "not set".
//!
//! # Retry budget
//!
//! [`RetryBudget`] limits retries per function to a fraction of recent first attempts, so a
//! failing downstream gets back-pressure rather than a retry storm. A retry over the budget is
//! deferred ([`deferral`]): it waits a spread delay in `[max_retry_wait/2, max_retry_wait]`
//! (never less than its computed delay) and asks the budget again when it comes back.

mod attempt;
mod budget;
mod decide;
mod policy;

#[cfg(test)]
mod tests;

pub use attempt::AttemptResult;
pub use budget::{
    BUDGET_BUCKETS, DEFAULT_BUDGET_FUNCTIONS, DEFAULT_BUDGET_WINDOW, MIN_RETRIES_PER_WINDOW,
    RetryBudget,
};
pub use decide::{
    Decision, MIN_JITTERED_DELAY, SPREAD, backoff_delay, decide, deferral, parse_retry_after,
    spread_after,
};
pub use policy::{
    ANNOTATION_ATTEMPTS, ANNOTATION_CODES, ANNOTATION_MAX_WAIT, ANNOTATION_MIN_WAIT,
    INTERNAL_HEADER, MAX_ATTEMPTS_LIMIT, RetryPolicy,
};
