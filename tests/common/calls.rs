//! Call status and cancel through a worker's ingress: `GET /system/calls/{id}`,
//! `DELETE /async-function/{id}`, and a bed with a function, a callback receiver and one
//! worker serving its ingress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bed::{Bed, TestBed};
use super::http::{Recorded, Reply};
use super::worker::{Worker, http_client};

/// A bed with a callback receiver, a function answering with `function`, and one worker with
/// its ingress and `envs`.
pub async fn bed_with<F>(
    name: &str,
    function: F,
    envs: &[(&str, &str)],
) -> Option<(TestBed, Worker)>
where
    F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
{
    let bed = Bed::new(name)
        .function(function)
        .callback_receiver()
        .start_without_worker()
        .await?;
    let w = bed.worker().ingress().envs(envs).start().await;
    Some((bed, w))
}

/// A bed as [`bed_with`] whose function answers `500` until the flag is set to `false`, then
/// `200`, with `max_retry_attempts=1`: each call dead-letters at once while it fails.
pub async fn failing_bed(name: &str) -> Option<(TestBed, Worker, Arc<AtomicBool>)> {
    let failing = Arc::new(AtomicBool::new(true));
    let fail = failing.clone();
    let (bed, w) = bed_with(
        name,
        move |_, _| match fail.load(Ordering::SeqCst) {
            true => Reply::status(500),
            false => Reply::ok("ok"),
        },
        &[("max_retry_attempts", "1")],
    )
    .await?;
    Some((bed, w, failing))
}

/// The answer of `method` on `url`: its status code and JSON body (`Null` when not JSON).
pub async fn json(method: reqwest::Method, url: String) -> (u16, Value) {
    let resp = http_client()
        .request(method, url)
        .send()
        .await
        .expect("ingress answers");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `GET /system/calls/{id}`.
pub async fn status(w: &Worker, id: &str) -> (u16, Value) {
    json(
        reqwest::Method::GET,
        format!("{}/system/calls/{id}", w.ingress()),
    )
    .await
}

/// `DELETE /async-function/{id}`.
pub async fn cancel(w: &Worker, id: &str) -> (u16, Value) {
    json(
        reqwest::Method::DELETE,
        format!("{}/async-function/{id}", w.ingress()),
    )
    .await
}

/// Polls the call's status until it is `state` (within `within`); the status then.
pub async fn wait_state(w: &Worker, id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = status(w, id).await;
        if code == 200 && body["state"] == state {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "call {id} never {state}; last {code} {body}\n{}",
            w.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
