//! Scenarios: each builds a [`RunConfig`] from a seed. Swarm testing: the seed picks the
//! workload's shape (how many calls, which behaviours, how spread out), the fault mix and
//! its probabilities, and the worker configuration, within what the scenario is about.

pub mod broker_restart;
pub mod callback_outage;
pub mod cancel_race;
pub mod consumer_expiry;
pub mod crash;
pub mod flow_control;
pub mod hostile;
pub mod retry_storm;
pub mod saturated;
pub mod slow;

use std::time::Duration;

use queue_worker::broker::ServerVersion;
use queue_worker::broker::memory::MemoryLimits;
use queue_worker::config::{Backoff, ScalingMode, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::plan::Bug;
use crate::plan::{Behaviour, CallPlan, Fault, RunConfig};

/// Overrides from the command line or the property tests (shrinking makes them smaller).
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// Number of calls in the workload.
    pub calls: Option<usize>,
    /// Keep at most this many faults.
    pub faults: Option<usize>,
    /// Number of worker replicas.
    pub workers: Option<usize>,
    /// A deliberate bug (`buggify` builds).
    pub bug: Option<&'static Bug>,
    /// The nats-server the broker behaves as (otherwise the seed picks one).
    pub server: Option<ServerVersion>,
}

/// A scenario: its name, what it claims, and how to build a run from a seed.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub build: fn(u64, &Opts) -> RunConfig,
}

// The registry: the CLI, the tests and the replay commands take scenario names from here.
// Renaming a scenario changes its runs (its name seeds its choices).
pub const CRASH: Scenario = Scenario {
    name: crash::NAME,
    about: crash::ABOUT,
    build: crash::build,
};
pub const SLOW: Scenario = Scenario {
    name: slow::NAME,
    about: slow::ABOUT,
    build: slow::build,
};
pub const BROKER_RESTART: Scenario = Scenario {
    name: broker_restart::NAME,
    about: broker_restart::ABOUT,
    build: broker_restart::build,
};
pub const CONSUMER_EXPIRY: Scenario = Scenario {
    name: consumer_expiry::NAME,
    about: consumer_expiry::ABOUT,
    build: consumer_expiry::build,
};
pub const RETRY_STORM: Scenario = Scenario {
    name: retry_storm::NAME,
    about: retry_storm::ABOUT,
    build: retry_storm::build,
};
pub const CALLBACK_OUTAGE: Scenario = Scenario {
    name: callback_outage::NAME,
    about: callback_outage::ABOUT,
    build: callback_outage::build,
};
pub const HOSTILE: Scenario = Scenario {
    name: hostile::NAME,
    about: hostile::ABOUT,
    build: hostile::build,
};
pub const SATURATED: Scenario = Scenario {
    name: saturated::NAME,
    about: saturated::ABOUT,
    build: saturated::build,
};

pub const FLOW_CONTROL: Scenario = Scenario {
    name: flow_control::NAME,
    about: flow_control::ABOUT,
    build: flow_control::build,
};

pub const CANCEL_RACE: Scenario = Scenario {
    name: cancel_race::NAME,
    about: cancel_race::ABOUT,
    build: cancel_race::build,
};

/// Every scenario, in the order `--scenario all` runs them.
pub const ALL: &[Scenario] = &[
    CRASH,
    SLOW,
    BROKER_RESTART,
    CONSUMER_EXPIRY,
    RETRY_STORM,
    CALLBACK_OUTAGE,
    HOSTILE,
    SATURATED,
    CANCEL_RACE,
    FLOW_CONTROL,
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// The scenarios' names, in [`ALL`]'s order.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|s| s.name)
}

/// The seeded generator for a scenario's choices.
pub fn rng(seed: u64, scenario: &str) -> StdRng {
    StdRng::seed_from_u64(seed ^ crate::plan::fnv(scenario))
}

pub fn secs(s: f64) -> Duration {
    Duration::from_millis((s * 1000.0) as u64)
}

/// A uniform duration in `[lo, hi]` seconds (ms resolution).
pub fn between(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_millis(rng.random_range((lo * 1000.0) as u64..=(hi * 1000.0) as u64))
}

/// The servers the broker's model follows: a seed runs one of them (half the seeds each),
/// chosen apart from the scenario's other choices so that those stay the same.
pub const SERVERS: [ServerVersion; 2] = [ServerVersion::NATS_2_9, ServerVersion::NEWEST];

/// The server `seed` runs its broker as.
pub fn server_for(seed: u64) -> ServerVersion {
    SERVERS[(crate::plan::mix(seed ^ crate::plan::fnv("nats-server")) % 2) as usize]
}

/// The common starting point: small timeouts so a run covers minutes of simulated time.
pub fn base(scenario: &'static str, seed: u64, rng: &mut StdRng, opts: &Opts) -> RunConfig {
    let backoff = match rng.random_range(0..3) {
        0 => Backoff::Exponential,
        1 => Backoff::Full,
        _ => Backoff::Equal,
    };
    RunConfig {
        scenario,
        seed,
        workers: rng.random_range(2..=4),
        max_inflight: [1, 2, 4][rng.random_range(0..3)],
        mode: ScalingMode::Static,
        storage: Storage::File,
        server: opts.server.unwrap_or_else(|| server_for(seed)),
        ack_wait: secs(4.0),
        upstream_timeout: secs(8.0),
        max_attempts: rng.random_range(3..=6),
        initial_retry_wait: secs(1.0),
        max_retry_wait: secs(8.0),
        backoff,
        retry_budget_ratio: 0.2,
        callback_retries: 3,
        inactive_threshold: secs(3.0),
        limiter: true,
        max_payload: MemoryLimits::default().max_message_bytes,
        max_latency: Duration::from_millis(rng.random_range(2..=20)),
        random_order: rng.random_bool(0.5),
        calls: Vec::new(),
        storms: Vec::new(),
        faults: Vec::new(),
        settle: secs(10.0),
        deadline: secs(400.0),
        bug: opts.bug,
        flow: Default::default(),
        flow_keys: Default::default(),
        keyed: None,
    }
}

