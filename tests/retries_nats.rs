//! Retries, back-off, dead letters, expiry and callback delivery against a real nats-server,
//! with the `queue-worker` binary as a black box.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::bed::{Bed, TestBed};
use common::http::Reply;
use common::worker::Worker;

const T: Duration = Duration::from_secs(30);

/// Post one invocation with a callback (the bed's receiver, `/cb`) through the worker's
/// ingress; its call id.
async fn post(bed: &TestBed, w: &Worker, function: &str) -> String {
    let r = w
        .post(function)
        .header("X-Callback-Url", bed.callback_url("/cb"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.headers()["x-call-id"].to_str().unwrap().to_string()
}

/// The dead letters of the bed's queue: (subject, headers) of each.
async fn dead_letters(bed: &TestBed) -> Vec<(String, async_nats::HeaderMap)> {
    let js = bed.nats.jetstream().await;
    let stream = js.get_stream(bed.dlq()).await.unwrap();
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
    let Some((bed, w)) = Bed::new("r429")
        .function(|_, n| {
            if n < 2 {
                Reply::status(429)
            } else {
                Reply::ok("finally")
            }
        })
        .callback_receiver()
        .ingress()
        .envs(&[("initial_retry_wait", "1s"), ("max_retry_wait", "4s")])
        .start()
        .await
    else {
        return;
    };
    let call_id = post(&bed, &w, "busy").await;
    let calls = bed.function.wait_for(3, T).await;
    assert_eq!(calls.len(), 3);
    // Delays: 1 s after the first attempt, 2 s after the second (exponential), each spread
    // over its last fifth: 0.8-1 s and 1.6-2 s.
    let gap1 = calls[1].at - calls[0].at;
    let gap2 = calls[2].at - calls[1].at;
    assert!(
        gap1 >= Duration::from_millis(750) && gap1 < Duration::from_millis(1900),
        "first retry after {gap1:?}, want 0.8-1s"
    );
    assert!(
        gap2 >= Duration::from_millis(1550) && gap2 < Duration::from_millis(3500),
        "second retry after {gap2:?}, want 1.6-2s"
    );
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs.len(), 1, "one callback, after the final attempt");
    let cb = &cbs[0];
    assert_eq!(cb.header("x-call-id"), Some(call_id.as_str()));
    assert_eq!(cb.header("x-function-status"), Some("200"));
    assert_eq!(cb.header("x-retry"), Some("2"));
    assert_eq!(cb.header("x-retry-max"), Some("9"));
    assert_eq!(cb.body, Bytes::from_static(b"finally"));
    bed.wait_drained(T).await;
    assert_eq!(
        w.metric(&format!(
            "queue_worker_retries_total{{queue_name=\"{}\",function_name=\"busy.openfaas-fn\",code=\"429\"}}",
            bed.queue
        ))
        .await,
        Some(2.0)
    );
    assert!(dead_letters(&bed).await.is_empty());
}

#[tokio::test]
async fn always_500_stops_at_max_attempts_and_dead_letters() {
    let Some((bed, mut w)) = Bed::new("r500")
        .function(|_, _| Reply::status(500).with_body("broken"))
        .callback_receiver()
        .ingress()
        .envs(&[
            ("max_retry_attempts", "3"),
            ("initial_retry_wait", "200ms"),
            ("max_retry_wait", "400ms"),
        ])
        .start()
        .await
    else {
        return;
    };
    let (function, receiver, queue) = (&bed.function, bed.receiver(), &bed.queue);
    let call_id = post(&bed, &w, "broken").await;
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
    bed.wait_dead_letters(1, T).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(function.count(), 3, "exactly max_retry_attempts attempts");
    let dl = dead_letters(&bed).await;
    assert_eq!(dl.len(), 1);
    let (subject, h) = &dl[0];
    assert_eq!(subject, &format!("{queue}_DLQ.broken.openfaas-fn"));
    assert_eq!(header(h, "Qw-Reason"), Some("exhausted"));
    assert_eq!(header(h, "Qw-Status"), Some("500"));
    assert_eq!(header(h, "Qw-Attempts"), Some("3"));
    assert_eq!(bed.stream_messages().await, 0);
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
    let Some((bed, w)) = Bed::new("r400")
        .function(|_, _| Reply::status(400).with_body("bad input"))
        .callback_receiver()
        .ingress()
        .env("initial_retry_wait", "100ms")
        .start()
        .await
    else {
        return;
    };
    post(&bed, &w, "strict").await;
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("400"));
    assert_eq!(cbs[0].header("x-retry"), Some("0"));
    bed.wait_dead_letters(1, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bed.function.count(), 1, "a 400 is not retried");
    let dl = dead_letters(&bed).await;
    assert_eq!(header(&dl[0].1, "Qw-Reason"), Some("failed"));
    assert_eq!(header(&dl[0].1, "Qw-Status"), Some("400"));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    // The computed delay would be 100 ms; Retry-After asks for 1 s.
    let Some((bed, w)) = Bed::new("rafter")
        .function(|_, n| {
            if n == 0 {
                Reply::status(429).with_header("Retry-After", "1")
            } else {
                Reply::ok("ok")
            }
        })
        .callback_receiver()
        .ingress()
        .envs(&[("initial_retry_wait", "100ms"), ("max_retry_wait", "10s")])
        .start()
        .await
    else {
        return;
    };
    post(&bed, &w, "polite").await;
    let calls = bed.function.wait_for(2, T).await;
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_millis(2500),
        "retried after {gap:?}, want ~1s"
    );
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-retry"), Some("1"));
}

