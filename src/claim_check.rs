//! Request bodies too large for a message (the claim check): the ingress stores a body over
//! `payload_offload_bytes` as an object in the queue's bucket `OF_<queue>_payloads` and
//! publishes the message without it, carrying the object's name in [`PAYLOAD_HEADER`]. The
//! worker reads the object back for each attempt and deletes it once the call has ended; a
//! dead letter keeps its object until the bucket's TTL removes it. Messages published by an
//! OpenFaaS gateway carry their body inline and are read as before.

use std::time::Duration;

use bytes::Bytes;

use crate::broker::{BrokerError, ObjectSpec, Objects};
use crate::config::Config;

/// The NATS header naming a message's body object.
pub const PAYLOAD_HEADER: &str = "Qw-Payload";
/// The NATS header with the body object's size in bytes (for operators and tools).
pub const PAYLOAD_BYTES_HEADER: &str = "Qw-Payload-Bytes";

/// `OF_<queue>_payloads`.
pub fn bucket(queue: &str) -> String {
    format!("{}_payloads", crate::broker::stream_name(queue))
}

/// The payload bucket of `queue`. Objects live as long as a message may still need them: the
/// longer of `dead_letter_max_age` (a dead letter keeps its object) and `max_message_age` (a
/// message older than that is never invoked).
pub fn spec(config: &Config, queue: &str) -> ObjectSpec {
    ObjectSpec {
        bucket: bucket(queue),
        ttl: kept_for(config),
        storage: config.nats_storage,
        replicas: config.nats_stream_replicas,
    }
}

/// How long a body object is kept at most.
pub fn kept_for(config: &Config) -> Duration {
    config
        .dead_letter_max_age
        .max(config.max_message_age.unwrap_or_default())
}

/// Whether a body of `len` bytes goes to the object store (`payload_offload_bytes`, 0: never).
pub fn offloads(config: &Config, len: usize) -> bool {
    config.payload_offload_bytes > 0 && len > config.payload_offload_bytes
}

/// A request body as the message carries it (empty when it goes to the object store), and
/// the object name and body to store when it does.
pub fn split(config: &Config, body: Bytes) -> (Bytes, Option<(String, Bytes)>) {
    match offloads(config, body.len()) {
        true => (Bytes::new(), Some((new_name(), body))),
        false => (body, None),
    }
}

/// A fresh object name for one submission: never shared, so a repeated call id cannot
/// replace the body of the call stored first.
pub fn new_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The NATS headers of a message whose body is object `name` of `len` bytes.
pub fn headers(name: &str, len: usize) -> Vec<(String, String)> {
    vec![
        (PAYLOAD_HEADER.to_string(), name.to_string()),
        (PAYLOAD_BYTES_HEADER.to_string(), len.to_string()),
    ]
}

/// The body object a message names, if any.
pub fn reference(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(PAYLOAD_HEADER))
        .map(|(_, v)| v.as_str())
}

/// Whether `name` is a claim-check header (kept wherever the message goes: a delayed call
/// moving to its queue, a dead letter).
pub fn is_claim_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(PAYLOAD_HEADER) || name.eq_ignore_ascii_case(PAYLOAD_BYTES_HEADER)
}

/// Whether header `name` goes along when a message is stored again elsewhere (as a dead letter,
/// or back in its queue from there): not its `Nats-Msg-Id` (the new copy has its own), and of
/// the `Qw-*` headers only the claim check's (the others say why it was moved).
pub fn moves_with_message(name: &str) -> bool {
    !name.eq_ignore_ascii_case(crate::broker::MSG_ID_HEADER)
        && (!name.starts_with("Qw-") || is_claim_header(name))
}

/// The claim-check headers among `headers`.
pub fn carried(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| is_claim_header(k))
        .cloned()
        .collect()
}

/// Store `body` as object `name` in `spec`'s bucket, creating the bucket the first time (also
/// used for results' bodies, [`crate::status::result`]).
pub async fn store(
    objects: &dyn Objects,
    spec: &ObjectSpec,
    name: &str,
    body: Bytes,
) -> Result<(), BrokerError> {
    let write = || objects.object_put(&spec.bucket, name, body.clone());
    crate::broker::kv_lazy::creating(write, || objects.ensure_objects(spec)).await
}

/// The body object `name` of `queue`; `None` when it is gone (expired, or deleted).
pub async fn fetch(
    objects: &dyn Objects,
    queue: &str,
    name: &str,
) -> Result<Option<Bytes>, BrokerError> {
    fetch_from(objects, &bucket(queue), name).await
}

/// Object `name` of `bucket`; `None` when it or its bucket is missing.
pub async fn fetch_from(
    objects: &dyn Objects,
    bucket: &str,
    name: &str,
) -> Result<Option<Bytes>, BrokerError> {
    match objects.object_get(bucket, name).await {
        Err(BrokerError::NoBucket { .. }) => Ok(None),
        other => other,
    }
}

/// Delete the body object `name` of `queue`; a failure is logged (the TTL removes it later).
pub async fn discard(objects: &dyn Objects, queue: &str, name: &str) {
    if let Err(e) = objects.object_delete(&bucket(queue), name).await {
        tracing::warn!(queue, object = name, error = %e, "Cannot delete a request body object; it expires with the bucket's TTL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_over_the_threshold_go_to_the_object_store() {
        let mut config = Config {
            payload_offload_bytes: 10,
            ..Config::default()
        };
        assert!(!offloads(&config, 10));
        assert!(offloads(&config, 11));
        config.payload_offload_bytes = 0;
        assert!(!offloads(&config, 1 << 26), "0 turns it off");
    }

    #[test]
    fn objects_outlive_dead_letters_and_old_messages() {
        let mut config = Config {
            dead_letter_max_age: Duration::from_secs(100),
            ..Config::default()
        };
        assert_eq!(kept_for(&config), Duration::from_secs(100));
        config.max_message_age = Some(Duration::from_secs(500));
        assert_eq!(kept_for(&config), Duration::from_secs(500));
        assert_eq!(
            spec(&config, "faas-request").bucket,
            "OF_faas-request_payloads"
        );
    }

    #[test]
    fn the_reference_is_found_and_carried_whatever_its_case() {
        let mut h = headers("abc", 42);
        h.push(("Other".into(), "x".into()));
        assert_eq!(reference(&h), Some("abc"));
        let lower = vec![("qw-payload".to_string(), "n".to_string())];
        assert_eq!(reference(&lower), Some("n"));
        assert_eq!(carried(&h), headers("abc", 42));
        assert_eq!(reference(&[]), None);
        assert_ne!(new_name(), new_name());
    }
}
