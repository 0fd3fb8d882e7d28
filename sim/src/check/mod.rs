//! Invariants, checked over the recorded history of a run (`sim/README.md`, "Invariants").
//!
//! [`check`] indexes the history once (`index.rs`: per call, what the broker and the workers
//! saw; `faults.rs`: the injected faults as time spans and what they explain), then runs one
//! function per invariant, each named after the rule its violations report (`exactly_one` for
//! `exactly-one`, `after_terminal` for `after-terminal`), one file each:
//!
//! - **terminal** (`terminal.rs`): every accepted call reaches a terminal state (an ack after
//!   a successful invocation of that delivery, or a term after its stored dead letter), except
//!   calls lost to a broker restart with memory storage (counted);
//! - **exactly-one** (`exactly_one.rs`): no call has two outcomes (a success and a dead letter,
//!   two dead letters, callbacks from two invocations) unless a fault broke its lease, and
//!   lease losses stay within what the faults can explain;
//! - **lease** (`lease.rs`): a message is redelivered while its holder has not given it back
//!   only when a fault (crash, partition, broker restart) hit that holder;
//! - **after-terminal** (`after_terminal.rs`): no invocation after the terminal state, except
//!   fault-explained duplicates (counted);
//! - **attempts** (`attempts.rs`): retries only below `max_retry_attempts` and only for
//!   retryable statuses; at most `max_retry_attempts` invocations plus one per broken lease or
//!   unstored dead letter;
//! - **delay** (`delay.rs`): each retry delay is what the policy allows (`policy.rs`), and the
//!   broker does not redeliver before it;
//! - **inflight** (`inflight.rs`): at most `max_inflight` invocations at once per worker;
//! - **budget** (`budget.rs`): retries granted below the maximum wait stay within the budget;
//! - **callback** (`callback.rs`): at most `callback_retries + 1` posts per invocation, none
//!   after one was accepted, and (when the receiver had no outage) every finished call with a
//!   callback URL got one;
//! - **saturated** (`saturated.rs`): calls of a busy but healthy function all succeed, called
//!   back once, with no attempt spent on its 429s when one replica runs them;
//! - **flow** (`flow.rs`): a function's `max_concurrency` and `rate` hold across replicas, and
//!   without faults a call held back by them costs no attempt.

mod after_terminal;
mod attempts;
mod budget;
mod callback;
mod cancel;
mod delay;
mod exactly_one;
mod faults;
mod flow;
mod index;
mod inflight;
mod lease;
mod policy;
mod report;
mod saturated;
mod terminal;

use crate::history::Record;
use crate::plan::RunConfig;

use after_terminal::after_terminal;
use attempts::attempts;
use budget::budget;
use callback::callback;
use cancel::cancel;
use delay::delay;
use exactly_one::exactly_one;
use faults::Faults;
use flow::flow;
use inflight::inflight;
use lease::lease;
use saturated::saturated;
use terminal::terminal;

use report::Findings;
pub use report::{
    AFTER_TERMINAL, ATTEMPTS, BUDGET, CALLBACK, CANCEL, DELAY, EXACTLY_ONE, FLOW, INFLIGHT, LEASE,
    RULES, Report, SATURATED, Stats, TERMINAL, Violation,
};

