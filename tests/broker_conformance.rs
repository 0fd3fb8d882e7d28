//! One conformance suite for both brokers: every behaviour the worker relies on, written once
//! and run against the in-process [`MemoryBroker`] (paused tokio time: timers are exact and
//! waiting costs nothing) and against a real nats-server (short real ack waits, timings with
//! tolerances). Where they differ, the real server is right and the model gets fixed.
//!
//! Each behaviour is an `async fn(&Harness)`; `conformance!` turns it into `memory_<name>`,
//! run against the model of each server version the project supports (nats-server 2.9.10 and
//! the newest tested, 2.15.1), and `nats_<name>`, run against the real server the test beds
//! start (`ci/test` runs the suite once per version). Without a nats-server the NATS half prints
//! SKIPPED (and fails under `CI`).
//!
//! Every behaviour holds on every supported version, except where it says otherwise and asks
//! the harness's [`ServerVersion`]:
//!
//! | behaviour | 2.9 | 2.12 and later (2.15.1 checked) |
//! |---|---|---|
//! | `filtered_consumers_partition_a_work_queue` | refuses a filter that is a subset or superset of another's (overlapping ones are accepted) | refuses any overlap (from 2.11) |
//! | `inactive_threshold_deletes_idle_consumer` | a consumer with acks pending is deleted after its threshold | kept until the last ack deadline plus the threshold |
//! | `late_ack_after_a_consumer_is_recreated` | the late ack removes the message | the late ack is ignored (from 2.11) |

mod common;

use common::conformance::*;

use std::time::Duration;

use bytes::Bytes;
use queue_worker::broker::memory::MemoryLimits;
use queue_worker::broker::{
    BrokerError, ConsumerSpec, KvSpec, ObjectSpec, Outgoing, PubAck, Retention, StreamSpec,
    StreamStatus, Swap,
};
use queue_worker::config::Storage;
use tokio::time::{Instant, sleep};

conformance_tests! {
    ack_removes_from_work_queue => memory_ack_removes_from_work_queue, nats_ack_removes_from_work_queue;
    term_removes_without_redelivery => memory_term_removes_without_redelivery, nats_term_removes_without_redelivery;
    redelivery_after_ack_wait => memory_redelivery_after_ack_wait, nats_redelivery_after_ack_wait;
    nak_with_delay => memory_nak_with_delay, nats_nak_with_delay;
    nak_without_delay => memory_nak_without_delay, nats_nak_without_delay;
    progress_holds_off_redelivery => memory_progress_holds_off_redelivery, nats_progress_holds_off_redelivery;
    progress_after_expiry_does_not_stop_redelivery => memory_progress_after_expiry_does_not_stop_redelivery, nats_progress_after_expiry_does_not_stop_redelivery;
    stale_nak_reschedules_the_current_delivery => memory_stale_nak_reschedules_the_current_delivery, nats_stale_nak_reschedules_the_current_delivery;
    late_ack_after_a_consumer_is_recreated => memory_late_ack_after_a_consumer_is_recreated, nats_late_ack_after_a_consumer_is_recreated;
    replicas_share_one_consumer => memory_replicas_share_one_consumer, nats_replicas_share_one_consumer;
    first_deliveries_in_stream_order => memory_first_deliveries_in_stream_order, nats_first_deliveries_in_stream_order;
    filtered_consumers_partition_a_work_queue => memory_filtered_consumers_partition_a_work_queue, nats_filtered_consumers_partition_a_work_queue;
    inactive_threshold_deletes_idle_consumer => memory_inactive_threshold_deletes_idle_consumer, nats_inactive_threshold_deletes_idle_consumer;
    deleted_consumer_is_recreated => memory_deleted_consumer_is_recreated, nats_deleted_consumer_is_recreated;
    deleted_stream_is_recreated_empty => memory_deleted_stream_is_recreated_empty, nats_deleted_stream_is_recreated_empty;
    duplicate_msg_id_returns_original_sequence => memory_duplicate_msg_id_returns_original_sequence, nats_duplicate_msg_id_returns_original_sequence;
    publish_without_stream_is_no_stream => memory_publish_without_stream_is_no_stream, nats_publish_without_stream_is_no_stream;
    stream_info_counts_per_subject => memory_stream_info_counts_per_subject, nats_stream_info_counts_per_subject;
    kv_put_get_delete_and_ttl => memory_kv_put_get_delete_and_ttl, nats_kv_put_get_delete_and_ttl;
    kv_swap_writes_only_over_the_revision_read => memory_kv_swap_writes_only_over_the_revision_read, nats_kv_swap_writes_only_over_the_revision_read;
    kv_swap_all_answers_each_write_in_order => memory_kv_swap_all_answers_each_write_in_order, nats_kv_swap_all_answers_each_write_in_order;
    kv_keys_and_revision_follow_writes => memory_kv_keys_and_revision_follow_writes, nats_kv_keys_and_revision_follow_writes;
    objects_round_trip_replace_delete_and_expire => memory_objects_round_trip_replace_delete_and_expire, nats_objects_round_trip_replace_delete_and_expire;
    schedules_publish_to_their_target_when_due => memory_schedules_publish_to_their_target_when_due, nats_schedules_publish_to_their_target_when_due;
    ensure_stream_is_idempotent_and_checked => memory_ensure_stream_is_idempotent_and_checked, nats_ensure_stream_is_idempotent_and_checked;
    pull_batch_and_demand_bound_local_buffer => memory_pull_batch_and_demand_bound_local_buffer, nats_pull_batch_and_demand_bound_local_buffer;
    too_large_message_is_refused => memory_too_large_message_is_refused, nats_too_large_message_is_refused;
}

async fn ack_removes_from_work_queue(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let ack = h.publish(&h.subject("f"), "one").await;
    assert_eq!(ack.stream, h.stream_name());
    assert!(!ack.duplicate);
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "first delivery").await;
    assert_eq!(body(&d), "one");
    assert_eq!(d.delivered, 1);
    assert_eq!(d.stream_sequence, ack.sequence);
    assert_eq!(d.subject, h.subject("f"));
    assert!(d.headers.iter().any(|(k, v)| k == "X-Test" && v == "yes"));
    assert_eq!(h.messages().await, 1, "kept while its ack is pending");
    d.acker.ack().await.unwrap();
    eventually(PROMPTLY, "acked message removed", || async {
        h.messages().await == 0
    })
    .await;
    assert!(
        recv(&mut sub, ACK_WAIT + h.late()).await.is_none(),
        "an acked message is never redelivered"
    );
}

