//! What happens to a delivery, decided from its facts. Pure: no I/O, no clock reads, no logs;
//! the caller ([`super::pipeline`]) gathers the facts, asks here, and carries the plan out.
//!
//! | facts | callback | dead letter | settle | processed |
//! |---|---|---|---|---|
//! | not decodable, or no function request can be built | — | `poison` | term | no |
//! | older than `max_message_age` | 410 | `expired` | term | yes |
//! | delivered past its last attempt (not invoked) | — | `exhausted` | term | no |
//! | 1xx–3xx | the status | — | ack | yes |
//! | 429 while this worker ran other calls of the function (limiter on), at most 10 times | — | — | kept, run again when the function has room (no attempt spent) | no |
//! | retryable, attempts left | — | — | nak after the policy's delay (a deferral in `[max_retry_wait/2, max_retry_wait]` when the retry budget is spent) | no |
//! | retryable, last attempt | the status | `exhausted` | term | yes |
//! | any other error | the status | `failed` | term | yes |
//!
//! A term is sent only once the dead letter is stored (otherwise the message is nak'd and
//! comes back). What is retryable and with which delay is the retry policy's
//! ([`super::retry::decide`]). The limiter (function mode) learns from the status: a 429 is a
//! rejection, a 2xx a success, anything else (or no call at all) neither.

use std::time::{Duration, SystemTime};

use super::retry::{self, AttemptResult, Decision, RetryPolicy};
use crate::rng::Jitter;

/// How a delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: remove from the queue.
    Ack,
    /// Deliver again after the delay (at once when `None`).
    Nak(Option<Duration>),
    /// Never deliver again (after its dead letter is stored).
    Term,
    /// Keep it, unsettled, and run it again when its function has room (back-pressure this
    /// worker caused: no attempt spent).
    Again,
    /// Keep it, unsettled, and run it again after `wait`: its function's flow limits hold it
    /// back (`src/flow/`; no attempt spent). `cap`: the function's `max_concurrency`;
    /// `keyed`: its flow key's limits held it, not its function's.
    Hold {
        wait: Duration,
        cap: Option<u32>,
        keyed: bool,
    },
}

/// Why a message is dead-lettered (`Qw-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Undecodable or not invocable.
    Poison,
    /// Every attempt failed.
    Exhausted,
    /// Older than `max_message_age`.
    Expired,
    /// Failed with a final (non-retryable) status.
    Failed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Poison => "poison",
            Reason::Exhausted => "exhausted",
            Reason::Expired => "expired",
            Reason::Failed => "failed",
        }
    }
}

/// The dead letter to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterPlan {
    pub reason: Reason,
    /// `Qw-Status`: the function's last status, when there was one.
    pub status: Option<u16>,
    /// `Qw-Error`: one line for operators (never the body or header values).
    pub error: String,
}

/// A retry of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPlan {
    /// How long the broker waits before delivering it again.
    pub delay: Duration,
    /// The retry budget was spent: the delay is the maximum wait instead of the policy's.
    pub budget_spent: bool,
}

/// What the adaptive limiter learns from the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Success,
    Rejected,
    Other,
}

impl Signal {
    /// From the function's status (`None`: it was not called).
    pub fn of(status: Option<u16>) -> Signal {
        match status {
            Some(429) => Signal::Rejected,
            Some(s) if (200..300).contains(&s) => Signal::Success,
            _ => Signal::Other,
        }
    }
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Post the result with this `X-Function-Status` (when the message has a callback URL).
    pub callback: Option<u16>,
    /// Keep the message as a dead letter; `settle` is then `Term`.
    pub dead_letter: Option<DeadLetterPlan>,
    pub retry: Option<RetryPlan>,
    pub settle: Settle,
    /// Counts in `queue_worker_messages_processed_total`.
    pub processed: bool,
    pub limiter: Signal,
}

impl Plan {
    /// The rules every plan keeps: a dead letter exactly when the message is terminated, a
    /// retry exactly when it is nak'd (with the retry's delay), an ack otherwise; a callback
    /// exactly when the call counts as processed (its outcome is final).
    fn consistent(&self) -> bool {
        let settle_fits = match (&self.dead_letter, self.retry) {
            (Some(_), None) => self.settle == Settle::Term,
            (None, Some(r)) => self.settle == Settle::Nak(Some(r.delay)),
            (None, None) => matches!(self.settle, Settle::Ack | Settle::Again),
            (Some(_), Some(_)) => false,
        };
        settle_fits && self.callback.is_some() == self.processed
    }

