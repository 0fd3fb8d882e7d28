//! The retry policy (pure: no I/O, no clock reads, no global RNG).
//!
//! Decides what happens after one attempt to invoke a function: [`Decision::Success`], a
//! [`Decision::Retry`] after a delay (the caller naks the message with that delay), or a
//! [`Decision::Final`] outcome (the caller posts the callback and, when `exhausted`,
//! dead-letters the message).
//!
//! # What is retried
//!
//! - a status listed in `retry_http_codes` (`com.openfaas.retry.codes`), whatever its class:
//!   the list is honoured as written;
//! - a transport error (connect error, timeout, reset), reported as status 503;
//! - any status >= 400 whose response carries `X-OpenFaaS-Internal` (faas-provider sets it on
//!   its own errors, e.g. a 502 from the gateway while the function scales).
//!
//! Any other status >= 400 (or outside 100–599) is final at once; 1xx, 2xx and 3xx are a
//! success. The attempt number is the JetStream delivery count (1 = first attempt), and
//! `max_retry_attempts` counts every attempt, the first included: with 10, a message is
//! invoked at most 10 times (9 retries).
//!
//! # Delays
//!
//! The delay after attempt `n` is `initial_retry_wait · 2^(n-1)`, capped at `max_retry_wait`,
//! then jittered by `backoff`: `exponential` (none), `full` (uniform in `[0, d]`) or `equal`
//! (uniform in `[d/2, d]`). A jittered delay is never below `min(d, 1ms)`
//! ([`MIN_JITTERED_DELAY`]), so a retry is never immediate unless `initial_retry_wait` is zero:
//! `initial_retry_wait=0s` means "retry at once" (and, with `exponential`, every retry is then
//! immediate, since `0 · 2^n = 0`).
//!
//! On a 429 or 503 carrying a valid `Retry-After` (delta-seconds or an HTTP-date), its value
//! replaces the computed delay, clamped to `[initial_retry_wait, max_retry_wait]`, without
//! jitter. An invalid `Retry-After` falls back to the computed delay.
//!
//! Worked example with the defaults (10 attempts, 10s initial, 120s max, `exponential`), for a
//! function that always answers 500:
//!
//! | attempt | delay before the next attempt |
//! |--------:|-------------------------------|
//! | 1       | 10s                           |
//! | 2       | 20s                           |
//! | 3       | 40s                           |
//! | 4       | 80s                           |
//! | 5 – 9   | 120s each (capped)            |
//! | 10      | final: exhausted (callback, then dead letter) |
//!
//! A message that always fails is thus dead-lettered after 750s (12.5 minutes) of waiting in
//! total, plus the time of its 10 invocations.
//!
//! # Per-function overrides
//!
//! [`RetryPolicy::with_annotations`] applies `com.openfaas.retry.attempts`,
//! `com.openfaas.retry.codes`, `com.openfaas.retry.min_wait` and `com.openfaas.retry.max_wait`
//! over the worker's defaults. Invalid values are ignored (the default stays) with a warning for
//! the caller to log; an empty value means "not set".
//!
//! # Retry budget
//!
//! [`RetryBudget`] limits retries per function to a fraction of recent first attempts, so a
//! failing downstream gets back-pressure rather than a retry storm.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use http::header::{HeaderName, RETRY_AFTER};

use crate::config::{Backoff, Config, format_go_duration, parse_go_duration};
use crate::rng::Jitter;

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

