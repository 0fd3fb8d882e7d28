//! A function's flow limits: how many of its calls may run at once across every replica, and how
//! many may start per period. Read from the message's annotations, or pinned by an operator
//! (`queue-worker flow set`), the pin winning.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{format_go_duration, parse_go_duration};

/// Calls of a function in flight across all replicas.
pub const ANNOTATION_MAX_CONCURRENCY: &str = "com.openfaas.queue.max_concurrency";
/// Calls of a function started per period across all replicas, `R/PERIOD` (`5/1s`).
pub const ANNOTATION_RATE: &str = "com.openfaas.queue.rate";
/// Calls that may start at once beyond the rate, after a quiet spell.
pub const ANNOTATION_BURST: &str = "com.openfaas.queue.burst";

/// The request (and message) header naming a call's flow key: calls of one key share its limits.
pub const KEY_HEADER: &str = "X-Flow-Control-Key";
/// The header giving a flow key's limits: `parallelism=N,rate=R/PERIOD,burst=B` (each optional).
pub const VALUE_HEADER: &str = "X-Flow-Control-Value";
/// The longest flow key accepted.
pub const MAX_KEY_LEN: usize = 128;

/// The largest `max_concurrency`, rate count and burst accepted.
pub const MAX_COUNT: u32 = 10_000;
/// The shortest and longest rate period accepted.
pub const MIN_PERIOD: Duration = Duration::from_millis(10);
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// `calls` starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub calls: u32,
    pub period: Duration,
}

impl Rate {
    /// The time between two starts at an even pace, rounded up to the microsecond so that the
    /// rounding never lets one call more into a period.
    pub fn interval_micros(&self) -> u64 {
        let period = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        period.div_ceil(u64::from(self.calls.max(1)))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.calls, format_go_duration(self.period))
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `R/PERIOD`: a whole number of calls from 1 to [`MAX_COUNT`] and a Go duration from
    /// [`MIN_PERIOD`] to [`MAX_PERIOD`] (`5/1s`, `100/1m`).
    fn from_str(s: &str) -> Result<Rate, String> {
        let expected = format!(
            "expected R/PERIOD: calls from 1 to {MAX_COUNT} per a duration from 10ms to 24h, e.g. 5/1s"
        );
        let (calls, period) = s.trim().split_once('/').ok_or_else(|| expected.clone())?;
        let calls = calls
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_COUNT).contains(n))
            .ok_or_else(|| expected.clone())?;
        let period = parse_go_duration(period.trim()).map_err(|_| expected.clone())?;
        if !(MIN_PERIOD..=MAX_PERIOD).contains(&period) {
            return Err(expected);
        }
        Ok(Rate { calls, period })
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The limits of one function; all absent: not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Starts allowed at once beyond the rate (only with a rate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub burst: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Limits {
    /// Whether nothing is limited.
    pub fn is_none(&self) -> bool {
        self.max_concurrency.is_none() && self.rate.is_none()
    }

    /// The limits a message's annotations set. Surrounding whitespace is ignored and an empty
    /// value counts as absent; a bad value is ignored with a warning (returned, not logged)
    /// naming the annotation, the value and what is allowed.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> (Limits, Vec<String>) {
        let mut limits = Limits::default();
        let mut warnings = Vec::new();
        let get = |key: &str| crate::wire::annotation(annotations, key);
        if let Some(v) = get(ANNOTATION_MAX_CONCURRENCY) {
            match count(v, 1) {
                Some(n) => limits.max_concurrency = Some(n),
                None => warnings.push(ignored(ANNOTATION_MAX_CONCURRENCY, v, &count_range(1))),
            }
        }
        if let Some(v) = get(ANNOTATION_RATE) {
            match v.parse::<Rate>() {
                Ok(rate) => limits.rate = Some(rate),
                Err(allowed) => warnings.push(ignored(ANNOTATION_RATE, v, &allowed)),
            }
        }
        if let Some(v) = get(ANNOTATION_BURST) {
            match count(v, 0) {
                Some(n) => limits.burst = n,
                None => warnings.push(ignored(ANNOTATION_BURST, v, &count_range(0))),
            }
        }
        (limits, warnings)
    }

    /// The limits an `X-Flow-Control-Value` gives: comma-separated `parallelism=N`,
    /// `rate=R/PERIOD` and `burst=B` (burst only with a rate), at least one of the first two.
    pub fn parse_value(text: &str) -> Result<Limits, String> {
        let mut limits = Limits::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| value_error(item))?;
            match name.trim() {
                "parallelism" => {
                    limits.max_concurrency = Some(count(value, 1).ok_or_else(|| value_error(item))?)
                }
                "rate" => limits.rate = Some(value.parse().map_err(|_| value_error(item))?),
                "burst" => limits.burst = count(value, 0).ok_or_else(|| value_error(item))?,
                _ => return Err(value_error(item)),
            }
        }
        if limits.is_none() || (limits.burst > 0 && limits.rate.is_none()) {
            return Err(value_error(text));
        }
        Ok(limits)
    }

    /// Whether these limits can be pinned: at least one limit, `max_concurrency` from 1 and
    /// `burst` up to [`MAX_COUNT`], a burst only with a rate (a rate is checked when read).
    pub fn check(&self) -> Result<(), String> {
        if self
            .max_concurrency
            .is_some_and(|n| !(1..=MAX_COUNT).contains(&n))
        {
            return Err(format!(
                "max_concurrency: expected a whole number from 1 to {MAX_COUNT}"
            ));
        }
        if self.burst > MAX_COUNT {
            return Err(format!(
                "burst: expected a whole number from 0 to {MAX_COUNT}"
            ));
        }
        if self.burst > 0 && self.rate.is_none() {
            return Err("burst needs a rate".into());
        }
        if self.is_none() {
            return Err("give max_concurrency, rate or both (unset removes a pin)".into());
        }
        Ok(())
    }

    /// The limits as one line (`max_concurrency=2 rate=5/1s burst=1`; `none`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_concurrency {
            parts.push(format!("max_concurrency={n}"));
        }
        if let Some(rate) = self.rate {
            parts.push(format!("rate={rate}"));
            if self.burst > 0 {
                parts.push(format!("burst={}", self.burst));
            }
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(" ")
        }
    }
}

