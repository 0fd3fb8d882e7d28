//! Which function's delivery runs next: round-robin over the functions that have a ready
//! delivery and room under their limit, so a backlog for one cannot starve the others.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::pause::Paused;
use crate::worker::company::Company;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::worker::lease::Held;
use crate::worker::limiter::Limiter;
use crate::worker::plan::Signal;

/// Deliveries a worker keeps waiting for functions at their limit in static mode, and their
/// bytes: past either, its intake stops pulling until one has started.
pub(crate) const HOLD_MESSAGES: usize = 1_000;
pub(crate) const HOLD_BYTES: usize = 64 * 1024 * 1024;

/// Deliveries a feeder keeps ready beyond what its function can start at once.
const PREFETCH: usize = 1;

/// Deliveries of one function a worker keeps parked for their flow keys (`src/flow/`); one more
/// holds the whole function back instead.
pub(crate) const PARK_MAX: usize = 64;

/// A delivery its flow key held back, and until when.
pub(crate) type Parked = (Instant, Held);

/// Ready queues taken out for renewal ([`Sched::take_queues`]), with the parked deliveries.
pub(crate) struct Taken {
    pub(crate) subject: String,
    pub(crate) ready: VecDeque<Held>,
    pub(crate) parked: Vec<Parked>,
}

impl Taken {
    /// Every delivery taken, ready and parked.
    pub(crate) fn all(&mut self) -> impl Iterator<Item = &mut Held> {
        let parked = self.parked.iter_mut().map(|(_, h)| h);
        self.ready.iter_mut().chain(parked)
    }

    /// Keep only the deliveries `keep` says.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Held) -> bool) {
        self.ready.retain(&keep);
        self.parked.retain(|(_, h)| keep(h));
    }
}

/// One function with work, as the dispatcher and its feeder share it.
pub(crate) struct FunctionState {
    /// Pulled, waiting for a slot (kept leased by progress acks).
    pub(crate) ready: VecDeque<Held>,
    pub(crate) in_flight: usize,
    pub(crate) limiter: Option<Limiter>,
    /// Wakes the feeder when the function can take more.
    pub(crate) room: Arc<Notify>,
    /// Messages stored for this function at the last discovery.
    pub(crate) pending: u64,
    /// Calls of it running (as `in_flight`), readable by the calls themselves.
    running: Arc<AtomicUsize>,
    /// The function answered 429 and none of its calls ended otherwise since: it is sent
    /// nothing more until one does (while none runs, one call may probe).
    full: bool,
    /// Paused by an operator (`src/pause.rs`): nothing of it starts, nothing more is pulled
    /// for it; what it holds waits, leased.
    paused: bool,
    /// Its flow limits held a call back (`src/flow/`): nothing of it starts until the wait is
    /// over or one of its calls here ends.
    held_back: bool,
    /// Its `max_concurrency` across replicas, once a call of it said so: the worker starts
    /// no more than that at once (the least of it and the adaptive limit).
    cap: Option<usize>,
    /// Held back by their flow keys' limits, each until its time: the function's other calls
    /// go on meanwhile (kept leased as the ready ones are).
    pub(crate) parked: Vec<Parked>,
}

impl FunctionState {
    pub(crate) fn new(limiter: Option<Limiter>, pending: u64) -> FunctionState {
        FunctionState {
            ready: VecDeque::new(),
            in_flight: 0,
            limiter,
            room: Arc::new(Notify::new()),
            pending,
            running: Arc::default(),
            full: false,
            paused: false,
            held_back: false,
            cap: None,
            parked: Vec::new(),
        }
    }

    /// Deliveries waiting on flow limits: parked ones, and the ready ones while the function is
    /// held back.
    pub(crate) fn waiting(&self) -> usize {
        self.parked.len() + if self.held_back { self.ready.len() } else { 0 }
    }

