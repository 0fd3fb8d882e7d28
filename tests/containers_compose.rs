//! The deployment as containers, compose-style: the worker image (the binary under test in a
//! `FROM scratch` image, non-root), a NATS container and a function container
//! (`testdata/test-function`) on a private Docker network. The test posts to the worker's
//! published ingress port; the callback comes back to this process over the network's gateway.
//!
//! Also checks the deployment files that cannot be run here: `deploy/Dockerfile` (multi-stage,
//! non-root) and `deploy/grafana/dashboard.json` (only metrics the worker exports).
//!
//! Needs Docker: fails under `CI`, skips loudly otherwise.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::docker::{self, Network};
use common::http::CallbackReceiver;
use common::worker::{get_text, http_client, wait_http_ok};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::{GenericImage, ImageExt};

const T: Duration = Duration::from_secs(30);

fn docker_or_skip() -> bool {
    match docker::docker() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the container suite cannot run: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            false
        }
    }
}

#[tokio::test]
async fn worker_nats_and_function_containers_post_invoke_and_call_back() {
    if !docker_or_skip() {
        return;
    }
    let t0 = std::time::Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let (nats_image, nats_tag) = docker::nats_image().unwrap_or_else(|e| panic!("{e}"));
    let (worker_image, worker_tag) = docker::worker_image();
    let (fn_image, fn_tag) = docker::test_function_image();
    step("images ready");
    let net = Network::create("compose");
    let nats_name = format!("{}-nats", net.name);
    let fn_name = format!("{}-fn", net.name);
    let worker_name = format!("{}-worker", net.name);

    let nats_req = GenericImage::new(nats_image, nats_tag)
        .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
        .with_cmd(["-js", "-sd", "/tmp/nats"])
        .with_network(net.name.clone())
        .with_container_name(nats_name.clone())
        .with_label(docker::LABEL, "1");
    let _nats = docker::start(nats_req, &nats_name).await;
    let fn_req = GenericImage::new(fn_image, fn_tag)
        .with_wait_for(WaitFor::message_on_stderr("listening on"))
        .with_network(net.name.clone())
        .with_container_name(fn_name.clone())
        .with_label(docker::LABEL, "1");
    let _function = docker::start(fn_req, &fn_name).await;
    let queue = "compose-q";
    // `jetstream-queue-worker` is the command the OpenFaaS chart runs in its queue-worker pod.
    let worker_req = GenericImage::new(worker_image.clone(), worker_tag.clone())
        .with_entrypoint("jetstream-queue-worker")
        .with_exposed_port(8080.tcp())
        .with_exposed_port(8081.tcp())
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["run", "--ingress", "0.0.0.0:8080"])
        .with_env_var("nats_url", format!("nats://{nats_name}:4222"))
        .with_env_var("gateway_url", format!("http://{fn_name}:8080"))
        .with_env_var("queue_name", queue)
        .with_env_var("NO_COLOR", "1")
        .with_env_var("max_inflight", "4")
        .with_network(net.name.clone())
        .with_container_name(worker_name.clone())
        .with_label(docker::LABEL, "1");
    let worker = docker::start(worker_req, &worker_name).await;
    let ingress_port = worker.get_host_port_ipv4(8080.tcp()).await.expect("8080");
    let metrics_port = worker.get_host_port_ipv4(8081.tcp()).await.expect("8081");
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let ingress = format!("http://127.0.0.1:{ingress_port}");
    wait_http_ok(&format!("{metrics}/healthz"), T).await;
    wait_http_ok(&format!("{metrics}/readyz"), T).await;
    step("containers up, worker ready");

    // The image runs as a non-root user.
    let user = docker::cli_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &format!("{worker_image}:{worker_tag}"),
    ]);
    assert_eq!(user.trim(), "65532:65532", "the worker image is non-root");

    // The callback receiver listens on the network's gateway: the host as containers see it.
    let receiver = CallbackReceiver::start_on(&net.gateway()).await;
    let client = http_client();
    let mut call_ids = Vec::new();
    for i in 0..5 {
        let resp = client
            .post(format!(
                "{ingress}/async-function/echo.team-a/sub/path?i={i}"
            ))
            .header("Content-Type", "text/plain")
            .header("X-Callback-Url", receiver.url(&format!("/done/{i}")))
            .body(format!("hello from the host #{i}"))
            .send()
            .await
            .expect("post to the worker container's ingress");
        assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
        call_ids.push(resp.headers()["x-call-id"].to_str().unwrap().to_string());
    }
    let cbs = receiver.wait_for(5, T).await;
    step("callbacks received");
    let fn_host = docker::cli_ok(&["inspect", "--format", "{{.Config.Hostname}}", &fn_name]);
    for (i, id) in call_ids.iter().enumerate() {
        let cb = cbs
            .iter()
            .find(|c| c.header("x-call-id") == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no callback for {id}"));
        assert_eq!(cb.path, format!("/done/{i}"));
        assert_eq!(cb.header("x-function-status"), Some("200"));
        assert_eq!(cb.header("x-function-name"), Some("echo.team-a"));
        assert_eq!(cb.body_str(), format!("hello from the host #{i}"));
        // Served by the function container, with the function's headers passed on.
        assert_eq!(cb.header("x-served-by"), Some("test-function"));
        assert_eq!(cb.header("x-function-host"), Some(fn_host.trim()));
        assert_eq!(cb.header("content-type"), Some("text/plain"));
    }

    let (status, text) = get_text(&format!("{metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!(
            "queue_worker_messages_processed_total{{queue_name=\"{queue}\"}} 5"
        )),
        "metrics:\n{text}"
    );
    assert!(text.contains(&format!(
        "queue_worker_invocations_total{{queue_name=\"{queue}\",function_name=\"echo.team-a\",code=\"200\"}} 5"
    )));

    // `docker stop` sends SIGTERM to the worker (PID 1): it drains and exits 0.
    docker::cli_ok(&["stop", "--time", "20", &worker_name]);
    step("worker stopped");
    let code = docker::cli_ok(&["inspect", "--format", "{{.State.ExitCode}}", &worker_name]);
    assert_eq!(
        code.trim(),
        "0",
        "worker exit code; log:\n{}",
        docker::logs_tail(&worker_name, 30)
    );
    let log = docker::logs_all(&worker_name);
    for line in ["Starting", "Invoke", "Invoked", "Posted result"] {
        assert!(log.contains(line), "no {line:?} in the worker log:\n{log}");
    }
}

