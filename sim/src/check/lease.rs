//! **lease**: a message is redelivered while its holder still has it only when a fault
//! (a crash or a partition of that holder, a broker restart) explains it; progress acks keep
//! slow functions' leases.

use super::index::{Calls, Cause};
use super::report::{Findings, LEASE};

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
