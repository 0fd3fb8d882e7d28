//! Preparing an invocation (`ingress::prepare`, shared by the route and `publish`): either a
//! short reason for a 400, or a message on a valid subject that decodes back to what was
//! submitted, with its call id, start time and a callback the worker can use.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queue_worker::clock::Clock;
use queue_worker::config::Config;
use queue_worker::ingress::{MAX_CALL_ID_LEN, Prepared, Submission, prepare};
use queue_worker::invoke::request::callback_url;
use queue_worker::wire::{QueueRequest, decode, parse_callback_url, validate_function_name};

use crate::callback::url_like;
use crate::names::{name_like, path_like};
use crate::{bounded, config};

/// A fixed clock, so that start times are known.
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_nanos(1_735_732_800_123_456_789)
    }
}

/// The default configuration, routing a few functions to other queues (bare names, with a
/// namespace, with the default namespace).
pub fn routing_config() -> Config {
    let routes = [
        ("routed", "q-routed"),
        ("nsd.openfaas-fn", "q-nsd"),
        ("other.ns2", "q-other"),
    ];
    Config {
        function_queues: routes
            .iter()
            .map(|(f, q)| (f.to_string(), q.to_string()))
            .collect(),
        ..Config::default()
    }
}

/// Function names: the routed ones and anything valid.
fn function() -> impl Strategy<Value = String> {
    const ROUTED: &[&str] = &[
        "routed",
        "routed.ns",
        "nsd",
        "nsd.openfaas-fn",
        "nsd.x",
        "other.ns2",
        "other",
    ];
    prop_oneof![
        1 => prop::sample::select(ROUTED).prop_map(str::to_string),
        3 => name_like().prop_map(valid_name),
    ]
}

/// `name` if valid (the route checks first), else its valid characters, without leading or
/// repeated dots, at most 253 bytes, or `fn`.
fn valid_name(name: String) -> String {
    if validate_function_name(&name).is_ok() {
        return name;
    }
    let mut out = String::new();
    for c in name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        if c != '.' || !(out.is_empty() || out.ends_with('.')) {
            out.push(c);
        }
    }
    out.truncate(253);
    if out.is_empty() {
        "fn".to_string()
    } else {
        out
    }
}

fn call_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]{1,128}",
        "[!-~]{129,140}",
        Just(String::new()),
        any::<String>(),
    ]
}

/// Headers as the route gives them (canonical keys) or as anything else could.
fn header() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
    let special = (
        proptest::option::of(vec(call_id(), 0..3)),
        proptest::option::of(vec(url_like(), 0..3)),
        proptest::option::of(vec("[0-9]{0,20}", 0..2)),
    );
    let others = btree_map(
        prop_oneof!["[A-Z][a-z]{0,8}(-[A-Z][a-z]{0,8}){0,2}", any::<String>()],
        vec(any::<String>(), 0..3),
        0..5,
    );
    (special, others).prop_map(|((ids, urls, starts), mut header)| {
        let pairs = [
            ("X-Call-Id", ids),
            ("X-Callback-Url", urls),
            ("X-Start-Time", starts),
        ];
        for (key, values) in pairs {
            if let Some(values) = values {
                header.insert(key.to_string(), values);
            }
        }
        header
    })
}

fn submission() -> impl Strategy<Value = Submission> {
    (
        function(),
        path_like(),
        prop_oneof!["[a-zA-Z0-9=&%+._~-]{0,30}", any::<String>()],
        header(),
        prop_oneof!["[a-z0-9.:]{0,20}", any::<String>()],
        vec(any::<u8>(), 0..512),
    )
        .prop_map(|(function, path, query, header, host, body)| Submission {
            function,
            path,
            query,
            header,
            host,
            body: Bytes::from(body),
        })
}

/// The first value of `key`, as `prepare` reads it.
fn first<'a>(sub: &'a Submission, key: &str) -> Option<&'a str> {
    sub.header
        .get(key)
        .and_then(|v| v.first())
        .map(String::as_str)
}

/// A refusal: short, one line, and for a reason the submission has.
fn check_refusal(sub: &Submission, why: &str) -> Result<(), TestCaseError> {
    prop_assert!(bounded(why) && !why.contains('\n'), "{why:?}");
    let bad_id = first(sub, "X-Call-Id").is_some_and(|id| {
        !id.is_empty() && (id.len() > MAX_CALL_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()))
    });
    let bad_callback = first(sub, "X-Callback-Url").is_some_and(|u| parse_callback_url(u).is_err());
    prop_assert!(bad_id || bad_callback, "refused for no reason: {why}");
    Ok(())
}

