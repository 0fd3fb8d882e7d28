//! What one run does: the worker configuration, the workload (calls and how their functions
//! behave), and the faults. Scenarios build a [`RunConfig`] from a seed; the harness runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use queue_worker::broker::ServerVersion;
use queue_worker::config::{Backoff, Config, ScalingMode, Storage};
use queue_worker::flow::Limits;

/// How a function answers one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// 2xx after a latency in `[lo, hi]` ms.
    Ok { lo: u64, hi: u64 },
    /// The first `n` attempts answer `status` (with `Retry-After` seconds when set), then 200.
    FailFirst {
        n: u32,
        status: u16,
        retry_after: Option<u64>,
    },
    /// Every attempt answers `status`.
    Always { status: u16 },
    /// 200 after exactly `ms` (longer than `ack_wait`).
    Slow { ms: u64 },
    /// The first `n` attempts never answer (the worker's `upstream_timeout` ends them).
    HangFirst { n: u32 },
    /// Busy but healthy: 200 after `ms`, except while `capacity` calls of its function already
    /// run: then 429 at once (the OpenFaaS watchdog's `max_inflight`).
    Busy { ms: u64, capacity: usize },
}

/// One call of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPlan {
    pub id: String,
    /// Function name (namespace: the default).
    pub function: String,
    /// When the client publishes it.
    pub at: Duration,
    pub behaviour: Behaviour,
    /// Post the result to the callback receiver.
    pub callback: bool,
    /// Not a valid message at all (dead-lettered as poison, never invoked).
    pub poison: bool,
    /// Published raw, shaped as no ingress would (the hostile scenario).
    pub raw: Option<Raw>,
    /// When the client cancels the call (the cancel-race scenario).
    pub cancel_at: Option<Duration>,
}

/// A message the workload publishes raw: malformed, or sized against the broker's
/// `max_payload` (the hostile scenario). Sizes are as NATS counts them for `max_payload`:
/// headers and payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// `wire` bytes in all, the payload not JSON at all (poison).
    Garbage { wire: usize },
    /// A `QueueRequest` whose `Function` is `name`, invalid or empty (poison); published on
    /// the bare queue subject (older gateways) when `bare`.
    Function { name: String, bare: bool },
    /// A valid invocation whose body pads it to `wire` bytes: its dead letter, the `Qw-*`
    /// headers on top, is too large whole.
    BigBody { wire: usize },
    /// A valid invocation padded to `wire` bytes by a header of its own: a dead letter
    /// without the payload is still too large, only the `Qw-*` headers fit.
    BigHeader { wire: usize },
    /// Not JSON, on a subject with a token of `len` bytes: every dead letter repeats the
    /// subject (`Qw-Subject`), so on a small `max_payload` not even its headers fit.
    LongSubject { len: usize },
}

/// A window in which a function answers every request with `status` (a 429/503 storm).
#[derive(Debug, Clone, PartialEq)]
pub struct Storm {
    pub function: String,
    pub from: Duration,
    pub to: Duration,
    pub status: u16,
    pub retry_after: Option<u64>,
}

/// A fault, at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Crash worker `worker` at `at`, restart it `down` later.
    Crash {
        worker: usize,
        at: Duration,
        down: Duration,
    },
    /// From `at` on, crash the first worker seen with an invocation in flight (any worker
    /// when none is found by `at + 20s`); restart it `down` later.
    CrashMidInvocation { at: Duration, down: Duration },
    /// Cut worker `worker` off the broker from `at` for `len`.
    Partition {
        worker: usize,
        at: Duration,
        len: Duration,
    },
    /// Restart the broker at `at`, down for `down`; `keep`: file storage (messages survive).
    BrokerRestart {
        at: Duration,
        down: Duration,
        keep: bool,
    },
    /// The callback receiver is down (connections refused) from `at` for `len`.
    ReceiverDown { at: Duration, len: Duration },
    /// The callback receiver answers 503 from `at` for `len`.
    ReceiverErrors { at: Duration, len: Duration },
    /// The broker refuses every publish to the dead-letter subjects from `at` for `len` (its
    /// storage failing: an error other than too large).
    DeadLetterOutage { at: Duration, len: Duration },
}

impl Fault {
    pub fn start(&self) -> Duration {
        match self {
            Fault::Crash { at, .. }
            | Fault::CrashMidInvocation { at, .. }
            | Fault::Partition { at, .. }
            | Fault::BrokerRestart { at, .. }
            | Fault::ReceiverDown { at, .. }
            | Fault::ReceiverErrors { at, .. }
            | Fault::DeadLetterOutage { at, .. } => *at,
        }
    }

    /// When the fault is certainly over.
    pub fn end(&self) -> Duration {
        match self {
            Fault::Crash { at, down, .. } => *at + *down,
            Fault::CrashMidInvocation { at, down } => *at + Duration::from_secs(20) + *down,
            Fault::Partition { at, len, .. } => *at + *len,
            Fault::BrokerRestart { at, down, .. } => *at + *down,
            Fault::ReceiverDown { at, len }
            | Fault::ReceiverErrors { at, len }
            | Fault::DeadLetterOutage { at, len } => *at + *len,
        }
    }
}

