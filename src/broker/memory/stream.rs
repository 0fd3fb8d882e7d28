//! One stream: its messages (by sequence and by subject), its duplicate window and its
//! consumers; what expires with time, and what a consumer takes next.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::time::Instant;

use super::consumer::{Consumer, Pending, PendingState};
use super::subjects::{has_wildcard, subject_matches};
use super::time::later;
use crate::broker::{MSG_ID_HEADER, ServerVersion, StreamInfo, StreamSpec};

pub(super) struct Stream {
    pub(super) spec: StreamSpec,
    pub(super) msgs: BTreeMap<u64, Stored>,
    /// Sequences per subject: filtered consumers find their next message without a scan.
    pub(super) by_subject: BTreeMap<String, BTreeSet<u64>>,
    pub(super) last_seq: u64,
    pub(super) bytes: u64,
    /// Message id → (sequence, end of its duplicate window).
    pub(super) dedup: HashMap<String, (u64, Instant)>,
    /// Message ids in window-end order (an id re-used after its window has two entries; the
    /// stale one is recognised by its end time).
    pub(super) dedup_order: VecDeque<(Instant, String)>,
    pub(super) consumers: BTreeMap<String, Consumer>,
    /// Schedule messages by when they fire, with their target subject (`schedules.rs`).
    pub(super) schedules: BTreeMap<(Instant, u64), String>,
}

pub(super) struct Stored {
    pub(super) subject: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) payload: Bytes,
    pub(super) published: SystemTime,
    pub(super) stored_at: Instant,
    pub(super) size: u64,
}

impl Stream {
    pub(super) fn new(spec: StreamSpec) -> Stream {
        Stream {
            spec,
            msgs: BTreeMap::new(),
            by_subject: BTreeMap::new(),
            last_seq: 0,
            bytes: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            consumers: BTreeMap::new(),
            schedules: BTreeMap::new(),
        }
    }

    /// When the next schedule fires, if any.
    pub(super) fn next_schedule(&self) -> Option<Instant> {
        self.schedules.keys().next().map(|(at, _)| *at)
    }

    pub(super) fn covers(&self, subject: &str) -> bool {
        self.spec
            .subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
    }

