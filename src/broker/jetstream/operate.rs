//! [`Operate`] on JetStream: the stream and consumer APIs an operator's commands use.

use std::time::SystemTime;

use async_nats::datetime::DateTime;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{
    ConsumerErrorKind, DeleteMessageErrorKind, LastRawMessageErrorKind,
};
use async_trait::async_trait;
use futures::TryStreamExt;

use super::JetStreamBroker;
use super::streams::{CONSUMER_NOT_FOUND, STREAM_NOT_FOUND, api_code, stream_if_exists};
use crate::broker::{Admin, BrokerError, ConsumerState, Operate, StoredMessage};

/// How long a pause asks the server to hold a consumer: until resumed, in effect.
const PAUSED_FOR: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// Error code the server gives when no message has the sequence asked for.
const NO_MESSAGE_FOUND: u64 = 10037;
/// Error code for a delete of a message that is not there ("message delete failed").
const MESSAGE_DELETE_FAILED: u64 = 10057;

/// The first message of `s` at or after sequence `from` whose subject `subject` selects.
async fn next_in(
    s: &async_nats::jetstream::stream::Stream,
    from: u64,
    subject: Option<&str>,
) -> Result<Option<StoredMessage>, BrokerError> {
    let asked = s
        .raw_message_builder()
        .sequence(from.max(1))
        .next_by_subject(subject.unwrap_or(">"))
        .send()
        .await;
    match asked {
        Ok(m) => Ok(Some(StoredMessage {
            sequence: m.sequence,
            subject: m.subject.to_string(),
            headers: super::delivery::header_pairs(Some(&m.headers)),
            payload: m.payload,
            published: SystemTime::from(m.time),
        })),
        Err(e) => match e.kind() {
            LastRawMessageErrorKind::NoMessageFound => Ok(None),
            LastRawMessageErrorKind::JetStream(inner)
                if [NO_MESSAGE_FOUND, STREAM_NOT_FOUND].contains(&api_code(&inner)) =>
            {
                Ok(None)
            }
            _ => Err(BrokerError::other("get message", e)),
        },
    }
}

#[async_trait]
impl Operate for JetStreamBroker {
    async fn stream_names(&self) -> Result<Vec<String>, BrokerError> {
        self.js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| BrokerError::other("list streams", e))
    }

    async fn consumer_states(&self, stream: &str) -> Result<Vec<ConsumerState>, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(Vec::new());
        };
        let infos: Vec<_> = s
            .consumers()
            .try_collect()
            .await
            .map_err(|e| BrokerError::other("list consumers", e))?;
        Ok(infos
            .into_iter()
            .map(|i| ConsumerState {
                filter_subject: Some(i.config.filter_subject.clone()).filter(|f| !f.is_empty()),
                name: i.name,
                waiting: i.num_pending,
                in_flight: i.num_ack_pending as u64,
                redelivered: i.num_redelivered as u64,
                paused: i.paused,
            })
            .collect())
    }

    async fn next_message(
        &self,
        stream: &str,
        from: u64,
        subject: Option<&str>,
    ) -> Result<Option<StoredMessage>, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(None);
        };
        next_in(&s, from, subject).await
    }

    async fn recent_entries(
        &self,
        bucket: &str,
        scan: usize,
    ) -> Result<Vec<(String, bytes::Bytes)>, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, &format!("KV_{bucket}")).await? else {
            return Ok(Vec::new());
        };
        let state = &s.cached_info().state;
        let prefix = format!("$KV.{bucket}.");
        let mut from = state.first_sequence.max(
            state
                .last_sequence
                .saturating_sub(scan as u64)
                .saturating_add(1),
        );
        let mut found = Vec::new();
        for _ in 0..scan {
            let Some(m) = next_in(&s, from, None).await? else {
                break;
            };
            from = m.sequence + 1;
            let deleted = m.header("KV-Operation").is_some();
            if let (Some(key), false) = (m.subject.strip_prefix(&prefix), deleted) {
                found.push((key.to_string(), m.payload));
            }
        }
        found.reverse();
        Ok(found)
    }

    async fn delete_message(&self, stream: &str, sequence: u64) -> Result<bool, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(false);
        };
        match s.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => match e.kind() {
                DeleteMessageErrorKind::JetStream(inner)
                    if api_code(&inner) == MESSAGE_DELETE_FAILED =>
                {
                    Ok(false)
                }
                _ => Err(BrokerError::other("delete message", e)),
            },
        }
    }

    async fn purge(&self, stream: &str, subject: Option<&str>) -> Result<u64, BrokerError> {
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(0);
        };
        let safely = self
            .server_version()
            .is_some_and(|v| v.purges_subjects_safely());
        let purged = match subject {
            Some(subject) if !safely => return self.delete_each(stream, subject).await,
            Some(subject) => s.purge().filter(subject).await,
            None => s.purge().await,
        };
        purged
            .map(|r| r.purged)
            .map_err(|e| BrokerError::other("purge", e))
    }

    async fn pause_consumer(
        &self,
        stream: &str,
        name: &str,
        paused: bool,
    ) -> Result<bool, BrokerError> {
        if !self.server_version().is_some_and(|v| v.pauses_consumers()) {
            return Ok(false);
        }
        let Some(s) = stream_if_exists(&self.js, stream).await? else {
            return Ok(false);
        };
        let done = match paused {
            true => {
                let until = SystemTime::now() + PAUSED_FOR;
                s.pause_consumer(name, DateTime::from(until)).await
            }
            false => s.resume_consumer(name).await,
        };
        match done {
            Ok(_) => Ok(true),
            Err(e) => match e.kind() {
                ConsumerErrorKind::JetStream(inner) if api_code(&inner) == CONSUMER_NOT_FOUND => {
                    Ok(false)
                }
                _ => Err(BrokerError::other("pause consumer", e)),
            },
        }
    }

    async fn delete_stream(&self, stream: &str) -> Result<bool, BrokerError> {
        match self.js.delete_stream(stream).await {
            Ok(status) => Ok(status.success),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(inner) if api_code(&inner) == STREAM_NOT_FOUND => {
                    Ok(false)
                }
                _ => Err(BrokerError::other("delete stream", e)),
            },
        }
    }
}

impl JetStreamBroker {
    /// Purge `subject` from `stream` a message at a time (servers where a purge by subject
    /// stops the consumers, [`crate::broker::ServerVersion::purges_subjects_safely`]); how
    /// many were deleted.
    async fn delete_each(&self, stream: &str, subject: &str) -> Result<u64, BrokerError> {
        let mut deleted = 0;
        let mut from = 1;
        while let Some(m) = self.next_message(stream, from, Some(subject)).await? {
            if self.delete_message(stream, m.sequence).await? {
                deleted += 1;
            }
            from = m.sequence + 1;
        }
        Ok(deleted)
    }
}
