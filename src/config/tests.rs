//! Tests of the configuration: every variable, its default, its errors, clap.

use super::validate::mask_credentials;
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

proptest! {
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
