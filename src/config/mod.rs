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

mod args;
mod bound;
pub mod env_case;
mod go_duration;
pub(crate) mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use args::{ConfigArgs, ENV_VARS};
pub use go_duration::{format_go_duration, parse_go_duration};

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
/// Default size past which a request body goes to the object store (`payload_offload_bytes`):
/// 512 KiB.
pub const DEFAULT_PAYLOAD_OFFLOAD_BYTES: usize = 512 * 1024;
/// Default directory of mounted secrets (`secret_mount_path`).
pub const DEFAULT_SECRET_MOUNT_PATH: &str = "/var/openfaas/secrets";

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

/// The validated configuration. Build it with [`Config::from_args`]; [`Config::default`] has
/// every default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// NATS server URLs (`nats_url`, else `nats://{nats_host}:{nats_port}`), each with a scheme
    /// (`nats://` or `tls://`).
    pub nats_urls: Vec<String>,
    /// NATS credentials file (`nats_credentials_file`); not read here.
    pub nats_credentials_file: Option<PathBuf>,
    /// NATS user name (`nats_user`), with the password in `nats_password_file`.
    pub nats_user: Option<String>,
    /// File holding the NATS password (`nats_password_file`); not read here.
    pub nats_password_file: Option<PathBuf>,
    /// File holding a NATS token (`nats_token_file`); not read here.
    pub nats_token_file: Option<PathBuf>,
    /// CA certificates (PEM) NATS's certificate is checked against (`nats_tls_ca_file`); set,
    /// it turns TLS on.
    pub nats_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for NATS (`nats_tls_cert_file`, with `nats_tls_key_file`).
    pub nats_tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for NATS (`nats_tls_key_file`).
    pub nats_tls_key_file: Option<PathBuf>,
    /// Skip the check of NATS's certificate (`nats_tls_insecure`, default false; tests only).
    pub nats_tls_insecure: bool,
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
    /// Where function mode's consumers keep their state (`consumer_storage`, default file).
    pub consumer_storage: Storage,
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
    /// Callback signing secrets (`callback_signing_secret_file`: `whsec_…`, one a line); read
    /// by the worker.
    pub callback_signing_secret_file: Option<PathBuf>,
    /// Where callbacks may go (`callback_allowed_hosts`); empty = every host but the guarded
    /// addresses ([`crate::security::hosts`]).
    pub callback_allowed_hosts: crate::security::hosts::AllowedHosts,
    /// Maximum age of an invocation before it expires (`max_message_age`); `None` = off.
    pub max_message_age: Option<Duration>,
    /// Largest ingress body in bytes (`max_body_bytes`, 1 to 67108864, default 786432).
    pub max_body_bytes: usize,
    /// Bodies larger than this are stored in the queue's object bucket, not in the message
    /// (`payload_offload_bytes`, 0 to 67108864, default 524288; 0: never).
    pub payload_offload_bytes: usize,
    /// Connections the ingress serves at once (`ingress_max_connections`, default 1024).
    pub ingress_max_connections: usize,
    /// Time for a request's headers, and idle time between requests on a connection
    /// (`ingress_header_timeout`, default 10s).
    pub ingress_header_timeout: Duration,
    /// Time for a request's body (`ingress_body_timeout`, default 60s).
    pub ingress_body_timeout: Duration,
    /// Bytes of bodies held at once (`ingress_max_buffered_bytes`, default 256 MiB, at least
    /// `max_body_bytes`).
    pub ingress_max_buffered_bytes: usize,
    /// Dead-letter retention (`dead_letter_max_age`, default 168h, greater than 0).
    pub dead_letter_max_age: Duration,
    /// Call status retention (`status_ttl`, default 24h; 0 = no call status).
    pub status_ttl: Duration,
    /// Keep every call's final response (`store_results`, default false; a request's
    /// `X-Store-Result: true` keeps its own).
    pub store_results: bool,
    /// How long the queue's stream remembers message ids and the ingress `Idempotency-Key`s
    /// (`idempotency_window`, default 2m, 1s to 24h).
    pub idempotency_window: Duration,
    /// Metrics and health port (`metrics_port`, default 8081; 0 = ephemeral).
    pub metrics_port: u16,
    /// Listen address of `/metrics`, `/healthz`, `/readyz` (`metrics_addr`, default
    /// `0.0.0.0:{metrics_port}`).
    pub metrics_addr: String,
    /// Grace period for in-flight invocations at shutdown (`shutdown_timeout`, default 30s).
    pub shutdown_timeout: Duration,
    /// Require basic auth on the ingress and API (`basic_auth`, default false).
    pub basic_auth: bool,
    /// Directory of mounted secrets (`secret_mount_path`, default `/var/openfaas/secrets`).
    pub secret_mount_path: PathBuf,
    /// Bearer token file for the ingress and API (`api_token_file`); read by the ingress.
    pub api_token_file: Option<PathBuf>,
    /// Where spans are exported (the standard `OTEL_*` variables, read by
    /// [`crate::trace::Settings::from_env`], not by [`Config::from_args`]); `None`: traces off.
    pub traces: Option<crate::trace::Settings>,
}

