//! Security against a real nats-server, through the real binary: the ingress takes only
//! callers with credentials (basic auth or a bearer token, re-read when rotated), metrics stay
//! open on their own address, callbacks go only where `callback_allowed_hosts` allows (at the
//! ingress and at the worker, after DNS), neither functions nor callbacks follow redirects,
//! callbacks are signed so that the Standard Webhooks library verifies them, and no secret of
//! a URL, a header or a body reaches the logs.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::bed::{Bed, TestBed};
use common::calls::bed_with;
use common::http::{Recorded, Reply};
use common::worker::{Worker, WorkerProcess, get_text, wait_http_ok};

const T: Duration = Duration::from_secs(20);

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Writes the OpenFaaS basic-auth secrets and a token file into `dir`.
fn write_secrets(dir: &Path, token: &str) {
    std::fs::write(dir.join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(dir.join("basic-auth-password"), "pa:ss word\n").unwrap();
    std::fs::write(dir.join("api-token"), format!("{token}\n")).unwrap();
}

/// The status of a POST to the ingress with `authorization` (if any), and its
/// `WWW-Authenticate` values.
async fn post_with(w: &Worker, authorization: Option<&str>) -> (u16, Vec<String>) {
    let mut req = w.post("fn").body("hello");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("ingress answers");
    let challenges = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (resp.status().as_u16(), challenges)
}

#[tokio::test]
async fn the_ingress_takes_only_callers_with_credentials_of_either_kind() {
    let secrets = tempfile::tempdir().unwrap();
    write_secrets(secrets.path(), "token-one");
    let Some(bed) = Bed::new("auth").start_without_worker().await else {
        return;
    };
    let token_file = secrets.path().join("api-token");
    let w = bed
        .worker()
        .ingress()
        .envs(&[
            ("basic_auth", "true"),
            ("secret_mount_path", secrets.path().to_str().unwrap()),
            ("api_token_file", token_file.to_str().unwrap()),
        ])
        .start()
        .await;

    let (status, challenges) = post_with(&w, None).await;
    assert_eq!(status, 401);
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer realm=")),
        "{challenges:?}"
    );
    for wrong in [
        basic("admin", "pa:ss wor"),
        basic("admin", "pa:ss word "),
        basic("Admin", "pa:ss word"),
        "Bearer token-on".to_string(),
        "Bearer token-one2".to_string(),
        "Basic not-base64!".to_string(),
        "token-one".to_string(),
    ] {
        assert_eq!(post_with(&w, Some(&wrong)).await.0, 401, "{wrong}");
    }
    assert_eq!(
        post_with(&w, Some(&basic("admin", "pa:ss word"))).await.0,
        202
    );
    assert_eq!(post_with(&w, Some("Bearer token-one")).await.0, 202);
    // Health on the ingress and everything on the metrics address stay open.
    assert_eq!(get_text(&format!("{}/healthz", w.ingress())).await.0, 200);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get_text(&format!("{}{path}", w.metrics)).await.0,
            200,
            "{path}"
        );
    }
    bed.function.wait_for(2, T).await;

    // Rotated as Kubernetes does it: a new file put in place of the old one.
    let next = secrets.path().join("api-token.next");
    std::fs::write(&next, "token-two\n").unwrap();
    std::fs::rename(&next, &token_file).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while post_with(&w, Some("Bearer token-two")).await.0 != 202 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new token is never taken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(post_with(&w, Some("Bearer token-one")).await.0, 401);
    assert!(
        !w.proc.log().contains("token-one") && !w.proc.log().contains("pa:ss"),
        "no secret in the log"
    );
    assert_eq!(bed.function.wait_for(3, T).await.len(), 3);
}

/// `queue-worker run` with `env` and `args` on the bed's NATS and queue.
fn spawn(bed: &TestBed, args: &[&str], env: &[(&str, String)]) -> WorkerProcess {
    let mut all = vec![
        ("nats_url", bed.nats.url()),
        ("queue_name", bed.queue.clone()),
        ("gateway_url", bed.function.base_url()),
    ];
    all.extend(env.iter().cloned());
    WorkerProcess::spawn(&common::worker_bin(), args, &all)
}

