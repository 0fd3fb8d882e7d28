//! The `Operate` port: what an operator's commands need beyond running a queue (list streams,
//! read and delete stored messages one by one, purge, delete a stream, read consumers' counts).
//! The worker never uses it; the admin commands and routes (`src/admin/`) do.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Admin, BrokerError, KeyValue, Publish};

/// A message as the stream stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// When the stream stored it.
    pub published: SystemTime,
}

impl StoredMessage {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A consumer's counts, as the server reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerState {
    pub name: String,
    /// `None`: every subject of the stream.
    pub filter_subject: Option<String>,
    /// Messages it has not delivered yet.
    pub waiting: u64,
    /// Delivered and not yet settled: the calls running (or held) now.
    pub in_flight: u64,
    /// Of those, delivered more than once.
    pub redelivered: u64,
    /// Paused by the server (NATS 2.11+ consumer pause).
    pub paused: bool,
}

/// Operators' access to streams. Every method has a default that says the broker cannot do
/// it (the simulation's broker has no operator).
#[async_trait]
pub trait Operate: Send + Sync + 'static {
    /// The names of every stream.
    async fn stream_names(&self) -> Result<Vec<String>, BrokerError> {
        Err(unsupported("list streams"))
    }

    /// The counts of every consumer of `stream` (empty when the stream does not exist).
    async fn consumer_states(&self, stream: &str) -> Result<Vec<ConsumerState>, BrokerError> {
        let _ = stream;
        Err(unsupported("consumer info"))
    }

    /// The first message at or after sequence `from` whose subject `subject` selects (a NATS
    /// subject filter; `None`: any). `Ok(None)` when there is none or no such stream.
    async fn next_message(
        &self,
        stream: &str,
        from: u64,
        subject: Option<&str>,
    ) -> Result<Option<StoredMessage>, BrokerError> {
        let _ = (stream, from, subject);
        Err(unsupported("get message"))
    }

    /// The keys of key-value bucket `bucket` written last and their values, newest first:
    /// those among its last `scan` writes that still hold the value then written (no deleted
    /// key). Empty when the bucket does not exist.
    async fn recent_entries(
        &self,
        bucket: &str,
        scan: usize,
    ) -> Result<Vec<(String, Bytes)>, BrokerError> {
        let _ = (bucket, scan);
        Err(unsupported("recent entries"))
    }

    /// Delete message `sequence`; `Ok(false)` when it (or the stream) does not exist.
    async fn delete_message(&self, stream: &str, sequence: u64) -> Result<bool, BrokerError> {
        let _ = (stream, sequence);
        Err(unsupported("delete message"))
    }

    /// Remove every message whose subject `subject` selects (`None`: all); returns how many.
    /// `Ok(0)` when the stream does not exist.
    async fn purge(&self, stream: &str, subject: Option<&str>) -> Result<u64, BrokerError> {
        let _ = (stream, subject);
        Err(unsupported("purge"))
    }

    /// Pause (`paused`) or resume consumer `name` on the server (NATS 2.11+ consumer pause):
    /// a paused consumer delivers nothing. `Ok(false)` when the server cannot pause consumers
    /// or the consumer does not exist.
    async fn pause_consumer(
        &self,
        stream: &str,
        name: &str,
        paused: bool,
    ) -> Result<bool, BrokerError> {
        let _ = (stream, name, paused);
        Ok(false)
    }

    /// Delete the stream with its messages and consumers; `Ok(false)` when it did not exist.
    async fn delete_stream(&self, stream: &str) -> Result<bool, BrokerError> {
        let _ = stream;
        Err(unsupported("delete stream"))
    }
}

/// What operating a queue needs of the broker (the admin commands and routes).
pub trait Operator: Admin + Operate + Publish + KeyValue {}

impl<T: Admin + Operate + Publish + KeyValue + ?Sized> Operator for T {}

fn unsupported(op: &'static str) -> BrokerError {
    BrokerError::other(op, "this broker does not offer it")
}
