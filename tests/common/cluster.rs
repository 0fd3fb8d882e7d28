//! A three-node NATS cluster with JetStream clustering, for the cluster suites.
//!
//! Containers on a private Docker network when Docker answers (see [`super::docker`]), else
//! `nats-server` processes on loopback; `QW_NATS_BACKEND=process|container` forces one. Each
//! node keeps its client port and store across [`NatsCluster::kill`] / [`NatsCluster::restart`].
//!
//! Partitions: a container is cut off its network (`docker network disconnect`): peers cannot
//! reach it, and neither can clients (Docker drops its published port, so their connections
//! close at once). A process is frozen (SIGSTOP): peers and clients see silence and time out.
//!
//! Nodes advertise no client URLs (`--no_advertise`): clients use exactly the `nats_url` list.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::docker::{self, Network};
use super::nats::{describe_binary, server_binary, wait_nats_info};
use super::{free_port, tail};

const CLUSTER_NAME: &str = "qw";
const READY_LINE: &str = "Server is ready";

enum NodeKind {
    Process {
        bin: PathBuf,
        dir: tempfile::TempDir,
        cluster_port: u16,
        child: Option<Child>,
    },
    Container {
        /// Kept so that testcontainers removes the container on drop.
        _container: Box<ContainerAsync<GenericImage>>,
        name: String,
    },
}

struct Node {
    name: String,
    client_port: u16,
    kind: NodeKind,
    running: bool,
    partitioned: bool,
}

