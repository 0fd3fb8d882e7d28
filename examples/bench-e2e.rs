//! The end-to-end benchmark behind `ci/bench` (see `docs/performance.md`).
//!
//! ```text
//! bench-e2e run --worker target/release/queue-worker [--messages 100000] [--concurrency 64,256]
//!               [--trials 3] [--sections throughput,latency,ingress,rss,scale] [--quick]
//!               [--latency-fractions 0.5,0.25] [--scale-functions 1000] [--scale-messages 50]
//!               [--worker-env K=V,..] [--worker-prefix CMD] [--baseline-prefix CMD]
//! bench-e2e fn-server [ADDR]           # the HTTP function (used by `run`)
//! bench-e2e baseline --nats URL ...    # the bare async-nats + reqwest loop (used by `run`)
//! ```
//!
//! `run` starts everything it needs on loopback (a nats-server with a file store in its own
//! temporary directory, the function server, the baseline, the worker binary), measures, prints
//! a table and, last, `throughput-ratio: <worker/baseline>` at the highest concurrency. Every wait
//! is bounded; every process it starts is stopped on the way out.
//!
//! Throughput is measured on a pre-filled stream: from the first message acknowledged (the work
//! queue shrinks) to the stream being empty, by polling the stream's message count. CPU time per
//! message of each process comes from `/proc/<pid>/stat` over the same window. Baseline and
//! worker trials alternate and the best of each is kept (on a shared machine, other work only
//! ever slows a trial down). `--worker-prefix "valgrind --tool=callgrind"` or `"perf record -g
//! --"` profiles the worker in place; `--worker-env RUST_LOG=warn` tries a variation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use queue_worker::broker::jetstream::{JetStreamBroker, NatsOptions};
use queue_worker::broker::{Admin, StreamSpec};
use queue_worker::clock::SystemClock;
use queue_worker::config::{Config, Storage};
use queue_worker::ingress::{Submission, prepare};

const QUEUE: &str = "faas-request";
const STREAM: &str = "OF_faas-request";
const BASELINE_CONSUMER: &str = "bench-baseline";
const WORKER_CONSUMER: &str = "faas-request-workers";
/// The queue the ingress benchmark publishes to (the worker does not serve it).
const INGRESS_QUEUE: &str = "ingress-bench";
/// Functions whose name starts with this sleep before answering (the memory benchmark).
const SLEEP_PREFIX: &str = "bench-sleep";
const SLEEP: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r.to_vec()),
        None => ("run", Vec::new()),
    };
    queue_worker::invoke::http::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cmd {
        "run" => rt.block_on(run(Opts::parse(&rest))),
        "fn-server" => rt.block_on(fn_server(rest.first().cloned())),
        "baseline" => rt.block_on(baseline(Opts::parse(&rest))),
        other => Err(format!(
            "unknown command {other:?}: use run, fn-server or baseline"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-e2e: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `--key value` options (and bare `--flag`s).
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut m = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            if let Some(k) = args[i].strip_prefix("--") {
                if let Some((k, v)) = k.split_once('=') {
                    m.insert(k.to_string(), v.to_string());
                } else if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                    m.insert(k.to_string(), args[i + 1].clone());
                    i += 1;
                } else {
                    m.insert(k.to_string(), "true".to_string());
                }
            }
            i += 1;
        }
        Opts(m)
    }
    fn str(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> T {
        self.0.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
    }
    fn flag(&self, k: &str) -> bool {
        self.0.get(k).is_some_and(|v| v != "false")
    }
}

// ---------------------------------------------------------------------------------------------
// The function server
// ---------------------------------------------------------------------------------------------

/// Queue delays (enqueue → request received) seen by the function server, in microseconds.
#[derive(Default)]
struct FnStats {
    /// Recording queue delays: only while the latency section runs, so the function does the
    /// same work for the baseline and the worker during the throughput runs.
    recording: std::sync::atomic::AtomicBool,
    delays_us: Mutex<Vec<u64>>,
    requests: AtomicU64,
    connections: AtomicU64,
}

