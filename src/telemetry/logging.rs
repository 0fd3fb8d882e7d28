//! Logs (README: "Logs"): `console` (human) or `json` (one object per line with `ts`, `level`, `msg`
//! and the event's fields). `debug=true` adds the debug level; `RUST_LOG` overrides both.
//!
//! The vocabulary follows the OpenFaaS queue-worker: `Starting`, `Invoke`, `Invoked`, `Retry`,
//! `Posted result`, `Dead-lettered`, with camelCase fields (`callId`, `function`, ...). Message
//! bodies, header values and credentials are never logged.

use std::fmt;
use std::io::Write;
use std::sync::{Condvar, LazyLock, Mutex, Once};
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
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
            .with_ansi(console_colours())
            .with_timer(LogTime)
            .fmt_fields(LogFields)
            .with_writer(stderr_sink)
            .try_init(),
        LogEncoding::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .event_format(JsonLines)
            .with_writer(stderr_sink)
            .try_init(),
    };
    if result.is_ok() {
        start_flusher();
    }
}

/// How long a log line may wait in memory before it is written to stderr.
pub const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Past this many bytes waiting, the thread that logs writes them itself (and waits for stderr,
/// as it would without the batching): memory stays bounded when stderr is slow or blocked.
pub const MAX_PENDING: usize = 256 * 1024;

/// Log lines on their way to an output: gathered in memory and written in batches, one write
/// for many lines, instead of one write system call per line (two lines per message were a
/// measurable part of the worker's CPU time, docs/performance.md). Lines are written whole and
/// in order; nothing is dropped.
pub struct BatchedLines<W> {
    pending: Mutex<Vec<u8>>,
    /// Signalled when lines arrive in an empty batch (once per batch, not per line).
    arrived: Condvar,
    /// The output and the buffer last written to it (kept for its capacity), held while
    /// writing so that batches reach the output in the order they were taken.
    out: Mutex<(W, Vec<u8>)>,
}

impl<W: Write> BatchedLines<W> {
    pub fn new(out: W) -> Self {
        BatchedLines {
            pending: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            out: Mutex::new((out, Vec::new())),
        }
    }

    /// Add one formatted event (one or more whole lines).
    pub fn push(&self, line: &[u8]) {
        let (first, full) = {
            let mut pending = lock(&self.pending);
            let first = pending.is_empty();
            pending.extend_from_slice(line);
            (first, pending.len() >= MAX_PENDING)
        };
        if full {
            self.flush();
        } else if first {
            self.arrived.notify_one();
        }
    }

    /// Block until some lines are waiting (the flusher thread's idle state: no periodic
    /// wake-ups while nothing is logged).
    pub fn wait_for_lines(&self) {
        let mut pending = lock(&self.pending);
        while pending.is_empty() {
            pending = self
                .arrived
                .wait(pending)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Write what is waiting. Errors are ignored: there is nowhere left to report them.
    pub fn flush(&self) {
        let mut out = lock(&self.out);
        let (writer, batch) = &mut *out;
        std::mem::swap(batch, &mut *lock(&self.pending));
        if !batch.is_empty() {
            let _ = writer.write_all(batch);
            let _ = writer.flush();
            batch.clear();
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

static STDERR: LazyLock<BatchedLines<std::io::Stderr>> =
    LazyLock::new(|| BatchedLines::new(std::io::stderr()));

/// Write the log lines still waiting (before the process exits or prints to stderr itself).
pub fn flush() {
    STDERR.flush();
}

/// The flusher thread (once per process), and a panic hook that writes the waiting lines
/// before the panic message.
fn start_flusher() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(|| {
                loop {
                    STDERR.wait_for_lines();
                    // Let the batch fill for a moment: one write for all the lines logged in it.
                    std::thread::sleep(FLUSH_EVERY);
                    STDERR.flush();
                }
            });
        if spawned.is_err() {
            // No thread: every line is written as it comes.
            STDERR.flush();
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    });
}

/// The `MakeWriter` for stderr: each event's text goes to the batch in one piece.
fn stderr_sink() -> SinkWriter {
    SinkWriter
}

struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        STDERR.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Colours (ANSI escapes) only when a person reads stderr on a terminal and `NO_COLOR` is not
/// set: log collectors get plain text, and formatting the escapes was a sixth of the worker's
/// own CPU per message (docs/performance.md).
fn console_colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The console format's timestamp, as tracing-subscriber's `SystemTime` timer writes it
/// (`2026-01-02T03:04:05.123456Z`), from one buffer instead of seven formatted numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTime;

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        // humantime covers 1970 to 9999 (the same text); anything else the stock timer writes.
        let in_range = now
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs() < 253_402_300_800);
        if in_range {
            write!(w, "{}", humantime::format_rfc3339_micros(now))
        } else {
            tracing_subscriber::fmt::time::SystemTime.format_time(w)
        }
    }
}

/// The console format's fields, exactly as tracing-subscriber's `DefaultFields` writes them
/// (`name=value`, space separated), but without its styling machinery when there are no
/// colours to write: that machinery was most of the cost of the two log lines per message.
/// Messages, errors, `r#` and `log.` fields, and everything when colours are on, are written
/// by `DefaultFields`' own visitor.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut v = LogVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct LogVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl LogVisitor<'_> {
    /// Whether this field is a plain `name=value` that this visitor writes itself.
    fn plain(&self, field: &Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes()
            && name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
    }

    /// Let `DefaultVisitor` write the field (it pads unless the field is skipped).
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    fn name(&mut self, name: &str) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(name)?;
        self.writer.write_char('=')
    }
}

