//! Buckets made on first use: a bucket that does not exist yet reads as empty, and the first
//! write creates it. Every bucket of the call lifecycle (status, cancel markers, results,
//! idempotency keys, request bodies) is used this way, so a queue that never needs one never
//! has one.

use std::future::Future;

use bytes::Bytes;

use super::{BrokerError, KeyValue, KvSpec};

/// `write`, and when its bucket is missing, `create` it and `write` once more.
pub async fn creating<T, W, C>(
    write: impl Fn() -> W,
    create: impl FnOnce() -> C,
) -> Result<T, BrokerError>
where
    W: Future<Output = Result<T, BrokerError>>,
    C: Future<Output = Result<(), BrokerError>>,
{
    match write().await {
        Err(BrokerError::NoBucket { .. }) => {
            create().await?;
            write().await
        }
        other => other,
    }
}

/// Store `value` under `key` in `spec`'s bucket, creating the bucket when it is missing;
/// returns the entry's revision.
pub async fn put(
    store: &dyn KeyValue,
    spec: &KvSpec,
    key: &str,
    value: Bytes,
) -> Result<u64, BrokerError> {
    let write = || store.kv_put(&spec.bucket, key, value.clone());
    creating(write, || store.ensure_kv(spec)).await
}

/// The live value of `key`; `None` when it has none or the bucket does not exist.
pub async fn get(
    store: &dyn KeyValue,
    bucket: &str,
    key: &str,
) -> Result<Option<Bytes>, BrokerError> {
    match store.kv_get(bucket, key).await {
        Err(BrokerError::NoBucket { .. }) => Ok(None),
        other => other,
    }
}

/// The live value of `key` with its revision; `None` when it has none or the bucket does not
/// exist.
pub async fn entry(
    store: &dyn KeyValue,
    bucket: &str,
    key: &str,
) -> Result<Option<(Bytes, u64)>, BrokerError> {
    match store.kv_entry(bucket, key).await {
        Err(BrokerError::NoBucket { .. }) => Ok(None),
        other => other,
    }
}

/// Compare-and-set tries of [`change_document`] (each lost one means another change came first).
const DOCUMENT_TRIES: u32 = 8;

/// The JSON document under `key` (its default when missing, unreadable, or its bucket does not
/// exist) and its revision (`0`: none).
pub async fn document<T>(
    store: &dyn KeyValue,
    bucket: &str,
    key: &str,
) -> Result<(T, u64), BrokerError>
where
    T: serde::de::DeserializeOwned + Default,
{
    match entry(store, bucket, key).await? {
        Some((bytes, revision)) => {
            Ok((serde_json::from_slice(&bytes).unwrap_or_default(), revision))
        }
        None => Ok((T::default(), 0)),
    }
}

/// Change the JSON document under `key` of `spec`'s bucket with compare-and-set, creating the
/// bucket when missing: `change` makes the next document from the current one (`Err`: refused,
/// nothing written). Returns the document after.
pub async fn change_document<T, E>(
    store: &dyn KeyValue,
    spec: &KvSpec,
    key: &str,
    change: impl Fn(&T) -> Result<T, E>,
) -> Result<Result<T, E>, BrokerError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + PartialEq,
{
    for _ in 0..DOCUMENT_TRIES {
        let (now, revision) = document::<T>(store, &spec.bucket, key).await?;
        let next = match change(&now) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        if next == now {
            return Ok(Ok(now));
        }
        let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
        let swap = || store.kv_swap(&spec.bucket, key, value.clone(), revision);
        match creating(swap, || store.ensure_kv(spec)).await {
            Ok(_) => return Ok(Ok(next)),
            Err(BrokerError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::Conflict {
        key: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::{MemoryBroker, MemoryLimits};
    use crate::clock::SystemClock;
    use crate::config::Storage;
    use std::sync::Arc;
    use std::time::Duration;

    fn spec() -> KvSpec {
        KvSpec {
            bucket: "lazy".into(),
            ttl: Duration::from_secs(60),
            storage: Storage::Memory,
            replicas: 1,
        }
    }

    #[tokio::test]
    async fn a_missing_bucket_reads_as_empty_and_the_first_put_creates_it() {
        let broker = MemoryBroker::new(Arc::new(SystemClock), MemoryLimits::default());
        assert_eq!(get(&broker, "lazy", "k").await.unwrap(), None);
        assert_eq!(entry(&broker, "lazy", "k").await.unwrap(), None);
        assert!(matches!(
            broker.kv_get("lazy", "k").await,
            Err(BrokerError::NoBucket { .. })
        ));
        let revision = put(&broker, &spec(), "k", Bytes::from_static(b"v"))
            .await
            .unwrap();
        assert_eq!(
            get(&broker, "lazy", "k").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let (value, at) = entry(&broker, "lazy", "k").await.unwrap().unwrap();
        assert_eq!((&value[..], at), (&b"v"[..], revision));
    }
}
