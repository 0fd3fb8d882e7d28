//! The embedded in-process broker: JetStream semantics without NATS.
//!
//! Backs `queue-worker dev` and the deterministic simulation. It implements the [`crate::broker::Broker`] port
//! with the behaviour of nats-server 2.9.10 for everything the worker relies on; the conformance
//! suite (`tests/broker_conformance.rs`) runs the same tests against it and a real server.
//!
//! What it models:
//! - Streams with subjects (NATS wildcards), WorkQueue or Limits retention, `max_age`,
//!   per-stream `max_bytes` (discard old), the `Nats-Msg-Id` duplicate window. Streams may not
//!   overlap (NATS error 10065).
//! - Durable pull consumers with an optional filter subject. On a WorkQueue stream a second
//!   consumer is refused when it has no filter (10099) or when its filter is a subset or a
//!   superset of another's (10100; nats-server 2.9.10 compares filters this way, so
//!   `a.*.x` and `a.b.*` may coexist although they overlap). Creating a consumer that exists
//!   updates it in place, without those checks, as the server does.
//! - Delivery in stream order; redeliveries (ack-wait expiry, nak) go before new messages.
//!   Every delivered message is "ack pending" with its own timer; expiry or `nak(None)` queues
//!   it for redelivery with `delivered + 1`; `nak(Some(d))` re-arms the timer to `d`;
//!   `progress` re-arms it to `ack_wait` (not when already queued for redelivery); ack and
//!   term remove the message from a WorkQueue stream. Acks address a message by stream,
//!   consumer name and stream sequence, as JetStream's ack subjects do: an ack sent after the
//!   consumer was recreated still settles the message.
//! - Inactive threshold, as nats-server 2.9.10 counts activity: a consumer is deleted once it
//!   has no pull request waiting and nothing happened for longer than the threshold since the
//!   last pull request *arrived*, the last delivery and the last ack of any kind (ack, nak,
//!   progress, term). Messages pending an ack do **not** keep it alive. (The server checks on
//!   a timer with 0.1–1 s of jitter; the model deletes exactly at the threshold.)
//! - Pull requests: each look a subscription takes in [`Subscription::next`] is a pull request;
//!   while it waits there, its request waits on the consumer. When `next` is cancelled (a
//!   `select!` or timeout), the request keeps waiting, as a JetStream pull request does, for
//!   10 s (the JetStream subscription's request lifetime) or until the subscription is dropped.
//! - Demand-driven pulling: a subscription holds at most `min(demand, pull_batch)` deliveries.
//! - Acks take effect at once. (The server queues acks and handles them on their own
//!   goroutine, so a pull sent right after a nak can overtake it and get a newer message
//!   first; the model's order is one the server can also produce.)
//! - Consumer pause (modelled for 2.11 and later, as [`crate::broker::Operate::pause_consumer`]):
//!   a paused consumer delivers nothing until resumed.
//! - Bounded memory ([`MemoryLimits`]): a publish or KV put that would exceed the limits fails
//!   with [`BrokerError::Full`]; a message larger than `max_message_bytes` with
//!   [`BrokerError::TooLarge`].
//! - [`MemoryBroker::restart`] models a broker restart with memory or file storage.
//!
//! Time: timers use `tokio::time` (paused-time tests and turmoil control them); publish times
//! come from the [`Clock`] port. Nothing polls: waiting subscriptions sleep on a
//! `Notify` and on their consumer's next ack-wait deadline. Expiry of ages, TTLs, duplicate
//! ids and idle consumers is applied lazily whenever the state is looked at, which no caller
//! can tell apart from a background sweeper. All maps that are iterated are ordered, so a run
//! is deterministic for a given schedule.

mod acker;
mod consumer;
mod invariants;
mod kv;
mod limits;
mod objects;
mod operate;
mod schedules;
mod state;
mod stream;
mod subjects;
mod subscription;
mod time;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

