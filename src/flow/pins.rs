//! Limits an operator pinned (`queue-worker flow set|unset`, `POST /system/queues/{queue}/flow`):
//! one JSON document under key [`KEY`] of the queue's flow bucket, changed with
//! compare-and-set and read by each worker every [`LOOK_EVERY`]. A pin wins over a message's
//! annotations, for every call of the function.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::Limits;
use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};

/// The key of the document (no function's key can equal it, see `gate::key_of`).
pub const KEY: &str = "limits";
/// The most functions one queue may have pins for.
pub const MAX_FUNCTIONS: usize = 10_000;
/// How often a worker reads the pins.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What a pin is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A function, `name.namespace`.
    Function(String),
    /// A flow key (`X-Flow-Control-Key`).
    Key(String),
}

/// The pinned limits of one queue, by function (`name.namespace`) and flow key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    #[serde(default)]
    pub functions: BTreeMap<String, Limits>,
    /// Flow keys (`X-Flow-Control-Key`): these win over the calls' `X-Flow-Control-Value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, Limits>,
}

impl Pins {
    /// These pins with `target` pinned to `limits` (`None` or no limit: unpinned). `Err` when
    /// too many functions or keys would be pinned.
    pub fn with(&self, target: &Target, limits: Option<Limits>) -> Result<Pins, String> {
        let mut next = self.clone();
        let (map, name) = match target {
            Target::Function(f) => (&mut next.functions, f),
            Target::Key(k) => (&mut next.keys, k),
        };
        match limits.filter(|l| !l.is_none()) {
            Some(l) => {
                map.insert(name.clone(), l);
            }
            None => {
                map.remove(name);
            }
        }
        if next.functions.len() > MAX_FUNCTIONS || next.keys.len() > MAX_FUNCTIONS {
            return Err(format!(
                "at most {MAX_FUNCTIONS} functions and {MAX_FUNCTIONS} flow keys can have pinned limits"
            ));
        }
        Ok(next)
    }
}

/// The pins of the queue whose flow bucket is `bucket` (none when the bucket or its document
/// does not exist), with the document's revision (`0`: none).
pub async fn read(store: &dyn KeyValue, bucket: &str) -> Result<(Pins, u64), BrokerError> {
    kv_lazy::document(store, bucket, KEY).await
}

/// Pin `target` to `limits` (`None`: unpin) in `spec`'s bucket; the pins after.
pub async fn set(
    store: &dyn KeyValue,
    spec: &KvSpec,
    target: &Target,
    limits: Option<Limits>,
) -> Result<Result<Pins, String>, BrokerError> {
    kv_lazy::change_document(store, spec, KEY, |now: &Pins| now.with(target, limits)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_nothing_unpins() {
        let two = Limits {
            max_concurrency: Some(2),
            ..Limits::default()
        };
        let f = Target::Function("f.ns".into());
        let pins = Pins::default().with(&f, Some(two)).unwrap();
        assert_eq!(pins.functions["f.ns"], two);
        assert!(pins.with(&f, None).unwrap().functions.is_empty());
        let none = pins.with(&f, Some(Limits::default())).unwrap();
        assert!(none.functions.is_empty(), "no limit is no pin");
        let keyed = pins.with(&Target::Key("f.ns".into()), Some(two)).unwrap();
        assert_eq!((keyed.keys.len(), keyed.functions.len()), (1, 1), "apart");
    }
}
