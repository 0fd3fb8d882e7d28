//! Decisions after an attempt, `Retry-After` included.

use http::header::RETRY_AFTER;

use super::*;

// --- decisions ------------------------------------------------------------------------------

#[test]
fn success_statuses() {
    let p = defaults();
    let h = HeaderMap::new();
    for s in [100, 200, 201, 202, 204, 301, 304, 399] {
        assert_eq!(decide_status(&p, 1, s, &h), Decision::Success, "{s}");
    }
    // Even on the last attempt, and with the internal header.
    let internal = headers(&[("X-OpenFaaS-Internal", "gateway")]);
    assert_eq!(decide_status(&p, 10, 200, &internal), Decision::Success);
}

#[test]
fn non_retryable_errors_are_final_at_once() {
    let p = defaults();
    let h = HeaderMap::new();
    for s in [400, 401, 403, 404, 410, 413, 422, 501, 505, 599, 600, 0, 99] {
        assert_eq!(
            decide_status(&p, 1, s, &h),
            Decision::Final { exhausted: false },
            "{s}"
        );
    }
}

#[test]
fn retryable_codes_retry_then_exhaust() {
    let p = defaults();
    let h = HeaderMap::new();
    for s in [408, 429, 500, 502, 503, 504] {
        assert!(matches!(
            decide_status(&p, 1, s, &h),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide_status(&p, 9, s, &h),
            Decision::Retry { .. }
        ));
        assert_eq!(
            decide_status(&p, 10, s, &h),
            Decision::Final { exhausted: true }
        );
        assert_eq!(
            decide_status(&p, 11, s, &h),
            Decision::Final { exhausted: true }
        );
    }
}

#[test]
fn listed_codes_are_honoured_whatever_their_class() {
    let p = RetryPolicy {
        retry_codes: vec![202, 404],
        ..defaults()
    };
    let h = HeaderMap::new();
    assert_eq!(
        decide_status(&p, 1, 404, &h),
        Decision::Retry { delay: secs(10) }
    );
    assert_eq!(
        decide_status(&p, 1, 202, &h),
        Decision::Retry { delay: secs(10) }
    );
    // 500 is no longer listed.
    assert_eq!(
        decide_status(&p, 1, 500, &h),
        Decision::Final { exhausted: false }
    );
}

#[test]
fn transport_errors_retry_whatever_the_codes() {
    let p = RetryPolicy {
        retry_codes: vec![429],
        ..defaults()
    };
    let r = AttemptResult::TransportError;
    assert_eq!(r.status(), 503);
    assert_eq!(
        decide(&p, 2, &r, now(), &mut Fixed(TOP)),
        Decision::Retry { delay: secs(20) }
    );
    assert_eq!(
        decide(&p, 10, &r, now(), &mut Fixed(TOP)),
        Decision::Final { exhausted: true }
    );
}

#[test]
fn internal_header_retries_unlisted_errors() {
    let p = RetryPolicy {
        retry_codes: vec![429],
        ..defaults()
    };
    let internal = headers(&[("X-OpenFaaS-Internal", "gateway")]);
    let plain = HeaderMap::new();
    assert_eq!(
        decide_status(&p, 1, 502, &internal),
        Decision::Retry { delay: secs(10) }
    );
    assert_eq!(
        decide_status(&p, 1, 502, &plain),
        Decision::Final { exhausted: false }
    );
    // Any name case, any value (even empty).
    let lower = headers(&[("x-openfaas-internal", "")]);
    assert!(matches!(
        decide_status(&p, 1, 404, &lower),
        Decision::Retry { .. }
    ));
    assert_eq!(
        decide_status(&p, 10, 502, &internal),
        Decision::Final { exhausted: true }
    );
}

