//! Calls and failures per function over the last hour, as this process's worker counted them
//! (`queue_worker_invocations_total`): a sample of the counters each minute, kept for an hour,
//! and the counts per minute between samples (the last one running up to now).
//!
//! Only this replica's invocations are counted: each replica's console shows its own share,
//! and Prometheus (`/metrics`) has the sum.

use std::collections::{BTreeMap, VecDeque};

/// `(queue, function)`.
pub type Key = (String, String);

/// Invocations so far: `(all, failed)` where failed is any status but 2xx.
pub type Totals = BTreeMap<Key, (u64, u64)>;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// Most `(queue, function)` pairs one sample keeps (the rest are left out of the charts).
pub const MAX_SERIES: usize = 5_000;

/// The metric read.
const INVOCATIONS: &str = "queue_worker_invocations_total{";

/// Samples of the totals, one a minute, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Totals>,
}

/// One function's calls and failures per minute, oldest first ([`MINUTES`] of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub calls: Vec<u64>,
    pub failures: Vec<u64>,
}

impl History {
    /// Keep `totals` as this minute's sample (the oldest goes after an hour).
    pub fn record(&mut self, totals: Totals) {
        if self.samples.len() > MINUTES {
            self.samples.pop_front();
        }
        self.samples.push_back(totals);
    }

    /// `key`'s calls and failures in each of the last [`MINUTES`] minutes, the last running
    /// from the newest sample to `now` (the totals now).
    pub fn series(&self, key: &Key, now: &Totals) -> Series {
        let mut points: Vec<(u64, u64)> = self
            .samples
            .iter()
            .map(|s| s.get(key).copied().unwrap_or_default())
            .collect();
        points.push(now.get(key).copied().unwrap_or_default());
        let deltas: Vec<(u64, u64)> = points
            .windows(2)
            .map(|w| (w[1].0.saturating_sub(w[0].0), w[1].1.saturating_sub(w[0].1)))
            .collect();
        let pad = MINUTES.saturating_sub(deltas.len());
        let recent = &deltas[deltas.len().saturating_sub(MINUTES)..];
        let zeros = std::iter::repeat_n(0, pad);
        Series {
            calls: zeros.clone().chain(recent.iter().map(|d| d.0)).collect(),
            failures: zeros.chain(recent.iter().map(|d| d.1)).collect(),
        }
    }

    /// Every `(queue, function)` counted in the last hour, or now.
    pub fn keys<'a>(&'a self, now: &'a Totals) -> impl Iterator<Item = &'a Key> {
        let mut all: Vec<&Key> = self.samples.iter().flat_map(|s| s.keys()).collect();
        all.extend(now.keys());
        all.sort();
        all.dedup();
        all.into_iter()
    }
}

/// The invocation totals in Prometheus text (`Metrics::encode`).
pub fn totals(text: &str) -> Totals {
    let mut out = Totals::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(INVOCATIONS) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let (Some(queue), Some(function), Some(code), Ok(n)) = (
            label(labels, "queue_name"),
            label(labels, "function_name"),
            label(labels, "code"),
            value.trim().parse::<f64>(),
        ) else {
            continue;
        };
        let key = (queue, function);
        if out.len() >= MAX_SERIES && !out.contains_key(&key) {
            continue;
        }
        let n = n as u64;
        let entry = out.entry(key).or_default();
        entry.0 += n;
        if !code.starts_with('2') {
            entry.1 += n;
        }
    }
    out
}

/// The value of label `name` in `a="x",b="y"` (Prometheus escapes undone).
fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels
        .match_indices(&format!("{name}=\""))
        .find(|(i, _)| *i == 0 || labels.as_bytes()[i - 1] == b',')?
        .0
        + name.len()
        + 2;
    let mut value = String::new();
    let mut chars = labels[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP queue_worker_invocations Function invocations\n\
        queue_worker_invocations_total{queue_name=\"q\",function_name=\"a.fn\",code=\"200\"} 7\n\
        queue_worker_invocations_total{queue_name=\"q\",function_name=\"a.fn\",code=\"503\"} 2\n\
        queue_worker_invocations_total{queue_name=\"q\",function_name=\"a.fn\",code=\"429\"} 1\n\
        queue_worker_invocations_total{queue_name=\"q\\\"x\",function_name=\"b.fn\",code=\"204\"} 3\n\
        queue_worker_invocation_duration_seconds_sum{queue_name=\"q\",function_name=\"a.fn\"} 9\n\
        queue_worker_retries_total{queue_name=\"q\",function_name=\"a.fn\",code=\"503\"} 2\n";

    fn key(q: &str, f: &str) -> Key {
        (q.to_string(), f.to_string())
    }

    #[test]
    fn totals_add_every_status_and_count_all_but_2xx_as_failed() {
        let t = totals(TEXT);
        assert_eq!(t.get(&key("q", "a.fn")), Some(&(10, 3)));
        assert_eq!(t.get(&key("q\"x", "b.fn")), Some(&(3, 0)));
        assert_eq!(t.len(), 2, "{t:?}");
    }

    #[test]
    fn a_label_is_found_by_its_whole_name() {
        let labels = "xqueue_name=\"no\",queue_name=\"yes\"";
        assert_eq!(label(labels, "queue_name").as_deref(), Some("yes"));
        assert_eq!(label("a=\"unterminated", "a"), None);
    }

    #[test]
    fn series_are_an_hour_of_minutes_ending_now() {
        let k = key("q", "a.fn");
        let at = |all: u64, failed: u64| Totals::from([(k.clone(), (all, failed))]);
        let mut h = History::default();
        h.record(Totals::new());
        h.record(at(4, 1));
        h.record(at(10, 1));
        let s = h.series(&k, &at(11, 2));
        assert_eq!(s.calls.len(), MINUTES);
        assert_eq!(&s.calls[MINUTES - 3..], &[4, 6, 1]);
        assert_eq!(&s.failures[MINUTES - 3..], &[1, 0, 1]);
        assert!(s.calls[..MINUTES - 3].iter().all(|&c| c == 0));
    }

    #[test]
    fn an_hour_is_all_that_is_kept() {
        let k = key("q", "a.fn");
        let mut h = History::default();
        for minute in 0..200u64 {
            h.record(Totals::from([(k.clone(), (minute * 2, 0))]));
        }
        assert_eq!(h.samples.len(), MINUTES + 1);
        let s = h.series(&k, &Totals::from([(k.clone(), (400, 0))]));
        assert_eq!(s.calls.len(), MINUTES);
        assert!(s.calls.iter().all(|&c| c == 2), "{:?}", s.calls);
        assert_eq!(h.keys(&Totals::new()).count(), 1);
    }
}
