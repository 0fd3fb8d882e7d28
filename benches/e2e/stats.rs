//! Trial statistics and the run's summary: medians with their spread, the lines a script reads
//! at the end of `ci/bench`, and the `--json` document.

use std::collections::HashMap;

/// The median of a measure over its trials, with the spread (lowest, highest).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) trials: Vec<f64>,
}

/// The median (the mean of the middle two for an even count) and the spread of `v`.
pub(crate) fn spread(v: &[f64]) -> Spread {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Spread {
        median,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        max: sorted.last().copied().unwrap_or(f64::NAN),
        trials: v.to_vec(),
    }
}

impl Spread {
    /// `median (min–max)` with `decimals` digits after the point; the median alone for one
    /// trial.
    pub(crate) fn show(&self, decimals: usize) -> String {
        if self.trials.len() < 2 {
            return format!("{:.*}", decimals, self.median);
        }
        format!(
            "{:.*} ({:.*}–{:.*})",
            decimals, self.median, decimals, self.min, decimals, self.max
        )
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "median": self.median, "min": self.min, "max": self.max, "trials": self.trials,
        })
    }
}

/// The ratios of paired trials (`a[i] / b[i]`): how much the ratio moved from pair to pair.
pub(crate) fn pair_ratios(a: &[f64], b: &[f64]) -> Spread {
    let r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    spread(&r)
}

/// The lines `ci/bench` ends with, in this order (`throughput-ratio` last), each printed only
/// when its section ran.
pub(crate) const FINAL_LINES: [&str; 4] = [
    "ingress-ratio",
    "function-mode-ratio",
    "queue-delay-p99-ms",
    "throughput-ratio",
];

/// What a run measured: sections as JSON, and the final figures.
#[derive(Default)]
pub(crate) struct Summary {
    sections: serde_json::Map<String, serde_json::Value>,
    finals: HashMap<&'static str, f64>,
}

impl Summary {
    pub(crate) fn section(&mut self, name: &str, value: serde_json::Value) {
        self.sections.insert(name.to_string(), value);
    }

    pub(crate) fn set_final(&mut self, name: &'static str, value: f64) {
        debug_assert!(FINAL_LINES.contains(&name));
        self.finals.insert(name, value);
    }

    /// The final lines, e.g. `throughput-ratio: 0.83`.
    pub(crate) fn final_lines(&self) -> Vec<String> {
        FINAL_LINES
            .iter()
            .filter_map(|name| {
                let v = self.finals.get(name)?;
                let decimals = if name.ends_with("-ms") { 1 } else { 2 };
                Some(format!("{name}: {v:.decimals$}"))
            })
            .collect()
    }

    pub(crate) fn json(&self, context: serde_json::Value) -> serde_json::Value {
        let finals: serde_json::Map<String, serde_json::Value> = FINAL_LINES
            .iter()
            .filter_map(|n| Some((n.to_string(), serde_json::json!(self.finals.get(n)?))))
            .collect();
        serde_json::json!({
            "context": context,
            "sections": self.sections,
            "final": finals,
        })
    }
}
