//! Unit tests of the embedded broker (the conformance suite checks it against nats-server).

use std::sync::atomic::Ordering;

use futures::FutureExt;

use std::time::{Duration, SystemTime};

use super::consumer::PULL_REQUEST_LIFETIME;
use super::subjects::*;
use super::*;
use crate::broker::Delivery;
use crate::clock::SystemClock;
use crate::config::Storage;

fn broker_with(limits: MemoryLimits) -> MemoryBroker {
    MemoryBroker::new(Arc::new(SystemClock), limits)
}

fn broker() -> MemoryBroker {
    broker_with(MemoryLimits::default())
}

fn queue() -> StreamSpec {
    StreamSpec::work_queue("q", Storage::Memory, 1)
}

fn consumer(name: &str, filter: Option<&str>, ack_wait: Duration) -> ConsumerSpec {
    ConsumerSpec {
        stream: "OF_q".into(),
        name: name.into(),
        filter_subject: filter.map(str::to_string),
        ack_wait,
        inactive_threshold: None,
        pull_batch: 1,
        recreate: true,
        memory_storage: false,
    }
}

fn msg(subject: &str, id: Option<&str>, body: &str) -> Outgoing {
    Outgoing {
        subject: subject.into(),
        msg_id: id.map(str::to_string),
        headers: Vec::new(),
        payload: Bytes::from(body.to_string()),
    }
}

fn check(b: &MemoryBroker) {
    b.inner.lock().check_invariants();
}

fn polls(b: &MemoryBroker) -> u64 {
    b.inner.polls.load(Ordering::Relaxed)
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn subjects_match_like_nats() {
    for (pattern, subject, want) in [
        ("q", "q", true),
        ("q", "q.a", false),
        ("q.>", "q", false),
        ("q.>", "q.a", true),
        ("q.>", "q.a.b", true),
        ("q.*", "q.a", true),
        ("q.*", "q.a.b", false),
        ("q.*.ns", "q.f.ns", true),
        ("q.*.ns", "q.f.other", false),
        ("*.*", "a.b", true),
        (">", "a", true),
        ("q.a", "q.b", false),
    ] {
        assert_eq!(
            subject_matches(pattern, subject),
            want,
            "{pattern} ~ {subject}"
        );
    }
}

#[test]
fn filter_subsets_follow_nats_2_9() {
    for (a, b, want) in [
        ("q.a", "q.>", true),
        ("q.>", "q.a", false),
        ("q.a.ns", "q.*.ns", true),
        ("q.*.ns", "q.>", true),
        ("q.*", "q.*", true),
        ("q.*", "q.a", false),
        ("q", "q.>", false),
        ("q.a", "q.a", true),
        // Overlapping, yet neither contains the other: 2.9.10 lets both be consumers.
        ("q.*.x", "q.a.*", false),
        ("q.a.*", "q.*.x", false),
    ] {
        assert_eq!(subject_is_subset(a, b), want, "{a} ⊆ {b}");
    }
}

#[test]
fn stream_subjects_collide_when_any_subject_matches_both() {
    for (a, b, want) in [
        ("q", "q.>", false),
        ("q.>", "q.a", true),
        ("q.*.x", "q.a.*", true),
        ("q.*", "q.a.b", false),
        ("q.>", "q.*.b", true),
        ("q_DLQ.>", "q.>", false),
        ("a.b", "a.b", true),
    ] {
        assert_eq!(subjects_collide(a, b), want, "{a} ∩ {b}");
        assert_eq!(subjects_collide(b, a), want, "{b} ∩ {a}");
    }
}

#[test]
fn names_subjects_and_keys_are_validated() {
    assert!(valid_subject("q.a.b", false));
    assert!(!valid_subject("q.*", false));
    assert!(valid_subject("q.*", true));
    assert!(valid_subject("q.>", true));
    assert!(!valid_subject("q.>.a", true));
    assert!(!valid_subject("q..a", true));
    assert!(!valid_subject("", true));
    assert!(!valid_subject("q a", false));
    assert!(valid_name("OF_faas-request"));
    assert!(!valid_name("OF.q"));
    assert!(valid_bucket("OF_q_calls"));
    assert!(!valid_bucket("a.b"));
    assert!(valid_key("c8f1-22/x=y.z"));
    assert!(!valid_key(".a"));
    assert!(!valid_key("a."));
    assert!(!valid_key("a b"));
}

#[tokio::test(start_paused = true)]
async fn redelivery_timer_is_exact_and_waiting_does_not_spin() {
    let b = broker();
    b.ensure_stream(&queue()).await.unwrap();
    b.publish(msg("q.f.ns", None, "x")).await.unwrap();
    let mut sub = b
        .subscribe(&queue(), &consumer("w", None, 10 * SEC))
        .await
        .unwrap();
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(d.delivered, 1);
    let t0 = Instant::now();
    let before = polls(&b);
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!(t0.elapsed(), 10 * SEC);
    assert_eq!(again.delivered, 2);
    // One look, a sleep until the timer, one more look.
    assert_eq!(polls(&b) - before, 2);
    again.acker.ack().await.unwrap();

    // Nothing to do for an hour: a single look, then asleep.
    let before = polls(&b);
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), sub.next())
            .await
            .is_err()
    );
    assert_eq!(polls(&b) - before, 1);
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn publish_times_come_from_the_clock() {
    struct Fixed;
    impl Clock for Fixed {
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        }
    }
    let b = MemoryBroker::new(Arc::new(Fixed), MemoryLimits::default());
    b.ensure_stream(&queue()).await.unwrap();
    b.publish(msg("q.f.ns", None, "x")).await.unwrap();
    let mut sub = b
        .subscribe(&queue(), &consumer("w", None, SEC))
        .await
        .unwrap();
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(d.published, Fixed.now());
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!(again.published, Fixed.now(), "kept across redeliveries");
}

