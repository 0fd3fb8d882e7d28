//! One function's page (pure): what waits for it, its limits and state, its calls and failures
//! per minute over the last hour, the buttons that pause, resume and purge it, and its newest
//! dead letters.

use std::fmt::Write;

use super::chart;
use super::history::Series;
use super::overview::{facts, function_actions};
use super::page::{age, badge, between, esc, table, time_ms, url_part};
use crate::admin::dead_letters::DeadLetter;
use crate::admin::queues::{FunctionReport, QueueReport};
use crate::status::CallStatus;

/// What a function's page shows beside its queue's report.
pub struct Shown<'a> {
    /// Its calls and failures per minute here, if it ran here in the last hour.
    pub series: Option<&'a Series>,
    /// Its newest dead letters.
    pub letters: &'a [DeadLetter],
    /// Its calls whose status changed last, newest first (`None`: call status is not kept).
    pub recent: Option<&'a [(String, CallStatus)]>,
}

/// The page's main part. `r`: the queue's report with details.
pub fn render(r: &QueueReport, function: &str, shown: &Shown) -> String {
    let report = r.functions.iter().find(|f| f.function == function);
    let paused = r.paused || r.paused_functions.iter().any(|p| p == function);
    let mut html = facts_of(r, report, paused);
    html.push_str(&function_actions(r, function, report, paused));
    html.push_str("<h2>Calls and failures per minute, last hour (this replica)</h2>\n");
    match shown.series {
        Some(s) => {
            let _ = writeln!(
                html,
                "<figure>{}<figcaption class=\"legend\">{}</figcaption></figure>",
                chart::bars(&s.calls, &s.failures, "minute", 600, 120),
                chart::LEGEND
            );
        }
        None => html.push_str("<p class=\"empty\">No call of it ran here in the last hour.</p>\n"),
    }
    html.push_str(&recent_calls(r, function, shown.recent));
    html.push_str(&dead_letters(r, function, shown.letters));
    html
}

fn facts_of(r: &QueueReport, report: Option<&FunctionReport>, paused: bool) -> String {
    let dash = || "—".to_string();
    let queue = esc(&r.queue);
    let state = if paused { "paused" } else { "running" };
    facts(&[
        (
            "Queue",
            format!("<a href=\"/ui#queue-{queue}\">{queue}</a>"),
        ),
        ("State", badge(state)),
        ("Waiting", report.map_or(0, |f| f.messages).to_string()),
        (
            "In flight",
            report
                .and_then(|f| f.in_flight)
                .map_or_else(dash, |n| n.to_string()),
        ),
        (
            "Oldest",
            report
                .and_then(|f| f.oldest_age_seconds)
                .map_or_else(dash, |a| age(Some(a))),
        ),
        (
            "Limits",
            report
                .and_then(|f| f.limits.as_deref())
                .map_or_else(dash, esc),
        ),
    ])
}

fn dead_letters(r: &QueueReport, function: &str, letters: &[DeadLetter]) -> String {
    let q = url_part(&r.queue);
    let mut html = format!(
        "<h2>Dead letters</h2>\n<p><a href=\"/ui/dead-letters?queue={q}&amp;function={}\">\
         All of its dead letters, to filter, redrive or purge</a></p>\n",
        url_part(function)
    );
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            vec![
                format!(
                    "<a href=\"/ui/dead-letters/{0}?queue={q}\">{0}</a>",
                    d.sequence
                ),
                d.call_id.as_deref().map_or_else(|| "—".to_string(), esc),
                esc(&d.reason),
                esc(&d.dead_lettered_at),
            ]
        })
        .collect();
    html.push_str(&table(
        &format!("Newest dead letters of {function}"),
        &["Sequence", "Call id", "Reason", "Dead-lettered at"],
        &rows,
        "No dead letters.",
    ));
    html
}

