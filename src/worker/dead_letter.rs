//! Dead letters: messages that will never be invoked (again) are copied, with their original
//! bytes and headers, to the stream `OF_<queue>_DLQ` on `<queue>_DLQ.<name>.<namespace>`, with
//! `Qw-*` headers saying why (README: "How it works"). Only once the copy is stored is the original terminated.

use std::time::Duration;

use super::Context;
use super::plan::{DeadLetterPlan, Settle};
use crate::broker::{BrokerError, Delivery, Outgoing};

/// Retry delay when the dead-letter stream cannot take the message right now.
const DLQ_UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// The dead-letter subject: `<queue>_DLQ.<name>.<namespace>` when the function is known and
/// can stand in a subject, else the tokens of the original subject after `<queue>.`, else
/// `<queue>_DLQ._`. A message's function name is never trusted to make a subject: NATS refuses
/// a publish to a subject with an empty token or a space, and closes the connection of a
/// client whose subject is too long.
pub fn subject(queue: &str, original_subject: &str, function: Option<&str>) -> String {
    let tail = match function.filter(|f| fits_a_subject(f)) {
        Some(f) => f,
        None => original_subject
            .strip_prefix(queue)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|rest| !rest.is_empty())
            .unwrap_or("_"),
    };
    format!("{}.{tail}", crate::broker::dead_letter_prefix(queue))
}

/// A valid function name (letters, digits, `-`, `_`, `.`, at most 253 bytes) whose tokens
/// between dots are not empty.
fn fits_a_subject(function: &str) -> bool {
    crate::wire::validate_function_name(function).is_ok() && !function.split('.').any(str::is_empty)
}

/// The longest `Qw-Error` kept (an error can quote what the message said, a name of any size).
const MAX_ERROR_CHARS: usize = 512;

/// Headers of the dead-letter copy: the original ones (of the `Qw-*` ones only the claim
/// check's, which name the body), then the `Qw-*` ones saying why.
pub fn headers(
    original: &[(String, String)],
    dl: &DeadLetterPlan,
    attempts: u64,
    failed_at: std::time::SystemTime,
    original_subject: &str,
) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = original
        .iter()
        .filter(|(k, _)| crate::claim_check::moves_with_message(k))
        .cloned()
        .collect();
    h.push(("Qw-Reason".into(), dl.reason.as_str().into()));
    if let Some(s) = dl.status {
        h.push(("Qw-Status".into(), s.to_string()));
    }
    h.push(("Qw-Attempts".into(), attempts.to_string()));
    // Header values are one line.
    let error: String = dl
        .error
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    h.push(("Qw-Error".into(), error));
    h.push((
        "Qw-Failed-At".into(),
        humantime::format_rfc3339_millis(failed_at).to_string(),
    ));
    h.push(("Qw-Subject".into(), original_subject.to_string()));
    h
}

/// The dead letter's `Nats-Msg-Id`: parking the same message again (after a crash, or from a
/// redelivery) is dropped as a duplicate. The stream sequence alone does not name a message: a
/// stream deleted and recreated (a queue reset, a memory-storage restart) numbers from 1 again,
/// and a new message's dead letter would be dropped as a duplicate of an old one while the
/// message itself is terminated: lost (found by the simulation: broker-restart seeds 4905 and
/// 9521). The time the message was stored tells them apart.
pub fn msg_id(queue: &str, delivery: &Delivery) -> String {
    let stored = delivery
        .published
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("dlq-{queue}-{}-{stored}", delivery.stream_sequence)
}

/// Copy the delivery to the dead-letter stream and say how to settle it: `Term` once stored;
/// `Nak` with a delay when the copy could not be stored (so nothing is lost). A store that
/// fails is tried again for up to `ack_wait` while the message is held (its lease renewed),
/// so a short broker outage does not send a finished call round for another run.
///
/// `ids`: the call id and function (`name.namespace`), when the message said them.
pub async fn park(
    ctx: &Context,
    delivery: &Delivery,
    ids: Option<(&str, &str)>,
    dl: &DeadLetterPlan,
) -> Settle {
    let queue = &ctx.config.queue_name;
    let (call_id, function) = match ids {
        Some((c, f)) => (c, Some(f)),
        None => ("", None),
    };
    let out = Outgoing {
        subject: subject(queue, &delivery.subject, function),
        msg_id: Some(msg_id(queue, delivery)),
        headers: headers(
            &delivery.headers,
            dl,
            delivery.delivered,
            ctx.clock.now(),
            &delivery.subject,
        ),
        payload: delivery.payload.clone(),
    };
    let stored = store(ctx, out).await;
    settle_after(ctx, delivery, (call_id, function.unwrap_or("")), dl, stored)
}