async fn term_removes_without_redelivery(h: &Harness) {
    h.publish_or_create("poison").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    d.acker.term().await.unwrap();
    eventually(PROMPTLY, "terminated message removed", || async {
        h.messages().await == 0
    })
    .await;
    assert!(
        recv(&mut sub, 2 * ACK_WAIT).await.is_none(),
        "a terminated message is never redelivered"
    );
}

impl Harness {
    /// Ensure the stream, then publish `body` to function `f`.
    async fn publish_or_create(&self, body: &str) -> PubAck {
        self.broker.ensure_stream(&self.stream()).await.unwrap();
        self.publish(&self.subject("f"), body).await
    }
}

async fn redelivery_after_ack_wait(h: &Harness) {
    let ack = h.publish_or_create("slow").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let first = expect(&mut sub, PROMPTLY, "first delivery").await;
    let t0 = Instant::now();
    assert_eq!(first.delivered, 1);
    let again = expect(&mut sub, ACK_WAIT + PROMPTLY, "redelivery after ack wait").await;
    h.assert_timing("redelivery", t0.elapsed(), ACK_WAIT);
    assert_eq!(again.delivered, 2);
    assert_eq!(again.stream_sequence, ack.sequence);
    assert_eq!(again.published, first.published);
    let third = expect(&mut sub, ACK_WAIT + PROMPTLY, "second redelivery").await;
    assert_eq!(third.delivered, 3);
    third.acker.ack().await.unwrap();
    eventually(PROMPTLY, "removed", || async { h.messages().await == 0 }).await;
}

async fn nak_with_delay(h: &Harness) {
    h.publish_or_create("retry me").await;
    // A long ack wait: the redelivery must come from the nak delay, not from expiry.
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(5),
        ..h.consumer("w", None)
    };
    let mut sub = h.subscribe(&spec).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    let delay = Duration::from_secs(1);
    let t0 = Instant::now();
    d.acker.nak(Some(delay)).await.unwrap();
    let again = expect(&mut sub, delay + PROMPTLY, "redelivery after nak delay").await;
    h.assert_timing("nak delay", t0.elapsed(), delay);
    assert_eq!(again.delivered, 2);
    again.acker.ack().await.unwrap();
}

async fn nak_without_delay(h: &Harness) {
    let first = h.publish_or_create("again").await;
    h.publish(&h.subject("f"), "newer").await;
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(5),
        ..h.consumer("w", None)
    };
    let mut sub = h.subscribe(&spec).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    d.acker.nak(None).await.unwrap();
    // Redeliveries go before messages not yet delivered, once the server has the nak (acks
    // are fire and forget: a pull sent right after a nak can overtake it).
    sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let again = expect(&mut sub, PROMPTLY, "redelivery after nak").await;
    h.assert_timing("nak without delay", t0.elapsed(), Duration::ZERO);
    assert_eq!(again.stream_sequence, first.sequence);
    assert_eq!(again.delivered, 2);
    again.acker.ack().await.unwrap();
    let newer = expect(&mut sub, PROMPTLY, "newer").await;
    assert_eq!(body(&newer), "newer");
    newer.acker.ack().await.unwrap();
}

async fn progress_holds_off_redelivery(h: &Harness) {
    h.publish_or_create("long job").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    // In progress for 2.4 ack waits: a +WPI every 0.3 s.
    let working = async {
        for _ in 0..8 {
            sleep(Duration::from_millis(300)).await;
            d.acker.progress().await.unwrap();
        }
        Instant::now()
    };
    let (last_progress, early) = tokio::join!(working, recv(&mut sub, Duration::from_millis(2400)));
    assert!(
        early.is_none(),
        "redelivered while in progress: {:?}",
        early.map(|d| d.delivered)
    );
    let again = expect(
        &mut sub,
        ACK_WAIT + PROMPTLY,
        "redelivery once progress stops",
    )
    .await;
    h.assert_timing(
        "redelivery after the last progress",
        last_progress.elapsed(),
        ACK_WAIT,
    );
    assert_eq!(again.delivered, 2);
    again.acker.ack().await.unwrap();
}

async fn progress_after_expiry_does_not_stop_redelivery(h: &Harness) {
    h.publish_or_create("late").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    // Nobody pulls while the ack wait runs out: the message waits for redelivery...
    sleep(ACK_WAIT + Duration::from_millis(300)).await;
    // ...and a late progress does not take it back.
    d.acker.progress().await.unwrap();
    let again = expect(&mut sub, Duration::from_millis(500), "redelivery").await;
    assert_eq!(again.delivered, 2);
    again.acker.ack().await.unwrap();
}

/// Acks name a message by stream, consumer and stream sequence, not by delivery: a nak sent
/// for an earlier delivery (by a worker whose lease ran out) reschedules the message although
/// another delivery of it is being worked on. The worker must not send such naks (it checks
/// its lease first: `src/worker/lease.rs`).
async fn stale_nak_reschedules_the_current_delivery(h: &Harness) {
    h.publish_or_create("contested").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let first = expect(&mut sub, PROMPTLY, "first delivery").await;
    let second = expect(&mut sub, ACK_WAIT + PROMPTLY, "redelivery after ack wait").await;
    assert_eq!(second.delivered, 2);
    // The holder of delivery 1 gives it back late: delivery 2 loses its lease at once.
    first.acker.nak(None).await.unwrap();
    let third = expect(&mut sub, Duration::from_millis(500), "stale nak redelivers").await;
    assert_eq!(third.delivered, 3);
    assert_eq!(third.stream_sequence, second.stream_sequence);
    third.acker.ack().await.unwrap();
}

/// An ack sent for a delivery of a consumer that was deleted and recreated (same name) meanwhile.
/// Acks name the stream, the consumer and the stream sequence. nats-server 2.9 lets the new
/// consumer take it, and a work queue drops the message; 2.11 and later ignore an ack for a
/// message the consumer has not delivered yet, and the new consumer delivers it afresh.
async fn late_ack_after_a_consumer_is_recreated(h: &Harness) {
    h.publish_or_create("settled late").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    drop(sub);
    assert!(
        h.broker
            .delete_consumer(&h.stream_name(), "w")
            .await
            .unwrap()
    );
    let mut again = h.subscribe(&h.consumer("w", None)).await;
    d.acker.ack().await.unwrap();
    if !h.version.ignores_acks_ahead_of_the_consumer() {
        eventually(PROMPTLY, "message removed by the late ack", || async {
            h.messages().await == 0
        })
        .await;
        return;
    }
    // The server handles acks on their own queue: give it time, before the new consumer
    // delivers the message (after which an ack for it would count).
    sleep(h.late()).await;
    assert_eq!(h.messages().await, 1, "the late ack did not remove it");
    let fresh = expect(&mut again, PROMPTLY, "the message, from the new consumer").await;
    assert_eq!(
        fresh.delivered, 1,
        "a new consumer counts deliveries afresh"
    );
    fresh.acker.ack().await.unwrap();
    eventually(PROMPTLY, "removed by the new consumer's ack", || async {
        h.messages().await == 0
    })
    .await;
}

