//! `queue-worker dev` as a newcomer runs it: no NATS anywhere, one process, post an async
//! invocation, receive the callback.

mod common;

use std::time::Duration;

use common::http::CallbackReceiver;
use common::worker::{Worker, WorkerProcess, get_text, http_client, wait_http_ok};

const T: Duration = Duration::from_secs(20);

/// `queue-worker dev --ingress …`, ready; its ingress is the base URL of everything dev serves.
async fn start_dev() -> Worker {
    let ingress = format!("127.0.0.1:{}", common::free_port());
    let metrics_port = common::free_port();
    // A NATS URL that nothing listens on: dev must not need it.
    // A setting spelled in upper case is not read, and dev says so.
    let env = [
        ("nats_url", "nats://127.0.0.1:1".to_string()),
        ("metrics_port", metrics_port.to_string()),
        ("MAX_INFLIGHT", "7".to_string()),
    ];
    let mut proc =
        WorkerProcess::spawn(&common::worker_bin(), &["dev", "--ingress", &ingress], &env);
    proc.wait_log("Try:", T).await;
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    wait_http_ok(&format!("{metrics}/readyz"), T).await;
    Worker::new(proc, metrics, Some(format!("http://{ingress}")))
}

#[tokio::test]
async fn dev_runs_an_async_invocation_with_a_callback_end_to_end() {
    let dev = start_dev().await;
    let (base, metrics) = (dev.ingress(), &dev.metrics);
    let log = dev.proc.log();
    assert!(
        log.contains(&format!("curl -i -X POST {base}/async-function/echo")),
        "the banner tells a newcomer what to curl:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Environment variable not read")
                && l.contains("MAX_INFLIGHT")
                && l.contains("max_inflight")),
        "an upper-case setting is reported, not silently ignored:\n{log}"
    );
    let receiver = CallbackReceiver::start().await;
    let r = dev
        .post("echo")
        .header("X-Callback-Url", receiver.url("/done"))
        .header("Content-Type", "text/plain")
        .body("hello dev")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let call_id = r.headers()["x-call-id"].to_str().unwrap().to_string();
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].body_str(), "hello dev");
    assert_eq!(cbs[0].header("x-call-id"), Some(call_id.as_str()));
    assert_eq!(cbs[0].header("x-function-status"), Some("200"));
    assert_eq!(cbs[0].header("x-function-name"), Some("echo"));
    assert_eq!(cbs[0].header("content-type"), Some("text/plain"));

    // The flaky demo function fails twice with 429, then the retry succeeds; the built-in
    // callback inbox records the result.
    let r = dev
        .post("flaky?fail=2")
        .header("X-Callback-Url", format!("{base}/callback"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let flaky_id = r.headers()["x-call-id"].to_str().unwrap().to_string();
    common::eventually(T, "flaky callback in the inbox", || {
        let url = format!("{base}/callbacks");
        let id = flaky_id.clone();
        async move {
            let (_, body) = get_text(&url).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v.as_array().is_some_and(|a| {
                a.iter().any(|c| {
                    c["callId"] == id.as_str()
                        && c["status"] == 200
                        && c["retry"] == 2
                        && c["headers"]["x-call-id"][0] == id.as_str()
                        && c["body"] == "ok after 3 attempts\n"
                })
            })
        }
    })
    .await;
    let (_, text) = get_text(&format!("{metrics}/metrics")).await;
    assert!(
        text.contains("queue_worker_retries_total{queue_name=\"faas-request\",function_name=\"flaky.openfaas-fn\",code=\"429\"} 2"),
        "{text}"
    );
}

/// `queue-worker dev | head -1`: when nobody reads stdout any more, dev stops quietly
/// instead of panicking on the broken pipe.
#[test]
fn dev_stops_quietly_when_its_stdout_is_closed() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::worker_bin())
        .args([
            "dev",
            "--ingress",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .env("metrics_port", common::free_port().to_string())
        .env("nats_url", "nats://127.0.0.1:1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn queue-worker dev");
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("dev kept running with its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
}

/// `queue-worker publish` as the README first shows it, on a machine where the default NATS
/// host (`nats`) or the one given does not exist: it fails at once, says what to set, and
/// prints nothing on stdout (which holds only a call id).
#[test]
fn a_command_fails_at_once_when_the_nats_host_does_not_resolve() {
    for command in [
        &["publish", "echo", "--data", "x"][..],
        &["status", "some-id"][..],
    ] {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(common::worker_bin())
            .env_clear()
            .env("nats_url", "nats://no-such-host.invalid:4222")
            .args(command)
            .output()
            .expect("run the command");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{command:?}: stdout {:?}",
            out.stdout
        );
        assert!(
            stderr.contains("\"no-such-host.invalid\" does not resolve")
                && stderr.contains("nats_url"),
            "{command:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{command:?} took {:?}: it waited for a host that does not exist",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn dev_sleep_function_and_graceful_stop() {
    let mut dev = start_dev().await;
    let receiver = CallbackReceiver::start().await;
    let r = dev
        .post("sleep?ms=300")
        .header("X-Callback-Url", receiver.url("/cb"));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].body_str(), "slept 300 ms\n");
    let secs: f64 = cbs[0]
        .header("x-duration-seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 0.3, "{secs}");
    dev.proc.sigterm();
    let status = dev.proc.wait_exit(T).await.expect("exits");
    assert!(status.success());
}

#[tokio::test]
async fn dev_queues_a_repeated_idempotency_key_once() {
    let dev = start_dev().await;
    let receiver = CallbackReceiver::start().await;
    let mut ids = Vec::new();
    for body in ["first", "second", "third"] {
        let r = dev
            .post("echo")
            .header("Idempotency-Key", "dev-order-1")
            .header("X-Callback-Url", receiver.url("/done"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(r.headers()["x-call-id"].to_str().unwrap().to_string());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].body_str(), "first");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 1, "{:?}", receiver.requests());
}

#[tokio::test]
async fn dev_cancels_a_running_call_and_calls_back_499() {
    let dev = start_dev().await;
    let receiver = CallbackReceiver::start().await;
    let r = dev
        .post("sleep?ms=30000")
        .header("X-Callback-Url", receiver.url("/done"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.headers()["x-call-id"].to_str().unwrap().to_string();
    let status_url = format!("{}/system/calls/{id}", dev.ingress());
    let deadline = std::time::Instant::now() + T;
    while !get_text(&status_url).await.1.contains("\"running\"") {
        assert!(std::time::Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = http_client()
        .delete(format!("{}/async-function/{id}", dev.ingress()))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let cbs = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("499"));
    let (code, status) = get_text(&status_url).await;
    assert_eq!(code, 200);
    assert!(status.contains("\"cancelled\""), "{status}");
    let again = http_client()
        .delete(format!("{}/async-function/{id}", dev.ingress()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn dev_keeps_a_result_when_asked() {
    let dev = start_dev().await;
    let r = dev
        .post("echo")
        .header("X-Store-Result", "true")
        .body("kept body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.headers()["x-call-id"].to_str().unwrap().to_string();
    let url = format!("{}/system/calls/{id}/result?wait=10s", dev.ingress());
    let (code, body) = get_text(&url).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "kept body");
}

#[tokio::test]
async fn dev_runs_a_delayed_call_when_due() {
    let dev = start_dev().await;
    let receiver = CallbackReceiver::start().await;
    let posted = std::time::Instant::now();
    let r = dev
        .post("echo")
        .header("X-Delay", "2500ms")
        .header("X-Callback-Url", receiver.url("/done"))
        .body("later")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].body_str(), "later");
    assert!(cbs[0].at.duration_since(posted) >= Duration::from_millis(2500));
}

/// A body over `payload_offload_bytes` (512 KiB) goes through the embedded object store and
/// reaches the function whole: 768 KiB, whose message could not hold it (base64 makes it the
/// broker's whole 1 MiB message limit).
#[tokio::test]
async fn dev_carries_a_body_over_the_offload_threshold() {
    let dev = start_dev().await;
    let receiver = CallbackReceiver::start().await;
    let body: Vec<u8> = (0..768 * 1024)
        .map(|i: usize| b'a' + (i % 26) as u8)
        .collect();
    let r = dev
        .post("echo")
        .header("X-Callback-Url", receiver.url("/done"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let cbs = receiver.wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("200"));
    assert!(cbs[0].body == body, "echoed {} bytes", cbs[0].body.len());
}
