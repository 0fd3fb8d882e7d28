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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};

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

/// Split `name.namespace` on the last `.`, like the gateway's `getNameParts`.
///
/// `"dev.figlet.openfaas-fn"` gives `("dev.figlet", "openfaas-fn")`. Without a dot, with
/// the dot first (`".x"`, as Go), or with nothing after the dot (`"fn."` gives `"fn"`),
/// the namespace is `default_namespace`.
pub fn split_function<'a>(function: &'a str, default_namespace: &'a str) -> (&'a str, &'a str) {
    match function.rfind('.') {
        Some(dot) if dot > 0 => {
            let (name, namespace) = (&function[..dot], &function[dot + 1..]);
            if namespace.is_empty() {
                (name, default_namespace)
            } else {
                (name, namespace)
            }
        }
        _ => (function, default_namespace),
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decode a message as Go's `json.Unmarshal` into `QueueRequest` would, then require a
/// non-empty `Function`. Any failure is a [`PoisonReason`].
pub fn decode(bytes: &[u8]) -> Result<QueueRequest, PoisonReason> {
    let mut ctx = Ctx::default();
    // Valid UTF-8 (every real message): checked once here, in bulk, instead of string by
    // string inside the parser. Otherwise the byte parser, which reports where it went wrong.
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            RequestSeed { ctx: &mut ctx }
                .deserialize(&mut de)
                .and_then(|req| de.end().map(|()| req))
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            RequestSeed { ctx: &mut ctx }
                .deserialize(&mut de)
                .and_then(|req| de.end().map(|()| req))
        }
    };
    match parsed {
        Ok(req) if req.function.is_empty() => Err(PoisonReason::MissingFunction),
        Ok(req) => Ok(req),
        Err(err) => Err(classify(bytes, &err, ctx)),
    }
}

fn classify(bytes: &[u8], err: &serde_json::Error, ctx: Ctx) -> PoisonReason {
    if err.classify() != serde_json::error::Category::Data {
        return PoisonReason::NotJson(err.to_string());
    }
    // Go checks the whole document's syntax before decoding anything, so a syntax
    // error after a type error is what Go reports. Only on this (poison) path.
    if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(bytes) {
        return PoisonReason::NotJson(syntax.to_string());
    }
    match (ctx.reason, ctx.field) {
        (Some(reason), _) => reason,
        (None, Some(field)) => PoisonReason::WrongType {
            field,
            detail: err.to_string(),
        },
        (None, None) => PoisonReason::NotObject(err.to_string()),
    }
}

/// Where a decode error happened, filled in innermost-first on the error path only.
#[derive(Default)]
struct Ctx {
    field: Option<String>,
    reason: Option<PoisonReason>,
}

impl Ctx {
    fn at(&mut self, field: impl FnOnce() -> String) {
        if self.field.is_none() {
            self.field = Some(field());
        }
    }
}

const REQUEST_FIELDS: [&str; 12] = [
    "Header",
    "Host",
    "Body",
    "Method",
    "Path",
    "QueryString",
    "Function",
    "QueueName",
    "Annotations",
    "Labels",
    "Environment",
    "CallbackUrl",
];

const URL_FIELDS: [&str; 11] = [
    "Scheme",
    "Opaque",
    "User",
    "Host",
    "Path",
    "RawPath",
    "OmitHost",
    "ForceQuery",
    "RawQuery",
    "Fragment",
    "RawFragment",
];

/// Go's key matching: an exact match, else a case-insensitive one. The names here are
/// ASCII letters, for which Go's folding also equates `ſ` (U+017F) with `s` and the
/// Kelvin sign (U+212A) with `k`.
fn match_field(names: &[&str], key: &str) -> Option<usize> {
    names
        .iter()
        .position(|name| *name == key)
        .or_else(|| names.iter().position(|name| go_fold_eq(name, key)))
}

fn go_fold_eq(name: &str, key: &str) -> bool {
    let mut key_chars = key.chars();
    for expected in name.bytes() {
        let expected = expected.to_ascii_lowercase();
        let matched = match key_chars.next() {
            Some(c) if c.is_ascii() => (c as u8).to_ascii_lowercase() == expected,
            Some('\u{017F}') => expected == b's',
            Some('\u{212A}') => expected == b'k',
            _ => false,
        };
        if !matched {
            return false;
        }
    }
    key_chars.next().is_none()
}

/// Deserialises an object key into the index of the field it names (`None`: unknown).
#[derive(Clone, Copy)]
struct KeySeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(match_field(self.0, key))
    }
}

