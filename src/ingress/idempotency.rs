//! `Idempotency-Key` at the ingress: a repeat of a key inside `idempotency_window` is answered
//! with the first call's id and not queued again.
//!
//! Two things hold the promise. The message is published with `Nats-Msg-Id` derived from the
//! function and the key ([`msg_id`]), so the stream itself drops a repeat inside its duplicate
//! window, whatever races between ingress replicas. And the key's first call id is kept in a
//! key-value bucket per queue (`OF_<queue>_idempotency`, entries live the window), so a repeat
//! can be answered with it.

use std::time::Duration;

use bytes::Bytes;

use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};
use crate::config::Config;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// How long a repeat waits for the first request to record its call id (it is recorded right
/// after the first message is stored) before being told to try again.
const FIRST_CALL_WAIT: Duration = Duration::from_secs(2);
const FIRST_CALL_POLL: Duration = Duration::from_millis(50);

/// The idempotency bucket of `queue`.
pub fn bucket(queue: &str) -> String {
    format!("OF_{queue}_idempotency")
}

/// The key of a request, checked: `Ok(None)` without one; `Err` (a `400`) when it is empty,
/// longer than [`MAX_KEY_LEN`] or not printable ASCII.
pub fn key_of(values: Option<&Vec<String>>) -> Result<Option<&str>, String> {
    let Some(values) = values else {
        return Ok(None);
    };
    let [key] = values.as_slice() else {
        return Err(format!(
            "{HEADER} given {} times; give it once",
            values.len()
        ));
    };
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
        return Err(format!(
            "invalid {HEADER}: 1 to {MAX_KEY_LEN} printable ASCII characters"
        ));
    }
    Ok(Some(key))
}

/// The message id (and key in the bucket) of `key` for `function`: the same key for two
/// functions names two calls. A digest, so any printable key fits NATS's key rules.
pub fn msg_id(function: &str, key: &str) -> String {
    let mut input = Vec::with_capacity(function.len() + key.len() + 1);
    input.extend_from_slice(function.as_bytes());
    input.push(0);
    input.extend_from_slice(key.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let hex: String = digest.as_ref()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("idem-{hex}")
}

/// The idempotency keys of the queues, in the broker's key-value buckets.
pub struct Keys<'a> {
    pub store: &'a dyn KeyValue,
    pub config: &'a Config,
}

impl Keys<'_> {
    /// The call id first stored under `id` on `queue`, if it is still remembered.
    pub async fn first_call(&self, queue: &str, id: &str) -> Result<Option<String>, BrokerError> {
        let value = kv_lazy::get(self.store, &bucket(queue), id).await?;
        Ok(value.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// [`Keys::first_call`], waiting up to two seconds for the first request to record it (a
    /// repeat can arrive while the first is between its publish and its record).
    pub async fn wait_first_call(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<String>, BrokerError> {
        let deadline = tokio::time::Instant::now() + FIRST_CALL_WAIT;
        loop {
            if let Some(call) = self.first_call(queue, id).await? {
                return Ok(Some(call));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(FIRST_CALL_POLL).await;
        }
    }

    /// Remember `call_id` as the first call under `id` on `queue` (creating the bucket once).
    pub async fn remember(&self, queue: &str, id: &str, call_id: &str) -> Result<(), BrokerError> {
        let value = Bytes::copy_from_slice(call_id.as_bytes());
        kv_lazy::put(self.store, &self.spec(queue), id, value)
            .await
            .map(drop)
    }

    fn spec(&self, queue: &str) -> KvSpec {
        KvSpec {
            bucket: bucket(queue),
            ttl: self.config.idempotency_window,
            storage: self.config.nats_storage,
            replicas: self.config.nats_stream_replicas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let one = |k: &str| vec![k.to_string()];
        assert_eq!(key_of(None), Ok(None));
        assert_eq!(key_of(Some(&one("order 42"))), Ok(Some("order 42")));
        assert!(key_of(Some(&one(""))).is_err());
        assert!(key_of(Some(&one(&"k".repeat(MAX_KEY_LEN + 1)))).is_err());
        assert!(key_of(Some(&one("tab\there"))).is_err());
        assert!(key_of(Some(&vec!["a".into(), "b".into()])).is_err());
    }

    #[test]
    fn ids_depend_on_function_and_key_and_fit_nats() {
        let a = msg_id("f", "k");
        assert_eq!(a, msg_id("f", "k"));
        assert_ne!(a, msg_id("g", "k"));
        assert_ne!(a, msg_id("f", "k2"));
        // No ambiguity between where the function ends and the key starts.
        assert_ne!(msg_id("ab", "c"), msg_id("a", "bc"));
        assert_eq!(a.len(), 45);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}