    /// Nothing ready, parked or running.
    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.parked.is_empty() && self.in_flight == 0
    }

    /// Parked deliveries whose time has come go back first in line, in stream order.
    fn unpark_due(&mut self, now: Instant) {
        if self.parked.iter().all(|(t, _)| *t > now) {
            return;
        }
        let (mut due, still): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.parked = still;
        due.sort_by_key(|(_, h)| std::cmp::Reverse(h.delivery.stream_sequence));
        for (_, held) in due {
            self.ready.push_front(held);
        }
    }

    /// Take `held` into the ready queue (marked when it waits paused).
    pub(crate) fn take_in(&mut self, mut held: Held) {
        held.paused |= self.paused;
        self.ready.push_back(held);
    }

    fn limit(&self, max_inflight: usize) -> usize {
        let adaptive = self
            .limiter
            .as_ref()
            .map(|l| l.limit())
            .unwrap_or(max_inflight);
        self.cap.map_or(adaptive, |cap| adaptive.min(cap.max(1)))
    }
    /// Calls it may start now: its limit less those in flight, none while it is full (after a
    /// 429) and one of its calls still runs.
    fn room(&self, max_inflight: usize) -> usize {
        if self.paused || self.held_back || (self.full && self.in_flight > 0) {
            return 0;
        }
        self.limit(max_inflight).saturating_sub(self.in_flight)
    }

    /// Deliveries the feeder should pull now. While the ready queue has room for its prefetch,
    /// this is at least 1 even when the function is at its limit: a waiting pull request is
    /// what keeps the consumer alive on the server (the inactive threshold), also while every
    /// message of the function waits out a retry delay. What it brings waits in the ready
    /// queue, kept leased by progress acks.
    pub(crate) fn wanted(&self, max_inflight: usize) -> usize {
        if self.paused {
            return 0;
        }
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
pub(crate) struct Sched {
    /// Keyed by subject.
    pub(crate) functions: BTreeMap<String, FunctionState>,
    /// Round-robin position: the subject served last.
    last: Option<String>,
    /// Wakes static mode's intake when a delivery starts or ends.
    pub(crate) intake: Arc<Notify>,
    /// The ready queues are out for renewal ([`Self::take_queues`]): a function that looks idle
    /// may have deliveries waiting, so none is forgotten meanwhile.
    renewing: bool,
    /// What an operator paused, with the queue's name (`None`: nothing).
    paused: Option<(String, Paused)>,
}

impl Sched {
    /// Pause what `paused` says of `queue`, resume the rest, and wake whoever waits for room.
    pub(crate) fn set_paused(&mut self, queue: &str, paused: Paused) {
        for (subject, f) in &mut self.functions {
            let now = paused.holds_subject(queue, subject);
            if f.paused && !now {
                f.room.notify_one();
            }
            if now {
                f.ready.iter_mut().for_each(|h| h.paused = true);
            }
            f.paused = now;
        }
        self.paused = (!paused.is_empty()).then(|| (queue.to_string(), paused));
        self.intake.notify_one();
    }

    /// Whether the function on `subject` is paused.
    pub(crate) fn holds(&self, subject: &str) -> bool {
        self.paused
            .as_ref()
            .is_some_and(|(queue, p)| p.holds_subject(queue, subject))
    }

    /// Track the function on `subject` (function mode's discovery; static mode's intake).
    pub(crate) fn track(&mut self, subject: &str, mut state: FunctionState) {
        state.paused = self.holds(subject);
        self.functions.insert(subject.to_owned(), state);
    }

    /// The next function (after `last`, wrapping) with a ready delivery and room under its
    /// limit: its subject, the delivery, and the company it runs in.
    pub(crate) fn pick(&mut self, max_inflight: usize) -> Option<(String, Held, Company)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let has_room = |f: &FunctionState| !f.ready.is_empty() && f.room(max_inflight) > 0;
        // Round-robin: the functions after the one served last, then from the start up to it.
        let (after, upto) = match self.last.as_deref() {
            Some(last) => ((Excluded(last), Unbounded), (Unbounded, Included(last))),
            None => ((Unbounded, Unbounded), (Unbounded, Unbounded)),
        };
        let chosen = self
            .functions
            .range::<str, _>(after)
            .chain(self.functions.range::<str, _>(upto))
            .find(|(_, f)| has_room(f))
            .map(|(k, _)| k.clone())?;
        let f = self.functions.get_mut(&chosen)?;
        let d = f.ready.pop_front()?;
        f.in_flight += 1;
        debug_assert!(
            f.in_flight <= f.limit(max_inflight) && f.limit(max_inflight) <= max_inflight.max(1),
            "a function never runs more than its limit, nor the limit exceed max_inflight"
        );
        let company = Company::joined(&f.running);
        // Its ready queue has room again: let the feeder pull the next one.
        f.room.notify_one();
        self.intake.notify_one();
        self.last = Some(chosen.clone());
        Some((chosen, d, company))
    }

    /// A delivery of the function on `subject` is done; the limiter learns `signal`. `again`:
    /// the delivery itself, to run again (first in its queue) when the function has room.
    pub(crate) fn finished(&mut self, subject: &str, signal: Signal, again: Option<Held>) {
        // Gone only after shutdown began: nothing runs it again then.
        if let Some(f) = self.functions.get_mut(subject) {
            debug_assert!(f.in_flight > 0, "a finished delivery was in flight");
            f.in_flight = f.in_flight.saturating_sub(1);
            f.running.fetch_sub(1, Ordering::Relaxed);
            if let Some(l) = f.limiter.as_mut() {
                l.learn(signal);
                f.full = signal == Signal::Rejected;
            }
            if let Some(held) = again {
                f.ready.push_front(held);
            }
            // A slot of its own freed up: a call held back may find room now.
            f.held_back = false;
            f.room.notify_one();
        } else if let Some(held) = again {
            tokio::spawn(held.give_back());
        }
        self.intake.notify_one();
    }

    /// A delivery of the function on `subject` its flow limits held back: it goes first in its
    /// queue again, and nothing of the function starts until [`Self::look_again`] or one of its
    /// calls here ends. `cap`: the function's `max_concurrency`. Returns the deliveries of it
    /// waiting here.
    pub(crate) fn held_back(&mut self, subject: &str, held: Held, cap: Option<u32>) -> usize {
        let Some(f) = self.functions.get_mut(subject) else {
            tokio::spawn(held.give_back());
            return 0;
        };
        debug_assert!(f.in_flight > 0, "a held-back delivery was in flight");
        f.in_flight = f.in_flight.saturating_sub(1);
        f.running.fetch_sub(1, Ordering::Relaxed);
        f.cap = cap.map(|c| c as usize);
        f.ready.push_front(held);
        f.held_back = true;
        self.intake.notify_one();
        f.ready.len()
    }

    /// A delivery of the function on `subject` its flow key's limits held back: parked until
    /// `until`, while the function's other calls go on (past [`PARK_MAX`], the whole function
    /// is held back instead, as by [`Self::held_back`]). Returns the deliveries of it waiting.
    pub(crate) fn parked(&mut self, subject: &str, held: Held, until: Instant) -> usize {
        let Some(f) = self.functions.get_mut(subject) else {
            tokio::spawn(held.give_back());
            return 0;
        };
        debug_assert!(f.in_flight > 0, "a parked delivery was in flight");
        f.in_flight = f.in_flight.saturating_sub(1);
        f.running.fetch_sub(1, Ordering::Relaxed);
        if f.parked.len() >= PARK_MAX {
            f.ready.push_front(held);
            f.held_back = true;
        } else {
            f.parked.push((until, held));
            f.room.notify_one();
        }
        self.intake.notify_one();
        f.waiting()
    }

    /// The wait of the function on `subject` is over (at `now`): its next call may try its
    /// limits again, and its parked deliveries whose time has come are back in line. Returns
    /// the deliveries of it still waiting.
    pub(crate) fn look_again(&mut self, subject: &str, now: Instant) -> usize {
        let waiting = match self.functions.get_mut(subject) {
            Some(f) => {
                f.unpark_due(now);
                f.held_back = false;
                f.room.notify_one();
                f.waiting()
            }
            None => 0,
        };
        self.intake.notify_one();
        waiting
    }

    /// Every parked delivery whose time has come, back in line.
    pub(crate) fn unpark_due(&mut self, now: Instant) {
        self.functions.values_mut().for_each(|f| f.unpark_due(now));
    }

    /// File `held` in the ready queue of `subject` (static mode), tracking the function with a
    /// fresh `limiter` if new. Functions with nothing ready or running are forgotten (their
    /// limits with them) once more than `keep` are tracked.
    pub(crate) fn file(
        &mut self,
        subject: &str,
        held: Held,
        limiter: impl FnOnce() -> Option<Limiter>,
        keep: usize,
    ) {
        if !self.functions.contains_key(subject) {
            if self.functions.len() >= keep && !self.renewing {
                self.functions.retain(|_, f| !f.is_empty());
            }
            self.track(subject, FunctionState::new(limiter(), 0));
        }
        if let Some(f) = self.functions.get_mut(subject) {
            f.take_in(held);
        }
    }

    /// How many deliveries static mode's intake should ask for, with `free_slots` slots free:
    /// the slots that no ready delivery can take now (its function is at its limit), while the
    /// deliveries held back stay within [`HOLD_MESSAGES`] and [`HOLD_BYTES`].
    pub(crate) fn intake_demand(&self, free_slots: usize, max_inflight: usize) -> usize {
        if self.paused.as_ref().is_some_and(|(_, p)| p.queue) {
            return 0;
        }
        let (mut startable, mut held, mut bytes) = (0usize, 0usize, 0usize);
        for f in self.functions.values() {
            startable += f.ready.len().min(f.room(max_inflight));
            held += f.ready.len() + f.parked.len();
            let parked = f.parked.iter().map(|(_, h)| h);
            bytes += f
                .ready
                .iter()
                .chain(parked)
                .map(|h| h.delivery.payload.len())
                .sum::<usize>();
        }
        if held >= HOLD_MESSAGES || bytes >= HOLD_BYTES {
            return 0;
        }
        free_slots
            .saturating_sub(startable)
            .min(HOLD_MESSAGES - held)
    }

    /// Every ready queue that holds something, and the parked deliveries, taken out (to renew
    /// their leases).
    pub(crate) fn take_queues(&mut self) -> Vec<Taken> {
        self.renewing = true;
        self.functions
            .iter_mut()
            .filter(|(_, f)| !f.ready.is_empty() || !f.parked.is_empty())
            .map(|(k, f)| Taken {
                subject: k.clone(),
                ready: std::mem::take(&mut f.ready),
                parked: std::mem::take(&mut f.parked),
            })
            .collect()
    }

    /// Put back what [`Self::take_queues`] took, ahead of what arrived meanwhile; returns the
    /// deliveries of functions that left the schedule meanwhile.
    pub(crate) fn put_back(&mut self, taken: Vec<Taken>) -> Vec<Held> {
        self.renewing = false;
        let mut orphans = Vec::new();
        for mut t in taken {
            if let Some(f) = self.functions.get_mut(&t.subject) {
                t.ready.append(&mut f.ready);
                f.ready = t.ready;
                t.parked.append(&mut f.parked);
                f.parked = t.parked;
                // Room again when leases ran out: the feeder may pull more.
                f.room.notify_one();
            } else {
                orphans.extend(t.ready);
                orphans.extend(t.parked.into_iter().map(|(_, h)| h));
            }
        }
        self.intake.notify_one();
        orphans
    }

    /// Deliveries waiting in ready queues, parked ones included.
    pub(crate) fn ready_count(&self) -> usize {
        self.functions
            .values()
            .map(|f| f.ready.len() + f.parked.len())
            .sum()
    }

    /// Every ready or parked delivery, out of the queues (at shutdown).
    pub(crate) fn take_ready(&mut self) -> Vec<Held> {
        self.functions
            .values_mut()
            .flat_map(|f| {
                let parked = f.parked.drain(..).map(|(_, h)| h);
                f.ready.drain(..).chain(parked).collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Acker, BrokerError, Delivery};
    use std::time::{Duration, SystemTime};

    struct NoAcker;

    #[async_trait::async_trait]
    impl Acker for NoAcker {
        async fn ack(&self) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn nak(&self, _: Option<Duration>) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn progress(&self) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn term(&self) -> Result<(), BrokerError> {
            Ok(())
        }
    }

    fn held(seq: u64, bytes: usize) -> Held {
        let d = Delivery {
            subject: "q.f.ns".into(),
            payload: bytes::Bytes::from(vec![b'x'; bytes]),
            headers: vec![],
            delivered: 1,
            stream_sequence: seq,
            published: SystemTime::UNIX_EPOCH,
            acker: Box::new(NoAcker),
        };
        Held::received(d, Duration::from_secs(60))
    }

    /// A limiter at `limit` (as it starts when `max_inflight` is `limit`).
    fn limited(limit: usize) -> Option<Limiter> {
        Some(Limiter::new(limit))
    }

    const MAX: usize = 10;

    fn file(s: &mut Sched, subject: &str, seq: u64, limit: usize) {
        s.file(subject, held(seq, 10), || limited(limit), 1_000);
    }

    #[tokio::test]
    async fn a_function_at_its_limit_gets_no_more_and_its_deliveries_wait() {
        let mut s = Sched::default();
        for seq in 0..5 {
            file(&mut s, "q.a.ns", seq, 3);
        }
        let mut started = 0;
        while let Some((subject, _, _)) = s.pick(MAX) {
            assert_eq!(subject, "q.a.ns");
            started += 1;
        }
        assert_eq!(started, 3, "the function's limit, not the free slots");
        assert_eq!(s.ready_count(), 2, "the rest wait");
        // The slots no ready delivery can take are asked of the intake.
        assert_eq!(s.intake_demand(MAX - 3, MAX), 7);
        // Another function's delivery starts at once.
        file(&mut s, "q.b.ns", 9, 3);
        assert_eq!(
            s.intake_demand(MAX - 3, MAX),
            6,
            "b's delivery takes one slot"
        );
        let (subject, d, company) = s.pick(MAX).expect("b has room");
        assert_eq!(
            (subject.as_str(), d.delivery.stream_sequence),
            ("q.b.ns", 9)
        );
        assert!(!company.crowded(), "b runs alone");
        // One of a's ends: the next of a's starts, in order, with company.
        s.finished("q.a.ns", Signal::Success, None);
        let (_, d, company) = s.pick(MAX).expect("a has room again");
        assert_eq!(d.delivery.stream_sequence, 3);
        assert!(company.crowded(), "two more of a's are running");
        // A call that started alone is crowded once another starts beside it.
        file(&mut s, "q.c.ns", 20, 3);
        let (_, _, alone) = s.pick(MAX).expect("c");
        assert!(!alone.crowded());
        file(&mut s, "q.c.ns", 21, 3);
        let (_, _, second) = s.pick(MAX).expect("c's second");
        assert!(second.crowded() && alone.crowded(), "both run together now");
    }

    #[tokio::test]
    async fn a_delivery_to_run_again_goes_first_in_its_queue() {
        let mut s = Sched::default();
        for seq in 0..3 {
            file(&mut s, "q.a.ns", seq, 1);
        }
        let (subject, first, _) = s.pick(MAX).expect("one at a time");
        assert!(s.pick(MAX).is_none(), "limit 1");
        s.finished(&subject, Signal::Rejected, Some(first));
        let (_, again, _) = s.pick(MAX).expect("room again");
        assert_eq!(again.delivery.stream_sequence, 0, "ahead of the others");
    }

    #[tokio::test]
    async fn after_a_429_the_function_gets_nothing_more_until_a_call_of_it_ends() {
        let mut s = Sched::default();
        for seq in 0..6 {
            file(&mut s, "q.a.ns", seq, 4);
        }
        let picked: Vec<_> = std::iter::from_fn(|| s.pick(MAX)).collect();
        assert_eq!(picked.len(), 4);
        s.finished("q.a.ns", Signal::Rejected, None);
        assert!(s.pick(MAX).is_none(), "full: nothing more while three run");
        assert_eq!(
            s.intake_demand(MAX - 3, MAX),
            MAX - 3,
            "its waiting deliveries take no slot: the intake pulls on for the others"
        );
        s.finished("q.a.ns", Signal::Success, None);
        assert!(s.pick(MAX).is_some(), "a call ended: room again");
        // With nothing of it running, one call may probe.
        let mut s = Sched::default();
        file(&mut s, "q.b.ns", 0, 4);
        file(&mut s, "q.b.ns", 1, 4);
        let (_, first, _) = s.pick(MAX).expect("starts");
        s.finished("q.b.ns", Signal::Rejected, Some(first));
        assert!(s.pick(MAX).is_some(), "a probe");
        assert!(s.pick(MAX).is_none(), "only one");
    }

    #[tokio::test]
    async fn a_call_held_back_by_flow_limits_waits_first_in_line_and_others_run_on() {
        let mut s = Sched::default();
        for seq in 0..4 {
            file(&mut s, "q.a.ns", seq, MAX);
        }
        file(&mut s, "q.b.ns", 9, MAX);
        let (subject, first, _) = s.pick(MAX).expect("a first");
        assert_eq!(subject, "q.a.ns");
        assert_eq!(s.held_back("q.a.ns", first, Some(2)), 4, "all of a's wait");
        let (subject, _, _) = s.pick(MAX).expect("b runs on");
        assert_eq!(subject, "q.b.ns");
        assert!(s.pick(MAX).is_none(), "a starts nothing while held back");
        assert_eq!(
            s.intake_demand(MAX - 1, MAX),
            MAX - 1,
            "a's waiting calls take no slot: the intake pulls on for others"
        );
        s.look_again("q.a.ns", Instant::now());
        let (_, d, _) = s.pick(MAX).expect("a's wait is over");
        assert_eq!(d.delivery.stream_sequence, 0, "first in line");
        assert!(s.pick(MAX).is_some());
        assert!(
            s.pick(MAX).is_none(),
            "no more of a at once than its cap of 2"
        );
        // Held back again: one of its calls ending here lifts the hold at once.
        s.finished("q.a.ns", Signal::Success, None);
        let (_, again, _) = s.pick(MAX).expect("room under the cap");
        s.held_back("q.a.ns", again, Some(2));
        assert!(s.pick(MAX).is_none());
        s.finished("q.a.ns", Signal::Success, None);
        assert!(s.pick(MAX).is_some(), "a slot of its own freed up");
    }

    #[tokio::test]
    async fn a_call_parked_for_its_flow_key_lets_its_functions_other_calls_run() {
        let mut s = Sched::default();
        for seq in 0..3 {
            file(&mut s, "q.a.ns", seq, MAX);
        }
        let (_, first, _) = s.pick(MAX).expect("a");
        let until = Instant::now() + Duration::from_secs(1);
        assert_eq!(s.parked("q.a.ns", first, until), 1);
        let (_, next, _) = s.pick(MAX).expect("the function's other calls go on");
        assert_eq!(next.delivery.stream_sequence, 1);
        assert_eq!(s.ready_count(), 2, "one ready, one parked");
        let mut taken = s.take_queues();
        assert_eq!(
            taken[0].all().count(),
            2,
            "renewal takes the parked one too"
        );
        assert!(s.put_back(taken).is_empty());
        s.unpark_due(Instant::now());
        assert_eq!(s.functions["q.a.ns"].parked.len(), 1, "not yet");
        s.unpark_due(until);
        let (_, back, _) = s.pick(MAX).expect("its time came");
        assert_eq!(back.delivery.stream_sequence, 0, "first in line again");
        // Past PARK_MAX, the whole function waits instead.
        let mut s = Sched::default();
        for seq in 0..PARK_MAX as u64 + 2 {
            file(&mut s, "q.b.ns", seq, MAX);
        }
        for _ in 0..PARK_MAX {
            let (_, d, _) = s.pick(MAX).expect("b");
            s.parked("q.b.ns", d, until);
        }
        let (_, d, _) = s.pick(MAX).expect("b");
        assert_eq!(
            s.parked("q.b.ns", d, until),
            PARK_MAX + 2,
            "all of b's wait"
        );
        assert!(s.pick(MAX).is_none(), "b is held back as a whole");
        assert_eq!(
            s.take_ready().len(),
            PARK_MAX + 2,
            "all given back at shutdown"
        );
    }

    #[tokio::test]
    async fn the_hold_is_bounded_in_messages_and_bytes() {
        let mut s = Sched::default();
        for seq in 0..HOLD_MESSAGES as u64 - 1 {
            file(&mut s, "q.a.ns", seq, 1);
        }
        assert_eq!(s.intake_demand(MAX, MAX), 1, "room for one more");
        file(&mut s, "q.a.ns", 5_000, 1);
        assert_eq!(s.intake_demand(MAX, MAX), 0, "full: the intake waits");

        let mut s = Sched::default();
        s.file("q.a.ns", held(1, 1), || limited(1), 1_000);
        s.file("q.a.ns", held(2, HOLD_BYTES), || limited(1), 1_000);
        assert!(s.pick(MAX).is_some());
        assert_eq!(s.intake_demand(MAX - 1, MAX), 0, "its bytes are the bound");
    }

    #[tokio::test]
    async fn idle_functions_are_forgotten_past_the_bound_busy_ones_never() {
        let mut s = Sched::default();
        file(&mut s, "q.busy.ns", 0, 1);
        let _running = s.pick(MAX).expect("starts");
        file(&mut s, "q.waiting.ns", 1, 1);
        for i in 0..5u64 {
            let subject = format!("q.idle{i}.ns");
            file(&mut s, &subject, 10 + i, 1);
            let (subject, _, _) = s.pick(MAX).expect("starts");
            s.finished(&subject, Signal::Success, None);
        }
        assert_eq!(s.functions.len(), 7);
        // Not while the ready queues are out for renewal: "waiting" looks idle then.
        let taken = s.take_queues();
        s.file("q.other.ns", held(98, 1), || limited(1), 3);
        assert_eq!(s.functions.len(), 8);
        assert!(s.put_back(taken).is_empty());
        s.functions.remove("q.other.ns");
        s.file("q.new.ns", held(99, 1), || limited(1), 3);
        let left: Vec<&str> = s.functions.keys().map(String::as_str).collect();
        assert_eq!(left, ["q.busy.ns", "q.new.ns", "q.waiting.ns"]);
    }

    #[tokio::test]
    async fn a_paused_function_starts_nothing_and_pulls_nothing_until_resumed() {
        let mut s = Sched::default();
        let mut paused = Paused::default();
        paused.functions.insert("a.ns".into());
        s.set_paused("q", paused.clone());
        file(&mut s, "q.a.ns", 0, 3);
        file(&mut s, "q.b.ns", 1, 3);
        assert!(
            s.functions["q.a.ns"].paused,
            "tracked paused when first filed"
        );
        assert_eq!(
            s.functions["q.a.ns"].wanted(MAX),
            0,
            "its feeder pulls nothing"
        );
        let (subject, _, _) = s.pick(MAX).expect("b runs");
        assert_eq!(subject, "q.b.ns");
        assert!(s.pick(MAX).is_none(), "a's delivery waits");
        assert_eq!(
            s.intake_demand(MAX - 1, MAX),
            MAX - 1,
            "the intake pulls on for others"
        );
        s.set_paused("q", Paused::default());
        let (subject, _, _) = s.pick(MAX).expect("resumed");
        assert_eq!(subject, "q.a.ns");

        let whole = paused.with(None, true).unwrap();
        s.set_paused("q", whole);
        file(&mut s, "q.c.ns", 2, 3);
        assert!(s.pick(MAX).is_none() && s.holds("q.c.ns"));
        assert_eq!(s.intake_demand(MAX, MAX), 0, "a paused queue pulls nothing");
    }

    #[tokio::test]
    async fn without_a_limiter_only_free_slots_are_asked_for() {
        let mut s = Sched::default();
        s.file("q.a.ns", held(0, 1), || None, 1_000);
        assert_eq!(
            s.intake_demand(MAX, MAX),
            MAX - 1,
            "the ready one takes a slot"
        );
        assert!(s.pick(MAX).is_some());
        assert_eq!(s.intake_demand(MAX - 1, MAX), MAX - 1);
        assert_eq!(s.intake_demand(0, MAX), 0, "no free slot, nothing asked");
    }
}
