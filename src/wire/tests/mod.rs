//! Tests of the wire format: every fixture, Go's decoding rules, encoding, names, URLs,
//! properties. Shared fixtures and helpers are here.

mod decoding;
mod encoding;
mod fixtures;
mod properties;
mod urls;

pub(super) use super::*;
pub(super) use proptest::prelude::*;

pub(super) const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wire/");

/// Fixtures produced by (or accepted by) Go's encoding/json, which must decode.
pub(super) const GOOD_FIXTURES: [&str; 9] = [
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
pub(super) const CANONICAL_FIXTURES: [&str; 7] = [
    "full.json",
    "minimal.json",
    "dotted-name.json",
    "binary-body.json",
    "annotations.json",
    "callback-userinfo.json",
    "large-body.json",
];

/// The good fixtures except large-body.json, for the mutation property (speed).
pub(super) const SMALL_FIXTURES: [&str; 8] = [
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
pub(super) const POISON_FIXTURES: [(&str, &str); 3] = [
    ("bad-base64.json", "bad_base64"),
    ("missing-function.json", "missing_function"),
    ("not-json.txt", "not_json"),
];

pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURE_DIR}{name}");
    std::fs::read(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

pub(super) fn decode_fixture(name: &str) -> QueueRequest {
    decode(&fixture(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
        .collect()
}

pub(super) fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn url(scheme: &str, host: &str, path: &str, raw_query: &str) -> GoUrl {
    GoUrl {
        scheme: scheme.into(),
        host: host.into(),
        path: path.into(),
        raw_query: raw_query.into(),
        ..GoUrl::default()
    }
}

pub(super) fn code_of(input: &[u8]) -> &'static str {
    match decode(input) {
        Ok(req) => panic!("expected poison, decoded {req:?}"),
        Err(reason) => reason.code(),
    }
}
