//! Docker for the integration tests: is there an engine, which images, and the glue that lets
//! testcontainers 0.27 talk to an older engine.
//!
//! - [`docker`] answers whether a Docker engine answers (once per test process) and prepares
//!   it for testcontainers (see "API shim" below). `QW_NATS_BACKEND=process` turns Docker off
//!   for the NATS harness; this module is still usable by the container suites.
//! - [`nats_image`] is the NATS image to run: `$QW_NATS_IMAGE`, by default the local
//!   `localhost/queue-worker-nats:<2.9|2.15>` that `ci/nats-image/build.sh` builds without any
//!   registry from the nats-server binary of the selected version (`QW_NATS_VERSION`, see
//!   [`super::nats::server_binary`]); this module runs that script, which is a no-op when the
//!   image is up to date. On a laptop that can pull, `QW_NATS_IMAGE=nats:2.10` uses the
//!   official image.
//! - [`worker_image`] and [`test_function_image`] bundle binaries of this build (the worker and
//!   `testdata/test-function`) into `FROM scratch` images (`ci/scratch-image.sh`): the worker
//!   and the test function run as containers that way.
//!
//! API shim: testcontainers 0.27 (bollard 0.20) speaks Docker API 1.52 and does not negotiate;
//! an engine older than Docker 29 refuses it ("client version 1.52 is too new"). When the engine
//! is older, this module starts a tiny HTTP proxy on a Unix socket (its own thread and runtime,
//! for the life of the test process) that rewrites `/v1.52/…` to the engine's version, and
//! points `DOCKER_HOST` at it. Set `QW_DOCKER_SHIM=0` to disable it.
//!
//! Every container and network the harness creates is named `qw-test-…` and labelled
//! `qw-test=1`, so `ci/images.sh` can remove leftovers of a killed run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Docker API version bollard 0.20 (testcontainers 0.27) sends.
const CLIENT_API: (u32, u32) = (1, 52);
/// Label on every container and network the tests create.
pub const LABEL: &str = "qw-test";
/// The local NATS images (`<repo>:<major.minor>`): built by `ci/nats-image/build.sh`.
pub const NATS_IMAGE_REPO: &str = "localhost/queue-worker-nats";

/// A Docker engine that answered.
#[derive(Clone, Debug)]
pub struct DockerEnv {
    /// The engine's API version, e.g. `1.41`.
    pub api_version: String,
    /// Whether requests go through the API shim.
    pub shimmed: bool,
}

/// The Docker engine, or why there is none. Checked once per test process.
pub fn docker() -> Result<&'static DockerEnv, String> {
    static ENV: OnceLock<Result<DockerEnv, String>> = OnceLock::new();
    ENV.get_or_init(init).as_ref().map_err(Clone::clone)
}

fn init() -> Result<DockerEnv, String> {
    let api_version = cli(&["version", "--format", "{{.Server.APIVersion}}"], 20)
        .map_err(|e| format!("Docker does not answer ({e})"))?
        .trim()
        .to_string();
    let parsed = parse_api(&api_version)
        .ok_or_else(|| format!("Docker answered an unknown API version {api_version:?}"))?;
    let shim_off = std::env::var("QW_DOCKER_SHIM").is_ok_and(|v| v == "0");
    let shimmed = parsed < CLIENT_API && !shim_off;
    if shimmed {
        let upstream = Upstream::from_env()?;
        let sock = shim::start(upstream, api_version.clone())?;
        // SAFETY: set once, under this OnceLock, before any container exists; every reader in
        // this process (testcontainers, std::process) goes through std's env lock.
        unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", sock.display())) };
        eprintln!(
            "docker harness: engine API {api_version} < {}.{} (testcontainers 0.27): \
             requests go through the API shim at {}",
            CLIENT_API.0,
            CLIENT_API.1,
            sock.display()
        );
    }
    Ok(DockerEnv {
        api_version,
        shimmed,
    })
}

