//! Operating queues: what waits in them, purging and resetting them, and their dead letters.
//! Shared by the admin commands (`queue-worker queue …`, `queue-worker dlq …`) and the
//! ingress's `/system/queues` and `/system/dead-letters` routes, so both say the same.
//!
//! Reports are plain data (`serde` for `--json` and the HTTP answers); `render.rs` draws the
//! tables people read.

pub mod dead_letters;
pub mod flow;
pub mod pauses;
pub mod queues;
pub mod render;

use std::time::Duration;

pub use crate::broker::Operator;
use crate::broker::StreamSpec;
use crate::config::Config;

/// Why an operation could not be done, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The queue (its stream `OF_<queue>`) does not exist.
    #[error("no queue {0} (no stream OF_{0})")]
    NoQueue(String),
    /// No such dead letter (or other thing asked for by name).
    #[error("{0}")]
    NotFound(String),
    /// A name or filter that cannot be used.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// The settings a stream is made with, as the worker and the ingress make them.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub storage: crate::config::Storage,
    pub replicas: usize,
    pub duplicate_window: Duration,
}

impl StreamSettings {
    pub fn of(config: &Config) -> StreamSettings {
        StreamSettings {
            storage: config.nats_storage,
            replicas: config.nats_stream_replicas,
            duplicate_window: config.idempotency_window,
        }
    }

    /// The work-queue stream of `queue` with these settings.
    pub fn work_queue(&self, queue: &str) -> StreamSpec {
        StreamSpec::work_queue(queue, self.storage, self.replicas)
            .with_duplicate_window(self.duplicate_window)
    }
}

/// `queue`, checked: a name the configuration would take for `queue_name`.
pub fn check_queue(queue: &str) -> Result<(), AdminError> {
    crate::config::validate::queue_name(queue).map_err(AdminError::Invalid)
}

/// The subject (a filter) of `function`'s messages on `queue`: `<queue>.<name>.<namespace>`,
/// the namespace being `default_namespace` when `function` names none (as the ingress
/// routes it).
pub fn function_subject(
    prefix: &str,
    function: &str,
    default_namespace: &str,
) -> Result<String, AdminError> {
    crate::wire::validate_function_name(function)
        .map_err(|e| AdminError::Invalid(format!("function {function:?}: {e}")))?;
    let (name, namespace) = crate::wire::split_function(function, default_namespace);
    Ok(format!("{prefix}.{name}.{namespace}"))
}