#[tokio::test(start_paused = true)]
async fn publish_wakes_a_waiting_subscription_at_once() {
    let b = broker();
    b.ensure_stream(&queue()).await.unwrap();
    let mut sub = b
        .subscribe(&queue(), &consumer("w", Some("q.f.ns"), 10 * SEC))
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        let t0 = Instant::now();
        let d = sub.next().await.unwrap().unwrap();
        (t0.elapsed(), d.stream_sequence)
    });
    tokio::time::sleep(5 * SEC).await;
    // Not for this consumer: no delivery.
    b.publish(msg("q.g.ns", None, "other")).await.unwrap();
    tokio::time::sleep(SEC).await;
    assert!(!waiter.is_finished());
    b.publish(msg("q.f.ns", None, "mine")).await.unwrap();
    let (waited, seq) = waiter.await.unwrap();
    assert_eq!(waited, 6 * SEC);
    assert_eq!(seq, 2);
}

#[tokio::test(start_paused = true)]
async fn nak_delay_progress_and_queued_messages() {
    let b = broker();
    b.ensure_stream(&queue()).await.unwrap();
    b.publish(msg("q.f.ns", None, "x")).await.unwrap();
    let mut sub = b
        .subscribe(&queue(), &consumer("w", None, 10 * SEC))
        .await
        .unwrap();
    let d = sub.next().await.unwrap().unwrap();
    // A nak delay longer than the ack wait wins over it.
    d.acker.nak(Some(25 * SEC)).await.unwrap();
    let t0 = Instant::now();
    let d2 = sub.next().await.unwrap().unwrap();
    assert_eq!(t0.elapsed(), 25 * SEC);
    assert_eq!(d2.delivered, 2);
    // Progress from an older delivery still addresses the message.
    tokio::time::sleep(8 * SEC).await;
    d.acker.progress().await.unwrap();
    let t1 = Instant::now();
    let d3 = sub.next().await.unwrap().unwrap();
    assert_eq!(t1.elapsed(), 10 * SEC);
    assert_eq!(d3.delivered, 3);
    // A nak of zero is a plain nak.
    d3.acker.nak(Some(Duration::ZERO)).await.unwrap();
    let d4 = sub.next().now_or_never().unwrap().unwrap().unwrap();
    assert_eq!(d4.delivered, 4);
    check(&b);
    d4.acker.term().await.unwrap();
    assert_eq!(b.usage().messages, 0);
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_of_one_consumer_share_its_messages() {
    let b = broker();
    b.ensure_stream(&queue()).await.unwrap();
    for i in 0..6 {
        b.publish(msg("q.f.ns", None, &i.to_string()))
            .await
            .unwrap();
    }
    let spec = ConsumerSpec {
        pull_batch: 4,
        recreate: true,
        memory_storage: false,
        ..consumer("w", None, 10 * SEC)
    };
    let mut a = b.subscribe(&queue(), &spec).await.unwrap();
    let mut c = b.subscribe(&queue(), &spec).await.unwrap();
    a.set_demand(2);
    c.set_demand(4);
    // `a` takes 2 (its demand), `c` the other 4 (its demand, within pull_batch).
    let mut seen = Vec::new();
    seen.push(a.next().await.unwrap().unwrap().stream_sequence);
    seen.push(c.next().await.unwrap().unwrap().stream_sequence);
    seen.push(a.next().await.unwrap().unwrap().stream_sequence);
    for _ in 0..3 {
        seen.push(c.next().await.unwrap().unwrap().stream_sequence);
    }
    assert_eq!(seen, vec![1, 3, 2, 4, 5, 6]);
    seen.sort();
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
    assert!(a.drain_buffered().is_empty());
    assert!(c.drain_buffered().is_empty());
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn inactive_threshold_boundaries() {
    let b = broker();
    b.ensure_stream(&queue()).await.unwrap();
    let spec = ConsumerSpec {
        inactive_threshold: Some(5 * SEC),
        ..consumer("idle", Some("q.idle.ns"), 30 * SEC)
    };
    drop(b.subscribe(&queue(), &spec).await.unwrap());
    tokio::time::sleep(5 * SEC).await;
    assert!(b.consumer_exists("OF_q", "idle").await.unwrap(), "at 5 s");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        !b.consumer_exists("OF_q", "idle").await.unwrap(),
        "past 5 s"
    );

    // A cancelled `next` leaves its pull request waiting for its lifetime.
    let mut sub = b.subscribe(&queue(), &spec).await.unwrap();
    assert!(sub.next().now_or_never().is_none());
    tokio::time::sleep(PULL_REQUEST_LIFETIME - Duration::from_millis(1)).await;
    assert!(b.consumer_exists("OF_q", "idle").await.unwrap());
    tokio::time::sleep(Duration::from_millis(1)).await;
    // The request arrived 10 s ago, beyond the threshold: gone once the request is.
    assert!(!b.consumer_exists("OF_q", "idle").await.unwrap());
    drop(sub);

    // Dropping the subscription ends its request at once.
    let mut sub = b.subscribe(&queue(), &spec).await.unwrap();
    assert!(sub.next().now_or_never().is_none());
    tokio::time::sleep(6 * SEC).await;
    assert!(b.consumer_exists("OF_q", "idle").await.unwrap());
    drop(sub);
    assert!(!b.consumer_exists("OF_q", "idle").await.unwrap());
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn duplicate_window_ends() {
    let b = broker();
    let spec = StreamSpec {
        duplicate_window: 2 * SEC,
        ..queue()
    };
    b.ensure_stream(&spec).await.unwrap();
    let first = b.publish(msg("q.f.ns", Some("id"), "a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert!(
        b.publish(msg("q.f.ns", Some("id"), "a"))
            .await
            .unwrap()
            .duplicate
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let again = b.publish(msg("q.f.ns", Some("id"), "a")).await.unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.sequence, first.sequence + 1);
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn duplicate_ids_are_bounded() {
    let b = broker_with(MemoryLimits {
        max_dedup_ids: 3,
        ..MemoryLimits::default()
    });
    b.ensure_stream(&queue()).await.unwrap();
    for i in 0..5 {
        let id = format!("id{i}");
        b.publish(msg("q.f.ns", Some(&id), "x")).await.unwrap();
    }
    check(&b);
    assert_eq!(b.inner.lock().dedup_ids, 3);
    assert!(
        !b.publish(msg("q.f.ns", Some("id0"), "x"))
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        b.publish(msg("q.f.ns", Some("id4"), "x"))
            .await
            .unwrap()
            .duplicate
    );
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn limits_streams_age_and_discard_old() {
    let b = broker();
    let dlq = StreamSpec {
        max_age: Some(5 * SEC),
        max_bytes: Some(100),
        ..StreamSpec::dead_letters("q", Storage::Memory, 1, 5 * SEC)
    };
    b.ensure_stream(&dlq).await.unwrap();
    let body = "x".repeat(30);
    for _ in 0..3 {
        b.publish(msg("q_DLQ.f.ns", None, &body)).await.unwrap();
        tokio::time::sleep(SEC).await;
    }
    // 3 × 40 bytes > 100: the oldest went.
    let info = b.stream_info(&dlq.name, None).await.unwrap().unwrap();
    assert_eq!(info.messages, 2);
    assert_eq!(info.bytes, 80);
    // The first survivor was stored at 1 s: gone at 6 s, the next at 7 s.
    tokio::time::sleep(3 * SEC).await;
    assert_eq!(b.usage().messages, 1);
    tokio::time::sleep(SEC).await;
    assert_eq!(b.usage(), MemoryUsage::default());
    // Acks do not remove messages from a Limits stream.
    b.publish(msg("q_DLQ.f.ns", None, "y")).await.unwrap();
    let spec = ConsumerSpec {
        stream: dlq.name.clone(),
        ..consumer("read", None, 10 * SEC)
    };
    let mut sub = b.subscribe(&dlq, &spec).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    d.acker.ack().await.unwrap();
    assert_eq!(b.usage().messages, 1);
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn kv_ttl_restarts_on_put() {
    let b = broker();
    let spec = KvSpec {
        bucket: "calls".into(),
        ttl: 10 * SEC,
        storage: Storage::Memory,
        replicas: 1,
    };
    b.ensure_kv(&spec).await.unwrap();
    b.kv_put("calls", "k", Bytes::from_static(b"1"))
        .await
        .unwrap();
    tokio::time::sleep(8 * SEC).await;
    b.kv_put("calls", "k", Bytes::from_static(b"2"))
        .await
        .unwrap();
    tokio::time::sleep(9 * SEC).await;
    assert_eq!(
        b.kv_get("calls", "k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    check(&b);
    tokio::time::sleep(SEC).await;
    assert_eq!(b.kv_get("calls", "k").await.unwrap(), None);
    assert_eq!(b.usage(), MemoryUsage::default());
    // TTL zero: kept forever.
    let forever = KvSpec {
        bucket: "forever".into(),
        ttl: Duration::ZERO,
        ..spec
    };
    b.ensure_kv(&forever).await.unwrap();
    b.kv_put("forever", "k", Bytes::new()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1 << 20)).await;
    assert!(b.kv_get("forever", "k").await.unwrap().is_some());
    check(&b);
}

#[tokio::test(start_paused = true)]
async fn bad_publishes_are_refused() {
    let b = broker_with(MemoryLimits {
        max_message_bytes: 100,
        ..MemoryLimits::default()
    });
    b.ensure_stream(&queue()).await.unwrap();
    assert!(matches!(
        b.publish(msg("q.*", None, "x")).await,
        Err(BrokerError::Other { .. })
    ));
    assert!(matches!(
        b.publish(msg("q.f.ns", Some("id"), &"x".repeat(100))).await,
        Err(BrokerError::TooLarge(_))
    ));
    assert!(matches!(
        b.publish(msg("other", None, "x")).await,
        Err(BrokerError::NoStream { .. })
    ));
    // A filter outside the stream's subjects is refused.
    let e = b
        .subscribe(&queue(), &consumer("w", Some("elsewhere.>"), SEC))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("10093"), "{e}");
    check(&b);
}

/// Random operations, checking every index and total after each.
#[tokio::test(start_paused = true)]
async fn bookkeeping_survives_random_operations() {
    let mut run = RandomRun::new().await;
    for step in 0..3000 {
        run.step().await;
        let state = run.b.inner.lock();
        state.check_invariants();
        assert!(
            state.usage.messages <= 40 && state.usage.bytes <= 4000,
            "step {step}"
        );
        assert!(state.dedup_ids <= 25);
    }
}

/// A broker with small limits, and what random operations on it hold.
struct RandomRun {
    b: MemoryBroker,
    dlq: StreamSpec,
    kv: KvSpec,
    specs: [ConsumerSpec; 3],
    subs: Vec<Option<Box<dyn Subscription>>>,
    held: Vec<Delivery>,
    seed: u64,
}

impl RandomRun {
    async fn new() -> RandomRun {
        let b = broker_with(MemoryLimits {
            max_messages: 40,
            max_bytes: 4000,
            max_message_bytes: 1000,
            max_dedup_ids: 25,
        });
        let dlq = StreamSpec {
            max_bytes: Some(500),
            ..StreamSpec::dead_letters("q", Storage::Memory, 1, 30 * SEC)
        };
        let kv = KvSpec {
            bucket: "calls".into(),
            ttl: 20 * SEC,
            storage: Storage::Memory,
            replicas: 1,
        };
        b.ensure_stream(&dlq).await.unwrap();
        b.ensure_kv(&kv).await.unwrap();
        let specs = [
            consumer("a", Some("q.a.ns"), 5 * SEC),
            consumer("b", Some("q.b.ns"), 7 * SEC),
            ConsumerSpec {
                inactive_threshold: Some(3 * SEC),
                pull_batch: 3,
                recreate: true,
                memory_storage: false,
                ..consumer("c", Some("q"), 2 * SEC)
            },
        ];
        RandomRun {
            b,
            dlq,
            kv,
            specs,
            subs: vec![None, None, None],
            held: Vec::new(),
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % n
    }

    async fn step(&mut self) {
        match self.rand(13) {
            0..=2 => self.publish().await,
            3 | 4 => self.pull().await,
            5 | 6 if !self.held.is_empty() => self.settle().await,
            7 if !self.held.is_empty() => {
                let i = self.rand(self.held.len() as u64) as usize;
                self.held[i].acker.progress().await.unwrap();
            }
            8 => self.key_value().await,
            9 => tokio::time::sleep(Duration::from_millis(self.rand(3000))).await,
            10 => {
                let i = self.rand(3) as usize;
                if let Some(mut sub) = self.subs[i].take() {
                    self.held.extend(sub.drain_buffered());
                }
            }
            11 if self.rand(20) == 0 => {
                let name = self.specs[self.rand(3) as usize].name.clone();
                let _ = self.b.delete_consumer("OF_q", &name).await;
            }
            12 if self.rand(40) == 0 => {
                let keep = self.rand(3) != 0;
                self.b.restart(keep);
                self.b.ensure_stream(&self.dlq).await.unwrap();
                self.b.ensure_kv(&self.kv).await.unwrap();
            }
            _ => {}
        }
    }

    async fn publish(&mut self) {
        let subject = ["q.a.ns", "q.b.ns", "q", "q_DLQ.a.ns"][self.rand(4) as usize];
        let id = (self.rand(2) == 0).then(|| format!("id{}", self.rand(40)));
        let body = "x".repeat(self.rand(120) as usize);
        let _ = self.b.publish(msg(subject, id.as_deref(), &body)).await;
    }

    async fn pull(&mut self) {
        let i = self.rand(3) as usize;
        if self.subs[i].is_none() {
            self.subs[i] = self.b.subscribe(&queue(), &self.specs[i]).await.ok();
        }
        let demand = 1 + self.rand(3) as usize;
        if let Some(sub) = self.subs[i].as_mut() {
            sub.set_demand(demand);
            if let Some(Some(Ok(d))) = sub.next().now_or_never() {
                self.held.push(d);
            }
        }
    }

    async fn settle(&mut self) {
        let i = self.rand(self.held.len() as u64) as usize;
        let d = self.held.swap_remove(i);
        match self.rand(4) {
            0 => d.acker.ack().await.unwrap(),
            1 => d.acker.term().await.unwrap(),
            2 => d.acker.nak(None).await.unwrap(),
            _ => {
                let delay = SEC * self.rand(4) as u32;
                d.acker.nak(Some(delay)).await.unwrap()
            }
        }
    }

    async fn key_value(&mut self) {
        let key = format!("k{}", self.rand(10));
        if self.rand(3) == 0 {
            self.b.kv_delete("calls", &key).await.unwrap();
        } else {
            let value = Bytes::from(vec![0; self.rand(200) as usize]);
            let _ = self.b.kv_put("calls", &key, value).await;
        }
    }
}

/// A schedule is refused as the server refuses it: on a stream without schedules, on a server
/// before 2.12, with a target outside its stream, or with a time it cannot read.
#[tokio::test(start_paused = true)]
async fn schedules_are_refused_where_the_server_refuses_them() {
    let at = format!(
        "@at {}",
        humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(5))
    );
    let schedule = |target: &str, when: &str| Outgoing {
        subject: "q-delayed.at.x".into(),
        msg_id: None,
        headers: vec![
            ("Nats-Schedule".into(), when.to_string()),
            ("Nats-Schedule-Target".into(), target.to_string()),
        ],
        payload: Bytes::from_static(b"p"),
    };
    let plain = StreamSpec::delayed("q", Storage::Memory, 1);
    let b = broker();
    b.ensure_stream(&plain).await.unwrap();
    let off = b.publish(schedule("q-delayed", &at)).await.unwrap_err();
    assert!(off.to_string().contains("disabled"), "{off}");
    b.ensure_stream(&plain.clone().with_schedules(true))
        .await
        .unwrap();
    b.publish(schedule("q-delayed", &at)).await.unwrap();
    let outside = b.publish(schedule("elsewhere", &at)).await.unwrap_err();
    assert!(outside.to_string().contains("target"), "{outside}");
    let unread = b
        .publish(schedule("q-delayed", "@every 1s"))
        .await
        .unwrap_err();
    assert!(unread.to_string().contains("invalid"), "{unread}");
    check(&b);

    let old = MemoryBroker::modelling(
        Arc::new(SystemClock),
        MemoryLimits::default(),
        ServerVersion::NATS_2_9,
    );
    assert!(!old.schedules_messages());
    old.ensure_stream(&plain.with_schedules(true))
        .await
        .unwrap();
    assert!(old.publish(schedule("q-delayed", &at)).await.is_err());
}
