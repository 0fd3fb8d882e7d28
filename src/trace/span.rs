//! One finished span, as the exporter sends it: what it is, where it sits in its trace, when it
//! ran, and what it says (attributes, links, whether it failed).

use std::time::{SystemTime, UNIX_EPOCH};

use super::context::SpanContext;

/// What role a span plays (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Producer = 4,
    Client = 3,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Int(i64::from(n))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(i64::from(n))
    }
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub context: SpanContext,
    /// The parent span's id (same trace); `None` for a root.
    pub parent: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    /// Spans this one follows (an attempt links to the attempt before it).
    pub links: Vec<SpanContext>,
    /// Why it failed; `None`: it did not.
    pub error: Option<String>,
}

impl Span {
    /// A span `context` under `parent`, from `start` to `end`, with nothing said yet.
    pub fn new(
        name: &'static str,
        kind: Kind,
        context: SpanContext,
        parent: Option<&SpanContext>,
        start: SystemTime,
        end: SystemTime,
    ) -> Span {
        Span {
            context,
            parent: parent.map(|p| p.span_id),
            name,
            kind,
            start,
            end,
            attributes: Vec::new(),
            links: Vec::new(),
            error: None,
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Span {
        self.attributes.push((key, value.into()));
        self
    }

    pub fn failed(mut self, why: impl Into<String>) -> Span {
        self.error = Some(why.into());
        self
    }
}

/// Unix nanoseconds of `t` (0 before the epoch).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
