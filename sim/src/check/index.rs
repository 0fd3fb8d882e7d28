//! The history indexed per call: what the broker and the workers recorded about it, in the
//! order it happened, and what follows from the workers' side (invocations, retries, the last
//! answer of each delivery) and from the faults (which leases they broke).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::faults::Faults;
use super::report::Stats;
use crate::history::{Ev, Kept, Record, SettleKind};

/// A delivery the broker handed out: delivery count `n`, to worker `to`.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub at: Duration,
    pub n: u64,
    pub to: String,
}

/// A settle of delivery `n` the broker applied; `removed`: it removed the message from the
/// work queue (the call's terminal transition).
#[derive(Debug, Clone)]
pub(super) struct Settle {
    pub at: Duration,
    pub n: u64,
    pub kind: SettleKind,
    pub from: String,
    pub removed: bool,
}

/// A dead letter published for the call; `stored`: not a duplicate; `kept`: how much of the
/// message it keeps.
#[derive(Debug, Clone)]
pub(super) struct DeadLetter {
    pub at: Duration,
    pub reason: String,
    pub stored: bool,
    pub kept: Kept,
}

/// A callback POST the receiver got from host `from`, with its `X-Retry`; it answered
/// `answered`.
#[derive(Debug, Clone)]
pub(super) struct Callback {
    pub from: String,
    pub retry: String,
    pub answered: u16,
    /// Its `X-Function-Status`.
    pub status: String,
}

/// What a worker did with the call, each event with the delivery (count) it belongs to: one
/// worker may hold two deliveries of a call at once (its lease was lost and the message came
/// back to it).
#[derive(Debug, Clone)]
pub(super) enum WorkerEv {
    Deliver(u64),
    Start(u64),
    End {
        n: u64,
        status: u16,
        retry_after: Option<String>,
        aborted: bool,
    },
    Settle(u64, SettleKind),
    DeadLetter {
        n: u64,
        stored: bool,
    },
}

#[derive(Debug, Clone)]
pub(super) struct WorkerEvent {
    pub at: Duration,
    pub worker: String,
    pub ev: WorkerEv,
}

/// An invocation of delivery `n` started by `worker`.
#[derive(Debug, Clone)]
pub(super) struct Start {
    pub at: Duration,
    pub worker: String,
    pub n: u64,
    /// The same worker ran the same delivery before: the function refused it with a 429 while
    /// the worker ran others of it, and the worker kept it for another try (no attempt spent).
    /// `None` for a first run; else the status that run answered.
    pub again_after: Option<u16>,
}

/// How an invocation that was not aborted ended.
#[derive(Debug, Clone)]
pub(super) struct End {
    pub at: Duration,
    pub status: u16,
    pub retry_after: Option<String>,
}

/// A retry the worker decided: a nak of delivery `n` with `delay` after the invocation that
/// ended as `after`.
#[derive(Debug, Clone)]
pub(super) struct Retry {
    pub at: Duration,
    pub worker: String,
    pub n: u64,
    pub delay: Duration,
    pub after: End,
}

/// Everything recorded about one call, and what follows from it.
#[derive(Debug, Default)]
pub(super) struct Call {
    /// When the client's publish was acknowledged.
    pub accepted: Option<Duration>,
    /// The broker's view.
    pub deliveries: Vec<Delivery>,
    pub settles: Vec<Settle>,
    pub dead_letters: Vec<DeadLetter>,
    /// Dead letters the broker refused as larger than `max_payload`: when, and what they kept.
    pub too_large: Vec<(Duration, Kept)>,
    /// Lost to a broker restart with memory storage.
    pub lost: bool,
    /// The workers' view.
    pub worker: Vec<WorkerEvent>,
    pub callbacks: Vec<Callback>,
    /// When the client first asked to cancel the call.
    pub cancel_asked: Option<Duration>,
    /// The cancels' answers: when, and what they said.
    pub cancel_answers: Vec<(Duration, String)>,
    /// The stored status at the end of the run.
    pub final_status: Option<String>,

