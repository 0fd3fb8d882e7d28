//! Call status: where each call is (`queued` … `succeeded`), kept in a key-value bucket per
//! queue (`OF_<queue>_calls`, entries live `status_ttl`) keyed by call id ([`key`]). The
//! ingress and the worker record events without waiting ([`Calls::record`]); a writer task
//! applies them in the background ([`writer`]) with compare-and-set, so several workers and
//! late events never move a call out of a terminal state ([`record::apply`]).

pub mod key;
pub mod record;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, KeyValue, KvSpec};
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
}

impl Calls {
    /// Status kept in `store` as `config` says (`status_ttl`, storage, replicas); the writer
    /// task runs until `stop` and then writes what it holds (for at most [`writer::DRAIN`]).
    pub fn start(store: Arc<dyn KeyValue>, config: &Config, stop: CancellationToken) -> Arc<Calls> {
        let spec_of = {
            let (ttl, storage, replicas) = (
                config.status_ttl,
                config.nats_storage,
                config.nats_stream_replicas,
            );
            move |queue: &str| KvSpec {
                bucket: bucket(queue),
                ttl,
                storage,
                replicas,
            }
        };
        let writer = Writer::start(store.clone(), Box::new(spec_of), stop);
        Arc::new(Calls { store, writer })
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
    match store.kv_get(&bucket(queue), &key).await {
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
        Ok(None) | Err(BrokerError::NoBucket { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
