//! Each variable read on its own.

use super::*;

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
        ("idempotency_window", "24h"),
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
    assert_eq!(c.idempotency_window, secs(24 * 3600));
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
        ("payload_offload_bytes", "0"),
        ("metrics_port", "0"),
    ]);
    assert_eq!(c.nats_stream_replicas, 5);
    assert_eq!(c.max_inflight, 65_536);
    assert_eq!(c.consumer_pull_max_messages, Some(10_000));
    assert_eq!(c.max_retry_attempts, 100);
    assert_eq!(c.retry_budget_ratio, 100.0);
    assert_eq!(c.callback_retries, 0);
    assert_eq!(c.max_body_bytes, 64 * 1024 * 1024);
    assert_eq!(c.payload_offload_bytes, 0);
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
        ("consumer_storage", "memory"),
        ("scaling_mode", "function"),
        ("log_encoding", "json"),
        ("backoff", "full"),
    ]);
    assert_eq!(c.nats_storage, Storage::Memory);
    assert_eq!(c.consumer_storage, Storage::Memory);
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
        c.callback_allowed_hosts.entries(),
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

#[test]
fn the_metrics_address_follows_the_port_unless_set() {
    assert_eq!(
        config_with(&[("metrics_port", "9000")]).metrics_addr,
        "0.0.0.0:9000"
    );
    let c = config_with(&[("metrics_port", "9000"), ("metrics_addr", "127.0.0.1:9100")]);
    assert_eq!(c.metrics_addr, "127.0.0.1:9100");
    assert_eq!(
        config_with(&[("metrics_addr", "[::1]:0")]).metrics_addr,
        "[::1]:0"
    );
}

#[test]
fn nats_authentication_takes_one_way_and_tls_files_in_pairs() {
    let c = config_with(&[
        ("nats_user", "worker"),
        ("nats_password_file", "/run/secrets/nats-password"),
        ("nats_tls_ca_file", "/ca.pem"),
        ("nats_tls_cert_file", "/c.pem"),
        ("nats_tls_key_file", "/k.pem"),
        ("nats_tls_insecure", "true"),
    ]);
    assert_eq!(c.nats_user.as_deref(), Some("worker"));
    assert_eq!(c.nats_tls_key_file, Some(PathBuf::from("/k.pem")));
    assert!(c.nats_tls_insecure);
    let c = config_with(&[("nats_token_file", "/t")]);
    assert_eq!(c.nats_token_file, Some(PathBuf::from("/t")));
    for pairs in [
        &[("nats_token_file", "/t"), ("nats_credentials_file", "/c")][..],
        &[
            ("nats_user", "u"),
            ("nats_password_file", "/p"),
            ("nats_token_file", "/t"),
        ][..],
    ] {
        let errors = errors_with(pairs);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("one way"), "{}", errors[0]);
    }
}