    /// Each delivery followed by the next, and what explains the redelivery.
    pub redeliveries: Vec<Redelivery>,
    /// (worker, delivery) that a fault-broken lease made a duplicate of.
    pub broken: BTreeSet<(String, u64)>,
    pub starts: Vec<Start>,
    pub retries: Vec<Retry>,
    /// How the last invocation of each (worker, delivery) that was not aborted ended.
    pub last_end: BTreeMap<(String, u64), End>,
}

/// Calls by id.
pub(super) type Calls = BTreeMap<String, Call>;

impl Call {
    /// The settle that removed the message from the work queue (its terminal state).
    pub fn removal(&self) -> Option<&Settle> {
        self.settles.iter().find(|s| s.removed)
    }

    /// The terminal state of an accepted call.
    pub fn finished(&self) -> Option<&Settle> {
        self.accepted.and(self.removal())
    }

    /// Dead letters stored (not duplicates).
    pub fn stored_dead_letters(&self) -> Vec<&DeadLetter> {
        self.dead_letters.iter().filter(|d| d.stored).collect()
    }

    /// The first stored dead letter, when it was stored by `end`.
    pub fn dead_letter_by(&self, end: &Settle) -> Option<&DeadLetter> {
        self.dead_letters
            .iter()
            .find(|d| d.stored)
            .filter(|d| d.at <= end.at)
    }

    /// Whether the broker refused even a headers-only dead letter of the call by `end`: the
    /// worker then terminates the message without one (and counts it as dropped).
    pub fn dead_letter_dropped_by(&self, end: &Settle) -> bool {
        self.too_large
            .iter()
            .any(|(at, kept)| *at <= end.at && *kept == Kept::HeadersOnly)
    }

    /// Dead letters a worker could not store: the message comes back and runs again.
    pub fn dead_letters_not_stored(&self) -> usize {
        self.worker
            .iter()
            .filter(|e| matches!(e.ev, WorkerEv::DeadLetter { stored: false, .. }))
            .count()
    }

    /// When a cancel of the call was first acknowledged (answered `cancelled`).
    pub fn cancel_acknowledged(&self) -> Option<Duration> {
        self.cancel_answers
            .iter()
            .find(|(_, outcome)| outcome == "cancelled")
            .map(|(at, _)| *at)
    }

    /// Whether the client asked to cancel the call by `at`.
    pub fn cancel_asked_by(&self, at: Duration) -> bool {
        self.cancel_asked.is_some_and(|asked| asked <= at)
    }

    /// Whether the faults explain duplicates of this call: a broken lease, or a dead letter
    /// that could not be stored (the message comes back and runs again).
    pub fn duplicates_explained(&self) -> bool {
        !self.broken.is_empty() || self.dead_letters_not_stored() > 0
    }

    fn record(&mut self, at: Duration, ev: &Ev) {
        match ev {
            Ev::Accepted { .. } => {
                self.accepted.get_or_insert(at);
            }
            Ev::SDeliver { delivered, to, .. } => self.deliveries.push(Delivery {
                at,
                n: *delivered,
                to: to.clone(),
            }),
            Ev::SSettle {
                delivered,
                kind,
                from,
                removed,
                ..
            } => self.settles.push(Settle {
                at,
                n: *delivered,
                kind: *kind,
                from: from.clone(),
                removed: *removed,
            }),
            Ev::SDeadLetter {
                reason,
                stored,
                kept,
                ..
            } => self.dead_letters.push(DeadLetter {
                at,
                reason: reason.clone(),
                stored: *stored,
                kept: *kept,
            }),
            Ev::SDeadLetterTooLarge { kept, .. } => self.too_large.push((at, *kept)),
            Ev::SLost { .. } => self.lost = true,
            Ev::CbRecv {
                from,
                retry,
                answered,
                function_status,
                ..
            } => self.callbacks.push(Callback {
                from: from.clone(),
                retry: retry.clone(),
                answered: *answered,
                status: function_status.clone(),
            }),
            Ev::CancelAsk { .. } => {
                self.cancel_asked.get_or_insert(at);
            }
            Ev::CancelAnswer { outcome, .. } => self.cancel_answers.push((at, outcome.clone())),
            Ev::FinalStatus { state, .. } => self.final_status = Some(state.clone()),
            _ => {
                if let Some((worker, ev)) = worker_event(ev) {
                    self.worker.push(WorkerEvent { at, worker, ev });
                }
            }
        }
    }