    fn dead_letter(callback: Option<u16>, dl: DeadLetterPlan, limiter: Signal) -> Plan {
        Plan {
            callback,
            processed: callback.is_some(),
            dead_letter: Some(dl),
            retry: None,
            settle: Settle::Term,
            limiter,
        }
    }
}

/// A message that cannot be invoked: `error` says why.
pub fn poison(error: String) -> Plan {
    let dl = DeadLetterPlan {
        reason: Reason::Poison,
        status: None,
        error,
    };
    let plan = Plan::dead_letter(None, dl, Signal::Other);
    debug_assert!(plan.consistent());
    plan
}

/// The plan for a message enqueued `age` ago when it may not be older than `max_age`; `None`
/// when it may run.
pub fn expired(age: Duration, max_age: Duration) -> Option<Plan> {
    if age <= max_age {
        return None;
    }
    let dl = DeadLetterPlan {
        reason: Reason::Expired,
        status: Some(410),
        error: format!(
            "enqueued {:.3}s ago, over max_message_age {:?}",
            age.as_secs_f64(),
            max_age
        ),
    };
    let plan = Plan::dead_letter(Some(410), dl, Signal::Other);
    debug_assert!(plan.consistent());
    Some(plan)
}

/// The plan for delivery `delivered` of a call allowed `max_attempts` attempts; `None` when
/// it may run. A delivery past the last attempt is never invoked, whatever brought it back: the
/// last attempt's worker was lost before it settled, its dead letter could not be stored, or
/// its ack did not arrive. How that attempt ended is not known here (its callback, when it
/// ended, was posted then), so none is posted now: the call ends as a dead letter.
pub fn past_last_attempt(delivered: u32, max_attempts: u32) -> Option<Plan> {
    if delivered <= max_attempts {
        return None;
    }
    let dl = DeadLetterPlan {
        reason: Reason::Exhausted,
        status: None,
        error: format!(
            "delivered {delivered} times, past the last of {max_attempts} attempts: \
             not invoked again (the last attempt's outcome is not known here)"
        ),
    };
    let plan = Plan::dead_letter(None, dl, Signal::Other);
    debug_assert!(plan.consistent());
    Some(plan)
}

/// What one call produced, and what is needed to judge it.
pub struct Attempt<'a> {
    pub policy: &'a RetryPolicy,
    /// JetStream's delivery count (1 = first attempt).
    pub number: u32,
    pub result: AttemptResult<'a>,
    /// The status reported for it (`X-Function-Status`, `Qw-Status`): the answer's, or the
    /// invoker's for a failed exchange (503, or 502 for an answer too large to read).
    pub status: u16,
    /// For `Retry-After` given as a date.
    pub now: SystemTime,
    /// Another call of the function ran in this worker when this one started or when its
    /// answer came, under an adaptive limit: a 429 then may be this worker's own doing.
    pub crowded: bool,
    /// Times this delivery was already held for another try that way.
    pub pushed_back: u32,
}

/// Times one delivery may be held for another try after a 429 this worker's concurrency may
/// have caused; after that, a 429 is an attempt like any other.
pub const MAX_PUSH_BACKS: u32 = 10;

/// A 429 that this worker's own concurrency may have caused: the function refused the call
/// while the worker ran others of it, the adaptive limit (which learns from this 429) was
/// probing for room. It is back-pressure, not a failure of the call: the delivery waits for
/// room and runs again, without spending an attempt, being retried or called back — at most
/// [`MAX_PUSH_BACKS`] times, and only where the policy retries a 429 at all. A 429 to a call
/// that ran alone is an attempt: the function is busy with others' work, or refuses for good.
pub fn pushed_back(attempt: &Attempt<'_>) -> bool {
    attempt.status == 429
        && attempt.crowded
        && attempt.pushed_back < MAX_PUSH_BACKS
        && attempt.policy.is_retryable(&attempt.result)
}

