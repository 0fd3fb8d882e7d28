//! Black-box end-to-end tests: the `queue-worker` binary against a real nats-server, a test
//! function and a callback receiver, driven over HTTP and NATS only.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::bed::Bed;
use common::http::Reply;
use common::worker::{http_client, raw_post_status};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn ingress_invokes_function_and_posts_callback_with_every_header() {
    let Some((bed, mut w)) = Bed::new("e2e")
        .function(|r, _| {
            Reply::ok(r.body.clone())
                .with_header("Content-Type", "application/x-test")
                .with_header("X-Echo", "yes")
                .with_status(201)
        })
        .callback_receiver()
        .ingress()
        .start()
        .await
    else {
        return;
    };
    let (function, receiver, queue) = (&bed.function, bed.receiver(), &bed.queue);
    let ingress = w.ingress().to_string();
    let client = http_client();

    let body = Bytes::from_static(b"\x00\x01binary body\xff");
    let resp = client
        .post(format!(
            "{ingress}/async-function/echo.ns1/a/b%20c?x=1&y=a%20b"
        ))
        .header("Content-Type", "application/octet-stream")
        .header("X-Custom", "custom-value")
        .header("X-Callback-Url", receiver.url("/done?token=1"))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let call_id = resp.headers()["x-call-id"].to_str().unwrap().to_string();
    let start_time = resp.headers()["x-start-time"].to_str().unwrap().to_string();
    assert_eq!(call_id.len(), 36, "generated UUID: {call_id}");
    assert!(start_time.parse::<u128>().is_ok());

    let calls = function.wait_for(1, T).await;
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/function/echo.ns1/a/b%20c");
    assert_eq!(call.query.as_deref(), Some("x=1&y=a%20b"));
    assert_eq!(call.body, body);
    assert_eq!(
        call.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(call.header("x-custom"), Some("custom-value"));
    assert_eq!(call.header("x-call-id"), Some(call_id.as_str()));
    assert_eq!(call.header("x-start-time"), Some(start_time.as_str()));
    assert_eq!(
        call.header("user-agent"),
        Some(format!("queue-worker/{}", env!("CARGO_PKG_VERSION")).as_str())
    );

    let cbs = receiver.wait_for(1, T).await;
    let cb = &cbs[0];
    assert_eq!(cb.method, "POST");
    assert_eq!(cb.path, "/done");
    assert_eq!(cb.query.as_deref(), Some("token=1"));
    assert_eq!(cb.body, body, "callback body is the function's response");
    assert_eq!(cb.header("x-call-id"), Some(call_id.as_str()));
    assert_eq!(cb.header("x-function-status"), Some("201"));
    assert_eq!(cb.header("x-function-name"), Some("echo.ns1"));
    assert_eq!(cb.header("x-start-time"), Some(start_time.as_str()));
    assert_eq!(cb.header("x-retry"), Some("0"));
    assert_eq!(
        cb.header("x-retry-max"),
        Some("9"),
        "max_retry_attempts 10 = 9 retries"
    );
    assert_eq!(cb.header("x-echo"), Some("yes"));
    assert_eq!(cb.header("content-type"), Some("application/x-test"));
    let secs: f64 = cb
        .header("x-duration-seconds")
        .expect("x-duration-seconds")
        .parse()
        .expect("float seconds");
    assert!((0.0..10.0).contains(&secs));
    assert!(
        cb.header("user-agent")
            .is_some_and(|ua| ua.starts_with("queue-worker/"))
    );

    // The message is acknowledged: the work queue is empty.
    bed.wait_drained(T).await;
    assert_eq!(w.processed(queue).await, 1.0);
    assert_eq!(
        w.metric(&format!(
            "queue_worker_invocations_total{{queue_name=\"{queue}\",function_name=\"echo.ns1\",code=\"201\"}}"
        ))
        .await,
        Some(1.0)
    );
    assert_eq!(
        w.metric(&format!(
            "queue_worker_messages_submitted_total{{queue_name=\"{queue}\"}}"
        ))
        .await,
        Some(1.0)
    );

    // A caller-supplied X-Call-Id is kept; the bare function name gets the default namespace.
    let resp = w.post("plain").header("X-Call-Id", "my-own-id");
    let resp = resp.body("x").send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-call-id"], "my-own-id");
    let calls = function.wait_for(2, T).await;
    let plain = calls.iter().find(|c| c.path == "/function/plain").unwrap();
    assert_eq!(plain.header("x-call-id"), Some("my-own-id"));
    // Log lines reach stderr in batches, up to 10 ms later.
    w.proc.wait_log("function=plain.openfaas-fn", T).await;
}

#[tokio::test]
async fn ingress_refuses_bad_requests_clearly() {
    let Some((bed, w)) = Bed::new("refuse")
        .ingress()
        .env("max_body_bytes", "1024")
        .start()
        .await
    else {
        return;
    };
    let (function, ingress) = (&bed.function, w.ingress());

    let r = w.post("f").header("X-Callback-Url", "not a url");
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("callback URL"));

    let r = w.post("f").body(vec![b'x'; 1025]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("1024"));

    let r = w.post("f").body(vec![b'x'; 1024]).send().await.unwrap();
    assert_eq!(r.status(), 202, "exactly the limit is accepted");

    let r = http_client().get(format!("{ingress}/async-function/f"));
    assert_eq!(r.send().await.unwrap().status(), 405);

    let r = w.post("..%2Fsystem").send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Names no gateway routes: two dots in a row, none at all (was 503 and 404).
    for name in ["a..b", "fn.."] {
        let r = w.post(name).send().await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
    }
    for target in ["/async-function/", "/async-function"] {
        let r = http_client()
            .post(format!("{ingress}{target}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{target}");
    }

    // HTTP clients normalise `..` away, so speak raw HTTP to send it as is.
    let status = raw_post_status(
        ingress.trim_start_matches("http://"),
        "/async-function/f/a/../../system",
    )
    .await;
    assert_eq!(status, 400, "dot segments refused");

    function.wait_for(1, T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(function.count(), 1, "only the valid request ran");
}

#[tokio::test]
async fn function_queues_route_to_another_queue_with_queue_name_set() {
    let other = common::unique_name("other");
    let routing = format!("pdf-gen={other}");
    let Some((bed, w)) = Bed::new("main")
        .ingress()
        .env("function_queues", &routing)
        .start()
        .await
    else {
        return;
    };
    let (nats, function) = (&bed.nats, &bed.function);
    let r = w.post("pdf-gen").body("doc").send().await.unwrap();
    assert_eq!(r.status(), 202);

    // Stored in the other queue's stream, on <other>.pdf-gen.openfaas-fn, with QueueName set;
    // this worker (serving `queue`) does not run it.
    let js = nats.jetstream().await;
    let stream = js.get_stream(format!("OF_{other}")).await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject(&format!("{other}.pdf-gen.openfaas-fn"))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(v["QueueName"], other.as_str());
    assert_eq!(v["Function"], "pdf-gen");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(function.count(), 0);

    // A worker for the other queue runs it.
    let _w2 = bed.worker().queue(&other).start().await;
    let calls = function.wait_for(1, T).await;
    assert_eq!(calls[0].path, "/function/pdf-gen");
    assert_eq!(calls[0].body, Bytes::from_static(b"doc"));
}

#[tokio::test]
async fn go_encoded_messages_from_nats_are_invoked_on_both_subjects() {
    let Some((bed, _w)) = Bed::new("go").start().await else {
        return;
    };
    bed.publish_to("figlet.openfaas-fn", common::fixture("full.json"))
        .await;
    // Older gateways publish to the bare queue subject.
    bed.publish(&bed.queue, common::fixture("legacy-2020.json"))
        .await;
    bed.publish_to("resize.openfaas-fn", common::fixture("binary-body.json"))
        .await;

    let calls = bed.function.wait_for(3, T).await;
    let full = calls
        .iter()
        .find(|c| c.path.starts_with("/function/figlet"))
        .expect("full.json invoked");
    assert_eq!(full.path, "/function/figlet.openfaas-fn/employees/100");
    assert_eq!(full.query.as_deref(), Some("user=1&tag=a%20b"));
    assert_eq!(full.body, Bytes::from_static(b"{\"hello\":\"world\"}"));
    assert_eq!(full.header("authorization"), Some("Bearer secret-token"));
    assert_eq!(full.header("x-batch-id"), Some("batch-42"));
    assert_eq!(
        full.header("x-call-id"),
        Some("7d4bc39d-cca2-4ed6-8247-e9f73cdcc4fd")
    );
    assert_eq!(full.header("x-start-time"), Some("1735732800123456789"));
    let legacy = calls
        .iter()
        .find(|c| c.path == "/function/cows")
        .expect("legacy message from the bare subject invoked");
    assert_eq!(legacy.body, Bytes::from_static(b"{}"));
    assert_eq!(
        legacy.header("x-call-id"),
        Some("791c08d4-d242-4ad2-9ce3-cae4cf4a2087")
    );
    let binary = calls
        .iter()
        .find(|c| c.path == "/function/resize")
        .expect("binary body");
    assert_eq!(binary.body.to_vec(), (0u8..=255).collect::<Vec<u8>>());
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_worker_keeps_working() {
    let Some((bed, w)) = Bed::new("poison").start().await else {
        return;
    };
    let (function, queue) = (&bed.function, &bed.queue);
    for (i, f) in ["bad-base64.json", "missing-function.json", "not-json.txt"]
        .iter()
        .enumerate()
    {
        bed.publish_to(&format!("p{i}.openfaas-fn"), common::fixture(f))
            .await;
    }
    bed.publish_to("figlet.openfaas-fn", common::fixture("minimal.json"))
        .await;
    let calls = function.wait_for(1, T).await;
    assert_eq!(calls[0].path, "/function/figlet");

    bed.wait_dead_letters(3, T).await;
    bed.wait_drained(T).await;
    let js = bed.nats.jetstream().await;
    let stream = js.get_stream(bed.dlq()).await.unwrap();
    for (i, f) in ["bad-base64.json", "missing-function.json", "not-json.txt"]
        .iter()
        .enumerate()
    {
        let m = stream
            .get_last_raw_message_by_subject(&format!("{queue}_DLQ.p{i}.openfaas-fn"))
            .await
            .unwrap();
        assert_eq!(m.payload, common::fixture(f), "original bytes kept");
        let h = m.headers;
        assert_eq!(
            h.get("Qw-Reason").map(|v| v.as_str()),
            Some("poison"),
            "{f}"
        );
        assert_eq!(h.get("Qw-Attempts").map(|v| v.as_str()), Some("1"));
        assert!(h.get("Qw-Error").is_some_and(|v| !v.as_str().is_empty()));
        assert!(h.get("Qw-Failed-At").is_some());
    }
    assert_eq!(
        w.metric(&format!(
            "queue_worker_dead_letters_total{{queue_name=\"{queue}\",reason=\"poison\"}}"
        ))
        .await,
        Some(3.0)
    );
    assert_eq!(function.count(), 1, "poison is never invoked");
}

/// A message near the server's `max_payload` (1 MiB by default): its dead letter, the message
/// plus the `Qw-*` headers, is too large whole. It was nak'd every 5 s for good (and an
/// exhausted call was invoked on every redelivery); now the dead letter keeps the first
/// 64 KiB, says so, and the message leaves the queue.
#[tokio::test]
async fn a_dead_letter_too_large_for_the_server_is_kept_truncated() {
    let Some((bed, w)) = Bed::new("bigdlq").start().await else {
        return;
    };
    let size = 1024 * 1024 - 256;
    bed.publish_to("big.openfaas-fn", vec![b'x'; size]).await;
    bed.wait_dead_letters(1, T).await;
    bed.wait_drained(T).await;
    let js = bed.nats.jetstream().await;
    let stream = js.get_stream(bed.dlq()).await.unwrap();
    let m = stream
        .get_last_raw_message_by_subject(&format!("{}_DLQ.big.openfaas-fn", bed.queue))
        .await
        .unwrap();
    assert_eq!(m.payload.len(), 64 * 1024);
    assert!(
        m.payload.iter().all(|b| *b == b'x'),
        "the start of the original"
    );
    let h = m.headers;
    assert_eq!(
        h.get("Qw-Truncated").map(|v| v.as_str().to_string()),
        Some(size.to_string())
    );
    assert_eq!(h.get("Qw-Reason").map(|v| v.as_str()), Some("poison"));
    let dead = format!(
        "queue_worker_dead_letters_total{{queue_name=\"{}\",reason=\"poison\"}}",
        bed.queue
    );
    assert_eq!(w.metric(&dead).await, Some(1.0));
}

/// A delivery past the call's last attempt is never invoked, whatever brought it back (here
/// another client of the consumer gave it back twice; in production, a worker lost during the
/// last attempt, or a dead letter that could not be stored). It was invoked once more per
/// redelivery; now it is dead-lettered `exhausted` without a call.
#[tokio::test]
async fn a_delivery_past_the_last_attempt_is_not_invoked() {
    use async_nats::jetstream::{AckKind, consumer::PullConsumer};
    use futures::StreamExt;
    let Some((bed, w)) = Bed::new("pastlast")
        .env("max_retry_attempts", "2")
        .start()
        .await
    else {
        return;
    };
    // The worker made the stream and its consumer; it stops, and the message waits.
    w.stop().await;
    bed.publish_to("figlet.openfaas-fn", common::fixture("minimal.json"))
        .await;
    let js = bed.nats.jetstream().await;
    let stream = js.get_stream(bed.stream()).await.unwrap();
    let name = format!("{}-workers", bed.queue);
    let consumer: PullConsumer = stream.get_consumer(&name).await.unwrap();
    for delivered in 1..=2 {
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(5));
        let mut batch = batch.messages().await.unwrap();
        let m = batch.next().await.expect("a delivery").unwrap();
        assert_eq!(m.info().unwrap().delivered, delivered);
        m.ack_with(AckKind::Nak(None)).await.unwrap();
    }
    let _w = bed.start_worker().await;
    bed.wait_drained(T).await;
    assert_eq!(
        bed.function.count(),
        0,
        "delivery 3 of 2 attempts is not run"
    );
    bed.wait_dead_letters(1, T).await;
    let dlq = js.get_stream(bed.dlq()).await.unwrap();
    let subject = format!("{}_DLQ.figlet.openfaas-fn", bed.queue);
    let m = dlq.get_last_raw_message_by_subject(&subject).await.unwrap();
    let header = |k: &str| m.headers.get(k).map(|v| v.as_str().to_string());
    assert_eq!(header("Qw-Reason").as_deref(), Some("exhausted"));
    let error = header("Qw-Error").unwrap_or_default();
    assert!(error.contains("past the last of 2 attempts"), "{error}");
}

/// Large messages and many slots: the worker asked for as many messages as it had free slots
/// (256 × 700 KB, ~240 MB at once), the server found it a slow consumer and cut its
/// connection again and again, and calls ran twice. Pulls are bounded by bytes too.
#[tokio::test]
async fn large_messages_with_many_slots_never_cost_the_connection() {
    use base64::Engine;
    let Some((bed, first)) = Bed::new("bigpull")
        .function(|_, _| Reply::ok("").with_delay(Duration::from_millis(20)))
        .env("max_inflight", "256")
        .start()
        .await
    else {
        return;
    };
    // The queue fills while no worker runs; then one starts with every slot free.
    first.stop().await;
    let body = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 700 * 1024]);
    let n = 300;
    let js = bed.nats.jetstream().await;
    let mut acks = Vec::new();
    for i in 0..n {
        let message = serde_json::json!({
            "Method": "POST",
            "Function": "big",
            "Header": { "X-Call-Id": [format!("big-{i}")] },
            "Body": body,
        });
        let subject = format!("{}.big.openfaas-fn", bed.queue);
        acks.push(
            js.publish(subject, message.to_string().into())
                .await
                .unwrap(),
        );
        // A few at a time: nats-server 2.15 refuses (429) too many publishes awaiting their ack.
        if acks.len() >= 16 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    let w = bed.start_worker().await;
    bed.function.wait_for(n, Duration::from_secs(60)).await;
    bed.wait_drained(T).await;
    let calls = bed.function.requests();
    let ids: HashSet<_> = calls.iter().filter_map(|c| c.header("X-Call-Id")).collect();
    assert_eq!((ids.len(), calls.len()), (n, n), "every call ran once");
    let reconnects = w.metric("queue_worker_nats_reconnect_total").await;
    assert_eq!(reconnects, Some(0.0), "the server never cut the worker off");
}

/// A call id used again within NATS' duplicate window (2 minutes) is not stored again, whatever
/// the request carries: the answer says so (`X-Duplicate: true`) instead of a plain `202` for
/// a body that would never run. A retry after a `503` uses this to be safe.
#[tokio::test]
async fn a_reused_call_id_is_reported_as_a_duplicate() {
    let Some((bed, w)) = Bed::new("dupid").ingress().start().await else {
        return;
    };
    let post = |body: &'static str| w.post("f").header("X-Call-Id", "same-id").body(body).send();
    let first = post("first").await.unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers().get("x-duplicate"), None);
    let again = post("second").await.unwrap();
    assert_eq!(again.status(), 202);
    let duplicate = again
        .headers()
        .get("x-duplicate")
        .and_then(|v| v.to_str().ok());
    assert_eq!(duplicate, Some("true"));
    bed.wait_drained(T).await;
    let calls = bed.function.wait_for(1, T).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body_str(), "first");
}

