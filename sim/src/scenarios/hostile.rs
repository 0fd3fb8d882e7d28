//! Hostile messages among normal load: oversized bodies and headers near the broker's
//! `max_payload` (their dead letters, the `Qw-*` headers on top, are kept truncated or
//! headers-only, or dropped when even that is too large), bytes that are not JSON, invalid or
//! empty function names; and windows in which the broker refuses to store dead letters, so
//! finished calls come back. Nothing runs past its last attempt, no poison message runs, and
//! every message reaches a terminal state.

use std::time::Duration;

use super::{Mix, Opts, between, calls, finish, rng, secs, swarm_faults};
use crate::plan::{Behaviour, CallPlan, Fault, Raw, RunConfig};
use queue_worker::config::ScalingMode;
use rand::Rng;
use rand::rngs::StdRng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "hostile";

pub const ABOUT: &str = "oversized and malformed messages among normal load, dead-letter stores refused for a while: nothing invoked past its last attempt, every message terminal";

/// The broker's `max_payload` on most seeds: above the 64 KiB a truncated dead letter keeps.
pub const LARGE_MAX_PAYLOAD: usize = 80 * 1024;

/// On the other seeds: below the longest subject a NATS control line takes (4 KiB), so a
/// dead letter repeating a long subject (`Qw-Subject`) fits not even headers-only.
pub const SMALL_MAX_PAYLOAD: usize = 3584;

/// Function names no message may make the worker call: each is poison.
const BAD_NAMES: [&str; 6] = ["../x", "a b", "a\tb", "a\r\nb", "a..b", ""];

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    cfg.max_payload = if r.random_bool(0.3) {
        SMALL_MAX_PAYLOAD
    } else {
        LARGE_MAX_PAYLOAD
    };
    if r.random_bool(0.3) {
        cfg.mode = ScalingMode::Function;
    }
    let n = opts.calls.unwrap_or_else(|| r.random_range(20..=40));
    let spread = between(&mut r, 10.0, 30.0);
    let mix = Mix::swarm(&mut r);
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 3, mix, 0.5, cfg.ack_wait);
    let mut hostile = hostile(&mut r, cfg.max_payload, spread);
    hostile.truncate(n);
    cfg.calls.extend(hostile);
    for _ in 0..r.random_range(1..=2) {
        cfg.faults.push(Fault::DeadLetterOutage {
            at: between(&mut r, 1.0, spread.as_secs_f64()),
            len: between(&mut r, 2.0, 20.0),
        });
    }
    if r.random_bool(0.3) {
        let extra = swarm_faults(&mut r, &cfg, spread);
        cfg.faults.extend(extra);
    }
    finish(cfg, opts)
}

/// One message of each hostile kind, published over `spread`.
fn hostile(r: &mut StdRng, max_payload: usize, spread: Duration) -> Vec<CallPlan> {
    let near_max = |r: &mut StdRng| max_payload - r.random_range(0..=60);
    let mut raws = vec![
        Raw::Garbage {
            wire: r.random_range(40..=400),
        },
        Raw::Garbage { wire: near_max(r) },
        Raw::BigBody { wire: near_max(r) },
        Raw::BigBody { wire: near_max(r) },
        Raw::BigHeader { wire: near_max(r) },
        Raw::LongSubject {
            len: r.random_range(3400..=3900),
        },
    ];
    let long = "f".repeat(5000);
    // A 5,000-byte name does not fit a small max_payload at all.
    let fits = max_payload > 2 * long.len();
    for name in BAD_NAMES.into_iter().chain(fits.then_some(long.as_str())) {
        raws.push(Raw::Function {
            name: name.to_string(),
            bare: r.random_bool(0.5),
        });
    }
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| hostile_call(r, i, raw, spread))
        .collect()
}

/// Hostile message `i`: poison unless it is a valid invocation (then mostly one that fails,
/// so that it is dead-lettered).
fn hostile_call(r: &mut StdRng, i: usize, raw: Raw, spread: Duration) -> CallPlan {
    let valid = matches!(raw, Raw::BigBody { .. } | Raw::BigHeader { .. });
    let behaviour = match r.random_range(0..4) {
        0 => Behaviour::Always { status: 503 },
        1 => Behaviour::Always { status: 400 },
        2 => Behaviour::FailFirst {
            n: r.random_range(1..=2),
            status: 503,
            retry_after: None,
        },
        _ => Behaviour::Ok { lo: 10, hi: 200 },
    };
    CallPlan {
        id: format!("h{i:02}"),
        function: format!("fn-{}", (b'a' + r.random_range(0..3u8)) as char),
        at: secs(1.0) + between(r, 0.0, spread.as_secs_f64()),
        behaviour,
        callback: valid && r.random_bool(0.5),
        poison: !valid,
        raw: Some(raw),
        cancel_at: None,
    }
}
