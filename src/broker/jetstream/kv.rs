//! Key-value buckets: JetStream streams with the KV conventions.

use std::sync::Arc;

use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{self as js_stream, DiscardPolicy};
use async_nats::jetstream::{self};
use async_trait::async_trait;

use crate::broker::{Admin as _, BrokerError, KeyValue, KvSpec, Swap};
use crate::config::Storage;

use super::JetStreamBroker;
use super::streams::{STREAM_NAME_IN_USE, api_code};

#[async_trait]
impl KeyValue for JetStreamBroker {
    async fn ensure_kv(&self, spec: &KvSpec) -> Result<(), BrokerError> {
        if self.kv_store(&spec.bucket).await.is_ok() {
            return Ok(());
        }
        // Not `create_key_value`: async-nats 0.51 first reads the account info, whose 2.9
        // form it cannot parse (no `reserved_memory`). The bucket is a stream with the KV
        // conventions (what `create_key_value` would create, history 1).
        let config = js_stream::Config {
            name: format!("KV_{}", spec.bucket),
            subjects: vec![format!("$KV.{}.>", spec.bucket)],
            max_messages_per_subject: 1,
            max_age: spec.ttl,
            storage: match spec.storage {
                Storage::File => js_stream::StorageType::File,
                Storage::Memory => js_stream::StorageType::Memory,
            },
            num_replicas: spec.replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        if let Err(e) = self.js.create_stream(config).await {
            match e.kind() {
                // Created meanwhile by another replica.
                CreateStreamErrorKind::JetStream(inner)
                    if api_code(&inner) == STREAM_NAME_IN_USE => {}
                _ => return Err(BrokerError::other("create key-value bucket", e)),
            }
        }
        self.kv_store(&spec.bucket).await.map(drop)
    }

    async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: bytes::Bytes,
    ) -> Result<u64, BrokerError> {
        let store = self.kv_store(bucket).await?;
        store
            .put(key, value)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value put", e))
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<bytes::Bytes>, BrokerError> {
        let store = self.kv_store(bucket).await?;
        store
            .get(key)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value get", e))
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        let store = self.kv_store(bucket).await?;
        store
            .delete(key)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value delete", e))
    }

    async fn kv_entry(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(bytes::Bytes, u64)>, BrokerError> {
        let store = self.kv_store(bucket).await?;
        let entry = store
            .entry(key)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value entry", e))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    async fn kv_revision(&self, bucket: &str) -> Result<u64, BrokerError> {
        let stream = super::stream_if_exists(&self.js, &format!("KV_{bucket}")).await?;
        let stream = stream.ok_or_else(|| BrokerError::NoBucket {
            bucket: bucket.to_string(),
        })?;
        Ok(stream.cached_info().state.last_sequence)
    }

    async fn kv_keys(&self, bucket: &str) -> Result<Vec<String>, BrokerError> {
        let prefix = format!("$KV.{bucket}.");
        let info = self
            .stream_info(&format!("KV_{bucket}"), Some(&format!("{prefix}>")))
            .await?
            .ok_or_else(|| BrokerError::NoBucket {
                bucket: bucket.to_string(),
            })?;
        Ok(info
            .subjects
            .into_keys()
            .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    async fn kv_swap(
        &self,
        bucket: &str,
        key: &str,
        value: bytes::Bytes,
        expected: u64,
    ) -> Result<u64, BrokerError> {
        let store = self.kv_store(bucket).await?;
        let conflict = || BrokerError::Conflict {
            key: key.to_string(),
        };
        if expected == 0 {
            // Also over a deleted or purged key's marker.
            return store.create(key, value).await.map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => conflict(),
                _ => self.kv_error(bucket, "key-value create", e),
            });
        }
        store
            .update(key, value, expected)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => conflict(),
                _ => self.kv_error(bucket, "key-value update", e),
            })
    }

    async fn kv_swap_all(&self, bucket: &str, writes: Vec<Swap>) -> Vec<Result<u64, BrokerError>> {
        self.swap_pipelined(bucket, writes).await
    }
}

impl JetStreamBroker {
    /// [`KeyValue::kv_swap_all`]: every write published first, then the acknowledgements read
    /// in order. A create (`expected` 0) refused because the key holds a delete marker is
    /// done again by [`KeyValue::kv_swap`], which writes over markers.
    async fn swap_pipelined(
        &self,
        bucket: &str,
        writes: Vec<Swap>,
    ) -> Vec<Result<u64, BrokerError>> {
        let store = match self.kv_store(bucket).await {
            Ok(store) => store,
            Err(e) => return writes.iter().map(|_| Err(e.clone())).collect(),
        };
        if store.use_jetstream_prefix {
            // A JetStream domain's prefix (never set by this worker): no pipelining.
            return crate::broker::swap_each(self, bucket, writes).await;
        }
        let prefix = store.put_prefix.as_ref().unwrap_or(&store.prefix);
        let mut sent = Vec::with_capacity(writes.len());
        for w in &writes {
            let mut headers = async_nats::HeaderMap::new();
            let expected = async_nats::HeaderValue::from(w.expected);
            headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected);
            let subject = format!("{prefix}{}", w.key);
            sent.push(
                self.js
                    .publish_with_headers(subject, headers, w.value.clone())
                    .await,
            );
        }
        let mut results = Vec::with_capacity(writes.len());
        for (w, sent) in writes.into_iter().zip(sent) {
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            results.push(match acked {
                Ok(ack) => Ok(ack.sequence),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence && w.expected == 0 => {
                    self.kv_swap(bucket, &w.key, w.value, 0).await
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    Err(BrokerError::Conflict { key: w.key })
                }
                Err(e) => Err(self.kv_error(bucket, "key-value update", e)),
            });
        }
        results
    }

    /// The bucket's handle, looked up once; `NoBucket` when its stream does not exist.
    async fn kv_store(&self, bucket: &str) -> Result<Arc<jetstream::kv::Store>, BrokerError> {
        let names = ("KV_", bucket);
        let open = self.js.get_key_value(bucket);
        (self
            .kv_stores
            .get(&self.js, names, "get key-value bucket", open))
        .await
    }

    /// Map a key-value error; forget the cached handle in case the bucket was deleted.
    fn kv_error(&self, bucket: &str, op: &'static str, e: impl std::fmt::Display) -> BrokerError {
        self.kv_stores.forget(bucket);
        BrokerError::other(op, e)
    }
}