struct RequestSeed<'a> {
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = QueueRequest;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = QueueRequest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a QueueRequest object")
    }

    /// A top-level `null` is a no-op for Go: an empty request (then: missing Function).
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(QueueRequest::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut req = QueueRequest::default();
        while let Some(key) = map.next_key_seed(KeySeed(&REQUEST_FIELDS))? {
            let Some(index) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let result = match index {
                0 => map.next_value_seed(HeaderInto {
                    target: &mut req.header,
                    ctx: &mut *ctx,
                }),
                1 => map.next_value_seed(StrInto(&mut req.host)),
                2 => map.next_value_seed(BodyInto {
                    target: &mut req.body,
                    ctx: &mut *ctx,
                }),
                3 => map.next_value_seed(StrInto(&mut req.method)),
                4 => map.next_value_seed(StrInto(&mut req.path)),
                5 => map.next_value_seed(StrInto(&mut req.query_string)),
                6 => map.next_value_seed(StrInto(&mut req.function)),
                7 => map.next_value_seed(StrInto(&mut req.queue_name)),
                8 => map.next_value_seed(StrMapInto {
                    target: &mut req.annotations,
                    name: "Annotations",
                    ctx: &mut *ctx,
                }),
                9 => map.next_value_seed(StrMapInto {
                    target: &mut req.labels,
                    name: "Labels",
                    ctx: &mut *ctx,
                }),
                10 => map.next_value_seed(StrMapInto {
                    target: &mut req.environment,
                    name: "Environment",
                    ctx: &mut *ctx,
                }),
                _ => map.next_value_seed(UrlInto {
                    target: &mut req.callback_url,
                    ctx: &mut *ctx,
                }),
            };
            if let Err(err) = result {
                ctx.at(|| REQUEST_FIELDS[index].to_owned());
                return Err(err);
            }
        }
        Ok(req)
    }
}

/// A Go `string` field: a JSON string replaces it, `null` leaves it unchanged.
struct StrInto<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for StrInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        if self.0.capacity() == 0 {
            // One exact allocation (the usual case: the field was empty).
            *self.0 = value.to_owned();
        } else {
            value.clone_into(self.0);
        }
        Ok(())
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<(), E> {
        *self.0 = value;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A Go `bool` field: a JSON bool replaces it, `null` leaves it unchanged.
struct BoolInto<'a>(&'a mut bool);

impl<'de> DeserializeSeed<'de> for BoolInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoolInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean or null")
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        *self.0 = value;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A Go `[]string` map value: `null` is an empty (nil) list; a `null` element is `""`.
struct StrListInto<'a>(&'a mut Vec<String>);

impl<'de> DeserializeSeed<'de> for StrListInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrListInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.clear();
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.clear();
        // Header lists nearly always hold one value: size for that, exactly.
        self.0.reserve_exact(1);
        loop {
            let mut value = String::new();
            match seq.next_element_seed(StrInto(&mut value))? {
                Some(()) => self.0.push(value),
                None => return Ok(()),
            }
        }
    }
}

/// `Header` (`http.Header`): an object merges into the map, `null` clears it.
struct HeaderInto<'a> {
    target: &'a mut BTreeMap<String, Vec<String>>,
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for HeaderInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeaderInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of string arrays or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.target.clear();
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let mut values = Vec::new();
            if let Err(err) = map.next_value_seed(StrListInto(&mut values)) {
                self.ctx.at(|| format!("Header.{key}"));
                return Err(err);
            }
            self.target.insert(key, values);
        }
        Ok(())
    }
}

/// A Go `map[string]string`: an object merges into the map, `null` clears it, a
/// `null` value is `""`.
struct StrMapInto<'a> {
    target: &'a mut BTreeMap<String, String>,
    name: &'static str,
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for StrMapInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrMapInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of strings or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.target.clear();
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let mut value = String::new();
            if let Err(err) = map.next_value_seed(StrInto(&mut value)) {
                let name = self.name;
                self.ctx.at(|| format!("{name}.{key}"));
                return Err(err);
            }
            self.target.insert(key, value);
        }
        Ok(())
    }
}

/// Go's `base64.StdEncoding` decoder: padding required, non-zero trailing bits allowed.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Decode standard padded base64 as Go does (it skips `\r` and `\n`), straight into `Bytes`.
fn decode_body(text: &str) -> Result<Bytes, base64::DecodeError> {
    // The common case has no line breaks: decode at once, without a scan first. `\r` and `\n`
    // are not base64, so a body holding them always fails here and takes the slow path.
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    match GO_STD_BASE64.decode_vec(text.as_bytes(), &mut out) {
        Ok(()) => return Ok(Bytes::from(out)),
        Err(e) if !text.bytes().any(|b| b == b'\r' || b == b'\n') => return Err(e),
        Err(_) => out.clear(),
    }
    let input: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    GO_STD_BASE64.decode_vec(input.as_bytes(), &mut out)?;
    Ok(Bytes::from(out))
}

