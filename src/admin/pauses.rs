//! Pausing and resuming a queue or one of its functions: the pause document in NATS
//! (`src/pause.rs`), which every worker follows within a second; and, where the server can
//! (NATS 2.11+), its consumer pause on the consumers that serve what is paused, so the server
//! delivers nothing more to them either. The document decides: a consumer a worker makes later
//! is not paused by the server, and the workers hold its calls all the same.

use serde::Serialize;

use super::{AdminError, Operator};
use crate::broker::{KvSpec, stream_name};
use crate::pause::{self, Paused};

/// What is paused in a queue after a pause or resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseReport {
    pub queue: String,
    /// The whole queue is paused.
    pub paused: bool,
    /// Functions paused (`name.namespace`).
    pub paused_functions: Vec<String>,
    /// Consumers the server paused or resumed for this change (NATS 2.11+; 0 before).
    pub server_consumers: usize,
}

/// Pause (`paused`) or resume `queue`, or only `function` (with the default namespace) in it.
/// `spec`: the queue's pause bucket ([`pause::spec`]).
pub async fn set(
    op: &dyn Operator,
    spec: &KvSpec,
    queue: &str,
    function: Option<(&str, &str)>,
    paused: bool,
) -> Result<PauseReport, AdminError> {
    super::check_queue(queue)?;
    let stream = stream_name(queue);
    if op.stream_info(&stream, None).await?.is_none() {
        return Err(AdminError::NoQueue(queue.to_string()));
    }
    let target = match function {
        Some((f, namespace)) => {
            let subject = super::function_subject(queue, f, namespace)?;
            Some(subject[queue.len() + 1..].to_string())
        }
        None => None,
    };
    let mut server_consumers = 0;
    if !paused {
        // The server's consumers first: should this fail, the document still says paused.
        let (now, _) = pause::read(op, queue).await?;
        let after = now
            .with(target.as_deref(), false)
            .map_err(AdminError::Invalid)?;
        server_consumers = follow(op, queue, &after).await?;
    }
    let after = pause::set(op, spec, target.as_deref(), paused)
        .await?
        .map_err(AdminError::Invalid)?;
    if paused {
        server_consumers = follow(op, queue, &after).await?;
    }
    Ok(PauseReport {
        queue: queue.to_string(),
        paused: after.queue,
        paused_functions: after.functions.into_iter().collect(),
        server_consumers,
    })
}

/// Pause on the server the consumers of `queue` that serve what `paused` holds, and resume the
/// others it has paused; how many were changed (none where the server cannot pause).
async fn follow(op: &dyn Operator, queue: &str, paused: &Paused) -> Result<usize, AdminError> {
    if !op.server_version().is_some_and(|v| v.pauses_consumers()) {
        return Ok(0);
    }
    let stream = stream_name(queue);
    let mut changed = 0;
    for c in op.consumer_states(&stream).await? {
        let hold = match &c.filter_subject {
            None => paused.queue,
            Some(subject) => paused.holds_subject(queue, subject),
        };
        if hold != c.paused && op.pause_consumer(&stream, &c.name, hold).await? {
            changed += 1;
        }
    }
    Ok(changed)
}
