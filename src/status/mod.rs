//! Call status: where each call is (`queued` … `succeeded`), kept in a key-value bucket per
//! queue (`OF_<queue>_calls`, entries live `status_ttl`) keyed by call id ([`key`]). The
//! ingress and the worker record events without waiting ([`Calls::record`]); a writer task
//! applies them in the background ([`writer`]) with compare-and-set, so several workers and
//! late events never move a call out of a terminal state ([`record::apply`]).

pub mod cancel;
pub mod key;
pub mod record;
pub mod requeue;
pub mod result;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};
use crate::config::Config;

pub use record::{CallStatus, Event, Kind, State};
pub use writer::DRAIN;
use writer::Writer;

/// The calls bucket of `queue`.
pub fn bucket(queue: &str) -> String {
    format!("OF_{queue}_calls")
}

/// Reads and records call status.
pub struct Calls {
    store: Arc<dyn KeyValue>,
    writer: Writer,
    buckets: Buckets,
}

/// How the buckets of call status (and cancel markers) are made: `status_ttl`, storage,
/// replicas.
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    ttl: Duration,
    storage: crate::config::Storage,
    replicas: usize,
}

impl Buckets {
    pub fn of(config: &Config) -> Buckets {
        Buckets {
            ttl: config.status_ttl,
            storage: config.nats_storage,
            replicas: config.nats_stream_replicas,
        }
    }

    /// The spec of bucket `bucket`.
    pub fn spec(self, bucket: String) -> KvSpec {
        KvSpec {
            bucket,
            ttl: self.ttl,
            storage: self.storage,
            replicas: self.replicas,
        }
    }
}

impl Calls {
    /// Status kept in `store` as `config` says (`status_ttl`, storage, replicas); the writer
    /// task runs until `stop` and then writes what it holds (for at most [`writer::DRAIN`]).
    pub fn start(store: Arc<dyn KeyValue>, config: &Config, stop: CancellationToken) -> Arc<Calls> {
        let buckets = Buckets::of(config);
        let spec_of = move |queue: &str| buckets.spec(bucket(queue));
        let writer = Writer::start(store.clone(), Box::new(spec_of), stop);
        Arc::new(Calls {
            store,
            writer,
            buckets,
        })
    }

    /// Cancel `call_id` on `queue` ([`cancel::cancel`]; `at`: now, unix milliseconds).
    pub async fn cancel(
        &self,
        queue: &str,
        call_id: &str,
        at: u64,
    ) -> Result<cancel::Outcome, BrokerError> {
        cancel_in(self.store.as_ref(), self.buckets, queue, call_id, at).await
    }

    /// Record `event` of `call_id` on `queue`: returns at once; written in the background.
    pub fn record(&self, queue: &str, call_id: &str, event: Event) {
        if let Some(key) = key::of(call_id) {
            self.writer.record(queue, key, event);
        }
    }

    /// The status of `call_id` on `queue` ([`read`]).
    pub async fn get(&self, queue: &str, call_id: &str) -> Result<Option<CallStatus>, BrokerError> {
        read(self.store.as_ref(), queue, call_id).await
    }

    /// Wait until what was recorded so far is written (or `within` passes).
    pub async fn flush(&self, within: Duration) {
        self.writer.flush(within).await;
    }
}

/// The status of `call_id` on `queue` in `store`; `None` when unknown (never recorded, or
/// expired).
pub async fn read(
    store: &dyn KeyValue,
    queue: &str,
    call_id: &str,
) -> Result<Option<CallStatus>, BrokerError> {
    let Some(key) = key::of(call_id) else {
        return Ok(None);
    };
    let value = kv_lazy::get(store, &bucket(queue), &key).await?;
    Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// The calls of `queue` whose status changed last, newest first, with their ids: those among
/// the bucket's last `scan` writes ([`crate::broker::Operate::recent_entries`]).
pub async fn recent(
    op: &dyn crate::broker::Operate,
    queue: &str,
    scan: usize,
) -> Result<Vec<(String, CallStatus)>, BrokerError> {
    let entries = op.recent_entries(&bucket(queue), scan).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| Some((key::call_id(&k)?, serde_json::from_slice(&v).ok()?)))
        .collect())
}

/// Cancel `call_id` on `queue` in `store`, whose buckets are made as `buckets` says.
pub async fn cancel_in(
    store: &dyn KeyValue,
    buckets: Buckets,
    queue: &str,
    call_id: &str,
    at: u64,
) -> Result<cancel::Outcome, BrokerError> {
    let calls = buckets.spec(bucket(queue));
    let markers = buckets.spec(cancel::bucket(queue));
    cancel::cancel(store, &calls, &markers, call_id, at).await
}

/// Put `call_id`'s dead-lettered status on `queue` back to `queued` (a redrive):
/// `Ok(false)` when it has none to change ([`requeue::requeue`]).
pub async fn requeue_in(
    store: &dyn KeyValue,
    queue: &str,
    call_id: &str,
    at: u64,
) -> Result<bool, BrokerError> {
    requeue::requeue(store, &bucket(queue), call_id, at).await
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
