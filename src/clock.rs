//! The `Clock` port: wall-clock time. Sleeps and timeouts use `tokio::time`, which the
//! simulation and paused-time tests control; the wall clock comes from here so they can control
//! it too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;

    /// Nanoseconds since the Unix epoch (the `X-Start-Time` format).
    fn unix_nanos(&self) -> u128 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
