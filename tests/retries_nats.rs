//! Retries, back-off, dead letters, expiry and callback delivery against a real nats-server,
//! with the `queue-worker` binary as a black box.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::http::{CallbackReceiver, FunctionServer, Reply};
use common::nats::NatsServer;
use common::worker::{Worker, http_client, stream_messages};

const T: Duration = Duration::from_secs(30);

/// Post one invocation with a callback through the worker's ingress; its call id.
async fn post(w: &Worker, function: &str, callback: &str) -> String {
    let r = http_client()
        .post(format!(
            "{}/async-function/{function}",
            w.ingress.as_ref().unwrap()
        ))
        .header("X-Callback-Url", callback)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.headers()["x-call-id"].to_str().unwrap().to_string()
}

/// The dead letters of `queue`: (subject, headers) of each.
async fn dead_letters(nats: &NatsServer, queue: &str) -> Vec<(String, async_nats::HeaderMap)> {
    let js = nats.jetstream().await;
    let stream = js.get_stream(format!("OF_{queue}_DLQ")).await.unwrap();
    let mut out = Vec::new();
    let mut seq = 1;
    let last = stream.get_info().await.unwrap().state.last_sequence;
    while seq <= last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.subject.to_string(), m.headers));
        }
        seq += 1;
    }
    out
}

fn header<'a>(h: &'a async_nats::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

#[tokio::test]
async fn retries_429_with_exponential_back_off_then_succeeds() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::start(|_, n| {
        if n < 2 {
            Reply::status(429)
        } else {
            Reply::ok("finally")
        }
    })
    .await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("r429");
    let w = Worker::start(
        &nats,
        &queue,
        &function.base_url(),
        true,
        &[("initial_retry_wait", "1s"), ("max_retry_wait", "4s")],
    )
    .await;
    let call_id = post(&w, "busy", &receiver.url("/cb")).await;
    let calls = function.wait_for(3, T).await;
    assert_eq!(calls.len(), 3);
    // Delays: 1 s after the first attempt, 2 s after the second (exponential, no jitter).
    let gap1 = calls[1].at - calls[0].at;
    let gap2 = calls[2].at - calls[1].at;
    assert!(
        gap1 >= Duration::from_millis(950) && gap1 < Duration::from_millis(1900),
        "first retry after {gap1:?}, want ~1s"
    );
    assert!(
        gap2 >= Duration::from_millis(1950) && gap2 < Duration::from_millis(3500),
        "second retry after {gap2:?}, want ~2s"
    );
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs.len(), 1, "one callback, after the final attempt");
    let cb = &cbs[0];
    assert_eq!(cb.header("x-call-id"), Some(call_id.as_str()));
    assert_eq!(cb.header("x-function-status"), Some("200"));
    assert_eq!(cb.header("x-retry"), Some("2"));
    assert_eq!(cb.header("x-retry-max"), Some("9"));
    assert_eq!(cb.body, Bytes::from_static(b"finally"));
    common::eventually(T, "queue drained", || async {
        stream_messages(&nats, &format!("OF_{queue}")).await == 0
    })
    .await;
    assert_eq!(
        w.metric(&format!(
            "queue_worker_retries_total{{queue_name=\"{queue}\",function_name=\"busy.openfaas-fn\",code=\"429\"}}"
        ))
        .await,
        Some(2.0)
    );
    assert!(dead_letters(&nats, &queue).await.is_empty());
}

