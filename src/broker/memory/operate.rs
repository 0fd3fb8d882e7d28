//! [`Operate`] on the embedded broker: the same answers as JetStream's stream and consumer APIs.

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBroker;
use super::state::State;
use super::subjects::subject_matches;
use crate::broker::{BrokerError, ConsumerState, Operate, StoredMessage};

#[async_trait]
impl Operate for MemoryBroker {
    async fn stream_names(&self) -> Result<Vec<String>, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_all(Instant::now());
        Ok(state.streams.keys().cloned().collect())
    }

    async fn consumer_states(&self, stream: &str) -> Result<Vec<ConsumerState>, BrokerError> {
        let mut state = self.inner.lock();
        let now = Instant::now();
        state.sweep_stream(stream, now);
        let Some(s) = state.streams.get_mut(stream) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, c) in &mut s.consumers {
            c.fire_timers(now);
            let filter = c.spec.filter_subject.as_deref();
            let waiting = s
                .msgs
                .range(c.cursor..)
                .filter(|(_, m)| filter.is_none_or(|f| subject_matches(f, &m.subject)))
                .count() as u64;
            out.push(ConsumerState {
                name: name.clone(),
                filter_subject: c.spec.filter_subject.clone(),
                waiting,
                in_flight: c.pending.len() as u64,
                redelivered: c.pending.values().filter(|p| p.delivered > 1).count() as u64,
                paused: c.paused,
            });
        }
        Ok(out)
    }

    async fn recent_entries(
        &self,
        bucket: &str,
        scan: usize,
    ) -> Result<Vec<(String, bytes::Bytes)>, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_bucket(bucket, Instant::now());
        let Some(b) = state.buckets.get(bucket) else {
            return Ok(Vec::new());
        };
        let oldest = b.revision.saturating_sub(scan as u64);
        let mut found: Vec<(u64, String, bytes::Bytes)> = b
            .entries
            .iter()
            .filter(|(_, e)| e.revision > oldest)
            .map(|(k, e)| (e.revision, k.clone(), e.value.clone()))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(found.into_iter().map(|(_, k, v)| (k, v)).collect())
    }

    async fn next_message(
        &self,
        stream: &str,
        from: u64,
        subject: Option<&str>,
    ) -> Result<Option<StoredMessage>, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        let Some(s) = state.streams.get(stream) else {
            return Ok(None);
        };
        let found = s
            .msgs
            .range(from.max(1)..)
            .find(|(_, m)| subject.is_none_or(|f| subject_matches(f, &m.subject)));
        Ok(found.map(|(seq, m)| StoredMessage {
            sequence: *seq,
            subject: m.subject.clone(),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
            published: m.published,
        }))
    }

    async fn delete_message(&self, stream: &str, sequence: u64) -> Result<bool, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        Ok(remove_messages(&mut state, stream, &[sequence]) == 1)
    }

    async fn purge(&self, stream: &str, subject: Option<&str>) -> Result<u64, BrokerError> {
        let mut state = self.inner.lock();
        state.sweep_stream(stream, Instant::now());
        let Some(s) = state.streams.get(stream) else {
            return Ok(0);
        };
        let seqs: Vec<u64> = s
            .msgs
            .iter()
            .filter(|(_, m)| subject.is_none_or(|f| subject_matches(f, &m.subject)))
            .map(|(seq, _)| *seq)
            .collect();
        Ok(remove_messages(&mut state, stream, &seqs))
    }

    async fn pause_consumer(
        &self,
        stream: &str,
        name: &str,
        paused: bool,
    ) -> Result<bool, BrokerError> {
        let mut state = self.inner.lock();
        if !state.version.pauses_consumers() {
            return Ok(false);
        }
        state.sweep_stream(stream, Instant::now());
        let Some(c) = state
            .streams
            .get_mut(stream)
            .and_then(|s| s.consumers.get_mut(name))
        else {
            return Ok(false);
        };
        c.paused = paused;
        c.notify.notify_waiters();
        Ok(true)
    }

    async fn delete_stream(&self, stream: &str) -> Result<bool, BrokerError> {
        Ok(MemoryBroker::delete_stream(self, stream))
    }
}

/// Remove messages `seqs` of `stream`, and from its consumers' pending sets, as the server
/// does for a deleted or purged message; returns how many were stored.
fn remove_messages(state: &mut State, stream: &str, seqs: &[u64]) -> u64 {
    let Some(s) = state.streams.get_mut(stream) else {
        return 0;
    };
    let (mut count, mut bytes) = (0, 0);
    for seq in seqs {
        if let Some(size) = s.remove(*seq) {
            count += 1;
            bytes += size;
        }
        for c in s.consumers.values_mut() {
            c.remove_pending(*seq);
        }
    }
    state.usage.messages -= count;
    state.usage.bytes -= bytes;
    count
}
