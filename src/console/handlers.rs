//! The console's routes: read what a page shows (as the `/system` routes read it), then draw
//! it with the page's pure renderer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::dead_letters::Wanted;
use super::history::{Key, Series};
use super::page::{Tab, frame, problem};
use super::{Console, call, dead_letters, function, html, overview};
use crate::admin::dead_letters::{self as dl, Filter};
use crate::admin::queues::{self, QueueReport};
use crate::admin::{AdminError, Operator};

type St = State<Arc<Console>>;

/// Seconds between reloads of the overview and the function page.
const REFRESH: u32 = 10;
/// Queues with at most this many functions show each one's oldest message, in-flight count
/// and limits on the overview (a request or two per function); bigger ones on the function
/// pages only.
const DETAILED_UP_TO: usize = 50;
/// Dead letters a list shows.
const LISTED: usize = 200;
/// Changes of call status a function page looks through for its recent calls (one request
/// each).
const RECENT_SCANNED: usize = 200;
/// Dead letters (and recent calls) a function page shows.
const ON_FUNCTION_PAGE: usize = 20;

pub(super) async fn overview(State(c): St) -> Response {
    let main = match reports(c.op.as_ref(), SystemTime::now()).await {
        Ok(reports) => overview::render(&reports, &charts(&c)),
        Err(e) => return failed("Overview", Tab::Overview, &e),
    };
    html(
        StatusCode::OK,
        frame("Overview", Tab::Overview, Some(REFRESH), &main),
    )
}