fn recent_calls(
    r: &QueueReport,
    function: &str,
    recent: Option<&[(String, CallStatus)]>,
) -> String {
    let mut html = String::from("<h2>Recent calls</h2>\n");
    let Some(recent) = recent else {
        html.push_str(
            "<p class=\"empty\">Call status is not kept here (<code>status_ttl=0</code>).</p>\n",
        );
        return html;
    };
    let rows: Vec<Vec<String>> = recent
        .iter()
        .map(|(id, s)| {
            vec![
                format!("<a href=\"/ui/calls?id={}\">{}</a>", url_part(id), esc(id)),
                badge(s.state.as_str()),
                s.attempts.to_string(),
                s.last_status
                    .map_or_else(|| "—".to_string(), |c| c.to_string()),
                time_ms(s.enqueued_at),
                between(s.started_at, s.finished_at),
            ]
        })
        .collect();
    html.push_str(&table(
        &format!(
            "Calls of {function} in queue {} whose status changed last, newest first",
            r.queue
        ),
        &[
            "Call id",
            "State",
            "Attempts",
            "Last status",
            "Enqueued",
            "Took",
        ],
        &rows,
        "None among the queue's calls that changed last.",
    ));
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::queues::{FunctionReport, Mode};

    fn report(paused_functions: Vec<String>) -> QueueReport {
        QueueReport {
            queue: "jobs".into(),
            stream: "OF_jobs".into(),
            messages: 2,
            bytes: 1,
            oldest_age_seconds: None,
            mode: Mode::Static,
            consumers: 1,
            in_flight: 0,
            redelivered: 0,
            delayed: 0,
            dead_letters: 0,
            paused: false,
            paused_functions,
            functions: vec![FunctionReport {
                function: "f.openfaas-fn".into(),
                subject: "jobs.f.openfaas-fn".into(),
                messages: 2,
                paused: false,
                oldest_age_seconds: Some(3.0),
                in_flight: None,
                limits: None,
            }],
        }
    }

    fn nothing() -> Shown<'static> {
        Shown {
            series: None,
            letters: &[],
            recent: None,
        }
    }

    #[test]
    fn recent_calls_link_to_their_pages_with_state_and_time_taken() {
        let status = CallStatus {
            state: crate::status::State::Succeeded,
            function: "f".into(),
            attempts: 1,
            last_status: Some(200),
            error: None,
            reason: None,
            enqueued_at: Some(1_000),
            started_at: Some(2_000),
            finished_at: Some(2_250),
            not_before: None,
            next_attempt_at: None,
        };
        let recent = [("c<1>".to_string(), status)];
        let shown = Shown {
            recent: Some(&recent),
            ..nothing()
        };
        let html = render(&report(vec![]), "f.openfaas-fn", &shown);
        assert!(
            html.contains("<a href=\"/ui/calls?id=c%3C1%3E\">c&lt;1&gt;</a>"),
            "{html}"
        );
        assert!(
            html.contains("badge succeeded") && html.contains("<td>250ms</td>"),
            "{html}"
        );
        assert!(render(&report(vec![]), "f.openfaas-fn", &nothing()).contains("status_ttl=0"));
    }

    #[test]
    fn the_page_shows_state_waiting_and_the_right_button() {
        let html = render(&report(vec![]), "f.openfaas-fn", &nothing());
        assert!(html.contains("Waiting</dt><dd>2</dd>"), "{html}");
        assert!(html.contains("badge running"), "{html}");
        assert!(
            html.contains("/system/queues/jobs/pause?function=f.openfaas-fn"),
            "{html}"
        );
        assert!(html.contains("No call of it ran here"), "{html}");
        let paused = render(
            &report(vec!["f.openfaas-fn".into()]),
            "f.openfaas-fn",
            &nothing(),
        );
        assert!(
            paused.contains("badge paused") && paused.contains("/resume?function="),
            "{paused}"
        );
    }

    #[test]
    fn a_chart_shows_when_it_ran_here() {
        let s = Series {
            calls: vec![1; 60],
            failures: vec![0; 60],
        };
        let html = render(
            &report(vec![]),
            "f.openfaas-fn",
            &Shown {
                series: Some(&s),
                ..nothing()
            },
        );
        assert!(html.contains("60 calls and 0 failures"), "{html}");
    }
}
