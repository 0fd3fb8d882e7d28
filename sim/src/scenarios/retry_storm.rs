//! Retry storm: functions answer 429/503 (sometimes with `Retry-After`) for a long window
//! while many replicas work the queue: attempts stay within the policy and the retry budget,
//! delays follow the policy (no tight loop), and when the window ends everything completes or
//! is dead-lettered.

use super::{Mix, Opts, between, calls, finish, rng, secs};
use crate::plan::{RunConfig, Storm};
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "retry-storm";

pub const ABOUT: &str = "429/503 storms for a long window with many replicas: attempts within policy and budget, no tight loops, all complete or dead-letter";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.workers = r.random_range(4..=6);
    cfg.max_inflight = [2, 4][r.random_range(0..2)];
    cfg.max_attempts = r.random_range(3..=8);
    let n = opts.calls.unwrap_or_else(|| r.random_range(40..=80));
    let from = between(&mut r, 2.0, 5.0);
    let len = between(&mut r, 20.0, 60.0);
    let mix = Mix {
        ok: 10,
        fail_first: 2,
        always: 0,
        reject: 0,
        slow: 0,
        hang: 0,
        poison: 0,
    };
    cfg.calls = calls(&mut r, n, secs(0.5), len + from, 2, mix, 0.3, cfg.ack_wait);
    for f in ["fn-a", "fn-b"] {
        if f == "fn-b" && r.random_bool(0.5) {
            continue;
        }
        let status = [429, 503][r.random_range(0..2)];
        cfg.storms.push(Storm {
            function: f.into(),
            from,
            to: from + len,
            status,
            retry_after: r.random_bool(0.5).then(|| r.random_range(1..=6)),
        });
    }
    finish(cfg, opts)
}
