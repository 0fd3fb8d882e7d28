//! Dead letters: messages that will never be invoked (again) are copied, with their original
//! bytes and headers, to the stream `OF_<queue>_DLQ` on `<queue>_DLQ.<name>.<namespace>`, with
//! `Qw-*` headers saying why (README: "How it works"). Only once the copy is stored is the original terminated.

use std::time::Duration;

use super::Context;
use super::plan::{DeadLetterPlan, Settle};
use crate::broker::{Delivery, MSG_ID_HEADER, Outgoing};

/// Retry delay when the dead-letter stream cannot take the message right now.
const DLQ_UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// The dead-letter subject: `<queue>_DLQ.<name>.<namespace>` when the function is known, else
/// the tokens of the original subject after `<queue>.`, else `<queue>_DLQ._`.
pub fn subject(queue: &str, original_subject: &str, function: Option<&str>) -> String {
    let tail = match function {
        Some(f) => f.to_string(),
        None => original_subject
            .strip_prefix(queue)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|rest| !rest.is_empty())
            .unwrap_or("_")
            .to_string(),
    };
    format!("{}.{tail}", crate::broker::dead_letter_prefix(queue))
}

/// Headers of the dead-letter copy: the original ones, then the `Qw-*` ones.
pub fn headers(
    original: &[(String, String)],
    dl: &DeadLetterPlan,
    attempts: u64,
    failed_at: std::time::SystemTime,
    original_subject: &str,
) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = original
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(MSG_ID_HEADER) && !k.starts_with("Qw-"))
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
    match store(ctx, out).await {
        Ok(()) => {
            tracing::warn!(
                callId = call_id,
                function = function.unwrap_or(""),
                reason = dl.reason.as_str(),
                seq = delivery.stream_sequence,
                error = %dl.error,
                "Dead-lettered"
            );
            ctx.metrics.dead_letter(dl.reason.as_str());
            Settle::Term
        }
        Err(e) => {
            tracing::error!(
                seq = delivery.stream_sequence,
                reason = dl.reason.as_str(),
                error = %e,
                "Cannot store dead letter; will retry"
            );
            Settle::Nak(Some(DLQ_UNAVAILABLE_RETRY))
        }
    }
}

/// First wait between attempts to store a dead letter (doubling, at most 2 s).
const STORE_RETRY: Duration = Duration::from_millis(250);

/// Publish the dead letter, trying again for up to `ack_wait`.
async fn store(ctx: &Context, out: Outgoing) -> Result<(), crate::broker::BrokerError> {
    let give_up = tokio::time::Instant::now() + ctx.config.ack_wait;
    let mut wait = STORE_RETRY;
    loop {
        let err = match store_once(ctx, out.clone()).await {
            Ok(()) => return Ok(()),
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

async fn store_once(ctx: &Context, out: Outgoing) -> Result<(), crate::broker::BrokerError> {
    let mut stored = ctx.broker.publish(out.clone()).await;
    if let Err(crate::broker::BrokerError::NoStream { .. }) = &stored {
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
    }
}
