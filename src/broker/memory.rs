//! The embedded in-process broker: JetStream semantics without NATS.
//!
//! Backs `queue-worker dev` and the deterministic simulation. It implements the [`Broker`] port
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
//! - Bounded memory ([`MemoryLimits`]): a publish or KV put that would exceed the limits fails
//!   with [`BrokerError::Full`]; a message larger than `max_message_bytes` with
//!   [`BrokerError::TooLarge`].
//! - [`MemoryBroker::restart`] models a broker restart with memory or file storage.
//!
//! Time: timers use `tokio::time` (paused-time tests and turmoil control them); publish times
//! come from the [`Clock`] port. Nothing polls: waiting subscriptions sleep on a
//! [`Notify`] and on their consumer's next ack-wait deadline. Expiry of ages, TTLs, duplicate
//! ids and idle consumers is applied lazily whenever the state is looked at, which no caller
//! can tell apart from a background sweeper. All maps that are iterated are ordered, so a run
//! is deterministic for a given schedule.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Acker, Admin, BrokerError, Consume, ConsumerSpec, Delivery, KeyValue, KvSpec, MSG_ID_HEADER,
    Outgoing, PubAck, Publish, Retention, StreamInfo, StreamSpec, StreamStatus, Subscription,
};
use crate::clock::Clock;

/// JetStream's default ack wait, used when a consumer asks for zero.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a pull request abandoned by a cancelled [`Subscription::next`] keeps waiting on
/// the consumer (the JetStream subscription's request lifetime).
const PULL_REQUEST_LIFETIME: Duration = Duration::from_secs(10);
/// Stands in for "never" in timer arithmetic (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// How much the in-process broker may hold. A publish or KV put that would go beyond a limit
/// is refused with [`BrokerError::Full`] (the ingress answers 503): the broker never grows
/// without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Messages over all streams plus live key-value entries.
    pub max_messages: u64,
    /// Bytes (subject + headers + payload; key + value) over all streams and buckets.
    pub max_bytes: u64,
    /// Largest single message (headers and payload as NATS counts them): NATS' `max_payload`.
    pub max_message_bytes: usize,
    /// Message ids remembered for the duplicate windows of all streams together. Beyond it the
    /// oldest ids are forgotten early (with a warning): the window shrinks instead of memory
    /// growing.
    pub max_dedup_ids: usize,
}

impl Default for MemoryLimits {
    fn default() -> MemoryLimits {
        MemoryLimits {
            max_messages: 100_000,
            max_bytes: 256 << 20,
            max_message_bytes: 1 << 20,
            max_dedup_ids: 200_000,
        }
    }
}

/// What the broker holds now (see [`MemoryLimits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub messages: u64,
    pub bytes: u64,
}

/// The in-process broker. Cheap to clone: clones share one broker.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    limits: MemoryLimits,
    state: Mutex<State>,
    /// How often subscriptions looked at the state (tests check that waiting does not spin).
    #[cfg(test)]
    polls: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug, but keep serving rather than cascading
        // panics into every task (and into `Drop` impls).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    streams: BTreeMap<String, Stream>,
    buckets: BTreeMap<String, Bucket>,
    usage: MemoryUsage,
    dedup_ids: usize,
    next_id: u64,
}

struct Stream {
    spec: StreamSpec,
    msgs: BTreeMap<u64, Stored>,
    /// Sequences per subject: filtered consumers find their next message without a scan.
    by_subject: BTreeMap<String, BTreeSet<u64>>,
    last_seq: u64,
    bytes: u64,
    /// Message id → (sequence, end of its duplicate window).
    dedup: HashMap<String, (u64, Instant)>,
    /// Message ids in window-end order (an id re-used after its window has two entries; the
    /// stale one is recognised by its end time).
    dedup_order: VecDeque<(Instant, String)>,
    consumers: BTreeMap<String, Consumer>,
}

struct Stored {
    subject: String,
    headers: Vec<(String, String)>,
    payload: Bytes,
    published: SystemTime,
    stored_at: Instant,
    size: u64,
}

