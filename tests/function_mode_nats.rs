//! `scaling_mode=function` against a real nats-server: fairness, consumers that come and go,
//! recreation, replicas sharing work, the adaptive limiter, and switching modes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::bed::{Bed, TestBed};
use common::http::{FunctionServer, LimitedFunction, Reply};
use common::nats::NatsServer;
use common::worker::stream_messages;

const T: Duration = Duration::from_secs(30);

/// Publish `n` minimal invocations of `function` with call ids `<prefix>-<i>`, pipelined.
async fn publish_many(nats: &NatsServer, queue: &str, function: &str, prefix: &str, n: usize) {
    let js = nats.jetstream().await;
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let msg = format!(
            "{{\"Header\":{{\"X-Call-Id\":[\"{prefix}-{i}\"]}},\"Method\":\"POST\",\"Function\":\"{function}\"}}"
        );
        acks.push(
            js.publish(format!("{queue}.{function}.openfaas-fn"), msg.into())
                .await
                .unwrap(),
        );
        if acks.len() >= 512 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Create the work-queue stream as the worker would, so tests can publish before it starts.
async fn create_stream(nats: &NatsServer, queue: &str) {
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("OF_{queue}"),
        subjects: vec![queue.to_string(), format!("{queue}.>")],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn consumers(nats: &NatsServer, queue: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let js = nats.jetstream().await;
    match js.get_stream(format!("OF_{queue}")).await {
        Ok(s) => s.consumer_names().try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn call_ids(f: &FunctionServer) -> Vec<String> {
    f.requests()
        .iter()
        .filter_map(|r| r.header("x-call-id").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_small_function_is_not_starved_by_a_backlog_of_another() {
    let Some(bed) = Bed::new("fair")
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(2)))
        .envs(&[
            ("scaling_mode", "function"),
            ("max_inflight", "4"),
            ("limiter_enabled", "false"),
        ])
        .start_without_worker()
        .await
    else {
        return;
    };
    let (nats, queue, function) = (&bed.nats, &bed.queue, &bed.function);
    create_stream(nats, queue).await;
    // 10,000 for one function first, then 5 for another: FIFO would run the 5 last.
    publish_many(nats, queue, "big", "big", 10_000).await;
    publish_many(nats, queue, "small", "small", 5).await;
    let _w = bed.start_worker().await;
    common::eventually(T, "the 5 small calls ran", || {
        let n = call_ids(function)
            .iter()
            .filter(|id| id.starts_with("small-"))
            .count();
        async move { n == 5 }
    })
    .await;
    let ids = call_ids(function);
    let last_small = ids.iter().rposition(|id| id.starts_with("small-")).unwrap();
    let big_before = ids[..last_small]
        .iter()
        .filter(|id| id.starts_with("big-"))
        .count();
    assert!(
        big_before < 100,
        "the 5 small calls finished after only {big_before} of 10000 big ones (round-robin), not after the backlog"
    );
}

#[tokio::test]
async fn consumers_appear_with_work_and_go_after_the_inactive_threshold() {
    let Some((bed, w)) = Bed::new("come-go")
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(500)))
        .envs(&[
            ("scaling_mode", "function"),
            ("consumer_inactive_threshold", "2s"),
        ])
        .start()
        .await
    else {
        return;
    };
    let (nats, queue, function) = (&bed.nats, &bed.queue, &bed.function);
    assert!(
        consumers(nats, queue).await.is_empty(),
        "no work, no consumer"
    );
    publish_many(nats, queue, "fa", "fa", 3).await;
    publish_many(nats, queue, "fb", "fb", 1).await;
    function.wait_for(1, T).await;
    let names = consumers(nats, queue).await;
    assert_eq!(
        names.len(),
        2,
        "one consumer per function with work: {names:?}"
    );
    assert!(names.iter().all(|n| n.starts_with(&format!("{queue}-fn-"))));
    assert_eq!(
        w.metric(&format!("queue_worker_consumers{{queue_name=\"{queue}\"}}"))
            .await,
        Some(2.0)
    );
    function.wait_for(4, T).await;
    // Workers stop pulling after 2 s idle; the server deletes the consumers after
    // max(2 s, ack_wait 5 s) + 15 s of grace.
    common::eventually(
        Duration::from_secs(45),
        "idle consumers deleted",
        || async { consumers(nats, queue).await.is_empty() },
    )
    .await;
    common::eventually(T, "consumers gauge back to 0", || async {
        w.metric(&format!("queue_worker_consumers{{queue_name=\"{queue}\"}}"))
            .await
            == Some(0.0)
    })
    .await;
    assert_eq!(
        w.metric(&format!(
            "queue_worker_pending_messages{{queue_name=\"{queue}\",function_name=\"fa.openfaas-fn\"}}"
        ))
        .await,
        Some(0.0)
    );
    // New work brings the consumer back.
    publish_many(nats, queue, "fa", "again", 1).await;
    function.wait_for(5, T).await;
}

#[tokio::test]
async fn a_consumer_deleted_by_hand_mid_run_is_recreated() {
    let Some((bed, _w)) = Bed::new("fn-del")
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(200)))
        .envs(&[("scaling_mode", "function"), ("max_inflight", "2")])
        .start()
        .await
    else {
        return;
    };
    let (nats, queue, function) = (&bed.nats, &bed.queue, &bed.function);
    publish_many(nats, queue, "victim", "v", 20).await;
    function.wait_for(3, T).await;
    let js = nats.jetstream().await;
    let stream = js.get_stream(bed.stream()).await.unwrap();
    for name in consumers(nats, queue).await {
        stream.delete_consumer(&name).await.unwrap();
    }
    common::eventually(T, "all 20 ran", || {
        let ids: HashSet<String> = call_ids(function).into_iter().collect();
        async move { (0..20).all(|i| ids.contains(&format!("v-{i}"))) }
    })
    .await;
    bed.wait_drained(T).await;
}

