//! Flow control against a real nats-server, with three worker replicas: a function's
//! `max_concurrency` and `rate` hold across them, calls held back cost no attempt, a pin wins
//! over the message, and a function without limits runs on beside a limited one.

mod common;

use std::time::{Duration, Instant};

use common::bed::{Bed, TestBed};
use common::http::{FunctionServer, Recorded, Reply};
use common::worker::Worker;

const T: Duration = Duration::from_secs(60);

/// A call of `function` with call id `id` and these annotations, as the gateway writes it.
fn message(function: &str, id: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    format!(
        "{{\"Header\":{{\"X-Call-Id\":[\"{id}\"]}},\"Method\":\"POST\",\"Function\":\"{function}\",\"Annotations\":{{{}}}}}",
        annotations.join(",")
    )
}

/// Publish `n` calls of `function` (ids `<function>-<i>`) with `annotations`.
async fn publish(bed: &TestBed, function: &str, n: usize, annotations: &[(&str, &str)]) {
    for i in 0..n {
        let id = format!("{function}-{i}");
        bed.publish_to(
            &format!("{function}.openfaas-fn"),
            message(function, &id, annotations),
        )
        .await;
    }
}

/// The bed's first worker and two more replicas.
async fn three_replicas(bed: &TestBed) -> Vec<Worker> {
    let mut workers = vec![bed.start_worker().await];
    for _ in 0..2 {
        workers.push(bed.start_worker().await);
    }
    workers
}

fn calls_of<'a>(function: &str, requests: &'a [Recorded]) -> Vec<&'a Recorded> {
    let path = format!("/function/{function}");
    requests
        .iter()
        .filter(|r| r.path.starts_with(&path))
        .collect()
}

async fn wait_called(f: &FunctionServer, function: &str, n: usize, timeout: Duration) {
    common::eventually(timeout, &format!("{n} calls of {function}"), || {
        let got = calls_of(function, &f.requests()).len();
        async move { got >= n }
    })
    .await;
}

/// `max_concurrency=2` holds across three replicas in `mode`, and the calls held back cost no
/// attempt: with one attempt allowed each, every call still runs once and none is dead-lettered.
async fn max_concurrency_holds_across_replicas(mode: &str) {
    let Some(bed) = Bed::new(&format!("flow-cap-{mode}"))
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(150)))
        .envs(&[
            ("scaling_mode", mode),
            ("max_inflight", "16"),
            ("limiter_enabled", "false"),
        ])
        .start_without_worker()
        .await
    else {
        return;
    };
    // The backlog first, so that every replica finds work at once.
    let first = bed.start_worker().await;
    drop(first);
    let annotations = [
        ("com.openfaas.queue.max_concurrency", "2"),
        ("com.openfaas.retry.attempts", "1"),
    ];
    publish(&bed, "capped", 40, &annotations).await;
    let _workers = three_replicas(&bed).await;
    wait_called(&bed.function, "capped", 40, T).await;
    bed.wait_drained(T).await;
    let most = bed.function.max_concurrency();
    assert_eq!(
        most, 2,
        "at most 2 at once across the replicas, and 2 reached"
    );
    let requests = bed.function.requests();
    let calls = calls_of("capped", &requests);
    let mut ids: Vec<&str> = calls.iter().filter_map(|r| r.header("x-call-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((calls.len(), ids.len()), (40, 40), "each call ran once");
    assert_eq!(
        bed.dead_letter_count().await,
        0,
        "no attempt was spent waiting"
    );
}

#[tokio::test]
async fn max_concurrency_holds_across_three_replicas_in_static_mode() {
    max_concurrency_holds_across_replicas("static").await;
}

#[tokio::test]
async fn max_concurrency_holds_across_three_replicas_in_function_mode() {
    max_concurrency_holds_across_replicas("function").await;
}

/// The most calls that arrived in any window of `window` (each window starting at a call).
fn most_in_window(times: &[Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `rate=5/1s` holds over a 20-second run on three replicas: no window of a second (less
/// 30 ms for the way from the worker to the function) sees more than 5 calls start, and the
/// function is kept near its rate.
#[tokio::test]
async fn a_rate_holds_across_three_replicas_over_twenty_seconds() {
    let Some(bed) = Bed::new("flow-rate")
        .function(|_, _| Reply::ok("ok"))
        .envs(&[("max_inflight", "16")])
        .start_without_worker()
        .await
    else {
        return;
    };
    let _workers = three_replicas(&bed).await;
    let started = Instant::now();
    publish(&bed, "paced", 100, &[("com.openfaas.queue.rate", "5/1s")]).await;
    wait_called(&bed.function, "paced", 100, T).await;
    let took = started.elapsed();
    let requests = bed.function.requests();
    let times: Vec<Instant> = calls_of("paced", &requests).iter().map(|r| r.at).collect();
    let most = most_in_window(&times, Duration::from_millis(970));
    assert!(most <= 5, "{most} calls started within one second");
    assert!(
        took >= Duration::from_secs(19),
        "100 calls at 5/s took only {took:?}"
    );
    assert!(
        took < Duration::from_secs(40),
        "100 calls at 5/s took {took:?}: far below the rate"
    );
}
