//! Flow control against a real nats-server, with three worker replicas: a function's
//! `max_concurrency` and `rate` hold across them, calls held back cost no attempt, a pin wins
//! over the message, and a function without limits runs on beside a limited one.

mod common;

use std::time::{Duration, Instant};

use common::bed::{Bed, TestBed, cli, cli_json};
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

/// Publish `n` calls of `function` (ids `<function>-<i>`) with `annotations`, on one
/// connection, all sent before their acknowledgements are read.
async fn publish(bed: &TestBed, function: &str, n: usize, annotations: &[(&str, &str)]) {
    let js = bed.nats.jetstream().await;
    let subject = format!("{}.{function}.openfaas-fn", bed.queue);
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let payload = message(function, &format!("{function}-{i}"), annotations);
        acks.push(js.publish(subject.clone(), payload.into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
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

/// A pin wins over the calls' annotations on every replica; `flow ls` and `queue stats` show
/// it; a function without limits runs on at full speed beside the pinned one; `unset` removes
/// the pin.
#[tokio::test]
async fn a_pin_wins_over_annotations_and_other_functions_run_on() {
    let run = Duration::from_millis(300);
    let Some(bed) = Bed::new("flow-pin")
        .function(move |req, _| match req.path.starts_with("/function/slow") {
            true => Reply::ok("ok").with_delay(run),
            false => Reply::ok("ok"),
        })
        .envs(&[("max_inflight", "16"), ("limiter_enabled", "false")])
        .start_without_worker()
        .await
    else {
        return;
    };
    let _workers = three_replicas(&bed).await;
    let pinned = cli_json(&bed, &["flow", "set", "slow", "--max-concurrency", "1"]).await;
    assert_eq!(pinned[0]["function"], "slow.openfaas-fn", "{pinned}");
    assert_eq!(pinned[0]["pinned"]["max_concurrency"], 1, "{pinned}");
    // Every replica follows within a second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    publish(
        &bed,
        "slow",
        12,
        &[("com.openfaas.queue.max_concurrency", "4")],
    )
    .await;
    publish(&bed, "free", 30, &[]).await;
    wait_called(&bed.function, "free", 30, T).await;
    let slow_by_then = calls_of("slow", &bed.function.requests()).len();
    assert!(
        slow_by_then < 12,
        "the free function's 30 calls waited for the pinned one's backlog"
    );
    // Its backlog is still stored: `queue stats` lists it with its limits.
    let stats = cli_json(&bed, &["queue", "stats"]).await;
    let functions = stats["functions"].as_array().cloned().unwrap_or_default();
    let slow = functions
        .iter()
        .find(|f| f["function"] == "slow.openfaas-fn");
    assert_eq!(
        slow.map(|f| f["limits"].clone()),
        Some(serde_json::json!("max_concurrency=1")),
        "{stats}"
    );
    wait_called(&bed.function, "slow", 12, T).await;
    let requests = bed.function.requests();
    let mut starts: Vec<Instant> = calls_of("slow", &requests).iter().map(|r| r.at).collect();
    starts.sort();
    let closest = closest_gap(&starts);
    assert!(
        closest >= run - Duration::from_millis(20),
        "two calls of the pinned function overlapped: starts {closest:?} apart"
    );
    let listed = cli_json(&bed, &["flow", "ls"]).await;
    assert_eq!(listed[0]["enforced"]["max_concurrency"], 1, "{listed}");
    let unset = cli_json(&bed, &["flow", "unset", "slow"]).await;
    assert!(unset[0]["pinned"].is_null(), "{unset}");
    let (code, _, err) = cli(&bed, &["flow", "set", "slow"]).await;
    assert_eq!(code, 2, "a pin without limits is bad usage: {err}");
}

/// The shortest time between two of `starts` (sorted): below a call's run time, two overlapped.
fn closest_gap(starts: &[Instant]) -> Duration {
    starts.windows(2).map(|w| w[1] - w[0]).min().unwrap()
}

/// When the calls of flow key `key` arrived, in order.
fn starts_of(requests: &[Recorded], key: &str) -> Vec<Instant> {
    let mut starts: Vec<Instant> = requests
        .iter()
        .filter(|r| r.header("x-flow-control-key") == Some(key))
        .map(|r| r.at)
        .collect();
    starts.sort();
    starts
}

/// Through the ingress, with three replicas: a flow key's `parallelism=1` holds for that key
/// while another key of the same function runs at full speed; the pin of a key wins over its
/// header; a bad flow header is refused with a 400 that says why.
#[tokio::test]
async fn a_flow_keys_limits_hold_for_it_while_another_key_runs_on() {
    let run = Duration::from_millis(1_000);
    let Some(bed) = Bed::new("flow-key")
        .function(move |req, _| match req.header("x-flow-control-key") {
            Some("slow-tenant") | Some("pinned-tenant") => Reply::ok("ok").with_delay(run),
            _ => Reply::ok("ok"),
        })
        .envs(&[("max_inflight", "16"), ("limiter_enabled", "false")])
        .start_without_worker()
        .await
    else {
        return;
    };
    let entry = bed.worker().ingress().start().await;
    let _others = [bed.start_worker().await, bed.start_worker().await];
    let post = |key: &'static str, value: Option<&'static str>, id: String| {
        let mut req = entry
            .post("shared")
            .header("x-call-id", id)
            .header("x-flow-control-key", key);
        if let Some(v) = value {
            req = req.header("x-flow-control-value", v);
        }
        req.body("x").send()
    };
    for i in 0..5 {
        let resp = post("slow-tenant", Some("parallelism=1"), format!("slow-{i}")).await;
        assert_eq!(resp.unwrap().status(), 202);
    }
    for i in 0..20 {
        let resp = post("fast-tenant", None, format!("fast-{i}")).await;
        assert_eq!(resp.unwrap().status(), 202);
    }
    common::eventually(T, "the fast tenant's 20 calls", || {
        let n = starts_of(&bed.function.requests(), "fast-tenant").len();
        async move { n == 20 }
    })
    .await;
    let slow_by_then = starts_of(&bed.function.requests(), "slow-tenant").len();
    assert!(
        slow_by_then <= 2,
        "the fast tenant's calls waited behind the slow one's ({slow_by_then} of its 1-second calls ran first)"
    );
    wait_called(&bed.function, "shared", 25, T).await;
    let slow = starts_of(&bed.function.requests(), "slow-tenant");
    let closest = closest_gap(&slow);
    assert!(
        closest >= run - Duration::from_millis(20),
        "two calls of the slow tenant overlapped: starts {closest:?} apart"
    );

    // A key's pin wins over its header, on every replica.
    let pinned = cli_json(
        &bed,
        &[
            "flow",
            "set",
            "--key",
            "pinned-tenant",
            "--max-concurrency",
            "1",
        ],
    )
    .await;
    assert_eq!(pinned[0]["key"], "pinned-tenant", "{pinned}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for i in 0..4 {
        let resp = post(
            "pinned-tenant",
            Some("parallelism=4"),
            format!("pinned-{i}"),
        )
        .await;
        assert_eq!(resp.unwrap().status(), 202);
    }
    wait_called(&bed.function, "shared", 29, T).await;
    let pinned = starts_of(&bed.function.requests(), "pinned-tenant");
    let closest = closest_gap(&pinned);
    assert!(
        closest >= run - Duration::from_millis(20),
        "the pin held: {closest:?}"
    );

    let bad = post("t", Some("speed=fast"), "bad".into()).await.unwrap();
    assert_eq!(bad.status(), 400);
    let why = bad.text().await.unwrap_or_default();
    assert!(why.contains("X-Flow-Control-Value"), "{why}");
    bed.wait_drained(T).await;
    assert_eq!(bed.dead_letter_count().await, 0);
}