async fn replicas_share_one_consumer(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(h.publish(&h.subject("f"), &format!("m{i}")).await.sequence);
    }
    // Two worker replicas on the static mode's shared durable consumer.
    let spec = ConsumerSpec {
        pull_batch: 2,
        recreate: true,
        memory_storage: false,
        ..h.consumer("w", None)
    };
    let mut a = h.subscribe(&spec).await;
    let mut b = h.subscribe(&spec).await;
    a.set_demand(2);
    b.set_demand(2);
    let mut got = Vec::new();
    let deadline = Instant::now() + PROMPTLY;
    while got.len() < sent.len() && Instant::now() < deadline {
        for sub in [&mut a, &mut b] {
            if let Some(d) = recv(sub, Duration::from_millis(100)).await {
                assert_eq!(d.delivered, 1, "seq {} delivered twice", d.stream_sequence);
                got.push(d.stream_sequence);
                d.acker.ack().await.unwrap();
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, sent, "each message once, to one replica or the other");
    assert!(recv(&mut a, Duration::from_millis(300)).await.is_none());
    assert!(recv(&mut b, Duration::from_millis(300)).await.is_none());
}

async fn first_deliveries_in_stream_order(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let subjects = [
        h.subject("a"),
        h.subject("b"),
        h.queue.clone(),
        h.subject("c"),
    ];
    let mut sent = Vec::new();
    for i in 0..12 {
        let ack = h
            .publish(&subjects[i % subjects.len()], &format!("m{i}"))
            .await;
        sent.push(ack.sequence);
    }
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "sequences increase");
    let spec = ConsumerSpec {
        pull_batch: 4,
        recreate: true,
        memory_storage: false,
        ..h.consumer("w", None)
    };
    let mut sub = h.subscribe(&spec).await;
    sub.set_demand(4);
    for (i, seq) in sent.iter().enumerate() {
        let d = expect(&mut sub, PROMPTLY, "next in order").await;
        assert_eq!(body(&d), format!("m{i}"));
        assert_eq!(d.stream_sequence, *seq);
        assert_eq!(d.delivered, 1);
        d.acker.ack().await.unwrap();
    }
}

async fn filtered_consumers_partition_a_work_queue(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    for (f, b) in [("fa", "a1"), ("fb", "b1"), ("fa", "a2"), ("fb", "b2")] {
        h.publish(&h.subject(f), b).await;
    }
    h.publish(&h.queue, "bare").await;

    let spec_a = h.consumer("fa", Some(h.subject("fa")));
    let spec_b = h.consumer("fb", Some(h.subject("fb")));
    let mut a = h.subscribe(&spec_a).await;
    let mut b = h.subscribe(&spec_b).await;
    for want in ["a1", "a2"] {
        let d = expect(&mut a, PROMPTLY, "fa delivery").await;
        assert_eq!(body(&d), want);
        assert_eq!(d.subject, h.subject("fa"));
        d.acker.ack().await.unwrap();
    }
    for want in ["b1", "b2"] {
        let d = expect(&mut b, PROMPTLY, "fb delivery").await;
        assert_eq!(body(&d), want);
        d.acker.ack().await.unwrap();
    }
    assert!(recv(&mut a, Duration::from_millis(300)).await.is_none());

    // Overlapping consumers are refused on a work queue.
    let refuse = |name: &str, filter: Option<String>, expected: &'static str| {
        let spec = h.consumer(name, filter);
        async move {
            match h.broker.subscribe(&h.stream(), &spec).await {
                Ok(_) => panic!(
                    "consumer {} ({:?}) was accepted",
                    spec.name, spec.filter_subject
                ),
                Err(e) => assert!(
                    e.to_string().contains(expected),
                    "consumer {}: {e} (expected {expected:?})",
                    spec.name
                ),
            }
        }
    };
    refuse(
        "all",
        Some(format!("{}.>", h.queue)),
        "filtered consumer not unique",
    )
    .await;
    refuse(
        "star",
        Some(format!("{}.*.openfaas-fn", h.queue)),
        "filtered consumer not unique",
    )
    .await;
    refuse("plain", None, "multiple non-filtered consumers not allowed").await;
    assert!(!h.consumer_exists("all").await);

    // These two overlap (on `<queue>.fc.x`) without either containing the other: nats-server
    // 2.9 only refuses a filter that is a subset or superset of another's and accepts both;
    // 2.11 and later refuse the second.
    drop(
        h.subscribe(&h.consumer("fc", Some(format!("{}.fc.*", h.queue))))
            .await,
    );
    let overlapping = Some(format!("{}.*.x", h.queue));
    if h.version.refuses_overlapping_filters() {
        refuse("x", overlapping, "filtered consumer not unique").await;
    } else {
        drop(h.subscribe(&h.consumer("x", overlapping)).await);
    }

    // Re-creating an existing consumer with the same configuration is fine.
    drop(h.subscribe(&spec_a).await);
    // A disjoint filter is fine: the bare queue subject.
    let mut bare = h
        .subscribe(&h.consumer("bare", Some(h.queue.clone())))
        .await;
    let d = expect(&mut bare, PROMPTLY, "bare subject delivery").await;
    assert_eq!(body(&d), "bare");
    d.acker.ack().await.unwrap();
}

