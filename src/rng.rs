//! The `Rng` port: randomness for retry jitter. Production seeds from the OS; the simulation
//! seeds from its run seed so the same seed replays the same delays.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

/// Uniform numbers in [0, 1).
pub trait Rng: Send + Sync + 'static {
    fn next_unit(&self) -> f64;
}

/// A `StdRng` behind a mutex.
pub struct SeededRng(Mutex<StdRng>);

impl SeededRng {
    pub fn from_os() -> SeededRng {
        SeededRng(Mutex::new(StdRng::from_os_rng()))
    }
    pub fn seeded(seed: u64) -> SeededRng {
        SeededRng(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Rng for SeededRng {
    fn next_unit(&self) -> f64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<f64>()
    }
}

/// Source of jitter for retry delays: values in `[0, 1)`.
///
/// Every [`rand::Rng`] is one (e.g. `rand::rngs::StdRng::seed_from_u64(7)`), and so is the
/// port through [`PortJitter`]. Values outside `[0, 1)` are tolerated by the retry policy: NaN
/// and negatives count as 0, values >= 1 as just below 1.
pub trait Jitter {
    /// The next value, uniformly distributed in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

impl<R: rand::Rng + ?Sized> Jitter for R {
    fn next_unit(&mut self) -> f64 {
        self.random::<f64>()
    }
}

/// The port as a [`Jitter`].
pub struct PortJitter<'a>(pub &'a dyn Rng);

impl Jitter for PortJitter<'_> {
    fn next_unit(&mut self) -> f64 {
        self.0.next_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_all_in_unit_interval() {
        let a = SeededRng::seeded(7);
        let b = SeededRng::seeded(7);
        let xs: Vec<f64> = (0..100).map(|_| a.next_unit()).collect();
        let ys: Vec<f64> = (0..100).map(|_| b.next_unit()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert_ne!(xs[0], SeededRng::seeded(8).next_unit());
    }
}
