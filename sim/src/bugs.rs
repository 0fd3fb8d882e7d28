//! The deliberate bugs a `buggify` build of queue-worker can inject (`src/buggify.rs`), each
//! with the scenario and the rule that must catch it (`sim/README.md`, "The harness has
//! teeth"). The CLI's `--bug`, the teeth tests and the harness take them from here.

use crate::check;
pub use crate::plan::Bug;
use crate::scenarios;

pub const ACK_BEFORE_INVOKE: Bug = Bug {
    name: "ack-before-invoke",
    about: "ack the message before invoking the function",
    caught_by: scenarios::CRASH.name,
    rule: check::TERMINAL,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::AckBeforeInvoke,
};

pub const IGNORE_MAX_RETRY_ATTEMPTS: Bug = Bug {
    name: "ignore-max-retry-attempts",
    about: "retry retryable failures forever",
    caught_by: scenarios::RETRY_STORM.name,
    rule: check::ATTEMPTS,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::IgnoreMaxRetryAttempts,
};

pub const DROP_PROGRESS_ACKS: Bug = Bug {
    name: "drop-progress-acks",
    about: "never send progress acks, so slow functions outlive their lease",
    caught_by: scenarios::SLOW.name,
    rule: check::LEASE,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::DropProgressAcks,
};

pub const TRUST_FUNCTION_NAMES: Bug = Bug {
    name: "trust-function-names",
    about: "invoke whatever function a message names (`../x`, `a..b`), unchecked",
    caught_by: scenarios::HOSTILE.name,
    rule: check::TERMINAL,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::TrustFunctionNames,
};

pub const IGNORE_LAST_ATTEMPT: Bug = Bug {
    name: "ignore-last-attempt",
    about: "invoke a delivery past the call's last attempt (one lost, or a dead letter not stored)",
    caught_by: scenarios::HOSTILE.name,
    rule: check::ATTEMPTS,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::IgnoreLastAttempt,
};

pub const IGNORE_CANCELS: Bug = Bug {
    name: "ignore-cancels",
    about: "invoke calls whatever was cancelled (the worker never reads the cancel markers)",
    caught_by: scenarios::CANCEL_RACE.name,
    rule: check::CANCEL,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::IgnoreCancels,
};

pub const IGNORE_FLOW_LIMITS: Bug = Bug {
    name: "ignore-flow-limits",
    about: "let every call through the flow gate (limits hold only within one replica)",
    caught_by: scenarios::FLOW_CONTROL.name,
    rule: check::FLOW,
    #[cfg(feature = "buggify")]
    inject: queue_worker::buggify::Bug::IgnoreFlowLimits,
};

/// Every deliberate bug.
pub const ALL: &[Bug] = &[
    ACK_BEFORE_INVOKE,
    IGNORE_MAX_RETRY_ATTEMPTS,
    DROP_PROGRESS_ACKS,
    TRUST_FUNCTION_NAMES,
    IGNORE_LAST_ATTEMPT,
    IGNORE_CANCELS,
    IGNORE_FLOW_LIMITS,
];

pub fn find(name: &str) -> Option<&'static Bug> {
    ALL.iter().find(|b| b.name == name)
}

/// The bugs' names, in [`ALL`]'s order.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|b| b.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_scenarios_and_rules_exist() {
        for (i, b) in ALL.iter().enumerate() {
            assert!(ALL[..i].iter().all(|o| o.name != b.name), "{}", b.name);
            assert!(scenarios::find(b.caught_by).is_some(), "{}", b.caught_by);
            assert!(check::RULES.contains(&b.rule), "{}", b.rule);
        }
    }

    /// Every bug of `src/buggify.rs` is registered here (a new one does not compile until the
    /// match below names it).
    #[cfg(feature = "buggify")]
    #[test]
    fn every_bug_of_queue_worker_is_registered() {
        use queue_worker::buggify::Bug as B;
        let registered = |b: B| match b {
            B::AckBeforeInvoke
            | B::IgnoreMaxRetryAttempts
            | B::DropProgressAcks
            | B::TrustFunctionNames
            | B::IgnoreLastAttempt
            | B::IgnoreCancels
            | B::IgnoreFlowLimits => ALL.iter().filter(|r| r.inject == b).count() == 1,
        };
        for b in [
            B::AckBeforeInvoke,
            B::IgnoreMaxRetryAttempts,
            B::DropProgressAcks,
            B::TrustFunctionNames,
            B::IgnoreLastAttempt,
            B::IgnoreCancels,
            B::IgnoreFlowLimits,
        ] {
            assert!(registered(b), "{b:?}");
        }
    }
}
