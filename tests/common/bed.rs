//! The test bed of the real-NATS suites: a NATS server (or a three-node cluster), a fake function
//! gateway, optionally a callback receiver and a freezable proxy, a unique queue, and `queue-worker
//! run` processes against them, assembled with named options:
//!
//! ```ignore
//! let Some((bed, w)) = Bed::new("e2e")
//!     .function(|req, n| Reply::ok(req.body.clone()))
//!     .callback_receiver()
//!     .ingress()
//!     .env("ack_wait", "2s")
//!     .start()
//!     .await
//! else {
//!     return; // no NATS and CI unset: SKIPPED was printed (under CI: a panic)
//! };
//! ```
//!
//! The server comes from [`NatsServer::start`] (or `start_restartable`, or a container) and the
//! cluster from [`NatsCluster::start`], so `NATS_URL`, `QW_NATS_BACKEND` and `QW_NATS_VERSION`
//! choose it as for every suite. [`Bed::start`] also starts the first worker;
//! [`Bed::start_without_worker`] leaves that to the test ([`TestBed::start_worker`], or
//! [`TestBed::worker`] for a worker with other settings).

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;

use super::cluster::NatsCluster;
use super::docker;
use super::http::{CallbackReceiver, FunctionServer, Recorded, Reply};
use super::load::Target;
use super::nats::NatsServer;
use super::proxy::Proxy;
use super::worker::{Worker, WorkerSpec, stream_messages};

type Responder = Box<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// Which NATS a [`Bed`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    /// [`NatsServer::start`]: external, container or process, as the harness picks.
    Any,
    /// [`NatsServer::start_restartable`].
    Restartable,
    /// [`NatsServer::start_container`], on a fixed host port when `restartable`.
    Container { restartable: bool },
}

/// Builder of a [`TestBed`]; `N` is [`NatsServer`] or, after [`Bed::cluster`], [`NatsCluster`].
pub struct Bed<N = NatsServer> {
    name: String,
    server: Server,
    function: Option<Responder>,
    receiver: Option<Option<Responder>>,
    proxy: bool,
    ingress: bool,
    env: Vec<(String, String)>,
    _nats: PhantomData<N>,
}

impl Bed<NatsServer> {
    /// A bed whose queue is `common::unique_name(name)`: one NATS server, an echo function
    /// ([`FunctionServer::echo`]) unless [`Bed::function`] says otherwise, workers without the
    /// ingress and with the harness' defaults (`ack_wait=5s`).
    pub fn new(name: &str) -> Bed<NatsServer> {
        Bed {
            name: name.to_string(),
            server: Server::Any,
            function: None,
            receiver: None,
            proxy: false,
            ingress: false,
            env: Vec::new(),
            _nats: PhantomData,
        }
    }

    /// A server that can be killed and restarted ([`NatsServer::start_restartable`]).
    pub fn restartable(mut self) -> Self {
        self.server = match self.server {
            Server::Container { .. } => Server::Container { restartable: true },
            _ => Server::Restartable,
        };
        self
    }

    /// Always a NATS container, whatever the harness would pick; without Docker: skip (a panic
    /// under CI). With [`Bed::restartable`]: on a fixed host port.
    pub fn in_container(mut self) -> Self {
        let restartable = self.server == Server::Restartable;
        self.server = Server::Container { restartable };
        self
    }

    /// The bed's workers reach NATS through a freezable TCP proxy ([`TestBed::proxy`]);
    /// workers from [`TestBed::worker`] connect directly.
    pub fn proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// A three-node cluster ([`NatsCluster`]) instead of one server; workers get every node's
    /// URL and up to 60 s to become ready.
    pub fn cluster(self) -> Bed<NatsCluster> {
        Bed {
            name: self.name,
            server: Server::Any,
            function: self.function,
            receiver: self.receiver,
            proxy: false,
            ingress: self.ingress,
            env: self.env,
            _nats: PhantomData,
        }
    }

    /// Starts the bed and its first worker; `None` when there is no NATS (see the module docs).
    pub async fn start(self) -> Option<(TestBed, Worker)> {
        let bed = self.start_without_worker().await?;
        let worker = bed.start_worker().await;
        Some((bed, worker))
    }

    /// Starts NATS, the function, the receiver and the proxy, but no worker.
    pub async fn start_without_worker(self) -> Option<TestBed> {
        let nats = match self.server {
            Server::Any => NatsServer::start().await?,
            Server::Restartable => NatsServer::start_restartable().await?,
            Server::Container { restartable } => match docker::nats_image() {
                Ok(_) => NatsServer::start_container(restartable).await,
                Err(e) => {
                    return super::skip_or_panic(&format!("the container suite cannot run: {e}"));
                }
            },
        };
        let proxy = match self.proxy {
            true => Some(Proxy::start(nats.port()).await),
            false => None,
        };
        let url = nats.url();
        Some(
            self.assemble(nats, url, proxy, Duration::from_secs(20))
                .await,
        )
    }
}

