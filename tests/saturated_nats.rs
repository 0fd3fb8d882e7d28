//! A busy but healthy function, against a real nats-server: a host that admits 3 calls at once
//! and answers 429 past it (as the OpenFaaS watchdog with `max_inflight=3` does, without
//! `X-OpenFaaS-Internal`), 700 ms a call; 60 calls through the ingress; the worker at
//! `max_inflight=10`, `initial_retry_wait=1s`, `max_retry_wait=10s` and every other setting at
//! its default. In both modes every call succeeds once, with one callback, no dead letter, the
//! last callback within 30 s and fewer than 60 answers of 429 in all.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::bed::Bed;
use common::http::LimitedFunction;
use common::load::ids;

const CALLS: usize = 60;
const CAPACITY: usize = 3;
const RUN: Duration = Duration::from_millis(700);

async fn saturated(mode: &str) {
    let function = LimitedFunction::start(CAPACITY, RUN).await;
    let Some(bed) = Bed::new(&format!("sat-{mode}"))
        .callback_receiver()
        .start_without_worker()
        .await
    else {
        return;
    };
    let worker = bed
        .worker()
        .ingress()
        .gateway(&function.server.base_url())
        .envs(&[
            ("scaling_mode", mode),
            ("max_inflight", "10"),
            ("initial_retry_wait", "1s"),
            ("max_retry_wait", "10s"),
        ])
        .start()
        .await;
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
