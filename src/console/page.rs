//! The frame every console page shares, and the small pieces pages are made of (pure): text
//! escaped for HTML, the navigation, tables, and the buttons that call the documented API.
//!
//! A button that acts carries the API call it makes in `data-` attributes (`data-method`,
//! `data-url`, `data-body`, `data-confirm`); `console.js` makes the call after a confirmation.
//! Without JavaScript every page still reads; only the buttons do nothing.

use std::fmt::Write;

/// `text` safe inside HTML text and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one component of a URL path or query (RFC 3986 unreserved characters kept).
pub fn url_part(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

/// Which page of the navigation is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    DeadLetters,
    Calls,
}

/// A whole page: `title`, the navigation with `tab` marked, and `main`. `refresh`: the page
/// reloads itself after that many seconds (a plain `<meta>`, so it works without scripts).
pub fn frame(title: &str, tab: Tab, refresh: Option<u32>, main: &str) -> String {
    let mut html = String::with_capacity(main.len() + 1024);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    if let Some(seconds) = refresh {
        let _ = writeln!(html, "<meta http-equiv=\"refresh\" content=\"{seconds}\">");
    }
    let _ = writeln!(html, "<title>{} · queue-worker</title>", esc(title));
    html.push_str("<link rel=\"stylesheet\" href=\"/ui/console.css\">\n");
    html.push_str("<script src=\"/ui/console.js\" defer></script>\n</head>\n<body>\n");
    html.push_str(&navigation(tab));
    html.push_str("<main id=\"main\">\n");
    let _ = writeln!(html, "<h1>{}</h1>", esc(title));
    html.push_str("<p id=\"outcome\" role=\"status\" aria-live=\"polite\"></p>\n");
    html.push_str(main);
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

fn navigation(tab: Tab) -> String {
    let links = [
        (Tab::Overview, "/ui", "Overview"),
        (Tab::DeadLetters, "/ui/dead-letters", "Dead letters"),
        (Tab::Calls, "/ui/calls", "Calls"),
    ];
    let mut nav = String::from(
        "<a class=\"skip\" href=\"#main\">Skip to content</a>\n<header><nav aria-label=\"Console\">\
         <span class=\"brand\">queue-worker</span>",
    );
    for (t, href, label) in links {
        let current = if t == tab {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    nav.push_str("</nav></header>\n");
    nav
}

/// One API call a button makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action<'a> {
    /// The button's text.
    pub label: &'a str,
    pub method: &'a str,
    /// The documented route, with its query.
    pub url: String,
    /// A JSON body, if the route takes one.
    pub body: Option<String>,
    /// Asked before the call; `None`: no question.
    pub confirm: Option<String>,
    /// Takes the dead letters ticked on the page as `sequences` of the body.
    pub selection: bool,
    /// Asks the API first how many the call takes (a redrive `dry_run` with the same body),
    /// and puts that count in the question (`{n}`).
    pub counted: bool,
    /// A button that destroys: drawn in the warning colour.
    pub danger: bool,
}

impl<'a> Action<'a> {
    pub fn new(label: &'a str, method: &'a str, url: String) -> Action<'a> {
        Action {
            label,
            method,
            url,
            body: None,
            confirm: None,
            selection: false,
            counted: false,
            danger: false,
        }
    }

    pub fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body.to_string());
        self
    }

    pub fn confirm(mut self, question: impl Into<String>) -> Self {
        self.confirm = Some(question.into());
        self
    }

    pub fn selection(mut self) -> Self {
        self.selection = true;
        self
    }

    pub fn counted(mut self) -> Self {
        self.counted = true;
        self
    }

    pub fn danger(mut self) -> Self {
        self.danger = true;
        self
    }

    /// The `<button>`.
    pub fn button(&self) -> String {
        let mut b = format!(
            "<button type=\"button\" class=\"act{}\" data-method=\"{}\" data-url=\"{}\"",
            if self.danger { " danger" } else { "" },
            esc(self.method),
            esc(&self.url)
        );
        if let Some(body) = &self.body {
            let _ = write!(b, " data-body=\"{}\"", esc(body));
        }
        if let Some(q) = &self.confirm {
            let _ = write!(b, " data-confirm=\"{}\"", esc(q));
        }
        if self.selection {
            b.push_str(" data-selection=\"seq\"");
        }
        if self.counted {
            b.push_str(" data-counted=\"true\"");
        }
        let _ = write!(b, ">{}</button>", esc(self.label));
        b
    }
}

