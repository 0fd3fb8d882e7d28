//! The cancelled calls of this worker's queue, as the worker knows them: the keys of
//! `OF_<queue>_cancelled` ([`crate::status::cancel`]).
//!
//! A task refreshes them every [`REFRESH`] while the worker has work (one request for the
//! bucket's revision, and the key list only when it changed), so no delivery pays a request.
//! An attempt is admitted only when the last refresh *started* within [`FRESH`]; a cancel is
//! answered [`crate::status::cancel::FENCE`] (longer) after its marker is stored, so an attempt
//! admitted after the answer has seen the marker. Attempts running when their key shows up
//! are aborted ([`Running::aborted`]).
//!
//! When NATS cannot tell (unreachable), attempts wait: none is started on stale knowledge.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, KeyValue};
use crate::status::{cancel, key};

/// Time between two refreshes while the worker has work.
pub const REFRESH: Duration = Duration::from_millis(200);
/// How old (from its start) the last refresh may be for an attempt to be admitted.
pub const FRESH: Duration = Duration::from_millis(800);
/// Refreshes go on this long after the last admitted attempt, then wait for the next one.
const IDLE_AFTER: Duration = Duration::from_secs(5);
/// How long one refresh may take before it is given up (and tried again).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two warnings that cancelled calls cannot be read.
const WARN_EVERY: Duration = Duration::from_secs(60);

const _: () = assert!(FRESH.as_millis() + 150 <= cancel::FENCE.as_millis());

/// Whether an attempt may start.
pub enum Admission {
    /// It may: abort it when [`Running::aborted`] fires.
    Go(Running),
    /// The call is cancelled: do not invoke it.
    Cancelled,
}

