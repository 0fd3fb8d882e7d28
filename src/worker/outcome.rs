//! How a delivery is settled with the broker once its processing has decided.
//!
//! The decision itself (success, retry with which delay, final) is [`super::retry::decide`].

use std::time::Duration;

/// How a delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: remove from the queue.
    Ack,
    /// Deliver again after the delay (at once when `None`).
    Nak(Option<Duration>),
    /// Never deliver again.
    Term,
}
