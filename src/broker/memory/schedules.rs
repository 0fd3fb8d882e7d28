//! Message schedules, as nats-server 2.12 and later keep them in a stream with
//! `allow_msg_schedules`: a message with `Nats-Schedule: @at <RFC 3339 time>` is stored like any
//! other, and when due the broker removes it and stores its body and headers on its
//! `Nats-Schedule-Target`, a subject of the same stream, with `Nats-Scheduler` naming the
//! schedule. Checked against the server by the conformance suite. Not modelled: `@every` and
//! cron schedules, and a schedule replacing an earlier one of the same subject.

use std::time::SystemTime;

use tokio::time::Instant;

use super::limits::stored_size;
use super::state::State;
use super::stream::{Stored, Stream};
use super::subjects::has_wildcard;
use crate::broker::{BrokerError, MSG_ID_HEADER, SCHEDULE_HEADER, SCHEDULE_TARGET_HEADER};

/// The header a fired message names its schedule's subject in.
const SCHEDULER_HEADER: &str = "Nats-Scheduler";

/// What a schedule asks for.
pub(super) struct Schedule {
    pub(super) due: SystemTime,
    pub(super) target: String,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn refused(why: &str) -> BrokerError {
    BrokerError::other("publish", why)
}

/// The schedule a message with `headers` asks `stream` for (`allowed`: the modelled server has
/// schedules); `Ok(None)` for a plain message, `Err` as the server refuses a bad one.
pub(super) fn read(
    stream: &Stream,
    allowed: bool,
    headers: &[(String, String)],
) -> Result<Option<Schedule>, BrokerError> {
    let Some(spec) = header(headers, SCHEDULE_HEADER) else {
        return Ok(None);
    };
    if !(allowed && stream.spec.schedules) {
        return Err(refused("message schedules are disabled on this stream"));
    }
    let due = spec
        .strip_prefix("@at ")
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok())
        .ok_or_else(|| refused("message schedule is invalid (only @at is modelled)"))?;
    let target = header(headers, SCHEDULE_TARGET_HEADER)
        .filter(|t| stream.covers(t) && !has_wildcard(t))
        .ok_or_else(|| refused("message schedules target is invalid"))?;
    Ok(Some(Schedule {
        due,
        target: target.to_string(),
    }))
}

impl State {
    /// Remember that message `seq` of stream `name`, stored at `now` (`published`), is
    /// `schedule`, and wake the consumers of its target: they wait for it from now on.
    pub(super) fn add_schedule(
        &mut self,
        name: &str,
        seq: u64,
        schedule: Schedule,
        (published, now): (SystemTime, Instant),
    ) {
        let wait = schedule.due.duration_since(published).unwrap_or_default();
        if let Some(stream) = self.streams.get_mut(name) {
            for c in stream.consumers.values() {
                if c.selects(&schedule.target) {
                    c.notify.notify_waiters();
                }
            }
            stream.schedules.insert((now + wait, seq), schedule.target);
        }
    }

    /// Fire the schedules of stream `name` that are due at `now`: each schedule message is
    /// replaced by its message on its target (a schedule taken by a consumer meanwhile is
    /// gone, and fires nothing).
    pub(super) fn fire_schedules(&mut self, name: &str, now: Instant) {
        loop {
            let Some(stream) = self.streams.get_mut(name) else {
                return;
            };
            match stream.schedules.first_key_value() {
                Some(((at, _), _)) if *at <= now => {}
                _ => return,
            }
            let Some(((_, seq), target)) = stream.schedules.pop_first() else {
                return;
            };
            let Some(fired) = stream.msgs.get(&seq).map(|m| fired(m, target, now)) else {
                continue;
            };
            for c in stream.consumers.values_mut() {
                c.remove_pending(seq);
            }
            if let Some(size) = stream.remove(seq) {
                self.usage.messages -= 1;
                self.usage.bytes -= size;
            }
            // Covered by the stream (checked when the schedule was stored).
            let _ = self.append(name, fired);
        }
    }
}

/// The message schedule `m` stores on `target` when it fires at `now`.
fn fired(m: &Stored, target: String, now: Instant) -> Stored {
    let mut headers: Vec<(String, String)> = m
        .headers
        .iter()
        .filter(|(k, _)| k != SCHEDULE_HEADER && k != SCHEDULE_TARGET_HEADER && k != MSG_ID_HEADER)
        .cloned()
        .collect();
    headers.push((SCHEDULER_HEADER.to_string(), m.subject.clone()));
    Stored {
        size: stored_size(&target, &headers, &m.payload),
        subject: target,
        headers,
        payload: m.payload.clone(),
        published: m.published + now.duration_since(m.stored_at),
        stored_at: now,
    }
}
