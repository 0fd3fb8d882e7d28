//! Broker restarts (file storage: messages survive) and worker↔broker partitions of varying
//! length: nothing is lost; the workers reconnect and carry on. One seed in five restarts a
//! broker with memory storage instead: its stored messages are lost (documented, counted).
//! Half the seeds run function mode, whose consumers live in the broker's memory
//! (`consumer_storage`): each restart ends them and the workers create them again.

use super::{Mix, Opts, between, calls, finish, rng, secs};
use crate::plan::{Fault, RunConfig};
use queue_worker::config::{ScalingMode, Storage};
use rand::Rng;

/// The scenario's name (it also seeds the scenario's choices).
pub const NAME: &str = "broker-restart";

pub const ABOUT: &str = "broker restarts (file storage; function mode's consumers in memory) and worker-broker partitions from 200ms to 30s: nothing lost, workers reconnect";

pub fn build(seed: u64, opts: &Opts) -> RunConfig {
    let mut r = rng(seed, NAME);
    let mut cfg = super::base(NAME, seed, &mut r, opts);
    let n = opts.calls.unwrap_or_else(|| r.random_range(20..=50));
    let spread = between(&mut r, 10.0, 40.0);
    let mix = Mix::swarm(&mut r);
    cfg.calls = calls(&mut r, n, secs(1.0), spread, 3, mix, 0.5, cfg.ack_wait);
    let memory = r.random_bool(0.2);
    if memory {
        cfg.storage = Storage::Memory;
    }
    if r.random_bool(0.5) {
        cfg.mode = ScalingMode::Function;
    }
    let h = spread.as_secs_f64() + 5.0;
    for _ in 0..r.random_range(1..=2) {
        cfg.faults.push(Fault::BrokerRestart {
            at: between(&mut r, 2.0, h),
            down: between(&mut r, 0.2, 5.0),
            keep: !memory,
        });
    }
    for _ in 0..r.random_range(1..=3) {
        // Lengths on a log scale: blips shorter than the read deadline, and long cuts.
        let len = secs(0.2 * 150f64.powf(r.random_range(0.0..1.0)));
        cfg.faults.push(Fault::Partition {
            worker: r.random_range(0..cfg.workers),
            at: between(&mut r, 1.0, h),
            len,
        });
    }
    finish(cfg, opts)
}
