//! Spans as an OTLP `ExportTraceServiceRequest` in protobuf (the body of `POST /v1/traces`,
//! `opentelemetry/proto/collector/trace/v1`). Written by hand: the few messages and fields
//! below, by their field numbers in the OTLP protos.

use super::span::{Span, Value, unix_nanos};

/// The instrumentation scope every span is reported under.
const SCOPE: &str = "queue-worker";

/// `Status.code` of a failed span (`STATUS_CODE_ERROR`).
const STATUS_ERROR: u64 = 2;

/// The request exporting `spans` of the service described by `resource`.
pub fn export_request(resource: &[(String, String)], spans: &[Span]) -> Vec<u8> {
    let mut out = Writer::default();
    // ExportTraceServiceRequest.resource_spans = 1
    out.message(1, |rs| {
        // ResourceSpans.resource = 1: Resource.attributes = 1
        rs.message(1, |r| {
            for (k, v) in resource {
                r.message(1, |kv| key_value(kv, k, &Value::Str(v.clone())));
            }
        });
        // ResourceSpans.scope_spans = 2
        rs.message(2, |ss| {
            // ScopeSpans.scope = 1: InstrumentationScope.name = 1, .version = 2
            ss.message(1, |s| {
                s.string(1, SCOPE);
                s.string(2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                ss.message(2, |w| write_span(w, span));
            }
        });
    });
    out.0
}

/// `Span`: trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6, start 7, end 8,
/// attributes 9, links 13, status 15, flags 16.
fn write_span(w: &mut Writer, span: &Span) {
    w.bytes(1, &span.context.trace_id);
    w.bytes(2, &span.context.span_id);
    if let Some(parent) = &span.parent {
        w.bytes(4, parent);
    }
    w.string(5, span.name);
    w.varint_field(6, span.kind as u64);
    w.fixed64(7, unix_nanos(span.start));
    w.fixed64(8, unix_nanos(span.end));
    for (k, v) in &span.attributes {
        w.message(9, |kv| key_value(kv, k, v));
    }
    for link in &span.links {
        // Link: trace_id 1, span_id 2, flags 6.
        w.message(13, |l| {
            l.bytes(1, &link.trace_id);
            l.bytes(2, &link.span_id);
            l.fixed32(6, u32::from(link.flags) | REMOTE_KNOWN);
        });
    }
    if let Some(why) = &span.error {
        // Status: message 2, code 3.
        w.message(15, |s| {
            s.string(2, why);
            s.varint_field(3, STATUS_ERROR);
        });
    }
    w.fixed32(16, u32::from(span.context.flags) | REMOTE_KNOWN);
}

/// The span flags' "is remote known" bit (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`), not remote.
const REMOTE_KNOWN: u32 = 0x100;

/// `KeyValue`: key 1, value 2 (`AnyValue`: string_value 1, int_value 3).
fn key_value(w: &mut Writer, key: &str, value: &Value) {
    w.string(1, key);
    w.message(2, |v| match value {
        Value::Str(s) => v.string(1, s),
        Value::Int(n) => v.varint_field(3, *n as u64),
    });
}

/// Protobuf wire format, the few encodings used above.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    fn varint_field(&mut self, field: u32, n: u64) {
        self.key(field, 0);
        self.varint(n);
    }

    fn fixed64(&mut self, field: u32, n: u64) {
        self.key(field, 1);
        self.0.extend_from_slice(&n.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, n: u32) {
        self.key(field, 5);
        self.0.extend_from_slice(&n.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn message(&mut self, field: u32, fill: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        fill(&mut inner);
        self.bytes(field, &inner.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_keys_are_protobuf() {
        let mut w = Writer::default();
        w.varint_field(1, 150);
        assert_eq!(w.0, [0x08, 0x96, 0x01]);
        let mut w = Writer::default();
        w.string(2, "testing");
        assert_eq!(w.0[..2], [0x12, 0x07]);
        let mut w = Writer::default();
        w.fixed64(7, 1);
        assert_eq!(w.0, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
