//! The client's cancels (the cancel-race scenario): each call with a `cancel_at` is cancelled
//! at that time through the same code as `DELETE /async-function/{id}`, the answer recorded;
//! at the end of the run the stored status of each is read back for the checker.

use std::sync::Arc;
use std::time::Duration;

use queue_worker::broker::Broker;
use queue_worker::clock::Clock;
use queue_worker::config::Config;
use queue_worker::status::cancel::Outcome;
use queue_worker::status::{Buckets, cancel_in, unix_ms};

use crate::SimClock;
use crate::history::{Ev, History};
use crate::plan::{QUEUE, RunConfig};

/// Tries of one cancel or status read when the broker does not answer.
const TRIES: u32 = 5;

/// Cancel each call at its `cancel_at` (from `start`), concurrently; returns when all were
/// answered.
pub async fn cancel_calls(
    cfg: Arc<RunConfig>,
    config: Arc<Config>,
    broker: Arc<dyn Broker>,
    hist: History,
    start: tokio::time::Instant,
) {
    let mut tasks = Vec::new();
    for c in cfg.calls.iter().filter(|c| c.cancel_at.is_some()) {
        let at = start + c.cancel_at.unwrap_or_default();
        let (id, config, broker, hist) =
            (c.id.clone(), config.clone(), broker.clone(), hist.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            hist.record(Ev::CancelAsk { call: id.clone() });
            let outcome = cancel_one(&config, broker.as_ref(), &id).await;
            hist.record(Ev::CancelAnswer { call: id, outcome });
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Cancel `id`, trying again while the broker does not answer; the outcome as recorded.
async fn cancel_one(config: &Config, broker: &dyn Broker, id: &str) -> String {
    let buckets = Buckets::of(config);
    for _ in 0..TRIES {
        let now = unix_ms(SimClock.now());
        match cancel_in(broker, buckets, QUEUE, id, now).await {
            Ok(Outcome::Cancelled) => return "cancelled".into(),
            Ok(Outcome::Unknown) => return "unknown".into(),
            Ok(Outcome::Final(state)) => return format!("final:{}", state.as_str()),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    "error".into()
}

/// Record the stored status of every call the client cancelled.
pub async fn read_final_statuses(cfg: &RunConfig, broker: &dyn Broker, hist: &History) {
    for c in cfg.calls.iter().filter(|c| c.cancel_at.is_some()) {
        let mut state = "unread".to_string();
        for _ in 0..TRIES {
            match queue_worker::status::read(broker, QUEUE, &c.id).await {
                Ok(Some(status)) => {
                    state = status.state.as_str().to_string();
                    break;
                }
                Ok(None) => {
                    state = "none".to_string();
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        hist.record(Ev::FinalStatus {
            call: c.id.clone(),
            state,
        });
    }
}
