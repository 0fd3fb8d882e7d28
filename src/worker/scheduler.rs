//! Delayed calls: the ingress stores a call due later in the queue's delayed stream
//! (`OF_<queue>_delayed`, [`StreamSpec::delayed`]) with its due time and work subject in
//! headers. Every worker reads that stream through one shared durable consumer and moves each
//! call when due: a call not yet due is given back with a delay until its due time (the server
//! holds it; nothing runs meanwhile), a due one is published to the work queue under its
//! original message id and then acked. A crash between the two publishes it again, and the
//! work stream's duplicate window (`idempotency_window`) drops the copy.
//!
//! Off when `max_delay` is 0 (the ingress then takes no delayed calls either).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{
    Broker, BrokerError, ConsumerSpec, DELAYED_MSG_ID_HEADER, Delivery, NOT_BEFORE_HEADER,
    Outgoing, StreamSpec, TARGET_HEADER,
};
use crate::clock::Clock;
use crate::config::Config;

/// How long a move may take before the delayed call is handed out again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Delayed calls pulled at once.
const PULL_BATCH: usize = 64;
/// Pause before a call that could not be moved is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Move this worker's queue's delayed calls until `shutdown`.
pub async fn run(
    broker: Arc<dyn Broker>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    if config.max_delay.is_zero() {
        return;
    }
    let (queue, storage, replicas) = (
        &config.queue_name,
        config.nats_storage,
        config.nats_stream_replicas,
    );
    let window = config.idempotency_window;
    let delayed = StreamSpec::delayed(queue, storage, replicas)
        .with_duplicate_window(window)
        .with_schedules(broker.schedules_messages());
    let work = StreamSpec::work_queue(queue, storage, replicas).with_duplicate_window(window);
    let consumer = ConsumerSpec {
        stream: delayed.name.clone(),
        name: format!("{queue}-delayed"),
        // Not the schedules (`<queue>-delayed.at.…`): the server fires them onto this subject.
        filter_subject: Some(crate::broker::delayed_subject(queue)),
        ack_wait: ACK_WAIT,
        inactive_threshold: None,
        pull_batch: PULL_BATCH,
        recreate: true,
        memory_storage: false,
    };
    let subscribed = crate::keep_trying::retry_until(
        &shutdown,
        "Cannot set up the stream of delayed calls",
        || broker.subscribe(&delayed, &consumer),
    )
    .await;
    let Some(mut subscription) = subscribed else {
        return;
    };
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            next = subscription.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let now = crate::status::unix_ms(clock.now());
                move_when_due(broker.as_ref(), &work, &delivery, now).await;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Cannot read delayed calls; trying again");
                tokio::time::sleep(RETRY).await;
            }
            None => return,
        }
    }
}

/// Give `delivery` back until its due time, or move it to the work queue (`now`: unix ms).
async fn move_when_due(broker: &dyn Broker, work: &StreamSpec, delivery: &Delivery, now: u64) {
    let header = |name: &str| {
        delivery
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let due = header(NOT_BEFORE_HEADER).and_then(|v| v.parse::<u64>().ok());
    let (Some(due), Some(target)) = (due, header(TARGET_HEADER)) else {
        tracing::error!(
            seq = delivery.stream_sequence,
            "A delayed call without its due time or subject; removed"
        );
        let _ = delivery.acker.term().await;
        return;
    };
    if due > now {
        let _ = delivery
            .acker
            .nak(Some(Duration::from_millis(due - now)))
            .await;
        return;
    }
    let outgoing = Outgoing {
        subject: target.to_string(),
        msg_id: header(DELAYED_MSG_ID_HEADER).map(str::to_string),
        headers: crate::claim_check::carried(&delivery.headers),
        payload: delivery.payload.clone(),
    };
    match publish(broker, work, outgoing).await {
        Ok(()) => {
            let _ = delivery.acker.ack().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot queue a delayed call that is due; trying again");
            let _ = delivery.acker.nak(Some(RETRY)).await;
        }
    }
}

/// Publish to the work queue, creating its stream once when it is missing.
async fn publish(broker: &dyn Broker, work: &StreamSpec, msg: Outgoing) -> Result<(), BrokerError> {
    match broker.publish(msg.clone()).await {
        Err(BrokerError::NoStream { .. }) => {
            broker.ensure_stream(work).await?;
            broker.publish(msg).await.map(drop)
        }
        other => other.map(drop),
    }
}
