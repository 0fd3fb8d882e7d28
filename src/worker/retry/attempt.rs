//! What one attempt to invoke a function produced: the input of every retry decision.

use http::HeaderMap;

/// What an attempt produced.
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult<'a> {
    /// The function (or the gateway) answered.
    Response {
        /// The HTTP status.
        status: u16,
        /// The response headers (`Retry-After`, `X-OpenFaaS-Internal`).
        headers: &'a HeaderMap,
    },
    /// Connect error, timeout, reset: always retryable; reported as status 503.
    TransportError,
}

impl AttemptResult<'_> {
    /// The status reported for this result (503 for a transport error).
    pub fn status(&self) -> u16 {
        match *self {
            AttemptResult::Response { status, .. } => status,
            AttemptResult::TransportError => 503,
        }
    }
}
