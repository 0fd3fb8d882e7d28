//! The retry policy: the worker's settings, with a message's `com.openfaas.retry.*`
//! annotations applied, and what it retries.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::HeaderName;

use crate::config::{Backoff, Config, format_go_duration, parse_go_duration};

use super::attempt::AttemptResult;

/// Annotation overriding the number of attempts (`max_retry_attempts`), e.g. `"30"`.
pub const ANNOTATION_ATTEMPTS: &str = "com.openfaas.retry.attempts";
/// Annotation overriding the retried status codes (`retry_http_codes`), e.g. `"429,503"`.
pub const ANNOTATION_CODES: &str = "com.openfaas.retry.codes";
/// Annotation overriding the first retry delay (`initial_retry_wait`), e.g. `"5s"`.
pub const ANNOTATION_MIN_WAIT: &str = "com.openfaas.retry.min_wait";
/// Annotation overriding the longest retry delay (`max_retry_wait`), e.g. `"1m"`.
pub const ANNOTATION_MAX_WAIT: &str = "com.openfaas.retry.max_wait";

/// Header faas-provider sets on its own error responses; such errors are always retried.
pub const INTERNAL_HEADER: HeaderName = HeaderName::from_static("x-openfaas-internal");

/// Largest accepted `com.openfaas.retry.attempts` (the same bound as `max_retry_attempts`).
pub const MAX_ATTEMPTS_LIMIT: u32 = 10_000;

