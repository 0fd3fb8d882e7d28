//! Serving HTTP with limits, for the ingress and the metrics server: at most
//! `max_connections` connections at once (more wait in the listen backlog and cost no file
//! descriptor), a deadline for each request's headers that is also the idle deadline of a
//! kept-alive connection (a slowloris client or an idle one is closed), a bound on a request's
//! head (`431` past it), and a graceful stop.
//! The body deadline and the bound on bodies held are the ingress's
//! ([`crate::ingress::BodyBudget`]).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// hyper's smallest read buffer.
const MIN_HEAD_BYTES: usize = 8 * 1024;

/// What one server allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's headers, and for the next request on a kept-alive connection.
    pub header_timeout: Duration,
    /// Bytes of a request's head (request line and headers); a larger one is answered `431`.
    /// At least 8 KiB (hyper's smallest read buffer).
    pub max_head_bytes: usize,
}

/// Serve `app` on `listener` within `limits` until `stop`; then stop accepting, let the
/// requests in progress finish, and return once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    serve_on(&listener, app, limits, stop).await;
}

/// [`serve`] on a listener that is used again afterwards.
pub async fn serve_on(
    listener: &TcpListener,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    while let Some((stream, slot)) = accept(listener, &slots, &stop).await {
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            serve_connection(stream, app, limits, stop).await;
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// The next connection once a slot is free; `None` at `stop`.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let slot = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        slot = slots.clone().acquire_owned() => slot.ok()?,
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, slot));
            }
            Err(e) => accept_failed(&e, stop).await,
        }
    }
}

/// Out of file descriptors (or another transient accept error): wait a little, so the loop
/// does not spin while the process is short of them.
async fn accept_failed(e: &std::io::Error, stop: &CancellationToken) {
    tracing::warn!(error = %e, "Cannot accept a connection; retrying in 100ms");
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}

/// One connection, HTTP/1.1, until the client closes it, a deadline passes or `stop`.
async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let service = TowerToHyperService::new(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "Connection ended");
    }
}