fn value_error(item: &str) -> String {
    format!(
        "{VALUE_HEADER}: {item:?} is not understood; expected parallelism=N (1 to {MAX_COUNT}), \
         rate=R/PERIOD (e.g. 5/1s) and burst=B (with a rate), comma-separated"
    )
}

/// Whether `key` can be a flow key: 1 to [`MAX_KEY_LEN`] printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
        return Err(format!(
            "{KEY_HEADER}: expected 1 to {MAX_KEY_LEN} printable ASCII characters"
        ));
    }
    Ok(())
}

/// Check a request's flow headers (the ingress refuses a call whose key or value is bad): a
/// value without a key, a key of other characters, a value not understood.
pub fn check_headers(header: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
    let first = |name: &str| header.get(name).and_then(|v| v.first());
    match (first(KEY_HEADER), first(VALUE_HEADER)) {
        (None, Some(_)) => Err(format!("{VALUE_HEADER} needs {KEY_HEADER}")),
        (Some(key), value) => {
            check_key(key)?;
            value.map_or(Ok(()), |v| Limits::parse_value(v).map(|_| ()))
        }
        (None, None) => Ok(()),
    }
}

/// A whole number from `min` to [`MAX_COUNT`].
pub fn count(text: &str, min: u32) -> Option<u32> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=MAX_COUNT).contains(n))
}

fn count_range(min: u32) -> String {
    format!("expected a whole number from {min} to {MAX_COUNT}")
}

