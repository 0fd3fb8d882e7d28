//! queue-worker: a scale-out queue for invoking HTTP functions asynchronously on NATS
//! JetStream, compatible with the OpenFaaS JetStream queue-worker.
//!
//! The worker's decisions live in plain functions; I/O goes through four ports:
//! [`broker::Broker`], [`invoke::Invoker`], [`clock::Clock`] (and, with retries, an RNG).
//! [`run`] wires a worker (plus optionally the ingress) to ports and listeners it is given: no
//! globals, so tests and the simulation run several in one process.

pub mod broker;
#[cfg(feature = "buggify")]
pub mod buggify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ingress;
pub mod invoke;
pub mod keep_trying;
pub mod lifecycle;
pub mod rng;
pub mod telemetry;
pub mod wire;
pub mod worker;

pub use lifecycle::{Backend, IngressServer, Listeners, Ports, run, serve};

/// The crate version (`User-Agent: queue-worker/<version>`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
