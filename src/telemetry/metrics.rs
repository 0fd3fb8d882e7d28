//! Prometheus metrics (README: "Metrics"): the OpenFaaS queue-worker names plus ours.
//!
//! One [`Metrics`] per process (or per simulated worker), passed in: no globals.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub queue_name: String,
    /// `name.namespace`
    pub function_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub queue_name: String,
    pub function_name: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub queue_name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub queue_name: String,
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5 ms .. ~82 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn delay_histogram() -> Histogram {
    // 1 ms .. ~9 h: queue delays range from instant to hours of backlog.
    Histogram::new(exponential_buckets(0.001, 3.0, 16))
}

/// Every metric the process exports.
pub struct Metrics {
    registry: Registry,
    /// `queue_worker_pending_messages{queue_name,function_name}`
    pub pending_messages: Family<FunctionLabels, Gauge>,
    /// `queue_worker_messages_processed_total{queue_name}`
    pub messages_processed: Family<QueueLabels, Counter>,
    /// `queue_worker_messages_submitted_total{queue_name}` (a gauge, as OpenFaaS has it)
    pub messages_submitted: Family<QueueLabels, Gauge>,
    /// `queue_worker_function_invocation_inflight{queue_name,function_name}`
    pub inflight: Family<FunctionLabels, Gauge>,
    /// `queue_worker_nats_reconnect_total`
    pub nats_reconnects: Counter,
    /// `queue_worker_invocations_total{queue_name,function_name,code}`
    pub invocations: Family<CodeLabels, Counter>,
    /// `queue_worker_invocation_duration_seconds{queue_name,function_name}`
    pub invocation_duration: HistogramFamily<FunctionLabels>,
    /// `queue_worker_queue_delay_seconds{queue_name}` (enqueue → first attempt)
    pub queue_delay: HistogramFamily<QueueLabels>,
    /// `queue_worker_retries_total{queue_name,function_name,code}`
    pub retries: Family<CodeLabels, Counter>,
    /// `queue_worker_retry_budget_exceeded_total{queue_name,function_name}`
    pub retry_budget_exceeded: Family<FunctionLabels, Counter>,
    /// `queue_worker_pushed_back_total{queue_name,function_name}`: calls a function refused
    /// with a 429 while the worker ran others of it, held for another try without costing an
    /// attempt.
    pub pushed_back: Family<FunctionLabels, Counter>,
    /// `queue_worker_dead_letters_total{queue_name,reason}`
    pub dead_letters: Family<ReasonLabels, Counter>,
    /// `queue_worker_dead_letters_dropped_total{queue_name,reason}`: messages terminated
    /// without a dead letter because even its smallest form was too large for the broker.
    pub dead_letters_dropped: Family<ReasonLabels, Counter>,
    /// `queue_worker_callbacks_total{queue_name,outcome}`
    pub callbacks: Family<OutcomeLabels, Counter>,
    /// `queue_worker_consumers{queue_name}`
    pub consumers: Family<QueueLabels, Gauge>,
    /// `queue_worker_queue_paused{queue_name,function_name}`: 1 while paused by an operator;
    /// `function_name="*"` for the whole queue.
    pub queue_paused: Family<FunctionLabels, Gauge>,
    /// `queue_worker_flow_waiting{queue_name,function_name}`: calls this worker holds back
    /// because the function is at its flow limits (`max_concurrency`, `rate`).
    pub flow_waiting: Family<FunctionLabels, Gauge>,
    /// `queue_worker_oldest_message_age_seconds{queue_name,function_name}`
    pub oldest_message_age: Family<FunctionLabels, Gauge<f64, AtomicU64>>,
    /// `queue_worker_dead_letters_waiting{queue_name,reason}`: dead letters kept now.
    pub dead_letters_waiting: Family<ReasonLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
            pending_messages: Family::default(),
            messages_processed: Family::default(),
            messages_submitted: Family::default(),
            inflight: Family::default(),
            nats_reconnects: Counter::default(),
            invocations: Family::default(),
            invocation_duration: Family::new_with_constructor(duration_histogram),
            queue_delay: Family::new_with_constructor(delay_histogram),
            retries: Family::default(),
            retry_budget_exceeded: Family::default(),
            pushed_back: Family::default(),
            dead_letters: Family::default(),
            dead_letters_dropped: Family::default(),
            callbacks: Family::default(),
            consumers: Family::default(),
            queue_paused: Family::default(),
            flow_waiting: Family::default(),
            oldest_message_age: Family::default(),
            dead_letters_waiting: Family::default(),
        };
        metrics.register_all();
        metrics
    }

    /// Registers every handle (the registry keeps clones: they share their values): the
    /// OpenFaaS families, then ours.
    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "queue_worker_pending_messages",
            "Amount of messages waiting to be processed",
            self.pending_messages.clone(),
        );
        r.register(
            "queue_worker_messages_processed",
            "Total number of messages processed",
            self.messages_processed.clone(),
        );
        r.register(
            "queue_worker_messages_submitted_total",
            "Total number of messages submitted to the queue",
            self.messages_submitted.clone(),
        );
        r.register(
            "queue_worker_function_invocation_inflight",
            "Total number of inflight function requests made by the queue-worker",
            self.inflight.clone(),
        );
        r.register(
            "queue_worker_nats_reconnect",
            "Total number of times the NATS client has reconnected",
            self.nats_reconnects.clone(),
        );
        self.register_ours();
    }

    /// The families OpenFaaS's queue-worker does not have.
    fn register_ours(&mut self) {
        let r = &mut self.registry;
        r.register(
            "queue_worker_invocations",
            "Function invocations by HTTP status (503 for transport errors and timeouts)",
            self.invocations.clone(),
        );
        r.register(
            "queue_worker_invocation_duration_seconds",
            "Duration of function invocations",
            self.invocation_duration.clone(),
        );
        r.register(
            "queue_worker_queue_delay_seconds",
            "Time from enqueue to the first attempt",
            self.queue_delay.clone(),
        );
        r.register(
            "queue_worker_retries",
            "Retries scheduled, by the status that caused them",
            self.retries.clone(),
        );
        r.register(
            "queue_worker_retry_budget_exceeded",
            "Retries deferred to the maximum wait because the function's retry budget was spent",
            self.retry_budget_exceeded.clone(),
        );
        r.register(
            "queue_worker_pushed_back",
            "Calls a busy function refused (429) while the worker ran others of it, held for another try without costing an attempt",
            self.pushed_back.clone(),
        );
        r.register(
            "queue_worker_dead_letters",
            "Messages moved to the dead-letter stream, by reason",
            self.dead_letters.clone(),
        );
        r.register(
            "queue_worker_dead_letters_dropped",
            "Messages terminated without a dead letter: too large for the broker even without their payload",
            self.dead_letters_dropped.clone(),
        );
        r.register(
            "queue_worker_callbacks",
            "Callbacks posted, by outcome",
            self.callbacks.clone(),
        );
        r.register(
            "queue_worker_consumers",
            "NATS consumers this worker reads from",
            self.consumers.clone(),
        );
        r.register(
            "queue_worker_queue_paused",
            "1 while an operator has paused the queue (function_name=\"*\") or the function",
            self.queue_paused.clone(),
        );
        r.register(
            "queue_worker_flow_waiting",
            "Calls this worker holds back because their function is at its flow limits",
            self.flow_waiting.clone(),
        );
        r.register(
            "queue_worker_oldest_message_age_seconds",
            "Age of the oldest message stored for the function (waiting, running or waiting to be retried)",
            self.oldest_message_age.clone(),
        );
        r.register(
            "queue_worker_dead_letters_waiting",
            "Dead letters kept in the queue's dead-letter stream, by reason",
            self.dead_letters_waiting.clone(),
        );
    }

    /// The whole registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Metric handles bound to one queue, for the hot path.
    pub fn for_queue(self: &Arc<Self>, queue: &str) -> QueueMetrics {
        let labels = QueueLabels {
            queue_name: queue.to_string(),
        };
        QueueMetrics {
            metrics: self.clone(),
            queue: queue.to_string(),
            processed: self.messages_processed.get_or_create_owned(&labels),
            queue_delay: self.queue_delay.get_or_create_owned(&labels),
            functions: Arc::new(RwLock::new(HashMap::new())),
        }
    }
}

