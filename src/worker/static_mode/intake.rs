//! Static mode's intake: pulls from the shared consumer and files each delivery in its
//! function's ready queue, asking only for the slots that no ready delivery can take (see
//! [`Sched::intake_demand`]). A function at its limit therefore does not stop the others: its
//! deliveries wait, leased and costing no attempt, while the intake pulls on — up to the hold's
//! bounds (`HOLD_MESSAGES`, `HOLD_BYTES` in `ready/sched.rs`), past which it waits for
//! something to start.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::broker::{Delivery, Subscription};
use crate::wire;
use crate::worker::Context;
use crate::worker::lease::Held;
use crate::worker::limiter::Limiter;
use crate::worker::ready::Sched;

/// Functions whose limits a worker remembers while they are idle.
const KEEP_FUNCTIONS: usize = 1_000;

/// First wait after a failed pull; doubling up to [`PULL_RETRY_MAX`].
const PULL_RETRY_FIRST: Duration = Duration::from_millis(100);
const PULL_RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) struct Intake {
    pub(super) ctx: Arc<Context>,
    pub(super) sched: Arc<Mutex<Sched>>,
    /// Wakes the dispatcher when a delivery is filed.
    pub(super) dispatch: Arc<Notify>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) stop: CancellationToken,
}

impl Intake {
    fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pull and file until stopped or the subscription ends; then give back what was received
    /// and not filed.
    pub(super) async fn run(self, mut sub: Box<dyn Subscription>) {
        self.pull(&mut *sub).await;
        for d in sub.drain_buffered() {
            Held::received(d, self.ctx.config.ack_wait)
                .give_back()
                .await;
        }
    }

    async fn pull(&self, sub: &mut dyn Subscription) {
        let woken = self.sched().intake.clone();
        let mut error_backoff = PULL_RETRY_FIRST;
        loop {
            let demand = self.demand();
            sub.set_demand(demand);
            let next = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                n = sub.next() => n,
                // Nothing new is asked for: only what was asked before can arrive, and a
                // delivery that starts or ends may make room.
                _ = woken.notified(), if demand == 0 => continue,
            };
            match next {
                Some(Ok(delivery)) => {
                    error_backoff = PULL_RETRY_FIRST;
                    self.file(delivery);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Pull failed; retrying");
                    tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(error_backoff) => {}
                    }
                    error_backoff = (error_backoff * 2).min(PULL_RETRY_MAX);
                }
                None => {
                    tracing::error!("Subscription closed");
                    self.stop.cancel();
                    return;
                }
            }
        }
    }

    fn demand(&self) -> usize {
        let cfg = &self.ctx.config;
        self.sched()
            .intake_demand(self.slots.available_permits(), cfg.max_inflight)
    }

    /// File `delivery` in its function's ready queue and wake the dispatcher.
    fn file(&self, delivery: Delivery) {
        let cfg = &self.ctx.config;
        let key = function_key(&delivery, &cfg.queue_name, &cfg.default_function_name);
        let held = Held::received(delivery, cfg.ack_wait);
        let limiter = || cfg.limiter_enabled.then(|| Limiter::new(cfg.max_inflight));
        self.sched().file(&key, held, limiter, KEEP_FUNCTIONS);
        self.dispatch.notify_one();
    }
}

/// Which function a delivery is for, as the subject `<queue>.<name>.<namespace>` that names it:
/// the delivery's own subject, or, for one published on the bare `<queue>` (older OpenFaaS
/// gateways), the one its message's `Function` would have. An undecodable message keeps its
/// subject (it is dead-lettered without a call).
pub(super) fn function_key(delivery: &Delivery, queue: &str, default_namespace: &str) -> String {
    let named = delivery
        .subject
        .strip_prefix(queue)
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
    if named {
        return delivery.subject.clone();
    }
    match wire::decode(&delivery.payload) {
        Ok(req) => {
            let (name, namespace) = wire::split_function(&req.function, default_namespace);
            format!("{queue}.{name}.{namespace}")
        }
        Err(_) => delivery.subject.clone(),
    }
}
