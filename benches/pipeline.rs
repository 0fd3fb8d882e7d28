//! The worker's own cost per message: the real worker over the embedded broker with an
//! in-process function (no network), timed with criterion. Each sample pre-fills the broker
//! with `iters` messages (not timed) and times the worker from start until every message is
//! settled; criterion's slope over samples of growing size is the time per message, start and
//! stop excluded.
//!
//! Cases: `max_inflight` 64 and 256 on a current-thread runtime (pure CPU cost, no cross-thread
//! wake-ups), 256 on the production runtime (multi-thread, 2 workers), and 256 with the
//! production console logging (`Invoke`/`Invoked` per message) written to a sink.
//!
//! `cargo bench --bench pipeline`. Under `cargo test` each case runs once, as a smoke test.

mod common;

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

use common::Pipeline;

#[derive(Clone, Copy)]
enum Rt {
    CurrentThread,
    MultiThread,
}

fn runtime(rt: Rt) -> tokio::runtime::Runtime {
    match rt {
        Rt::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Rt::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
    .enable_all()
    .build()
    .expect("runtime")
}

/// Time `iters` messages through the worker (set-up excluded).
fn time_messages(iters: u64, max_inflight: usize, rt: Rt, logs: bool) -> Duration {
    let runtime = runtime(rt);
    let cfg = common::config(max_inflight);
    let msgs = common::messages(&cfg, iters as usize, false);
    let pipeline = runtime.block_on(Pipeline::prefilled(max_inflight, msgs));
    let run = || {
        let start = Instant::now();
        let (invoked, _) = runtime.block_on(pipeline.run());
        let elapsed = start.elapsed();
        assert_eq!(invoked, iters);
        elapsed
    };
    if logs {
        // The production console format and filter (`telemetry::logging::init`), to a sink.
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                queue_worker::telemetry::logging::default_filter(false),
            ))
            .with_target(false)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, run)
    } else {
        run()
    }
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.sampling_mode(SamplingMode::Linear)
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    let cases: [(&str, usize, Rt, bool); 4] = [
        ("current-thread", 64, Rt::CurrentThread, false),
        ("current-thread", 256, Rt::CurrentThread, false),
        ("multi-thread", 256, Rt::MultiThread, false),
        ("current-thread+logs", 256, Rt::CurrentThread, true),
    ];
    for (name, max_inflight, rt, logs) in cases {
        g.bench_function(BenchmarkId::new(name, max_inflight), |b| {
            b.iter_custom(|iters| time_messages(iters, max_inflight, rt, logs))
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
