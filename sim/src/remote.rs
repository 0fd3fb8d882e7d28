//! `RemoteBroker`: the worker's `Broker` port over the simulated network, speaking
//! [`crate::proto`] to the broker host.
//!
//! One TCP connection, multiplexed by request id, opened on demand and reopened after it
//! breaks. turmoil's TCP does not retransmit, so a partition stalls a connection: a ping every
//! second and a read deadline turn a stall into a closed connection, and every request waiting
//! on it fails with `Disconnected` (the worker's loops pace their retries). Acks address the
//! message by a broker-issued token, valid across reconnects (as JetStream ack subjects are).
//! A pull request outlives a cancelled `next` (its answer is kept for the next call), so no
//! delivery is dropped on the floor.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use queue_worker::broker::{
    Acker, Admin, BrokerError, Consume, ConsumerSpec, Delivery, KeyValue, KvSpec, ObjectSpec,
    Objects, Outgoing, PubAck, Publish, ServerVersion, StreamInfo, StreamSpec, StreamStatus,
    Subscription,
};
use queue_worker::config::Storage;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use turmoil::net::TcpStream;

use crate::broker_host::CALL_HEADER;
use crate::header;
use crate::history::{Ev, History, SettleKind};
use crate::proto::{self, Frame, Req, Resp, WSettle};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(1);
/// Nothing heard for this long (pings are answered): the connection is dead.
const READ_DEADLINE: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Resp>>>>;

struct Conn {
    generation: u64,
    tx: mpsc::UnboundedSender<Frame<Req>>,
    pending: Pending,
    dead: CancellationToken,
}

struct Client {
    addr: String,
    name: String,
    hist: History,
    conn: Mutex<Option<Arc<Conn>>>,
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    next_sub: AtomicU64,
    generation: AtomicU64,
    /// The call of each work-queue message delivered here, by stream sequence: a dead letter
    /// that kept no header of its message names only the sequence (in its message id).
    calls: Mutex<BTreeMap<u64, String>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.dead.cancel();
        }
    }
}

/// The `Broker` port over the simulated network.
#[derive(Clone)]
pub struct RemoteBroker {
    c: Arc<Client>,
    server: ServerVersion,
}

impl RemoteBroker {
    /// `addr`: `host:port` of the broker host; `name`: how this client appears in the history.
    /// `server`: the nats-server the broker host behaves as (what `server_version` says).
    pub fn new(addr: &str, name: &str, hist: History, server: ServerVersion) -> RemoteBroker {
        RemoteBroker {
            server,
            c: Arc::new(Client {
                addr: addr.to_string(),
                name: name.to_string(),
                hist,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                next_id: AtomicU64::new(1),
                next_sub: AtomicU64::new(1),
                generation: AtomicU64::new(0),
                calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }
}

impl Client {
    /// The call a message is about: its header, else (a dead letter that kept only its `Qw-*`
    /// headers) the call delivered here with the sequence its message id names.
    fn call_of(&self, msg: &Outgoing) -> String {
        header(&msg.headers, CALL_HEADER)
            .or_else(|| {
                let seq = crate::dead_letter_sequence(msg.msg_id.as_deref()?)?;
                let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
                calls.get(&seq).cloned()
            })
            .unwrap_or_default()
    }

    fn current(&self) -> Option<Arc<Conn>> {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| !c.dead.is_cancelled())
            .cloned()
    }

    async fn connection(&self) -> Result<Arc<Conn>, BrokerError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(BrokerError::Connect {
                        url: self.addr.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(BrokerError::Connect {
                        url: self.addr.clone(),
                        reason: "connect timed out".into(),
                    });
                }
            };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            generation,
            tx: tx.clone(),
            pending: Arc::default(),
            dead: CancellationToken::new(),
        });
        tokio::spawn(io(stream, rx, tx, conn.pending.clone(), conn.dead.clone()));
        let _ = conn.tx.send(Frame {
            id: 0,
            body: Req::Hello {
                name: self.name.clone(),
            },
        });
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// Send `req` on `conn`; the answer arrives on the receiver.
    fn send_on(&self, conn: &Conn, req: Req) -> Result<oneshot::Receiver<Resp>, BrokerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (otx, orx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, otx);
        if conn.dead.is_cancelled() || conn.tx.send(Frame { id, body: req }).is_err() {
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(BrokerError::Disconnected);
        }
        Ok(orx)
    }

    async fn call_on(&self, conn: &Conn, req: Req, timeout: Duration) -> Result<Resp, BrokerError> {
        let what = format!("{req:?}").chars().take(40).collect::<String>();
        let rx = self.send_on(conn, req)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Resp::Err(e))) => Err(e.into()),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(BrokerError::Disconnected),
            Err(_) => Err(BrokerError::Timeout { what }),
        }
    }

    async fn call(&self, req: Req, timeout: Duration) -> Result<Resp, BrokerError> {
        let conn = self.connection().await?;
        self.call_on(&conn, req, timeout).await
    }
}

