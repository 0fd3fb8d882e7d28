//! Go's decoding rules, and the names a message may carry.

use super::*;

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

/// Found by tests/fuzz: a reason quoted a whole string of the message (logged, kept with the
/// dead letter). Now its start and its end, which says what was expected and where.
#[test]
fn poison_reasons_quote_a_bounded_part() {
    let long = "a".repeat(10_000);
    let bool_field = format!(r#"{{"Function":"f","CallbackUrl":{{"OmitHost":"{long}"}}}}"#);
    let key = format!(r#"{{"Function":"f","Header":{{"{long}":1}}}}"#);
    let top = format!(r#""{long}""#);
    for input in [bool_field, key, top] {
        let reason = decode(input.as_bytes()).expect_err("poison").to_string();
        assert!(reason.len() < 600, "{} bytes: {reason}", reason.len());
    }
    let reason =
        decode(format!(r#"{{"Function":"f","CallbackUrl":{{"OmitHost":"{long}"}}}}"#).as_bytes());
    let reason = reason.expect_err("poison").to_string();
    assert!(reason.contains("... (10074 bytes) ..."), "{reason}");
    assert!(
        reason.ends_with("expected a boolean or null at line 1 column 10044"),
        "{reason}"
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
