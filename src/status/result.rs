//! A call's final response (status, headers, body), kept for `status_ttl` in the queue's bucket
//! `OF_<queue>_results` when `store_results` is on or the request said `X-Store-Result: true`,
//! and read by `GET /system/calls/{call-id}/result`.
//!
//! A value is one JSON line ([`Meta`]) then the body's bytes as they came. A key-value entry
//! must fit NATS's `max_payload` (1 MiB by default): bodies past [`MAX_BODY_BYTES`] are kept
//! cut to it and marked `truncated`; when the server refuses even that, the body is left out.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};

/// The request header that asks for this call's result to be kept.
pub const HEADER: &str = "X-Store-Result";
/// The most of a body kept.
pub const MAX_BODY_BYTES: usize = 768 * 1024;

/// The results bucket of `queue`.
pub fn bucket(queue: &str) -> String {
    format!("OF_{queue}_results")
}

/// Whether a call's result is kept: `store_results`, or its request's [`HEADER`] is `true`.
pub fn wanted(store_results: bool, header: Option<&str>) -> bool {
    store_results || header.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Everything but the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The function's HTTP status.
    pub status: u16,
    /// Its response headers (end-to-end ones; values that are not UTF-8 are left out).
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body's length as the function sent it.
    pub body_bytes: usize,
    /// Only the first [`MAX_BODY_BYTES`] of the body are kept (or none, see the module).
    #[serde(default)]
    pub truncated: bool,
}

/// A kept result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub meta: Meta,
    pub body: Bytes,
}

/// The value kept for a response, its body cut to `max_body` bytes.
pub fn encode(status: u16, headers: &http::HeaderMap, body: &Bytes, max_body: usize) -> Bytes {
    let mut kept: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if crate::invoke::request::is_not_forwarded(name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            kept.entry(name.as_str().to_string())
                .or_default()
                .push(v.to_string());
        }
    }
    let body_kept = &body[..body.len().min(max_body)];
    let meta = Meta {
        status,
        headers: kept,
        body_bytes: body.len(),
        truncated: body_kept.len() < body.len(),
    };
    let line = serde_json::to_vec(&meta).unwrap_or_default();
    let mut out = BytesMut::with_capacity(line.len() + 1 + body_kept.len());
    out.put_slice(&line);
    out.put_u8(b'\n');
    out.put_slice(body_kept);
    out.freeze()
}

/// A kept value read back; `None` when it is not one.
pub fn decode(value: Bytes) -> Option<Kept> {
    let newline = value.iter().position(|b| *b == b'\n')?;
    let meta: Meta = serde_json::from_slice(&value[..newline]).ok()?;
    Some(Kept {
        meta,
        body: value.slice(newline + 1..),
    })
}

/// Keep `value` (from [`encode`] of the response) under `key` in `spec`'s bucket, creating the
/// bucket the first time; a value the server refuses as too large is kept without its body.
pub async fn keep(
    store: &dyn KeyValue,
    spec: &KvSpec,
    key: &str,
    response: (u16, &http::HeaderMap, &Bytes),
) -> Result<(), BrokerError> {
    let (status, headers, body) = response;
    let value = encode(status, headers, body, MAX_BODY_BYTES);
    match put(store, spec, key, value).await {
        Err(BrokerError::TooLarge(_)) => {
            put(store, spec, key, encode(status, headers, body, 0)).await
        }
        other => other,
    }
}

async fn put(
    store: &dyn KeyValue,
    spec: &KvSpec,
    key: &str,
    value: Bytes,
) -> Result<(), BrokerError> {
    kv_lazy::put(store, spec, key, value).await.map(drop)
}

/// The result kept for `call_id` on `queue`; `None` when none is.
pub async fn read(
    store: &dyn KeyValue,
    queue: &str,
    call_id: &str,
) -> Result<Option<Kept>, BrokerError> {
    let Some(key) = super::key::of(call_id) else {
        return Ok(None);
    };
    let value = kv_lazy::get(store, &bucket(queue), &key).await?;
    Ok(value.and_then(decode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_round_trips_without_its_framing_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        headers.insert("content-length", "5".parse().unwrap());
        headers.insert("connection", "close".parse().unwrap());
        let body = Bytes::from_static(b"line1\nline2\xff");
        let kept = decode(encode(201, &headers, &body, MAX_BODY_BYTES)).unwrap();
        assert_eq!(kept.meta.status, 201);
        assert_eq!(kept.body, body);
        assert!(!kept.meta.truncated);
        assert_eq!(kept.meta.body_bytes, body.len());
        assert_eq!(kept.meta.headers["x-a"], ["1", "2"]);
        assert_eq!(kept.meta.headers["content-type"], ["text/plain"]);
        assert!(!kept.meta.headers.contains_key("content-length"));
        assert!(!kept.meta.headers.contains_key("connection"));
    }

    #[test]
    fn long_bodies_are_cut_and_say_so() {
        let body = Bytes::from(vec![b'x'; 100]);
        let kept = decode(encode(200, &http::HeaderMap::new(), &body, 10)).unwrap();
        assert_eq!(kept.body.len(), 10);
        assert!(kept.meta.truncated);
        assert_eq!(kept.meta.body_bytes, 100);
        assert_eq!(decode(Bytes::from_static(b"not a result")), None);
    }

    #[test]
    fn the_header_or_the_setting_asks_for_a_result() {
        assert!(wanted(true, None));
        assert!(wanted(false, Some("true")));
        assert!(wanted(false, Some(" TRUE ")));
        assert!(!wanted(false, Some("yes")));
        assert!(!wanted(false, None));
    }
}
