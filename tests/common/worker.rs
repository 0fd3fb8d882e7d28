//! The worker binary (or any program) as a child process with a clean environment and its
//! output captured in a log file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::nats::NatsServer;
use super::tail;

/// A child process whose stdout and stderr go to one log file.
pub struct WorkerProcess {
    child: Child,
    exit: Option<ExitStatus>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Spawns `bin args…` with only `PATH`, `HOME`, `RUST_LOG` (if set), `RUST_BACKTRACE=1`,
    /// `NO_COLOR=1` and then `env` (which may override those) in its environment.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, String)]) -> WorkerProcess {
        WorkerProcess::spawn_limited(bin, args, env, None)
    }

    /// [`WorkerProcess::spawn`] with `RLIMIT_NOFILE` set to `nofile` (soft and hard) in the
    /// child only, when given.
    pub fn spawn_limited(
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        nofile: Option<u64>,
    ) -> WorkerProcess {
        let dir = tempfile::Builder::new()
            .prefix("qw-worker-")
            .tempdir()
            .expect("create temp dir for worker log");
        let log_path = dir.path().join("worker.log");
        let out = File::create(&log_path).expect("create worker log");
        let err = out.try_clone().expect("clone log file handle");

        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for key in ["PATH", "HOME", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        WorkerProcess {
            child,
            exit: None,
            log_path,
            _dir: dir,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file (stdout and stderr interleaved).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The output so far, with ANSI colour codes removed.
    pub fn log(&self) -> String {
        let raw = std::fs::read(&self.log_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    /// Waits until the log contains `pattern`; returns the log. Panics on timeout or when the
    /// process exits first.
    pub async fn wait_log(&mut self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(pattern) {
                return log;
            }
            if let Some(status) = self.try_exit() {
                // The last lines may have been written just before exiting.
                let log = self.log();
                if log.contains(pattern) {
                    return log;
                }
                panic!(
                    "process exited ({status}) before logging {pattern:?}; log tail:\n{}",
                    tail(&log, 60)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {pattern:?} in the log within {timeout:?}; log tail:\n{}",
                    tail(&log, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (no-op if it already exited).
    pub fn sigterm(&mut self) {
        self.signal("TERM");
    }

    /// Sends SIGINT (no-op if it already exited).
    pub fn sigint(&mut self) {
        self.signal("INT");
    }

    /// Sends `kill -<sig>` (e.g. `"TERM"`, `"STOP"`, `"CONT"`); no-op if it already exited.
    pub fn signal(&mut self, sig: &str) {
        // Only signal a child not yet reaped, so the pid cannot have been reused.
        if self.try_exit().is_some() {
            return;
        }
        super::send_signal(self.child.id(), sig);
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let trouble: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .take(80)
                .collect();
            eprintln!(
                "----- worker log (pid {}, warnings and errors: the first 80) -----\n{}\n\
                 ----- worker log (pid {}, last 60 lines) -----\n{}\n-----",
                self.child.id(),
                trouble.join("\n"),
                self.child.id(),
                tail(&log, 60)
            );
        }
    }
}

/// Polls `url` with GET until it answers 200; panics after `timeout` with the last outcome.
pub async fn wait_http_ok(url: &str, timeout: Duration) {
    let client = http_client();
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("error {e}"),
        };
        if Instant::now() >= deadline {
            panic!("{url} not 200 within {timeout:?}: last {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `url`; returns the status and the body as text. Panics on transport errors.
pub async fn get_text(url: &str) -> (u16, String) {
    let resp = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body)
}

/// A reqwest client for talking to local test servers (ignores proxy variables).
///
/// The crate enables reqwest's `rustls-no-provider`, so building any reqwest client panics
/// unless a rustls crypto provider is installed: this installs ring's (no-op if one is set).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A worker process plus what it takes to talk to it.
pub struct Worker {
    pub proc: WorkerProcess,
    /// `http://127.0.0.1:<metrics_port>`
    pub metrics: String,
    /// `http://<ingress addr>` when started with the ingress.
    pub ingress: Option<String>,
    /// The client of [`Worker::post`] (one per worker, so connections are reused).
    http: reqwest::Client,
}

/// What [`Worker::start`] runs: `queue-worker run [--ingress 127.0.0.1:<free port>]` with
/// `nats_url`, `queue_name`, `gateway_url`, a free `metrics_port`, `ack_wait=5s`, then `env`
/// (which may override any of them). Tests build it through `super::bed`.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub nats_url: String,
    pub queue: String,
    pub gateway: String,
    pub ingress: bool,
    pub env: Vec<(String, String)>,
    /// How long `/readyz` may take to answer 200.
    pub ready_timeout: Duration,
    /// The process's file descriptor limit (soft and hard), when not the test's.
    pub nofile: Option<u64>,
}

impl Worker {
    /// Spawns the worker `spec` describes and waits until `/readyz` answers. Ports are picked
    /// free just before the start, so another process may take one in between: a worker that
    /// exits because its address is in use is started again on new ports (a few times).
    pub async fn start(spec: &WorkerSpec) -> Worker {
        for _ in 0..3 {
            let (mut proc, metrics, ingress) = Worker::spawn_on_free_ports(spec);
            if !lost_its_port(&mut proc, &metrics, spec.ready_timeout).await {
                wait_http_ok(&format!("{metrics}/readyz"), spec.ready_timeout).await;
                return Worker::new(proc, metrics, ingress);
            }
            eprintln!("worker: a port it was given was taken meanwhile; starting it on others");
        }
        panic!("worker: three starts in a row found a port taken");
    }

    /// The worker `spec` describes on ports free a moment ago: its process, metrics URL and
    /// ingress URL.
    fn spawn_on_free_ports(spec: &WorkerSpec) -> (WorkerProcess, String, Option<String>) {
        let metrics_port = super::free_port();
        let ingress_addr = spec
            .ingress
            .then(|| format!("127.0.0.1:{}", super::free_port()));
        let mut env: Vec<(&str, String)> = vec![
            ("nats_url", spec.nats_url.clone()),
            ("queue_name", spec.queue.clone()),
            ("gateway_url", spec.gateway.clone()),
            ("metrics_port", metrics_port.to_string()),
            ("ack_wait", "5s".to_string()),
        ];
        for (k, v) in &spec.env {
            env.retain(|(name, _)| name != k);
            env.push((k, v.clone()));
        }
        let mut args = vec!["run"];
        if let Some(a) = &ingress_addr {
            args.push("--ingress");
            args.push(a);
        }
        let proc = WorkerProcess::spawn_limited(&super::worker_bin(), &args, &env, spec.nofile);
        let metrics = format!("http://127.0.0.1:{metrics_port}");
        (proc, metrics, ingress_addr.map(|a| format!("http://{a}")))
    }

    /// A worker already started (and ready): its process, metrics URL and ingress URL.
    pub fn new(proc: WorkerProcess, metrics: String, ingress: Option<String>) -> Worker {
        Worker {
            proc,
            metrics,
            ingress,
            http: http_client(),
        }
    }

    /// Stops the worker with SIGTERM and waits until it has exited cleanly (the streams and
    /// consumers it made stay).
    pub async fn stop(mut self) {
        self.proc.sigterm();
        let status = self.proc.wait_exit(Duration::from_secs(20)).await;
        assert!(status.expect("exits").success(), "{}", self.proc.log());
    }

    /// `http://<ingress addr>`; panics when the worker runs without the ingress.
    pub fn ingress(&self) -> &str {
        self.ingress
            .as_deref()
            .expect("this worker runs without the ingress")
    }

    /// A `POST <ingress>/async-function/<path>` to finish and send.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/async-function/{path}", self.ingress());
        self.http.post(url)
    }

    /// The value of the first metrics line starting with `line_prefix`.
    pub async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, text) = get_text(&format!("{}/metrics", self.metrics)).await;
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// `queue_worker_messages_processed_total` of `queue` (0 when absent).
    pub async fn processed(&self, queue: &str) -> f64 {
        self.metric(&format!(
            "queue_worker_messages_processed_total{{queue_name=\"{queue}\"}}"
        ))
        .await
        .unwrap_or(0.0)
    }
}

/// POST `path` over a plain TCP connection (no client-side path normalisation); the status code.
pub async fn raw_post_status(addr: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Messages currently stored in `stream`.
pub async fn stream_messages(nats: &NatsServer, stream: &str) -> u64 {
    let js = nats.jetstream().await;
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

/// Set the child's `RLIMIT_NOFILE` to `n` (soft and hard) between fork and exec.
fn limit_nofile(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Whether `proc` exited, before its `/readyz` under `metrics` answered 200 or `timeout`
/// passed, because an address it was to listen on is in use.
async fn lost_its_port(proc: &mut WorkerProcess, metrics: &str, timeout: Duration) -> bool {
    let (client, url) = (http_client(), format!("{metrics}/readyz"));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if proc.try_exit().is_some() {
            return proc.log().contains("Address already in use");
        }
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
