//! A busy but healthy function: it admits a few calls at once and answers 429 past that (the
//! OpenFaaS watchdog's `max_inflight`), and a burst of calls arrives for it, with the worker's
//! `max_inflight` above its capacity, in either mode. Every call succeeds and is called back
//! once; with one replica no attempt is spent on the 429s (they are the worker's own doing); a
//! healthy function next to it is served all along.

use super::{Opts, between, finish, rng, secs};
use crate::plan::{Behaviour, CallPlan, RunConfig};
use queue_worker::config::ScalingMode;
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "saturated";

pub const ABOUT: &str = "a burst for a function that admits 1-3 calls and answers 429 past that: every call succeeds once, and with one replica no attempt is spent on 429s";

/// The busy function, and one beside it.
pub const BUSY: &str = "fn-busy";
const OTHER: &str = "fn-other";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.workers = r.random_range(1..=3);
    cfg.mode = [ScalingMode::Static, ScalingMode::Function][r.random_range(0..2)];
    cfg.max_inflight = [4, 6, 10][r.random_range(0..3)];
    // The worker's defaults: 10 attempts; 1 s .. 10 s as in the report.
    cfg.max_attempts = 10;
    cfg.initial_retry_wait = secs(1.0);
    cfg.max_retry_wait = secs(10.0);
    let capacity = r.random_range(1..=3);
    let ms = r.random_range(200..=800);
    let n = opts.calls.unwrap_or_else(|| r.random_range(20..=60));
    cfg.calls = (0..n)
        .map(|i| {
            let other = r.random_bool(0.2);
            CallPlan {
                id: format!("c{i:04}"),
                function: if other { OTHER } else { BUSY }.into(),
                at: secs(1.0) + between(&mut r, 0.0, 1.0),
                behaviour: if other {
                    Behaviour::Ok { lo: 10, hi: 50 }
                } else {
                    Behaviour::Busy { ms, capacity }
                },
                callback: true,
                poison: false,
                raw: None,
                cancel_at: None,
            }
        })
        .collect();
    finish(cfg, opts)
}
