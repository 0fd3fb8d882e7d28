//! The simulation's test suite: fixed seeds per scenario (a longer sweep with
//! `SIM_SEEDS=<n>`; one seed with `SIM_SEED=<n>`), the determinism check, and a proptest swarm
//! that shrinks failing schedules.

use sim::scenarios::{
    self, BROKER_RESTART, CALLBACK_OUTAGE, CANCEL_RACE, CONSUMER_EXPIRY, CRASH, FLOW_CONTROL,
    HOSTILE, RETRY_STORM, SATURATED, SLOW,
};
use sim::{Opts, harness::RunResult};

/// Seeds per scenario: `SIM_SEED` (just that one), else `SIM_SEEDS` (1..=n), else `default`.
fn seeds(default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (1..=n).collect()
}

fn replay(name: &str, seed: u64, opts: &Opts) -> String {
    format!(
        "SIM_SEED={seed}\n  replay: {}",
        sim::replay_command(name, seed, opts)
    )
}

fn run_seeds(name: &str, default: u64, opts: Opts) {
    let mut failed = Vec::new();
    for seed in seeds(default) {
        let r = sim::run_scenario(name, seed, &opts).expect("scenario exists");
        if !r.ok() {
            eprintln!("{}{}", sim::summary(&r), replay(name, seed, &opts));
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "scenario {name} failed for seeds {failed:?}"
    );
}

#[test]
fn crash() {
    run_seeds(CRASH.name, 4, Opts::default());
}

#[test]
fn slow() {
    run_seeds(SLOW.name, 4, Opts::default());
}

#[test]
fn broker_restart() {
    run_seeds(BROKER_RESTART.name, 4, Opts::default());
}

#[test]
fn retry_storm() {
    run_seeds(RETRY_STORM.name, 3, Opts::default());
}

#[test]
fn callback_outage() {
    run_seeds(CALLBACK_OUTAGE.name, 4, Opts::default());
}

/// Oversized and malformed messages, dead-letter stores refused for a while.
#[test]
fn hostile() {
    run_seeds(HOSTILE.name, 4, Opts::default());
}

/// A busy but healthy function: every call succeeds; one replica spends no attempt on 429s.
#[test]
fn saturated() {
    run_seeds(SATURATED.name, 4, Opts::default());
    let one = Opts {
        workers: Some(1),
        ..Opts::default()
    };
    run_seeds(SATURATED.name, 4, one);
}

/// Cancels before, during and after invocations, across crashes: never invoked after the
/// cancel was acknowledged; exactly one terminal state.
#[test]
fn cancel_race() {
    run_seeds(CANCEL_RACE.name, 6, Opts::default());
}

/// Flow limits across replicas, under crashes, partitions and broker restarts: they hold, and
/// without faults a held-back call costs no attempt.
#[test]
fn flow_control() {
    run_seeds(FLOW_CONTROL.name, 6, Opts::default());
}

/// Function mode: consumers expire between bursts while new messages arrive.
#[test]
fn consumer_expiry() {
    run_seeds(CONSUMER_EXPIRY.name, 4, Opts::default());
}

/// Seeds that broke an invariant in long sweeps (`sim/README.md`, "What the simulation found"):
/// 3,000 seeds per scenario, then 10,000. On the code of that time they replayed each class of
/// violation found; all pass now.
#[test]
fn seeds_a_long_sweep_found() {
    let found: [(&str, &[u64]); 3] = [
        (
            CONSUMER_EXPIRY.name,
            &[
                305, 430, 467, 572, 613, 628, 738, 1195, 1544, 1649, 1817, 1929, 1972, 2053, 2180,
                2218, 3219, 5101,
            ],
        ),
        (BROKER_RESTART.name, &[785, 1982, 4905, 9521]),
        (CALLBACK_OUTAGE.name, &[1692, 2040]),
    ];
    let mut failed = Vec::new();
    for (name, seeds) in found {
        for &seed in seeds {
            let r = sim::run_scenario(name, seed, &Opts::default()).expect("scenario exists");
            if !r.ok() {
                eprintln!(
                    "{}{}",
                    sim::summary(&r),
                    replay(name, seed, &Opts::default())
                );
                failed.push((name, seed));
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}

fn digest_of(name: &str, seed: u64) -> RunResult {
    sim::run_scenario(name, seed, &Opts::default()).expect("scenario exists")
}

/// The same seed gives the same trace (in one process, so nothing leaks between runs), a
/// different seed a different one.
#[test]
fn same_seed_same_trace() {
    for name in [
        CRASH.name,
        BROKER_RESTART.name,
        CONSUMER_EXPIRY.name,
        HOSTILE.name,
    ] {
        let a = digest_of(name, 7);
        let b = digest_of(name, 7);
        assert_eq!(a.events, b.events, "{name}: event counts differ for seed 7");
        if a.digest != b.digest {
            let first = a
                .records
                .iter()
                .zip(&b.records)
                .position(|(x, y)| x != y)
                .unwrap_or(a.records.len().min(b.records.len()));
            panic!(
                "{name}: seed 7 gave two traces; first difference at event {first}:\n  {:?}\n  {:?}",
                a.records.get(first),
                b.records.get(first)
            );
        }
        let c = digest_of(name, 8);
        assert_ne!(
            a.digest, c.digest,
            "{name}: seeds 7 and 8 gave the same trace"
        );
    }
}

mod swarm {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, FileFailurePersistence};

    fn cases() -> u32 {
        std::env::var("SIM_SWARM_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(6)
    }

    proptest! {
        #![proptest_config(Config {
            cases: cases(),
            failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
            ..Config::default()
        })]

        /// Swarm: the seed picks the shape and the fault mix; proptest also varies the size of
        /// the workload and the number of faults, and shrinks a failure to the shortest
        /// schedule that still fails.
        #[test]
        fn swarm(
            seed in 1u64..1_000_000,
            scenario in 0..scenarios::ALL.len(),
            calls in 1usize..60,
            faults in 0usize..6,
        ) {
            let name = scenarios::ALL[scenario].name;
            let opts = Opts { calls: Some(calls), faults: Some(faults), ..Opts::default() };
            let r = sim::run_scenario(name, seed, &opts).expect("scenario exists");
            if !r.ok() {
                eprintln!("{}{}", sim::summary(&r), replay(name, seed, &opts));
            }
            prop_assert!(r.ok(), "{}", replay(name, seed, &opts));
        }
    }
}

/// The harness has teeth: each deliberate bug makes a scenario fail, and the same seeds pass
/// without it. (`cargo test -p sim --features buggify`)
#[cfg(feature = "buggify")]
mod teeth {
    use super::*;
    use sim::bugs::{self, Bug};

    /// `bug` makes its scenario break its rule within seeds 1..=6, and those seeds pass
    /// without it.
    fn caught(bug: &'static Bug) {
        let (name, rule) = (bug.caught_by, bug.rule);
        let seeds = 1..=6u64;
        let mut caught_by = None;
        for seed in seeds.clone() {
            let clean = sim::run_scenario(name, seed, &Opts::default()).expect("scenario");
            assert!(
                clean.ok(),
                "{name} seed {seed} fails without the bug:\n{}",
                sim::summary(&clean)
            );
            let buggy = sim::run_scenario(
                name,
                seed,
                &Opts {
                    bug: Some(bug),
                    ..Opts::default()
                },
            )
            .expect("scenario");
            if buggy.report.violations.iter().any(|v| v.rule == rule) {
                eprintln!(
                    "bug {} caught by {name} seed {seed}:\n{}",
                    bug.name,
                    sim::summary(&buggy)
                );
                caught_by = Some(seed);
                break;
            }
        }
        assert!(
            caught_by.is_some(),
            "bug {} was not caught by {name} ({rule}) in seeds {seeds:?}",
            bug.name
        );
    }

    #[test]
    fn ack_before_invoke() {
        caught(&bugs::ACK_BEFORE_INVOKE);
    }

    #[test]
    fn ignore_max_retry_attempts() {
        caught(&bugs::IGNORE_MAX_RETRY_ATTEMPTS);
    }

    #[test]
    fn drop_progress_acks() {
        caught(&bugs::DROP_PROGRESS_ACKS);
    }

    #[test]
    fn trust_function_names() {
        caught(&bugs::TRUST_FUNCTION_NAMES);
    }

    #[test]
    fn ignore_last_attempt() {
        caught(&bugs::IGNORE_LAST_ATTEMPT);
    }

    #[test]
    fn ignore_cancels() {
        caught(&bugs::IGNORE_CANCELS);
    }

    #[test]
    fn ignore_flow_limits() {
        caught(&bugs::IGNORE_FLOW_LIMITS);
    }

    /// Each registered bug has its test above.
    #[test]
    fn every_bug_has_a_test() {
        let names: Vec<&str> = bugs::names().collect();
        assert_eq!(
            names,
            [
                bugs::ACK_BEFORE_INVOKE.name,
                bugs::IGNORE_MAX_RETRY_ATTEMPTS.name,
                bugs::DROP_PROGRESS_ACKS.name,
                bugs::TRUST_FUNCTION_NAMES.name,
                bugs::IGNORE_LAST_ATTEMPT.name,
                bugs::IGNORE_CANCELS.name,
                bugs::IGNORE_FLOW_LIMITS.name
            ]
        );
    }
}

/// Each scenario of the registry has its fixed-seed test above and builds runs under its own
/// name.
#[test]
fn every_scenario_has_its_test() {
    let names: Vec<&str> = scenarios::names().collect();
    assert_eq!(
        names,
        [
            CRASH.name,
            SLOW.name,
            BROKER_RESTART.name,
            CONSUMER_EXPIRY.name,
            RETRY_STORM.name,
            CALLBACK_OUTAGE.name,
            HOSTILE.name,
            SATURATED.name,
            CANCEL_RACE.name,
            FLOW_CONTROL.name
        ]
    );
    for s in scenarios::ALL {
        assert_eq!((s.build)(1, &Opts::default()).scenario, s.name);
    }
}
