//! Object buckets: kept as key-value buckets of their own (named `$O.<bucket>`, which no
//! key-value bucket can be), whose entries may be as large as the whole broker allows.

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryBroker;
use crate::broker::{BrokerError, KeyValue, KvSpec, ObjectSpec, Objects};

/// The internal bucket holding object bucket `bucket`.
fn inner(bucket: &str) -> String {
    format!("$O.{bucket}")
}

/// A missing internal bucket, reported under the object bucket's own name.
fn renamed(bucket: &str, e: BrokerError) -> BrokerError {
    match e {
        BrokerError::NoBucket { .. } => BrokerError::NoBucket {
            bucket: bucket.to_string(),
        },
        other => other,
    }
}

#[async_trait]
impl Objects for MemoryBroker {
    async fn ensure_objects(&self, spec: &ObjectSpec) -> Result<(), BrokerError> {
        // Checked under the object bucket's name; stored under the internal one.
        let check = KvSpec {
            bucket: spec.bucket.clone(),
            ttl: spec.ttl,
            storage: spec.storage,
            replicas: spec.replicas,
        };
        if !super::valid_bucket(&check.bucket) {
            return Err(BrokerError::other(
                "create object bucket",
                format!(
                    "invalid bucket name {:?}: use letters, digits, _ and -",
                    spec.bucket
                ),
            ));
        }
        self.insert_bucket(KvSpec {
            bucket: inner(&spec.bucket),
            ..check
        });
        Ok(())
    }

    async fn object_put(&self, bucket: &str, name: &str, data: Bytes) -> Result<(), BrokerError> {
        let max = usize::try_from(self.inner.limits.max_bytes).unwrap_or(usize::MAX);
        self.put_entry(&inner(bucket), name, data, None, max)
            .map(drop)
            .map_err(|e| renamed(bucket, e))
    }

    async fn object_get(&self, bucket: &str, name: &str) -> Result<Option<Bytes>, BrokerError> {
        self.kv_get(&inner(bucket), name)
            .await
            .map_err(|e| renamed(bucket, e))
    }

    async fn object_delete(&self, bucket: &str, name: &str) -> Result<(), BrokerError> {
        match self.kv_delete(&inner(bucket), name).await {
            Err(BrokerError::NoBucket { .. }) => Ok(()),
            other => other,
        }
    }
}
