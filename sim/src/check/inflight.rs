//! **inflight**: never more than `max_inflight` invocations at once per worker.

use std::collections::BTreeMap;

use super::report::{Findings, INFLIGHT};
use crate::history::{Ev, Record};
use crate::plan::RunConfig;

/// Follows the invocations open per worker through the history; also counts invocations and
/// the most seen in flight at once.
pub(super) fn inflight(cfg: &RunConfig, records: &[Record], found: &mut Findings) {
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records {
        match &r.ev {
            Ev::InvokeStart { worker, call, .. } => {
                found.stats.invocations += 1;
                let n = open.entry(worker).or_default();
                *n += 1;
                found.stats.max_inflight_seen = found.stats.max_inflight_seen.max(*n);
                if *n > cfg.max_inflight {
                    let detail = format!(
                        "{worker} has {n} invocations in flight, max_inflight is {}",
                        cfg.max_inflight
                    );
                    found.violation(INFLIGHT, call, r.at, detail);
                }
            }
            Ev::InvokeEnd { worker, .. } => {
                if let Some(n) = open.get_mut(worker.as_str()) {
                    *n = n.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
}
