//! The end-to-end benchmark behind `ci/bench` (see `docs/performance.md`): the bench target
//! `e2e` (`harness = false`, left out of `cargo test --all-targets` and a plain `cargo bench`).
//!
//! ```text
//! cargo bench --bench e2e -- run --worker target/release/queue-worker [--messages 100000]
//!               [--concurrency 64,256] [--trials 3] [--quick] [--json PATH]
//!               [--sections throughput,latency,ingress,scale,rss]
//!               [--latency-fractions 0.25,0.5] [--scale-functions 1000] [--scale-messages 50]
//!               [--worker-env K=V,..] [--worker-prefix CMD] [--baseline-prefix CMD]
//!               [--nats-server PATH]
//! e2e fn-server [ADDR]           # the HTTP function (used by `run`)
//! e2e baseline --nats URL ...    # the bare async-nats + reqwest loop (used by `run`)
//! ```
//!
//! `cargo bench` adds a `--bench` argument to a `harness = false` target: it is ignored.
//!
//! `run` starts everything it needs on loopback (a nats-server with a file store in its own
//! temporary directory, the function server, the baseline, the worker binary), measures, prints
//! a table per section and ends with the figures a script reads, each measured in this run:
//! `ingress-ratio`, `function-mode-ratio`, `queue-delay-p99-ms` and, last, `throughput-ratio`
//! (worker / bare loop at the highest concurrency); `--json PATH` writes everything as JSON.
//! Every wait is bounded; every process it starts is stopped on the way out.
//!
//! Throughput is measured on a pre-filled stream: from the first message acknowledged (the work
//! queue shrinks) to the stream being empty, by polling the stream's message count. CPU time per
//! message of each process comes from `/proc/<pid>/stat` over the same window. The two sides of
//! a comparison run the same workload in alternating trials; the tables give each side's median
//! with the spread, and ratios are of medians. `--worker-prefix "valgrind --tool=callgrind"` or `"perf record -g
//! --"` profiles the worker in place; `--worker-env RUST_LOG=warn` tries a variation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use queue_worker::broker::jetstream::{JetStreamBroker, NatsOptions};
use queue_worker::broker::{Admin, StreamSpec};
use queue_worker::clock::SystemClock;
use queue_worker::config::{Config, Storage};
use queue_worker::ingress::{Submission, prepare};

const QUEUE: &str = "faas-request";
const STREAM: &str = "OF_faas-request";
const BASELINE_CONSUMER: &str = "bench-baseline";
const WORKER_CONSUMER: &str = "faas-request-workers";
/// The queue the ingress benchmark publishes to (the worker does not serve it).
const INGRESS_QUEUE: &str = "ingress-bench";
/// Functions whose name starts with this sleep before answering (the memory benchmark).
const SLEEP_PREFIX: &str = "bench-sleep";
const SLEEP: Duration = Duration::from_millis(250);

mod baseline;
mod env;
mod fn_server;
mod ingress;
mod latency;
mod procs;
mod rss;
mod run;
mod scale;
mod setup;
mod stats;
mod throughput;

use baseline::baseline;
use env::{Drain, Env, message, publish_acked};
use fn_server::fn_server;
use ingress::ingress;
use latency::latency;
use procs::{Procs, cpu_time, free_port, peak_rss_kib, rss_kib};
use rss::rss;
use run::{Plan, run};
use scale::scale;
use stats::{Spread, Summary, pair_ratios, spread};
use throughput::{create_consumer, throughput};

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` to a `harness = false` target.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r.to_vec()),
        None => ("run", Vec::new()),
    };
    queue_worker::invoke::http::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cmd {
        "run" => rt.block_on(run(Opts::parse(&rest))),
        "fn-server" => rt.block_on(fn_server(rest.first().cloned())),
        "baseline" => rt.block_on(baseline(Opts::parse(&rest))),
        other => Err(format!(
            "unknown command {other:?}: use run, fn-server or baseline"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `--key value` options (and bare `--flag`s).
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut m = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            if let Some(k) = args[i].strip_prefix("--") {
                if let Some((k, v)) = k.split_once('=') {
                    m.insert(k.to_string(), v.to_string());
                } else if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                    m.insert(k.to_string(), args[i + 1].clone());
                    i += 1;
                } else {
                    m.insert(k.to_string(), "true".to_string());
                }
            }
            i += 1;
        }
        Opts(m)
    }
    fn str(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> T {
        self.0.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
    }
    fn flag(&self, k: &str) -> bool {
        self.0.get(k).is_some_and(|v| v != "false")
    }
}
