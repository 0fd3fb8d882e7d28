//! **budget**: retries granted below the maximum wait, per worker and function, stay within
//! `max(10, retry_budget_ratio × first attempts)` per window; counts the retries the spent
//! budget sent to the maximum wait.

use std::collections::BTreeMap;
use std::time::Duration;

use super::index::Calls;
use super::policy::pow_delay;
use super::report::{BUDGET, Findings};
use crate::plan::RunConfig;

/// Per (worker, function): the times of first attempts, and of the retries granted (the end of
/// the invocation they follow) with their call.
#[derive(Default)]
struct Ledger {
    first_attempts: BTreeMap<(String, String), Vec<Duration>>,
    grants: BTreeMap<(String, String), Vec<(Duration, String)>>,
}

fn ledger(cfg: &RunConfig, calls: &Calls, found: &mut Findings) -> Ledger {
    let mut ledger = Ledger::default();
    for (id, c) in calls {
        let function = cfg.call(id).map(|p| p.function.clone()).unwrap_or_default();
        for s in c.starts.iter().filter(|s| s.n == 1) {
            let key = (s.worker.clone(), function.clone());
            ledger.first_attempts.entry(key).or_default().push(s.at);
        }
        for r in &c.retries {
            if r.delay == cfg.max_retry_wait && pow_delay(cfg, r.n) < cfg.max_retry_wait {
                found.stats.budget_denied += 1;
            }
            if r.delay != cfg.max_retry_wait {
                let key = (r.worker.clone(), function.clone());
                ledger
                    .grants
                    .entry(key)
                    .or_default()
                    .push((r.after.at, id.clone()));
            }
        }
    }
    for gs in ledger.grants.values_mut() {
        gs.sort();
    }
    ledger
}

/// Checks the grants of each worker and function against the budget (the first grant over it
/// is reported).
pub(super) fn budget(cfg: &RunConfig, calls: &Calls, found: &mut Findings) {
    let ratio = cfg.retry_budget_ratio;
    let ledger = ledger(cfg, calls, found);
    for (key, gs) in &ledger.grants {
        let fas = ledger.first_attempts.get(key).cloned().unwrap_or_default();
        for (i, (t, call)) in gs.iter().enumerate() {
            let window_start = t.saturating_sub(Duration::from_secs(53));
            let in_window = || gs[..=i].iter().filter(|(g, _)| *g > window_start);
            let granted = in_window().count() as u64;
            let firsts = fas
                .iter()
                .filter(|f| **f <= *t && **f + Duration::from_secs(61) >= *t)
                .count() as f64;
            let allowed = 10u64.max((ratio * firsts).floor() as u64);
            if granted > allowed {
                let detail = format!(
                    "{} granted {granted} retries of {} within 53s; the budget allows \
                     {allowed} ({firsts} first attempts, ratio {ratio}); retries at {:?}",
                    key.0,
                    key.1,
                    in_window()
                        .map(|(g, c)| format!("{c}@{:.3}", g.as_secs_f64()))
                        .collect::<Vec<_>>()
                );
                found.violation(BUDGET, call, *t, detail);
                break;
            }
        }
    }
}
