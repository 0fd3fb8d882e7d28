//! **attempts**: a retry is only decided below `max_retry_attempts` and only for retryable
//! statuses; no delivery past the last attempt is invoked, whatever brought it back (a broken
//! lease, a dead letter that could not be stored), so a call is invoked at most
//! `max_retry_attempts` times, and `max_retry_attempts` more each time its delivery count
//! started over (the server deleted its consumer: see [`restarts`]); `exhausted` only after
//! the last attempt.

use super::index::{Call, Calls};
use super::policy::retryable;
use super::report::{ATTEMPTS, Findings};
use crate::history::SettleKind;
use crate::plan::RunConfig;

/// Checks every call's retries, invocations and `exhausted` dead letter; counts retries.
pub(super) fn attempts(cfg: &RunConfig, calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        found.stats.retries += c.retries.len();
        retries(cfg, id, c, found);
        past_last_attempt(cfg, id, c, found);
        invocations(cfg, id, c, found);
        exhausted(cfg, id, c, found);
    }
}

/// Each retry follows an attempt below the maximum that answered a retryable status.
fn retries(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    for r in &c.retries {
        let (worker, n, status) = (&r.worker, r.n, r.after.status);
        if u64::from(cfg.max_attempts) <= n {
            let detail = format!(
                "{worker} retried after attempt {n} (status {status}); max_retry_attempts is {}",
                cfg.max_attempts
            );
            found.violation(ATTEMPTS, id, r.at, detail);
        }
        if !retryable(cfg, status) {
            let detail = format!("{worker} retried status {status}, which is not retryable");
            found.violation(ATTEMPTS, id, r.at, detail);
        }
    }
}

/// No delivery past the last attempt is invoked; counts those deliveries.
fn past_last_attempt(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    let last = u64::from(cfg.max_attempts);
    found.stats.deliveries_past_last_attempt += c.deliveries.iter().filter(|d| d.n > last).count();
    for s in c.starts.iter().filter(|s| s.n > last) {
        let detail = format!(
            "{} invoked delivery {}, past the last attempt (max_retry_attempts is {last})",
            s.worker, s.n
        );
        found.violation(ATTEMPTS, id, s.at, detail);
    }
}

/// Attempts in all: the policy's attempts for each run of delivery counts. Faults add none:
/// what they bring back past the last attempt is not invoked. A delivery run again by the
/// worker that holds it (back-pressure it caused) spent no attempt: that only ever follows a
/// 429, at most `MAX_PUSH_BACKS` times per delivery.
fn invocations(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    let restarts = restarts(c);
    let allowed = cfg.max_attempts as usize * (1 + restarts);
    let attempts: Vec<_> = c
        .starts
        .iter()
        .filter(|s| s.again_after.is_none())
        .collect();
    if attempts.len() > allowed {
        let detail = format!(
            "invoked {} times; max_retry_attempts is {} ({restarts} delivery counts started \
             over); delivery counts seen: {:?}",
            attempts.len(),
            cfg.max_attempts,
            c.deliveries.iter().map(|d| d.n).collect::<Vec<_>>()
        );
        found.violation(ATTEMPTS, id, attempts[allowed].at, detail);
    }
    let mut runs_again: std::collections::BTreeMap<(&str, u64), u32> = Default::default();
    for s in &c.starts {
        let Some(status) = s.again_after else {
            continue;
        };
        let count = runs_again.entry((s.worker.as_str(), s.n)).or_default();
        *count += 1;
        if status != 429 || *count > MAX_PUSH_BACKS {
            let detail = format!(
                "{} ran delivery {} again (run {count} after a {status}) without a new attempt; \
                 only a 429, at most {MAX_PUSH_BACKS} times, allows that",
                s.worker, s.n
            );
            found.violation(ATTEMPTS, id, s.at, detail);
        }
    }
}

/// Times a worker may run one delivery again after a 429 it caused (the worker's own
/// `plan::MAX_PUSH_BACKS`, stated here independently).
const MAX_PUSH_BACKS: u32 = 10;

/// How often the call's delivery count started over. Attempts are counted by JetStream's
/// delivery count, which belongs to the consumer: when the server deletes a function's consumer
/// (no worker pulled from it for its inactive threshold: on nats-server 2.12 and later
/// `consumer_inactive_threshold` after its last ack deadline, so every worker away for longer
/// than `ack_wait` plus the threshold; consumer-expiry 3219 under the 2.15 model), the
/// recreated one counts from 1 and the call gets its attempts again. That is the configured
/// behaviour (README: "How it works", function mode), not a worker's fault.
fn restarts(c: &Call) -> usize {
    c.deliveries
        .windows(2)
        .filter(|w| w[1].n <= w[0].n && w[1].n == 1)
        .count()
}

/// A call dead-lettered as `exhausted` had its last attempt (unless faults explain duplicates).
fn exhausted(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    let Some(end) = c.finished() else {
        return;
    };
    if end.kind != SettleKind::Term || c.duplicates_explained() {
        return;
    }
    let Some(dead) = c.dead_letter_by(end) else {
        return;
    };
    if dead.reason == "exhausted" && (end.n as usize) < cfg.max_attempts as usize {
        let detail = format!(
            "dead-lettered as exhausted after attempt {} of {}",
            end.n, cfg.max_attempts
        );
        found.violation(ATTEMPTS, id, end.at, detail);
    }
}