async fn inactive_threshold_deletes_idle_consumer(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let threshold = Duration::from_secs(1);
    let idle = |name: &str| ConsumerSpec {
        inactive_threshold: Some(threshold),
        ack_wait: Duration::from_secs(30),
        ..h.consumer(name, Some(h.subject(name)))
    };

    // A subscription waiting for messages is a waiting pull request: the consumer stays.
    let mut waiting = h.subscribe(&idle("waits")).await;
    assert!(recv(&mut waiting, 2 * threshold + h.late()).await.is_none());
    assert!(h.consumer_exists("waits").await, "kept while pulling");
    // The threshold counts from the last pull request's arrival, not from when it stopped
    // waiting: this one arrived long ago, so the consumer goes at the server's next check.
    drop(waiting);
    eventually(threshold + PROMPTLY, "idle consumer deleted", || async {
        !h.consumer_exists("waits").await
    })
    .await;

    // Acks of any kind count as activity. A message pending an ack keeps the consumer on
    // nats-server 2.12 and later (until its ack deadline plus the threshold), not on 2.9.
    const ACK_WAIT_BUSY: Duration = Duration::from_secs(2);
    let busy = ConsumerSpec {
        ack_wait: ACK_WAIT_BUSY,
        ..idle("busy")
    };
    h.publish(&h.subject("busy"), "work").await;
    let mut sub = h.subscribe(&busy).await;
    let d = expect(&mut sub, PROMPTLY, "delivery").await;
    drop(sub);
    for _ in 0..8 {
        sleep(Duration::from_millis(400)).await;
        d.acker.progress().await.unwrap();
    }
    assert!(
        h.consumer_exists("busy").await,
        "progress acks keep a consumer alive"
    );
    let last_progress = Instant::now();
    if h.version.keeps_consumers_with_pending_acks() {
        // Past the threshold, before the ack deadline: still there.
        sleep(threshold + Duration::from_millis(500)).await;
        assert!(
            h.consumer_exists("busy").await,
            "kept while its ack is pending"
        );
    }
    let gone_by = if h.version.keeps_consumers_with_pending_acks() {
        ACK_WAIT_BUSY + threshold
    } else {
        threshold
    };
    eventually(gone_by + 2 * PROMPTLY, "consumer deleted", || async {
        !h.consumer_exists("busy").await
    })
    .await;
    let took = last_progress.elapsed();
    let earliest = gone_by.saturating_sub(h.early() + Duration::from_millis(400));
    assert!(
        took >= earliest,
        "deleted {took:?} after the last progress ack"
    );
    // The message is still there for the next consumer.
    assert_eq!(h.messages().await, 1);
    let mut again = h.subscribe(&busy).await;
    let d = expect(&mut again, PROMPTLY, "redelivered to the new consumer").await;
    assert_eq!(d.delivered, 1, "a new consumer counts deliveries afresh");
    d.acker.ack().await.unwrap();
}

async fn deleted_consumer_is_recreated(h: &Harness) {
    h.publish_or_create("m1").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "m1").await;
    d.acker.ack().await.unwrap();
    // An ack is not confirmed: one the server had not applied when the consumer went is lost
    // with it, and m1 comes back to the new consumer (seen once on 2.9.10). That is
    // at-least-once delivery, not what this test is about.
    eventually(PROMPTLY, "m1 acked", || async { h.messages().await == 0 }).await;
    assert!(
        h.broker
            .delete_consumer(&h.stream_name(), "w")
            .await
            .unwrap()
    );
    assert!(!h.consumer_exists("w").await);
    assert!(
        !h.broker
            .delete_consumer(&h.stream_name(), "w")
            .await
            .unwrap()
    );
    h.publish(&h.subject("f"), "m2").await;
    let d = expect(&mut sub, 5 * PROMPTLY, "m2 through the recreated consumer").await;
    assert_eq!(body(&d), "m2");
    assert_eq!(d.delivered, 1);
    d.acker.ack().await.unwrap();
    assert!(h.consumer_exists("w").await);
}

async fn deleted_stream_is_recreated_empty(h: &Harness) {
    h.publish_or_create("before").await;
    h.publish(&h.subject("f"), "lost").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "before").await;
    d.acker.ack().await.unwrap();
    h.delete_stream(&h.stream_name()).await;
    let name = h.stream_name();
    let publisher = async {
        eventually(
            5 * PROMPTLY,
            "stream recreated by the subscription",
            || async { matches!(h.broker.stream_info(&name, None).await, Ok(Some(_))) },
        )
        .await;
        assert_eq!(h.messages().await, 0, "recreated empty");
        h.publish(&h.subject("f"), "after").await
    };
    let (ack, d) = tokio::join!(publisher, recv(&mut sub, 6 * PROMPTLY));
    let d = d.expect("delivery from the recreated stream");
    assert_eq!(body(&d), "after");
    assert_eq!(d.stream_sequence, ack.sequence);
    assert_eq!(
        ack.sequence, 1,
        "a recreated stream starts its sequence again"
    );
    d.acker.ack().await.unwrap();
}

async fn duplicate_msg_id_returns_original_sequence(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let first = h
        .publish_with_id(&h.subject("f"), "x", Some("call-1"))
        .await;
    assert!(!first.duplicate);
    let again = h
        .publish_with_id(&h.subject("f"), "x again", Some("call-1"))
        .await;
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(h.messages().await, 1, "a duplicate stores nothing");
    let other = h
        .publish_with_id(&h.subject("f"), "y", Some("call-2"))
        .await;
    assert!(!other.duplicate);
    assert_eq!(other.sequence, first.sequence + 1);

    // The window remembers the id after the message itself is gone.
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "call-1").await;
    assert_eq!(body(&d), "x");
    assert!(
        d.headers
            .iter()
            .any(|(k, v)| k == "Nats-Msg-Id" && v == "call-1"),
        "the message id travels with the message: {:?}",
        d.headers
    );
    d.acker.ack().await.unwrap();
    eventually(PROMPTLY, "acked", || async { h.messages().await == 1 }).await;
    let late = h
        .publish_with_id(&h.subject("f"), "x late", Some("call-1"))
        .await;
    assert!(late.duplicate);
    assert_eq!(late.sequence, first.sequence);
}

async fn publish_without_stream_is_no_stream(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let msg = Outgoing {
        subject: format!("nowhere-{}.f", h.queue),
        msg_id: None,
        headers: Vec::new(),
        payload: Bytes::from_static(b"x"),
    };
    match h.broker.publish(msg).await {
        Err(BrokerError::NoStream { subject }) => assert!(subject.starts_with("nowhere-")),
        other => panic!("expected NoStream, got {other:?}"),
    }
}

