//! Production [`Invoker`]: reqwest with rustls (ring provider).

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::guard::{self, GuardedResolver};
use super::{InvokeError, Invoker, MAX_RESPONSE_BYTES};

/// reqwest-based invoker: one connection pool for functions, one for callbacks.
pub struct ReqwestInvoker {
    functions: reqwest::Client,
    callbacks: reqwest::Client,
    /// Function URLs already parsed (most messages go to a few functions).
    urls: UrlCache,
}

/// At most this many parsed URLs are kept; past it the cache starts over.
const MAX_CACHED_URLS: usize = 1024;

/// `url::Url`s by their text. reqwest needs a `Url`, and its own conversion from an
/// `http::Request` formats the URI and parses the text on every request (a tenth of the
/// worker's own work per message, docs/performance.md).
#[derive(Default)]
struct UrlCache(std::sync::Mutex<std::collections::HashMap<String, url::Url>>);

impl UrlCache {
    /// The `Url` of `uri`, as `Url::parse(&uri.to_string())` gives it.
    fn get(&self, uri: &http::Uri) -> Result<url::Url, url::ParseError> {
        // `Uri`'s Display, without the formatting machinery and the regrowing.
        let mut text = String::with_capacity(
            uri.scheme_str().map_or(0, |s| s.len() + 3)
                + uri.authority().map_or(0, |a| a.as_str().len())
                + uri.path_and_query().map_or(1, |p| p.as_str().len() + 1),
        );
        if let Some(scheme) = uri.scheme_str() {
            text.push_str(scheme);
            text.push_str("://");
        }
        if let Some(authority) = uri.authority() {
            text.push_str(authority.as_str());
        }
        text.push_str(uri.path());
        if let Some(query) = uri.query() {
            text.push('?');
            text.push_str(query);
        }
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(url) = map.get(&text) {
            return Ok(url.clone());
        }
        let url = url::Url::parse(&text)?;
        if map.len() >= MAX_CACHED_URLS {
            map.clear();
        }
        map.insert(text, url.clone());
        Ok(url)
    }
}

/// Install ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ReqwestInvoker {
    /// The clients for `config`: as many idle connections per host as the worker's
    /// concurrency (`max_inflight`); neither client follows redirects (a 3xx is the function's
    /// answer, and a callback goes to whom the caller named, nobody else); the callback client
    /// connects only where `callback_allowed_hosts` allows ([`super::guard`]), never through a
    /// proxy, and skips certificate checks when `tls_insecure` is set.
    pub fn new(config: &crate::config::Config) -> Result<ReqwestInvoker, String> {
        install_crypto_provider();
        let max_idle_per_host = config.max_inflight;
        let functions = reqwest::Client::builder()
            .user_agent(super::request::USER_AGENT)
            .pool_max_idle_per_host(max_idle_per_host.max(1))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let resolver = GuardedResolver::new(config.callback_allowed_hosts.clone());
        let callbacks = reqwest::Client::builder()
            .user_agent(super::request::USER_AGENT)
            .pool_max_idle_per_host(max_idle_per_host.clamp(1, 64))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(resolver))
            .tls_danger_accept_invalid_certs(config.tls_insecure)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the callback HTTP client: {e}"))?;
        Ok(ReqwestInvoker {
            functions,
            callbacks,
            urls: UrlCache::default(),
        })
    }
}

/// Bodies of at least this many bytes are handed over to the connection (see
/// [`request_body`]).
const HANDED_OVER_FROM: usize = 16 * 1024;

/// The reqwest body of `body`. reqwest keeps a copy of a body it can send again (for a 307 or
/// 308 redirect, even with redirects off) until the answer's head arrives: for a function that
/// takes its time, that is the whole call. A large body is given as a one-chunk stream
/// instead: sent with its `Content-Length` as before, and freed once written, so a call in
/// flight holds its message and not a second copy of its body. Small ones stay as they are
/// (no boxing).
fn request_body(body: Bytes) -> reqwest::Body {
    if body.len() < HANDED_OVER_FROM {
        reqwest::Body::from(body)
    } else {
        reqwest::Body::wrap(http_body_util::Full::new(body))
    }
}

/// The reqwest request for `req`: what `reqwest::Request::try_from` builds, with the URL from
/// the cache (when one is given) and the body as [`request_body`] gives it.
fn to_reqwest(
    req: http::Request<Bytes>,
    urls: Option<&UrlCache>,
) -> Result<reqwest::Request, InvokeError> {
    let slow = |req: http::Request<Bytes>| {
        reqwest::Request::try_from(req.map(request_body))
            .map_err(|e| InvokeError::Transport(e.to_string()))
    };
    let Some(urls) = urls.filter(|_| req.extensions().is_empty()) else {
        return slow(req);
    };
    let Ok(url) = urls.get(req.uri()) else {
        // Unusable URL: the error exactly as reqwest words it.
        return slow(req);
    };
    let (parts, body) = req.into_parts();
    let mut out = reqwest::Request::new(parts.method, url);
    *out.headers_mut() = parts.headers;
    *out.version_mut() = parts.version;
    *out.body_mut() = Some(request_body(body));
    Ok(out)
}

