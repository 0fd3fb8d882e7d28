//! The operator's routes (behind the ingress credentials), the same operations as the
//! `queue` and `dlq` commands (`src/admin/`), answering JSON:
//! - `GET /system/queues`, `GET /system/queues/{queue}`;
//! - `DELETE /system/queues/{queue}/messages[?function=F]`;
//! - `POST /system/queues/{queue}/pause[?function=F]`, `POST /system/queues/{queue}/resume[?function=F]`;
//! - `GET /system/queues/{queue}/flow`; `PUT` (a JSON body of limits) and `DELETE` of
//!   `/system/queues/{queue}/flow?function=F` or `?key=K`: pinned flow limits;
//! - `GET /system/dead-letters[?queue=&function=&reason=&since=&limit=]`,
//!   `GET /system/dead-letters/{seq}[?queue=&body=true]`;
//! - `POST /system/dead-letters/redrive` and `POST /system/dead-letters/purge` with a JSON body
//!   (`queue`, and `sequences`, or filters `function`/`reason`/`since`, or `all`; `dry_run`),
//!   `POST /system/dead-letters/{seq}/redrive[?queue=]`.
//!
//! A browser's request from another site that would change something is refused `403`
//! ([`crate::security::same_origin`]).
//!
//! `404` for an unknown queue or dead letter, `400` for a bad name or filter, `503` when NATS
//! cannot answer.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use axum::Router;
use axum::routing::{delete, get, post};

use super::Ingress;
use super::calls::{error, json};
use crate::admin::dead_letters::{self as dl, Filter, Selection};
use crate::admin::{AdminError, Operator, StreamSettings, flow, pauses, queues};
use crate::config::Config;
use crate::flow::Limits;

/// What the routes share.
pub(super) struct Operating {
    op: Arc<dyn Operator>,
    config: Arc<Config>,
}

type Op = State<Arc<Operating>>;

/// The routes, where the ingress has an operator (none: not served, 404).
pub(super) fn routes<S: Clone + Send + Sync + 'static>(ingress: &Ingress) -> Router<S> {
    let Some(op) = ingress.operator.clone() else {
        return Router::new();
    };
    let state = Arc::new(Operating {
        op,
        config: ingress.config.clone(),
    });
    Router::new()
        .route("/system/queues", get(list_queues))
        .route("/system/queues/{queue}", get(queue_stats))
        .route("/system/queues/{queue}/messages", delete(purge_queue))
        .route("/system/queues/{queue}/pause", post(pause_queue))
        .route("/system/queues/{queue}/resume", post(resume_queue))
        .route(
            "/system/queues/{queue}/flow",
            get(list_flow).put(pin_flow).delete(unpin_flow),
        )
        .route("/system/dead-letters", get(list_dead_letters))
        .route("/system/dead-letters/{seq}", get(show_dead_letter))
        .route("/system/dead-letters/{seq}/redrive", post(redrive_one))
        .route("/system/dead-letters/redrive", post(redrive))
        .route("/system/dead-letters/purge", post(purge_dead_letters))
        .route_layer(axum::middleware::from_fn(
            crate::security::same_origin::refuse_cross_site,
        ))
        .with_state(state)
}

