//! Configuration: the OpenFaaS queue-worker environment variables (also CLI flags),
//! their validation, and Go-style durations.
//!
//! [`ConfigArgs`] holds the raw text of every variable as clap read it (from a flag or from
//! the environment variable of the same name). [`Config::from_args`] validates all of them at
//! once and returns either a [`Config`] or every problem found ([`ConfigErrors`]), one line
//! per variable, naming the variable, the value and what is allowed.
//!
//! An empty value (`backoff=""`, as the OpenFaaS chart emits) means "use the default".
//! Durations use Go's `time.ParseDuration` syntax ([`parse_go_duration`]); booleans use Go's
//! `strconv.ParseBool` spellings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

/// Default NATS host (`nats_host`).
pub const DEFAULT_NATS_HOST: &str = "nats";
/// Default NATS port (`nats_port`).
pub const DEFAULT_NATS_PORT: u16 = 4222;
/// Default queue name (`queue_name`).
pub const DEFAULT_QUEUE_NAME: &str = "faas-request";
/// Default gateway URL (`gateway_url`).
pub const DEFAULT_GATEWAY_URL: &str = "http://gateway.openfaas:8080";
/// Default function namespace (`default_function_name`).
pub const DEFAULT_FUNCTION_NAMESPACE: &str = "openfaas-fn";
/// Default status codes that are retried (`retry_http_codes`).
pub const DEFAULT_RETRY_HTTP_CODES: [u16; 6] = [408, 429, 500, 502, 503, 504];
/// Default maximum request body accepted by the ingress (`max_body_bytes`): 768 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 786_432;
/// Default directory of mounted secrets (`secret_mount_path`).
pub const DEFAULT_SECRET_MOUNT_PATH: &str = "/var/openfaas/secrets";

/// Every configuration variable: the environment variable name (lowercase, as the OpenFaaS
/// chart spells it). The CLI flag is the same name with `_` replaced by `-`.
pub const ENV_VARS: [&str; 41] = [
    "nats_host",
    "nats_port",
    "nats_url",
    "nats_credentials_file",
    "queue_name",
    "function_queues",
    "nats_stream",
    "nats_durable",
    "nats_stream_replicas",
    "nats_storage",
    "max_inflight",
    "scaling_mode",
    "consumer_inactive_threshold",
    "consumer_pull_max_messages",
    "ack_wait",
    "upstream_timeout",
    "gateway_url",
    "default_function_name",
    "tls_insecure",
    "debug",
    "log_encoding",
    "limiter_enabled",
    "max_retry_attempts",
    "max_retry_wait",
    "initial_retry_wait",
    "retry_http_codes",
    "backoff",
    "retry_budget_ratio",
    "max_delay",
    "callback_retries",
    "callback_signing_secret_file",
    "callback_allowed_hosts",
    "max_message_age",
    "max_body_bytes",
    "dead_letter_max_age",
    "status_ttl",
    "metrics_port",
    "shutdown_timeout",
    "basic_auth",
    "secret_mount_path",
    "api_token_file",
];

// ---------------------------------------------------------------------------------------------
// Go durations
// ---------------------------------------------------------------------------------------------

/// What a duration may look like; appended to every duration error.
const DURATION_SYNTAX: &str =
    "in Go syntax such as 60s, 1m30s, 500ms, 2h45m or 1.5h (units: ns, us, µs, ms, s, m, h)";

/// Largest duration Go can represent: `i64::MAX` nanoseconds (2562047h47m16.854775807s).
const MAX_GO_NANOS: u64 = i64::MAX as u64;

/// `1 << 63`, the bound Go's parser checks against while accumulating.
const OVERFLOW_BOUND: u64 = 1 << 63;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DurationError {
    Empty,
    Negative,
    Invalid,
    MissingUnit,
    UnknownUnit(String),
    TooLarge,
}

impl DurationError {
    fn reason(&self) -> String {
        match self {
            DurationError::Empty => "empty duration".to_owned(),
            DurationError::Negative => "negative durations are not allowed".to_owned(),
            DurationError::Invalid => "not a duration".to_owned(),
            DurationError::MissingUnit => "missing unit".to_owned(),
            DurationError::UnknownUnit(unit) => format!("unknown unit {unit:?}"),
            DurationError::TooLarge => "too large (at most 2562047h47m16.854775807s)".to_owned(),
        }
    }
}

/// Parses a duration in Go's `time.ParseDuration` syntax: a sequence of decimal numbers, each
/// with an optional fraction and a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), such as
/// `60s`, `1m30s`, `500ms`, `2h45m` or `1.5h`. A lone `0` is allowed; a leading `+` is
/// accepted as in Go. Negative durations, the empty string and values above Go's maximum
/// (`i64::MAX` nanoseconds) are rejected with a message that says what is allowed.
///
/// Fractions are computed exactly as Go computes them, so every string yields the same
/// nanosecond count as in Go.
///
/// # Errors
///
/// A one-line message naming the problem (empty, negative, missing or unknown unit, too
/// large, not a duration) and the accepted syntax.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    parse_duration_inner(s).map_err(|e| {
        format!(
            "invalid duration {s:?}: {}; expected a duration {DURATION_SYNTAX}",
            e.reason()
        )
    })
}

fn parse_duration_inner(orig: &str) -> Result<Duration, DurationError> {
    let mut rest = orig;
    if rest.starts_with('-') {
        return Err(DurationError::Negative);
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(DurationError::Invalid);
        }

        // Integer part: [0-9]*
        let int_len = count_digits(rest);
        let mut v: u64 = 0;
        for c in rest[..int_len].bytes() {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|v| *v <= OVERFLOW_BOUND)
                .ok_or(DurationError::TooLarge)?;
        }
        rest = &rest[int_len..];
        let pre = int_len > 0;

        // Fraction: (\.[0-9]*)?  — accumulated as Go's leadingFraction does.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
            let frac_len = count_digits(rest);
            post = frac_len > 0;
            let mut overflow = false;
            for c in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                if frac > MAX_GO_NANOS / 10 {
                    overflow = true;
                    continue;
                }
                let y = frac * 10 + u64::from(c - b'0');
                if y > OVERFLOW_BOUND {
                    overflow = true;
                    continue;
                }
                frac = y;
                scale *= 10.0;
            }
            rest = &rest[frac_len..];
        }
        if !pre && !post {
            return Err(DurationError::Invalid);
        }

        // Unit: everything up to the next '.' or digit.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit);
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        if v > OVERFLOW_BOUND / unit_ns {
            return Err(DurationError::TooLarge);
        }
        v *= unit_ns;
        if frac > 0 {
            // Same float computation as Go: nanosecond-accurate for fractions of hours.
            let extra = (frac as f64 * (unit_ns as f64 / scale)) as u64;
            v = v.saturating_add(extra);
            if v > OVERFLOW_BOUND {
                return Err(DurationError::TooLarge);
            }
        }
        total = total.saturating_add(v);
        if total > OVERFLOW_BOUND {
            return Err(DurationError::TooLarge);
        }
    }
    if total > MAX_GO_NANOS {
        return Err(DurationError::TooLarge);
    }
    Ok(Duration::from_nanos(total))
}

fn count_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Formats a duration as Go's `Duration.String()` does: `0s`, `1.5µs`, `500ms`, `1m30s`,
/// `2h45m0s`, `1.000000001s`. Durations up to `i64::MAX` nanoseconds round-trip through
/// [`parse_go_duration`]; longer ones are formatted the same way but do not parse back.
pub fn format_go_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    if total < 1_000_000_000 {
        let (prec, unit) = if total < 1_000 {
            (0, "ns")
        } else if total < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (int, frac) = split_fraction(total, prec);
        return format!("{int}{frac}{unit}");
    }
    let (secs, frac) = split_fraction(total, 9);
    let s = secs % 60;
    let mins = secs / 60;
    if mins == 0 {
        return format!("{s}{frac}s");
    }
    let m = mins % 60;
    let hours = mins / 60;
    if hours == 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{hours}h{m}m{s}{frac}s")
    }
}

