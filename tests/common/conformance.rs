//! The conformance suites' harness (`tests/broker_conformance.rs`,
//! `tests/operate_conformance.rs`): one behaviour, written once as an `async fn(&Harness)`, run
//! against the in-process broker modelling each supported server version and against the real
//! server the test beds start.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue_worker::broker::jetstream::{JetStreamBroker, NatsOptions};
use queue_worker::broker::memory::{MemoryBroker, MemoryLimits};
use queue_worker::broker::{
    Admin, Broker, ConsumerSpec, Delivery, Outgoing, PubAck, ServerVersion, StreamSpec,
    Subscription,
};
use queue_worker::clock::SystemClock;
use queue_worker::config::Storage;
use tokio::time::{Instant, sleep, timeout};

/// Ack wait of most tests: short, so real-server tests stay fast.
pub const ACK_WAIT: Duration = Duration::from_secs(1);
/// Enough for anything that should happen "at once" against a real server.
pub const PROMPTLY: Duration = Duration::from_secs(3);

pub struct Harness {
    pub broker: Arc<dyn Broker>,
    /// The server's version (the model's, for the in-process broker).
    pub version: ServerVersion,
    pub kind: Kind,
    /// Queue name unique to this test: stream `OF_<queue>`, subjects `<queue>`, `<queue>.>`.
    pub queue: String,
}

pub enum Kind {
    Memory(MemoryBroker),
    Nats {
        js: Box<async_nats::jetstream::Context>,
        _server: Box<super::nats::NatsServer>,
    },
}

impl Harness {
    pub fn memory() -> Harness {
        Self::memory_with(MemoryLimits::default())
    }

    pub fn memory_with(limits: MemoryLimits) -> Harness {
        Self::memory_modelling(limits, ServerVersion::NEWEST)
    }

    pub fn memory_modelling(limits: MemoryLimits, version: ServerVersion) -> Harness {
        let broker = MemoryBroker::modelling(Arc::new(SystemClock), limits, version);
        Harness {
            broker: Arc::new(broker.clone()),
            version,
            kind: Kind::Memory(broker),
            queue: super::unique_name("cq"),
        }
    }

    pub async fn nats() -> Option<Harness> {
        let server = super::nats::NatsServer::start().await?;
        Some(Self::on_server(server).await)
    }

