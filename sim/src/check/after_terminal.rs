//! **after-terminal**: no invocation of a call after its terminal state, except duplicates a
//! broken lease explains (counted).

use super::index::Calls;
use super::report::{AFTER_TERMINAL, Findings};

/// Checks every invocation started after its call finished; counts the fault-explained ones.
pub(super) fn after_terminal(calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        let Some(end) = c.finished() else {
            continue;
        };
        for s in c.starts.iter().filter(|s| s.at > end.at) {
            if c.broken.contains(&(s.worker.clone(), s.n)) {
                found.stats.duplicate_invocations += 1;
            } else {
                let detail = format!(
                    "{} invoked delivery {} at {:.3}s, after the call ended at {:.3}s",
                    s.worker,
                    s.n,
                    s.at.as_secs_f64(),
                    end.at.as_secs_f64()
                );
                found.violation(AFTER_TERMINAL, id, s.at, detail);
            }
        }
    }
}
