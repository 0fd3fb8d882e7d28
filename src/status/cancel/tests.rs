use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::broker::memory::{MemoryBroker, MemoryLimits};
use crate::clock::SystemClock;
use crate::config::Storage;

fn spec(bucket: String) -> KvSpec {
    KvSpec {
        bucket,
        ttl: Duration::from_secs(3600),
        storage: Storage::Memory,
        replicas: 1,
    }
}

fn specs() -> (KvSpec, KvSpec) {
    (spec(crate::status::bucket("q")), spec(super::bucket("q")))
}

async fn store_status(store: &MemoryBroker, calls: &KvSpec, id: &str, state: State) {
    store.ensure_kv(calls).await.unwrap();
    let status = CallStatus {
        state,
        function: "f".into(),
        attempts: 2,
        last_status: Some(500),
        error: None,
        reason: None,
        enqueued_at: Some(1),
        started_at: Some(2),
        finished_at: None,
        not_before: None,
        next_attempt_at: None,
    };
    let value = Bytes::from(serde_json::to_vec(&status).unwrap());
    store.kv_put(&calls.bucket, id, value).await.unwrap();
}

fn broker() -> MemoryBroker {
    MemoryBroker::new(Arc::new(SystemClock), MemoryLimits::default())
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_is_marked_and_its_status_says_cancelled_after_the_fence() {
    let store = broker();
    let (calls, markers) = specs();
    store_status(&store, &calls, "c1", State::Retrying).await;
    let started = tokio::time::Instant::now();
    let outcome = cancel(&store, &calls, &markers, "c1", 77).await.unwrap();
    assert_eq!(outcome, Outcome::Cancelled);
    assert!(started.elapsed() >= FENCE, "answered before the fence");
    assert_eq!(store.kv_keys(&markers.bucket).await.unwrap(), vec!["c1"]);
    let status = crate::status::read(&store, "q", "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.state, State::Cancelled);
    assert_eq!(status.attempts, 2);
    assert_eq!(status.finished_at, Some(77));
    assert_eq!(status.error.as_deref(), Some(CANCELLED_ERROR));
}

#[tokio::test(start_paused = true)]
async fn unknown_and_final_calls_leave_no_marker() {
    let store = broker();
    let (calls, markers) = specs();
    assert_eq!(
        cancel(&store, &calls, &markers, "nope", 1).await.unwrap(),
        Outcome::Unknown
    );
    store_status(&store, &calls, "done", State::Succeeded).await;
    assert_eq!(
        cancel(&store, &calls, &markers, "done", 1).await.unwrap(),
        Outcome::Final(State::Succeeded)
    );
    assert_eq!(
        cancel(&store, &calls, &markers, "", 1).await.unwrap(),
        Outcome::Unknown
    );
    assert!(matches!(
        store.kv_keys(&markers.bucket).await,
        Err(BrokerError::NoBucket { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_second_cancel_finds_the_call_final() {
    let store = broker();
    let (calls, markers) = specs();
    store_status(&store, &calls, "c2", State::Queued).await;
    assert_eq!(
        cancel(&store, &calls, &markers, "c2", 5).await.unwrap(),
        Outcome::Cancelled
    );
    assert_eq!(
        cancel(&store, &calls, &markers, "c2", 6).await.unwrap(),
        Outcome::Final(State::Cancelled)
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_ends_the_call_first_wins() {
    let store = broker();
    let (calls, _) = specs();
    store_status(&store, &calls, "c3", State::Running).await;
    let (status, revision) = entry(&store, &calls.bucket, "c3").await.unwrap().unwrap();
    // A worker writes `succeeded` between the cancel's read and its compare-and-set.
    store_status(&store, &calls, "c3", State::Succeeded).await;
    let outcome = mark_cancelled(&store, &calls.bucket, "c3", (status, revision), 9)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Final(State::Succeeded));
    let status = crate::status::read(&store, "q", "c3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.state, State::Succeeded);
}
