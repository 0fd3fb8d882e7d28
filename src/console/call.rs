//! The call page (pure): a form to look up a call id, and the call's status as
//! `GET /system/calls/{id}` has it (state, attempts, last status, times), a link to its stored
//! result, and a cancel button while it has not ended.

use std::fmt::Write;

use super::overview::facts;
use super::page::{Action, badge, between, esc, time_ms, url_part};
use crate::status::CallStatus;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Nothing asked yet.
    Nothing,
    /// The call and its queue.
    Call { queue: String, status: CallStatus },
    /// No call of this id (never stored, older than `status_ttl`).
    Unknown,
    /// Call status is not kept here (`status_ttl=0`).
    NotKept,
}

/// The form, then what was found for `id`.
pub fn render(id: Option<&str>, found: &Found) -> String {
    let mut html = format!(
        "<form class=\"filter\" method=\"get\" action=\"/ui/calls\" role=\"search\">\
         <div><label for=\"call-id\">Call id</label><input id=\"call-id\" name=\"id\" value=\"{}\" \
         required maxlength=\"{}\" autocomplete=\"off\"></div>\
         <div><button type=\"submit\">Look up</button></div></form>\n",
        esc(id.unwrap_or_default()),
        crate::ingress::MAX_CALL_ID_LEN
    );
    let id = id.unwrap_or_default();
    match found {
        Found::Nothing => {}
        Found::Unknown => {
            let _ = writeln!(
                html,
                "<p class=\"empty\">No call <code>{}</code>: never stored, or older than \
                 <code>status_ttl</code>.</p>",
                esc(id)
            );
        }
        Found::NotKept => html.push_str(
            "<p class=\"empty\">Call status is not kept here (<code>status_ttl=0</code>).</p>\n",
        ),
        Found::Call { queue, status } => html.push_str(&call(id, queue, status)),
    }
    html
}

fn call(id: &str, queue: &str, s: &CallStatus) -> String {
    let opt = |v: Option<String>| v.map_or_else(|| "—".to_string(), |t| esc(&t));
    let mut html = format!(
        "<h2>Call <code>{}</code> {}</h2>\n",
        esc(id),
        badge(s.state.as_str())
    );
    html.push_str(&facts(&[
        ("Queue", esc(queue)),
        (
            "Function",
            super::overview::function_link(queue, &s.function),
        ),
        ("Attempts", s.attempts.to_string()),
        ("Last status", opt(s.last_status.map(|c| c.to_string()))),
        ("Error", opt(s.error.clone())),
        ("Dead-letter reason", opt(s.reason.clone())),
        ("Enqueued", time_ms(s.enqueued_at)),
        ("Not before", time_ms(s.not_before)),
        ("First attempt", time_ms(s.started_at)),
        ("Next attempt", time_ms(s.next_attempt_at)),
        ("Finished", time_ms(s.finished_at)),
        ("Waited", between(s.enqueued_at, s.started_at)),
        ("Took", between(s.started_at, s.finished_at)),
    ]));
    let _ = writeln!(
        html,
        "<p><a href=\"/system/calls/{}/result\">Stored result</a> (kept when the call set \
         <code>X-Store-Result</code>)</p>",
        url_part(id)
    );
    if !s.state.is_terminal() {
        let cancel = Action::new(
            "Cancel call",
            "DELETE",
            format!("/async-function/{}", url_part(id)),
        )
        .confirm(format!("Cancel call {id}? No new attempt of it starts."))
        .danger();
        let _ = writeln!(html, "<div class=\"actions\">{}</div>", cancel.button());
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;

    fn status(state: State) -> CallStatus {
        CallStatus {
            state,
            function: "f.openfaas-fn".into(),
            attempts: 2,
            last_status: Some(503),
            error: Some("<503>".into()),
            reason: None,
            enqueued_at: Some(1_000),
            started_at: Some(3_500),
            finished_at: Some(4_000),
            not_before: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn a_running_call_can_be_cancelled_and_an_ended_one_cannot() {
        let found = Found::Call {
            queue: "jobs".into(),
            status: status(State::Queued),
        };
        let html = render(Some("c-1"), &found);
        assert!(html.contains("badge queued"), "{html}");
        assert!(
            html.contains("data-method=\"DELETE\" data-url=\"/async-function/c-1\""),
            "{html}"
        );
        assert!(html.contains("value=\"c-1\""));
        let ended = Found::Call {
            queue: "jobs".into(),
            status: status(State::Succeeded),
        };
        assert!(!render(Some("c-1"), &ended).contains("Cancel call"));
    }

    #[test]
    fn the_call_shows_its_attempts_status_and_times() {
        let found = Found::Call {
            queue: "jobs".into(),
            status: status(State::Succeeded),
        };
        let html = render(Some("c-1"), &found);
        assert!(html.contains("Attempts</dt><dd>2</dd>"), "{html}");
        assert!(html.contains("Last status</dt><dd>503</dd>"), "{html}");
        assert!(html.contains("Waited</dt><dd>2s 500ms</dd>"), "{html}");
        assert!(html.contains("Took</dt><dd>500ms</dd>"), "{html}");
        assert!(html.contains("&lt;503&gt;"), "{html}");
        assert!(html.contains("href=\"/system/calls/c-1/result\""), "{html}");
    }

    #[test]
    fn unknown_and_unasked_calls_say_so() {
        assert!(render(Some("<x>"), &Found::Unknown).contains("No call <code>&lt;x&gt;</code>"));
        assert!(!render(None, &Found::Nothing).contains("<h2>"));
        assert!(render(Some("x"), &Found::NotKept).contains("status_ttl=0"));
    }
}
