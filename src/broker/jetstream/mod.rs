//! The production broker: NATS JetStream through async-nats.
//!
//! Works with nats-server 2.9 (Debian's) and newer: only 2.9-era stream and consumer fields are
//! used. Facts this code relies on (checked against nats-server 2.9.10):
//! - pulling is demand-driven (`pull.rs`): a lost pull request (server restart,
//!   disconnect) shows up as silence on the inbox, after which the puller checks that the
//!   consumer still exists, recreates it if needed, and asks again.
//!
//! Connecting: credentials (`auth.rs`), TLS (`tls.rs`), and which failures will not heal by
//! trying again (`refusal.rs`).

mod auth;
mod consumers;
mod delivery;
mod handles;
mod kv;
mod objects;
mod operate;
mod pull;
mod refusal;
mod resolve;
mod streams;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self};
use async_trait::async_trait;

use crate::broker::{
    Admin, BrokerError, Consume, ConsumerSpec, MSG_ID_HEADER, Outgoing, PubAck, Publish,
    ServerVersion, StreamInfo, StreamSpec, StreamStatus, Subscription,
};

use consumers::consumer_exists;
use pull::DemandPuller;
pub use resolve::no_host_resolves;
use streams::CONSUMER_NOT_FOUND;
use streams::{api_code, ensure_stream, stream_if_exists};

pub use auth::NatsAuth;
pub use refusal::{ConnectFailure, Refusal};
pub use tls::{ClientCert, NatsTls};

/// How to reach NATS.
#[derive(Clone)]
pub struct NatsOptions {
    /// One or more server URLs (a cluster); credentials written into them are used when
    /// `auth` is [`NatsAuth::None`].
    pub urls: Vec<String>,
    /// How the worker authenticates.
    pub auth: NatsAuth,
    /// TLS to the servers.
    pub tls: NatsTls,
    /// Client name shown by the server (`queue-worker`).
    pub name: String,
    /// Bound on every JetStream API request.
    pub request_timeout: Duration,
    /// Bound on waiting for a PubAck (the ingress answers 503 after it).
    pub publish_timeout: Duration,
}

impl std::fmt::Debug for NatsOptions {
    /// The URLs without their credentials; the auth and TLS settings are paths, not secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("urls", &auth::split_credentials(&self.urls).urls)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .field("request_timeout", &self.request_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .finish()
    }
}

