//! Tests of the configuration: every variable, its default, its errors, clap. Shared helpers
//! are here.

mod clap_args;
mod defaults;
mod errors;
mod variables;

pub(super) use super::validate::mask_credentials;
pub(super) use super::*;
pub(super) use clap::{CommandFactory, Parser};
pub(super) use proptest::prelude::*;

/// A command that flattens [`ConfigArgs`], as the binary does.
#[derive(Parser, Debug)]
#[command(name = "qw-config-test")]
pub(super) struct TestCli {
    #[command(flatten)]
    pub(super) config: ConfigArgs,
}

/// The raw field of `args` for the variable `name`.
pub(super) fn field<'a>(args: &'a mut ConfigArgs, name: &str) -> &'a mut Option<String> {
    match name {
        "nats_host" => &mut args.nats_host,
        "nats_port" => &mut args.nats_port,
        "nats_url" => &mut args.nats_url,
        "nats_credentials_file" => &mut args.nats_credentials_file,
        "nats_user" => &mut args.nats_user,
        "nats_password_file" => &mut args.nats_password_file,
        "nats_token_file" => &mut args.nats_token_file,
        "nats_tls_ca_file" => &mut args.nats_tls_ca_file,
        "nats_tls_cert_file" => &mut args.nats_tls_cert_file,
        "nats_tls_key_file" => &mut args.nats_tls_key_file,
        "nats_tls_insecure" => &mut args.nats_tls_insecure,
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
        "consumer_storage" => &mut args.consumer_storage,
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
        "payload_offload_bytes" => &mut args.payload_offload_bytes,
        "ingress_max_connections" => &mut args.ingress_max_connections,
        "ingress_header_timeout" => &mut args.ingress_header_timeout,
        "ingress_body_timeout" => &mut args.ingress_body_timeout,
        "ingress_max_buffered_bytes" => &mut args.ingress_max_buffered_bytes,
        "dead_letter_max_age" => &mut args.dead_letter_max_age,
        "status_ttl" => &mut args.status_ttl,
        "store_results" => &mut args.store_results,
        "idempotency_window" => &mut args.idempotency_window,
        "metrics_port" => &mut args.metrics_port,
        "metrics_addr" => &mut args.metrics_addr,
        "shutdown_timeout" => &mut args.shutdown_timeout,
        "basic_auth" => &mut args.basic_auth,
        "secret_mount_path" => &mut args.secret_mount_path,
        "api_token_file" => &mut args.api_token_file,
        other => panic!("unknown variable {other}"),
    }
}

pub(super) fn args_with(pairs: &[(&str, &str)]) -> ConfigArgs {
    let mut args = ConfigArgs::default();
    for (name, value) in pairs {
        *field(&mut args, name) = Some((*value).to_owned());
    }
    args
}

pub(super) fn config_with(pairs: &[(&str, &str)]) -> Config {
    match Config::from_args(&args_with(pairs)) {
        Ok(c) => c,
        Err(e) => panic!("{pairs:?} should be valid, got:\n{e}"),
    }
}

pub(super) fn errors_with(pairs: &[(&str, &str)]) -> Vec<ConfigError> {
    match Config::from_args(&args_with(pairs)) {
        Ok(c) => panic!("{pairs:?} should be invalid, got {c:?}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

proptest! {
    #[test]
    fn from_args_never_panics(name in proptest::sample::select(ENV_VARS.to_vec()), value in "\\PC{0,30}") {
        let _ = Config::from_args(&args_with(&[(name, &value)]));
    }
}