/// The settlement once the store is done: `Term` when the dead letter is kept (whole or in
/// part) or can never be (too large even without its payload: counted and logged, the message
/// is not worth an endless loop), `Nak` when the broker could not take it now.
fn settle_after(
    ctx: &Context,
    delivery: &Delivery,
    (call_id, function): (&str, &str),
    dl: &DeadLetterPlan,
    stored: Result<Kept, BrokerError>,
) -> Settle {
    let (seq, reason) = (delivery.stream_sequence, dl.reason.as_str());
    match stored {
        Ok(kept) => {
            tracing::warn!(callId = %call_id, function = %function, reason = %reason, seq, kept = %kept.as_str(), error = %dl.error, "Dead-lettered");
            ctx.metrics.dead_letter(reason);
            Settle::Term
        }
        Err(BrokerError::TooLarge(e)) => {
            tracing::error!(callId = call_id, function, reason, seq, error = %e, "Dead letter too large to keep even without its payload; message dropped");
            ctx.metrics.dead_letter_dropped(reason);
            Settle::Term
        }
        Err(e) => {
            tracing::error!(seq, reason, error = %e, "Cannot store dead letter; will retry");
            Settle::Nak(Some(DLQ_UNAVAILABLE_RETRY))
        }
    }
}

/// How much of a message its dead letter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The original payload and headers, plus the `Qw-*` headers.
    Whole,
    /// Too large whole for the broker (the `Qw-*` headers come on top of a message that was
    /// near `max_payload`): the first [`TRUNCATED_PAYLOAD`] bytes of the payload, the headers,
    /// and `Qw-Truncated` giving the payload's original size.
    Truncated,
    /// Still too large (the original headers were): no payload, only the `Qw-*` headers.
    HeadersOnly,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Whole => "whole",
            Kept::Truncated => "truncated",
            Kept::HeadersOnly => "headers-only",
        }
    }
}

/// What a truncated dead letter keeps of the payload.
pub const TRUNCATED_PAYLOAD: usize = 64 * 1024;

/// The dead letter `out` reduced to what `kept` keeps.
pub fn reduce(out: &Outgoing, kept: Kept) -> Outgoing {
    let mut out = out.clone();
    if kept == Kept::Whole {
        return out;
    }
    let original = out.payload.len();
    if kept == Kept::HeadersOnly {
        out.headers.retain(|(k, _)| k.starts_with("Qw-"));
    }
    let keep = if kept == Kept::Truncated {
        TRUNCATED_PAYLOAD
    } else {
        0
    };
    out.payload.truncate(keep);
    out.headers
        .push(("Qw-Truncated".into(), original.to_string()));
    out
}

/// First wait between attempts to store a dead letter (doubling, at most 2 s).
const STORE_RETRY: Duration = Duration::from_millis(250);

