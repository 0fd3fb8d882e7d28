//! The overview (pure): every queue with what waits in it, and per function its messages,
//! calls in flight, oldest message, limits, paused state and its calls over the last hour,
//! with the buttons that pause, resume and purge.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::chart;
use super::history::{Key, Series};
use super::page::{Action, age, badge, esc, table, url_part};
use crate::admin::queues::{FunctionReport, QueueReport};

/// Every queue's section.
pub fn render(reports: &[QueueReport], charts: &BTreeMap<Key, Series>) -> String {
    if reports.is_empty() {
        return "<p class=\"empty\">No queue yet: a queue appears once its stream \
                (<code>OF_&lt;queue&gt;</code>) exists.</p>\n"
            .to_string();
    }
    let mut html = format!(
        "<p class=\"note\">Calls and failures are those of this replica's worker; every other \
         figure is the whole queue's, from NATS.</p>\n<p class=\"legend\">{}</p>\n",
        chart::LEGEND
    );
    for r in reports {
        html.push_str(&queue_section(r, charts));
    }
    html
}

fn queue_section(r: &QueueReport, charts: &BTreeMap<Key, Series>) -> String {
    let q = esc(&r.queue);
    let mut html = format!(
        "<section class=\"queue\" aria-labelledby=\"queue-{q}\">\n<h2 id=\"queue-{q}\">Queue {q} {}</h2>\n",
        if r.paused {
            badge("paused")
        } else {
            String::new()
        }
    );
    html.push_str(&facts(&[
        ("Waiting", r.messages.to_string()),
        ("In flight", r.in_flight.to_string()),
        ("Oldest", age(r.oldest_age_seconds)),
        ("Delayed", r.delayed.to_string()),
        (
            "Dead letters",
            format!(
                "<a href=\"/ui/dead-letters?queue={}\">{}</a>",
                url_part(&r.queue),
                r.dead_letters
            ),
        ),
        ("Mode", format!("{:?}", r.mode).to_lowercase()),
    ]));
    html.push_str(&queue_actions(r));
    let rows: Vec<Vec<String>> = function_names(r, charts)
        .into_iter()
        .map(|f| function_row(r, f, charts))
        .collect();
    html.push_str(&table(
        &format!("Functions of queue {}", r.queue),
        &[
            "Function",
            "Waiting",
            "In flight",
            "Oldest",
            "Limits",
            "State",
            "Calls and failures, last hour",
            "Actions",
        ],
        &rows,
        "No function has calls waiting, paused or run in the last hour.",
    ));
    html.push_str("</section>\n");
    html
}

/// `<dl>` of label and value (values are HTML already).
pub fn facts(pairs: &[(&str, String)]) -> String {
    let mut dl = String::from("<dl class=\"facts\">");
    for (label, value) in pairs {
        let _ = write!(dl, "<div><dt>{}</dt><dd>{value}</dd></div>", esc(label));
    }
    dl.push_str("</dl>\n");
    dl
}

fn queue_actions(r: &QueueReport) -> String {
    let base = format!("/system/queues/{}", url_part(&r.queue));
    let toggle = if r.paused {
        Action::new("Resume queue", "POST", format!("{base}/resume"))
    } else {
        Action::new("Pause queue", "POST", format!("{base}/pause")).confirm(format!(
            "Pause queue {}? No call of it starts until resumed.",
            r.queue
        ))
    };
    let purge = Action::new("Purge queue", "DELETE", format!("{base}/messages"))
        .confirm(format!(
            "Purge queue {}: remove its {} waiting messages and {} delayed calls? This cannot be undone.",
            r.queue, r.messages, r.delayed
        ))
        .danger();
    format!(
        "<div class=\"actions\">{}{}</div>\n",
        toggle.button(),
        purge.button()
    )
}

/// The functions to show: with messages, paused, or counted in the last hour.
fn function_names<'a>(r: &'a QueueReport, charts: &'a BTreeMap<Key, Series>) -> Vec<&'a str> {
    let mut names: BTreeSet<&str> = r.functions.iter().map(|f| f.function.as_str()).collect();
    names.extend(r.paused_functions.iter().map(String::as_str));
    names.extend(
        charts
            .keys()
            .filter(|(q, _)| *q == r.queue)
            .map(|(_, f)| f.as_str()),
    );
    names.into_iter().collect()
}

fn function_row(r: &QueueReport, function: &str, charts: &BTreeMap<Key, Series>) -> Vec<String> {
    let report = r.functions.iter().find(|f| f.function == function);
    let paused = r.paused || r.paused_functions.iter().any(|p| p == function);
    let key = (r.queue.clone(), function.to_string());
    let chart = charts.get(&key).map_or_else(
        || "—".to_string(),
        |s| chart::bars(&s.calls, &s.failures, "minute", 180, 32),
    );
    let dash = || "—".to_string();
    vec![
        function_link(&r.queue, function),
        report.map_or(0, |f| f.messages).to_string(),
        report
            .and_then(|f| f.in_flight)
            .map_or_else(dash, |n| n.to_string()),
        report
            .and_then(|f| f.oldest_age_seconds)
            .map_or_else(dash, |a| age(Some(a))),
        report
            .and_then(|f| f.limits.as_deref())
            .map_or_else(dash, esc),
        if paused {
            badge("paused")
        } else {
            badge("running")
        },
        chart,
        function_actions(r, function, report, paused),
    ]
}

