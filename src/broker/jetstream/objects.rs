//! Object buckets: JetStream object stores (stream `OBJ_<bucket>`, chunks of 128 KiB).

use std::sync::Arc;

use async_nats::jetstream::object_store::{
    self as js_objects, DeleteErrorKind, GetErrorKind, ObjectStore,
};
use async_nats::jetstream::stream::StorageType;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::JetStreamBroker;
use crate::broker::{BrokerError, ObjectSpec, Objects};
use crate::config::Storage;

#[async_trait]
impl Objects for JetStreamBroker {
    async fn ensure_objects(&self, spec: &ObjectSpec) -> Result<(), BrokerError> {
        if self.object_store(&spec.bucket).await.is_ok() {
            return Ok(());
        }
        let config = js_objects::Config {
            bucket: spec.bucket.clone(),
            max_age: spec.ttl,
            storage: match spec.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            num_replicas: spec.replicas.max(1),
            ..Default::default()
        };
        match self.js.create_object_store(config).await {
            Ok(_) => self.object_store(&spec.bucket).await.map(drop),
            // Perhaps created meanwhile by another replica: then the lookup finds it.
            Err(e) => match self.object_store(&spec.bucket).await {
                Ok(_) => Ok(()),
                Err(_) => Err(BrokerError::other("create object bucket", e)),
            },
        }
    }

    async fn object_put(&self, bucket: &str, name: &str, data: Bytes) -> Result<(), BrokerError> {
        let store = self.object_store(bucket).await?;
        let mut reader: &[u8] = &data;
        store
            .put(name, &mut reader)
            .await
            .map(drop)
            .map_err(|e| self.object_error(bucket, "object put", e))
    }

    async fn object_get(&self, bucket: &str, name: &str) -> Result<Option<Bytes>, BrokerError> {
        let store = self.object_store(bucket).await?;
        let mut object = match store.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.object_error(bucket, "object get", e)),
        };
        let size = object.info().size;
        let mut data = Vec::with_capacity(size);
        // An object whose chunks expired just before its description would wait for them
        // forever: the read is bounded.
        let within = read_time(size);
        match tokio::time::timeout(within, object.read_to_end(&mut data)).await {
            Ok(Ok(_)) => Ok(Some(Bytes::from(data))),
            Ok(Err(e)) => Err(BrokerError::other("object read", e)),
            Err(_) => Err(BrokerError::Timeout {
                what: format!("reading object {name} of {bucket}"),
            }),
        }
    }

    async fn object_delete(&self, bucket: &str, name: &str) -> Result<(), BrokerError> {
        let store = match self.object_store(bucket).await {
            Ok(store) => store,
            Err(BrokerError::NoBucket { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match store.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.object_error(bucket, "object delete", e)),
        }
    }
}

/// The longest an object of `size` bytes may take to read: 10 s, and 1 s more per MiB.
fn read_time(size: usize) -> std::time::Duration {
    std::time::Duration::from_secs(10 + (size >> 20) as u64)
}

impl JetStreamBroker {
    /// The bucket's handle, looked up once; `NoBucket` when its stream does not exist.
    async fn object_store(&self, bucket: &str) -> Result<Arc<ObjectStore>, BrokerError> {
        let names = ("OBJ_", bucket);
        let open = self.js.get_object_store(bucket);
        (self
            .object_stores
            .get(&self.js, names, "get object bucket", open))
        .await
    }

    /// Map an object error; forget the cached handle in case the bucket was deleted.
    fn object_error(
        &self,
        bucket: &str,
        op: &'static str,
        e: impl std::fmt::Display,
    ) -> BrokerError {
        self.object_stores.forget(bucket);
        BrokerError::other(op, e)
    }
}
