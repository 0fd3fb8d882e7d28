//! The `Invoker` port: HTTP calls to functions and to callback receivers.
//!
//! [`http::ReqwestInvoker`] is the production implementation; the simulation and the embedded
//! demo functions provide their own. [`request`] builds the requests (pure code).

pub mod guard;
pub mod http;
pub mod request;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Responses larger than this are not read whole: the invocation fails with
/// [`InvokeError::ResponseTooLarge`] (a limit on everything the worker holds in memory).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Which attempt of a call a function request is: JetStream's delivery count of the message.
/// Given to [`Invoker::invoke`] beside the request (never sent), so an invoker can tell the
/// deliveries of one call apart (the simulation attributes each invocation with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt(pub u64);

/// A failed HTTP exchange (no usable response).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvokeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("response body over {limit} bytes")]
    ResponseTooLarge { limit: usize },
    /// A callback the rules do not allow (`callback_allowed_hosts`): nothing was sent.
    #[error("refused by callback_allowed_hosts: {0}")]
    Refused(String),
}

impl InvokeError {
    /// The status reported for this failure (`X-Function-Status`, metrics): 503 for transport
    /// errors and timeouts (as OpenFaaS), 502 for an unreadable oversized response.
    pub fn status(&self) -> u16 {
        match self {
            InvokeError::ResponseTooLarge { .. } => 502,
            _ => 503,
        }
    }
}

/// The HTTP client port.
#[async_trait]
pub trait Invoker: Send + Sync + 'static {
    /// Call a function for `attempt` of its call. `timeout` bounds the whole exchange, body
    /// included.
    async fn invoke(
        &self,
        req: ::http::Request<Bytes>,
        timeout: Duration,
        attempt: Attempt,
    ) -> Result<::http::Response<Bytes>, InvokeError>;

    /// Post a result to a callback receiver (TLS verification follows `tls_insecure`).
    async fn callback(
        &self,
        req: ::http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<::http::Response<Bytes>, InvokeError>;
}
