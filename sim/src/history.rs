//! The recorded history of one run: every event the hosts observe, in the order they happen,
//! stamped with simulated time. Invariants are checked over it after the run, and its digest
//! (SHA-256 of the ordered events) is the run's fingerprint: the same seed gives the same digest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How a delivery was settled (as the worker sent it, or as the broker applied it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleKind {
    Ack,
    /// Nak with an optional delay.
    Nak(Option<Duration>),
    Progress,
    Term,
}

/// A fault the driver injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// A worker host crashed (its software is gone until restarted).
    Crash,
    /// A worker cut off from the broker.
    Partition,
    /// The broker restarted (connections dropped; messages kept or lost).
    BrokerRestart,
    /// The callback receiver is down.
    ReceiverDown,
    /// The broker refuses to store dead letters.
    DeadLetterOutage,
}

/// How much of its message a dead letter keeps (the worker's `Kept`, read off the copy: a
/// reduced one says `Qw-Truncated`; a headers-only one has nothing but `Qw-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kept {
    Whole,
    Truncated,
    HeadersOnly,
}

impl Kept {
    /// What the dead letter with these headers keeps.
    pub fn of(headers: &[(String, String)]) -> Kept {
        if !headers.iter().any(|(k, _)| k == "Qw-Truncated") {
            Kept::Whole
        } else if headers.iter().all(|(k, _)| k.starts_with("Qw-")) {
            Kept::HeadersOnly
        } else {
            Kept::Truncated
        }
    }
}

/// One event. Worker names are `worker-<i>#<incarnation>`; hosts are turmoil host names.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    /// A fault starts (`start`) or ends.
    Fault {
        kind: FaultKind,
        target: String,
        start: bool,
    },
    /// A worker incarnation started.
    WorkerStart { worker: String },
    /// The broker stored the call (the client got a `PubAck`).
    Accepted { call: String },

    // ---- broker side (the truth about the queue) ----
    /// The broker handed a delivery of `call` to `to`.
    SDeliver {
        call: String,
        delivered: u64,
        seq: u64,
        to: String,
    },
    /// The broker applied a settle from `from`; `removed`: this removed the message from the
    /// work queue (the call's terminal transition).
    SSettle {
        call: String,
        delivered: u64,
        kind: SettleKind,
        from: String,
        removed: bool,
    },
    /// A dead letter for `call` was published; `stored`: not a duplicate.
    SDeadLetter {
        call: String,
        reason: String,
        stored: bool,
        kept: Kept,
    },
    /// A dead letter for `call` was refused as larger than `max_payload`.
    SDeadLetterTooLarge { call: String, kept: Kept },
    /// The broker restarted with memory storage while `call` was stored: lost (documented).
    SLost { call: String },
    /// `by` deleted consumer `name` (`existed`: it was there).
    SDeleteConsumer {
        name: String,
        by: String,
        existed: bool,
    },
    /// The work stream's consumers changed (polled every 250ms by the broker host).
    SConsumers { names: Vec<String> },
    /// A connection to the broker opened (`up`) or closed.
    SConn { peer: String, up: bool },

    // ---- worker side ----
    /// The worker received a delivery.
    WDeliver {
        worker: String,
        call: String,
        delivered: u64,
    },
    /// The worker sent a settle; `ok`: the broker confirmed it.
    WSettle {
        worker: String,
        call: String,
        delivered: u64,
        kind: SettleKind,
        ok: bool,
    },
    /// The worker published a dead letter; `ok`: stored (or a duplicate).
    WDeadLetter {
        worker: String,
        call: String,
        /// The delivery it belongs to (its `Qw-Attempts`).
        delivered: u64,
        ok: bool,
        /// Refused as larger than `max_payload` (the worker keeps less of it, or drops it).
        too_large: bool,
    },
    /// The worker started invoking the function for delivery `delivered` of the call.
    InvokeStart {
        worker: String,
        call: String,
        delivered: u64,
    },
    /// The invocation ended: status (503 for transport errors and timeouts, 0 when the worker
    /// died), `Retry-After` when present.
    InvokeEnd {
        worker: String,
        call: String,
        delivered: u64,
        status: u16,
        retry_after: Option<String>,
        error: bool,
        aborted: bool,
    },

    // ---- function and receiver side ----
    /// The function host received an invocation.
    FnRecv { call: String, from: String },
    /// The function answered (`None`: hung, never answers).
    FnResp { call: String, status: Option<u16> },
    /// The callback receiver got a POST and answered `answered`.
    CbRecv {
        call: String,
        from: String,
        function_status: String,
        retry: String,
        answered: u16,
    },

    // ---- the client's cancels ----
    /// The client asks to cancel the call.
    CancelAsk { call: String },
    /// The cancel was answered: `cancelled`, `unknown`, `final:<state>` or `error`.
    CancelAnswer { call: String, outcome: String },
    /// The call's stored status at the end of the run (`none`: unknown).
    FinalStatus { call: String, state: String },
}

