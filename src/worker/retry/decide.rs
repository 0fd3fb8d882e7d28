//! What follows an attempt: success, a retry after a delay (back-off with jitter, or
//! `Retry-After`), or a final outcome.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;

use crate::config::Backoff;
use crate::rng::Jitter;

use super::attempt::AttemptResult;
use super::policy::{RetryPolicy, is_error_status};

/// A jittered delay is never below `min(d, MIN_JITTERED_DELAY)` (`d` = the computed delay), so
/// `full` jitter cannot turn a non-zero delay into an immediate redelivery.
pub const MIN_JITTERED_DELAY: Duration = Duration::from_millis(1);

/// How widely `exponential` back-off and `Retry-After` delays are spread: over a window a fifth
/// as wide as the delay, so calls that failed together do not come back together.
pub const SPREAD: f64 = 0.2;

/// What to do with the message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not an error (1xx, 2xx, 3xx): done.
    Success,
    /// Try again: nak with this delay.
    Retry {
        /// How long the broker should wait before redelivering.
        delay: Duration,
    },
    /// No more attempts. `exhausted` is true when the result was retryable but the attempts
    /// are used up, false for a failure that is never retried (e.g. 400).
    Final {
        /// The attempts ran out (as opposed to a non-retryable failure).
        exhausted: bool,
    },
}

/// Decides what follows `attempt` (the JetStream delivery count of this attempt, 1 = first;
/// 0 is treated as 1), given what it produced.
///
/// A retryable result with `attempt < max_attempts` gives [`Decision::Retry`] with
/// [`backoff_delay`] or, on a 429/503 with a valid `Retry-After` (relative to `now`), that
/// value clamped to `[min_wait, max_wait]` and spread by [`spread_after`]. A
/// retryable result on the last attempt gives `Final { exhausted: true }`; a non-retryable
/// error `Final { exhausted: false }`; anything else [`Decision::Success`].
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    result: &AttemptResult<'_>,
    now: SystemTime,
    jitter: &mut dyn Jitter,
) -> Decision {
    if !policy.is_retryable(result) {
        return if is_error_status(result.status()) {
            Decision::Final { exhausted: false }
        } else {
            Decision::Success
        };
    }
    if attempt.max(1) >= policy.max_attempts {
        return Decision::Final { exhausted: true };
    }
    let delay = match retry_after_delay(policy, result, now) {
        Some(asked) => spread_after(asked, policy.max_wait, jitter),
        None => backoff_delay(policy, attempt, jitter),
    };
    Decision::Retry { delay }
}

/// The `Retry-After` of a 429 or 503, clamped to `[min_wait, max_wait]` (`max_wait` wins if
/// they conflict).
fn retry_after_delay(
    policy: &RetryPolicy,
    result: &AttemptResult<'_>,
    now: SystemTime,
) -> Option<Duration> {
    let AttemptResult::Response { status, headers } = *result else {
        return None;
    };
    if status != 429 && status != 503 {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let delay = parse_retry_after(value, now)?;
    Some(delay.max(policy.min_wait).min(policy.max_wait))
}

/// The delay before the attempt after `attempt` (1 = first; 0 is treated as 1):
/// `d = min_wait · 2^(attempt-1)`, capped at `max_wait`, then spread according to
/// `policy.backoff`:
///
/// - `exponential`: uniform in `[d - d/5, d]` ([`SPREAD`]);
/// - `full`: uniform in `[0, d]`;
/// - `equal`: uniform in `[d/2, d]`;
///
/// and never below `min(d, 1ms)`. A jitter value near 1 gives `d` itself.
///
/// Computed in integer nanoseconds: never overflows or panics, for any attempt (`u32::MAX`
/// included), any durations and any jitter value. The result is never above `max_wait`, and is
/// zero only when `min_wait` (or `max_wait`) is zero.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, jitter: &mut dyn Jitter) -> Duration {
    let d = capped_delay(policy.min_wait, policy.max_wait, attempt);
    let width = match policy.backoff {
        Backoff::Exponential => scale(d.as_nanos(), SPREAD),
        Backoff::Full => d.as_nanos(),
        Backoff::Equal => d.as_nanos() - d.as_nanos() / 2,
    };
    below(d, width, jitter)
}

/// A `Retry-After` of `asked` (already clamped to the policy's waits), spread over a window a
/// fifth as wide ([`SPREAD`]): `[asked, asked + asked/5]`, moved down so that it ends at
/// `max_wait` when it would pass it. A jitter value near 1 gives the window's start.
pub fn spread_after(asked: Duration, max_wait: Duration, jitter: &mut dyn Jitter) -> Duration {
    let asked_ns = asked.as_nanos();
    let width = scale(asked_ns, SPREAD);
    let start = asked_ns.min(max_wait.as_nanos().max(asked_ns).saturating_sub(width));
    from_nanos(start + scale(width, rest(jitter)))
}

/// The budget deferral after a computed `delay`: uniform in `[max_wait/2, max_wait]`, but never
/// shorter than `delay`.
pub fn deferral(delay: Duration, max_wait: Duration, jitter: &mut dyn Jitter) -> Duration {
    let max_ns = max_wait.as_nanos();
    below(max_wait, max_ns - max_ns / 2, jitter).max(delay)
}

/// Uniform in `[top - width, top]` (`width` is at most `top`), never below `min(top, 1ms)`; a
/// jitter value near 1 gives `top`.
fn below(top: Duration, width: u128, jitter: &mut dyn Jitter) -> Duration {
    let top_ns = top.as_nanos();
    let width = width.min(top_ns);
    let spread = top_ns - scale(width, rest(jitter));
    from_nanos(spread).max(top.min(MIN_JITTERED_DELAY))
}

/// `min(min_wait · 2^(attempt-1), max_wait)` without overflow.
pub(super) fn capped_delay(min_wait: Duration, max_wait: Duration, attempt: u32) -> Duration {
    let min_ns = min_wait.as_nanos();
    let max_ns = max_wait.as_nanos();
    let shift = attempt.max(1) - 1;
    // A Duration is below 2^94 ns, so shifting by less than its leading zeros cannot overflow.
    let d_ns = if min_ns == 0 {
        0
    } else if shift >= min_ns.leading_zeros() {
        u128::MAX
    } else {
        min_ns << shift
    };
    if d_ns >= max_ns {
        max_wait
    } else {
        from_nanos(d_ns)
    }
}

/// `1 - u` for the next jitter value `u`, in `[0, 1]`: exactly 0 for a value of 1 or more
/// (the top of a window is reachable), 1 for NaN and negatives.
fn rest(jitter: &mut dyn Jitter) -> f64 {
    let u = jitter.next_unit();
    if u.is_nan() {
        1.0
    } else {
        (1.0 - u).clamp(0.0, 1.0)
    }
}

/// `ns · u` for `u` in `[0, 1]`, never above `ns`.
fn scale(ns: u128, u: f64) -> u128 {
    // Float-to-int casts saturate; the min guards against rounding up.
    ((ns as f64 * u) as u128).min(ns)
}

/// A Duration from nanoseconds (the value must fit, as every caller's does).
fn from_nanos(ns: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9.
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, also the obsolete RFC 850 and asctime forms), relative to
/// `now`; a date in the past means zero. Surrounding whitespace is ignored; a huge number of
/// seconds saturates. `None` when empty or invalid (signs, fractions, units, garbage).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.bytes().fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
