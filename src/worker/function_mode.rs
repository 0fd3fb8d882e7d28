//! `scaling_mode=function`: one pull consumer per function that has work, fair scheduling
//! across functions, and (with `limiter_enabled`) adaptive concurrency per function.
//!
//! Pieces:
//! - **discovery** (every [`DISCOVERY_INTERVAL`]): the stream's per-subject counts say which
//!   functions have messages (`<queue>.<name>.<ns>`, and `<queue>` for older gateways); they
//!   feed `queue_worker_pending_messages` and start a feeder for each function without one;
//! - **feeders** (a task per function): own the function's consumer (filtered on its subject)
//!   and pull from it only what the function can start now — at most its limiter's limit minus
//!   what is in flight, and a small prefetch — into the function's ready queue; a feeder whose
//!   function stays idle for `consumer_inactive_threshold` stops pulling and ends, and the
//!   server deletes the consumer after [`server_inactive_threshold`] once no replica pulls from
//!   it or acknowledges its messages;
//! - **dispatcher**: gives each free slot (`max_inflight`) to the next function in round-robin
//!   order that has a ready delivery and room under its limit, so a backlog of thousands for one
//!   function cannot starve the others; deliveries waiting in ready queues get progress acks so
//!   their ack-wait lease never runs out while they wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Context;
use super::lease::Held;
use super::limiter::Limiter;
use super::pipeline;
use super::plan::Signal;
use crate::broker::{ConsumerSpec, StreamSpec};
use crate::telemetry::metrics::{FunctionLabels, QueueLabels};
use crate::telemetry::server::Health;

/// How often the stream's per-subject counts are read.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// Deliveries a feeder keeps ready beyond what its function can start at once.
const PREFETCH: usize = 1;
/// Extra time the server gives an unused function consumer before deleting it, beyond
/// `max(consumer_inactive_threshold, ack_wait)`: room for workers to reconnect after a NATS
/// outage. A consumer deleted while it still holds messages would restart their delivery
/// counts (and so their attempts).
pub const SERVER_INACTIVE_GRACE: Duration = Duration::from_secs(15);
/// Function label for messages on the bare `<queue>` subject (older gateways).
pub const LEGACY_FUNCTION_LABEL: &str = "_legacy";

/// The inactive threshold set on function consumers (the server's backstop; workers stop
/// pulling after `consumer_inactive_threshold` idle). Never shorter than `ack_wait`, so that
/// progress acks (every `ack_wait/2`) for messages in flight or waiting in a ready queue always
/// count as activity, plus [`SERVER_INACTIVE_GRACE`].
pub fn server_inactive_threshold(configured: Duration, ack_wait: Duration) -> Duration {
    configured.max(ack_wait) + SERVER_INACTIVE_GRACE
}

