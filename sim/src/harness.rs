//! Builds the turmoil simulation of a [`RunConfig`], runs it step by step while injecting its
//! faults, and checks the recorded history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_worker::broker::Broker;
use queue_worker::ingress::{self, Ingress, Submission};
use queue_worker::rng::SeededRng;
use queue_worker::telemetry::metrics::Metrics;
use queue_worker::telemetry::server::Health;
use tokio_util::sync::CancellationToken;

use crate::SimClock;
use crate::broker_host::{self, BrokerShared, CALL_HEADER};
use crate::check::{self, Report};
use crate::functions;
use crate::history::{Ev, FaultKind, History};
use crate::http::SimInvoker;
use crate::plan::{BROKER, Fault, GATEWAY, QUEUE, RECEIVER, RECEIVER_PORT, RunConfig, mix};
use crate::remote::RemoteBroker;

/// One simulation step.
pub const TICK: Duration = Duration::from_millis(10);

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    pub config: RunConfig,
    pub report: Report,
    /// SHA-256 of the ordered event trace.
    pub digest: String,
    pub events: usize,
    /// The recorded history.
    pub records: Vec<crate::history::Record>,
    /// The simulation itself failed (a host errored, the time limit passed).
    pub error: Option<String>,
    pub sim_time: Duration,
    pub steps: u64,
    pub wall: Duration,
}

impl RunResult {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.report.violations.is_empty()
    }
}

/// Driver actions, in time order.
#[derive(Debug, Clone)]
enum Action {
    Crash(usize),
    Restart(usize),
    CrashMid { until: Duration, down: Duration },
    Cut(usize),
    Heal(usize),
    BrokerRestart { down: Duration, keep: bool },
    ReceiverDown,
    ReceiverUp,
    ReceiverErrors(bool),
}

fn worker_host(i: usize) -> String {
    format!("worker-{i}")
}