/// Store the dead letter, keeping less of it each time the broker finds it too large.
async fn store(ctx: &Context, out: Outgoing) -> Result<Kept, BrokerError> {
    let mut too_large = None;
    for kept in [Kept::Whole, Kept::Truncated, Kept::HeadersOnly] {
        match store_retrying(ctx, reduce(&out, kept)).await {
            Ok(()) => return Ok(kept),
            Err(BrokerError::TooLarge(e)) => {
                tracing::warn!(kept = kept.as_str(), error = %e, "Dead letter too large for the broker; keeping less of it");
                too_large = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::TooLarge(too_large.unwrap_or_default()))
}

/// Publish the dead letter, trying again for up to `ack_wait` (not when it is too large:
/// that does not pass).
async fn store_retrying(ctx: &Context, out: Outgoing) -> Result<(), BrokerError> {
    let give_up = tokio::time::Instant::now() + ctx.config.ack_wait;
    let mut wait = STORE_RETRY;
    loop {
        let err = match store_once(ctx, out.clone()).await {
            Ok(()) => return Ok(()),
            Err(e @ BrokerError::TooLarge(_)) => return Err(e),
            Err(e) => e,
        };
        if tokio::time::Instant::now() + wait > give_up {
            return Err(err);
        }
        tracing::warn!(error = %err, retryIn = ?wait, "Cannot store dead letter yet");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

async fn store_once(ctx: &Context, out: Outgoing) -> Result<(), BrokerError> {
    let mut stored = ctx.broker.publish(out.clone()).await;
    if let Err(BrokerError::NoStream { .. }) = &stored {
        // The dead-letter stream was deleted, or lost with a memory-storage broker restart:
        // recreate it (empty) and try once more, rather than redelivering forever.
        tracing::warn!(stream = %ctx.dead_letters.name, "Dead-letter stream is missing; recreating it");
        if ctx.broker.ensure_stream(&ctx.dead_letters).await.is_ok() {
            stored = ctx.broker.publish(out).await;
        }
    }
    stored.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn subjects() {
        assert_eq!(subject("q", "q.fn.ns", Some("fn.ns")), "q_DLQ.fn.ns");
        assert_eq!(subject("q", "q.fn.ns", None), "q_DLQ.fn.ns");
        assert_eq!(subject("q", "q", None), "q_DLQ._");
        assert_eq!(subject("q", "other", None), "q_DLQ._");
    }

    #[test]
    fn a_function_name_that_cannot_stand_in_a_subject_is_not_used() {
        let long = "f".repeat(5_000);
        for bad in [
            "a..b", "fn.", ".x", "../x", "a b", "a\tb", "a\r\nb", "a*", "a>", &long,
        ] {
            assert_eq!(subject("q", "q.x.ns", Some(bad)), "q_DLQ.x.ns", "{bad:?}");
        }
        assert_eq!(subject("q", "q", Some("a..b")), "q_DLQ._");
    }

    fn outgoing(payload: usize) -> Outgoing {
        Outgoing {
            subject: "q_DLQ.f.ns".into(),
            msg_id: Some("dlq-q-1-2".into()),
            headers: vec![
                ("X-Call-Id".into(), "c".into()),
                ("Qw-Reason".into(), "exhausted".into()),
            ],
            payload: bytes::Bytes::from(vec![b'x'; payload]),
        }
    }

    #[test]
    fn a_dead_letter_too_large_keeps_less_and_says_so() {
        let out = outgoing(TRUNCATED_PAYLOAD * 3);
        let whole = reduce(&out, Kept::Whole);
        assert_eq!(
            (&whole.payload, &whole.headers),
            (&out.payload, &out.headers)
        );
        let get = |o: &Outgoing, k: &str| {
            o.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let cut = reduce(&out, Kept::Truncated);
        assert_eq!(cut.payload, out.payload.slice(..TRUNCATED_PAYLOAD));
        assert_eq!(
            get(&cut, "Qw-Truncated"),
            Some((TRUNCATED_PAYLOAD * 3).to_string())
        );
        assert_eq!(get(&cut, "X-Call-Id"), Some("c".into()));
        assert_eq!((&cut.subject, &cut.msg_id), (&out.subject, &out.msg_id));
        let bare = reduce(&out, Kept::HeadersOnly);
        assert!(bare.payload.is_empty());
        assert_eq!(get(&bare, "X-Call-Id"), None);
        assert_eq!(get(&bare, "Qw-Reason"), Some("exhausted".into()));
        assert_eq!(
            get(&bare, "Qw-Truncated"),
            Some((TRUNCATED_PAYLOAD * 3).to_string())
        );
        // A payload already small enough is kept as it is, and still marked.
        let small = reduce(&outgoing(10), Kept::Truncated);
        assert_eq!(small.payload.len(), 10);
    }

    #[test]
    fn the_error_header_is_bounded() {
        let dl = DeadLetterPlan {
            reason: crate::worker::plan::Reason::Poison,
            status: None,
            error: "e".repeat(10_000),
        };
        let h = headers(&[], &dl, 1, UNIX_EPOCH, "q.f");
        let error = h
            .iter()
            .find(|(n, _)| n == "Qw-Error")
            .map(|(_, v)| v.len());
        assert_eq!(error, Some(MAX_ERROR_CHARS));
    }

    #[test]
    fn headers_keep_originals_and_add_reason() {
        let dl = DeadLetterPlan {
            reason: crate::worker::plan::Reason::Poison,
            status: None,
            error: "not JSON:\nline".into(),
        };
        let h = headers(
            &[
                ("Nats-Msg-Id".into(), "abc".into()),
                ("X-Trace".into(), "t".into()),
                ("Qw-Reason".into(), "earlier".into()),
                ("Qw-Payload".into(), "obj".into()),
            ],
            &dl,
            3,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            "q.fn.ns",
        );
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("X-Trace"), Some("t"));
        assert_eq!(get("Nats-Msg-Id"), None);
        assert_eq!(get("Qw-Reason"), Some("poison"));
        assert_eq!(get("Qw-Attempts"), Some("3"));
        assert_eq!(get("Qw-Error"), Some("not JSON: line"));
        assert_eq!(get("Qw-Failed-At"), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(get("Qw-Status"), None);
        assert_eq!(get("Qw-Subject"), Some("q.fn.ns"));
        assert_eq!(get("Qw-Payload"), Some("obj"), "the body object is kept");
        let reasons = h.iter().filter(|(n, _)| n == "Qw-Reason").count();
        assert_eq!(reasons, 1, "an earlier reason is not carried");
    }
}
