//! Kept results against a real nats-server, through the real binary:
//! `GET /system/calls/{call-id}/result[?wait=…]` gives the function's own status, headers and
//! body once the call has ended, with `store_results=true` or a request's
//! `X-Store-Result: true`; it long-polls with `wait` (`408` when the call has not ended in
//! time), and a body past what a key-value entry holds comes back whole (kept as an object).

mod common;

use std::time::{Duration, Instant};

use common::bed::TestBed;
use common::calls::{bed_with, status};
use common::http::Reply;
use common::worker::{Worker, http_client};
use serde_json::Value;

async fn post(w: &Worker, id: &str, store: bool) {
    let mut req = w.post("fn").header("x-call-id", id).body("in");
    if store {
        req = req.header("X-Store-Result", "true");
    }
    assert_eq!(req.send().await.unwrap().status(), 202);
}

/// `GET /system/calls/{id}/result` with `query`: the response.
async fn result(w: &Worker, id: &str, query: &str) -> reqwest::Response {
    http_client()
        .get(format!("{}/system/calls/{id}/result{query}", w.ingress()))
        .send()
        .await
        .expect("ingress answers")
}

/// 3 MiB, more than a key-value entry holds.
fn big_body() -> Vec<u8> {
    (0..3 * 1024 * 1024)
        .map(|i: usize| (i % 253) as u8)
        .collect()
}

fn function(req: &common::http::Recorded, _: usize) -> Reply {
    match req.header("x-call-id") {
        Some("big") => Reply::ok(big_body()),
        Some("slow") => Reply::ok("late").with_delay(Duration::from_millis(1500)),
        Some("bad") => Reply::status(400).with_body("no such thing"),
        _ => Reply::ok("made")
            .with_status(201)
            .with_header("x-out", "a")
            .with_header("content-type", "text/plain"),
    }
}

async fn started(name: &str, envs: &[(&str, &str)]) -> Option<(TestBed, Worker)> {
    bed_with(name, function, envs).await
}

#[tokio::test]
async fn results_come_back_as_the_function_gave_them() {
    let Some((_bed, w)) = started("res-all", &[("store_results", "true")]).await else {
        return;
    };
    post(&w, "made-1", false).await;
    post(&w, "bad", false).await;
    let r = result(&w, "made-1", "?wait=15s").await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-out"], "a");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-call-id"], "made-1");
    assert_eq!(r.headers()["x-call-state"], "succeeded");
    assert!(r.headers().get("x-result-truncated").is_none());
    assert_eq!(r.text().await.unwrap(), "made");

    let r = result(&w, "bad", "?wait=15s").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-call-state"], "failed");
    assert_eq!(r.text().await.unwrap(), "no such thing");

    post(&w, "big", false).await;
    let r = result(&w, "big", "?wait=15s").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-result-truncated").is_none());
    let body = r.bytes().await.unwrap();
    assert!(body == big_body(), "{} bytes back, whole", body.len());

    assert_eq!(result(&w, "none-such", "").await.status(), 404);
    assert_eq!(result(&w, "made-1", "?wait=2m").await.status(), 400);
}

#[tokio::test]
async fn a_result_is_kept_when_the_request_asks_and_long_polls_until_the_end() {
    let Some((_bed, w)) = started("res-ask", &[]).await else {
        return;
    };
    post(&w, "asked", true).await;
    post(&w, "not-asked", false).await;
    let r = result(&w, "asked", "?wait=15s").await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "made");
    // Ended, but nobody asked for its result.
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&w, "not-asked").await.1["state"] != "succeeded" {
        assert!(Instant::now() < deadline, "not-asked never succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = result(&w, "not-asked", "").await;
    assert_eq!(r.status(), 404);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["state"], "succeeded");
    assert!(body["error"].as_str().unwrap().contains("X-Store-Result"));

    post(&w, "slow", true).await;
    let r = result(&w, "slow", "?wait=300ms").await;
    assert_eq!(r.status(), 408, "the slow call cannot have ended yet");
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        ["queued", "running"].contains(&body["state"].as_str().unwrap_or("")),
        "{body}"
    );
    let waited = Instant::now();
    let r = result(&w, "slow", "?wait=15s").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "late");
    assert!(
        waited.elapsed() >= Duration::from_millis(500),
        "did not wait"
    );
}

#[tokio::test]
async fn store_results_needs_call_status() {
    let out = std::process::Command::new(common::worker_bin())
        .env("store_results", "true")
        .env("status_ttl", "0")
        .env("nats_url", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store_results"), "{err}");
}
