//! The retry budget: retries per function limited to a fraction of recent first attempts.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Retries allowed per function and window whatever the traffic, so a function with little
/// traffic (or whose first attempts ran in another process) can still retry.
pub const MIN_RETRIES_PER_WINDOW: u64 = 10;

/// Time buckets per window.
pub const BUDGET_BUCKETS: usize = 10;

/// A suggested budget window.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// A suggested bound on the functions tracked by a budget.
pub const DEFAULT_BUDGET_FUNCTIONS: usize = 10_000;

/// Per-function retry budget: retries are limited to a fraction of recent first attempts, so a
/// failing downstream gets back-pressure, not a retry storm (`retry_budget_ratio`; README: "Retries").
///
/// # Semantics
///
/// For each function, over a sliding window, the retries allowed are
/// `max(MIN_RETRIES_PER_WINDOW, floor(ratio × first attempts in the window))`.
///
/// - With the default ratio 0.2 and 100 first attempts in the window, 20 retries are allowed;
///   with 5 first attempts, 10 (the floor, [`MIN_RETRIES_PER_WINDOW`]).
/// - Ratio 0 allows only the floor: 10 retries per function and window, whatever the traffic.
///   A NaN or negative ratio counts as 0; a huge one means "practically unlimited".
/// - Only granted retries are counted ([`Self::try_retry`] returning true). A refused retry is
///   not a retry here: the caller naks it with `max_wait` instead of the computed delay, and
///   asks again when the message comes back.
/// - The window is made of [`BUDGET_BUCKETS`] time buckets of `window / 10` each; a count leaves
///   the window when its bucket does, so the window effectively spans between 90% and 100% of
///   `window`.
/// - Memory is bounded: at most `max_functions` functions are tracked (at least 1); a new one
///   evicts the least recently used (by either method), whose counts are forgotten.
/// - Time comes from the `now` passed in; a `now` earlier than one seen before counts as that
///   latest time (callers may read the clock before taking the lock).
///
/// The budget is per process (each worker replica has its own). Not synchronised: callers wrap
/// it in a `Mutex`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    bucket_nanos: u128,
    max_functions: usize,
    origin: Option<Instant>,
    latest_epoch: u64,
    tick: u64,
    pub(super) functions: HashMap<String, FunctionBudget>,
    /// Functions by last use (tick), oldest first.
    pub(super) lru: BTreeMap<u64, String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-width interval since the origin these counts belong to.
    epoch: u64,
    first_attempts: u64,
    retries: u64,
}

#[derive(Debug)]
pub(super) struct FunctionBudget {
    buckets: [Bucket; BUDGET_BUCKETS],
    pub(super) tick: u64,
}

impl FunctionBudget {
    /// The current bucket, cleared if it held counts of an older interval.
    fn bucket(&mut self, epoch: u64) -> &mut Bucket {
        let b = &mut self.buckets[(epoch % BUDGET_BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }

    /// (first attempts, retries) in the window ending in `epoch`.
    fn totals(&self, epoch: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUDGET_BUCKETS as u64)
            .fold((0u64, 0u64), |(f, r), b| {
                (
                    f.saturating_add(b.first_attempts),
                    r.saturating_add(b.retries),
                )
            })
    }
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per first attempt (plus the floor) over `window`,
    /// tracking at most `max_functions` functions. A zero window counts as 10ns.
    pub fn new(ratio: f64, window: Duration, max_functions: usize) -> RetryBudget {
        let ratio = if ratio.is_nan() || ratio < 0.0 {
            0.0
        } else {
            ratio
        };
        RetryBudget {
            ratio,
            bucket_nanos: (window.as_nanos() / BUDGET_BUCKETS as u128).max(1),
            max_functions: max_functions.max(1),
            origin: None,
            latest_epoch: 0,
            tick: 0,
            functions: HashMap::new(),
            lru: BTreeMap::new(),
        }
    }

    /// Counts a first attempt (delivery 1) of `function` at `now`.
    pub fn record_first_attempt(&mut self, function: &str, now: Instant) {
        let epoch = self.epoch(now);
        let b = self.touch(function).bucket(epoch);
        b.first_attempts = b.first_attempts.saturating_add(1);
    }

    /// True (and counts the retry) when `function` may retry now; false when over budget.
    pub fn try_retry(&mut self, function: &str, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let ratio = self.ratio;
        let entry = self.touch(function);
        let (first_attempts, retries) = entry.totals(epoch);
        // Float-to-int casts saturate (and a huge ratio saturates to u64::MAX).
        let allowed = MIN_RETRIES_PER_WINDOW.max((ratio * first_attempts as f64).floor() as u64);
        if retries >= allowed {
            return false;
        }
        let b = entry.bucket(epoch);
        b.retries = b.retries.saturating_add(1);
        debug_assert!(
            entry.totals(epoch).1 <= allowed,
            "granted retries stay within the budget"
        );
        true
    }

    /// How many functions are tracked (at most `max_functions`).
    pub fn tracked_functions(&self) -> usize {
        self.functions.len()
    }

    /// The bucket interval of `now`, never earlier than one seen before.
    fn epoch(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        let epoch = u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX);
        self.latest_epoch = self.latest_epoch.max(epoch);
        self.latest_epoch
    }

    /// The budget of `function`, marked most recently used; created (evicting the least
    /// recently used function when full) if new.
    fn touch(&mut self, function: &str) -> &mut FunctionBudget {
        // Already the most recently used (the common case: one busy function): the order
        // stands as it is, and the name is compared with the newest in the order instead of
        // being hashed once more.
        let most_recent = self
            .lru
            .last_key_value()
            .is_some_and(|(_, name)| name == function);
        if !most_recent {
            self.mark_used(function);
        }
        self.functions
            .get_mut(function)
            .expect("the function was just looked up or inserted")
    }

    /// Moves `function` to the newest end of the order, tracking it (evicting the least
    /// recently used function when full) if new.
    fn mark_used(&mut self, function: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.functions.get_mut(function) {
            let name = self
                .lru
                .remove(&entry.tick)
                .unwrap_or_else(|| function.to_owned());
            entry.tick = tick;
            self.lru.insert(tick, name);
        } else {
            while self.functions.len() >= self.max_functions {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.functions.remove(&oldest);
            }
            self.functions.insert(
                function.to_owned(),
                FunctionBudget {
                    buckets: [Bucket::default(); BUDGET_BUCKETS],
                    tick,
                },
            );
            self.lru.insert(tick, function.to_owned());
        }
    }
}
