//! The shared state of one limited function, as stored in its key, and the pure decision of
//! whether one more call may start now.
//!
//! - **Concurrency**: the calls holding a slot, each with the time its slot lapses on its own (a
//!   worker that died holding one). A call starts when fewer than `max_concurrency` slots are
//!   held.
//! - **Rate**: the generic cell rate algorithm. One number, the time at which the function's
//!   pace would allow the next call with no burst left (`next_us`). A call starts when
//!   `next_us − now` is at most `burst` intervals; it moves `next_us` one interval on. So at
//!   most `calls + burst` start in any period.

use serde::{Deserialize, Serialize};

use super::limits::Limits;

/// How long a call that found every slot taken waits before it looks again (a slot freed on
/// another replica is seen no later than this; one freed on the same replica at once).
pub const LOOK_AGAIN_US: u64 = 100_000;

/// One held slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The call and its attempt (`<call id>/<attempt>`).
    pub id: String,
    /// When the slot lapses if never given back (unix µs).
    pub until_us: u64,
}

/// The stored state of one function's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// The limits it was last enforced with (what `queue stats` shows).
    #[serde(default)]
    pub limits: Limits,
    /// The rate's next start time at an even pace (unix µs); 0: no call started yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_us: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Holder>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether one call may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It may: store this state (its slot taken, the pace moved on).
    Start(FlowState),
    /// Not before `until_us` (unix µs).
    Wait { until_us: u64 },
}

impl FlowState {
    /// Slots held and not lapsed at `now_us`.
    pub fn held(&self, now_us: u64) -> usize {
        self.holders.iter().filter(|h| h.until_us > now_us).count()
    }

    /// Whether the call `id` may start at `now_us` under `limits`; its slot (if
    /// `max_concurrency` is set) lapses after `hold_us`.
    pub fn decide(&self, limits: &Limits, now_us: u64, id: &str, hold_us: u64) -> Decision {
        let mut next = self.clone();
        next.limits = *limits;
        next.holders.retain(|h| h.until_us > now_us && h.id != id);
        if let Some(cap) = limits.max_concurrency {
            if next.holders.len() >= cap as usize {
                return Decision::Wait {
                    until_us: now_us + LOOK_AGAIN_US,
                };
            }
            next.holders.push(Holder {
                id: id.to_string(),
                until_us: now_us.saturating_add(hold_us),
            });
        } else {
            next.holders.clear();
        }
        if let Some(rate) = limits.rate {
            let interval = rate.interval_micros();
            let tolerance = interval.saturating_mul(u64::from(limits.burst));
            let paced = self.next_us.max(now_us);
            if paced - now_us > tolerance {
                return Decision::Wait {
                    until_us: paced - tolerance,
                };
            }
            next.next_us = paced.saturating_add(interval);
        } else {
            next.next_us = 0;
        }
        Decision::Start(next)
    }

    /// This state with the slot of `id` given back; `None` when it holds none.
    pub fn release(&self, id: &str) -> Option<FlowState> {
        let mut next = self.clone();
        let before = next.holders.len();
        next.holders.retain(|h| h.id != id);
        (next.holders.len() < before).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::limits::Rate;
    use proptest::prelude::*;
    use std::time::Duration;

    const HOLD: u64 = 60_000_000;

    fn capped(n: u32) -> Limits {
        Limits {
            max_concurrency: Some(n),
            ..Limits::default()
        }
    }

    fn paced(calls: u32, period_ms: u64, burst: u32) -> Limits {
        Limits {
            max_concurrency: None,
            rate: Some(Rate {
                calls,
                period: Duration::from_millis(period_ms),
            }),
            burst,
        }
    }

    fn start(state: &FlowState, limits: &Limits, now: u64, id: &str) -> Option<FlowState> {
        match state.decide(limits, now, id, HOLD) {
            Decision::Start(next) => Some(next),
            Decision::Wait { until_us } => {
                assert!(until_us > now, "a wait ends later");
                None
            }
        }
    }

    #[test]
    fn slots_are_taken_up_to_the_cap_given_back_and_lapse() {
        let limits = capped(2);
        let s = FlowState::default();
        let s = start(&s, &limits, 0, "a/1").unwrap();
        let s = start(&s, &limits, 1, "b/1").unwrap();
        assert_eq!(s.held(1), 2);
        assert!(start(&s, &limits, 2, "c/1").is_none(), "full");
        let s = s.release("a/1").expect("a held one");
        assert!(s.release("a/1").is_none(), "given back once");
        let s = start(&s, &limits, 3, "c/1").unwrap();
        assert!(start(&s, &limits, 4, "d/1").is_none());
        // A slot whose holder died lapses.
        assert!(start(&s, &limits, HOLD + 2, "d/1").is_some());
        // The same call taking its slot again holds one, not two.
        let again = start(&s, &limits, 5, "c/1").expect("c's own slot");
        assert_eq!(again.held(5), 2, "b and c, once each");
        let s = again.release("b/1").unwrap();
        let s = start(&s, &limits, 6, "c/1").unwrap();
        assert_eq!(s.held(6), 1);
    }

    #[test]
    fn the_rate_spaces_starts_and_a_burst_lets_some_start_at_once() {
        let limits = paced(5, 1_000, 0);
        let s = start(&FlowState::default(), &limits, 1_000_000, "a").unwrap();
        assert_eq!(
            s.decide(&limits, 1_000_000, "b", HOLD),
            Decision::Wait {
                until_us: 1_200_000
            }
        );
        assert!(start(&s, &limits, 1_200_000, "b").is_some());
        let burst = paced(5, 1_000, 2);
        let mut s = FlowState::default();
        for id in ["a", "b", "c"] {
            s = start(&s, &burst, 0, id).expect("the call and its burst of 2");
        }
        assert!(start(&s, &burst, 0, "d").is_none());
    }

    proptest! {
        /// Whatever the times callers come at, at most `calls + burst` start in any period,
        /// and at most `cap` hold a slot at once.
        #[test]
        fn no_period_ever_sees_more_than_the_rate_and_burst(
            calls in 1u32..8,
            burst in 0u32..4,
            cap in 1u32..5,
            gaps in prop::collection::vec(0u64..150_000, 1..200),
            runs in prop::collection::vec(1u64..400_000, 1..200),
        ) {
            let limits = Limits { max_concurrency: Some(cap), ..paced(calls, 1_000, burst) };
            let mut s = FlowState::default();
            let (mut now, mut started, mut running) = (0u64, Vec::new(), Vec::<(u64, String)>::new());
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                running.retain(|(end, id)| {
                    if *end <= now { s = s.release(id).unwrap_or_else(|| s.clone()); false } else { true }
                });
                let id = format!("c{i}");
                if let Decision::Start(next) = s.decide(&limits, now, &id, HOLD) {
                    s = next;
                    started.push(now);
                    running.push((now + runs[i % runs.len()], id));
                    prop_assert!(s.held(now) <= cap as usize);
                }
            }
            for (i, t) in started.iter().enumerate() {
                let in_window = started[i..].iter().take_while(|u| **u < t + 1_000_000).count();
                prop_assert!(in_window <= (calls + burst) as usize, "{in_window} in a period from {t}");
            }
        }
    }
}
