//! Operating queues against a real nats-server, through the real binary: `queue ls|stats|
//! purge|reset` and `dlq ls|show|redrive|purge` (tables, `--json`, exit codes) and the same
//! operations over HTTP (`/system/queues`, `/system/dead-letters`).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use common::bed::{Bed, TestBed};
use common::calls::{bed_with, failing_bed, wait_state};
use common::http::Reply;
use common::worker::{Worker, http_client};

use common::bed::{cli, cli_json};

async fn create_queue(bed: &TestBed) {
    use async_nats::jetstream::stream::{Config, RetentionPolicy};
    let js = bed.nats.jetstream().await;
    js.create_stream(Config {
        name: bed.stream(),
        subjects: vec![bed.queue.clone(), format!("{}.>", bed.queue)],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .expect("create the queue's stream");
}

fn function<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["functions"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == name)
}

#[tokio::test]
async fn queue_commands_report_purge_one_function_and_reset() {
    let Some(bed) = Bed::new("admin-queue").start_without_worker().await else {
        return;
    };
    create_queue(&bed).await;
    for _ in 0..3 {
        bed.publish_to("a.openfaas-fn", "{}").await;
    }
    for _ in 0..2 {
        bed.publish_to("b.openfaas-fn", "{}").await;
    }

    let all = cli_json(&bed, &["queue", "ls"]).await;
    let mine = all
        .as_array()
        .expect("a list")
        .iter()
        .find(|q| q["queue"] == bed.queue.as_str())
        .expect("the bed's queue is listed");
    assert_eq!(mine["messages"], 5);
    assert_eq!(mine["mode"], "none");
    let (code, table, _) = cli(&bed, &["queue", "ls"]).await;
    assert_eq!(code, 0);
    assert!(table.starts_with("QUEUE"), "{table}");
    assert!(table.contains(&bed.queue), "{table}");

    let stats = cli_json(&bed, &["queue", "stats"]).await;
    let a = function(&stats, "a.openfaas-fn").expect("a is listed");
    assert_eq!(a["messages"], 3);
    assert!(a["oldest_age_seconds"].as_f64().is_some(), "{stats}");
    assert_eq!(function(&stats, "b.openfaas-fn").expect("b")["messages"], 2);

    // Without --yes and no terminal to ask: refused, nothing removed.
    let (code, _, err) = cli(&bed, &["queue", "purge", "--function", "a"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(bed.stream_messages().await, 5);

    let purged = cli_json(&bed, &["queue", "purge", "--function", "a", "--yes"]).await;
    assert_eq!(purged["purged"], 3);
    let stats = cli_json(&bed, &["queue", "stats"]).await;
    assert!(function(&stats, "a.openfaas-fn").is_none(), "{stats}");
    assert_eq!(
        function(&stats, "b.openfaas-fn").expect("b stays")["messages"],
        2
    );

    let (code, _, err) = cli(&bed, &["queue", "stats", "nosuch"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no queue nosuch"), "{err}");
    let (code, _, _) = cli(&bed, &["queue", "stats", "bad name"]).await;
    assert_eq!(code, 2);

    let reset = cli_json(&bed, &["queue", "reset", "--yes"]).await;
    assert_eq!(reset["deleted_messages"], 2);
    let stats = cli_json(&bed, &["queue", "stats"]).await;
    assert_eq!(stats["messages"], 0, "the stream is made again, empty");
}

/// `GET` or `POST` (with a JSON body) on the worker's ingress: status and JSON.
async fn http(
    w: &Worker,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http_client().request(method, format!("{}{path}", w.ingress()));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.expect("ingress answers");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_dead_letter_is_found_by_filter_and_redriven_to_run_again() {
    let Some((bed, w, failing)) = failing_bed("admin-dlq").await else {
        return;
    };
    let resp = w
        .post("fn")
        .header("x-call-id", "dl-1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    bed.wait_dead_letters(1, Duration::from_secs(20)).await;

    let waiting = format!(
        "queue_worker_dead_letters_waiting{{queue_name=\"{}\",reason=",
        bed.queue
    );
    common::eventually(
        Duration::from_secs(15),
        "the dead letters' gauge",
        || async { w.metric(&waiting).await == Some(1.0) },
    )
    .await;
    let listed = cli_json(&bed, &["dlq", "ls"]).await;
    let entry = &listed[0];
    assert_eq!(entry["call_id"], "dl-1", "{listed}");
    assert_eq!(entry["function"], "fn.openfaas-fn");
    let seq = entry["sequence"].as_u64().expect("a sequence");
    let reason = entry["reason"].as_str().expect("a reason").to_string();
    let by_reason = cli_json(&bed, &["dlq", "ls", "--reason", &reason]).await;
    assert_eq!(by_reason.as_array().map(Vec::len), Some(1));
    let other = cli_json(&bed, &["dlq", "ls", "--reason", "poison-not-this"]).await;
    assert_eq!(other.as_array().map(Vec::len), Some(0));
    let other_fn = cli_json(&bed, &["dlq", "ls", "--function", "other"]).await;
    assert_eq!(other_fn.as_array().map(Vec::len), Some(0));
    let (code, listed_http) = http(
        &w,
        reqwest::Method::GET,
        "/system/dead-letters?function=fn",
        None,
    )
    .await;
    assert_eq!(
        (code, listed_http[0]["sequence"].as_u64()),
        (200, Some(seq))
    );

    let shown = cli_json(&bed, &["dlq", "show", &seq.to_string()]).await;
    assert!(
        shown["headers"].is_array() && shown.get("body").is_none(),
        "{shown}"
    );
    let with_body = cli_json(&bed, &["dlq", "show", &seq.to_string(), "--body"]).await;
    assert!(
        with_body["body"]
            .as_str()
            .is_some_and(|b| b.contains("dl-1"))
    );

    failing.store(false, Ordering::SeqCst);
    let dry = json!({ "sequences": [seq], "dry_run": true });
    let (code, dry) = http(
        &w,
        reqwest::Method::POST,
        "/system/dead-letters/redrive",
        Some(dry),
    )
    .await;
    assert_eq!((code, &dry["redriven"]), (200, &json!([seq])), "{dry}");
    assert_eq!(
        bed.dead_letter_count().await,
        1,
        "a dry run changes nothing"
    );
    let (code, bad) = http(
        &w,
        reqwest::Method::POST,
        "/system/dead-letters/redrive",
        Some(json!({})),
    )
    .await;
    assert_eq!(code, 400, "{bad}");

    let done = cli_json(&bed, &["dlq", "redrive", &seq.to_string()]).await;
    assert_eq!(done["call_ids"], json!(["dl-1"]));
    let status = wait_state(&w, "dl-1", "succeeded", Duration::from_secs(20)).await;
    assert_eq!(status["attempts"], 1, "a fresh attempt count: {status}");
    assert_eq!(bed.dead_letter_count().await, 0);
    let (code, _, _) = cli(&bed, &["dlq", "show", &seq.to_string()]).await;
    assert_eq!(code, 1, "gone from the dead letters");
    let (code, _, err) = cli(&bed, &["dlq", "redrive"]).await;
    assert_eq!(code, 2, "says which: {err}");

    let (code, queues) = http(&w, reqwest::Method::GET, "/system/queues", None).await;
    assert_eq!(code, 200);
    assert!(
        queues
            .as_array()
            .is_some_and(|qs| qs.iter().any(|q| q["queue"] == bed.queue.as_str()))
    );
    let (code, _) = http(
        &w,
        reqwest::Method::DELETE,
        "/system/queues/nosuch/messages",
        None,
    )
    .await;
    assert_eq!(code, 404);
}

/// Calls of `function` the bed's function has received.
fn calls_of(bed: &TestBed, function: &str) -> usize {
    bed.function
        .requests()
        .iter()
        .filter(|r| {
            r.header("x-call-id")
                .is_some_and(|id| id.starts_with(function))
        })
        .count()
}

async fn post_calls(w: &Worker, function: &str, n: usize, tag: &str) {
    for i in 0..n {
        let resp = w
            .post(function)
            .header("x-call-id", format!("{function}-{tag}-{i}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
}

/// Waits until the function has received `n` calls of `function`.
async fn until_calls(bed: &TestBed, function: &str, n: usize) {
    common::eventually(
        Duration::from_secs(20),
        &format!("{n} calls of {function}"),
        || async { calls_of(bed, function) >= n },
    )
    .await;
}

/// A bed whose function answers 200, two worker replicas (the first with the ingress), and
/// `n` calls of function `a` already run.
async fn two_replicas_that_ran(name: &str, n: usize) -> Option<(TestBed, Worker, Worker)> {
    let bed = Bed::new(name)
        .function(|_, _| Reply::ok("ok"))
        .start_without_worker()
        .await?;
    let w1 = bed.worker().ingress().start().await;
    let w2 = bed.worker().start().await;
    post_calls(&w1, "a", n, "before").await;
    until_calls(&bed, "a", n).await;
    Some((bed, w1, w2))
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_on_any_replica_even_after_a_restart_until_resumed() {
    let Some((bed, w1, w2)) = two_replicas_that_ran("admin-pause", 2).await else {
        return;
    };

    let paused = cli_json(&bed, &["queue", "pause"]).await;
    assert_eq!(paused["paused"], true, "{paused}");
    // Every replica follows within two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    post_calls(&w1, "a", 4, "paused").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls_of(&bed, "a"), 2, "nothing starts while paused");
    assert_eq!(w2.metric("queue_worker_queue_paused{").await, Some(1.0));
    common::eventually(
        Duration::from_secs(15),
        "the oldest message's age",
        || async {
            let age = w2.metric("queue_worker_oldest_message_age_seconds{").await;
            age.is_some_and(|a| a >= 3.0)
        },
    )
    .await;
    let stats = cli_json(&bed, &["queue", "stats"]).await;
    assert_eq!(
        (stats["paused"].clone(), stats["messages"].clone()),
        (json!(true), json!(4))
    );

    // A replica started while the queue is paused starts nothing either.
    w2.stop().await;
    let w3 = bed.worker().start().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls_of(&bed, "a"), 2, "still paused after a restart");

    let resumed = cli_json(&bed, &["queue", "resume"]).await;
    assert_eq!(resumed["paused"], false);
    until_calls(&bed, "a", 6).await;
    bed.wait_drained(Duration::from_secs(20)).await;
    drop(w3);
}

#[tokio::test]
async fn pausing_a_function_over_http_holds_only_its_calls() {
    pausing_a_function_holds_only_its_calls("static").await;
}

#[tokio::test]
async fn pausing_a_function_holds_only_its_calls_in_function_mode() {
    pausing_a_function_holds_only_its_calls("function").await;
}

async fn pausing_a_function_holds_only_its_calls(mode: &str) {
    let envs = [("scaling_mode", mode)];
    let Some((bed, w)) = bed_with("admin-pause-fn", |_, _| Reply::ok("ok"), &envs).await else {
        return;
    };
    let (code, body) = http(
        &w,
        reqwest::Method::POST,
        "/system/queues/nosuch/pause",
        None,
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let path = format!("/system/queues/{}/pause?function=a", bed.queue);
    let (code, body) = http(&w, reqwest::Method::POST, &path, None).await;
    assert_eq!(
        (code, &body["paused_functions"]),
        (200, &json!(["a.openfaas-fn"])),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    post_calls(&w, "a", 3, "held").await;
    post_calls(&w, "b", 3, "free").await;
    until_calls(&bed, "b", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls_of(&bed, "a"), 0, "a's calls wait while b's run");
    let (_, stats) = http(
        &w,
        reqwest::Method::GET,
        &format!("/system/queues/{}", bed.queue),
        None,
    )
    .await;
    let a = function(&stats, "a.openfaas-fn").expect("a's calls wait in the queue");
    assert_eq!(
        (a["messages"].clone(), a["paused"].clone()),
        (json!(3), json!(true)),
        "{stats}"
    );

    let path = format!("/system/queues/{}/resume?function=a", bed.queue);
    let (code, body) = http(&w, reqwest::Method::POST, &path, None).await;
    assert_eq!(
        (code, &body["paused_functions"]),
        (200, &json!([])),
        "{body}"
    );
    until_calls(&bed, "a", 3).await;
}

#[tokio::test]
async fn a_reset_while_two_workers_run_loses_nothing_accepted_afterwards() {
    let Some((bed, w1, _w2)) = two_replicas_that_ran("admin-reset", 3).await else {
        return;
    };

    let reset = cli_json(&bed, &["queue", "reset", "--yes"]).await;
    assert!(reset["deleted_consumers"].as_u64().is_some(), "{reset}");
    post_calls(&w1, "b", 20, "after").await;
    let all = tokio::time::timeout(Duration::from_secs(20), until_calls(&bed, "b", 20)).await;
    assert!(
        all.is_ok(),
        "{} of 20 calls ran\n{}\n{}",
        calls_of(&bed, "b"),
        w1.proc.log(),
        _w2.proc.log()
    );
    bed.wait_drained(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn purging_one_function_over_http_leaves_the_others_to_run() {
    let Some((bed, w)) = bed_with("admin-purge-http", |_, _| Reply::ok("ok"), &[]).await else {
        return;
    };
    let queue = format!("/system/queues/{}", bed.queue);
    let (code, _) = http(&w, reqwest::Method::POST, &format!("{queue}/pause"), None).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    post_calls(&w, "a", 3, "gone").await;
    post_calls(&w, "b", 2, "kept").await;
    let (code, purged) = http(
        &w,
        reqwest::Method::DELETE,
        &format!("{queue}/messages?function=a"),
        None,
    )
    .await;
    assert_eq!((code, &purged["purged"]), (200, &json!(3)), "{purged}");
    let (code, bad) = http(
        &w,
        reqwest::Method::DELETE,
        &format!("{queue}/messages?function=no%20spaces"),
        None,
    )
    .await;
    assert_eq!(code, 400, "{bad}");
    let (code, _) = http(&w, reqwest::Method::POST, &format!("{queue}/resume"), None).await;
    assert_eq!(code, 200);
    let ran = tokio::time::timeout(Duration::from_secs(20), until_calls(&bed, "b", 2)).await;
    let (_, stats) = http(&w, reqwest::Method::GET, &queue, None).await;
    assert!(
        ran.is_ok(),
        "b's calls never ran: {stats}\n{}",
        w.proc.log()
    );
    bed.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(calls_of(&bed, "a"), 0, "the purged calls never ran");
}

/// Flow limits pinned, listed and unpinned over HTTP, as `queue-worker flow` does: a
/// function's and a flow key's; a misspelt field, a burst without a rate, a bad rate and a
/// route naming no single target are refused with a `400` that says why.
#[tokio::test]
async fn flow_limits_are_pinned_listed_and_unpinned_over_http() {
    let Some((bed, w)) = bed_with("admin-flow", |_, _| Reply::ok("ok"), &[]).await else {
        return;
    };
    let base = format!("/system/queues/{}/flow", bed.queue);
    let put = reqwest::Method::PUT;
    let limits = json!({"max_concurrency": 2, "rate": "5/1s", "burst": 1});
    let (code, after) = http(
        &w,
        put.clone(),
        &format!("{base}?function=echo"),
        Some(limits),
    )
    .await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after[0]["function"], "echo.openfaas-fn", "{after}");
    assert_eq!(after[0]["pinned"]["rate"], "5/1s", "{after}");
    let key = json!({"max_concurrency": 1});
    let (code, _) = http(&w, put.clone(), &format!("{base}?key=tenant-1"), Some(key)).await;
    assert_eq!(code, 200);
    let (code, listed) = http(&w, reqwest::Method::GET, &base, None).await;
    assert_eq!(code, 200);
    assert_eq!(listed[1]["key"], "tenant-1", "{listed}");
    assert_eq!(listed[1]["pinned"]["max_concurrency"], 1, "{listed}");

    let bad = [
        ("?function=echo", json!({"max_concurency": 2})),
        ("?function=echo", json!({"burst": 2})),
        ("?function=echo", json!({"rate": "5"})),
        ("?function=echo", json!({"max_concurrency": 0})),
        ("?function=echo&key=k", json!({"max_concurrency": 2})),
        ("", json!({"max_concurrency": 2})),
    ];
    for (query, body) in bad {
        let (code, answer) = http(
            &w,
            put.clone(),
            &format!("{base}{query}"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(code, 400, "{query} {body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }

    let delete = reqwest::Method::DELETE;
    let (code, after) = http(&w, delete.clone(), &format!("{base}?function=echo"), None).await;
    assert_eq!(
        (code, after.as_array().map(Vec::len)),
        (200, Some(1)),
        "{after}"
    );
    let (code, after) = http(&w, delete, &format!("{base}?key=tenant-1"), None).await;
    assert_eq!((code, after), (200, json!([])));
}