impl Visit for LogVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if self.plain(field) {
            self.record_debug(field, &value);
        } else {
            self.delegate(field, |v| v.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.delegate(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !self.plain(field) {
            self.delegate(field, |v| v.record_debug(field, value));
            return;
        }
        self.result = self
            .name(field.name())
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
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

    /// What the console subscriber writes for a few events, with our fields and timer or
    /// tracing-subscriber's own.
    fn console_output(ours: bool, ansi: bool) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let events = || {
            let err = std::io::Error::other("boom");
            tracing::info!(
                callId = %"c-1",
                function = %"echo.openfaas-fn",
                delivery = 2u64,
                bytes = 512usize,
                url = %"/function/echo",
                "Invoke"
            );
            tracing::warn!(status = 503u16, duration = 0.25, error = %err, "Invoked");
            tracing::info!(
                r#type = "x",
                quoted = "a \"b\"",
                flag = true,
                neg = -3i64,
                "r#"
            );
            tracing::info!(
                error = &err as &(dyn std::error::Error + 'static),
                "error field"
            );
            tracing::info!("message only with {} args", 2);
            tracing::info!(a = 1u8, "\u{1b}[31mescaped\u{1b}[0m");
            let span = tracing::info_span!("call", id = 7u64, name = "x y");
            let _g = span.enter();
            tracing::info!(inner = 1u64, "in a span");
            span.record("id", 8u64);
            tracing::info!("after record");
        };
        if ours {
            let subscriber = tracing_subscriber::fmt()
                .with_target(false)
                .with_ansi(ansi)
                .with_timer(LogTime)
                .fmt_fields(LogFields)
                .with_writer(move || w.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, events);
        } else {
            let subscriber = tracing_subscriber::fmt()
                .with_target(false)
                .with_ansi(ansi)
                .with_writer(move || w.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, events);
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    /// Each line without its timestamp (the first space-separated word, or its ANSI-wrapped
    /// form).
    fn untimed(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split_once(' ')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn console_fields_and_time_are_written_as_tracing_subscriber_writes_them() {
        for ansi in [false, true] {
            let ours = console_output(true, ansi);
            let stock = console_output(false, ansi);
            assert_eq!(
                untimed(&ours),
                untimed(&stock),
                "ansi={ansi}\n{ours}\n{stock}"
            );
            assert_eq!(ours.lines().count(), 8);
        }
        // The timestamps have the same shape: 2026-01-02T03:04:05.123456Z
        let line = console_output(true, false);
        let ts = line.split(' ').next().unwrap();
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
        assert!(line.contains(" INFO Invoke callId=c-1 function=echo.openfaas-fn delivery=2"));
    }

    #[test]
    fn batched_lines_arrive_whole_in_order_and_memory_stays_bounded() {
        let out = Buf::default();
        let lines = BatchedLines::new(out.clone());
        lines.push(b"one\n");
        lines.push(b"two\n");
        assert!(out.0.lock().unwrap().is_empty(), "written before a flush");
        assert_eq!(lines.pending(), 8);
        lines.flush();
        assert_eq!(out.0.lock().unwrap().as_slice(), b"one\ntwo\n");
        assert_eq!(lines.pending(), 0);

        // Past MAX_PENDING the logging thread writes the batch itself.
        let line = vec![b'x'; 1023];
        let mut expected = b"one\ntwo\n".to_vec();
        let mut n = 0;
        while out.0.lock().unwrap().len() == expected.len() {
            lines.push(&line);
            lines.push(b"\n");
            expected.extend_from_slice(&line);
            expected.push(b'\n');
            n += 1;
            assert!(lines.pending() < MAX_PENDING, "pending grew past the limit");
            assert!(n <= MAX_PENDING / 1024 + 1, "never written");
        }
        lines.flush();
        assert_eq!(*out.0.lock().unwrap(), expected);
    }

    #[test]
    fn the_flusher_sleeps_until_lines_arrive() {
        let out = Buf::default();
        let lines = std::sync::Arc::new(BatchedLines::new(out.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = lines.clone();
        let flusher = std::thread::spawn(move || {
            l.wait_for_lines();
            l.flush();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "woke up with nothing logged"
        );
        lines.push(b"hello\n");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the waiting flusher was not woken by the first line");
        flusher.join().unwrap();
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
    }

    #[test]
    fn batched_lines_from_many_threads_are_not_interleaved() {
        let out = Buf::default();
        let lines = std::sync::Arc::new(BatchedLines::new(out.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        lines.push(
                            format!("thread {t} line {i} {}\n", "y".repeat(i % 300)).as_bytes(),
                        );
                        if i % 500 == 0 {
                            lines.flush();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        lines.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for l in text.lines() {
            let words: Vec<&str> = l.split(' ').collect();
            let t: usize = words[1].parse().unwrap();
            let i: usize = words[3].parse().unwrap();
            assert_eq!(i, next[t], "thread {t}: out of order or torn: {l}");
            assert_eq!(words[4].len(), i % 300);
            next[t] += 1;
        }
        assert_eq!(next, [2000; 4]);
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
