//! The orchestrator: `run` starts everything, measures each section and prints the table.

use super::*;

pub(crate) async fn run(o: Opts) -> Res<()> {
    let quick = o.flag("quick");
    let messages: usize = o.num("messages", if quick { 10_000 } else { 100_000 });
    let trials: usize = o.num("trials", if quick { 1 } else { 3 });
    let body_bytes: usize = o.num("body-bytes", 512);
    let concurrencies: Vec<usize> = o
        .str("concurrency", "64,256")
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let sections = o.str("sections", "throughput,latency,ingress,rss");
    let has = |s: &str| sections.split(',').any(|x| x.trim() == s);
    let worker_bin = PathBuf::from(o.str("worker", "target/release/queue-worker"));
    if !worker_bin.exists() {
        return Err(format!("no worker binary at {}", worker_bin.display()));
    }
    let self_bin = std::env::current_exe().map_err(err("current exe"))?;
    let nats_bin = o.str("nats-server", "nats-server");

    let dir = tempdir()?;
    let mut procs = Procs::default();
    let result = run_in(
        &o,
        &mut procs,
        &dir,
        quick,
        messages,
        trials,
        body_bytes,
        &concurrencies,
        &has,
        worker_bin,
        self_bin,
        &nats_bin,
    )
    .await;
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub(crate) fn tempdir() -> Res<PathBuf> {
    let d = std::env::temp_dir().join(format!("qw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(err("temp dir"))?;
    Ok(d)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_in(
    o: &Opts,
    procs: &mut Procs,
    dir: &Path,
    quick: bool,
    messages: usize,
    trials: usize,
    body_bytes: usize,
    concurrencies: &[usize],
    has: &dyn Fn(&str) -> bool,
    worker_bin: PathBuf,
    self_bin: PathBuf,
    nats_bin: &str,
) -> Res<()> {
    // nats-server: file store in our temp dir, loopback only.
    let port = free_port()?;
    let monitor_port = free_port()?;
    let nats = Command::new(nats_bin)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor_port.to_string(),
        ])
        .args(["-js", "-sd"])
        .arg(dir.join("js"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {nats_bin}: {e} (install it: apt-get install nats-server)"))?;
    let nats_pid = procs.add("nats-server", nats);
    let nats_url = format!("nats://127.0.0.1:{port}");

    // The function server: this binary, in its own process.
    let mut f = Command::new(&self_bin)
        .arg("fn-server")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(err("start the function server"))?;
    let out = f.stdout.take().ok_or("fn-server stdout")?;
    let fn_pid = procs.add("fn-server", f);
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(err("fn-server"))?;
    let fn_addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("fn-server said {line:?}"))?;

    let broker = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let opts = NatsOptions {
                urls: vec![nats_url.clone()],
                name: "bench".into(),
                request_timeout: Duration::from_secs(10),
                publish_timeout: Duration::from_secs(10),
                ..Default::default()
            };
            match JetStreamBroker::connect(&opts, || {}).await {
                Ok(b) => break b,
                Err(e) if Instant::now() > deadline => return Err(e.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    let js = jetstream::new(broker.client().clone());
    let cfg = Config {
        queue_name: QUEUE.into(),
        ..Config::default()
    };
    broker
        .ensure_stream(&StreamSpec::work_queue(QUEUE, Storage::File, 1))
        .await
        .map_err(err("stream"))?;
    let env = Env {
        worker_bin,
        worker_prefix: o
            .str("worker-prefix", "")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        baseline_prefix: o
            .str("baseline-prefix", "")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        worker_env: o
            .str("worker-env", "")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
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
        cfg,
    };
    let _ = &env.broker;

    println!(
        "# queue-worker end-to-end benchmark: {} ({} cores), {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string()))
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(
            &Command::new(nats_bin)
                .arg("--version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .trim()
    );
    println!(
        "# workload: {messages} pre-filled messages, {body_bytes}-byte bodies ({} bytes on the wire), file store; best of {trials} trial(s)",
        message(&env.cfg, "bench-fn", body_bytes, 0)?.2.len()
    );

    let mut ratio_at_max = None;
    let mut worker_max_rate: f64 = 0.0;
    if has("throughput") {
        println!();
        println!(
            "| concurrency | baseline msg/s | worker msg/s | ratio | CPU µs/msg baseline / worker | nats-server µs/msg (b / w) | function µs/msg (b / w) | requests to NATS per msg besides the ack (b / w) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &c in concurrencies {
            let mut b_runs = Vec::new();
            let mut w_runs = Vec::new();
            for _ in 0..trials {
                // Baseline.
                env.fill(STREAM, "bench-fn", messages, body_bytes).await?;
                create_consumer(&env.js, BASELINE_CONSUMER).await?;
                let pid = env.start_baseline(procs, c)?;
                let d = env.drain(pid, Duration::from_secs(180)).await;
                procs.stop(pid, Duration::from_secs(2));
                env.delete_consumer(BASELINE_CONSUMER).await;
                b_runs.push(d?);
                // Worker.
                env.fill(STREAM, "bench-fn", messages, body_bytes).await?;
                let pid = env.start_worker(procs, c, &[], &[]).await?;
                let d = env.drain(pid, Duration::from_secs(180)).await;
                procs.stop(pid, Duration::from_secs(10));
                env.delete_consumer(WORKER_CONSUMER).await;
                w_runs.push(d?);
                let conns = env.fn_stats(false).await?.get(5).copied().unwrap_or(0);
                eprintln!(
                    "  c={c}: baseline {:.0}/s, worker {:.0}/s ({conns} connections to the function so far)",
                    b_runs.last().map_or(0.0, |d| d.rate),
                    w_runs.last().map_or(0.0, |d| d.rate)
                );
            }
            let (b, w) = (best(&b_runs), best(&w_runs));
            let ratio = w.rate / b.rate;
            println!(
                "| {c} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.3} / {:.3} |",
                b.rate,
                w.rate,
                ratio,
                b.cpu_us[0],
                w.cpu_us[0],
                b.cpu_us[1],
                w.cpu_us[1],
                b.cpu_us[2],
                w.cpu_us[2],
                b.requests_per_msg,
                w.requests_per_msg
            );
            ratio_at_max = Some(ratio);
            worker_max_rate = w.rate;
        }
    }

    if has("latency") {
        // Queue delay at a steady rate published through the ingress: half the worker's
        // maximum rate (as measured above), and a quarter of it. The ingress, its HTTP client
        // (this driver), nats-server, the worker and the function share the two cores, so the
        // higher rate can be more than the machine absorbs: the "accepted/s" and the delays say
        // so when it is.
        let c = *concurrencies.last().unwrap_or(&256);
        let max_rate = if worker_max_rate > 0.0 {
            worker_max_rate
        } else {
            o.num("latency-max-rate", 10_000.0)
        };
        let fractions: Vec<f64> = o
            .str("latency-fractions", "0.5,0.25")
            .split(',')
            .filter_map(|f| f.trim().parse().ok())
            .collect();
        let secs: f64 = o.num("latency-seconds", if quick { 3.0 } else { 10.0 });
        println!();
        for fraction in fractions {
            let rate = (max_rate * fraction).round().max(1.0);
            let ingress_port = free_port()?;
            let ingress = format!("127.0.0.1:{ingress_port}");
            let pid = env
                .start_worker(procs, c, &[], &["run", "--ingress", &ingress])
                .await?;
            env.fn_stats(true).await?;
            let sent = steady_posts(&env.http, &ingress, rate, secs, body_bytes).await?;
            // Let the last ones through.
            let deadline = Instant::now() + Duration::from_secs(30);
            let stats = loop {
                let s = env.fn_stats(false).await?;
                if s.first().copied().unwrap_or(0) >= sent.accepted || Instant::now() > deadline {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            env.http
                .post(format!("http://{}/stats/stop", env.fn_addr))
                .send()
                .await
                .map_err(err("stats"))?;
            procs.stop(pid, Duration::from_secs(10));
            env.delete_consumer(WORKER_CONSUMER).await;
            env.purge(STREAM).await?;
            let g = |i: usize| stats.get(i).copied().unwrap_or(0) as f64 / 1000.0;
            println!(
                "queue delay (enqueue → first attempt) at {rate:.0} msg/s offered through the ingress ({:.0}% of the worker's rate; {:.0} accepted/s, {} accepted, {} refused, {} seen by the function), max_inflight={c}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                fraction * 100.0,
                sent.accepted as f64 / sent.seconds,
                sent.accepted,
                sent.refused,
                stats.first().copied().unwrap_or(0),
                g(1),
                g(2),
                g(3)
            );
        }
    }

    if has("ingress") {
        // Ingress (POST → 202 after the PubAck) against a bare async-nats publisher, both into
        // a stream the worker does not read.
        let n: usize = o.num("ingress-requests", if quick { 5_000 } else { 30_000 });
        let conc: usize = o.num("ingress-concurrency", 64);
        env.broker
            .ensure_stream(&StreamSpec::work_queue(INGRESS_QUEUE, Storage::File, 1))
            .await
            .map_err(err("stream"))?;
        let ingress_port = free_port()?;
        let ingress = format!("127.0.0.1:{ingress_port}");
        let pid = env
            .start_worker(
                procs,
                1,
                &[("function_queues", format!("bench-ingress={INGRESS_QUEUE}"))],
                &["run", "--ingress", &ingress],
            )
            .await?;
        let t = Instant::now();
        let c0 = [cpu_time(pid), cpu_time(env.nats_pid)];
        let accepted = closed_posts(&env.http, &ingress, n, conc, body_bytes).await?;
        let ingress_rate = accepted as f64 / t.elapsed().as_secs_f64();
        let ingress_cpu = (cpu_time(pid) - c0[0]).as_secs_f64() * 1e6 / accepted.max(1) as f64;
        procs.stop(pid, Duration::from_secs(10));
        env.purge(&format!("OF_{INGRESS_QUEUE}")).await?;
        let t = Instant::now();
        let published = bare_publish(&env.js, &env.cfg, n, conc, body_bytes).await?;
        let bare_rate = published as f64 / t.elapsed().as_secs_f64();
        env.purge(&format!("OF_{INGRESS_QUEUE}")).await?;
        println!();
        println!(
            "ingress: {ingress_rate:.0} accepted requests/s ({accepted} × POST → 202 after PubAck, {conc} connections, {:.1} CPU µs/request in the ingress process); bare async-nats publisher: {bare_rate:.0} msg/s ({conc} publishes in flight, same messages); ratio {:.2}",
            ingress_cpu,
            ingress_rate / bare_rate
        );
    }

    if has("rss") {
        // Peak RSS with max_inflight=1024 and 64 KiB bodies; the function takes 250 ms so all
        // 1024 slots fill.
        let n: usize = o.num("rss-messages", if quick { 2048 } else { 4096 });
        let big = 64 * 1024;
        env.fill(STREAM, &format!("{SLEEP_PREFIX}-fn"), n, big)
            .await?;
        let pid = env.start_worker(procs, 1024, &[], &[]).await?;
        env.drain(pid, Duration::from_secs(180)).await?;
        let rss = peak_rss_kib(pid);
        procs.stop(pid, Duration::from_secs(10));
        env.delete_consumer(WORKER_CONSUMER).await;
        // The same for the baseline, for scale.
        env.fill(STREAM, &format!("{SLEEP_PREFIX}-fn"), n, big)
            .await?;
        create_consumer(&env.js, BASELINE_CONSUMER).await?;
        let bpid = Command::new(&env.self_bin)
            .args([
                "baseline",
                "--nats",
                &env.nats_url,
                "--concurrency",
                "1024",
                "--url",
                &format!("http://{}/function/{SLEEP_PREFIX}-fn", env.fn_addr),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(err("start baseline"))?;
        let bpid = procs.add("baseline", bpid);
        env.drain(bpid, Duration::from_secs(180)).await?;
        let brss = peak_rss_kib(bpid);
        procs.stop(bpid, Duration::from_secs(2));
        env.delete_consumer(BASELINE_CONSUMER).await;
        println!();
        println!(
            "peak RSS, max_inflight=1024, {n} messages with 64 KiB bodies, 250 ms function: worker {:.1} MiB (baseline loop {:.1} MiB)",
            rss as f64 / 1024.0,
            brss as f64 / 1024.0
        );
    }

    if has("scale") {
        scale(o, procs, &env, quick, body_bytes).await?;
    }

    match ratio_at_max {
        Some(r) => {
            println!();
            println!("throughput-ratio: {r:.2}");
        }
        None => println!("throughput-ratio: n/a (throughput section not run)"),
    }
    Ok(())
}

pub(crate) async fn create_consumer(js: &jetstream::Context, name: &str) -> Res<()> {
    let s = js.get_stream(STREAM).await.map_err(err("get stream"))?;
    s.create_consumer(pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        max_deliver: -1,
        max_ack_pending: -1,
        ..Default::default()
    })
    .await
    .map_err(err("create consumer"))?;
    Ok(())
}

pub(crate) struct Sent {
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) seconds: f64,
}

/// POST to the ingress at a steady rate (open loop: request `i` starts at `i / rate`), for
/// `secs` seconds.
pub(crate) async fn steady_posts(
    http: &reqwest::Client,
    ingress: &str,
    rate: f64,
    secs: f64,
    body_bytes: usize,
) -> Res<Sent> {
    let total = (rate * secs) as u64;
    let url = format!("http://{ingress}/async-function/bench-fn");
    let body = Bytes::from(vec![b'x'; body_bytes]);
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(tokio::sync::Semaphore::new(2048));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tasks.spawn(async move {
            let ok = matches!(
                http.post(&url).body(body).timeout(Duration::from_secs(10)).send().await,
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED
            );
            if ok { &accepted } else { &refused }.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(Sent {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `n` POSTs to the ingress with `conc` in flight (closed loop); returns the 202s.
pub(crate) async fn closed_posts(
    http: &reqwest::Client,
    ingress: &str,
    n: usize,
    conc: usize,
    body_bytes: usize,
) -> Res<u64> {
    let url = format!("http://{ingress}/async-function/bench-ingress");
    let body = Bytes::from(vec![b'x'; body_bytes]);
    let ok = futures::stream::iter(0..n)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                matches!(
                    http.post(&url).body(body).timeout(Duration::from_secs(10)).send().await,
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED
                )
            }
        })
        .buffer_unordered(conc)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    Ok(ok as u64)
}

/// The bare publisher: `n` messages (as the ingress would build them) with `conc` publishes
/// waiting for their PubAck at a time.
pub(crate) async fn bare_publish(
    js: &jetstream::Context,
    cfg: &Config,
    n: usize,
    conc: usize,
    body_bytes: usize,
) -> Res<u64> {
    let mut cfg = cfg.clone();
    cfg.function_queues
        .insert("bench-ingress".into(), INGRESS_QUEUE.into());
    let ok = futures::stream::iter(0..n)
        .map(|i| {
            let js = js.clone();
            let m = message(&cfg, "bench-ingress", body_bytes, i);
            async move {
                match m {
                    Ok(m) => publish_acked(&js, m).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(conc)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    Ok(ok as u64)
}
