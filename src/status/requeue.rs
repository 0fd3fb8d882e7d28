//! A dead-lettered call stored again by a redrive (`queue-worker dlq redrive`): its status goes
//! back to `queued`, with no attempts, so it reads as the fresh run it is.

use bytes::Bytes;

use super::record::{CallStatus, State};
use crate::broker::{BrokerError, KeyValue};

/// Compare-and-set tries before giving up (each lost one means a worker wrote meanwhile).
const SWAP_TRIES: u32 = 8;

/// The status of a redriven call, from its dead-lettered one (`at`: unix milliseconds); `None`
/// when the call is not dead-lettered (it already runs again, or it ended otherwise).
pub fn requeued(current: &CallStatus, at: u64) -> Option<CallStatus> {
    (current.state == State::DeadLettered).then(|| CallStatus {
        state: State::Queued,
        function: current.function.clone(),
        attempts: 0,
        last_status: None,
        error: None,
        reason: None,
        enqueued_at: Some(at),
        started_at: None,
        finished_at: None,
        not_before: None,
        next_attempt_at: None,
    })
}

/// Set `call_id`'s status in `bucket` to [`requeued`]; `Ok(false)` when there is no
/// dead-lettered status to change.
pub async fn requeue(
    store: &dyn KeyValue,
    bucket: &str,
    call_id: &str,
    at: u64,
) -> Result<bool, BrokerError> {
    let Some(key) = super::key::of(call_id) else {
        return Ok(false);
    };
    for _ in 0..SWAP_TRIES {
        let Some((status, revision)) = super::cancel::entry(store, bucket, &key).await? else {
            return Ok(false);
        };
        let Some(next) = requeued(&status, at) else {
            return Ok(false);
        };
        let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
        match store.kv_swap(bucket, &key, value, revision).await {
            Ok(_) => return Ok(true),
            Err(BrokerError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::Conflict { key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(state: State) -> CallStatus {
        CallStatus {
            state,
            function: "f".into(),
            attempts: 3,
            last_status: Some(500),
            error: Some("boom".into()),
            reason: Some("exhausted".into()),
            enqueued_at: Some(1),
            started_at: Some(2),
            finished_at: Some(3),
            not_before: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn only_a_dead_lettered_call_is_requeued_and_starts_afresh() {
        let again = requeued(&with(State::DeadLettered), 10).expect("requeued");
        assert_eq!(again.state, State::Queued);
        assert_eq!((again.attempts, again.enqueued_at), (0, Some(10)));
        assert_eq!(
            (again.started_at, again.finished_at, again.reason),
            (None, None, None)
        );
        for other in [
            State::Succeeded,
            State::Running,
            State::Cancelled,
            State::Expired,
        ] {
            assert_eq!(requeued(&with(other), 10), None, "{other:?}");
        }
    }
}
