//! Which function's delivery runs next: round-robin over the functions that have a ready
//! delivery and room under their limit, so a backlog for one cannot starve the others.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::worker::lease::Held;
use crate::worker::limiter::Limiter;
use crate::worker::plan::Signal;

/// Deliveries a feeder keeps ready beyond what its function can start at once.
const PREFETCH: usize = 1;

/// One function with work, as the dispatcher and its feeder share it.
pub(super) struct FunctionState {
    /// Pulled, waiting for a slot (kept leased by progress acks).
    pub(super) ready: VecDeque<Held>,
    pub(super) in_flight: usize,
    pub(super) limiter: Option<Limiter>,
    /// Wakes the feeder when the function can take more.
    pub(super) room: Arc<Notify>,
    /// Messages stored for this function at the last discovery.
    pub(super) pending: u64,
}

impl FunctionState {
    pub(super) fn new(limiter: Option<Limiter>, pending: u64) -> FunctionState {
        FunctionState {
            ready: VecDeque::new(),
            in_flight: 0,
            limiter,
            room: Arc::new(Notify::new()),
            pending,
        }
    }

    fn limit(&self, max_inflight: usize) -> usize {
        self.limiter
            .as_ref()
            .map(|l| l.limit())
            .unwrap_or(max_inflight)
    }
    /// Deliveries the feeder should pull now. While the ready queue has room for its prefetch,
    /// this is at least 1 even when the function is at its limit: a waiting pull request is
    /// what keeps the consumer alive on the server (the inactive threshold), also while every
    /// message of the function waits out a retry delay. What it brings waits in the ready
    /// queue, kept leased by progress acks.
    pub(super) fn wanted(&self, max_inflight: usize) -> usize {
        let room = self
            .limit(max_inflight)
            .saturating_sub(self.in_flight)
            .min(PREFETCH + 1);
        let want = room.saturating_sub(self.ready.len());
        if want == 0 && self.ready.len() <= PREFETCH {
            1
        } else {
            want
        }
    }
}

#[derive(Default)]
pub(super) struct Sched {
    /// Keyed by subject.
    pub(super) functions: BTreeMap<String, FunctionState>,
    /// Round-robin position: the subject served last.
    last: Option<String>,
}

impl Sched {
    /// The next function (after `last`, wrapping) with a ready delivery and room under its limit.
    pub(super) fn pick(&mut self, max_inflight: usize) -> Option<(String, Held)> {
        let keys: Vec<&String> = match &self.last {
            Some(last) => self
                .functions
                .range::<String, _>((
                    std::ops::Bound::Excluded(last.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .chain(self.functions.range::<String, _>(..=last.clone()))
                .map(|(k, _)| k)
                .collect(),
            None => self.functions.keys().collect(),
        };
        let chosen = keys.into_iter().find(|k| {
            let f = &self.functions[*k];
            !f.ready.is_empty() && f.in_flight < f.limit(max_inflight)
        })?;
        let chosen = chosen.clone();
        let f = self.functions.get_mut(&chosen)?;
        let d = f.ready.pop_front()?;
        f.in_flight += 1;
        debug_assert!(
            f.in_flight <= f.limit(max_inflight) && f.limit(max_inflight) <= max_inflight.max(1),
            "a function never runs more than its limit, nor the limit exceed max_inflight"
        );
        // Its ready queue has room again: let the feeder pull the next one.
        f.room.notify_one();
        self.last = Some(chosen.clone());
        Some((chosen, d))
    }

    /// A delivery of the function on `subject` is done; the limiter learns `signal`.
    pub(super) fn finished(&mut self, subject: &str, signal: Signal) {
        if let Some(f) = self.functions.get_mut(subject) {
            debug_assert!(f.in_flight > 0, "a finished delivery was in flight");
            f.in_flight = f.in_flight.saturating_sub(1);
            if let Some(l) = f.limiter.as_mut() {
                l.learn(signal);
            }
            f.room.notify_one();
        }
    }

    /// Deliveries waiting in ready queues.
    pub(super) fn ready_count(&self) -> usize {
        self.functions.values().map(|f| f.ready.len()).sum()
    }

    /// Every ready delivery, out of the queues (at shutdown).
    pub(super) fn take_ready(&mut self) -> Vec<Held> {
        self.functions
            .values_mut()
            .flat_map(|f| f.ready.drain(..))
            .collect()
    }
}