/// A jittered delay is never below `min(d, MIN_JITTERED_DELAY)` (`d` = the computed delay), so
/// `full` jitter cannot turn a non-zero delay into an immediate redelivery.
pub const MIN_JITTERED_DELAY: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

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
        let get = |key: &str| {
            annotations
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };

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

        let mut wait = |key: &'static str, default: Duration| -> Option<(Duration, &str)> {
            let v = get(key)?;
            match parse_go_duration(v) {
                Ok(d) => Some((d, v)),
                Err(why) => {
                    warnings.push(ignored(key, v, &why, &format_go_duration(default)));
                    None
                }
            }
        };
        let min_override = wait(ANNOTATION_MIN_WAIT, self.min_wait);
        let max_override = wait(ANNOTATION_MAX_WAIT, self.max_wait);
        let min = min_override.map_or(self.min_wait, |(d, _)| d);
        let max = max_override.map_or(self.max_wait, |(d, _)| d);
        if min <= max {
            policy.min_wait = min;
            policy.max_wait = max;
        } else {
            match (min_override, max_override) {
                (Some((_, min_raw)), Some((_, max_raw))) => {
                    let why = format!(
                        "{ANNOTATION_MIN_WAIT} ({min_raw}) must not exceed {ANNOTATION_MAX_WAIT} ({max_raw})"
                    );
                    warnings.push(ignored(
                        ANNOTATION_MIN_WAIT,
                        min_raw,
                        &why,
                        &format_go_duration(self.min_wait),
                    ));
                    warnings.push(ignored(
                        ANNOTATION_MAX_WAIT,
                        max_raw,
                        &why,
                        &format_go_duration(self.max_wait),
                    ));
                }
                (Some((_, min_raw)), None) => warnings.push(ignored(
                    ANNOTATION_MIN_WAIT,
                    min_raw,
                    &format!(
                        "must not exceed the maximum retry wait ({})",
                        format_go_duration(self.max_wait)
                    ),
                    &format_go_duration(self.min_wait),
                )),
                (None, Some((_, max_raw))) => warnings.push(ignored(
                    ANNOTATION_MAX_WAIT,
                    max_raw,
                    &format!(
                        "must be at least the minimum retry wait ({})",
                        format_go_duration(self.min_wait)
                    ),
                    &format_go_duration(self.max_wait),
                )),
                // The base policy itself is inconsistent: not the annotations' doing.
                (None, None) => {}
            }
        }

        (policy, warnings)
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
fn is_error_status(status: u16) -> bool {
    !(100..400).contains(&status)
}

// ---------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------

/// What an attempt produced.
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult<'a> {
    /// The function (or the gateway) answered.
    Response {
        /// The HTTP status.
        status: u16,
        /// The response headers (`Retry-After`, `X-OpenFaaS-Internal`).
        headers: &'a HeaderMap,
    },
    /// Connect error, timeout, reset: always retryable; reported as status 503.
    TransportError,
}

impl AttemptResult<'_> {
    /// The status reported for this result (503 for a transport error).
    pub fn status(&self) -> u16 {
        match *self {
            AttemptResult::Response { status, .. } => status,
            AttemptResult::TransportError => 503,
        }
    }
}

/// What to do with the message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not an error (1xx, 2xx, 3xx): done.
    Success,
    /// Try again: nak with this delay.
    Retry {
        /// How long the broker should wait before redelivering.
        delay: Duration,
    },
    /// No more attempts. `exhausted` is true when the result was retryable but the attempts
    /// are used up, false for a failure that is never retried (e.g. 400).
    Final {
        /// The attempts ran out (as opposed to a non-retryable failure).
        exhausted: bool,
    },
}

/// Decides what follows `attempt` (the JetStream delivery count of this attempt, 1 = first;
/// 0 is treated as 1), given what it produced.
///
/// A retryable result with `attempt < max_attempts` gives [`Decision::Retry`] with
/// [`backoff_delay`] or, on a 429/503 with a valid `Retry-After` (relative to `now`), that
/// value clamped to `[min_wait, max_wait]` (no jitter; `jitter` is then not consulted). A
/// retryable result on the last attempt gives `Final { exhausted: true }`; a non-retryable
/// error `Final { exhausted: false }`; anything else [`Decision::Success`].
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    result: &AttemptResult<'_>,
    now: SystemTime,
    jitter: &mut dyn Jitter,
) -> Decision {
    if !policy.is_retryable(result) {
        return if is_error_status(result.status()) {
            Decision::Final { exhausted: false }
        } else {
            Decision::Success
        };
    }
    if attempt.max(1) >= policy.max_attempts {
        return Decision::Final { exhausted: true };
    }
    let delay = retry_after_delay(policy, result, now)
        .unwrap_or_else(|| backoff_delay(policy, attempt, jitter));
    Decision::Retry { delay }
}

