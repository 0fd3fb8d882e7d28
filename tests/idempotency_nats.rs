//! `Idempotency-Key` at the ingress against a real nats-server, through the real binary: a
//! repeated key is answered with the first call's id and queued once (also when the repeats
//! race each other and arrive at two ingress replicas), a key names a call per function, and
//! a key is forgotten after `idempotency_window`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::bed::{Bed, TestBed};
use common::worker::Worker;

const T: Duration = Duration::from_secs(20);

async fn bed(name: &str, envs: &[(&str, &str)]) -> Option<(TestBed, Worker, Worker)> {
    let bed = Bed::new(name).start_without_worker().await?;
    let a = bed.worker().ingress().envs(envs).start().await;
    let b = bed.worker().ingress().envs(envs).start().await;
    Some((bed, a, b))
}

/// Posts to `function` with `key`; the status and `X-Call-Id`, and whether it was a repeat.
async fn post(w: &Worker, function: &str, key: &str, body: &str) -> (u16, String, bool) {
    let resp = w
        .post(function)
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .expect("ingress answers");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, repeat) = (header("x-call-id"), header("x-duplicate") == "true");
    (resp.status().as_u16(), id, repeat)
}

#[tokio::test]
async fn a_repeated_key_is_queued_once_and_answered_with_the_first_call_id() {
    let Some((bed, a, b)) = bed("idem-once", &[]).await else {
        return;
    };
    let (code, first, repeat) = post(&a, "fn", "order-42", "first").await;
    assert_eq!((code, repeat), (202, false));
    assert!(!first.is_empty());

    // Sequential repeats, at either ingress, with another body: the first call's id.
    for (w, body) in [(&a, "second"), (&b, "third"), (&a, "first")] {
        let (code, id, repeat) = post(w, "fn", "order-42", body).await;
        assert_eq!((code, id.as_str(), repeat), (202, first.as_str(), true));
    }
    // Racing repeats of a new key at both ingresses: one call, every answer names it.
    let racing = (0..16).map(|i| {
        let w = if i % 2 == 0 { &a } else { &b };
        post(w, "fn", "order-43", "race")
    });
    let answers = futures::future::join_all(racing).await;
    let ids: HashSet<&str> = answers.iter().map(|(_, id, _)| id.as_str()).collect();
    assert!(answers.iter().all(|(code, ..)| *code == 202), "{answers:?}");
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(.., repeat)| !repeat).count(), 1);
    // The same key for another function is another call.
    let (code, other, repeat) = post(&a, "other", "order-42", "x").await;
    assert_eq!((code, repeat), (202, false));
    assert_ne!(other, first);

    let seen = bed.function.wait_for(3, T).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bed.function.count(), 3, "{:?}", seen);
    let bodies: Vec<String> = bed
        .function
        .requests()
        .iter()
        .map(|r| r.body_str())
        .collect();
    assert!(bodies.contains(&"first".to_string()), "{bodies:?}");
    assert!(!bodies.contains(&"second".to_string()), "{bodies:?}");
    let invoked: HashSet<String> = bed
        .function
        .requests()
        .iter()
        .filter_map(|r| r.header("x-call-id").map(str::to_string))
        .collect();
    let expected: HashSet<String> = [first, other, ids.iter().next().unwrap().to_string()]
        .into_iter()
        .collect();
    assert_eq!(invoked, expected);
}

#[tokio::test]
async fn a_key_is_forgotten_after_the_window_and_bad_keys_are_refused() {
    let Some((bed, a, _b)) = bed("idem-window", &[("idempotency_window", "2s")]).await else {
        return;
    };
    let (_, first, _) = post(&a, "fn", "k", "1").await;
    let (_, again, repeat) = post(&a, "fn", "k", "2").await;
    assert_eq!((again.as_str(), repeat), (first.as_str(), true));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (code, later, repeat) = post(&a, "fn", "k", "3").await;
    assert_eq!((code, repeat), (202, false));
    assert_ne!(later, first);
    bed.function.wait_for(2, T).await;

    for bad in ["", &"k".repeat(256)] {
        let (code, ..) = post(&a, "fn", bad, "x").await;
        assert_eq!(code, 400, "key of {} bytes", bad.len());
    }
}
