//! Adaptive concurrency per function (`limiter_enabled`, function mode).
//!
//! Why AIMD and not a gradient (latency-based) limiter: the signal we have is explicit — a
//! function at capacity answers `429` (the OpenFaaS watchdog's `max_inflight`, or any
//! rate-limited service) — while latency is a poor signal for functions whose run time varies
//! from milliseconds to minutes with the input. AIMD (additive increase, multiplicative decrease)
//! converges to the capacity the function shows through 429s, shares it fairly between worker
//! replicas, and is simple enough to reason about and test exhaustively.
//!
//! The rules:
//! - start open, at `max_inflight`: a function that never answers 429 runs exactly as it would
//!   without a limiter (no ramp-up for long-running calls);
//! - a 429 shrinks the limit to 3/4, at most once per round of `limit` completions, so that a
//!   burst of 429s from calls that were already in flight counts as one signal, not many;
//! - each success grows it by `1/limit` (about +1 per round of `limit` calls), up to
//!   `max_inflight`, so it probes for room that opens up again;
//! - other outcomes (5xx, timeouts) leave the limit alone: they say nothing about capacity.
//!
//! Work held back by the limit stays in the queue (function mode: the worker does not pull it;
//! static mode: it waits, leased, in the worker), instead of being sent to a function that
//! would reject it and burning retries.

use super::plan::Signal;

/// Multiplicative decrease.
pub const DECREASE: f64 = 0.75;

/// The concurrency limit of one function.
#[derive(Debug, Clone)]
pub struct Limiter {
    limit: f64,
    max: f64,
    /// Completions since the last decrease (a decrease needs a full round of them).
    since_decrease: u64,
}

impl Limiter {
    /// A limiter starting at `max` (the worker's `max_inflight`), never above it.
    pub fn new(max: usize) -> Limiter {
        let max = max.max(1) as f64;
        Limiter {
            limit: max,
            max,
            since_decrease: u64::MAX / 2,
        }
    }

    /// Calls that may be in flight for this function now (at least 1).
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }

    /// Learn from one attempt (see [`Signal`]).
    pub fn learn(&mut self, signal: Signal) {
        match signal {
            Signal::Success => self.on_success(),
            Signal::Rejected => self.on_rejected(),
            Signal::Other => self.on_other(),
        }
        debug_assert!(
            (1.0..=self.max).contains(&self.limit),
            "the limit stays within 1..=max_inflight"
        );
    }

    /// A 2xx (or any non-429 answer that shows the function had room).
    pub fn on_success(&mut self) {
        self.since_decrease = self.since_decrease.saturating_add(1);
        self.limit = (self.limit + 1.0 / self.limit).min(self.max);
    }

    /// A 429: at capacity.
    pub fn on_rejected(&mut self) {
        self.since_decrease = self.since_decrease.saturating_add(1);
        if self.since_decrease >= self.limit() as u64 {
            self.limit = (self.limit * DECREASE).max(1.0);
            self.since_decrease = 0;
        }
    }

    /// Anything else (5xx, transport error): no information about capacity.
    pub fn on_other(&mut self) {
        self.since_decrease = self.since_decrease.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_open_at_max_inflight_and_stays_there_without_429s() {
        let mut l = Limiter::new(8);
        assert_eq!(l.limit(), 8);
        for _ in 0..100 {
            l.on_success();
            l.on_other();
        }
        assert_eq!(l.limit(), 8, "capped at max_inflight");
        assert_eq!(Limiter::new(0).limit(), 1, "at least 1");
    }

    #[test]
    fn a_429_shrinks_the_limit_once_per_round() {
        let mut l = Limiter::new(20);
        l.on_rejected();
        assert_eq!(l.limit(), 15, "x0.75");
        // More 429s from calls already in flight within the same round: no further decrease.
        for _ in 0..14 {
            l.on_rejected();
        }
        assert_eq!(l.limit(), 15);
        l.on_rejected();
        assert_eq!(
            l.limit(),
            11,
            "after a full round of 15 completions, decrease again"
        );
    }

    #[test]
    fn after_a_decrease_growth_is_additive() {
        let mut l = Limiter::new(10);
        l.on_rejected();
        assert_eq!(l.limit(), 7, "10 x 0.75 = 7.5");
        for _ in 0..3 {
            l.on_success();
        }
        assert_eq!(l.limit(), 7, "+1/limit per success, not +1");
        l.on_success();
        assert_eq!(l.limit(), 8, "7.5 + 4 x ~1/7.7 crosses 8");
    }

    #[test]
    fn never_below_one_and_a_single_429_at_the_floor_counts() {
        let mut l = Limiter::new(4);
        for _ in 0..100 {
            l.on_rejected();
        }
        assert_eq!(l.limit(), 1);
        l.on_success();
        l.on_success();
        assert!(l.limit() >= 1);
    }

    /// A function with hard capacity `k`: calls above it are rejected. Simulate rounds where
    /// the worker sends `limit` calls at once and count rejections, with and without the
    /// limiter.
    fn rejections(k: usize, max: usize, rounds: usize, adaptive: bool) -> (usize, usize) {
        let mut l = Limiter::new(max);
        let (mut rejected, mut done) = (0, 0);
        for _ in 0..rounds {
            let sent = if adaptive { l.limit() } else { max };
            for i in 0..sent {
                if i < k {
                    done += 1;
                    l.on_success();
                } else {
                    rejected += 1;
                    l.on_rejected();
                }
            }
        }
        (rejected, done)
    }

    #[test]
    fn far_fewer_rejections_than_without_a_limiter_for_the_same_work() {
        let (with_rej, with_done) = rejections(5, 50, 200, true);
        let (without_rej, without_done) = rejections(5, 50, 200, false);
        assert_eq!(without_done, 5 * 200);
        assert!(
            with_done >= without_done * 9 / 10,
            "{with_done} vs {without_done}"
        );
        assert!(
            with_rej * 10 < without_rej,
            "with limiter {with_rej} rejections, without {without_rej}"
        );
    }

    proptest! {
        #[test]
        fn limit_stays_within_bounds(max in 1usize..500, events in proptest::collection::vec(0u8..3, 0..500)) {
            let mut l = Limiter::new(max);
            for e in events {
                match e {
                    0 => l.on_success(),
                    1 => l.on_rejected(),
                    _ => l.on_other(),
                }
                prop_assert!(l.limit() >= 1 && l.limit() <= max);
            }
        }
    }
}