fn parse_api(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `(name, tag)` of the NATS image, built locally when it is ours; `Err` says why not.
pub fn nats_image() -> Result<(String, String), String> {
    static IMAGE: OnceLock<Result<(String, String), String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            docker()?;
            let image = match std::env::var("QW_NATS_IMAGE")
                .ok()
                .filter(|s| !s.is_empty())
            {
                Some(image) => image,
                None => format!("{NATS_IMAGE_REPO}:{}", super::nats::server_binary()?.line()),
            };
            if image.starts_with("localhost/") {
                let bin = super::nats::server_binary()?.path.to_string_lossy();
                let script = repo_path("ci/nats-image/build.sh");
                let env = [
                    ("QW_NATS_IMAGE", image.as_str()),
                    ("NATS_SERVER_BIN", &*bin),
                ];
                run_script(&script, &[], &env)
                    .map_err(|e| format!("cannot build the local NATS image {image}: {e}"))?;
            }
            Ok(split_image(&image))
        })
        .clone()
}

/// ` (nats-server v2.9.10)` when the NATS image is a local one built from [`super::nats::server_binary`];
/// empty for an image named by `QW_NATS_IMAGE` elsewhere.
pub fn nats_image_version() -> String {
    match (nats_image(), super::nats::server_binary()) {
        (Ok((name, _)), Ok(bin)) if name.starts_with("localhost/") => {
            format!(" (nats-server v{})", bin.version)
        }
        _ => String::new(),
    }
}

/// `repo/name:tag` → `("repo/name", "tag")` (tag `latest` when absent).
pub fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

/// `<repo root>/<rel>`.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn run_script(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script).args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited with {}: {}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `docker args…` (through the shim when there is one), waiting at most `timeout_s`
/// seconds; its stdout, or an error with its stderr.
pub fn cli(args: &[&str], timeout_s: u64) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (out_p, err_p) = (dir.path().join("out"), dir.path().join("err"));
    let out = std::fs::File::create(&out_p).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_p).map_err(|e| e.to_string())?;
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("run docker: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "docker {} timed out after {timeout_s}s",
                    args.join(" ")
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let stdout = String::from_utf8_lossy(&std::fs::read(&out_p).unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&std::fs::read(&err_p).unwrap_or_default()).into_owned();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "docker {} failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        ))
    }
}

/// `docker kill <container>`; a container that is not running (killed already) is fine.
pub fn kill(container: &str) {
    if let Err(e) = cli(&["kill", container], 60) {
        assert!(e.contains("is not running"), "{e}");
    }
}

/// Like [`cli`] but panics on failure.
pub fn cli_ok(args: &[&str]) -> String {
    cli(args, 60).unwrap_or_else(|e| panic!("{e}"))
}

/// The last `n` lines of a container's output (stdout and stderr).
pub fn logs_tail(container: &str, n: usize) -> String {
    super::tail(&logs_all(container), n)
}

/// The container's whole output, stdout and stderr interleaved.
pub fn logs_all(container: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("docker logs {container} 2>&1"))
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(docker logs {container}: {e})"),
    }
}

/// A user-defined bridge network, removed on drop (after the containers on it are gone).
pub struct Network {
    pub name: String,
}

