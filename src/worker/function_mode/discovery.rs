//! Discovery: every second the stream's per-subject counts say which functions have
//! messages; they update the pending gauges and start a feeder for each function without one.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::FunctionMode;
use super::feeder::Feeder;
use crate::telemetry::metrics::QueueLabels;
use crate::worker::limiter::Limiter;
use crate::worker::ready::FunctionState;

/// How often the stream's per-subject counts are read.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

impl FunctionMode {
    /// Read per-subject counts; update gauges; start feeders for functions with work.
    pub(super) async fn discover(&self, feeders: &TaskTracker, stop: &CancellationToken) {
        let cfg = &self.ctx.config;
        let queue = cfg.queue_name.clone();
        let info = match self
            .ctx
            .broker
            .stream_info(&self.stream.name, Some(">"))
            .await
        {
            Ok(Some(i)) => i,
            Ok(None) => {
                tracing::warn!(stream = %self.stream.name, "Stream was deleted; recreating it empty");
                if let Err(e) = self.ctx.broker.ensure_stream(&self.stream).await {
                    tracing::warn!(error = %e, "Cannot recreate the stream");
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "Discovery failed");
                return;
            }
        };
        let metrics = self.ctx.metrics.all();
        let mut start = Vec::new();
        let consumers;
        {
            let mut s = self.sched();
            // Pending per function: subjects in the stream now; functions we knew that have
            // no messages any more drop to zero.
            // Ordered: feeders start in subject order, the same on every run (the simulation
            // replays schedules by seed).
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            for (subject, n) in &info.subjects {
                if subject == &queue || subject.starts_with(&format!("{queue}.")) {
                    seen.insert(subject.clone(), *n);
                }
            }
            for (subject, f) in s.functions.iter_mut() {
                f.pending = seen.get(subject).copied().unwrap_or(0);
            }
            for (subject, n) in &seen {
                if *n > 0 && !s.functions.contains_key(subject) && !s.holds(subject) {
                    start.push(subject.clone());
                }
            }
            for subject in &start {
                let limiter = cfg.limiter_enabled.then(|| Limiter::new(cfg.max_inflight));
                let pending = seen.get(subject).copied().unwrap_or(0);
                s.track(subject, FunctionState::new(limiter, pending));
            }
            consumers = s.functions.len();
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(metrics, &queue, &info.subjects);
        metrics
            .consumers
            .get_or_create(&QueueLabels {
                queue_name: queue.clone(),
            })
            .set(consumers as i64);
        for subject in start {
            let feeder = Feeder {
                ctx: self.ctx.clone(),
                stream: self.stream.clone(),
                sched: self.ready.shared(),
                dispatch: self.ready.waker(),
                subject,
                stop: stop.clone(),
            };
            feeders.spawn(feeder.run());
        }
    }
}
