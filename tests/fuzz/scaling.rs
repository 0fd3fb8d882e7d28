//! How decoding time grows with the input: hostile shapes at 1 MiB (`ci/fuzz`; 256 KiB under
//! `cargo test`) and at a sixteenth of that, timed. A linear decoder takes about as long per
//! byte at both sizes; a quadratic one 16 times longer.
//! Timing is measured and printed (`ci/fuzz` shows it), never asserted: only that each shape
//! decodes or is poison, without a panic.

use std::time::{Duration, Instant};

use queue_worker::wire::{PoisonReason, decode};

use crate::json::fixture;

/// A message of about `size` bytes.
type Shape = fn(usize) -> Vec<u8>;

fn repeat_to(
    size: usize,
    head: &str,
    item: &dyn Fn(usize) -> String,
    sep: &str,
    tail: &str,
) -> Vec<u8> {
    let mut out = head.to_string();
    let mut i = 0;
    while out.len() < size {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&item(i));
        i += 1;
    }
    out.push_str(tail);
    out.into_bytes()
}

const SHAPES: &[(&str, Shape)] = &[
    ("base64 body", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Body":""#,
            &|_| "QUFB".into(),
            "",
            r#""}"#,
        )
    }),
    ("base64 body, CRLF every 76", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Body":""#,
            &|_| "QUFB".repeat(19),
            "\\r\\n",
            r#""}"#,
        )
    }),
    ("body as a byte array", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Body":["#,
            &|i| (i % 256).to_string(),
            ",",
            "]}",
        )
    }),
    ("header keys", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Header":{"#,
            &|i| format!(r#""K{i}":["v"]"#),
            ",",
            "}}",
        )
    }),
    ("one header, many values", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Header":{"K":["#,
            &|_| r#""v""#.into(),
            ",",
            "]}}",
        )
    }),
    ("duplicate Function keys", |n| {
        repeat_to(n, "{", &|_| r#""Function":"f""#.into(), ",", "}")
    }),
    ("duplicate Header objects", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","#,
            &|_| r#""Header":{"A":["x"]}"#.into(),
            ",",
            "}",
        )
    }),
    ("case-folded keys", |n| {
        repeat_to(n, "{", &|_| "\"fUNCTIO\u{17f}\":\"f\"".into(), ",", "}")
    }),
    ("unknown keys", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","#,
            &|i| format!(r#""x{i}":{{"y":[0]}}"#),
            ",",
            "}",
        )
    }),
    ("escapes in Host", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Host":""#,
            &|_| "\\u00e9\\ud83d\\ude00".into(),
            "",
            r#""}"#,
        )
    }),
    ("deep nesting", |n| {
        repeat_to(n, r#"{"Function":"f","x":"#, &|_| "[".into(), "", "")
    }),
    ("not UTF-8 in Host", |n| {
        let mut out = br#"{"Function":"f","Host":""#.to_vec();
        out.resize(n, 0xff);
        out.extend_from_slice(br#""}"#);
        out
    }),
    ("type error at the end", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","Host":""#,
            &|_| "a".into(),
            "",
            r#"","Method":1}"#,
        )
    }),
    ("string where a bool goes", |n| {
        repeat_to(
            n,
            r#"{"Function":"f","CallbackUrl":{"OmitHost":""#,
            &|_| "a".into(),
            "",
            r#""}}"#,
        )
    }),
];

/// The fastest of three decodes, and the result.
fn timed(input: &[u8]) -> (Duration, Result<(), PoisonReason>) {
    let mut best = Duration::MAX;
    let mut result = Ok(());
    for _ in 0..3 {
        let start = Instant::now();
        result = decode(input).map(|_| ());
        best = best.min(start.elapsed());
    }
    (best, result)
}

fn outcome(result: &Result<(), PoisonReason>) -> String {
    match result {
        Ok(()) => "decodes".into(),
        Err(r) => format!(
            "poison {} ({} characters of reason)",
            r.code(),
            r.to_string().chars().count()
        ),
    }
}

/// The large size in KiB: `FUZZ_SCALING_KIB` (`ci/fuzz`: 1024), else 256 (`cargo test`, a
/// debug build); the small one is a sixteenth of it.
fn large_kib() -> usize {
    std::env::var("FUZZ_SCALING_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn decoding_time_grows_linearly_with_size() {
    let kib = large_kib();
    let (small_size, large_size) = (kib << 6, kib << 10);
    let small_kib = kib / 16;
    for (name, shape) in SHAPES {
        let (small, _) = timed(&shape(small_size));
        let large_input = shape(large_size);
        let (large, result) = timed(&large_input);
        let per_byte = |d: Duration, n: usize| d.as_nanos() as f64 / n as f64;
        let ratio = per_byte(large, large_input.len()) / per_byte(small, small_size).max(1e-3);
        println!(
            "scaling: {name:<28} {kib} KiB in {:>8.2} ms, {:>7.1} MB/s, ns/byte x{ratio:.2} of {small_kib} KiB; {}",
            large.as_secs_f64() * 1e3,
            large_input.len() as f64 / large.as_secs_f64().max(1e-9) / 1e6,
            outcome(&result)
        );
    }
    let real = fixture("large-body.json");
    let (took, result) = timed(&real);
    assert!(result.is_ok(), "large-body.json decodes");
    println!(
        "scaling: {:<28} {} KiB in {:.2} ms",
        "large-body.json (real)",
        real.len() >> 10,
        took.as_secs_f64() * 1e3
    );
}
