//! Deliberate bugs for the simulation's "has teeth" check (`--features buggify` only).
//!
//! The simulation (`sim/`) switches one of these on for a run and expects a scenario to fail;
//! without the feature none of this exists. Flags are per thread: a turmoil simulation runs all
//! its hosts on the thread that drives it, so parallel tests do not see each other's bugs.

use std::cell::Cell;

/// A bug that can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Ack the message before invoking the function (a crash or a failed attempt loses it).
    AckBeforeInvoke,
    /// Ignore `max_retry_attempts`: retry retryable failures forever.
    IgnoreMaxRetryAttempts,
    /// Never send progress acks (`+WPI`): slow functions outlive their ack-wait lease.
    DropProgressAcks,
    /// Call whatever function a message names, without checking the name (`../x` leaves the
    /// function's URL space): invalid names are invoked instead of dead-lettered as poison.
    TrustFunctionNames,
    /// Invoke a delivery past the call's last attempt (as the worker did before): a call whose
    /// last attempt's delivery was lost, or whose dead letter was not stored, runs again.
    IgnoreLastAttempt,
    /// Invoke calls whatever was cancelled: the worker never looks at the cancel markers.
    IgnoreCancels,
    /// Let every call through the flow gate: a function's `max_concurrency` and `rate` hold
    /// only within each replica's adaptive limit, not across replicas.
    IgnoreFlowLimits,
}

thread_local! {
    static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Turn on `bug` (or none) for this thread.
pub fn set(bug: Option<Bug>) {
    ACTIVE.with(|a| a.set(bug));
}

/// Whether `bug` is on for this thread.
pub fn on(bug: Bug) -> bool {
    ACTIVE.with(|a| a.get() == Some(bug))
}
