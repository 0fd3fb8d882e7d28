//! The orchestrator: `run` starts what the sections share (nats-server, the function server),
//! runs each section asked for, prints its table and, last, the figures a script reads.

use super::*;

/// What every section shares from the command line.
pub(crate) struct Plan {
    pub(crate) opts: Opts,
    pub(crate) quick: bool,
    pub(crate) messages: usize,
    pub(crate) trials: usize,
    pub(crate) body_bytes: usize,
    pub(crate) concurrencies: Vec<usize>,
    pub(crate) sections: Vec<String>,
}

/// The sections run when `--sections` does not say.
const DEFAULT_SECTIONS: &str = "throughput,latency,ingress,scale,rss";

impl Plan {
    fn new(opts: Opts) -> Plan {
        let quick = opts.flag("quick");
        Plan {
            quick,
            messages: opts.num("messages", if quick { 10_000 } else { 100_000 }),
            trials: opts.num("trials", if quick { 1 } else { 3 }).max(1),
            body_bytes: opts.num("body-bytes", 512),
            concurrencies: opts
                .str("concurrency", "64,256")
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect(),
            sections: opts
                .str("sections", DEFAULT_SECTIONS)
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            opts,
        }
    }

    fn has(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

pub(crate) async fn run(o: Opts) -> Res<()> {
    let plan = Plan::new(o);
    let worker_bin = PathBuf::from(plan.opts.str("worker", "target/release/queue-worker"));
    if !worker_bin.exists() {
        return Err(format!("no worker binary at {}", worker_bin.display()));
    }
    let dir = tempdir()?;
    let mut procs = Procs::default();
    let result = run_in(&plan, &mut procs, &dir, worker_bin).await;
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub(crate) fn tempdir() -> Res<PathBuf> {
    let d = std::env::temp_dir().join(format!("qw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(err("temp dir"))?;
    Ok(d)
}

async fn run_in(plan: &Plan, procs: &mut Procs, dir: &Path, worker_bin: PathBuf) -> Res<()> {
    let nats_bin = plan.opts.str("nats-server", "nats-server");
    let env = setup::start(plan, procs, dir, worker_bin, &nats_bin).await?;
    let context = setup::describe(plan, &env, &nats_bin)?;
    let mut summary = Summary::default();
    let mut worker_rate = 0.0;
    if plan.has("throughput") {
        worker_rate = throughput(plan, procs, &env, &mut summary).await?;
    }
    if plan.has("latency") {
        // `--latency-max-rate` when given, else the worker's median rate at the highest
        // concurrency when measured above.
        let max_rate = match plan.opts.0.get("latency-max-rate") {
            Some(_) => plan.opts.num("latency-max-rate", 10_000.0),
            None if worker_rate > 0.0 => worker_rate,
            None => 10_000.0,
        };
        latency(plan, procs, &env, &mut summary, max_rate).await?;
    }
    if plan.has("ingress") {
        ingress(plan, procs, &env, &mut summary).await?;
    }
    if plan.has("scale") {
        scale(plan, procs, &env, &mut summary).await?;
    }
    if plan.has("rss") {
        rss(plan, procs, &env, &mut summary).await?;
    }
    if let Some(path) = plan.opts.0.get("json") {
        let doc = serde_json::to_string_pretty(&summary.json(context)).map_err(err("json"))?;
        std::fs::write(path, doc + "\n").map_err(err("write the --json summary"))?;
        eprintln!("e2e bench: summary written to {path}");
    }
    println!();
    for line in summary.final_lines() {
        println!("{line}");
    }
    Ok(())
}
