//! Deterministic simulation of queue-worker (turmoil).
//!
//! A run is a turmoil simulation with these hosts, all on one thread and one simulated clock:
//! - `broker`: the in-process [`MemoryBroker`](queue_worker::broker::memory::MemoryBroker)
//!   (JetStream semantics) served over a framed protocol on turmoil TCP ([`broker_host`]);
//! - `worker-<i>`: replicas running the real worker ([`queue_worker::run`]) on simulated ports:
//!   [`remote::RemoteBroker`], a hyper-over-turmoil [`http::SimInvoker`], the simulated wall
//!   clock ([`SimClock`]) and a jitter RNG seeded from the run's seed;
//! - `gateway`: the functions (latency, status sequences, 429/503 storms, hangs);
//! - `receiver`: the callback receiver (outages);
//! - `client`: the workload, publishing through the ingress code.
//!
//! The driver ([`harness`]) steps the simulation and injects faults (crashes, partitions,
//! broker restarts, receiver outages); every host records what it sees into one
//! [`history::History`]; [`check`] verifies the invariants over it; the digest of the history
//! fingerprints the run. Everything that varies comes from the seed.

pub mod broker_host;
pub mod bugs;
pub mod cancels;
pub mod check;
pub mod functions;
pub mod harness;
pub mod history;
pub mod http;
pub mod message;
pub mod plan;
pub mod proto;
pub mod remote;
pub mod scenarios;

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use harness::RunResult;
pub use scenarios::Opts;

/// The simulated wall clock starts here (2026-01-01T00:00:00Z).
pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// The `Clock` port on simulated time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimClock;

impl queue_worker::clock::Clock for SimClock {
    fn now(&self) -> SystemTime {
        epoch() + turmoil::sim_elapsed().unwrap_or_default()
    }
}

/// The value of header `name` (exact match, first one).
pub fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// The work-queue stream sequence a dead letter's `Nats-Msg-Id` names
/// (`dlq-<queue>-<sequence>-<stored at>`): how a dead letter that kept no header of its
/// message (headers-only) is tied to its call.
pub fn dead_letter_sequence(msg_id: &str) -> Option<u64> {
    let mut parts = msg_id.strip_prefix("dlq-")?.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// Build and run scenario `name` for `seed`.
pub fn run_scenario(name: &str, seed: u64, opts: &Opts) -> Option<RunResult> {
    let s = scenarios::find(name)?;
    Some(harness::run((s.build)(seed, opts)))
}

/// The command that replays scenario `name` for `seed` with `opts` (failing runs print it).
pub fn replay_command(name: &str, seed: u64, opts: &Opts) -> String {
    let mut cmd = String::from("cargo run --profile sim -p sim");
    if opts.bug.is_some() {
        cmd += " --features buggify";
    }
    let _ = write!(cmd, " -- --seed {seed} --scenario {name}");
    if let Some(n) = opts.calls {
        let _ = write!(cmd, " --calls {n}");
    }
    if let Some(n) = opts.faults {
        let _ = write!(cmd, " --faults {n}");
    }
    if let Some(n) = opts.workers {
        let _ = write!(cmd, " --workers {n}");
    }
    if let Some(bug) = opts.bug {
        let _ = write!(cmd, " --bug {}", bug.name);
    }
    cmd
}

/// A human summary of a run (the CLI prints it; failing tests too).
pub fn summary(r: &RunResult) -> String {
    let mut s = config_line(&r.config);
    for f in &r.config.faults {
        let _ = writeln!(s, "  fault: {f:?}");
    }
    let _ = writeln!(
        s,
        "  simulated {:.1}s in {} steps ({:.2}s wall), {} events",
        r.sim_time.as_secs_f64(),
        r.steps,
        r.wall.as_secs_f64(),
        r.events
    );
    counts(&mut s, &r.report.stats);
    if let Some(e) = &r.error {
        let _ = writeln!(s, "  SIMULATION ERROR: {e}");
    }
    for v in r.report.violations.iter().take(20) {
        let _ = writeln!(s, "  VIOLATION {v}");
    }
    if r.report.violations.len() > 20 {
        let _ = writeln!(s, "  ... {} violations in all", r.report.violations.len());
    }
    let _ = writeln!(s, "  result: {}", if r.ok() { "ok" } else { "FAILED" });
    s
}

/// The summary's first line: what the run was.
fn config_line(c: &plan::RunConfig) -> String {
    format!(
        "scenario {} seed {}: nats-server {} model, {} workers x max_inflight {}, {:?} mode, \
         {:?} storage, max_payload {}, ack_wait {:?}, attempts {}, {:?} backoff {:?}..{:?}, \
         {} calls, {} storms, {} faults\n",
        c.scenario,
        c.seed,
        c.server,
        c.workers,
        c.max_inflight,
        c.mode,
        c.storage,
        c.max_payload,
        c.ack_wait,
        c.max_attempts,
        c.backoff,
        c.initial_retry_wait,
        c.max_retry_wait,
        c.calls.len(),
        c.storms.len(),
        c.faults.len(),
    )
}

/// The summary's counts: outcomes, then invocations, leases and callbacks.
fn counts(s: &mut String, st: &check::Stats) {
    let _ = writeln!(
        s,
        "  accepted {} succeeded {} cancelled {} dead-lettered {:?} (truncated {} headers-only {}) dropped \
         {} dead-letter publishes failed {} lost(memory restart) {}",
        st.accepted,
        st.succeeded,
        st.cancelled,
        st.dead_lettered,
        st.dead_letters_truncated,
        st.dead_letters_headers_only,
        st.dead_letters_dropped,
        st.dead_letters_not_stored,
        st.lost
    );
    let _ = writeln!(
        s,
        "  invocations {} retries {} (budget-delayed {}) deliveries-past-last-attempt {} \
         lease-losses {} (bound {}) duplicate-invocations {} crashes-mid-invocation {} \
         max-inflight-seen {} reconnects {} callbacks {} (refused {}) \
         ended-past-unfinished-last-attempt {}",
        st.invocations,
        st.retries,
        st.budget_denied,
        st.deliveries_past_last_attempt,
        st.lease_losses,
        st.lease_loss_bound,
        st.duplicate_invocations,
        st.crashes_mid_invocation,
        st.max_inflight_seen,
        st.reconnects,
        st.callbacks,
        st.callbacks_refused,
        st.unfinished_last_attempts,
    );
}
