//! Builds the turmoil simulation of a [`RunConfig`], runs it step by step while injecting its
//! faults, and checks the recorded history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_worker::broker::{Broker, BrokerError};
use queue_worker::ingress::Ingress;
use queue_worker::rng::SeededRng;
use queue_worker::status::Calls;
use queue_worker::telemetry::metrics::Metrics;
use queue_worker::telemetry::server::Health;
use tokio_util::sync::CancellationToken;

use crate::SimClock;
use crate::broker_host::{self, BrokerShared};
use crate::cancels;
use crate::check::{self, Report};
use crate::functions;
use crate::history::{Ev, FaultKind, History};
use crate::http::SimInvoker;
use crate::message::{self, prepare};
use crate::plan::Bug;
use crate::plan::{BROKER, Fault, GATEWAY, QUEUE, RECEIVER, RunConfig, mix};
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
    DeadLetterOutage(bool),
}

fn worker_host(i: usize) -> String {
    format!("worker-{i}")
}

/// Runs in one process go one at a time (see [`align_task_ids`]).
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tokio task ids count process-wide. When turmoil crashes a host it drops the host's tasks in
/// an order that depends on their ids, and each socket closed then draws from the simulation's
/// random numbers (message latency): with ids continuing from whatever ran before in the
/// process (another test, an earlier seed of a sweep), the same seed could give another trace.
/// Each run therefore starts from an id with the same remainder modulo a power of two larger
/// than tokio's task-list shard count, and runs alone in its process.
fn align_task_ids() {
    const ALIGN: u64 = 64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to count task ids");
    for _ in 0..ALIGN {
        let handle = rt.spawn(async {});
        let id: u64 = handle.id().to_string().parse().unwrap_or(0);
        let _ = rt.block_on(handle);
        if id % ALIGN == ALIGN - 1 {
            return;
        }
    }
}

