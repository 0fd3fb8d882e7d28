//! Settling a delivery: addressed as a JetStream ack subject addresses it (stream, consumer,
//! stream sequence), so a late settle applies to a later delivery of the same message too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::state::{Inner, Settle, State};
use crate::broker::{Acker, BrokerError, Delivery};

/// The delivery of message `seq` from `consumer`, as the port hands it out.
pub(super) fn delivery(
    state: &State,
    inner: &Arc<Inner>,
    stream: &str,
    consumer: &str,
    seq: u64,
    delivered: u64,
) -> Option<Delivery> {
    let m = state.streams.get(stream)?.msgs.get(&seq)?;
    Some(Delivery {
        subject: m.subject.clone(),
        payload: m.payload.clone(),
        headers: m.headers.clone(),
        delivered,
        stream_sequence: seq,
        published: m.published,
        acker: Box::new(MemAcker {
            inner: inner.clone(),
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            seq,
        }),
    })
}

/// Settles one delivery; addresses the message as a JetStream ack subject does.
pub(super) struct MemAcker {
    pub(super) inner: Arc<Inner>,
    pub(super) stream: String,
    pub(super) consumer: String,
    pub(super) seq: u64,
}

impl MemAcker {
    pub(super) fn settle(&self, how: Settle) -> Result<(), BrokerError> {
        self.inner
            .lock()
            .settle(&self.stream, &self.consumer, self.seq, how, Instant::now());
        Ok(())
    }
}

#[async_trait]
impl Acker for MemAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Ack)
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BrokerError> {
        self.settle(Settle::Nak(delay))
    }
    async fn progress(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Progress)
    }
    async fn term(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Term)
    }
}