#[tokio::test]
async fn always_500_stops_at_max_attempts_and_dead_letters() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::start(|_, _| Reply::status(500).with_body("broken")).await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("r500");
    let mut w = Worker::start(
        &nats,
        &queue,
        &function.base_url(),
        true,
        &[
            ("max_retry_attempts", "3"),
            ("initial_retry_wait", "200ms"),
            ("max_retry_wait", "400ms"),
        ],
    )
    .await;
    let call_id = post(&w, "broken", &receiver.url("/cb")).await;
    let cbs = receiver.wait_for(1, T).await;
    let cb = &cbs[0];
    assert_eq!(cb.header("x-function-status"), Some("500"));
    assert_eq!(cb.header("x-retry"), Some("2"));
    assert_eq!(
        cb.header("x-retry"),
        cb.header("x-retry-max"),
        "X-Retry equals X-Retry-Max once retries are exhausted"
    );
    assert_eq!(cb.body, Bytes::from_static(b"broken"));
    common::eventually(T, "one dead letter", || async {
        stream_messages(&nats, &format!("OF_{queue}_DLQ")).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(function.count(), 3, "exactly max_retry_attempts attempts");
    let dl = dead_letters(&nats, &queue).await;
    assert_eq!(dl.len(), 1);
    let (subject, h) = &dl[0];
    assert_eq!(subject, &format!("{queue}_DLQ.broken.openfaas-fn"));
    assert_eq!(header(h, "Qw-Reason"), Some("exhausted"));
    assert_eq!(header(h, "Qw-Status"), Some("500"));
    assert_eq!(header(h, "Qw-Attempts"), Some("3"));
    assert_eq!(stream_messages(&nats, &format!("OF_{queue}")).await, 0);
    assert_eq!(receiver.count(), 1);
    w.proc.wait_log(&format!("callId={call_id}"), T).await;
    assert_eq!(
        w.metric(&format!(
            "queue_worker_dead_letters_total{{queue_name=\"{queue}\",reason=\"exhausted\"}}"
        ))
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_400_is_final_at_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::start(|_, _| Reply::status(400).with_body("bad input")).await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("r400");
    let w = Worker::start(
        &nats,
        &queue,
        &function.base_url(),
        true,
        &[("initial_retry_wait", "100ms")],
    )
    .await;
    post(&w, "strict", &receiver.url("/cb")).await;
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("400"));
    assert_eq!(cbs[0].header("x-retry"), Some("0"));
    common::eventually(T, "dead letter", || async {
        stream_messages(&nats, &format!("OF_{queue}_DLQ")).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(function.count(), 1, "a 400 is not retried");
    let dl = dead_letters(&nats, &queue).await;
    assert_eq!(header(&dl[0].1, "Qw-Reason"), Some("failed"));
    assert_eq!(header(&dl[0].1, "Qw-Status"), Some("400"));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::start(|_, n| {
        if n == 0 {
            Reply::status(429).with_header("Retry-After", "1")
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("rafter");
    // The computed delay would be 100 ms; Retry-After asks for 1 s.
    let w = Worker::start(
        &nats,
        &queue,
        &function.base_url(),
        true,
        &[("initial_retry_wait", "100ms"), ("max_retry_wait", "10s")],
    )
    .await;
    post(&w, "polite", &receiver.url("/cb")).await;
    let calls = function.wait_for(2, T).await;
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_millis(2500),
        "retried after {gap:?}, want ~1s"
    );
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-retry"), Some("1"));
}

#[tokio::test]
async fn a_callback_that_fails_twice_is_delivered_once_and_the_function_runs_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::start(|_, _| Reply::ok("result")).await;
    let receiver = CallbackReceiver::with_responder(|_, n| {
        if n < 2 {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let queue = common::unique_name("cbretry");
    let w = Worker::start(&nats, &queue, &function.base_url(), true, &[]).await;
    post(&w, "f", &receiver.url("/cb")).await;
    let cbs = receiver.wait_for(3, T).await;
    assert!(cbs.iter().all(|c| c.body == Bytes::from_static(b"result")));
    // 1 s then 2 s between callback attempts.
    let gap1 = cbs[1].at - cbs[0].at;
    let gap2 = cbs[2].at - cbs[1].at;
    assert!(gap1 >= Duration::from_millis(950), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(1950), "{gap2:?}");
    common::eventually(T, "queue drained", || async {
        stream_messages(&nats, &format!("OF_{queue}")).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.count(),
        3,
        "accepted on the third try, not posted again"
    );
    assert_eq!(
        function.count(),
        1,
        "a failing callback never re-runs the function"
    );
    assert_eq!(
        w.metric(&format!(
            "queue_worker_callbacks_total{{queue_name=\"{queue}\",outcome=\"delivered\"}}"
        ))
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn expired_invocations_are_not_run_callback_gets_410() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::echo().await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("expired");
    let _w = Worker::start(
        &nats,
        &queue,
        &function.base_url(),
        false,
        &[("max_message_age", "1h")],
    )
    .await;
    // Enqueued in 2025 according to X-Start-Time.
    let msg = serde_json::json!({
        "Header": {
            "X-Call-Id": ["old-call"],
            "X-Start-Time": ["1735732800000000000"],
            "X-Callback-Url": [receiver.url("/cb")],
        },
        "Method": "POST",
        "Function": "late",
    });
    let js = nats.jetstream().await;
    js.publish(
        format!("{queue}.late.openfaas-fn"),
        serde_json::to_vec(&msg).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("410"));
    assert_eq!(cbs[0].header("x-call-id"), Some("old-call"));
    common::eventually(T, "dead letter", || async {
        stream_messages(&nats, &format!("OF_{queue}_DLQ")).await == 1
    })
    .await;
    let dl = dead_letters(&nats, &queue).await;
    assert_eq!(header(&dl[0].1, "Qw-Reason"), Some("expired"));
    assert_eq!(function.count(), 0, "an expired invocation is never run");
}

#[tokio::test]
async fn annotations_override_the_retry_policy() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let function = FunctionServer::start(|_, _| Reply::status(503)).await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("annot");
    // Worker default: 10 attempts, 10 s waits; the message asks for 2 attempts, 100 ms waits.
    let _w = Worker::start(&nats, &queue, &function.base_url(), false, &[]).await;
    let msg = serde_json::json!({
        "Header": {"X-Call-Id": ["annotated"], "X-Callback-Url": [receiver.url("/cb")]},
        "Method": "POST",
        "Function": "fragile",
        "Annotations": {
            "com.openfaas.retry.attempts": "2",
            "com.openfaas.retry.min_wait": "100ms",
            "com.openfaas.retry.max_wait": "200ms",
            "com.openfaas.retry.codes": "503",
        },
    });
    let js = nats.jetstream().await;
    js.publish(
        format!("{queue}.fragile.openfaas-fn"),
        serde_json::to_vec(&msg).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-retry"), Some("1"));
    assert_eq!(cbs[0].header("x-retry-max"), Some("1"));
    assert_eq!(function.count(), 2);
}
