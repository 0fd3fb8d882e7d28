//! The broker host: the in-process [`MemoryBroker`] (JetStream semantics) served over the
//! framed protocol of [`crate::proto`] on turmoil TCP, so crashes and partitions hit the
//! worker↔broker link.
//!
//! A broker restart is modelled inside the host (turmoil's `bounce` would give the host a new
//! tokio clock, and the stored messages' timers would lose their meaning): every connection is
//! dropped, the port refuses connections while the broker is down, then
//! [`MemoryBroker::restart`] applies what survives (`keep_messages`: file storage keeps
//! messages and consumers; memory storage loses everything).
//!
//! The host also records the broker's view of the run: deliveries, settles that removed a
//! message (each call's terminal transition), dead letters (how much of the message each
//! keeps, and those refused as larger than `max_payload`), messages lost to a memory restart.
//! During a dead-letter outage (a fault) it refuses every publish to the dead-letter subjects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_worker::broker::memory::{MemoryBroker, MemoryLimits};
use queue_worker::broker::{
    Acker, Admin, BrokerError, Consume, Delivery, KeyValue, ObjectSpec, Objects, Outgoing, Publish,
    ServerVersion, Subscription,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use turmoil::net::{TcpListener, TcpStream};

use crate::history::{Ev, FaultKind, History, Kept, SettleKind};
use crate::proto::{self, Frame, Req, Resp, WConsumer, WDelivery, WSettle, WStream};
use crate::{SimClock, header};

pub const PORT: u16 = 4222;
/// A connection that sends nothing (clients ping every second) for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Header naming the simulated call on every message the workload publishes.
pub const CALL_HEADER: &str = "Sim-Call-Id";

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct AckEntry {
    acker: Arc<dyn Acker>,
    call: String,
    delivered: u64,
    seq: u64,
    /// The consumer that delivered it: an ack for a consumer that no longer exists goes
    /// nowhere (as with JetStream), and the message stays.
    stream: String,
    consumer: String,
}

/// State shared by the broker host across its restarts (the "disk").
pub struct BrokerShared {
    pub broker: MemoryBroker,
    hist: History,
    queue: String,
    acks: Mutex<BTreeMap<u64, AckEntry>>,
    next_token: AtomicU64,
    /// Work-queue messages stored now: sequence → call.
    live: Mutex<BTreeMap<u64, String>>,
    restart: Mutex<Option<(Duration, bool)>>,
    restart_now: Notify,
    /// Publishes to the dead-letter subjects fail while this is set (a fault).
    refuse_dead_letters: AtomicBool,
}

impl BrokerShared {
    /// `server`: the nats-server the in-process broker behaves as; `max_payload`: its largest
    /// message (headers and payload).
    pub fn new(
        hist: History,
        queue: &str,
        server: ServerVersion,
        max_payload: usize,
    ) -> Arc<BrokerShared> {
        let clock = Arc::new(SimClock);
        let limits = MemoryLimits {
            max_message_bytes: max_payload,
            ..MemoryLimits::default()
        };
        Arc::new(BrokerShared {
            broker: MemoryBroker::modelling(clock, limits, server),
            hist,
            queue: queue.to_string(),
            acks: Mutex::new(BTreeMap::new()),
            next_token: AtomicU64::new(1),
            live: Mutex::new(BTreeMap::new()),
            restart: Mutex::new(None),
            restart_now: Notify::new(),
            refuse_dead_letters: AtomicBool::new(false),
        })
    }

    /// Refuse (or store again) every publish to the dead-letter subjects.
    pub fn refuse_dead_letters(&self, on: bool) {
        self.refuse_dead_letters.store(on, Ordering::Relaxed);
    }

    /// Ask the host to restart now: down for `down`, keeping messages (file) or not (memory).
    pub fn request_restart(&self, down: Duration, keep_messages: bool) {
        *self.restart.lock().unwrap_or_else(|e| e.into_inner()) = Some((down, keep_messages));
        self.restart_now.notify_one();
    }

    fn is_work(&self, subject: &str) -> bool {
        subject == self.queue || subject.starts_with(&format!("{}.", self.queue))
    }

    fn is_dead_letter(&self, subject: &str) -> bool {
        subject.starts_with(&format!("{}_DLQ.", self.queue))
    }

    fn register(&self, d: Delivery, to: &str, stream: &str, consumer: &str) -> WDelivery {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let call = header(&d.headers, CALL_HEADER).unwrap_or_default();
        self.hist.record(Ev::SDeliver {
            call: call.clone(),
            delivered: d.delivered,
            seq: d.stream_sequence,
            to: to.to_string(),
        });
        let w = WDelivery {
            subject: d.subject,
            payload: d.payload.to_vec(),
            headers: d.headers,
            delivered: d.delivered,
            stream_sequence: d.stream_sequence,
            published: proto::to_nanos(d.published),
            token,
        };
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).insert(
            token,
            AckEntry {
                acker: Arc::from(d.acker),
                call,
                delivered: w.delivered,
                seq: w.stream_sequence,
                stream: stream.to_string(),
                consumer: consumer.to_string(),
            },
        );
        w
    }

    async fn settle(&self, token: u64, kind: WSettle, from: &str) -> Resp {
        let entry = {
            let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            acks.get(&token).map(|e| {
                (
                    e.acker.clone(),
                    e.call.clone(),
                    e.delivered,
                    e.seq,
                    e.stream.clone(),
                    e.consumer.clone(),
                )
            })
        };
        // Unknown token: an ack for a message a memory restart lost; JetStream acks are fire
        // and forget, so it simply goes nowhere.
        let Some((acker, call, delivered, seq, stream, consumer)) = entry else {
            return Resp::Done;
        };
        // An ack to a consumer that was deleted meanwhile goes nowhere (nats-server 2.11 and
        // later also ignore it once the consumer is recreated): the message stays. Whether a
        // settle removed the message is read off the broker.
        let applies = self
            .broker
            .consumer_exists(&stream, &consumer)
            .await
            .unwrap_or(false);
        let r = match kind {
            WSettle::Ack => acker.ack().await,
            WSettle::Nak(d) => acker.nak(d).await,
            WSettle::Progress => acker.progress().await,
            WSettle::Term => acker.term().await,
        };
        let mut removed = false;
        if matches!(kind, WSettle::Ack | WSettle::Term) {
            self.acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&token);
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let gone = !self.broker.has_message(&stream, seq);
            if applies && gone && live.get(&seq) == Some(&call) {
                live.remove(&seq);
                removed = true;
            }
        }
        self.hist.record(Ev::SSettle {
            call,
            delivered,
            kind: match kind {
                WSettle::Ack => SettleKind::Ack,
                WSettle::Nak(d) => SettleKind::Nak(d),
                WSettle::Progress => SettleKind::Progress,
                WSettle::Term => SettleKind::Term,
            },
            from: from.to_string(),
            removed,
        });
        match r {
            Ok(()) => Resp::Done,
            Err(e) => Resp::Err((&e).into()),
        }
    }

    async fn publish(&self, out: Outgoing) -> Resp {
        let subject = out.subject.clone();
        if !self.is_dead_letter(&subject) {
            let call = header(&out.headers, CALL_HEADER).unwrap_or_default();
            return match self.broker.publish(out).await {
                Ok(ack) => {
                    if self.is_work(&subject) && !ack.duplicate {
                        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                        live.insert(ack.sequence, call);
                    }
                    Resp::pub_ack(ack)
                }
                Err(e) => Resp::Err((&e).into()),
            };
        }
        self.publish_dead_letter(out).await
    }

    /// A dead letter: refused during an outage; otherwise recorded with its call (named by
    /// its header, or by the sequence in its message id when it kept no header of its
    /// message) and how much of the message it keeps.
    async fn publish_dead_letter(&self, out: Outgoing) -> Resp {
        if self.refuse_dead_letters.load(Ordering::Relaxed) {
            let e = BrokerError::other("publish", "insufficient resources");
            return Resp::Err((&e).into());
        }
        let call = header(&out.headers, CALL_HEADER)
            .or_else(|| {
                let seq = crate::dead_letter_sequence(out.msg_id.as_deref()?)?;
                let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                live.get(&seq).cloned()
            })
            .unwrap_or_default();
        let reason = header(&out.headers, "Qw-Reason").unwrap_or_default();
        let kept = Kept::of(&out.headers);
        match self.broker.publish(out).await {
            Ok(ack) => {
                let stored = !ack.duplicate;
                self.hist.record(Ev::SDeadLetter {
                    call,
                    reason,
                    stored,
                    kept,
                });
                Resp::pub_ack(ack)
            }
            Err(e) => {
                if matches!(e, BrokerError::TooLarge(_)) {
                    self.hist.record(Ev::SDeadLetterTooLarge { call, kept });
                }
                Resp::Err((&e).into())
            }
        }
    }

    /// The restart itself (connections are already gone).
    fn apply_restart(&self, keep_messages: bool) {
        if !keep_messages {
            let lost: Vec<String> =
                std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()))
                    .into_values()
                    .collect();
            for call in lost {
                self.hist.record(Ev::SLost { call });
            }
            self.acks.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.broker.restart(keep_messages);
    }
}