/// An event with its simulated time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at: Duration,
    pub ev: Ev,
}

/// Counters kept up to date as events are recorded (the driver and the workload read them
/// every step; scanning the history would be too slow).
#[derive(Debug, Default)]
pub struct LiveState {
    /// Invocations open now, per worker host (`worker-<i>`).
    pub open: BTreeMap<String, usize>,
    pub accepted: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    pub lost: BTreeSet<String>,
}

impl LiveState {
    /// Accepted calls not yet terminal (nor lost to a memory restart).
    pub fn outstanding(&self) -> usize {
        self.accepted
            .iter()
            .filter(|c| !self.removed.contains(*c) && !self.lost.contains(*c))
            .count()
    }

    fn apply(&mut self, ev: &Ev) {
        match ev {
            Ev::Accepted { call } => {
                self.accepted.insert(call.clone());
            }
            Ev::SSettle {
                call,
                removed: true,
                ..
            } => {
                self.removed.insert(call.clone());
            }
            Ev::SLost { call } => {
                self.lost.insert(call.clone());
            }
            Ev::InvokeStart { worker, .. } => {
                *self.open.entry(host_of(worker).to_string()).or_default() += 1;
            }
            Ev::InvokeEnd { worker, .. } => {
                if let Some(n) = self.open.get_mut(host_of(worker)) {
                    *n = n.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
}

/// `worker-1#2` → `worker-1`.
pub fn host_of(worker: &str) -> &str {
    worker.split('#').next().unwrap_or(worker)
}

/// The shared, append-only history of a run.
#[derive(Clone, Default)]
pub struct History {
    inner: Arc<Mutex<Vec<Record>>>,
    live: Arc<Mutex<LiveState>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `ev` now: the simulated time of the running host (the last recorded time outside
    /// a host, e.g. while the driver crashes one). Hosts run one after the other within a
    /// step, so times of events from different hosts may be out of order by up to one tick;
    /// the order of the records is the order things happened in.
    pub fn record(&self, ev: Ev) {
        let mut v = self.lock();
        let last = v.last().map(|r| r.at).unwrap_or_default();
        let at = turmoil::sim_elapsed().unwrap_or(last);
        self.live().apply(&ev);
        v.push(Record { at, ev });
    }

    /// Record `ev` at `at` (the driver, between steps).
    pub fn record_at(&self, at: Duration, ev: Ev) {
        let mut v = self.lock();
        let last = v.last().map(|r| r.at).unwrap_or_default();
        self.live().apply(&ev);
        v.push(Record {
            at: at.max(last),
            ev,
        });
    }

    /// The live counters.
    pub fn live(&self) -> MutexGuard<'_, LiveState> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Run `f` over the events recorded so far (no copy).
    pub fn with<T>(&self, f: impl FnOnce(&[Record]) -> T) -> T {
        f(&self.lock())
    }

    /// SHA-256 over the ordered events (time in µs and the event), hex.
    pub fn digest(&self) -> String {
        digest(&self.lock())
    }
}

/// SHA-256 over the ordered events, hex.
pub fn digest(records: &[Record]) -> String {
    let mut h = Sha256::new();
    for r in records {
        h.update(r.at.as_micros().to_le_bytes());
        h.update(format!("{:?}\n", r.ev).as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
