//! `sim --seed N [--scenario NAME|all] [--calls N] [--faults N] [--bug NAME]`: run one seed
//! and print a summary; the last line is `trace-digest: <hex>` (SHA-256 of the ordered event
//! traces of the runs). Exit code 1 when an invariant broke.
//!
//! `sim --seeds FROM..=TO [--scenario NAME|all]`: a sweep (`ci/sim-sweep` runs several in
//! parallel): every seed of the range for each scenario; prints the summary and the replay
//! command of each failing run, and last `sweep: <runs> runs, <failed> failed, <v> violations`.

use sha2::{Digest, Sha256};

fn usage() -> ! {
    eprintln!(
        "usage: sim [--seed N | --seeds FROM..=TO] [--scenario NAME|all] [--steps CALLS] [--calls N] [--faults N] [--workers N] [--bug NAME]\n\
         scenarios: {}\n\
         --steps/--calls: workload size (calls); --faults: keep at most N faults;\n\
         --bug (buggify builds): {}",
        sim::scenarios::names().collect::<Vec<_>>().join(", "),
        sim::bugs::names().collect::<Vec<_>>().join(" | "),
    );
    std::process::exit(2);
}

/// The command line.
struct Args {
    seed: u64,
    /// `--seeds`: a sweep.
    sweep: Option<(u64, u64)>,
    /// The scenarios to run.
    names: Vec<&'static str>,
    opts: sim::Opts,
}

fn parse_args() -> Args {
    let mut seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut scenario = "all".to_string();
    let mut sweep: Option<(u64, u64)> = None;
    let mut opts = sim::Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seed" => seed = val().parse().unwrap_or_else(|_| usage()),
            "--seeds" => sweep = Some(parse_range(&val()).unwrap_or_else(|| usage())),
            "--scenario" => scenario = val(),
            "--steps" | "--calls" => opts.calls = Some(val().parse().unwrap_or_else(|_| usage())),
            "--faults" => opts.faults = Some(val().parse().unwrap_or_else(|_| usage())),
            "--workers" => opts.workers = Some(val().parse().unwrap_or_else(|_| usage())),
            "--bug" => {
                opts.bug = Some(sim::bugs::find(&val()).unwrap_or_else(|| usage()));
                if !cfg!(feature = "buggify") {
                    eprintln!("--bug needs a build with --features buggify");
                    std::process::exit(2);
                }
            }
            _ => usage(),
        }
    }
    let names = if scenario == "all" {
        sim::scenarios::names().collect()
    } else {
        vec![
            sim::scenarios::find(&scenario)
                .unwrap_or_else(|| usage())
                .name,
        ]
    };
    Args {
        seed,
        sweep,
        names,
        opts,
    }
}

fn main() {
    let Args {
        seed,
        sweep,
        names,
        opts,
    } = parse_args();
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    if let Some((from, to)) = sweep {
        run_sweep(&names, from, to, &opts);
    }
    let mut digest = Sha256::new();
    let mut failed = false;
    for name in names {
        let Some(r) = sim::run_scenario(name, seed, &opts) else {
            usage()
        };
        print!("{}", sim::summary(&r));
        print_trace(&r);
        if !r.ok() {
            failed = true;
            println!(
                "  replay: SIM_SEED={seed} {}",
                sim::replay_command(name, seed, &opts)
            );
        }
        digest.update(r.digest.as_bytes());
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("trace-digest: {hex}");
    if failed {
        std::process::exit(1);
    }
}

/// `SIM_TRACE=all` prints the whole history; `SIM_TRACE=<text>` the events mentioning it (and
/// the plan of each call it names).
fn print_trace(r: &sim::RunResult) {
    let Ok(filter) = std::env::var("SIM_TRACE") else {
        return;
    };
    for c in &r.config.calls {
        if filter.contains(&c.id) {
            println!("  plan: {c:?}");
        }
    }
    for rec in &r.records {
        let line = format!("{:?}", rec.ev);
        if filter == "all" || line.contains(&filter) {
            println!("  {:>9.3}s {line}", rec.at.as_secs_f64());
        }
    }
}

/// `A..=B` (or `A..B`, end excluded) → the inclusive range.
fn parse_range(s: &str) -> Option<(u64, u64)> {
    if let Some((a, b)) = s.split_once("..=") {
        return Some((a.parse().ok()?, b.parse().ok()?));
    }
    let (a, b) = s.split_once("..")?;
    Some((a.parse().ok()?, b.parse::<u64>().ok()?.checked_sub(1)?))
}

/// Every seed in `from..=to` for each scenario; failing runs are printed with their replay
/// command. Exits 1 when any failed.
fn run_sweep(names: &[&str], from: u64, to: u64, opts: &sim::Opts) -> ! {
    let (mut runs, mut failed, mut violations) = (0u64, 0u64, 0usize);
    // Per modelled nats-server: runs, invocations, duplicate invocations, broken leases.
    let mut by_server: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    for seed in from..=to {
        for name in names {
            let Some(r) = sim::run_scenario(name, seed, opts) else {
                usage()
            };
            runs += 1;
            let st = &r.report.stats;
            let t = by_server.entry(r.config.server.to_string()).or_default();
            t[0] += 1;
            t[1] += st.invocations;
            t[2] += st.duplicate_invocations;
            t[3] += st.lease_losses;
            if !r.ok() {
                failed += 1;
                violations += r.report.violations.len();
                print!("{}", sim::summary(&r));
                println!(
                    "  replay: SIM_SEED={seed} {}",
                    sim::replay_command(name, seed, opts)
                );
            }
        }
    }
    for (server, [n, invocations, duplicates, lost]) in by_server {
        println!(
            "sweep-server: {server} {n} runs, {invocations} invocations, {duplicates} duplicate \
             invocations, {lost} broken leases"
        );
    }
    println!("sweep: {runs} runs, {failed} failed, {violations} violations");
    std::process::exit(i32::from(failed > 0));
}