/// Splits `v` into its integer part and `.digits` (the last `prec` decimal digits, trailing
/// zeros removed; empty when they are all zero).
fn split_fraction(v: u128, prec: u32) -> (u128, String) {
    if prec == 0 {
        return (v, String::new());
    }
    let div = 10u128.pow(prec);
    let frac = v % div;
    if frac == 0 {
        return (v / div, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (v / div, format!(".{}", digits.trim_end_matches('0')))
}

/// Parses a boolean as Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw arguments (clap)
// ---------------------------------------------------------------------------------------------

/// The raw text of every configuration variable, read by clap from a flag (`--max-inflight 5`)
/// or, when the flag is absent, from the environment variable of the same name
/// (`max_inflight=5`). Nothing is validated here: [`Config::from_args`] does that.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "Configuration (each flag also reads the env var of the same name)")]
pub struct ConfigArgs {
    /// NATS server host name. Default: nats
    #[arg(long, env = "nats_host", hide_env_values = true, value_name = "HOST")]
    pub nats_host: Option<String>,

    /// NATS server port. Default: 4222
    #[arg(long, env = "nats_port", hide_env_values = true, value_name = "PORT")]
    pub nats_port: Option<String>,

    /// NATS server URLs, comma-separated for a cluster (nats://, tls:// or host:port);
    /// overrides nats_host and nats_port. Default: nats://{nats_host}:{nats_port}
    #[arg(long, env = "nats_url", hide_env_values = true, value_name = "URLS")]
    pub nats_url: Option<String>,

    /// NATS credentials (.creds) file. Default: none
    #[arg(
        long,
        env = "nats_credentials_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub nats_credentials_file: Option<String>,

    /// Queue name; the stream is OF_{queue_name}. Default: faas-request
    #[arg(long, env = "queue_name", hide_env_values = true, value_name = "NAME")]
    pub queue_name: Option<String>,

    /// Ingress routing of functions to queues: fn=queue,fn2.ns=queue2. Default: none (all to queue_name)
    #[arg(
        long,
        env = "function_queues",
        hide_env_values = true,
        value_name = "FN=QUEUE,..."
    )]
    pub function_queues: Option<String>,

    /// Legacy stream name, read only to migrate old streams. Default: none
    #[arg(long, env = "nats_stream", hide_env_values = true, value_name = "NAME")]
    pub nats_stream: Option<String>,

    /// Durable consumer name (static mode). Default: {queue_name}-workers
    #[arg(
        long,
        env = "nats_durable",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub nats_durable: Option<String>,

    /// Stream replicas (1 to 5; 3 recommended in a cluster). Default: 1
    #[arg(
        long,
        env = "nats_stream_replicas",
        hide_env_values = true,
        value_name = "N"
    )]
    pub nats_stream_replicas: Option<String>,

    /// Stream storage: file or memory. Default: file
    #[arg(
        long,
        env = "nats_storage",
        hide_env_values = true,
        value_name = "file|memory"
    )]
    pub nats_storage: Option<String>,

    /// Invocations in flight per worker process (1 to 65536). Default: 1
    #[arg(long, env = "max_inflight", hide_env_values = true, value_name = "N")]
    pub max_inflight: Option<String>,

    /// Consumer mode: static (one shared consumer) or function (one per function). Default: static
    #[arg(
        long,
        env = "scaling_mode",
        hide_env_values = true,
        value_name = "static|function"
    )]
    pub scaling_mode: Option<String>,

    /// Idle time after which a per-function consumer is deleted (at least 1s). Default: 30s
    #[arg(
        long,
        env = "consumer_inactive_threshold",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub consumer_inactive_threshold: Option<String>,

    /// Messages buffered per consumer pull (1 to 10000). Default: chosen for the scaling mode
    #[arg(
        long,
        env = "consumer_pull_max_messages",
        hide_env_values = true,
        value_name = "N"
    )]
    pub consumer_pull_max_messages: Option<String>,

    /// Ack wait: the liveness lease before NATS redelivers (at least 100ms). Default: 60s
    #[arg(
        long,
        env = "ack_wait",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub ack_wait: Option<String>,

    /// Timeout of one function invocation. Default: 1m
    #[arg(
        long,
        env = "upstream_timeout",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub upstream_timeout: Option<String>,

    /// Gateway base URL; functions are called at `{gateway_url}/function/{name}`.
    /// Default: `http://gateway.openfaas:8080`
    #[arg(
        long,
        env = "gateway_url",
        hide_env_values = true,
        value_name = "URL",
        help = "Gateway base URL; functions are called at {gateway_url}/function/{name}. \
                Default: http://gateway.openfaas:8080"
    )]
    pub gateway_url: Option<String>,

    /// Default function namespace. Default: openfaas-fn
    #[arg(
        long,
        env = "default_function_name",
        hide_env_values = true,
        value_name = "NAMESPACE"
    )]
    pub default_function_name: Option<String>,

    /// Skip TLS verification of callback URLs (true/false). Default: false
    #[arg(
        long,
        env = "tls_insecure",
        hide_env_values = true,
        value_name = "BOOL"
    )]
    pub tls_insecure: Option<String>,

    /// Debug logging (true/false). Default: false
    #[arg(long, env = "debug", hide_env_values = true, value_name = "BOOL")]
    pub debug: Option<String>,

    /// Log format: console or json. Default: console
    #[arg(
        long,
        env = "log_encoding",
        hide_env_values = true,
        value_name = "console|json"
    )]
    pub log_encoding: Option<String>,

    /// Adaptive per-function concurrency limit (true/false). Default: true
    #[arg(
        long,
        env = "limiter_enabled",
        hide_env_values = true,
        value_name = "BOOL"
    )]
    pub limiter_enabled: Option<String>,

    /// Attempts per invocation, including the first (1 to 10000). Default: 10
    #[arg(
        long,
        env = "max_retry_attempts",
        hide_env_values = true,
        value_name = "N"
    )]
    pub max_retry_attempts: Option<String>,

    /// Longest delay between retries. Default: 120s
    #[arg(
        long,
        env = "max_retry_wait",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub max_retry_wait: Option<String>,

    /// First delay between retries, doubled each attempt (at most max_retry_wait). Default: 10s
    #[arg(
        long,
        env = "initial_retry_wait",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub initial_retry_wait: Option<String>,

    /// HTTP status codes that are retried, comma-separated. Default: 408,429,500,502,503,504
    #[arg(
        long,
        env = "retry_http_codes",
        hide_env_values = true,
        value_name = "CODES"
    )]
    pub retry_http_codes: Option<String>,

    /// Retry delay jitter: exponential (none), full or equal. Default: exponential
    #[arg(
        long,
        env = "backoff",
        hide_env_values = true,
        value_name = "exponential|full|equal"
    )]
    pub backoff: Option<String>,

    /// Retries per function as a fraction of recent first attempts (0 to 100). Default: 0.2
    #[arg(
        long,
        env = "retry_budget_ratio",
        hide_env_values = true,
        value_name = "RATIO"
    )]
    pub retry_budget_ratio: Option<String>,

    /// Longest delay a caller may ask for. Default: 24h
    #[arg(
        long,
        env = "max_delay",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub max_delay: Option<String>,

    /// Retries of a failed callback (0 to 100). Default: 3
    #[arg(
        long,
        env = "callback_retries",
        hide_env_values = true,
        value_name = "N"
    )]
    pub callback_retries: Option<String>,

    /// File holding the secret used to sign callbacks. Default: none (unsigned)
    #[arg(
        long,
        env = "callback_signing_secret_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub callback_signing_secret_file: Option<String>,

    /// Hosts callbacks may go to, comma-separated, * wildcards allowed. Default: none (all hosts)
    #[arg(
        long,
        env = "callback_allowed_hosts",
        hide_env_values = true,
        value_name = "HOSTS"
    )]
    pub callback_allowed_hosts: Option<String>,

    /// Invocations older than this are not run but dead-lettered (0 = off). Default: 0
    #[arg(
        long,
        env = "max_message_age",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub max_message_age: Option<String>,

    /// Largest request body the ingress accepts, in bytes (1 to 67108864). Default: 786432
    #[arg(
        long,
        env = "max_body_bytes",
        hide_env_values = true,
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<String>,

    /// How long dead letters are kept. Default: 168h
    #[arg(
        long,
        env = "dead_letter_max_age",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub dead_letter_max_age: Option<String>,

    /// How long call status is kept. Default: 24h
    #[arg(
        long,
        env = "status_ttl",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub status_ttl: Option<String>,

    /// Port of /metrics, /healthz and /readyz (0 = any free port). Default: 8081
    #[arg(
        long,
        env = "metrics_port",
        hide_env_values = true,
        value_name = "PORT"
    )]
    pub metrics_port: Option<String>,

    /// Time in-flight invocations get to finish on SIGTERM. Default: 30s
    #[arg(
        long,
        env = "shutdown_timeout",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub shutdown_timeout: Option<String>,

    /// Require basic auth (credentials from secret_mount_path) on the ingress and API. Default: false
    #[arg(long, env = "basic_auth", hide_env_values = true, value_name = "BOOL")]
    pub basic_auth: Option<String>,

    /// Directory of the basic-auth secrets. Default: /var/openfaas/secrets
    #[arg(
        long,
        env = "secret_mount_path",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub secret_mount_path: Option<String>,

    /// File holding a bearer token required on the ingress and API. Default: none
    #[arg(
        long,
        env = "api_token_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub api_token_file: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Enumerations
// ---------------------------------------------------------------------------------------------

/// Stream storage (`nats_storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Storage {
    /// File storage: survives broker restarts.
    #[default]
    File,
    /// Memory storage: lost when the broker restarts.
    Memory,
}

impl Storage {
    /// The configuration spelling: `file` or `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }
}

/// How consumers are laid out (`scaling_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScalingMode {
    /// One durable consumer shared by every replica; FIFO.
    #[default]
    Static,
    /// One consumer per function with pending messages, scheduled fairly.
    Function,
}

impl ScalingMode {
    /// The configuration spelling: `static` or `function`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScalingMode::Static => "static",
            ScalingMode::Function => "function",
        }
    }
}

/// Log format (`log_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogEncoding {
    /// Human-readable lines.
    #[default]
    Console,
    /// One JSON object per line.
    Json,
}

impl LogEncoding {
    /// The configuration spelling: `console` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogEncoding::Console => "console",
            LogEncoding::Json => "json",
        }
    }
}

/// Jitter applied to the retry delay (`backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backoff {
    /// The computed delay as is (no jitter).
    #[default]
    Exponential,
    /// Uniformly 0–100% of the computed delay.
    Full,
    /// Uniformly 50–100% of the computed delay.
    Equal,
}

impl Backoff {
    /// The configuration spelling: `exponential`, `full` or `equal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Exponential => "exponential",
            Backoff::Full => "full",
            Backoff::Equal => "equal",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Storage, ScalingMode, LogEncoding, Backoff);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One invalid variable: its name, the value given and what is allowed.
///
/// Displays as one line: `invalid max_inflight="abc": expected a whole number from 1 to 65536`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}={value:?}: {allowed}")]
pub struct ConfigError {
    /// The variable (environment variable name, e.g. `max_inflight`).
    pub name: &'static str,
    /// The value as given (credentials inside `nats_url` are masked).
    pub value: String,
    /// What is allowed, and why the value is not.
    pub allowed: String,
}

/// Every invalid variable found by [`Config::from_args`]; displays one line per error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn join_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------------------------