async fn exchange(
    client: &reqwest::Client,
    req: http::Request<Bytes>,
    timeout: Duration,
    urls: Option<&UrlCache>,
) -> Result<http::Response<Bytes>, InvokeError> {
    let req = to_reqwest(req, urls)?;
    let work = async {
        let mut resp = client.execute(req).await.map_err(failed)?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let capacity = resp
            .content_length()
            .map(|n| (n as usize).min(MAX_RESPONSE_BYTES))
            .unwrap_or(0);
        // A body that arrives in one chunk (small answers) is kept as it is, without a copy.
        let mut first: Option<Bytes> = None;
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| InvokeError::Transport(error_chain(&e.without_url())))?
        {
            let held = first.as_ref().map_or(body.len(), Bytes::len);
            if held + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(InvokeError::ResponseTooLarge {
                    limit: MAX_RESPONSE_BYTES,
                });
            }
            if first.is_none() && body.is_empty() {
                first = Some(chunk);
                continue;
            }
            if let Some(f) = first.take() {
                body.reserve(capacity.max(f.len() + chunk.len()));
                body.extend_from_slice(&f);
            }
            body.extend_from_slice(&chunk);
        }
        let body = match first {
            Some(f) => f,
            None => body.freeze(),
        };
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(InvokeError::Timeout(timeout)),
    }
}

/// What a request that got no response failed with: refused by the callback rules, or a
/// connection or transport error (its text without the URL, which may hold credentials).
fn failed(e: reqwest::Error) -> InvokeError {
    let e = e.without_url();
    if let Some(refused) = guard::refusal_in(&e) {
        return InvokeError::Refused(refused.0);
    }
    if e.is_connect() {
        InvokeError::Connect(error_chain(&e))
    } else {
        InvokeError::Transport(error_chain(&e))
    }
}

/// The error and its sources on one line (reqwest's top-level message alone says little),
/// any URL in them redacted.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    crate::telemetry::redact::text(&s)
}

#[async_trait]
impl Invoker for ReqwestInvoker {
    async fn invoke(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
        _attempt: super::Attempt,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        exchange(&self.functions, req, timeout, Some(&self.urls)).await
    }

    async fn callback(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        let port = req
            .uri()
            .port_u16()
            .unwrap_or(match req.uri().scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
        guard::with_target(port, exchange(&self.callbacks, req, timeout, None)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: Bytes) -> http::Request<Bytes> {
        let mut r = http::Request::new(body);
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = "http://127.0.0.1:1/function/f".parse().unwrap();
        r
    }

    #[test]
    fn only_small_bodies_are_kept_by_reqwest_for_sending_again() {
        let small = Bytes::from(vec![b's'; HANDED_OVER_FROM - 1]);
        let large = Bytes::from(vec![b'l'; HANDED_OVER_FROM]);
        let kept = to_reqwest(post(small), None).unwrap();
        assert!(kept.try_clone().is_some(), "a small body stays reusable");
        for urls in [None, Some(&UrlCache::default())] {
            let handed = to_reqwest(post(large.clone()), urls).unwrap();
            assert!(handed.try_clone().is_none(), "reqwest keeps no copy");
        }
    }

    /// A large body arrives whole, with its `Content-Length` (not chunked), as a small one does.
    #[tokio::test]
    async fn a_large_body_is_sent_with_its_length() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Bytes = (0..HANDED_OVER_FROM * 3).map(|i| (i % 251) as u8).collect();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            let head_end = loop {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed before the head ended");
                seen.extend_from_slice(&buf[..n]);
                if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a content-length header")
                .trim()
                .parse()
                .unwrap();
            while seen.len() < head_end + length {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed before the body ended");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            (head, seen[head_end..].to_vec())
        });
        let mut req = post(body.clone());
        *req.uri_mut() = format!("http://{addr}/function/f").parse().unwrap();
        install_crypto_provider();
        let client = reqwest::Client::new();
        let answer = exchange(&client, req, Duration::from_secs(10), None).await;
        assert_eq!(answer.unwrap().status(), http::StatusCode::OK);
        let (head, received) = server.await.unwrap();
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(received, body.as_ref());
    }

    #[test]
    fn cached_conversion_matches_reqwest() {
        let cache = UrlCache::default();
        for uri in [
            "http://gateway.openfaas:8080/function/figlet",
            "http://127.0.0.1:8080/function/f.ns/a/b%20c?x=1&y=%2F",
            "https://[::1]:8443/function/f?",
            "http://gw/function/f/%C3%BC",
            "http://GW.Example/function/f#frag",
        ] {
            for _ in 0..2 {
                let make = || {
                    let mut r = http::Request::new(Bytes::from_static(b"body"));
                    *r.method_mut() = http::Method::PUT;
                    *r.uri_mut() = uri.parse().unwrap();
                    r.headers_mut()
                        .insert("x-call-id", http::HeaderValue::from_static("abc"));
                    r
                };
                let fast = to_reqwest(make(), Some(&cache)).unwrap();
                let slow = to_reqwest(make(), None).unwrap();
                assert_eq!(fast.url(), slow.url(), "{uri}");
                assert_eq!(fast.method(), slow.method());
                assert_eq!(fast.headers(), slow.headers());
                assert_eq!(fast.version(), slow.version());
                assert_eq!(
                    fast.body().and_then(|b| b.as_bytes()),
                    slow.body().and_then(|b| b.as_bytes())
                );
            }
        }
    }
}
