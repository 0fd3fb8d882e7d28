//! The exporter: spans wait in a bounded queue and a task of their own posts them in batches.
//! Recording a span never waits: when the queue is full (the endpoint is slow or unreachable)
//! the span is dropped and counted, so an exporter never slows or breaks an invocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::otlp;
use super::settings::Settings;
use super::span::Span;

/// How often at most a failing exporter says so in the logs.
const WARN_EVERY: Duration = Duration::from_secs(60);

enum Item {
    Span(Box<Span>),
    /// Send what waits, then stop; answer when done.
    Flush(oneshot::Sender<()>),
}

/// The exporter's inbox.
pub(super) struct Exporter {
    tx: mpsc::Sender<Item>,
    /// Spans dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    /// Start the exporter's task on the current runtime.
    pub(super) fn start(settings: &Settings) -> Exporter {
        crate::invoke::http::install_crypto_provider();
        let (tx, rx) = mpsc::channel(settings.max_queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .unwrap_or_default();
        let sender = Sender {
            settings: settings.clone(),
            client,
            dropped: dropped.clone(),
            failures: 0,
            warned: None,
        };
        tokio::spawn(sender.run(rx));
        Exporter { tx, dropped }
    }

    /// Queue `span` for export, or drop it when the queue is full.
    pub(super) fn record(&self, span: Span) {
        if self.tx.try_send(Item::Span(Box::new(span))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send every span recorded so far, waiting at most `within`.
    pub(super) async fn flush(&self, within: Duration) {
        let (done, sent) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Item::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        let _ = tokio::time::timeout(within, flushed).await;
    }
}

/// The exporter's task: batches spans and posts them.
struct Sender {
    settings: Settings,
    client: reqwest::Client,
    dropped: Arc<AtomicU64>,
    /// Exports failed since the last warning.
    failures: u64,
    warned: Option<Instant>,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        let mut batch: Vec<Span> = Vec::with_capacity(self.settings.max_batch);
        let mut due = Instant::now() + self.settings.schedule_delay;
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                () = tokio::time::sleep_until(due) => {
                    self.send(&mut batch).await;
                    due = Instant::now() + self.settings.schedule_delay;
                    continue;
                }
            };
            match item {
                Some(Item::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= self.settings.max_batch {
                        self.send(&mut batch).await;
                    }
                }
                Some(Item::Flush(done)) => {
                    self.send(&mut batch).await;
                    let _ = done.send(());
                }
                None => {
                    self.send(&mut batch).await;
                    return;
                }
            }
        }
    }

    /// Post `batch` (emptied, whatever the outcome: a span is never sent twice).
    async fn send(&mut self, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let body = otlp::export_request(&self.settings.resource, batch);
        let count = batch.len();
        batch.clear();
        let mut req = self
            .client
            .post(self.settings.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        for (k, v) in &self.settings.headers {
            req = req.header(k, v);
        }
        let outcome = match req.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("answered {}", resp.status().as_u16())),
            Err(e) => Err(if e.is_timeout() {
                "timed out".to_string()
            } else {
                "cannot connect".to_string()
            }),
        };
        if let Err(why) = outcome {
            self.failures += 1;
            self.warn(count, &why);
        }
    }

    /// Say that spans are lost, at most once per [`WARN_EVERY`].
    fn warn(&mut self, lost: usize, why: &str) {
        let now = Instant::now();
        if self
            .warned
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return;
        }
        self.warned = Some(now);
        tracing::warn!(
            endpoint = %crate::invoke::request::loggable_url(&self.settings.endpoint),
            error = why,
            spansLost = lost,
            exportsFailed = self.failures,
            spansDropped = self.dropped.load(Ordering::Relaxed),
            "Cannot export spans; invocations go on without them"
        );
        self.failures = 0;
    }
}
