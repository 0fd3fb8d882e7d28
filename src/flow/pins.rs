//! Limits an operator pinned (`queue-worker flow set|unset`, `POST /system/queues/{queue}/flow`):
//! one JSON document under key [`KEY`] of the queue's flow bucket, changed with
//! compare-and-set and read by each worker every [`LOOK_EVERY`]. A pin wins over a message's
//! annotations, for every call of the function.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::limits::Limits;
use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};

/// The key of the document (no function's key can equal it, see `gate::key_of`).
pub const KEY: &str = "limits";
/// The most functions one queue may have pins for.
pub const MAX_FUNCTIONS: usize = 10_000;
/// How often a worker reads the pins.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Compare-and-set tries before giving up.
const SWAP_TRIES: u32 = 8;

/// The pinned limits of one queue, by function (`name.namespace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    #[serde(default)]
    pub functions: BTreeMap<String, Limits>,
}

impl Pins {
    /// These pins with `function` pinned to `limits` (`None` or no limit: unpinned). `Err` when
    /// too many functions would be pinned.
    pub fn with(&self, function: &str, limits: Option<Limits>) -> Result<Pins, String> {
        let mut next = self.clone();
        match limits.filter(|l| !l.is_none()) {
            Some(l) => {
                next.functions.insert(function.to_string(), l);
            }
            None => {
                next.functions.remove(function);
            }
        }
        if next.functions.len() > MAX_FUNCTIONS {
            return Err(format!(
                "at most {MAX_FUNCTIONS} functions can have pinned limits"
            ));
        }
        Ok(next)
    }
}

/// The pins of the queue whose flow bucket is `bucket` (none when the bucket or its document
/// does not exist), with the document's revision (`0`: none).
pub async fn read(store: &dyn KeyValue, bucket: &str) -> Result<(Pins, u64), BrokerError> {
    match kv_lazy::entry(store, bucket, KEY).await? {
        Some((bytes, revision)) => {
            Ok((serde_json::from_slice(&bytes).unwrap_or_default(), revision))
        }
        None => Ok((Pins::default(), 0)),
    }
}

/// Pin `function` to `limits` (`None`: unpin) in `spec`'s bucket; the pins after.
pub async fn set(
    store: &dyn KeyValue,
    spec: &KvSpec,
    function: &str,
    limits: Option<Limits>,
) -> Result<Result<Pins, String>, BrokerError> {
    for _ in 0..SWAP_TRIES {
        let (now, revision) = read(store, &spec.bucket).await?;
        let next = match now.with(function, limits) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        if next == now {
            return Ok(Ok(now));
        }
        let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
        let swap = || store.kv_swap(&spec.bucket, KEY, value.clone(), revision);
        match kv_lazy::creating(swap, || store.ensure_kv(spec)).await {
            Ok(_) => return Ok(Ok(next)),
            Err(BrokerError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::Conflict {
        key: KEY.to_string(),
    })
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
        let pins = Pins::default().with("f.ns", Some(two)).unwrap();
        assert_eq!(pins.functions["f.ns"], two);
        assert!(pins.with("f.ns", None).unwrap().functions.is_empty());
        let none = pins.with("f.ns", Some(Limits::default())).unwrap();
        assert!(none.functions.is_empty(), "no limit is no pin");
    }
}