/// `Body` (`[]byte`): a base64 string, `null` (empty), or, as Go allows, an array of bytes.
struct BodyInto<'a> {
    target: &'a mut Bytes,
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for BodyInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodyInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base64 string or null")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        match decode_body(value) {
            Ok(body) => {
                *self.target = body;
                Ok(())
            }
            Err(err) => {
                let detail = err.to_string();
                let error = E::custom(format_args!("invalid base64: {detail}"));
                self.ctx.reason = Some(PoisonReason::BadBase64(detail));
                Err(error)
            }
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.target = Bytes::new();
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(byte) = seq.next_element_seed(ByteSeed)? {
            out.push(byte);
        }
        *self.target = Bytes::from(out);
        Ok(())
    }
}

/// One element of a `[]byte` written as an array: an integer 0..=255, `null` is 0.
struct ByteSeed;

impl<'de> DeserializeSeed<'de> for ByteSeed {
    type Value = u8;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u8, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ByteSeed {
    type Value = u8;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer from 0 to 255")
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u8, E> {
        u8::try_from(value).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
    }
    fn visit_unit<E: de::Error>(self) -> Result<u8, E> {
        Ok(0)
    }
}

/// `CallbackUrl` (`*url.URL`): `null` is `None`; an object is decoded into the existing
/// URL (Go reuses the pointer target), or into a new one.
struct UrlInto<'a> {
    target: &'a mut Option<GoUrl>,
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for UrlInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UrlInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a URL object or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.target = None;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let url = self.target.get_or_insert_with(GoUrl::default);
        while let Some(key) = map.next_key_seed(KeySeed(&URL_FIELDS))? {
            let Some(index) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let result = match index {
                0 => map.next_value_seed(StrInto(&mut url.scheme)),
                1 => map.next_value_seed(StrInto(&mut url.opaque)),
                2 => map.next_value_seed(UserInto(&mut url.user)),
                3 => map.next_value_seed(StrInto(&mut url.host)),
                4 => map.next_value_seed(StrInto(&mut url.path)),
                5 => map.next_value_seed(StrInto(&mut url.raw_path)),
                6 => map.next_value_seed(BoolInto(&mut url.omit_host)),
                7 => map.next_value_seed(BoolInto(&mut url.force_query)),
                8 => map.next_value_seed(StrInto(&mut url.raw_query)),
                9 => map.next_value_seed(StrInto(&mut url.fragment)),
                _ => map.next_value_seed(StrInto(&mut url.raw_fragment)),
            };
            if let Err(err) = result {
                self.ctx.at(|| format!("CallbackUrl.{}", URL_FIELDS[index]));
                return Err(err);
            }
        }
        Ok(())
    }
}

/// `User` (`*url.Userinfo`, no exported fields): `null` is `None`, any object is `Some`.
struct UserInto<'a>(&'a mut Option<GoUserinfo>);

impl<'de> DeserializeSeed<'de> for UserInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UserInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        *self.0 = Some(GoUserinfo);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Encode as Go's `json.Marshal` encodes the current `QueueRequest` struct: fields in
/// struct order, `omitempty` fields left out when empty, map keys sorted, `Body` as
/// standard padded base64, and Go's HTML-safe string escaping.
pub fn encode(req: &QueueRequest) -> Vec<u8> {
    let estimate = 256
        + req.body.len() / 3 * 4
        + req
            .header
            .iter()
            .map(|(k, v)| k.len() + v.iter().map(|s| s.len() + 3).sum::<usize>() + 8)
            .sum::<usize>();
    let mut out = Vec::with_capacity(estimate);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Writing into a Vec has no I/O errors, and every map key is a string: this cannot fail.
    WireRequest(req)
        .serialize(&mut serializer)
        .expect("serialising a QueueRequest into memory cannot fail");
    out
}

/// serde_json's compact formatter plus Go's extra escapes: `<`, `>`, `&`, U+2028, U+2029.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let (escape, len): (&[u8], usize) = match bytes[i] {
                b'<' => (b"\\u003c", 1),
                b'>' => (b"\\u003e", 1),
                b'&' => (b"\\u0026", 1),
                // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8.
                0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => {
                    (b"\\u2028", 3)
                }
                0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => {
                    (b"\\u2029", 3)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(escape)?;
            i += len;
            start = i;
        }
        writer.write_all(&bytes[start..])
    }
}

