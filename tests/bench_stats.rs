//! The end-to-end benchmark's statistics (`benches/e2e/stats.rs`), tested here because the
//! `e2e` bench target is not built by `cargo test`.

#[allow(dead_code)]
#[path = "../benches/e2e/stats.rs"]
mod stats;

use stats::{Summary, pair_ratios, spread};

#[test]
fn median_and_spread() {
    let s = spread(&[3.0, 1.0, 2.0]);
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    assert_eq!(s.show(1), "2.0 (1.0–3.0)");
    assert_eq!(spread(&[5.0]).show(0), "5");
    assert_eq!(pair_ratios(&[2.0, 3.0], &[4.0, 3.0]).median, 0.75);
}

#[test]
fn final_lines_in_order_throughput_last() {
    let mut s = Summary::default();
    s.set_final("throughput-ratio", 0.912);
    s.set_final("queue-delay-p99-ms", 7.25);
    s.set_final("ingress-ratio", 0.8);
    assert_eq!(
        s.final_lines(),
        [
            "ingress-ratio: 0.80",
            "queue-delay-p99-ms: 7.2",
            "throughput-ratio: 0.91"
        ]
    );
    assert_eq!(s.json(serde_json::json!({}))["final"]["ingress-ratio"], 0.8);
}