/// `deploy/Dockerfile` (for machines with registry access) builds in one stage and ships the
/// binary alone in a small final stage, as a non-root user, with the ports documented.
#[test]
fn deploy_dockerfile_is_multi_stage_and_non_root() {
    let text = std::fs::read_to_string(docker::repo_path("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].to_ascii_lowercase().contains(" as build"),
        "first stage named build: {}",
        froms[0]
    );
    let last = text
        .rsplit_once(froms[froms.len() - 1])
        .map(|(_, s)| s)
        .unwrap();
    let user = last
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the final stage sets USER");
    assert!(
        !matches!(user.trim(), "root" | "0" | "0:0"),
        "non-root user: {user}"
    );
    assert!(
        last.contains("COPY --from=build"),
        "final stage copies the binary"
    );
    assert!(last.contains("EXPOSE 8080 8081"));
    assert!(last.contains("ENTRYPOINT"));
}

/// Every metric the Grafana dashboard queries is one the worker registers (README: "Metrics"), and the
/// dashboard covers intake, processing, pending, in-flight, retries, dead letters and delay.
#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let path = docker::repo_path("deploy/grafana/dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 7, "panels with queries: {exprs:?}");

    // Families the worker registers: the names passed to `registry.register(` (an empty
    // family is not encoded, so the registry's output would miss most of them).
    let source = std::fs::read_to_string(docker::repo_path("src/telemetry/metrics.rs")).unwrap();
    let families: BTreeSet<String> = source
        .split("register(")
        .skip(1)
        .filter_map(|s| s.split('"').nth(1))
        .filter(|n| n.starts_with("queue_worker_"))
        .map(str::to_string)
        .collect();
    assert!(
        families.contains("queue_worker_pending_messages") && families.len() >= 10,
        "{families:?}"
    );

    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            let family = ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
                .map(str::to_string)
                .unwrap_or_else(|| name.clone());
            assert!(
                families.contains(&family),
                "dashboard query uses {name}, which the worker does not export; exported: {families:?}"
            );
            used.insert(family);
        }
    }
    for needed in [
        "queue_worker_messages_submitted_total",
        "queue_worker_messages_processed",
        "queue_worker_pending_messages",
        "queue_worker_function_invocation_inflight",
        "queue_worker_retries",
        "queue_worker_dead_letters",
        "queue_worker_queue_delay_seconds",
    ] {
        assert!(
            used.contains(needed),
            "no panel for {needed}; used: {used:?}"
        );
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `queue_worker_…` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("queue_worker_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
