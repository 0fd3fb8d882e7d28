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

/// Whether `d` is a delay the policy allows after attempt `n` answered `status`.
pub(super) fn delay_allowed(
    cfg: &RunConfig,
    n: u64,
    status: u16,
    retry_after: Option<&str>,
    d: Duration,
) -> bool {
    // The budget, when spent, sends the retry to the maximum wait.
    if d == cfg.max_retry_wait {
        return true;
    }
    if matches!(status, 429 | 503)
        && let Some(ra) = retry_after.and_then(|s| s.trim().parse::<u64>().ok())
    {
        let want = Duration::from_secs(ra)
            .max(cfg.initial_retry_wait)
            .min(cfg.max_retry_wait);
        return d == want;
    }
    let base = pow_delay(cfg, n);
    let floor = base.min(Duration::from_millis(1));
    match cfg.backoff {
        Backoff::Exponential => d == base,
        Backoff::Full => d >= floor && d <= base,
        Backoff::Equal => d >= (base / 2).max(floor) && d <= base,
    }
}