impl Network {
    /// Creates `qw-test-<prefix>-…` with the `qw-test` label.
    pub fn create(prefix: &str) -> Network {
        let name = super::unique_name(&format!("qw-test-{prefix}"));
        cli_ok(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--label",
            &format!("{LABEL}=1"),
            &name,
        ]);
        Network { name }
    }

    /// The gateway address of this network: the host as seen from its containers.
    pub fn gateway(&self) -> String {
        let gw = cli_ok(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            &self.name,
        ]);
        let gw = gw.trim().to_string();
        assert!(!gw.is_empty(), "network {} has no gateway", self.name);
        gw
    }

    /// Cuts `container` off this network (a partition: no peer and no client reaches it).
    pub fn disconnect(&self, container: &str) {
        cli_ok(&["network", "disconnect", "--force", &self.name, container]);
    }

    /// Reattaches `container` with `alias` (its DNS name on the network).
    pub fn connect(&self, container: &str, alias: &str) {
        cli_ok(&[
            "network", "connect", "--alias", alias, &self.name, container,
        ]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Containers may still be going away (testcontainers removes them on its own drop
        // thread): retry briefly, then leave it to ci/images.sh's cleanup.
        for _ in 0..50 {
            match cli(&["network", "rm", &self.name], 20) {
                Ok(_) => return,
                Err(e) if e.contains("No such network") || e.contains("not found") => return,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        eprintln!("docker harness: could not remove network {}", self.name);
    }
}

/// Where the real engine listens.
#[derive(Clone, Debug)]
enum Upstream {
    Unix(PathBuf),
    Tcp(String),
}

impl Upstream {
    fn from_env() -> Result<Upstream, String> {
        let mut host = std::env::var("DOCKER_HOST").unwrap_or_default();
        if host.is_empty() {
            // The CLI's current context knows where the engine is (Docker Desktop, colima…).
            host = cli(
                &[
                    "context",
                    "inspect",
                    "--format",
                    "{{.Endpoints.docker.Host}}",
                ],
                20,
            )
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        }
        if host.is_empty() {
            return Ok(Upstream::Unix(PathBuf::from("/var/run/docker.sock")));
        }
        if let Some(p) = host.strip_prefix("unix://") {
            return Ok(Upstream::Unix(PathBuf::from(p)));
        }
        if let Some(a) = host.strip_prefix("tcp://") {
            return Ok(Upstream::Tcp(a.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "DOCKER_HOST={host}: the API shim supports unix:// and tcp:// (or set QW_DOCKER_SHIM=0 \
             with an engine that speaks API {}.{})",
            CLIENT_API.0, CLIENT_API.1
        ))
    }
}

mod shim {
    //! HTTP/1.1 proxy rewriting the API version in request paths; upgrades (exec, attach)
    //! are passed through.

    use std::path::PathBuf;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, combinators::BoxBody};
    use hyper::body::Incoming;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncWrite};

    use super::Upstream;

    type Body = BoxBody<Bytes, hyper::Error>;

    trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
    impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

    /// Starts the proxy; returns its socket path once it listens.
    pub(super) fn start(upstream: Upstream, api: String) -> Result<PathBuf, String> {
        let dir = std::env::temp_dir().join(format!("qw-docker-shim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let sock = dir.join("docker.sock");
        let _ = std::fs::remove_file(&sock);
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = sock.clone();
        std::thread::Builder::new()
            .name("docker-api-shim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("shim runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::UnixListener::bind(&path) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Err(format!("bind {}: {e}", path.display())));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(()));
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (upstream, api) = (upstream.clone(), api.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                forward(req, upstream.clone(), api.clone())
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                });
            })
            .map_err(|e| format!("spawn shim thread: {e}"))?;
        rx.recv()
            .map_err(|_| "the shim thread died".to_string())??;
        Ok(sock)
    }

    /// `/v1.52/containers/json?x` → `/v<api>/containers/json?x`; other paths unchanged.
    fn rewrite(path_and_query: &str, api: &str) -> String {
        if let Some(rest) = path_and_query.strip_prefix("/v")
            && let Some((ver, tail)) = rest.split_once('/')
            && super::parse_api(ver).is_some()
        {
            return format!("/v{api}/{tail}");
        }
        path_and_query.to_string()
    }

    async fn connect(upstream: &Upstream) -> std::io::Result<Box<dyn Io>> {
        Ok(match upstream {
            Upstream::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            Upstream::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a.as_str()).await?),
        })
    }

    fn bad_gateway(msg: String) -> Response<Body> {
        let mut r = Response::new(
            Full::new(Bytes::from(format!(
                "{{\"message\":\"docker shim: {msg}\"}}"
            )))
            .map_err(|never| match never {})
            .boxed(),
        );
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    }

    async fn forward(
        mut req: Request<Incoming>,
        upstream: Upstream,
        api: String,
    ) -> Result<Response<Body>, hyper::Error> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        match rewrite(&pq, &api).parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Ok(bad_gateway(format!("bad path {pq}: {e}"))),
        }
        let io = match connect(&upstream).await {
            Ok(io) => io,
            Err(e) => return Ok(bad_gateway(format!("connect {upstream:?}: {e}"))),
        };
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await
        {
            Ok(x) => x,
            Err(e) => return Ok(bad_gateway(format!("handshake: {e}"))),
        };
        tokio::spawn(conn.with_upgrades());
        let client_upgrade = req
            .headers()
            .contains_key(hyper::header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let mut resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Ok(bad_gateway(format!("request: {e}"))),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let server_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = tokio::join!(client_upgrade, server_upgrade) {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
        Ok(resp.map(|b: Incoming| b.boxed()))
    }
}

