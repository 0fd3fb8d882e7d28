//! Queues as an operator sees them: every `OF_<queue>` stream with what waits in it, per
//! function; purging a queue (or one function's messages) and resetting it.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Serialize;

use super::{AdminError, Operator, StreamSettings};
use crate::broker::{BrokerError, ConsumerState, StreamInfo, StreamSpec, stream_name};

/// How a queue's messages are consumed, as its consumers show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One consumer for every function (`scaling_mode=static`).
    Static,
    /// A consumer per function with work (`scaling_mode=function`).
    Function,
    /// No consumer now: no worker has read it lately.
    None,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueReport {
    pub queue: String,
    pub stream: String,
    /// Messages stored: waiting, or running and not yet finished.
    pub messages: u64,
    pub bytes: u64,
    /// Age of the oldest stored message, in seconds.
    pub oldest_age_seconds: Option<f64>,
    pub mode: Mode,
    pub consumers: usize,
    /// Delivered to a worker and not yet finished (running, or waiting for a retry).
    pub in_flight: u64,
    /// Of those, delivered more than once.
    pub redelivered: u64,
    /// Delayed calls not yet due (stream `OF_<queue>_delayed`).
    pub delayed: u64,
    /// Dead letters kept (stream `OF_<queue>_DLQ`).
    pub dead_letters: u64,
    /// The whole queue is paused (`queue pause`).
    pub paused: bool,
    /// Functions paused on their own (`name.namespace`).
    pub paused_functions: Vec<String>,
    pub functions: Vec<FunctionReport>,
}

/// One function's messages in a queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionReport {
    /// `name.namespace` as the subject says it; empty for messages on the bare queue subject
    /// (older OpenFaaS gateways).
    pub function: String,
    pub subject: String,
    pub messages: u64,
    /// Its calls wait: the queue or the function is paused.
    pub paused: bool,
    /// Only in `stats` (one more request per function).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_seconds: Option<f64>,
    /// Only in `stats`, and in function mode while the function has a consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// Only in `stats`: its flow limits (pinned, else the last enforced), as one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
}

/// Every queue: the streams `OF_<queue>` that are neither dead letters nor delayed calls.
pub async fn names(op: &dyn Operator) -> Result<Vec<String>, AdminError> {
    Ok(queue_names(&op.stream_names().await?))
}

/// The queues among stream names (sorted): `OF_<queue>`, but `OF_<queue>_DLQ` and the
/// `OF_<queue>_delayed` of an existing `OF_<queue>`.
pub fn queue_names(streams: &[String]) -> Vec<String> {
    let all: BTreeSet<&str> = streams
        .iter()
        .filter_map(|s| s.strip_prefix("OF_"))
        .filter(|q| !q.is_empty() && !q.ends_with("_DLQ"))
        .collect();
    all.iter()
        .filter(|q| {
            q.strip_suffix("_delayed")
                .is_none_or(|base| !all.contains(base))
        })
        .map(|q| (*q).to_string())
        .collect()
}