#[test]
fn retry_after_seconds_replaces_the_delay_clamped() {
    // Backoff would give 40s (attempt 3); Retry-After wins on 429 and 503.
    let p = policy(Duration::from_millis(500), secs(120), Backoff::Full);
    for s in [429, 503] {
        let h = headers(&[("Retry-After", "1")]);
        assert_eq!(
            decide_status(&p, 3, s, &h),
            Decision::Retry { delay: secs(1) }
        );
    }
    // Clamped up to min_wait.
    let p = policy(secs(10), secs(120), Backoff::Exponential);
    let h = headers(&[("Retry-After", "1")]);
    assert_eq!(
        decide_status(&p, 3, 429, &h),
        Decision::Retry { delay: secs(10) }
    );
    let h = headers(&[("Retry-After", "0")]);
    assert_eq!(
        decide_status(&p, 3, 503, &h),
        Decision::Retry { delay: secs(10) }
    );
    // Clamped down to max_wait; spread below it: [96s, 120s].
    let h = headers(&[("Retry-After", "3600")]);
    assert_eq!(
        decide_status(&p, 1, 429, &h),
        Decision::Retry { delay: secs(96) }
    );
    // Spread upwards, by at most a fifth: [7s, 8.4s].
    let p = policy(secs(1), secs(120), Backoff::Full);
    let h = headers(&[("Retry-After", "7")]);
    assert_eq!(
        decide(
            &p,
            1,
            &AttemptResult::Response {
                status: 429,
                headers: &h
            },
            now(),
            &mut Fixed(0.0)
        ),
        Decision::Retry {
            delay: Duration::from_millis(8_400)
        }
    );
}

#[test]
fn retry_after_is_ignored_on_other_statuses_and_on_the_last_attempt() {
    let p = defaults();
    let h = headers(&[("Retry-After", "30")]);
    assert_eq!(
        decide_status(&p, 1, 500, &h),
        Decision::Retry { delay: secs(10) }
    );
    assert_eq!(
        decide_status(&p, 10, 429, &h),
        Decision::Final { exhausted: true }
    );
    assert_eq!(
        decide_status(&p, 1, 400, &h),
        Decision::Final { exhausted: false }
    );
}

#[test]
fn retry_after_http_date() {
    let p = policy(secs(1), secs(120), Backoff::Exponential);
    let date = httpdate::fmt_http_date(now() + secs(45));
    let h = headers(&[("Retry-After", &date)]);
    assert_eq!(
        decide_status(&p, 1, 503, &h),
        Decision::Retry { delay: secs(45) }
    );
    // In the past: clamped up to min_wait.
    let past = httpdate::fmt_http_date(now() - secs(45));
    let h = headers(&[("Retry-After", &past)]);
    assert_eq!(
        decide_status(&p, 1, 503, &h),
        Decision::Retry { delay: secs(1) }
    );
}

#[test]
fn invalid_retry_after_falls_back_to_backoff() {
    let p = defaults();
    for bad in [
        "soon",
        "-1",
        "1.5",
        "+3",
        "10s",
        "Wed, 99 Foo 2015 07:28:00 GMT",
    ] {
        let h = headers(&[("Retry-After", bad)]);
        assert_eq!(
            decide_status(&p, 2, 429, &h),
            Decision::Retry { delay: secs(20) },
            "{bad}"
        );
    }
    let mut h = HeaderMap::new();
    h.insert(
        RETRY_AFTER,
        http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(
        decide_status(&p, 2, 429, &h),
        Decision::Retry { delay: secs(20) }
    );
}

#[test]
fn parse_retry_after_forms() {
    let n = now();
    assert_eq!(parse_retry_after("0", n), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("120", n), Some(secs(120)));
    assert_eq!(parse_retry_after(" 5 ", n), Some(secs(5)));
    assert_eq!(
        parse_retry_after("99999999999999999999999", n),
        Some(secs(u64::MAX))
    );
    // RFC 9110 examples, relative to a fixed now.
    let at = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", at - secs(90)),
        Some(secs(90))
    );
    assert_eq!(
        parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", at - secs(3)),
        Some(secs(3))
    );
    assert_eq!(
        parse_retry_after("Wed Oct 21 07:28:00 2015", at - secs(4)),
        Some(secs(4))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", at + secs(10)),
        Some(Duration::ZERO)
    );
    for bad in ["", "  ", "-5", "1.0", "5s", "tomorrow", "1e3"] {
        assert_eq!(parse_retry_after(bad, n), None, "{bad:?}");
    }
}
