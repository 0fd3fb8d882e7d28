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
//! - Inactive threshold, as nats-server 2.9.10 counts activity: a consumer is deleted once
//!   it has had no pull request waiting, no delivery and no ack of any kind (ack, nak,
//!   progress, term) for longer than the threshold. Messages pending an ack do **not** keep it
//!   alive. A subscription waiting in [`Subscription::next`] is a waiting pull request.
//!   (The server adds 0.1–1 s of jitter; the model deletes exactly at the threshold.)
//! - Demand-driven pulling: a subscription holds at most `min(demand, pull_batch)` deliveries.
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
    Acker, Broker, BrokerError, ConsumerSpec, Delivery, KvSpec, MSG_ID_HEADER, Outgoing, PubAck,
    Retention, StreamInfo, StreamSpec, StreamStatus, Subscription,
};
use crate::clock::Clock;

/// JetStream's default ack wait, used when a consumer asks for zero.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
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
    /// `true` (file storage): messages, consumers and buckets survive, but acks in flight are
    /// treated as lost: every ack-pending message is redelivered at once (with its delivery
    /// count kept), and only ids of messages still stored stay in the duplicate window (as
    /// the server rebuilds it from its store).
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
                let seqs: Vec<u64> = c.pending.keys().copied().collect();
                for seq in seqs {
                    c.enqueue(seq);
                }
                c.last_active = now;
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
            if let Some((order, seq)) = c.redeliver.pop_first() {
                let _ = order;
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
