//! **flow**: a function's (and a flow key's) flow limits hold across every replica, whatever
//! the faults: never more than its `max_concurrency` invocations at once, and never more than `rate + burst`
//! invocations started in a window of one period (less the [`SLACK`] by which a start may
//! follow the moment the gate let it through); and, in a run without faults, a call held back
//! by its limits costs no attempt (every call of a limited function that answers 200 is
//! delivered once).

use std::collections::BTreeMap;
use std::time::Duration;

use queue_worker::flow::Limits;
use queue_worker::flow::gate::START_WITHIN;

use super::index::Calls;
use super::report::{FLOW, Findings};
use crate::history::{Ev, Record};
use crate::plan::{Behaviour, RunConfig};

/// How much later than the gate's decision an invocation may start: [`START_WITHIN`], and one
/// step of the simulation.
pub(super) const SLACK: Duration = START_WITHIN.saturating_add(Duration::from_millis(10));

/// A call's limited groups (its function, `key <key>`) with their limits.
type Groups<'a> = BTreeMap<&'a str, Vec<(String, &'a Limits)>>;
/// Per group: its limits and the invocations started, in order.
type Starts<'a> = BTreeMap<String, (&'a Limits, Vec<(Duration, &'a str)>)>;

pub(super) fn flow(cfg: &RunConfig, records: &[Record], calls: &Calls, found: &mut Findings) {
    if cfg.flow.is_empty() && cfg.flow_keys.is_empty() {
        return;
    }
    let groups = groups(cfg);
    let starts = concurrent(&groups, records, found);
    for (group, (limits, starts)) in &starts {
        paced(group, limits, starts, found);
    }
    if cfg.faults.is_empty() {
        no_attempt_spent(cfg, &groups, calls, found);
    }
}

/// Each call's limited groups: its function, its flow key.
fn groups(cfg: &RunConfig) -> Groups<'_> {
    let mut groups = Groups::new();
    for c in &cfg.calls {
        let mut of = Vec::new();
        if let Some(limits) = cfg.flow.get(&c.function) {
            of.push((c.function.clone(), limits));
        }
        if let Some((key, limits)) = cfg.flow_key(c) {
            of.push((format!("key {key}"), limits));
        }
        groups.insert(c.id.as_str(), of);
    }
    groups
}

/// No group ever has more than its `max_concurrency` invocations open; the starts per group.
fn concurrent<'a>(groups: &Groups<'a>, records: &'a [Record], found: &mut Findings) -> Starts<'a> {
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut starts = Starts::new();
    for r in records {
        match &r.ev {
            Ev::InvokeStart { call, .. } => {
                for (group, limits) in groups.get(call.as_str()).into_iter().flatten() {
                    let n = open.entry(group.clone()).or_default();
                    *n += 1;
                    if limits.max_concurrency.is_some_and(|cap| *n > cap as usize) {
                        let detail =
                            format!("{n} invocations of {group} at once, {}", limits.describe());
                        found.violation(FLOW, call, r.at, detail);
                    }
                    let entry = starts.entry(group.clone()).or_insert((*limits, Vec::new()));
                    entry.1.push((r.at, call.as_str()));
                }
            }
            Ev::InvokeEnd { call, .. } => {
                for (group, _) in groups.get(call.as_str()).into_iter().flatten() {
                    let n = open.entry(group.clone()).or_default();
                    *n = n.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
    starts
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

/// Without faults, a call of a limited function that answers 200 is delivered once: waiting
/// for its limits cost it no attempt and no lease. (That includes a delivery that reached no
/// worker: a function-mode consumer going idle just as a message came once left its last pull
/// request to a feeder that had stopped reading; see `sim/README.md`, "What the simulation
/// found".)
fn no_attempt_spent(cfg: &RunConfig, groups: &Groups<'_>, calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        let Some(plan) = cfg.call(id) else { continue };
        let limited = groups.get(id.as_str()).is_some_and(|g| !g.is_empty());
        if !limited || !matches!(plan.behaviour, Behaviour::Ok { .. }) {
            continue;
        }
        if c.deliveries.len() > 1 {
            let to: Vec<(u64, &str)> = c.deliveries.iter().map(|d| (d.n, d.to.as_str())).collect();
            let at = c.deliveries.last().map(|d| d.at).unwrap_or_default();
            let detail = format!("delivered {to:?} in a run without faults");
            found.violation(FLOW, id, at, detail);
        }
    }
}
