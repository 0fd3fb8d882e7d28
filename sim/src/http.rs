//! HTTP over turmoil sockets: the worker's `Invoker` (hyper client, one connection per
//! request) and a tiny hyper server for function hosts and callback receivers.

use std::convert::Infallible;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use queue_worker::invoke::{Attempt, InvokeError, Invoker};
use turmoil::net::{TcpListener, TcpStream};

use crate::history::{Ev, History};

/// Aborts a task when dropped (the request's connection goes with the request).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange(req: Request<Bytes>) -> Result<Response<Bytes>, InvokeError> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| InvokeError::Connect("no host in URL".into()))?;
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| InvokeError::Connect(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| InvokeError::Transport(e.to_string()))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e: http::uri::InvalidUri| InvokeError::Connect(e.to_string()))?;
    if let Ok(v) = http::HeaderValue::from_str(&authority) {
        parts.headers.insert(http::header::HOST, v);
    }
    let resp = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| InvokeError::Transport(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| InvokeError::Transport(e.to_string()))?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// Records the end of an invocation even when the worker dies in the middle of it.
struct InvokeGuard {
    hist: History,
    worker: String,
    call: String,
    delivered: u64,
    done: bool,
}

impl InvokeGuard {
    fn end(mut self, status: u16, retry_after: Option<String>, error: bool) {
        self.done = true;
        self.hist.record(Ev::InvokeEnd {
            worker: self.worker.clone(),
            call: self.call.clone(),
            delivered: self.delivered,
            status,
            retry_after,
            error,
            aborted: false,
        });
    }
}

impl Drop for InvokeGuard {
    fn drop(&mut self) {
        if !self.done {
            self.hist.record(Ev::InvokeEnd {
                worker: self.worker.clone(),
                call: self.call.clone(),
                delivered: self.delivered,
                status: 0,
                retry_after: None,
                error: true,
                aborted: true,
            });
        }
    }
}

/// The worker's HTTP client over the simulated network; records every invocation.
pub struct SimInvoker {
    pub worker: String,
    pub hist: History,
}

#[async_trait]
impl Invoker for SimInvoker {
    async fn invoke(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
        attempt: Attempt,
    ) -> Result<Response<Bytes>, InvokeError> {
        let call = req
            .headers()
            .get("X-Call-Id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // The worker says which delivery of the call this is.
        let delivered = attempt.0;
        self.hist.record(Ev::InvokeStart {
            worker: self.worker.clone(),
            call: call.clone(),
            delivered,
        });
        let guard = InvokeGuard {
            hist: self.hist.clone(),
            worker: self.worker.clone(),
            call,
            delivered,
            done: false,
        };
        let result = match tokio::time::timeout(timeout, exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(InvokeError::Timeout(timeout)),
        };
        match &result {
            Ok(resp) => guard.end(
                resp.status().as_u16(),
                resp.headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                false,
            ),
            Err(e) => guard.end(e.status(), None, true),
        }
        result
    }

    async fn callback(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, InvokeError> {
        match tokio::time::timeout(timeout, exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(InvokeError::Timeout(timeout)),
        }
    }
}

/// Serve HTTP/1.1 on `port` forever; `handler` gets each request and the caller's host name.
pub async fn serve<F, Fut>(port: u16, handler: F) -> turmoil::Result
where
    F: Fn(Request<Incoming>, String) -> Fut + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + 'static,
{
    let handler = Rc::new(handler);
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let from = turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.ip().to_string());
        let handler = handler.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                let from = from.clone();
                async move { Ok::<_, Infallible>(handler(req, from).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A response with `status`, an optional `Retry-After` and a small body.
pub fn respond(status: u16, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Some(s) = retry_after
        && let Ok(v) = http::HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    r
}