/// FNV-1a, for short stable suffixes of consumer names.
fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Consumer name for the function on `subject`: `<queue>-fn-<name_ns>-<hash>` (`.` is not
/// allowed in consumer names; the hash keeps `a.b` and `a_b` apart).
pub fn consumer_name(queue: &str, subject: &str) -> String {
    let tail = subject
        .strip_prefix(queue)
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or("");
    if tail.is_empty() {
        return format!("{queue}-fn-_");
    }
    let clean: String = tail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{queue}-fn-{clean}-{:08x}", fnv32(tail))
}

/// Prefix of every function-mode consumer of `queue`.
pub fn consumer_prefix(queue: &str) -> String {
    format!("{queue}-fn-")
}

/// The metrics label of the function on `subject`.
fn function_label(queue: &str, subject: &str) -> String {
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

/// Static mode: refresh `queue_worker_pending_messages` every `every` until `stop`.
pub async fn report_pending(
    ctx: Arc<Context>,
    stream: String,
    every: Duration,
    stop: CancellationToken,
) {
    let mut gauges = PendingGauges::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(Some(info)) = ctx.broker.stream_info(&stream, Some(">")).await {
            gauges.update(ctx.metrics.all(), &ctx.config.queue_name, &info.subjects);
        }
    }
}

struct FunctionState {
    ready: VecDeque<Held>,
    in_flight: usize,
    limiter: Option<Limiter>,
    /// Wakes the feeder when the function can take more.
    room: Arc<Notify>,
    /// Messages stored for this function at the last discovery.
    pending: u64,
}

impl FunctionState {
    fn limit(&self, max_inflight: usize) -> usize {
        self.limiter
            .as_ref()
            .map(|l| l.limit())
            .unwrap_or(max_inflight)
    }
    /// Deliveries the feeder should pull now. While the ready queue has room for its prefetch,
    /// this is at least 1 even when the function is at its limit: a waiting pull request is
    /// what keeps the consumer alive on the server (the inactive threshold), also while every
    /// message of the function waits out a retry delay. What it brings waits in the ready
    /// queue, kept leased by progress acks.
    fn wanted(&self, max_inflight: usize) -> usize {
        let room = self
            .limit(max_inflight)
            .saturating_sub(self.in_flight)
            .min(PREFETCH + 1);
        let want = room.saturating_sub(self.ready.len());
        if want == 0 && self.ready.len() <= PREFETCH {
            1
        } else {
            want
        }
    }
}

#[derive(Default)]
struct Sched {
    /// Keyed by subject.
    functions: BTreeMap<String, FunctionState>,
    /// Round-robin position: the subject served last.
    last: Option<String>,
}

impl Sched {
    /// The next function (after `last`, wrapping) with a ready delivery and room under its limit.
    fn pick(&mut self, max_inflight: usize) -> Option<(String, Held)> {
        let keys: Vec<&String> = match &self.last {
            Some(last) => self
                .functions
                .range::<String, _>((
                    std::ops::Bound::Excluded(last.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .chain(self.functions.range::<String, _>(..=last.clone()))
                .map(|(k, _)| k)
                .collect(),
            None => self.functions.keys().collect(),
        };
        let chosen = keys.into_iter().find(|k| {
            let f = &self.functions[*k];
            !f.ready.is_empty() && f.in_flight < f.limit(max_inflight)
        })?;
        let chosen = chosen.clone();
        let f = self.functions.get_mut(&chosen)?;
        let d = f.ready.pop_front()?;
        f.in_flight += 1;
        // Its ready queue has room again: let the feeder pull the next one.
        f.room.notify_one();
        self.last = Some(chosen.clone());
        Some((chosen, d))
    }
}

/// The function-mode worker of one queue.
pub struct FunctionMode {
    ctx: Arc<Context>,
    stream: StreamSpec,
    health: Arc<Health>,
    sched: Arc<Mutex<Sched>>,
    /// Wakes the dispatcher: a delivery became ready, a slot or a function's room freed up.
    dispatch: Arc<Notify>,
    pending: Mutex<PendingGauges>,
}

impl FunctionMode {
    pub fn new(ctx: Arc<Context>, stream: StreamSpec, health: Arc<Health>) -> FunctionMode {
        FunctionMode {
            ctx,
            stream,
            health,
            sched: Arc::new(Mutex::new(Sched::default())),
            dispatch: Arc::new(Notify::new()),
            pending: Mutex::new(PendingGauges::default()),
        }
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set up: streams, and remove static-mode consumers (a work queue forbids overlapping
    /// consumers, so switching a queue to function mode must remove the shared one first).
    async fn prepare(&self) -> Result<(), crate::broker::BrokerError> {
        let b = &self.ctx.broker;
        b.ensure_stream(&self.ctx.dead_letters).await?;
        b.ensure_stream(&self.stream).await?;
        let prefix = consumer_prefix(&self.ctx.config.queue_name);
        for name in b.list_consumers(&self.stream.name).await? {
            if !name.starts_with(&prefix) {
                tracing::info!(consumer = %name, "Removing static-mode consumer (switching to function mode)");
                b.delete_consumer(&self.stream.name, &name).await?;
            }
        }
        Ok(())
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let cfg = self.ctx.config.clone();
        tracing::info!(
            maxInflight = cfg.max_inflight,
            stream = %self.stream.name,
            mode = cfg.scaling_mode.as_str(),
            limiter = cfg.limiter_enabled,
            "Starting"
        );
        let mut delay = Duration::from_millis(250);
        loop {
            let r = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = self.prepare() => r,
            };
            match r {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retryIn = ?delay, "Cannot set up the stream");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.health.set_ready(true);

        let feeders_stop = CancellationToken::new();
        let feeders = TaskTracker::new();
        let tasks = TaskTracker::new();
        let abandon = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(cfg.max_inflight));
        let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let progress_period = (cfg.ack_wait / 2).max(Duration::from_millis(50));
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + progress_period,
            progress_period,
        );
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            // Dispatch as much as slots and ready deliveries allow.
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                let picked = self.sched().pick(cfg.max_inflight);
                let Some((subject, mut held)) = picked else {
                    drop(permit);
                    break;
                };
                let ctx = self.ctx.clone();
                let sched = self.sched.clone();
                let dispatch = self.dispatch.clone();
                let abandon = abandon.clone();
                tasks.spawn(async move {
                    // It may have waited in the ready queue since its last progress ack: renew
                    // the lease before the invocation's own progress ticker takes over.
                    held.renew(ctx.config.ack_wait).await;
                    let signal = if held.lease.holds(tokio::time::Instant::now()) {
                        pipeline::run(&ctx, held, &abandon).await
                    } else {
                        // Its lease ran out while it waited (progress acks did not get
                        // through): the message is another worker's now, or soon.
                        tracing::info!(
                            seq = held.delivery.stream_sequence,
                            delivery = held.delivery.delivered,
                            "Lease lost while waiting: leaving the message to its redelivery"
                        );
                        Signal::Other
                    };
                    {
                        let mut s = sched.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(f) = s.functions.get_mut(&subject) {
                            f.in_flight = f.in_flight.saturating_sub(1);
                            if let Some(l) = f.limiter.as_mut() {
                                l.learn(signal);
                            }
                            f.room.notify_one();
                        }
                    }
                    drop(permit);
                    dispatch.notify_one();
                });
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.dispatch.notified() => {}
                _ = discovery.tick() => self.discover(&feeders, &feeders_stop).await,
                _ = progress.tick() => self.progress_ready().await,
            }
        }

        // Shutdown: stop feeders (they give back what they pulled), give back ready
        // deliveries, let in-flight work finish for up to shutdown_timeout.
        self.health.set_ready(false);
        feeders_stop.cancel();
        feeders.close();
        feeders.wait().await;
        let ready: Vec<Held> = {
            let mut s = self.sched();
            s.functions
                .values_mut()
                .flat_map(|f| f.ready.drain(..))
                .collect()
        };
        for held in ready {
            held.give_back().await;
        }
        tasks.close();
        super::finish_in_flight(&self.ctx, &tasks, &abandon).await;
    }

    /// Progress acks for deliveries waiting in ready queues.
    async fn progress_ready(&self) {
        let count = self
            .sched()
            .functions
            .values()
            .map(|f| f.ready.len())
            .sum::<usize>();
        if count == 0 {
            return;
        }
        // Take the ready deliveries out, progress them, put them back in order.
        let mut taken: Vec<(String, VecDeque<Held>)> = {
            let mut s = self.sched();
            s.functions
                .iter_mut()
                .filter(|(_, f)| !f.ready.is_empty())
                .map(|(k, f)| (k.clone(), std::mem::take(&mut f.ready)))
                .collect()
        };
        let ack_wait = self.ctx.config.ack_wait;
        for (_, q) in &mut taken {
            for held in q.iter_mut() {
                held.renew(ack_wait).await;
            }
            // One whose lease ran out is another worker's now, or soon: leave it to that.
            q.retain(|held| held.lease.holds(tokio::time::Instant::now()));
        }
        let mut s = self.sched();
        for (k, mut q) in taken {
            if let Some(f) = s.functions.get_mut(&k) {
                q.append(&mut f.ready);
                f.ready = q;
                // Room again when leases ran out above: the feeder may pull more.
                f.room.notify_one();
            } else {
                // The function's feeder ended meanwhile: nothing will run these; give back.
                for held in q {
                    tokio::spawn(held.give_back());
                }
            }
        }
        drop(s);
        self.dispatch.notify_one();
    }

    /// Read per-subject counts; update gauges; start feeders for functions with work.
    async fn discover(&self, feeders: &TaskTracker, stop: &CancellationToken) {
        let queue = self.ctx.config.queue_name.clone();
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
                if *n > 0 && !s.functions.contains_key(subject) {
                    start.push(subject.clone());
                }
            }
            for subject in &start {
                s.functions.insert(
                    subject.clone(),
                    FunctionState {
                        ready: VecDeque::new(),
                        in_flight: 0,
                        limiter: self
                            .ctx
                            .config
                            .limiter_enabled
                            .then(|| Limiter::new(self.ctx.config.max_inflight)),
                        room: Arc::new(Notify::new()),
                        pending: seen.get(subject).copied().unwrap_or(0),
                    },
                );
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
                sched: self.sched.clone(),
                dispatch: self.dispatch.clone(),
                subject,
                stop: stop.clone(),
            };
            feeders.spawn(feeder.run());
        }
    }
}

