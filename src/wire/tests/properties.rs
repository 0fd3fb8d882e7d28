//! Properties over generated messages and URLs.

use super::*;
use proptest::collection::{btree_map, vec};
use proptest::option;

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