/// A minimal HTTP/1.1 function: `POST /function/<name>` → `200 ok`; names starting with
/// `bench-sleep` answer after 250 ms. Every request with `X-Start-Time` (unix ns, set by the
/// ingress) records its queue delay while recording is on; `POST /stats/reset` clears the
/// record and turns recording on, `POST /stats/stop` turns it off, `GET /stats` gives
/// `count p50 p99 max requests connections` (µs). Prints `listening <addr>` once bound.
async fn fn_server(addr: Option<String>) -> Res<()> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:0"))
        .await
        .map_err(err("bind"))?;
    println!("listening {}", listener.local_addr().map_err(err("addr"))?);
    let stats = Arc::new(FnStats::default());
    loop {
        let (conn, _) = listener.accept().await.map_err(err("accept"))?;
        let _ = conn.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let stats = stats.clone();
                async move { Ok::<_, std::convert::Infallible>(serve_fn(&stats, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .await;
        });
    }
}

async fn serve_fn(
    stats: &FnStats,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let received = unix_ns();
    let path = req.uri().path().to_string();
    let text = |s: String| hyper::Response::new(Full::new(Bytes::from(s)));
    if path == "/stats/stop" {
        stats.recording.store(false, Ordering::SeqCst);
        return text("ok\n".into());
    }
    if path == "/stats" {
        let mut d = stats.delays_us.lock().unwrap().clone();
        d.sort_unstable();
        let q = |p: f64| {
            if d.is_empty() {
                0
            } else {
                d[((d.len() - 1) as f64 * p).round() as usize]
            }
        };
        return text(format!(
            "{} {} {} {} {} {}\n",
            d.len(),
            q(0.5),
            q(0.99),
            d.last().copied().unwrap_or(0),
            stats.requests.load(Ordering::Relaxed),
            stats.connections.load(Ordering::Relaxed)
        ));
    }
    if path == "/stats/reset" {
        stats.delays_us.lock().unwrap().clear();
        stats.requests.store(0, Ordering::Relaxed);
        stats.recording.store(true, Ordering::SeqCst);
        return text("ok\n".into());
    }
    let start = if stats.recording.load(Ordering::Relaxed) {
        req.headers()
            .get("x-start-time")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u128>().ok())
    } else {
        None
    };
    let _ = req.into_body().collect().await;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(start) = start {
        let us = received.saturating_sub(start) / 1000;
        stats.delays_us.lock().unwrap().push(us as u64);
    }
    if path
        .strip_prefix("/function/")
        .is_some_and(|f| f.starts_with(SLEEP_PREFIX))
    {
        tokio::time::sleep(SLEEP).await;
    }
    text("ok\n".into())
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// The baseline: the bare loop
// ---------------------------------------------------------------------------------------------

