//! The `Broker` port: everything the worker and the ingress need from a message broker.
//!
//! Production uses [`jetstream::JetStreamBroker`] (NATS JetStream through async-nats). The
//! embedded in-process broker and the simulation implement the same traits, so the worker code
//! is identical everywhere.

pub mod jetstream;
pub mod kv_lazy;
pub mod memory;
pub mod operate;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::Storage;
pub use operate::{ConsumerState, Operate, Operator, StoredMessage};

/// Header carrying the publisher's de-duplication id (JetStream's duplicate window).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// How long the stream remembers `Nats-Msg-Id`s to drop re-sent publishes.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Retention of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// A message is removed once acknowledged (or terminated): the invocation queue.
    WorkQueue,
    /// Kept until the limits (age, size) remove it: the dead-letter stream.
    Limits,
}

/// The stream the broker must provide.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
    pub retention: Retention,
    pub storage: Storage,
    pub replicas: usize,
    pub duplicate_window: Duration,
    /// `None`: no age limit.
    pub max_age: Option<Duration>,
    /// `None`: no size limit (the server's own limits apply).
    pub max_bytes: Option<i64>,
    /// The stream holds message schedules (NATS 2.12+, `allow_msg_schedules`): a message with
    /// [`SCHEDULE_HEADER`] is published by the server to its [`SCHEDULE_TARGET_HEADER`] when
    /// due. Set on an existing stream by [`Admin::ensure_stream`] (with its subjects).
    pub schedules: bool,
}

impl StreamSpec {
    /// The work-queue stream of queue `queue`: `OF_<queue>` on subjects `<queue>` and `<queue>.>`.
    pub fn work_queue(queue: &str, storage: Storage, replicas: usize) -> StreamSpec {
        StreamSpec {
            name: stream_name(queue),
            subjects: vec![queue.to_string(), format!("{queue}.>")],
            retention: Retention::WorkQueue,
            storage,
            replicas,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: None,
            max_bytes: None,
            schedules: false,
        }
    }

    /// The same stream holding message schedules (see [`StreamSpec::schedules`]).
    pub fn with_schedules(mut self, schedules: bool) -> StreamSpec {
        self.schedules = schedules;
        self
    }

    /// The same stream remembering message ids for `window` (`idempotency_window`).
    pub fn with_duplicate_window(mut self, window: Duration) -> StreamSpec {
        self.duplicate_window = window;
        self
    }

    /// The stream of queue `queue`'s delayed calls: `OF_<queue>_delayed` on
    /// `<queue>-delayed`, each message held there until its [`NOT_BEFORE_HEADER`] and then
    /// moved to its [`TARGET_HEADER`] subject (`src/worker/scheduler.rs`); and, where the server
    /// schedules messages, on `<queue>-delayed.at.<name>`: schedules the server turns into a
    /// message on `<queue>-delayed` when due.
    pub fn delayed(queue: &str, storage: Storage, replicas: usize) -> StreamSpec {
        StreamSpec {
            name: format!("{}_delayed", stream_name(queue)),
            subjects: vec![
                delayed_subject(queue),
                format!("{}.>", delayed_subject(queue)),
            ],
            ..StreamSpec::work_queue(queue, storage, replicas)
        }
    }

    /// The dead-letter stream of queue `queue`: `OF_<queue>_DLQ` on `<queue>_DLQ.>`.
    ///
    /// (Not `<queue>.dlq.>`: NATS refuses streams whose subjects overlap, and the work queue
    /// owns `<queue>.>`. Queue names may not end in `_DLQ`, so nothing else can overlap.)
    pub fn dead_letters(
        queue: &str,
        storage: Storage,
        replicas: usize,
        max_age: Duration,
    ) -> StreamSpec {
        StreamSpec {
            name: format!("{}_DLQ", stream_name(queue)),
            subjects: vec![format!("{}.>", dead_letter_prefix(queue))],
            retention: Retention::Limits,
            storage,
            replicas,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: Some(max_age),
            // Dead letters keep whole messages: bound the stream (1 GiB) so a poison storm
            // cannot fill the server's disk; the oldest are discarded first.
            max_bytes: Some(1 << 30),
            schedules: false,
        }
    }
}

/// `<queue>_DLQ`: the first subject token of a queue's dead letters.
pub fn dead_letter_prefix(queue: &str) -> String {
    format!("{queue}_DLQ")
}

/// The subject delayed calls of `queue` are published on.
pub fn delayed_subject(queue: &str) -> String {
    format!("{queue}-delayed")
}

