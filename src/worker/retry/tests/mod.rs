//! Tests of the retry policy: settings and annotations, delays, decisions, the budget,
//! properties. Shared helpers are here.

mod budget;
mod decisions;
mod delays;
mod policy;
mod properties;

pub(super) use super::decide::capped_delay;
pub(super) use super::*;
pub(super) use crate::config::{Backoff, Config};
pub(super) use crate::rng::Jitter;
pub(super) use http::HeaderMap;
pub(super) use http::header::HeaderName;
pub(super) use proptest::prelude::*;
pub(super) use rand::SeedableRng;
pub(super) use rand::rngs::StdRng;
pub(super) use std::collections::BTreeMap;
pub(super) use std::time::UNIX_EPOCH;
pub(super) use std::time::{Duration, Instant, SystemTime};

/// A jitter source always returning the same value.
pub(super) struct Fixed(pub(super) f64);

impl Jitter for Fixed {
    fn next_unit(&mut self) -> f64 {
        self.0
    }
}

/// Just below 1.
pub(super) const ALMOST_ONE: f64 = 0.999_999_999;

/// The top of every spread window: the delay before spreading.
pub(super) const TOP: f64 = 1.0;

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(super) fn defaults() -> RetryPolicy {
    RetryPolicy::from_config(&Config::default())
}

pub(super) fn policy(min: Duration, max: Duration, backoff: Backoff) -> RetryPolicy {
    RetryPolicy {
        min_wait: min,
        max_wait: max,
        backoff,
        ..defaults()
    }
}

pub(super) fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

pub(super) fn now() -> SystemTime {
    UNIX_EPOCH + secs(1_700_000_000)
}

pub(super) fn decide_status(p: &RetryPolicy, attempt: u32, status: u16, h: &HeaderMap) -> Decision {
    decide(
        p,
        attempt,
        &AttemptResult::Response { status, headers: h },
        now(),
        &mut Fixed(TOP),
    )
}
