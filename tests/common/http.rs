//! Fake HTTP endpoints: a function gateway ([`FunctionServer`]) and a callback target
//! ([`CallbackReceiver`]). Both record every request and answer through a programmable
//! responder; each runs on a spawned tokio task that is told to shut down on drop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{oneshot, watch};

/// Largest request body accepted (bigger ones get 413 and are not recorded).
pub const BODY_LIMIT: usize = 64 << 20;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Raw path as received (still percent-encoded), without the query.
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    /// Lower-case names, every value (repeated headers appear several times), in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When the request head arrived.
    pub at: Instant,
}

impl Recorded {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// All values of header `name` (any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `METHOD path?query`, for messages.
    pub fn summary(&self) -> String {
        match &self.query {
            Some(q) => format!("{} {}?{q}", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// What a fake server answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Wait this long before answering (the request counts as in flight meanwhile).
    pub delay: Duration,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// `code` with an empty body.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            ..Reply::ok(Bytes::new())
        }
    }

    /// Adds a response header (repeatable).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// Answers after `d`.
    pub fn with_delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// Decides the reply from the request and its 0-based call number for that path.
pub type Responder = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// A fake OpenFaaS gateway: requests arrive at `/function/<name>[/path][?query]`. The
/// recording methods (`requests`, `count`, `wait_for`, `base_url`, `set_responder`) are
/// [`Recorder`]'s.
pub struct FunctionServer(Recorder);

impl FunctionServer {
    /// Starts a server answering through `responder`.
    pub async fn start<F>(responder: F) -> FunctionServer
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        FunctionServer(Recorder::start("FunctionServer", Arc::new(responder)).await)
    }

    /// 200 echoing the body and its `Content-Type`, plus `X-Echo: yes`.
    pub async fn echo() -> FunctionServer {
        Self::start(echo).await
    }

    /// Address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.0.shared.inflight.load(Ordering::SeqCst)
    }

    /// Highest number of requests in flight at once so far.
    pub fn max_concurrency(&self) -> usize {
        self.0.shared.max_inflight.load(Ordering::SeqCst)
    }
}

/// A function with room for `capacity` calls at once, each taking `run`, that answers `429`
/// past it as the OpenFaaS watchdog with `max_inflight` does (no `X-OpenFaaS-Internal`), and
/// what it answered each call id.
pub struct LimitedFunction {
    pub server: FunctionServer,
    answers: Arc<Mutex<Vec<(String, u16)>>>,
}

impl LimitedFunction {
    pub async fn start(capacity: usize, run: Duration) -> LimitedFunction {
        Self::only(None, capacity, run).await
    }

    /// Limits only the function `name` (`/function/<name>`): the others answer 200 at once.
    pub async fn beside(name: &str, capacity: usize, run: Duration) -> LimitedFunction {
        Self::only(Some(format!("/function/{name}")), capacity, run).await
    }

    async fn only(path: Option<String>, capacity: usize, run: Duration) -> LimitedFunction {
        let busy_until: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
        let answers: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
        let log = answers.clone();
        let server = FunctionServer::start(move |req, _| {
            if path.as_deref().is_some_and(|p| !req.path.starts_with(p)) {
                return Reply::ok("ok");
            }
            let now = Instant::now();
            let mut busy = busy_until.lock().unwrap();
            busy.retain(|t| *t > now);
            let reply = if busy.len() >= capacity {
                Reply::status(429).with_body("Concurrent request limit exceeded")
            } else {
                busy.push(now + run);
                Reply::ok("ok").with_delay(run)
            };
            let id = req.header("x-call-id").unwrap_or_default().to_string();
            log.lock().unwrap().push((id, reply.status));
            reply
        })
        .await;
        LimitedFunction { server, answers }
    }

    /// How many calls it answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        let answers = self.answers.lock().unwrap();
        answers.iter().filter(|(_, s)| *s == status).count()
    }

    /// Call ids answered `200` more than once.
    pub fn served_twice(&self) -> Vec<String> {
        let mut served: HashMap<String, usize> = HashMap::new();
        for (id, status) in self.answers.lock().unwrap().iter() {
            if *status == 200 {
                *served.entry(id.clone()).or_default() += 1;
            }
        }
        served
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, _)| id)
            .collect()
    }
}

