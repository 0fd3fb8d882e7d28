//! **cancel**: a call whose cancel was acknowledged (answered `cancelled`) is never invoked
//! after the answer, and its stored status ends `cancelled`; a cancel answered
//! `final:<state>` leaves that state as the call's last status: every call has exactly one
//! terminal state, whichever came first.

use super::index::Calls;
use super::report::{CANCEL, Findings};

/// Checks every call the client tried to cancel.
pub(super) fn cancel(calls: &Calls, found: &mut Findings) {
    for (id, c) in calls {
        if c.cancel_answers.is_empty() {
            continue;
        }
        if let Some(acked) = c.cancel_acknowledged() {
            if let Some(s) = c.starts.iter().find(|s| s.at > acked) {
                let detail = format!(
                    "{} invoked delivery {} at {:.3}s, after the cancel was acknowledged at \
                     {:.3}s",
                    s.worker,
                    s.n,
                    s.at.as_secs_f64(),
                    acked.as_secs_f64()
                );
                found.violation(CANCEL, id, s.at, detail);
            }
            final_status_is(c.final_status.as_deref(), "cancelled", id, acked, found);
        }
        for (at, outcome) in &c.cancel_answers {
            if let Some(state) = outcome.strip_prefix("final:") {
                final_status_is(c.final_status.as_deref(), state, id, *at, found);
            }
        }
    }
}

fn final_status_is(
    stored: Option<&str>,
    want: &str,
    id: &str,
    at: std::time::Duration,
    found: &mut Findings,
) {
    if stored != Some(want) {
        let detail = format!(
            "a cancel answered at {:.3}s says {want}, the stored status ends {}",
            at.as_secs_f64(),
            stored.unwrap_or("unread")
        );
        found.violation(CANCEL, id, at, detail);
    }
}
