//! The raw text of every configuration variable, as clap reads it from a flag or from the
//! environment variable of the same name.

/// Every configuration variable: the environment variable name (lowercase, as the OpenFaaS
/// chart spells it). The CLI flag is the same name with `_` replaced by `-`.
pub const ENV_VARS: [&str; 57] = [
    "nats_host",
    "nats_port",
    "nats_url",
    "nats_credentials_file",
    "nats_user",
    "nats_password_file",
    "nats_token_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
    "nats_tls_insecure",
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
    "consumer_storage",
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
    "payload_offload_bytes",
    "ingress_max_connections",
    "ingress_header_timeout",
    "ingress_body_timeout",
    "ingress_max_buffered_bytes",
    "dead_letter_max_age",
    "status_ttl",
    "store_results",
    "idempotency_window",
    "metrics_port",
    "metrics_addr",
    "shutdown_timeout",
    "basic_auth",
    "secret_mount_path",
    "api_token_file",
];

/// The raw text of every configuration variable, read by clap from a flag (`--max-inflight 5`)
/// or, when the flag is absent, from the environment variable of the same name
/// (`max_inflight=5`). Nothing is validated here: [`super::Config::from_args`] does that.
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

    /// NATS user name (the password in nats_password_file). Default: none
    #[arg(long, env = "nats_user", hide_env_values = true, value_name = "USER")]
    pub nats_user: Option<String>,

    /// File holding the NATS password of nats_user. Default: none
    #[arg(
        long,
        env = "nats_password_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub nats_password_file: Option<String>,

    /// File holding a NATS authentication token. Default: none
    #[arg(
        long,
        env = "nats_token_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub nats_token_file: Option<String>,

    /// CA certificates (PEM) to check the NATS server with; turns TLS on. Default: none (system roots for tls:// URLs)
    #[arg(
        long,
        env = "nats_tls_ca_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub nats_tls_ca_file: Option<String>,

    /// Client certificate (PEM) presented to NATS, with nats_tls_key_file. Default: none
    #[arg(
        long,
        env = "nats_tls_cert_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub nats_tls_cert_file: Option<String>,

    /// Private key (PEM) of nats_tls_cert_file. Default: none
    #[arg(
        long,
        env = "nats_tls_key_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub nats_tls_key_file: Option<String>,

    /// Skip the check of the NATS server certificate (for tests only). Default: false
    #[arg(
        long,
        env = "nats_tls_insecure",
        hide_env_values = true,
        value_name = "BOOL"
    )]
    pub nats_tls_insecure: Option<String>,

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

    /// Function mode: where a function consumer keeps its state, file or memory. Default: file
    #[arg(
        long,
        env = "consumer_storage",
        hide_env_values = true,
        value_name = "file|memory"
    )]
    pub consumer_storage: Option<String>,

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

    /// File holding the whsec_ secret(s) that sign callbacks (Standard Webhooks), one a line. Default: none (unsigned)
    #[arg(
        long,
        env = "callback_signing_secret_file",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub callback_signing_secret_file: Option<String>,

    /// Hosts callbacks may go to: names, *.suffix wildcards, IP addresses, CIDR ranges, each with an optional :port, comma-separated. Default: none (all hosts but link-local and metadata addresses)
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

    /// Request bodies larger than this are stored in the queue's JetStream object bucket
    /// `OF_<queue>_payloads` and the message carries a reference (0 = never; 0 to 67108864).
    /// Default: 524288
    #[arg(
        long,
        env = "payload_offload_bytes",
        hide_env_values = true,
        value_name = "BYTES"
    )]
    pub payload_offload_bytes: Option<String>,

    /// Connections the ingress serves at once; more wait to be accepted (1 to 1000000). Default: 1024
    #[arg(
        long,
        env = "ingress_max_connections",
        hide_env_values = true,
        value_name = "N"
    )]
    pub ingress_max_connections: Option<String>,

    /// Time a client has to send a request's headers, and to start the next request on a kept-alive connection. Default: 10s
    #[arg(
        long,
        env = "ingress_header_timeout",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub ingress_header_timeout: Option<String>,

    /// Time a client has to send a request's body (408 after). Default: 60s
    #[arg(
        long,
        env = "ingress_body_timeout",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub ingress_body_timeout: Option<String>,

    /// Bytes of request bodies the ingress holds at once, being received or stored (503 past it; at least max_body_bytes). Default: 268435456
    #[arg(
        long,
        env = "ingress_max_buffered_bytes",
        hide_env_values = true,
        value_name = "BYTES"
    )]
    pub ingress_max_buffered_bytes: Option<String>,

    /// How long dead letters are kept. Default: 168h
    #[arg(
        long,
        env = "dead_letter_max_age",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub dead_letter_max_age: Option<String>,

    /// How long a call's status is kept after its last change (0 = no call status). Default: 24h
    #[arg(
        long,
        env = "status_ttl",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub status_ttl: Option<String>,

    /// Keep every call's final response (status, headers, body) for `status_ttl`, for
    /// `GET /system/calls/{id}/result` (a request's `X-Store-Result: true` keeps its own).
    /// Default: false
    #[arg(
        long,
        env = "store_results",
        hide_env_values = true,
        value_name = "BOOL"
    )]
    pub store_results: Option<String>,

    /// How long an `Idempotency-Key` (and a repeated `X-Call-Id`) is remembered by the ingress: a
    /// repeat inside it is not queued again. 1s to 24h. Default: 2m
    #[arg(
        long,
        env = "idempotency_window",
        hide_env_values = true,
        value_name = "DURATION"
    )]
    pub idempotency_window: Option<String>,

    /// Port of /metrics, /healthz and /readyz (0 = any free port). Default: 8081
    #[arg(
        long,
        env = "metrics_port",
        hide_env_values = true,
        value_name = "PORT"
    )]
    pub metrics_port: Option<String>,

    /// Listen address of /metrics, /healthz and /readyz, e.g. 127.0.0.1:8081. Default: 0.0.0.0:{metrics_port}
    #[arg(
        long,
        env = "metrics_addr",
        hide_env_values = true,
        value_name = "ADDR"
    )]
    pub metrics_addr: Option<String>,

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
