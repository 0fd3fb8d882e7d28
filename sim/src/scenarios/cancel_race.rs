//! Calls cancelled by the client before, during and after their invocations (queued, running,
//! waiting between retries, already ended), across worker crashes, partitions and broker
//! restarts: a call is never invoked after its cancel was acknowledged, and its status ends in
//! exactly one terminal state.

use super::{Mix, Opts, between, calls, finish, rng, secs, swarm_faults};
use crate::plan::{Fault, RunConfig};
use queue_worker::config::ScalingMode;
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "cancel-race";

pub const ABOUT: &str = "calls cancelled before, during and after their invocations, across crashes: never invoked after the cancel was acknowledged, exactly one terminal state";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    if r.random_bool(0.5) {
        cfg.mode = ScalingMode::Function;
    }
    let n = opts.calls.unwrap_or_else(|| r.random_range(20..=40));
    let spread = between(&mut r, 5.0, 30.0);
    let mix = Mix {
        ok: 10,
        fail_first: 4,
        always: 1,
        reject: 1,
        slow: 3,
        hang: 0,
        poison: 0,
    };
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 3, mix, 0.7, cfg.ack_wait);
    let share = [0.3, 0.6, 0.9][r.random_range(0..3)];
    for c in &mut cfg.calls {
        if r.random_bool(share) {
            // Right away (often before the status is written), while queued or running,
            // between retries, or long after the end.
            let after = match r.random_range(0..4) {
                0 => between(&mut r, 0.0, 0.2),
                1 => between(&mut r, 0.2, 3.0),
                2 => between(&mut r, 3.0, 10.0),
                _ => between(&mut r, 10.0, 20.0),
            };
            c.cancel_at = Some(c.at + after);
        }
    }
    for _ in 0..r.random_range(0..=2) {
        cfg.faults.push(Fault::CrashMidInvocation {
            at: between(&mut r, 2.0, spread.as_secs_f64() + 2.0),
            down: between(&mut r, 0.5, 8.0),
        });
    }
    let extra = swarm_faults(&mut r, &cfg, spread);
    cfg.faults.extend(extra);
    finish(cfg, opts)
}
