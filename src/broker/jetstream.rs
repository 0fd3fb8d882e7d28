//! The production broker: NATS JetStream through async-nats.
//!
//! Works with nats-server 2.9 (Debian's) and newer: only 2.9-era stream and consumer fields are
//! used. Facts this code relies on (checked against nats-server 2.9.10):
//! - pulling is demand-driven ([`super::jetstream_pull`]): a lost pull request (server restart,
//!   disconnect) shows up as silence on the inbox, after which the puller checks that the
//!   consumer still exists, recreates it if needed, and asks again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind,
};
use async_nats::jetstream::stream::{self as js_stream, ConsumerErrorKind, DiscardPolicy};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;

use super::jetstream_pull::DemandPuller;
use super::{
    Acker, Admin, BrokerError, Consume, ConsumerSpec, Delivery, KeyValue, KvSpec, MSG_ID_HEADER,
    Outgoing, PubAck, Publish, Retention, StreamInfo, StreamSpec, StreamStatus, Subscription,
};
use crate::config::Storage;

/// Error code the server gives for a missing stream.
const STREAM_NOT_FOUND: u64 = 10059;
/// Error code the server gives for a missing consumer.
const CONSUMER_NOT_FOUND: u64 = 10014;
/// Error code for "stream name already in use" (two replicas creating the stream at once).
const STREAM_NAME_IN_USE: u64 = 10058;

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// One or more server URLs (a cluster).
    pub urls: Vec<String>,
    pub credentials_file: Option<PathBuf>,
    /// Client name shown by the server (`queue-worker`).
    pub name: String,
    /// Bound on every JetStream API request.
    pub request_timeout: Duration,
    /// Bound on waiting for a PubAck (the ingress answers 503 after it).
    pub publish_timeout: Duration,
}

/// JetStream implementation of the [`Broker`] port.
pub struct JetStreamBroker {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Bound on one whole publish (send and PubAck).
    publish_timeout: Duration,
    /// Key-value bucket handles already looked up (one stream-info request saved per call).
    kv_stores: std::sync::Mutex<std::collections::HashMap<String, jetstream::kv::Store>>,
}

impl JetStreamBroker {
    /// Connect once (the caller retries with back-off). `on_reconnect` runs each time the
    /// connection comes back after a loss.
    pub async fn connect(
        opts: &NatsOptions,
        on_reconnect: impl Fn() + Send + Sync + 'static,
    ) -> Result<JetStreamBroker, BrokerError> {
        let url_list = opts.urls.join(",");
        let mut connect = match &opts.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| BrokerError::Connect {
                    url: url_list.clone(),
                    reason: format!("cannot read credentials file {}: {e}", path.display()),
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        let lost = Arc::new(AtomicBool::new(false));
        let on_reconnect = Arc::new(on_reconnect);
        connect = connect
            .name(&opts.name)
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(10))
            .request_timeout(Some(opts.request_timeout))
            .event_callback(move |event| {
                let lost = lost.clone();
                let on_reconnect = on_reconnect.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            lost.store(true, Ordering::SeqCst);
                            tracing::warn!("NATS disconnected; reconnecting");
                        }
                        async_nats::Event::Connected => {
                            if lost.swap(false, Ordering::SeqCst) {
                                on_reconnect();
                                tracing::info!("NATS reconnected");
                            }
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            tracing::debug!("NATS slow consumer")
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        let addrs: Vec<async_nats::ServerAddr> = opts
            .urls
            .iter()
            .map(|u| {
                u.parse().map_err(|e| BrokerError::Connect {
                    url: u.clone(),
                    reason: format!("invalid NATS URL: {e}"),
                })
            })
            .collect::<Result<_, _>>()?;
        let client = connect
            .connect(addrs)
            .await
            .map_err(|e| BrokerError::Connect {
                url: url_list,
                reason: e.to_string(),
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
        })
    }

    /// The underlying client (tests and tools).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

fn js_config(spec: &StreamSpec) -> js_stream::Config {
    js_stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: match spec.retention {
            Retention::WorkQueue => js_stream::RetentionPolicy::WorkQueue,
            Retention::Limits => js_stream::RetentionPolicy::Limits,
        },
        storage: match spec.storage {
            Storage::File => js_stream::StorageType::File,
            Storage::Memory => js_stream::StorageType::Memory,
        },
        num_replicas: spec.replicas,
        duplicate_window: spec.duplicate_window,
        max_age: spec.max_age.unwrap_or_default(),
        max_bytes: spec.max_bytes.unwrap_or(-1),
        discard: DiscardPolicy::Old,
        ..Default::default()
    }
}

fn retention_name(r: js_stream::RetentionPolicy) -> &'static str {
    match r {
        js_stream::RetentionPolicy::Limits => "Limits",
        js_stream::RetentionPolicy::Interest => "Interest",
        js_stream::RetentionPolicy::WorkQueue => "WorkQueue",
    }
}

/// The JetStream error code inside an async-nats error, if any.
fn api_code(e: &async_nats::jetstream::Error) -> u64 {
    e.error_code().0
}

async fn ensure_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<StreamStatus, BrokerError> {
    match js.get_stream(&spec.name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| BrokerError::other("stream info", e))?;
            let want = js_config(spec).retention;
            if info.config.retention != want {
                return Err(BrokerError::IncompatibleStream {
                    stream: spec.name.clone(),
                    found: retention_name(info.config.retention).into(),
                    want: retention_name(want).into(),
                });
            }
            Ok(StreamStatus::Existing)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(inner) if api_code(&inner) == STREAM_NOT_FOUND => {
                match js.create_stream(js_config(spec)).await {
                    Ok(_) => Ok(StreamStatus::Created),
                    Err(e) => match e.kind() {
                        CreateStreamErrorKind::JetStream(inner)
                            if api_code(&inner) == STREAM_NAME_IN_USE =>
                        {
                            Ok(StreamStatus::Existing)
                        }
                        CreateStreamErrorKind::TimedOut => Err(BrokerError::Timeout {
                            what: format!("creating stream {}", spec.name),
                        }),
                        _ => Err(BrokerError::other("create stream", e)),
                    },
                }
            }
            _ => Err(BrokerError::other("get stream", e)),
        },
    }
}

fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.name.clone()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // The worker decides retries (nak with delay) and ends messages with ack or term.
        max_deliver: -1,
        // Retrying messages wait as "ack pending": a limit here would pause the queue.
        max_ack_pending: -1,
        filter_subject: spec.filter_subject.clone().unwrap_or_default(),
        inactive_threshold: spec.inactive_threshold.unwrap_or_default(),
        ..Default::default()
    }
}

pub(super) async fn ensure_consumer(
    js: &jetstream::Context,
    stream_spec: &StreamSpec,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, BrokerError> {
    let status = ensure_stream(js, stream_spec).await?;
    if status == StreamStatus::Created {
        tracing::info!(stream = %stream_spec.name, "Created stream");
    }
    let stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(|e| BrokerError::other("get stream", e))?;
    match stream.create_consumer(consumer_config(spec)).await {
        Ok(c) => Ok(c),
        Err(create_err) => {
            // An existing consumer whose settings cannot be changed in place: use it as it is.
            match stream.get_consumer::<pull::Config>(&spec.name).await {
                Ok(c) => {
                    tracing::warn!(
                        consumer = %spec.name,
                        error = %create_err,
                        "Existing consumer differs from the configuration; using it unchanged"
                    );
                    Ok(c)
                }
                Err(_) => Err(BrokerError::other("create consumer", create_err)),
            }
        }
    }
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

#[async_trait]
impl KeyValue for JetStreamBroker {
    async fn ensure_kv(&self, spec: &KvSpec) -> Result<(), BrokerError> {
        if self.kv_store(&spec.bucket).await.is_ok() {
            return Ok(());
        }
        // Not `create_key_value`: async-nats 0.51 first reads the account info, whose 2.9
        // form it cannot parse (no `reserved_memory`). The bucket is a stream with the KV
        // conventions (what `create_key_value` would create, history 1).
        let config = js_stream::Config {
            name: format!("KV_{}", spec.bucket),
            subjects: vec![format!("$KV.{}.>", spec.bucket)],
            max_messages_per_subject: 1,
            max_age: spec.ttl,
            storage: match spec.storage {
                Storage::File => js_stream::StorageType::File,
                Storage::Memory => js_stream::StorageType::Memory,
            },
            num_replicas: spec.replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        if let Err(e) = self.js.create_stream(config).await {
            match e.kind() {
                // Created meanwhile by another replica.
                CreateStreamErrorKind::JetStream(inner)
                    if api_code(&inner) == STREAM_NAME_IN_USE => {}
                _ => return Err(BrokerError::other("create key-value bucket", e)),
            }
        }
        self.kv_store(&spec.bucket).await.map(drop)
    }

    async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: bytes::Bytes,
    ) -> Result<u64, BrokerError> {
        let store = self.kv_store(bucket).await?;
        store
            .put(key, value)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value put", e))
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<bytes::Bytes>, BrokerError> {
        let store = self.kv_store(bucket).await?;
        store
            .get(key)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value get", e))
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        let store = self.kv_store(bucket).await?;
        store
            .delete(key)
            .await
            .map_err(|e| self.kv_error(bucket, "key-value delete", e))
    }
}

impl JetStreamBroker {
    fn kv_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, jetstream::kv::Store>> {
        self.kv_stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bucket's handle, looked up once; `NoBucket` when its stream does not exist.
    async fn kv_store(&self, bucket: &str) -> Result<jetstream::kv::Store, BrokerError> {
        if let Some(store) = self.kv_cache().get(bucket) {
            return Ok(store.clone());
        }
        if let Err(e) = self.js.get_stream(format!("KV_{bucket}")).await {
            return Err(match e.kind() {
                GetStreamErrorKind::JetStream(inner) if api_code(&inner) == STREAM_NOT_FOUND => {
                    BrokerError::NoBucket {
                        bucket: bucket.to_string(),
                    }
                }
                _ => BrokerError::other("get key-value bucket", e),
            });
        }
        let store = self
            .js
            .get_key_value(bucket)
            .await
            .map_err(|e| BrokerError::other("get key-value bucket", e))?;
        self.kv_cache().insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// Map a key-value error; forget the cached handle in case the bucket was deleted.
    fn kv_error(&self, bucket: &str, op: &'static str, e: impl std::fmt::Display) -> BrokerError {
        self.kv_cache().remove(bucket);
        BrokerError::other(op, e)
    }
}

/// The stream, or `None` when it does not exist.
async fn stream_if_exists(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Option<jetstream::stream::Stream>, BrokerError> {
    match js.get_stream(stream).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(inner) if api_code(&inner) == STREAM_NOT_FOUND => {
                Ok(None)
            }
            _ => Err(BrokerError::other("get stream", e)),
        },
    }
}

pub(super) async fn consumer_exists(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> Result<bool, BrokerError> {
    let Some(s) = stream_if_exists(js, stream).await? else {
        return Ok(false);
    };
    match s.consumer_info(name).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound => Ok(false),
            ConsumerInfoErrorKind::JetStream(inner)
                if matches!(api_code(&inner), CONSUMER_NOT_FOUND | STREAM_NOT_FOUND) =>
            {
                Ok(false)
            }
            // Seen on nats-server 2.9 when the consumer is being deleted while we ask: the
            // answer does not parse. The list of names is the other way to know.
            _ => {
                use futures::TryStreamExt;
                let names: Vec<String> = s
                    .consumer_names()
                    .try_collect()
                    .await
                    .map_err(|_| BrokerError::other("consumer info", e))?;
                Ok(names.iter().any(|n| n == name))
            }
        },
    }
}

pub(super) fn to_delivery(
    msg: jetstream::Message,
    client: &async_nats::Client,
) -> Result<Delivery, BrokerError> {
    let (delivered, stream_sequence, published) = {
        let info = msg
            .info()
            .map_err(|e| BrokerError::other("read delivery info", e))?;
        (
            u64::try_from(info.delivered).unwrap_or(1),
            info.stream_sequence,
            SystemTime::from(info.published),
        )
    };
    let m = msg.message;
    let reply = m
        .reply
        .clone()
        .ok_or_else(|| BrokerError::other("read delivery info", "no reply subject"))?;
    let mut headers = Vec::new();
    if let Some(h) = &m.headers {
        for (name, values) in h.iter() {
            for v in values {
                headers.push((AsRef::<str>::as_ref(name).to_owned(), v.as_str().to_owned()));
            }
        }
    }
    Ok(Delivery {
        subject: m.subject.as_str().to_owned(),
        payload: m.payload,
        headers,
        delivered,
        stream_sequence,
        published,
        acker: Box::new(JsAcker {
            client: client.clone(),
            reply,
        }),
    })
}

#[async_trait]
impl Subscription for DemandPuller {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        DemandPuller::next(self).await
    }
    fn set_demand(&mut self, demand: usize) {
        DemandPuller::set_demand(self, demand)
    }
    fn drain_buffered(&mut self) -> Vec<Delivery> {
        DemandPuller::drain_buffered(self)
    }
}

/// Settles one delivery by publishing to its ack subject (`$JS.ACK.…`, which names the stream,
/// the consumer and the message). Acks, naks and terms are fire and forget, as JetStream acks
/// are; a progress ack asks for the server's answer, so the worker knows its lease was renewed
/// (`src/worker/lease.rs`).
struct JsAcker {
    client: async_nats::Client,
    reply: async_nats::Subject,
}

impl JsAcker {
    async fn send(&self, kind: AckKind, what: &'static str) -> Result<(), BrokerError> {
        self.client
            .publish(self.reply.clone(), kind.into())
            .await
            .map_err(|e| BrokerError::other(what, e))
    }
}

#[async_trait]
impl Acker for JsAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.send(AckKind::Ack, "ack").await
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BrokerError> {
        self.send(AckKind::Nak(delay), "nak").await
    }
    async fn progress(&self) -> Result<(), BrokerError> {
        self.client
            .request(self.reply.clone(), AckKind::Progress.into())
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::other("progress", e))
    }
    async fn term(&self) -> Result<(), BrokerError> {
        self.send(AckKind::Term, "term").await
    }
}