struct Consumer {
    /// Distinguishes a recreated consumer from the one a subscription started with.
    id: u64,
    spec: ConsumerSpec,
    /// Next stream sequence to consider for a first delivery.
    cursor: u64,
    /// Ack-pending messages by stream sequence.
    pending: BTreeMap<u64, Pending>,
    /// Armed timers: (deadline, sequence).
    timers: BTreeSet<(Instant, u64)>,
    /// Queued for redelivery: (queue order, sequence).
    redeliver: BTreeSet<(u64, u64)>,
    queued: u64,
    /// Subscriptions waiting in `next` (pull requests waiting on the server).
    waiting: usize,
    /// Pull requests left behind by a cancelled `next`, by subscription: they keep waiting
    /// (and the consumer alive) until they expire or their subscription goes away.
    lingering: BTreeMap<u64, Instant>,
    last_active: Instant,
    notify: Arc<Notify>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Deliveries so far.
    delivered: u64,
    state: PendingState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingState {
    /// Redelivered when the timer fires (ack wait, or a nak delay).
    Timer(Instant),
    /// Waiting in the redelivery queue (key in `Consumer::redeliver`).
    Queued(u64),
}

struct Bucket {
    spec: KvSpec,
    entries: BTreeMap<String, KvEntry>,
    expiry: BTreeSet<(Instant, String)>,
    revision: u64,
}

struct KvEntry {
    value: Bytes,
    expires: Option<Instant>,
}

impl MemoryBroker {
    pub fn new(clock: Arc<dyn Clock>, limits: MemoryLimits) -> MemoryBroker {
        MemoryBroker {
            inner: Arc::new(Inner {
                clock,
                limits,
                state: Mutex::new(State::default()),
                #[cfg(test)]
                polls: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn limits(&self) -> &MemoryLimits {
        &self.inner.limits
    }

    /// Messages and bytes held now (expired ones already dropped).
    pub fn usage(&self) -> MemoryUsage {
        let mut state = self.inner.lock();
        state.sweep_all(Instant::now());
        state.usage
    }

    /// Model a broker restart. `keep_messages = false` (memory storage): every stream,
    /// consumer and bucket is gone; subscriptions recreate their stream and consumer, empty.
    /// `true` (file storage): messages, consumers and buckets survive, and so do the leases of
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

/// Bytes a message occupies in the limits.
fn stored_size(subject: &str, headers: &[(String, String)], payload: &[u8]) -> u64 {
    let h: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (subject.len() + h + payload.len()) as u64
}

/// Size NATS compares with `max_payload`: the serialized header block plus the payload.
fn wire_size(headers: &[(String, String)], payload: &[u8]) -> usize {
    if headers.is_empty() {
        return payload.len();
    }
    let h: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    "NATS/1.0\r\n".len() + h + 2 + payload.len()
}

/// `now + d`, saturating far in the future.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

fn retention_name(r: Retention) -> &'static str {
    match r {
        Retention::WorkQueue => "WorkQueue",
        Retention::Limits => "Limits",
    }
}

fn full_error(usage: MemoryUsage, limits: &MemoryLimits) -> BrokerError {
    BrokerError::Full(format!(
        "the in-process broker holds {} messages and {} bytes (limits: {} messages, {} bytes); \
         retry once the queue has drained, or raise the limits",
        usage.messages, usage.bytes, limits.max_messages, limits.max_bytes
    ))
}

// ---- subjects ----------------------------------------------------------------------------

/// Whether `subject` is valid: non-empty tokens without whitespace; with `wildcards`, `*`
/// tokens and a final `>` token are allowed.
pub(crate) fn valid_subject(subject: &str, wildcards: bool) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(t) = tokens.next() {
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            return false;
        }
        match t {
            ">" if !wildcards || tokens.peek().is_some() => return false,
            "*" if !wildcards => return false,
            _ => {}
        }
    }
    true
}

/// Whether the literal `subject` matches `pattern` (`*`: one token, `>`: one or more).
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `a` matches is matched by `b` (nats-server's `subjectIsSubsetMatch`).
pub(crate) fn subject_is_subset(a: &str, b: &str) -> bool {
    let ta: Vec<&str> = a.split('.').collect();
    let tb: Vec<&str> = b.split('.').collect();
    for (i, t2) in tb.iter().enumerate() {
        let Some(t1) = ta.get(i) else {
            return false;
        };
        if *t2 == ">" {
            return true;
        }
        if *t1 == ">" {
            return false;
        }
        if *t1 == "*" {
            if *t2 != "*" {
                return false;
            }
            continue;
        }
        if *t2 != "*" && t1 != t2 {
            return false;
        }
    }
    ta.len() == tb.len()
}

/// Whether some subject matches both patterns (nats-server's `SubjectsCollide`).
pub(crate) fn subjects_collide(a: &str, b: &str) -> bool {
    let ta: Vec<&str> = a.split('.').collect();
    let tb: Vec<&str> = b.split('.').collect();
    for (x, y) in ta.iter().zip(&tb) {
        if *x == ">" || *y == ">" {
            return true;
        }
        if *x == "*" || *y == "*" || x == y {
            continue;
        }
        return false;
    }
    ta.len() == tb.len()
}

fn has_wildcard(subject: &str) -> bool {
    subject.split('.').any(|t| t == "*" || t == ">")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

fn valid_bucket(bucket: &str) -> bool {
    !bucket.is_empty()
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=' | '.'))
}

// ---- streams -----------------------------------------------------------------------------

impl Stream {
    fn new(spec: StreamSpec) -> Stream {
        Stream {
            spec,
            msgs: BTreeMap::new(),
            by_subject: BTreeMap::new(),
            last_seq: 0,
            bytes: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            consumers: BTreeMap::new(),
        }
    }

    fn covers(&self, subject: &str) -> bool {
        self.spec
            .subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
    }

    /// Remove one message; returns its size.
    fn remove(&mut self, seq: u64) -> Option<u64> {
        let msg = self.msgs.remove(&seq)?;
        if let Some(seqs) = self.by_subject.get_mut(&msg.subject) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_subject.remove(&msg.subject);
            }
        }
        self.bytes -= msg.size;
        Some(msg.size)
    }

    /// Forget message ids whose duplicate window has ended; returns how many.
    fn expire_dedup(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some((end, _)) = self.dedup_order.front() {
            if *end > now {
                break;
            }
            let Some((end, id)) = self.dedup_order.pop_front() else {
                break;
            };
            if self.dedup.get(&id).is_some_and(|(_, e)| *e == end) {
                self.dedup.remove(&id);
                removed += 1;
            }
        }
        removed
    }

    /// Forget the oldest message id (to respect `max_dedup_ids`); false when none is left.
    fn forget_oldest_id(&mut self) -> bool {
        while let Some((end, id)) = self.dedup_order.pop_front() {
            if self.dedup.get(&id).is_some_and(|(_, e)| *e == end) {
                self.dedup.remove(&id);
                return true;
            }
        }
        false
    }

    /// After a restart with file storage: only ids of messages still stored are remembered.
    fn rebuild_dedup(&mut self, now: Instant) {
        self.dedup.clear();
        self.dedup_order.clear();
        let window = self.spec.duplicate_window;
        for (seq, msg) in &self.msgs {
            let Some((_, id)) = msg.headers.iter().find(|(k, _)| k == MSG_ID_HEADER) else {
                continue;
            };
            let end = later(msg.stored_at, window);
            if end > now {
                self.dedup.insert(id.clone(), (*seq, end));
                self.dedup_order.push_back((end, id.clone()));
            }
        }
        self.dedup_order.make_contiguous().sort();
    }

    /// Messages past `max_age`: removed (returns count and bytes).
    fn expire_aged(&mut self, now: Instant) -> (u64, u64) {
        let Some(max_age) = self.spec.max_age.filter(|a| !a.is_zero()) else {
            return (0, 0);
        };
        let mut gone = (0, 0);
        while let Some((&seq, msg)) = self.msgs.first_key_value() {
            if later(msg.stored_at, max_age) > now {
                break;
            }
            if let Some(size) = self.remove(seq) {
                gone.0 += 1;
                gone.1 += size;
            }
        }
        gone
    }

    /// Delete consumers idle past their inactive threshold.
    fn expire_consumers(&mut self, now: Instant) {
        let stream = &self.spec.name;
        self.consumers.retain(|name, c| {
            if c.is_inactive(now) {
                tracing::debug!(stream = %stream, consumer = %name, "Consumer deleted after its inactive threshold");
                c.notify.notify_waiters();
                false
            } else {
                true
            }
        });
    }

    fn info(&self, filter: Option<&str>) -> StreamInfo {
        let subjects = match filter {
            None => BTreeMap::new(),
            Some(f) => self
                .by_subject
                .iter()
                .filter(|(subject, _)| subject_matches(f, subject))
                .map(|(subject, seqs)| (subject.clone(), seqs.len() as u64))
                .collect(),
        };
        StreamInfo {
            messages: self.msgs.len() as u64,
            bytes: self.bytes,
            subjects,
        }
    }

    /// Deliver up to `n` messages to consumer `name`: redeliveries first, then new messages in
    /// stream order. Returns (sequence, delivery count) pairs.
    fn take(&mut self, name: &str, n: usize, now: Instant) -> Vec<(u64, u64)> {
        let Stream {
            msgs,
            by_subject,
            consumers,
            ..
        } = self;
        let mut out = Vec::new();
        let Some(c) = consumers.get_mut(name) else {
            return out;
        };
        c.fire_timers(now);
        let deadline = later(now, c.ack_wait());
        while out.len() < n {
            if let Some((_, seq)) = c.redeliver.pop_first() {
                if !msgs.contains_key(&seq) {
                    c.pending.remove(&seq);
                    continue;
                }
                if let Some(p) = c.pending.get_mut(&seq) {
                    p.delivered += 1;
                    p.state = PendingState::Timer(deadline);
                    c.timers.insert((deadline, seq));
                    out.push((seq, p.delivered));
                }
                continue;
            }
            let filter = c.spec.filter_subject.as_deref();
            let Some(seq) = first_match(msgs, by_subject, c.cursor, filter) else {
                break;
            };
            c.cursor = seq + 1;
            if c.pending.contains_key(&seq) {
                // Only after a filter change: the message is already out.
                continue;
            }
            c.pending.insert(
                seq,
                Pending {
                    delivered: 1,
                    state: PendingState::Timer(deadline),
                },
            );
            c.timers.insert((deadline, seq));
            out.push((seq, 1));
        }
        out
    }
}

/// The first message at or after `cursor` that `filter` selects.
fn first_match(
    msgs: &BTreeMap<u64, Stored>,
    by_subject: &BTreeMap<String, BTreeSet<u64>>,
    cursor: u64,
    filter: Option<&str>,
) -> Option<u64> {
    match filter {
        None => msgs.range(cursor..).next().map(|(s, _)| *s),
        Some(f) if !has_wildcard(f) => by_subject
            .get(f)
            .and_then(|seqs| seqs.range(cursor..).next().copied()),
        Some(f) => by_subject
            .iter()
            .filter(|(subject, _)| subject_matches(f, subject))
            .filter_map(|(_, seqs)| seqs.range(cursor..).next().copied())
            .min(),
    }
}

// ---- consumers ---------------------------------------------------------------------------

impl Consumer {
    fn new(id: u64, spec: ConsumerSpec, first_seq: u64, now: Instant) -> Consumer {
        Consumer {
            id,
            spec,
            cursor: first_seq,
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            redeliver: BTreeSet::new(),
            queued: 0,
            waiting: 0,
            lingering: BTreeMap::new(),
            last_active: now,
            notify: Arc::new(Notify::new()),
        }
    }

    fn ack_wait(&self) -> Duration {
        if self.spec.ack_wait.is_zero() {
            DEFAULT_ACK_WAIT
        } else {
            self.spec.ack_wait
        }
    }

    /// Idle past the inactive threshold (strictly, as the server compares).
    fn is_inactive(&mut self, now: Instant) -> bool {
        self.lingering.retain(|_, until| *until > now);
        match self.spec.inactive_threshold.filter(|t| !t.is_zero()) {
            Some(threshold) => {
                self.waiting == 0
                    && self.lingering.is_empty()
                    && now.saturating_duration_since(self.last_active) > threshold
            }
            None => false,
        }
    }

    /// Stop whatever is scheduled for `seq` (timer or queue slot).
    fn unschedule(&mut self, seq: u64) {
        if let Some(p) = self.pending.get(&seq) {
            match p.state {
                PendingState::Timer(at) => {
                    self.timers.remove(&(at, seq));
                }
                PendingState::Queued(order) => {
                    self.redeliver.remove(&(order, seq));
                }
            }
        }
    }

    /// Arm the timer of pending message `seq` for `at`.
    fn set_timer(&mut self, seq: u64, at: Instant) {
        self.unschedule(seq);
        if let Some(p) = self.pending.get_mut(&seq) {
            p.state = PendingState::Timer(at);
            self.timers.insert((at, seq));
        }
    }

    /// Queue pending message `seq` for redelivery (no-op when already queued).
    fn enqueue(&mut self, seq: u64) {
        let Some(p) = self.pending.get(&seq) else {
            return;
        };
        if matches!(p.state, PendingState::Queued(_)) {
            return;
        }
        self.unschedule(seq);
        self.queued += 1;
        let order = self.queued;
        self.redeliver.insert((order, seq));
        if let Some(p) = self.pending.get_mut(&seq) {
            p.state = PendingState::Queued(order);
        }
    }

    fn remove_pending(&mut self, seq: u64) {
        self.unschedule(seq);
        self.pending.remove(&seq);
    }

    /// Queue every message whose timer is due.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.enqueue(seq);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    fn selects(&self, subject: &str) -> bool {
        self.spec
            .filter_subject
            .as_deref()
            .is_none_or(|f| subject_matches(f, subject))
    }
}

// ---- key-value buckets -------------------------------------------------------------------

impl Bucket {
    /// Drop expired entries; returns (count, bytes) removed.
    fn expire(&mut self, now: Instant) -> (u64, u64) {
        let mut gone = (0, 0);
        while let Some((at, _)) = self.expiry.first() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.expiry.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&key) {
                gone.0 += 1;
                gone.1 += (key.len() + e.value.len()) as u64;
            }
        }
        gone
    }

