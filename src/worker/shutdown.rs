//! The one shutdown protocol of both modes: work in flight is tracked; on shutdown, what was
//! pulled but not started is given back (nak, no delay) for another replica to take, the
//! invocations in flight get `shutdown_timeout` to finish, whatever is still running then is
//! abandoned (its message given back), and the acknowledgements are flushed.

use std::future::Future;

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

    /// Shut down: give back `unstarted`, let what runs finish for up to `shutdown_timeout`,
    /// abandon the rest, flush acknowledgements.
    pub async fn drain(self, ctx: &Context, unstarted: Vec<Held>) {
        let given_back = unstarted.len();
        for held in unstarted {
            held.give_back().await;
        }
        self.tasks.close();
        tracing::info!(
            inFlight = self.tasks.len(),
            givenBack = given_back,
            timeout = ?ctx.config.shutdown_timeout,
            "Stopping: waiting for in-flight invocations"
        );
        let finished = tokio::time::timeout(ctx.config.shutdown_timeout, self.tasks.wait()).await;
        if finished.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "Shutdown timeout reached: giving back unfinished invocations"
            );
            self.abandon.cancel();
            self.tasks.wait().await;
        }
        debug_assert!(self.tasks.is_empty(), "every invocation ended");
        if let Err(e) = ctx.broker.flush().await {
            tracing::warn!(error = %e, "Could not flush acknowledgements; those messages are redelivered");
        }
        tracing::info!("Stopped");
    }
}