/// A message whose `Function` cannot stand in a subject (an empty token, a space, 5,000
/// characters) is poison: its dead letter goes on the subject the message came on. The name
/// used to make the dead-letter subject: NATS refused the publish (or closed the worker's
/// connection for a control line too long) and the message came back for good.
#[tokio::test]
async fn poison_with_a_function_name_unfit_for_a_subject_is_dead_lettered() {
    let Some((bed, w)) = Bed::new("badname").start().await else {
        return;
    };
    let long = "f".repeat(5_000);
    let names = ["a..b", "a b", "x\r\ny", long.as_str()];
    for (i, name) in names.iter().enumerate() {
        let message = serde_json::json!({ "Method": "POST", "Function": name });
        bed.publish_to(&format!("n{i}.openfaas-fn"), message.to_string())
            .await;
    }
    bed.wait_dead_letters(names.len() as u64, T).await;
    bed.wait_drained(T).await;
    let js = bed.nats.jetstream().await;
    let stream = js.get_stream(bed.dlq()).await.unwrap();
    for i in 0..names.len() {
        let subject = format!("{}_DLQ.n{i}.openfaas-fn", bed.queue);
        let m = stream.get_last_raw_message_by_subject(&subject).await;
        let m = m.unwrap_or_else(|e| panic!("{subject}: {e}"));
        assert_eq!(
            m.headers.get("Qw-Reason").map(|v| v.as_str()),
            Some("poison")
        );
    }
    assert_eq!(bed.function.count(), 0, "poison is never invoked");
    let reconnects = w.metric("queue_worker_nats_reconnect_total").await;
    assert_eq!(
        reconnects,
        Some(0.0),
        "no publish cost the worker its connection"
    );
}