/// The subject of a delayed call's schedule (`name`: unique to the call's submission).
pub fn schedule_subject(queue: &str, name: &str) -> String {
    format!("{}.at.{name}", delayed_subject(queue))
}

/// NATS's header making a message a schedule (`@at <RFC 3339 time>`, NATS 2.12+).
pub const SCHEDULE_HEADER: &str = "Nats-Schedule";
/// NATS's header naming the subject a schedule publishes to.
pub const SCHEDULE_TARGET_HEADER: &str = "Nats-Schedule-Target";

/// A delayed call's due time (unix milliseconds).
pub const NOT_BEFORE_HEADER: &str = "Qw-Not-Before";
/// The work subject a delayed call moves to when due.
pub const TARGET_HEADER: &str = "Qw-Target";
/// The message id a delayed call is published to the work queue with.
pub const DELAYED_MSG_ID_HEADER: &str = "Qw-Msg-Id";

/// `OF_<queue>`.
pub fn stream_name(queue: &str) -> String {
    format!("OF_{queue}")
}

/// A pull consumer the worker reads from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    pub stream: String,
    /// Durable name.
    pub name: String,
    /// `None`: every subject of the stream.
    pub filter_subject: Option<String>,
    pub ack_wait: Duration,
    /// `None`: no inactive threshold (static mode's durable consumer lives forever).
    pub inactive_threshold: Option<Duration>,
    /// Upper bound on messages pulled ahead of the worker and buffered locally.
    pub pull_batch: usize,
    /// When the consumer disappears (deleted by hand, by its inactive threshold, with its
    /// stream): recreate it and carry on (static mode), or end the subscription (`next` gives
    /// `None`; function mode recreates consumers only for functions with work).
    pub recreate: bool,
    /// Keep the consumer's state (delivered and acked sequences) in the server's memory rather
    /// than in files: no file written per ack, but a server restart ends the consumer (on a
    /// work queue its unacked messages stay in the stream for the next one).
    pub memory_storage: bool,
}

/// A key-value bucket whose entries expire (the call status).
#[derive(Debug, Clone, PartialEq)]
pub struct KvSpec {
    /// Bucket name: letters, digits, `_` and `-` (JetStream stores it in stream `KV_<bucket>`).
    pub bucket: String,
    /// Entries expire this long after their last put; `Duration::ZERO`: never.
    pub ttl: Duration,
    pub storage: Storage,
    pub replicas: usize,
}

impl KvSpec {
    /// Bucket `bucket` as `config` stores streams, its entries never expiring.
    pub fn kept(config: &crate::config::Config, bucket: String) -> KvSpec {
        KvSpec {
            bucket,
            ttl: Duration::ZERO,
            storage: config.nats_storage,
            replicas: config.nats_stream_replicas,
        }
    }
}

/// A bucket of objects (large payloads and results) whose objects expire.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSpec {
    /// Bucket name: letters, digits, `_` and `-` (JetStream stores it in stream `OBJ_<bucket>`).
    pub bucket: String,
    /// Objects expire this long after they were put; `Duration::ZERO`: never.
    pub ttl: Duration,
    pub storage: Storage,
    pub replicas: usize,
}

/// The state of a stream, from [`Admin::stream_info`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Messages stored now.
    pub messages: u64,
    /// Bytes stored now, as the broker counts them (not comparable across brokers).
    pub bytes: u64,
    /// Messages per subject, for the subjects matching the filter given (empty without one).
    pub subjects: BTreeMap<String, u64>,
}

/// Result of [`Admin::ensure_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Created,
    Existing,
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    /// Sent as `Nats-Msg-Id`: re-sends within the duplicate window are dropped.
    pub msg_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

/// The broker's receipt for a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub stream: String,
    pub sequence: u64,
    /// The message id was seen within the duplicate window: nothing new was stored.
    pub duplicate: bool,
}

/// One delivery of a stored message to this worker.
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
    /// 1 on the first delivery, incremented by every redelivery (nak or ack-wait expiry).
    pub delivered: u64,
    pub stream_sequence: u64,
    /// When the broker stored the message.
    pub published: SystemTime,
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("bytes", &self.payload.len())
            .field("delivered", &self.delivered)
            .field("stream_sequence", &self.stream_sequence)
            .finish_non_exhaustive()
    }
}