impl Bed<NatsCluster> {
    /// Starts the cluster and its first worker; `None` when there is none (see the module docs).
    pub async fn start(self) -> Option<(TestBed<NatsCluster>, Worker)> {
        let bed = self.start_without_worker().await?;
        let worker = bed.start_worker().await;
        Some((bed, worker))
    }

    /// Starts the cluster, the function and the receiver, but no worker.
    pub async fn start_without_worker(self) -> Option<TestBed<NatsCluster>> {
        let cluster = NatsCluster::start().await?;
        let urls = cluster.urls();
        Some(
            self.assemble(cluster, urls, None, Duration::from_secs(60))
                .await,
        )
    }
}

impl<N> Bed<N> {
    /// The function gateway answers through `responder` (request, its 0-based call number on
    /// that path) instead of echoing.
    pub fn function<F>(mut self, responder: F) -> Self
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        self.function = Some(Box::new(responder));
        self
    }

    /// A [`CallbackReceiver`] answering 200 ([`TestBed::receiver`], [`TestBed::callback_url`]).
    pub fn callback_receiver(mut self) -> Self {
        self.receiver = Some(None);
        self
    }

    /// A [`CallbackReceiver`] answering through `responder`.
    pub fn callback_responder<F>(mut self, responder: F) -> Self
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        self.receiver = Some(Some(Box::new(responder)));
        self
    }

    /// The bed's workers run the async ingress (`--ingress`, [`Worker::post`]).
    pub fn ingress(mut self) -> Self {
        self.ingress = true;
        self
    }

    /// Sets `key=value` in the bed's workers' environment (overrides the defaults).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// [`Bed::env`] for each pair.
    pub fn envs(self, pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(self, |bed, (k, v)| bed.env(k, v))
    }

    async fn assemble(
        self,
        nats: N,
        nats_url: String,
        proxy: Option<Proxy>,
        ready_timeout: Duration,
    ) -> TestBed<N> {
        let function = match self.function {
            Some(responder) => FunctionServer::start(responder).await,
            None => FunctionServer::echo().await,
        };
        let receiver = match self.receiver {
            Some(Some(responder)) => Some(CallbackReceiver::with_responder(responder).await),
            Some(None) => Some(CallbackReceiver::start().await),
            None => None,
        };
        let queue = super::unique_name(&self.name);
        let spec = WorkerSpec {
            nats_url: proxy
                .as_ref()
                .map_or_else(|| nats_url.clone(), Proxy::nats_url),
            queue: queue.clone(),
            gateway: function.base_url(),
            ingress: self.ingress,
            env: self.env,
            ready_timeout,
            nofile: None,
        };
        TestBed {
            nats,
            nats_url,
            queue,
            function,
            receiver,
            proxy,
            spec,
        }
    }
}

/// A started [`Bed`]. Dropping it stops the function, the receiver and the proxy, and NATS
/// (workers are dropped, so killed, by the test).
pub struct TestBed<N = NatsServer> {
    pub nats: N,
    /// The queue (`queue_name`) of the bed's workers: stream `OF_<queue>`.
    pub queue: String,
    pub function: FunctionServer,
    /// `nats_url` without the proxy.
    nats_url: String,
    receiver: Option<CallbackReceiver>,
    proxy: Option<Proxy>,
    spec: WorkerSpec,
}

impl<N> TestBed<N> {
    /// Starts a worker with the bed's settings (as the first one).
    pub async fn start_worker(&self) -> Worker {
        Worker::start(&self.spec).await
    }

