//! Demand-driven pulling from a JetStream pull consumer.
//!
//! Why not async-nats' `messages()` stream: it keeps a batch of messages pulled ahead of the
//! worker. A message that waits in that buffer while every slot is busy has its ack-wait timer
//! running with nobody sending progress for it; when functions run longer than `ack_wait` the
//! server redelivers it while we still hold it, and it runs twice. Here the worker says how
//! many deliveries it can start right now (its free slots, [`Subscription::set_demand`]) and
//! pull requests never ask for more than that, so every message the server sends has a slot
//! waiting for it.
//!
//! The pull protocol (nats-server 2.9+): a request `{"batch":n,"expires":ns,"idle_heartbeat":ns}`
//! published to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with our inbox as reply. The
//! server answers on the inbox with messages, `100` idle heartbeats, `408` when a request
//! expires and `409` when it is terminated (both carrying `Nats-Pending-Messages`: what that
//! request will no longer deliver).
//!
//! Requests are bounded by bytes too (`max_bytes`, [`PULL_MAX_BYTES`]), so the server never
//! has more than a few megabytes per request on its way to the worker however large the
//! messages and however many slots are free (a request that reaches its bytes ends, and the
//! next is asked for as slots free up): asking 256 messages of 700 KB at once made the server
//! take the worker for a slow consumer and close its connection. A request ends with `409` once the next message would exceed its
//! bytes; a message larger than a request's bytes would never be delivered, so a request's
//! bytes are never below the server's `max_payload` plus [`PULL_BYTES_HEADROOM`].

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::consumers::{consumer_exists, ensure_consumer};
use super::delivery::to_delivery;
use crate::broker::{BrokerError, ConsumerSpec, Delivery, StreamSpec, Subscription};
use async_trait::async_trait;

/// Idle heartbeat asked of the server on every pull request.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Lifetime of one pull request.
const EXPIRES: Duration = Duration::from_secs(10);
/// Bytes one pull request may bring (raised to the server's `max_payload` plus headroom).
pub const PULL_MAX_BYTES: usize = 8 * 1024 * 1024;
/// What the server may count for a message besides its payload and headers (subject, reply).
const PULL_BYTES_HEADROOM: usize = 64 * 1024;
/// Silence (no message, heartbeat or status) after which outstanding requests are taken as lost.
const SILENCE: Duration = Duration::from_millis(2 * 2000 + 1000);

/// A demand-driven subscription to one JetStream pull consumer.
pub struct DemandPuller {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_spec: StreamSpec,
    spec: ConsumerSpec,
    inbox: String,
    sub: async_nats::Subscriber,
    request_subject: String,
    /// Messages asked for and not yet received, expired or terminated.
    outstanding: usize,
    /// `max_bytes` of every request.
    max_bytes: usize,
    /// Deliveries the caller can start right now.
    demand: usize,
    /// Received and not yet handed out (normally empty: requests never exceed demand).
    ready: VecDeque<Delivery>,
    /// Last time the server said anything on our inbox.
    last_heard: Instant,
    /// The consumer is gone and the spec says not to recreate it: the subscription has ended.
    gone: bool,
}

