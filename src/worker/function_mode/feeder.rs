//! A feeder per function: it owns the function's consumer and pulls only what the function
//! can start now (its limit minus what is in flight, plus a small prefetch) into its ready
//! queue. Idle for `consumer_inactive_threshold`, it stops pulling and ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::consumers::{consumer_name, server_inactive_threshold};
use crate::worker::ready::Sched;
use tokio::time::Instant;

use crate::broker::{BrokerError, ConsumerSpec, Delivery, StreamSpec, Subscription};
use crate::config::Storage;
use crate::telemetry::metrics::QueueLabels;
use crate::worker::Context;
use crate::worker::MAX_DEFAULT_PULL_BATCH;
use crate::worker::lease::Held;

/// How often a feeder winding down looks whether its pull requests have ended.
const WIND_DOWN_LOOK: Duration = Duration::from_millis(200);

/// Pulls one function's deliveries into its ready queue.
pub(super) struct Feeder {
    pub(super) ctx: Arc<Context>,
    pub(super) stream: StreamSpec,
    pub(super) sched: Arc<Mutex<Sched>>,
    pub(super) dispatch: Arc<Notify>,
    pub(super) subject: String,
    pub(super) stop: CancellationToken,
}

impl Feeder {
    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn run(self) {
        let spec = self.consumer_spec();
        if let Some(mut sub) = self.subscribe(&spec).await {
            tracing::info!(consumer = %spec.name, subject = %self.subject, "Function consumer started");
            self.feed(&mut *sub, &spec.name).await;
            for d in sub.drain_buffered() {
                Held::received(d, self.ctx.config.ack_wait)
                    .give_back()
                    .await;
            }
        }
        self.retire().await;
    }

    /// The function's consumer: filtered on its subject, ended by the server once unused.
    fn consumer_spec(&self) -> ConsumerSpec {
        let cfg = &self.ctx.config;
        let server = self.ctx.broker.server_version();
        let threshold =
            server_inactive_threshold(cfg.consumer_inactive_threshold, cfg.ack_wait, server);
        let default_batch = cfg.max_inflight.clamp(1, MAX_DEFAULT_PULL_BATCH);
        ConsumerSpec {
            stream: self.stream.name.clone(),
            name: consumer_name(&cfg.queue_name, &self.subject),
            filter_subject: Some(self.subject.clone()),
            ack_wait: cfg.ack_wait,
            inactive_threshold: Some(threshold),
            pull_batch: cfg.consumer_pull_max_messages.unwrap_or(default_batch),
            recreate: false,
            memory_storage: cfg.consumer_storage == Storage::Memory,
        }
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Option<Box<dyn Subscription>> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            s = self.ctx.broker.subscribe(&self.stream, spec) => match s {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(consumer = %spec.name, error = %e, "Cannot create function consumer");
                    None
                }
            },
        }
    }

    /// Pull what the function can take into its ready queue, until the feeder is stopped, the
    /// function stays idle or its consumer is gone.
    async fn feed(&self, sub: &mut dyn Subscription, consumer: &str) {
        let room = self.room();
        let mut idle_since = Instant::now();
        loop {
            let wanted = self.wanted();
            if wanted == 0 {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return,
                    _ = room.notified() => continue,
                }
            }
            sub.set_demand(wanted);
            let Some(next) = self.next_unless_idle(sub, &mut idle_since, consumer).await else {
                return;
            };
            match next {
                Some(Ok(d)) => {
                    idle_since = Instant::now();
                    let held = Held::received(d, self.ctx.config.ack_wait);
                    if let Some(f) = self.sched().functions.get_mut(&self.subject) {
                        f.take_in(held);
                    }
                    self.dispatch.notify_one();
                }
                Some(Err(e)) => {
                    tracing::debug!(consumer = %consumer, error = %e, "Pull failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // The consumer is gone (inactive threshold, deleted by hand): discovery
                // starts a new feeder if the function still has work.
                None => {
                    tracing::info!(consumer = %consumer, "Function consumer gone");
                    return;
                }
            }
        }
    }

    /// What `next()` gives; `None` when the feeder stops or the function has been idle for
    /// `consumer_inactive_threshold`. A `next()` is never abandoned mid-way otherwise: a pull
    /// request left behind by a cancelled `next()` could deliver a message into the
    /// subscription's buffer where nobody sends progress for it.
    async fn next_unless_idle(
        &self,
        sub: &mut dyn Subscription,
        idle_since: &mut Instant,
        consumer: &str,
    ) -> Option<Option<Result<Delivery, BrokerError>>> {
        let idle_limit = self.ctx.config.consumer_inactive_threshold;
        {
            let next = sub.next();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return None,
                    r = &mut next => return Some(r),
                    _ = tokio::time::sleep_until(*idle_since + idle_limit) => {
                        if self.is_idle() {
                            break;
                        }
                        *idle_since = Instant::now();
                    }
                }
            }
        }
        self.wind_down(sub, consumer).await
    }

    /// The function looks idle: ask for nothing more, and read on until the pull requests
    /// already made have ended, taking in what they still bring (a message published just
    /// before the per-subject counts were read would otherwise be delivered to nobody and come
    /// back after `ack_wait` as another attempt). `None` once none is open: the feeder ends.
    /// Then the server deletes the consumer after its inactive threshold unless another
    /// replica still uses it. (Deleting it here could pull it from under a replica that is
    /// running one of its messages: that replica's ack would be lost and the call run twice.)
    async fn wind_down(
        &self,
        sub: &mut dyn Subscription,
        consumer: &str,
    ) -> Option<Option<Result<Delivery, BrokerError>>> {
        sub.set_demand(0);
        while sub.pulling() {
            // With no demand, `next` asks for nothing, so leaving it between looks is safe.
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                r = sub.next() => return Some(r),
                _ = tokio::time::sleep(WIND_DOWN_LOOK) => {}
            }
        }
        tracing::info!(consumer = %consumer, "Function consumer idle; stopped pulling");
        None
    }

    fn room(&self) -> Arc<Notify> {
        self.sched()
            .functions
            .get(&self.subject)
            .map(|f| f.room.clone())
            .unwrap_or_default()
    }

    fn wanted(&self) -> usize {
        let max = self.ctx.config.max_inflight;
        self.sched()
            .functions
            .get(&self.subject)
            .map(|f| f.wanted(max))
            .unwrap_or(0)
    }

    /// Nothing stored, nothing ready, nothing running for this function.
    fn is_idle(&self) -> bool {
        self.sched()
            .functions
            .get(&self.subject)
            .is_none_or(|f| f.pending == 0 && f.is_empty())
    }

    /// Leave the schedule once in-flight work is done (at once on shutdown); give back
    /// anything still ready.
    async fn retire(self) {
        loop {
            let removed = {
                let mut s = self.sched();
                match s.functions.get(&self.subject) {
                    None => return,
                    Some(f) if f.in_flight > 0 && !self.stop.is_cancelled() => None,
                    Some(_) => s.functions.remove(&self.subject),
                }
            };
            let Some(f) = removed else {
                let room = self.room();
                tokio::select! {
                    biased;
                    _ = room.notified() => {}
                    _ = self.stop.cancelled() => {}
                }
                continue;
            };
            let parked = f.parked.into_iter().map(|(_, h)| h);
            for held in f.ready.into_iter().chain(parked) {
                held.give_back().await;
            }
            let consumers = self.sched().functions.len();
            self.ctx
                .metrics
                .all()
                .consumers
                .get_or_create(&QueueLabels {
                    queue_name: self.ctx.config.queue_name.clone(),
                })
                .set(consumers as i64);
            return;
        }
    }
}
