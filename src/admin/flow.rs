//! Flow limits as an operator sees and pins them (`queue-worker flow ls|set|unset`): per
//! function, the limits pinned (`src/flow/pins.rs`), the limits the workers last enforced (from
//! a pin or the calls' annotations) and the slots held now.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::{AdminError, Operator};
use crate::broker::{BrokerError, KvSpec};
use crate::flow::state::FlowState;
use crate::flow::{self, Limits, gate, pins};

/// Most functions read for a listing (each is one more request).
pub const MAX_LISTED: usize = 10_000;

/// One function's flow limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowReport {
    /// `name.namespace`.
    pub function: String,
    /// Pinned by an operator: these win over the calls' annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Limits>,
    /// What the workers enforced at the last call that started (a pin, or annotations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforced: Option<Limits>,
    /// Slots of `max_concurrency` held now: calls running across the replicas.
    pub running: usize,
}

impl FlowReport {
    /// The limits that hold now: the pin, else the last enforced.
    pub fn limits(&self) -> Option<Limits> {
        self.pinned.or(self.enforced)
    }
}

/// Every function of `queue` with flow limits, pinned or enforced.
pub async fn list(
    op: &dyn Operator,
    queue: &str,
    now: SystemTime,
) -> Result<Vec<FlowReport>, AdminError> {
    super::check_queue(queue)?;
    let bucket = flow::bucket(queue);
    let (pinned, _) = pins::read(op, &bucket).await?;
    let keys = match op.kv_keys(&bucket).await {
        Ok(keys) => keys,
        Err(BrokerError::NoBucket { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let now_us = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut reports: BTreeMap<String, FlowReport> = BTreeMap::new();
    for key in keys.iter().take(MAX_LISTED) {
        let Some(function) = gate::function_of(key) else {
            continue;
        };
        let Some(bytes) = op.kv_get(&bucket, key).await? else {
            continue;
        };
        let state: FlowState = serde_json::from_slice(&bytes).unwrap_or_default();
        let report = FlowReport {
            function: function.clone(),
            pinned: None,
            enforced: (!state.limits.is_none()).then_some(state.limits),
            running: state.held(now_us),
        };
        reports.insert(function, report);
    }
    for (function, limits) in pinned.functions {
        reports
            .entry(function.clone())
            .or_insert_with(|| FlowReport {
                function,
                pinned: None,
                enforced: None,
                running: 0,
            })
            .pinned = Some(limits);
    }
    Ok(reports.into_values().collect())
}

/// Pin `function` (with the default namespace) of `queue` to `limits`, or unpin it (`None`);
/// every function's limits after. `spec`: the queue's flow bucket ([`flow::spec`]).
pub async fn set(
    op: &dyn Operator,
    spec: &KvSpec,
    queue: &str,
    function: (&str, &str),
    limits: Option<Limits>,
) -> Result<Vec<FlowReport>, AdminError> {
    super::check_queue(queue)?;
    let (name, namespace) = function;
    let subject = super::function_subject(queue, name, namespace)?;
    let function = &subject[queue.len() + 1..];
    pins::set(op, spec, function, limits)
        .await?
        .map_err(AdminError::Invalid)?;
    list(op, queue, SystemTime::now()).await
}
