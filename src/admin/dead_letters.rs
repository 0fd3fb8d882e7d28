//! Dead letters as an operator sees them: listed and shown from `OF_<queue>_DLQ`, redriven
//! (stored again in the queue, to run with a fresh attempt count under the same call id, then
//! removed from the dead letters), purged.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{AdminError, Operator, StreamSettings};
use crate::broker::{BrokerError, Outgoing, StoredMessage, dead_letter_prefix};

/// Which dead letters an operation takes. Empty: all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Filter {
    /// `name` or `name.namespace` (the default namespace when none is given).
    pub function: Option<String>,
    /// `Qw-Reason`: `exhausted`, `expired`, `poison`, `failed`, ….
    pub reason: Option<String>,
    /// Only those dead-lettered within this long before now.
    #[serde(default, with = "humantime_serde_opt")]
    pub since: Option<Duration>,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub queue: String,
    /// Its sequence in `OF_<queue>_DLQ`: what `show`, `redrive` and `purge` take.
    pub sequence: u64,
    /// `name.namespace`, from its subject (`_` when the message named none that fits one).
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was stored as a dead letter (RFC 3339).
    pub dead_lettered_at: String,
    /// The subject the call was queued on.
    pub subject: String,
    /// Size of the stored message.
    pub bytes: usize,
    /// All its headers (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<(String, String)>>,
    /// The stored message as text (`show --body` only: it may hold personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl DeadLetter {
    /// The summary of `m`, a message of `queue`'s dead letters.
    pub fn of(queue: &str, m: &StoredMessage) -> DeadLetter {
        let prefix = format!("{}.", dead_letter_prefix(queue));
        DeadLetter {
            queue: queue.to_string(),
            sequence: m.sequence,
            function: m.subject.strip_prefix(&prefix).unwrap_or("_").to_string(),
            call_id: crate::wire::decode(&m.payload)
                .ok()
                .and_then(|r| r.call_id().map(str::to_string)),
            reason: m.header("Qw-Reason").unwrap_or("unknown").to_string(),
            status: m.header("Qw-Status").and_then(|s| s.parse().ok()),
            attempts: m.header("Qw-Attempts").and_then(|s| s.parse().ok()),
            error: m.header("Qw-Error").map(str::to_string),
            dead_lettered_at: humantime::format_rfc3339_millis(m.published).to_string(),
            subject: m.header("Qw-Subject").unwrap_or(queue).to_string(),
            bytes: m.payload.len(),
            headers: None,
            body: None,
        }
    }
}

/// The most dead letters one listing returns.
pub const MAX_LIST: usize = 10_000;

/// A queue's dead letters and the filter's subject and checks.
struct Scan<'a> {
    op: &'a dyn Operator,
    stream: String,
    subject: String,
    reason: Option<&'a str>,
    not_before: Option<SystemTime>,
}

impl<'a> Scan<'a> {
    fn new(
        op: &'a dyn Operator,
        queue: &'a str,
        filter: &'a Filter,
        default_namespace: &str,
        now: SystemTime,
    ) -> Result<Scan<'a>, AdminError> {
        super::check_queue(queue)?;
        let prefix = dead_letter_prefix(queue);
        let subject = match &filter.function {
            Some(f) => super::function_subject(&prefix, f, default_namespace)?,
            None => format!("{prefix}.>"),
        };
        Ok(Scan {
            op,
            stream: dead_letter_stream(queue),
            subject,
            reason: filter.reason.as_deref(),
            not_before: filter.since.and_then(|d| now.checked_sub(d)),
        })
    }

    /// The next dead letter the filter takes, at or after sequence `from`.
    async fn next(&self, mut from: u64) -> Result<Option<StoredMessage>, AdminError> {
        loop {
            let Some(m) = self
                .op
                .next_message(&self.stream, from, Some(&self.subject))
                .await?
            else {
                return Ok(None);
            };
            if self.takes(&m) {
                return Ok(Some(m));
            }
            from = m.sequence + 1;
        }
    }

    fn takes(&self, m: &StoredMessage) -> bool {
        self.reason.is_none_or(|r| {
            m.header("Qw-Reason")
                .is_some_and(|h| h.eq_ignore_ascii_case(r))
        }) && self.not_before.is_none_or(|t| m.published >= t)
    }

    /// Every dead letter the filter takes, up to `limit`.
    async fn all(&self, limit: usize) -> Result<Vec<StoredMessage>, AdminError> {
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let Some(m) = self.next(from).await? else {
                break;
            };
            from = m.sequence + 1;
            out.push(m);
        }
        Ok(out)
    }
}

/// The dead letters of `queue` that `filter` takes, oldest first, at most `limit`.
pub async fn list(
    op: &dyn Operator,
    queue: &str,
    filter: &Filter,
    limit: usize,
    (default_namespace, now): (&str, SystemTime),
) -> Result<Vec<DeadLetter>, AdminError> {
    let scan = Scan::new(op, queue, filter, default_namespace, now)?;
    let found = scan.all(limit.min(MAX_LIST)).await?;
    Ok(found.iter().map(|m| DeadLetter::of(queue, m)).collect())
}

/// Dead letter `sequence` of `queue` with its headers, and its body when `body`; `None` when
/// there is none.
pub async fn show(
    op: &dyn Operator,
    queue: &str,
    sequence: u64,
    body: bool,
) -> Result<Option<DeadLetter>, AdminError> {
    super::check_queue(queue)?;
    let stream = dead_letter_stream(queue);
    let found = op.next_message(&stream, sequence, None).await?;
    Ok(found.filter(|m| m.sequence == sequence).map(|m| {
        let mut d = DeadLetter::of(queue, &m);
        d.headers = Some(m.headers.clone());
        d.body = body.then(|| String::from_utf8_lossy(&m.payload).into_owned());
        d
    }))
}