/// The message is what was submitted, with the call id and start time.
fn check_message(sub: &Submission, p: &Prepared, msg: &QueueRequest) -> Result<(), TestCaseError> {
    prop_assert_eq!(&msg.function, &sub.function);
    prop_assert_eq!(&msg.path, &sub.path);
    prop_assert_eq!(&msg.query_string, &sub.query);
    prop_assert_eq!(&msg.host, &sub.host);
    prop_assert_eq!(&msg.body, &sub.body);
    prop_assert_eq!(msg.method.as_str(), "POST");
    prop_assert_eq!(msg.call_id(), Some(p.call_id.as_str()));
    prop_assert_eq!(p.outgoing.msg_id.as_deref(), Some(p.call_id.as_str()));
    let id = &p.call_id;
    prop_assert!(
        !id.is_empty() && id.len() <= MAX_CALL_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
    );
    if let Some(given) = first(sub, "X-Call-Id").filter(|id| !id.is_empty()) {
        prop_assert_eq!(given, id.as_str());
    }
    let starts = msg
        .header
        .get("X-Start-Time")
        .map(Vec::as_slice)
        .unwrap_or_default();
    prop_assert_eq!(starts.last(), Some(&p.start_time));
    for (key, values) in &sub.header {
        if !matches!(key.as_str(), "X-Call-Id" | "X-Start-Time") {
            prop_assert_eq!(msg.header.get(key), Some(values), "header {:?}", key);
        }
    }
    Ok(())
}

/// The subject is `<queue>.<name>.<namespace>` with valid tokens; `QueueName` names a queue
/// the function was routed to (README: `function_queues` "sets `QueueName`").
fn check_routing(cfg: &Config, p: &Prepared, msg: &QueueRequest) -> Result<(), TestCaseError> {
    let subject = &p.outgoing.subject;
    let rest = subject.strip_prefix(&format!("{}.", p.queue));
    let bare = msg.function.strip_suffix('.').unwrap_or(&msg.function);
    let with_namespace = format!("{bare}.{}", cfg.default_function_name);
    prop_assert!(
        rest == Some(msg.function.as_str()) || rest == Some(with_namespace.as_str()),
        "{:?} published on {:?}",
        msg.function,
        subject
    );
    for token in subject.split('.') {
        prop_assert!(
            !token.is_empty()
                && !token.contains(|c: char| c.is_whitespace() || c == '*' || c == '>'),
            "{subject:?}"
        );
    }
    prop_assert_eq!(p.queue.as_str(), cfg.queue_for_function(&msg.function));
    if p.queue != cfg.queue_name {
        prop_assert_eq!(
            &msg.queue_name,
            &p.queue,
            "{:?} routed to {:?}",
            msg.function,
            p.queue
        );
    } else {
        prop_assert!(msg.queue_name.is_empty() || msg.queue_name == p.queue);
    }
    Ok(())
}

/// A callback the ingress accepted is one the worker can use, from the header or the object.
fn check_callback(sub: &Submission, msg: &QueueRequest) -> Result<(), TestCaseError> {
    let asked = first(sub, "X-Callback-Url").is_some();
    prop_assert_eq!(msg.callback_url.is_some(), asked);
    if !asked {
        return Ok(());
    }
    prop_assert!(matches!(callback_url(msg), Some(Ok(_))), "from the header");
    let mut object_only = msg.clone();
    object_only.header.remove("X-Callback-Url");
    let from_object = callback_url(&object_only);
    prop_assert!(
        matches!(from_object, Some(Ok(_))),
        "from the object: {:?}",
        from_object
    );
    Ok(())
}

proptest! {
    #![proptest_config(config("proptest-regressions/fuzz/ingress.txt"))]

    #[test]
    fn prepared_messages_decode_to_the_submission(sub in submission()) {
        let cfg = routing_config();
        match prepare(&cfg, &FixedClock, sub.clone()) {
            Err(why) => check_refusal(&sub, &why)?,
            Ok(p) => {
                prop_assert_eq!(&p.start_time, &FixedClock.unix_nanos().to_string());
                let msg = decode(&p.outgoing.payload);
                prop_assert!(msg.is_ok(), "does not decode: {:?}", msg);
                let msg = msg.unwrap();
                check_message(&sub, &p, &msg)?;
                check_routing(&cfg, &p, &msg)?;
                check_callback(&sub, &msg)?;
            }
        }
    }
}
