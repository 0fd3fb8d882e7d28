//! **flow**: a function's flow limits hold across every replica, whatever the faults: never
//! more than its `max_concurrency` invocations at once, and never more than `rate + burst`
//! invocations started in a window of one period (less the [`SLACK`] by which a start may
//! follow the moment the gate let it through); and, in a run without faults, a call held back
//! by its limits costs no attempt (every call of a limited function that answers 200 is
//! delivered once).

use std::collections::BTreeMap;
use std::time::Duration;

use queue_worker::flow::Limits;
use queue_worker::flow::gate::START_WITHIN;

use super::index::{Calls, WorkerEv};
use super::report::{FLOW, Findings};
use crate::history::{Ev, Record};
use crate::plan::{Behaviour, RunConfig};

/// How much later than the gate's decision an invocation may start: [`START_WITHIN`], and one
/// step of the simulation.
pub(super) const SLACK: Duration = START_WITHIN.saturating_add(Duration::from_millis(10));

pub(super) fn flow(cfg: &RunConfig, records: &[Record], calls: &Calls, found: &mut Findings) {
    if cfg.flow.is_empty() {
        return;
    }
    let function: BTreeMap<&str, &str> = cfg
        .calls
        .iter()
        .map(|c| (c.id.as_str(), c.function.as_str()))
        .collect();
    let limited = |call: &str| {
        let f = *function.get(call)?;
        Some((f, cfg.flow.get(f)?))
    };
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    let mut starts: BTreeMap<&str, Vec<(Duration, &str)>> = BTreeMap::new();
    for r in records {
        match &r.ev {
            Ev::InvokeStart { call, .. } => {
                let Some((f, limits)) = limited(call) else {
                    continue;
                };
                let n = open.entry(f).or_default();
                *n += 1;
                if limits.max_concurrency.is_some_and(|cap| *n > cap as usize) {
                    let detail = format!("{n} invocations of {f} at once, {}", limits.describe());
                    found.violation(FLOW, call, r.at, detail);
                }
                starts.entry(f).or_default().push((r.at, call.as_str()));
            }
            Ev::InvokeEnd { call, .. } => {
                if let Some((f, _)) = limited(call) {
                    let n = open.entry(f).or_default();
                    *n = n.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
    for (f, starts) in &starts {
        paced(f, &cfg.flow[*f], starts, found);
    }
    if cfg.faults.is_empty() {
        no_attempt_spent(cfg, calls, found);
    }
}

/// No window of the rate's period (less [`SLACK`]) holds more than `rate + burst` starts.
fn paced(f: &str, limits: &Limits, starts: &[(Duration, &str)], found: &mut Findings) {
    let Some(rate) = limits.rate else { return };
    let window = rate.period.saturating_sub(SLACK);
    let most = (rate.calls + limits.burst) as usize;
    for (i, (at, call)) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|(t, _)| *t < *at + window)
            .count();
        if within > most {
            let detail = format!(
                "{within} invocations of {f} started within {window:?} from here, {}",
                limits.describe()
            );
            found.violation(FLOW, call, *at, detail);
            return;
        }
    }
}

/// Without faults, a call of a limited function that answers 200 reaches a worker once: waiting
/// for its limits cost it no attempt and no lease. (A delivery that reached no worker is left
/// out: a function-mode consumer going idle just as a message came, whose last pull request
/// brought it to a feeder that had stopped reading; see `sim/README.md`, "What the simulation
/// found".)
fn no_attempt_spent(cfg: &RunConfig, calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        let Some(plan) = cfg.call(id) else { continue };
        if !cfg.flow.contains_key(&plan.function) || !matches!(plan.behaviour, Behaviour::Ok { .. })
        {
            continue;
        }
        let received: Vec<u64> = c
            .worker
            .iter()
            .filter_map(|e| match e.ev {
                WorkerEv::Deliver(n) => Some(n),
                _ => None,
            })
            .collect();
        if received.len() > 1 {
            let at = c.deliveries.last().map(|d| d.at).unwrap_or_default();
            let detail = format!("deliveries {received:?} reached workers in a run without faults");
            found.violation(FLOW, id, at, detail);
        }
    }
}
