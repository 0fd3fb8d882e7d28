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

use common::bed::{Bed, TestBed};
use common::cluster::NatsCluster;
use common::load::{Tally, call_ids, client, ids};
use common::worker::{Worker, get_text, wait_http_ok};
use futures::StreamExt;

/// One cluster at a time: three servers and three workers already fill two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A three-node cluster, an echo function, a callback receiver, and `workers` workers with
/// their ingresses against every node; `None` (skip) as `NatsCluster::start`.
async fn cluster_bed(name: &str, workers: usize) -> Option<(TestBed<NatsCluster>, Vec<Worker>)> {
    let bed = Bed::new(name)
        .cluster()
        .callback_receiver()
        .ingress()
        .envs(&[
            ("nats_stream_replicas", "3"),
            ("max_inflight", "16"),
            ("ack_wait", "10s"),
            ("upstream_timeout", "5s"),
            ("initial_retry_wait", "200ms"),
            ("max_retry_wait", "1s"),
        ])
        .start_without_worker()
        .await?;
    let mut started = Vec::new();
    for _ in 0..workers {
        started.push(bed.start_worker().await);
    }
    bed.nats
        .wait_stream_healthy(&bed.stream(), true, Duration::from_secs(30))
        .await;
    Some((bed, started))
}

/// What the cluster and the ingress know of calls accepted without a callback: each call's
/// status record (stored, picked up, ended?) and the stream's messages and consumers, so a
/// failure says whether the message was lost or is stuck.
async fn explain_missing(
    bed: &TestBed<NatsCluster>,
    target: &common::load::Target,
    workers: &[Worker],
    ids: &[String],
) {
    let http = client();
    for id in ids.iter().take(5) {
        let url = format!("{}/system/calls/{id}", target.ingresses[0]);
        let answer = match http.get(&url).send().await {
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("no answer: {e}"),
        };
        eprintln!("missing callback: {id}: status record: {answer}");
        for (n, w) in workers.iter().enumerate() {
            let log = w.proc.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
            eprintln!("missing callback: {id}: worker {n} logged {lines:?}");
        }
    }
    let stream = bed.stream();
    let js = async_nats::jetstream::new(bed.nats.client().await);
    eprintln!(
        "missing callback: stream {stream} holds {} messages; consumers (name, pending, ack pending): {:?}",
        stream_messages(&bed.nats, &stream).await,
        consumer_states(&js, &stream).await
    );
    // Whether the message was stored at all, and how far the consumer thinks it got: an ack
    // floor past a message never delivered is the server's, not the worker's.
    if let Ok(mut s) = js.get_stream(&stream).await
        && let Ok(info) = s.info().await
    {
        eprintln!(
            "missing callback: stream state {:?}; cluster {:?}",
            info.state, info.cluster
        );
        if let Ok(mut c) = s
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!(
                "{}-workers",
                bed.queue
            ))
            .await
            && let Ok(ci) = c.info().await
        {
            eprintln!(
                "missing callback: consumer delivered {:?}, ack floor {:?}, cluster {:?}",
                ci.delivered, ci.ack_floor, ci.cluster
            );
        }
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

#[tokio::test]
async fn every_accepted_invocation_completes_through_node_loss_and_partition() {
    let _serial = SERIAL.lock().await;
    let Some((mut bed, mut workers)) = cluster_bed("cl", 3).await else {
        return;
    };
    let (queue, stream) = (bed.queue.clone(), bed.stream());
    let target = bed.target(&workers);
    let cluster = &mut bed.nats;

    // 2,000 invocations at 100/s (20 s), with faults along the way.
    const TOTAL: usize = 2000;
    let tally = Tally::default();
    let t0 = Instant::now();
    let load = target.post(ids("load", TOTAL, 4), 100, &tally, Duration::from_secs(60));
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
    let cluster = &bed.nats;
    let missing = bed
        .missing_callbacks(&accepted, Duration::from_secs(120))
        .await;
    if !missing.is_empty() {
        explain_missing(&bed, &target, &workers, &missing).await;
        panic!(
            "{} of {} accepted invocations have no successful callback after 120s: {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(10)]
        );
    }
    let invoked = call_ids(&bed.function.requests());
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
    wait_drained(cluster, &stream, Duration::from_secs(60)).await;

    // The workers (never restarted) are all connected and working: a last batch, with every
    // node up, runs to completion and every worker takes part.
    let before: Vec<f64> =
        futures::future::join_all(workers.iter().map(|w| w.processed(&queue))).await;
    for w in &workers {
        wait_http_ok(&format!("{}/readyz", w.metrics), Duration::from_secs(30)).await;
    }
    let tally2 = target
        .post_all(ids("final", 300, 3), 200, Duration::from_secs(30))
        .await;
    let accepted2 = tally2.accepted();
    assert_eq!(accepted2.len(), 300, "all nodes up: every post is accepted");
    bed.wait_all_called_back(&accepted2, Duration::from_secs(60))
        .await;
    // A worker whose pull request was lost in the partition notices after its silence limit
    // (5 s) and the others may have run the whole batch by then: more rounds, for up to 30 s,
    // until every worker has taken part.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for round in 1.. {
        let after: Vec<f64> =
            futures::future::join_all(workers.iter().map(|w| w.processed(&queue))).await;
        let idle: Vec<usize> = (0..workers.len())
            .filter(|i| after[*i] <= before[*i])
            .collect();
        let Some(&i) = idle.first() else {
            break;
        };
        if std::time::Instant::now() >= deadline {
            let log = workers[i].proc.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            panic!(
                "worker {i} processed nothing within 30 s of the last batch: not reconnected?\n\
                 its last log lines, newest first:\n{}",
                tail.join("\n")
            );
        }
        let more = target
            .post_all(
                ids(&format!("final{round}"), 30, 3),
                30,
                Duration::from_secs(30),
            )
            .await;
        bed.wait_all_called_back(&more.accepted(), Duration::from_secs(60))
            .await;
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
    let Some((mut bed, mut workers)) = cluster_bed("quorum", 2).await else {
        return;
    };
    let stream = bed.stream();
    let target = bed.target(&workers);

    // Baseline.
    let tally = target
        .post_all(ids("before", 100, 3), 200, Duration::from_secs(30))
        .await;
    let before = tally.accepted();
    assert_eq!(before.len(), 100);
    bed.wait_all_called_back(&before, Duration::from_secs(60))
        .await;

    // Two of three down: nothing can be stored, so nothing may be accepted.
    bed.nats.kill(1);
    bed.nats.kill(2);
    let http = client();
    let mut statuses = Vec::new();
    for (n, ingress) in target.ingresses.iter().cycle().take(4).enumerate() {
        let started = Instant::now();
        let resp = http
            .post(format!("{ingress}/async-function/echo"))
            .header("X-Call-Id", format!("noquorum-{n}"))
            .header("X-Callback-Url", target.callback.as_str())
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
    bed.nats.restart(1).await;
    bed.nats.restart(2).await;
    // Every replica of the stream caught up before new work. Once on nats-server 2.9, a call
    // accepted while a restarted replica was still catching up was gone from the stream without
    // any attempt (never seen on the newest server); what `explain_missing` prints tells
    // whether the server dropped it or a worker did.
    bed.nats
        .wait_stream_healthy(&stream, true, Duration::from_secs(60))
        .await;
    for w in &workers {
        wait_http_ok(&format!("{}/readyz", w.metrics), Duration::from_secs(60)).await;
    }
    let tally = target
        .post_all(ids("after", 200, 3), 200, Duration::from_secs(60))
        .await;
    let after = tally.accepted();
    assert_eq!(
        after.len(),
        200,
        "quorum is back: every post is accepted in the end"
    );
    let missing = bed.missing_callbacks(&after, Duration::from_secs(60)).await;
    if !missing.is_empty() {
        explain_missing(&bed, &target, &workers, &missing).await;
        panic!(
            "{} of {} accepted after quorum came back have no successful callback after 60s: {:?}",
            missing.len(),
            after.len(),
            &missing[..missing.len().min(10)]
        );
    }
    let (status, _) = get_text(&format!("{}/readyz", workers[0].metrics)).await;
    assert_eq!(status, 200);
    wait_drained(&bed.nats, &stream, Duration::from_secs(60)).await;
    for w in &mut workers {
        assert!(
            w.proc.try_exit().is_none(),
            "a worker exited:\n{}",
            w.proc.log()
        );
    }
}