struct WireRequest<'a>(&'a QueueRequest);

impl Serialize for WireRequest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let req = self.0;
        let mut map = serializer.serialize_map(None)?;
        if !req.header.is_empty() {
            map.serialize_entry("Header", &req.header)?;
        }
        if !req.host.is_empty() {
            map.serialize_entry("Host", &req.host)?;
        }
        if !req.body.is_empty() {
            map.serialize_entry("Body", &WireBody(&req.body))?;
        }
        map.serialize_entry("Method", &req.method)?;
        if !req.path.is_empty() {
            map.serialize_entry("Path", &req.path)?;
        }
        if !req.query_string.is_empty() {
            map.serialize_entry("QueryString", &req.query_string)?;
        }
        map.serialize_entry("Function", &req.function)?;
        if !req.queue_name.is_empty() {
            map.serialize_entry("QueueName", &req.queue_name)?;
        }
        if !req.annotations.is_empty() {
            map.serialize_entry("Annotations", &req.annotations)?;
        }
        if !req.labels.is_empty() {
            map.serialize_entry("Labels", &req.labels)?;
        }
        if !req.environment.is_empty() {
            map.serialize_entry("Environment", &req.environment)?;
        }
        if let Some(url) = &req.callback_url {
            map.serialize_entry("CallbackUrl", &WireUrl(url))?;
        }
        map.end()
    }
}

/// `[]byte`: standard padded base64, written without an intermediate `String`.
struct WireBody<'a>(&'a [u8]);

impl Serialize for WireBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

struct WireUrl<'a>(&'a GoUrl);

impl Serialize for WireUrl<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let url = self.0;
        let mut s = serializer.serialize_struct("URL", URL_FIELDS.len())?;
        s.serialize_field("Scheme", &url.scheme)?;
        s.serialize_field("Opaque", &url.opaque)?;
        s.serialize_field("User", &url.user.as_ref().map(|_| WireUser))?;
        s.serialize_field("Host", &url.host)?;
        s.serialize_field("Path", &url.path)?;
        s.serialize_field("RawPath", &url.raw_path)?;
        s.serialize_field("OmitHost", &url.omit_host)?;
        s.serialize_field("ForceQuery", &url.force_query)?;
        s.serialize_field("RawQuery", &url.raw_query)?;
        s.serialize_field("Fragment", &url.fragment)?;
        s.serialize_field("RawFragment", &url.raw_fragment)?;
        s.end()
    }
}

/// `url.Userinfo` has no exported fields: Go writes `{}`.
struct WireUser;

impl Serialize for WireUser {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

// ---------------------------------------------------------------------------
// Go net/url helpers
// ---------------------------------------------------------------------------

impl GoUrl {
    /// Like Go's `(*url.URL).String()`, except that userinfo is never written (the
    /// credentials are never kept). Uses `RawPath` when it is a valid encoding of `Path`,
    /// otherwise escapes `Path` the way Go's `EscapedPath` does; likewise for the fragment.
    pub fn to_url_string(&self) -> String {
        let mut buf = String::new();
        if !self.scheme.is_empty() {
            buf.push_str(&self.scheme);
            buf.push(':');
        }
        if !self.opaque.is_empty() {
            buf.push_str(&self.opaque);
        } else {
            let has_user = self.user.is_some();
            let has_authority_part = !self.scheme.is_empty() || !self.host.is_empty() || has_user;
            // OmitHost: `scheme:/path` had no authority at all, so no `//` is written.
            let omit_empty_host = self.omit_host && self.host.is_empty() && !has_user;
            if has_authority_part && !omit_empty_host {
                if !self.host.is_empty() || !self.path.is_empty() || has_user {
                    buf.push_str("//");
                }
                if !self.host.is_empty() {
                    buf.push_str(&go_escape(self.host.as_bytes(), Enc::Host));
                }
            }
            let path = self.escaped_path();
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                buf.push('/');
            }
            if buf.is_empty() {
                // RFC 3986 §4.2: a first segment with a colon would read as a scheme.
                let first_segment = path.split('/').next().unwrap_or_default();
                if first_segment.contains(':') {
                    buf.push_str("./");
                }
            }
            buf.push_str(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            buf.push('?');
            buf.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            buf.push('#');
            buf.push_str(&self.escaped_fragment());
        }
        buf
    }