    /// Remove one message; returns its size.
    pub(super) fn remove(&mut self, seq: u64) -> Option<u64> {
        let msg = self.msgs.remove(&seq)?;
        if let Some(seqs) = self.by_subject.get_mut(&msg.subject) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_subject.remove(&msg.subject);
            }
        }
        self.bytes -= msg.size;
        Some(msg.size)
    }

    /// Forget message ids whose duplicate window has ended; returns how many.
    pub(super) fn expire_dedup(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some((end, _)) = self.dedup_order.front() {
            if *end > now {
                break;
            }
            let Some((end, id)) = self.dedup_order.pop_front() else {
                break;
            };
            if self.dedup.get(&id).is_some_and(|(_, e)| *e == end) {
                self.dedup.remove(&id);
                removed += 1;
            }
        }
        removed
    }

    /// Forget the oldest message id (to respect `max_dedup_ids`); false when none is left.
    pub(super) fn forget_oldest_id(&mut self) -> bool {
        while let Some((end, id)) = self.dedup_order.pop_front() {
            if self.dedup.get(&id).is_some_and(|(_, e)| *e == end) {
                self.dedup.remove(&id);
                return true;
            }
        }
        false
    }

    /// After a restart with file storage: only ids of messages still stored are remembered.
    pub(super) fn rebuild_dedup(&mut self, now: Instant) {
        self.dedup.clear();
        self.dedup_order.clear();
        let window = self.spec.duplicate_window;
        for (seq, msg) in &self.msgs {
            let Some((_, id)) = msg.headers.iter().find(|(k, _)| k == MSG_ID_HEADER) else {
                continue;
            };
            let end = later(msg.stored_at, window);
            if end > now {
                self.dedup.insert(id.clone(), (*seq, end));
                self.dedup_order.push_back((end, id.clone()));
            }
        }
        self.dedup_order.make_contiguous().sort();
    }

    /// Messages past `max_age`: removed (returns count and bytes).
    pub(super) fn expire_aged(&mut self, now: Instant) -> (u64, u64) {
        let Some(max_age) = self.spec.max_age.filter(|a| !a.is_zero()) else {
            return (0, 0);
        };
        let mut gone = (0, 0);
        while let Some((&seq, msg)) = self.msgs.first_key_value() {
            if later(msg.stored_at, max_age) > now {
                break;
            }
            if let Some(size) = self.remove(seq) {
                gone.0 += 1;
                gone.1 += size;
            }
        }
        gone
    }

    /// Delete consumers idle past their inactive threshold.
    pub(super) fn expire_consumers(&mut self, now: Instant, version: ServerVersion) {
        let stream = &self.spec.name;
        let keeps_pending = version.keeps_consumers_with_pending_acks();
        self.consumers.retain(|name, c| {
            if c.is_inactive(now, keeps_pending) {
                tracing::debug!(stream = %stream, consumer = %name, "Consumer deleted after its inactive threshold");
                c.notify.notify_waiters();
                false
            } else {
                true
            }
        });
    }

    pub(super) fn info(&self, filter: Option<&str>) -> StreamInfo {
        let subjects = match filter {
            None => BTreeMap::new(),
            Some(f) => self
                .by_subject
                .iter()
                .filter(|(subject, _)| subject_matches(f, subject))
                .map(|(subject, seqs)| (subject.clone(), seqs.len() as u64))
                .collect(),
        };
        StreamInfo {
            messages: self.msgs.len() as u64,
            bytes: self.bytes,
            subjects,
        }
    }

    /// Deliver up to `n` messages to consumer `name`: redeliveries first, then new messages in
    /// stream order. Returns (sequence, delivery count) pairs.
    pub(super) fn take(&mut self, name: &str, n: usize, now: Instant) -> Vec<(u64, u64)> {
        let Stream {
            msgs,
            by_subject,
            consumers,
            ..
        } = self;
        let mut out = Vec::new();
        let Some(c) = consumers.get_mut(name) else {
            return out;
        };
        c.fire_timers(now);
        if c.paused {
            return out;
        }
        let deadline = later(now, c.ack_wait());
        while out.len() < n {
            if let Some((_, seq)) = c.redeliver.pop_first() {
                if !msgs.contains_key(&seq) {
                    c.pending.remove(&seq);
                    continue;
                }
                if let Some(p) = c.pending.get_mut(&seq) {
                    p.delivered += 1;
                    p.state = PendingState::Timer(deadline);
                    p.deadline = deadline;
                    c.timers.insert((deadline, seq));
                    out.push((seq, p.delivered));
                }
                continue;
            }
            let filter = c.spec.filter_subject.as_deref();
            let Some(seq) = first_match(msgs, by_subject, c.cursor, filter) else {
                break;
            };
            c.cursor = seq + 1;
            if c.pending.contains_key(&seq) {
                // Only after a filter change: the message is already out.
                continue;
            }
            c.pending.insert(
                seq,
                Pending {
                    delivered: 1,
                    state: PendingState::Timer(deadline),
                    deadline,
                },
            );
            c.timers.insert((deadline, seq));
            out.push((seq, 1));
        }
        out
    }
}

/// The first message at or after `cursor` that `filter` selects.
pub(super) fn first_match(
    msgs: &BTreeMap<u64, Stored>,
    by_subject: &BTreeMap<String, BTreeSet<u64>>,
    cursor: u64,
    filter: Option<&str>,
) -> Option<u64> {
    match filter {
        None => msgs.range(cursor..).next().map(|(s, _)| *s),
        Some(f) if !has_wildcard(f) => by_subject
            .get(f)
            .and_then(|seqs| seqs.range(cursor..).next().copied()),
        Some(f) => by_subject
            .iter()
            .filter(|(subject, _)| subject_matches(f, subject))
            .filter_map(|(_, seqs)| seqs.range(cursor..).next().copied())
            .min(),
    }
}
