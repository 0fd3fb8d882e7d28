//! One error per bad variable, naming it, its value and what is allowed.

use super::*;

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
        "consumer_storage" => &["disk", "ram", "0"],
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
        "tls_insecure" | "debug" | "limiter_enabled" | "basic_auth" | "nats_tls_insecure"
        | "store_results" => &["yes", "no", "on", "2", "tRUE", "truee"],
        "log_encoding" => &["text", "logfmt"],
        "max_retry_attempts" => &["0", "10001", "ten"],
        "max_retry_wait" => &["2m3", "forever", "5s"],
        "initial_retry_wait" => &["1y", "-1s", "121s"],
        "retry_http_codes" => &["99", "600", "abc", "429;503", ",", "429,,x"],
        "backoff" => &["linear", "none"],
        "retry_budget_ratio" => &["-0.1", "100.1", "NaN", "inf", "abc", "1e3"],
        "max_delay" => &["1d", "24"],
        "callback_retries" => &["101", "-1", "x"],
        "callback_allowed_hosts" => &[
            "https://example.com",
            "a b",
            "host/path",
            "user@host",
            "10.0.0.0/40",
            "h:0",
        ],
        "metrics_addr" => &["8081", "localhost:8081", "0.0.0.0", ":8081"],
        // Alone, each needs its pair.
        "nats_user" | "nats_password_file" | "nats_tls_cert_file" | "nats_tls_key_file" => &["x"],
        "max_message_age" => &["1w", "-1h", "60"],
        "max_body_bytes" => &["0", "67108865", "1MB", "1.5"],
        "payload_offload_bytes" => &["-1", "67108865", "512KiB", "0.5"],
        "ingress_max_connections" => &["0", "1000001", "many"],
        "ingress_header_timeout" => &["0s", "10"],
        "ingress_body_timeout" => &["0", "1 min"],
        "ingress_max_buffered_bytes" => &["0", "1000", "1GB"],
        "dead_letter_max_age" => &["0", "7d"],
        "status_ttl" => &["-1s", "1day"],
        "idempotency_window" => &["0", "500ms", "25h", "2"],
        "metrics_port" => &["65536", "-1", "http"],
        "shutdown_timeout" => &["30", "-30s"],
        "nats_credentials_file"
        | "nats_token_file"
        | "nats_tls_ca_file"
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
            "nats_token_file",
            "nats_tls_ca_file",
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
