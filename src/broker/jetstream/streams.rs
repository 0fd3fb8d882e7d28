//! Streams: created as the spec says, or checked when they exist.

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self as js_stream, DiscardPolicy};
use async_nats::jetstream::{self};

use crate::broker::{BrokerError, Retention, StreamSpec, StreamStatus};
use crate::config::Storage;

/// Error code the server gives for a missing stream.
pub(super) const STREAM_NOT_FOUND: u64 = 10059;
/// Error code the server gives for a missing consumer.
pub(super) const CONSUMER_NOT_FOUND: u64 = 10014;
/// Error code for "stream name already in use" (two replicas creating the stream at once).
pub(super) const STREAM_NAME_IN_USE: u64 = 10058;

pub(super) fn js_config(spec: &StreamSpec) -> js_stream::Config {
    js_stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: match spec.retention {
            Retention::WorkQueue => js_stream::RetentionPolicy::WorkQueue,
            Retention::Limits => js_stream::RetentionPolicy::Limits,
        },
        storage: match spec.storage {
            Storage::File => js_stream::StorageType::File,
            Storage::Memory => js_stream::StorageType::Memory,
        },
        num_replicas: spec.replicas,
        duplicate_window: spec.duplicate_window,
        max_age: spec.max_age.unwrap_or_default(),
        max_bytes: spec.max_bytes.unwrap_or(-1),
        discard: DiscardPolicy::Old,
        allow_message_schedules: spec.schedules,
        ..Default::default()
    }
}

pub(super) fn retention_name(r: js_stream::RetentionPolicy) -> &'static str {
    match r {
        js_stream::RetentionPolicy::Limits => "Limits",
        js_stream::RetentionPolicy::Interest => "Interest",
        js_stream::RetentionPolicy::WorkQueue => "WorkQueue",
    }
}

/// The JetStream error code inside an async-nats error, if any.
pub(super) fn api_code(e: &async_nats::jetstream::Error) -> u64 {
    e.error_code().0
}

pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<StreamStatus, BrokerError> {
    match js.get_stream(&spec.name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| BrokerError::other("stream info", e))?;
            let want = js_config(spec).retention;
            if info.config.retention != want {
                return Err(BrokerError::IncompatibleStream {
                    stream: spec.name.clone(),
                    found: retention_name(info.config.retention).into(),
                    want: retention_name(want).into(),
                });
            }
            if let Some(config) = updated(&info.config, spec) {
                js.update_stream(config)
                    .await
                    .map_err(|e| BrokerError::other("stream update", e))?;
                tracing::info!(stream = %spec.name, window = ?spec.duplicate_window, schedules = spec.schedules, "Stream settings changed");
            }
            Ok(StreamStatus::Existing)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(inner) if api_code(&inner) == STREAM_NOT_FOUND => {
                match js.create_stream(js_config(spec)).await {
                    Ok(_) => Ok(StreamStatus::Created),
                    Err(e) => match e.kind() {
                        CreateStreamErrorKind::JetStream(inner)
                            if api_code(&inner) == STREAM_NAME_IN_USE =>
                        {
                            Ok(StreamStatus::Existing)
                        }
                        CreateStreamErrorKind::TimedOut => Err(BrokerError::Timeout {
                            what: format!("creating stream {}", spec.name),
                        }),
                        _ => Err(BrokerError::other("create stream", e)),
                    },
                }
            }
            _ => Err(BrokerError::other("get stream", e)),
        },
    }
}

/// The settings of an existing stream brought to `spec`, when they differ: its duplicate
/// window; for a stream of schedules, the subjects it lacks and `allow_msg_schedules` (never
/// turned off, nor subjects taken away).
fn updated(found: &js_stream::Config, spec: &StreamSpec) -> Option<js_stream::Config> {
    let mut config = found.clone();
    config.duplicate_window = spec.duplicate_window;
    if spec.schedules {
        config.allow_message_schedules = true;
        for subject in &spec.subjects {
            if !config.subjects.contains(subject) {
                config.subjects.push(subject.clone());
            }
        }
    }
    let same = config.duplicate_window == found.duplicate_window
        && config.allow_message_schedules == found.allow_message_schedules
        && config.subjects == found.subjects;
    (!same).then_some(config)
}

/// The stream, or `None` when it does not exist.
pub(super) async fn stream_if_exists(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Option<jetstream::stream::Stream>, BrokerError> {
    match js.get_stream(stream).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(inner) if api_code(&inner) == STREAM_NOT_FOUND => {
                Ok(None)
            }
            _ => Err(BrokerError::other("get stream", e)),
        },
    }
}