impl Default for Config {
    /// Every default, as [`Config::from_args`] gives for an empty [`ConfigArgs`].
    fn default() -> Self {
        Config {
            nats_urls: vec![format!("nats://{DEFAULT_NATS_HOST}:{DEFAULT_NATS_PORT}")],
            nats_credentials_file: None,
            nats_user: None,
            nats_password_file: None,
            nats_token_file: None,
            nats_tls_ca_file: None,
            nats_tls_cert_file: None,
            nats_tls_key_file: None,
            nats_tls_insecure: false,
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
            consumer_storage: Storage::File,
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
            callback_allowed_hosts: crate::security::hosts::AllowedHosts::default(),
            max_message_age: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            payload_offload_bytes: DEFAULT_PAYLOAD_OFFLOAD_BYTES,
            ingress_max_connections: 1024,
            ingress_header_timeout: Duration::from_secs(10),
            ingress_body_timeout: Duration::from_secs(60),
            ingress_max_buffered_bytes: 256 * 1024 * 1024,
            dead_letter_max_age: Duration::from_secs(168 * 3600),
            status_ttl: Duration::from_secs(24 * 3600),
            store_results: false,
            idempotency_window: crate::broker::DEFAULT_DUPLICATE_WINDOW,
            metrics_port: 8081,
            metrics_addr: "0.0.0.0:8081".to_owned(),
            shutdown_timeout: Duration::from_secs(30),
            basic_auth: false,
            secret_mount_path: PathBuf::from(DEFAULT_SECRET_MOUNT_PATH),
            api_token_file: None,
            traces: None,
        }
    }
}

impl Config {
    /// The ingress's credentials (`basic_auth` with `secret_mount_path`, `api_token_file`);
    /// `None`: the ingress is open.
    pub fn ingress_auth(&self) -> Option<crate::security::auth::IngressAuth> {
        let basic_dir = self.basic_auth.then_some(self.secret_mount_path.as_path());
        crate::security::auth::IngressAuth::new(basic_dir, self.api_token_file.as_deref())
    }

    /// Every queue the ingress may publish to: `queue_name` and the `function_queues` targets.
    pub fn queues(&self) -> Vec<String> {
        let mut qs = vec![self.queue_name.clone()];
        for q in self.function_queues.values() {
            if !qs.contains(q) {
                qs.push(q.clone());
            }
        }
        qs
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
        self.routed_queue(function).unwrap_or(&self.queue_name)
    }

    /// The queue `function_queues` routes `function` to (as [`Config::queue_for_function`]);
    /// `None` when it does not name the function.
    pub fn routed_queue(&self, function: &str) -> Option<&str> {
        if let Some(queue) = self.function_queues.get(function) {
            return Some(queue);
        }
        let fallback = match function.rsplit_once('.') {
            Some((name, _namespace)) => self.function_queues.get(name),
            None => self
                .function_queues
                .get(&format!("{function}.{}", self.default_function_name)),
        };
        fallback.map(String::as_str)
    }
}
