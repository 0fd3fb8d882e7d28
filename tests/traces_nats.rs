//! Traces against a real nats-server, with three worker replicas: the spans a call leaves
//! (publish, queue wait, each attempt, callback) reach an OTLP receiver that decodes them with
//! the OpenTelemetry project's own protobuf classes (`testdata/otlp-receiver.py`); they form
//! one trace with the caller's, parents and links as documented, and the function and the
//! callback receiver see the same trace, also for a message the gateway published. An exporter whose endpoint never answers slows nothing.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bed::{Bed, TestBed};
use common::http::{Recorded, Reply};
use common::worker::Worker;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The receiver process and the spans it printed.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// `None` (loudly) where Python's opentelemetry-proto is missing, never under `CI`.
    fn start() -> Option<Receiver> {
        let importable = Command::new("python3")
            .args(["-c", "import opentelemetry.proto.collector.trace.v1"])
            .status()
            .is_ok_and(|s| s.success());
        if !importable {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: python3 with opentelemetry-proto is required (ci/test installs it)"
            );
            eprintln!("SKIPPED: python3 -m pip install opentelemetry-proto to run the trace tests");
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/otlp-receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the receiver's port").unwrap();
        let port = first.strip_prefix("port ").unwrap().parse().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let span: Value = serde_json::from_str(&line).expect("a JSON span");
                sink.lock().unwrap().push(span);
            }
        });
        Some(Receiver { child, port, spans })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The spans of `call_id`, once `n` arrived.
    async fn spans_of(&self, call_id: &str, n: usize) -> Vec<Value> {
        let of_call = |spans: &[Value]| -> Vec<Value> {
            spans
                .iter()
                .filter(|s| s["attributes"]["queue_worker.call_id"] == call_id)
                .cloned()
                .collect()
        };
        common::eventually(T, &format!("{n} spans of {call_id}"), || {
            let got = of_call(&self.spans.lock().unwrap()).len();
            async move { got >= n }
        })
        .await;
        of_call(&self.spans.lock().unwrap())
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// The attempt span numbered `n`.
fn attempt(spans: &[Value], n: u64) -> &Value {
    named(spans, "invoke")
        .into_iter()
        .find(|s| s["attributes"]["queue_worker.attempt"] == n)
        .unwrap_or_else(|| panic!("attempt {n}: {spans:#?}"))
}

/// (trace id, parent id) of a `traceparent` value.
fn traceparent(value: Option<&str>) -> (String, String) {
    let v = value.expect("a traceparent");
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    (parts[1].to_string(), parts[2].to_string())
}

/// The receiver, and three replicas exporting to it (each with the ingress).
async fn traced_bed(name: &str) -> Option<(Receiver, TestBed, Vec<Worker>)> {
    let receiver = Receiver::start()?;
    let (bed, workers) = bed(name, &receiver.endpoint()).await?;
    Some((receiver, bed, workers))
}

/// Three replicas, each with the ingress; all export to `endpoint`.
async fn bed(name: &str, endpoint: &str) -> Option<(TestBed, Vec<Worker>)> {
    let bed = Bed::new(name)
        .ingress()
        .callback_receiver()
        // Each call's first attempt is refused (retried), its second answered.
        .function(|_, n| match n {
            0 => Reply::status(503),
            _ => Reply::ok("done"),
        })
        .envs(&[
            ("initial_retry_wait", "100ms"),
            ("max_retry_wait", "200ms"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "qw-traces-test"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-test-tenant=t%201"),
        ])
        .start_without_worker()
        .await?;
    let mut workers = vec![bed.start_worker().await];
    for _ in 0..2 {
        workers.push(bed.start_worker().await);
    }
    Some((bed, workers))
}

async fn post(bed: &TestBed, worker: &Worker, function: &str, id: &str, parent: Option<&str>) {
    let mut req = worker
        .post(function)
        .header("X-Call-Id", id)
        .header("X-Callback-Url", bed.callback_url("/done"));
    if let Some(p) = parent {
        req = req.header("traceparent", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    assert_eq!(status, 202, "{}", resp.text().await.unwrap_or_default());
}

fn function_calls(bed: &TestBed, function: &str) -> Vec<Recorded> {
    let path = format!("/function/{function}");
    let calls: Vec<Recorded> = bed
        .function
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect();
    assert_eq!(calls.len(), 2, "two attempts of {function}");
    calls
}

#[tokio::test]
async fn a_call_is_one_trace_from_the_callers_span_to_its_callback() {
    let Some((receiver, bed, workers)) = traced_bed("traces").await else {
        return;
    };
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    post(&bed, &workers[0], "traced", "traced-1", Some(&caller)).await;
    let spans = receiver.spans_of("traced-1", 5).await;

    assert!(
        spans.iter().all(|s| s["trace_id"] == CALLER_TRACE),
        "one trace: {spans:#?}"
    );
    let publish = one(&spans, "publish");
    let wait = one(&spans, "queue wait");
    let (first, second) = (attempt(&spans, 1), attempt(&spans, 2));
    let callback = one(&spans, "callback");
    assert_eq!(
        publish["parent"], CALLER_SPAN,
        "the caller's span is the parent"
    );
    for child in [wait, first, second] {
        assert_eq!(child["parent"], publish["span_id"], "{child:#?}");
    }
    assert_eq!(
        callback["parent"], second["span_id"],
        "under the attempt it reports"
    );
    assert!(first["links"].as_array().unwrap().is_empty());
    assert_eq!(
        second["links"][0]["span_id"], first["span_id"],
        "attempts are linked"
    );
    assert_eq!(first["attributes"]["http.response.status_code"], 503);
    assert_eq!(first["status"], 2, "a refused attempt is an error");
    assert_eq!(second["attributes"]["http.response.status_code"], 200);
    assert_eq!(callback["attributes"]["http.response.status_code"], 200);
    assert_eq!(publish["kind"], 4, "publish is a producer span");
    assert_eq!(publish["resource"]["service.name"], "qw-traces-test");
    assert_eq!(
        publish["header"], "t 1",
        "OTEL_EXPORTER_OTLP_HEADERS are sent"
    );
    for s in &spans {
        assert!(s["start"].as_u64() <= s["end"].as_u64(), "{s:#?}");
    }
    assert!(
        wait["end"].as_u64() <= first["start"].as_u64(),
        "the wait ends before the first attempt"
    );

    // The function saw each attempt's own span, the receiver the callback's.
    let calls = function_calls(&bed, "traced");
    for (call, span) in calls.iter().zip([first, second]) {
        let (trace, parent) = traceparent(call.header("traceparent"));
        assert_eq!(
            (trace.as_str(), parent.as_str()),
            (CALLER_TRACE, span["span_id"].as_str().unwrap())
        );
    }
    let posted = bed.receiver().wait_for(1, T).await;
    let (trace, parent) = traceparent(posted[0].header("traceparent"));
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(parent, callback["span_id"].as_str().unwrap());
}

#[tokio::test]
async fn a_call_without_a_traceparent_starts_its_own_trace() {
    let Some((receiver, bed, workers)) = traced_bed("traces-new").await else {
        return;
    };
    post(&bed, &workers[0], "fresh", "fresh-1", None).await;
    let spans = receiver.spans_of("fresh-1", 5).await;
    let publish = one(&spans, "publish");
    assert_eq!(publish["parent"], "", "a root span");
    let trace = publish["trace_id"].as_str().unwrap();
    assert_ne!(trace, CALLER_TRACE);
    assert!(spans.iter().all(|s| s["trace_id"] == trace), "{spans:#?}");
    for call in function_calls(&bed, "fresh") {
        assert_eq!(traceparent(call.header("traceparent")).0, trace);
    }
}

#[tokio::test]
async fn a_message_the_gateway_published_with_a_traceparent_continues_its_trace() {
    let Some((receiver, bed, _workers)) = traced_bed("traces-gateway").await else {
        return;
    };
    // As the OpenFaaS gateway writes it: the caller's headers, Traceparent among them.
    let (trace, span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let msg = format!(
        "{{\"Header\":{{\"X-Call-Id\":[\"gw-1\"],\"Traceparent\":[\"00-{trace}-{span}-01\"]}},\"Method\":\"POST\",\"Function\":\"gw\"}}"
    );
    bed.publish(format!("{}.gw.openfaas-fn", bed.queue), msg)
        .await;
    let spans = receiver.spans_of("gw-1", 3).await;
    assert!(spans.iter().all(|s| s["trace_id"] == trace), "{spans:#?}");
    let (first, second) = (attempt(&spans, 1), attempt(&spans, 2));
    for child in [one(&spans, "queue wait"), first, second] {
        assert_eq!(
            child["parent"], span,
            "under the gateway's span: {child:#?}"
        );
    }
    for (call, attempt) in function_calls(&bed, "gw").iter().zip([first, second]) {
        let (seen_trace, parent) = traceparent(call.header("traceparent"));
        assert_eq!(
            (seen_trace.as_str(), parent.as_str()),
            (trace, attempt["span_id"].as_str().unwrap())
        );
    }
}

#[tokio::test]
async fn an_exporter_that_never_answers_slows_no_invocation() {
    // Accepts connections and never answers: every export waits for its whole timeout.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let Some((bed, _workers)) = Bed::new("traces-stuck")
        .callback_receiver()
        .envs(&[
            ("max_inflight", "8"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "600000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
        ])
        .start()
        .await
    else {
        return;
    };
    let n = 100;
    let subject = format!("{}.echo.openfaas-fn", bed.queue);
    for i in 0..n {
        let msg = format!(
            "{{\"Header\":{{\"X-Call-Id\":[\"stuck-{i}\"],\"X-Callback-Url\":[\"{}\"]}},\"Method\":\"POST\",\"Function\":\"echo\"}}",
            bed.callback_url("/done")
        );
        bed.publish(subject.clone(), msg).await;
    }
    // If recording a span waited for the exporter, the first export would hold every call for
    // ten minutes.
    bed.receiver().wait_for(n, T).await;
    assert_eq!(bed.function.requests().len(), n);
    drop(black_hole);
}