    /// A worker on the bed's queue, NATS (never the proxy) and function, without the bed's
    /// ingress and environment: say what it needs, then [`WorkerBuilder::start`].
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder(WorkerSpec {
            nats_url: self.nats_url.clone(),
            ingress: false,
            env: Vec::new(),
            ..self.spec.clone()
        })
    }

    /// The callback receiver; panics when the bed has none ([`Bed::callback_receiver`]).
    pub fn receiver(&self) -> &CallbackReceiver {
        self.receiver
            .as_ref()
            .expect("no callback receiver: ask for one with Bed::callback_receiver()")
    }

    /// The receiver's URL for `path`, for `X-Callback-Url`.
    pub fn callback_url(&self, path: &str) -> String {
        self.receiver().url(path)
    }

    /// The proxy between the bed's workers and NATS; panics without [`Bed::proxy`].
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("no proxy: ask for one with Bed::proxy()")
    }

    /// A load ([`Target`]) through the ingresses of `workers`, called back at `/done`.
    pub fn target<'a>(&self, workers: impl IntoIterator<Item = &'a Worker>) -> Target {
        Target::new(workers, self.callback_url("/done"))
    }

    /// Waits until every id in `accepted` has a successful callback
    /// ([`super::load::wait_all_called_back`]).
    pub async fn wait_all_called_back(&self, accepted: &HashSet<String>, timeout: Duration) {
        super::load::wait_all_called_back(self.receiver(), accepted, timeout).await;
    }

    /// The accepted ids still without a successful callback after `timeout`
    /// ([`super::load::missing_callbacks`]).
    pub async fn missing_callbacks(
        &self,
        accepted: &HashSet<String>,
        timeout: Duration,
    ) -> Vec<String> {
        super::load::missing_callbacks(self.receiver(), accepted, timeout).await
    }

    /// The work-queue stream, `OF_<queue>`.
    pub fn stream(&self) -> String {
        format!("OF_{}", self.queue)
    }

    /// The dead-letter stream, `OF_<queue>_DLQ`.
    pub fn dlq(&self) -> String {
        format!("OF_{}_DLQ", self.queue)
    }
}

impl TestBed<NatsServer> {
    /// Messages stored in the work queue now.
    pub async fn stream_messages(&self) -> u64 {
        stream_messages(&self.nats, &self.stream()).await
    }

    /// Messages stored in the dead-letter stream now.
    pub async fn dead_letter_count(&self) -> u64 {
        stream_messages(&self.nats, &self.dlq()).await
    }

    /// Waits until the work queue is empty (every message acknowledged or terminated).
    pub async fn wait_drained(&self, timeout: Duration) {
        super::eventually(timeout, "work queue drained", || async {
            self.stream_messages().await == 0
        })
        .await;
    }

    /// Waits until the dead-letter stream holds `n` messages.
    pub async fn wait_dead_letters(&self, n: u64, timeout: Duration) {
        let what = format!("{n} dead letter(s)");
        super::eventually(timeout, &what, || async {
            self.dead_letter_count().await == n
        })
        .await;
    }

    /// Publishes `payload` on `subject` (JetStream) and waits for its PubAck; its sequence.
    pub async fn publish(&self, subject: impl Into<String>, payload: impl Into<Bytes>) -> u64 {
        let subject = subject.into();
        let js = self.nats.jetstream().await;
        let ack = js
            .publish(subject.clone(), payload.into())
            .await
            .unwrap_or_else(|e| panic!("publish to {subject}: {e}"));
        ack.await
            .unwrap_or_else(|e| panic!("PubAck from {subject}: {e}"))
            .sequence
    }

    /// [`TestBed::publish`] on `<queue>.<function>`, e.g. `figlet.openfaas-fn`.
    pub fn publish_to<'a, P: Into<Bytes>>(
        &'a self,
        function: &str,
        payload: P,
    ) -> impl Future<Output = u64> + use<'a, P> {
        self.publish(format!("{}.{function}", self.queue), payload.into())
    }
}

/// A worker with settings of its own (from [`TestBed::worker`]).
pub struct WorkerBuilder(WorkerSpec);

impl WorkerBuilder {
    /// Serves `queue` instead of the bed's.
    pub fn queue(mut self, queue: &str) -> Self {
        self.0.queue = queue.to_string();
        self
    }

    /// Runs the async ingress.
    pub fn ingress(mut self) -> Self {
        self.0.ingress = true;
        self
    }

    /// Sets `key=value` in its environment.
    /// Runs the worker with at most `n` file descriptors.
    pub fn nofile(mut self, n: u64) -> Self {
        self.0.nofile = Some(n);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.0.env.retain(|(k, _)| k != key);
        self.0.env.push((key.to_string(), value.to_string()));
        self
    }

    /// [`WorkerBuilder::env`] for each pair.
    pub fn envs(self, pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(self, |w, (k, v)| w.env(k, v))
    }

    /// Calls functions at `gateway` instead of the bed's function.
    pub fn gateway(mut self, gateway: &str) -> Self {
        self.0.gateway = gateway.to_string();
        self
    }

    /// Spawns it and waits until it is ready.
    pub async fn start(self) -> Worker {
        Worker::start(&self.0).await
    }
}

/// Runs `queue-worker ARGS` against the bed's NATS and queue: exit code, stdout, stderr.
pub async fn cli(bed: &TestBed, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(super::worker_bin())
        .args(args)
        .env("nats_url", bed.nats.url())
        .env("queue_name", &bed.queue)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run queue-worker");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Runs `queue-worker ARGS --json`, expecting exit 0; its JSON.
pub async fn cli_json(bed: &TestBed, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = cli(bed, &all).await;
    assert_eq!(code, 0, "queue-worker {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}
