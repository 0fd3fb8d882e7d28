//! A busy but healthy function, against a real nats-server: a host that admits 3 calls at once
//! and answers 429 past it (as the OpenFaaS watchdog with `max_inflight=3` does, without
//! `X-OpenFaaS-Internal`), 700 ms a call; 60 calls through the ingress; the worker at
//! `max_inflight=10`, `initial_retry_wait=1s`, `max_retry_wait=10s` and every other setting at
//! its default. In both modes every call succeeds once, with one callback, no dead letter, the
//! last callback within 30 s and fewer than 60 answers of 429 in all.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::bed::{Bed, TestBed};
use common::http::LimitedFunction;
use common::load::ids;
use common::worker::Worker;

const CALLS: usize = 60;
const CAPACITY: usize = 3;
const RUN: Duration = Duration::from_millis(700);

/// A bed with a callback receiver and one worker with its ingress, calling `function`.
async fn bed_for(
    name: &str,
    function: &LimitedFunction,
    envs: &[(&str, &str)],
) -> Option<(TestBed, Worker)> {
    let bed = Bed::new(name)
        .callback_receiver()
        .start_without_worker()
        .await?;
    let worker = bed
        .worker()
        .ingress()
        .gateway(&function.server.base_url())
        .envs(envs)
        .start()
        .await;
    Some((bed, worker))
}

async fn saturated(mode: &str) {
    let function = LimitedFunction::start(CAPACITY, RUN).await;
    let envs = [
        ("scaling_mode", mode),
        ("max_inflight", "10"),
        ("initial_retry_wait", "1s"),
        ("max_retry_wait", "10s"),
    ];
    let Some((bed, worker)) = bed_for(&format!("sat-{mode}"), &function, &envs).await else {
        return;
    };
    let started = Instant::now();
    let tally = bed
        .target([&worker])
        .post_all(ids("sat", CALLS, 2), 1_000, Duration::from_secs(10))
        .await;
    let accepted = tally.accepted();
    assert_eq!(accepted.len(), CALLS, "every call is accepted");
    bed.wait_all_called_back(&accepted, Duration::from_secs(60))
        .await;
    let last_callback = started.elapsed();

    let mut callbacks: HashMap<String, Vec<String>> = HashMap::new();
    for cb in bed.receiver().requests() {
        let id = cb.header("x-call-id").unwrap_or_default().to_string();
        let status = cb.header("x-function-status").unwrap_or_default();
        callbacks.entry(id).or_default().push(status.to_string());
    }
    let rejected = function.answered(429);
    eprintln!(
        "{mode} mode: callbacks {} x 200, {rejected} answers of 429, last callback {:.1}s, \
         dead letters {}",
        callbacks.values().flatten().filter(|s| *s == "200").count(),
        last_callback.as_secs_f64(),
        bed.dead_letter_count().await
    );
    for id in &accepted {
        assert_eq!(
            callbacks.get(id).map(Vec::as_slice),
            Some(&["200".to_string()][..]),
            "{id}: one callback, a success"
        );
    }
    assert_eq!(callbacks.len(), CALLS, "no callback for an unknown call");
    assert_eq!(
        function.answered(200),
        CALLS,
        "every call ran to success once"
    );
    assert!(function.served_twice().is_empty(), "no call ran twice");
    assert_eq!(bed.dead_letter_count().await, 0, "no dead letter");
    assert!(
        last_callback <= Duration::from_secs(30),
        "the last callback came after {last_callback:?} (ideal: {:?})",
        RUN * (CALLS / CAPACITY) as u32
    );
    assert!(rejected < CALLS, "{rejected} answers of 429");
    bed.wait_drained(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_busy_function_completes_every_call_in_static_mode() {
    saturated("static").await;
}

#[tokio::test]
async fn a_busy_function_completes_every_call_in_function_mode() {
    saturated("function").await;
}

/// Static mode: a function at its limit does not hold up another function's calls queued
/// behind its backlog (one shared FIFO consumer).
#[tokio::test]
async fn a_busy_function_does_not_hold_up_the_others_in_static_mode() {
    let function = LimitedFunction::beside("busy", 1, Duration::from_secs(2)).await;
    let Some((bed, worker)) = bed_for("sat-others", &function, &[("max_inflight", "4")]).await
    else {
        return;
    };
    let post = |name: &'static str, id: String| {
        worker
            .post(name)
            .header("X-Call-Id", id)
            .header("X-Callback-Url", bed.callback_url("/done"))
            .send()
    };
    for i in 0..8 {
        assert_eq!(
            post("busy", format!("busy-{i}")).await.unwrap().status(),
            202
        );
    }
    // The busy function's first call runs, its 429s come back: only then the others arrive.
    common::eventually(
        Duration::from_secs(10),
        "the busy function said 429",
        || {
            let n = function.answered(429);
            async move { n > 0 }
        },
    )
    .await;
    let quick: std::collections::HashSet<String> = (0..4).map(|i| format!("quick-{i}")).collect();
    for id in &quick {
        assert_eq!(post("quick", id.clone()).await.unwrap().status(), 202);
    }
    bed.wait_all_called_back(&quick, Duration::from_secs(30))
        .await;
    // Only the busy function's answers are counted.
    let busy_done = function.answered(200);
    assert!(
        busy_done <= 3,
        "the quick calls waited for the busy backlog: {busy_done} of its 8 calls were done first"
    );
}
