//! Worker crash and restart mid-invocation: the crashed worker's messages come back after
//! `ack_wait` and run elsewhere; nothing is lost; duplicates only for the crashed worker's
//! in-flight messages.

use super::{Mix, Opts, between, calls, finish, rng, secs, swarm_faults};
use crate::plan::{Fault, RunConfig};
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "crash";

pub const ABOUT: &str = "workers crash mid-invocation and restart: redelivery after ack_wait, nothing lost, duplicates only for the crashed worker's messages";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    let n = opts.calls.unwrap_or_else(|| r.random_range(20..=50));
    let spread = between(&mut r, 10.0, 40.0);
    let mix = Mix::swarm(&mut r);
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 3, mix, 0.5, cfg.ack_wait);
    let crashes = r.random_range(1..=3);
    for _ in 0..crashes {
        cfg.faults.push(Fault::CrashMidInvocation {
            at: between(&mut r, 2.0, spread.as_secs_f64() + 2.0),
            down: between(&mut r, 0.5, 10.0),
        });
    }
    let extra = swarm_faults(&mut r, &cfg, spread);
    cfg.faults.extend(extra);
    finish(cfg, opts)
}
