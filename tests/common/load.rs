//! Bounded invocation loads against worker ingresses, and the checks that every accepted
//! invocation reached its terminal state (a callback).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::http::{CallbackReceiver, Recorded};
use super::worker::Worker;

/// A client that waits long enough for a 503 after the PubAck timeout.
pub fn client() -> reqwest::Client {
    let _ = super::worker::http_client(); // installs the rustls provider
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("reqwest client")
}

/// What the load saw.
#[derive(Default)]
pub struct Tally {
    pub accepted: Mutex<HashSet<String>>,
    /// 503s and transport errors, retried.
    pub refused: AtomicUsize,
    /// Invocations given up on (never accepted within the deadline).
    pub abandoned: Mutex<Vec<String>>,
}

impl Tally {
    /// The accepted call ids so far.
    pub fn accepted(&self) -> HashSet<String> {
        self.accepted.lock().unwrap().clone()
    }

    /// Refused attempts (503 or transport error) so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn accepted_count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// `<prefix>-<i>` for `i` in `0..n`, `i` zero-padded to `width` digits: call ids for a load.
pub fn ids(prefix: &str, n: usize, width: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:0width$}")).collect()
}

/// Where a load goes: worker ingresses (round-robin) and the callback URL of every invocation.
pub struct Target {
    pub ingresses: Vec<String>,
    pub callback: String,
}

impl Target {
    /// The ingresses of `workers`; every invocation names `callback`.
    pub fn new<'a>(workers: impl IntoIterator<Item = &'a Worker>, callback: String) -> Target {
        let ingresses = workers.into_iter().map(|w| w.ingress().to_string());
        Target {
            ingresses: ingresses.collect(),
            callback,
        }
    }

    /// [`Target::post`] with a tally of its own, returned.
    pub async fn post_all(&self, ids: Vec<String>, per_second: u32, give_up: Duration) -> Tally {
        let tally = Tally::default();
        self.post(ids, per_second, &tally, give_up).await;
        tally
    }

    /// Posts invocations `ids` at `per_second`, 32 at a time, round-robin over the ingresses.
    /// A 503 or transport error is retried (same `X-Call-Id`, next ingress) for up to
    /// `give_up`; any other status than 202/503 fails the test.
    pub async fn post(&self, ids: Vec<String>, per_second: u32, tally: &Tally, give_up: Duration) {
        let (ingresses, callback) = (&self.ingresses, self.callback.as_str());
        let http = client();
        let start = tokio::time::Instant::now();
        let interval = Duration::from_secs(1) / per_second;
        futures::stream::iter(ids.into_iter().enumerate())
            .for_each_concurrent(32, |(n, id)| {
                let http = http.clone();
                async move {
                    tokio::time::sleep_until(start + interval * n as u32).await;
                    let deadline = Instant::now() + give_up;
                    let mut attempt = n;
                    loop {
                        let ingress = &ingresses[attempt % ingresses.len()];
                        attempt += 1;
                        let resp = http
                            .post(format!("{ingress}/async-function/echo"))
                            .header("X-Call-Id", id.as_str())
                            .header("X-Callback-Url", callback)
                            .body(id.clone())
                            .send()
                            .await;
                        match resp.map(|r| r.status().as_u16()) {
                            Ok(202) => {
                                tally.accepted.lock().unwrap().insert(id);
                                return;
                            }
                            Ok(503) | Err(_) => {
                                tally.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(other) => panic!("{id}: ingress {ingress} answered {other}"),
                        }
                        if Instant::now() >= deadline {
                            tally.abandoned.lock().unwrap().push(id);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
            .await;
    }
}

/// Call ids seen by `rec` requests (`X-Call-Id`), with how many times each.
pub fn call_ids(reqs: &[Recorded]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in reqs {
        if let Some(id) = r.header("x-call-id") {
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until every id in `accepted` has a callback with `X-Function-Status: 200`;
/// panics listing the missing ones.
pub async fn wait_all_called_back(
    receiver: &CallbackReceiver,
    accepted: &HashSet<String>,
    timeout: Duration,
) {
    let missing = missing_callbacks(receiver, accepted, timeout).await;
    if !missing.is_empty() {
        panic!(
            "{} of {} accepted invocations have no successful callback after {timeout:?}, \
             e.g. {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

/// The ids in `accepted` still without a callback with `X-Function-Status: 200` once all have
/// one or `timeout` has passed (sorted; empty when all have one).
pub async fn missing_callbacks(
    receiver: &CallbackReceiver,
    accepted: &HashSet<String>,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let reqs = receiver.requests();
        let ok: HashSet<&str> = reqs
            .iter()
            .filter(|r| r.header("x-function-status") == Some("200"))
            .filter_map(|r| r.header("x-call-id"))
            .collect();
        let mut missing: Vec<String> = accepted
            .iter()
            .filter(|id| !ok.contains(id.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            missing.sort();
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
