//! Shared by the pipeline benchmarks (`pipeline.rs`, criterion; `hot_path.rs`, gungraun): the
//! real [`Worker`] over the embedded [`MemoryBroker`], with an in-process function instead of
//! HTTP. What it measures is the worker's own work per message: pull, decode, decide, build
//! the request, metrics, (callback), ack; no network, no JSON on a socket.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use queue_worker::broker::memory::{MemoryBroker, MemoryLimits};
use queue_worker::broker::{Admin, Outgoing, Publish, StreamSpec};
use queue_worker::clock::{Clock, SystemClock};
use queue_worker::config::{Config, Storage};
use queue_worker::ingress::{Submission, prepare};
use queue_worker::invoke::{InvokeError, Invoker};
use queue_worker::telemetry::metrics::Metrics;
use queue_worker::telemetry::server::Health;
use queue_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

pub mod ingress;

/// Body size of the benchmark's invocations (as `ci/bench`).
pub const BODY_BYTES: usize = 512;

/// The function: answers `200 ok` at once; stops the worker once `target` calls were made.
pub struct InProcess {
    pub invoked: AtomicU64,
    pub callbacks: AtomicU64,
    target: u64,
    done: CancellationToken,
}

fn ok_response() -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::from_static(b"ok\n"));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

#[async_trait]
impl Invoker for InProcess {
    async fn invoke(
        &self,
        req: http::Request<Bytes>,
        _timeout: Duration,
        _attempt: queue_worker::invoke::Attempt,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        std::hint::black_box(&req);
        if self.invoked.fetch_add(1, Ordering::Relaxed) + 1 >= self.target {
            self.done.cancel();
        }
        Ok(ok_response())
    }

    async fn callback(
        &self,
        req: http::Request<Bytes>,
        _timeout: Duration,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        std::hint::black_box(&req);
        self.callbacks.fetch_add(1, Ordering::Relaxed);
        Ok(ok_response())
    }
}

/// The worker's configuration for the benchmark.
pub fn config(max_inflight: usize) -> Config {
    Config {
        max_inflight,
        nats_storage: Storage::Memory,
        gateway_url: "http://gateway.openfaas:8080".into(),
        ..Config::default()
    }
}

/// `n` invocations of `bench-fn` with 512-byte bodies, built as the ingress builds them from
/// `POST /async-function/bench-fn` (with `X-Callback-Url` when `callback`).
pub fn messages(cfg: &Config, n: usize, callback: bool) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            let mut header = std::collections::BTreeMap::new();
            for (k, v) in [
                ("Accept", "*/*"),
                ("Content-Type", "application/octet-stream"),
                ("User-Agent", "curl/8.5.0"),
            ] {
                header.insert(k.to_string(), vec![v.to_string()]);
            }
            header.insert("Content-Length".into(), vec![BODY_BYTES.to_string()]);
            if callback {
                header.insert(
                    "X-Callback-Url".into(),
                    vec!["http://receiver.example:9000/done".into()],
                );
            }
            let body: Vec<u8> = (0..BODY_BYTES)
                .map(|j| b'a' + ((i + j) % 26) as u8)
                .collect();
            prepare(
                cfg,
                &SystemClock,
                Submission {
                    function: "bench-fn".into(),
                    path: String::new(),
                    query: String::new(),
                    header,
                    host: "127.0.0.1:8080".into(),
                    body: Bytes::from(body),
                },
            )
            .expect("a valid submission")
            .outgoing
        })
        .collect()
}

/// A broker holding the messages, and the worker ready to process them.
pub struct Pipeline {
    config: Arc<Config>,
    broker: Arc<MemoryBroker>,
    invoker: Arc<InProcess>,
    done: CancellationToken,
    n: usize,
}

impl Pipeline {
    /// Publish `msgs` to a fresh embedded broker (must run inside a tokio runtime).
    pub async fn prefilled(max_inflight: usize, msgs: Vec<Outgoing>) -> Pipeline {
        let config = config(max_inflight);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let broker = Arc::new(MemoryBroker::new(
            clock,
            MemoryLimits {
                max_messages: 10_000_000,
                max_bytes: 8 << 30,
                ..MemoryLimits::default()
            },
        ));
        broker
            .ensure_stream(&StreamSpec::work_queue(
                &config.queue_name,
                Storage::Memory,
                1,
            ))
            .await
            .expect("stream");
        let n = msgs.len();
        for m in msgs {
            broker.publish(m).await.expect("publish");
        }
        let done = CancellationToken::new();
        Pipeline {
            config: Arc::new(config),
            broker,
            invoker: Arc::new(InProcess {
                invoked: AtomicU64::new(0),
                callbacks: AtomicU64::new(0),
                target: n as u64,
                done: done.clone(),
            }),
            done,
            n,
        }
    }

    /// Run the worker until every message has been invoked, then let it drain (every
    /// message settled) and stop. Returns the calls and callbacks made.
    pub async fn run(self) -> (u64, u64) {
        let ports = queue_worker::Ports {
            broker: self.broker.clone(),
            invoker: self.invoker.clone(),
            clock: Arc::new(SystemClock),
            rng: Arc::new(queue_worker::rng::SeededRng::seeded(1)),
            status_store: None,
        };
        let worker = Worker::new(
            self.config.clone(),
            ports,
            Arc::new(Metrics::new()),
            Health::new(),
        );
        if self.n > 0 {
            worker.run(self.done.clone()).await;
        }
        debug_assert_eq!(self.broker.usage().messages, 0, "every message acked");
        (
            self.invoker.invoked.load(Ordering::Relaxed),
            self.invoker.callbacks.load(Ordering::Relaxed),
        )
    }
}
