//! The background writer of call status: events wait in memory, grouped by call, and one task
//! writes them in rounds — each call read, its events applied ([`super::record::apply`]),
//! written back with compare-and-set (another worker's write in between means read and apply
//! again). Recording never waits on NATS; a call appears in one round at a time, so its events
//! keep their order. Bounded: past [`MAX_EVENTS`] waiting, new non-terminal events are dropped
//! (counted in the log), terminal ones still kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::record::{self, CallStatus, Event};
use crate::broker::{BrokerError, KeyValue, KvSpec};

/// Events held at most (about 200 bytes each).
pub const MAX_EVENTS: usize = 100_000;
/// Calls written at once.
const CONCURRENT_WRITES: usize = 32;
/// Calls taken in one round.
const ROUND: usize = 1024;
/// Compare-and-set tries of one call in a round before its events wait for the next.
const SWAP_TRIES: u32 = 5;
/// Pause after a round that could not write (NATS unreachable).
const BACKOFF: Duration = Duration::from_millis(500);
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

struct Shared {
    store: Arc<dyn KeyValue>,
    spec_of: SpecOf,
    waiting: Mutex<Waiting>,
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
            if w.count >= MAX_EVENTS && !terminal {
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

/// One round; `true` when some call could not be written (its events are kept).
async fn write_round(shared: &Shared) -> bool {
    let round = shared.take_round();
    if round.is_empty() {
        return false;
    }
    let results: Vec<_> = futures::stream::iter(round)
        .map(|(id, events)| async move {
            let done = write_call(shared, &id.0, &id.1, &events).await;
            (id, events, done)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    let mut failed = false;
    for (id, events, done) in results {
        match done {
            Ok(()) => shared.lock().count -= events.len(),
            Err(e) => {
                tracing::debug!(error = %e, "Call status not written yet; trying again");
                shared.give_back(id, events);
                failed = true;
            }
        }
    }
    failed
}

/// Apply `events` to the call's stored status and write it if it changed.
async fn write_call(
    shared: &Shared,
    queue: &str,
    key: &str,
    events: &[Event],
) -> Result<(), BrokerError> {
    let bucket = super::bucket(queue);
    for _ in 0..SWAP_TRIES {
        let current = match shared.store.kv_entry(&bucket, key).await {
            Err(BrokerError::NoBucket { .. }) => {
                shared.store.ensure_kv(&(shared.spec_of)(queue)).await?;
                continue;
            }
            other => other?,
        };
        let (stored, revision) = match &current {
            Some((bytes, rev)) => (serde_json::from_slice::<CallStatus>(bytes).ok(), *rev),
            None => (None, 0),
        };
        let Some(next) = apply_all(stored.as_ref(), events) else {
            return Ok(());
        };
        let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
        match shared.store.kv_swap(&bucket, key, value, revision).await {
            Ok(_) => return Ok(()),
            Err(BrokerError::Conflict { .. }) => continue,
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