    /// Walks the workers' events: invocations, the last answer of each delivery, and the
    /// retries decided after them.
    fn follow_workers(&mut self) {
        let mut unstored_dead_letter: BTreeMap<(String, u64), Duration> = BTreeMap::new();
        for WorkerEvent { at, worker, ev } in &self.worker {
            let (at, worker) = (*at, worker.clone());
            match ev {
                WorkerEv::Deliver(n) => {
                    // A recreated consumer counts from 1 again: a new delivery `n` starts afresh.
                    self.last_end.remove(&(worker.clone(), *n));
                    unstored_dead_letter.remove(&(worker, *n));
                }
                WorkerEv::Start(n) => {
                    let again_after = self.last_end.get(&(worker.clone(), *n)).map(|e| e.status);
                    self.starts.push(Start {
                        at,
                        worker,
                        n: *n,
                        again_after,
                    });
                }
                WorkerEv::End {
                    n,
                    status,
                    retry_after,
                    aborted: false,
                } => {
                    let end = End {
                        at,
                        status: *status,
                        retry_after: retry_after.clone(),
                    };
                    self.last_end.insert((worker, *n), end);
                }
                WorkerEv::DeadLetter { n, stored: false } => {
                    unstored_dead_letter.insert((worker, *n), at);
                }
                WorkerEv::Settle(n, SettleKind::Nak(Some(delay))) => {
                    let key = (worker, *n);
                    let Some(after) = self.last_end.get(&key).cloned() else {
                        continue; // a dead letter that could not be stored yet
                    };
                    if unstored_dead_letter
                        .get(&key)
                        .is_some_and(|t| *t >= after.at)
                    {
                        continue;
                    }
                    self.retries.push(Retry {
                        at,
                        worker: key.0,
                        n: *n,
                        delay: *delay,
                        after,
                    });
                }
                WorkerEv::End { .. } | WorkerEv::DeadLetter { .. } | WorkerEv::Settle(..) => {}
            }
        }
    }
}

/// The worker-side event in `ev`, with its worker.
fn worker_event(ev: &Ev) -> Option<(String, WorkerEv)> {
    let (worker, ev) = match ev {
        Ev::WDeliver {
            worker, delivered, ..
        } => (worker, WorkerEv::Deliver(*delivered)),
        Ev::InvokeStart {
            worker, delivered, ..
        } => (worker, WorkerEv::Start(*delivered)),
        Ev::InvokeEnd {
            worker,
            delivered,
            status,
            retry_after,
            aborted,
            ..
        } => (
            worker,
            WorkerEv::End {
                n: *delivered,
                status: *status,
                retry_after: retry_after.clone(),
                aborted: *aborted,
            },
        ),
        Ev::WSettle {
            worker,
            delivered,
            kind,
            ..
        } => (worker, WorkerEv::Settle(*delivered, *kind)),
        // Refused as too large: the worker keeps less of it or drops it; the message does
        // not come back for it.
        Ev::WDeadLetter {
            too_large: true, ..
        } => return None,
        Ev::WDeadLetter {
            worker,
            delivered,
            ok,
            ..
        } => (
            worker,
            WorkerEv::DeadLetter {
                n: *delivered,
                stored: *ok,
            },
        ),
        _ => return None,
    };
    Some((worker.clone(), ev))
}

