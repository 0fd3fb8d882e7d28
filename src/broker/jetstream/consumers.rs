//! Durable pull consumers: created as the spec says (with their stream), or used as they are.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self};

use crate::broker::{BrokerError, ConsumerSpec, StreamSpec, StreamStatus};

use super::streams::{
    CONSUMER_NOT_FOUND, STREAM_NOT_FOUND, api_code, ensure_stream, stream_if_exists,
};

pub(super) fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.name.clone()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // The worker decides retries (nak with delay) and ends messages with ack or term.
        max_deliver: -1,
        // Retrying messages wait as "ack pending": a limit here would pause the queue.
        max_ack_pending: -1,
        filter_subject: spec.filter_subject.clone().unwrap_or_default(),
        inactive_threshold: spec.inactive_threshold.unwrap_or_default(),
        memory_storage: spec.memory_storage,
        ..Default::default()
    }
}

pub(super) async fn ensure_consumer(
    js: &jetstream::Context,
    stream_spec: &StreamSpec,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, BrokerError> {
    let status = ensure_stream(js, stream_spec).await?;
    if status == StreamStatus::Created {
        tracing::info!(stream = %stream_spec.name, "Created stream");
    }
    let stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(|e| BrokerError::other("get stream", e))?;
    match stream.create_consumer(consumer_config(spec)).await {
        Ok(c) => Ok(c),
        Err(create_err) => {
            // An existing consumer whose settings cannot be changed in place: use it as it is.
            match stream.get_consumer::<pull::Config>(&spec.name).await {
                Ok(c) => {
                    tracing::warn!(
                        consumer = %spec.name,
                        error = %create_err,
                        "Existing consumer differs from the configuration; using it unchanged"
                    );
                    Ok(c)
                }
                Err(_) => Err(BrokerError::other("create consumer", create_err)),
            }
        }
    }
}

pub(super) async fn consumer_exists(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> Result<bool, BrokerError> {
    let Some(s) = stream_if_exists(js, stream).await? else {
        return Ok(false);
    };
    match s.consumer_info(name).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound => Ok(false),
            ConsumerInfoErrorKind::JetStream(inner)
                if matches!(api_code(&inner), CONSUMER_NOT_FOUND | STREAM_NOT_FOUND) =>
            {
                Ok(false)
            }
            // Seen on nats-server 2.9 when the consumer is being deleted while we ask: the
            // answer does not parse. The list of names is the other way to know.
            _ => {
                use futures::TryStreamExt;
                let names: Vec<String> = s
                    .consumer_names()
                    .try_collect()
                    .await
                    .map_err(|_| BrokerError::other("consumer info", e))?;
                Ok(names.iter().any(|n| n == name))
            }
        },
    }
}
