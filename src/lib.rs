//! queue-worker: a scale-out queue for invoking HTTP functions asynchronously on NATS
//! JetStream, compatible with the OpenFaaS JetStream queue-worker.
//!
//! # Layout
//!
//! `docs/architecture.md` is the map (what each folder owns and must not do, the invariants,
//! one delivery followed end to end). In short:
//!
//! | module | holds |
//! |---|---|
//! | [`worker`] | the worker: [`worker::Worker`] picks static or function mode; one delivery goes read → plan (pure, `worker/plan.rs`) → carry out |
//! | [`broker`] | the broker port as small capabilities ([`broker::Publish`], [`broker::Consume`], [`broker::Admin`], [`broker::KeyValue`], [`broker::Objects`]) and two brokers: [`broker::jetstream`] (NATS) and [`broker::memory`] (in process: `dev` and the simulation) |
//! | [`invoke`] | the HTTP port ([`invoke::Invoker`]): calls to functions and callbacks, and building those requests |
//! | [`wire`] | the OpenFaaS `QueueRequest` as Go writes it, and the names a valid one carries |
//! | [`ingress`] | `POST /async-function/…`: a request becomes a stored message |
//! | [`console`] | the web console at `/ui`: pages drawn on the server from the operator's reads; its buttons call the documented API |
//! | [`config`] | every variable, validated at once |
//! | [`security`] | who may use the ingress, where callbacks may go, signed callbacks, secret files |
//! | [`flow`] | flow control: a function's `max_concurrency` and `rate` across every replica, kept in a key-value bucket |
//! | [`claim_check`] | request bodies over `payload_offload_bytes`: stored as objects, the message carries their name |
//! | [`status`] | call status in a key-value bucket: the record, and the writer that keeps it off the hot path |
//! | [`telemetry`] | metrics, logs, `/metrics`, `/healthz`, `/readyz` |
//! | [`trace`] | W3C trace context through the queue, and spans exported with OTLP when configured |
//! | [`lifecycle`] | [`serve`] and [`run`]: the process from start to drained stop |
//! | [`http_server`], [`fds`] | serving HTTP within limits; the file descriptor budget |
//! | [`cli`] | the command line: `run`, `dev`, `publish` |
//! | [`clock`], [`rng`] | the time and randomness ports (simulated in the simulation) |
//!
//! # Public surface
//!
//! The binary calls [`cli::main`]. Everything else public is for the simulation (`sim/`), the
//! integration suites and the benchmarks: [`run`] with [`Ports`] runs a worker (and an
//! ingress) on any broker, HTTP client, clock and RNG, with no globals, so several run in one
//! process; [`serve`] is what `run` and `dev` start. The modules that only the worker uses
//! inside (`worker::plan`, `worker::pipeline`, the modes, leases, shutdown) are not public.

pub mod admin;
pub mod broker;
#[cfg(feature = "buggify")]
pub mod buggify;
pub mod claim_check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod fds;
pub mod flow;
pub mod http_server;
pub mod ingress;
pub mod invoke;
mod keep_trying;
pub mod lifecycle;
pub mod pause;
pub mod rng;
pub mod security;
pub mod status;
pub mod telemetry;
pub mod trace;
pub mod wire;
pub mod worker;

pub use lifecycle::{Backend, IngressServer, Listeners, run, serve};
pub use worker::Ports;

/// The crate version (`User-Agent: queue-worker/<version>`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