/// The `Retry-After` of a 429 or 503, clamped to `[min_wait, max_wait]` (`max_wait` wins if
/// they conflict).
fn retry_after_delay(
    policy: &RetryPolicy,
    result: &AttemptResult<'_>,
    now: SystemTime,
) -> Option<Duration> {
    let AttemptResult::Response { status, headers } = *result else {
        return None;
    };
    if status != 429 && status != 503 {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let delay = parse_retry_after(value, now)?;
    Some(delay.max(policy.min_wait).min(policy.max_wait))
}

/// The delay before the attempt after `attempt` (1 = first; 0 is treated as 1):
/// `d = min_wait · 2^(attempt-1)`, capped at `max_wait`, then jittered according to
/// `policy.backoff`:
///
/// - `exponential`: `d` (the jitter source is not consulted);
/// - `full`: uniform in `[0, d]`, but at least `min(d, 1ms)`;
/// - `equal`: uniform in `[d/2, d]`, and at least `min(d, 1ms)`.
///
/// Computed in integer nanoseconds: never overflows or panics, for any attempt (`u32::MAX`
/// included), any durations and any jitter value. The result is never above `max_wait`, and is
/// zero only when `min_wait` (or `max_wait`) is zero.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, jitter: &mut dyn Jitter) -> Duration {
    let d = capped_delay(policy.min_wait, policy.max_wait, attempt);
    if d.is_zero() {
        return d;
    }
    let d_ns = d.as_nanos();
    let jittered = match policy.backoff {
        Backoff::Exponential => return d,
        Backoff::Full => scale(d_ns, unit(jitter)),
        Backoff::Equal => {
            let low = d_ns / 2;
            low + scale(d_ns - low, unit(jitter))
        }
    };
    from_nanos(jittered.min(d_ns)).max(d.min(MIN_JITTERED_DELAY))
}

/// `min(min_wait · 2^(attempt-1), max_wait)` without overflow.
fn capped_delay(min_wait: Duration, max_wait: Duration, attempt: u32) -> Duration {
    let min_ns = min_wait.as_nanos();
    let max_ns = max_wait.as_nanos();
    let shift = attempt.max(1) - 1;
    // A Duration is below 2^94 ns, so shifting by less than its leading zeros cannot overflow.
    let d_ns = if min_ns == 0 {
        0
    } else if shift >= min_ns.leading_zeros() {
        u128::MAX
    } else {
        min_ns << shift
    };
    if d_ns >= max_ns {
        max_wait
    } else {
        from_nanos(d_ns)
    }
}

/// The next jitter value, forced into `[0, 1)`.
fn unit(jitter: &mut dyn Jitter) -> f64 {
    let u = jitter.next_unit();
    if u.is_nan() || u <= 0.0 {
        0.0
    } else if u >= 1.0 {
        1.0 - f64::EPSILON
    } else {
        u
    }
}

/// `ns · u` for `u` in `[0, 1)`, never above `ns`.
fn scale(ns: u128, u: f64) -> u128 {
    // Float-to-int casts saturate; the min guards against rounding up.
    ((ns as f64 * u) as u128).min(ns)
}

/// A Duration from nanoseconds (the value must fit, as every caller's does).
fn from_nanos(ns: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9.
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, also the obsolete RFC 850 and asctime forms), relative to
/// `now`; a date in the past means zero. Surrounding whitespace is ignored; a huge number of
/// seconds saturates. `None` when empty or invalid (signs, fractions, units, garbage).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.bytes().fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

// ---------------------------------------------------------------------------------------------
// Retry budget
// ---------------------------------------------------------------------------------------------

/// Retries allowed per function and window whatever the traffic, so a function with little
/// traffic (or whose first attempts ran in another process) can still retry.
pub const MIN_RETRIES_PER_WINDOW: u64 = 10;

/// Time buckets per window.
pub const BUDGET_BUCKETS: usize = 10;

/// A suggested budget window.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// A suggested bound on the functions tracked by a budget.
pub const DEFAULT_BUDGET_FUNCTIONS: usize = 10_000;

