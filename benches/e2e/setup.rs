//! What the sections share: nats-server with a file store in the run's own directory, the
//! function server, a connection to NATS, and the run's description.

use super::*;

pub(crate) async fn start(
    plan: &Plan,
    procs: &mut Procs,
    dir: &Path,
    worker_bin: PathBuf,
    nats_bin: &str,
) -> Res<Env> {
    let (port, monitor_port) = (free_port()?, free_port()?);
    let nats = Command::new(nats_bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &monitor_port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {nats_bin}: {e} (install it: apt-get install nats-server)"))?;
    let nats_pid = procs.add("nats-server", nats);
    let nats_url = format!("nats://127.0.0.1:{port}");
    let self_bin = std::env::current_exe().map_err(err("current exe"))?;
    let (fn_addr, fn_pid) = start_fn_server(procs, &self_bin)?;
    let broker = connect(&nats_url).await?;
    let js = jetstream::new(broker.client().clone());
    broker
        .ensure_stream(&StreamSpec::work_queue(QUEUE, Storage::File, 1))
        .await
        .map_err(err("stream"))?;
    let words = |k: &str, sep: char| -> Vec<String> {
        plan.opts
            .str(k, "")
            .split(sep)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Env {
        worker_bin,
        worker_prefix: words("worker-prefix", ' '),
        baseline_prefix: words("baseline-prefix", ' '),
        worker_env: words("worker-env", ','),
        self_bin,
        nats_url,
        nats_pid,
        nats_monitor: format!("http://127.0.0.1:{monitor_port}"),
        fn_addr,
        fn_pid,
        broker,
        js,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(err("http client"))?,
        cfg: Config {
            queue_name: QUEUE.into(),
            ..Config::default()
        },
    })
}

/// The function server: this binary, in its own process; its address and pid.
fn start_fn_server(procs: &mut Procs, self_bin: &Path) -> Res<(SocketAddr, u32)> {
    let (pid, line) =
        procs.spawn_announcing("fn-server", Command::new(self_bin).arg("fn-server"))?;
    let addr = line
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("fn-server said {line:?}"))?;
    Ok((addr, pid))
}

/// Connect (as `bench`, which `/connz` counts apart), retrying while nats-server starts.
async fn connect(nats_url: &str) -> Res<JetStreamBroker> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let opts = NatsOptions {
            urls: vec![nats_url.to_string()],
            name: "bench".into(),
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        match JetStreamBroker::connect(&opts, || {}).await {
            Ok(b) => return Ok(b),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Prints the run's header lines; returns the same as JSON (the summary's `context`).
pub(crate) fn describe(plan: &Plan, env: &Env, nats_bin: &str) -> Res<serde_json::Value> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("model name"))?.to_string();
            Some(line.split(':').nth(1)?.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nats_version = Command::new(nats_bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let wire_bytes = message(&env.cfg, "bench-fn", plan.body_bytes, 0)?.2.len();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# queue-worker end-to-end benchmark: {cpu} ({cores} cores), {nats_version}");
    println!(
        "# workload: {} pre-filled messages, {}-byte bodies ({wire_bytes} bytes on the wire), file store; median of {} alternating trial(s), spread (min–max) in brackets; load average at the start: {}",
        plan.messages,
        plan.body_bytes,
        plan.trials,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(serde_json::json!({
        "cpu": cpu, "cores": cores, "nats_server": nats_version, "messages": plan.messages,
        "body_bytes": plan.body_bytes, "wire_bytes": wire_bytes, "trials": plan.trials,
        "worker_env": env.worker_env, "load_average_at_start": load.trim(),
    }))
}
