//! Go's duration syntax (`time.ParseDuration`, `Duration.String`) and boolean spellings
//! (`strconv.ParseBool`), as the OpenFaaS chart's values are written.

use std::time::Duration;

/// What a duration may look like; appended to every duration error.
pub(super) const DURATION_SYNTAX: &str =
    "in Go syntax such as 60s, 1m30s, 500ms, 2h45m or 1.5h (units: ns, us, µs, ms, s, m, h)";

/// Largest duration Go can represent: `i64::MAX` nanoseconds (2562047h47m16.854775807s).
const MAX_GO_NANOS: u64 = i64::MAX as u64;

/// `1 << 63`, the bound Go's parser checks against while accumulating.
const OVERFLOW_BOUND: u64 = 1 << 63;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DurationError {
    Empty,
    Negative,
    Invalid,
    MissingUnit,
    UnknownUnit(String),
    TooLarge,
}

impl DurationError {
    pub(super) fn reason(&self) -> String {
        match self {
            DurationError::Empty => "empty duration".to_owned(),
            DurationError::Negative => "negative durations are not allowed".to_owned(),
            DurationError::Invalid => "not a duration".to_owned(),
            DurationError::MissingUnit => "missing unit".to_owned(),
            DurationError::UnknownUnit(unit) => format!("unknown unit {unit:?}"),
            DurationError::TooLarge => "too large (at most 2562047h47m16.854775807s)".to_owned(),
        }
    }
}

/// Parses a duration in Go's `time.ParseDuration` syntax: a sequence of decimal numbers, each
/// with an optional fraction and a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), such as
/// `60s`, `1m30s`, `500ms`, `2h45m` or `1.5h`. A lone `0` is allowed; a leading `+` is
/// accepted as in Go. Negative durations, the empty string and values above Go's maximum
/// (`i64::MAX` nanoseconds) are rejected with a message that says what is allowed.
///
/// Fractions are computed exactly as Go computes them, so every string yields the same
/// nanosecond count as in Go.
///
/// # Errors
///
/// A one-line message naming the problem (empty, negative, missing or unknown unit, too
/// large, not a duration) and the accepted syntax.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    parse_duration_inner(s).map_err(|e| {
        format!(
            "invalid duration {s:?}: {}; expected a duration {DURATION_SYNTAX}",
            e.reason()
        )
    })
}

pub(super) fn parse_duration_inner(orig: &str) -> Result<Duration, DurationError> {
    let mut rest = orig;
    if rest.starts_with('-') {
        return Err(DurationError::Negative);
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (nanos, after) = parse_term(rest)?;
        rest = after;
        total = total.saturating_add(nanos);
        if total > OVERFLOW_BOUND {
            return Err(DurationError::TooLarge);
        }
    }
    if total > MAX_GO_NANOS {
        return Err(DurationError::TooLarge);
    }
    Ok(Duration::from_nanos(total))
}

/// One `<number><unit>` term at the start of `s`: its nanoseconds and the text after it.
fn parse_term(s: &str) -> Result<(u64, &str), DurationError> {
    let first = s.as_bytes()[0];
    if !(first == b'.' || first.is_ascii_digit()) {
        return Err(DurationError::Invalid);
    }
    let (v, rest) = parse_integer(s)?;
    let pre = rest.len() < s.len();
    let (frac, scale, post, rest) = parse_fraction(rest);
    if !pre && !post {
        return Err(DurationError::Invalid);
    }
    let (unit_ns, rest) = parse_unit(rest)?;
    if v > OVERFLOW_BOUND / unit_ns {
        return Err(DurationError::TooLarge);
    }
    let mut v = v * unit_ns;
    if frac > 0 {
        // Same float computation as Go: nanosecond-accurate for fractions of hours.
        let extra = (frac as f64 * (unit_ns as f64 / scale)) as u64;
        v = v.saturating_add(extra);
        if v > OVERFLOW_BOUND {
            return Err(DurationError::TooLarge);
        }
    }
    Ok((v, rest))
}

/// The integer part, `[0-9]*`.
fn parse_integer(s: &str) -> Result<(u64, &str), DurationError> {
    let len = count_digits(s);
    let mut v: u64 = 0;
    for c in s[..len].bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .filter(|v| *v <= OVERFLOW_BOUND)
            .ok_or(DurationError::TooLarge)?;
    }
    Ok((v, &s[len..]))
}

/// The fraction, `(\.[0-9]*)?`, accumulated as Go's `leadingFraction` does: (digits as an
/// integer, 10^digits kept, whether there were digits, the text after it).
fn parse_fraction(s: &str) -> (u64, f64, bool, &str) {
    let Some(rest) = s.strip_prefix('.') else {
        return (0, 1.0, false, s);
    };
    let len = count_digits(rest);
    let (mut frac, mut scale, mut overflow) = (0u64, 1.0f64, false);
    for c in rest[..len].bytes() {
        if overflow || frac > MAX_GO_NANOS / 10 {
            overflow = true;
            continue;
        }
        let y = frac * 10 + u64::from(c - b'0');
        if y > OVERFLOW_BOUND {
            overflow = true;
            continue;
        }
        frac = y;
        scale *= 10.0;
    }
    (frac, scale, len > 0, &rest[len..])
}