/// Settles one delivery. Every method is a message to the broker; none blocks on the message's
/// processing. They address the message (stream, consumer, sequence), not this delivery of it,
/// as JetStream's ack subjects do: a late one applies to a later delivery too.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done: remove the message from the work queue.
    async fn ack(&self) -> Result<(), BrokerError>;
    /// Redeliver, after `delay` (at once when `None`).
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BrokerError>;
    /// Still working: restart the ack-wait timer (unless it ran out already). Returns `Ok`
    /// only once the broker has confirmed it, so the worker can count its lease from it.
    async fn progress(&self) -> Result<(), BrokerError>;
    /// Never redeliver (removed from a work queue).
    async fn term(&self) -> Result<(), BrokerError>;
}

/// A stream of deliveries from one consumer.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery. Transient trouble (disconnects, a consumer deleted under us) is
    /// handled inside and reported as `Err` so the caller can log and pace itself; `None` means
    /// the subscription is closed for good.
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;

    /// How many deliveries the caller could start right now (its free slots). Implementations
    /// never pull more than this ahead, so no message waits unattended in a local buffer while
    /// its ack-wait timer runs. With 0 nothing new is asked for: `next` hands out only what was
    /// asked for before, and otherwise waits (until the caller stops waiting).
    fn set_demand(&mut self, _demand: usize) {}

    /// Deliveries already received but not yet handed out (used at shutdown to give them back).
    fn drain_buffered(&mut self) -> Vec<Delivery>;

    /// Whether pull requests asked for before are still open, so deliveries may still come:
    /// a subscription dropped meanwhile would leave them to nobody (each comes back after
    /// `ack_wait`, an attempt spent). Requests end on their own (they expire), and none is
    /// made while the demand is 0.
    fn pulling(&self) -> bool {
        false
    }
}

