//! Fuzzing by properties (issue 13): `cargo fuzz` needs a nightly toolchain, so the wire decoder,
//! the name and URL rules, and the ingress's request handling are fuzzed with proptest, over
//! arbitrary bytes and over structure-aware inputs (real messages mutated, hostile field values,
//! near-valid names and URLs, requests built from URL-shaped pieces).
//!
//! `cargo test` runs each property with proptest's default number of cases (256, a few seconds
//! in all). `ci/fuzz` runs the same binary in an optimised build with many more
//! (`PROPTEST_CASES`), reports inputs per second and prints each failure's shrunk input; a
//! failure's seed is kept in `proptest-regressions/fuzz/<module>.txt` and replayed first on every
//! later run. `scaling` measures how decoding time grows with the input (it asserts no timing).

mod callback;
mod hostile;
mod ingress;
mod json;
mod names;
mod request;
mod route;
mod scaling;
mod wire;

use proptest::test_runner::{Config, FileFailurePersistence};

/// The proptest configuration of the module whose failures are kept in `file`: the default
/// (so `PROPTEST_CASES` applies), with seeds persisted at a fixed path (proptest cannot find a
/// crate root above an integration test, which its default persistence needs).
fn config(file: &'static str) -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}

/// The longest error message the code may give for input of any size: it says what is wrong,
/// quoting at most a bounded part of the input.
const MAX_ERROR_CHARS: usize = 600;

/// Whether an error message is short enough (see [`MAX_ERROR_CHARS`]), for `prop_assert!`.
fn bounded(message: &str) -> bool {
    message.chars().count() <= MAX_ERROR_CHARS
}
