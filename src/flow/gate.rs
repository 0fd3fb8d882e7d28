//! The gate a limited function's call passes before it is invoked: one compare-and-set of the
//! function's key in the queue's flow bucket to start ([`Flow::enter`]), one more to give its
//! slot back ([`Flow::leave`]). Functions without limits never touch the bucket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use super::limits::Limits;
use super::pins::Pins;
use super::state::{Decision, FlowState};
use crate::broker::{BrokerError, KeyValue, KvSpec, kv_lazy};

/// Compare-and-set tries per gate before waiting a little (each lost one means another replica
/// started or ended a call of the function meanwhile).
const SWAP_TRIES: u32 = 8;
/// How long a call waits when NATS cannot say whether it may start.
pub const UNSURE_WAIT: Duration = Duration::from_secs(1);
/// A slot lapses this long after its call's `upstream_timeout` (a worker that died holding it).
pub const HOLD_MARGIN: Duration = Duration::from_secs(10);
/// A call let through must start within this of the moment it was (its compare-and-set came
/// back late, as in a stall of NATS): else it gives its place up and asks again, so that no
/// start drifts into a later period of the rate.
pub const START_WITHIN: Duration = Duration::from_millis(200);

/// One queue's flow control.
pub struct Flow {
    store: Arc<dyn KeyValue>,
    spec: KvSpec,
    pins: RwLock<Pins>,
    /// Whether any pin is set: without one, a call's limits are its message's, no lock taken.
    pinned: AtomicBool,
}

/// What the gate said.
#[derive(Debug)]
pub enum Gate {
    /// Start the call; give `Slot` back when it ends (`None`: no slot taken, only the rate).
    Go(Option<Slot>),
    /// Not yet: look again after this long.
    Wait(Duration),
}

/// A slot held by one call.
#[derive(Debug)]
pub struct Slot {
    key: String,
    id: String,
}

impl Flow {
    pub fn new(store: Arc<dyn KeyValue>, spec: KvSpec) -> Flow {
        Flow {
            store,
            spec,
            pins: RwLock::new(Pins::default()),
            pinned: AtomicBool::new(false),
        }
    }

    /// The limits of `function`: the operator's pin when there is one, else the message's.
    pub fn limits(&self, function: &str, from_message: Limits) -> Limits {
        if !self.pinned.load(Ordering::Relaxed) {
            return from_message;
        }
        let pins = self.pins.read().unwrap_or_else(|e| e.into_inner());
        pins.functions
            .get(function)
            .copied()
            .unwrap_or(from_message)
    }

    /// Follow the pins an operator set (`pins.rs`).
    pub fn set_pins(&self, pins: Pins) {
        let any = !pins.functions.is_empty() || !pins.keys.is_empty();
        *self.pins.write().unwrap_or_else(|e| e.into_inner()) = pins;
        self.pinned.store(any, Ordering::Relaxed);
    }

    /// The limits of flow key `key`: the operator's pin when there is one, else the message's.
    pub fn key_limits(&self, key: &str, from_message: Option<Limits>) -> Option<Limits> {
        if !self.pinned.load(Ordering::Relaxed) {
            return from_message;
        }
        let pins = self.pins.read().unwrap_or_else(|e| e.into_inner());
        pins.keys.get(key).copied().or(from_message)
    }