/// The plan after a call. `budget` is asked only when a retry is due; it answers whether the
/// retry budget grants it (and counts it when it does).
pub fn after_call(
    attempt: &Attempt<'_>,
    jitter: &mut dyn Jitter,
    budget: impl FnOnce() -> bool,
) -> Plan {
    let status = attempt.status;
    let limiter = Signal::of(Some(status));
    if pushed_back(attempt) {
        return Plan {
            callback: None,
            dead_letter: None,
            retry: None,
            settle: Settle::Again,
            processed: false,
            limiter,
        };
    }
    let decision = retry::decide(
        attempt.policy,
        attempt.number,
        &attempt.result,
        attempt.now,
        jitter,
    );
    let plan = match decision {
        Decision::Success => Plan {
            callback: Some(status),
            dead_letter: None,
            retry: None,
            settle: Settle::Ack,
            processed: true,
            limiter,
        },
        Decision::Retry { delay } => {
            debug_assert!(attempt.number.max(1) < attempt.policy.max_attempts);
            let retry = if budget() {
                RetryPlan {
                    delay,
                    budget_spent: false,
                }
            } else {
                RetryPlan {
                    delay: retry::deferral(delay, attempt.policy.max_wait, jitter),
                    budget_spent: true,
                }
            };
            debug_assert!(
                retry.delay <= attempt.policy.max_wait.max(attempt.policy.min_wait),
                "a retry never waits longer than the policy allows"
            );
            Plan {
                callback: None,
                dead_letter: None,
                retry: Some(retry),
                settle: Settle::Nak(Some(retry.delay)),
                processed: false,
                limiter,
            }
        }
        Decision::Final { exhausted } => {
            let dl = final_dead_letter(attempt, status, exhausted);
            Plan::dead_letter(Some(status), dl, limiter)
        }
    };
    debug_assert!(plan.consistent(), "{plan:?}");
    plan
}

fn final_dead_letter(attempt: &Attempt<'_>, status: u16, exhausted: bool) -> DeadLetterPlan {
    let (reason, error) = if exhausted {
        let of = attempt.policy.max_attempts;
        let error = format!("status {status} after {} of {of} attempts", attempt.number);
        (Reason::Exhausted, error)
    } else {
        (Reason::Failed, format!("status {status} is not retryable"))
    };
    DeadLetterPlan {
        reason,
        status: Some(status),
        error,
    }
}

/// How a callback receiver answered one post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAnswer {
    Status(u16),
    /// No answer: connect error, timeout, reset.
    NoAnswer,
}

/// What follows one callback post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackStep {
    /// Accepted (1xx–3xx).
    Delivered,
    /// Refused for good (a 4xx other than 408 and 429).
    Rejected,
    /// Retryable, but that was the last try.
    Failed,
    /// Post again after this long.
    Retry(Duration),
}

/// After post `n` (0-based) of a callback with `retries` retries allowed: transport errors,
/// 5xx, 408 and 429 are retried after [`callback_retry_delay`]; a callback failure never runs
/// the function again.
pub fn callback_step(answer: CallbackAnswer, n: u32, retries: u32) -> CallbackStep {
    let retryable = match answer {
        CallbackAnswer::Status(s) if s < 400 => return CallbackStep::Delivered,
        CallbackAnswer::Status(s) => (500..600).contains(&s) || s == 408 || s == 429,
        CallbackAnswer::NoAnswer => true,
    };
    if !retryable {
        CallbackStep::Rejected
    } else if n >= retries {
        CallbackStep::Failed
    } else {
        CallbackStep::Retry(callback_retry_delay(n))
    }
}

