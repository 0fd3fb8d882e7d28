//! The background writer of call status: events wait in memory, grouped by call, and one task
//! writes them in rounds — each call's events applied ([`super::record::apply`]) to its stored
//! status and written back with compare-and-set (another worker's write in between means read
//! and apply again). Recording never waits on NATS; a call appears in one round at a time, so
//! its events keep their order.
//!
//! Cheap per call: a round starts [`LINGER`] after the first event, so a short call's events
//! are written once; the status and revision this process wrote last are remembered
//! ([`KNOWN`] calls), so its next write needs no read (the ingress's `queued` and the worker's
//! end in one process: one request each); a call never seen is created without a read
//! (a message published by a gateway: one request). A wrong guess is a conflict, and costs a
//! read. Bounded: past [`MAX_EVENTS`] waiting, new non-terminal events are dropped (counted in
//! the log), terminal ones kept up to twice that.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::record::{self, CallStatus, Event};
use crate::broker::{BrokerError, KeyValue, KvSpec, Swap, kv_lazy};

/// Events held at most (about 200 bytes each).
pub const MAX_EVENTS: usize = 100_000;
/// Calls taken in one round, and written at once: NATS answers many publishes in flight far
/// more cheaply each than a few at a time (nats-server 2.9, per key-value write: 33 µs of the
/// server's CPU and 19 µs of the writer's with 32 in flight; 17 µs and 10 µs with 1,024).
const ROUND: usize = 1024;
/// Calls read and written again at once after their first write lost.
const CONCURRENT_RETRIES: usize = 32;
/// Compare-and-set tries of one call in a round before its events wait for the next.
const SWAP_TRIES: u32 = 5;
/// Pause after a round that could not write (NATS unreachable).
const BACKOFF: Duration = Duration::from_millis(500);
/// How long a round waits after its first event, for more events of the same calls.
const LINGER: Duration = Duration::from_millis(50);
/// Calls whose last written status and revision are remembered.
const KNOWN: usize = 16_384;
/// Least time between two warnings that status cannot be written.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long the writer may take to write what it holds once stopped.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The bucket spec of a queue.
pub type SpecOf = Box<dyn Fn(&str) -> KvSpec + Send + Sync>;

/// What waits to be written.
#[derive(Default)]
struct Waiting {
    /// Events per (queue, key), in arrival order.
    events: HashMap<(String, String), Vec<Event>>,
    /// Calls in the order they first got an event.
    order: VecDeque<(String, String)>,
    /// Events not yet written: waiting, or in the round being written.
    count: usize,
    dropped: u64,
}

/// What this process wrote last for a call: the status and its revision.
type Known = HashMap<(String, String), (CallStatus, u64)>;

struct Shared {
    store: Arc<dyn KeyValue>,
    spec_of: SpecOf,
    waiting: Mutex<Waiting>,
    known: Mutex<Known>,
    /// When the last "cannot write" warning was logged.
    warned: Mutex<Option<tokio::time::Instant>>,
    wake: Notify,
    /// Woken after every round (for [`Writer::flush`]).
    written: Notify,
}

/// The handle the ingress and worker record through.
pub struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    pub fn start(store: Arc<dyn KeyValue>, spec_of: SpecOf, stop: CancellationToken) -> Writer {
        let shared = Arc::new(Shared {
            store,
            spec_of,
            waiting: Mutex::new(Waiting::default()),
            known: Mutex::new(HashMap::new()),
            warned: Mutex::new(None),
            wake: Notify::new(),
            written: Notify::new(),
        });
        tokio::spawn(run(shared.clone(), stop));
        Writer { shared }
    }

    pub fn record(&self, queue: &str, key: String, event: Event) {
        let terminal = matches!(event.kind, record::Kind::Finished { .. });
        {
            let mut w = self.shared.lock();
            let full = w.count >= MAX_EVENTS && (!terminal || w.count >= 2 * MAX_EVENTS);
            if full {
                w.dropped += 1;
                return;
            }
            let id = (queue.to_string(), key);
            match w.events.get_mut(&id) {
                Some(list) => list.push(event),
                None => {
                    w.order.push_back(id.clone());
                    w.events.insert(id, vec![event]);
                }
            }
            w.count += 1;
        }
        self.shared.wake.notify_one();
    }

    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.lock().count > 0 {
            let written = self.shared.written.notified();
            self.shared.wake.notify_one();
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                return;
            }
        }
    }
}

impl Shared {
    /// A warning that status cannot be written, at most once a [`WARN_EVERY`].
    fn warn_failed(&self, e: &BrokerError) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        if warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            tracing::warn!(error = %e, "Cannot write call status; trying again");
            *warned = Some(now);
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remember what was written (a terminal status is never written again: forgotten).
    fn remember(&self, id: &(String, String), status: CallStatus, revision: u64) {
        let mut known = self.known();
        if status.state.is_terminal() {
            known.remove(id);
            return;
        }
        if known.len() >= KNOWN {
            known.clear();
        }
        known.insert(id.clone(), (status, revision));
    }

