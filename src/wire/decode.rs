//! Decoding as Go's `json.Unmarshal` into `QueueRequest` does (the rules are in the module
//! documentation of [`super`]).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::*;

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
        return PoisonReason::NotJson(brief(err.to_string()));
    }
    // Go checks the whole document's syntax before decoding anything, so a syntax
    // error after a type error is what Go reports. Only on this (poison) path.
    if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(bytes) {
        return PoisonReason::NotJson(brief(syntax.to_string()));
    }
    match (ctx.reason, ctx.field) {
        (Some(reason), _) => reason,
        (None, Some(field)) => PoisonReason::WrongType {
            field: brief(field),
            detail: brief(err.to_string()),
        },
        (None, None) => PoisonReason::NotObject(brief(err.to_string())),
    }
}

/// The most characters kept from each end of a long reason's text.
const BRIEF_END_CHARS: usize = 100;

/// `text`, or its start and its end when it is long: serde_json's messages quote a whole
/// string of the message (`invalid type: string "…", expected …`), and a key names the field,
/// both of any size. The end says what was expected and where.
fn brief(text: String) -> String {
    let chars = text.chars().count();
    if chars <= 2 * BRIEF_END_CHARS + 30 {
        return text;
    }
    let start: String = text.chars().take(BRIEF_END_CHARS).collect();
    let end: String = text.chars().skip(chars - BRIEF_END_CHARS).collect();
    format!("{start}... ({} bytes) ...{end}", text.len())
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

pub(super) const REQUEST_FIELDS: [&str; 12] = [
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

pub(super) const URL_FIELDS: [&str; 11] = [
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