/// The call an event is about, for the events the invariants read per call.
fn call_of(ev: &Ev) -> Option<&str> {
    match ev {
        Ev::Accepted { call }
        | Ev::SDeliver { call, .. }
        | Ev::SSettle { call, .. }
        | Ev::SDeadLetter { call, .. }
        | Ev::SDeadLetterTooLarge { call, .. }
        | Ev::SLost { call }
        | Ev::WDeliver { call, .. }
        | Ev::InvokeStart { call, .. }
        | Ev::InvokeEnd { call, .. }
        | Ev::WSettle { call, .. }
        | Ev::WDeadLetter { call, .. }
        | Ev::CbRecv { call, .. }
        | Ev::CancelAsk { call }
        | Ev::CancelAnswer { call, .. }
        | Ev::FinalStatus { call, .. } => Some(call),
        _ => None,
    }
}

/// Index `records` per call.
pub(super) fn calls(records: &[Record], faults: &Faults) -> Calls {
    let mut calls = Calls::new();
    for r in records {
        if let Some(call) = call_of(&r.ev) {
            calls
                .entry(call.to_string())
                .or_default()
                .record(r.at, &r.ev);
        }
    }
    for c in calls.values_mut() {
        c.redeliveries = redeliveries(c, faults);
        c.broken = broken(&c.redeliveries);
        c.follow_workers();
    }
    calls
}

/// Counts of events no invariant reads: reconnects and crashes in the middle of an invocation.
pub(super) fn count_events(records: &[Record], stats: &mut Stats) {
    for r in records {
        match &r.ev {
            Ev::SConn { up: true, .. } => stats.reconnects += 1,
            Ev::InvokeEnd { aborted: true, .. } => stats.crashes_mid_invocation += 1,
            _ => {}
        }
    }
}

/// What explains a redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The holder nak'd the delivery first.
    GivenBack,
    /// The holder never received it (a pull request it had abandoned, or lost on the way): it
    /// comes back after `ack_wait`, at-least-once, not a broken lease.
    NeverReceived,
    /// A fault hit the holder: its lease was broken (a counted, bounded duplicate).
    Fault,
    /// Nothing: the lease expired while its holder was alive.
    Expired,
}

/// A delivery, the next delivery of the same call, and why there was a next one.
#[derive(Debug, Clone)]
pub(super) struct Redelivery {
    pub first: Delivery,
    pub next: Delivery,
    pub cause: Cause,
}

/// Each delivery of `c` followed by the next, with its cause.
fn redeliveries(c: &Call, faults: &Faults) -> Vec<Redelivery> {
    c.deliveries
        .windows(2)
        .map(|w| {
            let (first, next) = (&w[0], &w[1]);
            let within = |t| t >= first.at && t <= next.at;
            let given_back = c.settles.iter().any(|s| {
                within(s.at)
                    && s.n == first.n
                    && s.from == first.to
                    && matches!(s.kind, SettleKind::Nak(_))
            });
            let received = c.worker.iter().any(|e| {
                within(e.at)
                    && e.worker == first.to
                    && matches!(e.ev, WorkerEv::Deliver(n) if n == first.n)
            });
            let cause = if given_back {
                Cause::GivenBack
            } else if !received {
                Cause::NeverReceived
            } else if faults.excuse(&first.to, first.at, next.at) {
                Cause::Fault
            } else {
                Cause::Expired
            };
            Redelivery {
                first: first.clone(),
                next: next.clone(),
                cause,
            }
        })
        .collect()
}

/// The (worker, delivery) pairs on both sides of each lease a fault broke.
fn broken(redeliveries: &[Redelivery]) -> BTreeSet<(String, u64)> {
    let mut broken = BTreeSet::new();
    for r in redeliveries.iter().filter(|r| r.cause == Cause::Fault) {
        broken.insert((r.first.to.clone(), r.first.n));
        broken.insert((r.next.to.clone(), r.next.n));
    }
    broken
}
