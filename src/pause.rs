//! Pausing a queue, or some of its functions: workers stop starting their calls (the ingress
//! still takes new ones) until resumed. The state is kept in NATS, so it holds for every
//! replica and across restarts: one JSON document under key [`KEY`] of bucket
//! `OF_<queue>_paused`, changed with compare-and-set (`queue-worker queue pause|resume`,
//! `POST /system/queues/{queue}/pause|resume`) and read by each worker every second
//! (`src/worker/pauses.rs`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};
use crate::config::Config;

/// The key of the document.
pub const KEY: &str = "paused";
/// The most functions one queue may have paused at once.
pub const MAX_FUNCTIONS: usize = 10_000;

/// The bucket of queue `queue`'s pauses.
pub fn bucket(queue: &str) -> String {
    format!("OF_{queue}_paused")
}

/// The bucket's spec: entries never expire.
pub fn spec(config: &Config, queue: &str) -> KvSpec {
    KvSpec::kept(config, bucket(queue))
}

/// What is paused in one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// The whole queue.
    #[serde(default)]
    pub queue: bool,
    /// Functions, as `name.namespace`.
    #[serde(default)]
    pub functions: BTreeSet<String>,
}

impl Paused {
    /// Whether calls of the function on `subject` (`<queue>.<name>.<namespace>`) wait.
    pub fn holds_subject(&self, queue: &str, subject: &str) -> bool {
        self.queue
            || subject
                .strip_prefix(queue)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|f| self.functions.contains(f))
    }

    /// Nothing is paused.
    pub fn is_empty(&self) -> bool {
        !self.queue && self.functions.is_empty()
    }

    /// This state with `target` (the queue: `None`; a function as `name.namespace`) paused or
    /// resumed. `Err` when too many functions would be paused.
    pub fn with(&self, target: Option<&str>, paused: bool) -> Result<Paused, String> {
        let mut next = self.clone();
        match target {
            None => next.queue = paused,
            Some(f) if paused => {
                next.functions.insert(f.to_string());
            }
            Some(f) => {
                next.functions.remove(f);
            }
        }
        if next.functions.len() > MAX_FUNCTIONS {
            return Err(format!(
                "at most {MAX_FUNCTIONS} functions can be paused at once"
            ));
        }
        Ok(next)
    }
}

/// What is paused in `queue` (nothing when the bucket or its document does not exist), and the
/// document's revision (`0`: none).
pub async fn read(store: &dyn KeyValue, queue: &str) -> Result<(Paused, u64), BrokerError> {
    kv_lazy::document(store, &bucket(queue), KEY).await
}

/// Pause (or resume) `target` of the queue whose bucket is `spec`; the state after.
pub async fn set(
    store: &dyn KeyValue,
    spec: &KvSpec,
    target: Option<&str>,
    paused: bool,
) -> Result<Result<Paused, String>, BrokerError> {
    kv_lazy::change_document(store, spec, KEY, |now: &Paused| now.with(target, paused)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_holds_the_whole_queue_or_its_functions() {
        let none = Paused::default();
        assert!(none.is_empty() && !none.holds_subject("q", "q.f.ns"));
        let f = none.with(Some("f.ns"), true).unwrap();
        assert!(f.holds_subject("q", "q.f.ns"));
        assert!(!f.holds_subject("q", "q.g.ns") && !f.holds_subject("q", "q"));
        assert!(!f.holds_subject("q", "q2.f.ns"), "another queue's subject");
        let all = f.with(None, true).unwrap();
        assert!(all.holds_subject("q", "q.g.ns") && all.holds_subject("q", "q"));
        let back = all
            .with(None, false)
            .unwrap()
            .with(Some("f.ns"), false)
            .unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn the_paused_functions_are_bounded() {
        let mut p = Paused::default();
        for i in 0..MAX_FUNCTIONS {
            p.functions.insert(format!("f{i}.ns"));
        }
        assert!(p.with(Some("one-more.ns"), true).is_err());
        assert!(
            p.with(Some("f1.ns"), false).is_ok(),
            "resuming is always possible"
        );
    }
}