impl std::ops::Deref for FunctionServer {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.0
    }
}

/// The responder of [`FunctionServer::echo`].
pub fn echo(req: &Recorded, _call: usize) -> Reply {
    let mut reply = Reply::ok(req.body.clone()).with_header("X-Echo", "yes");
    if let Some(ct) = req.header("content-type") {
        reply = reply.with_header("Content-Type", ct);
    }
    reply
}

/// A callback target (`X-Callback-Url`); answers 200 unless told otherwise. The recording
/// methods are [`Recorder`]'s.
pub struct CallbackReceiver(Recorder);

impl CallbackReceiver {
    /// Starts a receiver answering 200 with an empty body.
    pub async fn start() -> CallbackReceiver {
        Self::with_responder(|_, _| Reply::status(200)).await
    }

    /// Starts a receiver answering through `responder`.
    pub async fn with_responder<F>(responder: F) -> CallbackReceiver
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        CallbackReceiver(Recorder::start("CallbackReceiver", Arc::new(responder)).await)
    }

    /// Starts a receiver answering 200 on `ip` (any port), e.g. a Docker network's gateway
    /// address so that containers reach it; [`CallbackReceiver::url`] uses that address.
    pub async fn start_on(ip: &str) -> CallbackReceiver {
        let responder: Responder = Arc::new(|_, _| Reply::status(200));
        CallbackReceiver(Recorder::start_on("CallbackReceiver", responder, ip).await)
    }

    /// `base_url()` + `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0.base_url())
    }
}

impl std::ops::Deref for CallbackReceiver {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.0
    }
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    calls: Mutex<HashMap<String, usize>>,
    responder: Mutex<Responder>,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    arrived: watch::Sender<usize>,
}

/// The recording server behind both fakes.
pub struct Recorder {
    label: &'static str,
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Recorder {
    async fn start(label: &'static str, responder: Responder) -> Recorder {
        Self::start_on(label, responder, "127.0.0.1").await
    }

    async fn start_on(label: &'static str, responder: Responder, ip: &str) -> Recorder {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            responder: Mutex::new(responder),
            inflight: AtomicUsize::new(0),
            max_inflight: AtomicUsize::new(0),
            arrived: watch::Sender::new(0),
        });
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("{label}: bind {ip}:0: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("{label}: server error: {e}");
            }
        });
        Recorder {
            label,
            addr,
            shared,
            shutdown: Some(tx),
        }
    }

    /// `http://IP:PORT` (for a function server: the gateway URL).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the responder; per-path call numbers keep counting.
    pub fn set_responder<F>(&self, responder: F)
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        *lock(&self.shared.responder) = Arc::new(responder);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests so far.
    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Waits until at least `n` requests arrived; returns all of them. Panics on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.shared.arrived.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_err()
        {
            let got = self.requests();
            let list: Vec<String> = got.iter().map(Recorded::summary).collect();
            panic!(
                "{}: expected {n} request(s) within {timeout:?}, got {}: {list:#?}",
                self.label,
                got.len()
            );
        }
        self.requests()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Counts a request as in flight until dropped (also when the client goes away).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_inflight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let _in_flight = InFlight::enter(&shared);
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return plain(413, format!("harness: body: {e}")),
    };
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), v)
            })
            .collect(),
        body,
        at,
    };
    let call = {
        let mut calls = lock(&shared.calls);
        let n = calls.entry(rec.path.clone()).or_insert(0);
        *n += 1;
        *n - 1
    };
    {
        let mut all = lock(&shared.requests);
        all.push(rec.clone());
        shared.arrived.send_replace(all.len());
    }
    let responder = Arc::clone(&lock(&shared.responder));
    let reply = responder(&rec, call);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let Ok(status) = ::http::StatusCode::from_u16(reply.status) else {
        return plain(500, format!("harness: invalid status {}", reply.status));
    };
    let mut builder = Response::builder().status(status);
    for (k, v) in &reply.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Body::from(reply.body))
        .unwrap_or_else(|e| plain(500, format!("harness: bad reply header: {e}")))
}

fn plain(status: u16, msg: String) -> Response {
    let mut r = Response::new(Body::from(msg));
    *r.status_mut() = ::http::StatusCode::from_u16(status).expect("valid status");
    r
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