/// The validated configuration. Build it with [`Config::from_args`]; [`Config::default`] has
/// every default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// NATS server URLs (`nats_url`, else `nats://{nats_host}:{nats_port}`), each with a scheme
    /// (`nats://` or `tls://`).
    pub nats_urls: Vec<String>,
    /// NATS credentials file (`nats_credentials_file`); not read here.
    pub nats_credentials_file: Option<PathBuf>,
    /// Queue name (`queue_name`, default `faas-request`): 1 to 64 of `[A-Za-z0-9_-]`.
    pub queue_name: String,
    /// Function → queue routing (`function_queues`); keys are `name` or `name.namespace`.
    pub function_queues: BTreeMap<String, String>,
    /// Legacy stream name (`nats_stream`), read only to migrate.
    pub nats_stream: Option<String>,
    /// Durable consumer name (`nats_durable`, default `{queue_name}-workers`).
    pub nats_durable: String,
    /// Stream replicas (`nats_stream_replicas`, 1 to 5, default 1).
    pub nats_stream_replicas: usize,
    /// Stream storage (`nats_storage`, default file).
    pub nats_storage: Storage,
    /// Invocations in flight per process (`max_inflight`, 1 to 65536, default 1).
    pub max_inflight: usize,
    /// Consumer layout (`scaling_mode`, default static).
    pub scaling_mode: ScalingMode,
    /// Idle time before a per-function consumer is deleted (default 30s, at least 1s).
    pub consumer_inactive_threshold: Duration,
    /// Messages buffered per consumer pull (1 to 10000); `None` = chosen by mode.
    pub consumer_pull_max_messages: Option<usize>,
    /// Ack wait lease (`ack_wait`, default 60s, at least 100ms).
    pub ack_wait: Duration,
    /// Per-attempt invocation timeout (`upstream_timeout`, default 1m, greater than 0).
    pub upstream_timeout: Duration,
    /// Gateway base URL, http or https, without a trailing `/` (default `http://gateway.openfaas:8080`).
    pub gateway_url: String,
    /// Default function namespace (`default_function_name`, default `openfaas-fn`).
    pub default_function_name: String,
    /// Skip TLS verification for callbacks (`tls_insecure`, default false).
    pub tls_insecure: bool,
    /// Debug logging (`debug`, default false).
    pub debug: bool,
    /// Log format (`log_encoding`, default console).
    pub log_encoding: LogEncoding,
    /// Adaptive per-function concurrency (`limiter_enabled`, default true).
    pub limiter_enabled: bool,
    /// Attempts per invocation (`max_retry_attempts`, 1 to 10000, default 10).
    pub max_retry_attempts: u32,
    /// Longest retry delay (`max_retry_wait`, default 120s).
    pub max_retry_wait: Duration,
    /// First retry delay (`initial_retry_wait`, default 10s; 0 allowed; at most `max_retry_wait`).
    pub initial_retry_wait: Duration,
    /// Retried status codes (`retry_http_codes`), sorted and deduplicated, each 100 to 599.
    pub retry_http_codes: Vec<u16>,
    /// Retry delay jitter (`backoff`, default exponential).
    pub backoff: Backoff,
    /// Retry budget as a fraction of recent first attempts (`retry_budget_ratio`, 0 to 100, default 0.2).
    pub retry_budget_ratio: f64,
    /// Longest delay a caller may request (`max_delay`, default 24h).
    pub max_delay: Duration,
    /// Retries of a failed callback (`callback_retries`, 0 to 100, default 3).
    pub callback_retries: u32,
    /// Callback signing secret file (`callback_signing_secret_file`); not read here.
    pub callback_signing_secret_file: Option<PathBuf>,
    /// Allowed callback host patterns, lowercased (`callback_allowed_hosts`); empty = all.
    pub callback_allowed_hosts: Vec<String>,
    /// Maximum age of an invocation before it expires (`max_message_age`); `None` = off.
    pub max_message_age: Option<Duration>,
    /// Largest ingress body in bytes (`max_body_bytes`, 1 to 67108864, default 786432).
    pub max_body_bytes: usize,
    /// Dead-letter retention (`dead_letter_max_age`, default 168h, greater than 0).
    pub dead_letter_max_age: Duration,
    /// Call status retention (`status_ttl`, default 24h, greater than 0).
    pub status_ttl: Duration,
    /// Metrics and health port (`metrics_port`, default 8081; 0 = ephemeral).
    pub metrics_port: u16,
    /// Grace period for in-flight invocations at shutdown (`shutdown_timeout`, default 30s).
    pub shutdown_timeout: Duration,
    /// Require basic auth on the ingress and API (`basic_auth`, default false).
    pub basic_auth: bool,
    /// Directory of mounted secrets (`secret_mount_path`, default `/var/openfaas/secrets`).
    pub secret_mount_path: PathBuf,
    /// Bearer token file for the ingress and API (`api_token_file`); not read here.
    pub api_token_file: Option<PathBuf>,
}

impl Default for Config {
    /// Every default, as [`Config::from_args`] gives for an empty [`ConfigArgs`].
    fn default() -> Self {
        Config {
            nats_urls: vec![format!("nats://{DEFAULT_NATS_HOST}:{DEFAULT_NATS_PORT}")],
            nats_credentials_file: None,
            queue_name: DEFAULT_QUEUE_NAME.to_owned(),
            function_queues: BTreeMap::new(),
            nats_stream: None,
            nats_durable: format!("{DEFAULT_QUEUE_NAME}-workers"),
            nats_stream_replicas: 1,
            nats_storage: Storage::File,
            max_inflight: 1,
            scaling_mode: ScalingMode::Static,
            consumer_inactive_threshold: Duration::from_secs(30),
            consumer_pull_max_messages: None,
            ack_wait: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
            gateway_url: DEFAULT_GATEWAY_URL.to_owned(),
            default_function_name: DEFAULT_FUNCTION_NAMESPACE.to_owned(),
            tls_insecure: false,
            debug: false,
            log_encoding: LogEncoding::Console,
            limiter_enabled: true,
            max_retry_attempts: 10,
            max_retry_wait: Duration::from_secs(120),
            initial_retry_wait: Duration::from_secs(10),
            retry_http_codes: DEFAULT_RETRY_HTTP_CODES.to_vec(),
            backoff: Backoff::Exponential,
            retry_budget_ratio: 0.2,
            max_delay: Duration::from_secs(24 * 3600),
            callback_retries: 3,
            callback_signing_secret_file: None,
            callback_allowed_hosts: Vec::new(),
            max_message_age: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            dead_letter_max_age: Duration::from_secs(168 * 3600),
            status_ttl: Duration::from_secs(24 * 3600),
            metrics_port: 8081,
            shutdown_timeout: Duration::from_secs(30),
            basic_auth: false,
            secret_mount_path: PathBuf::from(DEFAULT_SECRET_MOUNT_PATH),
            api_token_file: None,
        }
    }
}

impl Config {
    /// Validates every variable of `args`, filling in defaults for absent or empty ones.
    ///
    /// # Errors
    ///
    /// Every problem found, one [`ConfigError`] per invalid variable (a cross-field conflict
    /// names one of the variables involved).
    pub fn from_args(args: &ConfigArgs) -> Result<Config, ConfigErrors> {
        let d = Config::default();
        let mut v = Validator::default();

        let nats_host = v.nats_host(&args.nats_host);
        let nats_port = v.uint(
            "nats_port",
            &args.nats_port,
            u64::from(DEFAULT_NATS_PORT),
            1,
            65_535,
            "a port number",
        );
        let nats_urls = v
            .nats_urls(&args.nats_url)
            .unwrap_or_else(|| vec![format!("nats://{nats_host}:{nats_port}")]);
        let queue_name = v
            .queue_name("queue_name", &args.queue_name)
            .unwrap_or(d.queue_name);
        let nats_durable = v
            .nats_name("nats_durable", &args.nats_durable)
            .unwrap_or_else(|| format!("{queue_name}-workers"));

        let max_retry_wait = v.duration(
            "max_retry_wait",
            &args.max_retry_wait,
            d.max_retry_wait,
            Bound::Any,
        );
        let initial_retry_wait = v.duration(
            "initial_retry_wait",
            &args.initial_retry_wait,
            d.initial_retry_wait,
            Bound::Any,
        );
        v.check_retry_waits(args, initial_retry_wait, max_retry_wait);

        let max_message_age = v.duration(
            "max_message_age",
            &args.max_message_age,
            Duration::ZERO,
            Bound::Any,
        );

        let config = Config {
            nats_urls,
            nats_credentials_file: path(&args.nats_credentials_file),
            function_queues: v.function_queues(&args.function_queues),
            nats_stream: v.nats_name("nats_stream", &args.nats_stream),
            nats_durable,
            nats_stream_replicas: to_usize(v.uint(
                "nats_stream_replicas",
                &args.nats_stream_replicas,
                1,
                1,
                5,
                "a whole number",
            )),
            nats_storage: v.choice(
                "nats_storage",
                &args.nats_storage,
                d.nats_storage,
                &[Storage::File, Storage::Memory],
                |s| s.as_str(),
            ),
            max_inflight: to_usize(v.uint(
                "max_inflight",
                &args.max_inflight,
                1,
                1,
                65_536,
                "a whole number",
            )),
            scaling_mode: v.choice(
                "scaling_mode",
                &args.scaling_mode,
                d.scaling_mode,
                &[ScalingMode::Static, ScalingMode::Function],
                |s| s.as_str(),
            ),
            consumer_inactive_threshold: v.duration(
                "consumer_inactive_threshold",
                &args.consumer_inactive_threshold,
                d.consumer_inactive_threshold,
                Bound::AtLeast(Duration::from_secs(1)),
            ),
            consumer_pull_max_messages: raw(&args.consumer_pull_max_messages).map(|_| {
                to_usize(v.uint(
                    "consumer_pull_max_messages",
                    &args.consumer_pull_max_messages,
                    1,
                    1,
                    10_000,
                    "a whole number",
                ))
            }),
            ack_wait: v.duration(
                "ack_wait",
                &args.ack_wait,
                d.ack_wait,
                Bound::AtLeast(Duration::from_millis(100)),
            ),
            upstream_timeout: v.duration(
                "upstream_timeout",
                &args.upstream_timeout,
                d.upstream_timeout,
                Bound::Positive,
            ),
            gateway_url: v.gateway_url(&args.gateway_url).unwrap_or(d.gateway_url),
            default_function_name: v
                .namespace(&args.default_function_name)
                .unwrap_or(d.default_function_name),
            tls_insecure: v.boolean("tls_insecure", &args.tls_insecure, d.tls_insecure),
            debug: v.boolean("debug", &args.debug, d.debug),
            log_encoding: v.choice(
                "log_encoding",
                &args.log_encoding,
                d.log_encoding,
                &[LogEncoding::Console, LogEncoding::Json],
                |s| s.as_str(),
            ),
            limiter_enabled: v.boolean("limiter_enabled", &args.limiter_enabled, d.limiter_enabled),
            max_retry_attempts: to_u32(v.uint(
                "max_retry_attempts",
                &args.max_retry_attempts,
                10,
                1,
                10_000,
                "a whole number",
            )),
            max_retry_wait,
            initial_retry_wait,
            retry_http_codes: v
                .retry_http_codes(&args.retry_http_codes)
                .unwrap_or(d.retry_http_codes),
            backoff: v.choice(
                "backoff",
                &args.backoff,
                d.backoff,
                &[Backoff::Exponential, Backoff::Full, Backoff::Equal],
                |b| b.as_str(),
            ),
            retry_budget_ratio: v.ratio(&args.retry_budget_ratio, d.retry_budget_ratio),
            max_delay: v.duration("max_delay", &args.max_delay, d.max_delay, Bound::Any),
            callback_retries: to_u32(v.uint(
                "callback_retries",
                &args.callback_retries,
                3,
                0,
                100,
                "a whole number",
            )),
            callback_signing_secret_file: path(&args.callback_signing_secret_file),
            callback_allowed_hosts: v.allowed_hosts(&args.callback_allowed_hosts),
            max_message_age: (!max_message_age.is_zero()).then_some(max_message_age),
            max_body_bytes: to_usize(v.uint(
                "max_body_bytes",
                &args.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES as u64,
                1,
                64 * 1024 * 1024,
                "a whole number of bytes",
            )),
            dead_letter_max_age: v.duration(
                "dead_letter_max_age",
                &args.dead_letter_max_age,
                d.dead_letter_max_age,
                Bound::Positive,
            ),
            status_ttl: v.duration(
                "status_ttl",
                &args.status_ttl,
                d.status_ttl,
                Bound::Positive,
            ),
            metrics_port: u16::try_from(v.uint(
                "metrics_port",
                &args.metrics_port,
                u64::from(d.metrics_port),
                0,
                65_535,
                "a port number",
            ))
            .unwrap_or(d.metrics_port),
            shutdown_timeout: v.duration(
                "shutdown_timeout",
                &args.shutdown_timeout,
                d.shutdown_timeout,
                Bound::Any,
            ),
            basic_auth: v.boolean("basic_auth", &args.basic_auth, d.basic_auth),
            secret_mount_path: path(&args.secret_mount_path).unwrap_or(d.secret_mount_path),
            api_token_file: path(&args.api_token_file),
            queue_name,
        };

        if v.errors.is_empty() {
            Ok(config)
        } else {
            // Report in the documented order of the variables.
            let position = |name: &str| ENV_VARS.iter().position(|n| *n == name);
            v.errors.sort_by_key(|e| position(e.name));
            Err(ConfigErrors(v.errors))
        }
    }

