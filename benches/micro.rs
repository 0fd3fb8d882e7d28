//! Criterion micro-benchmarks of the pure core: the wire codec over the Go fixtures, the
//! retry delay, the outcome decision, request building, and the metrics (hot-path recording
//! and `/metrics` encoding).
//!
//! `cargo bench --bench micro` (add `-- wire` etc. to filter). Under `cargo test` each
//! benchmark runs once, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use queue_worker::config::{Backoff, Config};
use queue_worker::invoke::request;
use queue_worker::telemetry::metrics::Metrics;
use queue_worker::wire;
use queue_worker::worker::retry::{self, AttemptResult, RetryPolicy};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wire");

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(FIXTURES)
        .expect("testdata/wire")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "txt"))
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(&p).expect("fixture"))
        })
        .collect();
    v.sort();
    v
}

fn wire_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire/decode");
    for (name, bytes) in fixtures() {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), &bytes, |b, bytes| {
            b.iter(|| black_box(wire::decode(black_box(bytes))))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("wire/encode");
    for (name, bytes) in fixtures() {
        let Ok(req) = wire::decode(&bytes) else {
            continue; // poison fixtures have nothing to encode
        };
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), &req, |b, req| {
            b.iter(|| black_box(wire::encode(black_box(req))))
        });
    }
    g.finish();
}

/// A fixed jitter source (no RNG cost in the measurement).
struct Half;
impl queue_worker::rng::Jitter for Half {
    fn next_unit(&mut self) -> f64 {
        0.5
    }
}

fn policy(backoff: Backoff) -> RetryPolicy {
    RetryPolicy {
        backoff,
        ..RetryPolicy::from_config(&Config::default())
    }
}

fn retry_delay(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry/backoff_delay");
    for backoff in [Backoff::Exponential, Backoff::Full, Backoff::Equal] {
        let p = policy(backoff);
        g.bench_function(backoff.as_str(), |b| {
            b.iter(|| {
                let mut total = Duration::ZERO;
                for attempt in 1..=10 {
                    total += retry::backoff_delay(&p, black_box(attempt), &mut Half);
                }
                black_box(total)
            })
        });
    }
    g.finish();
    c.bench_function("retry/parse_retry_after/http-date", |b| {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_000);
        b.iter(|| {
            black_box(retry::parse_retry_after(
                black_box("Wed, 21 Oct 2015 07:28:00 GMT"),
                now,
            ))
        })
    });
}

fn outcome_decision(c: &mut Criterion) {
    let p = policy(Backoff::Full);
    let empty = HeaderMap::new();
    let mut retry_after = HeaderMap::new();
    retry_after.insert(http::header::RETRY_AFTER, "7".parse().expect("value"));
    let now = SystemTime::now();
    let cases: [(&str, u32, AttemptResult<'_>); 5] = [
        (
            "success-200",
            1,
            AttemptResult::Response {
                status: 200,
                headers: &empty,
            },
        ),
        (
            "retry-503",
            3,
            AttemptResult::Response {
                status: 503,
                headers: &empty,
            },
        ),
        (
            "retry-429-retry-after",
            2,
            AttemptResult::Response {
                status: 429,
                headers: &retry_after,
            },
        ),
        (
            "final-400",
            1,
            AttemptResult::Response {
                status: 400,
                headers: &empty,
            },
        ),
        (
            "exhausted-transport-error",
            10,
            AttemptResult::TransportError,
        ),
    ];
    let mut g = c.benchmark_group("outcome/decide");
    for (name, attempt, result) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(retry::decide(
                    &p,
                    black_box(attempt),
                    black_box(&result),
                    now,
                    &mut Half,
                ))
            })
        });
    }
    g.finish();
}

fn request_building(c: &mut Criterion) {
    let full = wire::decode(&std::fs::read(format!("{FIXTURES}/full.json")).expect("fixture"))
        .expect("full.json decodes");
    c.bench_function("request/function_request/full", |b| {
        b.iter(|| {
            black_box(request::function_request(
                black_box("http://gateway.openfaas:8080"),
                black_box(&full),
                "b4f0c1e2-1111-4222-8333-944445555666",
                "1700000000000000000",
            ))
        })
    });
}

fn metrics(c: &mut Criterion) {
    let m = Arc::new(Metrics::new());
    let q = m.for_queue("faas-request");
    c.bench_function("metrics/record_invocation", |b| {
        let f = q.function("bench-fn.openfaas-fn");
        b.iter(|| {
            let g = q.inflight(&f);
            g.inc();
            g.dec();
            q.invocation(&f, black_box(200), black_box(0.012));
            q.queue_delay(black_box(0.003));
            q.processed();
        })
    });
    // A registry as a busy worker has it: 50 functions, a few status codes each.
    for i in 0..50 {
        let f = q.function(&format!("fn-{i}.openfaas-fn"));
        for code in [200u16, 429, 500, 503] {
            q.invocation(&f, code, 0.01 * f64::from(code % 7));
        }
        q.inflight(&f).set(i % 3);
        q.retry(&f, 429);
    }
    c.bench_function("metrics/encode/50-functions", |b| {
        b.iter(|| black_box(m.encode()))
    });
}

criterion_group!(
    benches,
    wire_codec,
    retry_delay,
    outcome_decision,
    request_building,
    metrics
);
criterion_main!(benches);
