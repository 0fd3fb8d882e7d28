//! Encoding as Go's `json.Marshal` does.

use super::*;

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
