//! What the checker reports: the rules by name, the violations found and the summary's counts.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The rules, as [`Violation::rule`] names them; each is checked by the function of that name.
pub const TERMINAL: &str = "terminal";
pub const EXACTLY_ONE: &str = "exactly-one";
pub const LEASE: &str = "lease";
pub const AFTER_TERMINAL: &str = "after-terminal";
pub const ATTEMPTS: &str = "attempts";
pub const DELAY: &str = "delay";
pub const INFLIGHT: &str = "inflight";
pub const BUDGET: &str = "budget";
pub const CALLBACK: &str = "callback";
pub const SATURATED: &str = "saturated";
pub const CANCEL: &str = "cancel";
pub const FLOW: &str = "flow";

/// Every rule, in the order `sim/README.md` lists them.
pub const RULES: &[&str] = &[
    TERMINAL,
    EXACTLY_ONE,
    LEASE,
    AFTER_TERMINAL,
    ATTEMPTS,
    DELAY,
    INFLIGHT,
    BUDGET,
    CALLBACK,
    SATURATED,
    CANCEL,
    FLOW,
];

/// A broken invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: &'static str,
    pub call: String,
    pub at: Duration,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] t={:.3}s call={} {}",
            self.rule,
            self.at.as_secs_f64(),
            self.call,
            self.detail
        )
    }
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub accepted: usize,
    pub succeeded: usize,
    /// Calls acked after a cancel was asked, without a successful invocation.
    pub cancelled: usize,
    pub dead_lettered: BTreeMap<String, usize>,
    /// Dead letters stored without the end of the payload / without the payload and the
    /// message's headers (too large whole), and messages terminated without one (too large
    /// even so).
    pub dead_letters_truncated: usize,
    pub dead_letters_headers_only: usize,
    pub dead_letters_dropped: usize,
    /// Dead letters the broker could not store (an outage): the message comes back.
    pub dead_letters_not_stored: usize,
    pub lost: usize,
    pub invocations: usize,
    pub retries: usize,
    /// Deliveries past the last attempt (none may be invoked).
    pub deliveries_past_last_attempt: usize,
    pub budget_denied: usize,
    /// Redeliveries while the holder still had the message, each explained by a fault.
    pub lease_losses: usize,
    /// Bound on lease losses from the faults that happened.
    pub lease_loss_bound: usize,
    pub duplicate_invocations: usize,
    pub max_inflight_seen: usize,
    pub faults: usize,
    pub crashes_mid_invocation: usize,
    pub callbacks: usize,
    pub callbacks_refused: usize,
    /// Calls ended by a delivery past a last attempt that never finished (not invoked; no
    /// callback).
    pub unfinished_last_attempts: usize,
    pub consumer_deletes: usize,
    pub reconnects: usize,
}

/// The verdict on a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

/// What the invariants find, as they go: violations and the summary's counts.
#[derive(Default)]
pub(super) struct Findings {
    pub(super) violations: Vec<Violation>,
    pub(super) stats: Stats,
}

impl Findings {
    pub(super) fn violation(
        &mut self,
        rule: &'static str,
        call: &str,
        at: Duration,
        detail: String,
    ) {
        self.violations.push(Violation {
            rule,
            call: call.to_string(),
            at,
            detail,
        });
    }

    /// The report: violations in time order, by rule at the same time (each rule's own
    /// violations stay in the order it found them).
    pub(super) fn report(mut self) -> Report {
        self.violations
            .sort_by(|a, b| a.at.cmp(&b.at).then(a.rule.cmp(b.rule)));
        Report {
            violations: self.violations,
            stats: self.stats,
        }
    }
}
