//! A worker's hold on a delivery: its lease, as far as the worker can know it.
//!
//! JetStream gives a delivery `ack_wait` to be settled; a progress ack (`+WPI`) restarts that
//! time, but only while it has not run out: once it has, the message is redelivered whatever
//! comes later (the conformance suite's `progress_after_expiry_does_not_stop_redelivery`).
//! Settlements name the message, not the delivery, so a late `nak` from a worker whose lease
//! ran out reschedules the message while another worker runs it, and it runs a third time
//! (`stale_nak_reschedules_the_current_delivery`; found by the simulation, consumer-expiry seed
//! 430). The worker therefore keeps track of its lease and sends no `nak` once it may have
//! lost it: the message comes back anyway, as soon as the server's lease runs out.
//!
//! The worker's view is conservative: the server starts a lease when it sends the delivery
//! (before the worker has it) and renews it when a progress ack arrives (after the worker sent
//! it), so the lease is counted from receipt, and from each confirmed progress ack's sending,
//! minus a margin for the way there. Pure bookkeeping: the caller reads the clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::{Acker, Delivery};

/// The most a lease is shortened for the time a delivery spends on its way to the worker.
const MAX_MARGIN: Duration = Duration::from_secs(2);

/// How long the worker may consider a delivery its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    ack_wait: Duration,
    until: Instant,
    /// A renewal came too late: the server has (or will have) redelivered the message.
    lapsed: bool,
}

impl Lease {
    /// The lease of a delivery received at `received`, on a consumer with `ack_wait`.
    pub fn new(received: Instant, ack_wait: Duration) -> Lease {
        debug_assert!(
            !ack_wait.is_zero(),
            "ack_wait is validated to be at least 100ms"
        );
        Lease {
            ack_wait,
            until: received + usable(ack_wait),
            lapsed: false,
        }
    }

    /// A progress ack sent at `sent` was confirmed by the broker. It renews the lease only if
    /// it was sent while the lease still held.
    pub fn renewed(&mut self, sent: Instant) {
        if self.lapsed || sent >= self.until {
            self.lapsed = true;
            return;
        }
        self.until = self.until.max(sent + usable(self.ack_wait));
    }

    /// Whether the delivery is still certainly this worker's at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        !self.lapsed && now < self.until
    }

    /// Whether the delivery is still certainly this worker's for `d` after `now`.
    pub fn holds_for(&self, now: Instant, d: Duration) -> bool {
        self.holds(now) && now + d < self.until
    }

    /// When the lease runs out unless renewed.
    pub fn until(&self) -> Instant {
        self.until
    }
}

/// A delivery the worker holds, with its lease.
pub struct Held {
    pub delivery: Delivery,
    pub lease: Lease,
    /// Times this delivery's call was refused with back-pressure this worker caused and filed
    /// again without costing an attempt (see `plan::after_call`).
    pub pushed_back: u32,
    /// It waited while its function (or queue) was paused: an operator may have purged its
    /// message meanwhile, which is looked up before it runs.
    pub paused: bool,
}

impl Held {
    /// A delivery just received from a consumer with `ack_wait`.
    pub fn received(delivery: Delivery, ack_wait: Duration) -> Held {
        Held {
            delivery,
            lease: Lease::new(Instant::now(), ack_wait),
            pushed_back: 0,
            paused: false,
        }
    }

    /// Renew the lease unless it holds long enough for an invocation's own progress acks to
    /// take over (their first comes `ack_wait / 2` after the start, a retry a tenth later).
    pub async fn renew_before_running(&mut self, ack_wait: Duration) {
        let needed = progress_period(ack_wait) + progress_retry(ack_wait);
        if !self.lease.holds_for(Instant::now(), needed) {
            self.renew(ack_wait).await;
        }
    }

    /// Send a progress ack; a confirmed one renews the lease. Returns whether it was confirmed.
    pub async fn renew(&mut self, ack_wait: Duration) -> bool {
        renew(&*self.delivery.acker, &mut self.lease, ack_wait).await
    }

    /// Give the message back for another worker to take now (`nak`, no delay), unless the
    /// lease may have run out: then it is another worker's already, or about to be.
    pub async fn give_back(self) {
        if !self.lease.holds(Instant::now()) {
            return;
        }
        if let Err(e) = self.delivery.acker.nak(None).await {
            tracing::warn!(error = %e, "Could not give back a message; it is redelivered after ack_wait");
        }
    }
}

/// How soon a failed progress ack is tried again (and how long one may take): a tenth of
/// `ack_wait`, so one lost ack (a broker restart, a dropped connection) does not lose the lease.
pub fn progress_retry(ack_wait: Duration) -> Duration {
    (ack_wait / 10).max(Duration::from_millis(50))
}

/// Send one progress ack; a confirmed one renews `lease`. Returns whether it was confirmed.
/// Nothing is sent once the lease may have run out: it would take nothing back, and it would
/// restart the ack wait of the message's current delivery, cutting that worker's nak delay
/// short (the simulation found it: consumer-expiry seed 5101).
pub async fn renew(acker: &dyn Acker, lease: &mut Lease, ack_wait: Duration) -> bool {
    let sent = Instant::now();
    if !lease.holds(sent) {
        return false;
    }
    match tokio::time::timeout(progress_retry(ack_wait), acker.progress()).await {
        Ok(Ok(())) => {
            lease.renewed(sent);
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Progress ack failed");
            false
        }
        Err(_) => {
            tracing::debug!("Progress ack not confirmed in time");
            false
        }
    }
}