/// The unit (everything up to the next `.` or digit) in nanoseconds, and the text after it.
fn parse_unit(s: &str) -> Result<(u64, &str), DurationError> {
    let len = s
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(s.len());
    if len == 0 {
        return Err(DurationError::MissingUnit);
    }
    let unit_ns = match &s[..len] {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => return Err(DurationError::UnknownUnit(other.to_owned())),
    };
    Ok((unit_ns, &s[len..]))
}

fn count_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Formats a duration as Go's `Duration.String()` does: `0s`, `1.5µs`, `500ms`, `1m30s`,
/// `2h45m0s`, `1.000000001s`. Durations up to `i64::MAX` nanoseconds round-trip through
/// [`parse_go_duration`]; longer ones are formatted the same way but do not parse back.
pub fn format_go_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    if total < 1_000_000_000 {
        let (prec, unit) = if total < 1_000 {
            (0, "ns")
        } else if total < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (int, frac) = split_fraction(total, prec);
        return format!("{int}{frac}{unit}");
    }
    let (secs, frac) = split_fraction(total, 9);
    let s = secs % 60;
    let mins = secs / 60;
    if mins == 0 {
        return format!("{s}{frac}s");
    }
    let m = mins % 60;
    let hours = mins / 60;
    if hours == 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{hours}h{m}m{s}{frac}s")
    }
}

/// Splits `v` into its integer part and `.digits` (the last `prec` decimal digits, trailing
/// zeros removed; empty when they are all zero).
fn split_fraction(v: u128, prec: u32) -> (u128, String) {
    if prec == 0 {
        return (v, String::new());
    }
    let div = 10u128.pow(prec);
    let frac = v % div;
    if frac == 0 {
        return (v / div, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (v / div, format!(".{}", digits.trim_end_matches('0')))
}

/// Parses a boolean as Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ----- durations -----

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("0s", 0),
            ("60s", 60_000_000_000),
            ("1m30s", 90_000_000_000),
            ("500ms", 500_000_000),
            ("2h45m", 9_900_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("1h0m0s", 3_600_000_000_000),
            ("+5s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("1ns", 1),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("1.5µs", 1_500),
            ("0.000000001s", 1),
            ("1.000000001s", 1_000_000_001),
            ("1h1m1s1ms1us1ns", 3_661_001_001_001),
            ("1s1s", 2_000_000_000),
            ("0.5m", 30_000_000_000),
            ("0ns", 0),
        ];
        for (s, nanos) in cases {
            assert_eq!(
                parse_go_duration(s),
                Ok(Duration::from_nanos(*nanos)),
                "{s}"
            );
        }
        // Go's maximum, in two spellings.
        assert_eq!(
            parse_go_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(MAX_GO_NANOS))
        );
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s"),
            Ok(Duration::from_nanos(MAX_GO_NANOS))
        );
        // Fraction digits beyond what fits are ignored, as in Go.
        assert_eq!(
            parse_go_duration("1.00000000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn rejects_bad_go_durations() {
        for s in [
            "",
            "+",
            "-",
            "-1s",
            "-0",
            "1",
            "10",
            "s",
            ".s",
            "+.s",
            "1d",
            "1S",
            "1 s",
            " 1s",
            "1s ",
            "1.2.3s",
            "1s2",
            "abc",
            "1e3s",
            "0x10s",
            "9223372036854775808ns",
            "2562047h47m16.854775808s",
            "2562048h",
            "99999999999999999999s",
            "18446744073709551616ns",
            "1sec",
            "∞s",
        ] {
            let err = parse_go_duration(s).expect_err(s);
            assert!(
                err.contains("expected a duration in Go syntax"),
                "{s}: {err}"
            );
            assert!(err.contains("units: ns, us"), "{s}: {err}");
        }
        assert!(parse_go_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_go_duration("").unwrap_err().contains("empty"));
        assert!(parse_go_duration("5").unwrap_err().contains("missing unit"));
        assert!(
            parse_go_duration("5d")
                .unwrap_err()
                .contains(r#"unknown unit "d""#)
        );
        assert!(
            parse_go_duration("2562048h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (500_000_000, "500ms"),
            (1_234_567, "1.234567ms"),
            (1_000_000_000, "1s"),
            (1_000_000_001, "1.000000001s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (9_900_000_000_000, "2h45m0s"),
            (86_400_000_000_000, "24h0m0s"),
            (MAX_GO_NANOS, "2562047h47m16.854775807s"),
        ];
        for (nanos, s) in cases {
            assert_eq!(format_go_duration(Duration::from_nanos(*nanos)), *s);
        }
        // Beyond Go's range it still formats (but does not parse back).
        assert_eq!(
            format_go_duration(Duration::from_secs(u64::MAX)),
            "5124095576030431h0m15s"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0..=MAX_GO_NANOS) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }

        #[test]
        fn small_durations_round_trip(nanos in 0u64..10_000_000_000_000) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn parse_never_panics_on_duration_like_text(s in "[-+]?[0-9.]{0,22}(ns|us|µs|ms|s|m|h|d|)([0-9.]{0,5}(ns|ms|s|m|h)?)?") {
            let _ = parse_go_duration(&s);
        }
    }
}
