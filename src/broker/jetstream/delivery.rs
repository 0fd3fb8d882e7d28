//! A JetStream message as the port's [`Delivery`], settled through its ack subject.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;

use crate::broker::{Acker, BrokerError, Delivery};

/// The port's delivery for one JetStream message; its reply subject is its ack subject.
pub(super) fn to_delivery(
    msg: jetstream::Message,
    client: &async_nats::Client,
) -> Result<Delivery, BrokerError> {
    let (delivered, stream_sequence, published) = {
        let info = msg
            .info()
            .map_err(|e| BrokerError::other("read delivery info", e))?;
        (
            u64::try_from(info.delivered).unwrap_or(1),
            info.stream_sequence,
            SystemTime::from(info.published),
        )
    };
    let m = msg.message;
    let reply = m
        .reply
        .clone()
        .ok_or_else(|| BrokerError::other("read delivery info", "no reply subject"))?;
    Ok(Delivery {
        subject: m.subject.as_str().to_owned(),
        headers: header_pairs(m.headers.as_ref()),
        payload: m.payload,
        delivered,
        stream_sequence,
        published,
        acker: Box::new(JsAcker {
            client: client.clone(),
            reply,
        }),
    })
}

/// A message's headers as (name, value) pairs, in order.
pub(super) fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, values) in headers.into_iter().flat_map(|h| h.iter()) {
        for v in values {
            pairs.push((AsRef::<str>::as_ref(name).to_owned(), v.as_str().to_owned()));
        }
    }
    pairs
}

/// Settles one delivery by publishing to its ack subject (`$JS.ACK.…`, which names the stream,
/// the consumer and the message). Acks, naks and terms are fire and forget, as JetStream acks
/// are; a progress ack asks for the server's answer, so the worker knows its lease was renewed
/// (`src/worker/lease.rs`).
struct JsAcker {
    client: async_nats::Client,
    reply: async_nats::Subject,
}

impl JsAcker {
    async fn send(&self, kind: AckKind, what: &'static str) -> Result<(), BrokerError> {
        self.client
            .publish(self.reply.clone(), kind.into())
            .await
            .map_err(|e| BrokerError::other(what, e))
    }
}

#[async_trait]
impl Acker for JsAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.send(AckKind::Ack, "ack").await
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BrokerError> {
        self.send(AckKind::Nak(delay), "nak").await
    }
    async fn progress(&self) -> Result<(), BrokerError> {
        self.client
            .request(self.reply.clone(), AckKind::Progress.into())
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::other("progress", e))
    }
    async fn term(&self) -> Result<(), BrokerError> {
        self.send(AckKind::Term, "term").await
    }
}
