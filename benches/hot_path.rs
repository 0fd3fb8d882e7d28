//! Instruction count (gungraun on valgrind's callgrind) of the worker's per-message hot path:
//! the real worker over the embedded broker with an in-process function — pull, decode,
//! decide, build the request, record metrics, (build the callback), ack.
//!
//! Each case runs the whole worker (start, N messages, graceful stop) on a current-thread
//! runtime, so counts are deterministic. The ingress cases send N requests through the
//! ingress's router (status kept, as by default) on a current-thread runtime whose clock is
//! paused, so the status writer's rounds do not depend on how fast valgrind runs. `ci/perf-gate` takes the difference between the
//! 1,200- and the 200-message cases, divided by 1,000: instructions per message, with start
//! and stop costs cancelled out, and compares it with `benches/hot_path.baseline`.
//!
//! Not part of `cargo test --all-targets` (`bench = false` in Cargo.toml: it needs valgrind and
//! gungraun-runner). Run it with `ci/perf-gate`, or `cargo bench --bench hot_path` once
//! gungraun-runner 0.20.0 is installed.

mod common;

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};
use tokio::runtime::Runtime;

use common::Pipeline;
use common::ingress::IngressCase;

// The allocator the binary ships with (src/main.rs), so the counts are the shipped ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrency of the worker in these cases (`max_inflight`).
const MAX_INFLIGHT: usize = 64;

fn setup(n: usize, callback: bool) -> (Runtime, Pipeline) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = common::config(MAX_INFLIGHT);
    let msgs = common::messages(&cfg, n, callback);
    let pipeline = rt.block_on(Pipeline::prefilled(MAX_INFLIGHT, msgs));
    (rt, pipeline)
}

fn teardown((rt, (invoked, callbacks), n, callback): (Runtime, (u64, u64), usize, bool)) {
    assert_eq!(invoked, n as u64, "every message invoked once");
    assert_eq!(callbacks, if callback { n as u64 } else { 0 });
    drop(rt);
}

#[library_benchmark(setup = setup_case, teardown = teardown)]
#[bench::plain_200(200, false)]
#[bench::plain_1200(1200, false)]
#[bench::callback_200(200, true)]
#[bench::callback_1200(1200, true)]
fn worker_pipeline(
    (rt, pipeline, n, callback): (Runtime, Pipeline, usize, bool),
) -> (Runtime, (u64, u64), usize, bool) {
    let counts = black_box(rt.block_on(pipeline.run()));
    (rt, counts, n, callback)
}

fn setup_case(n: usize, callback: bool) -> (Runtime, Pipeline, usize, bool) {
    let (rt, p) = setup(n, callback);
    (rt, p, n, callback)
}

fn setup_ingress(n: usize) -> (Runtime, IngressCase, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let case = rt.block_on(IngressCase::ready(n));
    (rt, case, n)
}

fn teardown_ingress((rt, accepted, n): (Runtime, usize, usize)) {
    assert_eq!(accepted, n, "every request accepted");
    drop(rt);
}

#[library_benchmark(setup = setup_ingress, teardown = teardown_ingress)]
#[bench::ingress_200(200)]
#[bench::ingress_1200(1200)]
fn ingress_requests((rt, case, n): (Runtime, IngressCase, usize)) -> (Runtime, usize, usize) {
    let accepted = black_box(rt.block_on(case.run()));
    (rt, accepted, n)
}

library_benchmark_group!(name = hot_path; benchmarks = worker_pipeline, ingress_requests);

main!(library_benchmark_groups = hot_path);
