//! A call's status and how events move it (pure): `queued → running → retrying → … →` one of
//! the terminal states. Events may arrive late, twice, or from several workers at once; the
//! rules below make the result the same whatever their order:
//! - a terminal state is never left (the first terminal event wins);
//! - an event of an older attempt than the one recorded changes nothing;
//! - times are only ever set once (`enqueued_at`, the first `started_at`, `finished_at`).

use serde::{Deserialize, Serialize};

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Stored, not yet invoked (or delayed).
    Queued,
    /// An attempt is in progress.
    Running,
    /// An attempt failed; the next one waits for its delay.
    Retrying,
    /// The function answered 2xx.
    Succeeded,
    /// The function's final answer was not a success, and no dead letter was kept.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// Kept as a dead letter (`reason` says why).
    DeadLettered,
    /// Older than `max_message_age`: not invoked.
    Expired,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Succeeded
                | State::Failed
                | State::Cancelled
                | State::DeadLettered
                | State::Expired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::DeadLettered => "dead_lettered",
            State::Expired => "expired",
        }
    }
}

/// What is stored under a call's key (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStatus {
    pub state: State,
    /// `name` or `name.namespace`, as the message names it.
    pub function: String,
    /// Attempts started (a run again after back-pressure is the same attempt).
    pub attempts: u32,
    /// The last HTTP status the function answered (or the status standing for its failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed, or why the call ended as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Dead-letter reason (`exhausted`, `expired`, `poison`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// A delayed call is not invoked before this (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// When the next attempt is due (unix milliseconds), while retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
}

/// Something that happened to a call, at `at` (unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub function: String,
    pub at: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Stored by the ingress.
    Queued,
    /// Stored by the ingress, to be invoked from `not_before` (unix milliseconds) on.
    Delayed { not_before: u64 },
    /// Attempt `attempt` (1-based) starts.
    Started { attempt: u32 },
    /// Attempt `attempt` failed with `status`; the next is due after `delay_ms`.
    Retrying {
        attempt: u32,
        status: u16,
        error: Option<String>,
        delay_ms: u64,
    },
    /// The call ended in `state` (terminal) after `attempts` attempts.
    Finished {
        state: State,
        attempts: u32,
        status: Option<u16>,
        error: Option<String>,
        reason: Option<String>,
    },
}

/// The status after `event`; `None` when the event changes nothing (so nothing is written).
pub fn apply(current: Option<&CallStatus>, event: &Event) -> Option<CallStatus> {
    let mut next = current.cloned().unwrap_or_else(|| CallStatus {
        state: State::Queued,
        function: event.function.clone(),
        attempts: 0,
        last_status: None,
        error: None,
        reason: None,
        enqueued_at: None,
        started_at: None,
        finished_at: None,
        not_before: None,
        next_attempt_at: None,
    });
    if next.state.is_terminal() {
        return None;
    }
    match &event.kind {
        Kind::Queued => {
            next.enqueued_at.get_or_insert(event.at);
        }
        Kind::Delayed { not_before } => {
            next.enqueued_at.get_or_insert(event.at);
            next.not_before = Some(*not_before);
        }
        Kind::Started { attempt } => started(&mut next, *attempt, event.at)?,
        Kind::Retrying {
            attempt,
            status,
            error,
            delay_ms,
        } => {
            if *attempt < next.attempts {
                return None;
            }
            next.attempts = *attempt;
            next.state = State::Retrying;
            next.last_status = Some(*status);
            next.error.clone_from(error);
            next.next_attempt_at = Some(event.at.saturating_add(*delay_ms));
        }
        Kind::Finished {
            state,
            attempts,
            status,
            error,
            reason,
        } => {
            debug_assert!(state.is_terminal());
            next.state = *state;
            next.attempts = next.attempts.max(*attempts);
            if status.is_some() {
                next.last_status = *status;
            }
            next.error.clone_from(error);
            next.reason.clone_from(reason);
            next.finished_at = Some(event.at);
            next.next_attempt_at = None;
        }
    }
    (current != Some(&next)).then_some(next)
}

/// Attempt `attempt` starts: only a newer attempt than the one recorded (or the same one seen
/// first) moves the call to running.
fn started(next: &mut CallStatus, attempt: u32, at: u64) -> Option<()> {
    let newer = attempt > next.attempts;
    let same_first = attempt == next.attempts && next.state == State::Queued;
    if !(newer || same_first) {
        return None;
    }
    next.attempts = attempt;
    next.state = State::Running;
    next.started_at.get_or_insert(at);
    next.next_attempt_at = None;
    Some(())
}

#[cfg(test)]
mod tests;
