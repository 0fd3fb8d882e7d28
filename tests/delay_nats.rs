//! Delayed calls against a real nats-server, through the real binary: `X-Delay`,
//! `X-Not-Before` and `queue-worker publish --delay` are not invoked before their time, wait in
//! NATS (not in a worker) so they survive the worker being stopped, and are refused past
//! `max_delay`.

mod common;

use std::time::{Duration, Instant};

use common::bed::TestBed;
use common::calls::{bed_with, cancel, status};
use common::http::{Recorded, Reply};

const T: Duration = Duration::from_secs(20);

fn arrivals(bed: &TestBed, id: &str) -> Vec<Recorded> {
    bed.function
        .requests()
        .into_iter()
        .filter(|r| r.header("x-call-id") == Some(id))
        .collect()
}

/// Waits for the call's first invocation; its arrival time.
async fn first_arrival(bed: &TestBed, id: &str) -> Instant {
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = arrivals(bed, id).first() {
            return r.at;
        }
        assert!(Instant::now() < deadline, "{id} never invoked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The subjects of the messages in the queue's delayed stream, and whether the server
/// schedules messages (2.12 and later).
async fn delayed_subjects(bed: &TestBed) -> (Vec<String>, bool) {
    let client = async_nats::connect(bed.nats.url()).await.expect("connect");
    let version = client.server_info().version;
    let native = queue_worker::broker::ServerVersion::parse(&version)
        .is_some_and(|v| v.schedules_messages());
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(format!("OF_{}_delayed", bed.queue))
        .await
        .expect("the delayed stream");
    let info = stream.info_with_subjects(">").await.expect("stream info");
    use futures::TryStreamExt;
    let subjects: Vec<(String, usize)> = info.try_collect().await.expect("subjects");
    (subjects.into_iter().map(|(s, _)| s).collect(), native)
}

#[tokio::test]
async fn a_delayed_call_waits_in_nats_through_a_worker_restart() {
    let Some((bed, w)) = bed_with("delay-restart", |_, _| Reply::ok("ok"), &[]).await else {
        return;
    };
    let posted = Instant::now();
    let r = w
        .post("fn")
        .header("x-call-id", "later")
        .header("X-Delay", "3s")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let deadline = Instant::now() + T;
    let queued = loop {
        let (code, body) = status(&w, "later").await;
        if code == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "no status for the delayed call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(queued["state"], "queued", "{queued}");
    let not_before = queued["not_before"].as_u64().expect("not_before");
    assert!(
        not_before + 1000 >= now_ms + 3000 && not_before <= now_ms + 3000,
        "{queued}"
    );
    w.stop().await;
    let (waiting, native) = delayed_subjects(&bed).await;
    match native {
        true => assert!(
            waiting
                .iter()
                .any(|s| s.starts_with(&format!("{}-delayed.at.", bed.queue))),
            "a NATS 2.12+ server holds the call as a schedule: {waiting:?}"
        ),
        false => assert_eq!(waiting, [format!("{}-delayed", bed.queue)]),
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(arrivals(&bed, "later").is_empty(), "invoked with no worker");
    let _w2 = bed.worker().start().await;
    let at = first_arrival(&bed, "later").await;
    assert!(at.duration_since(posted) >= Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(arrivals(&bed, "later").len(), 1);
}

#[tokio::test]
async fn delays_are_kept_and_checked() {
    let Some((bed, w)) = bed_with(
        "delay-checks",
        |_, _| Reply::ok("ok"),
        &[("max_delay", "10s")],
    )
    .await
    else {
        return;
    };
    let post = |id: &str, name: &str, value: String| {
        w.post("fn")
            .header("x-call-id", id)
            .header(name, value)
            .body("x")
            .send()
    };
    let r = post("too-late", "X-Delay", "1m".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("max_delay (10s)"));
    let r = post("bad", "X-Not-Before", "tomorrow".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let posted = Instant::now();
    let r = post("past", "X-Not-Before", past.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let at = first_arrival(&bed, "past").await;
    assert!(
        at.duration_since(posted) < Duration::from_secs(2),
        "a past time is now"
    );

    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let posted = Instant::now();
    let r = post("at-time", "X-Not-Before", soon.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let at = first_arrival(&bed, "at-time").await;
    assert!(
        at.duration_since(posted) >= Duration::from_secs(2),
        "invoked early"
    );

    let posted = Instant::now();
    let out = tokio::process::Command::new(common::worker_bin())
        .args([
            "publish",
            "fn",
            "--delay",
            "2s",
            "-H",
            "X-Call-Id: cli-later",
        ])
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = first_arrival(&bed, "cli-later").await;
    assert!(
        at.duration_since(posted) >= Duration::from_secs(2),
        "invoked early"
    );
}

#[tokio::test]
async fn a_delayed_call_cancelled_while_it_waits_is_never_invoked() {
    let Some((bed, w)) = bed_with("delay-cancel", |_, _| Reply::ok("ok"), &[]).await else {
        return;
    };
    let r = w
        .post("fn")
        .header("x-call-id", "never")
        .header("X-Delay", "2s")
        .header("X-Callback-Url", bed.callback_url("/cb"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + T;
    loop {
        let (code, body) = cancel(&w, "never").await;
        if code == 202 {
            break;
        }
        // Known about 50 ms after the ingress answered.
        assert!(code == 404 && Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let callbacks = bed.receiver().wait_for(1, T).await;
    assert_eq!(callbacks[0].header("x-function-status"), Some("499"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bed.receiver().count(), 1);
    assert!(
        arrivals(&bed, "never").is_empty(),
        "a cancelled delayed call ran"
    );
    bed.wait_drained(T).await;
}
