//! Tests of the wire format: every fixture, Go's decoding rules, encoding, URLs, properties.

use super::*;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wire/");

/// Fixtures produced by (or accepted by) Go's encoding/json, which must decode.
const GOOD_FIXTURES: [&str; 9] = [
    "full.json",
    "minimal.json",
    "legacy-2020.json",
    "dotted-name.json",
    "binary-body.json",
    "annotations.json",
    "callback-userinfo.json",
    "large-body.json",
    "lowercase-keys.json",
];

/// Fixtures in the current omitempty form with canonical keys: re-encoding them must
/// give the same bytes.
const CANONICAL_FIXTURES: [&str; 7] = [
    "full.json",
    "minimal.json",
    "dotted-name.json",
    "binary-body.json",
    "annotations.json",
    "callback-userinfo.json",
    "large-body.json",
];

/// The good fixtures except large-body.json, for the mutation property (speed).
const SMALL_FIXTURES: [&str; 8] = [
    "full.json",
    "minimal.json",
    "legacy-2020.json",
    "dotted-name.json",
    "binary-body.json",
    "annotations.json",
    "callback-userinfo.json",
    "lowercase-keys.json",
];

/// Poison fixtures and the reason code each must give.
const POISON_FIXTURES: [(&str, &str); 3] = [
    ("bad-base64.json", "bad_base64"),
    ("missing-function.json", "missing_function"),
    ("not-json.txt", "not_json"),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURE_DIR}{name}");
    std::fs::read(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

fn decode_fixture(name: &str) -> QueueRequest {
    decode(&fixture(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
        .collect()
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn url(scheme: &str, host: &str, path: &str, raw_query: &str) -> GoUrl {
    GoUrl {
        scheme: scheme.into(),
        host: host.into(),
        path: path.into(),
        raw_query: raw_query.into(),
        ..GoUrl::default()
    }
}

fn code_of(input: &[u8]) -> &'static str {
    match decode(input) {
        Ok(req) => panic!("expected poison, decoded {req:?}"),
        Err(reason) => reason.code(),
    }
}

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

// --- Go decoding rules -------------------------------------------------------------

#[test]
fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
    let req = decode(
        br#"{"FUNCTION":"f","mEtHoD":"GET","queuename":"q","x-extra":{"a":[1,{}]},
            "CALLBACKURL":{"SCHEME":"http","host":"h","Unknown":[null],"omithost":false,
            "User":{"username":"u","password":"p"}}}"#,
    )
    .expect("decodes");
    assert_eq!(req.function, "f");
    assert_eq!(req.method, "GET");
    assert_eq!(req.queue_name, "q");
    assert_eq!(
        req.callback_url,
        Some(GoUrl {
            user: Some(GoUserinfo),
            ..url("http", "h", "", "")
        })
    );
}

#[test]
fn go_unicode_folding_of_keys() {
    // Go's folding equates U+017F (long s) with s and U+212A (Kelvin) with k.
    let req = decode("{\"Function\":\"f\",\"Ho\u{17F}t\":\"h\",\"Ma\u{212A}\":1}".as_bytes())
        .expect("decodes");
    assert_eq!(req.host, "h");
    assert!(decode("{\"Functio\u{144}\":\"f\"}".as_bytes()).is_err());
}

#[test]
fn nulls_follow_go() {
    // null leaves strings unchanged, clears maps, slices and pointers.
    let req = decode(
        br#"{"Function":"f","function":null,"Host":null,"Header":{"A":["1"]},
            "Annotations":{"a":"1"},"annotations":null,"Body":"eA==","body":null,
            "CallbackUrl":{"Scheme":"http"},"Labels":{"l":null},
            "Environment":null}"#,
    )
    .expect("decodes");
    assert_eq!(req.function, "f");
    assert_eq!(req.host, "");
    assert_eq!(req.header, headers(&[("A", "1")]));
    assert!(req.annotations.is_empty());
    assert!(req.body.is_empty());
    assert_eq!(req.labels, strings(&[("l", "")]));
    assert_eq!(req.callback_url, Some(url("http", "", "", "")));

    let req = decode(
        br#"{"Function":"f","Header":{"A":null,"B":["x",null]},"CallbackUrl":{"Scheme":"http"},
            "CallbackUrl":null}"#,
    )
    .expect("decodes");
    assert_eq!(req.header.get("A"), Some(&Vec::new()));
    assert_eq!(
        req.header.get("B"),
        Some(&vec!["x".to_owned(), String::new()])
    );
    assert_eq!(req.callback_url, None);
    assert_eq!(req.header_value("A"), None);

    // Old producers' all-fields form with nulls everywhere.
    let req = decode(
        br#"{"Header":null,"Host":null,"Body":null,"Method":null,"Path":null,
            "QueryString":null,"Function":"f","QueueName":null,"Annotations":null,
            "Labels":null,"Environment":null,"CallbackUrl":null}"#,
    )
    .expect("decodes");
    assert_eq!(
        req,
        QueueRequest {
            function: "f".into(),
            ..QueueRequest::default()
        }
    );
}

