//! The broker's state behind one lock: streams, buckets, usage. Every change goes through
//! here: creating streams and consumers (with nats-server's checks), storing, settling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::consumer::{Consumer, PendingState};
use super::kv::Bucket;
use super::limits::{MemoryLimits, MemoryUsage, full_error, stored_size};
use super::stream::{Stored, Stream};
use super::subjects::{subject_is_subset, subjects_collide, valid_name, valid_subject};
use super::time::later;
use crate::broker::{
    BrokerError, ConsumerSpec, MSG_ID_HEADER, Outgoing, PubAck, Retention, ServerVersion,
    StreamSpec, StreamStatus,
};
use crate::clock::Clock;

pub(super) struct Inner {
    pub(super) clock: Arc<dyn Clock>,
    pub(super) limits: MemoryLimits,
    pub(super) state: Mutex<State>,
    /// How often subscriptions looked at the state (tests check that waiting does not spin).
    #[cfg(test)]
    pub(super) polls: std::sync::atomic::AtomicU64,
}

impl Inner {
    pub(super) fn lock(&self) -> StateGuard<'_> {
        // A panic while holding the lock is a bug, but keep serving rather than cascading
        // panics into every task (and into `Drop` impls).
        StateGuard(self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The locked state. With debug assertions on (tests, the simulation's profile), releasing it
/// checks the state's invariants (`invariants.rs`): whatever changed it left it consistent.
pub(super) struct StateGuard<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if cfg!(debug_assertions) && !std::thread::panicking() {
            self.0.check_invariants();
        }
    }
}

pub(super) struct State {
    /// The nats-server whose behaviour is modelled where versions differ.
    pub(super) version: ServerVersion,
    pub(super) streams: BTreeMap<String, Stream>,
    pub(super) buckets: BTreeMap<String, Bucket>,
    pub(super) usage: MemoryUsage,
    pub(super) dedup_ids: usize,
    pub(super) next_id: u64,
}

pub(super) fn retention_name(r: Retention) -> &'static str {
    match r {
        Retention::WorkQueue => "WorkQueue",
        Retention::Limits => "Limits",
    }
}

