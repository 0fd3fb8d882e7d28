//! A call's final response (status, headers, body), kept for `status_ttl` in the queue's bucket
//! `OF_<queue>_results` when `store_results` is on or the request said `X-Store-Result: true`,
//! and read by `GET /system/calls/{call-id}/result`.
//!
//! A value is one JSON line ([`Meta`]) then the body's bytes as they came. A key-value entry
//! must fit NATS's `max_payload` (1 MiB by default): a body past [`MAX_BODY_BYTES`] (or one
//! the server refuses in an entry) is kept whole as an object of the same name in the queue's
//! object bucket `OF_<queue>_results` (objects expire after `status_ttl` too), the entry saying
//! so (`body_object`). Only when the object store cannot take it is the body kept cut to
//! [`MAX_BODY_BYTES`] and marked `truncated` (or left out when the server refuses even that).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::broker::{BrokerError, KeyValue, KvSpec, ObjectSpec, Objects, kv_lazy};

/// The request header that asks for this call's result to be kept.
pub const HEADER: &str = "X-Store-Result";
/// The most of a body kept in the key-value entry.
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
    /// The body is the object of the same name in the results object bucket.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_object: bool,
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
        body_object: false,
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

/// The entry of a response whose body is kept as an object.
fn encode_with_object(status: u16, headers: &http::HeaderMap, body: &Bytes) -> Bytes {
    let value = encode(status, headers, body, 0);
    let Some(mut kept) = decode(value.clone()) else {
        return value;
    };
    kept.meta.truncated = false;
    kept.meta.body_object = true;
    let mut line = serde_json::to_vec(&kept.meta).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The object bucket of `spec`'s results: the same name, storage and TTL.
fn object_spec(spec: &KvSpec) -> ObjectSpec {
    ObjectSpec {
        bucket: spec.bucket.clone(),
        ttl: spec.ttl,
        storage: spec.storage,
        replicas: spec.replicas,
    }
}

/// Keep the response under `key` in `spec`'s bucket (creating the buckets the first time): in
/// the entry, or with its body as an object when it is too large for one (see the module).
pub async fn keep(
    (store, objects): (&dyn KeyValue, &dyn Objects),
    spec: &KvSpec,
    key: &str,
    response: (u16, &http::HeaderMap, &Bytes),
) -> Result<(), BrokerError> {
    let (status, headers, body) = response;
    if body.len() <= MAX_BODY_BYTES {
        let value = encode(status, headers, body, MAX_BODY_BYTES);
        match put(store, spec, key, value).await {
            Err(BrokerError::TooLarge(_)) => {}
            other => return other,
        }
    }
    let stored = crate::claim_check::store(objects, &object_spec(spec), key, body.clone()).await;
    let value = match stored {
        Ok(()) => encode_with_object(status, headers, body),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot keep a result's body as an object; keeping its start");
            encode(status, headers, body, MAX_BODY_BYTES)
        }
    };
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

/// The result kept for `call_id` on `queue`; `None` when none is. A body kept as an object
/// that has gone meanwhile comes back empty and marked `truncated`.
pub async fn read(
    (store, objects): (&dyn KeyValue, &dyn Objects),
    queue: &str,
    call_id: &str,
) -> Result<Option<Kept>, BrokerError> {
    let Some(key) = super::key::of(call_id) else {
        return Ok(None);
    };
    let value = kv_lazy::get(store, &bucket(queue), &key).await?;
    let Some(mut kept) = value.and_then(decode) else {
        return Ok(None);
    };
    if kept.meta.body_object {
        match crate::claim_check::fetch_from(objects, &bucket(queue), &key).await? {
            Some(body) => kept.body = body,
            None => kept.meta.truncated = true,
        }
    }
    Ok(Some(kept))
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

    #[tokio::test]
    async fn a_body_too_large_for_an_entry_is_kept_whole_as_an_object() {
        use crate::broker::memory::{MemoryBroker, MemoryLimits};
        let broker = MemoryBroker::new(
            std::sync::Arc::new(crate::clock::SystemClock),
            MemoryLimits::default(),
        );
        let spec = KvSpec {
            bucket: bucket("q"),
            ttl: std::time::Duration::from_secs(60),
            storage: crate::config::Storage::Memory,
            replicas: 1,
        };
        let stores = (&broker as &dyn KeyValue, &broker as &dyn Objects);
        let big = Bytes::from(vec![b'y'; 3 * MAX_BODY_BYTES]);
        let headers = http::HeaderMap::new();
        let key = super::super::key::of("big").unwrap();
        keep(stores, &spec, &key, (200, &headers, &big))
            .await
            .unwrap();
        let kept = read(stores, "q", "big").await.unwrap().unwrap();
        assert!(kept.meta.body_object && !kept.meta.truncated);
        assert!(kept.body == big, "{} bytes back", kept.body.len());
        let entry = broker.kv_get(&bucket("q"), &key).await.unwrap().unwrap();
        assert!(
            entry.len() < 1024,
            "the entry holds no body: {} bytes",
            entry.len()
        );

        broker.object_delete(&bucket("q"), &key).await.unwrap();
        let gone = read(stores, "q", "big").await.unwrap().unwrap();
        assert!(gone.meta.truncated && gone.body.is_empty());

        let small = Bytes::from_static(b"small");
        let key = super::super::key::of("small").unwrap();
        keep(stores, &spec, &key, (201, &headers, &small))
            .await
            .unwrap();
        let kept = read(stores, "q", "small").await.unwrap().unwrap();
        assert!(!kept.meta.body_object);
        assert_eq!((kept.meta.status, kept.body), (201, small));
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