    /// The stream of this worker's queue: `OF_{queue_name}`.
    pub fn stream_name(&self) -> String {
        Self::stream_name_for(&self.queue_name)
    }

    /// The stream of any queue: `OF_{queue}`.
    pub fn stream_name_for(queue: &str) -> String {
        format!("OF_{queue}")
    }

    /// The dead-letter stream of this worker's queue: `OF_{queue_name}_DLQ`.
    pub fn dlq_stream_name(&self) -> String {
        Self::dlq_stream_name_for(&self.queue_name)
    }

    /// The dead-letter stream of any queue: `OF_{queue}_DLQ`.
    pub fn dlq_stream_name_for(queue: &str) -> String {
        format!("OF_{queue}_DLQ")
    }

    /// The queue an invocation of `function` (`name` or `name.namespace`) goes to, from
    /// `function_queues`: the exact key first; then, for `name.namespace`, the bare `name`
    /// (split on the last `.`), and for a bare `name`, `name.{default_function_name}`;
    /// otherwise `queue_name`.
    pub fn queue_for_function(&self, function: &str) -> &str {
        if let Some(queue) = self.function_queues.get(function) {
            return queue;
        }
        let fallback = match function.rsplit_once('.') {
            Some((name, _namespace)) => self.function_queues.get(name),
            None => self
                .function_queues
                .get(&format!("{function}.{}", self.default_function_name)),
        };
        fallback.map_or(&self.queue_name, |queue| queue)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------------

/// The trimmed value, or `None` when absent or blank (blank = use the default).
fn raw(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn path(value: &Option<String>) -> Option<PathBuf> {
    raw(value).map(PathBuf::from)
}

// The validated ranges fit every platform this builds for (usize >= 32 bits).
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Lower bound of a duration variable.
#[derive(Clone, Copy)]
enum Bound {
    Any,
    Positive,
    AtLeast(Duration),
}

impl Bound {
    fn holds(self, d: Duration) -> bool {
        match self {
            Bound::Any => true,
            Bound::Positive => !d.is_zero(),
            Bound::AtLeast(min) => d >= min,
        }
    }

    fn describe(self) -> String {
        match self {
            Bound::Any => "expected a duration".to_owned(),
            Bound::Positive => "expected a duration greater than 0".to_owned(),
            Bound::AtLeast(min) => format!(
                "expected a duration of at least {}",
                format_go_duration(min)
            ),
        }
    }
}

const QUEUE_NAME_RULE: &str = "1 to 64 characters of A-Z, a-z, 0-9, '-' and '_', not ending in _DLQ (reserved for dead letters)";

fn is_queue_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        // `<queue>_DLQ` names the dead letters of `<queue>` (stream `OF_<queue>_DLQ`).
        && !s.ends_with("_DLQ")
}

/// A function as written in `function_queues`: `name` or `name.namespace`.
fn is_function_key(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}

/// Masks the user-info part (`user:password@`) of every URL in a comma list.
fn mask_credentials(list: &str) -> String {
    list.split(',')
        .map(|item| {
            let start = item.find("://").map_or(0, |i| i + 3);
            match item[start..].rfind('@') {
                Some(at) => format!("{}***{}", &item[..start], &item[start + at..]),
                None => item.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Collects errors while reading variables.
#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
}

impl Validator {
    fn fail(&mut self, name: &'static str, value: &Option<String>, allowed: impl Into<String>) {
        self.errors.push(ConfigError {
            name,
            value: value.clone().unwrap_or_default(),
            allowed: allowed.into(),
        });
    }

    fn uint(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        default: u64,
        min: u64,
        max: u64,
        what: &str,
    ) -> u64 {
        let Some(s) = raw(value) else { return default };
        match s.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.fail(name, value, format!("expected {what} from {min} to {max}"));
                default
            }
        }
    }

    fn duration(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        default: Duration,
        bound: Bound,
    ) -> Duration {
        let Some(s) = raw(value) else { return default };
        match parse_duration_inner(s) {
            Ok(d) if bound.holds(d) => d,
            Ok(_) => {
                self.fail(
                    name,
                    value,
                    format!("{} {DURATION_SYNTAX}", bound.describe()),
                );
                default
            }
            Err(e) => {
                self.fail(
                    name,
                    value,
                    format!("{}; {} {DURATION_SYNTAX}", e.reason(), bound.describe()),
                );
                default
            }
        }
    }

    fn boolean(&mut self, name: &'static str, value: &Option<String>, default: bool) -> bool {
        let Some(s) = raw(value) else { return default };
        parse_go_bool(s).unwrap_or_else(|| {
            self.fail(
                name,
                value,
                "expected true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)",
            );
            default
        })
    }

    fn choice<T: Copy>(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        default: T,
        options: &[T],
        spell: fn(&T) -> &'static str,
    ) -> T {
        let Some(s) = raw(value) else { return default };
        if let Some(found) = options.iter().find(|o| spell(o).eq_ignore_ascii_case(s)) {
            return *found;
        }
        let names: Vec<&str> = options.iter().map(spell).collect();
        self.fail(
            name,
            value,
            format!("expected one of: {}", names.join(", ")),
        );
        default
    }

    fn nats_host(&mut self, value: &Option<String>) -> String {
        let Some(s) = raw(value) else {
            return DEFAULT_NATS_HOST.to_owned();
        };
        if let Ok(ip) = s.parse::<std::net::Ipv6Addr>() {
            return format!("[{ip}]");
        }
        let ok =
            !s.contains(['/', ':', '@', ',', '?', '#']) || (s.starts_with('[') && s.ends_with(']'));
        if ok && url::Host::parse(s).is_ok() {
            return s.to_owned();
        }
        self.fail(
            "nats_host",
            value,
            "expected a host name or IP address, without scheme or port (set nats_port, or nats_url for a full URL)",
        );
        DEFAULT_NATS_HOST.to_owned()
    }

    fn nats_urls(&mut self, value: &Option<String>) -> Option<Vec<String>> {
        let s = raw(value)?;
        const RULE: &str = "expected a comma-separated list of NATS server URLs: nats://host:port, tls://host:port or host:port";
        let mut urls = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let candidate = if item.contains("://") {
                item.to_owned()
            } else {
                format!("nats://{item}")
            };
            match check_nats_url(&candidate) {
                Ok(()) => urls.push(candidate),
                Err(why) => {
                    self.push_masked(
                        "nats_url",
                        value,
                        format!("{why} in {:?}; {RULE}", mask_credentials(item)),
                    );
                    return None;
                }
            }
        }
        if urls.is_empty() {
            self.push_masked("nats_url", value, RULE.to_owned());
            return None;
        }
        Some(urls)
    }

    fn push_masked(&mut self, name: &'static str, value: &Option<String>, allowed: String) {
        self.errors.push(ConfigError {
            name,
            value: mask_credentials(value.as_deref().unwrap_or_default()),
            allowed,
        });
    }

    fn queue_name(&mut self, name: &'static str, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        if is_queue_name(s) {
            Some(s.to_owned())
        } else {
            self.fail(
                name,
                value,
                format!("expected a queue name: {QUEUE_NAME_RULE}"),
            );
            None
        }
    }

    /// A NATS stream or consumer name.
    fn nats_name(&mut self, name: &'static str, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        let ok = s.len() <= 255
            && s.chars().all(|c| {
                !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>' | '/' | '\\')
            });
        if ok {
            Some(s.to_owned())
        } else {
            self.fail(
                name,
                value,
                "expected a NATS name: up to 255 characters without spaces, '.', '*', '>', '/' or '\\'",
            );
            None
        }
    }

    fn function_queues(&mut self, value: &Option<String>) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let Some(s) = raw(value) else { return map };
        let rule = format!(
            "expected comma-separated function=queue pairs such as pdf-gen=slow-fns,resize.openfaas-fn=images \
             (function: name or name.namespace; queue: {QUEUE_NAME_RULE}; each function once)"
        );
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let problem = match pair.split_once('=') {
                None => Some(format!("{pair:?} has no '='")),
                Some((function, queue)) => {
                    let (function, queue) = (function.trim(), queue.trim());
                    if !is_function_key(function) {
                        Some(format!("bad function {function:?}"))
                    } else if !is_queue_name(queue) {
                        Some(format!("bad queue {queue:?}"))
                    } else if map.insert(function.to_owned(), queue.to_owned()).is_some() {
                        Some(format!("function {function:?} listed twice"))
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                self.fail("function_queues", value, format!("{problem}; {rule}"));
                return BTreeMap::new();
            }
        }
        map
    }

    fn gateway_url(&mut self, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        let parsed = url::Url::parse(s).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && u.fragment().is_none()
        });
        match parsed {
            Some(u) => Some(u.as_str().trim_end_matches('/').to_owned()),
            None => {
                self.fail(
                    "gateway_url",
                    value,
                    "expected an absolute http:// or https:// URL without query or fragment, e.g. http://gateway.openfaas:8080",
                );
                None
            }
        }
    }

    fn namespace(&mut self, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        let ok = (1..=253).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if ok {
            Some(s.to_owned())
        } else {
            self.fail(
                "default_function_name",
                value,
                "expected a namespace: 1 to 253 characters of A-Z, a-z, 0-9, '-' and '_' (no '.')",
            );
            None
        }
    }

    fn retry_http_codes(&mut self, value: &Option<String>) -> Option<Vec<u16>> {
        let s = raw(value)?;
        let codes: Option<Vec<u16>> = s
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| c.parse::<u16>().ok().filter(|c| (100..=599).contains(c)))
            .collect();
        match codes {
            Some(mut codes) if !codes.is_empty() => {
                codes.sort_unstable();
                codes.dedup();
                Some(codes)
            }
            _ => {
                self.fail(
                    "retry_http_codes",
                    value,
                    "expected a comma-separated list of HTTP status codes from 100 to 599, e.g. 408,429,500,502,503,504",
                );
                None
            }
        }
    }

    fn ratio(&mut self, value: &Option<String>, default: f64) -> f64 {
        let Some(s) = raw(value) else { return default };
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && (0.0..=100.0).contains(&r) => r.abs(),
            _ => {
                self.fail(
                    "retry_budget_ratio",
                    value,
                    "expected a number from 0 to 100, e.g. 0.2",
                );
                default
            }
        }
    }

    fn allowed_hosts(&mut self, value: &Option<String>) -> Vec<String> {
        let Some(s) = raw(value) else {
            return Vec::new();
        };
        let mut hosts = Vec::new();
        for item in s.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let host = item.to_ascii_lowercase();
            let ok = host.bytes().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'.' | b'-' | b'_' | b'*' | b':' | b'[' | b']')
            });
            if !ok {
                self.fail(
                    "callback_allowed_hosts",
                    value,
                    format!(
                        "bad host {item:?}; expected a comma-separated list of host names or IP addresses \
                         (not URLs), '*' wildcards allowed, e.g. *.example.com,hooks.internal"
                    ),
                );
                return Vec::new();
            }
            hosts.push(host);
        }
        hosts
    }

    /// `initial_retry_wait` must not exceed `max_retry_wait`; names the variable that was set.
    fn check_retry_waits(&mut self, args: &ConfigArgs, initial: Duration, max: Duration) {
        if initial <= max {
            return;
        }
        let already =
            |e: &ConfigError| e.name == "initial_retry_wait" || e.name == "max_retry_wait";
        if self.errors.iter().any(already) {
            return;
        }
        if raw(&args.initial_retry_wait).is_some() {
            self.fail(
                "initial_retry_wait",
                &args.initial_retry_wait,
                format!(
                    "must not exceed max_retry_wait ({})",
                    format_go_duration(max)
                ),
            );
        } else {
            self.fail(
                "max_retry_wait",
                &args.max_retry_wait,
                format!(
                    "must be at least initial_retry_wait ({})",
                    format_go_duration(initial)
                ),
            );
        }
    }
}

