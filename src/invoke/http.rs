//! Production [`Invoker`]: reqwest with rustls (ring provider).

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{InvokeError, Invoker, MAX_RESPONSE_BYTES};

/// reqwest-based invoker: one connection pool for functions, one for callbacks.
pub struct ReqwestInvoker {
    functions: reqwest::Client,
    callbacks: reqwest::Client,
}

/// Install ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ReqwestInvoker {
    /// `max_idle_per_host` should be about the worker's concurrency so connections are reused.
    /// `tls_insecure` skips certificate checks for callbacks only.
    pub fn new(max_idle_per_host: usize, tls_insecure: bool) -> Result<ReqwestInvoker, String> {
        install_crypto_provider();
        let user_agent = format!("queue-worker/{}", crate::VERSION);
        let functions = reqwest::Client::builder()
            .user_agent(user_agent.clone())
            .pool_max_idle_per_host(max_idle_per_host.max(1))
            .redirect(reqwest::redirect::Policy::limited(5))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // Callbacks never follow redirects: the receiver is whoever the caller named, nobody else.
        let callbacks = reqwest::Client::builder()
            .user_agent(user_agent)
            .pool_max_idle_per_host(max_idle_per_host.clamp(1, 64))
            .redirect(reqwest::redirect::Policy::none())
            .tls_danger_accept_invalid_certs(tls_insecure)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the callback HTTP client: {e}"))?;
        Ok(ReqwestInvoker {
            functions,
            callbacks,
        })
    }
}

async fn exchange(
    client: &reqwest::Client,
    req: http::Request<Bytes>,
    timeout: Duration,
) -> Result<http::Response<Bytes>, InvokeError> {
    let req = reqwest::Request::try_from(req.map(reqwest::Body::from))
        .map_err(|e| InvokeError::Transport(e.to_string()))?;
    let work = async {
        let mut resp = client.execute(req).await.map_err(|e| {
            if e.is_connect() {
                InvokeError::Connect(error_chain(&e))
            } else {
                InvokeError::Transport(error_chain(&e))
            }
        })?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let mut body = BytesMut::with_capacity(
            resp.content_length()
                .map(|n| (n as usize).min(MAX_RESPONSE_BYTES))
                .unwrap_or(0),
        );
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| InvokeError::Transport(error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(InvokeError::ResponseTooLarge {
                    limit: MAX_RESPONSE_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(body.freeze());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(InvokeError::Timeout(timeout)),
    }
}

/// The error and its sources on one line (reqwest's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[async_trait]
impl Invoker for ReqwestInvoker {
    async fn invoke(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        exchange(&self.functions, req, timeout).await
    }

    async fn callback(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        exchange(&self.callbacks, req, timeout).await
    }
}
