//! The conformance suite of what operators' commands need of a broker (`Operate`, and the
//! pause document in key-value storage), run against the in-process broker modelling each
//! supported server version and against a real nats-server (see `tests/broker_conformance.rs`).
//!
//! | behaviour | 2.9 | 2.11 and later (2.15.1 checked) |
//! |---|---|---|
//! | `a_bucket_s_latest_entries_come_newest_first` | the same | the same |
//! | `a_paused_consumer_delivers_nothing_until_resumed` | no consumer pause: `pause_consumer` says so, deliveries go on | the consumer delivers nothing while paused |

mod common;

use std::time::Duration;

use common::conformance::*;
use queue_worker::pause::{self, Paused};

/// Messages of two functions: `a` gets 3, `b` gets 2, in the order a, b, a, b, a.
async fn two_functions(h: &Harness) -> Vec<u64> {
    h.broker.ensure_stream(&h.stream()).await.expect("stream");
    let mut seqs = Vec::new();
    for (i, f) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        seqs.push(h.publish(&h.subject(f), &format!("{f}{i}")).await.sequence);
    }
    seqs
}

async fn messages_are_read_deleted_and_purged_by_subject(h: &Harness) {
    let seqs = two_functions(h).await;
    let stream = h.stream_name();
    let b = h.broker.as_ref();
    let first = b
        .next_message(&stream, 1, None)
        .await
        .unwrap()
        .expect("one");
    assert_eq!(
        (first.sequence, first.payload.as_ref()),
        (seqs[0], b"a0".as_ref())
    );
    assert_eq!(first.subject, h.subject("a"));
    assert_eq!(first.header("X-Test"), Some("yes"));
    let next_b = b
        .next_message(&stream, seqs[0] + 1, Some(&h.subject("b")))
        .await
        .unwrap()
        .expect("b's first");
    assert_eq!(next_b.sequence, seqs[1]);
    let wildcard = format!("{}.>", h.queue);
    let any = b
        .next_message(&stream, seqs[4], Some(&wildcard))
        .await
        .unwrap();
    assert_eq!(any.map(|m| m.sequence), Some(seqs[4]));
    assert_eq!(
        b.next_message(&stream, seqs[4] + 1, None).await.unwrap(),
        None
    );

    assert!(b.delete_message(&stream, seqs[0]).await.unwrap());
    assert!(
        !b.delete_message(&stream, seqs[0]).await.unwrap(),
        "deleted once"
    );
    let first = b
        .next_message(&stream, 1, None)
        .await
        .unwrap()
        .expect("one");
    assert_eq!(first.sequence, seqs[1], "the deleted one is skipped");

    assert_eq!(b.purge(&stream, Some(&h.subject("a"))).await.unwrap(), 2);
    assert_eq!(h.messages().await, 2, "b's two are left");
    assert_eq!(b.purge(&stream, None).await.unwrap(), 2);
    assert_eq!(h.messages().await, 0);

    let missing = format!("{stream}_missing");
    assert_eq!(b.next_message(&missing, 1, None).await.unwrap(), None);
    assert_eq!(b.purge(&missing, None).await.unwrap(), 0);
    assert!(!b.delete_message(&missing, 1).await.unwrap());
}

async fn a_consumer_delivers_what_a_purge_of_one_subject_left(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.expect("stream");
    let spec = h.consumer("workers", None);
    let mut sub = h.subscribe(&spec).await;
    let first = h.publish(&h.subject("b"), "b0").await.sequence;
    let d = expect(&mut sub, PROMPTLY, "the first").await;
    assert_eq!(d.stream_sequence, first);
    d.acker.ack().await.expect("ack");
    for f in ["a", "a", "b", "a", "b"] {
        h.publish(&h.subject(f), f).await;
    }
    let purged = h
        .broker
        .purge(&h.stream_name(), Some(&h.subject("a")))
        .await;
    assert_eq!(purged.unwrap(), 3);
    for _ in 0..2 {
        let d = expect(&mut sub, PROMPTLY, "b's messages after the purge").await;
        assert_eq!(body(&d), "b");
        d.acker.ack().await.expect("ack");
    }
}

async fn consumers_report_waiting_in_flight_and_redelivered(h: &Harness) {
    two_functions(h).await;
    let spec = h.consumer("workers", None);
    let mut sub = h.subscribe(&spec).await;
    let d = expect(&mut sub, PROMPTLY, "the first").await;
    d.acker.nak(None).await.expect("nak");
    // The server may deliver the next message before the nak'd one comes again.
    let mut others = Vec::new();
    let again = loop {
        let next = expect(&mut sub, PROMPTLY, "the first again").await;
        if next.stream_sequence == d.stream_sequence {
            break next;
        }
        others.push(next);
    };
    assert_eq!(again.delivered, 2);
    let in_flight = 1 + others.len() as u64;
    let stream = h.stream_name();
    eventually(PROMPTLY, "the counts", || async {
        let states = h.broker.consumer_states(&stream).await.unwrap();
        let c = states.iter().find(|c| c.name == "workers");
        c.is_some_and(|c| {
            c.filter_subject.is_none()
                && c.in_flight == in_flight
                && c.redelivered == 1
                && c.waiting == 5 - in_flight
        })
    })
    .await;
    assert!(
        h.broker
            .consumer_states("OF_nosuch")
            .await
            .unwrap()
            .is_empty()
    );
    again.acker.ack().await.expect("ack");
}

