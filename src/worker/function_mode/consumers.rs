//! The consumers of function mode: one per function with work, named after its subject, and
//! deleted by the server once no replica uses it.

use std::time::Duration;

use crate::broker::ServerVersion;

/// Extra time a server before 2.12 gives an unused function consumer before deleting it,
/// beyond `max(consumer_inactive_threshold, ack_wait)`: room for workers to reconnect after a
/// NATS outage. A consumer deleted while it still holds messages would restart their delivery
/// counts (and so their attempts).
pub const SERVER_INACTIVE_GRACE: Duration = Duration::from_secs(15);

/// The inactive threshold set on function consumers (the server deletes a consumer nobody
/// pulls from for that long; workers stop pulling after `consumer_inactive_threshold` idle).
///
/// - nats-server 2.12 and later keep a consumer while it has acks pending, until the last ack
///   deadline plus the threshold: `consumer_inactive_threshold` itself.
/// - Older servers delete a consumer with acks pending (its messages then start over with
///   delivery count 1, and retries never run out; found by the simulation): never shorter than
///   `ack_wait`, so that progress acks (every `ack_wait/2`) for messages in flight or waiting
///   in a ready queue always count as activity, plus [`SERVER_INACTIVE_GRACE`]. So is an
///   unknown server.
pub fn server_inactive_threshold(
    configured: Duration,
    ack_wait: Duration,
    server: Option<ServerVersion>,
) -> Duration {
    if server.is_some_and(|v| v.keeps_consumers_with_pending_acks()) {
        configured
    } else {
        configured.max(ack_wait) + SERVER_INACTIVE_GRACE
    }
}

/// FNV-1a, for short stable suffixes of consumer names.
fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Consumer name for the function on `subject`: `<queue>-fn-<name_ns>-<hash>` (`.` is not
/// allowed in consumer names; the hash keeps `a.b` and `a_b` apart).
pub fn consumer_name(queue: &str, subject: &str) -> String {
    let tail = subject
        .strip_prefix(queue)
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or("");
    if tail.is_empty() {
        return format!("{queue}-fn-_");
    }
    let clean: String = tail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{queue}-fn-{clean}-{:08x}", fnv32(tail))
}

/// Prefix of every function-mode consumer of `queue`.
pub fn consumer_prefix(queue: &str) -> String {
    format!("{queue}-fn-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let a = consumer_name("faas-request", "faas-request.figlet.openfaas-fn");
        assert!(a.starts_with("faas-request-fn-figlet_openfaas-fn-"));
        assert!(!a.contains('.'));
        let b = consumer_name("q", "q.a.b.ns");
        let c = consumer_name("q", "q.a_b.ns");
        assert_ne!(b, c, "a.b and a_b stay apart");
        assert_eq!(consumer_name("q", "q"), "q-fn-_");
        assert!(consumer_name("q", "q.x.ns").starts_with(&consumer_prefix("q")));
    }
}