/// A queue reset (its stream deleted by hand, as the README's procedure says) numbers messages
/// from 1 again. A new message's dead letter must not be taken for an old one's (dropped as a
/// duplicate) while the message itself is terminated: it would be lost. Found by the
/// simulation (broker-restart seeds 4905 and 9521, memory storage).
#[tokio::test]
async fn dead_letters_survive_a_queue_reset() {
    let Some((bed, mut w)) = Bed::new("reset").start().await else {
        return;
    };
    let js = bed.nats.jetstream().await;
    let (work, queue) = (bed.stream(), &bed.queue);
    let poison = |n: u32| bed.publish_to(&format!("p{n}.openfaas-fn"), format!("not json {n}"));
    assert_eq!(poison(1).await, 1);
    bed.wait_dead_letters(1, T).await;
    // The reset as the README describes it: stop the workers, delete the stream, start them
    // again. (nats-server 2.9 can fail every write to a stream recreated the moment it was
    // deleted, "error opening msg block file": give the deletion a second.)
    w.proc.sigterm();
    assert!(w.proc.wait_exit(T).await.is_some_and(|s| s.success()));
    js.delete_stream(&work)
        .await
        .expect("delete the work stream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _w = bed.start_worker().await;
    assert_eq!(
        poison(2).await,
        1,
        "the recreated stream numbers from 1 again"
    );
    bed.wait_dead_letters(2, T).await;
    let stream = js.get_stream(bed.dlq()).await.unwrap();
    let m = stream
        .get_last_raw_message_by_subject(&format!("{queue}_DLQ.p2.openfaas-fn"))
        .await
        .expect("the new message's dead letter");
    assert_eq!(m.payload, Bytes::from("not json 2"));
}

#[tokio::test]
async fn nats_restart_mid_run_loses_nothing() {
    restart_mid_run_loses_nothing("static", "file").await;
}

#[tokio::test]
async fn nats_restart_mid_run_loses_nothing_in_function_mode() {
    restart_mid_run_loses_nothing("function", "file").await;
}

/// Function consumers kept in the server's memory (`consumer_storage=memory`) end with the
/// restart; the workers create them again for the functions with work.
#[tokio::test]
async fn nats_restart_mid_run_loses_nothing_with_consumers_in_memory() {
    restart_mid_run_loses_nothing("function", "memory").await;
}

async fn restart_mid_run_loses_nothing(mode: &str, consumers: &str) {
    let Some((mut bed, w)) = Bed::new(&format!("restart-{mode}-{consumers}"))
        .restartable()
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(100)))
        .ingress()
        .env("max_inflight", "2")
        .env("scaling_mode", mode)
        .env("consumer_storage", consumers)
        .start()
        .await
    else {
        return;
    };
    let post = |id: &str| w.post("f").header("X-Call-Id", id).send();
    let mut accepted = HashSet::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        assert_eq!(post(&id).await.unwrap().status(), 202);
        accepted.insert(id);
    }
    bed.function.wait_for(3, T).await;
    bed.nats.kill();
    // While NATS is down the ingress refuses (503), never a silent 202.
    let r = post("during").await.unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    tokio::time::sleep(Duration::from_secs(1)).await;
    bed.nats.restart().await;
    common::eventually(T, "ingress accepts again", || async {
        post("after-0").await.is_ok_and(|r| r.status() == 202)
    })
    .await;
    accepted.insert("after-0".into());
    for i in 1..5 {
        let id = format!("after-{i}");
        assert_eq!(post(&id).await.unwrap().status(), 202);
        accepted.insert(id);
    }
    common::eventually(
        Duration::from_secs(40),
        "every accepted call invoked",
        || {
            let seen: HashSet<String> = bed
                .function
                .requests()
                .iter()
                .filter_map(|r| r.header("x-call-id").map(str::to_string))
                .collect();
            let missing = accepted.difference(&seen).count();
            async move { missing == 0 }
        },
    )
    .await;
    bed.wait_drained(T).await;
    assert!(
        w.metric("queue_worker_nats_reconnect_total").await >= Some(1.0),
        "reconnect counted"
    );
}

