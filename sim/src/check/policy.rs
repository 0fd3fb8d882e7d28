//! The retry policy as the checker reads it: which statuses are retried and which delays are
//! allowed after an attempt.

use std::time::Duration;

use queue_worker::config::Backoff;

use crate::plan::RunConfig;

pub(super) fn retryable(cfg: &RunConfig, status: u16) -> bool {
    cfg.worker_config().retry_http_codes.contains(&status)
}

/// The exponential delay after attempt `attempt`, capped at the maximum wait.
pub(super) fn pow_delay(cfg: &RunConfig, attempt: u64) -> Duration {
    let mut d = cfg.initial_retry_wait;
    for _ in 1..attempt.min(64) {
        d = d.saturating_mul(2);
        if d >= cfg.max_retry_wait {
            break;
        }
    }
    d.min(cfg.max_retry_wait)
}

/// Whether `d` is a delay the policy allows after attempt `n` answered `status`. Every delay is
/// spread over a window (README "Retries"); the bounds are compared with a microsecond of slack
/// for rounding.
pub(super) fn delay_allowed(
    cfg: &RunConfig,
    n: u64,
    status: u16,
    retry_after: Option<&str>,
    d: Duration,
) -> bool {
    let max = cfg.max_retry_wait;
    // The budget, when spent, defers the retry to between half the maximum wait and all of it.
    if within(d, max / 2, max) {
        return true;
    }
    if matches!(status, 429 | 503)
        && let Some(ra) = retry_after.and_then(|s| s.trim().parse::<u64>().ok())
    {
        let asked = Duration::from_secs(ra).max(cfg.initial_retry_wait).min(max);
        let width = asked / 5;
        let start = asked.min(max.max(asked).saturating_sub(width));
        return within(d, start, start + width);
    }
    let base = pow_delay(cfg, n);
    let floor = base.min(Duration::from_millis(1));
    match cfg.backoff {
        Backoff::Exponential => within(d, (base - base / 5).max(floor), base),
        Backoff::Full => within(d, floor, base),
        Backoff::Equal => within(d, (base / 2).max(floor), base),
    }
}

/// `low <= d <= high`, with a microsecond of slack on both sides.
fn within(d: Duration, low: Duration, high: Duration) -> bool {
    const SLACK: Duration = Duration::from_micros(1);
    d + SLACK >= low && d <= high + SLACK
}
