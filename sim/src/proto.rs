//! The small framed protocol between [`crate::remote::RemoteBroker`] and the broker host:
//! `u32` big-endian length, then a JSON [`Frame`]. Requests carry an id; the broker answers
//! each with the same id. Everything the `Broker` port does has a request here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_worker::broker::{
    BrokerError, ConsumerSpec, KvSpec, Outgoing, PubAck, Retention, StreamInfo, StreamSpec,
    StreamStatus,
};
use queue_worker::config::Storage;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frames larger than this are refused (a limit on everything).
pub const MAX_FRAME: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame<T> {
    pub id: u64,
    pub body: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WStream {
    pub name: String,
    pub subjects: Vec<String>,
    pub work_queue: bool,
    pub memory: bool,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<i64>,
    pub schedules: bool,
}

impl From<&StreamSpec> for WStream {
    fn from(s: &StreamSpec) -> WStream {
        WStream {
            name: s.name.clone(),
            subjects: s.subjects.clone(),
            work_queue: s.retention == Retention::WorkQueue,
            memory: s.storage == Storage::Memory,
            replicas: s.replicas,
            duplicate_window: s.duplicate_window,
            max_age: s.max_age,
            max_bytes: s.max_bytes,
            schedules: s.schedules,
        }
    }
}

impl From<WStream> for StreamSpec {
    fn from(s: WStream) -> StreamSpec {
        StreamSpec {
            name: s.name,
            subjects: s.subjects,
            retention: if s.work_queue {
                Retention::WorkQueue
            } else {
                Retention::Limits
            },
            storage: if s.memory {
                Storage::Memory
            } else {
                Storage::File
            },
            replicas: s.replicas,
            duplicate_window: s.duplicate_window,
            max_age: s.max_age,
            max_bytes: s.max_bytes,
            schedules: s.schedules,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WConsumer {
    pub stream: String,
    pub name: String,
    pub filter_subject: Option<String>,
    pub ack_wait: Duration,
    pub inactive_threshold: Option<Duration>,
    pub pull_batch: usize,
    pub recreate: bool,
    pub memory_storage: bool,
}

impl From<&ConsumerSpec> for WConsumer {
    fn from(c: &ConsumerSpec) -> WConsumer {
        WConsumer {
            stream: c.stream.clone(),
            name: c.name.clone(),
            filter_subject: c.filter_subject.clone(),
            ack_wait: c.ack_wait,
            inactive_threshold: c.inactive_threshold,
            pull_batch: c.pull_batch,
            recreate: c.recreate,
            memory_storage: c.memory_storage,
        }
    }
}

impl From<WConsumer> for ConsumerSpec {
    fn from(c: WConsumer) -> ConsumerSpec {
        ConsumerSpec {
            stream: c.stream,
            name: c.name,
            filter_subject: c.filter_subject,
            ack_wait: c.ack_wait,
            inactive_threshold: c.inactive_threshold,
            pull_batch: c.pull_batch,
            recreate: c.recreate,
            memory_storage: c.memory_storage,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WOutgoing {
    pub subject: String,
    pub msg_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl From<&Outgoing> for WOutgoing {
    fn from(o: &Outgoing) -> WOutgoing {
        WOutgoing {
            subject: o.subject.clone(),
            msg_id: o.msg_id.clone(),
            headers: o.headers.clone(),
            payload: o.payload.to_vec(),
        }
    }
}

impl From<WOutgoing> for Outgoing {
    fn from(o: WOutgoing) -> Outgoing {
        Outgoing {
            subject: o.subject,
            msg_id: o.msg_id,
            headers: o.headers,
            payload: o.payload.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum WSettle {
    Ack,
    Nak(Option<Duration>),
    Progress,
    Term,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WDelivery {
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub delivered: u64,
    pub stream_sequence: u64,
    /// Unix nanoseconds.
    pub published: u64,
    /// Names the delivery in later settles (valid across reconnects).
    pub token: u64,
}

pub fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Req {
    Hello {
        name: String,
    },
    Ping,
    EnsureStream(WStream),
    Publish(WOutgoing),
    Subscribe {
        sub: u64,
        stream: WStream,
        consumer: WConsumer,
    },
    /// A pull request for one delivery.
    Next {
        sub: u64,
        demand: usize,
    },
    Unsubscribe {
        sub: u64,
    },
    Settle {
        token: u64,
        kind: WSettle,
    },
    DeleteConsumer {
        stream: String,
        name: String,
    },
    ConsumerExists {
        stream: String,
        name: String,
    },
    ListConsumers {
        stream: String,
    },
    StreamInfo {
        stream: String,
        subjects: Option<String>,
    },
    EnsureKv {
        bucket: String,
        ttl: Duration,
        memory: bool,
        replicas: usize,
    },
    KvPut {
        bucket: String,
        key: String,
        value: Vec<u8>,
    },
    KvGet {
        bucket: String,
        key: String,
    },
    KvDelete {
        bucket: String,
        key: String,
    },
    KvEntry {
        bucket: String,
        key: String,
    },
    KvSwap {
        bucket: String,
        key: String,
        value: Vec<u8>,
        expected: u64,
    },
    KvRevision {
        bucket: String,
    },
    KvKeys {
        bucket: String,
    },
    EnsureObjects {
        bucket: String,
        ttl: Duration,
        memory: bool,
        replicas: usize,
    },
    ObjPut {
        bucket: String,
        name: String,
        data: Vec<u8>,
    },
    ObjGet {
        bucket: String,
        name: String,
    },
    ObjDelete {
        bucket: String,
        name: String,
    },
}

impl Req {
    pub fn kv_spec(bucket: String, ttl: Duration, memory: bool, replicas: usize) -> KvSpec {
        KvSpec {
            bucket,
            ttl,
            storage: if memory {
                Storage::Memory
            } else {
                Storage::File
            },
            replicas,
        }
    }
}

/// Stream info: messages, bytes, per-subject counts.
pub type WInfo = (u64, u64, Vec<(String, u64)>);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Resp {
    Pong,
    Done,
    Created(bool),
    PubAck {
        stream: String,
        sequence: u64,
        duplicate: bool,
    },
    Delivery(WDelivery),
    /// The pull request expired with nothing to deliver (as JetStream's `408`).
    Expired,
    /// The subscription is closed for good.
    End,
    Bool(bool),
    Names(Vec<String>),
    Info(Option<WInfo>),
    Rev(u64),
    Value(Option<Vec<u8>>),
    Entry(Option<(Vec<u8>, u64)>),
    Err(WError),
}

impl Resp {
    pub fn status(s: StreamStatus) -> Resp {
        Resp::Created(s == StreamStatus::Created)
    }
    pub fn pub_ack(p: PubAck) -> Resp {
        Resp::PubAck {
            stream: p.stream,
            sequence: p.sequence,
            duplicate: p.duplicate,
        }
    }
    pub fn info(i: Option<StreamInfo>) -> Resp {
        Resp::Info(i.map(|i| (i.messages, i.bytes, i.subjects.into_iter().collect())))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WError {
    Connect(String, String),
    Disconnected,
    Timeout(String),
    Incompatible(String, String, String),
    NoStream(String),
    Full(String),
    TooLarge(String),
    NoBucket(String),
    Conflict(String),
    Other(String),
}

impl From<&BrokerError> for WError {
    fn from(e: &BrokerError) -> WError {
        match e {
            BrokerError::Connect { url, reason } => WError::Connect(url.clone(), reason.clone()),
            BrokerError::Disconnected => WError::Disconnected,
            BrokerError::Timeout { what } => WError::Timeout(what.clone()),
            BrokerError::IncompatibleStream {
                stream,
                found,
                want,
            } => WError::Incompatible(stream.clone(), found.clone(), want.clone()),
            BrokerError::NoStream { subject } => WError::NoStream(subject.clone()),
            BrokerError::Full(s) => WError::Full(s.clone()),
            BrokerError::TooLarge(s) => WError::TooLarge(s.clone()),
            BrokerError::NoBucket { bucket } => WError::NoBucket(bucket.clone()),
            BrokerError::Conflict { key } => WError::Conflict(key.clone()),
            BrokerError::Other { reason, .. } => WError::Other(reason.clone()),
        }
    }
}

impl From<WError> for BrokerError {
    fn from(e: WError) -> BrokerError {
        match e {
            WError::Connect(url, reason) => BrokerError::Connect { url, reason },
            WError::Disconnected => BrokerError::Disconnected,
            WError::Timeout(what) => BrokerError::Timeout { what },
            WError::Incompatible(stream, found, want) => BrokerError::IncompatibleStream {
                stream,
                found,
                want,
            },
            WError::NoStream(subject) => BrokerError::NoStream { subject },
            WError::Full(s) => BrokerError::Full(s),
            WError::TooLarge(s) => BrokerError::TooLarge(s),
            WError::NoBucket(bucket) => BrokerError::NoBucket { bucket },
            WError::Conflict(key) => BrokerError::Conflict { key },
            WError::Other(reason) => BrokerError::Other {
                op: "remote broker",
                reason,
            },
        }
    }
}

/// Write one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    frame: &Frame<T>,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Read one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> std::io::Result<Option<Frame<T>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(std::io::Error::other)
}