/// Started while NATS is down, the ingress answers at once: `503` with `Retry-After` (never a
/// hanging connection), and `202` as soon as NATS is there.
#[tokio::test]
async fn an_ingress_started_before_nats_answers_503_until_nats_is_there() {
    let Some(mut bed) = Bed::new("late")
        .restartable()
        .function(|_, _| Reply::ok("ok"))
        .start_without_worker()
        .await
    else {
        return;
    };
    bed.nats.kill();
    let ingress = format!("127.0.0.1:{}", common::free_port());
    let env = [
        ("nats_url", bed.nats.url()),
        ("queue_name", bed.queue.clone()),
        ("gateway_url", format!("http://{}", bed.function.addr())),
        ("metrics_port", common::free_port().to_string()),
    ];
    let args = ["run", "--ingress", &ingress];
    let proc = common::worker::WorkerProcess::spawn(&common::worker_bin(), &args, &env);
    let url = format!("http://{ingress}/async-function/f");
    let http = http_client();
    let deadline = std::time::Instant::now() + T;
    let (status, retry_after) = loop {
        match http.post(&url).body("early").send().await {
            Ok(r) => break (r.status(), r.headers().get("retry-after").cloned()),
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("no answer while NATS is down: {e}\n{}", proc.log())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(status, 503, "{}", proc.log());
    assert!(retry_after.is_some(), "503 says when to try again");
    bed.nats.restart().await;
    common::eventually(T, "the ingress accepts once NATS is there", || {
        let sent = http
            .post(&url)
            .header("X-Call-Id", "late-1")
            .body("late")
            .send();
        async move { sent.await.is_ok_and(|r| r.status() == 202) }
    })
    .await;
    let calls = bed.function.wait_for(1, T).await;
    assert_eq!(calls[0].header("x-call-id"), Some("late-1"));
    drop(proc);
}

#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish_and_exits_zero() {
    let Some((bed, mut w)) = Bed::new("term")
        .function(|_, _| Reply::ok("done").with_delay(Duration::from_millis(1500)))
        .callback_receiver()
        .ingress()
        .env("max_inflight", "3")
        .start()
        .await
    else {
        return;
    };
    let (function, receiver) = (&bed.function, bed.receiver());
    for _ in 0..3 {
        let r = w
            .post("slow")
            .header("X-Callback-Url", receiver.url("/cb"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    common::eventually(T, "three calls in flight", || {
        let n = function.in_flight();
        async move { n == 3 }
    })
    .await;
    w.proc.sigterm();
    let status = w.proc.wait_exit(T).await.expect("worker exits");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(function.count(), 3);
    assert_eq!(receiver.count(), 3, "every finished call got its callback");
    assert_eq!(
        bed.stream_messages().await,
        0,
        "finished calls were acknowledged before exit"
    );
}

#[tokio::test]
async fn shutdown_timeout_gives_unfinished_work_back_at_once() {
    // ack_wait is long: the message must come back because it was given back (nak), not
    // because the lease expired.
    let Some((bed, mut w)) = Bed::new("grace")
        .function(|_, n| {
            if n == 0 {
                Reply::ok("slow").with_delay(Duration::from_secs(30))
            } else {
                Reply::ok("fast")
            }
        })
        .ingress()
        .env("shutdown_timeout", "500ms")
        .env("ack_wait", "60s")
        .start()
        .await
    else {
        return;
    };
    let r = w.post("long").send().await.unwrap();
    assert_eq!(r.status(), 202);
    bed.function.wait_for(1, T).await;
    w.proc.sigterm();
    let status = w
        .proc
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(status.success());
    assert!(w.proc.log().contains("Shutdown timeout reached"));

    let started = std::time::Instant::now();
    let _w2 = bed.worker().env("ack_wait", "60s").start().await;
    let calls = bed.function.wait_for(2, T).await;
    assert_eq!(calls[1].path, "/function/long");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "redelivered at once, not after ack_wait"
    );
}

/// A worker cut off from NATS for longer than its lease knows that the message is another
/// worker's by then. Giving it back at shutdown (a nak names the message, not the delivery)
/// would cut the other worker's lease short and run the call a third time, so it does not
/// (`src/worker/lease.rs`; the simulation found the sequence, consumer-expiry seed 430).
#[tokio::test]
async fn a_worker_whose_lease_ran_out_does_not_give_the_message_back() {
    // Worker A reaches NATS through the proxy.
    let Some((bed, mut a)) = Bed::new("lease")
        .function(|_, n| match n {
            // Worker A's call: still running when A stops.
            0 => Reply::ok("first").with_delay(Duration::from_secs(30)),
            // Worker B's, after A's lease ran out.
            1 => Reply::ok("second").with_delay(Duration::from_secs(4)),
            _ => Reply::ok("third"),
        })
        .proxy()
        .ingress()
        .envs(&[
            ("ack_wait", "2s"),
            ("max_inflight", "1"),
            ("shutdown_timeout", "500ms"),
        ])
        .start()
        .await
    else {
        return;
    };
    let function = &bed.function;
    let r = a.post("cut").send().await.unwrap();
    assert_eq!(r.status(), 202);
    function.wait_for(1, T).await;
    // A is cut off: its progress acks do not get through and its lease runs out.
    bed.proxy().freeze();
    let _b = bed
        .worker()
        .envs(&[("ack_wait", "2s"), ("max_inflight", "2")])
        .start()
        .await;
    function.wait_for(2, T).await;
    // A is back and stops while B works on the call, with a slot free for more.
    bed.proxy().thaw();
    a.proc.sigterm();
    let status = a
        .proc
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(status.success());
    // B finished the call.
    bed.wait_drained(T).await;
    // Longer than an ack wait: a third run would have started by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        function.count(),
        2,
        "the call ran on A and on B, and no more"
    );
    assert!(
        a.proc.log().contains("Lease lost while working"),
        "A knew its lease was gone:\n{}",
        a.proc.log()
    );
}

#[tokio::test]
async fn a_consumer_deleted_by_hand_is_recreated() {
    let Some((bed, mut w)) = Bed::new("recreate").start().await else {
        return;
    };
    let js = bed.nats.jetstream().await;
    let stream = js.get_stream(bed.stream()).await.unwrap();
    stream
        .delete_consumer(&format!("{}-workers", bed.queue))
        .await
        .expect("delete consumer");
    w.proc.wait_log("recreating", Duration::from_secs(30)).await;
    bed.publish_to("figlet.openfaas-fn", common::fixture("minimal.json"))
        .await;
    let calls = bed.function.wait_for(1, T).await;
    assert_eq!(calls[0].path, "/function/figlet");
}

#[tokio::test]
async fn slow_functions_past_ack_wait_run_exactly_once() {
    // Functions run 2.5x the ack wait while more work waits: progress acks keep the running
    // message leased, and nothing is pulled ahead of a free slot, so nothing runs twice.
    let Some((bed, w)) = Bed::new("slow")
        .function(|_, _| Reply::ok("slow").with_delay(Duration::from_millis(2500)))
        .ingress()
        .envs(&[("ack_wait", "1s"), ("max_inflight", "1")])
        .start()
        .await
    else {
        return;
    };
    let function = &bed.function;
    for i in 0..3 {
        let r = w
            .post("slow")
            .header("X-Call-Id", format!("slow-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    function.wait_for(3, Duration::from_secs(30)).await;
    bed.wait_drained(T).await;
    // Longer than an ack wait after the last call: any redelivery would have shown up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: Vec<String> = function
        .requests()
        .iter()
        .filter_map(|r| r.header("x-call-id").map(str::to_string))
        .collect();
    assert_eq!(
        ids,
        vec!["slow-0", "slow-1", "slow-2"],
        "each ran once, in order"
    );
    assert_eq!(function.max_concurrency(), 1);
}

#[tokio::test]
async fn publish_command_enqueues_like_the_ingress_and_json_logs_are_json() {
    let Some((bed, mut w)) = Bed::new("cli")
        .callback_receiver()
        .env("log_encoding", "json")
        .start()
        .await
    else {
        return;
    };
    let (function, receiver) = (&bed.function, bed.receiver());
    let out = std::process::Command::new(common::worker_bin())
        .env_clear()
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .args([
            "publish",
            "figlet.ns2",
            "--data",
            "from the cli",
            "--header",
            "X-Trace: t-1",
            "--callback",
            &receiver.url("/cb"),
            "--path",
            "/sub/path",
            "--query",
            "a=1",
        ])
        .output()
        .expect("run publish");
    assert!(
        out.status.success(),
        "publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let call_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(call_id.len(), 36, "prints the call id: {call_id:?}");
    let calls = function.wait_for(1, T).await;
    assert_eq!(calls[0].path, "/function/figlet.ns2/sub/path");
    assert_eq!(calls[0].query.as_deref(), Some("a=1"));
    assert_eq!(calls[0].body, Bytes::from_static(b"from the cli"));
    assert_eq!(calls[0].header("x-trace"), Some("t-1"));
    assert_eq!(calls[0].header("x-call-id"), Some(call_id.as_str()));
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-call-id"), Some(call_id.as_str()));

    // Every log line of the worker is one JSON object with ts, level and msg.
    let log = w.proc.wait_log("\"msg\":\"Invoked\"", T).await;
    let mut saw_invoke = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string());
        if v["msg"] == "Invoke" {
            saw_invoke = true;
            assert_eq!(v["callId"], call_id.as_str());
            assert_eq!(v["function"], "figlet.ns2");
            assert_eq!(v["delivery"], 1);
        }
    }
    assert!(saw_invoke, "an Invoke line:\n{log}");
    assert!(
        !log.contains("from the cli") && !log.contains("t-1"),
        "bodies and header values are never logged"
    );
}

#[test]
fn invalid_configuration_exits_2_with_one_line_per_bad_value() {
    let out = std::process::Command::new(common::worker_bin())
        .env_clear()
        .env("max_inflight", "abc")
        .env("ack_wait", "10 parsecs")
        .env("scaling_mode", "static")
        .arg("run")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("max_inflight") && l.contains("\"abc\""))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ack_wait") && l.contains("10 parsecs"))
    );
}

/// A missing credentials file used to be retried as if NATS were down, for good.
#[test]
fn an_unreadable_credentials_file_exits_2() {
    let mut child = std::process::Command::new(common::worker_bin())
        .env_clear()
        .env("nats_credentials_file", "/nonexistent/user.creds")
        .arg("run")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running after 10 s: it is retrying instead of exiting");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert!(
        err.contains("nats_credentials_file") && err.contains("/nonexistent/user.creds"),
        "{err}"
    );
}

#[tokio::test]
async fn static_mode_reports_pending_messages_per_function() {
    let Some((bed, w)) = Bed::new("pending")
        .function(|_, _| Reply::ok("ok").with_delay(Duration::from_millis(1000)))
        .ingress()
        .start()
        .await
    else {
        return;
    };
    for _ in 0..7 {
        let r = w.post("backlog").send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    let line = format!(
        "queue_worker_pending_messages{{queue_name=\"{}\",function_name=\"backlog.openfaas-fn\"}}",
        bed.queue
    );
    common::eventually(Duration::from_secs(15), "pending > 0 reported", || async {
        w.metric(&line).await.is_some_and(|v| v > 0.0)
    })
    .await;
    bed.function.wait_for(7, T).await;
    common::eventually(Duration::from_secs(15), "pending back to 0", || async {
        w.metric(&line).await == Some(0.0)
    })
    .await;
}

/// SIGTERM while NATS is down: the worker says what it waits for and exits within
/// `shutdown_timeout` (plus the half second acknowledgements always get), in both modes.
#[tokio::test]
async fn shutdown_while_nats_is_down_is_bounded_by_the_shutdown_timeout() {
    for mode in ["static", "function"] {
        let Some((mut bed, mut w)) = Bed::new(&format!("down-{mode}"))
            .restartable()
            .function(|_, _| Reply::ok("ok"))
            .ingress()
            .envs(&[("scaling_mode", mode), ("shutdown_timeout", "2s")])
            .start()
            .await
        else {
            return;
        };
        let r = w.post("f").send().await.unwrap();
        assert_eq!(r.status(), 202);
        bed.function.wait_for(1, T).await;
        bed.nats.kill();
        w.proc.wait_log("NATS disconnected", T).await;
        // Let discovery and pulls run into the dead connection.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let asked = std::time::Instant::now();
        w.proc.sigterm();
        let status = w
            .proc
            .wait_exit(Duration::from_secs(20))
            .await
            .expect("worker exits");
        let took = asked.elapsed();
        let log = w.proc.log();
        assert!(status.success(), "{mode}: exit status {status:?}");
        assert!(
            log.contains("Stopping: flushing acknowledgements to NATS"),
            "{mode}: says what it waits for:\n{log}"
        );
        // 2 s, the half second for acknowledgements, and room for a busy machine; before the
        // bound it took 5 s (static) to 15 s (function mode).
        assert!(
            took < Duration::from_millis(4_500),
            "{mode}: took {took:?} with shutdown_timeout=2s\n{log}"
        );
    }
}
