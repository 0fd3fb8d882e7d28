//! The function host (`gateway`) and the callback receiver: HTTP servers whose answers follow
//! the plan (latency, status sequences, 429/503 storms, hangs, outages) and which record what
//! they see.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::history::{Ev, History};
use crate::http::{respond, serve};
use crate::plan::{Behaviour, GATEWAY_PORT, RECEIVER_PORT, RunConfig, fnv, mix};

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Attempts seen per call (kept outside the host so it survives anything).
pub type Attempts = Arc<Mutex<BTreeMap<String, u32>>>;

/// Calls running per function (for [`Behaviour::Busy`]).
type Running = Arc<Mutex<BTreeMap<String, usize>>>;

/// One running call of a function; ends when dropped (answered, or the worker went away).
struct RunningCall {
    running: Running,
    function: String,
}

impl RunningCall {
    /// A call of `function`, unless `capacity` of its calls already run.
    fn start(running: &Running, function: &str, capacity: usize) -> Option<RunningCall> {
        let mut r = running.lock().unwrap_or_else(|e| e.into_inner());
        let n = r.entry(function.to_string()).or_default();
        if *n >= capacity {
            return None;
        }
        *n += 1;
        Some(RunningCall {
            running: running.clone(),
            function: function.to_string(),
        })
    }
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = r.get_mut(&self.function) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The function host's software.
pub async fn gateway(cfg: Arc<RunConfig>, hist: History, attempts: Attempts) -> turmoil::Result {
    let running = Running::default();
    serve(GATEWAY_PORT, move |req, from| {
        let cfg = cfg.clone();
        let hist = hist.clone();
        let attempts = attempts.clone();
        let running = running.clone();
        async move {
            let call = header(&req, "X-Call-Id");
            let n = {
                let mut a = attempts.lock().unwrap_or_else(|e| e.into_inner());
                let n = a.entry(call.clone()).or_default();
                *n += 1;
                *n
            };
            hist.record(Ev::FnRecv {
                call: call.clone(),
                from,
            });
            let Some(plan) = cfg.call(&call) else {
                hist.record(Ev::FnResp {
                    call,
                    status: Some(404),
                });
                return respond(404, None);
            };
            let r = mix(cfg.seed ^ fnv(&call) ^ u64::from(n).wrapping_mul(0x1234_5678_9abc));
            let t = now();
            let storm = cfg
                .storms
                .iter()
                .find(|s| s.function == plan.function && s.from <= t && t < s.to);
            let mut _call = None;
            let (latency, status, retry_after) = if let Some(s) = storm {
                (5 + r % 20, s.status, s.retry_after)
            } else {
                match &plan.behaviour {
                    Behaviour::Ok { lo, hi } => (lo + r % (hi - lo + 1), 200, None),
                    Behaviour::FailFirst {
                        n: k,
                        status,
                        retry_after,
                    } => {
                        if n <= *k {
                            (10 + r % 50, *status, *retry_after)
                        } else {
                            (10 + r % 100, 200, None)
                        }
                    }
                    Behaviour::Always { status } => (10 + r % 50, *status, None),
                    Behaviour::Slow { ms } => (*ms, 200, None),
                    Behaviour::HangFirst { n: k } => {
                        if n <= *k {
                            hist.record(Ev::FnResp { call, status: None });
                            // Never answers: the worker's upstream_timeout ends it.
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        (10 + r % 100, 200, None)
                    }
                    Behaviour::Busy { ms, capacity } => {
                        _call = RunningCall::start(&running, &plan.function, *capacity);
                        if _call.is_some() {
                            (*ms, 200, None)
                        } else {
                            (1 + r % 3, 429, None)
                        }
                    }
                }
            };
            tokio::time::sleep(Duration::from_millis(latency)).await;
            hist.record(Ev::FnResp {
                call,
                status: Some(status),
            });
            respond(status, retry_after)
        }
    })
    .await
}

/// The callback receiver's software. While `errors` says so it answers 503.
pub async fn receiver(hist: History, errors: Arc<Mutex<bool>>) -> turmoil::Result {
    serve(RECEIVER_PORT, move |req, from| {
        let hist = hist.clone();
        let errors = errors.clone();
        async move {
            let answered = if *errors.lock().unwrap_or_else(|e| e.into_inner()) {
                503
            } else {
                200
            };
            hist.record(Ev::CbRecv {
                call: header(&req, "X-Call-Id"),
                from,
                function_status: header(&req, "X-Function-Status"),
                retry: header(&req, "X-Retry"),
                answered,
            });
            let resp: Response<Full<Bytes>> = respond(answered, None);
            resp
        }
    })
    .await
}
