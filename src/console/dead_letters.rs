//! The dead-letter pages (pure): a filter (queue, function, reason, since), the list with a
//! box to tick on each, redrive and purge of one, of those ticked or of all that match, and one
//! dead letter with its headers (the body only when asked: it may hold personal data).

use std::fmt::Write;

use serde_json::json;

use super::overview::facts;
use super::page::{Action, esc, table, url_part};
use crate::admin::dead_letters::DeadLetter;

/// What the filter form holds (as typed: the API checks it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Wanted {
    pub queue: Option<String>,
    pub function: Option<String>,
    pub reason: Option<String>,
    pub since: Option<String>,
}

impl Wanted {
    /// Empty fields are no filter.
    pub fn tidy(self) -> Wanted {
        let keep = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Wanted {
            queue: keep(self.queue),
            function: keep(self.function),
            reason: keep(self.reason),
            since: keep(self.since),
        }
    }

    fn filtered(&self) -> bool {
        self.function.is_some() || self.reason.is_some() || self.since.is_some()
    }

    /// The body of a redrive or purge of every dead letter that matches (`all` without a
    /// filter), as `POST /system/dead-letters/redrive|purge` takes it.
    pub fn matching(&self, queue: &str) -> serde_json::Value {
        let mut body = json!({ "queue": queue });
        if !self.filtered() {
            body["all"] = json!(true);
        }
        for (name, value) in [
            ("function", &self.function),
            ("reason", &self.reason),
            ("since", &self.since),
        ] {
            if let Some(v) = value {
                body[name] = json!(v);
            }
        }
        body
    }
}

/// The list page's main part: the form, the buttons for many, the list (`limit`: the most
/// listed; when reached, the page says more may match).
pub fn list(
    queue: &str,
    queues: &[String],
    wanted: &Wanted,
    found: &[DeadLetter],
    limit: usize,
) -> String {
    let mut html = form(queue, queues, wanted);
    if found.len() >= limit {
        let _ = writeln!(
            html,
            "<p class=\"note\">The first {limit} are listed; more may match. \
             The buttons for all that match take them all.</p>"
        );
    }
    html.push_str(&bulk_actions(queue, wanted, found.is_empty()));
    let rows: Vec<Vec<String>> = found.iter().map(|d| row(queue, d)).collect();
    html.push_str(&table(
        &format!("Dead letters of queue {queue}"),
        &[
            "",
            "Sequence",
            "Function",
            "Call id",
            "Reason",
            "Status",
            "Attempts",
            "Error",
            "Dead-lettered at",
            "Actions",
        ],
        &rows,
        "No dead letter matches.",
    ));
    html
}

fn form(queue: &str, queues: &[String], wanted: &Wanted) -> String {
    let mut options = String::new();
    for q in queues {
        let selected = if q == queue { " selected" } else { "" };
        let _ = write!(options, "<option{selected}>{}</option>", esc(q));
    }
    let field = |name: &str, label: &str, hint: &str, value: &Option<String>| {
        format!(
            "<div><label for=\"f-{name}\">{label}</label><input id=\"f-{name}\" name=\"{name}\" \
             value=\"{}\" placeholder=\"{hint}\"></div>",
            esc(value.as_deref().unwrap_or_default())
        )
    };
    format!(
        "<form class=\"filter\" method=\"get\" action=\"/ui/dead-letters\" role=\"search\">\
         <div><label for=\"f-queue\">Queue</label><select id=\"f-queue\" name=\"queue\">{options}</select></div>\
         {}{}{}<div><button type=\"submit\">Filter</button></div></form>\n",
        field(
            "function",
            "Function",
            "name or name.namespace",
            &wanted.function
        ),
        field(
            "reason",
            "Reason",
            "exhausted, expired, poison…",
            &wanted.reason
        ),
        field("since", "Since", "e.g. 1h, 30m", &wanted.since),
    )
}

