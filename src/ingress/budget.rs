//! What request bodies may take of the ingress's memory: at most `ingress_max_buffered_bytes`
//! are held at once, from the moment a body starts to arrive until its message is stored. A
//! request that would go past it is answered `503` at once, before its body is read, so a
//! thousand stalled uploads cannot grow the process (they once took 1.3 GB, kept after they
//! ended).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counted in KiB, so a budget of terabytes fits the semaphore and a hold fits `u32`.
const UNIT: usize = 1024;

/// The bytes of request bodies the ingress may hold at once.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
}

/// A body's share of the budget, given back when dropped.
pub type Hold = OwnedSemaphorePermit;

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            units: Arc::new(Semaphore::new(units(bytes).max(1) as usize)),
        }
    }

    /// Room for a body of `bytes`, or `None` when the budget is spent now.
    pub fn hold(&self, bytes: usize) -> Option<Hold> {
        self.units.clone().try_acquire_many_owned(units(bytes)).ok()
    }
}

/// `bytes` in units, rounded up (a body of 0 bytes takes none).
fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_refused_past_the_budget_and_given_back_when_dropped() {
        let budget = BodyBudget::new(3 * UNIT);
        let a = budget.hold(2 * UNIT).expect("room for 2 KiB");
        assert!(budget.hold(2 * UNIT).is_none(), "3 KiB budget, 2 held");
        let b = budget.hold(1).expect("1 byte takes one unit");
        assert!(budget.hold(1).is_none(), "all 3 units held");
        drop(a);
        assert!(budget.hold(2 * UNIT).is_some(), "given back");
        drop(b);
        assert!(budget.hold(0).is_some(), "an empty body needs no room");
    }
}
