use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::broker::memory::{MemoryBroker, MemoryLimits};
use crate::broker::{Admin, KeyValue, KvSpec, Operate, Publish, StreamSpec};
use crate::clock::SystemClock;
use crate::config::Storage;
use crate::status::{CallStatus, State};

const Q: &str = "q";

fn settings() -> StreamSettings {
    StreamSettings {
        storage: Storage::Memory,
        replicas: 1,
        duplicate_window: Duration::from_secs(60),
    }
}

fn ctx(now: SystemTime) -> Context<'static> {
    Context {
        queue: Q,
        default_namespace: "openfaas-fn",
        settings: settings(),
        status: true,
        now,
    }
}

async fn broker() -> MemoryBroker {
    let b = MemoryBroker::new(Arc::new(SystemClock), MemoryLimits::default());
    let dlq = StreamSpec::dead_letters(Q, Storage::Memory, 1, Duration::from_secs(3600));
    b.ensure_stream(&dlq).await.unwrap();
    b
}

/// Park a dead letter of `function` for `reason`, as the worker does.
async fn park(b: &MemoryBroker, function: &str, reason: &str, call_id: &str) -> u64 {
    let payload = format!(r#"{{"Function":"{function}","Header":{{"X-Call-Id":["{call_id}"]}}}}"#);
    let out = Outgoing {
        subject: format!("{Q}_DLQ.{function}.openfaas-fn"),
        msg_id: None,
        headers: vec![
            ("X-Custom".into(), "kept".into()),
            ("Qw-Payload".into(), "obj-1".into()),
            ("Qw-Reason".into(), reason.into()),
            ("Qw-Status".into(), "500".into()),
            ("Qw-Attempts".into(), "3".into()),
            ("Qw-Subject".into(), format!("{Q}.{function}.openfaas-fn")),
        ],
        payload: Bytes::from(payload),
    };
    b.publish(out).await.unwrap().sequence
}

fn seqs(list: &[DeadLetter]) -> Vec<u64> {
    list.iter().map(|d| d.sequence).collect()
}

#[tokio::test]
async fn filters_select_what_they_say() {
    let b = broker().await;
    let one = park(&b, "figlet", "exhausted", "c1").await;
    let two = park(&b, "figlet", "poison", "c2").await;
    let three = park(&b, "env", "exhausted", "c3").await;
    let now = SystemTime::now();
    let at = ("openfaas-fn", now);
    let all = list(&b, Q, &Filter::default(), 100, at).await.unwrap();
    assert_eq!(seqs(&all), vec![one, two, three]);
    assert_eq!(all[0].function, "figlet.openfaas-fn");
    assert_eq!(all[0].call_id.as_deref(), Some("c1"));
    assert_eq!((all[0].status, all[0].attempts), (Some(500), Some(3)));
    assert_eq!(all[0].subject, "q.figlet.openfaas-fn");
    let figlet = Filter {
        function: Some("figlet".into()),
        ..Filter::default()
    };
    assert_eq!(
        seqs(&list(&b, Q, &figlet, 100, at).await.unwrap()),
        vec![one, two]
    );
    let exhausted = Filter {
        reason: Some("exhausted".into()),
        ..Filter::default()
    };
    assert_eq!(
        seqs(&list(&b, Q, &exhausted, 100, at).await.unwrap()),
        vec![one, three]
    );
    assert_eq!(
        seqs(&list(&b, Q, &exhausted, 1, at).await.unwrap()),
        vec![one]
    );
    let recent = Filter {
        since: Some(Duration::from_secs(60)),
        ..Filter::default()
    };
    assert_eq!(list(&b, Q, &recent, 100, at).await.unwrap().len(), 3);
    let later = now + Duration::from_secs(120);
    assert!(
        list(&b, Q, &recent, 100, ("openfaas-fn", later))
            .await
            .unwrap()
            .is_empty()
    );
    let bad = Filter {
        function: Some("no spaces".into()),
        ..Filter::default()
    };
    assert!(matches!(
        list(&b, Q, &bad, 100, at).await,
        Err(AdminError::Invalid(_))
    ));
}

#[tokio::test]
async fn show_gives_the_body_only_when_asked() {
    let b = broker().await;
    let seq = park(&b, "figlet", "exhausted", "c1").await;
    let plain = show(&b, Q, seq, false).await.unwrap().expect("found");
    assert!(plain.body.is_none());
    let headers = plain.headers.expect("headers");
    assert!(headers.contains(&("X-Custom".to_string(), "kept".to_string())));
    let with_body = show(&b, Q, seq, true).await.unwrap().expect("found");
    assert!(with_body.body.expect("body").contains("\"c1\""));
    assert_eq!(show(&b, Q, seq + 1, false).await.unwrap(), None);
}

/// Call `call_id`'s status is `dead_lettered`.
async fn store_dead_lettered(b: &MemoryBroker, call_id: &str) {
    let calls = KvSpec {
        bucket: crate::status::bucket(Q),
        ttl: Duration::ZERO,
        storage: Storage::Memory,
        replicas: 1,
    };
    b.ensure_kv(&calls).await.unwrap();
    let key = crate::status::key::of(call_id).unwrap();
    let value = Bytes::from(serde_json::to_vec(&dead_lettered()).unwrap());
    b.kv_put(&calls.bucket, &key, value).await.unwrap();
}

fn dead_lettered() -> CallStatus {
    CallStatus {
        state: State::DeadLettered,
        function: "figlet".into(),
        attempts: 3,
        last_status: Some(500),
        error: None,
        reason: Some("exhausted".into()),
        enqueued_at: Some(1),
        started_at: Some(2),
        finished_at: Some(3),
        not_before: None,
        next_attempt_at: None,
    }
}

#[tokio::test]
async fn a_redrive_stores_the_call_again_and_removes_the_dead_letter() {
    let b = broker().await;
    store_dead_lettered(&b, "c1").await;
    let seq = park(&b, "figlet", "exhausted", "c1").await;
    let other = park(&b, "env", "exhausted", "c2").await;
    let now = SystemTime::now();
    let asked = Selection::Sequences(vec![seq, 999]);

    let dry = redrive(&b, &ctx(now), &asked, true, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (dry.redriven.clone(), dry.not_found.clone()),
        (vec![seq], vec![999])
    );
    assert!(
        b.stream_info("OF_q", None).await.unwrap().is_none(),
        "a dry run stores nothing"
    );

    let mut told = 0;
    let done = redrive(&b, &ctx(now), &asked, false, &mut |n, _| told = n)
        .await
        .unwrap();
    assert_eq!(
        (done.redriven, done.call_ids, told),
        (vec![seq], vec!["c1".to_string()], 1)
    );
    let again = b
        .next_message("OF_q", 1, None)
        .await
        .unwrap()
        .expect("stored again");
    assert_eq!(again.subject, "q.figlet.openfaas-fn");
    assert_eq!(again.header("X-Custom"), Some("kept"));
    assert_eq!(
        again.header("Qw-Payload"),
        Some("obj-1"),
        "the claim check stays"
    );
    assert_eq!(again.header("Qw-Reason"), None);
    assert_eq!(again.header("Qw-Attempts"), None);
    let left = list(&b, Q, &Filter::default(), 100, ("openfaas-fn", now))
        .await
        .unwrap();
    assert_eq!(seqs(&left), vec![other]);
    let status = crate::status::read(&b, Q, "c1")
        .await
        .unwrap()
        .expect("status");
    assert_eq!((status.state, status.attempts), (State::Queued, 0));

    let twice = redrive(&b, &ctx(now), &asked, false, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(twice.not_found, vec![seq, 999]);
}

#[tokio::test]
async fn purge_removes_only_what_the_filter_takes() {
    let b = broker().await;
    let _ = park(&b, "figlet", "exhausted", "c1").await;
    let poison = park(&b, "figlet", "poison", "c2").await;
    let env = park(&b, "env", "exhausted", "c3").await;
    let now = SystemTime::now();
    let by_reason = Selection::Matching(Filter {
        reason: Some("exhausted".into()),
        function: Some("figlet".into()),
        since: None,
    });
    let done = purge(&b, &ctx(now), &by_reason, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(done.purged, 1);
    let at = ("openfaas-fn", now);
    assert_eq!(
        seqs(&list(&b, Q, &Filter::default(), 100, at).await.unwrap()),
        vec![poison, env]
    );
    let by_function = Selection::Matching(Filter {
        function: Some("env".into()),
        ..Filter::default()
    });
    assert_eq!(
        purge(&b, &ctx(now), &by_function, &mut |_, _| {})
            .await
            .unwrap()
            .purged,
        1
    );
    assert_eq!(
        seqs(&list(&b, Q, &Filter::default(), 100, at).await.unwrap()),
        vec![poison]
    );
}

#[test]
fn a_redrive_is_stored_once_however_often_it_is_run() {
    let m = StoredMessage {
        sequence: 7,
        subject: "q_DLQ.f.ns".into(),
        headers: vec![
            ("Nats-Msg-Id".into(), "old".into()),
            ("Qw-Error".into(), "x".into()),
        ],
        payload: Bytes::from_static(b"{}"),
        published: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
    };
    let a = redrive_message("q", &m);
    assert_eq!(a.msg_id, redrive_message("q", &m).msg_id);
    assert_eq!(a.subject, "q", "no Qw-Subject: the bare queue subject");
    assert!(a.headers.is_empty());
}