fn bulk_actions(queue: &str, wanted: &Wanted, none: bool) -> String {
    if none {
        return String::new();
    }
    let selected = json!({ "queue": queue });
    let all = wanted.matching(queue);
    let buttons = [
        Action::new(
            "Redrive selected",
            "POST",
            "/system/dead-letters/redrive".into(),
        )
        .body(selected.clone())
        .selection()
        .confirm("Redrive {n} selected dead letters? Each runs again as a new call."),
        Action::new(
            "Redrive all matching",
            "POST",
            "/system/dead-letters/redrive".into(),
        )
        .body(all.clone())
        .counted()
        .confirm("Redrive {n} dead letters matching the filter? Each runs again as a new call."),
        Action::new(
            "Purge selected",
            "POST",
            "/system/dead-letters/purge".into(),
        )
        .body(selected)
        .selection()
        .confirm("Purge {n} selected dead letters? This cannot be undone.")
        .danger(),
        Action::new(
            "Purge all matching",
            "POST",
            "/system/dead-letters/purge".into(),
        )
        .body(all)
        .counted()
        .confirm("Purge {n} dead letters matching the filter? This cannot be undone.")
        .danger(),
    ];
    let mut html = String::from("<div class=\"actions\">");
    for b in &buttons {
        html.push_str(&b.button());
    }
    html.push_str("</div>\n");
    html
}

fn row(queue: &str, d: &DeadLetter) -> Vec<String> {
    let seq = d.sequence;
    let call = d.call_id.as_deref().unwrap_or("—");
    let redrive = Action::new(
        "Redrive",
        "POST",
        format!(
            "/system/dead-letters/{seq}/redrive?queue={}",
            url_part(queue)
        ),
    )
    .confirm(format!(
        "Redrive dead letter {seq} (call {call})? It runs again as a new call."
    ));
    let opt = |v: Option<String>| v.map_or_else(|| "—".to_string(), |s| esc(&s));
    vec![
        format!(
            "<input type=\"checkbox\" name=\"seq\" value=\"{seq}\" aria-label=\"Select dead letter {seq}\">"
        ),
        format!(
            "<a href=\"/ui/dead-letters/{seq}?queue={}\">{seq}</a>",
            url_part(queue)
        ),
        esc(&d.function),
        call_link(d.call_id.as_deref()),
        esc(&d.reason),
        opt(d.status.map(|s| s.to_string())),
        opt(d.attempts.map(|a| a.to_string())),
        opt(d.error.clone()),
        esc(&d.dead_lettered_at),
        redrive.button(),
    ]
}

fn call_link(call_id: Option<&str>) -> String {
    match call_id {
        Some(id) => format!("<a href=\"/ui/calls?id={}\">{}</a>", url_part(id), esc(id)),
        None => "—".to_string(),
    }
}

