//! Traces of calls across the queue (README: "Traces"): W3C trace context carried in the
//! message's `Header` from the ingress to every attempt and the callback, and spans exported
//! with OTLP over HTTP when the `OTEL_*` variables name an endpoint; off otherwise.
//!
//! The spans of one call: `publish` (the ingress storing it), `queue wait` (stored → first
//! attempt), one `invoke` per attempt (each linked to the one before), `callback`. Worker
//! spans are children of the span the message carries; their ids are derived from it
//! ([`SpanContext::derived`]), so every replica names them alike.

pub mod context;
mod export;
pub mod otlp;
pub mod settings;
pub mod span;

use std::sync::Arc;
use std::time::Duration;

pub use context::{SpanContext, TRACEPARENT};
pub use settings::{Sampler, Settings};
pub use span::{Kind, Span};

/// Records spans, or nothing when traces are off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracer(Option<Arc<On>>);

struct On {
    exporter: export::Exporter,
    sampler: Sampler,
}

impl Tracer {
    /// Traces off: nothing is recorded and no header is touched.
    pub fn off() -> Tracer {
        Tracer(None)
    }

    /// A tracer exporting as `settings` says (its task runs on the current runtime); off for
    /// `None`.
    pub fn start(settings: Option<&Settings>) -> Tracer {
        Tracer(settings.map(|s| {
            Arc::new(On {
                exporter: export::Exporter::start(s),
                sampler: s.sampler,
            })
        }))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Export `span` when its trace is sampled.
    pub fn record(&self, span: Span) {
        if let Some(on) = &self.0
            && span.context.sampled()
        {
            on.exporter.record(span);
        }
    }

    /// Send what was recorded, waiting at most `within` (at shutdown).
    pub async fn flush(&self, within: Duration) {
        if let Some(on) = &self.0 {
            on.exporter.flush(within).await;
        }
    }

    /// The ingress's `publish` span of a request whose `traceparent` is `incoming`: the
    /// caller's trace continued, or a new one. `None` when traces are off.
    pub fn publish_span(
        &self,
        incoming: Option<&str>,
    ) -> Option<(SpanContext, Option<SpanContext>)> {
        let on = self.0.as_ref()?;
        let parent = incoming.and_then(SpanContext::parse);
        let span = match &parent {
            Some(p) => p.child(context::random_span_id()),
            None => SpanContext::new_root(),
        };
        let sampled = on
            .sampler
            .sampled(parent.map(|p| p.sampled()), &span.trace_id);
        Some((span.with_sampled(sampled), parent))
    }

    /// The span a worker's spans of a call hang under: the one its message carries, else one
    /// derived from its call id. `None` when traces are off.
    pub fn call_span(&self, carried: Option<&str>, call_id: &str) -> Option<SpanContext> {
        let on = self.0.as_ref()?;
        Some(match carried.and_then(SpanContext::parse) {
            Some(p) => p.with_sampled(on.sampler.sampled(Some(p.sampled()), &p.trace_id)),
            None => {
                let c = SpanContext::of_call(call_id);
                c.with_sampled(on.sampler.sampled(None, &c.trace_id))
            }
        })
    }
}