fn failed(e: &AdminError) -> Response {
    let status = match e {
        AdminError::NoQueue(_) | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
        AdminError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    if let AdminError::Broker(b) = e {
        tracing::warn!(error = %b, "Queue administration failed");
    }
    json(status, &error(&e.to_string()))
}

fn answer<T: serde::Serialize>(done: Result<T, AdminError>) -> Response {
    match done {
        Ok(value) => json(StatusCode::OK, &value),
        Err(e) => failed(&e),
    }
}

async fn list_queues(State(state): Op) -> Response {
    let op = state.op.as_ref();
    answer(queues::list(op, SystemTime::now()).await)
}

async fn queue_stats(State(state): Op, Path(queue): Path<String>) -> Response {
    let op = state.op.as_ref();
    answer(queues::stats(op, &queue, SystemTime::now()).await)
}

#[derive(Debug, Deserialize)]
struct FunctionQuery {
    function: Option<String>,
}

async fn purge_queue(
    State(state): Op,
    Path(queue): Path<String>,
    Query(q): Query<FunctionQuery>,
) -> Response {
    let op = state.op.as_ref();
    let namespace = state.config.default_function_name.as_str();
    let function = q.function.as_deref().map(|f| (f, namespace));
    answer(queues::purge(op, &queue, function).await)
}

async fn pause_queue(
    State(state): Op,
    Path(queue): Path<String>,
    Query(q): Query<FunctionQuery>,
) -> Response {
    set_paused(&state, &queue, q.function.as_deref(), true).await
}

async fn resume_queue(
    State(state): Op,
    Path(queue): Path<String>,
    Query(q): Query<FunctionQuery>,
) -> Response {
    set_paused(&state, &queue, q.function.as_deref(), false).await
}

async fn set_paused(
    state: &Operating,
    queue: &str,
    function: Option<&str>,
    paused: bool,
) -> Response {
    let spec = crate::pause::spec(&state.config, queue);
    let namespace = state.config.default_function_name.as_str();
    let function = function.map(|f| (f, namespace));
    answer(pauses::set(state.op.as_ref(), &spec, queue, function, paused).await)
}

async fn list_flow(State(state): Op, Path(queue): Path<String>) -> Response {
    answer(flow::list(state.op.as_ref(), &queue, SystemTime::now()).await)
}

/// Which pin a flow route is about: `?function=F` or `?key=K`, one of them.
#[derive(Debug, Deserialize)]
struct PinQuery {
    function: Option<String>,
    key: Option<String>,
}

async fn pin_flow(
    State(state): Op,
    Path(queue): Path<String>,
    Query(q): Query<PinQuery>,
    body: Body,
) -> Response {
    let limits = match read_limits(body).await {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    set_pin(&state, &queue, &q, Some(limits)).await
}

async fn unpin_flow(
    State(state): Op,
    Path(queue): Path<String>,
    Query(q): Query<PinQuery>,
) -> Response {
    set_pin(&state, &queue, &q, None).await
}

/// The limits of a `PUT …/flow` body (`{"max_concurrency":2,"rate":"5/1s","burst":1}`).
async fn read_limits(body: Body) -> Result<Limits, AdminError> {
    let bytes = axum::body::to_bytes(body, MAX_LIMITS_BODY)
        .await
        .map_err(|_| AdminError::Invalid(format!("a body of at most {MAX_LIMITS_BODY} bytes")))?;
    let body: LimitsBody = serde_json::from_slice(&bytes).map_err(|e| {
        AdminError::Invalid(format!(
            "limits: {e}; expected {{\"max_concurrency\":N,\"rate\":\"R/PERIOD\",\"burst\":B}}"
        ))
    })?;
    let limits = Limits {
        max_concurrency: body.max_concurrency,
        rate: body.rate,
        burst: body.burst,
    };
    limits.check().map_err(AdminError::Invalid)?;
    Ok(limits)
}

/// The body of `PUT …/flow`: a misspelt field is refused, not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    max_concurrency: Option<u32>,
    rate: Option<crate::flow::Rate>,
    #[serde(default)]
    burst: u32,
}

/// The largest body `PUT …/flow` reads.
const MAX_LIMITS_BODY: usize = 4 * 1024;

async fn set_pin(state: &Operating, queue: &str, q: &PinQuery, limits: Option<Limits>) -> Response {
    let namespace = state.config.default_function_name.as_str();
    let target = match (&q.function, &q.key) {
        (Some(name), None) => flow::PinTarget::Function { name, namespace },
        (None, Some(key)) => flow::PinTarget::Key(key),
        _ => {
            let e =
                AdminError::Invalid("name one function (?function=F) or one key (?key=K)".into());
            return failed(&e);
        }
    };
    let spec = crate::flow::spec(&state.config, queue);
    answer(flow::set(state.op.as_ref(), &spec, queue, target, limits).await)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    queue: Option<String>,
    function: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_dead_letters(State(state): Op, Query(q): Query<ListQuery>) -> Response {
    let op = state.op.as_ref();
    let since = match q
        .since
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return failed(&AdminError::Invalid(format!("since: {e}"))),
    };
    let filter = Filter {
        function: q.function,
        reason: q.reason,
        since,
    };
    let queue = q.queue.unwrap_or(state.config.queue_name.clone());
    let at = (
        state.config.default_function_name.as_str(),
        SystemTime::now(),
    );
    answer(dl::list(op, &queue, &filter, q.limit.unwrap_or(100), at).await)
}

#[derive(Debug, Deserialize)]
struct ShowQuery {
    queue: Option<String>,
    #[serde(default)]
    body: bool,
}

async fn show_dead_letter(
    State(state): Op,
    Path(sequence): Path<u64>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let op = state.op.as_ref();
    let queue = q.queue.unwrap_or(state.config.queue_name.clone());
    match dl::show(op, &queue, sequence, q.body).await {
        Ok(Some(d)) => json(StatusCode::OK, &d),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            &error(&format!("no dead letter {sequence} in queue {queue}")),
        ),
        Err(e) => failed(&e),
    }
}