impl State {
    pub(super) fn modelling(version: ServerVersion) -> State {
        State {
            version,
            streams: BTreeMap::new(),
            buckets: BTreeMap::new(),
            usage: MemoryUsage::default(),
            dedup_ids: 0,
            next_id: 0,
        }
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Apply everything time-driven to one stream: ages, duplicate window, idle consumers.
    pub(super) fn sweep_stream(&mut self, name: &str, now: Instant) {
        self.fire_schedules(name, now);
        let Some(stream) = self.streams.get_mut(name) else {
            return;
        };
        let (n, b) = stream.expire_aged(now);
        self.dedup_ids -= stream.expire_dedup(now);
        stream.expire_consumers(now, self.version);
        self.usage.messages -= n;
        self.usage.bytes -= b;
    }

    pub(super) fn sweep_bucket(&mut self, name: &str, now: Instant) {
        if let Some(bucket) = self.buckets.get_mut(name) {
            let (n, b) = bucket.expire(now);
            self.usage.messages -= n;
            self.usage.bytes -= b;
        }
    }

    pub(super) fn sweep_all(&mut self, now: Instant) {
        let streams: Vec<String> = self.streams.keys().cloned().collect();
        for name in streams {
            self.sweep_stream(&name, now);
        }
        let buckets: Vec<String> = self.buckets.keys().cloned().collect();
        for name in buckets {
            self.sweep_bucket(&name, now);
        }
    }

    /// Whether `messages` more messages and `bytes` more bytes fit, sweeping expired data
    /// first when they do not seem to.
    pub(super) fn fits(
        &mut self,
        limits: &MemoryLimits,
        messages: i64,
        bytes: i64,
        now: Instant,
    ) -> bool {
        let over = |u: MemoryUsage| {
            u.messages as i64 + messages > limits.max_messages as i64
                || u.bytes as i64 + bytes > limits.max_bytes as i64
        };
        if !over(self.usage) {
            return true;
        }
        self.sweep_all(now);
        !over(self.usage)
    }

    pub(super) fn ensure_stream(
        &mut self,
        spec: &StreamSpec,
        now: Instant,
    ) -> Result<StreamStatus, BrokerError> {
        if let Some(existing) = self.streams.get(&spec.name) {
            if existing.spec.retention != spec.retention {
                return Err(BrokerError::IncompatibleStream {
                    stream: spec.name.clone(),
                    found: retention_name(existing.spec.retention).into(),
                    want: retention_name(spec.retention).into(),
                });
            }
            self.sweep_stream(&spec.name, now);
            if let Some(stream) = self.streams.get_mut(&spec.name) {
                stream.spec.duplicate_window = spec.duplicate_window;
                if spec.schedules {
                    // As the server's update: schedules on, the subjects it lacks added.
                    stream.spec.schedules = true;
                    for subject in &spec.subjects {
                        if !stream.spec.subjects.contains(subject) {
                            stream.spec.subjects.push(subject.clone());
                        }
                    }
                }
            }
            return Ok(StreamStatus::Existing);
        }
        if !valid_name(&spec.name) {
            return Err(BrokerError::other(
                "create stream",
                format!("invalid stream name {:?}", spec.name),
            ));
        }
        let mut spec = spec.clone();
        if spec.subjects.is_empty() {
            spec.subjects = vec![spec.name.clone()];
        }
        if let Some(bad) = spec.subjects.iter().find(|s| !valid_subject(s, true)) {
            return Err(BrokerError::other(
                "create stream",
                format!("invalid subject {bad:?}"),
            ));
        }
        let overlap = self.streams.values().any(|other| {
            other
                .spec
                .subjects
                .iter()
                .any(|a| spec.subjects.iter().any(|b| subjects_collide(a, b)))
        });
        if overlap {
            return Err(BrokerError::other(
                "create stream",
                "subjects overlap with an existing stream (error code 10065)",
            ));
        }
        self.streams.insert(spec.name.clone(), Stream::new(spec));
        Ok(StreamStatus::Created)
    }

    /// Ensure the stream and the consumer; returns the consumer's id and wake-up handle.
    pub(super) fn ensure_consumer(
        &mut self,
        stream_spec: &StreamSpec,
        spec: &ConsumerSpec,
        now: Instant,
    ) -> Result<(u64, Arc<Notify>), BrokerError> {
        if spec.stream != stream_spec.name {
            return Err(BrokerError::other(
                "create consumer",
                format!(
                    "consumer {} names stream {} but stream {} was given",
                    spec.name, spec.stream, stream_spec.name
                ),
            ));
        }
        if self.ensure_stream(stream_spec, now)? == StreamStatus::Created {
            tracing::info!(stream = %stream_spec.name, "Created stream");
        }
        let id = self.next_id();
        let Some(stream) = self.streams.get_mut(&spec.stream) else {
            return Err(BrokerError::other("create consumer", "stream vanished"));
        };
        if let Some(c) = stream.consumers.get_mut(&spec.name) {
            // The server updates an existing durable in place (2.9.10 does not even refuse a
            // changed filter) and skips the work-queue checks.
            c.spec = spec.clone();
            c.last_active = now;
            return Ok((c.id, c.notify.clone()));
        }
        check_new_consumer(stream, spec, self.version)?;
        let first = stream
            .msgs
            .first_key_value()
            .map_or(stream.last_seq + 1, |(s, _)| *s);
        let c = Consumer::new(id, spec.clone(), first, now);
        let notify = c.notify.clone();
        stream.consumers.insert(spec.name.clone(), c);
        Ok((id, notify))
    }

    /// Store `msg` in the stream that covers its subject (dropping it as a duplicate of a
    /// message id still in the window), within the stream's byte limit and the broker's.
    pub(super) fn publish(
        &mut self,
        limits: &MemoryLimits,
        msg: Outgoing,
        published: SystemTime,
        now: Instant,
    ) -> Result<PubAck, BrokerError> {
        let Some(name) = self
            .streams
            .values()
            .find(|s| s.covers(&msg.subject))
            .map(|s| s.spec.name.clone())
        else {
            return Err(BrokerError::NoStream {
                subject: msg.subject,
            });
        };
        self.sweep_stream(&name, now);
        let (headers, msg_id) = with_msg_id(msg.headers, msg.msg_id);
        let size = stored_size(&msg.subject, &headers, &msg.payload);
        let schedules = self.version.schedules_messages();
        let stream = self.stream_mut(&name, &msg.subject)?;
        let schedule = super::schedules::read(stream, schedules, &headers)?;
        if let Some(seq) = msg_id
            .as_ref()
            .and_then(|id| stream.dedup.get(id))
            .map(|d| d.0)
        {
            return Ok(PubAck {
                stream: name,
                sequence: seq,
                duplicate: true,
            });
        }
        self.make_room(limits, &name, size, now)?;
        let stored = Stored {
            subject: msg.subject,
            headers,
            payload: msg.payload,
            published,
            stored_at: now,
            size,
        };
        let seq = self.append(&name, stored)?;
        if let Some(schedule) = schedule {
            self.add_schedule(&name, seq, schedule, (published, now));
        }
        if let Some(id) = msg_id {
            self.remember_id(limits, &name, id, seq, now);
        }
        Ok(PubAck {
            stream: name,
            sequence: seq,
            duplicate: false,
        })
    }

    fn stream_mut(&mut self, name: &str, subject: &str) -> Result<&mut Stream, BrokerError> {
        stream_in(&mut self.streams, name, subject)
    }

    /// Discard the stream's oldest messages until `size` more bytes fit its own byte limit
    /// (DiscardPolicy::Old), if the broker's limits allow the result.
    fn make_room(
        &mut self,
        limits: &MemoryLimits,
        name: &str,
        size: u64,
        now: Instant,
    ) -> Result<(), BrokerError> {
        let stream = self.stream_mut(name, name)?;
        let mut discard = Vec::new();
        if let Some(max) = stream.spec.max_bytes.filter(|m| *m > 0) {
            let max = max as u64;
            if size > max {
                return Err(BrokerError::TooLarge(format!(
                    "{size} bytes is over stream {name}'s max_bytes of {max}"
                )));
            }
            let mut bytes = stream.bytes;
            for (seq, m) in &stream.msgs {
                if bytes + size <= max {
                    break;
                }
                bytes -= m.size;
                discard.push(*seq);
            }
        }
        let freed: u64 = discard
            .iter()
            .filter_map(|s| stream.msgs.get(s).map(|m| m.size))
            .sum();
        let more = (1 - discard.len() as i64, size as i64 - freed as i64);
        if !self.fits(limits, more.0, more.1, now) {
            return Err(full_error(self.usage, limits));
        }
        let stream = stream_in(&mut self.streams, name, name)?;
        for seq in discard {
            if let Some(size) = stream.remove(seq) {
                self.usage.messages -= 1;
                self.usage.bytes -= size;
            }
        }
        Ok(())
    }

    /// Store the message as the stream's next sequence and wake the consumers it is for.
    pub(super) fn append(&mut self, name: &str, m: Stored) -> Result<u64, BrokerError> {
        let stream = stream_in(&mut self.streams, name, &m.subject)?;
        stream.last_seq += 1;
        let seq = stream.last_seq;
        stream
            .by_subject
            .entry(m.subject.clone())
            .or_default()
            .insert(seq);
        stream.bytes += m.size;
        for c in stream.consumers.values() {
            if c.selects(&m.subject) {
                c.notify.notify_waiters();
            }
        }
        self.usage.messages += 1;
        self.usage.bytes += m.size;
        stream.msgs.insert(seq, m);
        Ok(seq)
    }

    /// Keep `id` in the stream's duplicate window (within `max_dedup_ids` for the broker).
    fn remember_id(
        &mut self,
        limits: &MemoryLimits,
        name: &str,
        id: String,
        seq: u64,
        now: Instant,
    ) {
        let Some(stream) = self.streams.get_mut(name) else {
            return;
        };
        let end = later(now, stream.spec.duplicate_window);
        stream.dedup_order.push_back((end, id.clone()));
        if stream.dedup.insert(id, (seq, end)).is_none() {
            self.dedup_ids += 1;
        }
        if self.dedup_ids > limits.max_dedup_ids {
            self.forget_oldest_ids(limits.max_dedup_ids, name);
        }
    }

    /// Respect `max_dedup_ids`, forgetting the oldest ids of `stream` (the one that grew).
    pub(super) fn forget_oldest_ids(&mut self, max: usize, stream: &str) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let mut forgot = 0;
        while self.dedup_ids > max && s.forget_oldest_id() {
            self.dedup_ids -= 1;
            forgot += 1;
        }
        if forgot > 0 {
            tracing::warn!(
                stream = %stream,
                limit = max,
                "Too many message ids in the duplicate window: forgot the oldest, so a re-sent \
                 message may be stored twice"
            );
        }
    }

