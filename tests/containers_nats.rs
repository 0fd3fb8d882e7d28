//! End to end through a NATS *container* (testcontainers, the local FROM-scratch image or
//! `$QW_NATS_IMAGE`): ingress → NATS container → worker processes → function → callback, and
//! the container-level faults a process harness cannot produce the same way: `docker kill` +
//! `docker start` of the broker (its store lives in the container) and `docker pause`.
//!
//! These tests always use a container, whatever `tests/common/nats.rs` would pick: without
//! Docker they fail under `CI` and skip loudly otherwise.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::bed::Bed;
use common::docker;
use common::load::{Tally, call_ids, client, ids};
use common::nats::NatsServer;
use common::worker::wait_http_ok;

const T: Duration = Duration::from_secs(30);

/// A bed in a NATS container whose workers run the ingress, with a callback receiver.
fn container_bed(name: &str) -> Bed {
    Bed::new(name).in_container().callback_receiver().ingress()
}

/// With Docker answering and neither `NATS_URL` nor `QW_NATS_BACKEND` set, the shared harness
/// runs NATS in a container (the order the issue asks for: NATS_URL, container, process).
#[tokio::test]
async fn the_harness_picks_a_container_when_docker_answers() {
    if std::env::var_os("NATS_URL").is_some() || std::env::var_os("QW_NATS_BACKEND").is_some() {
        eprintln!("SKIPPED: NATS_URL or QW_NATS_BACKEND chooses the backend for this run");
        return;
    }
    let Some(probe) = Bed::new("probe")
        .in_container()
        .start_without_worker()
        .await
    else {
        return;
    };
    drop(probe);
    let nats = NatsServer::start().await.expect("a server");
    assert!(nats.is_container(), "Docker answers, so a container");
    let name = nats.container_name().unwrap().to_string();
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe.>".into()],
        ..Default::default()
    })
    .await
    .expect("JetStream answers in the container");
    assert!(nats.log().contains("Server is ready"), "container log");
    drop(js);
    drop(nats);
    // Dropping the server removes its container.
    common::eventually(T, "container removed", || {
        let name = name.clone();
        async move { docker::cli(&["inspect", &name], 20).is_err() }
    })
    .await;
}

#[tokio::test]
async fn two_workers_run_every_invocation_through_a_nats_container() {
    let Some((bed, w1)) = container_bed("ctr").env("max_inflight", "8").start().await else {
        return;
    };
    let (receiver, queue) = (bed.receiver(), &bed.queue);
    let w2 = bed.start_worker().await;

    let tally = bed
        .target([&w1, &w2])
        .post_all(ids("ctr", 400, 3), 400, T)
        .await;
    let accepted = tally.accepted();
    assert_eq!(accepted.len(), 400, "a healthy broker accepts everything");
    assert_eq!(tally.refused(), 0, "no 503 from a healthy broker");
    bed.wait_all_called_back(&accepted, Duration::from_secs(60))
        .await;

    // Each callback carries its own invocation's response.
    for cb in receiver.requests() {
        let id = cb.header("x-call-id").unwrap_or_default().to_string();
        assert_eq!(
            cb.body_str(),
            id,
            "callback body is the echoed request body"
        );
        assert_eq!(
            cb.header("x-function-name"),
            Some("echo"),
            "the function as the message names it"
        );
    }
    let invoked = call_ids(&bed.function.requests());
    assert!(accepted.iter().all(|id| invoked.contains_key(id)));
    bed.wait_drained(T).await;
    let (p1, p2) = (w1.processed(queue).await, w2.processed(queue).await);
    assert!(p1 > 0.0 && p2 > 0.0, "both workers took part: {p1} + {p2}");
    assert!(p1 + p2 >= 400.0);
}

#[tokio::test]
async fn a_nats_container_killed_and_restarted_mid_load_loses_nothing() {
    let Some((mut bed, w)) = container_bed("ctr-restart")
        .restartable()
        .env("max_inflight", "8")
        .start()
        .await
    else {
        return;
    };

    // 300 invocations at 100/s; the broker is killed at 1 s and started again at 2.5 s.
    let tally = Tally::default();
    let target = bed.target([&w]);
    let nats = &mut bed.nats;
    let t0 = Instant::now();
    let load = target.post(ids("rs", 300, 3), 100, &tally, Duration::from_secs(60));
    let fault = async {
        tokio::time::sleep_until((t0 + Duration::from_secs(1)).into()).await;
        nats.kill();
        tokio::time::sleep_until((t0 + Duration::from_millis(2500)).into()).await;
        nats.restart().await;
    };
    tokio::join!(load, fault);
    let accepted = tally.accepted();
    eprintln!(
        "restart: {} accepted, {} refused attempts (503/transport, retried)",
        accepted.len(),
        tally.refused()
    );
    assert!(
        tally.abandoned.lock().unwrap().is_empty(),
        "every invocation is accepted once the broker is back"
    );
    assert_eq!(accepted.len(), 300);
    assert!(
        tally.refused() > 0,
        "the ingress refused (503) while the broker was down"
    );
    bed.wait_all_called_back(&accepted, Duration::from_secs(60))
        .await;
    bed.wait_drained(T).await;
    wait_http_ok(&format!("{}/readyz", w.metrics), T).await;
    let reconnects = w.metric("queue_worker_nats_reconnect_total").await;
    assert!(
        reconnects.is_some_and(|n| n >= 1.0),
        "the worker reconnected by itself: {reconnects:?}"
    );
}

#[tokio::test]
async fn a_paused_nats_container_gets_503_not_202_then_work_resumes() {
    let Some((bed, w)) = container_bed("ctr-pause").start().await else {
        return;
    };
    let (nats, receiver) = (&bed.nats, bed.receiver());
    let ingress = w.ingress().to_string();
    let http = client();

    // Frozen broker (cgroup freezer): the connection stays open, nothing is answered.
    nats.pause();
    let started = Instant::now();
    let resp = http
        .post(format!("{ingress}/async-function/echo"))
        .header("X-Call-Id", "while-paused")
        .header("X-Callback-Url", receiver.url("/done"))
        .body("frozen")
        .send()
        .await
        .expect("the ingress answers even when NATS does not");
    let status = resp.status().as_u16();
    eprintln!("paused broker: {status} after {:?}", started.elapsed());
    nats.resume();
    assert_eq!(status, 503, "no 202 for a message that was not stored");

    // Thawed: accepted and run, no worker restart.
    let tally = bed.target([&w]).post_all(ids("thawed", 20, 2), 50, T).await;
    let accepted: HashSet<String> = tally.accepted();
    assert_eq!(accepted.len(), 20);
    bed.wait_all_called_back(&accepted, T).await;
}