    pub async fn on_server(server: super::nats::NatsServer) -> Harness {
        let opts = NatsOptions {
            urls: vec![server.url()],
            name: "conformance".into(),
            request_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let broker = JetStreamBroker::connect(&opts, || {})
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()));
        let js = server.jetstream().await;
        let version = broker
            .server_version()
            .unwrap_or_else(|| panic!("nats-server at {} did not say its version", server.url()));
        eprintln!("conformance: nats-server {version}");
        Harness {
            broker: Arc::new(broker),
            version,
            kind: Kind::Nats {
                js: Box::new(js),
                _server: Box::new(server),
            },
            queue: super::unique_name("cq"),
        }
    }

    /// A real server that can be killed and restarted with its store (see
    /// [`super::nats::NatsServer::start_restartable`]).
    pub async fn nats_restartable() -> Option<Harness> {
        let server = super::nats::NatsServer::start_restartable().await?;
        Some(Self::on_server(server).await)
    }

    /// Restart the broker with file storage: SIGKILL and relaunch on the same store for a
    /// real server, [`MemoryBroker::restart`] for the model.
    pub async fn restart(&mut self) {
        match &mut self.kind {
            Kind::Memory(m) => m.restart(true),
            Kind::Nats { _server, .. } => _server.restart().await,
        }
    }

    pub fn is_memory(&self) -> bool {
        matches!(self.kind, Kind::Memory(_))
    }

    /// How much earlier than planned a timed event may be seen (the server's timer starts
    /// before the client sees the delivery).
    pub fn early(&self) -> Duration {
        if self.is_memory() {
            Duration::ZERO
        } else {
            Duration::from_millis(150)
        }
    }

    /// How much later than planned a timed event may be seen.
    pub fn late(&self) -> Duration {
        if self.is_memory() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(900)
        }
    }

    pub fn stream(&self) -> StreamSpec {
        StreamSpec::work_queue(&self.queue, Storage::File, 1)
    }

    pub fn stream_name(&self) -> String {
        self.stream().name
    }

    /// `<queue>.<function>.openfaas-fn`.
    pub fn subject(&self, function: &str) -> String {
        format!("{}.{function}.openfaas-fn", self.queue)
    }

    pub fn consumer(&self, name: &str, filter: Option<String>) -> ConsumerSpec {
        ConsumerSpec {
            stream: self.stream_name(),
            name: name.to_string(),
            filter_subject: filter,
            ack_wait: ACK_WAIT,
            inactive_threshold: None,
            pull_batch: 1,
            recreate: true,
            memory_storage: false,
        }
    }

    pub async fn subscribe(&self, spec: &ConsumerSpec) -> Box<dyn Subscription> {
        match self.broker.subscribe(&self.stream(), spec).await {
            Ok(s) => s,
            Err(e) => panic!("subscribe {}: {e}", spec.name),
        }
    }

    pub async fn publish(&self, subject: &str, body: &str) -> PubAck {
        self.publish_with_id(subject, body, None).await
    }

    pub async fn publish_with_id(&self, subject: &str, body: &str, id: Option<&str>) -> PubAck {
        let msg = Outgoing {
            subject: subject.to_string(),
            msg_id: id.map(str::to_string),
            headers: vec![("X-Test".into(), "yes".into())],
            payload: Bytes::from(body.to_string()),
        };
        match self.broker.publish(msg).await {
            Ok(a) => a,
            Err(e) => panic!("publish to {subject}: {e}"),
        }
    }

    /// Messages stored in the test's stream.
    pub async fn messages(&self) -> u64 {
        match self.broker.stream_info(&self.stream_name(), None).await {
            Ok(Some(info)) => info.messages,
            Ok(None) => 0,
            Err(e) => panic!("stream info: {e}"),
        }
    }

    pub async fn consumer_exists(&self, name: &str) -> bool {
        match self.broker.consumer_exists(&self.stream_name(), name).await {
            Ok(b) => b,
            Err(e) => panic!("consumer info {name}: {e}"),
        }
    }

    /// `nats stream delete`.
    pub async fn delete_stream(&self, name: &str) {
        match &self.kind {
            Kind::Memory(m) => assert!(m.delete_stream(name), "stream {name} existed"),
            Kind::Nats { js, .. } => {
                js.delete_stream(name)
                    .await
                    .unwrap_or_else(|e| panic!("delete stream {name}: {e}"));
            }
        }
    }

    /// Asserts `elapsed` is `planned`, within this broker's tolerances.
    pub fn assert_timing(&self, what: &str, elapsed: Duration, planned: Duration) {
        let lo = planned.saturating_sub(self.early());
        let hi = planned + self.late();
        assert!(
            elapsed >= lo && elapsed <= hi,
            "{what}: after {elapsed:?}, expected {planned:?} (allowed {lo:?}..={hi:?})"
        );
    }
}

/// The next delivery within `within`, skipping transient errors; `None` on timeout.
pub async fn recv(sub: &mut Box<dyn Subscription>, within: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + within;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            sub.next(),
        )
        .await
        {
            Err(_) => return None,
            Ok(Some(Ok(d))) => return Some(d),
            Ok(Some(Err(e))) => {
                eprintln!("transient subscription error: {e}");
                sleep(Duration::from_millis(50)).await;
            }
            Ok(None) => panic!("subscription closed"),
        }
    }
}

/// Like [`recv`] but the delivery must come.
pub async fn expect(sub: &mut Box<dyn Subscription>, within: Duration, what: &str) -> Delivery {
    match recv(sub, within).await {
        Some(d) => d,
        None => panic!("no delivery within {within:?}: {what}"),
    }
}

/// Polls `f` (tokio time, so paused-time tests run it instantly) until true; returns how long it
/// took; panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            panic!("not within {within:?}: {what}");
        }
        sleep(Duration::from_millis(20)).await;
    }
}

pub fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
}

/// The server versions the in-process broker models (each behaviour runs against both).
pub const MODELS: [ServerVersion; 2] = [ServerVersion::NATS_2_9, ServerVersion::NEWEST];

#[allow(unused_macros)]
macro_rules! conformance_tests {
    ($($test:ident => $memory:ident, $nats:ident;)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $memory() {
            for version in $crate::common::conformance::MODELS {
                eprintln!("conformance: the in-process broker modelling nats-server {version}");
                let h = $crate::common::conformance::Harness::memory_modelling(
                    queue_worker::broker::memory::MemoryLimits::default(),
                    version,
                );
                $test(&h).await;
            }
        }

        #[tokio::test]
        async fn $nats() {
            let Some(h) = $crate::common::conformance::Harness::nats().await else { return };
            $test(&h).await;
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use conformance_tests;