/// Every queue's report, with the details of the smaller ones.
async fn reports(op: &dyn Operator, now: SystemTime) -> Result<Vec<QueueReport>, AdminError> {
    let mut all = queues::list(op, now).await?;
    for r in &mut all {
        if r.functions.len() <= DETAILED_UP_TO {
            match queues::stats(op, &r.queue, now).await {
                Ok(detailed) => *r = detailed,
                Err(AdminError::NoQueue(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(all)
}

/// Every function's calls and failures per minute (this replica's).
fn charts(c: &Console) -> BTreeMap<Key, Series> {
    let now = c.totals();
    let history = c.history();
    history
        .keys(&now)
        .map(|k| (k.clone(), history.series(k, &now)))
        .collect()
}

pub(super) async fn function(
    State(c): St,
    Path((queue, name)): Path<(String, String)>,
) -> Response {
    let name = match canonical(&name, &c.config.default_function_name) {
        Ok(n) => n,
        Err(e) => return failed("Function", Tab::Overview, &e),
    };
    let title = format!("Function {name}");
    let now = SystemTime::now();
    let op = c.op.as_ref();
    let report = match queues::stats(op, &queue, now).await {
        Ok(r) => r,
        Err(e) => return failed(&title, Tab::Overview, &e),
    };
    let filter = Filter {
        function: Some(name.clone()),
        ..Filter::default()
    };
    let at = (c.config.default_function_name.as_str(), now);
    let letters = match dl::list(op, &queue, &filter, ON_FUNCTION_PAGE, at).await {
        Ok(l) => l,
        Err(e) => return failed(&title, Tab::Overview, &e),
    };
    let recent = match recent_calls(&c, &queue, &name).await {
        Ok(r) => r,
        Err(e) => return failed(&title, Tab::Overview, &AdminError::Broker(e)),
    };
    let series = charts(&c).remove(&(queue.clone(), name.clone()));
    let shown = function::Shown {
        series: series.as_ref(),
        letters: &letters,
        recent: recent.as_deref(),
    };
    let main = function::render(&report, &name, &shown);
    html(
        StatusCode::OK,
        frame(&title, Tab::Overview, Some(REFRESH), &main),
    )
}

pub(super) async fn dead_letters(State(c): St, Query(wanted): Query<Wanted>) -> Response {
    const TITLE: &str = "Dead letters";
    let wanted = wanted.tidy();
    let queue = wanted.queue.clone().unwrap_or(c.config.queue_name.clone());
    let op = c.op.as_ref();
    let names = queues::names(op)
        .await
        .unwrap_or_else(|_| c.config.queues());
    let since = match wanted
        .since
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            let main = format!(
                "{}{}",
                problem(&format!("since: {e} (write it as 30m, 1h, 2d)")),
                dead_letters::list(&queue, &names, &wanted, &[], LISTED)
            );
            return html(
                StatusCode::BAD_REQUEST,
                frame(TITLE, Tab::DeadLetters, None, &main),
            );
        }
    };
    let filter = Filter {
        function: wanted.function.clone(),
        reason: wanted.reason.clone(),
        since,
    };
    let at = (c.config.default_function_name.as_str(), SystemTime::now());
    match dl::list(op, &queue, &filter, LISTED, at).await {
        Ok(found) => {
            let main = dead_letters::list(&queue, &names, &wanted, &found, LISTED);
            html(StatusCode::OK, frame(TITLE, Tab::DeadLetters, None, &main))
        }
        Err(e) => failed(TITLE, Tab::DeadLetters, &e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ShowQuery {
    queue: Option<String>,
    #[serde(default)]
    body: bool,
}

pub(super) async fn dead_letter(
    State(c): St,
    Path(sequence): Path<u64>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let title = format!("Dead letter {sequence}");
    let queue = q.queue.unwrap_or(c.config.queue_name.clone());
    match dl::show(c.op.as_ref(), &queue, sequence, q.body).await {
        Ok(Some(d)) => html(
            StatusCode::OK,
            frame(&title, Tab::DeadLetters, None, &dead_letters::detail(&d)),
        ),
        Ok(None) => {
            let e = AdminError::NotFound(format!("no dead letter {sequence} in queue {queue}"));
            failed(&title, Tab::DeadLetters, &e)
        }
        Err(e) => failed(&title, Tab::DeadLetters, &e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CallQuery {
    id: Option<String>,
}

pub(super) async fn calls(State(c): St, Query(q): Query<CallQuery>) -> Response {
    let id = q.id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let found = match &id {
        None => call::Found::Nothing,
        Some(id) => match lookup(&c, id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read call status");
                let main = problem("Cannot read call status from NATS; try again.");
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    frame("Calls", Tab::Calls, None, &main),
                );
            }
        },
    };
    let status = match found {
        call::Found::Unknown => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    let main = call::render(id.as_deref(), &found);
    html(status, frame("Calls", Tab::Calls, None, &main))
}

/// The call `id` in the queues this ingress serves (as `GET /system/calls/{id}` looks).
async fn lookup(c: &Console, id: &str) -> Result<call::Found, crate::broker::BrokerError> {
    let Some(calls) = &c.calls else {
        return Ok(call::Found::NotKept);
    };
    for queue in c.config.queues() {
        if let Some(status) = calls.get(&queue, id).await? {
            return Ok(call::Found::Call { queue, status });
        }
    }
    Ok(call::Found::Unknown)
}

/// The calls of `function` (`name.namespace`) in `queue` whose status changed last, newest
/// first (at most [`ON_FUNCTION_PAGE`], among the queue's last [`RECENT_SCANNED`] changes);
/// `None` where call status is not kept.
async fn recent_calls(
    c: &Console,
    queue: &str,
    function: &str,
) -> Result<Option<Vec<(String, crate::status::CallStatus)>>, crate::broker::BrokerError> {
    if c.calls.is_none() {
        return Ok(None);
    }
    let ns = c.config.default_function_name.as_str();
    let all = crate::status::recent(c.op.as_ref(), queue, RECENT_SCANNED).await?;
    let mine = all
        .into_iter()
        .filter(|(_, s)| canonical(&s.function, ns).is_ok_and(|f| f == function))
        .take(ON_FUNCTION_PAGE)
        .collect();
    Ok(Some(mine))
}

/// `name` or `name.namespace` as `name.namespace` (the namespace `default` when it has none),
/// as reports and the worker's metrics name functions.
fn canonical(function: &str, default_namespace: &str) -> Result<String, AdminError> {
    crate::wire::validate_function_name(function)
        .map_err(|e| AdminError::Invalid(format!("function {function:?}: {e}")))?;
    let (name, namespace) = crate::wire::split_function(function, default_namespace);
    Ok(format!("{name}.{namespace}"))
}

/// A page that says why it could not be drawn.
fn failed(title: &str, tab: Tab, e: &AdminError) -> Response {
    let status = match e {
        AdminError::NoQueue(_) | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
        AdminError::Broker(b) => {
            tracing::warn!(error = %b, "The console cannot read from NATS");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let text = match e {
        AdminError::Broker(_) => {
            "NATS did not answer; the page reloads itself, or try again.".to_string()
        }
        other => other.to_string(),
    };
    html(status, frame(title, tab, None, &problem(&text)))
}
