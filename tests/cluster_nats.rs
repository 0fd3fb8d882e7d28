//! A three-node NATS cluster with JetStream replication (`nats_stream_replicas=3`), several
//! worker processes with their ingresses, and faults under load: a node killed and restarted,
//! a node partitioned and healed, and two of three nodes down (no quorum).
//!
//! The nodes are containers on a private Docker network when Docker answers, else
//! `nats-server` processes on loopback (see `tests/common/cluster.rs`). Invariants checked:
//! every invocation the ingress accepted (202) is invoked at least once and its callback
//! posted; the work queue drains; the ingress answers 503 — never 202 — while no quorum can
//! store a message; the workers reconnect by themselves (none is restarted).

mod common;

use std::time::{Duration, Instant};

use common::cluster::NatsCluster;
use common::http::{CallbackReceiver, FunctionServer};
use common::load::{Tally, call_ids, client, post_load, wait_all_called_back};
use common::worker::{Worker, WorkerProcess, get_text, wait_http_ok};
use futures::StreamExt;

/// One cluster at a time: three servers and three workers already fill two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `queue-worker run --ingress` against every node of `cluster`.
async fn start_worker(cluster: &NatsCluster, queue: &str, gateway: &str) -> Worker {
    let metrics_port = common::free_port();
    let ingress = format!("127.0.0.1:{}", common::free_port());
    let env: Vec<(&str, String)> = vec![
        ("nats_url", cluster.urls()),
        ("queue_name", queue.to_string()),
        ("gateway_url", gateway.to_string()),
        ("metrics_port", metrics_port.to_string()),
        ("nats_stream_replicas", "3".to_string()),
        ("max_inflight", "16".to_string()),
        ("ack_wait", "10s".to_string()),
        ("upstream_timeout", "5s".to_string()),
        ("initial_retry_wait", "200ms".to_string()),
        ("max_retry_wait", "1s".to_string()),
    ];
    let proc = WorkerProcess::spawn(
        &common::worker_bin(),
        &["run", "--ingress", ingress.as_str()],
        &env,
    );
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    wait_http_ok(&format!("{metrics}/readyz"), Duration::from_secs(60)).await;
    Worker {
        proc,
        metrics,
        ingress: Some(format!("http://{ingress}")),
    }
}

async fn stream_messages(cluster: &NatsCluster, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(cluster.client().await);
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(u64::MAX),
        Err(_) => u64::MAX,
    }
}

/// The consumers of `stream`: (name, pending, awaiting ack).
async fn consumer_states(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, u64, usize)> {
    let mut out = Vec::new();
    let Ok(s) = js.get_stream(stream).await else {
        return out;
    };
    let names: Vec<String> = s
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    for name in names {
        if let Ok(mut c) = s
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
            && let Ok(ci) = c.info().await
        {
            out.push((name, ci.num_pending, ci.num_ack_pending));
        }
    }
    out
}