impl Default for NatsOptions {
    /// `nats://127.0.0.1:4222`, no credentials, TLS only when the server asks, the worker's
    /// name and bounds.
    fn default() -> NatsOptions {
        NatsOptions {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            name: "queue-worker".to_string(),
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// JetStream implementation of the [`crate::broker::Broker`] port.
pub struct JetStreamBroker {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Bound on one whole publish (send and PubAck).
    publish_timeout: Duration,
    /// Key-value bucket handles already looked up (one stream-info request saved per call).
    kv_stores: handles::Handles<jetstream::kv::Store>,
    /// Object bucket handles already looked up.
    object_stores: handles::Handles<jetstream::object_store::ObjectStore>,
}

impl JetStreamBroker {
    /// Connect once (the caller retries with back-off). `on_reconnect` runs each time the
    /// connection comes back after a loss.
    ///
    /// # Errors
    ///
    /// [`ConnectFailure::Refused`] when trying again cannot help (credentials refused, a TLS
    /// certificate problem, a secret or certificate file that cannot be used), naming the
    /// setting to fix; [`ConnectFailure::Unreachable`] otherwise.
    pub async fn connect(
        opts: &NatsOptions,
        on_reconnect: impl Fn() + Send + Sync + 'static,
    ) -> Result<JetStreamBroker, ConnectFailure> {
        let split = auth::split_credentials(&opts.urls);
        let url_list = split.urls.join(",");
        let secured = opts.auth.options(split.credentials.as_ref()).await?;
        let secured = opts.tls.apply(secured)?;
        let addrs = server_addrs(&split.urls)?;
        let client = with_events(secured, opts, on_reconnect)
            .connect(addrs)
            .await
            .map_err(|e| {
                let auth_settings = opts.auth.settings(split.credentials.is_some());
                refusal::classify(e, auth_settings, opts.tls.settings(), &url_list)
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(opts.request_timeout)
            .ack_timeout(opts.publish_timeout)
            .build(client.clone());
        Ok(JetStreamBroker {
            client,
            js,
            publish_timeout: opts.publish_timeout,
            kv_stores: Default::default(),
            object_stores: Default::default(),
        })
    }

    /// The underlying client (tests and tools).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// `urls` joined with commas, without the credentials any of them carries: safe to log.
pub fn urls_for_logs(urls: &[String]) -> String {
    auth::split_credentials(urls).urls.join(",")
}

/// `options` with the client's name, bounds and connection events: losses are logged and each
/// reconnection after a loss runs `on_reconnect`.
fn with_events(
    options: async_nats::ConnectOptions,
    opts: &NatsOptions,
    on_reconnect: impl Fn() + Send + Sync + 'static,
) -> async_nats::ConnectOptions {
    let lost = Arc::new(AtomicBool::new(false));
    let last = Arc::new(LastEvent::default());
    let on_reconnect = Arc::new(on_reconnect);
    options
        .name(&opts.name)
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(10))
        .request_timeout(Some(opts.request_timeout))
        .event_callback(move |event| {
            let lost = lost.clone();
            let last = last.clone();
            let on_reconnect = on_reconnect.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        lost.store(true, Ordering::SeqCst);
                        tracing::warn!("NATS disconnected; reconnecting");
                    }
                    async_nats::Event::Connected => {
                        last.forget();
                        if lost.swap(false, Ordering::SeqCst) {
                            on_reconnect();
                            tracing::info!("NATS reconnected");
                        }
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        tracing::debug!("NATS slow consumer")
                    }
                    // The same error on every reconnect attempt is one state, logged once.
                    other => {
                        let text = other.to_string();
                        if last.is_new(&text) {
                            tracing::info!(event = %text, "NATS event");
                        } else {
                            tracing::debug!(event = %text, "NATS event (again)");
                        }
                    }
                }
            }
        })
}

/// The last connection event logged, so that a repetition (the same error on every reconnect
/// attempt while NATS is away) is not logged at info again.
#[derive(Default)]
struct LastEvent(std::sync::Mutex<Option<String>>);

impl LastEvent {
    /// Whether `text` differs from the last event seen; it becomes the last.
    fn is_new(&self, text: &str) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() == Some(text) {
            return false;
        }
        *last = Some(text.to_string());
        true
    }

    /// Connected again: whatever comes next is news.
    fn forget(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// The server addresses of `urls` (already without credentials).
fn server_addrs(urls: &[String]) -> Result<Vec<async_nats::ServerAddr>, BrokerError> {
    urls.iter()
        .map(|u| {
            u.parse().map_err(|e| BrokerError::Connect {
                url: u.clone(),
                reason: format!("invalid NATS URL: {e}"),
            })
        })
        .collect()
}

#[async_trait]
impl Publish for JetStreamBroker {
    async fn publish(&self, msg: Outgoing) -> Result<PubAck, BrokerError> {
        // While disconnected async-nats would buffer the publish and we would wait for a PubAck
        // until the timeout: answer at once instead (the caller maps this to 503).
        if !self.is_connected() {
            return Err(BrokerError::Disconnected);
        }
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in &msg.headers {
            headers.append(k.as_str(), v.as_str());
        }
        if let Some(id) = &msg.msg_id {
            headers.insert(MSG_ID_HEADER, id.as_str());
        }
        let map_err =
            |e: async_nats::jetstream::context::PublishError, subject: &str| match e.kind() {
                PublishErrorKind::StreamNotFound => BrokerError::NoStream {
                    subject: subject.to_string(),
                },
                PublishErrorKind::TimedOut => BrokerError::Timeout {
                    what: "PubAck".into(),
                },
                PublishErrorKind::MaxPayloadExceeded => BrokerError::TooLarge(e.to_string()),
                _ => BrokerError::other("publish", e),
            };
        // The connection can be dead before the client notices: bound the whole exchange.
        let exchange = async {
            let ack_future = self
                .js
                .publish_with_headers(msg.subject.clone(), headers, msg.payload)
                .await
                .map_err(|e| map_err(e, &msg.subject))?;
            ack_future.await.map_err(|e| map_err(e, &msg.subject))
        };
        let ack = tokio::time::timeout(self.publish_timeout, exchange)
            .await
            .map_err(|_| BrokerError::Timeout {
                what: "PubAck".into(),
            })??;
        Ok(PubAck {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

#[async_trait]
impl Consume for JetStreamBroker {
    async fn subscribe(
        &self,
        stream: &StreamSpec,
        consumer: &ConsumerSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let puller = DemandPuller::start(
            self.client.clone(),
            self.js.clone(),
            stream.clone(),
            consumer.clone(),
        )
        .await?;
        Ok(Box::new(puller))
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        match tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
            Ok(r) => r.map_err(|e| BrokerError::other("flush", e)),
            Err(_) => Err(BrokerError::Timeout {
                what: "flush".into(),
            }),
        }
    }
}

#[async_trait]
impl Admin for JetStreamBroker {
    async fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamStatus, BrokerError> {
        ensure_stream(&self.js, spec).await
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<bool, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(false);
        };
        match s.delete_consumer(name).await {
            Ok(_) => Ok(true),
            Err(e) => match e.kind() {
                ConsumerErrorKind::JetStream(inner) if api_code(&inner) == CONSUMER_NOT_FOUND => {
                    Ok(false)
                }
                _ => Err(BrokerError::other("delete consumer", e)),
            },
        }
    }

    async fn consumer_exists(&self, stream: &str, name: &str) -> Result<bool, BrokerError> {
        consumer_exists(&self.js, stream, name).await
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<String>, BrokerError> {
        use futures::TryStreamExt;
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(Vec::new());
        };
        s.consumer_names()
            .try_collect()
            .await
            .map_err(|e| BrokerError::other("list consumers", e))
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn server_version(&self) -> Option<ServerVersion> {
        let info = self.client.try_server_info()?;
        ServerVersion::parse(&info.version)
    }

    fn schedules_messages(&self) -> bool {
        self.server_version()
            .is_some_and(|v| v.schedules_messages())
    }

    fn max_payload(&self) -> Option<usize> {
        let info = self.client.try_server_info()?;
        (info.max_payload > 0).then_some(info.max_payload)
    }

    async fn stream_info(
        &self,
        stream: &str,
        subjects: Option<&str>,
    ) -> Result<Option<StreamInfo>, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(None);
        };
        let Some(filter) = subjects else {
            let state = &s.cached_info().state;
            return Ok(Some(StreamInfo {
                messages: state.messages,
                bytes: state.bytes,
                subjects: Default::default(),
            }));
        };
        use futures::StreamExt as _;
        let mut pages = s
            .info_with_subjects(filter)
            .await
            .map_err(|e| BrokerError::other("stream info", e))?;
        let mut info = StreamInfo {
            messages: pages.info.state.messages,
            bytes: pages.info.state.bytes,
            subjects: Default::default(),
        };
        while let Some(entry) = pages.next().await {
            let (subject, count) = entry.map_err(|e| BrokerError::other("stream info", e))?;
            info.subjects.insert(subject, count as u64);
        }
        Ok(Some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::LastEvent;

    #[test]
    fn a_repeated_connection_event_is_news_once_until_connected_again() {
        let last = LastEvent::default();
        let io = "IO error: Connection refused (os error 111)";
        assert!(last.is_new(io));
        assert!(
            !last.is_new(io),
            "the same error on the next reconnect attempt"
        );
        assert!(last.is_new("timed out"), "another error is news");
        assert!(last.is_new(io));
        last.forget();
        assert!(
            last.is_new(io),
            "after a connection, the old error is news again"
        );
    }
}