/// A nats-server version, as the server announces itself. Where versions behave differently
/// for what the worker relies on, the difference is a method here (checked against 2.9.10 and
/// 2.15.1 by the conformance suite; the version each change came with is from nats-server's
/// history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// Debian's nats-server, the oldest the worker supports and tests.
    pub const NATS_2_9: ServerVersion = ServerVersion::new(2, 9, 10);
    /// The newest nats-server tested (the in-process broker's default model).
    pub const NEWEST: ServerVersion = ServerVersion::new(2, 15, 1);

    pub const fn new(major: u32, minor: u32, patch: u32) -> ServerVersion {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }

    /// `2.9.10`, `v2.15.1`, `2.11.0-beta.1` (the suffix is ignored); `None` otherwise.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let text = text.trim().trim_start_matches('v');
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor) = (parts.next()??, parts.next()??);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(ServerVersion::new(major, minor, patch))
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// A pull consumer with acks pending is kept past its inactive threshold until the last
    /// ack deadline plus the threshold (2.12 and later); before, it was deleted with them.
    pub fn keeps_consumers_with_pending_acks(&self) -> bool {
        self.at_least(2, 12)
    }

    /// A stream deleted and at once created again works (2.12 and later). On 2.9 the new
    /// stream can fail every read (`error opening msg block file`) when a client recreates
    /// it the moment it is gone, as running workers do.
    pub fn recreates_deleted_streams(&self) -> bool {
        self.at_least(2, 12)
    }

    /// A purge of one subject leaves the stream's consumers delivering the rest (2.12 and
    /// later; on 2.9 a consumer of a work queue delivers nothing more after it: seen in the
    /// conformance suite).
    pub fn purges_subjects_safely(&self) -> bool {
        self.at_least(2, 12)
    }

    /// Consumers may be paused (`pause_until`, 2.11 and later).
    pub fn pauses_consumers(&self) -> bool {
        self.at_least(2, 11)
    }

    /// Streams may hold message schedules (`allow_msg_schedules`, 2.12 and later).
    pub fn schedules_messages(&self) -> bool {
        self.at_least(2, 12)
    }

    /// On a work queue, a filtered consumer whose filter overlaps another's is refused (2.11
    /// and later); before, only a filter that was a subset or superset of another's.
    pub fn refuses_overlapping_filters(&self) -> bool {
        self.at_least(2, 11)
    }

    /// An ack for a message the consumer has not delivered yet (an ack from before the
    /// consumer was deleted and recreated) is ignored (2.11 and later); before, it removed the
    /// message from a work queue.
    pub fn ignores_acks_ahead_of_the_consumer(&self) -> bool {
        self.at_least(2, 11)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Storing messages (the ingress, `publish`, dead letters).
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Store a message; returns only once the broker has stored it (or dropped it as a
    /// duplicate).
    async fn publish(&self, msg: Outgoing) -> Result<PubAck, BrokerError>;
}

/// Taking deliveries from a consumer (the worker).
#[async_trait]
pub trait Consume: Send + Sync + 'static {
    /// Ensure the consumer exists (creating the stream too when it is missing) and start pulling.
    async fn subscribe(
        &self,
        stream: &StreamSpec,
        consumer: &ConsumerSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError>;

    /// Push out everything buffered (acks are sent without waiting for a reply); called before
    /// the process exits.
    async fn flush(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// Streams, consumers and the connection: setting up a queue and watching it (the worker's
/// setup, discovery and gauges, readiness).
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    /// Create the stream if missing; leave a matching one alone (but for its duplicate window,
    /// which is set to the spec's); report an incompatible one.
    async fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamStatus, BrokerError>;

    /// Delete a consumer; `Ok(false)` when it did not exist.
    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<bool, BrokerError>;

    /// Whether a consumer exists.
    async fn consumer_exists(&self, stream: &str, name: &str) -> Result<bool, BrokerError>;

    /// Names of the stream's consumers (empty when the stream does not exist).
    async fn list_consumers(&self, stream: &str) -> Result<Vec<String>, BrokerError>;

    /// Messages and bytes in `stream`, with per-subject counts for the subjects matching
    /// `subjects` (a subject filter such as `faas-request.>`; `None`: no per-subject counts).
    /// `Ok(None)` when the stream does not exist.
    async fn stream_info(
        &self,
        stream: &str,
        subjects: Option<&str>,
    ) -> Result<Option<StreamInfo>, BrokerError>;

    /// Whether the broker is reachable right now.
    fn is_connected(&self) -> bool;

    /// The server's version (the one the in-process broker models), when known.
    fn server_version(&self) -> Option<ServerVersion>;

    /// The largest message the server takes (NATS `max_payload`: headers and payload), when
    /// known.
    fn max_payload(&self) -> Option<usize> {
        None
    }

    /// Whether streams with [`StreamSpec::schedules`] publish scheduled messages themselves
    /// (NATS 2.12 and later). The in-process broker does not: delayed calls then wait as
    /// messages given back until due.
    fn schedules_messages(&self) -> bool {
        false
    }
}

/// Key-value buckets whose entries expire (kept for the call status; nothing in the worker
/// uses them yet). Checked by the conformance suite like the rest.
#[async_trait]
pub trait KeyValue: Send + Sync + 'static {
    /// Create the key-value bucket if missing; leave an existing one alone.
    async fn ensure_kv(&self, spec: &KvSpec) -> Result<(), BrokerError>;

    /// Store `value` under `key` (restarting its TTL); returns the entry's revision.
    /// Keys: letters, digits and `-/_=.`, not starting or ending with `.`.
    async fn kv_put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, BrokerError>;

    /// The live value of `key`; `None` when never set, deleted or expired.
    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, BrokerError>;

    /// Delete `key` (no error when it does not exist).
    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError>;

    /// The live value of `key` with its revision; `None` when never set, deleted or expired.
    async fn kv_entry(&self, bucket: &str, key: &str) -> Result<Option<(Bytes, u64)>, BrokerError>;

    /// The bucket's latest revision: it changes with every write. One cheap request, to tell
    /// whether [`KeyValue::kv_keys`] could have changed. [`BrokerError::NoBucket`] when missing.
    async fn kv_revision(&self, bucket: &str) -> Result<u64, BrokerError>;

    /// The keys written and not expired (on JetStream a deleted key may still be listed; the
    /// callers never delete). [`BrokerError::NoBucket`] when missing.
    async fn kv_keys(&self, bucket: &str) -> Result<Vec<String>, BrokerError>;

    /// Store `value` under `key` only when the key is still at revision `expected` (`0`: only
    /// when it has no live value); returns the new revision. [`BrokerError::Conflict`] when
    /// another write came first (read again and retry).
    async fn kv_swap(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<u64, BrokerError>;

    /// [`KeyValue::kv_swap`] of many keys of one bucket at once: one result per write, in
    /// order. JetStream sends the writes back to back and then reads their acknowledgements
    /// (no task or boxed future per write); by default they run concurrently.
    async fn kv_swap_all(&self, bucket: &str, writes: Vec<Swap>) -> Vec<Result<u64, BrokerError>> {
        swap_each(self, bucket, writes).await
    }
}

/// [`KeyValue::kv_swap_all`] as concurrent [`KeyValue::kv_swap`]s, one per write.
pub async fn swap_each<K: KeyValue + ?Sized>(
    store: &K,
    bucket: &str,
    writes: Vec<Swap>,
) -> Vec<Result<u64, BrokerError>> {
    let swaps = writes
        .into_iter()
        .map(|w| async move { store.kv_swap(bucket, &w.key, w.value, w.expected).await });
    futures::future::join_all(swaps).await
}

/// One compare-and-set of [`KeyValue::kv_swap_all`].
#[derive(Debug, Clone)]
pub struct Swap {
    pub key: String,
    pub value: Bytes,
    /// The revision the key must be at (`0`: no live value).
    pub expected: u64,
}

/// Buckets of objects: values too large for one message (request bodies over
/// `payload_offload_bytes`, large results), stored in chunks. Checked by the conformance suite.
#[async_trait]
pub trait Objects: Send + Sync + 'static {
    /// Create the object bucket if missing; leave an existing one alone.
    async fn ensure_objects(&self, spec: &ObjectSpec) -> Result<(), BrokerError>;

    /// Store `data` as `name` (replacing an object of that name). Names: letters, digits and
    /// `-_=.`. [`BrokerError::NoBucket`] when the bucket is missing.
    async fn object_put(&self, bucket: &str, name: &str, data: Bytes) -> Result<(), BrokerError>;

    /// The object `name`, whole; `None` when never put, deleted or expired.
    /// [`BrokerError::NoBucket`] when the bucket is missing.
    async fn object_get(&self, bucket: &str, name: &str) -> Result<Option<Bytes>, BrokerError>;

    /// Delete the object `name` (no error when it does not exist or the bucket is missing).
    async fn object_delete(&self, bucket: &str, name: &str) -> Result<(), BrokerError>;
}

/// A whole broker: what an implementation provides ([`jetstream::JetStreamBroker`],
/// [`memory::MemoryBroker`], the simulation's remote broker). Users name the capabilities
/// they need ([`Publish`], [`Consume`], [`Admin`], [`KeyValue`], [`Objects`], [`Operate`]); an
/// `Arc<dyn Broker>` converts into any of them.
pub trait Broker: Publish + Consume + Admin + KeyValue + Objects + Operate + Operator {}

impl<T: Publish + Consume + Admin + KeyValue + Objects + Operate + ?Sized> Broker for T {}

/// Broker failures, phrased for operators.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("NATS is not connected")]
    Disconnected,
    #[error("timed out waiting for NATS ({what})")]
    Timeout { what: String },
    #[error(
        "stream {stream} exists with {found} retention but queue-worker needs {want}; \
         migrate it: drain the queue, then `nats stream delete {stream}` and restart the worker, \
         which recreates it"
    )]
    IncompatibleStream {
        stream: String,
        found: String,
        want: String,
    },
    #[error(
        "no stream can store subject {subject} right now (missing, or its JetStream cluster has no quorum)"
    )]
    NoStream { subject: String },
    /// The broker cannot hold more messages now (memory broker limits): retry later.
    #[error("the broker is full: {0}")]
    Full(String),
    /// This one message is larger than the broker accepts (NATS `max_payload`).
    #[error("message too large: {0}")]
    TooLarge(String),
    #[error("no key-value bucket {bucket}")]
    NoBucket { bucket: String },
    /// A [`KeyValue::kv_swap`] lost to another write of the same key.
    #[error("key {key} was written meanwhile")]
    Conflict { key: String },
    #[error("NATS error during {op}: {reason}")]
    Other { op: &'static str, reason: String },
}

