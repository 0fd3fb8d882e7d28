//! Flow limits as an operator sees and pins them (`queue-worker flow ls|set|unset`): per
//! function, the limits pinned (`src/flow/pins.rs`), the limits the workers last enforced (from
//! a pin or the calls' annotations) and the slots held now.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::{AdminError, Operator};
use crate::broker::{BrokerError, KvSpec};
use crate::flow::pins::{self, Target};
use crate::flow::state::FlowState;
use crate::flow::{self, Limits, gate};

/// Most functions read for a listing (each is one more request).
pub const MAX_LISTED: usize = 10_000;

/// One function's (or flow key's) flow limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowReport {
    /// `name.namespace`, for a function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// For a flow key (`X-Flow-Control-Key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
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

    fn of(target: &Target) -> FlowReport {
        let (function, key) = match target {
            Target::Function(f) => (Some(f.clone()), None),
            Target::Key(k) => (None, Some(k.clone())),
        };
        FlowReport {
            function,
            key,
            pinned: None,
            enforced: None,
            running: 0,
        }
    }
}

/// What to pin: a function (with the default namespace), or a flow key.
#[derive(Debug, Clone, Copy)]
pub enum PinTarget<'a> {
    Function { name: &'a str, namespace: &'a str },
    Key(&'a str),
}

/// Every function and flow key of `queue` with flow limits, pinned or enforced (functions
/// first).
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
    let mut reports: BTreeMap<(u8, String), FlowReport> = BTreeMap::new();
    let named = |target: Target| match &target {
        Target::Function(f) => ((0, f.clone()), target),
        Target::Key(k) => ((1, k.clone()), target),
    };
    for key in keys.iter().take(MAX_LISTED) {
        let target = match (gate::function_of(key), gate::flow_key_of(key)) {
            (Some(f), _) => Target::Function(f),
            (None, Some(k)) => Target::Key(k),
            (None, None) => continue,
        };
        let Some(bytes) = op.kv_get(&bucket, key).await? else {
            continue;
        };
        let state: FlowState = serde_json::from_slice(&bytes).unwrap_or_default();
        let (sort, target) = named(target);
        let mut report = FlowReport::of(&target);
        report.enforced = (!state.limits.is_none()).then_some(state.limits);
        report.running = state.held(now_us);
        reports.insert(sort, report);
    }
    let pins = (pinned
        .functions
        .into_iter()
        .map(|(f, l)| (Target::Function(f), l)))
    .chain(pinned.keys.into_iter().map(|(k, l)| (Target::Key(k), l)));
    for (target, limits) in pins {
        let (sort, target) = named(target);
        reports
            .entry(sort)
            .or_insert_with(|| FlowReport::of(&target))
            .pinned = Some(limits);
    }
    Ok(reports.into_values().collect())
}

/// Pin `target` of `queue` to `limits`, or unpin it (`None`); every function's and key's
/// limits after. `spec`: the queue's flow bucket ([`flow::spec`]).
pub async fn set(
    op: &dyn Operator,
    spec: &KvSpec,
    queue: &str,
    target: PinTarget<'_>,
    limits: Option<Limits>,
) -> Result<Vec<FlowReport>, AdminError> {
    super::check_queue(queue)?;
    let target = match target {
        PinTarget::Function { name, namespace } => {
            let subject = super::function_subject(queue, name, namespace)?;
            Target::Function(subject[queue.len() + 1..].to_string())
        }
        PinTarget::Key(key) => {
            flow::limits::check_key(key).map_err(AdminError::Invalid)?;
            Target::Key(key.to_string())
        }
    };
    pins::set(op, spec, &target, limits)
        .await?
        .map_err(AdminError::Invalid)?;
    list(op, queue, SystemTime::now()).await
}
