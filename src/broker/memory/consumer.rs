//! One durable pull consumer: what it has delivered and not yet had settled (each with its
//! own timer), what waits for redelivery, and when it was last active.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::subjects::subject_matches;
use super::time::later;
use crate::broker::ConsumerSpec;

/// JetStream's default ack wait, used when a consumer asks for zero.
pub(super) const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// How long a pull request abandoned by a cancelled [`Subscription::next`] keeps waiting on
/// the consumer (the JetStream subscription's request lifetime).
pub(super) const PULL_REQUEST_LIFETIME: Duration = Duration::from_secs(10);

pub(super) struct Consumer {
    /// Distinguishes a recreated consumer from the one a subscription started with.
    pub(super) id: u64,
    pub(super) spec: ConsumerSpec,
    /// Next stream sequence to consider for a first delivery.
    pub(super) cursor: u64,
    /// Ack-pending messages by stream sequence.
    pub(super) pending: BTreeMap<u64, Pending>,
    /// Armed timers: (deadline, sequence).
    pub(super) timers: BTreeSet<(Instant, u64)>,
    /// Queued for redelivery: (queue order, sequence).
    pub(super) redeliver: BTreeSet<(u64, u64)>,
    pub(super) queued: u64,
    /// Subscriptions waiting in `next` (pull requests waiting on the server).
    pub(super) waiting: usize,
    /// Pull requests left behind by a cancelled `next`, by subscription: they keep waiting
    /// (and the consumer alive) until they expire or their subscription goes away.
    pub(super) lingering: BTreeMap<u64, Instant>,
    pub(super) last_active: Instant,
    pub(super) notify: Arc<Notify>,
    /// Paused (NATS 2.11+ consumer pause): delivers nothing until resumed.
    pub(super) paused: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    /// Deliveries so far.
    pub(super) delivered: u64,
    pub(super) state: PendingState,
    /// When its ack wait (or nak delay) ran or runs out: the server's timestamp of the
    /// delivery plus `ack_wait`; kept while it waits for redelivery.
    pub(super) deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingState {
    /// Redelivered when the timer fires (ack wait, or a nak delay).
    Timer(Instant),
    /// Waiting in the redelivery queue (key in `Consumer::redeliver`).
    Queued(u64),
}

impl Consumer {
    pub(super) fn new(id: u64, spec: ConsumerSpec, first_seq: u64, now: Instant) -> Consumer {
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
            paused: false,
        }
    }

    pub(super) fn ack_wait(&self) -> Duration {
        if self.spec.ack_wait.is_zero() {
            DEFAULT_ACK_WAIT
        } else {
            self.spec.ack_wait
        }
    }

    /// Idle past the inactive threshold (strictly, as the server compares). When
    /// `keeps_pending` (nats-server 2.12 and later), also past the last ack deadline of its
    /// pending messages plus the threshold.
    pub(super) fn is_inactive(&mut self, now: Instant, keeps_pending: bool) -> bool {
        self.lingering.retain(|_, until| *until > now);
        let Some(threshold) = self.spec.inactive_threshold.filter(|t| !t.is_zero()) else {
            return false;
        };
        let idle = self.waiting == 0
            && self.lingering.is_empty()
            && now.saturating_duration_since(self.last_active) > threshold;
        let held = keeps_pending
            && self
                .pending
                .values()
                .any(|p| later(p.deadline, threshold) > now);
        idle && !held
    }

    /// Stop whatever is scheduled for `seq` (timer or queue slot).
    pub(super) fn unschedule(&mut self, seq: u64) {
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
    pub(super) fn set_timer(&mut self, seq: u64, at: Instant) {
        self.unschedule(seq);
        if let Some(p) = self.pending.get_mut(&seq) {
            p.state = PendingState::Timer(at);
            p.deadline = at;
            self.timers.insert((at, seq));
        }
    }

    /// Queue pending message `seq` for redelivery (no-op when already queued).
    pub(super) fn enqueue(&mut self, seq: u64) {
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

    pub(super) fn remove_pending(&mut self, seq: u64) {
        self.unschedule(seq);
        self.pending.remove(&seq);
    }

    /// Queue every message whose timer is due.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.enqueue(seq);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub(super) fn selects(&self, subject: &str) -> bool {
        self.spec
            .filter_subject
            .as_deref()
            .is_none_or(|f| subject_matches(f, subject))
    }
}
