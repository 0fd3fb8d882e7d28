//! The retry budget.

use super::*;

// --- budget ---------------------------------------------------------------------------------

pub(super) fn grant_count(b: &mut RetryBudget, f: &str, now: Instant, tries: usize) -> usize {
    (0..tries).filter(|_| b.try_retry(f, now)).count()
}

#[test]
fn budget_allows_the_ratio_of_first_attempts() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(0.2, secs(60), 100);
    for _ in 0..100 {
        b.record_first_attempt("f", t0);
    }
    for i in 1..=20 {
        assert!(b.try_retry("f", t0), "retry {i}");
    }
    assert!(!b.try_retry("f", t0), "the 21st retry is over budget");
    assert!(!b.try_retry("f", t0 + secs(30)));
    // More traffic, more budget: 5 more first attempts → floor(0.2·105) = 21.
    for _ in 0..5 {
        b.record_first_attempt("f", t0 + secs(30));
    }
    assert!(b.try_retry("f", t0 + secs(30)));
    assert!(!b.try_retry("f", t0 + secs(30)));
}

#[test]
fn budget_floor_for_little_traffic() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(0.2, secs(60), 100);
    for _ in 0..5 {
        b.record_first_attempt("f", t0);
    }
    assert_eq!(grant_count(&mut b, "f", t0, 50), 10);
    // Unknown function (first attempts made elsewhere): the floor too.
    assert_eq!(grant_count(&mut b, "g", t0, 50), 10);
}

#[test]
fn budget_ratio_zero_allows_only_the_floor() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(0.0, secs(60), 100);
    for _ in 0..1_000 {
        b.record_first_attempt("f", t0);
    }
    assert_eq!(grant_count(&mut b, "f", t0, 100), 10);
    // NaN and negative ratios behave as 0; a huge one is practically unlimited.
    for r in [f64::NAN, -1.0] {
        let mut b = RetryBudget::new(r, secs(60), 100);
        b.record_first_attempt("f", t0);
        assert_eq!(grant_count(&mut b, "f", t0, 100), 10, "{r}");
    }
    let mut b = RetryBudget::new(f64::INFINITY, secs(60), 100);
    b.record_first_attempt("f", t0);
    assert_eq!(grant_count(&mut b, "f", t0, 1_000), 1_000);
}

#[test]
fn budget_counts_slide_out_of_the_window() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(0.2, secs(60), 100);
    for _ in 0..100 {
        b.record_first_attempt("f", t0);
    }
    assert_eq!(grant_count(&mut b, "f", t0, 15), 15);
    // Still in the window at 54s (the 10th bucket): 5 left.
    assert_eq!(grant_count(&mut b, "f", t0 + secs(54), 50), 5);
    // At 61s the first attempts and the retries made at 0s have left: only the floor
    // again, less the 5 retries made at 54s, which are still in the window.
    assert_eq!(grant_count(&mut b, "f", t0 + secs(61), 50), 5);
    // At 120s all of them have left.
    assert_eq!(grant_count(&mut b, "f", t0 + secs(120), 50), 10);
    // New traffic after a quiet spell counts from scratch.
    let t1 = t0 + secs(600);
    for _ in 0..200 {
        b.record_first_attempt("f", t1);
    }
    assert_eq!(grant_count(&mut b, "f", t1, 100), 40);
    // Halfway: first attempts recorded later stay while older ones leave.
    for _ in 0..50 {
        b.record_first_attempt("f", t1 + secs(30));
    }
    // At t1+65s: the 200 (and the 40 retries) left; the 50 remain → floor(10) = max(10, 10).
    assert_eq!(grant_count(&mut b, "f", t1 + secs(65), 100), 10);
    for _ in 0..100 {
        b.record_first_attempt("f", t1 + secs(66));
    }
    // 150 in the window → 30, of which 10 were used.
    assert_eq!(grant_count(&mut b, "f", t1 + secs(66), 100), 20);
}

#[test]
fn budget_is_per_function() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(0.2, secs(60), 100);
    for _ in 0..100 {
        b.record_first_attempt("busy", t0);
    }
    assert_eq!(grant_count(&mut b, "quiet", t0, 100), 10);
    assert_eq!(grant_count(&mut b, "busy", t0, 100), 20);
}

#[test]
fn budget_tracks_a_bounded_number_of_functions() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(0.2, secs(60), 3);
    for f in ["a", "b", "c"] {
        for _ in 0..100 {
            b.record_first_attempt(f, t0);
        }
    }
    assert_eq!(b.tracked_functions(), 3);
    // Use "a": "b" becomes the least recently used, and is evicted by "d".
    assert!(b.try_retry("a", t0));
    b.record_first_attempt("d", t0);
    assert_eq!(b.tracked_functions(), 3);
    assert!(!b.functions.contains_key("b"));
    assert!(b.functions.contains_key("a") && b.functions.contains_key("c"));
    // "b" comes back with no history (floor only); "c" was evicted to make room.
    assert_eq!(grant_count(&mut b, "b", t0, 100), 10);
    assert!(!b.functions.contains_key("c"));
    // "a" kept its counts: 19 of its 20 retries left.
    assert_eq!(grant_count(&mut b, "a", t0, 100), 19);
    assert_eq!(b.lru.len(), 3);

    for i in 0..1_000 {
        b.record_first_attempt(&format!("fn-{i}"), t0);
    }
    assert_eq!(b.tracked_functions(), 3);
    assert_eq!(b.lru.len(), 3);

    let mut one = RetryBudget::new(0.2, secs(60), 0);
    one.record_first_attempt("x", t0);
    one.record_first_attempt("y", t0);
    assert_eq!(one.tracked_functions(), 1);
}

#[test]
fn budget_tolerates_time_going_backwards_and_odd_windows() {
    let t0 = Instant::now() + secs(3_600);
    let mut b = RetryBudget::new(0.2, secs(60), 10);
    for _ in 0..100 {
        b.record_first_attempt("f", t0);
    }
    // Earlier instants count as the latest seen: nothing is lost.
    assert_eq!(grant_count(&mut b, "f", t0 - secs(30), 100), 20);
    assert_eq!(grant_count(&mut b, "f", t0 - secs(3_000), 100), 0);

    let mut z = RetryBudget::new(0.2, Duration::ZERO, 10);
    z.record_first_attempt("f", t0);
    assert_eq!(grant_count(&mut z, "f", t0 + secs(1), 100), 10);
    let mut huge = RetryBudget::new(0.2, Duration::MAX, 10);
    huge.record_first_attempt("f", t0);
    assert_eq!(grant_count(&mut huge, "f", t0 + secs(1), 100), 10);
}
