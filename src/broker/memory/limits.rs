//! How much the in-process broker may hold, and what it holds.

use crate::broker::BrokerError;

/// How much the in-process broker may hold. A publish or KV put that would go beyond a limit
/// is refused with [`BrokerError::Full`] (the ingress answers 503): the broker never grows
/// without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Messages over all streams plus live key-value entries.
    pub max_messages: u64,
    /// Bytes (subject + headers + payload; key + value) over all streams and buckets.
    pub max_bytes: u64,
    /// Largest single message (headers and payload as NATS counts them): NATS' `max_payload`.
    pub max_message_bytes: usize,
    /// Message ids remembered for the duplicate windows of all streams together. Beyond it the
    /// oldest ids are forgotten early (with a warning): the window shrinks instead of memory
    /// growing.
    pub max_dedup_ids: usize,
}

impl Default for MemoryLimits {
    fn default() -> MemoryLimits {
        MemoryLimits {
            max_messages: 100_000,
            max_bytes: 256 << 20,
            max_message_bytes: 1 << 20,
            max_dedup_ids: 200_000,
        }
    }
}

/// What the broker holds now (see [`MemoryLimits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub messages: u64,
    pub bytes: u64,
}

/// Bytes a message occupies in the limits.
pub(super) fn stored_size(subject: &str, headers: &[(String, String)], payload: &[u8]) -> u64 {
    let h: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (subject.len() + h + payload.len()) as u64
}

/// Size NATS compares with `max_payload`: the serialized header block plus the payload.
pub(super) fn wire_size(headers: &[(String, String)], payload: &[u8]) -> usize {
    if headers.is_empty() {
        return payload.len();
    }
    let h: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    "NATS/1.0\r\n".len() + h + 2 + payload.len()
}

pub(super) fn full_error(usage: MemoryUsage, limits: &MemoryLimits) -> BrokerError {
    BrokerError::Full(format!(
        "the in-process broker holds {} messages and {} bytes (limits: {} messages, {} bytes); \
         retry once the queue has drained, or raise the limits",
        usage.messages, usage.bytes, limits.max_messages, limits.max_bytes
    ))
}
