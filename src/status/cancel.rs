//! Cancelling a call (`DELETE /async-function/{call-id}`, `queue-worker cancel`).
//!
//! 1. The call's status is read: unknown → [`Outcome::Unknown`], terminal → [`Outcome::Final`].
//! 2. A marker is put under the call's key in `OF_<queue>_cancelled` (entries live
//!    `status_ttl`). Workers refresh what they know of this bucket while they have work and
//!    admit an attempt only with knowledge fetched within [`crate::worker::cancellations::FRESH`]
//!    (`src/worker/cancellations.rs`).
//! 3. The status is set to `cancelled` with compare-and-set (a worker that ended the call
//!    first wins: [`Outcome::Final`]).
//! 4. The answer waits [`FENCE`], longer than `FRESH`: every attempt admitted after it has
//!    seen the marker, so a call whose cancel was answered is never invoked again. An attempt
//!    already running is aborted when its worker next refreshes.

use std::time::Duration;

use bytes::Bytes;

use super::record::{self, CallStatus, Event, Kind, State};
use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};

/// How long a cancel waits after its marker is stored before it is answered.
pub const FENCE: Duration = Duration::from_secs(1);
/// Compare-and-set tries before giving up (each lost one means a worker wrote meanwhile).
const SWAP_TRIES: u32 = 8;
/// The error a cancelled call's status carries.
pub const CANCELLED_ERROR: &str = "cancelled by a caller";

/// The bucket of cancel markers of `queue`.
pub fn bucket(queue: &str) -> String {
    format!("OF_{queue}_cancelled")
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call is cancelled: not invoked from now on.
    Cancelled,
    /// No status is known for the call on this queue.
    Unknown,
    /// The call had already ended, in this state.
    Final(State),
}

/// Cancel `call_id` on the queue whose calls bucket is `calls` and markers bucket is
/// `markers` (`at`: now, unix milliseconds). Waits [`FENCE`] before answering
/// [`Outcome::Cancelled`].
pub async fn cancel(
    store: &dyn KeyValue,
    calls: &KvSpec,
    markers: &KvSpec,
    call_id: &str,
    at: u64,
) -> Result<Outcome, BrokerError> {
    let Some(key) = super::key::of(call_id) else {
        return Ok(Outcome::Unknown);
    };
    let Some((status, revision)) = entry(store, &calls.bucket, &key).await? else {
        return Ok(Outcome::Unknown);
    };
    if status.state.is_terminal() {
        return Ok(Outcome::Final(status.state));
    }
    put_marker(store, markers, &key, at).await?;
    let outcome = mark_cancelled(store, &calls.bucket, &key, (status, revision), at).await?;
    if outcome == Outcome::Cancelled {
        tokio::time::sleep(FENCE).await;
    }
    Ok(outcome)
}

/// The event that ends a call as cancelled.
pub fn event(function: &str, attempts: u32, at: u64) -> Event {
    Event {
        function: function.to_string(),
        at,
        kind: Kind::Finished {
            state: State::Cancelled,
            attempts,
            status: None,
            error: Some(CANCELLED_ERROR.to_string()),
            reason: None,
        },
    }
}

/// Set the stored status to cancelled, starting from `known` (status and revision), unless
/// another write made it terminal first.
async fn mark_cancelled(
    store: &dyn KeyValue,
    bucket: &str,
    key: &str,
    known: (CallStatus, u64),
    at: u64,
) -> Result<Outcome, BrokerError> {
    let (mut status, mut revision) = known;
    for _ in 0..SWAP_TRIES {
        let cancelled = event(&status.function, status.attempts, at);
        let Some(next) = record::apply(Some(&status), &cancelled) else {
            return Ok(Outcome::Final(status.state));
        };
        let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
        match store.kv_swap(bucket, key, value, revision).await {
            Ok(_) => return Ok(Outcome::Cancelled),
            Err(BrokerError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        match entry(store, bucket, key).await? {
            Some(read) => (status, revision) = read,
            // Expired meanwhile: the marker still stops it.
            None => return Ok(Outcome::Cancelled),
        }
    }
    Err(BrokerError::Conflict {
        key: key.to_string(),
    })
}

/// Store the marker (creating the bucket the first time).
async fn put_marker(
    store: &dyn KeyValue,
    markers: &KvSpec,
    key: &str,
    at: u64,
) -> Result<(), BrokerError> {
    let value = Bytes::from(format!("{{\"cancelled_at\":{at}}}"));
    kv_lazy::put(store, markers, key, value).await.map(drop)
}

/// The stored status of `key` and its revision; `None` when unknown (or unreadable).
pub(super) async fn entry(
    store: &dyn KeyValue,
    bucket: &str,
    key: &str,
) -> Result<Option<(CallStatus, u64)>, BrokerError> {
    let entry = kv_lazy::entry(store, bucket, key).await?;
    Ok(entry.and_then(|(bytes, revision)| {
        serde_json::from_slice(&bytes)
            .ok()
            .map(|status| (status, revision))
    }))
}

#[cfg(test)]
mod tests;
