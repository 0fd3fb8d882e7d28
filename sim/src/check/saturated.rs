//! **saturated**: a busy but healthy function ([`Behaviour::Busy`]: it answers 429 only while
//! it runs as many calls as it admits) never costs a call its success: every call of it is
//! called back once, with 200, and none is dead-lettered; with a single replica every 429 it
//! answers is the worker's own doing, so no attempt budget is spent at all (no retry, no
//! redelivery); with several, each replica's limit learns apart from the others', and a call
//! may spend attempts on the others' load (a cluster-wide cap is the flow-control issue's), but
//! it still succeeds.

use super::index::Calls;
use super::report::{Findings, SATURATED};
use crate::plan::{Behaviour, RunConfig};

pub(super) fn saturated(cfg: &RunConfig, calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        let busy = cfg
            .call(id)
            .is_some_and(|p| matches!(p.behaviour, Behaviour::Busy { .. }));
        if !busy {
            continue;
        }
        let at = c.deliveries.last().map(|d| d.at).unwrap_or_default();
        let statuses: Vec<&str> = c.callbacks.iter().map(|cb| cb.status.as_str()).collect();
        if statuses != ["200"] {
            let detail = format!("callbacks with statuses {statuses:?}, not one 200");
            found.violation(SATURATED, id, at, detail);
        }
        if !c.dead_letters.is_empty() {
            found.violation(SATURATED, id, at, "dead-lettered".into());
        }
        let spent = c.deliveries.iter().map(|d| d.n).max().unwrap_or(0);
        if cfg.workers == 1 && spent > 1 {
            let detail = format!("{spent} attempts spent on a healthy function by one replica");
            found.violation(SATURATED, id, at, detail);
        }
    }
}
