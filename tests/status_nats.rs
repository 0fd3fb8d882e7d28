//! Call status against a real nats-server, through the real binary: the states a call goes
//! through (`queued`, `running`, `retrying`, then `succeeded`, `failed`, `dead_lettered` or
//! `expired`), read with `GET /system/calls/{call-id}` and `queue-worker status`, for calls
//! stored by the ingress and for messages published straight to the queue.

mod common;

use std::time::Duration;

use common::calls::{bed_with, status, wait_state};
use common::http::Reply;
use common::worker::Worker;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

async fn post(w: &Worker, id: &str) {
    let resp = w
        .post("fn")
        .header("x-call-id", id)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn a_call_is_queued_then_running_then_succeeded_and_the_cli_says_so() {
    let Some((bed, w)) = bed_with(
        "st-ok",
        |_, _| Reply::ok("done").with_delay(Duration::from_millis(800)),
        &[],
    )
    .await
    else {
        return;
    };
    assert_eq!(status(&w, "none-such").await.0, 404);
    post(&w, "st-1").await;
    let running = wait_state(&w, "st-1", "running", T).await;
    assert_eq!(running["attempts"], 1);
    assert!(running["enqueued_at"].as_u64().is_some(), "{running}");
    assert!(running["started_at"].as_u64().is_some(), "{running}");
    let done = wait_state(&w, "st-1", "succeeded", T).await;
    assert_eq!(done["function"], "fn");
    assert_eq!(done["last_status"], 200);
    assert_eq!(done["queue"], bed.queue.as_str());
    let (enq, start, end) = (
        done["enqueued_at"].as_u64().unwrap(),
        done["started_at"].as_u64().unwrap(),
        done["finished_at"].as_u64().unwrap(),
    );
    assert!(enq <= start && start + 700 <= end, "{done}");

    let out = std::process::Command::new(common::worker_bin())
        .args(["status", "st-1"])
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["state"], "succeeded");
    assert_eq!(printed["call_id"], "st-1");
    let unknown = std::process::Command::new(common::worker_bin())
        .args(["status", "none-such"])
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown call"));
}

#[tokio::test]
async fn a_retried_call_shows_retrying_then_its_end() {
    let Some((_bed, w)) = bed_with(
        "st-retry",
        |req, n| match (req.header("x-call-id"), n) {
            (Some("st-retry-ok"), 0) => Reply::status(503),
            (Some("st-retry-ok"), _) => Reply::ok("ok"),
            (Some("st-400"), _) => Reply::status(400),
            _ => Reply::status(500),
        },
        &[
            ("initial_retry_wait", "1500ms"),
            ("max_retry_wait", "1500ms"),
            ("max_retry_attempts", "2"),
        ],
    )
    .await
    else {
        return;
    };
    post(&w, "st-retry-ok").await;
    post(&w, "st-exhausted").await;
    post(&w, "st-400").await;
    let retrying = wait_state(&w, "st-retry-ok", "retrying", T).await;
    assert_eq!(retrying["last_status"], 503);
    assert!(retrying["next_attempt_at"].as_u64().is_some(), "{retrying}");
    let ok = wait_state(&w, "st-retry-ok", "succeeded", T).await;
    assert_eq!(ok["attempts"], 2);
    assert!(ok.get("next_attempt_at").is_none(), "{ok}");
    let dead = wait_state(&w, "st-exhausted", "dead_lettered", T).await;
    assert_eq!(
        (dead["attempts"].clone(), dead["reason"].clone()),
        (2.into(), "exhausted".into())
    );
    assert_eq!(dead["last_status"], 500);
    let failed = wait_state(&w, "st-400", "failed", T).await;
    assert_eq!(failed["last_status"], 400);
    assert_eq!(failed["attempts"], 1);
}

#[tokio::test]
async fn a_message_published_without_the_ingress_gets_a_status_from_its_first_delivery() {
    let Some((bed, w)) = bed_with(
        "st-direct",
        |_, _| Reply::ok("ok"),
        &[("max_message_age", "1h")],
    )
    .await
    else {
        return;
    };
    let publish = |id: &str, start: &str| {
        serde_json::to_vec(&serde_json::json!({
            "Header": {"X-Call-Id": [id], "X-Start-Time": [start]},
            "Method": "POST",
            "Function": "fn",
        }))
        .unwrap()
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string();
    bed.publish_to("fn.openfaas-fn", publish("gw-1", &now_ns))
        .await;
    // Enqueued in 2025: older than max_message_age, never invoked.
    bed.publish_to("fn.openfaas-fn", publish("gw-old", "1735732800000000000"))
        .await;
    let ok = wait_state(&w, "gw-1", "succeeded", T).await;
    assert_eq!(ok["attempts"], 1);
    assert!(ok.get("enqueued_at").is_none(), "no ingress saw it: {ok}");
    let old = wait_state(&w, "gw-old", "expired", T).await;
    assert_eq!(old["attempts"], 0);
    assert_eq!(old["reason"], "expired");
    assert_eq!(bed.function.count(), 1);
}

/// Connections the worker's log says it made for call status.
fn status_connections(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Connected to NATS") && l.contains("queue-worker-status"))
        .count()
}

/// Call status is written on a NATS connection of its own (a round of status writes never
/// queues ahead of the worker's acks and pulls or the ingress's publishes), and none is made
/// when status is off.
#[tokio::test]
async fn status_has_a_connection_of_its_own_and_none_when_off() {
    let Some((_bed, w)) = bed_with("st-conn", |_, _| Reply::ok("done"), &[]).await else {
        return;
    };
    post(&w, "conn-1").await;
    wait_state(&w, "conn-1", "succeeded", T).await;
    let log = w.proc.log();
    assert_eq!(status_connections(&log), 1, "{log}");

    let off = [("status_ttl", "0")];
    let Some((_bed, w)) = bed_with("st-conn-off", |_, _| Reply::ok("done"), &off).await else {
        return;
    };
    let log = w.proc.log();
    assert!(log.contains("Connected to NATS"), "{log}");
    assert_eq!(status_connections(&log), 0, "{log}");
}
