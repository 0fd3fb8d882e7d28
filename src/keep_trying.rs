//! Trying again until it works or shutdown comes: connecting to NATS, setting up streams and
//! consumers. One back-off for all of them: 250 ms, 500 ms, … at most 10 s between attempts.
//! A failure that no attempt can change (NATS refusing our credentials) ends the trying.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First wait after a failed attempt of [`retry_until`]; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between attempts of [`retry_until`].
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// How one attempt of [`retry_unless_final`] failed.
#[derive(Debug)]
pub enum Failed<E, F> {
    /// Worth another attempt (NATS is down or unreachable).
    Again(E),
    /// Every attempt would fail the same way: stop trying.
    Final(F),
}

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
    let every_failure_passes = retry_unless_final(shutdown, failure, || {
        let tried = attempt();
        async move {
            tried
                .await
                .map_err(Failed::<E, std::convert::Infallible>::Again)
        }
    });
    match every_failure_passes.await {
        Ok(done) => done,
        Err(never) => match never {},
    }
}

/// [`retry_until`], except that an attempt failing with [`Failed::Final`] ends the trying at
/// once with that error.
pub async fn retry_unless_final<T, E, P, F, Fut>(
    shutdown: &CancellationToken,
    failure: &'static str,
    mut attempt: F,
) -> Result<Option<T>, P>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failed<E, P>>>,
{
    let mut delay = RETRY_FIRST;
    loop {
        let err = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            r = attempt() => match r {
                Ok(v) => return Ok(Some(v)),
                Err(Failed::Final(e)) => return Err(e),
                Err(Failed::Again(e)) => e,
            },
        };
        tracing::warn!(error = %err, retryIn = ?delay, "{failure}");
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
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

    #[tokio::test(start_paused = true)]
    async fn a_final_failure_stops_the_trying_at_once() {
        let shutdown = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let got: Result<Option<()>, &str> = retry_unless_final(&shutdown, "failing", || {
            tries += 1;
            let n = tries;
            async move {
                match n {
                    1 => Err(Failed::Again("down")),
                    _ => Err(Failed::Final("refused")),
                }
            }
        })
        .await;
        assert_eq!(got, Err("refused"));
        assert_eq!(tries, 2, "no attempt after the final failure");
        assert_eq!(
            start.elapsed(),
            RETRY_FIRST,
            "one wait, after the first failure only"
        );
    }
}
