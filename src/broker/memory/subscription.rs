//! A subscription: the port's pull loop over one consumer. Each look is a pull request; what it
//! takes waits in a small buffer (never more than the caller's demand); a consumer deleted
//! under it is recreated (or the subscription ends, as its spec says).

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::acker::delivery;
use super::consumer::PULL_REQUEST_LIFETIME;
use super::state::{Inner, State};
use super::time::later;
use crate::broker::{BrokerError, ConsumerSpec, Delivery, StreamSpec, Subscription};

pub(super) struct MemSubscription {
    pub(super) sub_id: u64,
    pub(super) inner: Arc<Inner>,
    pub(super) stream_spec: StreamSpec,
    pub(super) spec: ConsumerSpec,
    /// The consumer this subscription pulls from (a recreated one has a new id).
    pub(super) consumer_id: u64,
    pub(super) notify: Arc<Notify>,
    pub(super) demand: usize,
    /// Taken from the consumer, not yet handed out: at most `min(demand, pull_batch)`.
    pub(super) buffer: VecDeque<Delivery>,
}

/// What one look at the broker found.
pub(super) enum Step {
    /// `buffer` has a delivery.
    Ready,
    /// The consumer was recreated: look again (with its new wake-up handle).
    Again,
    Failed(BrokerError),
    /// Nothing to hand out: sleep until woken or until the consumer's next timer.
    Wait(Option<Instant>, WaitGuard),
    /// The consumer is gone and the spec says not to recreate it.
    Gone,
}

/// Counts a subscription waiting in `next` as a waiting pull request of its consumer.
pub(super) struct WaitGuard {
    pub(super) inner: Arc<Inner>,
    pub(super) stream: String,
    pub(super) consumer: String,
    pub(super) id: u64,
    pub(super) sub: u64,
    /// The wait ended normally; otherwise `next` was cancelled and its request lingers.
    pub(super) woken: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if let Some(c) = state
            .streams
            .get_mut(&self.stream)
            .and_then(|s| s.consumers.get_mut(&self.consumer))
            .filter(|c| c.id == self.id)
        {
            // No activity stamp: the server measures from when the pull request arrived, so a
            // consumer whose subscription waited longer than the threshold and then went away
            // is deleted at once.
            c.waiting = c.waiting.saturating_sub(1);
            if !self.woken {
                c.lingering
                    .insert(self.sub, later(Instant::now(), PULL_REQUEST_LIFETIME));
            }
        }
    }
}

impl MemSubscription {
    /// One look at the broker (a pull request): what the caller's `next` does now.
    pub(super) fn step(&mut self) -> Step {
        #[cfg(test)]
        self.inner
            .polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let inner = self.inner.clone();
        let mut state = inner.lock();
        state.sweep_stream(&self.spec.stream, now);
        let current = state
            .streams
            .get(&self.spec.stream)
            .and_then(|s| s.consumers.get(&self.spec.name))
            .map(|c| c.id);
        if current != Some(self.consumer_id) {
            return self.consumer_changed(&mut state, current.is_some(), now);
        }
        self.top_up(&mut state, now);
        if !self.buffer.is_empty() {
            return Step::Ready;
        }
        self.wait(&mut state)
    }

    /// The consumer was deleted or recreated: recreate it (its spec permitting), or end.
    fn consumer_changed(&mut self, state: &mut State, exists: bool, now: Instant) -> Step {
        let (stream, name) = (&self.spec.stream, &self.spec.name);
        if !exists && !self.spec.recreate {
            return if self.buffer.is_empty() {
                Step::Gone
            } else {
                Step::Ready
            };
        }
        if !exists {
            tracing::warn!(stream = %stream, consumer = %name, "Consumer disappeared; recreating it");
            if !state.streams.contains_key(stream) {
                tracing::warn!(stream = %stream, "Stream was deleted; recreating it empty");
            }
        }
        match state.ensure_consumer(&self.stream_spec, &self.spec, now) {
            Ok((id, notify)) => {
                self.consumer_id = id;
                self.notify = notify;
                Step::Again
            }
            Err(_) if !self.buffer.is_empty() => Step::Ready,
            Err(e) => Step::Failed(e),
        }
    }

    /// Take deliveries up to the demand (small top-ups wait until they are worth a request,
    /// like the JetStream puller); every look counts as activity of the consumer.
    fn top_up(&mut self, state: &mut State, now: Instant) {
        let (stream_name, name) = (self.spec.stream.as_str(), self.spec.name.as_str());
        let want = self.demand.min(self.spec.pull_batch.max(1));
        let have = self.buffer.len();
        let mut taken = Vec::new();
        if let Some(stream) = state.streams.get_mut(stream_name) {
            let deficit = want.saturating_sub(have);
            if deficit > 0 && (have == 0 || deficit >= (want / 2).max(1)) {
                taken = stream.take(name, deficit, now);
            }
            if let Some(c) = stream.consumers.get_mut(name) {
                // Every look is a (new) pull request: activity for the inactive threshold.
                c.last_active = now;
                c.lingering.remove(&self.sub_id);
            }
        }
        for (seq, delivered) in taken {
            if let Some(d) = delivery(state, &self.inner, stream_name, name, seq, delivered) {
                self.buffer.push_back(d);
            }
        }
    }

    /// Nothing to hand out: wait as a pull request waiting on the consumer.
    fn wait(&self, state: &mut State) -> Step {
        let Some(stream) = state.streams.get_mut(&self.spec.stream) else {
            return Step::Again;
        };
        // A schedule firing may bring this consumer a message: look again then.
        let schedule = stream.next_schedule();
        let Some(c) = stream.consumers.get_mut(&self.spec.name) else {
            return Step::Again;
        };
        c.waiting += 1;
        let deadline = match (c.next_deadline(), schedule) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Step::Wait(
            deadline,
            WaitGuard {
                inner: self.inner.clone(),
                stream: self.spec.stream.clone(),
                consumer: self.spec.name.clone(),
                id: c.id,
                sub: self.sub_id,
                woken: false,
            },
        )
    }
}

impl Drop for MemSubscription {
    fn drop(&mut self) {
        // Its pull requests go with it (the server sees the interest go away).
        let mut state = self.inner.lock();
        if let Some(c) = state
            .streams
            .get_mut(&self.spec.stream)
            .and_then(|s| s.consumers.get_mut(&self.spec.name))
            .filter(|c| c.id == self.consumer_id)
        {
            c.lingering.remove(&self.sub_id);
        }
    }
}

#[async_trait]
impl Subscription for MemSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            // Register for wake-ups before looking, so nothing that happens in between is
            // missed.
            let notify = self.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.step() {
                Step::Ready => {
                    if let Some(d) = self.buffer.pop_front() {
                        return Some(Ok(d));
                    }
                }
                Step::Again => {}
                Step::Gone => return None,
                Step::Failed(e) => return Some(Err(e)),
                Step::Wait(deadline, mut guard) => {
                    match deadline {
                        Some(at) => {
                            tokio::select! {
                                biased;
                                _ = &mut notified => {}
                                _ = tokio::time::sleep_until(at) => {}
                            }
                        }
                        None => notified.await,
                    }
                    guard.woken = true;
                    drop(guard);
                }
            }
        }
    }

    fn set_demand(&mut self, demand: usize) {
        self.demand = demand;
    }

    fn drain_buffered(&mut self) -> Vec<Delivery> {
        self.buffer.drain(..).collect()
    }
}