/// Every queue's report, without the per-function details of [`stats`].
pub async fn list(op: &dyn Operator, now: SystemTime) -> Result<Vec<QueueReport>, AdminError> {
    let mut reports = Vec::new();
    for queue in names(op).await? {
        match report(op, &queue, now, false).await {
            Ok(r) => reports.push(r),
            // Deleted between the listing and now.
            Err(AdminError::NoQueue(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reports)
}

/// One queue's report, with each function's oldest message and in-flight count.
pub async fn stats(
    op: &dyn Operator,
    queue: &str,
    now: SystemTime,
) -> Result<QueueReport, AdminError> {
    super::check_queue(queue)?;
    report(op, queue, now, true).await
}

async fn report(
    op: &dyn Operator,
    queue: &str,
    now: SystemTime,
    detailed: bool,
) -> Result<QueueReport, AdminError> {
    let stream = stream_name(queue);
    let info = op
        .stream_info(&stream, Some(">"))
        .await?
        .ok_or_else(|| AdminError::NoQueue(queue.to_string()))?;
    let consumers = op.consumer_states(&stream).await?;
    let oldest = op.next_message(&stream, 1, None).await?;
    let (paused, _) = crate::pause::read(op, queue).await?;
    let mut functions = function_reports(queue, &info);
    for f in &mut functions {
        f.paused = paused.holds_subject(queue, &f.subject);
    }
    if detailed {
        let flows = super::flow::list(op, queue, now).await?;
        for f in &mut functions {
            f.limits = flows
                .iter()
                .find(|r| r.function.as_deref() == Some(f.function.as_str()))
                .and_then(|r| r.limits())
                .map(|l| l.describe());
            let first = op.next_message(&stream, 1, Some(&f.subject)).await?;
            f.oldest_age_seconds = first.map(|m| age_seconds(m.published, now));
            f.in_flight = consumers
                .iter()
                .find(|c| c.filter_subject.as_deref() == Some(f.subject.as_str()))
                .map(|c| c.in_flight);
        }
    }
    let delayed = count(op, &format!("{stream}_delayed")).await?;
    let dead_letters = count(op, &format!("{stream}_DLQ")).await?;
    Ok(QueueReport {
        queue: queue.to_string(),
        stream,
        messages: info.messages,
        bytes: info.bytes,
        oldest_age_seconds: oldest.map(|m| age_seconds(m.published, now)),
        mode: mode(&consumers),
        consumers: consumers.len(),
        in_flight: consumers.iter().map(|c| c.in_flight).sum(),
        redelivered: consumers.iter().map(|c| c.redelivered).sum(),
        delayed,
        dead_letters,
        paused: paused.queue,
        paused_functions: paused.functions.into_iter().collect(),
        functions,
    })
}

async fn count(op: &dyn Operator, stream: &str) -> Result<u64, AdminError> {
    Ok(op
        .stream_info(stream, None)
        .await?
        .map_or(0, |i| i.messages))
}

/// The functions with messages, from the stream's per-subject counts.
fn function_reports(queue: &str, info: &StreamInfo) -> Vec<FunctionReport> {
    info.subjects
        .iter()
        .filter_map(|(subject, n)| {
            let function = if subject == queue {
                ""
            } else {
                subject.strip_prefix(queue)?.strip_prefix('.')?
            };
            Some(FunctionReport {
                function: function.to_string(),
                subject: subject.clone(),
                messages: *n,
                paused: false,
                oldest_age_seconds: None,
                in_flight: None,
                limits: None,
            })
        })
        .collect()
}

fn mode(consumers: &[ConsumerState]) -> Mode {
    if consumers.is_empty() {
        Mode::None
    } else if consumers.iter().any(|c| c.filter_subject.is_none()) {
        Mode::Static
    } else {
        Mode::Function
    }
}

fn age_seconds(published: SystemTime, now: SystemTime) -> f64 {
    let age = now.duration_since(published).unwrap_or_default();
    (age.as_secs_f64() * 1000.0).round() / 1000.0
}

/// What a purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub queue: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Messages removed from the queue.
    pub purged: u64,
    /// Delayed calls removed (a whole-queue purge only: delayed calls name no function in
    /// their subject).
    pub delayed_purged: u64,
}

/// Remove the waiting messages of `queue` (and its delayed calls), or only those of
/// `function`. Messages already delivered and running finish; they are not invoked again.
pub async fn purge(
    op: &dyn Operator,
    queue: &str,
    function: Option<(&str, &str)>,
) -> Result<Purged, AdminError> {
    super::check_queue(queue)?;
    let stream = stream_name(queue);
    if op.stream_info(&stream, None).await?.is_none() {
        return Err(AdminError::NoQueue(queue.to_string()));
    }
    let subject = match function {
        Some((f, namespace)) => Some(super::function_subject(queue, f, namespace)?),
        None => None,
    };
    let purged = op.purge(&stream, subject.as_deref()).await?;
    let delayed_purged = match subject {
        Some(_) => 0,
        None => op.purge(&format!("{stream}_delayed"), None).await?,
    };
    Ok(Purged {
        queue: queue.to_string(),
        function: function.map(|(f, _)| f.to_string()),
        purged,
        delayed_purged,
    })
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reset {
    pub queue: String,
    /// Messages the stream held.
    pub deleted_messages: u64,
    /// Consumers deleted (workers make theirs again).
    pub deleted_consumers: usize,
    /// The stream itself was deleted and made again; `false`: emptied and its settings
    /// brought to the current ones (servers before 2.12, see below).
    pub recreated: bool,
}

/// Start `queue` afresh with `settings`: its messages and consumers deleted, the stream as
/// the current settings make it. Running workers make their consumers again, as when a stream
/// vanishes; calls they were running finish, and their acks find nothing to remove. Delayed
/// calls and dead letters (their own streams) are kept.
///
/// From NATS 2.12 the stream is deleted and created again. Before, a stream deleted and at
/// once made again by a running worker can fail every read, so it is emptied instead (purged,
/// its consumers deleted, its settings updated), unless its settings cannot be updated (another
/// retention): then it is deleted, and the workers should be stopped first.
pub async fn reset(
    op: &dyn Operator,
    queue: &str,
    settings: StreamSettings,
) -> Result<Reset, AdminError> {
    super::check_queue(queue)?;
    let stream = stream_name(queue);
    let info = op
        .stream_info(&stream, None)
        .await?
        .ok_or_else(|| AdminError::NoQueue(queue.to_string()))?;
    let consumers = op.list_consumers(&stream).await?;
    let spec: StreamSpec = settings.work_queue(queue);
    let recreate = op
        .server_version()
        .is_none_or(|v| v.recreates_deleted_streams());
    let recreated = if recreate {
        op.delete_stream(&stream).await?;
        op.ensure_stream(&spec).await?;
        true
    } else {
        empty(op, &spec, &consumers).await?
    };
    Ok(Reset {
        queue: queue.to_string(),
        deleted_messages: info.messages,
        deleted_consumers: consumers.len(),
        recreated,
    })
}

/// Purge the stream of `spec`, delete `consumers`, bring its settings to `spec`'s; `true`
/// when it had to be deleted and made again for that.
async fn empty(
    op: &dyn Operator,
    spec: &StreamSpec,
    consumers: &[String],
) -> Result<bool, AdminError> {
    op.purge(&spec.name, None).await?;
    for c in consumers {
        op.delete_consumer(&spec.name, c).await?;
    }
    match op.ensure_stream(spec).await {
        Ok(_) => Ok(false),
        Err(BrokerError::IncompatibleStream { .. }) => {
            tracing::warn!(stream = %spec.name, "The stream's settings cannot be changed in place: deleting it");
            op.delete_stream(&spec.name).await?;
            op.ensure_stream(spec).await?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::{Admin, Consume, Publish};

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn queues_are_the_work_streams() {
        let streams = v(&[
            "OF_faas-request",
            "OF_faas-request_DLQ",
            "OF_faas-request_delayed",
            "KV_OF_faas-request_calls",
            "OBJ_OF_faas-request_payloads",
            "OF_slow_delayed",
            "OF_",
            "other",
        ]);
        // `slow_delayed` is a queue of its own: no `OF_slow` makes it a delayed stream.
        assert_eq!(queue_names(&streams), v(&["faas-request", "slow_delayed"]));
    }

    #[test]
    fn functions_come_from_the_subjects_of_the_queue() {
        let mut info = StreamInfo::default();
        for (s, n) in [
            ("q", 2),
            ("q.figlet.openfaas-fn", 3),
            ("q2.x.y", 9),
            ("q.env.dev", 1),
        ] {
            info.subjects.insert(s.to_string(), n);
        }
        let got: Vec<(String, u64)> = function_reports("q", &info)
            .into_iter()
            .map(|f| (f.function, f.messages))
            .collect();
        assert_eq!(
            got,
            vec![
                (String::new(), 2),
                ("env.dev".to_string(), 1),
                ("figlet.openfaas-fn".to_string(), 3)
            ]
        );
    }

    async fn queue_with_messages(version: crate::broker::ServerVersion) -> MemoryBroker {
        let b = MemoryBroker::modelling(
            std::sync::Arc::new(crate::clock::SystemClock),
            crate::broker::memory::MemoryLimits::default(),
            version,
        );
        b.ensure_stream(&settings().work_queue("q")).await.unwrap();
        for f in ["a", "a", "b"] {
            let out = crate::broker::Outgoing {
                subject: format!("q.{f}.ns"),
                msg_id: None,
                headers: vec![],
                payload: bytes::Bytes::from_static(b"{}"),
            };
            b.publish(out).await.unwrap();
        }
        b
    }

    fn settings() -> StreamSettings {
        StreamSettings {
            storage: crate::config::Storage::Memory,
            replicas: 1,
            duplicate_window: std::time::Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_purge_of_one_function_leaves_the_others() {
        let b = queue_with_messages(crate::broker::ServerVersion::NEWEST).await;
        let done = purge(&b, "q", Some(("a", "ns"))).await.unwrap();
        assert_eq!((done.purged, done.delayed_purged), (2, 0));
        let report = stats(&b, "q", SystemTime::now()).await.unwrap();
        let left: Vec<(&str, u64)> = report
            .functions
            .iter()
            .map(|f| (f.function.as_str(), f.messages))
            .collect();
        assert_eq!(left, vec![("b.ns", 1)]);
        assert!(matches!(
            purge(&b, "nosuch", None).await,
            Err(AdminError::NoQueue(_))
        ));
    }

    #[tokio::test]
    async fn a_reset_empties_the_queue_and_recreates_it_where_that_is_safe() {
        use crate::broker::ServerVersion;
        for (version, recreated) in [
            (ServerVersion::NATS_2_9, false),
            (ServerVersion::NEWEST, true),
        ] {
            let b = queue_with_messages(version).await;
            let consumer = crate::broker::ConsumerSpec {
                stream: "OF_q".into(),
                name: "q-workers".into(),
                filter_subject: None,
                ack_wait: std::time::Duration::from_secs(30),
                inactive_threshold: None,
                pull_batch: 1,
                recreate: true,
                memory_storage: false,
            };
            let _sub = b
                .subscribe(&settings().work_queue("q"), &consumer)
                .await
                .unwrap();
            let done = reset(&b, "q", settings()).await.unwrap();
            assert_eq!(
                (done.deleted_messages, done.deleted_consumers),
                (3, 1),
                "{version}"
            );
            assert_eq!(done.recreated, recreated, "{version}");
            let info = b
                .stream_info("OF_q", None)
                .await
                .unwrap()
                .expect("made again");
            assert_eq!(info.messages, 0);
            assert!(b.list_consumers("OF_q").await.unwrap().is_empty());
        }
    }

    #[test]
    fn the_mode_shows_in_the_consumers() {
        let any = ConsumerState::default();
        let filtered = ConsumerState {
            filter_subject: Some("q.f.ns".into()),
            ..ConsumerState::default()
        };
        assert_eq!(mode(&[]), Mode::None);
        assert_eq!(mode(std::slice::from_ref(&any)), Mode::Static);
        assert_eq!(mode(&[filtered.clone(), filtered]), Mode::Function);
    }
}
