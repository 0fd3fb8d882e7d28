//! Flow control: caps on a function's calls that hold across every worker replica —
//! `max_concurrency` (calls in flight) and `rate` with `burst` (calls started per period).
//!
//! - `limits.rs`: the limits, from a message's annotations (`com.openfaas.queue.*`);
//! - `pins.rs`: limits an operator pinned, which win over the message's;
//! - `state.rs` (pure): a function's shared state and whether one more call may start;
//! - `gate.rs`: that state in the queue's flow bucket (`OF_<queue>_flow`), changed with
//!   compare-and-set when a limited call starts and when it ends.
//!
//! The worker asks the gate right before it invokes a limited function; a call the gate holds
//! back waits in the worker's ready queue, leased, costing no attempt (`src/worker/ready/`).
//! The README's "Flow control" says how exact each limit is and what it costs.

pub mod gate;
pub mod limits;
pub mod pins;
pub mod state;

use crate::broker::KvSpec;
use crate::config::Config;

pub use gate::{Flow, Gate, Slot};
pub use limits::{Limits, Rate};

/// The flow bucket of queue `queue`.
pub fn bucket(queue: &str) -> String {
    format!("OF_{queue}_flow")
}

/// The bucket's spec: entries never expire (slots lapse by the time they carry).
pub fn spec(config: &Config, queue: &str) -> KvSpec {
    KvSpec::kept(config, bucket(queue))
}