/// Pulls one function's deliveries into its ready queue.
struct Feeder {
    ctx: Arc<Context>,
    stream: StreamSpec,
    sched: Arc<Mutex<Sched>>,
    dispatch: Arc<Notify>,
    subject: String,
    stop: CancellationToken,
}

impl Feeder {
    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self) {
        let cfg = &self.ctx.config;
        let queue = &cfg.queue_name;
        let spec = ConsumerSpec {
            stream: self.stream.name.clone(),
            name: consumer_name(queue, &self.subject),
            filter_subject: Some(self.subject.clone()),
            ack_wait: cfg.ack_wait,
            inactive_threshold: Some(server_inactive_threshold(
                cfg.consumer_inactive_threshold,
                cfg.ack_wait,
            )),
            pull_batch: cfg
                .consumer_pull_max_messages
                .unwrap_or(cfg.max_inflight.clamp(1, super::MAX_DEFAULT_PULL_BATCH)),
            recreate: false,
        };
        let sub = tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            s = self.ctx.broker.subscribe(&self.stream, &spec) => match s {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(consumer = %spec.name, error = %e, "Cannot create function consumer");
                    None
                }
            },
        };
        if let Some(mut sub) = sub {
            tracing::info!(consumer = %spec.name, subject = %self.subject, "Function consumer started");
            let room = self.room();
            let mut idle_since = tokio::time::Instant::now();
            let idle_limit = cfg.consumer_inactive_threshold;
            // A `next()` is never abandoned mid-way except when the feeder ends: a pull request
            // left behind by a cancelled `next()` could deliver a message into the
            // subscription's buffer where nobody sends progress for it.
            'feed: loop {
                let wanted = self.wanted();
                if wanted == 0 {
                    tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => break 'feed,
                        _ = room.notified() => continue 'feed,
                    }
                }
                sub.set_demand(wanted);
                let result = {
                    let next = sub.next();
                    tokio::pin!(next);
                    loop {
                        let idle_check = idle_since + idle_limit;
                        tokio::select! {
                            biased;
                            _ = self.stop.cancelled() => break 'feed,
                            r = &mut next => break r,
                            _ = tokio::time::sleep_until(idle_check) => {
                                if self.is_idle() {
                                    // Stop pulling; the server deletes the consumer after its
                                    // inactive threshold unless another replica still uses it.
                                    // (Deleting it here could pull it from under a replica that
                                    // is running one of its messages: that replica's ack would
                                    // be lost and the call run twice.)
                                    tracing::info!(consumer = %spec.name, "Function consumer idle; stopped pulling");
                                    break 'feed;
                                }
                                idle_since = tokio::time::Instant::now();
                            }
                        }
                    }
                };
                match result {
                    Some(Ok(d)) => {
                        idle_since = tokio::time::Instant::now();
                        let held = Held::received(d, cfg.ack_wait);
                        if let Some(f) = self.sched().functions.get_mut(&self.subject) {
                            f.ready.push_back(held);
                        }
                        self.dispatch.notify_one();
                    }
                    Some(Err(e)) => {
                        tracing::debug!(consumer = %spec.name, error = %e, "Pull failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    // The consumer is gone (inactive threshold, deleted by hand): discovery
                    // starts a new feeder if the function still has work.
                    None => {
                        tracing::info!(consumer = %spec.name, "Function consumer gone");
                        break 'feed;
                    }
                }
            }
            for d in sub.drain_buffered() {
                Held::received(d, cfg.ack_wait).give_back().await;
            }
        }
        self.retire().await;
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
            .is_none_or(|f| f.pending == 0 && f.ready.is_empty() && f.in_flight == 0)
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
            for held in f.ready {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let a = consumer_name("faas-request", "faas-request.figlet.openfaas-fn");
        assert!(a.starts_with("faas-request-fn-figlet_openfaas-fn-"));
        assert!(!a.contains('.'));
        let b = consumer_name("q", "q.a.b.ns");
        let c = consumer_name("q", "q.a_b.ns");
        assert_ne!(b, c, "a.b and a_b stay apart");
        assert_eq!(consumer_name("q", "q"), "q-fn-_");
        assert!(consumer_name("q", "q.x.ns").starts_with(&consumer_prefix("q")));
    }

    #[test]
    fn labels() {
        assert_eq!(
            function_label("q", "q.figlet.openfaas-fn"),
            "figlet.openfaas-fn"
        );
        assert_eq!(function_label("q", "q"), LEGACY_FUNCTION_LABEL);
    }
}
