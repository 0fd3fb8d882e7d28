//! Tables for people: one line per queue, function or dead letter, columns aligned.

use super::dead_letters::DeadLetter;
use super::queues::QueueReport;

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// `12.3s`, `4m05s`, `2h10m`, `3d04h`; `-` for none.
pub fn age(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    let whole = s as u64;
    match whole {
        0..60 => format!("{s:.1}s"),
        60..3600 => format!("{}m{:02}s", whole / 60, whole % 60),
        3600..86400 => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d{:02}h", whole / 86400, whole % 86400 / 3600),
    }
}

/// `queue ls`: one line per queue.
pub fn queues(reports: &[QueueReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.queue.clone(),
                r.messages.to_string(),
                r.in_flight.to_string(),
                age(r.oldest_age_seconds),
                r.functions.len().to_string(),
                r.consumers.to_string(),
                format!("{:?}", r.mode).to_lowercase(),
                r.delayed.to_string(),
                r.dead_letters.to_string(),
                paused(r),
            ]
        })
        .collect();
    let header = [
        "QUEUE",
        "MESSAGES",
        "IN FLIGHT",
        "OLDEST",
        "FUNCTIONS",
        "CONSUMERS",
        "MODE",
        "DELAYED",
        "DEAD LETTERS",
        "PAUSED",
    ];
    table(&header, &rows)
}

/// `yes`, `2 functions`, or `no`.
fn paused(r: &QueueReport) -> String {
    match (r.paused, r.paused_functions.len()) {
        (true, _) => "yes".into(),
        (false, 0) => "no".into(),
        (false, 1) => "1 function".into(),
        (false, n) => format!("{n} functions"),
    }
}

/// `queue stats`: the queue's totals, then one line per function.
pub fn stats(r: &QueueReport) -> String {
    let totals = format!(
        "queue {}: {} messages ({} bytes), {} in flight ({} redelivered), oldest {}, {} consumers ({} mode), {} delayed, {} dead letters, paused: {}",
        r.queue,
        r.messages,
        r.bytes,
        r.in_flight,
        r.redelivered,
        age(r.oldest_age_seconds),
        r.consumers,
        format!("{:?}", r.mode).to_lowercase(),
        r.delayed,
        r.dead_letters,
        paused(r),
    );
    let rows: Vec<Vec<String>> = r
        .functions
        .iter()
        .map(|f| {
            vec![
                if f.function.is_empty() {
                    "(bare subject)".into()
                } else {
                    f.function.clone()
                },
                f.messages.to_string(),
                f.in_flight.map_or("-".into(), |n| n.to_string()),
                age(f.oldest_age_seconds),
                if f.paused { "yes".into() } else { "no".into() },
                f.limits.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let functions = table(
        &[
            "FUNCTION",
            "MESSAGES",
            "IN FLIGHT",
            "OLDEST",
            "PAUSED",
            "LIMITS",
        ],
        &rows,
    );
    format!("{totals}\n\n{functions}")
}

/// `dlq ls`: one line per dead letter.
pub fn dead_letters(list: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.sequence.to_string(),
                d.function.clone(),
                d.reason.clone(),
                d.status.map_or("-".into(), |s| s.to_string()),
                d.attempts.map_or("-".into(), |a| a.to_string()),
                d.dead_lettered_at.clone(),
                d.call_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "SEQ",
        "FUNCTION",
        "REASON",
        "STATUS",
        "ATTEMPTS",
        "DEAD-LETTERED AT",
        "CALL ID",
    ];
    table(&header, &rows)
}

/// `dlq show`: one field per line, then the headers, then the body when asked for.
pub fn dead_letter(d: &DeadLetter) -> String {
    let mut out = vec![
        format!("sequence: {}", d.sequence),
        format!("queue: {}", d.queue),
        format!("function: {}", d.function),
        format!("call id: {}", d.call_id.as_deref().unwrap_or("-")),
        format!("reason: {}", d.reason),
        format!("status: {}", d.status.map_or("-".into(), |s| s.to_string())),
        format!(
            "attempts: {}",
            d.attempts.map_or("-".into(), |a| a.to_string())
        ),
        format!("error: {}", d.error.as_deref().unwrap_or("-")),
        format!("dead-lettered at: {}", d.dead_lettered_at),
        format!("subject: {}", d.subject),
        format!("bytes: {}", d.bytes),
    ];
    if let Some(headers) = &d.headers {
        out.push("headers:".into());
        out.extend(headers.iter().map(|(k, v)| format!("  {k}: {v}")));
    }
    match &d.body {
        Some(body) => out.push(format!("body:\n{body}")),
        None => out.push("body: (not shown; --body shows it)".into()),
    }
    out.join("\n")
}

/// `flow ls|set|unset`: one line per function or flow key with flow limits.
pub fn flow(reports: &[crate::admin::flow::FlowReport]) -> String {
    if reports.is_empty() {
        return "no function or flow key has flow limits".to_string();
    }
    let describe = |l: Option<crate::flow::Limits>| l.map_or("-".into(), |l| l.describe());
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let name = match (&r.function, &r.key) {
                (Some(f), _) => f.clone(),
                (None, Some(k)) => format!("key {k}"),
                (None, None) => "-".into(),
            };
            vec![
                name,
                describe(r.pinned),
                describe(r.enforced),
                r.running.to_string(),
            ]
        })
        .collect();
    table(
        &["FUNCTION OR KEY", "PINNED", "LAST ENFORCED", "RUNNING"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_header() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "1".into()],
                vec!["x".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide cell  1\nx          22");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(2.54)), "2.5s");
        assert_eq!(age(Some(245.0)), "4m05s");
        assert_eq!(age(Some(7800.0)), "2h10m");
        assert_eq!(age(Some(273_600.0)), "3d04h");
    }
}