/// Per-function retry budget: retries are limited to a fraction of recent first attempts, so a
/// failing downstream gets back-pressure, not a retry storm (SPEC §5, `retry_budget_ratio`).
///
/// # Semantics
///
/// For each function, over a sliding window, the retries allowed are
/// `max(MIN_RETRIES_PER_WINDOW, floor(ratio × first attempts in the window))`.
///
/// - With the default ratio 0.2 and 100 first attempts in the window, 20 retries are allowed;
///   with 5 first attempts, 10 (the floor, [`MIN_RETRIES_PER_WINDOW`]).
/// - Ratio 0 allows only the floor: 10 retries per function and window, whatever the traffic.
///   A NaN or negative ratio counts as 0; a huge one means "practically unlimited".
/// - Only granted retries are counted ([`Self::try_retry`] returning true). A refused retry is
///   not a retry here: the caller naks it with `max_wait` instead of the computed delay, and
///   asks again when the message comes back.
/// - The window is made of [`BUDGET_BUCKETS`] time buckets of `window / 10` each; a count leaves
///   the window when its bucket does, so the window effectively spans between 90% and 100% of
///   `window`.
/// - Memory is bounded: at most `max_functions` functions are tracked (at least 1); a new one
///   evicts the least recently used (by either method), whose counts are forgotten.
/// - Time comes from the `now` passed in; a `now` earlier than one seen before counts as that
///   latest time (callers may read the clock before taking the lock).
///
/// The budget is per process (each worker replica has its own). Not synchronised: callers wrap
/// it in a `Mutex`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    bucket_nanos: u128,
    max_functions: usize,
    origin: Option<Instant>,
    latest_epoch: u64,
    tick: u64,
    functions: HashMap<String, FunctionBudget>,
    /// Functions by last use (tick), oldest first.
    lru: BTreeMap<u64, String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-width interval since the origin these counts belong to.
    epoch: u64,
    first_attempts: u64,
    retries: u64,
}

#[derive(Debug)]
struct FunctionBudget {
    buckets: [Bucket; BUDGET_BUCKETS],
    tick: u64,
}

impl FunctionBudget {
    /// The current bucket, cleared if it held counts of an older interval.
    fn bucket(&mut self, epoch: u64) -> &mut Bucket {
        let b = &mut self.buckets[(epoch % BUDGET_BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }

    /// (first attempts, retries) in the window ending in `epoch`.
    fn totals(&self, epoch: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUDGET_BUCKETS as u64)
            .fold((0u64, 0u64), |(f, r), b| {
                (
                    f.saturating_add(b.first_attempts),
                    r.saturating_add(b.retries),
                )
            })
    }
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per first attempt (plus the floor) over `window`,
    /// tracking at most `max_functions` functions. A zero window counts as 10ns.
    pub fn new(ratio: f64, window: Duration, max_functions: usize) -> RetryBudget {
        let ratio = if ratio.is_nan() || ratio < 0.0 {
            0.0
        } else {
            ratio
        };
        RetryBudget {
            ratio,
            bucket_nanos: (window.as_nanos() / BUDGET_BUCKETS as u128).max(1),
            max_functions: max_functions.max(1),
            origin: None,
            latest_epoch: 0,
            tick: 0,
            functions: HashMap::new(),
            lru: BTreeMap::new(),
        }
    }

    /// Counts a first attempt (delivery 1) of `function` at `now`.
    pub fn record_first_attempt(&mut self, function: &str, now: Instant) {
        let epoch = self.epoch(now);
        let b = self.touch(function).bucket(epoch);
        b.first_attempts = b.first_attempts.saturating_add(1);
    }

    /// True (and counts the retry) when `function` may retry now; false when over budget.
    pub fn try_retry(&mut self, function: &str, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let ratio = self.ratio;
        let entry = self.touch(function);
        let (first_attempts, retries) = entry.totals(epoch);
        // Float-to-int casts saturate (and a huge ratio saturates to u64::MAX).
        let allowed = MIN_RETRIES_PER_WINDOW.max((ratio * first_attempts as f64).floor() as u64);
        if retries >= allowed {
            return false;
        }
        let b = entry.bucket(epoch);
        b.retries = b.retries.saturating_add(1);
        true
    }

    /// How many functions are tracked (at most `max_functions`).
    pub fn tracked_functions(&self) -> usize {
        self.functions.len()
    }

    /// The bucket interval of `now`, never earlier than one seen before.
    fn epoch(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        let epoch = u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX);
        self.latest_epoch = self.latest_epoch.max(epoch);
        self.latest_epoch
    }