/// Relative weights of behaviours in a workload (the swarm picks them per seed).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub ok: u32,
    pub fail_first: u32,
    pub always: u32,
    pub reject: u32,
    pub slow: u32,
    pub hang: u32,
    pub poison: u32,
}

impl Mix {
    /// Mostly healthy traffic, with each kind of trouble switched on or off by the seed.
    pub fn swarm(rng: &mut StdRng) -> Mix {
        let mut on = |w: u32| if rng.random_bool(0.6) { w } else { 0 };
        Mix {
            ok: 10,
            fail_first: on(4),
            always: on(1),
            reject: on(1),
            slow: 0,
            hang: on(1),
            poison: on(1),
        }
    }
}

/// `n` calls over `spread`, on `functions` functions, with behaviours drawn from `mix`.
#[allow(clippy::too_many_arguments)]
pub fn calls(
    rng: &mut StdRng,
    n: usize,
    start: Duration,
    spread: Duration,
    functions: usize,
    mix: Mix,
    callback_share: f64,
    ack_wait: Duration,
) -> Vec<CallPlan> {
    (0..n)
        .map(|i| {
            let (behaviour, poison) = behaviour(rng, mix, ack_wait);
            CallPlan {
                id: format!("c{i:04}"),
                function: format!(
                    "fn-{}",
                    (b'a' + rng.random_range(0..functions.max(1)) as u8) as char
                ),
                at: start + between(rng, 0.0, spread.as_secs_f64()),
                behaviour,
                callback: rng.random_bool(callback_share),
                poison,
                raw: None,
                cancel_at: None,
            }
        })
        .collect()
}

/// A behaviour drawn from `mix`, and whether the call is poison instead.
fn behaviour(rng: &mut StdRng, mix: Mix, ack_wait: Duration) -> (Behaviour, bool) {
    let total =
        mix.ok + mix.fail_first + mix.always + mix.reject + mix.slow + mix.hang + mix.poison;
    let mut pick = rng.random_range(0..total.max(1));
    let mut take = |w: u32| {
        if pick < w {
            true
        } else {
            pick -= w;
            false
        }
    };
    if take(mix.ok) {
        let hi = rng.random_range(20..=1500);
        (Behaviour::Ok { lo: 10, hi }, false)
    } else if take(mix.fail_first) {
        let status = [429, 500, 502, 503, 504][rng.random_range(0..5)];
        let retry_after =
            (matches!(status, 429 | 503) && rng.random_bool(0.5)).then(|| rng.random_range(0..=10));
        let n = rng.random_range(1..=3);
        (
            Behaviour::FailFirst {
                n,
                status,
                retry_after,
            },
            false,
        )
    } else if take(mix.always) {
        (Behaviour::Always { status: 503 }, false)
    } else if take(mix.reject) {
        (Behaviour::Always { status: 400 }, false)
    } else if take(mix.slow) {
        let ms = ack_wait.as_millis() as u64;
        let ms = rng.random_range(ms + 500..=ms * 4);
        (Behaviour::Slow { ms }, false)
    } else if take(mix.hang) {
        (Behaviour::HangFirst { n: 1 }, false)
    } else {
        (Behaviour::Ok { lo: 10, hi: 50 }, true)
    }
}

/// Extra faults the swarm may add to any scenario: each kind with a probability the seed picks.
pub fn swarm_faults(rng: &mut StdRng, cfg: &RunConfig, horizon: Duration) -> Vec<Fault> {
    let mut out = Vec::new();
    let p = [0.0, 0.25, 0.5][rng.random_range(0..3)];
    let h = horizon.as_secs_f64().max(5.0);
    if rng.random_bool(p) {
        out.push(Fault::Crash {
            worker: rng.random_range(0..cfg.workers),
            at: between(rng, 2.0, h),
            down: between(rng, 0.5, 10.0),
        });
    }
    if rng.random_bool(p) {
        out.push(Fault::Partition {
            worker: rng.random_range(0..cfg.workers),
            at: between(rng, 2.0, h),
            len: between(rng, 0.2, 15.0),
        });
    }
    if rng.random_bool(p / 2.0) {
        out.push(Fault::BrokerRestart {
            at: between(rng, 2.0, h),
            down: between(rng, 0.2, 4.0),
            keep: true,
        });
    }
    out
}

/// Apply the overrides: fewer calls, fewer faults.
pub fn finish(mut cfg: RunConfig, opts: &Opts) -> RunConfig {
    if let Some(n) = opts.workers {
        cfg.workers = n.max(1);
        let workers = cfg.workers;
        cfg.faults.retain(|f| match f {
            Fault::Crash { worker, .. } | Fault::Partition { worker, .. } => *worker < workers,
            _ => true,
        });
    }
    if let Some(n) = opts.faults {
        cfg.faults.truncate(n);
    }
    cfg
}
