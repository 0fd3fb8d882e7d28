//! The policy from the configuration, and with annotations.

use super::*;

// --- policy from config ------------------------------------------------------------------

#[test]
fn from_config_takes_the_retry_settings() {
    let cfg = Config {
        max_retry_attempts: 7,
        retry_http_codes: vec![429, 503],
        initial_retry_wait: secs(2),
        max_retry_wait: secs(30),
        backoff: Backoff::Equal,
        ..Config::default()
    };
    assert_eq!(
        RetryPolicy::from_config(&cfg),
        RetryPolicy {
            max_attempts: 7,
            retry_codes: vec![429, 503],
            min_wait: secs(2),
            max_wait: secs(30),
            backoff: Backoff::Equal,
        }
    );
    let d = defaults();
    assert_eq!(d.max_attempts, 10);
    assert_eq!(d.retry_codes, vec![408, 429, 500, 502, 503, 504]);
    assert_eq!((d.min_wait, d.max_wait), (secs(10), secs(120)));
    assert_eq!(d.backoff, Backoff::Exponential);
}

// --- annotations ----------------------------------------------------------------------------

#[test]
fn no_annotations_keep_the_policy() {
    let p = defaults();
    let (q, w) = p.with_annotations(&BTreeMap::new());
    assert_eq!((q, w), (p.clone(), vec![]));
    let (q, w) = p.with_annotations(&annotations(&[
        ("com.openfaas.queue", "slow"),
        (ANNOTATION_ATTEMPTS, "  "),
    ]));
    assert_eq!((q, w), (p, vec![]));
}

#[test]
fn each_override() {
    let p = defaults();
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_ATTEMPTS, "30")]));
    assert_eq!(
        (q, w),
        (
            RetryPolicy {
                max_attempts: 30,
                ..p.clone()
            },
            vec![]
        )
    );
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_CODES, " 503, 429,429 ")]));
    assert_eq!(
        (q, w),
        (
            RetryPolicy {
                retry_codes: vec![429, 503],
                ..p.clone()
            },
            vec![]
        )
    );
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_MIN_WAIT, "5s")]));
    assert_eq!(
        (q, w),
        (
            RetryPolicy {
                min_wait: secs(5),
                ..p.clone()
            },
            vec![]
        )
    );
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_MAX_WAIT, "1m")]));
    assert_eq!(
        (q, w),
        (
            RetryPolicy {
                max_wait: secs(60),
                ..p.clone()
            },
            vec![]
        )
    );
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_MIN_WAIT, "0s")]));
    assert_eq!(q.min_wait, Duration::ZERO);
    assert!(w.is_empty());
}

#[test]
fn fixture_annotations_give_the_expected_policy() {
    let req = crate::wire::decode(include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/wire/annotations.json"
    )))
    .expect("the fixture decodes");
    let (q, w) = defaults().with_annotations(&req.annotations);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        q,
        RetryPolicy {
            max_attempts: 3,
            retry_codes: vec![429, 503],
            min_wait: secs(1),
            max_wait: secs(4),
            backoff: Backoff::Exponential,
        }
    );
    // 1s, 2s, then final on the third attempt; 500 is no longer retried.
    let h = HeaderMap::new();
    assert_eq!(
        decide_status(&q, 1, 429, &h),
        Decision::Retry { delay: secs(1) }
    );
    assert_eq!(
        decide_status(&q, 2, 503, &h),
        Decision::Retry { delay: secs(2) }
    );
    assert_eq!(
        decide_status(&q, 3, 429, &h),
        Decision::Final { exhausted: true }
    );
    assert_eq!(
        decide_status(&q, 1, 500, &h),
        Decision::Final { exhausted: false }
    );
}

#[test]
fn bad_values_are_ignored_with_a_warning() {
    let p = defaults();
    let cases: [(&str, &str, &str); 11] = [
        (ANNOTATION_ATTEMPTS, "abc", "1 to 10000"),
        (ANNOTATION_ATTEMPTS, "0", "1 to 10000"),
        (ANNOTATION_ATTEMPTS, "-3", "1 to 10000"),
        (ANNOTATION_ATTEMPTS, "10001", "1 to 10000"),
        (ANNOTATION_CODES, "42,abc", "100 to 599"),
        (ANNOTATION_CODES, "429,600", "100 to 599"),
        (ANNOTATION_CODES, ",,", "100 to 599"),
        (ANNOTATION_MIN_WAIT, "-1s", "negative"),
        (ANNOTATION_MIN_WAIT, "5", "missing unit"),
        (ANNOTATION_MAX_WAIT, "1d", "unknown unit"),
        (ANNOTATION_MAX_WAIT, "soon", "Go syntax"),
    ];
    for (key, value, allowed) in cases {
        let (q, w) = p.with_annotations(&annotations(&[(key, value)]));
        assert_eq!(q, p, "{key}={value}");
        assert_eq!(w.len(), 1, "{key}={value}: {w:?}");
        assert!(w[0].contains(key), "{}", w[0]);
        assert!(w[0].contains(&format!("{value:?}")), "{}", w[0]);
        assert!(w[0].contains(allowed), "{}", w[0]);
        assert!(w[0].contains("using"), "{}", w[0]);
    }
}

#[test]
fn a_bad_value_does_not_spoil_the_others() {
    let p = defaults();
    let (q, w) = p.with_annotations(&annotations(&[
        (ANNOTATION_ATTEMPTS, "abc"),
        (ANNOTATION_CODES, "429"),
        (ANNOTATION_MIN_WAIT, "-1s"),
        (ANNOTATION_MAX_WAIT, "30s"),
    ]));
    assert_eq!(
        q,
        RetryPolicy {
            retry_codes: vec![429],
            max_wait: secs(30),
            ..p
        }
    );
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains(ANNOTATION_ATTEMPTS) && w[0].contains("using 10"));
    assert!(w[1].contains(ANNOTATION_MIN_WAIT) && w[1].contains("using 10s"));
}

#[test]
fn conflicting_waits_are_ignored() {
    let p = defaults(); // 10s .. 2m
    // min alone above the worker's max.
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_MIN_WAIT, "5m")]));
    assert_eq!(q, p);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains(ANNOTATION_MIN_WAIT) && w[0].contains("2m0s"),
        "{w:?}"
    );
    // max alone below the worker's min.
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_MAX_WAIT, "2s")]));
    assert_eq!(q, p);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains(ANNOTATION_MAX_WAIT) && w[0].contains("10s"),
        "{w:?}"
    );
    // Both set, against each other: both ignored.
    let (q, w) = p.with_annotations(&annotations(&[
        (ANNOTATION_MIN_WAIT, "30s"),
        (ANNOTATION_MAX_WAIT, "20s"),
    ]));
    assert_eq!(q, p);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains(ANNOTATION_MIN_WAIT) && w[1].contains(ANNOTATION_MAX_WAIT));
    // Both set, consistent together though each conflicts with a default: accepted.
    let (q, w) = p.with_annotations(&annotations(&[
        (ANNOTATION_MIN_WAIT, "3m"),
        (ANNOTATION_MAX_WAIT, "5m"),
    ]));
    assert_eq!((q.min_wait, q.max_wait), (secs(180), secs(300)));
    assert!(w.is_empty());
    // Equal is fine.
    let (q, w) = p.with_annotations(&annotations(&[(ANNOTATION_MIN_WAIT, "2m")]));
    assert_eq!(q.min_wait, secs(120));
    assert!(w.is_empty());
}