    fn remove(&mut self, key: &str) -> Option<u64> {
        let e = self.entries.remove(key)?;
        if let Some(at) = e.expires {
            self.expiry.remove(&(at, key.to_string()));
        }
        Some((key.len() + e.value.len()) as u64)
    }
}

// ---- broker state ------------------------------------------------------------------------

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Apply everything time-driven to one stream: ages, duplicate window, idle consumers.
    fn sweep_stream(&mut self, name: &str, now: Instant) {
        let Some(stream) = self.streams.get_mut(name) else {
            return;
        };
        let (n, b) = stream.expire_aged(now);
        self.dedup_ids -= stream.expire_dedup(now);
        stream.expire_consumers(now);
        self.usage.messages -= n;
        self.usage.bytes -= b;
    }

    fn sweep_bucket(&mut self, name: &str, now: Instant) {
        if let Some(bucket) = self.buckets.get_mut(name) {
            let (n, b) = bucket.expire(now);
            self.usage.messages -= n;
            self.usage.bytes -= b;
        }
    }

    fn sweep_all(&mut self, now: Instant) {
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
    fn fits(&mut self, limits: &MemoryLimits, messages: i64, bytes: i64, now: Instant) -> bool {
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

    fn ensure_stream(
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
    fn ensure_consumer(
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
                    let unique = stream
                        .consumers
                        .values()
                        .all(|o| match &o.spec.filter_subject {
                            None => false,
                            Some(other) => {
                                !subject_is_subset(filter, other)
                                    && !subject_is_subset(other, filter)
                            }
                        });
                    if !unique {
                        return Err(BrokerError::other(
                            "create consumer",
                            "filtered consumer not unique on workqueue stream (error code 10100)",
                        ));
                    }
                }
            }
        }
        let first = stream
            .msgs
            .first_key_value()
            .map_or(stream.last_seq + 1, |(s, _)| *s);
        let c = Consumer::new(id, spec.clone(), first, now);
        let notify = c.notify.clone();
        stream.consumers.insert(spec.name.clone(), c);
        Ok((id, notify))
    }

    fn publish(
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
        let mut headers = msg.headers;
        let msg_id = match msg.msg_id {
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
        let size = stored_size(&msg.subject, &headers, &msg.payload);
        let Some(stream) = self.streams.get_mut(&name) else {
            return Err(BrokerError::NoStream {
                subject: msg.subject,
            });
        };
        if let Some(id) = &msg_id
            && let Some((seq, _)) = stream.dedup.get(id)
        {
            return Ok(PubAck {
                stream: name,
                sequence: *seq,
                duplicate: true,
            });
        }
        // The stream's own byte limit discards its oldest messages (DiscardPolicy::Old).
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
        if !self.fits(
            limits,
            1 - discard.len() as i64,
            size as i64 - freed as i64,
            now,
        ) {
            return Err(full_error(self.usage, limits));
        }
        let Some(stream) = self.streams.get_mut(&name) else {
            return Err(BrokerError::NoStream {
                subject: msg.subject,
            });
        };
        for seq in discard {
            if let Some(size) = stream.remove(seq) {
                self.usage.messages -= 1;
                self.usage.bytes -= size;
            }
        }
        stream.last_seq += 1;
        let seq = stream.last_seq;
        stream
            .by_subject
            .entry(msg.subject.clone())
            .or_default()
            .insert(seq);
        stream.bytes += size;
        for c in stream.consumers.values() {
            if c.selects(&msg.subject) {
                c.notify.notify_waiters();
            }
        }
        stream.msgs.insert(
            seq,
            Stored {
                subject: msg.subject,
                headers,
                payload: msg.payload,
                published,
                stored_at: now,
                size,
            },
        );
        self.usage.messages += 1;
        self.usage.bytes += size;
        if let Some(id) = msg_id {
            let end = later(now, stream.spec.duplicate_window);
            stream.dedup_order.push_back((end, id.clone()));
            if stream.dedup.insert(id, (seq, end)).is_none() {
                self.dedup_ids += 1;
            }
            if self.dedup_ids > limits.max_dedup_ids {
                self.forget_oldest_ids(limits.max_dedup_ids, &name);
            }
        }
        Ok(PubAck {
            stream: name,
            sequence: seq,
            duplicate: false,
        })
    }

    /// Respect `max_dedup_ids`, forgetting the oldest ids of `stream` (the one that grew).
    fn forget_oldest_ids(&mut self, max: usize, stream: &str) {
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
    fn settle(&mut self, stream: &str, consumer: &str, seq: u64, how: Settle, now: Instant) {
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

    fn delivery(
        &self,
        inner: &Arc<Inner>,
        stream: &str,
        consumer: &str,
        seq: u64,
        delivered: u64,
    ) -> Option<Delivery> {
        let m = self.streams.get(stream)?.msgs.get(&seq)?;
        Some(Delivery {
            subject: m.subject.clone(),
            payload: m.payload.clone(),
            headers: m.headers.clone(),
            delivered,
            stream_sequence: seq,
            published: m.published,
            acker: Box::new(MemAcker {
                inner: inner.clone(),
                stream: stream.to_string(),
                consumer: consumer.to_string(),
                seq,
            }),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Term,
    Nak(Option<Duration>),
    Progress,
}

// ---- the port ----------------------------------------------------------------------------

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
        let mut state = self.inner.lock();
        state
            .buckets
            .entry(spec.bucket.clone())
            .or_insert_with(|| Bucket {
                spec: spec.clone(),
                entries: BTreeMap::new(),
                expiry: BTreeSet::new(),
                revision: 0,
            });
        Ok(())
    }

    async fn kv_put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, BrokerError> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        let max = self.inner.limits.max_message_bytes;
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
        let old = b
            .entries
            .get(key)
            .map(|e| (key.len() + e.value.len()) as u64);
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
        b.entries
            .insert(key.to_string(), KvEntry { value, expires });
        b.revision += 1;
        let revision = b.revision;
        if let Some(f) = freed {
            state.usage.messages -= 1;
            state.usage.bytes -= f;
        }
        state.usage.messages += 1;
        state.usage.bytes += size;
        Ok(revision)
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, BrokerError> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, Instant::now());
        let Some(b) = state.buckets.get(bucket) else {
            return Err(no_bucket(bucket));
        };
        Ok(b.entries.get(key).map(|e| e.value.clone()))
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

// ---- subscriptions -----------------------------------------------------------------------

struct MemSubscription {
    sub_id: u64,
    inner: Arc<Inner>,
    stream_spec: StreamSpec,
    spec: ConsumerSpec,
    /// The consumer this subscription pulls from (a recreated one has a new id).
    consumer_id: u64,
    notify: Arc<Notify>,
    demand: usize,
    /// Taken from the consumer, not yet handed out: at most `min(demand, pull_batch)`.
    buffer: VecDeque<Delivery>,
}

/// What one look at the broker found.
enum Step {
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
struct WaitGuard {
    inner: Arc<Inner>,
    stream: String,
    consumer: String,
    id: u64,
    sub: u64,
    /// The wait ended normally; otherwise `next` was cancelled and its request lingers.
    woken: bool,
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
    fn step(&mut self) -> Step {
        #[cfg(test)]
        self.inner
            .polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let inner = self.inner.clone();
        let mut state = inner.lock();
        let stream_name = self.spec.stream.as_str();
        let name = self.spec.name.as_str();
        state.sweep_stream(stream_name, now);
        let current = state
            .streams
            .get(stream_name)
            .and_then(|s| s.consumers.get(name))
            .map(|c| c.id);
        if current != Some(self.consumer_id) {
            if current.is_none() && !self.spec.recreate {
                return if self.buffer.is_empty() {
                    Step::Gone
                } else {
                    Step::Ready
                };
            }
            if current.is_none() {
                let stream_exists = state.streams.contains_key(stream_name);
                tracing::warn!(
                    stream = %stream_name,
                    consumer = %name,
                    "Consumer disappeared; recreating it"
                );
                if !stream_exists {
                    tracing::warn!(stream = %stream_name, "Stream was deleted; recreating it empty");
                }
            }
            return match state.ensure_consumer(&self.stream_spec, &self.spec, now) {
                Ok((id, notify)) => {
                    self.consumer_id = id;
                    self.notify = notify;
                    Step::Again
                }
                Err(_) if !self.buffer.is_empty() => Step::Ready,
                Err(e) => Step::Failed(e),
            };
        }
        let want = self.demand.min(self.spec.pull_batch).max(1);
        let have = self.buffer.len();
        let mut taken = Vec::new();
        if let Some(stream) = state.streams.get_mut(stream_name) {
            if have < want {
                let deficit = want - have;
                // Small top-ups wait until they are worth a request, like the JetStream puller.
                if have == 0 || deficit >= (want / 2).max(1) {
                    taken = stream.take(name, deficit, now);
                }
            }
            if let Some(c) = stream.consumers.get_mut(name) {
                // Every look is a (new) pull request: activity for the inactive threshold.
                c.last_active = now;
                c.lingering.remove(&self.sub_id);
            }
        }
        for (seq, delivered) in taken {
            if let Some(d) = state.delivery(&inner, stream_name, name, seq, delivered) {
                self.buffer.push_back(d);
            }
        }
        if !self.buffer.is_empty() {
            return Step::Ready;
        }
        let Some(c) = state
            .streams
            .get_mut(stream_name)
            .and_then(|s| s.consumers.get_mut(name))
        else {
            return Step::Again;
        };
        c.waiting += 1;
        Step::Wait(
            c.next_deadline(),
            WaitGuard {
                inner: inner.clone(),
                stream: stream_name.to_string(),
                consumer: name.to_string(),
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
        self.demand = demand.max(1);
    }

    fn drain_buffered(&mut self) -> Vec<Delivery> {
        self.buffer.drain(..).collect()
    }
}

// ---- acks --------------------------------------------------------------------------------

/// Settles one delivery; addresses the message as a JetStream ack subject does.
struct MemAcker {
    inner: Arc<Inner>,
    stream: String,
    consumer: String,
    seq: u64,
}

impl MemAcker {
    fn settle(&self, how: Settle) -> Result<(), BrokerError> {
        self.inner
            .lock()
            .settle(&self.stream, &self.consumer, self.seq, how, Instant::now());
        Ok(())
    }
}

#[async_trait]
impl Acker for MemAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Ack)
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BrokerError> {
        self.settle(Settle::Nak(delay))
    }
    async fn progress(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Progress)
    }
    async fn term(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Term)
    }
}

#[cfg(test)]
impl State {
    /// Every index and total agrees with the data it summarises.
    fn check_invariants(&self) {
        let mut usage = MemoryUsage::default();
        let mut dedup_ids = 0;
        for (name, s) in &self.streams {
            assert_eq!(&s.spec.name, name);
            let bytes: u64 = s.msgs.values().map(|m| m.size).sum();
            assert_eq!(s.bytes, bytes, "stream {name} bytes");
            let indexed: usize = s.by_subject.values().map(BTreeSet::len).sum();
            assert_eq!(indexed, s.msgs.len(), "stream {name} subject index");
            for (subject, seqs) in &s.by_subject {
                assert!(!seqs.is_empty());
                for seq in seqs {
                    assert_eq!(&s.msgs[seq].subject, subject);
                }
            }
            assert!(s.msgs.keys().all(|seq| *seq <= s.last_seq));
            usage.messages += s.msgs.len() as u64;
            usage.bytes += bytes;
            dedup_ids += s.dedup.len();
            for c in s.consumers.values() {
                assert_eq!(c.timers.len() + c.redeliver.len(), c.pending.len());
                for (seq, p) in &c.pending {
                    match p.state {
                        PendingState::Timer(at) => assert!(c.timers.contains(&(at, *seq))),
                        PendingState::Queued(o) => assert!(c.redeliver.contains(&(o, *seq))),
                    }
                    assert!(p.delivered >= 1);
                }
            }
        }
        for b in self.buckets.values() {
            usage.messages += b.entries.len() as u64;
            usage.bytes += b
                .entries
                .iter()
                .map(|(k, e)| (k.len() + e.value.len()) as u64)
                .sum::<u64>();
            let armed: BTreeSet<(Instant, String)> = b
                .entries
                .iter()
                .filter_map(|(k, e)| e.expires.map(|at| (at, k.clone())))
                .collect();
            assert_eq!(armed, b.expiry);
        }
        assert_eq!(self.usage, usage, "usage totals");
        assert_eq!(self.dedup_ids, dedup_ids, "dedup id count");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use futures::FutureExt;

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Storage;

    fn broker_with(limits: MemoryLimits) -> MemoryBroker {
        MemoryBroker::new(Arc::new(SystemClock), limits)
    }

    fn broker() -> MemoryBroker {
        broker_with(MemoryLimits::default())
    }

    fn queue() -> StreamSpec {
        StreamSpec::work_queue("q", Storage::Memory, 1)
    }

    fn consumer(name: &str, filter: Option<&str>, ack_wait: Duration) -> ConsumerSpec {
        ConsumerSpec {
            stream: "OF_q".into(),
            name: name.into(),
            filter_subject: filter.map(str::to_string),
            ack_wait,
            inactive_threshold: None,
            pull_batch: 1,
            recreate: true,
        }
    }

    fn msg(subject: &str, id: Option<&str>, body: &str) -> Outgoing {
        Outgoing {
            subject: subject.into(),
            msg_id: id.map(str::to_string),
            headers: Vec::new(),
            payload: Bytes::from(body.to_string()),
        }
    }

    fn check(b: &MemoryBroker) {
        b.inner.lock().check_invariants();
    }

    fn polls(b: &MemoryBroker) -> u64 {
        b.inner.polls.load(Ordering::Relaxed)
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn subjects_match_like_nats() {
        for (pattern, subject, want) in [
            ("q", "q", true),
            ("q", "q.a", false),
            ("q.>", "q", false),
            ("q.>", "q.a", true),
            ("q.>", "q.a.b", true),
            ("q.*", "q.a", true),
            ("q.*", "q.a.b", false),
            ("q.*.ns", "q.f.ns", true),
            ("q.*.ns", "q.f.other", false),
            ("*.*", "a.b", true),
            (">", "a", true),
            ("q.a", "q.b", false),
        ] {
            assert_eq!(
                subject_matches(pattern, subject),
                want,
                "{pattern} ~ {subject}"
            );
        }
    }

    #[test]
    fn filter_subsets_follow_nats_2_9() {
        for (a, b, want) in [
            ("q.a", "q.>", true),
            ("q.>", "q.a", false),
            ("q.a.ns", "q.*.ns", true),
            ("q.*.ns", "q.>", true),
            ("q.*", "q.*", true),
            ("q.*", "q.a", false),
            ("q", "q.>", false),
            ("q.a", "q.a", true),
            // Overlapping, yet neither contains the other: 2.9.10 lets both be consumers.
            ("q.*.x", "q.a.*", false),
            ("q.a.*", "q.*.x", false),
        ] {
            assert_eq!(subject_is_subset(a, b), want, "{a} ⊆ {b}");
        }
    }

    #[test]
    fn stream_subjects_collide_when_any_subject_matches_both() {
        for (a, b, want) in [
            ("q", "q.>", false),
            ("q.>", "q.a", true),
            ("q.*.x", "q.a.*", true),
            ("q.*", "q.a.b", false),
            ("q.>", "q.*.b", true),
            ("q_DLQ.>", "q.>", false),
            ("a.b", "a.b", true),
        ] {
            assert_eq!(subjects_collide(a, b), want, "{a} ∩ {b}");
            assert_eq!(subjects_collide(b, a), want, "{b} ∩ {a}");
        }
    }

    #[test]
    fn names_subjects_and_keys_are_validated() {
        assert!(valid_subject("q.a.b", false));
        assert!(!valid_subject("q.*", false));
        assert!(valid_subject("q.*", true));
        assert!(valid_subject("q.>", true));
        assert!(!valid_subject("q.>.a", true));
        assert!(!valid_subject("q..a", true));
        assert!(!valid_subject("", true));
        assert!(!valid_subject("q a", false));
        assert!(valid_name("OF_faas-request"));
        assert!(!valid_name("OF.q"));
        assert!(valid_bucket("OF_q_calls"));
        assert!(!valid_bucket("a.b"));
        assert!(valid_key("c8f1-22/x=y.z"));
        assert!(!valid_key(".a"));
        assert!(!valid_key("a."));
        assert!(!valid_key("a b"));
    }

    #[tokio::test(start_paused = true)]
    async fn redelivery_timer_is_exact_and_waiting_does_not_spin() {
        let b = broker();
        b.ensure_stream(&queue()).await.unwrap();
        b.publish(msg("q.f.ns", None, "x")).await.unwrap();
        let mut sub = b
            .subscribe(&queue(), &consumer("w", None, 10 * SEC))
            .await
            .unwrap();
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.delivered, 1);
        let t0 = Instant::now();
        let before = polls(&b);
        let again = sub.next().await.unwrap().unwrap();
        assert_eq!(t0.elapsed(), 10 * SEC);
        assert_eq!(again.delivered, 2);
        // One look, a sleep until the timer, one more look.
        assert_eq!(polls(&b) - before, 2);
        again.acker.ack().await.unwrap();

        // Nothing to do for an hour: a single look, then asleep.
        let before = polls(&b);
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), sub.next())
                .await
                .is_err()
        );
        assert_eq!(polls(&b) - before, 1);
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn publish_times_come_from_the_clock() {
        struct Fixed;
        impl Clock for Fixed {
            fn now(&self) -> SystemTime {
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
            }
        }
        let b = MemoryBroker::new(Arc::new(Fixed), MemoryLimits::default());
        b.ensure_stream(&queue()).await.unwrap();
        b.publish(msg("q.f.ns", None, "x")).await.unwrap();
        let mut sub = b
            .subscribe(&queue(), &consumer("w", None, SEC))
            .await
            .unwrap();
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.published, Fixed.now());
        let again = sub.next().await.unwrap().unwrap();
        assert_eq!(again.published, Fixed.now(), "kept across redeliveries");
    }

    #[tokio::test(start_paused = true)]
    async fn publish_wakes_a_waiting_subscription_at_once() {
        let b = broker();
        b.ensure_stream(&queue()).await.unwrap();
        let mut sub = b
            .subscribe(&queue(), &consumer("w", Some("q.f.ns"), 10 * SEC))
            .await
            .unwrap();
        let waiter = tokio::spawn(async move {
            let t0 = Instant::now();
            let d = sub.next().await.unwrap().unwrap();
            (t0.elapsed(), d.stream_sequence)
        });
        tokio::time::sleep(5 * SEC).await;
        // Not for this consumer: no delivery.
        b.publish(msg("q.g.ns", None, "other")).await.unwrap();
        tokio::time::sleep(SEC).await;
        assert!(!waiter.is_finished());
        b.publish(msg("q.f.ns", None, "mine")).await.unwrap();
        let (waited, seq) = waiter.await.unwrap();
        assert_eq!(waited, 6 * SEC);
        assert_eq!(seq, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn nak_delay_progress_and_queued_messages() {
        let b = broker();
        b.ensure_stream(&queue()).await.unwrap();
        b.publish(msg("q.f.ns", None, "x")).await.unwrap();
        let mut sub = b
            .subscribe(&queue(), &consumer("w", None, 10 * SEC))
            .await
            .unwrap();
        let d = sub.next().await.unwrap().unwrap();
        // A nak delay longer than the ack wait wins over it.
        d.acker.nak(Some(25 * SEC)).await.unwrap();
        let t0 = Instant::now();
        let d2 = sub.next().await.unwrap().unwrap();
        assert_eq!(t0.elapsed(), 25 * SEC);
        assert_eq!(d2.delivered, 2);
        // Progress from an older delivery still addresses the message.
        tokio::time::sleep(8 * SEC).await;
        d.acker.progress().await.unwrap();
        let t1 = Instant::now();
        let d3 = sub.next().await.unwrap().unwrap();
        assert_eq!(t1.elapsed(), 10 * SEC);
        assert_eq!(d3.delivered, 3);
        // A nak of zero is a plain nak.
        d3.acker.nak(Some(Duration::ZERO)).await.unwrap();
        let d4 = sub.next().now_or_never().unwrap().unwrap().unwrap();
        assert_eq!(d4.delivered, 4);
        check(&b);
        d4.acker.term().await.unwrap();
        assert_eq!(b.usage().messages, 0);
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn subscriptions_of_one_consumer_share_its_messages() {
        let b = broker();
        b.ensure_stream(&queue()).await.unwrap();
        for i in 0..6 {
            b.publish(msg("q.f.ns", None, &i.to_string()))
                .await
                .unwrap();
        }
        let spec = ConsumerSpec {
            pull_batch: 4,
            recreate: true,
            ..consumer("w", None, 10 * SEC)
        };
        let mut a = b.subscribe(&queue(), &spec).await.unwrap();
        let mut c = b.subscribe(&queue(), &spec).await.unwrap();
        a.set_demand(2);
        c.set_demand(4);
        // `a` takes 2 (its demand), `c` the other 4 (its demand, within pull_batch).
        let mut seen = Vec::new();
        seen.push(a.next().await.unwrap().unwrap().stream_sequence);
        seen.push(c.next().await.unwrap().unwrap().stream_sequence);
        seen.push(a.next().await.unwrap().unwrap().stream_sequence);
        for _ in 0..3 {
            seen.push(c.next().await.unwrap().unwrap().stream_sequence);
        }
        assert_eq!(seen, vec![1, 3, 2, 4, 5, 6]);
        seen.sort();
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
        assert!(a.drain_buffered().is_empty());
        assert!(c.drain_buffered().is_empty());
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn inactive_threshold_boundaries() {
        let b = broker();
        b.ensure_stream(&queue()).await.unwrap();
        let spec = ConsumerSpec {
            inactive_threshold: Some(5 * SEC),
            ..consumer("idle", Some("q.idle.ns"), 30 * SEC)
        };
        drop(b.subscribe(&queue(), &spec).await.unwrap());
        tokio::time::sleep(5 * SEC).await;
        assert!(b.consumer_exists("OF_q", "idle").await.unwrap(), "at 5 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            !b.consumer_exists("OF_q", "idle").await.unwrap(),
            "past 5 s"
        );

        // A cancelled `next` leaves its pull request waiting for its lifetime.
        let mut sub = b.subscribe(&queue(), &spec).await.unwrap();
        assert!(sub.next().now_or_never().is_none());
        tokio::time::sleep(PULL_REQUEST_LIFETIME - Duration::from_millis(1)).await;
        assert!(b.consumer_exists("OF_q", "idle").await.unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The request arrived 10 s ago, beyond the threshold: gone once the request is.
        assert!(!b.consumer_exists("OF_q", "idle").await.unwrap());
        drop(sub);

        // Dropping the subscription ends its request at once.
        let mut sub = b.subscribe(&queue(), &spec).await.unwrap();
        assert!(sub.next().now_or_never().is_none());
        tokio::time::sleep(6 * SEC).await;
        assert!(b.consumer_exists("OF_q", "idle").await.unwrap());
        drop(sub);
        assert!(!b.consumer_exists("OF_q", "idle").await.unwrap());
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_window_ends() {
        let b = broker();
        let spec = StreamSpec {
            duplicate_window: 2 * SEC,
            ..queue()
        };
        b.ensure_stream(&spec).await.unwrap();
        let first = b.publish(msg("q.f.ns", Some("id"), "a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1999)).await;
        assert!(
            b.publish(msg("q.f.ns", Some("id"), "a"))
                .await
                .unwrap()
                .duplicate
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        let again = b.publish(msg("q.f.ns", Some("id"), "a")).await.unwrap();
        assert!(!again.duplicate);
        assert_eq!(again.sequence, first.sequence + 1);
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_ids_are_bounded() {
        let b = broker_with(MemoryLimits {
            max_dedup_ids: 3,
            ..MemoryLimits::default()
        });
        b.ensure_stream(&queue()).await.unwrap();
        for i in 0..5 {
            let id = format!("id{i}");
            b.publish(msg("q.f.ns", Some(&id), "x")).await.unwrap();
        }
        check(&b);
        assert_eq!(b.inner.lock().dedup_ids, 3);
        assert!(
            !b.publish(msg("q.f.ns", Some("id0"), "x"))
                .await
                .unwrap()
                .duplicate
        );
        assert!(
            b.publish(msg("q.f.ns", Some("id4"), "x"))
                .await
                .unwrap()
                .duplicate
        );
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn limits_streams_age_and_discard_old() {
        let b = broker();
        let dlq = StreamSpec {
            max_age: Some(5 * SEC),
            max_bytes: Some(100),
            ..StreamSpec::dead_letters("q", Storage::Memory, 1, 5 * SEC)
        };
        b.ensure_stream(&dlq).await.unwrap();
        let body = "x".repeat(30);
        for _ in 0..3 {
            b.publish(msg("q_DLQ.f.ns", None, &body)).await.unwrap();
            tokio::time::sleep(SEC).await;
        }
        // 3 × 40 bytes > 100: the oldest went.
        let info = b.stream_info(&dlq.name, None).await.unwrap().unwrap();
        assert_eq!(info.messages, 2);
        assert_eq!(info.bytes, 80);
        // The first survivor was stored at 1 s: gone at 6 s, the next at 7 s.
        tokio::time::sleep(3 * SEC).await;
        assert_eq!(b.usage().messages, 1);
        tokio::time::sleep(SEC).await;
        assert_eq!(b.usage(), MemoryUsage::default());
        // Acks do not remove messages from a Limits stream.
        b.publish(msg("q_DLQ.f.ns", None, "y")).await.unwrap();
        let spec = ConsumerSpec {
            stream: dlq.name.clone(),
            ..consumer("read", None, 10 * SEC)
        };
        let mut sub = b.subscribe(&dlq, &spec).await.unwrap();
        let d = sub.next().await.unwrap().unwrap();
        d.acker.ack().await.unwrap();
        assert_eq!(b.usage().messages, 1);
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn kv_ttl_restarts_on_put() {
        let b = broker();
        let spec = KvSpec {
            bucket: "calls".into(),
            ttl: 10 * SEC,
            storage: Storage::Memory,
            replicas: 1,
        };
        b.ensure_kv(&spec).await.unwrap();
        b.kv_put("calls", "k", Bytes::from_static(b"1"))
            .await
            .unwrap();
        tokio::time::sleep(8 * SEC).await;
        b.kv_put("calls", "k", Bytes::from_static(b"2"))
            .await
            .unwrap();
        tokio::time::sleep(9 * SEC).await;
        assert_eq!(
            b.kv_get("calls", "k").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        check(&b);
        tokio::time::sleep(SEC).await;
        assert_eq!(b.kv_get("calls", "k").await.unwrap(), None);
        assert_eq!(b.usage(), MemoryUsage::default());
        // TTL zero: kept forever.
        let forever = KvSpec {
            bucket: "forever".into(),
            ttl: Duration::ZERO,
            ..spec
        };
        b.ensure_kv(&forever).await.unwrap();
        b.kv_put("forever", "k", Bytes::new()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1 << 20)).await;
        assert!(b.kv_get("forever", "k").await.unwrap().is_some());
        check(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_publishes_are_refused() {
        let b = broker_with(MemoryLimits {
            max_message_bytes: 100,
            ..MemoryLimits::default()
        });
        b.ensure_stream(&queue()).await.unwrap();
        assert!(matches!(
            b.publish(msg("q.*", None, "x")).await,
            Err(BrokerError::Other { .. })
        ));
        assert!(matches!(
            b.publish(msg("q.f.ns", Some("id"), &"x".repeat(100))).await,
            Err(BrokerError::TooLarge(_))
        ));
        assert!(matches!(
            b.publish(msg("other", None, "x")).await,
            Err(BrokerError::NoStream { .. })
        ));
        // A filter outside the stream's subjects is refused.
        let e = b
            .subscribe(&queue(), &consumer("w", Some("elsewhere.>"), SEC))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("10093"), "{e}");
        check(&b);
    }

    /// Random operations, checking every index and total after each.
    #[tokio::test(start_paused = true)]
    async fn bookkeeping_survives_random_operations() {
        let b = broker_with(MemoryLimits {
            max_messages: 40,
            max_bytes: 4000,
            max_message_bytes: 1000,
            max_dedup_ids: 25,
        });
        let dlq = StreamSpec {
            max_bytes: Some(500),
            ..StreamSpec::dead_letters("q", Storage::Memory, 1, 30 * SEC)
        };
        let kv = KvSpec {
            bucket: "calls".into(),
            ttl: 20 * SEC,
            storage: Storage::Memory,
            replicas: 1,
        };
        b.ensure_stream(&dlq).await.unwrap();
        b.ensure_kv(&kv).await.unwrap();
        let specs = [
            consumer("a", Some("q.a.ns"), 5 * SEC),
            consumer("b", Some("q.b.ns"), 7 * SEC),
            ConsumerSpec {
                inactive_threshold: Some(3 * SEC),
                pull_batch: 3,
                recreate: true,
                ..consumer("c", Some("q"), 2 * SEC)
            },
        ];
        let mut subs: Vec<Option<Box<dyn Subscription>>> = vec![None, None, None];
        let mut held: Vec<Delivery> = Vec::new();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..3000 {
            match rand(13) {
                0..=2 => {
                    let subject = ["q.a.ns", "q.b.ns", "q", "q_DLQ.a.ns"][rand(4) as usize];
                    let id = (rand(2) == 0).then(|| format!("id{}", rand(40)));
                    let body = "x".repeat(rand(120) as usize);
                    let _ = b.publish(msg(subject, id.as_deref(), &body)).await;
                }
                3 | 4 => {
                    let i = rand(3) as usize;
                    if subs[i].is_none() {
                        subs[i] = b.subscribe(&queue(), &specs[i]).await.ok();
                    }
                    if let Some(sub) = subs[i].as_mut() {
                        sub.set_demand(1 + rand(3) as usize);
                        if let Some(Some(Ok(d))) = sub.next().now_or_never() {
                            held.push(d);
                        }
                    }
                }
                5 | 6 if !held.is_empty() => {
                    let d = held.swap_remove(rand(held.len() as u64) as usize);
                    match rand(4) {
                        0 => d.acker.ack().await.unwrap(),
                        1 => d.acker.term().await.unwrap(),
                        2 => d.acker.nak(None).await.unwrap(),
                        _ => d.acker.nak(Some(SEC * rand(4) as u32)).await.unwrap(),
                    }
                }
                7 if !held.is_empty() => {
                    let i = rand(held.len() as u64) as usize;
                    held[i].acker.progress().await.unwrap();
                }
                8 => {
                    let key = format!("k{}", rand(10));
                    if rand(3) == 0 {
                        b.kv_delete("calls", &key).await.unwrap();
                    } else {
                        let _ = b
                            .kv_put("calls", &key, Bytes::from(vec![0; rand(200) as usize]))
                            .await;
                    }
                }
                9 => tokio::time::sleep(Duration::from_millis(rand(3000))).await,
                10 => {
                    let i = rand(3) as usize;
                    if let Some(mut sub) = subs[i].take() {
                        held.extend(sub.drain_buffered());
                    }
                }
                11 if rand(20) == 0 => {
                    let _ = b
                        .delete_consumer("OF_q", specs[rand(3) as usize].name.as_str())
                        .await;
                }
                12 if rand(40) == 0 => {
                    b.restart(rand(3) != 0);
                    b.ensure_stream(&dlq).await.unwrap();
                    b.ensure_kv(&kv).await.unwrap();
                }
                _ => {}
            }
            let state = b.inner.lock();
            state.check_invariants();
            assert!(
                state.usage.messages <= 40 && state.usage.bytes <= 4000,
                "step {step}"
            );
            assert!(state.dedup_ids <= 25);
        }
    }
}