/// How often a delivery being worked on gets a progress ack: twice per `ack_wait`.
pub fn progress_period(ack_wait: Duration) -> Duration {
    (ack_wait / 2).max(Duration::from_millis(50))
}

/// Run `work`, keeping `lease` with a progress ack every `ack_wait / 2` (sooner after one that
/// was not confirmed; none once the lease may be gone). `lost` is set as soon as the lease may
/// have run out, so that `work` does not start what is another worker's now.
pub async fn keep<T, F: Future<Output = T>>(
    acker: &dyn Acker,
    lease: &mut Lease,
    ack_wait: Duration,
    lost: &AtomicBool,
    work: F,
) -> T {
    let period = progress_period(ack_wait);
    let ticker = async {
        let mut next = Instant::now() + period;
        loop {
            // The next progress ack, or the lease's end if that comes first (acks failed).
            tokio::time::sleep_until(next.min(lease.until())).await;
            if !lease.holds(Instant::now()) {
                // Lost: nothing more to renew (see `renew`).
                lost.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
            if Instant::now() < next {
                continue;
            }
            #[cfg(feature = "buggify")]
            if crate::buggify::on(crate::buggify::Bug::DropProgressAcks) {
                next += period;
                continue;
            }
            let sent = Instant::now();
            next = if renew(acker, lease, ack_wait).await {
                sent + period
            } else {
                Instant::now() + progress_retry(ack_wait)
            };
        }
    };
    tokio::select! {
        biased;
        s = work => s,
        never = ticker => never,
    }
}

/// `ack_wait` less the margin for the way there (a tenth of it, at most [`MAX_MARGIN`]).
fn usable(ack_wait: Duration) -> Duration {
    ack_wait - (ack_wait / 10).min(MAX_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn counts_from_receipt_less_a_margin() {
        let t0 = Instant::now();
        let l = Lease::new(t0, WAIT);
        assert_eq!(l.until(), t0 + secs(9.0));
        assert!(l.holds(t0 + secs(8.9)));
        assert!(!l.holds(t0 + secs(9.0)));
        // The margin is at most 2 s.
        let long = Lease::new(t0, Duration::from_secs(60));
        assert_eq!(long.until(), t0 + secs(58.0));
    }

    #[test]
    fn a_timely_progress_ack_renews_from_when_it_was_sent() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, WAIT);
        l.renewed(t0 + secs(5.0));
        assert_eq!(l.until(), t0 + secs(14.0));
        assert!(l.holds(t0 + secs(13.9)));
        // An older confirmation arriving late never shortens it.
        l.renewed(t0 + secs(4.0));
        assert_eq!(l.until(), t0 + secs(14.0));
    }

    /// Progress acks that are confirmed or not, as told.
    struct Acks(bool);

    #[async_trait::async_trait]
    impl Acker for Acks {
        async fn ack(&self) -> Result<(), crate::broker::BrokerError> {
            Ok(())
        }
        async fn nak(&self, _: Option<Duration>) -> Result<(), crate::broker::BrokerError> {
            Ok(())
        }
        async fn term(&self) -> Result<(), crate::broker::BrokerError> {
            Ok(())
        }
        async fn progress(&self) -> Result<(), crate::broker::BrokerError> {
            match self.0 {
                true => Ok(()),
                false => Err(crate::broker::BrokerError::Disconnected),
            }
        }
    }

    /// Whether `keep` said the lease was lost `after` into work that lasts 30 s.
    async fn lost_after(confirmed: bool, after: Duration) -> bool {
        let mut lease = Lease::new(Instant::now(), WAIT);
        let lost = AtomicBool::new(false);
        let work = async {
            tokio::time::sleep(after).await;
            let seen = lost.load(Ordering::Relaxed);
            tokio::time::sleep(secs(30.0) - after).await;
            seen
        };
        keep(&Acks(confirmed), &mut lease, WAIT, &lost, work).await
    }

    #[tokio::test(start_paused = true)]
    async fn work_learns_the_lease_is_lost_as_soon_as_it_runs_out() {
        // Received at 0, never renewed: it holds until 9 s (10 s less the margin).
        assert!(!lost_after(false, secs(8.9)).await);
        assert!(lost_after(false, secs(9.01)).await);
        // Renewed every 5 s: never lost.
        assert!(!lost_after(true, secs(29.0)).await);
    }

    #[test]
    fn a_progress_ack_sent_after_the_lease_ran_out_does_not_bring_it_back() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, WAIT);
        l.renewed(t0 + secs(9.5));
        assert!(!l.holds(t0 + secs(9.6)));
        // Nor does any later one: the server has queued the message for redelivery.
        l.renewed(t0 + secs(9.7));
        assert!(!l.holds(t0 + secs(9.8)));
        assert!(!l.holds(t0));
    }
}