/// Waits until nothing is left to run: the work queue `stream` is empty, or its consumers have
/// nothing pending and nothing awaiting an ack. (nats-server 2.9 can keep a few acked messages
/// in a replicated work queue after leader changes; that is reported, not failed: every
/// invocation was already checked to have run.) On timeout panics with the state.
async fn wait_drained(cluster: &NatsCluster, stream: &str, timeout: Duration) {
    let js = async_nats::jetstream::new(cluster.client().await);
    let deadline = Instant::now() + timeout;
    loop {
        let left = stream_messages(cluster, stream).await;
        if left == 0 {
            return;
        }
        let consumers = consumer_states(&js, stream).await;
        let idle = !consumers.is_empty() && consumers.iter().all(|(_, p, a)| *p == 0 && *a == 0);
        if idle {
            eprintln!(
                "note: {left} acked message(s) still stored in {stream} (server bookkeeping); \
                 consumers idle: {consumers:?}"
            );
            return;
        }
        if Instant::now() >= deadline {
            let info = match js.get_stream(stream).await {
                Ok(mut s) => format!(
                    "{:?}",
                    s.info().await.map(|i| (i.state.clone(), i.cluster.clone()))
                ),
                Err(e) => e.to_string(),
            };
            panic!(
                "work queue {stream} not drained within {timeout:?}: {left} message(s) left; \
                 consumers (name, pending, awaiting ack): {consumers:?}; stream: {info}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn processed(w: &Worker, queue: &str) -> f64 {
    w.metric(&format!(
        "queue_worker_messages_processed_total{{queue_name=\"{queue}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

#[tokio::test]
async fn every_accepted_invocation_completes_through_node_loss_and_partition() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    let function = FunctionServer::echo().await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("cl");
    let stream = format!("OF_{queue}");
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(start_worker(&cluster, &queue, &function.base_url()).await);
    }
    cluster
        .wait_stream_healthy(&stream, true, Duration::from_secs(30))
        .await;
    let ingresses: Vec<String> = workers.iter().filter_map(|w| w.ingress.clone()).collect();
    let callback = receiver.url("/done");

    // 2,000 invocations at 100/s (20 s), with faults along the way.
    const TOTAL: usize = 2000;
    let ids: Vec<String> = (0..TOTAL).map(|i| format!("load-{i:04}")).collect();
    let tally = Tally::default();
    let t0 = Instant::now();
    let load = post_load(
        &ingresses,
        &callback,
        ids,
        100,
        &tally,
        Duration::from_secs(60),
    );
    let faults = async {
        let at = |s: u64| tokio::time::sleep_until((t0 + Duration::from_secs(s)).into());
        at(3).await;
        eprintln!("fault: kill n0 ({} accepted)", tally.accepted_count());
        cluster.kill(0);
        at(8).await;
        eprintln!("fault: restart n0 ({} accepted)", tally.accepted_count());
        cluster.restart(0).await;
        at(11).await;
        eprintln!("fault: partition n1 ({} accepted)", tally.accepted_count());
        cluster.partition(1);
        at(17).await;
        eprintln!("fault: heal n1 ({} accepted)", tally.accepted_count());
        cluster.heal(1).await;
    };
    let timeline = async {
        // Accepted per second, printed at the end: shows how long each fault stalled intake.
        let mut per_second = Vec::new();
        let mut last = 0;
        while t0.elapsed() < Duration::from_secs(21) && last < TOTAL {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = tally.accepted_count();
            per_second.push(now - last);
            last = now;
        }
        per_second
    };
    let ((), (), per_second) = tokio::join!(load, faults, timeline);
    eprintln!("accepted per second: {per_second:?}");
    let accepted = tally.accepted();
    let refused = tally.refused();
    let abandoned = tally.abandoned.lock().unwrap().clone();
    eprintln!(
        "load: {} accepted, {refused} refused attempts (503/transport, retried), {} abandoned, in {:?}",
        accepted.len(),
        abandoned.len(),
        t0.elapsed()
    );
    assert!(
        abandoned.is_empty(),
        "with a quorum up the ingress must accept every invocation within 60 s; abandoned: {:?}",
        &abandoned[..abandoned.len().min(10)]
    );
    assert_eq!(accepted.len(), TOTAL);

    // Every accepted invocation ran and was called back; the queue drains.
    wait_all_called_back(&receiver, &accepted, Duration::from_secs(120)).await;
    let invoked = call_ids(&function.requests());
    let not_invoked: Vec<&String> = accepted
        .iter()
        .filter(|id| !invoked.contains_key(*id))
        .collect();
    assert!(not_invoked.is_empty(), "never invoked: {not_invoked:?}");
    let duplicates: usize = invoked.values().map(|n| n - 1).sum();
    eprintln!(
        "invocations: {} distinct, {duplicates} repeated (at-least-once)",
        invoked.len()
    );
    cluster
        .wait_stream_healthy(&stream, true, Duration::from_secs(60))
        .await;
    wait_drained(&cluster, &stream, Duration::from_secs(60)).await;

    // The workers (never restarted) are all connected and working: a last batch, with every
    // node up, runs to completion and every worker takes part.
    let before: Vec<f64> =
        futures::future::join_all(workers.iter().map(|w| processed(w, &queue))).await;
    for w in &workers {
        wait_http_ok(&format!("{}/readyz", w.metrics), Duration::from_secs(30)).await;
    }
    let final_ids: Vec<String> = (0..300).map(|i| format!("final-{i:03}")).collect();
    let tally2 = Tally::default();
    post_load(
        &ingresses,
        &callback,
        final_ids,
        200,
        &tally2,
        Duration::from_secs(30),
    )
    .await;
    let accepted2 = tally2.accepted();
    assert_eq!(accepted2.len(), 300, "all nodes up: every post is accepted");
    wait_all_called_back(&receiver, &accepted2, Duration::from_secs(60)).await;
    let after: Vec<f64> =
        futures::future::join_all(workers.iter().map(|w| processed(w, &queue))).await;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "worker {i} processed nothing of the last batch ({b} → {a}): not reconnected?"
        );
    }
    let reconnects: f64 = futures::future::join_all(workers.iter().map(|w| async {
        w.metric("queue_worker_nats_reconnect_total")
            .await
            .unwrap_or(0.0)
    }))
    .await
    .iter()
    .sum();
    eprintln!("worker reconnects in all: {reconnects}");
    for w in &mut workers {
        assert!(
            w.proc.try_exit().is_none(),
            "a worker exited:\n{}",
            w.proc.log()
        );
    }
}

#[tokio::test]
async fn without_quorum_the_ingress_answers_503_and_service_resumes_after() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = NatsCluster::start().await else {
        return;
    };
    let function = FunctionServer::echo().await;
    let receiver = CallbackReceiver::start().await;
    let queue = common::unique_name("quorum");
    let stream = format!("OF_{queue}");
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(start_worker(&cluster, &queue, &function.base_url()).await);
    }
    cluster
        .wait_stream_healthy(&stream, true, Duration::from_secs(30))
        .await;
    let ingresses: Vec<String> = workers.iter().filter_map(|w| w.ingress.clone()).collect();
    let callback = receiver.url("/done");

    // Baseline.
    let tally = Tally::default();
    let ids: Vec<String> = (0..100).map(|i| format!("before-{i:03}")).collect();
    post_load(
        &ingresses,
        &callback,
        ids,
        200,
        &tally,
        Duration::from_secs(30),
    )
    .await;
    let before = tally.accepted();
    assert_eq!(before.len(), 100);
    wait_all_called_back(&receiver, &before, Duration::from_secs(60)).await;

    // Two of three down: nothing can be stored, so nothing may be accepted.
    cluster.kill(1);
    cluster.kill(2);
    let http = client();
    let mut statuses = Vec::new();
    for (n, ingress) in ingresses.iter().cycle().take(4).enumerate() {
        let started = Instant::now();
        let resp = http
            .post(format!("{ingress}/async-function/echo"))
            .header("X-Call-Id", format!("noquorum-{n}"))
            .header("X-Callback-Url", callback.as_str())
            .body("must not be accepted")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{ingress} did not answer without quorum: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        eprintln!(
            "no quorum: {ingress} answered {status} in {:?}: {body}",
            started.elapsed()
        );
        statuses.push(status);
    }
    assert!(
        statuses.iter().all(|s| *s == 503),
        "without quorum every post must be refused with 503: {statuses:?}"
    );

    // Quorum back: the same workers (not restarted) reconnect and accept and run new work.
    cluster.restart(1).await;
    cluster.restart(2).await;
    cluster
        .wait_stream_healthy(&stream, false, Duration::from_secs(60))
        .await;
    for w in &workers {
        wait_http_ok(&format!("{}/readyz", w.metrics), Duration::from_secs(60)).await;
    }
    let tally = Tally::default();
    let ids: Vec<String> = (0..200).map(|i| format!("after-{i:03}")).collect();
    post_load(
        &ingresses,
        &callback,
        ids,
        200,
        &tally,
        Duration::from_secs(60),
    )
    .await;
    let after = tally.accepted();
    assert_eq!(
        after.len(),
        200,
        "quorum is back: every post is accepted in the end"
    );
    wait_all_called_back(&receiver, &after, Duration::from_secs(60)).await;
    let (status, _) = get_text(&format!("{}/readyz", workers[0].metrics)).await;
    assert_eq!(status, 200);
    wait_drained(&cluster, &stream, Duration::from_secs(60)).await;
    for w in &mut workers {
        assert!(
            w.proc.try_exit().is_none(),
            "a worker exited:\n{}",
            w.proc.log()
        );
    }
}