    /// What Go's `url.Parse` produces for this URL's text: lower-case `Scheme`, `Opaque`
    /// for rootless URLs, `Host` with its port, the decoded `Path` with `RawPath` only when
    /// the original escaping differs from Go's default escaping of `Path`, `RawQuery`
    /// (`ForceQuery` for a bare `?`), `Fragment`/`RawFragment` likewise, `OmitHost` for
    /// `scheme:/path`, and `User = Some` when the URL had a user name or password.
    ///
    /// Where Go keeps bytes that are not UTF-8 (`/%FF`), `Path` holds U+FFFD (as Go's JSON
    /// encoder would write) and `RawPath` keeps the original escaping.
    pub fn from_url(u: &url::Url) -> GoUrl {
        let mut go = GoUrl {
            scheme: u.scheme().to_ascii_lowercase(),
            ..GoUrl::default()
        };
        match u.query() {
            Some("") => go.force_query = true,
            Some(query) => query.clone_into(&mut go.raw_query),
            None => {}
        }
        if let Some(fragment) = u.fragment() {
            (go.fragment, go.raw_fragment) = split_escaped(fragment, Enc::Fragment);
        }
        if u.cannot_be_a_base() {
            u.path().clone_into(&mut go.opaque);
            return go;
        }
        if u.has_authority() {
            if !u.username().is_empty() || u.password().is_some() {
                go.user = Some(GoUserinfo);
            }
            let host = u.host_str().unwrap_or_default();
            go.host = percent_encoding::percent_decode_str(host)
                .decode_utf8_lossy()
                .into_owned();
            if let Some(port) = u.port() {
                go.host.push(':');
                go.host.push_str(&port.to_string());
            }
        } else if u.path().starts_with('/') {
            go.omit_host = true;
        }
        (go.path, go.raw_path) = split_escaped(u.path(), Enc::Path);
        go
    }

    fn escaped_path(&self) -> Cow<'_, str> {
        if let Some(raw) = valid_hint(&self.raw_path, &self.path, Enc::Path) {
            return Cow::Borrowed(raw);
        }
        if self.path == "*" {
            return Cow::Borrowed("*");
        }
        Cow::Owned(go_escape(self.path.as_bytes(), Enc::Path))
    }

    fn escaped_fragment(&self) -> Cow<'_, str> {
        match valid_hint(&self.raw_fragment, &self.fragment, Enc::Fragment) {
            Some(raw) => Cow::Borrowed(raw),
            None => Cow::Owned(go_escape(self.fragment.as_bytes(), Enc::Fragment)),
        }
    }
}

/// The `RawPath`/`RawFragment` hint, when it is a valid encoding of the decoded value
/// (compared after replacing non-UTF-8 bytes with U+FFFD, which is how such values are
/// stored here).
fn valid_hint<'a>(raw: &'a str, decoded: &str, mode: Enc) -> Option<&'a str> {
    if raw.is_empty() || !valid_encoded(raw, mode) {
        return None;
    }
    let unescaped = go_unescape(raw)?;
    (String::from_utf8_lossy(&unescaped) == decoded).then_some(raw)
}

/// Go's `setPath`/`setFragment`: (decoded value, raw hint or `""`).
fn split_escaped(escaped: &str, mode: Enc) -> (String, String) {
    let Some(bytes) = go_unescape(escaped) else {
        // Go's url.Parse rejects an invalid %-escape; keep the text as it is.
        return (escaped.to_owned(), escaped.to_owned());
    };
    let canonical = go_escape(&bytes, mode) == escaped;
    match String::from_utf8(bytes) {
        Ok(decoded) if canonical => (decoded, String::new()),
        Ok(decoded) => (decoded, escaped.to_owned()),
        Err(err) => (
            String::from_utf8_lossy(err.as_bytes()).into_owned(),
            escaped.to_owned(),
        ),
    }
}

/// The escaping contexts of Go's `net/url` used here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    Path,
    Host,
    Fragment,
}

/// Go's `shouldEscape` for the modes above.
fn should_escape(c: u8, mode: Enc) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if mode == Enc::Host
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Enc::Path => return c == b'?',
            Enc::Fragment => return false,
            Enc::Host => {}
        },
        _ => {}
    }
    if mode == Enc::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

/// Go's `escape`: `%XX` with upper-case hex for every byte `should_escape` selects.
fn go_escape(s: &[u8], mode: Enc) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &c in s {
        if should_escape(c, mode) {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        } else {
            // Every byte that is not escaped is ASCII.
            out.push(char::from(c));
        }
    }
    out
}

/// Go's `unescape` in path/fragment mode: `%XX` decoded, `+` kept; `None` for a bad escape.
fn go_unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Go's `validEncoded`: no byte that the mode would escape, sub-delims and `%` allowed.
fn valid_encoded(s: &str, mode: Enc) -> bool {
    s.bytes().all(|c| {
        matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'['
                | b']'
                | b'%'
        ) || !should_escape(c, mode)
    })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
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
}