/// The function's name, linked to its page (`(no function)` for the bare queue subject).
pub fn function_link(queue: &str, function: &str) -> String {
    if function.is_empty() {
        return "<em>(no function)</em>".to_string();
    }
    format!(
        "<a href=\"/ui/queues/{}/functions/{}\">{}</a>",
        url_part(queue),
        url_part(function),
        esc(function)
    )
}

/// Pause or resume, and purge, of one function (none for the bare queue subject; no resume
/// of a function while its whole queue is paused, as that would change nothing).
pub fn function_actions(
    r: &QueueReport,
    function: &str,
    report: Option<&FunctionReport>,
    paused: bool,
) -> String {
    if function.is_empty() {
        return String::new();
    }
    let base = format!("/system/queues/{}", url_part(&r.queue));
    let which = format!("?function={}", url_part(function));
    let own_pause = r.paused_functions.iter().any(|p| p == function);
    let toggle = match (own_pause, paused) {
        (true, _) => Action::new("Resume", "POST", format!("{base}/resume{which}")),
        (false, true) => return String::new(),
        (false, false) => Action::new("Pause", "POST", format!("{base}/pause{which}")).confirm(
            format!("Pause {function}? No call of it starts until resumed."),
        ),
    };
    let waiting = report.map_or(0, |f| f.messages);
    let purge = Action::new("Purge", "DELETE", format!("{base}/messages{which}"))
        .confirm(format!(
            "Purge {function}: remove its {waiting} waiting messages? This cannot be undone."
        ))
        .danger();
    format!(
        "<span class=\"actions\" data-function=\"{}\">{}{}</span>",
        esc(function),
        toggle.button(),
        purge.button()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::queues::Mode;

    fn report() -> QueueReport {
        QueueReport {
            queue: "jobs".into(),
            stream: "OF_jobs".into(),
            messages: 5,
            bytes: 100,
            oldest_age_seconds: Some(75.0),
            mode: Mode::Function,
            consumers: 1,
            in_flight: 1,
            redelivered: 0,
            delayed: 2,
            dead_letters: 3,
            paused: false,
            paused_functions: vec!["held.openfaas-fn".into(), "idle.openfaas-fn".into()],
            functions: vec![
                function("held.openfaas-fn", 3, true),
                function("busy.openfaas-fn", 2, false),
            ],
        }
    }

    fn function(name: &str, messages: u64, paused: bool) -> FunctionReport {
        FunctionReport {
            function: name.into(),
            subject: format!("jobs.{name}"),
            messages,
            paused,
            oldest_age_seconds: Some(12.0),
            in_flight: Some(1),
            limits: Some("max_concurrency=2".into()),
        }
    }

    fn row_of<'a>(html: &'a str, function: &str) -> &'a str {
        let at = html
            .find(&format!(">{function}</a>"))
            .unwrap_or_else(|| panic!("{function} listed: {html}"));
        let end = html[at..].find("</tr>").unwrap() + at;
        &html[at..end]
    }

    #[test]
    fn a_paused_function_shows_its_waiting_calls_and_a_resume_button() {
        let html = render(&[report()], &BTreeMap::new());
        let held = row_of(&html, "held.openfaas-fn");
        assert!(held.contains("<td>3</td>"), "{held}");
        assert!(held.contains("badge paused"), "{held}");
        assert!(
            held.contains("data-url=\"/system/queues/jobs/resume?function=held.openfaas-fn\""),
            "{held}"
        );
        assert!(held.contains("remove its 3 waiting messages"), "{held}");
        let busy = row_of(&html, "busy.openfaas-fn");
        assert!(
            busy.contains("badge running") && busy.contains("/pause?function=busy"),
            "{busy}"
        );
        assert!(busy.contains("max_concurrency=2"), "{busy}");
        let idle = row_of(&html, "idle.openfaas-fn");
        assert!(
            idle.contains("<td>0</td>") && idle.contains("badge paused"),
            "{idle}"
        );
    }

    #[test]
    fn a_paused_queue_offers_resume_and_no_function_resume() {
        let mut r = report();
        r.paused = true;
        r.paused_functions.clear();
        let html = render(&[r], &BTreeMap::new());
        assert!(
            html.contains("data-url=\"/system/queues/jobs/resume\""),
            "{html}"
        );
        let busy = row_of(&html, "busy.openfaas-fn");
        assert!(
            busy.contains("badge paused") && !busy.contains("data-method=\"POST\""),
            "{busy}"
        );
    }

    #[test]
    fn a_function_run_lately_is_listed_with_its_chart() {
        let key = ("jobs".to_string(), "past.openfaas-fn".to_string());
        let mut calls = vec![0; 60];
        calls[59] = 4;
        let charts = BTreeMap::from([(
            key,
            Series {
                calls,
                failures: vec![0; 60],
            },
        )]);
        let html = render(&[report()], &charts);
        let past = row_of(&html, "past.openfaas-fn");
        assert!(
            past.contains("4 calls and 0 failures over the last 60 minutes"),
            "{past}"
        );
        assert!(html.contains("Waiting</dt><dd>5</dd>"), "{html}");
        assert!(
            html.contains("href=\"/ui/dead-letters?queue=jobs\">3</a>"),
            "{html}"
        );
    }

    #[test]
    fn names_from_nats_are_escaped() {
        let mut r = report();
        r.functions[1].function = "<x>".into();
        let html = render(&[r], &BTreeMap::new());
        assert!(!html.contains("<x>"), "{html}");
        assert!(html.contains("&lt;x&gt;"));
    }

    #[test]
    fn no_queue_is_a_sentence() {
        assert!(render(&[], &BTreeMap::new()).contains("No queue yet"));
    }
}