/// What to redrive or purge: sequences, or what a filter takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Sequences(Vec<u64>),
    Matching(Filter),
}

/// What a redrive did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Redriven {
    pub queue: String,
    pub dry_run: bool,
    /// Sequences stored again in the queue and removed from the dead letters.
    pub redriven: Vec<u64>,
    /// Their call ids, where the message names one.
    pub call_ids: Vec<String>,
    /// Sequences asked for that are not dead letters of this queue.
    pub not_found: Vec<u64>,
}

/// The message a dead letter is redriven as: its original subject, payload and headers, minus
/// the `Qw-*` headers saying why it failed; a message id that makes a second redrive of the
/// same dead letter (a command run twice) a duplicate.
pub fn redrive_message(queue: &str, m: &StoredMessage) -> Outgoing {
    let headers = m
        .headers
        .iter()
        .filter(|(k, _)| crate::claim_check::moves_with_message(k))
        .cloned()
        .collect();
    let stored = m
        .published
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Outgoing {
        subject: m.header("Qw-Subject").unwrap_or(queue).to_string(),
        msg_id: Some(format!("redrive-{queue}-{}-{stored}", m.sequence)),
        headers,
        payload: m.payload.clone(),
    }
}

/// Everything a redrive or purge needs besides the broker.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub queue: &'a str,
    pub default_namespace: &'a str,
    pub settings: StreamSettings,
    /// Call status is kept (`status_ttl` > 0): a redriven call's goes back to `queued`.
    pub status: bool,
    pub now: SystemTime,
}

/// Redrive the dead letters `selection` names: its call status, if kept, goes back to
/// `queued`; then each is stored again in its queue (the queue's stream made again if it is
/// gone), then removed from the dead letters. `progress` is told after each: how many are done
/// of how many.
pub async fn redrive(
    op: &dyn Operator,
    ctx: &Context<'_>,
    selection: &Selection,
    dry_run: bool,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Redriven, AdminError> {
    let (found, not_found) = select(op, ctx, selection).await?;
    let mut done = Redriven {
        queue: ctx.queue.to_string(),
        dry_run,
        not_found,
        ..Redriven::default()
    };
    for m in &found {
        let call_id = DeadLetter::of(ctx.queue, m).call_id;
        if !dry_run {
            // The status first: once stored again, the call may run and end before a later
            // write, whose `queued` would then hide its end.
            if let (true, Some(id)) = (ctx.status, &call_id) {
                let at = crate::status::unix_ms(ctx.now);
                if let Err(e) = crate::status::requeue_in(op, ctx.queue, id, at).await {
                    tracing::warn!(callId = %id, error = %e, "Redriving, but its status is not updated");
                }
            }
            store_again(op, ctx, m).await?;
            op.delete_message(&dead_letter_stream(ctx.queue), m.sequence)
                .await?;
        }
        done.redriven.push(m.sequence);
        done.call_ids.extend(call_id);
        progress(done.redriven.len(), found.len());
    }
    Ok(done)
}

async fn store_again(
    op: &dyn Operator,
    ctx: &Context<'_>,
    m: &StoredMessage,
) -> Result<(), AdminError> {
    let out = redrive_message(ctx.queue, m);
    match op.publish(out.clone()).await {
        Ok(_) => Ok(()),
        Err(BrokerError::NoStream { .. }) => {
            op.ensure_stream(&ctx.settings.work_queue(ctx.queue))
                .await?;
            op.publish(out).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub queue: String,
    pub purged: u64,
    pub not_found: Vec<u64>,
}

/// Remove the dead letters `selection` names.
pub async fn purge(
    op: &dyn Operator,
    ctx: &Context<'_>,
    selection: &Selection,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Purged, AdminError> {
    let stream = dead_letter_stream(ctx.queue);
    let mut done = Purged {
        queue: ctx.queue.to_string(),
        ..Purged::default()
    };
    // Only a function (or nothing) to match: one purge by subject.
    if let Selection::Matching(f) = selection
        && f.reason.is_none()
        && f.since.is_none()
    {
        let scan = Scan::new(op, ctx.queue, f, ctx.default_namespace, ctx.now)?;
        done.purged = op.purge(&stream, Some(&scan.subject)).await?;
        return Ok(done);
    }
    let (found, not_found) = select(op, ctx, selection).await?;
    done.not_found = not_found;
    for m in &found {
        if op.delete_message(&stream, m.sequence).await? {
            done.purged += 1;
        }
        progress(done.purged as usize, found.len());
    }
    Ok(done)
}

/// The dead letters `selection` names, and the sequences asked for that are none.
async fn select(
    op: &dyn Operator,
    ctx: &Context<'_>,
    selection: &Selection,
) -> Result<(Vec<StoredMessage>, Vec<u64>), AdminError> {
    match selection {
        Selection::Matching(filter) => {
            let scan = Scan::new(op, ctx.queue, filter, ctx.default_namespace, ctx.now)?;
            Ok((scan.all(usize::MAX).await?, Vec::new()))
        }
        Selection::Sequences(seqs) => {
            super::check_queue(ctx.queue)?;
            let stream = dead_letter_stream(ctx.queue);
            let (mut found, mut missing) = (Vec::new(), Vec::new());
            for &seq in seqs {
                match op.next_message(&stream, seq, None).await? {
                    Some(m) if m.sequence == seq => found.push(m),
                    _ => missing.push(seq),
                }
            }
            Ok((found, missing))
        }
    }
}

fn dead_letter_stream(queue: &str) -> String {
    crate::config::Config::dlq_stream_name_for(queue)
}

/// `since` as a Go/humantime duration (`"90m"`, `"2h"`) in JSON.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
