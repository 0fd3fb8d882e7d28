//! Wire format of the invocation message: the OpenFaaS `QueueRequest`.
//!
//! The message body on the queue is the Go struct `QueueRequest` from
//! openfaas/faas-provider `types/queue.go`, JSON-encoded by Go's `encoding/json`.
//! This module reads every form Go producers have written (the pre-2023 form with
//! every field present and the current `omitempty` form), with Go's decoding rules:
//!
//! * object keys match struct fields exactly or case-insensitively (Go's folding,
//!   which also equates `ſ` with `s` and the Kelvin sign with `k`);
//! * unknown keys are ignored, at every level;
//! * `null` leaves a string or bool field unchanged and clears a map, slice or pointer;
//! * a later duplicate key overwrites a scalar, but merges into a map or into the
//!   `CallbackUrl` object decoded before it (Go decodes into the existing value);
//! * `Body` is standard, padded base64 (`\r` and `\n` ignored, non-zero trailing
//!   bits accepted), or, as Go also accepts for `[]byte`, a JSON array of bytes.
//!
//! A message that does not decode is a *poison message* ([`PoisonReason`]).
//! [`encode`] writes exactly the bytes Go's `json.Marshal` writes for the current
//! struct, including its HTML-safe escaping of `<`, `>`, `&`, U+2028 and U+2029.

mod decode;
mod encode;
mod go_url;
mod names;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bytes::Bytes;

pub use decode::decode;
pub use encode::encode;
pub(crate) use names::quoted;
pub use names::{
    InvalidName, canonical_header_key, parse_callback_url, split_function, validate_function_name,
    validate_path,
};

/// OpenFaaS `QueueRequest` (faas-provider `types/queue.go`): one asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRequest {
    /// JSON `Header`: the inbound HTTP headers. Keys are kept exactly as they appear
    /// in the JSON (Go does not re-canonicalise them); see [`QueueRequest::header_value`].
    pub header: BTreeMap<String, Vec<String>>,
    /// JSON `Host`: the inbound `Host`.
    pub host: String,
    /// JSON `Body`: the request body (standard padded base64 on the wire).
    pub body: Bytes,
    /// JSON `Method`: the inbound method (always present on the wire).
    pub method: String,
    /// JSON `Path`: the decoded path after `/async-function/<name>`; empty for the root.
    pub path: String,
    /// JSON `QueryString`: the raw query, without `?`.
    pub query_string: String,
    /// JSON `Function`: `name` or `name.namespace` (see [`split_function`]). Never empty
    /// in a decoded message.
    pub function: String,
    /// JSON `QueueName`: empty means the default queue.
    pub queue_name: String,
    /// JSON `Annotations`: function annotations passed to the worker.
    pub annotations: BTreeMap<String, String>,
    /// JSON `Labels`: function labels passed to the worker.
    pub labels: BTreeMap<String, String>,
    /// JSON `Environment`: function environment variables passed to the worker.
    pub environment: BTreeMap<String, String>,
    /// JSON `CallbackUrl`: where to send the result, if anywhere.
    pub callback_url: Option<GoUrl>,
}

/// Go's `net/url.URL` as `encoding/json` writes it: every exported field, no tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    /// `Scheme`, lower case.
    pub scheme: String,
    /// `Opaque`: encoded opaque data (`mailto:x` has opaque `x`).
    pub opaque: String,
    /// `User`: `null` on the wire is `None`; `{}` is `Some(GoUserinfo)`. Go cannot encode
    /// the credentials themselves, so they are lost in transit.
    pub user: Option<GoUserinfo>,
    /// `Host`: `host` or `host:port`.
    pub host: String,
    /// `Path`, decoded.
    pub path: String,
    /// `RawPath`: the original encoding of `Path`, only when it differs from the default.
    pub raw_path: String,
    /// `OmitHost`: the URL had a scheme and no authority (`scheme:/path`).
    pub omit_host: bool,
    /// `ForceQuery`: append `?` even when `RawQuery` is empty.
    pub force_query: bool,
    /// `RawQuery`: encoded query, without `?`.
    pub raw_query: String,
    /// `Fragment`, decoded, without `#`.
    pub fragment: String,
    /// `RawFragment`: the original encoding of `Fragment`, only when it differs from the default.
    pub raw_fragment: String,
}

/// Go's `url.Userinfo`: its fields are unexported, so JSON carries only `{}` and the
/// user name and password never survive the queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUserinfo;

/// Why a message is poison: it can never be invoked, so it is dead-lettered, not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    /// The bytes are not one valid JSON document.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("message is not a JSON object: {0}")]
    NotObject(String),
    /// A known field holds a JSON value of the wrong type.
    #[error("field `{field}` has the wrong JSON type: {detail}")]
    WrongType {
        /// The field, e.g. `Host`, `Header.X-Call-Id` or `CallbackUrl.Scheme`.
        field: String,
        /// What was found and what was expected, with the position.
        detail: String,
    },
    /// `Body` is a string that is not standard padded base64.
    #[error("field `Body` is not valid standard base64: {0}")]
    BadBase64(String),
    /// `Function` is missing, `null` or empty.
    #[error("field `Function` is missing or empty")]
    MissingFunction,
}

impl PoisonReason {
    /// A short, stable machine token for metrics labels and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            PoisonReason::NotJson(_) => "not_json",
            PoisonReason::NotObject(_) => "not_object",
            PoisonReason::WrongType { .. } => "wrong_type",
            PoisonReason::BadBase64(_) => "bad_base64",
            PoisonReason::MissingFunction => "missing_function",
        }
    }
}

impl QueueRequest {
    /// The first value of header `name`. An exact key match wins; otherwise keys are
    /// compared ASCII case-insensitively (a lower-case `x-call-id` is found too).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        if let Some(first) = self.header.get(name).and_then(|values| values.first()) {
            return Some(first);
        }
        self.header
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .find_map(|(_, values)| values.first())
            .map(String::as_str)
    }

    /// The `X-Call-Id` header, if any.
    pub fn call_id(&self) -> Option<&str> {
        self.header_value("X-Call-Id")
    }
}

/// The value of annotation `key`, trimmed; `None` when absent or empty.
pub fn annotation<'a>(annotations: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    annotations
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}
