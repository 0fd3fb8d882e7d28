//! The ingress's part of a call's trace: the `publish` span (request received → stored or
//! refused), whose context the message carries in its `Header` as `Traceparent`, so that the
//! worker's spans hang under it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{Prepared, Stored};
use crate::broker::BrokerError;
use crate::clock::Clock;
use crate::trace::{Kind, Span, SpanContext, TRACEPARENT, Tracer};

/// A `publish` span begun.
pub(super) struct Publish {
    span: SpanContext,
    parent: Option<SpanContext>,
    start: SystemTime,
}

/// Begin the `publish` span of a request with headers `header` (Go's canonical keys): its
/// context replaces the caller's `Traceparent`. `None`, and `header` untouched, when traces are
/// off.
pub(super) fn start(
    tracer: &Tracer,
    clock: &dyn Clock,
    header: &mut BTreeMap<String, Vec<String>>,
) -> Option<Publish> {
    if !tracer.is_on() {
        return None;
    }
    let now = clock.now();
    let incoming = header
        .get(TRACEPARENT)
        .and_then(|v| v.first())
        .map(String::as_str);
    let (span, parent) = tracer.publish_span(incoming)?;
    header.insert(TRACEPARENT.to_string(), vec![span.header()]);
    Some(Publish {
        span,
        parent,
        start: now,
    })
}

impl Publish {
    /// End the span as the broker answered.
    pub(super) fn end(
        self,
        tracer: &Tracer,
        now: SystemTime,
        prepared: &Prepared,
        stored: &Result<Stored, BrokerError>,
    ) {
        let span = Span::new(
            "publish",
            Kind::Producer,
            self.span,
            self.parent.as_ref(),
            self.start,
            now,
        )
        .with("messaging.system", "nats")
        .with(
            "messaging.destination.name",
            prepared.outgoing.subject.as_str(),
        )
        .with("queue_worker.queue", prepared.queue.as_str())
        .with("queue_worker.call_id", prepared.call_id.as_str())
        .with("faas.invoked_name", prepared.function.as_str());
        let span = match stored {
            Ok(Stored::New) => span,
            Ok(_) => span.with("queue_worker.duplicate", "true"),
            Err(e) => span.failed(format!("not stored: {e}")),
        };
        tracer.record(span);
    }
}
