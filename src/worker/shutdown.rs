//! The one shutdown protocol of both modes: work in flight is tracked; on shutdown, what was
//! pulled but not started is given back (nak, no delay) for another replica to take, the
//! invocations in flight get `shutdown_timeout` to finish, whatever is still running then is
//! abandoned (its message given back), and the acknowledgements are flushed.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Context;
use super::lease::Held;

/// The invocations a worker has in flight.
#[derive(Default)]
pub struct InFlight {
    tasks: TaskTracker,
    /// Cancelled when the shutdown grace period is over: in-flight work gives its message back.
    abandon: CancellationToken,
}

impl InFlight {
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// Run `work` (one delivery's processing) as a tracked task; it gets the token that says
    /// when to give up.
    pub fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // On the heap, once: the task's future (the delivery, its lease, the progress-ack timer)
        // is about a kilobyte, and spawning a task moves it several times.
        self.tasks.spawn(Box::pin(work(self.abandon.clone())));
    }

    /// Shut down by `deadline` (`shutdown_timeout` after shutdown began): give back
    /// `unstarted`, let what runs finish, abandon the rest, flush acknowledgements. Each step
    /// that waits on NATS says so, and none passes the deadline (while NATS is away, what could
    /// not be settled is redelivered after `ack_wait`).
    pub async fn drain(self, ctx: &Context, unstarted: Vec<Held>, deadline: Instant) {
        let given_back = unstarted.len();
        let give_back = futures::future::join_all(unstarted.into_iter().map(Held::give_back));
        if timeout_at(deadline, give_back).await.is_err() {
            tracing::warn!(
                givenBack = given_back,
                "Shutdown timeout reached while giving back unstarted messages (is NATS reachable?)"
            );
        }
        self.tasks.close();
        tracing::info!(
            inFlight = self.tasks.len(),
            givenBack = given_back,
            timeout = ?deadline.saturating_duration_since(Instant::now()),
            "Stopping: waiting for in-flight invocations"
        );
        if timeout_at(deadline, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "Shutdown timeout reached: giving back unfinished invocations"
            );
            self.abandon.cancel();
            // Abandoned work only sends its nak now: a moment, unless NATS is away.
            if timeout(ABANDON_GRACE, self.tasks.wait()).await.is_err() {
                tracing::warn!(
                    "Could not give back every unfinished invocation (is NATS reachable?); those messages are redelivered after ack_wait"
                );
            }
        }
        let flush_for = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_FLUSH);
        tracing::info!(timeout = ?flush_for, "Stopping: flushing acknowledgements to NATS");
        match timeout(flush_for, ctx.broker.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not flush acknowledgements; those messages are redelivered")
            }
            Err(_) => tracing::warn!(
                "Could not flush acknowledgements in time (is NATS reachable?); those messages are redelivered"
            ),
        }
        tracing::info!("Stopped");
    }
}

/// How long abandoned invocations get to send their nak after the shutdown timeout.
const ABANDON_GRACE: Duration = Duration::from_secs(1);
/// The least time acknowledgements get to be flushed, even past the shutdown timeout.
const MIN_FLUSH: Duration = Duration::from_millis(500);
