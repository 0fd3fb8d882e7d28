//! The injected faults as time spans, and what they explain: which lost leases they excuse and
//! how many lease losses they can account for in all.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{Ev, FaultKind, Record, host_of};
use crate::plan::RunConfig;

/// A fault from its start to its end (`Duration::MAX`: it never ended).
#[derive(Debug, Clone)]
struct FaultSpan {
    kind: FaultKind,
    target: String,
    from: Duration,
    to: Duration,
}

/// The faults of a run.
#[derive(Debug, Clone, Default)]
pub(super) struct Faults {
    spans: Vec<FaultSpan>,
    /// How many faults started.
    pub started: usize,
}

impl Faults {
    /// The faults recorded in `records` (each start paired with the next end of the same kind
    /// and target).
    pub fn new(records: &[Record]) -> Faults {
        let mut faults = Faults::default();
        let mut open: BTreeMap<(FaultKind, String), Duration> = BTreeMap::new();
        for r in records {
            let Ev::Fault {
                kind,
                target,
                start,
            } = &r.ev
            else {
                continue;
            };
            if *start {
                faults.started += 1;
                open.insert((*kind, target.clone()), r.at);
            } else if let Some(from) = open.remove(&(*kind, target.clone())) {
                faults.spans.push(FaultSpan {
                    kind: *kind,
                    target: target.clone(),
                    from,
                    to: r.at,
                });
            }
        }
        for ((kind, target), from) in open {
            faults.spans.push(FaultSpan {
                kind,
                target,
                from,
                to: Duration::MAX,
            });
        }
        faults
    }

    /// Whether a fault explains a lost lease of `holder` between `a` and `b`. A partition is
    /// only noticed by the connection's read deadline, a crash drops in-flight acks: allow a
    /// little.
    pub fn excuse(&self, holder: &str, a: Duration, b: Duration) -> bool {
        let host = host_of(holder);
        self.spans.iter().any(|s| {
            let hits = match s.kind {
                FaultKind::Crash | FaultKind::Partition => s.target == host,
                FaultKind::BrokerRestart => true,
                FaultKind::ReceiverDown | FaultKind::DeadLetterOutage => false,
            };
            hits && s.from <= b && s.to.saturating_add(Duration::from_secs(5)) >= a
        })
    }

    /// Lease losses the faults can explain: each hit worker held at most its slots plus what it
    /// pulled ahead (and, in function mode, one ready delivery per function).
    pub fn lease_loss_bound(&self, cfg: &RunConfig) -> usize {
        let per_worker = cfg.max_inflight * 2 + cfg.calls.len().min(64);
        self.spans
            .iter()
            .map(|s| match s.kind {
                FaultKind::Crash | FaultKind::Partition => per_worker,
                FaultKind::BrokerRestart => per_worker * cfg.workers,
                FaultKind::ReceiverDown | FaultKind::DeadLetterOutage => 0,
            })
            .sum()
    }
}
