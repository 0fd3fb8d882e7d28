//! Every fixture of `testdata/wire/`, by name: what it decodes to, and its bytes again.

use super::*;

// --- every fixture, by name ------------------------------------------------------

#[test]
fn every_fixture_is_named_by_a_test() {
    let mut named: Vec<&str> = GOOD_FIXTURES.to_vec();
    named.extend(POISON_FIXTURES.iter().map(|(name, _)| *name));
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(FIXTURE_DIR).expect("fixture dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy().into_owned();
        if name != "README.md" {
            on_disk.push(name);
        }
    }
    for name in &on_disk {
        assert!(
            named.contains(&name.as_str()),
            "fixture {name} is not covered by any test"
        );
    }
    for name in &named {
        assert!(
            on_disk.iter().any(|n| n == name),
            "test names fixture {name}, which does not exist"
        );
    }
    for name in CANONICAL_FIXTURES {
        assert!(GOOD_FIXTURES.contains(&name));
    }
}

#[test]
fn fixture_full() {
    let req = decode_fixture("full.json");
    assert_eq!(
        req.header,
        headers(&[
            ("Accept", "*/*"),
            ("Authorization", "Bearer secret-token"),
            ("Content-Type", "application/json"),
            ("User-Agent", "curl/8.5.0"),
            ("X-Batch-Id", "batch-42"),
            ("X-Call-Id", "7d4bc39d-cca2-4ed6-8247-e9f73cdcc4fd"),
            (
                "X-Callback-Url",
                "http://receiver.example.com:8888/cb/path?batch=7"
            ),
            ("X-Start-Time", "1735732800123456789"),
        ])
    );
    assert_eq!(req.host, "127.0.0.1:8080");
    assert_eq!(req.body, Bytes::from_static(br#"{"hello":"world"}"#));
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/employees/100");
    assert_eq!(req.query_string, "user=1&tag=a%20b");
    assert_eq!(req.function, "figlet.openfaas-fn");
    assert_eq!(req.queue_name, "");
    assert!(req.annotations.is_empty() && req.labels.is_empty());
    assert!(req.environment.is_empty());
    assert_eq!(
        req.callback_url,
        Some(url(
            "http",
            "receiver.example.com:8888",
            "/cb/path",
            "batch=7"
        ))
    );
    let callback = req.callback_url.as_ref().expect("callback");
    assert_eq!(
        callback.to_url_string(),
        "http://receiver.example.com:8888/cb/path?batch=7"
    );
    assert_eq!(req.call_id(), Some("7d4bc39d-cca2-4ed6-8247-e9f73cdcc4fd"));
    assert_eq!(req.header_value("content-type"), Some("application/json"));
    assert_eq!(
        split_function(&req.function, "default"),
        ("figlet", "openfaas-fn")
    );
}

#[test]
fn fixture_minimal() {
    let req = decode_fixture("minimal.json");
    assert_eq!(
        req,
        QueueRequest {
            method: "POST".into(),
            function: "figlet".into(),
            ..QueueRequest::default()
        }
    );
    assert_eq!(req.call_id(), None);
}

#[test]
fn fixture_legacy_2020() {
    let bytes = fixture("legacy-2020.json");
    let req = decode(&bytes).expect("legacy decodes");
    assert_eq!(
        req.header,
        headers(&[
            ("Accept", "*/*"),
            ("Content-Length", "2"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("User-Agent", "curl/7.64.1"),
            ("X-Call-Id", "791c08d4-d242-4ad2-9ce3-cae4cf4a2087"),
            ("X-Start-Time", "1588053367451096400"),
        ])
    );
    assert_eq!(req.host, "127.0.0.1:31112");
    assert_eq!(req.body, Bytes::from_static(b"{}"));
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "");
    assert_eq!(req.query_string, "");
    assert_eq!(req.function, "cows");
    assert_eq!(req.queue_name, "");
    assert_eq!(req.callback_url, None);
    // Re-encodes to the omitempty form: empty Path, QueryString, QueueName and the
    // null CallbackUrl are left out.
    let expected = concat!(
        r#"{"Header":{"Accept":["*/*"],"Content-Length":["2"],"#,
        r#""Content-Type":["application/x-www-form-urlencoded"],"User-Agent":["curl/7.64.1"],"#,
        r#""X-Call-Id":["791c08d4-d242-4ad2-9ce3-cae4cf4a2087"],"#,
        r#""X-Start-Time":["1588053367451096400"]},"#,
        r#""Host":"127.0.0.1:31112","Body":"e30=","Method":"POST","Function":"cows"}"#
    );
    assert_eq!(String::from_utf8_lossy(&encode(&req)), expected);
}

#[test]
fn fixture_dotted_name() {
    let req = decode_fixture("dotted-name.json");
    assert_eq!(req.function, "dev.figlet.openfaas-fn");
    assert_eq!(
        split_function(&req.function, "openfaas-fn"),
        ("dev.figlet", "openfaas-fn")
    );
    assert_eq!(req.body, Bytes::from_static(b"x"));
    assert_eq!(req.call_id(), Some("0b7f1e7a-3f5c-4d51-9d0a-1c2b3d4e5f60"));
    assert_eq!(
        req.header_value("X-Start-Time"),
        Some("1735732800000000001")
    );
    assert_eq!(req.method, "POST");
}

#[test]
fn fixture_binary_body() {
    let req = decode_fixture("binary-body.json");
    let expected: Vec<u8> = (0..=255).collect();
    assert_eq!(req.body.as_ref(), expected.as_slice());
    assert_eq!(
        req.header_value("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(req.call_id(), Some("c0ffee00-0000-4000-8000-000000000003"));
    assert_eq!(req.function, "resize");
}

#[test]
fn fixture_annotations() {
    let req = decode_fixture("annotations.json");
    assert_eq!(req.queue_name, "slow-fns");
    assert_eq!(req.function, "pdf-gen.openfaas-fn");
    assert_eq!(req.body, Bytes::from_static(b"render"));
    assert_eq!(
        req.annotations,
        strings(&[
            ("com.openfaas.queue", "slow-fns"),
            ("com.openfaas.retry.attempts", "3"),
            ("com.openfaas.retry.codes", "429,503"),
            ("com.openfaas.retry.max_wait", "4s"),
            ("com.openfaas.retry.min_wait", "1s"),
        ])
    );
    let callback = req.callback_url.expect("callback");
    assert_eq!(callback, url("https", "hooks.example.com", "/done", ""));
    assert_eq!(callback.to_url_string(), "https://hooks.example.com/done");
}

#[test]
fn fixture_callback_userinfo() {
    let req = decode_fixture("callback-userinfo.json");
    let callback = req.callback_url.expect("callback");
    assert_eq!(
        callback,
        GoUrl {
            user: Some(GoUserinfo),
            ..url("http", "receiver.example.com", "/cb", "")
        }
    );
    // Go would print `http://@receiver.example.com/cb`; we never write userinfo.
    assert_eq!(callback.to_url_string(), "http://receiver.example.com/cb");
    assert_eq!(req.function, "figlet");
}

#[test]
fn fixture_large_body() {
    let bytes = fixture("large-body.json");
    assert!(bytes.len() > 800 * 1000 && bytes.len() < 1024 * 1024);
    let req = decode(&bytes).expect("large body decodes");
    assert_eq!(req.body.len(), 600 * 1024);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz";
    assert!(
        req.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == alphabet[i % alphabet.len()])
    );
    assert_eq!(req.function, "wc");
    assert_eq!(req.call_id(), Some("b16b16b1-0000-4000-8000-000000000006"));
}

#[test]
fn fixture_lowercase_keys() {
    let req = decode_fixture("lowercase-keys.json");
    assert_eq!(req.function, "x");
    assert_eq!(req.body, Bytes::from_static(b"{}"));
    assert_eq!(req.header, headers(&[("X-Call-Id", "abc")]));
    assert_eq!(req.method, "");
    let callback = req.callback_url.as_ref().expect("callback");
    assert_eq!(*callback, url("http", "127.0.0.1:1", "/p", ""));
    assert_eq!(callback.to_url_string(), "http://127.0.0.1:1/p");
    let expected = concat!(
        r#"{"Header":{"X-Call-Id":["abc"]},"Body":"e30=","Method":"","Function":"x","#,
        r#""CallbackUrl":{"Scheme":"http","Opaque":"","User":null,"Host":"127.0.0.1:1","#,
        r#""Path":"/p","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"","#,
        r#""Fragment":"","RawFragment":""}}"#
    );
    assert_eq!(String::from_utf8_lossy(&encode(&req)), expected);
}

#[test]
fn fixture_bad_base64() {
    let err = decode(&fixture("bad-base64.json")).expect_err("poison");
    assert_eq!(err.code(), "bad_base64");
    assert!(matches!(err, PoisonReason::BadBase64(_)), "{err:?}");
}

#[test]
fn fixture_missing_function() {
    let err = decode(&fixture("missing-function.json")).expect_err("poison");
    assert_eq!(err, PoisonReason::MissingFunction);
    assert_eq!(err.code(), "missing_function");
}

#[test]
fn fixture_not_json() {
    let err = decode(&fixture("not-json.txt")).expect_err("poison");
    assert_eq!(err.code(), "not_json");
    assert!(err.to_string().starts_with("message is not valid JSON"));
}

#[test]
fn poison_fixture_codes() {
    for (name, code) in POISON_FIXTURES {
        assert_eq!(code_of(&fixture(name)), code, "{name}");
    }
}

#[test]
fn fixtures_round_trip() {
    for name in GOOD_FIXTURES {
        let first = decode_fixture(name);
        let again = decode(&encode(&first)).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(first, again, "{name}");
    }
}

#[test]
fn canonical_fixtures_re_encode_byte_for_byte() {
    for name in CANONICAL_FIXTURES {
        let bytes = fixture(name);
        let encoded = encode(&decode_fixture(name));
        assert!(
            encoded == bytes,
            "{name}: re-encoded bytes differ:\n{}\n{}",
            String::from_utf8_lossy(&encoded[..encoded.len().min(600)]),
            String::from_utf8_lossy(&bytes[..bytes.len().min(600)])
        );
    }
}
