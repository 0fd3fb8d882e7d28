//! A throw-away `nats-server` (JetStream, file store) per test.
//!
//! The binary is `$NATS_SERVER_BIN` or `nats-server` on `PATH`. Without it, [`NatsServer::start`]
//! falls back to an external server at `$NATS_URL` (no kill/restart), panics when `CI` is set,
//! and otherwise prints `SKIPPED` and returns `None`.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tail};

const READY_LINE: &str = "Server is ready";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` child process, or an external server named by `NATS_URL`.
pub struct NatsServer {
    port: u16,
    kind: Kind,
}

enum Kind {
    Owned {
        bin: PathBuf,
        dir: tempfile::TempDir,
        child: Option<Child>,
    },
    External {
        url: String,
    },
}

impl NatsServer {
    /// Starts a local server; falls back to `NATS_URL` (see the module docs).
    pub async fn start() -> Option<NatsServer> {
        match find_binary() {
            Some(bin) => Some(Self::spawn_new(bin).await),
            None => match std::env::var("NATS_URL") {
                Ok(url) if !url.is_empty() => {
                    eprintln!(
                        "nats harness: no nats-server on PATH, using external NATS_URL={url}"
                    );
                    Some(NatsServer {
                        port: port_of(&url),
                        kind: Kind::External { url },
                    })
                }
                _ => skip_or_panic("no nats-server on PATH and NATS_URL unset"),
            },
        }
    }

    /// Starts a local server that can be killed and restarted; never uses `NATS_URL`.
    pub async fn start_restartable() -> Option<NatsServer> {
        match find_binary() {
            Some(bin) => Some(Self::spawn_new(bin).await),
            None => skip_or_panic("no nats-server on PATH (a restartable server is needed)"),
        }
    }

    async fn spawn_new(bin: PathBuf) -> NatsServer {
        let mut last_err = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("qw-nats-")
                .tempdir()
                .expect("create temp dir for nats-server");
            let mut server = NatsServer {
                port: free_port(),
                kind: Kind::Owned {
                    bin: bin.clone(),
                    dir,
                    child: None,
                },
            };
            match server.launch().await {
                Ok(()) => return server,
                Err(e) => {
                    server.kill();
                    last_err = e;
                }
            }
        }
        panic!("nats-server did not start: {last_err}");
    }

    /// Client URL, `nats://127.0.0.1:<port>` (or `NATS_URL` for an external server).
    pub fn url(&self) -> String {
        match &self.kind {
            Kind::Owned { .. } => format!("nats://127.0.0.1:{}", self.port),
            Kind::External { url } => url.clone(),
        }
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is an external `NATS_URL` server (cannot be killed or restarted).
    pub fn is_external(&self) -> bool {
        matches!(self.kind, Kind::External { .. })
    }

    /// JetStream store directory (`-sd`), kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir().join("store")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("nats.log")
    }

    /// The server log so far (empty for an external server).
    pub fn log(&self) -> String {
        match &self.kind {
            Kind::Owned { .. } => read_lossy(&self.log_path()),
            Kind::External { .. } => String::new(),
        }
    }

    /// SIGKILLs the server and waits for it to exit. No-op if it is not running.
    pub fn kill(&mut self) {
        if let Kind::Owned { child, .. } = &mut self.kind {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        } else {
            panic!("cannot kill an external NATS_URL server: use NatsServer::start_restartable()");
        }
    }

    /// Restarts the server on the same port with the same store; waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.launch().await {
            panic!("nats-server restart on port {} failed: {e}", self.port);
        }
    }

    /// Kills the server, waits `d`, then restarts it.
    pub async fn stop_for(&mut self, d: Duration) {
        self.kill();
        tokio::time::sleep(d).await;
        self.restart().await;
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a server frozen by [`NatsServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// A client with quick reconnects (every 100 ms), for tests that restart the server.
    pub async fn client(&self) -> async_nats::Client {
        let url = self.url();
        async_nats::ConnectOptions::new()
            .name("qw-test-harness")
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    /// A JetStream context on a fresh [`NatsServer::client`].
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    fn dir(&self) -> &Path {
        match &self.kind {
            Kind::Owned { dir, .. } => dir.path(),
            Kind::External { .. } => {
                panic!("an external NATS_URL server has no local store or log")
            }
        }
    }

    fn signal(&self, sig: &str) {
        let Kind::Owned {
            child: Some(child), ..
        } = &self.kind
        else {
            panic!("SIG{sig}: no nats-server process owned by this harness");
        };
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {}", child.id()))
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -{sig} {} failed", child.id());
    }

    /// Spawns the process and waits for "Server is ready" in the new part of the log.
    async fn launch(&mut self) -> Result<(), String> {
        let port = self.port;
        let (log_path, store) = (self.log_path(), self.store_dir());
        let Kind::Owned { bin, dir, child } = &mut self.kind else {
            return Err("external server".into());
        };
        let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let out_path = dir.path().join("nats.stdout");
        let out = File::options()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(|e| format!("open {}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let spawned = Command::new(&*bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .arg("-l")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let c = child.insert(spawned);

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!(
                    "nats-server exited with {status}\n{}\n{}",
                    tail(&read_lossy(&log_path), 40),
                    tail(&read_lossy(&out_path), 20)
                ));
            }
            let log = read_lossy(&log_path);
            let fresh = log.get(log_start as usize..).unwrap_or("");
            if fresh.contains(READY_LINE)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no \"{READY_LINE}\" within {START_TIMEOUT:?}\n{}",
                    tail(fresh, 40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Kind::Owned { child, .. } = &mut self.kind {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if std::thread::panicking() {
                eprintln!(
                    "----- nats-server log (port {}, last 40 lines) -----\n{}\n-----",
                    self.port,
                    tail(&read_lossy(&self.log_path()), 40)
                );
            }
        }
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn skip_or_panic(why: &str) -> Option<NatsServer> {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but no nats-server: install it (apt-get install nats-server) [{why}]");
    }
    eprintln!("SKIPPED: {why}");
    None
}

fn port_of(url: &str) -> u16 {
    let first = url.split(',').next().unwrap_or(url);
    first
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(4222)
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
