//! What to do with a message once its invocation has an outcome (pure).
//!
//! Until retries land every outcome is final: the message is acknowledged after the callback,
//! whatever the status. The retry policy plugs in here.

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

/// The settlement for an invocation that ended with `status`.
pub fn decide(_status: u16) -> Settle {
    Settle::Ack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_final_without_a_retry_policy() {
        for s in [200, 202, 400, 404, 429, 500, 503] {
            assert_eq!(decide(s), Settle::Ack);
        }
    }
}