/// Run one configuration to the end and check it.
pub fn run(config: RunConfig) -> RunResult {
    let wall = Instant::now();
    #[cfg(feature = "buggify")]
    queue_worker::buggify::set(config.bug.map(|b| match b {
        "ack-before-invoke" => queue_worker::buggify::Bug::AckBeforeInvoke,
        "ignore-max-retry-attempts" => queue_worker::buggify::Bug::IgnoreMaxRetryAttempts,
        "drop-progress-acks" => queue_worker::buggify::Bug::DropProgressAcks,
        other => panic!("unknown bug {other}"),
    }));
    let hist = History::new();
    let cfg = Arc::new(config);

    let mut builder = turmoil::Builder::new();
    builder
        .simulation_duration(cfg.deadline + Duration::from_secs(120))
        .tick_duration(TICK)
        .epoch(crate::epoch())
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(cfg.max_latency)
        .tcp_capacity(4096)
        .rng_seed(cfg.seed);
    if cfg.random_order {
        builder.enable_random_order();
    }
    let mut sim = builder.build();

    let shared = BrokerShared::new(hist.clone(), QUEUE);
    {
        let shared = shared.clone();
        sim.host(BROKER, move || broker_host::serve(shared.clone()));
    }
    {
        let (cfg, hist) = (cfg.clone(), hist.clone());
        let attempts: functions::Attempts = Arc::default();
        sim.host(GATEWAY, move || {
            functions::gateway(cfg.clone(), hist.clone(), attempts.clone())
        });
    }
    let receiver_errors = Arc::new(Mutex::new(false));
    {
        let (hist, errors) = (hist.clone(), receiver_errors.clone());
        sim.host(RECEIVER, move || {
            functions::receiver(hist.clone(), errors.clone())
        });
    }
    let incarnations = Arc::new(Mutex::new(vec![0u32; cfg.workers]));
    for i in 0..cfg.workers {
        let (cfg, hist, inc) = (cfg.clone(), hist.clone(), incarnations.clone());
        sim.host(worker_host(i), move || {
            let n = {
                let mut v = inc.lock().unwrap_or_else(|e| e.into_inner());
                v[i] += 1;
                v[i]
            };
            worker(cfg.clone(), hist.clone(), i, n)
        });
    }
    sim.client("client", workload(cfg.clone(), hist.clone()));

    let mut actions: Vec<(Duration, Action)> = Vec::new();
    for f in &cfg.faults {
        match *f {
            Fault::Crash { worker, at, down } => {
                actions.push((at, Action::Crash(worker)));
                actions.push((at + down, Action::Restart(worker)));
            }
            Fault::CrashMidInvocation { at, down } => {
                actions.push((
                    at,
                    Action::CrashMid {
                        until: at + Duration::from_secs(20),
                        down,
                    },
                ));
            }
            Fault::Partition { worker, at, len } => {
                actions.push((at, Action::Cut(worker)));
                actions.push((at + len, Action::Heal(worker)));
            }
            Fault::BrokerRestart { at, down, keep } => {
                actions.push((at, Action::BrokerRestart { down, keep }));
            }
            Fault::ReceiverDown { at, len } => {
                actions.push((at, Action::ReceiverDown));
                actions.push((at + len, Action::ReceiverUp));
            }
            Fault::ReceiverErrors { at, len } => {
                actions.push((at, Action::ReceiverErrors(true)));
                actions.push((at + len, Action::ReceiverErrors(false)));
            }
        }
    }
    actions.sort_by_key(|(t, _)| *t);
    let mut actions: std::collections::VecDeque<(Duration, Action)> = actions.into();
    // Crashed workers, so overlapping faults do not crash a dead host or restart a live one.
    let mut down: BTreeMap<usize, u32> = BTreeMap::new();
    // Overlapping partitions of one worker: cut on the first, heal after the last.
    let mut cut: BTreeMap<usize, u32> = BTreeMap::new();
    let mut receiver_down = 0u32;
    let mut receiver_failing = 0u32;
    let mut error = None;
    let mut steps = 0u64;

    loop {
        let done = match sim.step() {
            Ok(d) => d,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        };
        steps += 1;
        let now = sim.elapsed();
        while actions.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, action)) = actions.pop_front() else {
                break;
            };
            match action {
                Action::Crash(i) => {
                    let n = down.entry(i).or_default();
                    *n += 1;
                    if *n == 1 {
                        sim.crash(worker_host(i));
                        hist.record_at(now, fault(FaultKind::Crash, &worker_host(i), true));
                    }
                }
                Action::Restart(i) => {
                    let n = down.entry(i).or_default();
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        sim.bounce(worker_host(i));
                        hist.record_at(now, fault(FaultKind::Crash, &worker_host(i), false));
                    }
                }
                Action::CrashMid { until, down: len } => {
                    let busy = {
                        let live = hist.live();
                        (0..cfg.workers).find(|i| {
                            live.open.get(&worker_host(*i)).copied().unwrap_or(0) > 0
                                && !down.contains_key(i)
                        })
                    };
                    let target = match busy {
                        Some(i) => Some(i),
                        None if now >= until => (0..cfg.workers).find(|i| !down.contains_key(i)),
                        None => None,
                    };
                    match target {
                        Some(i) => {
                            down.insert(i, 1);
                            sim.crash(worker_host(i));
                            hist.record_at(now, fault(FaultKind::Crash, &worker_host(i), true));
                            insert_action(&mut actions, now + len, Action::Restart(i));
                        }
                        None => insert_action(
                            &mut actions,
                            now + TICK,
                            Action::CrashMid { until, down: len },
                        ),
                    }
                }
                Action::Cut(i) => {
                    let n = cut.entry(i).or_default();
                    *n += 1;
                    if *n == 1 {
                        sim.partition(worker_host(i), BROKER);
                        hist.record_at(now, fault(FaultKind::Partition, &worker_host(i), true));
                    }
                }
                Action::Heal(i) => {
                    let n = cut.entry(i).or_default();
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        sim.repair(worker_host(i), BROKER);
                        hist.record_at(now, fault(FaultKind::Partition, &worker_host(i), false));
                    }
                }
                Action::BrokerRestart { down, keep } => {
                    hist.record_at(now, fault(FaultKind::BrokerRestart, BROKER, true));
                    shared.request_restart(down, keep);
                }
                Action::ReceiverDown => {
                    receiver_down += 1;
                    if receiver_down == 1 {
                        sim.crash(RECEIVER);
                        hist.record_at(now, fault(FaultKind::ReceiverDown, RECEIVER, true));
                    }
                }
                Action::ReceiverUp => {
                    receiver_down = receiver_down.saturating_sub(1);
                    if receiver_down == 0 {
                        sim.bounce(RECEIVER);
                        hist.record_at(now, fault(FaultKind::ReceiverDown, RECEIVER, false));
                    }
                }
                Action::ReceiverErrors(on) => {
                    let before = receiver_failing;
                    receiver_failing = if on {
                        receiver_failing + 1
                    } else {
                        receiver_failing.saturating_sub(1)
                    };
                    if (before == 0) != (receiver_failing == 0) {
                        *receiver_errors.lock().unwrap_or_else(|e| e.into_inner()) = on;
                        hist.record_at(now, fault(FaultKind::ReceiverDown, "receiver-errors", on));
                    }
                }
            }
        }
        if done {
            break;
        }
    }
    let sim_time = sim.elapsed();
    drop(sim);
    #[cfg(feature = "buggify")]
    queue_worker::buggify::set(None);

    let records = hist.snapshot();
    let report = check::check(&cfg, &records);
    RunResult {
        config: (*cfg).clone(),
        report,
        digest: crate::history::digest(&records),
        events: records.len(),
        records,
        error,
        sim_time,
        steps,
        wall: wall.elapsed(),
    }
}

