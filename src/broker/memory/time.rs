//! Timer arithmetic that never overflows.

use std::time::Duration;

use tokio::time::Instant;

/// Stands in for "never" in timer arithmetic (about 30 years).
pub(super) const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + d`, saturating far in the future.
pub(super) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}
