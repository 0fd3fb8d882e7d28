//! Slow functions past `ack_wait`: progress acks keep the lease, so no message is delivered
//! twice while its worker lives; with a crash, duplicates only for that worker's messages.

use super::{Mix, Opts, between, calls, finish, rng, secs};
use crate::plan::{Fault, RunConfig};
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "slow";

pub const ABOUT: &str = "functions slower than ack_wait: progress acks keep the lease (no duplicate while the worker lives); after a crash, duplicates bounded";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.ack_wait = between(&mut r, 2.0, 5.0);
    cfg.upstream_timeout = secs(60.0);
    let n = opts.calls.unwrap_or_else(|| r.random_range(10..=25));
    let spread = between(&mut r, 5.0, 30.0);
    let mix = Mix {
        ok: 3,
        fail_first: if r.random_bool(0.5) { 1 } else { 0 },
        always: 0,
        reject: 0,
        slow: 6,
        hang: 0,
        poison: 0,
    };
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 3, mix, 0.5, cfg.ack_wait);
    // Half the seeds have no fault at all: then not a single duplicate is allowed.
    if r.random_bool(0.5) {
        cfg.faults.push(Fault::CrashMidInvocation {
            at: between(&mut r, 3.0, spread.as_secs_f64() + 3.0),
            down: between(&mut r, 1.0, 10.0),
        });
    }
    finish(cfg, opts)
}