fn insert_action(
    actions: &mut std::collections::VecDeque<(Duration, Action)>,
    at: Duration,
    a: Action,
) {
    let pos = actions
        .iter()
        .position(|(t, _)| *t > at)
        .unwrap_or(actions.len());
    actions.insert(pos, (at, a));
}

fn fault(kind: FaultKind, target: &str, start: bool) -> Ev {
    Ev::Fault {
        kind,
        target: target.to_string(),
        start,
    }
}

/// A worker replica: the real worker (`queue_worker::run`) on simulated ports.
async fn worker(cfg: Arc<RunConfig>, hist: History, i: usize, incarnation: u32) -> turmoil::Result {
    let name = format!("{}#{incarnation}", worker_host(i));
    hist.record(Ev::WorkerStart {
        worker: name.clone(),
    });
    let ports = queue_worker::Ports {
        broker: Arc::new(RemoteBroker::new(
            &format!("{BROKER}:{}", broker_host::PORT),
            &name,
            hist.clone(),
        )),
        invoker: Arc::new(SimInvoker {
            worker: name.clone(),
            hist: hist.clone(),
        }),
        clock: Arc::new(SimClock),
        rng: Arc::new(SeededRng::seeded(mix(cfg.seed
            ^ ((i as u64) << 32)
            ^ u64::from(incarnation)))),
    };
    queue_worker::run(
        Arc::new(cfg.worker_config()),
        ports,
        Arc::new(Metrics::new()),
        Health::new(),
        None,
        CancellationToken::new(),
    )
    .await;
    Ok(())
}

/// The client: publishes the calls at their times (through the ingress code), then waits until
/// every accepted call is done, the faults are over and the settle time has passed.
async fn workload(cfg: Arc<RunConfig>, hist: History) -> turmoil::Result {
    let broker: Arc<dyn Broker> = Arc::new(RemoteBroker::new(
        &format!("{BROKER}:{}", broker_host::PORT),
        "client",
        hist.clone(),
    ));
    let config = Arc::new(cfg.worker_config());
    let ingress = Ingress {
        config: config.clone(),
        broker: broker.clone(),
        clock: Arc::new(SimClock),
        metrics: Arc::new(Metrics::new()),
    };
    let start = tokio::time::Instant::now();
    let mut calls = cfg.calls.clone();
    calls.sort_by_key(|c| c.at);
    for c in calls {
        tokio::time::sleep_until(start + c.at).await;
        let mut header: BTreeMap<String, Vec<String>> = BTreeMap::new();
        header.insert("X-Call-Id".into(), vec![c.id.clone()]);
        if c.callback {
            header.insert(
                "X-Callback-Url".into(),
                vec![format!("http://{RECEIVER}:{RECEIVER_PORT}/cb/{}", c.id)],
            );
        }
        let mut prepared = ingress::prepare(
            &config,
            &SimClock,
            Submission {
                function: c.function.clone(),
                path: String::new(),
                query: String::new(),
                header,
                host: GATEWAY.into(),
                body: bytes::Bytes::from_static(b"{\"hello\":\"sim\"}"),
            },
        )
        .map_err(|e| format!("prepare {}: {e}", c.id))?;
        prepared
            .outgoing
            .headers
            .push((CALL_HEADER.into(), c.id.clone()));
        if c.poison {
            prepared.outgoing.payload = bytes::Bytes::from_static(b"\x00 not a QueueRequest");
        }
        loop {
            let r = if c.poison {
                match broker.publish(prepared.outgoing.clone()).await {
                    Err(queue_worker::broker::BrokerError::NoStream { .. }) => {
                        let _ = ingress.ensure_streams().await;
                        broker.publish(prepared.outgoing.clone()).await.map(|_| ())
                    }
                    r => r.map(|_| ()),
                }
            } else {
                ingress::submit(&ingress, &prepared).await
            };
            match r {
                Ok(()) => {
                    hist.record(Ev::Accepted { call: c.id.clone() });
                    break;
                }
                Err(_) if start.elapsed() < cfg.deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => break,
            }
        }
    }
    let quiet_from = cfg.faults_end().max(cfg.last_call());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = start.elapsed();
        if t >= cfg.deadline {
            break;
        }
        if hist.live().outstanding() == 0 && t >= quiet_from + cfg.settle {
            break;
        }
    }
    Ok(())
}
