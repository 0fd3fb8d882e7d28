//! Function mode: per-function consumers are deleted after their inactive threshold while new
//! messages keep arriving in bursts; consumers are recreated and every message runs.

use std::time::Duration;

use super::{Mix, Opts, between, calls, finish, rng, secs, swarm_faults};
use crate::plan::RunConfig;
use queue_worker::config::ScalingMode;
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "consumer-expiry";

pub const ABOUT: &str = "function mode: consumers expire after the inactive threshold between bursts and are recreated; every message runs";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.mode = ScalingMode::Function;
    cfg.inactive_threshold = between(&mut r, 1.0, 3.0);
    cfg.limiter = r.random_bool(0.5);
    let functions = r.random_range(2..=4);
    let total = opts.calls.unwrap_or_else(|| r.random_range(20..=45));
    let bursts = r.random_range(3..=5);
    let mix = Mix::swarm(&mut r);
    let mut at = secs(1.0);
    let mut all = Vec::new();
    for b in 0..bursts {
        let n = total / bursts + usize::from(b < total % bursts);
        let mut burst = calls(&mut r, n, at, secs(2.0), functions, mix, 0.3, cfg.ack_wait);
        for (i, c) in burst.iter_mut().enumerate() {
            c.id = format!("b{b}c{i:03}");
        }
        all.extend(burst);
        // Idle long enough for consumers to expire (the threshold plus discovery).
        at += secs(2.0) + cfg.inactive_threshold * 2 + between(&mut r, 1.0, 8.0);
    }
    cfg.calls = all;
    let horizon: Duration = at;
    let extra = swarm_faults(&mut r, &cfg, horizon);
    cfg.faults.extend(extra);
    finish(cfg, opts)
}