/// At most this many functions keep cached metric handles per queue; past it, the others take
/// the slower path through the families (labels built per call), which gives the same numbers.
const MAX_CACHED_FUNCTIONS: usize = 10_000;

/// One function's hot-path metrics, looked up once instead of building label sets (three or
/// four `String`s) and hashing them on every message.
struct FunctionHandles {
    inflight: Gauge,
    duration: Histogram,
    /// `queue_worker_invocations_total` per status code seen so far.
    codes: RwLock<Vec<(u16, Counter)>>,
}

/// One function's metrics as a call uses them: its labels and, unless the cache was full,
/// its hot-path handles.
pub struct FunctionMetrics {
    labels: FunctionLabels,
    handles: Option<Arc<FunctionHandles>>,
}

/// Shortcuts for one queue's metrics.
#[derive(Clone)]
pub struct QueueMetrics {
    metrics: Arc<Metrics>,
    queue: String,
    processed: Counter,
    queue_delay: Histogram,
    /// Hot-path handles by function name (`name.namespace`).
    functions: Arc<RwLock<HashMap<String, Arc<FunctionHandles>>>>,
}

impl QueueMetrics {
    pub fn all(&self) -> &Metrics {
        &self.metrics
    }
    /// Set `queue_worker_flow_waiting` of `function` to `waiting`.
    pub fn flow_waiting(&self, function: &str, waiting: usize) {
        let labels = FunctionLabels {
            queue_name: self.queue.clone(),
            function_name: function.to_string(),
        };
        let waiting = i64::try_from(waiting).unwrap_or(i64::MAX);
        self.metrics
            .flow_waiting
            .get_or_create(&labels)
            .set(waiting);
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }
    /// The metrics of one call to `function_name` (its hot-path handles looked up once).
    pub fn function(&self, function_name: &str) -> FunctionMetrics {
        let labels = FunctionLabels {
            queue_name: self.queue.clone(),
            function_name: function_name.to_string(),
        };
        let handles = self.handles(&labels);
        FunctionMetrics { labels, handles }
    }
    pub fn processed(&self) {
        self.processed.inc();
    }

