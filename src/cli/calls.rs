//! What the call commands (`status`, `cancel`) share: the settings, the queues a call may be
//! in, and a NATS connection.

use std::process::ExitCode;
use std::sync::Arc;

use super::{EXIT_USAGE, load_config};
use crate::broker::jetstream::JetStreamBroker;
use crate::config::{Config, ConfigArgs};
use crate::telemetry::metrics::Metrics;

/// A call command ready to run.
pub(crate) struct Opened {
    pub config: Config,
    /// `--queue`, or else `queue_name` and every `function_queues` queue.
    pub queues: Vec<String>,
    pub broker: Arc<JetStreamBroker>,
}

/// Load the settings, start logging and connect, for `queue-worker <command>`. With
/// `needs_status`, refuse (exit 2) when no call status is kept (`status_ttl=0`).
pub(crate) async fn open(
    command: &str,
    args: &ConfigArgs,
    queue: Option<&String>,
    needs_status: bool,
) -> Result<Opened, ExitCode> {
    let config = load_config(args)?;
    super::start_logs(&config);
    if needs_status && config.status_ttl.is_zero() {
        eprintln!("queue-worker {command}: no call status is kept (status_ttl=0)");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let queues = match queue {
        Some(q) => vec![q.clone()],
        None => config.queues(),
    };
    let metrics = Arc::new(Metrics::new());
    let broker = super::connect_for_command(&config, &metrics, command).await?;
    Ok(Opened {
        config,
        queues,
        broker,
    })
}
