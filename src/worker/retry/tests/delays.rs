//! Back-off delays and jitter.

use super::*;

// --- delays ---------------------------------------------------------------------------------

#[test]
fn worked_example_for_the_defaults() {
    let p = defaults();
    let delays: Vec<u64> = (1..=6)
        .map(|a| backoff_delay(&p, a, &mut Fixed(TOP)).as_secs())
        .collect();
    assert_eq!(delays, [10, 20, 40, 80, 120, 120]);
    for a in 1..=6 {
        assert_eq!(backoff_delay(&p, a, &mut Fixed(TOP)).subsec_nanos(), 0);
    }
    // And through decide: a 500 on attempts 1..=9 retries with these delays, then final.
    let h = HeaderMap::new();
    let decisions: Vec<Decision> = (1..=10).map(|a| decide_status(&p, a, 500, &h)).collect();
    let expected: Vec<Decision> = [10, 20, 40, 80, 120, 120, 120, 120, 120]
        .iter()
        .map(|s| Decision::Retry { delay: secs(*s) })
        .chain([Decision::Final { exhausted: true }])
        .collect();
    assert_eq!(decisions, expected);
}

#[test]
fn attempt_zero_counts_as_the_first() {
    let p = defaults();
    assert_eq!(backoff_delay(&p, 0, &mut Fixed(TOP)), secs(10));
}

#[test]
fn huge_attempts_do_not_overflow() {
    for backoff in [Backoff::Exponential, Backoff::Full, Backoff::Equal] {
        let p = policy(secs(86_400), secs(86_400), backoff);
        for a in [
            31,
            32,
            33,
            63,
            64,
            65,
            94,
            127,
            128,
            129,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let d = backoff_delay(&p, a, &mut Fixed(ALMOST_ONE));
            assert!(
                d <= secs(86_400) && d >= secs(43_200),
                "{backoff:?} {a}: {d:?}"
            );
        }
    }
    let p = policy(Duration::MAX, Duration::MAX, Backoff::Full);
    let d = backoff_delay(&p, u32::MAX, &mut Fixed(ALMOST_ONE));
    assert!(d <= Duration::MAX && d > Duration::MAX / 2);
    let p = policy(Duration::from_nanos(1), Duration::MAX, Backoff::Exponential);
    assert_eq!(backoff_delay(&p, u32::MAX, &mut Fixed(TOP)), Duration::MAX);
    assert_eq!(
        backoff_delay(&p, 64, &mut Fixed(TOP)),
        Duration::from_nanos(1 << 63)
    );
}

#[test]
fn full_and_equal_bands_with_stub_jitter() {
    // attempt 3 with 10s/120s: d = 40s.
    let full = policy(secs(10), secs(120), Backoff::Full);
    let equal = policy(secs(10), secs(120), Backoff::Equal);
    // Full at 0 is floored at 1ms, so a retry is never immediate.
    assert_eq!(backoff_delay(&full, 3, &mut Fixed(0.0)), MIN_JITTERED_DELAY);
    let top = backoff_delay(&full, 3, &mut Fixed(ALMOST_ONE));
    assert!(top <= secs(40) && top > secs(39), "{top:?}");
    assert_eq!(backoff_delay(&full, 3, &mut Fixed(0.25)), secs(10));
    assert_eq!(backoff_delay(&equal, 3, &mut Fixed(0.0)), secs(20));
    let top = backoff_delay(&equal, 3, &mut Fixed(ALMOST_ONE));
    assert!(top <= secs(40) && top > secs(39), "{top:?}");
    assert_eq!(backoff_delay(&equal, 3, &mut Fixed(0.5)), secs(30));
    // Out-of-range jitter values are tolerated.
    assert_eq!(
        backoff_delay(&full, 3, &mut Fixed(f64::NAN)),
        MIN_JITTERED_DELAY
    );
    assert_eq!(backoff_delay(&equal, 3, &mut Fixed(-3.0)), secs(20));
    let top = backoff_delay(&full, 3, &mut Fixed(7.0));
    assert!(top <= secs(40) && top > secs(39), "{top:?}");
    // The floor never lifts a delay above d itself.
    let tiny = policy(Duration::from_nanos(3), secs(1), Backoff::Full);
    assert_eq!(
        backoff_delay(&tiny, 1, &mut Fixed(0.0)),
        Duration::from_nanos(3)
    );
}

#[test]
fn zero_initial_wait_retries_at_once() {
    for backoff in [Backoff::Exponential, Backoff::Full, Backoff::Equal] {
        let p = policy(Duration::ZERO, secs(120), backoff);
        for a in [1, 2, 10, u32::MAX] {
            assert_eq!(backoff_delay(&p, a, &mut Fixed(TOP)), Duration::ZERO);
        }
        let h = HeaderMap::new();
        assert_eq!(
            decide_status(&p, 1, 500, &h),
            Decision::Retry {
                delay: Duration::ZERO
            }
        );
    }
}

#[test]
fn min_above_max_lets_max_win() {
    let p = policy(secs(30), secs(5), Backoff::Exponential);
    assert_eq!(backoff_delay(&p, 1, &mut Fixed(TOP)), secs(5));
    // Retry-After clamped to 5s, spread below it.
    let h = headers(&[("retry-after", "1")]);
    assert_eq!(
        decide_status(&p, 1, 429, &h),
        Decision::Retry { delay: secs(4) }
    );
}

#[test]
fn seeded_rng_gives_repeatable_delays_within_bands() {
    for backoff in [Backoff::Full, Backoff::Equal] {
        let p = policy(secs(10), secs(120), backoff);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=8)
                .map(|a| backoff_delay(&p, a, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        for (i, d) in a.iter().enumerate() {
            let base = capped_delay(secs(10), secs(120), i as u32 + 1);
            let low = if backoff == Backoff::Full {
                Duration::ZERO
            } else {
                base / 2
            };
            assert!(*d >= low && *d <= base, "{backoff:?} {i}: {d:?}");
        }
    }
}

#[test]
fn jitter_distribution_stays_in_its_band() {
    let d = secs(40);
    let mut rng = StdRng::seed_from_u64(2024);
    for (backoff, low, mean) in [
        (Backoff::Full, 0.0, 0.5),
        (Backoff::Equal, 0.5, 0.75),
        (Backoff::Exponential, 0.8, 0.9),
    ] {
        let p = policy(secs(10), secs(120), backoff);
        let n = 10_000;
        let samples: Vec<f64> = (0..n)
            .map(|_| backoff_delay(&p, 3, &mut rng).as_secs_f64() / d.as_secs_f64())
            .collect();
        assert!(
            samples.iter().all(|s| (low..=1.0).contains(s)),
            "{backoff:?}"
        );
        let avg = samples.iter().sum::<f64>() / n as f64;
        assert!((avg - mean).abs() < 0.01, "{backoff:?}: mean {avg}");
        // Spread over the band: each quarter of it gets roughly a quarter.
        let width = 1.0 - low;
        for q in 0..4 {
            let lo = low + width * f64::from(q) / 4.0;
            let hi = lo + width / 4.0;
            let share = samples.iter().filter(|s| **s >= lo && **s < hi).count();
            assert!((2_300..2_700).contains(&share), "{backoff:?} q{q}: {share}");
        }
    }
}