async fn stream_info_counts_per_subject(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    h.publish(&h.subject("a"), "1").await;
    h.publish(&h.subject("a"), "2").await;
    h.publish(&h.subject("b"), "3").await;
    h.publish(&h.queue, "4").await;
    let name = h.stream_name();
    let all = h
        .broker
        .stream_info(&name, Some(">"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.messages, 4);
    assert!(all.bytes > 0);
    let expected: std::collections::BTreeMap<String, u64> = [
        (h.subject("a"), 2),
        (h.subject("b"), 1),
        (h.queue.clone(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(all.subjects, expected);
    let only_a = h
        .broker
        .stream_info(&name, Some(&format!("{}.a.*", h.queue)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(only_a.messages, 4, "message totals ignore the filter");
    assert_eq!(only_a.subjects.len(), 1);
    assert_eq!(only_a.subjects.get(&h.subject("a")), Some(&2));
    let plain = h.broker.stream_info(&name, None).await.unwrap().unwrap();
    assert_eq!(plain.messages, 4);
    assert_eq!(plain.bytes, all.bytes);
    assert!(plain.subjects.is_empty());
    assert_eq!(
        h.broker.stream_info("OF_missing", None).await.unwrap(),
        None
    );
}

async fn kv_put_get_delete_and_ttl(h: &Harness) {
    let ttl = Duration::from_secs(1);
    let spec = KvSpec {
        bucket: format!("calls_{}", h.queue.replace('-', "_")),
        ttl,
        storage: Storage::File,
        replicas: 1,
    };
    let bucket = spec.bucket.as_str();
    match h.broker.kv_get(bucket, "k").await {
        Err(BrokerError::NoBucket { bucket: b }) => assert_eq!(b, bucket),
        other => panic!("expected NoBucket, got {other:?}"),
    }
    h.broker.ensure_kv(&spec).await.unwrap();
    h.broker.ensure_kv(&spec).await.unwrap();
    assert_eq!(h.broker.kv_get(bucket, "call-1").await.unwrap(), None);
    let r1 = h
        .broker
        .kv_put(bucket, "call-1", Bytes::from_static(b"queued"))
        .await
        .unwrap();
    let r2 = h
        .broker
        .kv_put(bucket, "call-1", Bytes::from_static(b"running"))
        .await
        .unwrap();
    assert!(r2 > r1, "revisions increase: {r1} then {r2}");
    assert_eq!(
        h.broker.kv_get(bucket, "call-1").await.unwrap().as_deref(),
        Some(&b"running"[..])
    );
    h.broker.kv_delete(bucket, "call-1").await.unwrap();
    assert_eq!(h.broker.kv_get(bucket, "call-1").await.unwrap(), None);
    h.broker.kv_delete(bucket, "call-1").await.unwrap();
    assert!(h.broker.kv_put(bucket, ".bad", Bytes::new()).await.is_err());

    h.broker
        .kv_put(bucket, "call-2", Bytes::from_static(b"succeeded"))
        .await
        .unwrap();
    let t0 = Instant::now();
    sleep(ttl / 2).await;
    assert!(
        h.broker.kv_get(bucket, "call-2").await.unwrap().is_some(),
        "alive before its TTL"
    );
    eventually(ttl + 2 * PROMPTLY, "entry expired", || async {
        h.broker.kv_get(bucket, "call-2").await.unwrap().is_none()
    })
    .await;
    assert!(t0.elapsed() >= ttl.saturating_sub(h.early()));
}

/// A server that schedules messages (2.12 and later, and the in-process broker modelling one) publishes a
/// schedule to its target when due, with the schedule's own headers and body; a consumer of
/// the target alone never sees the schedule itself. An older delayed stream is made to hold
/// schedules by `ensure_stream`.
async fn schedules_publish_to_their_target_when_due(h: &Harness) {
    let native = h.broker.schedules_messages();
    assert_eq!(native, h.version.schedules_messages());
    if !native {
        return;
    }
    let older = StreamSpec::delayed(&h.queue, Storage::File, 1);
    let older = StreamSpec {
        subjects: older.subjects[..1].to_vec(),
        ..older
    };
    h.broker.ensure_stream(&older).await.unwrap();
    let spec = StreamSpec::delayed(&h.queue, Storage::File, 1).with_schedules(true);
    assert_eq!(
        h.broker.ensure_stream(&spec).await.unwrap(),
        StreamStatus::Existing
    );
    let target = queue_worker::broker::delayed_subject(&h.queue);
    let consumer = ConsumerSpec {
        stream: spec.name.clone(),
        filter_subject: Some(target.clone()),
        ..h.consumer("mover", None)
    };
    let mut sub = h.broker.subscribe(&spec, &consumer).await.unwrap();
    let due = std::time::SystemTime::now() + Duration::from_millis(2100);
    let at = format!("@at {}", humantime::format_rfc3339_millis(due));
    let schedule = Outgoing {
        subject: queue_worker::broker::schedule_subject(&h.queue, "one"),
        msg_id: None,
        headers: vec![
            ("Nats-Schedule".into(), at),
            ("Nats-Schedule-Target".into(), target.clone()),
            ("X-Kept".into(), "yes".into()),
        ],
        payload: Bytes::from_static(b"due"),
    };
    // The consumer is already waiting when the schedule is stored.
    let started = Instant::now();
    let publish = async {
        sleep(Duration::from_millis(100)).await;
        h.broker.publish(schedule).await.unwrap();
    };
    let wait = expect(&mut sub, Duration::from_secs(6), "the scheduled message");
    let (fired, ()) = tokio::join!(wait, publish);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2100) - h.early(),
        "fired after {waited:?}"
    );
    assert_eq!(fired.subject, target);
    assert_eq!(body(&fired), "due");
    assert!(
        fired
            .headers
            .iter()
            .any(|(k, v)| k == "X-Kept" && v == "yes")
    );
    fired.acker.ack().await.unwrap();
}

/// Objects of several MiB come back byte for byte, a put replaces, a delete (also of what is
/// not there) leaves nothing, and objects expire with the bucket's TTL; a missing bucket is
/// `NoBucket` to a read.
async fn objects_round_trip_replace_delete_and_expire(h: &Harness) {
    let ttl = Duration::from_secs(2);
    let spec = ObjectSpec {
        bucket: format!("bodies_{}", h.queue.replace('-', "_")),
        ttl,
        storage: Storage::File,
        replicas: 1,
    };
    let bucket = spec.bucket.as_str();
    let missing = h.broker.object_get(bucket, "a").await;
    assert!(
        matches!(missing, Err(BrokerError::NoBucket { .. })),
        "{missing:?}"
    );
    let missing = h
        .broker
        .object_put(bucket, "a", Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(missing, Err(BrokerError::NoBucket { .. })),
        "{missing:?}"
    );
    h.broker.object_delete(bucket, "a").await.unwrap();
    h.broker.ensure_objects(&spec).await.unwrap();
    h.broker.ensure_objects(&spec).await.unwrap();
    assert_eq!(h.broker.object_get(bucket, "a").await.unwrap(), None);

    let big: Bytes = (0..5 * 1024 * 1024 + 7)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    h.broker.object_put(bucket, "a", big.clone()).await.unwrap();
    let back = h
        .broker
        .object_get(bucket, "a")
        .await
        .unwrap()
        .expect("stored");
    assert!(back == big, "{} bytes back for {}", back.len(), big.len());
    h.broker
        .object_put(bucket, "a", Bytes::from_static(b"smaller"))
        .await
        .unwrap();
    let back = h.broker.object_get(bucket, "a").await.unwrap();
    assert_eq!(back.as_deref(), Some(&b"smaller"[..]));
    h.broker.object_delete(bucket, "a").await.unwrap();
    assert_eq!(h.broker.object_get(bucket, "a").await.unwrap(), None);
    h.broker.object_delete(bucket, "a").await.unwrap();

    h.broker
        .object_put(bucket, "b", Bytes::from_static(b"short-lived"))
        .await
        .unwrap();
    sleep(ttl / 2).await;
    assert!(
        h.broker.object_get(bucket, "b").await.unwrap().is_some(),
        "alive before its TTL"
    );
    // While it expires a read may fail (its chunks gone before its description): never hang.
    eventually(
        ttl + 2 * PROMPTLY + Duration::from_secs(10),
        "object expired",
        || async { matches!(h.broker.object_get(bucket, "b").await, Ok(None)) },
    )
    .await;
}

/// The revision changes with every write and the keys list what was written (what the
/// worker's view of cancelled calls relies on); a missing bucket is `NoBucket`.
async fn kv_keys_and_revision_follow_writes(h: &Harness) {
    let bucket = format!("keys_{}", h.queue.replace('-', "_"));
    let missing = h.broker.kv_revision(&bucket).await;
    assert!(
        matches!(missing, Err(BrokerError::NoBucket { .. })),
        "{missing:?}"
    );
    let missing = h.broker.kv_keys(&bucket).await;
    assert!(
        matches!(missing, Err(BrokerError::NoBucket { .. })),
        "{missing:?}"
    );
    let spec = KvSpec {
        bucket: bucket.clone(),
        ttl: Duration::from_secs(60),
        storage: Storage::File,
        replicas: 1,
    };
    h.broker.ensure_kv(&spec).await.unwrap();
    let empty = h.broker.kv_revision(&bucket).await.unwrap();
    assert!(h.broker.kv_keys(&bucket).await.unwrap().is_empty());
    let one = Bytes::from_static(b"1");
    let r1 = h
        .broker
        .kv_put(&bucket, "b64.YQ", one.clone())
        .await
        .unwrap();
    let after_one = h.broker.kv_revision(&bucket).await.unwrap();
    assert!(after_one > empty && after_one == r1);
    h.broker.kv_put(&bucket, "c-2", one.clone()).await.unwrap();
    h.broker.kv_put(&bucket, "c-2", one).await.unwrap();
    assert!(h.broker.kv_revision(&bucket).await.unwrap() > after_one);
    let mut keys = h.broker.kv_keys(&bucket).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["b64.YQ", "c-2"]);
}

/// Compare-and-set: a write over the revision read wins, a second write over the same revision
/// is a conflict; `0` creates only a key with no live value (a deleted one included).
async fn kv_swap_writes_only_over_the_revision_read(h: &Harness) {
    let spec = kv_spec(h, "swap_");
    let bucket = spec.bucket.as_str();
    h.broker.ensure_kv(&spec).await.unwrap();
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    assert_eq!(h.broker.kv_entry(bucket, "c").await.unwrap(), None);
    let r1 = h.broker.kv_swap(bucket, "c", b("queued"), 0).await.unwrap();
    let conflict = h.broker.kv_swap(bucket, "c", b("other"), 0).await;
    assert!(
        matches!(conflict, Err(BrokerError::Conflict { .. })),
        "{conflict:?}"
    );
    assert_eq!(
        h.broker.kv_entry(bucket, "c").await.unwrap(),
        Some((b("queued"), r1))
    );
    let r2 = h
        .broker
        .kv_swap(bucket, "c", b("running"), r1)
        .await
        .unwrap();
    assert!(r2 > r1);
    let stale = h.broker.kv_swap(bucket, "c", b("late"), r1).await;
    assert!(
        matches!(stale, Err(BrokerError::Conflict { .. })),
        "{stale:?}"
    );
    assert_eq!(
        h.broker.kv_get(bucket, "c").await.unwrap().as_deref(),
        Some(&b"running"[..])
    );
    h.broker.kv_delete(bucket, "c").await.unwrap();
    assert_eq!(h.broker.kv_entry(bucket, "c").await.unwrap(), None);
    h.broker.kv_swap(bucket, "c", b("again"), 0).await.unwrap();
    assert_eq!(
        h.broker.kv_get(bucket, "c").await.unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

/// A key-value bucket of this harness's own, named `prefix` + its queue.
fn kv_spec(h: &Harness, prefix: &str) -> KvSpec {
    KvSpec {
        bucket: format!("{prefix}{}", h.queue.replace('-', "_")),
        ttl: Duration::from_secs(60),
        storage: Storage::File,
        replicas: 1,
    }
}

/// Many compare-and-sets at once answer as one at a time would, each in its place: creates,
/// an update at the right revision, a stale one, a create over a live key and one over a
/// deleted key's marker.
async fn kv_swap_all_answers_each_write_in_order(h: &Harness) {
    let spec = kv_spec(h, "swapall_");
    let bucket = spec.bucket.as_str();
    let b = |s: &str| Bytes::from(s.to_string());
    let swap = |key: &str, value: &str, expected: u64| Swap {
        key: key.to_string(),
        value: b(value),
        expected,
    };
    let missing = h.broker.kv_swap_all(bucket, vec![swap("a", "x", 0)]).await;
    assert!(
        matches!(missing[..], [Err(BrokerError::NoBucket { .. })]),
        "{missing:?}"
    );
    h.broker.ensure_kv(&spec).await.unwrap();
    let live = h.broker.kv_swap(bucket, "live", b("1"), 0).await.unwrap();
    let gone = h.broker.kv_swap(bucket, "gone", b("1"), 0).await.unwrap();
    h.broker.kv_delete(bucket, "gone").await.unwrap();
    let writes = vec![
        swap("a", "a1", 0),
        swap("live", "2", live),
        swap("live", "stale", live),
        swap("b", "b1", 0),
        swap("a", "again", 0),
        swap("gone", "back", 0),
    ];
    let results = h.broker.kv_swap_all(bucket, writes).await;
    assert_eq!(results.len(), 6, "{results:?}");
    let ok = |i: usize| {
        *results[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("write {i}: {e}"))
    };
    let conflict = |i: usize| matches!(results[i], Err(BrokerError::Conflict { .. }));
    assert!(ok(0) > 0 && ok(1) > live && ok(3) > ok(1), "{results:?}");
    assert!(conflict(2) && conflict(4), "{results:?}");
    assert!(
        ok(5) > gone,
        "a create writes over a delete marker: {results:?}"
    );
    for (key, value) in [("a", "a1"), ("live", "2"), ("b", "b1"), ("gone", "back")] {
        let got = h.broker.kv_get(bucket, key).await.unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()), "{key}");
    }
    assert_eq!(
        h.broker.kv_entry(bucket, "b").await.unwrap().map(|e| e.1),
        Some(ok(3))
    );
}

async fn ensure_stream_is_idempotent_and_checked(h: &Harness) {
    let spec = h.stream();
    assert_eq!(
        h.broker.ensure_stream(&spec).await.unwrap(),
        StreamStatus::Created
    );
    assert_eq!(
        h.broker.ensure_stream(&spec).await.unwrap(),
        StreamStatus::Existing
    );
    let limits = StreamSpec {
        retention: Retention::Limits,
        ..spec.clone()
    };
    match h.broker.ensure_stream(&limits).await {
        Err(BrokerError::IncompatibleStream { found, want, .. }) => {
            assert_eq!(found, "WorkQueue");
            assert_eq!(want, "Limits");
        }
        other => panic!("expected IncompatibleStream, got {other:?}"),
    }
    // Streams may not share subjects.
    let overlapping = StreamSpec {
        name: format!("{}_OTHER", spec.name),
        subjects: vec![format!("{}.*.openfaas-fn", h.queue)],
        ..spec.clone()
    };
    let err = h
        .broker
        .ensure_stream(&overlapping)
        .await
        .expect_err("overlapping stream accepted");
    assert!(err.to_string().contains("overlap"), "{err}");
    // The dead-letter stream does not overlap its queue's.
    let dlq = StreamSpec::dead_letters(&h.queue, Storage::File, 1, Duration::from_secs(3600));
    assert_eq!(
        h.broker.ensure_stream(&dlq).await.unwrap(),
        StreamStatus::Created
    );
}

async fn pull_batch_and_demand_bound_local_buffer(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    for i in 0..10 {
        h.publish(&h.subject("f"), &format!("m{i}")).await;
    }
    let spec = |batch: usize| ConsumerSpec {
        pull_batch: batch,
        recreate: true,
        memory_storage: false,
        ack_wait: Duration::from_secs(30),
        ..h.consumer("w", None)
    };
    // Demand above the batch: the batch bounds what is held.
    let mut a = h.subscribe(&spec(3)).await;
    a.set_demand(10);
    let first = expect(&mut a, PROMPTLY, "first").await;
    sleep(Duration::from_millis(200)).await;
    let held = a.drain_buffered();
    assert!(held.len() <= 2, "held {} with pull_batch 3", held.len());
    if h.is_memory() {
        assert_eq!(held.len(), 2);
    }
    // Demand below the batch: demand bounds it.
    let mut b = h.subscribe(&spec(10)).await;
    b.set_demand(1);
    let second = expect(&mut b, PROMPTLY, "second").await;
    sleep(Duration::from_millis(200)).await;
    assert!(b.drain_buffered().is_empty(), "demand 1 holds nothing back");
    // Everything not taken is still there for another subscriber.
    let mut c = h.subscribe(&spec(10)).await;
    c.set_demand(10);
    let rest = 10 - 2 - held.len();
    for _ in 0..rest {
        let d = expect(&mut c, PROMPTLY, "the rest").await;
        d.acker.ack().await.unwrap();
    }
    assert!(recv(&mut c, Duration::from_millis(300)).await.is_none());
    // What was held comes back when given back.
    for d in held.iter().chain([&first, &second]) {
        d.acker.nak(None).await.unwrap();
    }
    for _ in 0..held.len() + 2 {
        let d = expect(&mut c, PROMPTLY, "given back").await;
        assert_eq!(d.delivered, 2);
        d.acker.ack().await.unwrap();
    }
    eventually(PROMPTLY, "all acked", || async { h.messages().await == 0 }).await;
}

async fn too_large_message_is_refused(h: &Harness) {
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let msg = Outgoing {
        subject: h.subject("f"),
        msg_id: Some("big".into()),
        headers: Vec::new(),
        payload: Bytes::from(vec![b'x'; 2 << 20]),
    };
    match h.broker.publish(msg).await {
        Err(BrokerError::TooLarge(why)) => assert!(!why.is_empty()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(h.messages().await, 0);
}

// ---- memory broker only ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_limits_refuse_publishes_with_full() {
    let h = Harness::memory_with(MemoryLimits {
        max_messages: 3,
        max_bytes: 1 << 20,
        ..MemoryLimits::default()
    });
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    for i in 0..3 {
        h.publish(&h.subject("f"), &format!("m{i}")).await;
    }
    let msg = Outgoing {
        subject: h.subject("f"),
        msg_id: None,
        headers: Vec::new(),
        payload: Bytes::from_static(b"one too many"),
    };
    match h.broker.publish(msg.clone()).await {
        Err(e @ BrokerError::Full(_)) => {
            let text = e.to_string();
            assert!(text.contains("3 messages"), "{text}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // Consuming makes room.
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "m0").await;
    d.acker.ack().await.unwrap();
    h.broker.publish(msg).await.unwrap();

    // Bytes are bounded too.
    let h = Harness::memory_with(MemoryLimits {
        max_messages: 1000,
        max_bytes: 4096,
        ..MemoryLimits::default()
    });
    h.broker.ensure_stream(&h.stream()).await.unwrap();
    let big = "x".repeat(1500);
    h.publish(&h.subject("f"), &big).await;
    h.publish(&h.subject("f"), &big).await;
    let msg = Outgoing {
        subject: h.subject("f"),
        msg_id: None,
        headers: Vec::new(),
        payload: Bytes::from(big),
    };
    assert!(matches!(
        h.broker.publish(msg).await,
        Err(BrokerError::Full(_))
    ));
    // And key-value entries count against the same limits.
    let kv = KvSpec {
        bucket: "calls".into(),
        ttl: Duration::from_secs(60),
        storage: Storage::Memory,
        replicas: 1,
    };
    h.broker.ensure_kv(&kv).await.unwrap();
    assert!(matches!(
        h.broker
            .kv_put("calls", "k", Bytes::from(vec![0; 2000]))
            .await,
        Err(BrokerError::Full(_))
    ));
    // Expired entries free their room.
    h.broker
        .kv_put("calls", "k", Bytes::from(vec![0; 500]))
        .await
        .unwrap();
    sleep(Duration::from_secs(61)).await;
    h.broker
        .kv_put("calls", "k2", Bytes::from(vec![0; 900]))
        .await
        .unwrap();
}

/// A restart with file storage keeps ack-pending deliveries and their leases: the message
/// comes back when its ack wait runs out (not at once), with its delivery count kept. Measured
/// on nats-server 2.9.10 and 2.15.1, SIGKILL and SIGTERM alike: a delivery with a 6 s ack wait,
/// killed 1.5 s later, came back 5.3–6.1 s after it was delivered.
async fn restart_keeps_ack_pending_leases(h: &mut Harness) {
    const LEASE: Duration = Duration::from_secs(4);
    let first = h.publish_or_create("held").await;
    let consumer = ConsumerSpec {
        ack_wait: LEASE,
        ..h.consumer("w", None)
    };
    let mut sub = h.subscribe(&consumer).await;
    let d = expect(&mut sub, PROMPTLY, "held").await;
    let delivered_at = Instant::now();
    assert_eq!(d.delivered, 1);
    sleep(Duration::from_millis(500)).await;
    h.restart().await;
    // The restored lease still holds for a while (the server re-checks restored leases 0.5 to
    // 1.5 s after it starts, so allow that much early)...
    let quiet = (LEASE - Duration::from_millis(1500)).saturating_sub(delivered_at.elapsed());
    if let Some(early) = recv(&mut sub, quiet).await {
        panic!(
            "redelivered {:?} after delivery (delivery {}), within its lease of {LEASE:?}",
            delivered_at.elapsed(),
            early.delivered
        );
    }
    // ...and runs out about when it would have without the restart.
    let again = expect(
        &mut sub,
        Duration::from_secs(4),
        "redelivery after the lease",
    )
    .await;
    assert_eq!(again.stream_sequence, first.sequence);
    assert_eq!(again.delivered, 2);
    again.acker.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn memory_restart_keeps_ack_pending_leases() {
    restart_keeps_ack_pending_leases(&mut Harness::memory()).await;
}

#[tokio::test]
async fn nats_restart_keeps_ack_pending_leases() {
    let Some(mut h) = Harness::nats_restartable().await else {
        return;
    };
    restart_keeps_ack_pending_leases(&mut h).await;
}

/// A consumer kept in the server's memory (function mode's default) ends with a restart of a
/// server with file storage; its unacked message stays in the stream, and the consumer created
/// again delivers it, counting from 1. A file consumer on the same stream survives.
async fn restart_ends_a_memory_consumer_and_keeps_its_messages(h: &mut Harness) {
    let first = h.publish_or_create("unacked").await;
    let in_memory = ConsumerSpec {
        memory_storage: true,
        ..h.consumer("m", Some(h.subject("f")))
    };
    let mut sub = h.subscribe(&in_memory).await;
    let d = expect(&mut sub, PROMPTLY, "unacked").await;
    assert_eq!(d.delivered, 1);
    let on_file = h.subscribe(&h.consumer("f", Some(h.subject("g")))).await;
    drop((sub, on_file));
    h.restart().await;
    assert!(
        !h.consumer_exists("m").await,
        "memory consumer outlived the restart"
    );
    assert!(
        h.consumer_exists("f").await,
        "file consumer lost in the restart"
    );
    let mut again = h.subscribe(&in_memory).await;
    let d = expect(&mut again, Duration::from_secs(5), "unacked again").await;
    assert_eq!(d.stream_sequence, first.sequence);
    assert_eq!(d.delivered, 1);
    d.acker.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn memory_restart_ends_a_memory_consumer_and_keeps_its_messages() {
    restart_ends_a_memory_consumer_and_keeps_its_messages(&mut Harness::memory()).await;
}

#[tokio::test]
async fn nats_restart_ends_a_memory_consumer_and_keeps_its_messages() {
    let Some(mut h) = Harness::nats_restartable().await else {
        return;
    };
    restart_ends_a_memory_consumer_and_keeps_its_messages(&mut h).await;
}

#[tokio::test(start_paused = true)]
async fn memory_restart_with_file_storage_keeps_messages_and_ids() {
    let h = Harness::memory();
    let Kind::Memory(m) = &h.kind else {
        unreachable!()
    };
    h.publish_or_create("a").await;
    m.restart(true);
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let a = expect(&mut sub, Duration::from_millis(1), "a after restart").await;
    assert_eq!(body(&a), "a");
    a.acker.ack().await.unwrap();
    assert_eq!(h.messages().await, 0);
    // The duplicate window only remembers ids of messages still stored.
    let x = h.publish_with_id(&h.subject("f"), "x", Some("x")).await;
    m.restart(true);
    assert!(
        h.publish_with_id(&h.subject("f"), "x", Some("x"))
            .await
            .duplicate
    );
    let d = expect(&mut sub, Duration::from_millis(1), "x").await;
    assert_eq!(d.stream_sequence, x.sequence);
}

#[tokio::test(start_paused = true)]
async fn memory_restart_with_memory_storage_loses_everything() {
    let h = Harness::memory();
    let Kind::Memory(m) = &h.kind else {
        unreachable!()
    };
    h.publish_or_create("lost").await;
    let mut sub = h.subscribe(&h.consumer("w", None)).await;
    let d = expect(&mut sub, PROMPTLY, "lost").await;
    m.restart(false);
    assert_eq!(
        h.broker.stream_info(&h.stream_name(), None).await.unwrap(),
        None
    );
    // An ack sent across the restart goes nowhere.
    d.acker.ack().await.unwrap();
    // The live subscription recreates stream and consumer, empty.
    let got = recv(&mut sub, Duration::from_secs(1)).await;
    assert!(got.is_none());
    assert_eq!(h.messages().await, 0);
    assert!(h.consumer_exists("w").await);
    let ack = h.publish(&h.subject("f"), "new").await;
    assert_eq!(ack.sequence, 1);
    let d = expect(&mut sub, PROMPTLY, "new").await;
    assert_eq!(body(&d), "new");
}