/// Run one configuration to the end and check it.
pub fn run(config: RunConfig) -> RunResult {
    let _alone = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    align_task_ids();
    let wall = Instant::now();
    inject_bug(config.bug);
    let hist = History::new();
    let cfg = Arc::new(config);
    let mut sim = simulation(&cfg);
    let hosts = add_hosts(&mut sim, &cfg, &hist);
    let mut driver = Driver::new(cfg.clone(), hist.clone(), hosts);
    let (steps, error) = driver.drive(&mut sim);
    let sim_time = sim.elapsed();
    drop(sim);
    inject_bug(None);

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

/// Switch the run's deliberate bug on (or, with `None`, off) for this thread.
#[cfg(feature = "buggify")]
fn inject_bug(bug: Option<&'static Bug>) {
    queue_worker::buggify::set(bug.map(|b| b.inject));
}

#[cfg(not(feature = "buggify"))]
fn inject_bug(_bug: Option<&'static Bug>) {}

/// The turmoil simulation of `cfg`: tick, latencies, seed and host order.
fn simulation(cfg: &RunConfig) -> turmoil::Sim<'static> {
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
    builder.build()
}

/// What the driver reaches into the hosts with.
struct Hosts {
    broker: Arc<BrokerShared>,
    /// The receiver answers 503 while this is set.
    receiver_errors: Arc<Mutex<bool>>,
}

/// The hosts, in the order that fixes their addresses and seeds: broker, gateway, receiver,
/// workers, then the client.
fn add_hosts(sim: &mut turmoil::Sim<'static>, cfg: &Arc<RunConfig>, hist: &History) -> Hosts {
    let shared = BrokerShared::new(hist.clone(), QUEUE, cfg.server, cfg.max_payload);
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
    add_workers(sim, cfg, hist);
    sim.client("client", workload(cfg.clone(), hist.clone()));
    Hosts {
        broker: shared,
        receiver_errors,
    }
}

/// The worker replicas; each (re)start is a new incarnation.
fn add_workers(sim: &mut turmoil::Sim<'static>, cfg: &Arc<RunConfig>, hist: &History) {
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
}

/// The run's faults as driver actions, in time order.
fn schedule(faults: &[Fault]) -> VecDeque<(Duration, Action)> {
    let mut actions: Vec<(Duration, Action)> = Vec::new();
    for f in faults {
        match *f {
            Fault::Crash { worker, at, down } => {
                actions.push((at, Action::Crash(worker)));
                actions.push((at + down, Action::Restart(worker)));
            }
            Fault::CrashMidInvocation { at, down } => {
                let until = at + Duration::from_secs(20);
                actions.push((at, Action::CrashMid { until, down }));
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
            Fault::DeadLetterOutage { at, len } => {
                actions.push((at, Action::DeadLetterOutage(true)));
                actions.push((at + len, Action::DeadLetterOutage(false)));
            }
        }
    }
    actions.sort_by_key(|(t, _)| *t);
    actions.into()
}

/// Steps the simulation and injects the faults between steps, recording each.
struct Driver {
    cfg: Arc<RunConfig>,
    hist: History,
    hosts: Hosts,
    actions: VecDeque<(Duration, Action)>,
    /// Crashed workers, so overlapping faults do not crash a dead host or restart a live one.
    down: BTreeMap<usize, u32>,
    /// Overlapping partitions of one worker: cut on the first, heal after the last.
    cut: BTreeMap<usize, u32>,
    receiver_down: u32,
    receiver_failing: u32,
    /// Overlapping dead-letter outages: from the first start to the last end.
    dead_letters_refused: u32,
}

impl Driver {
    fn new(cfg: Arc<RunConfig>, hist: History, hosts: Hosts) -> Driver {
        Driver {
            actions: schedule(&cfg.faults),
            cfg,
            hist,
            hosts,
            down: BTreeMap::new(),
            cut: BTreeMap::new(),
            receiver_down: 0,
            receiver_failing: 0,
            dead_letters_refused: 0,
        }
    }

    /// Steps until the simulation ends: the steps taken, and the error that ended it.
    fn drive(&mut self, sim: &mut turmoil::Sim<'_>) -> (u64, Option<String>) {
        let mut steps = 0u64;
        loop {
            let done = match sim.step() {
                Ok(d) => d,
                Err(e) => return (steps, Some(e.to_string())),
            };
            steps += 1;
            let now = sim.elapsed();
            while self.actions.front().is_some_and(|(t, _)| *t <= now) {
                let Some((_, action)) = self.actions.pop_front() else {
                    break;
                };
                self.act(sim, now, action);
            }
            if done {
                return (steps, None);
            }
        }
    }

    fn act(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, action: Action) {
        match action {
            Action::Crash(i) => self.crash(sim, now, i),
            Action::Restart(i) => self.restart(sim, now, i),
            Action::CrashMid { until, down } => self.crash_mid_invocation(sim, now, until, down),
            Action::Cut(i) => self.cut(sim, now, i),
            Action::Heal(i) => self.heal(sim, now, i),
            Action::BrokerRestart { down, keep } => {
                self.record(now, FaultKind::BrokerRestart, BROKER, true);
                self.hosts.broker.request_restart(down, keep);
            }
            Action::ReceiverDown => {
                self.receiver_down += 1;
                if self.receiver_down == 1 {
                    sim.crash(RECEIVER);
                    self.record(now, FaultKind::ReceiverDown, RECEIVER, true);
                }
            }
            Action::ReceiverUp => {
                self.receiver_down = self.receiver_down.saturating_sub(1);
                if self.receiver_down == 0 {
                    sim.bounce(RECEIVER);
                    self.record(now, FaultKind::ReceiverDown, RECEIVER, false);
                }
            }
            Action::ReceiverErrors(on) => self.receiver_errors(now, on),
            Action::DeadLetterOutage(on) => self.dead_letter_outage(now, on),
        }
    }

    fn record(&self, now: Duration, kind: FaultKind, target: &str, start: bool) {
        self.hist.record_at(now, fault(kind, target, start));
    }

    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, i: usize) {
        let n = self.down.entry(i).or_default();
        *n += 1;
        if *n == 1 {
            sim.crash(worker_host(i));
            self.record(now, FaultKind::Crash, &worker_host(i), true);
        }
    }

    fn restart(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, i: usize) {
        let n = self.down.entry(i).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            sim.bounce(worker_host(i));
            self.record(now, FaultKind::Crash, &worker_host(i), false);
        }
    }

    /// Crash the first live worker with an invocation in flight (any live worker once `until`
    /// has passed), or try again next tick.
    fn crash_mid_invocation(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: Duration,
        until: Duration,
        down: Duration,
    ) {
        let busy = {
            let live = self.hist.live();
            (0..self.cfg.workers).find(|i| {
                live.open.get(&worker_host(*i)).copied().unwrap_or(0) > 0
                    && !self.down.contains_key(i)
            })
        };
        let target = match busy {
            Some(i) => Some(i),
            None if now >= until => (0..self.cfg.workers).find(|i| !self.down.contains_key(i)),
            None => None,
        };
        match target {
            Some(i) => {
                self.down.insert(i, 1);
                sim.crash(worker_host(i));
                self.record(now, FaultKind::Crash, &worker_host(i), true);
                self.insert(now + down, Action::Restart(i));
            }
            None => self.insert(now + TICK, Action::CrashMid { until, down }),
        }
    }

    fn cut(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, i: usize) {
        let n = self.cut.entry(i).or_default();
        *n += 1;
        if *n == 1 {
            sim.partition(worker_host(i), BROKER);
            self.record(now, FaultKind::Partition, &worker_host(i), true);
        }
    }

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, i: usize) {
        let n = self.cut.entry(i).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            sim.repair(worker_host(i), BROKER);
            self.record(now, FaultKind::Partition, &worker_host(i), false);
        }
    }

    /// Overlapping error windows: errors from the first start to the last end.
    fn receiver_errors(&mut self, now: Duration, on: bool) {
        let before = self.receiver_failing;
        self.receiver_failing = if on {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if (before == 0) != (self.receiver_failing == 0) {
            *self
                .hosts
                .receiver_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = on;
            self.record(now, FaultKind::ReceiverDown, "receiver-errors", on);
        }
    }

    /// Overlapping outages: dead letters refused from the first start to the last end.
    fn dead_letter_outage(&mut self, now: Duration, on: bool) {
        let before = self.dead_letters_refused;
        self.dead_letters_refused = if on {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if (before == 0) != (self.dead_letters_refused == 0) {
            self.hosts.broker.refuse_dead_letters(on);
            self.record(now, FaultKind::DeadLetterOutage, BROKER, on);
        }
    }

    /// Schedule `action` at `at`, after the actions already due then.
    fn insert(&mut self, at: Duration, action: Action) {
        let pos = self
            .actions
            .iter()
            .position(|(t, _)| *t > at)
            .unwrap_or(self.actions.len());
        self.actions.insert(pos, (at, action));
    }
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
            cfg.server,
        )),
        status_store: None,
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
        cfg.server,
    ));
    let config = Arc::new(cfg.worker_config());
    // With cancels, the client records each call's `queued` status, as the ingress does.
    let cancelling = cfg.calls.iter().any(|c| c.cancel_at.is_some());
    let status_stop = CancellationToken::new();
    let ingress = Ingress {
        config: config.clone(),
        publisher: broker.clone(),
        streams: broker.clone(),
        store: broker.clone(),
        objects: broker.clone(),
        clock: Arc::new(SimClock),
        metrics: Arc::new(Metrics::new()),
        auth: None,
        calls: cancelling.then(|| Calls::start(broker.clone(), &config, status_stop.clone())),
        operator: None,
        tracer: Default::default(),
    };
    let start = tokio::time::Instant::now();
    let cancels = cancelling.then(|| {
        let task = cancels::cancel_calls(
            cfg.clone(),
            config.clone(),
            broker.clone(),
            hist.clone(),
            start,
        );
        tokio::spawn(task)
    });
    let mut calls = cfg.calls.clone();
    calls.sort_by_key(|c| c.at);
    for c in calls {
        tokio::time::sleep_until(start + c.at).await;
        let mut prepared = prepare(&config, &c)?;
        let raw = c.poison || c.raw.is_some();
        if let Some(limits) = cfg.flow.get(&c.function).filter(|_| !raw) {
            message::annotate(&mut prepared, limits)?;
        }
        if let Some((key, limits)) = cfg.flow_key(&c).filter(|_| !raw) {
            message::with_flow_key(&mut prepared, key, limits)?;
        }
        // Until the broker accepts it, or the run's deadline.
        loop {
            match message::publish(&ingress, &prepared, raw).await {
                Ok(()) => {
                    hist.record(Ev::Accepted { call: c.id.clone() });
                    break;
                }
                // A workload the broker can never take is a mistake of its scenario.
                Err(e @ BrokerError::TooLarge(_)) => return Err(format!("{}: {e}", c.id).into()),
                Err(_) if start.elapsed() < cfg.deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => break,
            }
        }
    }
    settle(&cfg, &hist, start).await;
    if let Some(task) = cancels {
        let _ = task.await;
        cancels::read_final_statuses(&cfg, broker.as_ref(), &hist).await;
    }
    status_stop.cancel();
    Ok(())
}

/// Waits (checking every second) until every accepted call is done and the settle time after
/// the last fault and the last call has passed, or the deadline.
async fn settle(cfg: &RunConfig, hist: &History, start: tokio::time::Instant) {
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
}
