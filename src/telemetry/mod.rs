//! Metrics, logs, and the health/metrics HTTP endpoint.

pub mod logging;
pub mod metrics;
pub mod redact;
pub mod server;
