//! **lease**: a message is redelivered while its holder still has it only when a fault
//! (a crash or a partition of that holder, a broker restart) explains it; progress acks keep
//! slow functions' leases.

use std::collections::BTreeSet;

use super::faults::Faults;
use super::index::{Call, Calls, Delivery, WorkerEv};
use super::{Findings, LEASE};
use crate::history::SettleKind;

/// What explains a redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The holder nak'd the delivery first.
    GivenBack,
    /// The holder never received it (a pull request it had abandoned, or lost on the way): it
    /// comes back after `ack_wait`, at-least-once, not a broken lease.
    NeverReceived,
    /// A fault hit the holder: its lease was broken (a counted, bounded duplicate).
    Fault,
    /// Nothing: the lease expired while its holder was alive.
    Expired,
}

/// A delivery, the next delivery of the same call, and why there was a next one.
#[derive(Debug, Clone)]
pub(super) struct Redelivery {
    pub first: Delivery,
    pub next: Delivery,
    pub cause: Cause,
}

/// Each delivery of `c` followed by the next, with its cause.
pub(super) fn redeliveries(c: &Call, faults: &Faults) -> Vec<Redelivery> {
    c.deliveries
        .windows(2)
        .map(|w| {
            let (first, next) = (&w[0], &w[1]);
            let within = |t| t >= first.at && t <= next.at;
            let given_back = c.settles.iter().any(|s| {
                within(s.at)
                    && s.n == first.n
                    && s.from == first.to
                    && matches!(s.kind, SettleKind::Nak(_))
            });
            let received = c.worker.iter().any(|e| {
                within(e.at)
                    && e.worker == first.to
                    && matches!(e.ev, WorkerEv::Deliver(n) if n == first.n)
            });
            let cause = if given_back {
                Cause::GivenBack
            } else if !received {
                Cause::NeverReceived
            } else if faults.excuse(&first.to, first.at, next.at) {
                Cause::Fault
            } else {
                Cause::Expired
            };
            Redelivery {
                first: first.clone(),
                next: next.clone(),
                cause,
            }
        })
        .collect()
}

/// The (worker, delivery) pairs on both sides of each lease a fault broke.
pub(super) fn broken(redeliveries: &[Redelivery]) -> BTreeSet<(String, u64)> {
    let mut broken = BTreeSet::new();
    for r in redeliveries.iter().filter(|r| r.cause == Cause::Fault) {
        broken.insert((r.first.to.clone(), r.first.n));
        broken.insert((r.next.to.clone(), r.next.n));
    }
    broken
}

/// Counts the leases faults broke; a lease that expired while its holder was alive is a
/// violation.
pub(super) fn lease(calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        for r in &c.redeliveries {
            match r.cause {
                Cause::Fault => found.stats.lease_losses += 1,
                Cause::Expired => found.violation(
                    LEASE,
                    id,
                    r.next.at,
                    format!(
                        "delivery {} to {} at {:.3}s was redelivered to {} without being given \
                         back and with no fault hitting {}: its lease expired while it was \
                         alive (progress acks?)",
                        r.first.n,
                        r.first.to,
                        r.first.at.as_secs_f64(),
                        r.next.to,
                        r.first.to
                    ),
                ),
                Cause::GivenBack | Cause::NeverReceived => {}
            }
        }
    }
}