    /// The budget of `function`, marked most recently used; created (evicting the least
    /// recently used function when full) if new.
    fn touch(&mut self, function: &str) -> &mut FunctionBudget {
        // Already the most recently used (the common case: one busy function): the order
        // stands as it is, and two tree updates per message are saved.
        if self
            .functions
            .get(function)
            .is_some_and(|e| e.tick == self.tick)
        {
            return self
                .functions
                .get_mut(function)
                .expect("the function was just looked up");
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.functions.get_mut(function) {
            let name = self
                .lru
                .remove(&entry.tick)
                .unwrap_or_else(|| function.to_owned());
            entry.tick = tick;
            self.lru.insert(tick, name);
        } else {
            while self.functions.len() >= self.max_functions {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.functions.remove(&oldest);
            }
            self.functions.insert(
                function.to_owned(),
                FunctionBudget {
                    buckets: [Bucket::default(); BUDGET_BUCKETS],
                    tick,
                },
            );
            self.lru.insert(tick, function.to_owned());
        }
        self.functions
            .get_mut(function)
            .expect("the function was just looked up or inserted")
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::UNIX_EPOCH;

    /// A jitter source always returning the same value.
    struct Fixed(f64);

    impl Jitter for Fixed {
        fn next_unit(&mut self) -> f64 {
            self.0
        }
    }

    /// Just below 1.
    const ALMOST_ONE: f64 = 0.999_999_999;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn defaults() -> RetryPolicy {
        RetryPolicy::from_config(&Config::default())
    }

    fn policy(min: Duration, max: Duration, backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            min_wait: min,
            max_wait: max,
            backoff,
            ..defaults()
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + secs(1_700_000_000)
    }

    fn decide_status(p: &RetryPolicy, attempt: u32, status: u16, h: &HeaderMap) -> Decision {
        decide(
            p,
            attempt,
            &AttemptResult::Response { status, headers: h },
            now(),
            &mut Fixed(0.5),
        )
    }

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

    // --- delays ---------------------------------------------------------------------------------

    #[test]
    fn worked_example_for_the_defaults() {
        let p = defaults();
        let delays: Vec<u64> = (1..=6)
            .map(|a| backoff_delay(&p, a, &mut Fixed(0.5)).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 120, 120]);
        for a in 1..=6 {
            assert_eq!(backoff_delay(&p, a, &mut Fixed(0.5)).subsec_nanos(), 0);
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
        assert_eq!(backoff_delay(&p, 0, &mut Fixed(0.5)), secs(10));
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
        assert_eq!(backoff_delay(&p, u32::MAX, &mut Fixed(0.0)), Duration::MAX);
        assert_eq!(
            backoff_delay(&p, 64, &mut Fixed(0.0)),
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
                assert_eq!(backoff_delay(&p, a, &mut Fixed(0.5)), Duration::ZERO);
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
        assert_eq!(backoff_delay(&p, 1, &mut Fixed(0.5)), secs(5));
        let h = headers(&[("retry-after", "1")]);
        assert_eq!(
            decide_status(&p, 1, 429, &h),
            Decision::Retry { delay: secs(5) }
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
            (Backoff::Exponential, 1.0, 1.0),
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
            if backoff != Backoff::Exponential {
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
    }

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
            decide(&p, 2, &r, now(), &mut Fixed(0.5)),
            Decision::Retry { delay: secs(20) }
        );
        assert_eq!(
            decide(&p, 10, &r, now(), &mut Fixed(0.5)),
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
        // Clamped down to max_wait.
        let h = headers(&[("Retry-After", "3600")]);
        assert_eq!(
            decide_status(&p, 1, 429, &h),
            Decision::Retry { delay: secs(120) }
        );
        // No jitter on it.
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
            Decision::Retry { delay: secs(7) }
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
        let req = crate::wire::decode(include_bytes!("../../testdata/wire/annotations.json"))
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

    // --- budget ---------------------------------------------------------------------------------

    fn grant_count(b: &mut RetryBudget, f: &str, now: Instant, tries: usize) -> usize {
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
                Backoff::Exponential => prop_assert_eq!(got, d),
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
            let this = backoff_delay(&p, a, &mut Fixed(0.5));
            let next = backoff_delay(&p, a + 1, &mut Fixed(0.5));
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
        fn prop_retry_after_is_clamped(p in valid_policy(), secs in any::<u64>(), status in prop_oneof![Just(429u16), Just(503u16)]) {
            let p = RetryPolicy { retry_codes: vec![status], max_attempts: 5, ..p };
            let h = headers(&[("Retry-After", &secs.to_string())]);
            let d = decide_status(&p, 1, status, &h);
            let expected = Duration::from_secs(secs).clamp(p.min_wait, p.max_wait);
            prop_assert_eq!(d, Decision::Retry { delay: expected });
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
}