/// Three clustered NATS servers (JetStream, file store).
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: Vec<String>,
    /// The private network (containers only); dropped after the nodes.
    network: Option<Network>,
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream has a meta leader. `None` (skip) when
    /// there is neither Docker nor `nats-server` and `CI` is unset; panics under `CI`.
    pub async fn start() -> Option<NatsCluster> {
        let forced = std::env::var("QW_NATS_BACKEND").unwrap_or_default();
        let use_containers = match forced.as_str() {
            "process" => false,
            "container" => true,
            _ => docker::nats_image().is_ok(),
        };
        let cluster = if use_containers {
            Self::start_containers().await
        } else {
            match server_binary() {
                Ok(bin) => Self::start_processes(bin.path.clone()).await,
                Err(no_bin) => {
                    return super::skip_or_panic(&format!(
                        "a NATS cluster needs Docker ({}) or nats-server ({no_bin})",
                        docker::nats_image().err().unwrap_or_default()
                    ));
                }
            }
        };
        cluster.wait_jetstream_ready(Duration::from_secs(60)).await;
        Some(cluster)
    }

    async fn start_containers() -> NatsCluster {
        let (image, tag) = docker::nats_image().unwrap_or_else(|e| panic!("{e}"));
        let network = Network::create("cluster");
        let names: Vec<String> = (0..3).map(|i| format!("{}-n{i}", network.name)).collect();
        let routes: Vec<String> = names.iter().map(|n| format!("nats://{n}:6222")).collect();
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let others: Vec<&str> = (0..3)
                .filter(|j| *j != i)
                .map(|j| routes[j].as_str())
                .collect();
            let mut last_err = String::new();
            let mut started = None;
            for _ in 0..3 {
                let port = free_port();
                let req = GenericImage::new(image.clone(), tag.clone())
                    .with_wait_for(WaitFor::message_on_stderr(
                        "Listening for client connections",
                    ))
                    .with_cmd(node_args(
                        &format!("n{i}"),
                        "0.0.0.0",
                        4222,
                        6222,
                        &others,
                        "/tmp/nats",
                    ))
                    .with_network(network.name.clone())
                    .with_container_name(name.clone())
                    .with_label(docker::LABEL, "1")
                    .with_mapped_port(port, 4222.tcp())
                    .with_startup_timeout(Duration::from_secs(60));
                match req.start().await {
                    Ok(c) => {
                        started = Some((c, port));
                        break;
                    }
                    Err(e) => {
                        last_err = e.to_string();
                        let _ = docker::cli(&["rm", "-f", name], 30);
                    }
                }
            }
            let Some((container, port)) = started else {
                panic!("cluster node {name} did not start: {last_err}");
            };
            nodes.push(Node {
                name: name.clone(),
                client_port: port,
                kind: NodeKind::Container {
                    _container: Box::new(container),
                    name: name.clone(),
                },
                running: true,
                partitioned: false,
            });
        }
        let cluster = NatsCluster {
            nodes,
            routes,
            network: Some(network),
        };
        for i in 0..3 {
            cluster.wait_client_port(i).await;
        }
        eprintln!(
            "cluster harness: 3 containers of {image}:{tag}{} on network {}",
            docker::nats_image_version(),
            cluster
                .network
                .as_ref()
                .map(|n| n.name.as_str())
                .unwrap_or("")
        );
        cluster
    }

    async fn start_processes(bin: PathBuf) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
            .collect();
        let mut cluster = NatsCluster {
            nodes: Vec::new(),
            routes,
            network: None,
        };
        for (i, (client_port, cluster_port)) in ports.into_iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix("qw-cluster-")
                .tempdir()
                .expect("temp dir for a cluster node");
            cluster.nodes.push(Node {
                name: format!("n{i}"),
                client_port,
                kind: NodeKind::Process {
                    bin: bin.clone(),
                    dir,
                    cluster_port,
                    child: None,
                },
                running: false,
                partitioned: false,
            });
        }
        for i in 0..3 {
            cluster.spawn_process(i);
        }
        for i in 0..3 {
            cluster.wait_process_ready(i, 0).await;
        }
        eprintln!(
            "cluster harness: 3 nats-server processes on loopback ({})",
            describe_binary()
        );
        cluster
    }

    /// Whether the nodes are containers.
    pub fn is_containers(&self) -> bool {
        self.network.is_some()
    }

    /// `nats://127.0.0.1:<p0>,nats://127.0.0.1:<p1>,nats://127.0.0.1:<p2>`: what `nats_url` gets.
    pub fn urls(&self) -> String {
        (0..3).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// Client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// SIGKILLs node `i` (`docker kill` for a container). Its store is kept.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        match &mut node.kind {
            NodeKind::Process { child, .. } => super::kill_child(child),
            NodeKind::Container { name, .. } => docker::kill(name),
        }
        node.running = false;
        node.partitioned = false;
    }

    /// Starts node `i` again on the same ports with the same store; waits until it listens.
    pub async fn restart(&mut self, i: usize) {
        assert!(!self.nodes[i].running, "node {i} is running");
        let ready_before = self.log(i).matches(READY_LINE).count();
        match &self.nodes[i].kind {
            NodeKind::Process { .. } => {
                self.spawn_process(i);
                self.wait_process_ready(i, ready_before).await;
            }
            NodeKind::Container { name, .. } => {
                docker::cli_ok(&["start", name]);
                let deadline = Instant::now() + Duration::from_secs(30);
                while self.log(i).matches(READY_LINE).count() <= ready_before {
                    assert!(
                        Instant::now() < deadline,
                        "node {i} not ready after restart:\n{}",
                        tail(&self.log(i), 30)
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.nodes[i].running = true;
                self.wait_client_port(i).await;
            }
        }
        self.nodes[i].running = true;
    }

    /// Cuts node `i` off: a container leaves the network, a process is frozen (SIGSTOP).
    pub fn partition(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.running && !node.partitioned, "node {i} is not up");
        match &node.kind {
            NodeKind::Process { child, .. } => signal(child, "STOP"),
            NodeKind::Container { name, .. } => {
                self.network
                    .as_ref()
                    .expect("containers have a network")
                    .disconnect(name);
            }
        }
        node.partitioned = true;
    }

    /// Ends the partition of node `i`.
    pub async fn heal(&mut self, i: usize) {
        assert!(self.nodes[i].partitioned, "node {i} is not partitioned");
        match &self.nodes[i].kind {
            NodeKind::Process { child, .. } => signal(child, "CONT"),
            NodeKind::Container { name, .. } => {
                let net = self.network.as_ref().expect("containers have a network");
                net.connect(name, name);
                self.wait_client_port(i).await;
            }
        }
        self.nodes[i].partitioned = false;
    }

    /// The server log of node `i`.
    pub fn log(&self, i: usize) -> String {
        match &self.nodes[i].kind {
            NodeKind::Process { dir, .. } => std::fs::read(dir.path().join("nats.log"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            NodeKind::Container { name, .. } => docker::logs_all(name),
        }
    }

    /// A client on every node's URL (quick reconnects), for checks from the test.
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<async_nats::ServerAddr> = (0..3)
            .filter(|i| self.nodes[*i].running && !self.nodes[*i].partitioned)
            .map(|i| self.url(i).parse().expect("server address"))
            .collect();
        async_nats::ConnectOptions::new()
            .name("qw-cluster-harness")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .connect(urls)
            .await
            .unwrap_or_else(|e| panic!("connect to the cluster ({}): {e}", self.urls()))
    }

    /// Waits until `$JS.API.INFO` answers without error (JetStream has a meta leader). The
    /// answer is read as plain JSON: async-nats 0.51 cannot decode 2.9's account info.
    pub async fn wait_jetstream_ready(&self, timeout: Duration) {
        let client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            let last = match client.request("$JS.API.INFO", "".into()).await {
                Ok(msg) => match serde_json::from_slice::<serde_json::Value>(&msg.payload) {
                    Ok(v) if v.get("error").is_none() => return,
                    Ok(v) => v["error"].to_string(),
                    Err(e) => format!("not JSON: {e}"),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "JetStream not ready within {timeout:?}: {last}\n--- n0 log ---\n{}",
                    tail(&self.log(0), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `stream` has a leader and, with `all_current`, every replica is current
    /// (a restarted node has caught up).
    pub async fn wait_stream_healthy(&self, stream: &str, all_current: bool, timeout: Duration) {
        let js = async_nats::jetstream::new(self.client().await);
        let deadline = Instant::now() + timeout;
        loop {
            let last = match js.get_stream(stream).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => match &info.cluster {
                        Some(c) if c.leader.is_some() => {
                            let lagging: Vec<String> = c
                                .replicas
                                .iter()
                                .filter(|r| !r.current || r.offline)
                                .map(|r| r.name.clone())
                                .collect();
                            if !all_current || (lagging.is_empty() && c.replicas.len() == 2) {
                                return;
                            }
                            format!("replicas not current: {lagging:?} of {:?}", c.replicas)
                        }
                        other => format!("no leader: {other:?}"),
                    },
                    Err(e) => format!("info: {e}"),
                },
                Err(e) => format!("get stream: {e}"),
            };
            if Instant::now() >= deadline {
                panic!("stream {stream} not healthy within {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_client_port(&self, i: usize) {
        if let Err(e) = wait_nats_info(self.nodes[i].client_port, Duration::from_secs(30)).await {
            panic!(
                "node {i} ({}) answers no INFO on 127.0.0.1:{}: {e}\n{}",
                self.nodes[i].name,
                self.nodes[i].client_port,
                tail(&self.log(i), 30)
            );
        }
    }

    fn spawn_process(&mut self, i: usize) {
        let client_port = self.nodes[i].client_port;
        let others: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| self.routes[j].clone())
            .collect();
        let node = &mut self.nodes[i];
        let NodeKind::Process {
            bin,
            dir,
            cluster_port,
            child,
        } = &mut node.kind
        else {
            unreachable!("process node");
        };
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        let store = dir.path().join("store").to_string_lossy().into_owned();
        let mut args = node_args(
            &node.name,
            "127.0.0.1",
            client_port,
            *cluster_port,
            &others,
            &store,
        );
        args.extend([
            "-l".to_string(),
            dir.path().join("nats.log").to_string_lossy().into_owned(),
        ]);
        let spawned = Command::new(&*bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        *child = Some(spawned);
        node.running = true;
    }

    async fn wait_process_ready(&mut self, i: usize, ready_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log(i).matches(READY_LINE).count() > ready_before {
                break;
            }
            if let NodeKind::Process { child: Some(c), .. } = &mut self.nodes[i].kind
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "cluster node {i} exited with {status}:\n{}",
                    tail(&self.log(i), 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "cluster node {i} not ready:\n{}",
                tail(&self.log(i), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_client_port(i).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if std::thread::panicking() {
                eprintln!(
                    "----- cluster node {i} ({}), last 25 log lines -----\n{}",
                    self.nodes[i].name,
                    tail(&self.log(i), 25)
                );
            }
            // SIGKILL also ends a frozen (SIGSTOP) process.
            if let NodeKind::Process { child, .. } = &mut self.nodes[i].kind {
                super::kill_child(child);
            }
        }
        // Containers go first (their drop removes them), then the network.
        self.nodes.clear();
        self.network.take();
    }
}

/// Server arguments of one node (`-n`, client and cluster listeners, routes to the others).
fn node_args(
    name: &str,
    host: &str,
    port: u16,
    cluster_port: u16,
    routes: &[&str],
    store: &str,
) -> Vec<String> {
    vec![
        "-js".into(),
        "-sd".into(),
        store.into(),
        "-n".into(),
        name.into(),
        "-a".into(),
        host.into(),
        "-p".into(),
        port.to_string(),
        "--cluster_name".into(),
        CLUSTER_NAME.into(),
        "--cluster".into(),
        format!("nats://{host}:{cluster_port}"),
        "--routes".into(),
        routes.join(","),
        "--no_advertise".into(),
    ]
}

fn signal(child: &Option<Child>, sig: &str) {
    if let Some(c) = child {
        super::send_signal(c.id(), sig);
    }
}