/// Check every invariant over `records`.
pub fn check(cfg: &RunConfig, records: &[Record]) -> Report {
    let faults = Faults::new(records);
    let calls = index::calls(records, &faults);
    let mut found = Findings::default();
    found.stats.faults = faults.started;
    found.stats.lease_loss_bound = faults.lease_loss_bound(cfg);
    index::count_events(records, &mut found.stats);

    inflight(cfg, records, &mut found);
    lease(&calls, &mut found);
    attempts(cfg, &calls, &mut found);
    delay(cfg, &calls, &faults, &mut found);
    terminal(cfg, &calls, &mut found);
    exactly_one(cfg, &calls, &mut found);
    after_terminal(&calls, &mut found);
    callback(cfg, &calls, &mut found);
    budget(cfg, &calls, &mut found);
    saturated(cfg, &calls, &mut found);
    cancel(&calls, &mut found);
    flow(cfg, records, &calls, &mut found);
    found.report()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Ev, FaultKind, Kept, SettleKind};
    use std::time::Duration;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn rec(ms: u64, ev: Ev) -> Record {
        Record { at: at(ms), ev }
    }

    /// `sim/README.md` lists every invariant under "Invariants", one line each, by the name of
    /// the function that checks it (the rule with `_` for `-`), in the order of [`RULES`].
    #[test]
    fn the_readme_names_every_invariant() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Invariants")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("an Invariants section in sim/README.md");
        let listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("- `")?.split('`').next())
            .collect();
        let functions: Vec<String> = RULES.iter().map(|r| r.replace('-', "_")).collect();
        assert_eq!(listed, functions);
    }

    fn config() -> RunConfig {
        let mut cfg = (crate::scenarios::CRASH.build)(1, &Default::default());
        cfg.calls.clear();
        cfg.faults.clear();
        cfg
    }

    /// One worker holds two deliveries of a call at once (a broker restart broke the lease of
    /// the first): the second succeeds and is acked while the first is still running, and ends
    /// with 503 after it. The ack follows a successful invocation of the delivery it settles.
    #[test]
    fn invocations_are_attributed_to_their_own_delivery() {
        let (w, call) = ("worker-0#1".to_string(), "c1".to_string());
        let start = |ms, n| {
            rec(
                ms,
                Ev::InvokeStart {
                    worker: w.clone(),
                    call: call.clone(),
                    delivered: n,
                },
            )
        };
        let end = |ms, n, status| {
            rec(
                ms,
                Ev::InvokeEnd {
                    worker: w.clone(),
                    call: call.clone(),
                    delivered: n,
                    status,
                    retry_after: None,
                    error: status >= 500,
                    aborted: false,
                },
            )
        };
        let deliver = |ms, n| {
            [
                rec(
                    ms,
                    Ev::SDeliver {
                        call: call.clone(),
                        delivered: n,
                        seq: 1,
                        to: w.clone(),
                    },
                ),
                rec(
                    ms,
                    Ev::WDeliver {
                        worker: w.clone(),
                        call: call.clone(),
                        delivered: n,
                    },
                ),
            ]
        };
        let restart = |ms, start| {
            rec(
                ms,
                Ev::Fault {
                    kind: FaultKind::BrokerRestart,
                    target: "broker".into(),
                    start,
                },
            )
        };
        let mut records = vec![rec(0, Ev::Accepted { call: call.clone() })];
        records.extend(deliver(10, 1));
        records.push(start(20, 1));
        records.push(restart(1000, true));
        records.push(restart(2000, false));
        records.extend(deliver(5000, 2));
        records.push(start(5010, 2));
        records.push(end(5100, 2, 200));
        records.push(end(5200, 1, 503));
        records.push(rec(
            5300,
            Ev::SSettle {
                call: call.clone(),
                delivered: 2,
                kind: SettleKind::Ack,
                from: w.clone(),
                removed: true,
            },
        ));
        let report = check(&config(), &records);
        assert!(
            report.violations.is_empty(),
            "{:?}",
            report
                .violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(report.stats.succeeded, 1);
        // The same history with the ack on the failed delivery is flagged.
        let last = records.len() - 1;
        if let Ev::SSettle { delivered, .. } = &mut records[last].ev {
            *delivered = 1;
        }
        let report = check(&config(), &records);
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.rule == "terminal" && v.detail.contains("acked delivery 1")),
            "{:?}",
            report.violations
        );
    }

    /// A message too large for any dead letter: refused whole, truncated, then headers-only
    /// (`refused`), and terminated.
    fn dropped(refused: &[Kept], stored: Option<Kept>) -> Vec<Record> {
        let (w, call) = ("worker-0#1".to_string(), "h1".to_string());
        let mut records = vec![
            rec(0, Ev::Accepted { call: call.clone() }),
            rec(
                10,
                Ev::SDeliver {
                    call: call.clone(),
                    delivered: 1,
                    seq: 1,
                    to: w.clone(),
                },
            ),
        ];
        for kept in refused {
            let call = call.clone();
            records.push(rec(20, Ev::SDeadLetterTooLarge { call, kept: *kept }));
        }
        if let Some(kept) = stored {
            let (call, reason) = (call.clone(), "poison".into());
            let stored = true;
            records.push(rec(
                30,
                Ev::SDeadLetter {
                    call,
                    reason,
                    stored,
                    kept,
                },
            ));
        }
        let (delivered, kind, removed) = (1, SettleKind::Term, true);
        let from = w;
        records.push(rec(
            40,
            Ev::SSettle {
                call,
                delivered,
                kind,
                from,
                removed,
            },
        ));
        records
    }

    fn terminal_violations(records: &[Record]) -> Vec<String> {
        let report = check(&config(), records);
        let found = report.violations.iter().filter(|v| v.rule == TERMINAL);
        found.map(|v| v.detail.clone()).collect()
    }

    /// A message is terminated without a dead letter only once the broker refused even a
    /// headers-only one; a dead letter keeps less only after the broker refused more.
    #[test]
    fn dead_letters_keep_all_that_fits_and_drops_need_a_refusal() {
        let all = [Kept::Whole, Kept::Truncated, Kept::HeadersOnly];
        let report = check(&config(), &dropped(&all, None));
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.stats.dead_letters_dropped, 1);
        let early = terminal_violations(&dropped(&all[..2], None));
        assert!(
            early[0].contains("without storing a dead letter"),
            "{early:?}"
        );
        let cut = terminal_violations(&dropped(&[], Some(Kept::Truncated)));
        assert!(cut[0].contains("never refused it Whole"), "{cut:?}");
        let bare = terminal_violations(&dropped(&all[..2], Some(Kept::HeadersOnly)));
        assert!(bare.is_empty(), "{bare:?}");
    }
}
