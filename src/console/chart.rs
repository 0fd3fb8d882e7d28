//! Small charts drawn by the server as SVG (pure): calls and failures per interval, as bars on
//! a shared scale, with a text summary for screen readers and for people who read numbers.

use std::fmt::Write;

/// What the bars mean, under a chart (the colours are those of `console.css`).
pub const LEGEND: &str = "<span class=\"key calls\"></span>calls \
    <span class=\"key failures\"></span>failures (not 2xx) · one bar a minute, an hour ago on \
    the left, now on the right";

/// Bars for `calls` per interval, oldest first, with `failures` (of those calls) drawn over
/// them in the warning colour. `what` names the interval in the summary ("minute").
pub fn bars(calls: &[u64], failures: &[u64], what: &str, width: u32, height: u32) -> String {
    let peak = calls.iter().chain(failures).copied().max().unwrap_or(0);
    let total: u64 = calls.iter().sum();
    let failed: u64 = failures.iter().sum();
    let summary = format!(
        "{total} calls and {failed} failures over the last {n} {what}s; at most {peak} in one {what}",
        n = calls.len(),
    );
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" aria-label=\"{summary}\"><title>{summary}</title>\
         <line class=\"axis\" x1=\"0\" y1=\"{y}\" x2=\"{width}\" y2=\"{y}\"/>",
        y = height.saturating_sub(1),
    );
    let n = calls.len().max(1) as f64;
    let step = f64::from(width) / n;
    for (class, series) in [("calls", calls), ("failures", failures)] {
        for (i, &v) in series.iter().enumerate() {
            if v == 0 {
                continue;
            }
            let h = scaled(v, peak, height);
            let x = i as f64 * step;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/>",
                y = f64::from(height) - h,
                w = (step - 1.0).max(1.0),
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The height of a bar of `v` where `peak` fills `height` (a value above zero is at least
/// one unit tall, so a single call shows).
fn scaled(v: u64, peak: u64, height: u32) -> f64 {
    if peak == 0 {
        return 0.0;
    }
    let full = f64::from(height.saturating_sub(1));
    (v as f64 / peak as f64 * full).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heights(svg: &str, class: &str) -> Vec<f64> {
        svg.split("<rect ")
            .skip(1)
            .filter(|r| r.contains(&format!("class=\"{class}\"")))
            .map(|r| {
                let h = r.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn bars_share_one_scale_and_the_peak_fills_the_chart() {
        let svg = bars(&[0, 10, 5, 0], &[0, 0, 5, 0], "minute", 100, 41);
        assert_eq!(heights(&svg, "calls"), vec![40.0, 20.0]);
        assert_eq!(heights(&svg, "failures"), vec![20.0]);
        assert!(
            svg.contains("15 calls and 5 failures over the last 4 minutes"),
            "{svg}"
        );
        assert!(svg.contains("at most 10 in one minute"), "{svg}");
    }

    #[test]
    fn one_call_among_many_still_shows_and_nothing_draws_no_bar() {
        let svg = bars(&[1000, 1], &[0, 0], "minute", 100, 41);
        assert_eq!(heights(&svg, "calls"), vec![40.0, 1.0]);
        let quiet = bars(&[0; 60], &[0; 60], "minute", 100, 41);
        assert!(!quiet.contains("<rect"), "{quiet}");
        assert!(quiet.contains("0 calls and 0 failures over the last 60 minutes"));
    }
}
