//! Flow limits across replicas: one function capped (`max_concurrency` 1–3), one paced (a rate
//! of 1–4 calls per 1–2 s, burst 0–2), one with both, one without but whose calls carry one of
//! two flow keys (one capped and paced, one not); 2–4 replicas in either mode,
//! under the swarm's crashes, partitions and broker restarts. The limits hold across replicas,
//! every call ends, and without faults a held-back call costs no attempt.

use super::{Mix, Opts, between, calls, finish, rng, secs, swarm_faults};
use crate::plan::RunConfig;
use queue_worker::config::ScalingMode;
use queue_worker::flow::{Limits, Rate};
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "flow-control";

pub const ABOUT: &str = "functions with max_concurrency and rate limits on 2-4 replicas under crashes, partitions and broker restarts: the limits hold across replicas, every call ends, a held-back call costs no attempt";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.workers = r.random_range(2..=4);
    cfg.mode = [ScalingMode::Static, ScalingMode::Function][r.random_range(0..2)];
    cfg.max_inflight = [2, 4, 8][r.random_range(0..3)];
    let cap = |r: &mut rand::rngs::StdRng| Some(r.random_range(1..=3));
    let rate = |r: &mut rand::rngs::StdRng| {
        Some(Rate {
            calls: r.random_range(1..=4),
            period: secs([1.0, 2.0][r.random_range(0..2)]),
        })
    };
    let capped = Limits {
        max_concurrency: cap(&mut r),
        ..Limits::default()
    };
    let paced = Limits {
        max_concurrency: None,
        rate: rate(&mut r),
        burst: r.random_range(0..=2),
    };
    let both = Limits {
        max_concurrency: cap(&mut r),
        rate: rate(&mut r),
        burst: r.random_range(0..=2),
    };
    // fn-a, fn-b and fn-c are limited; fn-d is not, but its calls carry one of two flow
    // keys: one capped and paced, the other free.
    for (f, limits) in [("fn-a", capped), ("fn-b", paced), ("fn-c", both)] {
        cfg.flow.insert(f.to_string(), limits);
    }
    let tenant = Limits {
        max_concurrency: cap(&mut r),
        rate: rate(&mut r),
        burst: r.random_range(0..=2),
    };
    cfg.flow_keys.insert("tenant-1".into(), tenant);
    cfg.flow_keys.insert(
        "tenant-2".into(),
        Limits {
            max_concurrency: Some(crate::plan::MAX_FLOW),
            ..Limits::default()
        },
    );
    cfg.keyed = Some("fn-d".into());
    let n = opts.calls.unwrap_or_else(|| r.random_range(15..=40));
    let spread = between(&mut r, 1.0, 10.0);
    let mut on = |w: u32| if r.random_bool(0.5) { w } else { 0 };
    let mix = Mix {
        ok: 8,
        fail_first: on(2),
        always: 0,
        reject: 0,
        slow: 0,
        hang: on(1),
        poison: 0,
    };
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 4, mix, 0.3, cfg.ack_wait);
    let horizon = spread + secs(10.0);
    let faults = swarm_faults(&mut r, &cfg, horizon);
    cfg.faults.extend(faults);
    finish(cfg, opts)
}
