//! Function names and sub-paths: an accepted name makes valid NATS subjects, splitting a name
//! keeps it, and a refusal says why in a bounded message, whatever the input.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queue_worker::wire::{split_function, validate_function_name, validate_path};

use crate::{bounded, config};

/// What may be inserted into a valid name to break it, or nearly.
const BREAKERS: &[&str] = &[
    ".", "..", " ", "\t", "\n", "\0", "*", ">", "/", "%2e", "%", "?", "#", "\\", "é", "\u{17f}",
    "\u{212a}", "\u{2028}", "\u{ff0e}", "-", "_",
];

/// Names valid, nearly valid (a breaker inserted, around the 253-byte limit), and anything.
pub fn name_like() -> impl Strategy<Value = String> {
    let valid = "[-a-zA-Z0-9_]{1,12}(\\.[-a-zA-Z0-9_]{1,12}){0,3}\\.?";
    prop_oneof![
        3 => valid,
        3 => (valid, any::<prop::sample::Index>(), prop::sample::select(BREAKERS)).prop_map(
            |(name, at, breaker)| {
                let mut name: String = name;
                let i = at.index(name.len() + 1);
                name.insert_str(i, breaker);
                name
            }
        ),
        1 => "[-a-zA-Z0-9_.]{250,256}",
        2 => any::<String>(),
        1 => (0..100_000usize, prop::sample::select(BREAKERS))
            .prop_map(|(n, breaker)| format!("{}{breaker}", "f".repeat(n))),
    ]
}

/// Path-like strings: segments with `.`, `..`, escapes and anything.
pub fn path_like() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        4 => "[a-zA-Z0-9 %?#~é;=-]{0,8}",
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just("%2e%2E".to_string()),
        1 => any::<String>(),
    ];
    (prop::bool::ANY, proptest::collection::vec(segment, 0..5)).prop_map(|(rooted, segments)| {
        let path = segments.join("/");
        if rooted { format!("/{path}") } else { path }
    })
}

/// An accepted name: 1 to 253 bytes of `[-a-zA-Z0-9_.]`, and the subject the ingress makes of
/// it (`<queue>.<name>.<namespace>`) has only non-empty tokens of `[-a-zA-Z0-9_]` (no space, no
/// `*` or `>`, nothing NATS would refuse).
fn check_accepted(name: &str) -> Result<(), TestCaseError> {
    prop_assert!((1..=253).contains(&name.len()), "{} bytes", name.len());
    let (function, namespace) = split_function(name, "openfaas-fn");
    let subject = format!("faas-request.{function}.{namespace}");
    for token in subject.split('.') {
        prop_assert!(!token.is_empty(), "empty token in {subject:?}");
        prop_assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "token {token:?} of {subject:?}"
        );
    }
    Ok(())
}

/// A refusal is bounded and does not quote a long name whole.
fn check_refusal(input: &str, message: &str) -> Result<(), TestCaseError> {
    prop_assert!(bounded(message), "{} characters", message.chars().count());
    if input.chars().count() > 64 {
        prop_assert!(!message.contains(input), "quotes the whole input");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config("proptest-regressions/fuzz/names.txt"))]

    #[test]
    fn accepted_names_make_subjects_and_refusals_stay_short(name in name_like()) {
        match validate_function_name(&name) {
            Ok(()) => check_accepted(&name)?,
            Err(e) => check_refusal(&name, &e.to_string())?,
        }
    }

    #[test]
    fn split_function_keeps_the_name(function in name_like(), default in "[a-z-]{0,12}") {
        let (name, namespace) = split_function(&function, &default);
        prop_assert!(function.starts_with(name));
        prop_assert!(function.is_empty() || !name.is_empty());
        prop_assert!(namespace == default || !namespace.contains('.'));
        let rejoined = format!("{name}.{namespace}");
        prop_assert!(
            rejoined == function
                || (namespace == default && (name == function || format!("{name}.") == function)),
            "{function:?} split into {name:?} and {namespace:?}"
        );
    }

    #[test]
    fn accepted_paths_have_no_dot_segments(path in path_like()) {
        let dots = path.split('/').any(|s| s == "." || s == "..");
        match validate_path(&path) {
            Ok(()) => prop_assert!(!dots),
            Err(e) => {
                prop_assert!(dots);
                check_refusal(&path, &e.to_string())?;
            }
        }
    }
}
