//! **terminal**: every accepted call ends in a terminal state: removed from the work queue by
//! an ack that follows a successful invocation of that very delivery (or a cancel the client
//! asked for before it), or by a term that follows
//! its stored dead letter, whose reason matches what happened and which keeps as much of the
//! message as the broker takes; or by a term after the broker refused even a headers-only dead
//! letter of it (dropped, counted). A poison message is never invoked. Calls lost to a
//! memory-storage broker restart are counted, not failed.

use std::collections::BTreeMap;

use super::index::{Call, DeadLetter, Settle, WorkerEv};
use super::policy::retryable;
use super::report::{Findings, TERMINAL};
use crate::history::{Kept, SettleKind};
use crate::plan::RunConfig;

/// Checks every accepted call's end; counts accepted, succeeded, dead-lettered and lost calls.
pub(super) fn terminal(cfg: &RunConfig, calls: &super::index::Calls, found: &mut Findings) {
    for (id, c) in calls {
        let Some(accepted) = c.accepted else {
            continue;
        };
        found.stats.accepted += 1;
        found.stats.dead_letters_not_stored += c.dead_letters_not_stored();
        poison_not_invoked(cfg, id, c, found);
        let Some(end) = c.removal() else {
            if c.lost {
                found.stats.lost += 1;
            } else {
                let detail = format!(
                    "accepted at {:.3}s, never reached a terminal state ({} deliveries, {} \
                     invocations)",
                    accepted.as_secs_f64(),
                    c.deliveries.len(),
                    c.starts.len()
                );
                found.violation(TERMINAL, id, accepted, detail);
            }
            continue;
        };
        match end.kind {
            SettleKind::Ack => {
                if ack_follows_success(c, end) {
                    found.stats.succeeded += 1;
                } else if c.cancel_asked_by(end.at) {
                    found.stats.cancelled += 1;
                } else {
                    let detail = format!(
                        "{} acked delivery {} without a successful invocation of it finishing \
                         first",
                        end.from, end.n
                    );
                    found.violation(TERMINAL, id, end.at, detail);
                }
            }
            SettleKind::Term => dead_lettered(cfg, id, c, end, found),
            SettleKind::Nak(_) | SettleKind::Progress => {}
        }
    }
}

/// Whether an invocation of the acked delivery, by the worker that acked it, ended with a
/// success before the ack.
fn ack_follows_success(c: &Call, end: &Settle) -> bool {
    // Per delivery: (started, status of the invocation that ended).
    let mut runs: BTreeMap<u64, (bool, Option<u16>)> = BTreeMap::new();
    for e in &c.worker {
        if e.at > end.at {
            break;
        }
        if e.worker != end.from {
            continue;
        }
        match &e.ev {
            WorkerEv::Deliver(n) => {
                runs.insert(*n, (false, None));
            }
            WorkerEv::Start(n) => {
                if let Some(r) = runs.get_mut(n) {
                    *r = (true, None);
                }
            }
            WorkerEv::End {
                n,
                status,
                aborted: false,
                ..
            } => {
                if let Some(r) = runs.get_mut(n).filter(|r| r.0) {
                    r.1 = Some(*status);
                }
            }
            _ => {}
        }
    }
    runs.get(&end.n)
        .and_then(|r| r.1)
        .is_some_and(|status| status < 400)
}

/// A poison message (one that cannot be invoked) is never invoked.
fn poison_not_invoked(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    if !cfg.call(id).is_some_and(|p| p.poison) {
        return;
    }
    if let Some(s) = c.starts.first() {
        let detail = format!(
            "{} invoked delivery {} of a message that cannot be invoked (poison)",
            s.worker, s.n
        );
        found.violation(TERMINAL, id, s.at, detail);
    }
}

/// A term follows the call's stored dead letter, whose reason matches the last outcome (poison
/// never runs; a retryable last answer is `exhausted`, any other error `failed`) and which
/// keeps less of the message only when the broker refused more; or it follows the broker's
/// refusal of even a headers-only dead letter (the message is dropped).
fn dead_lettered(cfg: &RunConfig, id: &str, c: &Call, end: &Settle, found: &mut Findings) {
    let Some(dead) = c.dead_letter_by(end) else {
        if c.dead_letter_dropped_by(end) {
            found.stats.dead_letters_dropped += 1;
            return;
        }
        let detail = format!(
            "{} terminated delivery {} without storing a dead letter first",
            end.from, end.n
        );
        found.violation(TERMINAL, id, end.at, detail);
        return;
    };
    kept_all_that_fits(id, c, dead, found);
    let reason = &dead.reason;
    *found.stats.dead_lettered.entry(reason.clone()).or_default() += 1;
    let poison = cfg.call(id).is_some_and(|p| p.poison);
    let last = c.last_end.get(&(end.from.clone(), end.n)).map(|e| e.status);
    let want = match (poison, last) {
        (true, _) => Some("poison"),
        (false, Some(s)) if retryable(cfg, s) => Some("exhausted"),
        (false, Some(s)) if s >= 400 => Some("failed"),
        _ => None,
    };
    if let Some(want) = want
        && want != reason
        && !c.duplicates_explained()
    {
        let detail = format!("dead-lettered as {reason}, but its last outcome says {want}");
        found.violation(TERMINAL, id, end.at, detail);
    }
}

/// A dead letter keeps less of its message (truncated, headers-only) only after the broker
/// refused the larger form as too large; counts the reduced ones.
fn kept_all_that_fits(id: &str, c: &Call, dead: &DeadLetter, found: &mut Findings) {
    let larger = match dead.kept {
        Kept::Whole => return,
        Kept::Truncated => {
            found.stats.dead_letters_truncated += 1;
            Kept::Whole
        }
        Kept::HeadersOnly => {
            found.stats.dead_letters_headers_only += 1;
            Kept::Truncated
        }
    };
    let refused = c
        .too_large
        .iter()
        .any(|(at, k)| *at <= dead.at && *k == larger);
    if !refused {
        let detail = format!(
            "its dead letter keeps {:?} although the broker never refused it {larger:?}",
            dead.kept
        );
        found.violation(TERMINAL, id, dead.at, detail);
    }
}
