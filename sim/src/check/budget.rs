//! **budget**: retries granted, per worker and function, stay within
//! `max(10, retry_budget_ratio × first attempts)` per window; counts the retries the spent
//! budget deferred.
//!
//! A deferral is spread over `[max_retry_wait/2, max_retry_wait]`, which the policy's own late
//! delays share: a retry whose delay lies there may be either, so only retries below half the
//! maximum wait count as grants (sound, never a false finding; it checks the early retries of
//! a storm, where the budget matters), and only those longer than the policy's delay count as
//! deferrals.

use std::collections::BTreeMap;
use std::time::Duration;

use super::index::Calls;
use super::policy::pow_delay;
use super::report::{BUDGET, Findings};
use crate::plan::RunConfig;

/// Rounding slack when comparing delays.
const SLACK: Duration = Duration::from_micros(1);

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
        for s in c
            .starts
            .iter()
            .filter(|s| s.n == 1 && s.again_after.is_none())
        {
            let key = (s.worker.clone(), function.clone());
            ledger.first_attempts.entry(key).or_default().push(s.at);
        }
        for r in &c.retries {
            let deferral_window = r.delay * 2 + SLACK >= cfg.max_retry_wait;
            if deferral_window && r.delay > pow_delay(cfg, r.n) + SLACK {
                found.stats.budget_denied += 1;
            }
            if !deferral_window {
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