/// Records the work stream's consumers whenever they change (creation on demand, deletion
/// by a worker or by the inactive threshold).
async fn watch_consumers(shared: Arc<BrokerShared>) {
    let stream = queue_worker::broker::stream_name(&shared.queue);
    let mut last: Vec<String> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(names) = shared.broker.list_consumers(&stream).await
            && names != last
        {
            shared.hist.record(Ev::SConsumers {
                names: names.clone(),
            });
            last = names;
        }
    }
}

/// The broker host's software.
pub async fn serve(shared: Arc<BrokerShared>) -> turmoil::Result {
    loop {
        // While the broker is down nothing of it runs: no timers, no inactive consumers
        // deleted (a restarted server gives each consumer its inactive threshold afresh).
        let watch = AbortOnDrop(tokio::task::spawn_local(watch_consumers(shared.clone())));
        let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
        let mut conns = JoinSet::new();
        let (down, keep) = loop {
            tokio::select! {
                biased;
                _ = shared.restart_now.notified() => {
                    let r = shared.restart.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(r) = r {
                        break r;
                    }
                }
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    let shared = shared.clone();
                    conns.spawn_local(connection(shared, stream));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        };
        drop(listener);
        conns.shutdown().await;
        drop(watch);
        tokio::time::sleep(down).await;
        shared.apply_restart(keep);
        shared.hist.record(Ev::Fault {
            kind: FaultKind::BrokerRestart,
            target: "broker".into(),
            start: false,
        });
    }
}

/// One client connection: requests in, answers out; pull requests run on their own tasks.
async fn connection(shared: Arc<BrokerShared>, stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Frame<Resp>>();
    let writer = async move {
        while let Some(f) = out_rx.recv().await {
            if proto::write_frame(&mut wr, &f).await.is_err() {
                break;
            }
        }
    };
    let mut conn = Conn {
        shared,
        name: String::from("?"),
        subs: BTreeMap::new(),
        tasks: JoinSet::new(),
        out,
    };
    let reader = async {
        while let Ok(Ok(Some(frame))) =
            tokio::time::timeout(IDLE_TIMEOUT, proto::read_frame::<_, Req>(&mut rd)).await
        {
            let id = frame.id;
            let Some(body) = conn.answer(id, frame.body).await else {
                continue;
            };
            if conn.out.send(Frame { id, body }).is_err() {
                break;
            }
        }
    };
    tokio::select! {
        biased;
        _ = reader => {}
        _ = writer => {}
    }
    conn.close().await;
}

/// Lifetime of one pull request (the worker's JetStream requests ask for 10 s).
const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// A subscription's pull requests (request id, demand) go to its task; cancelling ends it.
type Sub = (mpsc::UnboundedSender<(u64, usize)>, CancellationToken);

/// The broker's side of one client connection.
struct Conn {
    shared: Arc<BrokerShared>,
    /// The client's name (`?` until it says hello).
    name: String,
    subs: BTreeMap<u64, Sub>,
    /// The subscriptions' pull tasks.
    tasks: JoinSet<()>,
    out: mpsc::UnboundedSender<Frame<Resp>>,
}

/// The answer to a broker call.
fn reply<T>(r: Result<T, BrokerError>, ok: impl FnOnce(T) -> Resp) -> Resp {
    match r {
        Ok(v) => ok(v),
        Err(e) => Resp::Err((&e).into()),
    }
}

impl Conn {
    /// The answer to request `id`; `None` when it is answered later (a pull request, by its
    /// subscription's task).
    async fn answer(&mut self, id: u64, req: Req) -> Option<Resp> {
        let broker = &self.shared.broker;
        Some(match req {
            Req::Hello { name } => {
                self.name = name;
                self.shared.hist.record(Ev::SConn {
                    peer: self.name.clone(),
                    up: true,
                });
                Resp::Done
            }
            Req::Ping => Resp::Pong,
            Req::EnsureStream(s) => reply(broker.ensure_stream(&s.into()).await, Resp::status),
            Req::Publish(o) => self.shared.publish(o.into()).await,
            Req::Subscribe {
                sub,
                stream,
                consumer,
            } => self.subscribe(sub, stream, consumer).await,
            Req::Next { sub, demand } => match self.subs.get(&sub) {
                Some((tx, _)) => {
                    let _ = tx.send((id, demand));
                    return None;
                }
                None => Resp::Err(proto::WError::Other(format!("no subscription {sub}"))),
            },
            Req::Unsubscribe { sub } => {
                if let Some((_, cancel)) = self.subs.remove(&sub) {
                    cancel.cancel();
                }
                Resp::Done
            }
            Req::Settle { token, kind } => self.shared.settle(token, kind, &self.name).await,
            Req::DeleteConsumer { stream, name } => self.delete_consumer(&stream, name).await,
            Req::ConsumerExists { stream, name } => {
                reply(broker.consumer_exists(&stream, &name).await, Resp::Bool)
            }
            Req::ListConsumers { stream } => {
                reply(broker.list_consumers(&stream).await, Resp::Names)
            }
            Req::StreamInfo { stream, subjects } => reply(
                broker.stream_info(&stream, subjects.as_deref()).await,
                Resp::info,
            ),
            req @ (Req::EnsureKv { .. }
            | Req::KvPut { .. }
            | Req::KvGet { .. }
            | Req::KvDelete { .. }
            | Req::KvEntry { .. }
            | Req::KvSwap { .. }
            | Req::KvRevision { .. }
            | Req::KvKeys { .. }) => self.answer_kv(req).await,
            req @ (Req::EnsureObjects { .. }
            | Req::ObjPut { .. }
            | Req::ObjGet { .. }
            | Req::ObjDelete { .. }) => self.answer_objects(req).await,
        })
    }

    /// The answer to a key-value request.
    async fn answer_kv(&self, req: Req) -> Resp {
        let broker = &self.shared.broker;
        match req {
            Req::EnsureKv {
                bucket,
                ttl,
                memory,
                replicas,
            } => reply(
                broker
                    .ensure_kv(&Req::kv_spec(bucket, ttl, memory, replicas))
                    .await,
                |()| Resp::Done,
            ),
            Req::KvPut { bucket, key, value } => {
                reply(broker.kv_put(&bucket, &key, value.into()).await, Resp::Rev)
            }
            Req::KvGet { bucket, key } => reply(broker.kv_get(&bucket, &key).await, |v| {
                Resp::Value(v.map(|b| b.to_vec()))
            }),
            Req::KvDelete { bucket, key } => {
                reply(broker.kv_delete(&bucket, &key).await, |()| Resp::Done)
            }
            Req::KvEntry { bucket, key } => reply(broker.kv_entry(&bucket, &key).await, |e| {
                Resp::Entry(e.map(|(v, r)| (v.to_vec(), r)))
            }),
            Req::KvSwap {
                bucket,
                key,
                value,
                expected,
            } => reply(
                broker.kv_swap(&bucket, &key, value.into(), expected).await,
                Resp::Rev,
            ),
            Req::KvRevision { bucket } => reply(broker.kv_revision(&bucket).await, Resp::Rev),
            Req::KvKeys { bucket } => reply(broker.kv_keys(&bucket).await, Resp::Names),
            _ => unreachable!("answer() passes only key-value requests"),
        }
    }

    /// The answer to an object request.
    async fn answer_objects(&self, req: Req) -> Resp {
        let broker = &self.shared.broker;
        match req {
            Req::EnsureObjects {
                bucket,
                ttl,
                memory,
                replicas,
            } => {
                let kv = Req::kv_spec(bucket, ttl, memory, replicas);
                let spec = ObjectSpec {
                    bucket: kv.bucket,
                    ttl: kv.ttl,
                    storage: kv.storage,
                    replicas: kv.replicas,
                };
                reply(broker.ensure_objects(&spec).await, |()| Resp::Done)
            }
            Req::ObjPut { bucket, name, data } => {
                reply(broker.object_put(&bucket, &name, data.into()).await, |()| {
                    Resp::Done
                })
            }
            Req::ObjGet { bucket, name } => reply(broker.object_get(&bucket, &name).await, |v| {
                Resp::Value(v.map(|b| b.to_vec()))
            }),
            Req::ObjDelete { bucket, name } => {
                reply(broker.object_delete(&bucket, &name).await, |()| Resp::Done)
            }
            _ => unreachable!("answer() passes only object requests"),
        }
    }

    /// A new subscription (replacing one with the same id): its pull requests are served by a
    /// task of its own.
    async fn subscribe(&mut self, sub: u64, stream: WStream, consumer: WConsumer) -> Resp {
        if let Some((_, cancel)) = self.subs.remove(&sub) {
            cancel.cancel();
        }
        let stream_name = stream.name.clone();
        let consumer_name = consumer.name.clone();
        let subscription = self
            .shared
            .broker
            .subscribe(&stream.into(), &consumer.into())
            .await;
        reply(subscription, |s| {
            let (tx, rx) = mpsc::unbounded_channel();
            let cancel = CancellationToken::new();
            self.tasks.spawn_local(pull_task(
                self.shared.clone(),
                s,
                rx,
                self.out.clone(),
                (self.name.clone(), stream_name, consumer_name),
                cancel.clone(),
            ));
            self.subs.insert(sub, (tx, cancel));
            Resp::Done
        })
    }

    async fn delete_consumer(&self, stream: &str, name: String) -> Resp {
        let deleted = self.shared.broker.delete_consumer(stream, &name).await;
        reply(deleted, |existed| {
            self.shared.hist.record(Ev::SDeleteConsumer {
                name,
                by: self.name.clone(),
                existed,
            });
            Resp::Bool(existed)
        })
    }

    /// The connection is gone: end its subscriptions, let their pull tasks give back what
    /// they buffered, and record the disconnection.
    async fn close(self) {
        for (_, (_, cancel)) in self.subs {
            cancel.cancel();
        }
        let mut tasks = self.tasks;
        while tasks.join_next().await.is_some() {}
        if self.name != "?" {
            self.shared.hist.record(Ev::SConn {
                peer: self.name,
                up: false,
            });
        }
    }
}

/// Serves one subscription's pull requests, one at a time.
async fn pull_task(
    shared: Arc<BrokerShared>,
    mut sub: Box<dyn Subscription>,
    mut requests: mpsc::UnboundedReceiver<(u64, usize)>,
    out: mpsc::UnboundedSender<Frame<Resp>>,
    (name, stream, consumer): (String, String, String),
    cancel: CancellationToken,
) {
    loop {
        // The worker's demand (its free slots) is not used here: an answer carries one delivery,
        // so the host takes one. Taking more would mark messages delivered (count up, ack timer
        // running) that sit on the broker unsent, which no JetStream server does; handed out
        // later, after their ack wait, they ran twice (consumer-expiry seed 467, broker-restart
        // seed 1982).
        let (id, _demand) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = requests.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        sub.set_demand(1);
        // A pull request lives as long as JetStream's do: the worker learns it ended, and a
        // feeder that stopped asking knows when nothing more can come.
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            n = tokio::time::timeout(PULL_EXPIRES, sub.next()) => n,
        };
        let body = match next {
            Ok(Some(Ok(d))) => Resp::Delivery(shared.register(d, &name, &stream, &consumer)),
            Ok(Some(Err(e))) => Resp::Err((&e).into()),
            Ok(None) => Resp::End,
            Err(_) => Resp::Expired,
        };
        if out.send(Frame { id, body }).is_err() {
            break;
        }
    }
    for d in sub.drain_buffered() {
        let _ = d.acker.nak(None).await;
    }
}
