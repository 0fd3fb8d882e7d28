//! Callback receiver outages: the receiver is down (connections refused) or answers 503 for a
//! window. Callbacks are retried `callback_retries` times, never after one got through, and a
//! failed callback never runs the function again.

use super::{Mix, Opts, between, calls, finish, rng, secs, swarm_faults};
use crate::plan::{Fault, RunConfig};
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "callback-outage";

pub const ABOUT: &str = "callback receiver down or failing: bounded callback retries, never re-invoked because a callback failed, every call still terminal";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.callback_retries = r.random_range(0..=4);
    let n = opts.calls.unwrap_or_else(|| r.random_range(20..=40));
    let spread = between(&mut r, 10.0, 30.0);
    let mix = Mix::swarm(&mut r);
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 3, mix, 1.0, cfg.ack_wait);
    let h = spread.as_secs_f64();
    cfg.faults.push(Fault::ReceiverDown {
        at: between(&mut r, 1.0, h),
        len: between(&mut r, 2.0, 20.0),
    });
    if r.random_bool(0.7) {
        cfg.faults.push(Fault::ReceiverErrors {
            at: between(&mut r, 1.0, h),
            len: between(&mut r, 2.0, 20.0),
        });
    }
    if r.random_bool(0.3) {
        let extra = swarm_faults(&mut r, &cfg, spread);
        cfg.faults.extend(extra);
    }
    finish(cfg, opts)
}