/// One dead letter: its facts, its headers, and its body when `d.body` holds it (else a link
/// that asks for it).
pub fn detail(d: &DeadLetter) -> String {
    let q = url_part(&d.queue);
    let seq = d.sequence;
    let opt = |v: Option<String>| v.map_or_else(|| "—".to_string(), |s| esc(&s));
    let mut html = facts(&[
        ("Queue", esc(&d.queue)),
        ("Function", esc(&d.function)),
        ("Call id", call_link(d.call_id.as_deref())),
        ("Reason", esc(&d.reason)),
        ("Status", opt(d.status.map(|s| s.to_string()))),
        ("Attempts", opt(d.attempts.map(|a| a.to_string()))),
        ("Error", opt(d.error.clone())),
        ("Dead-lettered at", esc(&d.dead_lettered_at)),
        ("Subject", esc(&d.subject)),
        ("Size", format!("{} bytes", d.bytes)),
    ]);
    let redrive = Action::new(
        "Redrive",
        "POST",
        format!("/system/dead-letters/{seq}/redrive?queue={q}"),
    )
    .confirm(format!(
        "Redrive dead letter {seq}? It runs again as a new call."
    ));
    let purge = Action::new("Purge", "POST", "/system/dead-letters/purge".into())
        .body(json!({ "queue": d.queue, "sequences": [seq] }))
        .confirm(format!("Purge dead letter {seq}? This cannot be undone."))
        .danger();
    let _ = writeln!(
        html,
        "<div class=\"actions\">{}{}</div>",
        redrive.button(),
        purge.button()
    );
    let headers: Vec<Vec<String>> = d
        .headers
        .iter()
        .flatten()
        .map(|(k, v)| vec![esc(k), format!("<code>{}</code>", esc(v))])
        .collect();
    html.push_str("<h2>Headers</h2>\n");
    html.push_str(&table(
        "Headers of the stored message",
        &["Name", "Value"],
        &headers,
        "No headers.",
    ));
    html.push_str("<h2>Body</h2>\n");
    match &d.body {
        Some(body) => {
            let _ = writeln!(html, "<pre class=\"body\">{}</pre>", esc(body));
        }
        None => {
            let _ = writeln!(
                html,
                "<p>The body is not shown unless asked for: it may hold personal data. \
                 <a href=\"/ui/dead-letters/{seq}?queue={q}&amp;body=true\">Show the body</a></p>"
            );
        }
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(seq: u64) -> DeadLetter {
        DeadLetter {
            queue: "jobs".into(),
            sequence: seq,
            function: "f.openfaas-fn".into(),
            call_id: Some(format!("call-{seq}")),
            reason: "exhausted".into(),
            status: Some(500),
            attempts: Some(3),
            error: Some("<boom>".into()),
            dead_lettered_at: "2026-12-08T00:00:00.000Z".into(),
            subject: "jobs.f.openfaas-fn".into(),
            bytes: 10,
            headers: None,
            body: None,
        }
    }

    #[test]
    fn the_list_has_a_box_and_a_redrive_for_each_and_buttons_for_many() {
        let wanted = Wanted {
            function: Some("f".into()),
            ..Wanted::default()
        };
        let html = list(
            "jobs",
            &["jobs".into(), "other".into()],
            &wanted,
            &[letter(7)],
            100,
        );
        assert!(html.contains("name=\"seq\" value=\"7\""), "{html}");
        assert!(
            html.contains("data-url=\"/system/dead-letters/7/redrive?queue=jobs\""),
            "{html}"
        );
        assert!(
            html.contains("&lt;boom&gt;") && !html.contains("<boom>"),
            "{html}"
        );
        assert!(
            html.contains("<option selected>jobs</option><option>other</option>"),
            "{html}"
        );
        assert!(html.contains("value=\"f\""), "{html}");
        assert!(html.contains("data-selection=\"seq\""), "{html}");
        assert!(
            html.contains("data-body=\"{&quot;function&quot;:&quot;f&quot;,&quot;queue&quot;:&quot;jobs&quot;}\""),
            "{html}"
        );
        assert!(!html.contains("more may match"));
        assert!(list("jobs", &[], &wanted, &[letter(1)], 1).contains("more may match"));
    }

    #[test]
    fn an_empty_list_has_no_buttons_for_many() {
        let html = list("jobs", &[], &Wanted::default(), &[], 100);
        assert!(html.contains("No dead letter matches."));
        assert!(!html.contains("Redrive all matching"));
    }

    #[test]
    fn matching_without_a_filter_takes_all_and_blank_fields_are_no_filter() {
        let blank = Wanted {
            function: Some("  ".into()),
            since: Some(String::new()),
            ..Wanted::default()
        }
        .tidy();
        assert_eq!(blank.matching("q"), json!({"queue": "q", "all": true}));
        let some = Wanted {
            reason: Some("poison".into()),
            since: Some("1h".into()),
            ..Wanted::default()
        };
        assert_eq!(
            some.matching("q"),
            json!({"queue": "q", "reason": "poison", "since": "1h"})
        );
    }

    #[test]
    fn the_body_is_shown_only_when_asked_for() {
        let mut d = letter(3);
        d.headers = Some(vec![("X-Call-Id".into(), "call-3".into())]);
        let html = detail(&d);
        assert!(html.contains("<code>call-3</code>"), "{html}");
        assert!(html.contains("body=true\">Show the body</a>"), "{html}");
        d.body = Some("{\"secret\":\"<x>\"}".into());
        let shown = detail(&d);
        assert!(
            shown.contains("<pre class=\"body\">{&quot;secret&quot;:&quot;&lt;x&gt;&quot;}</pre>"),
            "{shown}"
        );
        assert!(!shown.contains("Show the body"));
    }
}
