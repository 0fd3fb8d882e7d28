//! Cancelling calls against a real nats-server, through the real binary:
//! `DELETE /async-function/{call-id}` and `queue-worker cancel` for a queued call (never
//! invoked), a running call (its HTTP request is aborted: the function sees the connection
//! close) and a call waiting between retries on two worker replicas. Each ends acked, with
//! status `cancelled` and one callback with `X-Function-Status: 499`.

mod common;

use std::time::{Duration, Instant};

use common::bed::TestBed;
use common::calls::{bed_with, cancel, wait_state};
use common::http::{Recorded, Reply};
use common::worker::{Worker, http_client};

const T: Duration = Duration::from_secs(20);

async fn post(bed: &TestBed, w: &Worker, id: &str) {
    let resp = w
        .post("fn")
        .header("x-call-id", id)
        .header("x-callback-url", bed.callback_url("/cb"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// Polls until `check` holds, or fails with `what`.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn calls_of(bed: &TestBed, id: &str) -> usize {
    bed.function
        .requests()
        .iter()
        .filter(|r| r.header("x-call-id") == Some(id))
        .count()
}

/// The callbacks of `id`: exactly one is expected, with status 499 and an empty body.
async fn one_cancelled_callback(bed: &TestBed, id: &str) {
    let callbacks = |bed: &TestBed| -> Vec<Recorded> {
        bed.receiver()
            .requests()
            .into_iter()
            .filter(|r| r.header("x-call-id") == Some(id))
            .collect()
    };
    until(&format!("a callback of {id}"), || {
        !callbacks(bed).is_empty()
    })
    .await;
    // A second callback would come right after the first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = callbacks(bed);
    assert_eq!(got.len(), 1, "callbacks of {id}: {got:#?}");
    assert_eq!(got[0].header("x-function-status"), Some("499"));
    assert!(got[0].body.is_empty());
}

#[tokio::test]
async fn a_queued_call_is_never_invoked_and_its_callback_says_499() {
    let Some((bed, w)) = bed_with(
        "cancel-queued",
        |req, _| match req.header("x-call-id") {
            Some("blocker") => Reply::ok("slow").with_delay(Duration::from_secs(3)),
            _ => Reply::ok("ok"),
        },
        &[("max_inflight", "1")],
    )
    .await
    else {
        return;
    };
    post(&bed, &w, "blocker").await;
    until("the blocker runs", || bed.function.in_flight() == 1).await;
    post(&bed, &w, "queued-1").await;
    wait_state(&w, "queued-1", "queued", T).await;
    let (code, body) = cancel(&w, "queued-1").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["queue"], bed.queue.as_str());

    let status = wait_state(&w, "queued-1", "cancelled", T).await;
    assert_eq!(status["attempts"], 0, "{status}");
    assert_eq!(status["error"], "cancelled by a caller");
    one_cancelled_callback(&bed, "queued-1").await;
    bed.wait_drained(T).await;
    assert_eq!(
        calls_of(&bed, "queued-1"),
        0,
        "a cancelled call was invoked"
    );
    assert_eq!(calls_of(&bed, "blocker"), 1);

    let (code, body) = cancel(&w, "queued-1").await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["state"], "cancelled");
    let (code, body) = cancel(&w, "blocker").await;
    assert_eq!((code, body["state"].as_str()), (409, Some("succeeded")));
    assert_eq!(cancel(&w, "none-such").await.0, 404);
    let r = http_client()
        .get(format!("{}/async-function/fn", w.ingress()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn a_running_call_is_aborted_and_the_function_sees_the_connection_close() {
    let Some((bed, w)) = bed_with(
        "cancel-running",
        |_, _| Reply::ok("late").with_delay(Duration::from_secs(60)),
        &[("upstream_timeout", "2m"), ("ack_wait", "90s")],
    )
    .await
    else {
        return;
    };
    post(&bed, &w, "run-1").await;
    until("the call runs", || bed.function.in_flight() == 1).await;
    wait_state(&w, "run-1", "running", T).await;
    let (code, body) = cancel(&w, "run-1").await;
    assert_eq!(code, 202, "{body}");
    let aborted = Instant::now();
    until("the function's connection closes", || {
        bed.function.in_flight() == 0
    })
    .await;
    assert!(
        aborted.elapsed() < Duration::from_secs(5),
        "the running call was not aborted promptly"
    );
    let status = wait_state(&w, "run-1", "cancelled", T).await;
    assert_eq!(status["attempts"], 1, "{status}");
    one_cancelled_callback(&bed, "run-1").await;
    bed.wait_drained(T).await;
    assert_eq!(calls_of(&bed, "run-1"), 1);
}

#[tokio::test]
async fn a_call_waiting_between_retries_is_cancelled_with_the_cli_on_two_replicas() {
    let Some((bed, w)) = bed_with(
        "cancel-retry",
        |_, _| Reply::status(500),
        &[
            ("initial_retry_wait", "4s"),
            ("max_retry_wait", "4s"),
            ("max_retry_attempts", "5"),
        ],
    )
    .await
    else {
        return;
    };
    let second = bed
        .worker()
        .envs(&[
            ("initial_retry_wait", "4s"),
            ("max_retry_wait", "4s"),
            ("max_retry_attempts", "5"),
        ])
        .start()
        .await;
    post(&bed, &w, "retry-1").await;
    wait_state(&w, "retry-1", "retrying", T).await;
    let out = tokio::process::Command::new(common::worker_bin())
        .args(["cancel", "retry-1", "none-such"])
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one call was unknown: {stdout}");
    assert!(stdout.contains("retry-1: cancelled"), "{stdout}");
    assert!(stdout.contains("none-such: unknown"), "{stdout}");

    let status = wait_state(&w, "retry-1", "cancelled", T).await;
    assert_eq!(status["attempts"], 1, "{status}");
    // The message comes back when its wait ends, is acked without a call, and called back.
    one_cancelled_callback(&bed, "retry-1").await;
    bed.wait_drained(T).await;
    assert_eq!(calls_of(&bed, "retry-1"), 1, "invoked after the cancel");
    let log = format!("{}{}", w.proc.log(), second.proc.log());
    assert!(log.contains("Cancelled; not invoked again"), "{log}");

    let again = tokio::process::Command::new(common::worker_bin())
        .args(["cancel", "retry-1"])
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already ended: cancelled"));
}

#[tokio::test]
async fn cancel_needs_call_status() {
    let Some((_bed, w)) =
        bed_with("cancel-off", |_, _| Reply::ok("ok"), &[("status_ttl", "0")]).await
    else {
        return;
    };
    let (code, body) = cancel(&w, "any").await;
    assert_eq!(code, 501, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("status_ttl"));
}