/// Checks one NATS server URL (with scheme); returns why it is not acceptable.
fn check_nats_url(candidate: &str) -> Result<(), &'static str> {
    let u = url::Url::parse(candidate).map_err(|_| "not a URL")?;
    if !matches!(u.scheme(), "nats" | "tls") {
        return Err("unsupported scheme");
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if u.port() == Some(0) {
        return Err("port 0");
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
        return Err("unexpected path, query or fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use proptest::prelude::*;

    /// A command that flattens [`ConfigArgs`], as the binary does.
    #[derive(Parser, Debug)]
    #[command(name = "qw-config-test")]
    struct TestCli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    /// The raw field of `args` for the variable `name`.
    fn field<'a>(args: &'a mut ConfigArgs, name: &str) -> &'a mut Option<String> {
        match name {
            "nats_host" => &mut args.nats_host,
            "nats_port" => &mut args.nats_port,
            "nats_url" => &mut args.nats_url,
            "nats_credentials_file" => &mut args.nats_credentials_file,
            "queue_name" => &mut args.queue_name,
            "function_queues" => &mut args.function_queues,
            "nats_stream" => &mut args.nats_stream,
            "nats_durable" => &mut args.nats_durable,
            "nats_stream_replicas" => &mut args.nats_stream_replicas,
            "nats_storage" => &mut args.nats_storage,
            "max_inflight" => &mut args.max_inflight,
            "scaling_mode" => &mut args.scaling_mode,
            "consumer_inactive_threshold" => &mut args.consumer_inactive_threshold,
            "consumer_pull_max_messages" => &mut args.consumer_pull_max_messages,
            "ack_wait" => &mut args.ack_wait,
            "upstream_timeout" => &mut args.upstream_timeout,
            "gateway_url" => &mut args.gateway_url,
            "default_function_name" => &mut args.default_function_name,
            "tls_insecure" => &mut args.tls_insecure,
            "debug" => &mut args.debug,
            "log_encoding" => &mut args.log_encoding,
            "limiter_enabled" => &mut args.limiter_enabled,
            "max_retry_attempts" => &mut args.max_retry_attempts,
            "max_retry_wait" => &mut args.max_retry_wait,
            "initial_retry_wait" => &mut args.initial_retry_wait,
            "retry_http_codes" => &mut args.retry_http_codes,
            "backoff" => &mut args.backoff,
            "retry_budget_ratio" => &mut args.retry_budget_ratio,
            "max_delay" => &mut args.max_delay,
            "callback_retries" => &mut args.callback_retries,
            "callback_signing_secret_file" => &mut args.callback_signing_secret_file,
            "callback_allowed_hosts" => &mut args.callback_allowed_hosts,
            "max_message_age" => &mut args.max_message_age,
            "max_body_bytes" => &mut args.max_body_bytes,
            "dead_letter_max_age" => &mut args.dead_letter_max_age,
            "status_ttl" => &mut args.status_ttl,
            "metrics_port" => &mut args.metrics_port,
            "shutdown_timeout" => &mut args.shutdown_timeout,
            "basic_auth" => &mut args.basic_auth,
            "secret_mount_path" => &mut args.secret_mount_path,
            "api_token_file" => &mut args.api_token_file,
            other => panic!("unknown variable {other}"),
        }
    }

    fn args_with(pairs: &[(&str, &str)]) -> ConfigArgs {
        let mut args = ConfigArgs::default();
        for (name, value) in pairs {
            *field(&mut args, name) = Some((*value).to_owned());
        }
        args
    }

    fn config_with(pairs: &[(&str, &str)]) -> Config {
        match Config::from_args(&args_with(pairs)) {
            Ok(c) => c,
            Err(e) => panic!("{pairs:?} should be valid, got:\n{e}"),
        }
    }

    fn errors_with(pairs: &[(&str, &str)]) -> Vec<ConfigError> {
        match Config::from_args(&args_with(pairs)) {
            Ok(c) => panic!("{pairs:?} should be invalid, got {c:?}"),
            Err(ConfigErrors(errors)) => errors,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    // ----- durations -----

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("0s", 0),
            ("60s", 60_000_000_000),
            ("1m30s", 90_000_000_000),
            ("500ms", 500_000_000),
            ("2h45m", 9_900_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("1h0m0s", 3_600_000_000_000),
            ("+5s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("1ns", 1),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("1.5µs", 1_500),
            ("0.000000001s", 1),
            ("1.000000001s", 1_000_000_001),
            ("1h1m1s1ms1us1ns", 3_661_001_001_001),
            ("1s1s", 2_000_000_000),
            ("0.5m", 30_000_000_000),
            ("0ns", 0),
        ];
        for (s, nanos) in cases {
            assert_eq!(
                parse_go_duration(s),
                Ok(Duration::from_nanos(*nanos)),
                "{s}"
            );
        }
        // Go's maximum, in two spellings.
        assert_eq!(
            parse_go_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(MAX_GO_NANOS))
        );
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s"),
            Ok(Duration::from_nanos(MAX_GO_NANOS))
        );
        // Fraction digits beyond what fits are ignored, as in Go.
        assert_eq!(
            parse_go_duration("1.00000000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn rejects_bad_go_durations() {
        for s in [
            "",
            "+",
            "-",
            "-1s",
            "-0",
            "1",
            "10",
            "s",
            ".s",
            "+.s",
            "1d",
            "1S",
            "1 s",
            " 1s",
            "1s ",
            "1.2.3s",
            "1s2",
            "abc",
            "1e3s",
            "0x10s",
            "9223372036854775808ns",
            "2562047h47m16.854775808s",
            "2562048h",
            "99999999999999999999s",
            "18446744073709551616ns",
            "1sec",
            "∞s",
        ] {
            let err = parse_go_duration(s).expect_err(s);
            assert!(
                err.contains("expected a duration in Go syntax"),
                "{s}: {err}"
            );
            assert!(err.contains("units: ns, us"), "{s}: {err}");
        }
        assert!(parse_go_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_go_duration("").unwrap_err().contains("empty"));
        assert!(parse_go_duration("5").unwrap_err().contains("missing unit"));
        assert!(
            parse_go_duration("5d")
                .unwrap_err()
                .contains(r#"unknown unit "d""#)
        );
        assert!(
            parse_go_duration("2562048h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (500_000_000, "500ms"),
            (1_234_567, "1.234567ms"),
            (1_000_000_000, "1s"),
            (1_000_000_001, "1.000000001s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (9_900_000_000_000, "2h45m0s"),
            (86_400_000_000_000, "24h0m0s"),
            (MAX_GO_NANOS, "2562047h47m16.854775807s"),
        ];
        for (nanos, s) in cases {
            assert_eq!(format_go_duration(Duration::from_nanos(*nanos)), *s);
        }
        // Beyond Go's range it still formats (but does not parse back).
        assert_eq!(
            format_go_duration(Duration::from_secs(u64::MAX)),
            "5124095576030431h0m15s"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0..=MAX_GO_NANOS) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }

        #[test]
        fn small_durations_round_trip(nanos in 0u64..10_000_000_000_000) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn parse_never_panics_on_duration_like_text(s in "[-+]?[0-9.]{0,22}(ns|us|µs|ms|s|m|h|d|)([0-9.]{0,5}(ns|ms|s|m|h)?)?") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn from_args_never_panics(name in proptest::sample::select(ENV_VARS.to_vec()), value in "\\PC{0,30}") {
            let _ = Config::from_args(&args_with(&[(name, &value)]));
        }
    }

    // ----- defaults and the "" rule -----

    #[test]
    fn every_default() {
        let c = Config::from_args(&ConfigArgs::default()).expect("defaults are valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.nats_urls, vec!["nats://nats:4222".to_owned()]);
        assert_eq!(c.nats_credentials_file, None);
        assert_eq!(c.queue_name, "faas-request");
        assert!(c.function_queues.is_empty());
        assert_eq!(c.nats_stream, None);
        assert_eq!(c.nats_durable, "faas-request-workers");
        assert_eq!(c.nats_stream_replicas, 1);
        assert_eq!(c.nats_storage, Storage::File);
        assert_eq!(c.max_inflight, 1);
        assert_eq!(c.scaling_mode, ScalingMode::Static);
        assert_eq!(c.consumer_inactive_threshold, secs(30));
        assert_eq!(c.consumer_pull_max_messages, None);
        assert_eq!(c.ack_wait, secs(60));
        assert_eq!(c.upstream_timeout, secs(60));
        assert_eq!(c.gateway_url, "http://gateway.openfaas:8080");
        assert_eq!(c.default_function_name, "openfaas-fn");
        assert!(!c.tls_insecure);
        assert!(!c.debug);
        assert_eq!(c.log_encoding, LogEncoding::Console);
        assert!(c.limiter_enabled);
        assert_eq!(c.max_retry_attempts, 10);
        assert_eq!(c.max_retry_wait, secs(120));
        assert_eq!(c.initial_retry_wait, secs(10));
        assert_eq!(c.retry_http_codes, vec![408, 429, 500, 502, 503, 504]);
        assert_eq!(c.backoff, Backoff::Exponential);
        assert_eq!(c.retry_budget_ratio, 0.2);
        assert_eq!(c.max_delay, secs(24 * 3600));
        assert_eq!(c.callback_retries, 3);
        assert_eq!(c.callback_signing_secret_file, None);
        assert!(c.callback_allowed_hosts.is_empty());
        assert_eq!(c.max_message_age, None);
        assert_eq!(c.max_body_bytes, 786_432);
        assert_eq!(c.dead_letter_max_age, secs(168 * 3600));
        assert_eq!(c.status_ttl, secs(24 * 3600));
        assert_eq!(c.metrics_port, 8081);
        assert_eq!(c.shutdown_timeout, secs(30));
        assert!(!c.basic_auth);
        assert_eq!(c.secret_mount_path, PathBuf::from("/var/openfaas/secrets"));
        assert_eq!(c.api_token_file, None);
        assert_eq!(c.stream_name(), "OF_faas-request");
        assert_eq!(c.dlq_stream_name(), "OF_faas-request_DLQ");
    }

    #[test]
    fn empty_or_blank_value_means_default() {
        for blank in ["", "  ", "\t"] {
            let mut args = ConfigArgs::default();
            for name in ENV_VARS {
                *field(&mut args, name) = Some(blank.to_owned());
            }
            assert_eq!(
                Config::from_args(&args),
                Ok(Config::default()),
                "all set to {blank:?}"
            );
        }
        // The OpenFaaS chart emits backoff: "".
        assert_eq!(
            config_with(&[("backoff", "")]).backoff,
            Backoff::Exponential
        );
    }

    #[test]
    fn values_are_trimmed() {
        let c = config_with(&[
            ("max_inflight", " 50 "),
            ("ack_wait", " 30s\n"),
            ("debug", " true "),
        ]);
        assert_eq!(c.max_inflight, 50);
        assert_eq!(c.ack_wait, secs(30));
        assert!(c.debug);
    }

    // ----- errors -----

    /// Values each variable must refuse. Path variables accept any text (they are not read here).
    fn bad_values(name: &str) -> &'static [&'static str] {
        match name {
            "nats_host" => &["nats:4222", "nats://nats", "a b", "a,b", "user@nats"],
            "nats_port" => &["0", "65536", "abc", "-1", "42.2"],
            "nats_url" => &[
                "http://nats:4222",
                "ws://nats:443",
                "nats://",
                "nats://a b:4222",
                "nats://nats:99999",
                "nats://nats:0",
                "nats://nats:4222/path",
                "nats://nats:4222?x=1",
                "nats://a:4222,bad host:1",
                ",",
            ],
            "queue_name" => &["a.b", "a b", "queue>", "ü", "faas request"],
            "function_queues" => &[
                "pdf-gen",
                "pdf-gen=",
                "=slow",
                "pdf-gen=slow.fns",
                "pdf gen=slow",
                ".ns=q",
                "fn.=q",
                "a..b=q",
                "fn=q,fn=q2",
                "fn=q=r",
            ],
            "nats_stream" => &["a.b", "a b", "a*", "a>", "a/b", "a\\b"],
            "nats_durable" => &["a.b", "a b", "a*"],
            "nats_stream_replicas" => &["0", "6", "three", "-1"],
            "nats_storage" => &["disk", "files", "1"],
            "max_inflight" => &["0", "65537", "abc", "1.5", "-1", "99999999999999999999999"],
            "scaling_mode" => &["dynamic", "functions"],
            "consumer_inactive_threshold" => &["999ms", "0", "30", "abc", "-30s"],
            "consumer_pull_max_messages" => &["0", "10001", "many"],
            "ack_wait" => &["99ms", "0", "60", "1d"],
            "upstream_timeout" => &["0", "0s", "1x", "-1m"],
            "gateway_url" => &[
                "gateway:8080",
                "ftp://gateway",
                "http://",
                "/relative",
                "http://gw:8080/?q=1",
                "http://gw:8080/#f",
                "http://gw:99999",
            ],
            "default_function_name" => &["openfaas.fn", "a b", "x/y"],
            "tls_insecure" | "debug" | "limiter_enabled" | "basic_auth" => {
                &["yes", "no", "on", "2", "tRUE", "truee"]
            }
            "log_encoding" => &["text", "logfmt"],
            "max_retry_attempts" => &["0", "10001", "ten"],
            "max_retry_wait" => &["2m3", "forever", "5s"],
            "initial_retry_wait" => &["1y", "-1s", "121s"],
            "retry_http_codes" => &["99", "600", "abc", "429;503", ",", "429,,x"],
            "backoff" => &["linear", "none"],
            "retry_budget_ratio" => &["-0.1", "100.1", "NaN", "inf", "abc", "1e3"],
            "max_delay" => &["1d", "24"],
            "callback_retries" => &["101", "-1", "x"],
            "callback_allowed_hosts" => &["https://example.com", "a b", "host/path", "user@host"],
            "max_message_age" => &["1w", "-1h", "60"],
            "max_body_bytes" => &["0", "67108865", "1MB", "1.5"],
            "dead_letter_max_age" => &["0", "7d"],
            "status_ttl" => &["0s", "1day"],
            "metrics_port" => &["65536", "-1", "http"],
            "shutdown_timeout" => &["30", "-30s"],
            "nats_credentials_file"
            | "callback_signing_secret_file"
            | "secret_mount_path"
            | "api_token_file" => &[],
            other => panic!("no bad values listed for {other}"),
        }
    }

    #[test]
    fn each_bad_value_gives_exactly_one_error_naming_its_variable() {
        let mut without_bad_values = Vec::new();
        for name in ENV_VARS {
            let bad = bad_values(name);
            if bad.is_empty() {
                without_bad_values.push(name);
            }
            for value in bad {
                let errors = errors_with(&[(name, value)]);
                assert_eq!(errors.len(), 1, "{name}={value:?}: {errors:?}");
                let e = &errors[0];
                assert_eq!(e.name, name, "{name}={value:?}: {e}");
                let line = e.to_string();
                assert!(line.starts_with(&format!("invalid {name}=")), "{line}");
                assert!(!line.contains('\n'), "one line: {line:?}");
                assert!(
                    line.len() > format!("invalid {name}={value:?}: ").len() + 10,
                    "says what is allowed: {line}"
                );
            }
        }
        // Length limits.
        let e = errors_with(&[("queue_name", &"q".repeat(65))]);
        assert_eq!((e.len(), e[0].name), (1, "queue_name"));
        let e = errors_with(&[("nats_stream", &"s".repeat(256))]);
        assert_eq!((e.len(), e[0].name), (1, "nats_stream"));
        assert_eq!(
            without_bad_values,
            [
                "nats_credentials_file",
                "callback_signing_secret_file",
                "secret_mount_path",
                "api_token_file"
            ]
        );
    }

    #[test]
    fn error_display_is_exact() {
        let errors = errors_with(&[("max_inflight", "abc")]);
        assert_eq!(
            errors[0].to_string(),
            r#"invalid max_inflight="abc": expected a whole number from 1 to 65536"#
        );
        let errors = errors_with(&[("backoff", "linear")]);
        assert_eq!(
            errors[0].to_string(),
            r#"invalid backoff="linear": expected one of: exponential, full, equal"#
        );
        let errors = errors_with(&[("ack_wait", "5d")]);
        assert_eq!(
            errors[0].to_string(),
            "invalid ack_wait=\"5d\": unknown unit \"d\"; expected a duration of at least 100ms \
             in Go syntax such as 60s, 1m30s, 500ms, 2h45m or 1.5h (units: ns, us, µs, ms, s, m, h)"
        );
        // The value is shown as given, untrimmed and escaped.
        let errors = errors_with(&[("debug", " yes\n")]);
        assert!(
            errors[0]
                .to_string()
                .starts_with(r#"invalid debug=" yes\n": expected true or false"#)
        );
    }

    #[test]
    fn collects_all_errors_one_line_each() {
        let err = Config::from_args(&args_with(&[
            ("max_inflight", "abc"),
            ("ack_wait", "soon"),
            ("backoff", "linear"),
            ("nats_port", "0"),
            ("debug", "yes"),
        ]))
        .expect_err("invalid");
        let names: Vec<&str> = err.0.iter().map(|e| e.name).collect();
        // All of them, in the order of ENV_VARS.
        assert_eq!(
            names,
            ["nats_port", "max_inflight", "ack_wait", "debug", "backoff"]
        );
        let text = err.to_string();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().all(|l| l.starts_with("invalid ")), "{text}");
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn retry_waits_cross_check() {
        // initial_retry_wait set above the default max: it is named.
        let e = errors_with(&[("initial_retry_wait", "3m")]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "initial_retry_wait");
        assert_eq!(
            e[0].to_string(),
            r#"invalid initial_retry_wait="3m": must not exceed max_retry_wait (2m0s)"#
        );
        // Only max_retry_wait set, below the default initial wait: max_retry_wait is named.
        let e = errors_with(&[("max_retry_wait", "5s")]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            r#"invalid max_retry_wait="5s": must be at least initial_retry_wait (10s)"#
        );
        // Both set and inconsistent: initial_retry_wait is named.
        let e = errors_with(&[("max_retry_wait", "5s"), ("initial_retry_wait", "6s")]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "initial_retry_wait");
        // A parse error is not doubled by the cross check.
        let e = errors_with(&[("max_retry_wait", "x"), ("initial_retry_wait", "1h")]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "max_retry_wait");
        // Equal, zero initial, both fine.
        let c = config_with(&[("max_retry_wait", "5s"), ("initial_retry_wait", "5s")]);
        assert_eq!((c.initial_retry_wait, c.max_retry_wait), (secs(5), secs(5)));
        let c = config_with(&[("initial_retry_wait", "0")]);
        assert_eq!(c.initial_retry_wait, Duration::ZERO);
        let c = config_with(&[("max_retry_wait", "0"), ("initial_retry_wait", "0s")]);
        assert_eq!(c.max_retry_wait, Duration::ZERO);
    }

    // ----- individual variables -----

    #[test]
    fn duration_variables() {
        let c = config_with(&[
            ("consumer_inactive_threshold", "1s"),
            ("ack_wait", "100ms"),
            ("upstream_timeout", "1m30s"),
            ("max_retry_wait", "2h45m"),
            ("initial_retry_wait", "1.5s"),
            ("max_delay", "0"),
            ("max_message_age", "72h"),
            ("dead_letter_max_age", "1ns"),
            ("status_ttl", "1h"),
            ("shutdown_timeout", "0s"),
        ]);
        assert_eq!(c.consumer_inactive_threshold, secs(1));
        assert_eq!(c.ack_wait, Duration::from_millis(100));
        assert_eq!(c.upstream_timeout, secs(90));
        assert_eq!(c.max_retry_wait, secs(9900));
        assert_eq!(c.initial_retry_wait, Duration::from_millis(1500));
        assert_eq!(c.max_delay, Duration::ZERO);
        assert_eq!(c.max_message_age, Some(secs(72 * 3600)));
        assert_eq!(c.dead_letter_max_age, Duration::from_nanos(1));
        assert_eq!(c.status_ttl, secs(3600));
        assert_eq!(c.shutdown_timeout, Duration::ZERO);
        assert_eq!(
            config_with(&[("max_message_age", "0")]).max_message_age,
            None
        );
        assert_eq!(
            config_with(&[("max_message_age", "0s")]).max_message_age,
            None
        );
    }

    #[test]
    fn number_variables() {
        let c = config_with(&[
            ("nats_stream_replicas", "5"),
            ("max_inflight", "65536"),
            ("consumer_pull_max_messages", "10000"),
            ("max_retry_attempts", "+100"),
            ("retry_budget_ratio", "100"),
            ("callback_retries", "0"),
            ("max_body_bytes", "67108864"),
            ("metrics_port", "0"),
        ]);
        assert_eq!(c.nats_stream_replicas, 5);
        assert_eq!(c.max_inflight, 65_536);
        assert_eq!(c.consumer_pull_max_messages, Some(10_000));
        assert_eq!(c.max_retry_attempts, 100);
        assert_eq!(c.retry_budget_ratio, 100.0);
        assert_eq!(c.callback_retries, 0);
        assert_eq!(c.max_body_bytes, 64 * 1024 * 1024);
        assert_eq!(c.metrics_port, 0);
        assert_eq!(
            config_with(&[("retry_budget_ratio", "0")]).retry_budget_ratio,
            0.0
        );
        assert_eq!(
            config_with(&[("retry_budget_ratio", "-0")])
                .retry_budget_ratio
                .to_bits(),
            0.0f64.to_bits()
        );
        assert_eq!(
            config_with(&[("retry_budget_ratio", ".5")]).retry_budget_ratio,
            0.5
        );
        assert_eq!(
            config_with(&[("consumer_pull_max_messages", "1")]).consumer_pull_max_messages,
            Some(1)
        );
    }

    #[test]
    fn enum_variables() {
        let c = config_with(&[
            ("nats_storage", "memory"),
            ("scaling_mode", "function"),
            ("log_encoding", "json"),
            ("backoff", "full"),
        ]);
        assert_eq!(c.nats_storage, Storage::Memory);
        assert_eq!(c.scaling_mode, ScalingMode::Function);
        assert_eq!(c.log_encoding, LogEncoding::Json);
        assert_eq!(c.backoff, Backoff::Full);
        assert_eq!(config_with(&[("backoff", "Equal")]).backoff, Backoff::Equal);
        assert_eq!(
            config_with(&[("nats_storage", "FILE")]).nats_storage,
            Storage::File
        );
        for (spelling, b) in [
            ("exponential", Backoff::Exponential),
            ("full", Backoff::Full),
            ("equal", Backoff::Equal),
        ] {
            assert_eq!(b.as_str(), spelling);
            assert_eq!(b.to_string(), spelling);
            assert_eq!(config_with(&[("backoff", spelling)]).backoff, b);
        }
        assert_eq!(Storage::Memory.as_str(), "memory");
        assert_eq!(ScalingMode::Function.as_str(), "function");
        assert_eq!(LogEncoding::Json.as_str(), "json");
    }

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            let c = config_with(&[
                ("tls_insecure", t),
                ("debug", t),
                ("limiter_enabled", t),
                ("basic_auth", t),
            ]);
            assert!(
                c.tls_insecure && c.debug && c.limiter_enabled && c.basic_auth,
                "{t}"
            );
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            let c = config_with(&[
                ("tls_insecure", f),
                ("debug", f),
                ("limiter_enabled", f),
                ("basic_auth", f),
            ]);
            assert!(
                !(c.tls_insecure || c.debug || c.limiter_enabled || c.basic_auth),
                "{f}"
            );
        }
        let e = errors_with(&[("limiter_enabled", "yes")]);
        assert_eq!(
            e[0].to_string(),
            r#"invalid limiter_enabled="yes": expected true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)"#
        );
    }

    #[test]
    fn nats_urls() {
        let c = config_with(&[
            ("nats_host", "nats.openfaas.svc.cluster.local"),
            ("nats_port", "4223"),
        ]);
        assert_eq!(c.nats_urls, ["nats://nats.openfaas.svc.cluster.local:4223"]);
        assert_eq!(
            config_with(&[("nats_host", "10.0.0.7")]).nats_urls,
            ["nats://10.0.0.7:4222"]
        );
        assert_eq!(
            config_with(&[("nats_host", "::1")]).nats_urls,
            ["nats://[::1]:4222"]
        );
        assert_eq!(
            config_with(&[("nats_host", "[::1]")]).nats_urls,
            ["nats://[::1]:4222"]
        );

        let c = config_with(&[
            (
                "nats_url",
                " nats://n1:4222 , tls://n2:4443,n3:4222,n4 ,nats://user:pw@n5:4222/, ",
            ),
            ("nats_host", "ignored"),
            ("nats_port", "1"),
        ]);
        assert_eq!(
            c.nats_urls,
            [
                "nats://n1:4222",
                "tls://n2:4443",
                "nats://n3:4222",
                "nats://n4",
                "nats://user:pw@n5:4222/"
            ]
        );
        assert_eq!(
            config_with(&[("nats_url", "[::1]:4222")]).nats_urls,
            ["nats://[::1]:4222"]
        );

        // Bad host/port are still reported even when nats_url overrides them.
        let e = errors_with(&[("nats_url", "nats://n1:4222"), ("nats_port", "x")]);
        assert_eq!(e[0].name, "nats_port");
    }

    #[test]
    fn nats_url_errors_mask_credentials() {
        let e = errors_with(&[("nats_url", "nats://n1:4222,http://user:secret@n2:4222")]);
        assert_eq!(e.len(), 1);
        let line = e[0].to_string();
        assert!(!line.contains("secret"), "{line}");
        assert!(!line.contains("user"), "{line}");
        assert!(line.contains("http://***@n2:4222"), "{line}");
        assert!(line.contains("unsupported scheme"), "{line}");
        assert_eq!(
            mask_credentials("tok@h:1,nats://a:b@c:2,nats://d"),
            "***@h:1,nats://***@c:2,nats://d"
        );
    }

    #[test]
    fn function_queues_and_lookup() {
        let c = config_with(&[(
            "function_queues",
            " pdf-gen=slow-fns , resize.openfaas-fn=images,thumb.other=images,Mixed_Case=Q_1,",
        )]);
        let expected: BTreeMap<String, String> = [
            ("pdf-gen", "slow-fns"),
            ("resize.openfaas-fn", "images"),
            ("thumb.other", "images"),
            ("Mixed_Case", "Q_1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(c.function_queues, expected);

        // A bare key matches the function in any namespace.
        assert_eq!(c.queue_for_function("pdf-gen"), "slow-fns");
        assert_eq!(c.queue_for_function("pdf-gen.openfaas-fn"), "slow-fns");
        assert_eq!(c.queue_for_function("pdf-gen.team-a"), "slow-fns");
        // A key with a namespace matches that namespace; a bare function is in the default one.
        assert_eq!(c.queue_for_function("resize.openfaas-fn"), "images");
        assert_eq!(c.queue_for_function("resize"), "images");
        assert_eq!(c.queue_for_function("resize.team-a"), "faas-request");
        assert_eq!(c.queue_for_function("thumb.other"), "images");
        assert_eq!(c.queue_for_function("thumb"), "faas-request");
        // Split on the last '.'.
        assert_eq!(c.queue_for_function("pdf-gen.x.y"), "faas-request");
        assert_eq!(c.queue_for_function("unknown"), "faas-request");
        assert_eq!(c.queue_for_function(""), "faas-request");
        assert_eq!(c.queue_for_function("."), "faas-request");

        // The fallback is queue_name, and the default namespace is configurable.
        let c = config_with(&[
            ("function_queues", "resize.fns=images"),
            ("queue_name", "main"),
            ("default_function_name", "fns"),
        ]);
        assert_eq!(c.queue_for_function("resize"), "images");
        assert_eq!(c.queue_for_function("other"), "main");

        let e = errors_with(&[("function_queues", "a=q1,b=q2,a=q3")]);
        assert!(
            e[0].allowed.contains(r#"function "a" listed twice"#),
            "{}",
            e[0]
        );
    }

    #[test]
    fn names_derived_from_queue_name() {
        let c = config_with(&[("queue_name", "slow-fns")]);
        assert_eq!(c.queue_name, "slow-fns");
        assert_eq!(c.nats_durable, "slow-fns-workers");
        assert_eq!(c.stream_name(), "OF_slow-fns");
        assert_eq!(c.dlq_stream_name(), "OF_slow-fns_DLQ");
        assert_eq!(Config::stream_name_for("images"), "OF_images");
        assert_eq!(Config::dlq_stream_name_for("images"), "OF_images_DLQ");
        let c = config_with(&[
            ("queue_name", "slow-fns"),
            ("nats_durable", "faas-workers"),
            ("nats_stream", "faas-request"),
        ]);
        assert_eq!(c.nats_durable, "faas-workers");
        assert_eq!(c.nats_stream.as_deref(), Some("faas-request"));
        assert_eq!(
            config_with(&[("queue_name", &"q".repeat(64))])
                .queue_name
                .len(),
            64
        );
    }

    #[test]
    fn gateway_url_normalised() {
        for (given, stored) in [
            (
                "http://gateway.openfaas:8080",
                "http://gateway.openfaas:8080",
            ),
            (
                "http://gateway.openfaas:8080/",
                "http://gateway.openfaas:8080",
            ),
            (
                "https://GW.example.com/prefix/",
                "https://gw.example.com/prefix",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ] {
            assert_eq!(
                config_with(&[("gateway_url", given)]).gateway_url,
                stored,
                "{given}"
            );
        }
    }

    #[test]
    fn lists_are_normalised() {
        let c = config_with(&[
            ("retry_http_codes", "503, 429,429 ,500,"),
            (
                "callback_allowed_hosts",
                " Hooks.Example.com ,*.Internal,, 10.0.0.1:8443",
            ),
        ]);
        assert_eq!(c.retry_http_codes, [429, 500, 503]);
        assert_eq!(
            c.callback_allowed_hosts,
            ["hooks.example.com", "*.internal", "10.0.0.1:8443"]
        );
    }

    #[test]
    fn paths() {
        let c = config_with(&[
            ("nats_credentials_file", "/var/secrets/nats.creds"),
            ("callback_signing_secret_file", "/var/openfaas/secrets/cb"),
            ("secret_mount_path", "/run/secrets"),
            ("api_token_file", "token.txt"),
        ]);
        assert_eq!(
            c.nats_credentials_file,
            Some(PathBuf::from("/var/secrets/nats.creds"))
        );
        assert_eq!(
            c.callback_signing_secret_file,
            Some(PathBuf::from("/var/openfaas/secrets/cb"))
        );
        assert_eq!(c.secret_mount_path, PathBuf::from("/run/secrets"));
        assert_eq!(c.api_token_file, Some(PathBuf::from("token.txt")));
    }

    // ----- clap -----

    #[test]
    fn every_variable_is_a_flag_and_an_env_var() {
        let cmd = TestCli::command();
        let mut ids = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            ids.push(id.to_owned());
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()), "{id}");
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(id), "{id}");
            assert!(arg.is_hide_env_values_set(), "{id}");
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains("Default: "),
                "{id} help says its default: {help:?}"
            );
        }
        assert_eq!(ids, ENV_VARS.map(str::to_owned));
        cmd.debug_assert();
    }

    #[test]
    fn clap_reads_flags() {
        let mut argv = vec!["qw-config-test".to_owned()];
        for (i, name) in ENV_VARS.iter().enumerate() {
            argv.push(format!("--{}", name.replace('_', "-")));
            argv.push(format!("value-{i}"));
        }
        let mut cli = TestCli::try_parse_from(&argv).expect("parses");
        for (i, name) in ENV_VARS.iter().enumerate() {
            assert_eq!(
                field(&mut cli.config, name).as_deref(),
                Some(format!("value-{i}").as_str()),
                "{name}"
            );
        }
        let cli =
            TestCli::try_parse_from(["t", "--max-inflight=50", "--backoff", "", "--debug", "true"])
                .expect("parses");
        assert_eq!(cli.config.max_inflight.as_deref(), Some("50"));
        assert_eq!(cli.config.backoff.as_deref(), Some(""));
        let c = Config::from_args(&cli.config).expect("valid");
        assert_eq!(
            (c.max_inflight, c.backoff, c.debug),
            (50, Backoff::Exponential, true)
        );
        assert!(TestCli::try_parse_from(["t", "--max-inflght", "5"]).is_err());
    }

    #[test]
    fn help_hides_env_values() {
        let help = TestCli::command().render_long_help().to_string();
        assert!(help.contains("--max-inflight <N>"), "{help}");
        assert!(help.contains("[env: max_inflight]"), "{help}");
        assert!(help.contains("Default: 1"), "{help}");
    }

    const CHILD_MARK: &str = "QUEUE_WORKER_CONFIG_TEST_CHILD";

    /// Runs [`clap_env_child`] in a child process with a controlled environment, so no test
    /// mutates this process's environment.
    #[test]
    fn clap_reads_env() {
        let exe = std::env::current_exe().expect("test binary path");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, m)| m);
        let name = format!("{module}::clap_env_child");
        let mut child = std::process::Command::new(exe);
        child.args(["--exact", &name, "--nocapture", "--test-threads=1"]);
        for var in ENV_VARS {
            child.env_remove(var);
        }
        child
            .env(CHILD_MARK, "1")
            .env("max_inflight", "50")
            .env("ack_wait", "30s")
            .env("nats_url", "nats://a:4222,nats://b:4222")
            .env("debug", "true")
            .env("backoff", "")
            .env("queue_name", "from-env");
        let out = child.output().expect("runs the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "child test did not run:\n{stdout}\n{stderr}"
        );
    }

    /// The env half of [`clap_reads_env`]; does nothing unless run as its child.
    #[test]
    fn clap_env_child() {
        if std::env::var_os(CHILD_MARK).is_none() {
            return;
        }
        let cli = TestCli::try_parse_from(["t"]).expect("parses");
        let a = &cli.config;
        assert_eq!(a.max_inflight.as_deref(), Some("50"));
        assert_eq!(a.ack_wait.as_deref(), Some("30s"));
        assert_eq!(a.debug.as_deref(), Some("true"));
        // An env var set to "" reaches us as Some(""), which means "use the default".
        assert_eq!(a.backoff.as_deref(), Some(""));
        assert_eq!(a.nats_host, None);
        assert_eq!(a.gateway_url, None);
        let c = Config::from_args(a).expect("valid");
        assert_eq!(c.max_inflight, 50);
        assert_eq!(c.ack_wait, secs(30));
        assert_eq!(c.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert!(c.debug);
        assert_eq!(c.backoff, Backoff::Exponential);
        assert_eq!(c.nats_durable, "from-env-workers");

        // A flag wins over the env var.
        let cli = TestCli::try_parse_from(["t", "--max-inflight", "7", "--queue-name", "flag"])
            .expect("parses");
        assert_eq!(cli.config.max_inflight.as_deref(), Some("7"));
        assert_eq!(cli.config.queue_name.as_deref(), Some("flag"));
        assert_eq!(cli.config.ack_wait.as_deref(), Some("30s"));
    }
}
