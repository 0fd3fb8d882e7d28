//! **callback**: at most `callback_retries + 1` posts per invocation, none after the receiver
//! accepted one; with a healthy receiver every finished call with a callback URL got its
//! result, unless it ended past a last attempt that was never carried out (its worker crashed
//! before or right after the function answered, or the delivery never reached one): a delivery
//! past the last attempt is not invoked and posts nothing, as that attempt's outcome is not
//! known. (A worker that answered but never settled its delivery without a fault to explain
//! it is caught by the lease checks.)

use std::collections::BTreeMap;

use super::index::{Call, Calls, Settle};
use super::report::{CALLBACK, Findings};
use crate::history::SettleKind;
use crate::plan::{Fault, RunConfig};

/// The receiver's answers to the posts of each invocation, by (sender, `X-Retry`).
pub(super) fn posts_per_invocation(c: &Call) -> BTreeMap<(String, String), Vec<u16>> {
    let mut posts: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
    for cb in &c.callbacks {
        posts
            .entry((cb.from.clone(), cb.retry.clone()))
            .or_default()
            .push(cb.answered);
    }
    posts
}

/// Checks the callbacks of every finished call that asked for one; counts posts, refusals and
/// calls ended past an unfinished last attempt.
pub(super) fn callback(cfg: &RunConfig, calls: &Calls, found: &mut Findings) {
    let receiver_faults = cfg
        .faults
        .iter()
        .any(|f| matches!(f, Fault::ReceiverDown { .. } | Fault::ReceiverErrors { .. }));
    for (id, c) in calls {
        found.stats.callbacks += c.callbacks.len();
        found.stats.callbacks_refused += c.callbacks.iter().filter(|cb| cb.answered >= 300).count();
        let Some(end) = c.finished() else {
            continue;
        };
        let unfinished_last = past_an_unfinished_last_attempt(cfg, c, end);
        found.stats.unfinished_last_attempts += usize::from(unfinished_last);
        if !cfg.call(id).is_some_and(|p| p.callback && !p.poison) {
            continue;
        }
        for ((from, retry), posts) in &posts_per_invocation(c) {
            if posts.len() > cfg.callback_retries as usize + 1 {
                let detail = format!(
                    "{} posts from {from} (X-Retry {retry}), callback_retries is {}",
                    posts.len(),
                    cfg.callback_retries
                );
                found.violation(CALLBACK, id, end.at, detail);
            }
            if let Some(i) = posts.iter().position(|s| *s < 300)
                && i + 1 < posts.len()
            {
                let detail = format!("{from} posted again after the receiver accepted the result");
                found.violation(CALLBACK, id, end.at, detail);
            }
        }
        let delivered = c.callbacks.iter().any(|cb| cb.answered < 300);
        if !delivered && !receiver_faults && !unfinished_last {
            let detail = "finished but its callback never reached the receiver".to_string();
            found.violation(CALLBACK, id, end.at, detail);
        }
    }
}

/// Whether the call ended past its last attempt while no invocation of that attempt was carried
/// out: none finished and was then settled by its worker (it crashed between the function's
/// answer and the callback, or earlier, or the delivery never reached a worker). No callback
/// is posted then.
fn past_an_unfinished_last_attempt(cfg: &RunConfig, c: &Call, end: &Settle) -> bool {
    let last = u64::from(cfg.max_attempts);
    end.n > last
        && !c
            .last_end
            .keys()
            .any(|(worker, n)| *n == last && carried_out(c, worker, last))
}

/// Whether `worker` settled delivery `n` (an ack, nak or term: its plan carried out).
fn carried_out(c: &Call, worker: &str, n: u64) -> bool {
    c.settles
        .iter()
        .any(|s| s.n == n && s.from == worker && !matches!(s.kind, SettleKind::Progress))
}