/// `localhost/queue-worker:test`: the `queue-worker` binary under test (the debug build,
/// stripped) in a `FROM scratch` image (`ci/worker-image/Dockerfile`), built once per process.
pub fn worker_image() -> (String, String) {
    static IMAGE: OnceLock<(String, String)> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            scratch_image_with(
                "localhost/queue-worker:test",
                &super::worker_bin(),
                "ci/worker-image/Dockerfile",
                &[
                    "--strip",
                    "--ca-certs",
                    "--alias",
                    "queue-worker",
                    "--alias",
                    "jetstream-queue-worker",
                ],
            )
        })
        .clone()
}

/// `localhost/queue-worker-test-function:test`: the `test-function` crate (`testdata/test-function`)
/// in a `FROM scratch` image, built once per process.
pub fn test_function_image() -> (String, String) {
    static IMAGE: OnceLock<(String, String)> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            scratch_image_with(
                "localhost/queue-worker-test-function:test",
                &test_function_bin(),
                "ci/test-function-image/Dockerfile",
                &["--strip", "--name", "test-function"],
            )
        })
        .clone()
}

fn scratch_image_with(
    image: &str,
    bin: &Path,
    dockerfile: &str,
    opts: &[&str],
) -> (String, String) {
    if let Err(e) = docker() {
        panic!("cannot build {image}: {e}");
    }
    let script = repo_path("ci/scratch-image.sh");
    let df = repo_path(dockerfile);
    let (bin_s, df_s) = (bin.to_string_lossy(), df.to_string_lossy());
    let mut args = vec![image, &*bin_s, &*df_s];
    args.extend_from_slice(opts);
    if let Err(e) = run_script(&script, &args, &[]) {
        panic!("cannot build the image {image}: {e}");
    }
    split_image(image)
}

/// The `test-function` binary: `cargo build -p test-function` (std only, no dependencies: a few
/// seconds the first time, a no-op after), in the target directory of this test binary
/// (`CARGO_TARGET_DIR` or `target/`), i.e. `<target>/debug/test-function`.
pub fn test_function_bin() -> PathBuf {
    // This test binary is <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary under <target>/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "test-function", "--target-dir"])
        .arg(&target)
        .current_dir(repo_path(""))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p test-function: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug/test-function")
}

/// Starts `req` (whose container is named `name`); when it fails, prints the container's log,
/// removes it (testcontainers keeps a container that was created but did not start) and panics.
pub async fn start<I: testcontainers::Image>(
    req: testcontainers::ContainerRequest<I>,
    name: &str,
) -> testcontainers::ContainerAsync<I> {
    use testcontainers::runners::AsyncRunner;
    match req.start().await {
        Ok(c) => c,
        Err(e) => {
            let log = logs_tail(name, 30);
            let _ = cli(&["rm", "-f", name], 30);
            panic!("container {name} did not start: {e}\n{log}")
        }
    }
}