impl DemandPuller {
    /// Ensure the consumer (and stream) exist and subscribe to a fresh inbox.
    pub async fn start(
        client: async_nats::Client,
        js: jetstream::Context,
        stream_spec: StreamSpec,
        spec: ConsumerSpec,
    ) -> Result<DemandPuller, BrokerError> {
        ensure_consumer(&js, &stream_spec, &spec).await?;
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BrokerError::other("subscribe", e))?;
        Ok(DemandPuller {
            max_bytes: request_bytes(client.server_info().max_payload),
            request_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", spec.stream, spec.name),
            client,
            js,
            stream_spec,
            spec,
            inbox,
            sub,
            outstanding: 0,
            demand: 1,
            ready: VecDeque::new(),
            last_heard: Instant::now(),
            gone: false,
        })
    }

    pub fn set_demand(&mut self, demand: usize) {
        self.demand = demand;
    }

    /// How many messages to ask for now (0: enough is on its way).
    fn to_request(&self) -> usize {
        let want = self.demand.min(self.spec.pull_batch.max(1));
        let have = self.outstanding + self.ready.len();
        if have >= want {
            return 0;
        }
        let deficit = want - have;
        // Batch small top-ups (like a half-batch re-pull) unless nothing is on its way at all.
        if have == 0 || deficit >= (want / 2).max(1) {
            deficit
        } else {
            0
        }
    }

    async fn request(&mut self, n: usize) -> Result<(), BrokerError> {
        let body = format!(
            "{{\"batch\":{n},\"max_bytes\":{},\"expires\":{},\"idle_heartbeat\":{}}}",
            self.max_bytes,
            EXPIRES.as_nanos(),
            HEARTBEAT.as_nanos()
        );
        self.client
            .publish_with_reply(
                self.request_subject.clone(),
                self.inbox.clone(),
                body.into(),
            )
            .await
            .map_err(|e| BrokerError::other("pull request", e))?;
        if self.outstanding == 0 {
            self.last_heard = Instant::now();
        }
        self.outstanding += n;
        Ok(())
    }

    /// The consumer or its stream is gone: recreate both and start over with a new inbox.
    async fn recreate(&mut self, why: &str) -> Result<(), BrokerError> {
        if !self.spec.recreate {
            tracing::debug!(consumer = %self.spec.name, reason = why, "Consumer gone; subscription ends");
            self.gone = true;
            return Ok(());
        }
        tracing::warn!(
            stream = %self.spec.stream,
            consumer = %self.spec.name,
            reason = why,
            "Consumer disappeared; recreating it"
        );
        let stream_exists = self.js.get_stream(&self.spec.stream).await.is_ok();
        if !stream_exists {
            tracing::warn!(stream = %self.spec.stream, "Stream was deleted; recreating it empty");
        }
        ensure_consumer(&self.js, &self.stream_spec, &self.spec).await?;
        self.reset_inbox().await
    }

    /// Forget outstanding requests: new inbox, so late answers to old requests cannot arrive.
    async fn reset_inbox(&mut self) -> Result<(), BrokerError> {
        let inbox = self.client.new_inbox();
        let sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BrokerError::other("subscribe", e))?;
        // Keep what the old inbox already received: those are real deliveries.
        self.drain_inbox();
        self.inbox = inbox;
        self.sub = sub;
        self.outstanding = 0;
        self.last_heard = Instant::now();
        Ok(())
    }

    /// Move whatever the inbox already holds into `ready` (statuses are accounted for).
    fn drain_inbox(&mut self) {
        while let Some(Some(m)) = self.sub.next().now_or_never() {
            let _ = self.handle(m);
        }
    }

    /// Account for one message from the inbox. `Err(reason)` means the consumer is gone.
    fn handle(&mut self, m: async_nats::Message) -> Result<(), String> {
        self.last_heard = Instant::now();
        match m.status {
            None | Some(StatusCode::OK) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                let msg = jetstream::Message {
                    message: m,
                    context: self.js.clone(),
                };
                match to_delivery(msg, &self.client) {
                    Ok(d) => self.ready.push_back(d),
                    Err(e) => tracing::warn!(error = %e, "Unreadable delivery skipped"),
                }
                Ok(())
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(()),
            Some(StatusCode::TIMEOUT) | Some(StatusCode::REQUEST_TERMINATED) => {
                let description = m.description.unwrap_or_default();
                if description.eq_ignore_ascii_case("Consumer Deleted") {
                    return Err(description);
                }
                let pending = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                match pending {
                    Some(p) => self.outstanding = self.outstanding.saturating_sub(p),
                    // Without the count we cannot tell what is still coming: start over.
                    None => self.outstanding = 0,
                }
                if !description.is_empty() && m.status == Some(StatusCode::REQUEST_TERMINATED) {
                    tracing::debug!(reason = %description, "Pull request terminated");
                }
                Ok(())
            }
            Some(StatusCode::NO_RESPONDERS) | Some(StatusCode::NOT_FOUND) => {
                Err("no responders for pull requests".into())
            }
            Some(other) => {
                tracing::debug!(status = %other, "Unexpected pull status");
                self.outstanding = 0;
                Ok(())
            }
        }
    }

    pub async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Some(Ok(d));
            }
            if self.gone {
                return None;
            }
            let n = self.to_request();
            if n > 0
                && let Err(e) = self.request(n).await
            {
                return Some(Err(e));
            }
            let silence_deadline = self.last_heard + SILENCE;
            tokio::select! {
                m = self.sub.next() => match m {
                    Some(m) => {
                        if let Err(why) = self.handle(m)
                            && let Err(e) = self.recreate(&why).await
                        {
                            return Some(Err(e));
                        }
                    }
                    None => {
                        // The client closed the subscription: start a new one.
                        if let Err(e) = self.reset_inbox().await {
                            return Some(Err(e));
                        }
                    }
                },
                _ = tokio::time::sleep_until(silence_deadline), if self.outstanding > 0 => {
                    // Requests lost (server restart, disconnect) or consumer deleted: check.
                    tracing::debug!(outstanding = self.outstanding, "Pull requests went silent");
                    match consumer_exists(&self.js, &self.spec.stream, &self.spec.name).await {
                        Ok(true) => {
                            if let Err(e) = self.reset_inbox().await {
                                return Some(Err(e));
                            }
                        }
                        Ok(false) => {
                            if let Err(e) = self.recreate("consumer not found").await {
                                return Some(Err(e));
                            }
                        }
                        Err(e) => {
                            self.last_heard = Instant::now();
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }

    pub fn drain_buffered(&mut self) -> Vec<Delivery> {
        self.drain_inbox();
        self.ready.drain(..).collect()
    }
}

#[async_trait]
impl Subscription for DemandPuller {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        DemandPuller::next(self).await
    }
    fn set_demand(&mut self, demand: usize) {
        DemandPuller::set_demand(self, demand)
    }
    fn drain_buffered(&mut self) -> Vec<Delivery> {
        DemandPuller::drain_buffered(self)
    }
    fn pulling(&self) -> bool {
        self.outstanding > 0
    }
}

/// `max_bytes` of a pull request when the server's `max_payload` is `max_payload`: room for
/// the largest message the server can hold, and never less than [`PULL_MAX_BYTES`].
fn request_bytes(max_payload: usize) -> usize {
    PULL_MAX_BYTES.max(max_payload.saturating_add(PULL_BYTES_HEADROOM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_always_has_room_for_the_largest_message() {
        assert_eq!(request_bytes(1024 * 1024), PULL_MAX_BYTES);
        let big = 64 * 1024 * 1024;
        assert_eq!(request_bytes(big), big + PULL_BYTES_HEADROOM);
        assert_eq!(request_bytes(usize::MAX), usize::MAX);
    }
}