#[tokio::test]
async fn two_workers_share_the_work_without_duplicate_invocations() {
    let Some((bed, w1)) = Bed::new("fn-two")
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(20)))
        .envs(&[("scaling_mode", "function"), ("max_inflight", "4")])
        .start()
        .await
    else {
        return;
    };
    let w2 = bed.start_worker().await;
    for f in ["f1", "f2", "f3", "f4"] {
        publish_many(&bed.nats, &bed.queue, f, f, 50).await;
    }
    bed.function.wait_for(200, T).await;
    bed.wait_drained(T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = call_ids(&bed.function);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicate invocations: {dups:?}");
    assert_eq!(counts.len(), 200);
    let p1 = w1.processed(&bed.queue).await;
    let p2 = w2.processed(&bed.queue).await;
    assert_eq!(p1 + p2, 200.0);
    assert!(p1 > 0.0 && p2 > 0.0, "both replicas worked: {p1} + {p2}");
}

/// Runs `calls` invocations through a function of capacity 3, on a queue and function of their
/// own on the bed's server; (429s seen, time to finish).
async fn run_against_capacity(bed: &TestBed, limiter: bool, calls: usize) -> (usize, Duration) {
    let nats = &bed.nats;
    let function = LimitedFunction::start(3, Duration::from_millis(100)).await;
    let queue = common::unique_name(if limiter { "lim-on" } else { "lim-off" });
    create_stream(nats, &queue).await;
    publish_many(nats, &queue, "narrow", "n", calls).await;
    let started = Instant::now();
    let _w = bed
        .worker()
        .queue(&queue)
        .gateway(&function.server.base_url())
        .envs(&[
            ("scaling_mode", "function"),
            ("max_inflight", "12"),
            ("limiter_enabled", if limiter { "true" } else { "false" }),
            ("initial_retry_wait", "100ms"),
            ("max_retry_wait", "400ms"),
            ("max_retry_attempts", "1000"),
            ("retry_budget_ratio", "100"),
        ])
        .start()
        .await;
    common::eventually(Duration::from_secs(60), "all calls done", || async {
        stream_messages(nats, &format!("OF_{queue}")).await == 0
    })
    .await;
    let elapsed = started.elapsed();
    (function.answered(429), elapsed)
}

#[tokio::test]
async fn the_limiter_holds_work_back_instead_of_burning_429s() {
    // The bed gives the server; each run has its own queue, function and worker.
    let Some(bed) = Bed::new("lim").start_without_worker().await else {
        return;
    };
    let (with_429, with_time) = run_against_capacity(&bed, true, 60).await;
    let (without_429, without_time) = run_against_capacity(&bed, false, 60).await;
    eprintln!(
        "limiter on: {with_429} x 429 in {with_time:?}; limiter off: {without_429} x 429 in {without_time:?}"
    );
    assert!(
        with_429 * 3 < without_429,
        "the limiter should cut 429s by far: {with_429} vs {without_429}"
    );
}

#[tokio::test]
async fn switching_between_static_and_function_mode_loses_nothing() {
    let Some((bed, mut w)) = Bed::new("switch")
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(50)))
        .env("max_inflight", "2")
        .start()
        .await
    else {
        return;
    };
    let (nats, queue, function) = (&bed.nats, &bed.queue, &bed.function);
    publish_many(nats, queue, "s1", "a", 20).await;
    publish_many(nats, queue, "s2", "b", 20).await;
    function.wait_for(5, T).await;
    w.proc.sigterm();
    assert!(w.proc.wait_exit(T).await.expect("exits").success());

    let mut w = bed
        .worker()
        .envs(&[("scaling_mode", "function"), ("max_inflight", "2")])
        .start()
        .await;
    assert!(
        !consumers(nats, queue)
            .await
            .contains(&format!("{queue}-workers")),
        "the static consumer was removed"
    );
    common::eventually(T, "all 40 ran", || {
        let ids: HashSet<String> = call_ids(function).into_iter().collect();
        async move {
            (0..20).all(|i| ids.contains(&format!("a-{i}")) && ids.contains(&format!("b-{i}")))
        }
    })
    .await;
    // Back to static while function consumers may still exist.
    publish_many(nats, queue, "s1", "c", 5).await;
    w.proc.sigterm();
    assert!(w.proc.wait_exit(T).await.expect("exits").success());
    let _w = bed.worker().start().await;
    let names = consumers(nats, queue).await;
    assert_eq!(names, vec![format!("{queue}-workers")]);
    common::eventually(T, "the 5 new calls ran", || {
        let ids: HashSet<String> = call_ids(function).into_iter().collect();
        async move { (0..5).all(|i| ids.contains(&format!("c-{i}"))) }
    })
    .await;
    bed.wait_drained(T).await;
}