#[tokio::test]
async fn a_callback_that_fails_twice_is_delivered_once_and_the_function_runs_once() {
    let Some((bed, w)) = Bed::new("cbretry")
        .function(|_, _| Reply::ok("result"))
        .callback_responder(|_, n| {
            if n < 2 {
                Reply::status(503)
            } else {
                Reply::status(200)
            }
        })
        .ingress()
        .start()
        .await
    else {
        return;
    };
    let (function, receiver) = (&bed.function, bed.receiver());
    post(&bed, &w, "f").await;
    let cbs = receiver.wait_for(3, T).await;
    assert!(cbs.iter().all(|c| c.body == Bytes::from_static(b"result")));
    // 1 s then 2 s between callback attempts.
    let gap1 = cbs[1].at - cbs[0].at;
    let gap2 = cbs[2].at - cbs[1].at;
    assert!(gap1 >= Duration::from_millis(950), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(1950), "{gap2:?}");
    bed.wait_drained(T).await;
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
            "queue_worker_callbacks_total{{queue_name=\"{}\",outcome=\"delivered\"}}",
            bed.queue
        ))
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn expired_invocations_are_not_run_callback_gets_410() {
    let Some((bed, _w)) = Bed::new("expired")
        .callback_receiver()
        .env("max_message_age", "1h")
        .start()
        .await
    else {
        return;
    };
    // Enqueued in 2025 according to X-Start-Time.
    let msg = serde_json::json!({
        "Header": {
            "X-Call-Id": ["old-call"],
            "X-Start-Time": ["1735732800000000000"],
            "X-Callback-Url": [bed.callback_url("/cb")],
        },
        "Method": "POST",
        "Function": "late",
    });
    bed.publish_to("late.openfaas-fn", serde_json::to_vec(&msg).unwrap())
        .await;
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("410"));
    assert_eq!(cbs[0].header("x-call-id"), Some("old-call"));
    bed.wait_dead_letters(1, T).await;
    let dl = dead_letters(&bed).await;
    assert_eq!(header(&dl[0].1, "Qw-Reason"), Some("expired"));
    assert_eq!(
        bed.function.count(),
        0,
        "an expired invocation is never run"
    );
}

#[tokio::test]
async fn annotations_override_the_retry_policy() {
    // Worker default: 10 attempts, 10 s waits; the message asks for 2 attempts, 100 ms waits.
    let Some((bed, _w)) = Bed::new("annot")
        .function(|_, _| Reply::status(503))
        .callback_receiver()
        .start()
        .await
    else {
        return;
    };
    let msg = serde_json::json!({
        "Header": {"X-Call-Id": ["annotated"], "X-Callback-Url": [bed.callback_url("/cb")]},
        "Method": "POST",
        "Function": "fragile",
        "Annotations": {
            "com.openfaas.retry.attempts": "2",
            "com.openfaas.retry.min_wait": "100ms",
            "com.openfaas.retry.max_wait": "200ms",
            "com.openfaas.retry.codes": "503",
        },
    });
    bed.publish_to("fragile.openfaas-fn", serde_json::to_vec(&msg).unwrap())
        .await;
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-retry"), Some("1"));
    assert_eq!(cbs[0].header("x-retry-max"), Some("1"));
    assert_eq!(bed.function.count(), 2);
}