/// The connection's reader, writer and heartbeat; when any stops, the connection is dead and
/// every waiting request fails.
async fn io(
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Frame<Req>>,
    tx: mpsc::UnboundedSender<Frame<Req>>,
    pending: Pending,
    dead: CancellationToken,
) {
    let (mut rd, mut wr) = stream.into_split();
    let writer = async {
        while let Some(f) = rx.recv().await {
            if proto::write_frame(&mut wr, &f).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        while let Ok(Ok(Some(f))) =
            tokio::time::timeout(READ_DEADLINE, proto::read_frame::<_, Resp>(&mut rd)).await
        {
            let waiter = pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&f.id);
            if let Some(w) = waiter {
                let _ = w.send(f.body);
            }
        }
    };
    let heartbeat = async {
        loop {
            tokio::time::sleep(PING_EVERY).await;
            if tx
                .send(Frame {
                    id: 0,
                    body: Req::Ping,
                })
                .is_err()
            {
                break;
            }
        }
    };
    tokio::select! {
        biased;
        _ = dead.cancelled() => {}
        _ = reader => {}
        _ = writer => {}
        _ = heartbeat => {}
    }
    dead.cancel();
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

fn unexpected(r: Resp) -> BrokerError {
    BrokerError::other("remote broker", format!("unexpected answer {r:?}"))
}

#[async_trait]
impl Publish for RemoteBroker {
    async fn publish(&self, msg: Outgoing) -> Result<PubAck, BrokerError> {
        let dead_letter = msg.subject.contains("_DLQ.");
        let call = self.c.call_of(&msg);
        let r = match self
            .c
            .call(Req::Publish((&msg).into()), REQUEST_TIMEOUT)
            .await
        {
            Ok(Resp::PubAck {
                stream,
                sequence,
                duplicate,
            }) => Ok(PubAck {
                stream,
                sequence,
                duplicate,
            }),
            Ok(r) => Err(unexpected(r)),
            Err(e) => Err(e),
        };
        if dead_letter {
            self.c.hist.record(Ev::WDeadLetter {
                worker: self.c.name.clone(),
                call,
                delivered: header(&msg.headers, "Qw-Attempts")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_default(),
                ok: r.is_ok(),
                too_large: matches!(r, Err(BrokerError::TooLarge(_))),
            });
        }
        r
    }
}

#[async_trait]
impl Consume for RemoteBroker {
    async fn subscribe(
        &self,
        stream: &StreamSpec,
        consumer: &ConsumerSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let mut sub = RemoteSubscription {
            c: self.c.clone(),
            id: self.c.next_sub.fetch_add(1, Ordering::Relaxed),
            stream: stream.clone(),
            consumer: consumer.clone(),
            on: None,
            demand: 1,
            outstanding: None,
            buffer: VecDeque::new(),
        };
        // Create the consumer now, as the port promises.
        sub.ensure().await?;
        Ok(Box::new(sub))
    }
}

#[async_trait]
impl Admin for RemoteBroker {
    async fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamStatus, BrokerError> {
        match self
            .c
            .call(Req::EnsureStream(spec.into()), REQUEST_TIMEOUT)
            .await?
        {
            Resp::Created(true) => Ok(StreamStatus::Created),
            Resp::Created(false) => Ok(StreamStatus::Existing),
            r => Err(unexpected(r)),
        }
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<bool, BrokerError> {
        match self
            .c
            .call(
                Req::DeleteConsumer {
                    stream: stream.into(),
                    name: name.into(),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Resp::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn consumer_exists(&self, stream: &str, name: &str) -> Result<bool, BrokerError> {
        match self
            .c
            .call(
                Req::ConsumerExists {
                    stream: stream.into(),
                    name: name.into(),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Resp::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<String>, BrokerError> {
        match self
            .c
            .call(
                Req::ListConsumers {
                    stream: stream.into(),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Resp::Names(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }

    fn is_connected(&self) -> bool {
        self.c.current().is_some()
    }

    fn server_version(&self) -> Option<ServerVersion> {
        Some(self.server)
    }

    async fn stream_info(
        &self,
        stream: &str,
        subjects: Option<&str>,
    ) -> Result<Option<StreamInfo>, BrokerError> {
        match self
            .c
            .call(
                Req::StreamInfo {
                    stream: stream.into(),
                    subjects: subjects.map(str::to_string),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Resp::Info(i) => Ok(i.map(|(messages, bytes, subjects)| StreamInfo {
                messages,
                bytes,
                subjects: subjects.into_iter().collect(),
            })),
            r => Err(unexpected(r)),
        }
    }
}

/// Operators' commands do not run in the simulation: the port's defaults say so.
impl queue_worker::broker::Operate for RemoteBroker {}

#[async_trait]
impl Objects for RemoteBroker {
    async fn ensure_objects(&self, spec: &ObjectSpec) -> Result<(), BrokerError> {
        let req = Req::EnsureObjects {
            bucket: spec.bucket.clone(),
            ttl: spec.ttl,
            memory: spec.storage == Storage::Memory,
            replicas: spec.replicas,
        };
        self.c.call(req, REQUEST_TIMEOUT).await.map(drop)
    }

    async fn object_put(&self, bucket: &str, name: &str, data: Bytes) -> Result<(), BrokerError> {
        let req = Req::ObjPut {
            bucket: bucket.into(),
            name: name.into(),
            data: data.to_vec(),
        };
        self.c.call(req, REQUEST_TIMEOUT).await.map(drop)
    }

    async fn object_get(&self, bucket: &str, name: &str) -> Result<Option<Bytes>, BrokerError> {
        let req = Req::ObjGet {
            bucket: bucket.into(),
            name: name.into(),
        };
        match self.c.call(req, REQUEST_TIMEOUT).await? {
            Resp::Value(v) => Ok(v.map(Bytes::from)),
            r => Err(unexpected(r)),
        }
    }

    async fn object_delete(&self, bucket: &str, name: &str) -> Result<(), BrokerError> {
        let req = Req::ObjDelete {
            bucket: bucket.into(),
            name: name.into(),
        };
        self.c.call(req, REQUEST_TIMEOUT).await.map(drop)
    }
}

#[async_trait]
impl KeyValue for RemoteBroker {
    async fn ensure_kv(&self, spec: &KvSpec) -> Result<(), BrokerError> {
        self.c
            .call(
                Req::EnsureKv {
                    bucket: spec.bucket.clone(),
                    ttl: spec.ttl,
                    memory: spec.storage == Storage::Memory,
                    replicas: spec.replicas,
                },
                REQUEST_TIMEOUT,
            )
            .await
            .map(|_| ())
    }

    async fn kv_put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, BrokerError> {
        match self
            .c
            .call(
                Req::KvPut {
                    bucket: bucket.into(),
                    key: key.into(),
                    value: value.to_vec(),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Resp::Rev(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, BrokerError> {
        match self
            .c
            .call(
                Req::KvGet {
                    bucket: bucket.into(),
                    key: key.into(),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Resp::Value(v) => Ok(v.map(Bytes::from)),
            r => Err(unexpected(r)),
        }
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        self.c
            .call(
                Req::KvDelete {
                    bucket: bucket.into(),
                    key: key.into(),
                },
                REQUEST_TIMEOUT,
            )
            .await
            .map(|_| ())
    }

    async fn kv_entry(&self, bucket: &str, key: &str) -> Result<Option<(Bytes, u64)>, BrokerError> {
        let req = Req::KvEntry {
            bucket: bucket.into(),
            key: key.into(),
        };
        match self.c.call(req, REQUEST_TIMEOUT).await? {
            Resp::Entry(e) => Ok(e.map(|(v, r)| (Bytes::from(v), r))),
            r => Err(unexpected(r)),
        }
    }

    async fn kv_revision(&self, bucket: &str) -> Result<u64, BrokerError> {
        let req = Req::KvRevision {
            bucket: bucket.into(),
        };
        match self.c.call(req, REQUEST_TIMEOUT).await? {
            Resp::Rev(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    async fn kv_keys(&self, bucket: &str) -> Result<Vec<String>, BrokerError> {
        let req = Req::KvKeys {
            bucket: bucket.into(),
        };
        match self.c.call(req, REQUEST_TIMEOUT).await? {
            Resp::Names(keys) => Ok(keys),
            r => Err(unexpected(r)),
        }
    }

    async fn kv_swap(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<u64, BrokerError> {
        let req = Req::KvSwap {
            bucket: bucket.into(),
            key: key.into(),
            value: value.to_vec(),
            expected,
        };
        match self.c.call(req, REQUEST_TIMEOUT).await? {
            Resp::Rev(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }
}

/// A pull subscription over the network. At most one pull request is outstanding, and it
/// expires after the host's `PULL_EXPIRES`; a connection change re-creates the server side (the
/// consumer itself is durable).
struct RemoteSubscription {
    c: Arc<Client>,
    id: u64,
    stream: StreamSpec,
    consumer: ConsumerSpec,
    /// The connection generation the server-side subscription lives on.
    on: Option<u64>,
    demand: usize,
    outstanding: Option<oneshot::Receiver<Resp>>,
    buffer: VecDeque<Delivery>,
}

impl RemoteSubscription {
    async fn ensure(&mut self) -> Result<Arc<Conn>, BrokerError> {
        let conn = self.c.connection().await?;
        if self.on != Some(conn.generation) {
            self.c
                .call_on(
                    &conn,
                    Req::Subscribe {
                        sub: self.id,
                        stream: (&self.stream).into(),
                        consumer: (&self.consumer).into(),
                    },
                    REQUEST_TIMEOUT,
                )
                .await?;
            self.on = Some(conn.generation);
        }
        Ok(conn)
    }

    fn delivery(&self, d: proto::WDelivery) -> Delivery {
        let call = header(&d.headers, CALL_HEADER).unwrap_or_default();
        let mut calls = self.c.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.insert(d.stream_sequence, call.clone());
        drop(calls);
        self.c.hist.record(Ev::WDeliver {
            worker: self.c.name.clone(),
            call: call.clone(),
            delivered: d.delivered,
        });
        Delivery {
            subject: d.subject,
            payload: d.payload.into(),
            headers: d.headers,
            delivered: d.delivered,
            stream_sequence: d.stream_sequence,
            published: proto::from_nanos(d.published),
            acker: Box::new(RemoteAcker {
                c: self.c.clone(),
                token: d.token,
                call,
                delivered: d.delivered,
            }),
        }
    }
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        if let Some(conn) = self.c.current()
            && Some(conn.generation) == self.on
        {
            let _ = self.c.send_on(&conn, Req::Unsubscribe { sub: self.id });
        }
    }
}

#[async_trait]
impl Subscription for RemoteSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if let Some(d) = self.buffer.pop_front() {
                return Some(Ok(d));
            }
            if self.outstanding.is_none() {
                if self.demand == 0 {
                    // Nothing asked for: wait until the caller stops waiting.
                    return std::future::pending().await;
                }
                let conn = match self.ensure().await {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e)),
                };
                let req = Req::Next {
                    sub: self.id,
                    demand: self.demand,
                };
                match self.c.send_on(&conn, req) {
                    Ok(rx) => self.outstanding = Some(rx),
                    Err(e) => return Some(Err(e)),
                }
            }
            let rx = self.outstanding.as_mut()?;
            let answer = rx.await;
            self.outstanding = None;
            return match answer {
                Ok(Resp::Delivery(d)) => Some(Ok(self.delivery(d))),
                // Expired with nothing: ask again (or, without demand, wait).
                Ok(Resp::Expired) => continue,
                Ok(Resp::End) => None,
                Ok(Resp::Err(e)) => Some(Err(e.into())),
                Ok(r) => Some(Err(unexpected(r))),
                Err(_) => {
                    self.on = None;
                    Some(Err(BrokerError::Disconnected))
                }
            };
        }
    }

    fn pulling(&self) -> bool {
        self.outstanding.is_some()
    }

    fn set_demand(&mut self, demand: usize) {
        self.demand = demand;
    }

    fn drain_buffered(&mut self) -> Vec<Delivery> {
        self.buffer.drain(..).collect()
    }
}

struct RemoteAcker {
    c: Arc<Client>,
    token: u64,
    call: String,
    delivered: u64,
}

impl RemoteAcker {
    async fn settle(&self, kind: WSettle) -> Result<(), BrokerError> {
        let r = self
            .c
            .call(
                Req::Settle {
                    token: self.token,
                    kind,
                },
                ACK_TIMEOUT,
            )
            .await
            .map(|_| ());
        self.c.hist.record(Ev::WSettle {
            worker: self.c.name.clone(),
            call: self.call.clone(),
            delivered: self.delivered,
            kind: match kind {
                WSettle::Ack => SettleKind::Ack,
                WSettle::Nak(d) => SettleKind::Nak(d),
                WSettle::Progress => SettleKind::Progress,
                WSettle::Term => SettleKind::Term,
            },
            ok: r.is_ok(),
        });
        r
    }
}

#[async_trait]
impl Acker for RemoteAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle(WSettle::Ack).await
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BrokerError> {
        self.settle(WSettle::Nak(delay)).await
    }
    async fn progress(&self) -> Result<(), BrokerError> {
        self.settle(WSettle::Progress).await
    }
    async fn term(&self) -> Result<(), BrokerError> {
        self.settle(WSettle::Term).await
    }
}