/// The cancelled calls of one queue, kept fresh by a background task.
pub struct Cancellations {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn KeyValue>,
    bucket: String,
    known: Mutex<Known>,
    /// Woken after every refresh (a `Notify`, not a `watch`: its waiters wake in a fixed
    /// order, which keeps simulations deterministic).
    refreshed: Notify,
    /// Wakes an idle refresher.
    wake: Notify,
    warned: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Known {
    /// Keys of cancelled calls.
    keys: HashSet<String>,
    /// The bucket's revision the keys are of; `None`: no bucket (nothing cancelled yet).
    revision: Option<u64>,
    /// When the last successful refresh started.
    fetched_from: Option<Instant>,
    /// Attempts running, by registration number: their key and abort token.
    running: HashMap<u64, (String, CancellationToken)>,
    next: u64,
    last_admit: Option<Instant>,
    /// Admits waiting for a refresh (refreshes go on while there are any, however long NATS
    /// takes to answer).
    waiting: usize,
}

/// Counts an admit as waiting until dropped (also when the admit is dropped while it waits).
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn enter(shared: &'a Shared) -> Waiting<'a> {
        shared.lock().waiting += 1;
        Waiting(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// An admitted attempt: deregistered when dropped.
pub struct Running {
    shared: Option<Arc<Shared>>,
    id: u64,
    /// `None`: no cancel can reach it (and nothing is allocated for it).
    token: Option<CancellationToken>,
}

impl Running {
    /// An attempt no cancel can reach (a call without an id, or no cancel support).
    pub fn unregistered() -> Running {
        Running {
            shared: None,
            id: 0,
            token: None,
        }
    }

    /// Completes when the call is cancelled while it runs (never, for an unregistered one).
    pub async fn aborted(&self) {
        match &self.token {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the call was cancelled while it ran.
    pub fn is_aborted(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.lock().running.remove(&self.id);
        }
    }
}

impl Cancellations {
    /// Know the cancelled calls of `queue` in `store`, refreshed until `stop`.
    pub fn start(
        store: Arc<dyn KeyValue>,
        queue: &str,
        stop: CancellationToken,
    ) -> Arc<Cancellations> {
        let shared = Arc::new(Shared {
            store,
            bucket: cancel::bucket(queue),
            known: Mutex::new(Known::default()),
            refreshed: Notify::new(),
            wake: Notify::new(),
            warned: Mutex::new(None),
        });
        tokio::spawn(refresh_loop(shared.clone(), stop));
        Arc::new(Cancellations { shared })
    }

    /// Whether an attempt of `call_id` may start: waits for knowledge fresh enough.
    pub async fn admit(&self, call_id: &str) -> Admission {
        let Some(key) = key::of(call_id) else {
            return Admission::Go(Running::unregistered());
        };
        let _waiting = Waiting::enter(&self.shared);
        loop {
            // Created before the check: a refresh right after it still wakes this admit.
            let refreshed = self.shared.refreshed.notified();
            if let Some(admission) = self.shared.try_admit(&key) {
                return admission;
            }
            self.shared.wake.notify_one();
            refreshed.await;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decide at once when what is known is fresh; `None` when it is not.
    fn try_admit(self: &Arc<Self>, key: &str) -> Option<Admission> {
        let now = Instant::now();
        let mut known = self.lock();
        known.last_admit = Some(now);
        let fresh = known
            .fetched_from
            .is_some_and(|from| now.saturating_duration_since(from) <= FRESH);
        if !fresh {
            return None;
        }
        if known.keys.contains(key) {
            return Some(Admission::Cancelled);
        }
        let id = known.next;
        known.next += 1;
        let token = CancellationToken::new();
        known.running.insert(id, (key.to_string(), token.clone()));
        Some(Admission::Go(Running {
            shared: Some(self.clone()),
            id,
            token: Some(token),
        }))
    }

    /// Whether refreshes are needed: attempts wait or run, or one was admitted lately.
    fn busy(&self) -> bool {
        let known = self.lock();
        known.waiting > 0
            || !known.running.is_empty()
            || known.last_admit.is_some_and(|at| at.elapsed() < IDLE_AFTER)
    }

    /// Take in a refresh that started at `started`; abort attempts of cancelled calls.
    fn take(&self, started: Instant, fetched: Fetched) {
        let mut known = self.lock();
        match fetched {
            Fetched::NoBucket => {
                known.keys.clear();
                known.revision = None;
            }
            Fetched::Unchanged => {}
            Fetched::Keys(revision, keys) => {
                known.keys = keys;
                known.revision = Some(revision);
            }
        }
        known.fetched_from = Some(started);
        let Known { keys, running, .. } = &*known;
        for (key, token) in running.values() {
            if keys.contains(key) {
                token.cancel();
            }
        }
        drop(known);
        self.refreshed.notify_waiters();
    }

    /// What the bucket holds now, compared with the revision known.
    async fn fetch(&self) -> Result<Fetched, BrokerError> {
        let known_revision = self.lock().revision;
        let revision = match self.store.kv_revision(&self.bucket).await {
            Ok(r) => r,
            Err(BrokerError::NoBucket { .. }) => return Ok(Fetched::NoBucket),
            Err(e) => return Err(e),
        };
        if known_revision == Some(revision) {
            return Ok(Fetched::Unchanged);
        }
        match self.store.kv_keys(&self.bucket).await {
            Ok(keys) => Ok(Fetched::Keys(revision, keys.into_iter().collect())),
            Err(BrokerError::NoBucket { .. }) => Ok(Fetched::NoBucket),
            Err(e) => Err(e),
        }
    }

    fn warn_failed(&self, e: &BrokerError) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                error = %e,
                "Cannot read the cancelled calls; calls wait until they can be read"
            );
            *warned = Some(Instant::now());
        }
    }
}

/// What one refresh found.
enum Fetched {
    /// No bucket: nothing was ever cancelled (or it expired).
    NoBucket,
    /// The revision known is still the latest.
    Unchanged,
    /// The keys at this revision.
    Keys(u64, HashSet<String>),
}

async fn refresh_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        if !shared.busy() {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = shared.wake.notified() => {}
            }
        }
        let started = Instant::now();
        match tokio::time::timeout(FETCH_TIMEOUT, shared.fetch()).await {
            Ok(Ok(fetched)) => shared.take(started, fetched),
            Ok(Err(e)) => shared.warn_failed(&e),
            Err(_) => shared.warn_failed(&BrokerError::Timeout {
                what: "reading the cancelled calls".into(),
            }),
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests;