    /// `n` events are written (or need no write): no longer waiting.
    fn written_off(&self, n: usize) {
        self.lock().count -= n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Up to [`ROUND`] calls and their events, taken out of the waiting set.
    fn take_round(&self) -> Vec<((String, String), Vec<Event>)> {
        let mut w = self.lock();
        let mut round = Vec::new();
        while round.len() < ROUND {
            let Some(id) = w.order.pop_front() else { break };
            if let Some(events) = w.events.remove(&id) {
                round.push((id, events));
            }
        }
        if w.dropped > 0 {
            tracing::warn!(
                dropped = w.dropped,
                "Call status events dropped: the status writer is behind (NATS slow or away)"
            );
            w.dropped = 0;
        }
        round
    }

    /// Put events that could not be written back in front, to be tried first next round (they
    /// are still counted).
    fn give_back(&self, id: (String, String), mut events: Vec<Event>) {
        let mut w = self.lock();
        match w.events.get_mut(&id) {
            Some(newer) => {
                events.append(newer);
                *newer = events;
            }
            None => {
                w.order.push_front(id.clone());
                w.events.insert(id, events);
            }
        }
    }
}

async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let stopping = stop.is_cancelled();
        if !stopping {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = stop.cancelled() => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = stop.cancelled() => {}
            }
        }
        let failed = write_round(&shared).await;
        shared.written.notify_waiters();
        if stop.is_cancelled() {
            drain(&shared).await;
            return;
        }
        if failed {
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// After stop: rounds until nothing waits or [`DRAIN`] passes.
async fn drain(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    while shared.lock().count > 0 && tokio::time::Instant::now() < deadline {
        let failed = write_round(shared).await;
        shared.written.notify_waiters();
        if failed {
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// One round; `true` when some call could not be written (its events are kept). Each call is
/// first written on what this process knows of it, all of a queue's calls in one pipelined
/// batch ([`KeyValue::kv_swap_all`]); the few whose guess was wrong (another writer came
/// first, or the bucket is missing) are read and written again one by one.
async fn write_round(shared: &Shared) -> bool {
    let round = shared.take_round();
    if round.is_empty() {
        return false;
    }
    let mut by_queue: HashMap<String, Vec<Planned>> = HashMap::new();
    for ((queue, key), events) in round {
        let planned = plan(shared, &queue, key, events);
        by_queue.entry(queue).or_default().push(planned);
    }
    let mut again = Vec::new();
    let mut failed = false;
    for (queue, planned) in by_queue {
        let mut swaps = Vec::with_capacity(planned.len());
        let mut written = Vec::with_capacity(planned.len());
        for p in planned {
            match p.write {
                Some((swap, next)) => {
                    swaps.push(swap);
                    written.push((p.key, p.events, next));
                }
                None => shared.written_off(p.events.len()),
            }
        }
        let results = shared
            .store
            .kv_swap_all(&super::bucket(&queue), swaps)
            .await;
        for ((key, events, next), result) in written.into_iter().zip(results) {
            match result {
                Ok(revision) => {
                    shared.remember(&(queue.clone(), key), next, revision);
                    shared.written_off(events.len());
                }
                Err(BrokerError::Conflict { .. } | BrokerError::NoBucket { .. }) => {
                    again.push((queue.clone(), key, events));
                }
                Err(e) => {
                    shared.warn_failed(&e);
                    shared.give_back((queue.clone(), key), events);
                    failed = true;
                }
            }
        }
    }
    failed | write_again(shared, again).await
}

/// A call of a round, planned on what this process knows of it.
struct Planned {
    key: String,
    events: Vec<Event>,
    /// The compare-and-set to send and the status it writes; `None` when the events change
    /// nothing.
    write: Option<(Swap, CallStatus)>,
}

/// What `events` make of the call's status as this process last wrote it (or of nothing, for
/// a call it never wrote: a create).
fn plan(shared: &Shared, queue: &str, key: String, events: Vec<Event>) -> Planned {
    let id = (queue.to_string(), key);
    let (stored, revision) = match shared.known().remove(&id) {
        Some((status, revision)) => (Some(status), revision),
        None => (None, 0),
    };
    let Some(next) = apply_all(stored.as_ref(), &events) else {
        if let Some(status) = stored {
            shared.remember(&id, status, revision);
        }
        return Planned {
            key: id.1,
            events,
            write: None,
        };
    };
    let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
    let swap = Swap {
        key: id.1.clone(),
        value,
        expected: revision,
    };
    Planned {
        key: id.1,
        events,
        write: Some((swap, next)),
    }
}

/// The calls whose first write lost: read, apply, compare-and-set, one by one (concurrently);
/// `true` when some could not be written (their events are kept).
async fn write_again(shared: &Shared, again: Vec<(String, String, Vec<Event>)>) -> bool {
    let results: Vec<_> = futures::stream::iter(again)
        .map(|(queue, key, events)| async move {
            let done = write_call(shared, &queue, &key, &events).await;
            ((queue, key), events, done)
        })
        .buffer_unordered(CONCURRENT_RETRIES)
        .collect()
        .await;
    let mut failed = false;
    for (id, events, done) in results {
        match done {
            Ok(()) => shared.written_off(events.len()),
            Err(e) => {
                shared.warn_failed(&e);
                shared.give_back(id, events);
                failed = true;
            }
        }
    }
    failed
}

/// Apply `events` to the call's stored status, read first, and write it if it changed
/// (compare-and-set; read again after a conflict).
async fn write_call(
    shared: &Shared,
    queue: &str,
    key: &str,
    events: &[Event],
) -> Result<(), BrokerError> {
    let bucket = super::bucket(queue);
    let id = (queue.to_string(), key.to_string());
    for _ in 0..SWAP_TRIES {
        let (stored, revision) = read(shared, &bucket, key).await?;
        let Some(next) = apply_all(stored.as_ref(), events) else {
            if let Some(status) = stored {
                shared.remember(&id, status, revision);
            }
            return Ok(());
        };
        let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
        match shared.store.kv_swap(&bucket, key, value, revision).await {
            Ok(written) => {
                shared.remember(&id, next, written);
                return Ok(());
            }
            Err(BrokerError::Conflict { .. }) => {}
            Err(BrokerError::NoBucket { .. }) => {
                shared.store.ensure_kv(&(shared.spec_of)(queue)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::Conflict {
        key: key.to_string(),
    })
}

/// A guess of the stored status: the status (if any) and its revision (`0`: none).
type Guess = (Option<CallStatus>, u64);

/// The stored status and its revision (`0` when none).
async fn read(shared: &Shared, bucket: &str, key: &str) -> Result<Guess, BrokerError> {
    Ok(
        match kv_lazy::entry(shared.store.as_ref(), bucket, key).await? {
            Some((bytes, rev)) => (serde_json::from_slice(&bytes).ok(), rev),
            None => (None, 0),
        },
    )
}

/// The status after all of `events`; `None` when they change nothing.
fn apply_all(stored: Option<&CallStatus>, events: &[Event]) -> Option<CallStatus> {
    let mut status: Option<CallStatus> = None;
    for e in events {
        let base = status.as_ref().or(stored);
        if let Some(next) = record::apply(base, e) {
            status = Some(next);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::{MemoryBroker, MemoryLimits};
    use crate::config::Storage;
    use crate::status::{Kind, State};

    fn spec_of() -> SpecOf {
        Box::new(|queue: &str| KvSpec {
            bucket: crate::status::bucket(queue),
            ttl: Duration::from_secs(60),
            storage: Storage::Memory,
            replicas: 1,
        })
    }

    fn ev(kind: Kind) -> Event {
        Event {
            function: "f".into(),
            at: 1,
            kind,
        }
    }

    async fn stored(store: &dyn KeyValue, key: &str) -> Option<CallStatus> {
        crate::status::read(store, "q", key).await.unwrap()
    }

    /// Two writers (two worker processes) on one bucket: each one's remembered revision goes
    /// stale when the other writes, the conflict makes it read again, and the end stays.
    #[tokio::test]
    async fn two_writers_keep_one_terminal_state() {
        let broker = Arc::new(MemoryBroker::new(
            Arc::new(crate::clock::SystemClock),
            MemoryLimits::default(),
        ));
        let stop = CancellationToken::new();
        let a = Writer::start(broker.clone(), spec_of(), stop.clone());
        let b = Writer::start(broker.clone(), spec_of(), stop.clone());
        let within = Duration::from_secs(5);
        a.record("q", "c1".into(), ev(Kind::Queued));
        a.record("q", "c1".into(), ev(Kind::Started { attempt: 1 }));
        a.flush(within).await;
        assert_eq!(
            stored(broker.as_ref(), "c1").await.unwrap().state,
            State::Running
        );
        // The other process ends the call; then the first, with a stale revision, sends a
        // late event of the same attempt and a different end.
        let end = |state| Kind::Finished {
            state,
            attempts: 1,
            status: Some(200),
            error: None,
            reason: None,
        };
        b.record("q", "c1".into(), ev(end(State::Succeeded)));
        b.flush(within).await;
        a.record("q", "c1".into(), ev(Kind::Started { attempt: 1 }));
        a.record("q", "c1".into(), ev(end(State::Failed)));
        a.flush(within).await;
        let s = stored(broker.as_ref(), "c1").await.unwrap();
        assert_eq!((s.state, s.attempts), (State::Succeeded, 1));
        assert!(
            s.enqueued_at.is_some(),
            "the ingress's event was kept: {s:?}"
        );
        // A call no one saw before is created in one write.
        b.record("q", "c2".into(), ev(end(State::Succeeded)));
        b.flush(within).await;
        assert_eq!(
            stored(broker.as_ref(), "c2").await.unwrap().state,
            State::Succeeded
        );
        stop.cancel();
    }
}