impl BrokerError {
    pub fn other(op: &'static str, e: impl std::fmt::Display) -> BrokerError {
        BrokerError::Other {
            op,
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(
            ServerVersion::parse("2.9.10"),
            Some(ServerVersion::NATS_2_9)
        );
        assert_eq!(ServerVersion::parse("v2.15.1"), Some(ServerVersion::NEWEST));
        assert_eq!(
            ServerVersion::parse("2.11.0-beta.1"),
            Some(ServerVersion::new(2, 11, 0))
        );
        assert_eq!(
            ServerVersion::parse("2.10"),
            Some(ServerVersion::new(2, 10, 0))
        );
        assert_eq!(ServerVersion::parse("nats"), None);
        assert!(ServerVersion::NATS_2_9 < ServerVersion::NEWEST);
        let old = ServerVersion::NATS_2_9;
        let new = ServerVersion::NEWEST;
        assert!(
            !old.keeps_consumers_with_pending_acks() && new.keeps_consumers_with_pending_acks()
        );
        assert!(!old.refuses_overlapping_filters() && new.refuses_overlapping_filters());
        assert!(!ServerVersion::new(2, 11, 0).keeps_consumers_with_pending_acks());
        assert!(ServerVersion::new(2, 11, 0).ignores_acks_ahead_of_the_consumer());
    }
}
