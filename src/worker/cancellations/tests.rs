use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::broker::KvSpec;
use crate::broker::memory::{MemoryBroker, MemoryLimits};
use crate::clock::SystemClock;
use crate::config::Storage;

fn broker() -> Arc<MemoryBroker> {
    Arc::new(MemoryBroker::new(
        Arc::new(SystemClock),
        MemoryLimits::default(),
    ))
}

async fn mark(store: &MemoryBroker, call_id: &str) {
    let spec = KvSpec {
        bucket: cancel::bucket("q"),
        ttl: Duration::from_secs(60),
        storage: Storage::Memory,
        replicas: 1,
    };
    store.ensure_kv(&spec).await.unwrap();
    let key = key::of(call_id).unwrap();
    store
        .kv_put(&spec.bucket, &key, Bytes::from_static(b"{}"))
        .await
        .unwrap();
}

async fn admitted(c: &Cancellations, call_id: &str) -> Option<Running> {
    match tokio::time::timeout(Duration::from_secs(5), c.admit(call_id)).await {
        Ok(Admission::Go(running)) => Some(running),
        Ok(Admission::Cancelled) => None,
        Err(_) => panic!("admit of {call_id} did not decide within 5 s"),
    }
}

#[tokio::test(start_paused = true)]
async fn calls_go_until_cancelled_and_then_never_again() {
    let store = broker();
    let c = Cancellations::start(store.clone(), "q", CancellationToken::new());
    assert!(
        admitted(&c, "a").await.is_some(),
        "nothing cancelled: a goes"
    );
    mark(&store, "a").await;
    // Whatever was known before the marker, an admit a fence later has seen it.
    tokio::time::sleep(cancel::FENCE).await;
    assert!(admitted(&c, "a").await.is_none(), "a was cancelled");
    assert!(admitted(&c, "b").await.is_some(), "b was not");
    // Odd ids are keyed apart, and cancelled all the same.
    mark(&store, "x/y").await;
    tokio::time::sleep(cancel::FENCE).await;
    assert!(admitted(&c, "x/y").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_running_attempt_is_aborted_when_its_call_is_cancelled() {
    let store = broker();
    let c = Cancellations::start(store.clone(), "q", CancellationToken::new());
    let running = admitted(&c, "r").await.unwrap();
    let other = admitted(&c, "s").await.unwrap();
    mark(&store, "r").await;
    tokio::time::timeout(REFRESH * 3, running.aborted())
        .await
        .expect("the running attempt of r is aborted within a few refreshes");
    assert!(running.is_aborted());
    assert!(!other.is_aborted(), "s runs on");
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_stops_refreshing_and_an_admit_wakes_it() {
    let store = broker();
    let c = Cancellations::start(store.clone(), "q", CancellationToken::new());
    drop(admitted(&c, "a").await);
    tokio::time::sleep(IDLE_AFTER + Duration::from_secs(10)).await;
    let idle_from = c.shared.lock().fetched_from.unwrap();
    assert!(
        idle_from.elapsed() >= Duration::from_secs(9),
        "still refreshing while idle"
    );
    mark(&store, "a").await;
    assert!(
        admitted(&c, "a").await.is_none(),
        "a stale snapshot was used"
    );
}

/// A store that cannot answer.
struct Away;

#[async_trait]
impl KeyValue for Away {
    async fn ensure_kv(&self, _: &KvSpec) -> Result<(), BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_put(&self, _: &str, _: &str, _: Bytes) -> Result<u64, BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_get(&self, _: &str, _: &str) -> Result<Option<Bytes>, BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_delete(&self, _: &str, _: &str) -> Result<(), BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_entry(&self, _: &str, _: &str) -> Result<Option<(Bytes, u64)>, BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_revision(&self, _: &str) -> Result<u64, BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_keys(&self, _: &str) -> Result<Vec<String>, BrokerError> {
        Err(BrokerError::Disconnected)
    }
    async fn kv_swap(&self, _: &str, _: &str, _: Bytes, _: u64) -> Result<u64, BrokerError> {
        Err(BrokerError::Disconnected)
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_admitted_while_the_cancelled_calls_cannot_be_read() {
    let c = Cancellations::start(Arc::new(Away), "q", CancellationToken::new());
    let waited = tokio::time::timeout(Duration::from_secs(30), c.admit("a")).await;
    assert!(
        waited.is_err(),
        "admitted without knowing the cancelled calls"
    );
    // A call without an id cannot be cancelled: it goes.
    assert!(matches!(c.admit("").await, Admission::Go(_)));
}

/// A store that cannot answer for its first `away` revision reads.
struct AwayAWhile {
    inner: Arc<MemoryBroker>,
    away: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl KeyValue for AwayAWhile {
    async fn ensure_kv(&self, spec: &KvSpec) -> Result<(), BrokerError> {
        self.inner.ensure_kv(spec).await
    }
    async fn kv_put(&self, b: &str, k: &str, v: Bytes) -> Result<u64, BrokerError> {
        self.inner.kv_put(b, k, v).await
    }
    async fn kv_get(&self, b: &str, k: &str) -> Result<Option<Bytes>, BrokerError> {
        self.inner.kv_get(b, k).await
    }
    async fn kv_delete(&self, b: &str, k: &str) -> Result<(), BrokerError> {
        self.inner.kv_delete(b, k).await
    }
    async fn kv_entry(&self, b: &str, k: &str) -> Result<Option<(Bytes, u64)>, BrokerError> {
        self.inner.kv_entry(b, k).await
    }
    async fn kv_revision(&self, b: &str) -> Result<u64, BrokerError> {
        let left = self.away.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.away
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(BrokerError::Disconnected);
        }
        self.inner.kv_revision(b).await
    }
    async fn kv_keys(&self, b: &str) -> Result<Vec<String>, BrokerError> {
        self.inner.kv_keys(b).await
    }
    async fn kv_swap(&self, b: &str, k: &str, v: Bytes, e: u64) -> Result<u64, BrokerError> {
        self.inner.kv_swap(b, k, v, e).await
    }
}

#[tokio::test(start_paused = true)]
async fn admits_waiting_through_a_long_outage_go_once_nats_answers_again() {
    // 100 failed refreshes: 20 s, far longer than the idle time after the last admit.
    let store = Arc::new(AwayAWhile {
        inner: broker(),
        away: 100.into(),
    });
    let c = Cancellations::start(store, "q", CancellationToken::new());
    let admitted = tokio::time::timeout(Duration::from_secs(60), c.admit("a")).await;
    assert!(
        matches!(admitted, Ok(Admission::Go(_))),
        "the admit never went after the outage"
    );
}