/// A table: `caption` (read by screen readers), column `header`s and `rows` of cells that are
/// already HTML. `empty`: the line shown instead when there are no rows.
pub fn table(caption: &str, header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>\n", esc(empty));
    }
    let mut t = format!(
        "<div class=\"scroll\"><table>\n<caption>{}</caption>\n<thead><tr>",
        esc(caption)
    );
    for h in header {
        let _ = write!(t, "<th scope=\"col\">{}</th>", esc(h));
    }
    t.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        t.push_str("<tr>");
        for cell in row {
            let _ = write!(t, "<td>{cell}</td>");
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</tbody></table></div>\n");
    t
}

/// A short badge (`paused`, a call's state): the class is the word itself.
pub fn badge(word: &str) -> String {
    let class: String = word
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("<span class=\"badge {class}\">{}</span>", esc(word))
}

/// An age in seconds as people read it (`—` for none).
pub fn age(seconds: Option<f64>) -> String {
    crate::admin::render::age(seconds)
}

/// Unix milliseconds as an RFC 3339 time (UTC), `—` for none.
pub fn time_ms(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_millis(at).to_string()
        }
        None => "—".to_string(),
    }
}

/// The time from `from` to `to` (unix milliseconds), `—` unless both are known and in order.
pub fn between(from: Option<u64>, to: Option<u64>) -> String {
    match (from, to) {
        (Some(a), Some(b)) if b >= a => {
            humantime::format_duration(std::time::Duration::from_millis(b - a)).to_string()
        }
        _ => "—".to_string(),
    }
}

/// A message about a failure, on a page of its own kind (`role="alert"`).
pub fn problem(text: &str) -> String {
    format!("<p class=\"problem\" role=\"alert\">{}</p>\n", esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_no_way_out_of_an_attribute() {
        let nasty = "<script>alert('x')</script>\"&";
        let out = esc(nasty);
        assert_eq!(
            out,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"
        );
        assert!(!out.contains('<') && !out.contains('"') && !out.contains('\''));
    }

    #[test]
    fn url_parts_keep_names_and_encode_the_rest() {
        assert_eq!(url_part("fn-1.openfaas_fn~x"), "fn-1.openfaas_fn~x");
        assert_eq!(url_part("a b/c?d&e"), "a%20b%2Fc%3Fd%26e");
    }

    #[test]
    fn a_button_carries_its_call_escaped() {
        let b = Action::new(
            "Pause",
            "POST",
            "/system/queues/q/pause?function=a&x".into(),
        )
        .body(serde_json::json!({"queue": "q\"<"}))
        .confirm("Pause \"a\"?")
        .danger()
        .button();
        assert!(b.contains("data-method=\"POST\""), "{b}");
        assert!(
            b.contains("data-url=\"/system/queues/q/pause?function=a&amp;x\""),
            "{b}"
        );
        assert!(
            b.contains("data-body=\"{&quot;queue&quot;:&quot;q\\&quot;&lt;&quot;}\""),
            "{b}"
        );
        assert!(b.contains("data-confirm=\"Pause &quot;a&quot;?\""), "{b}");
        assert!(b.contains("class=\"act danger\""), "{b}");
        assert!(
            !b.contains("data-selection") && !b.contains("data-counted"),
            "{b}"
        );
    }

    #[test]
    fn the_frame_marks_the_open_tab_and_refreshes_only_when_asked() {
        let page = frame("Over <view>", Tab::Calls, Some(10), "<p>x</p>");
        assert!(page.contains("<title>Over &lt;view&gt; · queue-worker</title>"));
        assert!(page.contains("<a href=\"/ui/calls\" aria-current=\"page\">Calls</a>"));
        assert!(page.contains("<a href=\"/ui\">Overview</a>"));
        assert!(page.contains("http-equiv=\"refresh\" content=\"10\""));
        assert!(!frame("t", Tab::Overview, None, "").contains("http-equiv"));
    }

    #[test]
    fn an_empty_table_is_a_sentence() {
        assert_eq!(
            table("c", &["a"], &[], "Nothing <here>."),
            "<p class=\"empty\">Nothing &lt;here&gt;.</p>\n"
        );
        let t = table("c", &["a", "b"], &[vec!["1".into(), "<b>2</b>".into()]], "");
        assert!(t.contains("<th scope=\"col\">a</th><th scope=\"col\">b</th>"));
        assert!(t.contains("<td>1</td><td><b>2</b></td>"));
    }
}
