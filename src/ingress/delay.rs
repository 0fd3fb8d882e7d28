//! Delayed calls: `X-Delay: <duration>` (Go syntax, e.g. `90s`) or `X-Not-Before: <unix
//! seconds>` at the ingress (and `queue-worker publish --delay`). A call due later than now is
//! stored in the queue's delayed stream and moved to the work queue when due
//! (`src/worker/scheduler.rs`); one due now or earlier is queued as usual. Where the server
//! schedules messages (NATS 2.12+), a call due more than [`SCHEDULE_AFTER_MS`] later is stored
//! as a schedule ([`scheduled`]) that the server turns into that message when due.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use crate::broker::{Outgoing, SCHEDULE_HEADER, SCHEDULE_TARGET_HEADER, schedule_subject};
use crate::config::{Config, format_go_duration, parse_go_duration};

/// Calls due sooner than this (milliseconds) are not scheduled by the server: the delayed
/// stream's own wait is as good, and a schedule's time has whole-second precision at best.
pub const SCHEDULE_AFTER_MS: u64 = 2_000;

pub const DELAY_HEADER: &str = "X-Delay";
pub const NOT_BEFORE_HEADER: &str = "X-Not-Before";

/// When the call may run (unix milliseconds), when that is after `now_ms`; `Err` is a one-line
/// reason for a `400`: a bad value, both headers, or later than `max_delay` from now.
pub fn not_before(
    cfg: &Config,
    now_ms: u64,
    header: &BTreeMap<String, Vec<String>>,
) -> Result<Option<u64>, String> {
    let first = |name: &str| header.get(name).and_then(|v| v.first()).map(|v| v.trim());
    let at = match (first(DELAY_HEADER), first(NOT_BEFORE_HEADER)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(format!(
                "give either {DELAY_HEADER} or {NOT_BEFORE_HEADER}, not both"
            ));
        }
        (Some(delay), None) => {
            let d = parse_go_duration(delay).map_err(|e| format!("{DELAY_HEADER}: {e}"))?;
            now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        (None, Some(secs)) => {
            let secs: u64 = secs.parse().map_err(|_| {
                format!("{NOT_BEFORE_HEADER}: expected unix seconds, e.g. 1796050000")
            })?;
            secs.saturating_mul(1000)
        }
    };
    if at <= now_ms {
        return Ok(None);
    }
    let max = u64::try_from(cfg.max_delay.as_millis()).unwrap_or(u64::MAX);
    if at - now_ms > max {
        return Err(format!(
            "the call would wait longer than max_delay ({}); delay it less",
            format_go_duration(cfg.max_delay)
        ));
    }
    Ok(Some(at))
}

/// The subject and headers of a call to `subject` of `queue` due at `at` (unix ms), with
/// message id `msg_id`: the queue's delayed stream, the due time, the work subject and the id
/// to publish it with when due.
pub fn route(
    queue: &str,
    subject: String,
    at: u64,
    msg_id: &str,
) -> (String, Vec<(String, String)>) {
    let headers = vec![
        (crate::broker::NOT_BEFORE_HEADER.to_string(), at.to_string()),
        (crate::broker::TARGET_HEADER.to_string(), subject),
        (
            crate::broker::DELAYED_MSG_ID_HEADER.to_string(),
            msg_id.to_string(),
        ),
    ];
    (crate::broker::delayed_subject(queue), headers)
}

/// The delayed call `outgoing` (for the delayed stream's subject) of `queue`, due at `at`
/// (unix ms), as a schedule: published on its own subject with [`SCHEDULE_HEADER`]
/// `@at <time>`, which the server publishes to the delayed stream's subject when due, with
/// the call's headers. `name` is unique to this submission (a schedule's subject is its
/// identity); `Nats-Msg-Id` still drops a repeated submission.
pub fn scheduled(outgoing: Outgoing, queue: &str, at: u64, name: &str) -> Outgoing {
    let time = UNIX_EPOCH + Duration::from_millis(at);
    let mut headers = outgoing.headers;
    headers.push((
        SCHEDULE_HEADER.to_string(),
        format!("@at {}", humantime::format_rfc3339_millis(time)),
    ));
    headers.push((SCHEDULE_TARGET_HEADER.to_string(), outgoing.subject));
    Outgoing {
        subject: schedule_subject(queue, name),
        headers,
        ..outgoing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_fires_on_the_delayed_subject_with_the_call_s_headers() {
        let call = Outgoing {
            subject: "q-delayed".into(),
            msg_id: Some("id-1".into()),
            headers: vec![("Qw-Target".into(), "q.f.ns".into())],
            payload: bytes::Bytes::from_static(b"{}"),
        };
        let s = scheduled(call, "q", 1_796_050_000_250, "abc");
        assert_eq!(s.subject, "q-delayed.at.abc");
        assert_eq!(s.msg_id.as_deref(), Some("id-1"));
        let get = |k: &str| {
            s.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("Nats-Schedule"), Some("@at 2026-11-30T14:46:40.250Z"));
        assert_eq!(get("Nats-Schedule-Target"), Some("q-delayed"));
        assert_eq!(get("Qw-Target"), Some("q.f.ns"));
    }

    fn header(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    #[test]
    fn delays_and_due_times_within_max_delay() {
        let cfg = Config {
            max_delay: std::time::Duration::from_secs(60),
            ..Config::default()
        };
        let now = 1_000_000;
        let nb = |pairs: &[(&str, &str)]| not_before(&cfg, now, &header(pairs));
        assert_eq!(nb(&[]), Ok(None));
        assert_eq!(nb(&[("X-Delay", "90ms")]), Ok(Some(now + 90)));
        assert_eq!(nb(&[("X-Delay", "0s")]), Ok(None));
        assert_eq!(nb(&[("X-Not-Before", "1001")]), Ok(Some(1_001_000)));
        assert_eq!(nb(&[("X-Not-Before", "999")]), Ok(None), "in the past: now");
        assert!(
            nb(&[("X-Delay", "61s")])
                .unwrap_err()
                .contains("max_delay (1m0s)")
        );
        assert!(
            nb(&[("X-Not-Before", "2000")])
                .unwrap_err()
                .contains("max_delay")
        );
        assert!(
            nb(&[("X-Delay", "soon")])
                .unwrap_err()
                .starts_with("X-Delay")
        );
        assert!(nb(&[("X-Not-Before", "-5")]).is_err());
        assert!(nb(&[("X-Delay", "1s"), ("X-Not-Before", "1001")]).is_err());
    }
}
