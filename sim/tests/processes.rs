//! Determinism across processes: the `sim` binary, run as separate processes with the same seed
//! and scenario, prints the same `trace-digest:` line; another seed prints another. Each process
//! has its own address layout and hash seeds, so this catches what a check inside one process
//! (`same_seed_same_trace` in `tests/scenarios.rs`) can miss.

use std::process::{Command, Stdio};

use sim::scenarios;

/// Starts `sim --seed <seed> --scenario <name>` (without the variables that change its output).
fn start(seed: u64, name: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["--seed", &seed.to_string(), "--scenario", name])
        .env_remove("SIM_SEED")
        .env_remove("SIM_TRACE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sim binary")
}

/// The `trace-digest:` line the process printed last.
fn digest(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().expect("sim binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit code 1 means an invariant broke; the digest is printed all the same.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("trace-digest: "),
        "{what}: no trace-digest line at the end:\n{stdout}"
    );
    last.to_string()
}

#[test]
fn same_seed_same_digest_in_two_processes() {
    for s in scenarios::ALL {
        let (name, seed) = (s.name, 7);
        let first = start(seed, name);
        let second = start(seed, name);
        let other = start(seed + 1, name);
        let first = digest(first, &format!("{name} seed {seed}, first process"));
        let second = digest(second, &format!("{name} seed {seed}, second process"));
        let other = digest(other, &format!("{name} seed {}", seed + 1));
        assert_eq!(
            first, second,
            "{name}: seed {seed} gave two traces in two processes"
        );
        assert_ne!(
            first,
            other,
            "{name}: seeds {seed} and {} gave the same trace",
            seed + 1
        );
    }
}
