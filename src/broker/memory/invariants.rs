//! The state's own invariants: every index and total agrees with the data it summarises.
//! Checked after every change in builds with debug assertions (tests, the simulation).

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::consumer::PendingState;
use super::limits::MemoryUsage;
use super::state::State;

impl State {
    /// Every index and total agrees with the data it summarises; panics when one does not.
    pub(super) fn check_invariants(&self) {
        let mut usage = MemoryUsage::default();
        let mut dedup_ids = 0;
        for (name, s) in &self.streams {
            assert_eq!(&s.spec.name, name);
            let bytes: u64 = s.msgs.values().map(|m| m.size).sum();
            assert_eq!(s.bytes, bytes, "stream {name} bytes");
            let indexed: usize = s.by_subject.values().map(BTreeSet::len).sum();
            assert_eq!(indexed, s.msgs.len(), "stream {name} subject index");
            for (subject, seqs) in &s.by_subject {
                assert!(!seqs.is_empty());
                for seq in seqs {
                    assert_eq!(&s.msgs[seq].subject, subject);
                }
            }
            assert!(s.msgs.keys().all(|seq| *seq <= s.last_seq));
            usage.messages += s.msgs.len() as u64;
            usage.bytes += bytes;
            dedup_ids += s.dedup.len();
            for c in s.consumers.values() {
                assert_eq!(c.timers.len() + c.redeliver.len(), c.pending.len());
                for (seq, p) in &c.pending {
                    match p.state {
                        PendingState::Timer(at) => assert!(c.timers.contains(&(at, *seq))),
                        PendingState::Queued(o) => assert!(c.redeliver.contains(&(o, *seq))),
                    }
                    assert!(p.delivered >= 1);
                }
            }
        }
        for b in self.buckets.values() {
            usage.messages += b.entries.len() as u64;
            usage.bytes += b
                .entries
                .iter()
                .map(|(k, e)| (k.len() + e.value.len()) as u64)
                .sum::<u64>();
            let armed: BTreeSet<(Instant, String)> = b
                .entries
                .iter()
                .filter_map(|(k, e)| e.expires.map(|at| (at, k.clone())))
                .collect();
            assert_eq!(armed, b.expiry);
        }
        assert_eq!(self.usage, usage, "usage totals");
        assert_eq!(self.dedup_ids, dedup_ids, "dedup id count");
    }
}
