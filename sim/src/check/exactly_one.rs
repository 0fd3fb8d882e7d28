//! **exactly-one**: no call both succeeds and is dead-lettered, has two dead letters, or gets
//! callbacks from two invocations, unless a fault broke its lease (or a dead letter could not
//! be stored); lease losses are bounded by what the faults can explain.

use std::time::Duration;

use super::callback::posts_per_invocation;
use super::index::Calls;
use super::report::{EXACTLY_ONE, Findings};
use crate::history::SettleKind;
use crate::plan::RunConfig;

/// Checks every finished call for a second outcome, then the lease losses in all (run after
/// [`super::lease()`], which counts them).
pub(super) fn exactly_one(cfg: &RunConfig, calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        let Some(end) = c.finished() else {
            continue;
        };
        if c.duplicates_explained() {
            continue;
        }
        let stored_dead = c.stored_dead_letters();
        if end.kind == SettleKind::Ack && !stored_dead.is_empty() {
            let detail = "succeeded and was also dead-lettered".to_string();
            found.violation(EXACTLY_ONE, id, end.at, detail);
        }
        if stored_dead.len() > 1 {
            let detail = format!("{} dead letters stored", stored_dead.len());
            found.violation(EXACTLY_ONE, id, end.at, detail);
        }
        if cfg.call(id).is_some_and(|p| p.callback && !p.poison) {
            let invocations = posts_per_invocation(c).len();
            if invocations > 1 {
                let detail = format!("callbacks from {invocations} different invocations");
                found.violation(EXACTLY_ONE, id, end.at, detail);
            }
        }
    }
    let st = &found.stats;
    if st.lease_losses > st.lease_loss_bound {
        let detail = format!(
            "{} lease losses, more than the {} the faults can explain",
            st.lease_losses, st.lease_loss_bound
        );
        found.violation(EXACTLY_ONE, "*", Duration::ZERO, detail);
    }
}