    /// Whether call `id` may start now under `limits`, kept in the bucket under `key` (a
    /// function's, [`key_of`], or a flow key's, [`key_of_flow_key`]); its slot lapses after
    /// `hold`. `now`: the time (unix µs), read after the state is, so that a slow read does not
    /// date the start back.
    pub async fn enter(
        &self,
        key: &str,
        limits: &Limits,
        id: &str,
        now: &(dyn Fn() -> u64 + Sync),
        hold: Duration,
    ) -> Result<Gate, BrokerError> {
        let key = key.to_string();
        let hold_us = u64::try_from(hold.as_micros()).unwrap_or(u64::MAX);
        for _ in 0..SWAP_TRIES {
            let (state, revision) = self.read(&key).await?;
            let now_us = now();
            let next = match state.decide(limits, now_us, id, hold_us) {
                Decision::Start(next) => next,
                Decision::Wait { until_us } => {
                    return Ok(Gate::Wait(Duration::from_micros(
                        until_us.saturating_sub(now_us),
                    )));
                }
            };
            let takes_slot = limits.max_concurrency.is_some();
            match self.swap(&key, &next, revision).await {
                Ok(()) => {
                    let slot = takes_slot.then(|| Slot {
                        key,
                        id: id.to_string(),
                    });
                    return self.in_time(slot, now_us, now()).await;
                }
                Err(BrokerError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Gate::Wait(Duration::from_micros(
            super::state::LOOK_AGAIN_US,
        )))
    }

    /// Go, when the call was let through no more than [`START_WITHIN`] ago (`let_at_us`); else
    /// give its slot back and look again at once.
    async fn in_time(
        &self,
        slot: Option<Slot>,
        let_at_us: u64,
        now_us: u64,
    ) -> Result<Gate, BrokerError> {
        let late = Duration::from_micros(now_us.saturating_sub(let_at_us));
        if late <= START_WITHIN {
            return Ok(Gate::Go(slot));
        }
        if let Some(slot) = slot {
            self.leave(slot).await?;
        }
        Ok(Gate::Wait(Duration::ZERO))
    }

    /// Give `slot` back. When NATS does not take it, the slot lapses on its own.
    pub async fn leave(&self, slot: Slot) -> Result<(), BrokerError> {
        for _ in 0..SWAP_TRIES {
            let (state, revision) = self.read(&slot.key).await?;
            let Some(next) = state.release(&slot.id) else {
                return Ok(());
            };
            match self.swap(&slot.key, &next, revision).await {
                Ok(()) => return Ok(()),
                Err(BrokerError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(BrokerError::Conflict { key: slot.key })
    }

    /// The state stored for `key` and its revision (`0`: none; an unreadable one reads as
    /// empty and is overwritten).
    async fn read(&self, key: &str) -> Result<(FlowState, u64), BrokerError> {
        match kv_lazy::entry(self.store.as_ref(), &self.spec.bucket, key).await? {
            Some((bytes, revision)) => {
                Ok((serde_json::from_slice(&bytes).unwrap_or_default(), revision))
            }
            None => Ok((FlowState::default(), 0)),
        }
    }

    async fn swap(&self, key: &str, state: &FlowState, revision: u64) -> Result<(), BrokerError> {
        let value = Bytes::from(serde_json::to_vec(state).unwrap_or_default());
        let store = self.store.as_ref();
        let swap = || store.kv_swap(&self.spec.bucket, key, value.clone(), revision);
        kv_lazy::creating(swap, || store.ensure_kv(&self.spec))
            .await
            .map(|_| ())
    }
}

/// The key of `function` (`name.namespace`) in the flow bucket: `fn.` and the name when it is
/// made of letters, digits, `-` and `_` around single dots, else `fnb64.` and its URL-safe
/// base64.
pub fn key_of(function: &str) -> String {
    bucket_key("fn", function)
}

/// The key of flow key `flow_key` in the flow bucket (`key.` or `keyb64.`, as [`key_of`]).
pub fn key_of_flow_key(flow_key: &str) -> String {
    bucket_key("key", flow_key)
}

/// The function a key of the flow bucket is for; `None` for other keys.
pub fn function_of(key: &str) -> Option<String> {
    named_by("fn", key)
}

/// The flow key a key of the flow bucket is for; `None` for other keys.
pub fn flow_key_of(key: &str) -> Option<String> {
    named_by("key", key)
}

fn bucket_key(kind: &str, name: &str) -> String {
    use base64::Engine;
    let plain = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if plain {
        format!("{kind}.{name}")
    } else {
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name);
        format!("{kind}b64.{encoded}")
    }
}

fn named_by(kind: &str, key: &str) -> Option<String> {
    use base64::Engine;
    let rest = key.strip_prefix(kind)?;
    if let Some(plain) = rest.strip_prefix('.') {
        return Some(plain.to_string());
    }
    let encoded = rest.strip_prefix("b64.")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::broker::memory::{MemoryBroker, MemoryLimits};
    use crate::clock::SystemClock;
    use crate::config::Storage;

    fn flow() -> Flow {
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(
            Arc::new(SystemClock),
            MemoryLimits::default(),
        ));
        let spec = KvSpec {
            bucket: "OF_q_flow".into(),
            ttl: Duration::ZERO,
            storage: Storage::Memory,
            replicas: 1,
        };
        Flow::new(broker, spec)
    }

    fn cap(n: u32) -> Limits {
        Limits {
            max_concurrency: Some(n),
            ..Limits::default()
        }
    }

    #[test]
    fn keys_round_trip_and_odd_names_are_encoded() {
        for f in [
            "echo.openfaas-fn",
            "a_b.ns",
            "x",
            "a..b",
            ".a",
            "a b.ns",
            "ü.ns",
        ] {
            let key = key_of(f);
            assert_eq!(function_of(&key).as_deref(), Some(f), "{key}");
            let k = key.as_bytes();
            assert!(
                k.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            );
            assert!(!key.ends_with('.') && !key.contains(".."), "{key}");
        }
        assert_eq!(key_of("echo.openfaas-fn"), "fn.echo.openfaas-fn");
        assert_eq!(function_of("limits"), None);
        assert_eq!(key_of_flow_key("tenant-1"), "key.tenant-1");
        assert_eq!(
            flow_key_of(&key_of_flow_key("a b/c")).as_deref(),
            Some("a b/c")
        );
        assert_eq!(function_of(&key_of_flow_key("x")), None, "kinds apart");
        assert_eq!(flow_key_of(&key_of("x")), None);
    }

    #[tokio::test]
    async fn slots_are_shared_through_the_store_and_given_back() {
        let flow = flow();
        let hold = Duration::from_secs(60);
        let Gate::Go(Some(first)) = flow
            .enter("f.ns", &cap(1), "a/1", &|| 0, hold)
            .await
            .unwrap()
        else {
            panic!("the first call starts with a slot");
        };
        let second = flow
            .enter("f.ns", &cap(1), "b/1", &|| 1, hold)
            .await
            .unwrap();
        assert!(
            matches!(second, Gate::Wait(d) if d > Duration::ZERO),
            "{second:?}"
        );
        let other = flow
            .enter("g.ns", &cap(1), "c/1", &|| 1, hold)
            .await
            .unwrap();
        assert!(
            matches!(other, Gate::Go(Some(_))),
            "another function has its own"
        );
        flow.leave(first).await.unwrap();
        let again = flow
            .enter("f.ns", &cap(1), "b/1", &|| 2, hold)
            .await
            .unwrap();
        assert!(matches!(again, Gate::Go(Some(_))), "{again:?}");
    }

    #[tokio::test]
    async fn a_call_let_through_too_late_gives_its_place_up() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let flow = flow();
        let hold = Duration::from_secs(60);
        // The clock jumps 300 ms between the read and the answer of the compare-and-set.
        let reads = AtomicU64::new(0);
        let stalled = || reads.fetch_add(1, Ordering::SeqCst) * 300_000;
        let late = flow
            .enter(&key_of("f.ns"), &cap(1), "a/1", &stalled, hold)
            .await;
        assert!(matches!(late, Ok(Gate::Wait(d)) if d.is_zero()), "{late:?}");
        let next = flow
            .enter(&key_of("f.ns"), &cap(1), "b/1", &|| 400_000, hold)
            .await;
        assert!(
            matches!(next, Ok(Gate::Go(Some(_)))),
            "a's slot was given back: {next:?}"
        );
    }

    #[tokio::test]
    async fn a_pin_wins_over_the_message() {
        let flow = flow();
        let mut pins = Pins::default();
        pins.functions.insert("f.ns".into(), cap(3));
        flow.set_pins(pins);
        assert_eq!(flow.limits("f.ns", cap(1)), cap(3));
        assert_eq!(flow.limits("g.ns", cap(1)), cap(1));
    }
}
