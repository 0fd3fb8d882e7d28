//! **attempts**: a retry is only decided below `max_retry_attempts` and only for retryable
//! statuses; a call is invoked at most `max_retry_attempts` times plus one per broken lease and
//! per dead letter that could not be stored, and `max_retry_attempts` more each time its
//! delivery count started over (the server deleted its consumer: see [`restarts`]);
//! `exhausted` only after the last attempt.

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

/// Attempts in all: the policy's attempts for each run of delivery counts, plus one per lease a
/// fault broke and per dead letter that could not be stored (both run the function again).
fn invocations(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    let lost_leases = c.lost_leases();
    let park_retries = c.dead_letters_not_stored();
    let restarts = restarts(c);
    let allowed = cfg.max_attempts as usize * (1 + restarts) + lost_leases + park_retries;
    if c.starts.len() > allowed {
        let detail = format!(
            "invoked {} times; max_retry_attempts is {} ({lost_leases} broken leases, \
             {park_retries} dead letters not stored, {restarts} delivery counts started over); \
             delivery counts seen: {:?}",
            c.starts.len(),
            cfg.max_attempts,
            c.deliveries.iter().map(|d| d.n).collect::<Vec<_>>()
        );
        found.violation(ATTEMPTS, id, c.starts[allowed].at, detail);
    }
}

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