/// The effective policy for one message: worker defaults overridden by the message's
/// annotations.
///
/// A valid policy has `max_attempts >= 1` and `min_wait <= max_wait` ([`Self::from_config`]
/// and [`Self::with_annotations`] keep it so). Nothing panics on an invalid one: with
/// `min_wait > max_wait`, `max_wait` wins (no delay is ever longer than `max_wait`); with
/// `max_attempts == 0`, every retryable result is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (`max_retry_attempts`).
    pub max_attempts: u32,
    /// Retried status codes (`retry_http_codes`).
    pub retry_codes: Vec<u16>,
    /// Delay after the first attempt (`initial_retry_wait`); doubled on every attempt.
    pub min_wait: Duration,
    /// Longest delay (`max_retry_wait`).
    pub max_wait: Duration,
    /// Jitter applied to the computed delay (`backoff`).
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The worker-wide policy from the configuration.
    pub fn from_config(cfg: &Config) -> RetryPolicy {
        RetryPolicy {
            max_attempts: cfg.max_retry_attempts,
            retry_codes: cfg.retry_http_codes.clone(),
            min_wait: cfg.initial_retry_wait,
            max_wait: cfg.max_retry_wait,
            backoff: cfg.backoff,
        }
    }

    /// This policy overridden by a message's annotations (`com.openfaas.retry.attempts`,
    /// `.codes`, `.min_wait`, `.max_wait`).
    ///
    /// - `attempts`: a whole number from 1 to [`MAX_ATTEMPTS_LIMIT`];
    /// - `codes`: a comma-separated list of status codes from 100 to 599 (at least one; one bad
    ///   item rejects the whole list);
    /// - `min_wait`, `max_wait`: Go durations (`5s`, `1m30s`; `0s` allowed).
    ///
    /// Surrounding whitespace is ignored and an empty value counts as absent. A bad value is
    /// ignored (this policy's value stays) and produces one warning naming the annotation, the
    /// value, what is allowed and the value used instead. Warnings are returned, not logged.
    ///
    /// If the overrides would make `min_wait > max_wait`, the conflicting override is ignored
    /// with a warning: the one that was set, or both when both were set. Other annotations are
    /// not looked at. Never panics.
    pub fn with_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> (RetryPolicy, Vec<String>) {
        let mut policy = self.clone();
        let mut warnings = Vec::new();
        let get = |key: &str| crate::wire::annotation(annotations, key);
        if let Some(v) = get(ANNOTATION_ATTEMPTS) {
            match v.parse::<u32>() {
                Ok(n) if (1..=MAX_ATTEMPTS_LIMIT).contains(&n) => policy.max_attempts = n,
                _ => warnings.push(ignored(
                    ANNOTATION_ATTEMPTS,
                    v,
                    &format!("expected a whole number of attempts from 1 to {MAX_ATTEMPTS_LIMIT}"),
                    &self.max_attempts.to_string(),
                )),
            }
        }
        if let Some(v) = get(ANNOTATION_CODES) {
            match parse_codes(v) {
                Some(codes) => policy.retry_codes = codes,
                None => warnings.push(ignored(
                    ANNOTATION_CODES,
                    v,
                    "expected a comma-separated list of HTTP status codes from 100 to 599, \
                     e.g. 429,503",
                    &format_codes(&self.retry_codes),
                )),
            }
        }
        let min = self.wait_override(
            get(ANNOTATION_MIN_WAIT),
            ANNOTATION_MIN_WAIT,
            self.min_wait,
            &mut warnings,
        );
        let max = self.wait_override(
            get(ANNOTATION_MAX_WAIT),
            ANNOTATION_MAX_WAIT,
            self.max_wait,
            &mut warnings,
        );
        self.apply_waits(&mut policy, min, max, &mut warnings);
        (policy, warnings)
    }

    /// A wait annotation as a duration (with its text); a bad one is ignored with a warning.
    fn wait_override<'a>(
        &self,
        value: Option<&'a str>,
        key: &'static str,
        default: Duration,
        warnings: &mut Vec<String>,
    ) -> Option<(Duration, &'a str)> {
        let v = value?;
        match parse_go_duration(v) {
            Ok(d) => Some((d, v)),
            Err(why) => {
                warnings.push(ignored(key, v, &why, &format_go_duration(default)));
                None
            }
        }
    }

    /// Apply the wait overrides when `min_wait <= max_wait` holds with them; otherwise ignore
    /// the conflicting one(s) with a warning.
    fn apply_waits(
        &self,
        policy: &mut RetryPolicy,
        min_override: Option<(Duration, &str)>,
        max_override: Option<(Duration, &str)>,
        warnings: &mut Vec<String>,
    ) {
        let min = min_override.map_or(self.min_wait, |(d, _)| d);
        let max = max_override.map_or(self.max_wait, |(d, _)| d);
        if min <= max {
            policy.min_wait = min;
            policy.max_wait = max;
            return;
        }
        let (min_default, max_default) = (
            format_go_duration(self.min_wait),
            format_go_duration(self.max_wait),
        );
        match (min_override, max_override) {
            (Some((_, min_raw)), Some((_, max_raw))) => {
                let why = format!(
                    "{ANNOTATION_MIN_WAIT} ({min_raw}) must not exceed {ANNOTATION_MAX_WAIT} ({max_raw})"
                );
                warnings.push(ignored(ANNOTATION_MIN_WAIT, min_raw, &why, &min_default));
                warnings.push(ignored(ANNOTATION_MAX_WAIT, max_raw, &why, &max_default));
            }
            (Some((_, min_raw)), None) => {
                let why = format!("must not exceed the maximum retry wait ({max_default})");
                warnings.push(ignored(ANNOTATION_MIN_WAIT, min_raw, &why, &min_default));
            }
            (None, Some((_, max_raw))) => {
                let why = format!("must be at least the minimum retry wait ({min_default})");
                warnings.push(ignored(ANNOTATION_MAX_WAIT, max_raw, &why, &max_default));
            }
            // The base policy itself is inconsistent: not the annotations' doing.
            (None, None) => {}
        }
    }

    /// Whether `result` is worth another attempt (ignoring how many attempts are left).
    pub fn is_retryable(&self, result: &AttemptResult<'_>) -> bool {
        match *result {
            AttemptResult::TransportError => true,
            AttemptResult::Response { status, headers } => {
                self.retry_codes.contains(&status)
                    || (is_error_status(status) && headers.contains_key(INTERNAL_HEADER))
            }
        }
    }
}

/// The warning for an ignored annotation value.
fn ignored(key: &str, value: &str, allowed: &str, using: &str) -> String {
    format!("ignoring annotation {key}={value:?}: {allowed}; using {using}")
}

/// `429,503` → `[429, 503]` (sorted, deduplicated); `None` when any item is not a status code
/// from 100 to 599, or when there is none.
fn parse_codes(s: &str) -> Option<Vec<u16>> {
    let mut codes = s
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<u16>().ok().filter(|c| (100..=599).contains(c)))
        .collect::<Option<Vec<u16>>>()?;
    if codes.is_empty() {
        return None;
    }
    codes.sort_unstable();
    codes.dedup();
    Some(codes)
}

fn format_codes(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An error status: anything but 1xx, 2xx and 3xx.
pub(super) fn is_error_status(status: u16) -> bool {
    !(100..400).contains(&status)
}
