//! Gauges of what waits, read from the streams every [`BACKLOG_REPORT_INTERVAL`]:
//! `queue_worker_oldest_message_age_seconds{queue_name,function_name}` (the first stored
//! message of each function, for the [`MAX_AGED_FUNCTIONS`] with the most messages) and
//! `queue_worker_dead_letters_waiting{queue_name,reason}` (the dead letters kept, by
//! `Qw-Reason`). Each replica reports the same values (take the `max` across them).
//!
//! Reasons are only in the dead letters' headers: each dead letter is read once, in rounds of
//! at most [`MAX_READ_PER_ROUND`], and remembered by sequence; those that age out go from the
//! front. When the count no longer matches (a purge or redrive took some from the middle), the
//! dead letters are read again from the start; until caught up, the reason gauges are not set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use super::ticks::Ticks;
use crate::broker::BrokerError;
use crate::telemetry::metrics::{FunctionLabels, ReasonLabels};

/// How often the gauges are refreshed.
pub const BACKLOG_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Functions whose oldest message is looked up each round (those with the most messages).
pub const MAX_AGED_FUNCTIONS: usize = 100;
/// Dead letters read each round.
pub const MAX_READ_PER_ROUND: usize = 1_000;
/// Dead letters remembered by sequence (past this, the reason gauges are not set).
const MAX_REMEMBERED: usize = 200_000;

/// Refresh the gauges until `stop`.
pub async fn report(ctx: Arc<Context>, stop: CancellationToken) {
    let mut ages = AgeGauges::default();
    let mut reasons = ReasonCounts::default();
    let mut ticks = Ticks::new(BACKLOG_REPORT_INTERVAL, &stop);
    while ticks.next().await {
        let round = async {
            if let Err(e) = ages.refresh(&ctx).await {
                tracing::debug!(error = %e, "Cannot read the oldest messages");
            }
            match reasons.refresh(&ctx).await {
                Ok(()) => reasons.show(&ctx),
                Err(e) => tracing::debug!(error = %e, "Cannot read the dead letters"),
            }
        };
        if ticks.run(round).await.is_none() {
            return;
        }
    }
}

#[derive(Default)]
struct AgeGauges {
    shown: BTreeSet<String>,
}

impl AgeGauges {
    async fn refresh(&mut self, ctx: &Context) -> Result<(), BrokerError> {
        let queue = &ctx.config.queue_name;
        let stream = crate::broker::stream_name(queue);
        let Some(info) = ctx.broker.stream_info(&stream, Some(">")).await? else {
            return Ok(());
        };
        let now = ctx.clock.now();
        let mut ages = BTreeMap::new();
        for subject in busiest(queue, &info.subjects, MAX_AGED_FUNCTIONS) {
            if let Some(m) = ctx.broker.next_message(&stream, 1, Some(&subject)).await? {
                let age = now.duration_since(m.published).unwrap_or_default();
                ages.insert(super::pending::function_label(queue, &subject), age);
            }
        }
        let family = &ctx.metrics.all().oldest_message_age;
        let labels = |f: &str| FunctionLabels {
            queue_name: queue.clone(),
            function_name: f.to_string(),
        };
        for gone in self.shown.iter().filter(|f| !ages.contains_key(*f)) {
            family.remove(&labels(gone));
        }
        for (f, age) in &ages {
            family.get_or_create(&labels(f)).set(age.as_secs_f64());
        }
        self.shown = ages.into_keys().collect();
        Ok(())
    }
}

/// The subjects of `queue`'s functions with the most messages, at most `max`.
fn busiest(queue: &str, subjects: &BTreeMap<String, u64>, max: usize) -> Vec<String> {
    let mut ours: Vec<(&String, &u64)> = subjects
        .iter()
        .filter(|(s, n)| **n > 0 && (*s == queue || s.starts_with(&format!("{queue}."))))
        .collect();
    ours.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    ours.into_iter().take(max).map(|(s, _)| s.clone()).collect()
}

/// The reason of each dead letter read, by sequence.
#[derive(Default)]
struct ReasonCounts {
    by_seq: BTreeMap<u64, String>,
    /// The next sequence to read.
    next: u64,
    /// Every dead letter stored has been read.
    caught_up: bool,
    shown: BTreeSet<String>,
}

impl ReasonCounts {
    async fn refresh(&mut self, ctx: &Context) -> Result<(), BrokerError> {
        let stream = ctx.config.dlq_stream_name();
        let stored = ctx
            .broker
            .stream_info(&stream, None)
            .await?
            .map_or(0, |i| i.messages);
        match ctx.broker.next_message(&stream, 1, None).await? {
            // The ones aged out (or taken) from the front.
            Some(first) => self.by_seq = self.by_seq.split_off(&first.sequence),
            None => self.by_seq.clear(),
        }
        if self.caught_up && self.by_seq.len() as u64 > stored {
            // Some went from the middle: read them all again.
            *self = ReasonCounts {
                shown: std::mem::take(&mut self.shown),
                ..ReasonCounts::default()
            };
        }
        self.caught_up = false;
        for _ in 0..MAX_READ_PER_ROUND {
            if self.by_seq.len() >= MAX_REMEMBERED {
                return Ok(());
            }
            let Some(m) = ctx
                .broker
                .next_message(&stream, self.next.max(1), None)
                .await?
            else {
                self.caught_up = self.by_seq.len() <= MAX_REMEMBERED;
                return Ok(());
            };
            let reason = m.header("Qw-Reason").unwrap_or("unknown");
            self.by_seq.insert(m.sequence, reason.to_string());
            self.next = m.sequence + 1;
        }
        Ok(())
    }

    fn show(&mut self, ctx: &Context) {
        if !self.caught_up {
            return;
        }
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for reason in self.by_seq.values() {
            *counts.entry(reason.as_str()).or_default() += 1;
        }
        let queue = &ctx.config.queue_name;
        let family = &ctx.metrics.all().dead_letters_waiting;
        let labels = |r: &str| ReasonLabels {
            queue_name: queue.clone(),
            reason: r.to_string(),
        };
        for gone in self
            .shown
            .iter()
            .filter(|r| !counts.contains_key(r.as_str()))
        {
            family.get_or_create(&labels(gone)).set(0);
        }
        for (r, n) in &counts {
            family.get_or_create(&labels(r)).set(*n);
        }
        self.shown.extend(counts.keys().map(|r| r.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_functions_of_the_queue_come_first() {
        let subjects: BTreeMap<String, u64> = [
            ("q.a.ns", 2),
            ("q.b.ns", 9),
            ("q", 5),
            ("q2.x.ns", 99),
            ("q.c.ns", 0),
        ]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
        assert_eq!(busiest("q", &subjects, 2), vec!["q.b.ns", "q"]);
        assert_eq!(busiest("q", &subjects, 10), vec!["q.b.ns", "q", "q.a.ns"]);
    }
}