/// A deliberate bug.
#[derive(Debug)]
pub struct Bug {
    /// The name `--bug` takes.
    pub name: &'static str,
    pub about: &'static str,
    /// The scenario that catches it…
    pub caught_by: &'static str,
    /// …with a violation of this rule.
    pub rule: &'static str,
    /// The bug as queue-worker knows it.
    #[cfg(feature = "buggify")]
    pub inject: queue_worker::buggify::Bug,
}

/// Everything one run needs. Built by a scenario from a seed; printable for replay.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: &'static str,
    pub seed: u64,
    pub workers: usize,
    pub max_inflight: usize,
    pub mode: ScalingMode,
    pub storage: Storage,
    /// The nats-server the broker behaves as where versions differ (the seed picks one).
    pub server: ServerVersion,
    pub ack_wait: Duration,
    pub upstream_timeout: Duration,
    pub max_attempts: u32,
    pub initial_retry_wait: Duration,
    pub max_retry_wait: Duration,
    pub backoff: Backoff,
    pub retry_budget_ratio: f64,
    pub callback_retries: u32,
    pub inactive_threshold: Duration,
    pub limiter: bool,
    /// The broker's `max_payload`: the largest message (headers and payload) it stores.
    pub max_payload: usize,
    /// Upper bound of network latency per hop.
    pub max_latency: Duration,
    /// Shuffle the order hosts run in each step (seeded).
    pub random_order: bool,
    pub calls: Vec<CallPlan>,
    pub storms: Vec<Storm>,
    pub faults: Vec<Fault>,
    /// After the last fault ends and every call is done, keep running this long (late
    /// duplicates would show up here).
    pub settle: Duration,
    /// The run stops here whatever happened (calls not done by then are reported).
    pub deadline: Duration,
    /// A deliberate bug to inject (`buggify` builds only).
    pub bug: Option<&'static Bug>,
    /// Flow limits by function, carried in its calls' annotations (as OpenFaaS puts a
    /// function's annotations in its messages).
    pub flow: BTreeMap<String, Limits>,
    /// Flow keys by name with their limits (`X-Flow-Control-Key` and `-Value`), for the calls
    /// of function `keyed` ([`RunConfig::flow_key`] picks each call's).
    pub flow_keys: BTreeMap<String, Limits>,
    pub keyed: Option<String>,
}

pub const QUEUE: &str = "faas-request";
/// A flow limit so high it never holds a call back (a key that is not limited in effect).
pub const MAX_FLOW: u32 = 10_000;
pub const GATEWAY: &str = "gateway";
pub const GATEWAY_PORT: u16 = 8080;
pub const RECEIVER: &str = "receiver";
pub const RECEIVER_PORT: u16 = 9000;
pub const BROKER: &str = "broker";

impl RunConfig {
    /// The worker configuration (defaults, with the run's choices).
    pub fn worker_config(&self) -> Config {
        Config {
            queue_name: QUEUE.into(),
            nats_durable: format!("{QUEUE}-workers"),
            nats_storage: self.storage,
            max_inflight: self.max_inflight,
            scaling_mode: self.mode,
            consumer_inactive_threshold: self.inactive_threshold,
            ack_wait: self.ack_wait,
            upstream_timeout: self.upstream_timeout,
            gateway_url: format!("http://{GATEWAY}:{GATEWAY_PORT}"),
            limiter_enabled: self.limiter,
            max_retry_attempts: self.max_attempts,
            max_retry_wait: self.max_retry_wait,
            initial_retry_wait: self.initial_retry_wait,
            backoff: self.backoff,
            retry_budget_ratio: self.retry_budget_ratio,
            callback_retries: self.callback_retries,
            shutdown_timeout: Duration::from_secs(5),
            // No delayed calls in the simulation (their mover stays off).
            max_delay: Duration::ZERO,
            ..Config::default()
        }
    }

    /// When the last fault is over.
    pub fn faults_end(&self) -> Duration {
        self.faults.iter().map(Fault::end).max().unwrap_or_default()
    }

    /// When the last call is published.
    pub fn last_call(&self) -> Duration {
        self.calls.iter().map(|c| c.at).max().unwrap_or_default()
    }

    pub fn call(&self, id: &str) -> Option<&CallPlan> {
        self.calls.iter().find(|c| c.id == id)
    }

    /// The flow key a call carries, and its limits: one of [`Self::flow_keys`], by its id, for
    /// the calls of function [`Self::keyed`].
    pub fn flow_key(&self, call: &CallPlan) -> Option<(&String, &Limits)> {
        if self.keyed.as_ref() != Some(&call.function) || self.flow_keys.is_empty() {
            return None;
        }
        let i = (fnv(&call.id) % self.flow_keys.len() as u64) as usize;
        self.flow_keys.iter().nth(i)
    }
}

/// A small deterministic hash (splitmix64), for per-call choices that must not depend on the
/// order things happen in.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of a string.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