    /// Apply an ack of any kind from a delivery of `seq` by consumer `consumer`.
    pub(super) fn settle(
        &mut self,
        stream: &str,
        consumer: &str,
        seq: u64,
        how: Settle,
        now: Instant,
    ) {
        self.sweep_stream(stream, now);
        let Some(s) = self.streams.get_mut(stream) else {
            // Acks to a deleted stream or consumer go nowhere (JetStream acks are fire and
            // forget); the message, if still stored, is delivered again.
            return;
        };
        let Some(c) = s.consumers.get_mut(consumer) else {
            return;
        };
        c.last_active = now;
        // The server's timers run on their own: what is due is already queued (a progress
        // then no longer stops the redelivery).
        c.fire_timers(now);
        match how {
            // Not delivered by this consumer yet: from one deleted before it was recreated.
            Settle::Ack | Settle::Term
                if seq >= c.cursor && self.version.ignores_acks_ahead_of_the_consumer() => {}
            Settle::Ack | Settle::Term => {
                c.remove_pending(seq);
                // The server removes the message from a work queue whether or not this
                // consumer still had it pending.
                if s.spec.retention == Retention::WorkQueue
                    && let Some(size) = s.remove(seq)
                {
                    self.usage.messages -= 1;
                    self.usage.bytes -= size;
                }
            }
            Settle::Nak(delay) => {
                if !c.pending.contains_key(&seq) {
                    return;
                }
                match delay.filter(|d| !d.is_zero()) {
                    Some(d) => c.set_timer(seq, later(now, d)),
                    None => c.enqueue(seq),
                }
                c.notify.notify_waiters();
            }
            Settle::Progress => {
                let armed = c
                    .pending
                    .get(&seq)
                    .is_some_and(|p| matches!(p.state, PendingState::Timer(_)));
                if armed {
                    let at = later(now, c.ack_wait());
                    c.set_timer(seq, at);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Settle {
    Ack,
    Term,
    Nak(Option<Duration>),
    Progress,
}

/// The headers to store, with the message id as `Nats-Msg-Id` (the id given, else one the
/// headers carry), and that id.
fn with_msg_id(
    mut headers: Vec<(String, String)>,
    msg_id: Option<String>,
) -> (Vec<(String, String)>, Option<String>) {
    let id = match msg_id {
        Some(id) => {
            headers.retain(|(k, _)| k != MSG_ID_HEADER);
            headers.push((MSG_ID_HEADER.to_string(), id.clone()));
            Some(id)
        }
        None => headers
            .iter()
            .find(|(k, _)| k == MSG_ID_HEADER)
            .map(|(_, v)| v.clone()),
    };
    (headers, id)
}

/// Stream `name`; `NoStream` (for `subject`) when it is gone.
fn stream_in<'a>(
    streams: &'a mut BTreeMap<String, Stream>,
    name: &str,
    subject: &str,
) -> Result<&'a mut Stream, BrokerError> {
    streams.get_mut(name).ok_or_else(|| BrokerError::NoStream {
        subject: subject.to_string(),
    })
}

/// The checks nats-server makes before it creates a consumer: a valid name, a filter within
/// the stream's subjects, and on a work queue no two consumers that could take the same
/// message (10099, 10100).
fn check_new_consumer(
    stream: &Stream,
    spec: &ConsumerSpec,
    version: ServerVersion,
) -> Result<(), BrokerError> {
    if !valid_name(&spec.name) {
        return Err(BrokerError::other(
            "create consumer",
            format!("invalid consumer name {:?}", spec.name),
        ));
    }
    if let Some(filter) = &spec.filter_subject {
        let within = valid_subject(filter, true)
            && stream
                .spec
                .subjects
                .iter()
                .any(|s| subjects_collide(s, filter));
        if !within {
            return Err(BrokerError::other(
                "create consumer",
                "consumer filter subject is not a valid subset of the interest subjects \
                 (error code 10093)",
            ));
        }
    }
    if stream.spec.retention == Retention::WorkQueue && !stream.consumers.is_empty() {
        match &spec.filter_subject {
            None => {
                return Err(BrokerError::other(
                    "create consumer",
                    "multiple non-filtered consumers not allowed on workqueue stream \
                     (error code 10099)",
                ));
            }
            Some(filter) => {
                let apart = |other: &str| {
                    if version.refuses_overlapping_filters() {
                        !subjects_collide(filter, other)
                    } else {
                        !subject_is_subset(filter, other) && !subject_is_subset(other, filter)
                    }
                };
                let unique = stream
                    .consumers
                    .values()
                    .all(|o| o.spec.filter_subject.as_deref().is_some_and(apart));
                if !unique {
                    return Err(BrokerError::other(
                        "create consumer",
                        "filtered consumer not unique on workqueue stream (error code 10100)",
                    ));
                }
            }
        }
    }
    Ok(())
}