/// The bare loop the worker is compared with: async-nats' own pull stream (batches of
/// `concurrency`, refilled as it likes), one task per message behind a semaphore of
/// `concurrency` permits, POST the message bytes as they are with reqwest, read the answer,
/// ack. No decoding, no retries, no metrics, no logs. Runs until killed.
async fn baseline(o: Opts) -> Res<()> {
    let concurrency: usize = o.num("concurrency", 64);
    let url = o.str("url", "");
    let client = async_nats::connect(o.str("nats", "nats://127.0.0.1:4222"))
        .await
        .map_err(err("connect"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(o.str("stream", STREAM))
        .await
        .map_err(err("stream"))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(&o.str("consumer", BASELINE_CONSUMER))
        .await
        .map_err(err("consumer"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(err("http client"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .messages()
        .await
        .map_err(err("messages"))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    println!("ready");
    loop {
        let permit = slots.clone().acquire_owned().await.map_err(err("permit"))?;
        let Some(m) = messages.next().await else {
            return Ok(());
        };
        let Ok(m) = m else { continue };
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            if let Ok(resp) = http.post(&url).body(m.payload.clone()).send().await {
                let _ = resp.bytes().await;
            }
            let _ = m.ack().await;
            drop(permit);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator
// ---------------------------------------------------------------------------------------------

/// Processes started by `run`, stopped when it returns (whatever happens).
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn add(&mut self, name: &str, c: Child) -> u32 {
        let pid = c.id();
        self.0.push((name.to_string(), c));
        pid
    }
    /// SIGTERM, wait up to `grace`, then SIGKILL.
    fn stop(&mut self, pid: u32, grace: Duration) {
        if let Some(i) = self.0.iter().position(|(_, c)| c.id() == pid) {
            let (_, mut c) = self.0.remove(i);
            terminate(&mut c, grace);
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            terminate(c, Duration::from_secs(5));
        }
    }
}

fn terminate(c: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// A free loopback port (bound and released: a tiny race, acceptable on a bench machine).
fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    Ok(l.local_addr().map_err(err("addr"))?.port())
}

/// User + system CPU time of a process so far (`/proc/<pid>/stat`, clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here (0-based).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Peak resident set size (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Env {
    worker_bin: PathBuf,
    worker_prefix: Vec<String>,
    /// The same for the baseline.
    baseline_prefix: Vec<String>,
    /// `--worker-env K=V,K2=V2`: more environment for the worker (experiments).
    worker_env: Vec<String>,
    self_bin: PathBuf,
    nats_url: String,
    nats_pid: u32,
    /// nats-server's monitoring endpoint (`/connz`).
    nats_monitor: String,
    fn_addr: SocketAddr,
    fn_pid: u32,
    broker: JetStreamBroker,
    js: jetstream::Context,
    http: reqwest::Client,
    cfg: Config,
}

/// One invocation message, as the ingress builds it from `POST /async-function/<function>`
/// with a body of `body_bytes` and the headers curl sends.
fn message(
    cfg: &Config,
    function: &str,
    body_bytes: usize,
    i: usize,
) -> Res<(String, String, Bytes)> {
    let body: Vec<u8> = (0..body_bytes)
        .map(|j| b'a' + ((i + j) % 26) as u8)
        .collect();
    let mut header = std::collections::BTreeMap::new();
    for (k, v) in [
        ("Accept", "*/*"),
        ("Content-Type", "application/octet-stream"),
        ("User-Agent", "curl/8.5.0"),
    ] {
        header.insert(k.to_string(), vec![v.to_string()]);
    }
    header.insert("Content-Length".into(), vec![body_bytes.to_string()]);
    let p = prepare(
        cfg,
        &SystemClock,
        Submission {
            function: function.to_string(),
            path: String::new(),
            query: String::new(),
            header,
            host: "127.0.0.1:8080".into(),
            body: Bytes::from(body),
        },
    )?;
    Ok((
        p.outgoing.subject,
        p.outgoing.msg_id.unwrap_or_default(),
        p.outgoing.payload,
    ))
}

/// Publish one message (subject, `Nats-Msg-Id`, payload) and wait for its PubAck.
async fn publish_acked(
    js: &jetstream::Context,
    (subject, id, payload): (String, String, Bytes),
) -> Res<()> {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", id.as_str());
    let ack = js
        .publish_with_headers(subject, h, payload)
        .await
        .map_err(err("publish"))?;
    ack.await.map_err(err("puback")).map(drop)
}

impl Env {
    async fn stream_messages(&self, stream: &str) -> Res<u64> {
        let mut s = self
            .js
            .get_stream(stream)
            .await
            .map_err(err("get stream"))?;
        Ok(s.info().await.map_err(err("stream info"))?.state.messages)
    }

    /// Publish `n` messages for `function` (pipelined, up to 1024 PubAcks outstanding) and wait
    /// until the stream holds `n`.
    async fn fill(&self, stream: &str, function: &str, n: usize, body_bytes: usize) -> Res<()> {
        self.publish_all(n, body_bytes, |_| function.to_string())
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stream_messages(stream).await? < n as u64 {
            if Instant::now() > deadline {
                return Err("fill: stream did not reach the expected size".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Publish `n` messages, message `i` for `function_of(i)`, pipelined (up to 1024 PubAcks
    /// outstanding); every PubAck must arrive.
    async fn publish_all(
        &self,
        n: usize,
        body_bytes: usize,
        function_of: impl Fn(usize) -> String,
    ) -> Res<()> {
        let mut acks = futures::stream::iter(0..n)
            .map(|i| {
                let m = message(&self.cfg, &function_of(i), body_bytes, i);
                async move { publish_acked(&self.js, m?).await }
            })
            .buffer_unordered(1024);
        while let Some(r) = acks.next().await {
            r?;
        }
        Ok(())
    }

    async fn purge(&self, stream: &str) -> Res<()> {
        let s = self
            .js
            .get_stream(stream)
            .await
            .map_err(err("get stream"))?;
        s.purge().await.map_err(err("purge"))?;
        Ok(())
    }

    async fn delete_consumer(&self, name: &str) {
        if let Ok(s) = self.js.get_stream(STREAM).await {
            let _ = s.delete_consumer(name).await;
        }
    }

    /// Start the worker binary (static mode unless `extra` says otherwise) and wait for
    /// `/readyz`.
    async fn start_worker(
        &self,
        procs: &mut Procs,
        max_inflight: usize,
        extra: &[(&str, String)],
        args: &[&str],
    ) -> Res<u32> {
        let metrics_port = free_port()?;
        // `--worker-prefix "perf record -g -o /tmp/w.data --"` profiles the worker.
        let mut cmd = match self.worker_prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(&self.worker_bin);
                c
            }
            None => Command::new(&self.worker_bin),
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("nats_url", &self.nats_url)
            .env("gateway_url", format!("http://{}", self.fn_addr))
            .env("max_inflight", max_inflight.to_string())
            .env("metrics_port", metrics_port.to_string())
            .env("queue_name", QUEUE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        for kv in &self.worker_env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.worker_bin.display()))?;
        let pid = procs.add("worker", child);
        let ready = format!("http://127.0.0.1:{metrics_port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(&ready).send().await
                && r.status().is_success()
            {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                return Err("the worker did not become ready in 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_baseline(&self, procs: &mut Procs, concurrency: usize) -> Res<u32> {
        let mut cmd = match self.baseline_prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(&self.self_bin);
                c
            }
            None => Command::new(&self.self_bin),
        };
        let mut child = cmd
            .args([
                "baseline",
                "--nats",
                &self.nats_url,
                "--concurrency",
                &concurrency.to_string(),
                "--url",
                &format!("http://{}/function/bench-fn", self.fn_addr),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(err("start baseline"))?;
        let out = child.stdout.take().ok_or("baseline stdout")?;
        let pid = procs.add("baseline", child);
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(err("baseline"))?;
        if line.trim() != "ready" {
            return Err("the baseline did not start".into());
        }
        Ok(pid)
    }

    /// Wait until the stream is empty; the rate is measured from the first acknowledgement.
    async fn drain(&self, consumer_pid: u32, timeout: Duration) -> Res<Drain> {
        let start = Instant::now();
        let initial = self.stream_messages(STREAM).await?;
        let pids = [consumer_pid, self.nats_pid, self.fn_pid];
        let sent0 = self.client_messages().await;
        let mut first: Option<(Instant, u64, [Duration; 3])> = None;
        loop {
            let now = Instant::now();
            let left = self.stream_messages(STREAM).await?;
            if first.is_none() && left < initial {
                first = Some((now, left, pids.map(cpu_time)));
            }
            if left == 0 {
                let (t0, m0, c0) = first.ok_or("drained before it started")?;
                let c1 = pids.map(cpu_time);
                let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
                let per_msg =
                    |i: usize| c1[i].saturating_sub(c0[i]).as_secs_f64() * 1e6 / m0.max(1) as f64;
                // Messages the consumer sent to NATS besides one ack per message: pull
                // requests (and the odd API request).
                let sent = self.client_messages().await.saturating_sub(sent0);
                return Ok(Drain {
                    rate: m0 as f64 / secs,
                    cpu_us: [per_msg(0), per_msg(1), per_msg(2)],
                    requests_per_msg: sent.saturating_sub(initial) as f64 / initial.max(1) as f64,
                });
            }
            if now.duration_since(start) > timeout {
                return Err(format!("{left} messages still queued after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages received by nats-server from every client but this driver (`/connz`).
    async fn client_messages(&self) -> u64 {
        let Ok(r) = self
            .http
            .get(format!("{}/connz?limit=1024", self.nats_monitor))
            .send()
            .await
        else {
            return 0;
        };
        let Ok(body) = r.bytes().await else {
            return 0;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return 0;
        };
        v["connections"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| c["name"].as_str() != Some("bench"))
                    .filter_map(|c| c["in_msgs"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }

    async fn fn_stats(&self, reset: bool) -> Res<Vec<u64>> {
        let base = format!("http://{}", self.fn_addr);
        if reset {
            self.http
                .post(format!("{base}/stats/reset"))
                .send()
                .await
                .map_err(err("stats"))?;
            return Ok(Vec::new());
        }
        let t = self
            .http
            .get(format!("{base}/stats"))
            .send()
            .await
            .map_err(err("stats"))?
            .text()
            .await
            .map_err(err("stats"))?;
        Ok(t.split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect())
    }
}

/// One throughput measurement.
#[derive(Clone, Copy)]
struct Drain {
    rate: f64,
    /// CPU µs per message: the consumer (baseline or worker), nats-server, function server.
    cpu_us: [f64; 3],
    /// Messages the consumer sent to NATS per message, besides its ack (pull requests).
    requests_per_msg: f64,
}

fn best(v: &[Drain]) -> Drain {
    *v.iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .expect("at least one trial")
}

async fn run(o: Opts) -> Res<()> {
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

fn tempdir() -> Res<PathBuf> {
    let d = std::env::temp_dir().join(format!("qw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(err("temp dir"))?;
    Ok(d)
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
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
                credentials_file: None,
                name: "bench".into(),
                request_timeout: Duration::from_secs(10),
                publish_timeout: Duration::from_secs(10),
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

async fn create_consumer(js: &jetstream::Context, name: &str) -> Res<()> {
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

struct Sent {
    accepted: u64,
    refused: u64,
    seconds: f64,
}

/// POST to the ingress at a steady rate (open loop: request `i` starts at `i / rate`), for
/// `secs` seconds.
async fn steady_posts(
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
async fn closed_posts(
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
async fn bare_publish(
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

/// Function mode with many functions: consumer creation time, throughput against static mode,
/// memory.
async fn scale(o: &Opts, procs: &mut Procs, env: &Env, quick: bool, body_bytes: usize) -> Res<()> {
    let functions: usize = o.num("scale-functions", if quick { 100 } else { 1000 });
    let per_fn: usize = o.num("scale-messages", if quick { 10 } else { 50 });
    let c: usize = o.num("scale-concurrency", 256);
    let total = functions * per_fn;
    let mut results = Vec::new();
    for mode in ["static", "function"] {
        fill_functions(env, functions, per_fn, body_bytes).await?;
        let t = Instant::now();
        let pid = env
            .start_worker(procs, c, &[("scaling_mode", mode.to_string())], &[])
            .await?;
        let mut consumers_at = None;
        let mut peak_consumers = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut first: Option<(Instant, u64)> = None;
        let rate = loop {
            let left = env.stream_messages(STREAM).await?;
            let now = Instant::now();
            if first.is_none() && left < total as u64 {
                first = Some((now, left));
            }
            if mode == "function" && consumers_at.is_none() {
                let s = env.js.get_stream(STREAM).await.map_err(err("get stream"))?;
                let n = s.cached_info().state.consumer_count;
                peak_consumers = peak_consumers.max(n);
                if n >= functions {
                    consumers_at = Some(t.elapsed());
                }
            }
            if left == 0 {
                let (t0, m0) = first.ok_or("drained before it started")?;
                break m0 as f64 / now.duration_since(t0).as_secs_f64().max(1e-3);
            }
            if now > deadline {
                procs.stop(pid, Duration::from_secs(10));
                return Err(format!("scale ({mode}): {left} messages left after 600 s"));
            }
            tokio::time::sleep(Duration::from_millis(if mode == "function" {
                50
            } else {
                10
            }))
            .await;
        };
        let rss = peak_rss_kib(pid);
        procs.stop(pid, Duration::from_secs(10));
        results.push((mode, rate, rss, consumers_at, peak_consumers));
        // Leave nothing behind for the next mode (a work queue forbids overlapping consumers;
        // the worker removes the other mode's consumers itself, but be tidy).
        let s = env.js.get_stream(STREAM).await.map_err(err("get stream"))?;
        let names: Vec<String> = s
            .consumer_names()
            .filter_map(|n| async { n.ok() })
            .collect()
            .await;
        for n in names {
            let _ = s.delete_consumer(&n).await;
        }
    }
    println!();
    println!("scale: {functions} functions × {per_fn} messages, max_inflight={c}");
    println!("| mode | msg/s | peak RSS MiB | all consumers created after | consumers seen |");
    println!("|---|---|---|---|---|");
    for (mode, rate, rss, at, peak) in results {
        println!(
            "| {mode} | {rate:.0} | {:.1} | {} | {} |",
            rss as f64 / 1024.0,
            at.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
            if mode == "function" {
                peak.to_string()
            } else {
                "1".into()
            }
        );
    }
    Ok(())
}

/// `per_fn` messages for each of `functions` functions, interleaved.
async fn fill_functions(env: &Env, functions: usize, per_fn: usize, body_bytes: usize) -> Res<()> {
    env.publish_all(functions * per_fn, body_bytes, |i| {
        format!("bench-fn-{}", i % functions)
    })
    .await
}
