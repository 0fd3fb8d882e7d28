//! Properties over generated policies, attempts and answers.

use super::budget::grant_count;
use super::*;

// --- properties -----------------------------------------------------------------------------

const DAY_NANOS: u64 = 86_400_000_000_000;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(0u64),
        1u64..2_000_000,
        1u64..=DAY_NANOS,
        (1u64..=86_400).prop_map(|s| s * 1_000_000_000),
    ]
    .prop_map(Duration::from_nanos)
}

fn backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        Just(Backoff::Exponential),
        Just(Backoff::Full),
        Just(Backoff::Equal)
    ]
}

fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..=70, any::<u32>()]
}

/// A valid policy: min_wait <= max_wait, up to 24h; at most 60 attempts.
fn valid_policy() -> impl Strategy<Value = RetryPolicy> {
    (
        1u32..=60,
        proptest::collection::vec(100u16..=599, 0..6),
        duration(),
        duration(),
        backoff(),
    )
        .prop_map(|(max_attempts, retry_codes, a, b, backoff)| RetryPolicy {
            max_attempts,
            retry_codes,
            min_wait: a.min(b),
            max_wait: a.max(b),
            backoff,
        })
}

proptest! {
    #[test]
    fn prop_delays_stay_in_their_bands(p in valid_policy(), a in attempt(), u in 0.0f64..1.0) {
        let d = capped_delay(p.min_wait, p.max_wait, a);
        prop_assert!(d <= p.max_wait);
        let got = backoff_delay(&p, a, &mut Fixed(u));
        match p.backoff {
            Backoff::Exponential => prop_assert!(got >= d - d / 5 && got <= d),
            Backoff::Full => prop_assert!(got <= d),
            Backoff::Equal => prop_assert!(got >= d / 2 && got <= d),
        }
        prop_assert!(got <= p.max_wait);
        prop_assert!(got >= d.min(MIN_JITTERED_DELAY));
        prop_assert_eq!(got.is_zero(), p.min_wait.is_zero());
    }

    #[test]
    fn prop_exponential_is_the_doubling_capped(p in valid_policy(), a in 1u32..=60) {
        let d = capped_delay(p.min_wait, p.max_wait, a);
        let doubled = p.min_wait.as_nanos() * (1u128 << (a - 1));
        prop_assert_eq!(d.as_nanos(), doubled.min(p.max_wait.as_nanos()));
    }

    #[test]
    fn prop_exponential_is_monotone(p in valid_policy(), a in attempt()) {
        let p = RetryPolicy { backoff: Backoff::Exponential, ..p };
        let a = a.min(u32::MAX - 1);
        let this = backoff_delay(&p, a, &mut Fixed(TOP));
        let next = backoff_delay(&p, a + 1, &mut Fixed(TOP));
        prop_assert!(this <= next, "{:?} > {:?}", this, next);
        prop_assert!(next <= p.max_wait);
    }

    #[test]
    fn prop_never_panics(
        min in any::<(u64, u32)>(),
        max in any::<(u64, u32)>(),
        b in backoff(),
        a in any::<u32>(),
        u in any::<f64>(),
    ) {
        let p = RetryPolicy {
            min_wait: Duration::new(min.0, min.1 % 1_000_000_000),
            max_wait: Duration::new(max.0, max.1 % 1_000_000_000),
            backoff: b,
            ..defaults()
        };
        let got = backoff_delay(&p, a, &mut Fixed(u));
        prop_assert!(got <= p.max_wait);
    }

    #[test]
    fn prop_attempts_never_exceed_the_maximum(p in valid_policy(), seed in any::<u64>()) {
        let p = RetryPolicy { retry_codes: vec![500], ..p };
        let h = HeaderMap::new();
        let mut rng = StdRng::seed_from_u64(seed);
        for result in [
            AttemptResult::Response { status: 500, headers: &h },
            AttemptResult::TransportError,
        ] {
            let mut attempt = 1u32;
            let mut retries = 0u32;
            let last = loop {
                match decide(&p, attempt, &result, now(), &mut rng) {
                    Decision::Retry { delay } => {
                        prop_assert!(delay <= p.max_wait);
                        prop_assert!(!delay.is_zero() || p.min_wait.is_zero());
                        retries += 1;
                        attempt += 1;
                        prop_assert!(attempt <= p.max_attempts);
                    }
                    other => break other,
                }
            };
            prop_assert_eq!(retries, p.max_attempts - 1);
            prop_assert_eq!(last, Decision::Final { exhausted: true });
        }
    }

    #[test]
    fn prop_retry_after_is_clamped_and_spread(
        p in valid_policy(),
        secs in any::<u64>(),
        status in prop_oneof![Just(429u16), Just(503u16)],
        u in 0.0f64..=1.0,
    ) {
        let p = RetryPolicy { retry_codes: vec![status], max_attempts: 5, ..p };
        let h = headers(&[("Retry-After", &secs.to_string())]);
        let result = AttemptResult::Response { status, headers: &h };
        let Decision::Retry { delay } = decide(&p, 1, &result, now(), &mut Fixed(u)) else {
            return Err(TestCaseError::fail("a retry"));
        };
        let asked = Duration::from_secs(secs).clamp(p.min_wait, p.max_wait);
        let fifth = asked / 5;
        prop_assert!(delay <= p.max_wait, "{delay:?}");
        prop_assert!(delay >= asked - fifth && delay <= asked + fifth, "{delay:?} for {asked:?}");
        if asked + fifth <= p.max_wait {
            prop_assert!(delay >= asked, "never before Retry-After when there is room: {delay:?}");
        }
    }

    /// N calls failing at the same instant come back spread over a window, never in one burst:
    /// whatever the policy and attempt, no 1% of the delay holds more than a quarter of them.
    #[test]
    fn prop_calls_failing_together_do_not_come_back_together(
        p in valid_policy(),
        a in 1u32..=20,
        seed in any::<u64>(),
        budget_spent in any::<bool>(),
    ) {
        let d = capped_delay(p.min_wait, p.max_wait, a);
        prop_assume!(d >= Duration::from_millis(100));
        let mut rng = StdRng::seed_from_u64(seed);
        let n = 200;
        let mut delays: Vec<Duration> = (0..n)
            .map(|_| {
                let delay = backoff_delay(&p, a, &mut rng);
                if budget_spent { deferral(delay, p.max_wait, &mut rng) } else { delay }
            })
            .collect();
        delays.sort();
        let window = d / 100;
        let crowd = (0..n)
            .map(|i| delays[i..].iter().take_while(|x| **x <= delays[i] + window).count())
            .max()
            .unwrap_or(0);
        prop_assert!(crowd < n / 4, "{crowd} of {n} within {window:?} (delay {d:?})");
    }

    #[test]
    fn prop_annotations_never_panic_and_keep_the_policy_valid(
        attempts in proptest::option::of(".{0,12}"),
        codes in proptest::option::of("[0-9, a-z]{0,16}"),
        min in proptest::option::of(prop_oneof![".{0,8}", "[0-9]{1,4}(ms|s|m|h)", "-[0-9]s"]),
        max in proptest::option::of(prop_oneof![".{0,8}", "[0-9]{1,4}(ms|s|m|h)", "-[0-9]s"]),
    ) {
        let mut a = BTreeMap::new();
        for (k, v) in [
            (ANNOTATION_ATTEMPTS, attempts),
            (ANNOTATION_CODES, codes),
            (ANNOTATION_MIN_WAIT, min),
            (ANNOTATION_MAX_WAIT, max),
        ] {
            if let Some(v) = v {
                a.insert(k.to_owned(), v);
            }
        }
        let (q, warnings) = defaults().with_annotations(&a);
        prop_assert!(q.min_wait <= q.max_wait);
        prop_assert!((1..=MAX_ATTEMPTS_LIMIT).contains(&q.max_attempts));
        prop_assert!(!q.retry_codes.is_empty());
        prop_assert!(q.retry_codes.iter().all(|c| (100..=599).contains(c)));
        prop_assert!(warnings.len() <= 4);
        for w in &warnings {
            prop_assert!(w.starts_with("ignoring annotation com.openfaas.retry."), "{}", w);
        }
    }

    #[test]
    fn prop_budget_never_grants_more_than_allowed(
        ratio in 0.0f64..2.0,
        firsts in 0usize..300,
        tries in 0usize..400,
    ) {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(ratio, secs(60), 10);
        for _ in 0..firsts {
            b.record_first_attempt("f", t0);
        }
        let granted = grant_count(&mut b, "f", t0, tries) as u64;
        let allowed = MIN_RETRIES_PER_WINDOW.max((ratio * firsts as f64).floor() as u64);
        prop_assert_eq!(granted, allowed.min(tries as u64));
    }
}