#[test]
fn duplicate_keys_follow_go() {
    let req = decode(
        br#"{"Function":"a","function":"b","Header":{"A":["1"],"A":["2"]},"header":{"B":["3"]},
            "CallbackUrl":{"Scheme":"http","Host":"h"},"callbackUrl":{"Host":"g","Path":"/p"}}"#,
    )
    .expect("decodes");
    assert_eq!(req.function, "b");
    assert_eq!(req.header, headers(&[("A", "2"), ("B", "3")]));
    assert_eq!(req.callback_url, Some(url("http", "g", "/p", "")));
}

#[test]
fn body_follows_go_base64() {
    let body = |json: &str| decode(json.as_bytes()).map(|r| r.body);
    assert_eq!(
        body(r#"{"Function":"f","Body":"SGk="}"#),
        Ok(Bytes::from_static(b"Hi"))
    );
    // Go's decoder skips \r and \n, and accepts non-zero trailing bits.
    assert_eq!(
        body(r#"{"Function":"f","Body":"SG\r\nk="}"#),
        Ok(Bytes::from_static(b"Hi"))
    );
    assert_eq!(
        body(r#"{"Function":"f","Body":"SGl="}"#),
        Ok(Bytes::from_static(b"Hi"))
    );
    assert_eq!(body(r#"{"Function":"f","Body":""}"#), Ok(Bytes::new()));
    // Escaped JSON strings are unescaped before base64 decoding.
    assert_eq!(
        body(r#"{"Function":"f","Body":"\u0053Gk\u003d"}"#),
        Ok(Bytes::from_static(b"Hi"))
    );
    // A []byte also decodes from an array of numbers.
    assert_eq!(
        body(r#"{"Function":"f","Body":[72,105,null]}"#),
        Ok(Bytes::from_static(b"Hi\0"))
    );
    for bad in [
        r#"{"Function":"f","Body":"SGk"}"#,
        r#"{"Function":"f","Body":"SG-_"}"#,
        r#"{"Function":"f","Body":"SGk=SGk="}"#,
        r#"{"Function":"f","Body":"S"}"#,
    ] {
        assert_eq!(code_of(bad.as_bytes()), "bad_base64", "{bad}");
    }
    for bad in [
        r#"{"Function":"f","Body":[256]}"#,
        r#"{"Function":"f","Body":[-1]}"#,
        r#"{"Function":"f","Body":[1.5]}"#,
        r#"{"Function":"f","Body":12}"#,
    ] {
        assert_eq!(code_of(bad.as_bytes()), "wrong_type", "{bad}");
    }
}

#[test]
fn wrong_types_name_the_field() {
    let cases: [(&str, &str); 12] = [
        (r#"{"Function":5}"#, "Function"),
        (r#"{"Function":"f","Host":true}"#, "Host"),
        (r#"{"Function":"f","Method":["POST"]}"#, "Method"),
        (r#"{"Function":"f","Header":[]}"#, "Header"),
        (r#"{"Function":"f","Header":{"X":"v"}}"#, "Header.X"),
        (r#"{"Function":"f","Header":{"X":[1]}}"#, "Header.X"),
        (r#"{"Function":"f","Annotations":{"a":1}}"#, "Annotations.a"),
        (r#"{"Function":"f","Labels":"x"}"#, "Labels"),
        (
            r#"{"Function":"f","CallbackUrl":"http://x/"}"#,
            "CallbackUrl",
        ),
        (
            r#"{"Function":"f","CallbackUrl":{"OmitHost":"no"}}"#,
            "CallbackUrl.OmitHost",
        ),
        (
            r#"{"Function":"f","CallbackUrl":{"User":"u"}}"#,
            "CallbackUrl.User",
        ),
        (r#"{"Function":"f","Body":{}}"#, "Body"),
    ];
    for (json, field) in cases {
        match decode(json.as_bytes()) {
            Err(PoisonReason::WrongType { field: got, detail }) => {
                assert_eq!(got, field, "{json}");
                assert!(!detail.is_empty());
            }
            other => panic!("{json}: expected wrong_type, got {other:?}"),
        }
    }
}

#[test]
fn not_objects_and_syntax_errors() {
    assert_eq!(code_of(b"[]"), "not_object");
    assert_eq!(code_of(b"\"Function\""), "not_object");
    assert_eq!(code_of(b"42"), "not_object");
    // A top-level null is a no-op for Go: an empty request, so no Function.
    assert_eq!(code_of(b"null"), "missing_function");
    assert_eq!(code_of(b""), "not_json");
    assert_eq!(code_of(b"{\"Function\":\"f\"} x"), "not_json");
    assert_eq!(code_of(b"{\"Function\":\"f\""), "not_json");
    assert_eq!(code_of(b"{\"Function\":\"f\",}"), "not_json");
    assert_eq!(code_of(b"{\"Function\":\"\xff\"}"), "not_json");
    // Go validates the whole document first: a later syntax error wins.
    assert_eq!(code_of(b"{\"Host\":1,\"Function\":\"f\",,}"), "not_json");
    assert_eq!(code_of(b"{\"Function\":\"\"}"), "missing_function");
    assert_eq!(code_of(b"{}"), "missing_function");
}

#[test]
fn poison_reasons_display_one_line() {
    let reasons = [
        decode(b"nope").expect_err("poison"),
        decode(b"[1]").expect_err("poison"),
        decode(br#"{"Function":"f","Host":1}"#).expect_err("poison"),
        decode(br#"{"Function":"f","Body":"!"}"#).expect_err("poison"),
        decode(br#"{"Method":"POST"}"#).expect_err("poison"),
    ];
    let codes: Vec<&str> = reasons.iter().map(PoisonReason::code).collect();
    assert_eq!(
        codes,
        [
            "not_json",
            "not_object",
            "wrong_type",
            "bad_base64",
            "missing_function"
        ]
    );
    for reason in &reasons {
        let line = reason.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    }
    assert!(reasons[2].to_string().contains("`Host`"));
}

// --- encoding ----------------------------------------------------------------------

#[test]
fn encode_escapes_like_go() {
    let req = QueueRequest {
        header: headers(&[("X-<&>", "a\u{2028}b\u{2029}c")]),
        method: "POST".into(),
        query_string: "a=1&b=<2>".into(),
        function: "f".into(),
        path: "/\"q\"\\\n\t\r\u{1}\u{8}\u{c}\u{7f}/é".into(),
        ..QueueRequest::default()
    };
    let encoded = String::from_utf8(encode(&req)).expect("utf-8");
    assert_eq!(
        encoded,
        concat!(
            r#"{"Header":{"X-\u003c\u0026\u003e":["a\u2028b\u2029c"]},"Method":"POST","#,
            r#""Path":"/\"q\"\\\n\t\r\u0001\b\f"#,
            "\u{7f}/é",
            r#"","QueryString":"a=1\u0026b=\u003c2\u003e","Function":"f"}"#
        )
    );
    assert_eq!(decode(encoded.as_bytes()), Ok(req));
}

#[test]
fn encode_writes_every_field_in_go_order() {
    let req = QueueRequest {
        header: headers(&[("B", "2"), ("A", "1")]),
        host: "h".into(),
        body: Bytes::from_static(b"Hi"),
        method: "PUT".into(),
        path: "/p".into(),
        query_string: "q".into(),
        function: "f.ns".into(),
        queue_name: "qn".into(),
        annotations: strings(&[("z", "1"), ("a", "2")]),
        labels: strings(&[("l", "v")]),
        environment: strings(&[("E", "v")]),
        callback_url: Some(GoUrl {
            scheme: "https".into(),
            opaque: "o".into(),
            user: Some(GoUserinfo),
            host: "h:1".into(),
            path: "/a b".into(),
            raw_path: "/a%20b".into(),
            omit_host: true,
            force_query: true,
            raw_query: "x=1".into(),
            fragment: "f".into(),
            raw_fragment: "g".into(),
        }),
    };
    let expected = concat!(
        r#"{"Header":{"A":["1"],"B":["2"]},"Host":"h","Body":"SGk=","Method":"PUT","Path":"/p","#,
        r#""QueryString":"q","Function":"f.ns","QueueName":"qn","Annotations":{"a":"2","z":"1"},"#,
        r#""Labels":{"l":"v"},"Environment":{"E":"v"},"CallbackUrl":{"Scheme":"https","#,
        r#""Opaque":"o","User":{},"Host":"h:1","Path":"/a b","RawPath":"/a%20b","OmitHost":true,"#,
        r#""ForceQuery":true,"RawQuery":"x=1","Fragment":"f","RawFragment":"g"}}"#
    );
    assert_eq!(String::from_utf8_lossy(&encode(&req)), expected);
    assert_eq!(decode(expected.as_bytes()), Ok(req));
    // Method and Function are always present, even empty.
    assert_eq!(
        encode(&QueueRequest::default()),
        br#"{"Method":"","Function":""}"#
    );
}

// --- header lookups and function names ------------------------------------------

#[test]
fn header_value_matches_case_insensitively() {
    let mut req = QueueRequest {
        header: headers(&[("x-call-id", "lower"), ("Content-Type", "text/plain")]),
        ..QueueRequest::default()
    };
    assert_eq!(req.call_id(), Some("lower"));
    assert_eq!(req.header_value("CONTENT-TYPE"), Some("text/plain"));
    assert_eq!(req.header_value("Accept"), None);
    req.header
        .insert("X-Call-Id".into(), vec!["exact".into(), "second".into()]);
    assert_eq!(req.call_id(), Some("exact"));
    req.header.insert("X-Call-Id".into(), Vec::new());
    assert_eq!(req.call_id(), Some("lower"));
}

#[test]
fn split_function_cases() {
    let cases = [
        ("figlet", ("figlet", "openfaas-fn")),
        ("figlet.dev", ("figlet", "dev")),
        ("dev.figlet.openfaas-fn", ("dev.figlet", "openfaas-fn")),
        ("a.b.c.d", ("a.b.c", "d")),
        ("figlet.", ("figlet", "openfaas-fn")),
        (".ns", (".ns", "openfaas-fn")),
        ("", ("", "openfaas-fn")),
    ];
    for (input, expected) in cases {
        assert_eq!(split_function(input, "openfaas-fn"), expected, "{input}");
    }
}

// --- URLs ----------------------------------------------------------------------------

fn go_url(text: &str) -> GoUrl {
    GoUrl::from_url(&url::Url::parse(text).expect("valid url"))
}

#[test]
fn from_url_matches_go_parse() {
    assert_eq!(
        go_url("http://Gateway.OpenFaaS:8080/function/receiver?batch=7#frag"),
        GoUrl {
            fragment: "frag".into(),
            ..url(
                "http",
                "gateway.openfaas:8080",
                "/function/receiver",
                "batch=7"
            )
        }
    );
    // Default escaping of the decoded path: no RawPath.
    assert_eq!(go_url("http://h/a b"), url("http", "h", "/a b", ""));
    assert_eq!(go_url("http://h/a%20b"), url("http", "h", "/a b", ""));
    // Escaping that differs from Go's default is kept in RawPath.
    assert_eq!(
        go_url("http://h/a%2Fb"),
        GoUrl {
            raw_path: "/a%2Fb".into(),
            ..url("http", "h", "/a/b", "")
        }
    );
    assert_eq!(
        go_url("http://h/%e2%82%ac"),
        GoUrl {
            raw_path: "/%e2%82%ac".into(),
            ..url("http", "h", "/€", "")
        }
    );
    // Credentials: User = Some, never the secret.
    assert_eq!(
        go_url("https://user:secret@h/cb"),
        GoUrl {
            user: Some(GoUserinfo),
            ..url("https", "h", "/cb", "")
        }
    );
    assert_eq!(
        go_url("http://h/?"),
        GoUrl {
            force_query: true,
            ..url("http", "h", "/", "")
        }
    );
    assert_eq!(go_url("http://[::1]:9/x"), url("http", "[::1]:9", "/x", ""));
    assert_eq!(
        go_url("mailto:ops@example.com"),
        GoUrl {
            scheme: "mailto".into(),
            opaque: "ops@example.com".into(),
            ..GoUrl::default()
        }
    );
    assert_eq!(
        go_url("foo:/bar"),
        GoUrl {
            omit_host: true,
            ..url("foo", "", "/bar", "")
        }
    );
    assert_eq!(
        go_url("http://h/p#a%20b"),
        GoUrl {
            fragment: "a b".into(),
            ..url("http", "h", "/p", "")
        }
    );
    assert_eq!(
        go_url("http://h/p#a%2Fb"),
        GoUrl {
            fragment: "a/b".into(),
            raw_fragment: "a%2Fb".into(),
            ..url("http", "h", "/p", "")
        }
    );
}

#[test]
fn to_url_string_cases() {
    let cases = [
        "http://receiver.example.com:8888/cb/path?batch=7",
        "http://h/a%20b",
        "http://h/a%2Fb",
        "http://h/%e2%82%ac",
        "http://h/?",
        "http://h/p?x=1&y=%20#frag",
        "http://h/p#a%2Fb",
        "http://[::1]:9/x",
        "mailto:ops@example.com",
        "foo:/bar",
        "https://h/a;b,c=d@e$f",
    ];
    for text in cases {
        assert_eq!(go_url(text).to_url_string(), text, "{text}");
    }
    // Userinfo is dropped.
    assert_eq!(
        go_url("https://user:secret@h:8443/cb?x=1").to_url_string(),
        "https://h:8443/cb?x=1"
    );
    // A Path without RawPath is escaped the way Go's EscapedPath does.
    assert_eq!(
        url("http", "h", "/a b", "").to_url_string(),
        "http://h/a%20b"
    );
    assert_eq!(
        url("http", "h", "/€?#|", "").to_url_string(),
        "http://h/%E2%82%AC%3F%23%7C"
    );
    // Go leaves RFC 3986 sub-delims, `:` and `@` unescaped in a path.
    assert_eq!(
        url("http", "h", "/a;b,c=d@e$f:g+h&i'j(k)*l!m", "").to_url_string(),
        "http://h/a;b,c=d@e$f:g+h&i%27j%28k%29%2Al%21m"
    );
    assert_eq!(go_url("https://h/a;b,c=d@e$f").raw_path, "");
    assert_eq!(url("http", "h", "p", "").to_url_string(), "http://h/p");
    assert_eq!(url("http", "h", "", "").to_url_string(), "http://h");
    // A RawPath that does not encode Path is ignored.
    assert_eq!(
        GoUrl {
            raw_path: "/other".into(),
            ..url("http", "h", "/a b", "")
        }
        .to_url_string(),
        "http://h/a%20b"
    );
    // Relative references.
    assert_eq!(
        url("", "", "/just/path", "q").to_url_string(),
        "/just/path?q"
    );
    assert_eq!(url("", "", "a:b", "").to_url_string(), "./a:b");
    // An IPv6 zone's % is escaped, as Go does.
    assert_eq!(
        url("http", "[fe80::1%en0]:8080", "/", "").to_url_string(),
        "http://[fe80::1%25en0]:8080/"
    );
    // Non-UTF-8 decoded paths keep their escaping through RawPath.
    let odd = go_url("http://h/%FF");
    assert_eq!(odd.path, "/\u{FFFD}");
    assert_eq!(odd.raw_path, "/%FF");
    assert_eq!(odd.to_url_string(), "http://h/%FF");
}

// --- properties --------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        r#"[a-zA-Z0-9<>&/ %+=?#\\"\x00-\x1f\x7f\x{2028}\x{2029}\x{e9}\x{1F600}]{0,12}"#,
    ]
}

fn go_url_strategy() -> impl Strategy<Value = GoUrl> {
    (
        text(),
        text(),
        option::of(Just(GoUserinfo)),
        text(),
        text(),
        text(),
        any::<bool>(),
        any::<bool>(),
        text(),
        text(),
        text(),
    )
        .prop_map(
            |(
                scheme,
                opaque,
                user,
                host,
                path,
                raw_path,
                omit_host,
                force_query,
                raw_query,
                fragment,
                raw_fragment,
            )| GoUrl {
                scheme,
                opaque,
                user,
                host,
                path,
                raw_path,
                omit_host,
                force_query,
                raw_query,
                fragment,
                raw_fragment,
            },
        )
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(text(), text(), 0..4)
}

fn request_strategy() -> impl Strategy<Value = QueueRequest> {
    (
        btree_map(text(), vec(text(), 0..3), 0..5),
        text(),
        vec(any::<u8>(), 0..300),
        text(),
        text(),
        text(),
        (any::<char>(), text()).prop_map(|(c, rest)| format!("{c}{rest}")),
        text(),
        string_map(),
        string_map(),
        string_map(),
        option::of(go_url_strategy()),
    )
        .prop_map(
            |(
                header,
                host,
                body,
                method,
                path,
                query_string,
                function,
                queue_name,
                annotations,
                labels,
                environment,
                callback_url,
            )| QueueRequest {
                header,
                host,
                body: Bytes::from(body),
                method,
                path,
                query_string,
                function,
                queue_name,
                annotations,
                labels,
                environment,
                callback_url,
            },
        )
}

proptest! {
    #[test]
    fn decode_inverts_encode(req in request_strategy()) {
        let encoded = encode(&req);
        prop_assert!(!encoded.iter().any(|b| matches!(b, b'<' | b'>' | b'&')));
        prop_assert_eq!(decode(&encoded), Ok(req));
    }

    #[test]
    fn decode_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_fixtures(
        which in 0..SMALL_FIXTURES.len(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = fixture(SMALL_FIXTURES[which]);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let keep = cut.index(bytes.len() + 1);
        if let Ok(req) = decode(&bytes) {
            prop_assert!(!req.function.is_empty());
        }
        let _ = decode(&bytes[..keep]);
    }

    #[test]
    fn url_round_trips_through_go_form(
        path in "(/[a-zA-Z0-9 %~!$&'()*+,;=:@\\[\\]|^é-]{0,8}){0,3}",
        query in proptest::option::of("[a-z0-9=&%]{0,8}"),
    ) {
        let mut text = format!("http://h:8080{path}");
        if let Some(q) = &query {
            text.push('?');
            text.push_str(q);
        }
        if let Ok(parsed) = url::Url::parse(&text) {
            let go = GoUrl::from_url(&parsed);
            let printed = go.to_url_string();
            let again = GoUrl::from_url(&url::Url::parse(&printed).expect("re-parses"));
            // The decoded path and the query survive printing; printing is a fixpoint.
            prop_assert_eq!(&again.path, &go.path);
            prop_assert_eq!(&again.raw_query, &go.raw_query);
            prop_assert_eq!(again.to_url_string(), printed);
        }
    }
}