/// The body of `redrive` and `purge`: sequences, or filters, or `all`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Act {
    queue: Option<String>,
    #[serde(default)]
    sequences: Vec<u64>,
    #[serde(flatten)]
    filter: Filter,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
}

impl Act {
    fn selection(&self) -> Result<Selection, AdminError> {
        let filtered = self.filter != Filter::default();
        match (self.sequences.is_empty(), filtered, self.all) {
            (false, false, false) => Ok(Selection::Sequences(self.sequences.clone())),
            (true, true, _) | (true, false, true) => Ok(Selection::Matching(self.filter.clone())),
            _ => Err(AdminError::Invalid(
                "give \"sequences\", or filters (\"function\", \"reason\", \"since\"), or \"all\": true"
                    .into(),
            )),
        }
    }
}

fn context<'a>(state: &'a Operating, queue: &'a str) -> dl::Context<'a> {
    dl::Context {
        queue,
        default_namespace: &state.config.default_function_name,
        settings: StreamSettings::of(&state.config),
        status: !state.config.status_ttl.is_zero(),
        now: SystemTime::now(),
    }
}

/// The most a `redrive` or `purge` body may hold.
const MAX_ACT_BYTES: usize = 1 << 20;

/// The JSON body of `redrive` or `purge`.
async fn read_act(body: Body) -> Result<Act, AdminError> {
    let bytes = axum::body::to_bytes(body, MAX_ACT_BYTES)
        .await
        .map_err(|_| AdminError::Invalid(format!("a body of at most {MAX_ACT_BYTES} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| AdminError::Invalid(format!("body: {e}")))
}

async fn redrive(State(state): Op, body: Body) -> Response {
    match read_act(body).await {
        Ok(act) => redrive_as(&state, act).await,
        Err(e) => failed(&e),
    }
}

async fn redrive_as(state: &Operating, act: Act) -> Response {
    let op = state.op.as_ref();
    let selection = match act.selection() {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let queue = act.queue.clone().unwrap_or(state.config.queue_name.clone());
    let ctx = context(state, &queue);
    answer(dl::redrive(op, &ctx, &selection, act.dry_run, &mut |_, _| {}).await)
}

async fn redrive_one(
    State(state): Op,
    Path(sequence): Path<u64>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let act = Act {
        queue: q.queue,
        sequences: vec![sequence],
        ..Act::default()
    };
    redrive_as(&state, act).await
}

async fn purge_dead_letters(State(state): Op, body: Body) -> Response {
    let act = match read_act(body).await {
        Ok(act) => act,
        Err(e) => return failed(&e),
    };
    let op = state.op.as_ref();
    let selection = match act.selection() {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let queue = act.queue.clone().unwrap_or(state.config.queue_name.clone());
    let ctx = context(&state, &queue);
    answer(dl::purge(op, &ctx, &selection, &mut |_, _| {}).await)
}
