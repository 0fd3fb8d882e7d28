//! Key-value buckets: entries with a TTL and a revision.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tokio::time::Instant;

use crate::broker::KvSpec;

pub(super) struct Bucket {
    pub(super) spec: KvSpec,
    pub(super) entries: BTreeMap<String, KvEntry>,
    pub(super) expiry: BTreeSet<(Instant, String)>,
    pub(super) revision: u64,
}

pub(super) struct KvEntry {
    pub(super) value: Bytes,
    pub(super) expires: Option<Instant>,
    /// The bucket's revision when this value was put.
    pub(super) revision: u64,
}

impl Bucket {
    /// Drop expired entries; returns (count, bytes) removed.
    pub(super) fn expire(&mut self, now: Instant) -> (u64, u64) {
        let mut gone = (0, 0);
        while let Some((at, _)) = self.expiry.first() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.expiry.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&key) {
                gone.0 += 1;
                gone.1 += (key.len() + e.value.len()) as u64;
            }
        }
        gone
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<u64> {
        let e = self.entries.remove(key)?;
        if let Some(at) = e.expires {
            self.expiry.remove(&(at, key.to_string()));
        }
        Some((key.len() + e.value.len()) as u64)
    }
}