async fn streams_are_listed_and_deleted(h: &Harness) {
    two_functions(h).await;
    let stream = h.stream_name();
    let names = h.broker.stream_names().await.unwrap();
    assert!(names.contains(&stream), "{names:?}");
    assert!(h.broker.delete_stream(&stream).await.unwrap());
    assert!(
        !h.broker.delete_stream(&stream).await.unwrap(),
        "deleted once"
    );
    assert!(!h.broker.stream_names().await.unwrap().contains(&stream));
}

async fn a_paused_consumer_delivers_nothing_until_resumed(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.expect("stream");
    let spec = h.consumer("workers", None);
    let mut sub = h.subscribe(&spec).await;
    let stream = h.stream_name();
    let paused = h
        .broker
        .pause_consumer(&stream, "workers", true)
        .await
        .unwrap();
    assert_eq!(paused, h.version.pauses_consumers());
    h.publish(&h.subject("a"), "x").await;
    if !paused {
        expect(&mut sub, PROMPTLY, "no pause: delivered").await;
        return;
    }
    assert!(
        recv(&mut sub, Duration::from_millis(1500)).await.is_none(),
        "paused"
    );
    let states = h.broker.consumer_states(&stream).await.unwrap();
    assert!(
        states.iter().any(|c| c.name == "workers" && c.paused),
        "{states:?}"
    );
    assert!(
        h.broker
            .pause_consumer(&stream, "workers", false)
            .await
            .unwrap()
    );
    expect(&mut sub, PROMPTLY + PROMPTLY, "resumed: delivered").await;
    assert!(
        !h.broker
            .pause_consumer(&stream, "nosuch", true)
            .await
            .unwrap()
    );
}

async fn the_pause_document_is_changed_with_compare_and_set(h: &Harness) {
    let spec = queue_worker::broker::KvSpec {
        bucket: pause::bucket(&h.queue),
        ttl: Duration::ZERO,
        storage: queue_worker::config::Storage::File,
        replicas: 1,
    };
    let b = h.broker.as_ref();
    assert_eq!(
        pause::read(b, &h.queue).await.unwrap(),
        (Paused::default(), 0),
        "no bucket yet"
    );
    let one = pause::set(b, &spec, Some("f.ns"), true)
        .await
        .unwrap()
        .unwrap();
    assert!(one.functions.contains("f.ns") && !one.queue);
    let both = pause::set(b, &spec, None, true).await.unwrap().unwrap();
    assert!(both.queue && both.functions.contains("f.ns"));
    let (read, revision) = pause::read(b, &h.queue).await.unwrap();
    assert_eq!(read, both);
    assert!(revision > 0);
    let again = pause::set(b, &spec, None, true).await.unwrap().unwrap();
    assert_eq!(again, both, "pausing twice changes nothing");
    assert_eq!(
        pause::read(b, &h.queue).await.unwrap().1,
        revision,
        "nothing written"
    );
    pause::set(b, &spec, None, false).await.unwrap().unwrap();
    let none = pause::set(b, &spec, Some("f.ns"), false)
        .await
        .unwrap()
        .unwrap();
    assert!(none.is_empty());
}

async fn a_bucket_s_latest_entries_come_newest_first(h: &Harness) {
    let bucket = format!("OF_{}_recent", h.queue);
    let b = h.broker.as_ref();
    assert!(
        b.recent_entries(&bucket, 10).await.unwrap().is_empty(),
        "no bucket yet"
    );
    let spec = queue_worker::broker::KvSpec {
        bucket: bucket.clone(),
        ttl: Duration::ZERO,
        storage: queue_worker::config::Storage::File,
        replicas: 1,
    };
    b.ensure_kv(&spec).await.unwrap();
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "4"), ("d", "5")] {
        b.kv_put(&bucket, key, value.into()).await.unwrap();
    }
    let text = |entries: Vec<(String, bytes::Bytes)>| -> Vec<String> {
        entries
            .into_iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
            .collect()
    };
    let all = text(b.recent_entries(&bucket, 100).await.unwrap());
    assert_eq!(
        all,
        ["d=5", "a=4", "c=3", "b=2"],
        "each key once, newest first"
    );
    let last_three = text(b.recent_entries(&bucket, 3).await.unwrap());
    assert_eq!(last_three, ["d=5", "a=4", "c=3"], "among the last 3 writes");
}

conformance_tests! {
    a_bucket_s_latest_entries_come_newest_first => memory_a_bucket_s_latest_entries_come_newest_first, nats_a_bucket_s_latest_entries_come_newest_first;
    a_consumer_delivers_what_a_purge_of_one_subject_left => memory_a_consumer_delivers_what_a_purge_of_one_subject_left, nats_a_consumer_delivers_what_a_purge_of_one_subject_left;
    messages_are_read_deleted_and_purged_by_subject => memory_messages_are_read_deleted_and_purged_by_subject, nats_messages_are_read_deleted_and_purged_by_subject;
    consumers_report_waiting_in_flight_and_redelivered => memory_consumers_report_waiting_in_flight_and_redelivered, nats_consumers_report_waiting_in_flight_and_redelivered;
    streams_are_listed_and_deleted => memory_streams_are_listed_and_deleted, nats_streams_are_listed_and_deleted;
    a_paused_consumer_delivers_nothing_until_resumed => memory_a_paused_consumer_delivers_nothing_until_resumed, nats_a_paused_consumer_delivers_nothing_until_resumed;
    the_pause_document_is_changed_with_compare_and_set => memory_the_pause_document_is_changed_with_compare_and_set, nats_the_pause_document_is_changed_with_compare_and_set;
}
