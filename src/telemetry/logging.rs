//! Logs (SPEC §9): `console` (human) or `json` (one object per line with `ts`, `level`, `msg`
//! and the event's fields). `debug=true` adds the debug level; `RUST_LOG` overrides both.
//!
//! The vocabulary follows the OpenFaaS queue-worker: `Starting`, `Invoke`, `Invoked`, `Retry`,
//! `Posted result`, `Dead-lettered`, with camelCase fields (`callId`, `function`, ...). Message
//! bodies, header values and credentials are never logged.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogEncoding;

/// The default filter: our crate at info (debug with `debug=true`), dependencies at warn.
pub fn default_filter(debug: bool) -> String {
    let ours = if debug { "debug" } else { "info" };
    format!("warn,queue_worker={ours},sim={ours}")
}

/// Install the global subscriber (once per process; later calls are ignored).
pub fn init(encoding: LogEncoding, debug: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(debug)));
    let result = match encoding {
        LogEncoding::Console => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(std::io::stderr)
            .try_init(),
        LogEncoding::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .event_format(JsonLines)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    let _ = result;
}

/// One JSON object per event: `{"ts":..,"level":..,"msg":..,<fields>}`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", json_line(event, std::time::SystemTime::now()))
    }
}

/// The JSON object for one event (separate from the formatter so tests can call it).
pub fn json_line(event: &Event<'_>, at: std::time::SystemTime) -> String {
    let mut fields = Map::new();
    fields.insert(
        "ts".into(),
        Value::String(humantime::format_rfc3339_millis(at).to_string()),
    );
    fields.insert(
        "level".into(),
        Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
    );
    fields.insert("msg".into(), Value::String(String::new()));
    event.record(&mut JsonVisitor(&mut fields));
    Value::Object(fields).to_string()
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        let key = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        self.0.insert(key.to_string(), v);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_ts_level_msg_and_fields() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || w.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(callId = "c-1", delivery = 2u64, duration = 0.5, "Invoked");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["msg"], "Invoked");
        assert_eq!(v["level"], "info");
        assert_eq!(v["callId"], "c-1");
        assert_eq!(v["delivery"], 2);
        assert_eq!(v["duration"], 0.5);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
