//! Trying again until it works or shutdown comes: connecting to NATS, setting up streams and
//! consumers. One back-off for all of them: 250 ms, 500 ms, … at most 10 s between attempts.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First wait after a failed attempt of [`retry_until`]; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between attempts of [`retry_until`].
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// Run `attempt` until it succeeds (`Some`) or `shutdown` fires (`None`), waiting 250 ms,
/// 500 ms, … at most 10 s between attempts and logging each failure as `failure`.
pub async fn retry_until<T, E, F, Fut>(
    shutdown: &CancellationToken,
    failure: &'static str,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = RETRY_FIRST;
    loop {
        let err = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            r = attempt() => match r {
                Ok(v) => return Some(v),
                Err(e) => e,
            },
        };
        tracing::warn!(error = %err, retryIn = ?delay, "{failure}");
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_until_backs_off_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let got = retry_until(&shutdown, "failing", || {
            tries += 1;
            let n = tries;
            async move { if n < 4 { Err("not yet") } else { Ok(n) } }
        })
        .await;
        assert_eq!(got, Some(4));
        // 250 + 500 + 1000 ms between the four attempts.
        assert_eq!(start.elapsed(), Duration::from_millis(1750));
        shutdown.cancel();
        let never: Option<()> = retry_until(&shutdown, "failing", || async { Err("down") }).await;
        assert_eq!(never, None);
    }
}
