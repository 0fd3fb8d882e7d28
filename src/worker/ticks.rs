//! The rhythm of the worker's background lookups (pauses, gauges): a tick every period until
//! the stop, and each lookup raced against the stop. A lookup can wait on NATS for seconds
//! while it is away; a stop never waits for one.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Ticks every `period` (the first at once) until `stop`.
pub struct Ticks {
    interval: Interval,
    stop: CancellationToken,
}

impl Ticks {
    pub fn new(period: Duration, stop: &CancellationToken) -> Ticks {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks {
            interval,
            stop: stop.clone(),
        }
    }

    /// Waits for the next tick: `false` once stopped.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }

    /// Runs `lookup` unless the stop comes first (`None` then).
    pub async fn run<T>(&self, lookup: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            out = lookup => Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_until_the_stop_and_a_stop_cuts_a_lookup_short() {
        let stop = CancellationToken::new();
        let mut ticks = Ticks::new(Duration::from_secs(1), &stop);
        let start = tokio::time::Instant::now();
        assert!(ticks.next().await);
        assert!(ticks.next().await);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(ticks.run(async { 7 }).await, Some(7));
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stopper.cancel();
        });
        let forever = ticks.run(std::future::pending::<()>()).await;
        assert_eq!(forever, None);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(!ticks.next().await);
    }
}