    /// The cached handles of `labels`' function, this queue's (`None`: the cache is full).
    fn handles(&self, labels: &FunctionLabels) -> Option<Arc<FunctionHandles>> {
        debug_assert_eq!(labels.queue_name, self.queue);
        let read = |m: &RwLock<HashMap<String, Arc<FunctionHandles>>>| {
            m.read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&labels.function_name)
                .cloned()
        };
        if let Some(h) = read(&self.functions) {
            return Some(h);
        }
        let mut map = self
            .functions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = map.get(&labels.function_name) {
            return Some(h.clone());
        }
        if map.len() >= MAX_CACHED_FUNCTIONS {
            return None;
        }
        let h = Arc::new(FunctionHandles {
            inflight: self.metrics.inflight.get_or_create_owned(labels),
            duration: self.metrics.invocation_duration.get_or_create_owned(labels),
            codes: RwLock::new(Vec::new()),
        });
        map.insert(labels.function_name.clone(), h.clone());
        Some(h)
    }

    fn code_labels(labels: &FunctionLabels, code: u16) -> CodeLabels {
        CodeLabels {
            queue_name: labels.queue_name.clone(),
            function_name: labels.function_name.clone(),
            code: code.to_string(),
        }
    }

    pub fn inflight(&self, function: &FunctionMetrics) -> Gauge {
        match &function.handles {
            Some(h) => h.inflight.clone(),
            None => self.metrics.inflight.get_or_create_owned(&function.labels),
        }
    }
    pub fn invocation(&self, function: &FunctionMetrics, code: u16, seconds: f64) {
        let labels = &function.labels;
        let Some(h) = &function.handles else {
            self.metrics
                .invocations
                .get_or_create(&Self::code_labels(labels, code))
                .inc();
            self.metrics
                .invocation_duration
                .get_or_create(labels)
                .observe(seconds);
            return;
        };
        let cached = h
            .codes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, counter)| counter.clone());
        let counter = cached.unwrap_or_else(|| {
            let mut codes = h.codes.write().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
                return counter.clone();
            }
            let counter = self
                .metrics
                .invocations
                .get_or_create_owned(&Self::code_labels(labels, code));
            codes.push((code, counter.clone()));
            counter
        });
        counter.inc();
        h.duration.observe(seconds);
    }
    pub fn retry(&self, function: &FunctionMetrics, code: u16) {
        self.metrics
            .retries
            .get_or_create(&Self::code_labels(&function.labels, code))
            .inc();
    }
    pub fn retry_budget_exceeded(&self, function: &FunctionMetrics) {
        self.metrics
            .retry_budget_exceeded
            .get_or_create(&function.labels)
            .inc();
    }
    pub fn pushed_back(&self, function: &FunctionMetrics) {
        self.metrics
            .pushed_back
            .get_or_create(&function.labels)
            .inc();
    }
    pub fn queue_delay(&self, seconds: f64) {
        self.queue_delay.observe(seconds);
    }
    pub fn dead_letter(&self, reason: &str) {
        let labels = self.reason_labels(reason);
        self.metrics.dead_letters.get_or_create(&labels).inc();
    }
    pub fn dead_letter_dropped(&self, reason: &str) {
        let labels = self.reason_labels(reason);
        self.metrics
            .dead_letters_dropped
            .get_or_create(&labels)
            .inc();
    }
    fn reason_labels(&self, reason: &str) -> ReasonLabels {
        ReasonLabels {
            queue_name: self.queue.clone(),
            reason: reason.to_string(),
        }
    }
    pub fn callback(&self, outcome: &str) {
        self.metrics
            .callbacks
            .get_or_create(&OutcomeLabels {
                queue_name: self.queue.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_like_the_families() {
        let m = Arc::new(Metrics::new());
        let q = m.for_queue("q");
        let f = q.function("a.ns");
        for code in [200, 200, 503, 200] {
            q.invocation(&f, code, 0.5);
        }
        q.inflight(&f).inc();
        q.inflight(&f).inc();
        q.inflight(&f).dec();
        // Another queue's function stays apart; so does one past the cache's limit.
        let other = m.for_queue("other").function("a.ns");
        q.invocation(&other, 200, 0.5);
        let uncached = FunctionMetrics {
            labels: FunctionLabels {
                queue_name: "q".into(),
                function_name: "b.ns".into(),
            },
            handles: None,
        };
        q.invocation(&uncached, 404, 0.5);
        q.inflight(&uncached).inc();
        q.queue_delay(0.25);
        q.queue_delay(0.5);
        let text = m.encode();
        for line in [
            "queue_worker_invocations_total{queue_name=\"q\",function_name=\"a.ns\",code=\"200\"} 3",
            "queue_worker_invocations_total{queue_name=\"q\",function_name=\"a.ns\",code=\"503\"} 1",
            "queue_worker_invocations_total{queue_name=\"other\",function_name=\"a.ns\",code=\"200\"} 1",
            "queue_worker_invocation_duration_seconds_count{queue_name=\"q\",function_name=\"a.ns\"} 4",
            "queue_worker_function_invocation_inflight{queue_name=\"q\",function_name=\"a.ns\"} 1",
            "queue_worker_invocations_total{queue_name=\"q\",function_name=\"b.ns\",code=\"404\"} 1",
            "queue_worker_function_invocation_inflight{queue_name=\"q\",function_name=\"b.ns\"} 1",
            "queue_worker_queue_delay_seconds_count{queue_name=\"q\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn exports_the_openfaas_names() {
        let m = Arc::new(Metrics::new());
        let q = m.for_queue("faas-request");
        q.processed();
        let f = q.function("sleep.openfaas-fn");
        q.inflight(&f).inc();
        q.invocation(&f, 200, 0.25);
        q.queue_delay(0.01);
        m.messages_submitted
            .get_or_create(&QueueLabels {
                queue_name: "faas-request".into(),
            })
            .inc();
        m.nats_reconnects.inc();
        q.dead_letter("poison");
        q.callback("delivered");
        let text = m.encode();
        for line in [
            "queue_worker_messages_processed_total{queue_name=\"faas-request\"} 1",
            "queue_worker_messages_submitted_total{queue_name=\"faas-request\"} 1",
            "queue_worker_function_invocation_inflight{queue_name=\"faas-request\",function_name=\"sleep.openfaas-fn\"} 1",
            "queue_worker_nats_reconnect_total 1",
            "queue_worker_invocations_total{queue_name=\"faas-request\",function_name=\"sleep.openfaas-fn\",code=\"200\"} 1",
            "queue_worker_invocation_duration_seconds_count{queue_name=\"faas-request\",function_name=\"sleep.openfaas-fn\"} 1",
            "queue_worker_queue_delay_seconds_count{queue_name=\"faas-request\"} 1",
            "queue_worker_dead_letters_total{queue_name=\"faas-request\",reason=\"poison\"} 1",
            "queue_worker_callbacks_total{queue_name=\"faas-request\",outcome=\"delivered\"} 1",
            "# TYPE queue_worker_messages_submitted_total gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
