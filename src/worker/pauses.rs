//! What an operator paused (`src/pause.rs`), looked up every [`LOOK_EVERY`] and applied to
//! the worker's schedule: a paused function starts nothing and pulls nothing more; a paused
//! queue also stops the intake. Looked up once before the worker pulls anything, so a worker
//! started while its queue is paused starts nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::ready::Sched;
use super::ticks::Ticks;
use crate::broker::BrokerError;
use crate::pause::{self, Paused};
use crate::telemetry::metrics::FunctionLabels;

/// How often a worker looks whether what is paused changed (one request when nothing did).
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The `function_name` of a whole queue's `queue_worker_queue_paused`.
pub const WHOLE_QUEUE_LABEL: &str = "*";

/// Keeps one worker's schedule paused as the queue's pause document says.
pub struct Pauses {
    ctx: Arc<Context>,
    sched: Arc<Mutex<Sched>>,
    wake: Arc<Notify>,
    /// The document's revision last applied (`None`: none yet).
    seen: Option<u64>,
    applied: Paused,
}

impl Pauses {
    pub fn new(ctx: Arc<Context>, sched: Arc<Mutex<Sched>>, wake: Arc<Notify>) -> Pauses {
        Pauses {
            ctx,
            sched,
            wake,
            seen: None,
            applied: Paused::default(),
        }
    }

    /// Look until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut ticks = Ticks::new(LOOK_EVERY, &stop);
        while ticks.next().await {
            if ticks.run(self.look()).await.is_none() {
                return;
            }
        }
    }

    /// Apply the pause document when it changed. When NATS cannot say, what was applied
    /// stays.
    pub async fn look(&mut self) {
        let queue = self.ctx.config.queue_name.clone();
        let revision = match self.ctx.broker.kv_revision(&pause::bucket(&queue)).await {
            Ok(r) => r,
            Err(BrokerError::NoBucket { .. }) => 0,
            Err(e) => {
                tracing::debug!(error = %e, "Cannot look up pauses");
                return;
            }
        };
        if self.seen == Some(revision) {
            return;
        }
        let paused = match pause::read(self.ctx.broker.as_ref(), &queue).await {
            Ok((p, _)) => p,
            Err(e) => {
                tracing::debug!(error = %e, "Cannot read pauses");
                return;
            }
        };
        self.apply(&queue, paused);
        self.seen = Some(revision);
    }

    fn apply(&mut self, queue: &str, paused: Paused) {
        if paused == self.applied {
            return;
        }
        log_change(&self.applied, &paused);
        self.sched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_paused(queue, paused.clone());
        self.wake.notify_one();
        let metrics = self.ctx.metrics.all();
        let labels = |f: &str| FunctionLabels {
            queue_name: queue.to_string(),
            function_name: f.to_string(),
        };
        metrics
            .queue_paused
            .get_or_create(&labels(WHOLE_QUEUE_LABEL))
            .set(i64::from(paused.queue));
        for gone in self.applied.functions.difference(&paused.functions) {
            metrics.queue_paused.remove(&labels(gone));
        }
        for f in &paused.functions {
            metrics.queue_paused.get_or_create(&labels(f)).set(1);
        }
        self.applied = paused;
    }
}

fn log_change(before: &Paused, after: &Paused) {
    if before.queue != after.queue {
        match after.queue {
            true => tracing::info!("Queue paused: no call starts until it is resumed"),
            false => tracing::info!("Queue resumed"),
        }
    }
    let names = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
    let paused: BTreeSet<String> = after
        .functions
        .difference(&before.functions)
        .cloned()
        .collect();
    let resumed: BTreeSet<String> = before
        .functions
        .difference(&after.functions)
        .cloned()
        .collect();
    if !paused.is_empty() {
        tracing::info!(functions = %names(&paused), "Functions paused");
    }
    if !resumed.is_empty() {
        tracing::info!(functions = %names(&resumed), "Functions resumed");
    }
}
