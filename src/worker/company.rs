//! The calls a call runs alongside: whether another call of its function ran in this worker
//! when it started or when its answer came (a 429 then may be this worker's own doing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The other calls of its function a call ran alongside in this worker.
pub(crate) struct Company {
    running: Arc<AtomicUsize>,
    at_start: usize,
}

impl Company {
    /// A call joining `running` (the function's running calls, counted up here; whoever
    /// tracks them counts down when the call ends).
    pub(crate) fn joined(running: &Arc<AtomicUsize>) -> Company {
        Company {
            at_start: running.fetch_add(1, Ordering::Relaxed) + 1,
            running: running.clone(),
        }
    }

    /// Whether another call of the function ran in this worker when this one started or runs
    /// now (when its answer came).
    pub(crate) fn crowded(&self) -> bool {
        self.at_start > 1 || self.running.load(Ordering::Relaxed) > 1
    }
}
