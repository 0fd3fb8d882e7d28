//! Request bodies over `payload_offload_bytes` (the claim check) against a real nats-server,
//! through the real binary: the body is stored in the queue's object bucket
//! `OF_<queue>_payloads`, the function receives it byte for byte, the object is deleted once
//! the call has ended, and a dead letter keeps its object; bodies up to the threshold stay in
//! the message.

mod common;

use std::time::Duration;

use common::bed::TestBed;
use common::calls::{bed_with, wait_state};
use common::http::{Recorded, Reply};

/// The function: `400` for calls whose id starts with `bad`, else `200` after a pause long
/// enough to look at the object store meanwhile.
fn function(req: &Recorded, _: usize) -> Reply {
    match req.header("x-call-id") {
        Some(id) if id.starts_with("bad") => Reply::status(400).with_body("refused"),
        _ => Reply::ok(req.body.len().to_string()).with_delay(Duration::from_millis(1500)),
    }
}

/// A body of `len` bytes no two neighbouring MiB of which are alike.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Bytes stored in the queue's object bucket now (`None`: no bucket yet).
async fn object_bytes(bed: &TestBed) -> Option<u64> {
    let js = bed.nats.jetstream().await;
    let name = format!("OBJ_OF_{}_payloads", bed.queue);
    let mut stream = js.get_stream(name).await.ok()?;
    Some(stream.info().await.expect("stream info").state.bytes)
}

/// Polls until the object bucket holds less than `below` bytes.
async fn wait_objects_below(bed: &TestBed, below: u64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = object_bytes(bed).await;
        if now.is_some_and(|b| b < below) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the object bucket still holds {now:?} bytes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_5_mib_body_round_trips_through_the_object_store_and_is_deleted_after() {
    let envs = [("max_body_bytes", "8388608")];
    let Some((bed, w)) = bed_with("pay-big", function, &envs).await else {
        return;
    };
    let small = body(512 * 1024);
    let resp = w
        .post("fn")
        .header("x-call-id", "small")
        .body(small.clone());
    assert_eq!(resp.send().await.unwrap().status(), 202);
    wait_state(&w, "small", "succeeded", Duration::from_secs(15)).await;
    assert_eq!(
        object_bytes(&bed).await,
        None,
        "a body at the threshold stays inline"
    );

    let big = body(5 * 1024 * 1024);
    let resp = w.post("fn").header("x-call-id", "big").body(big.clone());
    assert_eq!(resp.send().await.unwrap().status(), 202);
    wait_state(&w, "big", "running", Duration::from_secs(15)).await;
    let stored = object_bytes(&bed).await.expect("the bucket exists");
    assert!(
        stored >= big.len() as u64,
        "{stored} bytes stored while it runs"
    );
    wait_state(&w, "big", "succeeded", Duration::from_secs(15)).await;
    wait_objects_below(&bed, 64 * 1024, Duration::from_secs(10)).await;

    let got = bed.function.requests();
    let by_id = |id: &str| {
        got.iter()
            .find(|r| r.header("x-call-id") == Some(id))
            .cloned()
    };
    let small_got = by_id("small").expect("small invoked");
    let big_got = by_id("big").expect("big invoked");
    assert!(small_got.body == small, "the inline body arrived whole");
    assert!(
        big_got.body == big,
        "the function got {} bytes of {}",
        big_got.body.len(),
        big.len()
    );
    assert!(
        big_got.header("qw-payload").is_none(),
        "no claim-check header reaches the function"
    );
}

#[tokio::test]
async fn a_dead_letter_keeps_its_body_object() {
    let envs = [("max_body_bytes", "2097152")];
    let Some((bed, w)) = bed_with("pay-dlq", function, &envs).await else {
        return;
    };
    let big = body(1024 * 1024);
    let resp = w.post("fn").header("x-call-id", "bad-1").body(big.clone());
    assert_eq!(resp.send().await.unwrap().status(), 202);
    wait_state(&w, "bad-1", "failed", Duration::from_secs(15)).await;
    bed.wait_dead_letters(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = object_bytes(&bed).await.expect("the bucket exists");
    assert!(
        kept >= big.len() as u64,
        "{kept} bytes kept for the dead letter"
    );

    let js = bed.nats.jetstream().await;
    let dl = js
        .get_stream(bed.dlq())
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .expect("the dead letter");
    let headers = dl.headers;
    assert!(
        headers.get("Qw-Payload").is_some(),
        "the dead letter names its body object: {headers:?}"
    );
    assert!(
        dl.payload.len() < 64 * 1024,
        "the dead letter carries no body"
    );
}

#[tokio::test]
async fn a_delayed_call_takes_its_body_object_along() {
    let envs = [("max_body_bytes", "2097152")];
    let Some((bed, w)) = bed_with("pay-delay", function, &envs).await else {
        return;
    };
    let big = body(1024 * 1024 + 1);
    let resp = w
        .post("fn")
        .header("x-call-id", "later")
        .header("X-Delay", "2s")
        .body(big.clone());
    assert_eq!(resp.send().await.unwrap().status(), 202);
    wait_state(&w, "later", "succeeded", Duration::from_secs(20)).await;
    let got = bed.function.requests();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].body == big,
        "the function got {} bytes",
        got[0].body.len()
    );
    wait_objects_below(&bed, 64 * 1024, Duration::from_secs(10)).await;
}
