//! The function server: a minimal HTTP/1.1 function that records queue delays.

use super::*;

/// Queue delays (enqueue → request received) seen by the function server, in microseconds.
#[derive(Default)]
pub(crate) struct FnStats {
    /// Recording queue delays: only while the latency section runs, so the function does the
    /// same work for the baseline and the worker during the throughput runs.
    pub(crate) recording: std::sync::atomic::AtomicBool,
    pub(crate) delays_us: Mutex<Vec<u64>>,
    pub(crate) requests: AtomicU64,
    pub(crate) connections: AtomicU64,
}

/// A minimal HTTP/1.1 function: `POST /function/<name>` → `200 ok`; names starting with
/// `bench-sleep` answer after 250 ms. Every request with `X-Start-Time` (unix ns, set by the
/// ingress) records its queue delay while recording is on; `POST /stats/reset` clears the
/// record and turns recording on, `POST /stats/stop` turns it off, `GET /stats` gives
/// `count p50 p99 max requests connections` (µs). Prints `listening <addr>` once bound.
pub(crate) async fn fn_server(addr: Option<String>) -> Res<()> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:0"))
        .await
        .map_err(err("bind"))?;
    println!("listening {}", listener.local_addr().map_err(err("addr"))?);
    let stats = Arc::new(FnStats::default());
    loop {
        let (conn, _) = listener.accept().await.map_err(err("accept"))?;
        let _ = conn.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let stats = stats.clone();
                async move { Ok::<_, std::convert::Infallible>(serve_fn(&stats, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .await;
        });
    }
}

pub(crate) async fn serve_fn(
    stats: &FnStats,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let received = unix_ns();
    let path = req.uri().path().to_string();
    let text = |s: String| hyper::Response::new(Full::new(Bytes::from(s)));
    if path == "/stats/stop" {
        stats.recording.store(false, Ordering::SeqCst);
        return text("ok\n".into());
    }
    if path == "/stats" {
        let mut d = stats.delays_us.lock().unwrap().clone();
        d.sort_unstable();
        let q = |p: f64| {
            if d.is_empty() {
                0
            } else {
                d[((d.len() - 1) as f64 * p).round() as usize]
            }
        };
        return text(format!(
            "{} {} {} {} {} {}\n",
            d.len(),
            q(0.5),
            q(0.99),
            d.last().copied().unwrap_or(0),
            stats.requests.load(Ordering::Relaxed),
            stats.connections.load(Ordering::Relaxed)
        ));
    }
    if path == "/stats/reset" {
        stats.delays_us.lock().unwrap().clear();
        stats.requests.store(0, Ordering::Relaxed);
        stats.recording.store(true, Ordering::SeqCst);
        return text("ok\n".into());
    }
    let start = if stats.recording.load(Ordering::Relaxed) {
        req.headers()
            .get("x-start-time")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u128>().ok())
    } else {
        None
    };
    let _ = req.into_body().collect().await;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(start) = start {
        let us = received.saturating_sub(start) / 1000;
        stats.delays_us.lock().unwrap().push(us as u64);
    }
    if path
        .strip_prefix("/function/")
        .is_some_and(|f| f.starts_with(SLEEP_PREFIX))
    {
        tokio::time::sleep(SLEEP).await;
    }
    text("ok\n".into())
}

pub(crate) fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}