pub use limits::{MemoryLimits, MemoryUsage};

use crate::broker::{
    Admin, BrokerError, Consume, ConsumerSpec, KeyValue, KvSpec, MSG_ID_HEADER, Outgoing, PubAck,
    Publish, ServerVersion, StreamInfo, StreamSpec, StreamStatus, Subscription,
};
use crate::clock::Clock;
use kv::{Bucket, KvEntry};
use limits::{full_error, wire_size};
use state::{Inner, State};
use subjects::{valid_bucket, valid_key, valid_subject};
use subscription::MemSubscription;
use time::later;

/// The in-process broker. Cheap to clone: clones share one broker.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

impl MemoryBroker {
    /// A broker that behaves as the newest nats-server tested ([`ServerVersion::NEWEST`]).
    pub fn new(clock: Arc<dyn Clock>, limits: MemoryLimits) -> MemoryBroker {
        MemoryBroker::modelling(clock, limits, ServerVersion::NEWEST)
    }

    /// A broker that behaves as nats-server `version` where versions differ (see the
    /// methods of [`ServerVersion`]).
    pub fn modelling(
        clock: Arc<dyn Clock>,
        limits: MemoryLimits,
        version: ServerVersion,
    ) -> MemoryBroker {
        MemoryBroker {
            inner: Arc::new(Inner {
                clock,
                limits,
                state: Mutex::new(State::modelling(version)),
                #[cfg(test)]
                polls: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn limits(&self) -> &MemoryLimits {
        &self.inner.limits
    }

    /// Whether message `seq` is still stored in `stream` (the simulation's bookkeeping).
    pub fn has_message(&self, stream: &str, seq: u64) -> bool {
        let state = self.inner.lock();
        state
            .streams
            .get(stream)
            .is_some_and(|s| s.msgs.contains_key(&seq))
    }

    /// Messages and bytes held now (expired ones already dropped).
    pub fn usage(&self) -> MemoryUsage {
        let mut state = self.inner.lock();
        state.sweep_all(Instant::now());
        state.usage
    }

    /// Model a broker restart. `keep_messages = false` (memory storage): every stream,
    /// consumer and bucket is gone; subscriptions recreate their stream and consumer, empty.
    /// `true` (file storage): messages, file consumers and buckets survive (consumers kept in
    /// memory, [`ConsumerSpec::memory_storage`], do not), and so do the leases of
    /// ack-pending messages: each is redelivered when its ack wait (or nak delay) runs out, not
    /// at once, as nats-server 2.9 and 2.15 restore pending deliveries from their store
    /// (checked by the conformance suite's `restart_keeps_ack_pending_leases`). Pull requests
    /// do not survive, and only ids of messages still stored stay in the duplicate window (the
    /// server rebuilds it from its store).
    pub fn restart(&self, keep_messages: bool) {
        let now = Instant::now();
        let mut state = self.inner.lock();
        for stream in state.streams.values() {
            for c in stream.consumers.values() {
                c.notify.notify_waiters();
            }
        }
        if !keep_messages {
            state.streams.clear();
            state.buckets.clear();
            state.usage = MemoryUsage::default();
            state.dedup_ids = 0;
            return;
        }
        let mut dedup_ids = 0;
        for stream in state.streams.values_mut() {
            stream.rebuild_dedup(now);
            dedup_ids += stream.dedup.len();
            // Consumers kept in the server's memory end with it; their unacked messages stay
            // in the stream for whoever creates the consumer again.
            stream.consumers.retain(|_, c| !c.spec.memory_storage);
            for c in stream.consumers.values_mut() {
                c.last_active = now;
                // Pull requests do not survive a restart.
                c.lingering.clear();
            }
        }
        state.dedup_ids = dedup_ids;
    }

    /// Delete a stream with its messages and consumers (`nats stream delete`); `false` when it
    /// did not exist. Live subscriptions recreate it, empty.
    pub fn delete_stream(&self, name: &str) -> bool {
        let mut state = self.inner.lock();
        let Some(stream) = state.streams.remove(name) else {
            return false;
        };
        state.usage.messages -= stream.msgs.len() as u64;
        state.usage.bytes -= stream.bytes;
        state.dedup_ids -= stream.dedup.len();
        for c in stream.consumers.values() {
            c.notify.notify_waiters();
        }
        true
    }
}

#[async_trait]
impl Publish for MemoryBroker {
    async fn publish(&self, msg: Outgoing) -> Result<PubAck, BrokerError> {
        if !valid_subject(&msg.subject, false) {
            return Err(BrokerError::other(
                "publish",
                format!("invalid subject {:?}", msg.subject),
            ));
        }
        let mut wire_headers = msg.headers.clone();
        if let Some(id) = &msg.msg_id {
            wire_headers.push((MSG_ID_HEADER.to_string(), id.clone()));
        }
        let wire = wire_size(&wire_headers, &msg.payload);
        let max = self.inner.limits.max_message_bytes;
        if wire > max {
            return Err(BrokerError::TooLarge(format!(
                "{wire} bytes (headers and body) is over the {max} byte limit per message"
            )));
        }
        let published = self.inner.clock.now();
        self.inner
            .lock()
            .publish(&self.inner.limits, msg, published, Instant::now())
    }
}

#[async_trait]
impl Consume for MemoryBroker {
    async fn subscribe(
        &self,
        stream: &StreamSpec,
        consumer: &ConsumerSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let (id, notify) = self
            .inner
            .lock()
            .ensure_consumer(stream, consumer, Instant::now())?;
        let sub_id = self.inner.lock().next_id();
        Ok(Box::new(MemSubscription {
            sub_id,
            inner: self.inner.clone(),
            stream_spec: stream.clone(),
            spec: consumer.clone(),
            consumer_id: id,
            notify,
            demand: 1,
            buffer: VecDeque::new(),
        }))
    }
}

#[async_trait]
impl Admin for MemoryBroker {
    async fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamStatus, BrokerError> {
        self.inner.lock().ensure_stream(spec, Instant::now())
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<bool, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        let removed = state
            .streams
            .get_mut(stream)
            .and_then(|s| s.consumers.remove(name));
        match removed {
            Some(c) => {
                c.notify.notify_waiters();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn consumer_exists(&self, stream: &str, name: &str) -> Result<bool, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        Ok(state
            .streams
            .get(stream)
            .is_some_and(|s| s.consumers.contains_key(name)))
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<String>, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        Ok(state
            .streams
            .get(stream)
            .map(|s| s.consumers.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn server_version(&self) -> Option<ServerVersion> {
        Some(self.inner.lock().version)
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.limits().max_message_bytes)
    }

    fn schedules_messages(&self) -> bool {
        self.inner.lock().version.schedules_messages()
    }

    fn is_connected(&self) -> bool {
        true
    }

    async fn stream_info(
        &self,
        stream: &str,
        subjects: Option<&str>,
    ) -> Result<Option<StreamInfo>, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        Ok(state.streams.get(stream).map(|s| s.info(subjects)))
    }
}

impl MemoryBroker {
    /// Create bucket `spec.bucket` unless it exists.
    fn insert_bucket(&self, spec: KvSpec) {
        let mut state = self.inner.lock();
        state
            .buckets
            .entry(spec.bucket.clone())
            .or_insert_with(|| Bucket {
                spec,
                entries: BTreeMap::new(),
                expiry: BTreeSet::new(),
                revision: 0,
            });
    }

    /// Put `value` under `key`; with `expected`, only when the key's live revision is that
    /// (`0`: no live value), else [`BrokerError::Conflict`]. An entry holds at most `max`
    /// bytes (key and value).
    fn put_entry(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        max: usize,
    ) -> Result<u64, BrokerError> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        if key.len() + value.len() > max {
            return Err(BrokerError::TooLarge(format!(
                "{} bytes is over the {max} byte limit per entry",
                key.len() + value.len()
            )));
        }
        let now = Instant::now();
        let limits = &self.inner.limits;
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, now);
        let Some(b) = state.buckets.get(bucket) else {
            return Err(no_bucket(bucket));
        };
        let live = b.entries.get(key);
        if let Some(want) = expected
            && live.map_or(0, |e| e.revision) != want
        {
            return Err(BrokerError::Conflict {
                key: key.to_string(),
            });
        }
        let old = live.map(|e| (key.len() + e.value.len()) as u64);
        let size = (key.len() + value.len()) as u64;
        let (more_msgs, more_bytes) = match old {
            Some(o) => (0, size as i64 - o as i64),
            None => (1, size as i64),
        };
        if !state.fits(limits, more_msgs, more_bytes, now) {
            return Err(full_error(state.usage, limits));
        }
        let Some(b) = state.buckets.get_mut(bucket) else {
            return Err(no_bucket(bucket));
        };
        let freed = b.remove(key);
        let expires = (!b.spec.ttl.is_zero()).then(|| later(now, b.spec.ttl));
        if let Some(at) = expires {
            b.expiry.insert((at, key.to_string()));
        }
        b.revision += 1;
        let revision = b.revision;
        b.entries.insert(
            key.to_string(),
            KvEntry {
                value,
                expires,
                revision,
            },
        );
        if let Some(f) = freed {
            state.usage.messages -= 1;
            state.usage.bytes -= f;
        }
        state.usage.messages += 1;
        state.usage.bytes += size;
        Ok(revision)
    }
}

#[async_trait]
impl KeyValue for MemoryBroker {
    async fn ensure_kv(&self, spec: &KvSpec) -> Result<(), BrokerError> {
        if !valid_bucket(&spec.bucket) {
            return Err(BrokerError::other(
                "create key-value bucket",
                format!(
                    "invalid bucket name {:?}: use letters, digits, _ and -",
                    spec.bucket
                ),
            ));
        }
        self.insert_bucket(spec.clone());
        Ok(())
    }

    async fn kv_put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, BrokerError> {
        self.put_entry(
            bucket,
            key,
            value,
            None,
            self.inner.limits.max_message_bytes,
        )
    }

    async fn kv_entry(&self, bucket: &str, key: &str) -> Result<Option<(Bytes, u64)>, BrokerError> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, Instant::now());
        let Some(b) = state.buckets.get(bucket) else {
            return Err(no_bucket(bucket));
        };
        Ok(b.entries.get(key).map(|e| (e.value.clone(), e.revision)))
    }

    async fn kv_swap(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<u64, BrokerError> {
        self.put_entry(
            bucket,
            key,
            value,
            Some(expected),
            self.inner.limits.max_message_bytes,
        )
    }

    async fn kv_revision(&self, bucket: &str) -> Result<u64, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, Instant::now());
        let b = state.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        Ok(b.revision)
    }

    async fn kv_keys(&self, bucket: &str) -> Result<Vec<String>, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, Instant::now());
        let b = state.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        Ok(b.entries.keys().cloned().collect())
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, BrokerError> {
        Ok(self.kv_entry(bucket, key).await?.map(|(value, _)| value))
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, Instant::now());
        let Some(b) = state.buckets.get_mut(bucket) else {
            return Err(no_bucket(bucket));
        };
        if let Some(f) = b.remove(key) {
            state.usage.messages -= 1;
            state.usage.bytes -= f;
        }
        Ok(())
    }
}

fn invalid_key(key: &str) -> BrokerError {
    BrokerError::other(
        "key-value",
        format!("invalid key {key:?}: use letters, digits and -/_=. (not first or last)"),
    )
}

fn no_bucket(bucket: &str) -> BrokerError {
    BrokerError::NoBucket {
        bucket: bucket.to_string(),
    }
}
