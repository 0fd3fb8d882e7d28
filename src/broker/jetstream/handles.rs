//! Bucket handles looked up once and kept by bucket name: a key-value or object bucket's
//! handle costs a stream-info request to make, and holds the stream's whole info, so it is
//! shared (`Arc`), not cloned, by each call that uses it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_nats::jetstream;

use super::streams::stream_if_exists;
use crate::broker::BrokerError;

/// Handles of one kind, by bucket name.
pub struct Handles<T> {
    by_bucket: Mutex<HashMap<String, Arc<T>>>,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles {
            by_bucket: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Handles<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<T>>> {
        self.by_bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle of `bucket`, whose stream is `prefix` + `bucket`: the kept one, or one made
    /// by `open` (and kept) when the stream exists; `NoBucket` when it does not. `op` names the
    /// opening in its error.
    pub async fn get<F, E>(
        &self,
        js: &jetstream::Context,
        (prefix, bucket): (&str, &str),
        op: &'static str,
        open: F,
    ) -> Result<Arc<T>, BrokerError>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        if let Some(handle) = self.lock().get(bucket) {
            return Ok(handle.clone());
        }
        if stream_if_exists(js, &format!("{prefix}{bucket}"))
            .await?
            .is_none()
        {
            return Err(BrokerError::NoBucket {
                bucket: bucket.to_string(),
            });
        }
        let handle = Arc::new(open.await.map_err(|e| BrokerError::other(op, e))?);
        self.lock().insert(bucket.to_string(), handle.clone());
        Ok(handle)
    }

    /// Forget `bucket`'s handle (after an error: the bucket may have been deleted).
    pub fn forget(&self, bucket: &str) {
        self.lock().remove(bucket);
    }
}
