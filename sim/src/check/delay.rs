//! **delay**: each retry delay is what the policy allows for that attempt and answer
//! (exponential / full / equal spread, `Retry-After` clamped to the bounds and spread, or a
//! deferral between half the maximum wait and all of it when the budget is spent), and the broker never redelivers before it: no tight loops.

use std::time::Duration;

use super::faults::Faults;
use super::index::{Call, Calls};
use super::policy::delay_allowed;
use super::report::{DELAY, Findings};
use crate::history::SettleKind;
use crate::plan::RunConfig;

/// Checks every call's retry delays, then that the broker honoured them.
pub(super) fn delay(cfg: &RunConfig, calls: &Calls, faults: &Faults, found: &mut Findings) {
    for (id, c) in calls {
        within_policy(cfg, id, c, found);
        honoured(id, c, faults, found);
    }
}

fn within_policy(cfg: &RunConfig, id: &str, c: &Call, found: &mut Findings) {
    for r in &c.retries {
        let (n, status, ra, d) = (r.n, r.after.status, &r.after.retry_after, r.delay);
        if !delay_allowed(cfg, n, status, ra.as_deref(), d) {
            let detail = format!(
                "retry delay {d:?} after attempt {n} (status {status}, Retry-After {ra:?}) is \
                 outside the policy ({:?} backoff, {:?}..{:?})",
                cfg.backoff, cfg.initial_retry_wait, cfg.max_retry_wait
            );
            found.violation(DELAY, id, r.at, detail);
        }
    }
}

/// The next delivery after a nak with a delay comes no earlier than the delay asked for,
/// unless a fault hit the worker that nak'd.
fn honoured(id: &str, c: &Call, faults: &Faults, found: &mut Findings) {
    for s in &c.settles {
        let SettleKind::Nak(Some(d)) = s.kind else {
            continue;
        };
        let Some(next) = c.deliveries.iter().find(|x| x.at > s.at && x.n > s.n) else {
            continue;
        };
        if next.at + Duration::from_millis(1) < s.at + d && !faults.excuse(&s.from, s.at, next.at) {
            let detail = format!(
                "delivery {} came {:?} after the nak of delivery {} by {}, which asked for {d:?}",
                next.n,
                next.at - s.at,
                s.n,
                s.from
            );
            found.violation(DELAY, id, next.at, detail);
        }
    }
}
