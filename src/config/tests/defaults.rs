//! Defaults, and the rule that an empty value means the default.

use super::*;

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
    assert_eq!(c.consumer_storage, Storage::File);
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
    assert_eq!(c.payload_offload_bytes, 524_288);
    assert_eq!(c.ingress_max_connections, 1024);
    assert_eq!(c.ingress_header_timeout, secs(10));
    assert_eq!(c.ingress_body_timeout, secs(60));
    assert_eq!(c.ingress_max_buffered_bytes, 256 * 1024 * 1024);
    assert_eq!(c.dead_letter_max_age, secs(168 * 3600));
    assert_eq!(c.status_ttl, secs(24 * 3600));
    assert_eq!(c.idempotency_window, secs(120));
    assert_eq!(c.metrics_port, 8081);
    assert_eq!(c.metrics_addr, "0.0.0.0:8081");
    assert_eq!(
        (&c.nats_user, &c.nats_password_file, &c.nats_token_file),
        (&None, &None, &None)
    );
    assert_eq!(
        (
            &c.nats_tls_ca_file,
            &c.nats_tls_cert_file,
            &c.nats_tls_key_file
        ),
        (&None, &None, &None)
    );
    assert!(!c.nats_tls_insecure);
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