/// Delay before callback retry `n` (0-based): 1 s, 2 s, 4 s, ... at most 30 s.
pub fn callback_retry_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(5)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backoff, Config};
    use http::HeaderMap;

    /// Jitter at the top of every spread window: the delays before spreading.
    struct Top;

    impl crate::rng::Jitter for Top {
        fn next_unit(&mut self) -> f64 {
            1.0
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::from_config(&Config {
            max_retry_attempts: 3,
            initial_retry_wait: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(8),
            backoff: Backoff::Exponential,
            ..Config::default()
        })
    }

    /// The plan for `status` (`None`: a transport error) on attempt `n`, the budget answering
    /// `granted`; also whether the budget was asked.
    fn plan(
        status: Option<u16>,
        headers: &HeaderMap,
        n: u32,
        granted: bool,
        crowd: Option<u32>,
    ) -> (Plan, bool) {
        let policy = policy();
        let result = match status {
            Some(status) => AttemptResult::Response { status, headers },
            None => AttemptResult::TransportError,
        };
        let attempt = Attempt {
            policy: &policy,
            number: n,
            status: result.status(),
            result,
            now: SystemTime::UNIX_EPOCH,
            crowded: crowd.is_some(),
            pushed_back: crowd.unwrap_or(0),
        };
        let mut asked = false;
        // The top of every spread window: the delays before spreading.
        let plan = after_call(&attempt, &mut Top, || {
            asked = true;
            granted
        });
        (plan, asked)
    }

    fn dl(reason: Reason, status: Option<u16>, error: &str) -> Option<DeadLetterPlan> {
        Some(DeadLetterPlan {
            reason,
            status,
            error: error.into(),
        })
    }

    /// One row: a call's result and the budget's answer, and the plan it must give.
    struct Case {
        what: &'static str,
        status: Option<u16>,
        retry_after: bool,
        /// Crowded (other calls of the function in flight), pushed back this often before.
        crowd: Option<u32>,
        attempt: u32,
        budget_grants: bool,
        want: Plan,
        budget_asked: bool,
    }

    fn ack(status: u16, limiter: Signal) -> Plan {
        Plan {
            callback: Some(status),
            dead_letter: None,
            retry: None,
            settle: Settle::Ack,
            processed: true,
            limiter,
        }
    }

    fn nak(secs: u64, budget_spent: bool, limiter: Signal) -> Plan {
        let delay = Duration::from_secs(secs);
        Plan {
            callback: None,
            dead_letter: None,
            retry: Some(RetryPlan {
                delay,
                budget_spent,
            }),
            settle: Settle::Nak(Some(delay)),
            processed: false,
            limiter,
        }
    }

    fn again() -> Plan {
        Plan {
            callback: None,
            dead_letter: None,
            retry: None,
            settle: Settle::Again,
            processed: false,
            limiter: Signal::Rejected,
        }
    }

    fn term(status: u16, reason: Reason, error: &str, limiter: Signal) -> Plan {
        Plan {
            callback: Some(status),
            dead_letter: dl(reason, Some(status), error),
            retry: None,
            settle: Settle::Term,
            processed: true,
            limiter,
        }
    }

    #[test]
    fn every_outcome_of_a_call() {
        use Signal::{Other, Rejected, Success};
        let case = |what, status, attempt, budget_grants, want, budget_asked| Case {
            what,
            status,
            retry_after: false,
            crowd: None,
            attempt,
            budget_grants,
            want,
            budget_asked,
        };
        let table = [
            case("success", Some(200), 1, true, ack(200, Success), false),
            case(
                "3xx is a success",
                Some(302),
                2,
                true,
                ack(302, Other),
                false,
            ),
            case("retry", Some(503), 1, true, nak(1, false, Other), true),
            case(
                "back-off doubles",
                Some(500),
                2,
                true,
                nak(2, false, Other),
                true,
            ),
            case(
                "429 retried",
                Some(429),
                1,
                true,
                nak(1, false, Rejected),
                true,
            ),
            Case {
                retry_after: true,
                ..case(
                    "Retry-After",
                    Some(429),
                    1,
                    true,
                    nak(5, false, Rejected),
                    true,
                )
            },
            case("transport error", None, 1, true, nak(1, false, Other), true),
            Case {
                crowd: Some(0),
                ..case("429 while crowded", Some(429), 1, true, again(), false)
            },
            Case {
                crowd: Some(9),
                ..case(
                    "429 crowded on the last attempt",
                    Some(429),
                    3,
                    true,
                    again(),
                    false,
                )
            },
            Case {
                crowd: Some(MAX_PUSH_BACKS),
                ..case(
                    "429 crowded, pushed back enough",
                    Some(429),
                    1,
                    true,
                    nak(1, false, Rejected),
                    true,
                )
            },
            Case {
                crowd: Some(0),
                ..case(
                    "503 while crowded",
                    Some(503),
                    1,
                    true,
                    nak(1, false, Other),
                    true,
                )
            },
            case(
                "budget deferral",
                Some(503),
                1,
                false,
                nak(8, true, Other),
                true,
            ),
            case(
                "exhausted",
                Some(503),
                3,
                true,
                term(
                    503,
                    Reason::Exhausted,
                    "status 503 after 3 of 3 attempts",
                    Other,
                ),
                false,
            ),
            case(
                "past the last attempt",
                Some(429),
                4,
                true,
                term(
                    429,
                    Reason::Exhausted,
                    "status 429 after 4 of 3 attempts",
                    Rejected,
                ),
                false,
            ),
            case(
                "not retryable",
                Some(400),
                1,
                true,
                term(400, Reason::Failed, "status 400 is not retryable", Other),
                false,
            ),
        ];
        for c in table {
            let mut headers = HeaderMap::new();
            if c.retry_after {
                headers.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
            }
            let got = plan(c.status, &headers, c.attempt, c.budget_grants, c.crowd);
            assert_eq!(got, (c.want, c.budget_asked), "{}", c.what);
        }
    }

    #[test]
    fn poison_is_dead_lettered_without_a_callback() {
        let p = poison("not JSON".into());
        assert_eq!(p.callback, None);
        assert_eq!(p.dead_letter, dl(Reason::Poison, None, "not JSON"));
        assert_eq!(
            (p.settle, p.processed, p.limiter),
            (Settle::Term, false, Signal::Other)
        );
    }

    #[test]
    fn expired_only_past_the_maximum_age() {
        let secs = Duration::from_secs;
        assert_eq!(expired(secs(9), secs(10)), None);
        assert_eq!(expired(secs(10), secs(10)), None);
        let p = expired(Duration::from_millis(10_500), secs(10)).expect("expired");
        assert_eq!(p.callback, Some(410));
        assert_eq!(
            p.dead_letter,
            dl(
                Reason::Expired,
                Some(410),
                "enqueued 10.500s ago, over max_message_age 10s"
            )
        );
        assert_eq!((p.settle, p.processed), (Settle::Term, true));
    }

    #[test]
    fn never_invoked_past_the_last_attempt() {
        assert_eq!(past_last_attempt(1, 1), None);
        assert_eq!(past_last_attempt(10, 10), None);
        let p = past_last_attempt(11, 10).expect("past the last attempt");
        assert_eq!(p.callback, None, "the outcome is not known: no callback");
        let want = "delivered 11 times, past the last of 10 attempts: not invoked again \
                    (the last attempt's outcome is not known here)";
        assert_eq!(p.dead_letter, dl(Reason::Exhausted, None, want));
        assert_eq!((p.settle, p.processed), (Settle::Term, false));
        assert!(past_last_attempt(u32::MAX, 1).is_some());
    }

    #[test]
    fn callback_steps() {
        use CallbackAnswer::{NoAnswer, Status};
        let secs = Duration::from_secs;
        let table = [
            (Status(200), 0, 3, CallbackStep::Delivered),
            (Status(302), 3, 3, CallbackStep::Delivered),
            (Status(400), 0, 3, CallbackStep::Rejected),
            (Status(404), 0, 3, CallbackStep::Rejected),
            (Status(503), 0, 3, CallbackStep::Retry(secs(1))),
            (Status(408), 1, 3, CallbackStep::Retry(secs(2))),
            (Status(429), 2, 3, CallbackStep::Retry(secs(4))),
            (NoAnswer, 0, 3, CallbackStep::Retry(secs(1))),
            (Status(500), 3, 3, CallbackStep::Failed),
            (NoAnswer, 0, 0, CallbackStep::Failed),
        ];
        for (answer, n, retries, want) in table {
            assert_eq!(
                callback_step(answer, n, retries),
                want,
                "{answer:?} {n}/{retries}"
            );
        }
    }

    #[test]
    fn callback_retry_delays_double_and_cap() {
        let d: Vec<u64> = (0..8).map(|n| callback_retry_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn the_limiter_learns_from_the_status() {
        assert_eq!(Signal::of(Some(429)), Signal::Rejected);
        assert_eq!(Signal::of(Some(204)), Signal::Success);
        assert_eq!(Signal::of(Some(503)), Signal::Other);
        assert_eq!(Signal::of(None), Signal::Other);
    }
}