#[tokio::test]
async fn missing_secrets_stop_the_start_and_an_open_ingress_on_all_interfaces_is_warned_of() {
    let Some(bed) = Bed::new("authstart").start_without_worker().await else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let ingress = format!("127.0.0.1:{}", common::free_port());
    let mut p = spawn(
        &bed,
        &["run", "--ingress", &ingress],
        &[
            ("basic_auth", "true".into()),
            ("secret_mount_path", empty.path().display().to_string()),
            ("metrics_port", common::free_port().to_string()),
        ],
    );
    let status = p.wait_exit(Duration::from_secs(15)).await.expect("exits");
    assert_eq!(status.code(), Some(2), "{}", p.log());
    assert!(p.log().contains("basic-auth-user"), "{}", p.log());

    // A signing secret without its prefix.
    let bad = empty.path().join("signing");
    std::fs::write(&bad, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let mut p = spawn(
        &bed,
        &["run"],
        &[
            ("callback_signing_secret_file", bad.display().to_string()),
            ("metrics_port", common::free_port().to_string()),
        ],
    );
    let status = p.wait_exit(Duration::from_secs(15)).await.expect("exits");
    assert_eq!(status.code(), Some(2), "{}", p.log());
    assert!(
        p.log().contains("callback_signing_secret_file"),
        "{}",
        p.log()
    );
    assert!(
        !p.log().contains("MfKQ9r8G"),
        "the secret is not repeated: {}",
        p.log()
    );

    // No credentials, the ingress on every interface, metrics on their own address.
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let ingress = format!("0.0.0.0:{}", common::free_port());
    let mut p = spawn(
        &bed,
        &["run", "--ingress", &ingress],
        &[
            ("metrics_port", common::free_port().to_string()),
            ("metrics_addr", metrics.clone()),
        ],
    );
    wait_http_ok(&format!("http://{metrics}/readyz"), T).await;
    p.wait_log("accepts calls from anyone", T).await;
    p.kill();
}

#[tokio::test]
async fn a_redirect_from_a_function_is_its_answer_and_is_not_followed() {
    let target = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let to = target.clone();
    let Some((bed, w)) = bed_with(
        "redirect",
        move |_, _| Reply::status(302).with_header("location", to.lock().unwrap().clone()),
        &[],
    )
    .await
    else {
        return;
    };
    // The worker's own metrics page: what an attacker would want to read.
    *target.lock().unwrap() = format!("{}/metrics", w.metrics);
    let resp = w
        .post("fn")
        .header("x-callback-url", bed.callback_url("/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs[0].header("x-function-status"), Some("302"));
    assert!(
        !cbs[0].body_str().contains("queue_worker_"),
        "{}",
        cbs[0].body_str()
    );
    assert_eq!(bed.function.count(), 1);
}

/// A message published straight to the queue (no ingress) with `callback`.
async fn publish_direct(bed: &TestBed, id: &str, callback: &str) {
    let msg = serde_json::json!({
        "Header": {"X-Call-Id": [id], "X-Callback-Url": [callback]},
        "Method": "POST",
        "Function": "fn",
    });
    bed.publish_to("fn.openfaas-fn", serde_json::to_vec(&msg).unwrap())
        .await;
}

async fn refused_count(w: &Worker, queue: &str) -> f64 {
    w.metric(&format!(
        "queue_worker_callbacks_total{{queue_name=\"{queue}\",outcome=\"refused\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

async fn wait_refused(w: &Worker, queue: &str, n: f64) {
    let deadline = std::time::Instant::now() + T;
    while refused_count(w, queue).await < n {
        assert!(std::time::Instant::now() < deadline, "{}", w.proc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The callback receiver's URL for `path` with the host name `localhost` (not its IP).
fn by_name(bed: &TestBed, path: &str) -> String {
    let port = url::Url::parse(&bed.callback_url("/"))
        .unwrap()
        .port()
        .unwrap();
    format!("http://localhost:{port}{path}")
}

#[tokio::test]
async fn callbacks_go_only_to_allowed_hosts_checked_after_dns() {
    let Some((bed, mut w)) = bed_with(
        "allowed",
        |_, _| Reply::ok("done"),
        &[("callback_allowed_hosts", "localhost")],
    )
    .await
    else {
        return;
    };
    let post = |callback: String| w.post("fn").header("x-callback-url", callback).send();
    // Refused at the ingress, with the reason.
    for bad in [
        format!("{}/metrics", w.metrics),
        bed.callback_url("/by-ip"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://evil.example/".to_string(),
    ] {
        let resp = post(bad.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("callback_allowed_hosts"), "{bad}: {text}");
    }
    // Allowed by name: resolved, connected, delivered.
    let good = by_name(&bed, "/named");
    assert_eq!(post(good).await.unwrap().status(), 202);
    let cbs = bed.receiver().wait_for(1, T).await;
    assert_eq!(cbs[0].path, "/named");

    // Published without the ingress: the worker refuses, sends nothing, says so.
    publish_direct(&bed, "direct-ip", &bed.callback_url("/direct")).await;
    wait_refused(&w, &bed.queue, 1.0).await;
    w.proc.wait_log("Callback refused", T).await;
    assert_eq!(
        bed.function.wait_for(2, T).await.len(),
        2,
        "the call itself ran"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bed.receiver().count(), 1, "nothing sent to a refused host");
}

#[tokio::test]
async fn a_name_is_refused_when_it_resolves_outside_the_allowed_ranges() {
    // Only a range is listed: a name must resolve into it (localhost does not).
    let Some((bed, w)) = bed_with(
        "ranges",
        |_, _| Reply::ok("done"),
        &[("callback_allowed_hosts", "10.0.0.0/8")],
    )
    .await
    else {
        return;
    };
    let url = by_name(&bed, "/resolved");
    let resp = w
        .post("fn")
        .header("x-callback-url", &url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("none of them allowed"));
    // Past the ingress, the worker's resolver refuses the same name.
    publish_direct(&bed, "direct-name", &url).await;
    wait_refused(&w, &bed.queue, 1.0).await;
    assert_eq!(bed.receiver().count(), 0);
}

#[tokio::test]
async fn link_local_addresses_are_refused_by_default() {
    let Some((bed, w)) = bed_with("guarded", |_, _| Reply::ok("done"), &[]).await else {
        return;
    };
    let resp = w
        .post("fn")
        .header("x-callback-url", "http://169.254.169.254/latest/meta-data")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    publish_direct(&bed, "metadata", "http://[fe80::1]:80/x").await;
    wait_refused(&w, &bed.queue, 1.0).await;
    // Any other host is allowed without a list.
    let resp = w
        .post("fn")
        .header("x-callback-url", bed.callback_url("/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(bed.receiver().wait_for(1, T).await[0].path, "/open");
}

/// Verifies `cb` with the Standard Webhooks library from PyPI and `secret`: `Ok` or the
/// library's error.
fn verify_with_library(cb: &Recorded, body: &[u8], secret: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), cb.header(h).unwrap_or("").into()))
            .collect();
    std::fs::write(
        dir.path().join("headers.json"),
        serde_json::to_vec(&headers).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("body"), body).unwrap();
    let script = "import json,sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        d=sys.argv[1]\n\
        h=json.load(open(d+'/headers.json'))\n\
        b=open(d+'/body','rb').read()\n\
        Webhook(sys.argv[2]).verify(b, h)\n\
        print('verified')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, dir.path().to_str().unwrap(), secret])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("verified") {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test]
async fn signed_callbacks_verify_with_the_standard_webhooks_library_for_each_secret() {
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("callback-secret");
    std::fs::write(&file, format!("{old}\n{new}\n")).unwrap();
    let Some((bed, w)) = bed_with(
        "signed",
        |_, _| Reply::ok(r#"{"result": "done"}"#).with_header("webhook-signature", "v1,forged"),
        &[("callback_signing_secret_file", file.to_str().unwrap())],
    )
    .await
    else {
        return;
    };
    let resp = w
        .post("fn")
        .header("x-call-id", "signed-1")
        .header("x-callback-url", bed.callback_url("/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let cb = bed.receiver().wait_for(1, T).await.remove(0);
    assert_eq!(cb.header("webhook-id"), Some("signed-1"));
    assert_eq!(cb.header_all("webhook-signature").len(), 1);
    for secret in [old, new.as_str()] {
        verify_with_library(&cb, &cb.body, secret).unwrap_or_else(|e| panic!("{secret}: {e}"));
    }
    // The library can say no: another body, another secret.
    assert!(verify_with_library(&cb, b"{\"result\": \"forged\"}", old).is_err());
    let other = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    );
    assert!(verify_with_library(&cb, &cb.body, &other).is_err());
}

#[tokio::test]
async fn no_secret_of_a_url_a_header_or_a_body_reaches_the_logs() {
    let Some(bed) = Bed::new("logs").start_without_worker().await else {
        return;
    };
    // Nothing listens on the function's or the callback's port: every exchange fails, and the
    // errors are logged.
    let closed = common::free_port();
    let mut w = bed
        .worker()
        .ingress()
        .gateway(&format!("http://127.0.0.1:{closed}"))
        .envs(&[
            ("debug", "true"),
            ("max_retry_attempts", "2"),
            ("initial_retry_wait", "100ms"),
            ("max_retry_wait", "200ms"),
            ("callback_retries", "1"),
        ])
        .start()
        .await;
    let resp = w
        .post("fn?api_key=SECRET-QUERY")
        .header("authorization", "Bearer SECRET-HEADER")
        .header("x-api-key", "SECRET-HEADER2")
        .header(
            "x-callback-url",
            format!("http://user:SECRET-PASSWORD@127.0.0.1:{closed}/cb?token=SECRET-TOKEN"),
        )
        .body("SECRET-BODY")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // A 30 KB callback URL, past the ingress's header limit: published directly.
    let long = format!(
        "http://127.0.0.1:{closed}/{}?token=SECRET-LONG",
        "a".repeat(30_000)
    );
    publish_direct(&bed, "long-url", &long).await;
    let p = &mut w.proc;
    p.wait_log("Callback failed", T).await;
    let deadline = std::time::Instant::now() + T;
    while p.log().matches("Callback failed").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", p.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = p.log();
    assert!(
        log.contains("connection failed") || log.contains("Connect"),
        "errors were logged:\n{log}"
    );
    for secret in [
        "SECRET-QUERY",
        "SECRET-HEADER",
        "SECRET-PASSWORD",
        "SECRET-TOKEN",
        "SECRET-BODY",
        "SECRET-LONG",
    ] {
        let line = log.lines().find(|l| l.contains(secret));
        assert!(
            line.is_none(),
            "{secret} logged: {}",
            line.unwrap_or_default()
        );
    }
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4_096, "a log line of {longest} bytes");
    p.kill();
}