fn ignored(key: &str, value: &str, allowed: &str) -> String {
    format!("ignoring annotation {key}={value:?}: {allowed}; not limited by it")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_set_the_limits_and_bad_ones_are_ignored_with_a_warning() {
        let (limits, warnings) = Limits::from_annotations(&annotations(&[
            (ANNOTATION_MAX_CONCURRENCY, " 2 "),
            (ANNOTATION_RATE, "5/1s"),
            (ANNOTATION_BURST, "3"),
            ("com.openfaas.retry.attempts", "9"),
        ]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(limits.max_concurrency, Some(2));
        assert_eq!(
            limits.rate,
            Some(Rate {
                calls: 5,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(limits.burst, 3);
        assert_eq!(limits.describe(), "max_concurrency=2 rate=5/1s burst=3");

        for (key, bad) in [
            (ANNOTATION_MAX_CONCURRENCY, "0"),
            (ANNOTATION_MAX_CONCURRENCY, "10001"),
            (ANNOTATION_MAX_CONCURRENCY, "two"),
            (ANNOTATION_RATE, "5"),
            (ANNOTATION_RATE, "0/1s"),
            (ANNOTATION_RATE, "5/1ms"),
            (ANNOTATION_RATE, "5/48h"),
            (ANNOTATION_RATE, "5/soon"),
            (ANNOTATION_BURST, "-1"),
        ] {
            let (limits, warnings) = Limits::from_annotations(&annotations(&[(key, bad)]));
            assert!(limits.is_none(), "{key}={bad} set {limits:?}");
            assert_eq!(warnings.len(), 1, "{key}={bad}");
            assert!(
                warnings[0].contains(key) && warnings[0].contains("expected"),
                "{}",
                warnings[0]
            );
        }
        let (limits, warnings) = Limits::from_annotations(&annotations(&[(ANNOTATION_RATE, "")]));
        assert!(limits.is_none() && warnings.is_empty(), "empty is absent");
    }

    #[test]
    fn a_flow_value_gives_a_keys_limits_and_a_bad_one_says_what_is_expected() {
        let l = Limits::parse_value("parallelism=2, rate=10/1m,burst=3").unwrap();
        assert_eq!(l.describe(), "max_concurrency=2 rate=10/1m0s burst=3");
        assert_eq!(
            Limits::parse_value("rate=5/1s")
                .unwrap()
                .rate
                .map(|r| r.calls),
            Some(5)
        );
        for bad in [
            "",
            "burst=2",
            "parallelism=0",
            "speed=3",
            "rate=5",
            "parallelism",
        ] {
            let e = Limits::parse_value(bad).unwrap_err();
            assert!(e.contains("expected parallelism=N"), "{bad}: {e}");
        }
        assert!(check_key("tenant-42").is_ok() && check_key("a b/c").is_ok());
        let headers = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect()
        };
        assert!(check_headers(&headers(&[])).is_ok());
        assert!(check_headers(&headers(&[(KEY_HEADER, "t1")])).is_ok());
        assert!(
            check_headers(&headers(&[(KEY_HEADER, "t1"), (VALUE_HEADER, "rate=1/1s")])).is_ok()
        );
        assert!(check_headers(&headers(&[(VALUE_HEADER, "rate=1/1s")])).is_err());
        assert!(check_headers(&headers(&[(KEY_HEADER, "t1"), (VALUE_HEADER, "fast")])).is_err());
        for bad in ["", "ü", "a\tb", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_interval_is_rounded_up_and_the_rate_reads_back_as_written() {
        let rate: Rate = "3/1s".parse().unwrap();
        assert_eq!(rate.interval_micros(), 333_334);
        assert!(3 * rate.interval_micros() >= 1_000_000);
        let json = serde_json::to_string(&Limits {
            max_concurrency: None,
            rate: Some(rate),
            burst: 0,
        })
        .unwrap();
        assert_eq!(json, r#"{"rate":"3/1s"}"#);
        let back: Limits = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rate, Some(rate));
        assert!(serde_json::from_str::<Limits>(r#"{"rate":"3"}"#).is_err());
    }
}
