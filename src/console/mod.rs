//! The web console (README: "Web console"), served by the ingress at `/ui` behind its
//! credentials: pages drawn on the server from the same reads as `/system/queues`,
//! `/system/dead-letters` and `/system/calls`, whose buttons call those documented routes
//! (`console.js`), so the console can do nothing the API cannot.
//!
//! - `GET /ui`: every queue and its functions ([`overview`]), reloading every 10 s;
//! - `GET /ui/queues/{queue}/functions/{function}`: one function ([`function`]);
//! - `GET /ui/dead-letters[?queue=&function=&reason=&since=]`, `GET /ui/dead-letters/{seq}
//!   [?queue=&body=true]`: dead letters ([`dead_letters`]);
//! - `GET /ui/calls[?id=]`: one call ([`call`]).

mod call;
mod chart;
mod dead_letters;
mod function;
mod handlers;
mod history;
mod overview;
mod page;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::admin::Operator;
use crate::config::Config;
use crate::status::Calls;
use crate::telemetry::metrics::Metrics;

use history::History;

/// What the pages read from.
pub struct Console {
    op: Arc<dyn Operator>,
    calls: Option<Arc<Calls>>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    history: Mutex<History>,
}

/// How often the invocation counters are sampled for the charts.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

impl Console {
    /// The console over `op`; its charts sample `metrics` each minute while it lives (when
    /// made inside a Tokio runtime).
    pub fn new(
        op: Arc<dyn Operator>,
        calls: Option<Arc<Calls>>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Arc<Console> {
        let console = Arc::new(Console {
            op,
            calls,
            config,
            metrics,
            history: Mutex::new(History::default()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sample(Arc::downgrade(&console)));
        }
        console
    }

    /// The invocation totals now.
    fn totals(&self) -> history::Totals {
        history::totals(&self.metrics.encode())
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Record the totals each [`SAMPLE_EVERY`] until the console is gone.
async fn sample(console: Weak<Console>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = console.upgrade() else {
            return;
        };
        let totals = c.totals();
        c.history().record(totals);
    }
}

/// The console's routes.
pub fn routes<S: Clone + Send + Sync + 'static>(console: Arc<Console>) -> Router<S> {
    Router::new()
        .route("/ui", get(handlers::overview))
        .route("/ui/", get(handlers::overview))
        .route(
            "/ui/queues/{queue}/functions/{function}",
            get(handlers::function),
        )
        .route("/ui/dead-letters", get(handlers::dead_letters))
        .route("/ui/dead-letters/{seq}", get(handlers::dead_letter))
        .route("/ui/calls", get(handlers::calls))
        .route(
            "/ui/console.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/ui/console.js",
            get(|| asset(JS, "text/javascript; charset=utf-8")),
        )
        .with_state(console)
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// What every answer of the console carries: scripts and styles from here only, no framing (a
/// page with buttons must not be shown inside another site's), nothing cached or referred.
fn guarded(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    guarded(body.into_response(), content_type)
}

/// A page as an answer.
fn html(status: StatusCode, page: String) -> Response {
    guarded((status, page).into_response(), "text/html; charset=utf-8")
}
