//! `queue_worker_pending_messages{queue_name,function_name}`: messages stored per function
//! (waiting, running or waiting to be retried), from the stream's per-subject counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use super::ticks::Ticks;
use crate::telemetry::metrics::FunctionLabels;

/// How often static mode refreshes the gauges from the stream.
pub const PENDING_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Function label for messages on the bare `<queue>` subject (older gateways).
pub const LEGACY_FUNCTION_LABEL: &str = "_legacy";

/// The metrics label of the function on `subject`.
pub(crate) fn function_label(queue: &str, subject: &str) -> String {
    match subject
        .strip_prefix(queue)
        .and_then(|t| t.strip_prefix('.'))
    {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => LEGACY_FUNCTION_LABEL.to_string(),
    }
}

/// `queue_worker_pending_messages` from the stream's per-subject counts: functions that no
/// longer have messages drop to 0 (the stream lists only subjects that have some).
#[derive(Default)]
pub struct PendingGauges {
    shown: std::collections::BTreeSet<String>,
}

impl PendingGauges {
    pub fn update(
        &mut self,
        metrics: &crate::telemetry::metrics::Metrics,
        queue: &str,
        subjects: &BTreeMap<String, u64>,
    ) {
        let mut now = std::collections::BTreeSet::new();
        for (subject, n) in subjects {
            if subject != queue && !subject.starts_with(&format!("{queue}.")) {
                continue;
            }
            let label = function_label(queue, subject);
            metrics
                .pending_messages
                .get_or_create(&FunctionLabels {
                    queue_name: queue.to_string(),
                    function_name: label.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
            now.insert(label);
        }
        for gone in self.shown.difference(&now) {
            metrics
                .pending_messages
                .get_or_create(&FunctionLabels {
                    queue_name: queue.to_string(),
                    function_name: gone.clone(),
                })
                .set(0);
        }
        self.shown = now;
    }
}

/// Refresh `queue_worker_pending_messages` every `every` until `stop` (static mode; function
/// mode updates the gauges as it discovers functions).
pub async fn report(ctx: Arc<Context>, stream: String, every: Duration, stop: CancellationToken) {
    let mut gauges = PendingGauges::default();
    let mut ticks = Ticks::new(every, &stop);
    while ticks.next().await {
        let Some(info) = ticks.run(ctx.broker.stream_info(&stream, Some(">"))).await else {
            return;
        };
        if let Ok(Some(info)) = info {
            gauges.update(ctx.metrics.all(), &ctx.config.queue_name, &info.subjects);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            function_label("q", "q.figlet.openfaas-fn"),
            "figlet.openfaas-fn"
        );
        assert_eq!(function_label("q", "q"), LEGACY_FUNCTION_LABEL);
    }
}
