//! Invariants, checked over the recorded history of a run.
//!
//! - **terminal**: every accepted call reaches a terminal state (removed from the work queue by
//!   an ack after a successful invocation, or by a term after its dead letter was stored),
//!   except calls lost to a broker restart with memory storage (documented, counted);
//! - **exactly one**: no call has two outcomes (a success and a dead letter, two dead letters,
//!   callbacks from two invocations) unless a fault broke its lease (at-least-once duplicates,
//!   counted and bounded);
//! - **lease**: a message is redelivered while its holder has not given it back only when a
//!   fault (crash, partition, broker restart) hit that holder: progress acks keep slow
//!   invocations' leases alive;
//! - **no invocation after the terminal state**, except those duplicates;
//! - **attempts ≤ max**: a retry (nak with a delay after a retryable failure) is only decided on
//!   an attempt below `max_retry_attempts`; only retryable statuses are retried;
//! - **delays within policy**: each retry delay is what the policy allows for that attempt and
//!   answer (backoff and jitter, `Retry-After` clamped, or the budget's maximum wait), and the
//!   broker does not redeliver before it;
//! - **in-flight ≤ max_inflight** per worker;
//! - **retry budget**: retries granted below the maximum wait stay within the budget;
//! - **callbacks**: at most `callback_retries + 1` posts per invocation, none after one was
//!   accepted, and (when the receiver had no outage) every finished call with a callback URL
//!   got one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use queue_worker::config::Backoff;

use crate::history::{Ev, FaultKind, Record, SettleKind, host_of};
use crate::plan::{Fault, RunConfig};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: &'static str,
    pub call: String,
    pub at: Duration,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] t={:.3}s call={} {}",
            self.rule,
            self.at.as_secs_f64(),
            self.call,
            self.detail
        )
    }
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub accepted: usize,
    pub succeeded: usize,
    pub dead_lettered: BTreeMap<String, usize>,
    pub lost: usize,
    pub invocations: usize,
    pub retries: usize,
    pub budget_denied: usize,
    /// Redeliveries while the holder still had the message, each explained by a fault.
    pub lease_losses: usize,
    /// Bound on lease losses from the faults that happened.
    pub lease_loss_bound: usize,
    pub duplicate_invocations: usize,
    pub max_inflight_seen: usize,
    pub faults: usize,
    pub crashes_mid_invocation: usize,
    pub callbacks: usize,
    pub callbacks_refused: usize,
    pub consumer_deletes: usize,
    pub reconnects: usize,
}

/// The verdict on a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

#[derive(Debug, Clone)]
struct FaultSpan {
    kind: FaultKind,
    target: String,
    from: Duration,
    to: Duration,
}

fn retryable(cfg: &RunConfig, status: u16) -> bool {
    cfg.worker_config().retry_http_codes.contains(&status)
}

fn pow_delay(cfg: &RunConfig, attempt: u64) -> Duration {
    let mut d = cfg.initial_retry_wait;
    for _ in 1..attempt.min(64) {
        d = d.saturating_mul(2);
        if d >= cfg.max_retry_wait {
            break;
        }
    }
    d.min(cfg.max_retry_wait)
}

/// Whether `d` is a delay the policy allows after attempt `n` answered `status`.
fn delay_allowed(
    cfg: &RunConfig,
    n: u64,
    status: u16,
    retry_after: Option<&str>,
    d: Duration,
) -> bool {
    // The budget, when spent, sends the retry to the maximum wait.
    if d == cfg.max_retry_wait {
        return true;
    }
    if matches!(status, 429 | 503)
        && let Some(ra) = retry_after.and_then(|s| s.trim().parse::<u64>().ok())
    {
        let want = Duration::from_secs(ra)
            .max(cfg.initial_retry_wait)
            .min(cfg.max_retry_wait);
        return d == want;
    }
    let base = pow_delay(cfg, n);
    let floor = base.min(Duration::from_millis(1));
    match cfg.backoff {
        Backoff::Exponential => d == base,
        Backoff::Full => d >= floor && d <= base,
        Backoff::Equal => d >= (base / 2).max(floor) && d <= base,
    }
}

/// Check every invariant over `records`.
pub fn check(cfg: &RunConfig, records: &[Record]) -> Report {
    let mut v: Vec<Violation> = Vec::new();
    let mut st = Stats::default();
    let mut violation = |rule: &'static str, call: &str, at: Duration, detail: String| {
        v.push(Violation {
            rule,
            call: call.to_string(),
            at,
            detail,
        });
    };

    // ---- faults as spans ----
    let mut spans: Vec<FaultSpan> = Vec::new();
    let mut open: BTreeMap<(FaultKind, String), Duration> = BTreeMap::new();
    for r in records {
        if let Ev::Fault {
            kind,
            target,
            start,
        } = &r.ev
        {
            if *start {
                st.faults += 1;
                open.insert((*kind, target.clone()), r.at);
            } else if let Some(from) = open.remove(&(*kind, target.clone())) {
                spans.push(FaultSpan {
                    kind: *kind,
                    target: target.clone(),
                    from,
                    to: r.at,
                });
            }
        }
    }
    for ((kind, target), from) in open {
        spans.push(FaultSpan {
            kind,
            target,
            from,
            to: Duration::MAX,
        });
    }
    // A fault explains a lost lease of `holder` between `a` and `b`. A partition is only
    // noticed by the connection's read deadline, a crash drops in-flight acks: allow a little.
    let excused = |holder: &str, a: Duration, b: Duration| -> bool {
        let host = host_of(holder);
        spans.iter().any(|s| {
            let hits = match s.kind {
                FaultKind::Crash | FaultKind::Partition => s.target == host,
                FaultKind::BrokerRestart => true,
                FaultKind::ReceiverDown => false,
            };
            hits && s.from <= b && s.to.saturating_add(Duration::from_secs(5)) >= a
        })
    };
    // Lease losses a fault can explain: each hit worker held at most its slots plus what it
    // pulled ahead (and, in function mode, one ready delivery per function).
    let per_worker = cfg.max_inflight * 2 + cfg.calls.len().min(64);
    st.lease_loss_bound = spans
        .iter()
        .map(|s| match s.kind {
            FaultKind::Crash | FaultKind::Partition => per_worker,
            FaultKind::BrokerRestart => per_worker * cfg.workers,
            FaultKind::ReceiverDown => 0,
        })
        .sum();

    // ---- index the history per call ----
    #[derive(Default)]
    struct CallLog {
        accepted: Option<Duration>,
        sdeliver: Vec<(Duration, u64, String)>,
        ssettle: Vec<(Duration, u64, SettleKind, String, bool)>,
        dead: Vec<(Duration, String, bool)>,
        lost: bool,
        /// Worker-side: (time, worker, event)
        w: Vec<(Duration, String, WEv)>,
        callbacks: Vec<(Duration, String, String, String, u16)>,
    }
    #[derive(Debug, Clone)]
    /// Worker-side events, each with the delivery (count) it belongs to: one worker may hold
    /// two deliveries of a call at once (its lease was lost and the message came back to it).
    enum WEv {
        Deliver(u64),
        Start(u64),
        End(u64, u16, Option<String>, bool),
        Settle(u64, SettleKind),
        DeadLetter(u64, bool),
    }
    let mut calls: BTreeMap<String, CallLog> = BTreeMap::new();
    let mut inflight: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        match &r.ev {
            Ev::Accepted { call } => {
                let c = calls.entry(call.clone()).or_default();
                c.accepted.get_or_insert(r.at);
            }
            Ev::SDeliver {
                call,
                delivered,
                to,
                ..
            } => {
                calls
                    .entry(call.clone())
                    .or_default()
                    .sdeliver
                    .push((r.at, *delivered, to.clone()))
            }
            Ev::SSettle {
                call,
                delivered,
                kind,
                from,
                removed,
            } => calls.entry(call.clone()).or_default().ssettle.push((
                r.at,
                *delivered,
                *kind,
                from.clone(),
                *removed,
            )),
            Ev::SDeadLetter {
                call,
                reason,
                stored,
            } => calls
                .entry(call.clone())
                .or_default()
                .dead
                .push((r.at, reason.clone(), *stored)),
            Ev::SLost { call } => calls.entry(call.clone()).or_default().lost = true,
            Ev::SConn { up: true, .. } => st.reconnects += 1,
            Ev::WDeliver {
                worker,
                call,
                delivered,
            } => calls.entry(call.clone()).or_default().w.push((
                r.at,
                worker.clone(),
                WEv::Deliver(*delivered),
            )),
            Ev::InvokeStart {
                worker,
                call,
                delivered,
            } => {
                st.invocations += 1;
                let n = inflight.entry(worker.clone()).or_default();
                *n += 1;
                st.max_inflight_seen = st.max_inflight_seen.max(*n);
                if *n > cfg.max_inflight {
                    violation(
                        "inflight",
                        call,
                        r.at,
                        format!(
                            "{worker} has {n} invocations in flight, max_inflight is {}",
                            cfg.max_inflight
                        ),
                    );
                }
                calls.entry(call.clone()).or_default().w.push((
                    r.at,
                    worker.clone(),
                    WEv::Start(*delivered),
                ));
            }
            Ev::InvokeEnd {
                worker,
                call,
                delivered,
                status,
                retry_after,
                aborted,
                ..
            } => {
                if let Some(n) = inflight.get_mut(worker) {
                    *n = n.saturating_sub(1);
                }
                if *aborted {
                    st.crashes_mid_invocation += 1;
                }
                calls.entry(call.clone()).or_default().w.push((
                    r.at,
                    worker.clone(),
                    WEv::End(*delivered, *status, retry_after.clone(), *aborted),
                ));
            }
            Ev::WSettle {
                worker,
                call,
                delivered,
                kind,
                ..
            } => calls.entry(call.clone()).or_default().w.push((
                r.at,
                worker.clone(),
                WEv::Settle(*delivered, *kind),
            )),
            Ev::WDeadLetter {
                worker,
                call,
                delivered,
                ok,
            } => calls.entry(call.clone()).or_default().w.push((
                r.at,
                worker.clone(),
                WEv::DeadLetter(*delivered, *ok),
            )),
            Ev::CbRecv {
                call,
                from,
                function_status,
                retry,
                answered,
            } => {
                st.callbacks += 1;
                if *answered >= 300 {
                    st.callbacks_refused += 1;
                }
                calls.entry(call.clone()).or_default().callbacks.push((
                    r.at,
                    from.clone(),
                    retry.clone(),
                    function_status.clone(),
                    *answered,
                ))
            }
            _ => {}
        }
    }

    // Retry-budget bookkeeping: per (worker, function): first attempts and definite grants.
    let mut first_attempts: BTreeMap<(String, String), Vec<Duration>> = BTreeMap::new();
    let mut grants: BTreeMap<(String, String), Vec<(Duration, String)>> = BTreeMap::new();
    let receiver_faults = cfg
        .faults
        .iter()
        .any(|f| matches!(f, Fault::ReceiverDown { .. } | Fault::ReceiverErrors { .. }));

    for (id, c) in &calls {
        let plan = cfg.call(id);
        let function = plan.map(|p| p.function.clone()).unwrap_or_default();

        // ---- lease: redeliveries while the holder still had the message ----
        let mut dup_deliveries: BTreeSet<(String, u64)> = BTreeSet::new();
        for w in c.sdeliver.windows(2) {
            let (t0, n0, holder) = &w[0];
            let (t1, _, next) = &w[1];
            let given_back = c.ssettle.iter().any(|(t, n, k, from, _)| {
                t >= t0 && t <= t1 && n == n0 && from == holder && matches!(k, SettleKind::Nak(_))
            });
            if given_back {
                continue;
            }
            // A delivery the holder never received (a pull request it had abandoned, or lost
            // on the way) is redelivered after ack_wait: at-least-once, not a broken lease.
            let received = c.w.iter().any(|(t, w, e)| {
                t >= t0 && t <= t1 && w == holder && matches!(e, WEv::Deliver(n) if n == n0)
            });
            if !received {
                continue;
            }
            if excused(holder, *t0, *t1) {
                st.lease_losses += 1;
                dup_deliveries.insert((holder.clone(), *n0));
                dup_deliveries.insert((next.clone(), w[1].1));
            } else {
                violation(
                    "lease",
                    id,
                    *t1,
                    format!(
                        "delivery {n0} to {holder} at {:.3}s was redelivered to {next} without \
                         being given back and with no fault hitting {holder}: its lease expired \
                         while it was alive (progress acks?)",
                        t0.as_secs_f64()
                    ),
                );
            }
        }

        // What each (worker, delivery) did last.
        let mut last_end: BTreeMap<(String, u64), (Duration, u16, Option<String>)> =
            BTreeMap::new();
        let mut dl_failed: BTreeMap<(String, u64), Duration> = BTreeMap::new();
        let mut starts: Vec<(Duration, String, u64)> = Vec::new();
        for (t, worker, e) in &c.w {
            match e {
                WEv::Deliver(n) => {
                    // A recreated consumer counts from 1 again: a new delivery `n` starts afresh.
                    last_end.remove(&(worker.clone(), *n));
                    dl_failed.remove(&(worker.clone(), *n));
                }
                WEv::Start(n) => {
                    starts.push((*t, worker.clone(), *n));
                    if *n == 1 {
                        first_attempts
                            .entry((worker.clone(), function.clone()))
                            .or_default()
                            .push(*t);
                    }
                }
                WEv::End(n, status, ra, aborted) => {
                    if !aborted {
                        last_end.insert((worker.clone(), *n), (*t, *status, ra.clone()));
                    }
                }
                WEv::DeadLetter(n, ok) => {
                    if !ok {
                        dl_failed.insert((worker.clone(), *n), *t);
                    }
                }
                WEv::Settle(n, SettleKind::Nak(Some(d))) => {
                    let key = (worker.clone(), *n);
                    let Some((te, status, ra)) = last_end.get(&key).cloned() else {
                        continue; // a dead letter that could not be stored yet
                    };
                    if dl_failed.get(&key).is_some_and(|tf| *tf >= te) {
                        continue;
                    }
                    st.retries += 1;
                    if u64::from(cfg.max_attempts) <= *n {
                        violation(
                            "attempts",
                            id,
                            *t,
                            format!(
                                "{worker} retried after attempt {n} (status {status}); \
                                 max_retry_attempts is {}",
                                cfg.max_attempts
                            ),
                        );
                    }
                    if !retryable(cfg, status) {
                        violation(
                            "attempts",
                            id,
                            *t,
                            format!("{worker} retried status {status}, which is not retryable"),
                        );
                    }
                    if !delay_allowed(cfg, *n, status, ra.as_deref(), *d) {
                        violation(
                            "delay",
                            id,
                            *t,
                            format!(
                                "retry delay {d:?} after attempt {n} (status {status}, \
                                 Retry-After {ra:?}) is outside the policy ({:?} backoff, \
                                 {:?}..{:?})",
                                cfg.backoff, cfg.initial_retry_wait, cfg.max_retry_wait
                            ),
                        );
                    }
                    if *d == cfg.max_retry_wait && pow_delay(cfg, *n) < cfg.max_retry_wait {
                        st.budget_denied += 1;
                    }
                    if *d != cfg.max_retry_wait {
                        grants
                            .entry((worker.clone(), function.clone()))
                            .or_default()
                            .push((te, id.clone()));
                    }
                }
                WEv::Settle(..) => {}
            }
        }

        // ---- the broker honours nak delays ----
        for (ta, n, k, from, _) in &c.ssettle {
            let SettleKind::Nak(Some(d)) = k else {
                continue;
            };
            if let Some((t1, n1, _)) = c.sdeliver.iter().find(|(t, n1, _)| t > ta && *n1 > *n)
                && *t1 + Duration::from_millis(1) < *ta + *d
                && !excused(from, *ta, *t1)
            {
                violation(
                    "delay",
                    id,
                    *t1,
                    format!(
                        "delivery {n1} came {:?} after the nak of delivery {n} by {from}, \
                         which asked for {d:?}",
                        *t1 - *ta
                    ),
                );
            }
        }

        // ---- attempts in all: the policy's attempts, plus one per lease a fault broke and
        // per dead letter that could not be stored (both run the function again) ----
        let lost_leases = c
            .sdeliver
            .windows(2)
            .filter(|w| dup_deliveries.contains(&(w[0].2.clone(), w[0].1)))
            .count();
        let park_retries =
            c.w.iter()
                .filter(|(_, _, e)| matches!(e, WEv::DeadLetter(_, false)))
                .count();
        let allowed = cfg.max_attempts as usize + lost_leases + park_retries;
        if starts.len() > allowed {
            violation(
                "attempts",
                id,
                starts[allowed].0,
                format!(
                    "invoked {} times; max_retry_attempts is {} ({lost_leases} broken leases, \
                     {park_retries} dead letters not stored); delivery counts seen: {:?}",
                    starts.len(),
                    cfg.max_attempts,
                    c.sdeliver.iter().map(|d| d.1).collect::<Vec<_>>()
                ),
            );
        }

        let Some(accepted) = c.accepted else {
            continue;
        };
        st.accepted += 1;

        // ---- terminal: exactly one ----
        let removal = c.ssettle.iter().find(|s| s.4);
        let stored_dead: Vec<&(Duration, String, bool)> = c.dead.iter().filter(|d| d.2).collect();
        let Some((tr, nr, kind, from, _)) = removal else {
            if c.lost {
                st.lost += 1;
            } else {
                violation(
                    "terminal",
                    id,
                    accepted,
                    format!(
                        "accepted at {:.3}s, never reached a terminal state ({} deliveries, \
                         {} invocations)",
                        accepted.as_secs_f64(),
                        c.sdeliver.len(),
                        starts.len()
                    ),
                );
            }
            continue;
        };
        // Duplicates the faults explain: a broken lease, or a dead letter that could not be
        // stored (the message comes back and runs again; a fault stalled the connection).
        let dup = !dup_deliveries.is_empty() || park_retries > 0;
        match kind {
            SettleKind::Ack => {
                st.succeeded += 1;
                // The ack must follow a successful invocation of the same delivery by the same
                // worker: per delivery, (started, status of the invocation that ended).
                let mut runs: BTreeMap<u64, (bool, Option<u16>)> = BTreeMap::new();
                for (t, worker, e) in &c.w {
                    if t > tr {
                        break;
                    }
                    if worker != from {
                        continue;
                    }
                    match e {
                        WEv::Deliver(n) => {
                            runs.insert(*n, (false, None));
                        }
                        WEv::Start(n) => {
                            if let Some(r) = runs.get_mut(n) {
                                *r = (true, None);
                            }
                        }
                        WEv::End(n, status, _, false) => {
                            if let Some(r) = runs.get_mut(n).filter(|r| r.0) {
                                r.1 = Some(*status);
                            }
                        }
                        _ => {}
                    }
                }
                let ok = runs
                    .get(nr)
                    .and_then(|r| r.1)
                    .is_some_and(|status| status < 400);
                if !ok {
                    violation(
                        "terminal",
                        id,
                        *tr,
                        format!(
                            "{from} acked delivery {nr} without a successful invocation of it \
                             finishing first"
                        ),
                    );
                }
                if !stored_dead.is_empty() && !dup {
                    violation(
                        "exactly-one",
                        id,
                        *tr,
                        "succeeded and was also dead-lettered".into(),
                    );
                }
            }
            SettleKind::Term => match stored_dead.first() {
                Some((td, reason, _)) if td <= tr => {
                    *st.dead_lettered.entry(reason.clone()).or_default() += 1;
                    // The reason matches what happened: poison never runs; a retryable last
                    // answer is `exhausted` (on the last attempt), any other error `failed`.
                    let last = last_end.get(&(from.clone(), *nr)).map(|e| e.1);
                    let want = match (plan.is_some_and(|p| p.poison), last) {
                        (true, _) => Some("poison"),
                        (false, Some(s)) if retryable(cfg, s) => Some("exhausted"),
                        (false, Some(s)) if s >= 400 => Some("failed"),
                        _ => None,
                    };
                    if let Some(want) = want
                        && want != reason
                        && !dup
                    {
                        violation(
                            "terminal",
                            id,
                            *tr,
                            format!("dead-lettered as {reason}, but its last outcome says {want}"),
                        );
                    }
                    if reason == "exhausted" && (*nr as usize) < cfg.max_attempts as usize && !dup {
                        violation(
                            "attempts",
                            id,
                            *tr,
                            format!(
                                "dead-lettered as exhausted after attempt {nr} of {}",
                                cfg.max_attempts
                            ),
                        );
                    }
                }
                _ => violation(
                    "terminal",
                    id,
                    *tr,
                    format!("{from} terminated delivery {nr} without storing a dead letter first"),
                ),
            },
            _ => {}
        }
        if stored_dead.len() > 1 && !dup {
            violation(
                "exactly-one",
                id,
                *tr,
                format!("{} dead letters stored", stored_dead.len()),
            );
        }

        // ---- no invocation after the terminal state ----
        for (t, worker, n) in &starts {
            if t > tr {
                if dup_deliveries.contains(&(worker.clone(), *n)) {
                    st.duplicate_invocations += 1;
                } else {
                    violation(
                        "after-terminal",
                        id,
                        *t,
                        format!(
                            "{worker} invoked delivery {n} at {:.3}s, after the call ended at \
                             {:.3}s",
                            t.as_secs_f64(),
                            tr.as_secs_f64()
                        ),
                    );
                }
            }
        }

        // ---- callbacks ----
        if plan.is_some_and(|p| p.callback && !p.poison) {
            let mut groups: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
            for (_, from, retry, _, answered) in &c.callbacks {
                groups
                    .entry((from.clone(), retry.clone()))
                    .or_default()
                    .push(*answered);
            }
            for ((from, retry), posts) in &groups {
                if posts.len() > cfg.callback_retries as usize + 1 {
                    violation(
                        "callback",
                        id,
                        *tr,
                        format!(
                            "{} posts from {from} (X-Retry {retry}), callback_retries is {}",
                            posts.len(),
                            cfg.callback_retries
                        ),
                    );
                }
                if let Some(i) = posts.iter().position(|s| *s < 300)
                    && i + 1 < posts.len()
                {
                    violation(
                        "callback",
                        id,
                        *tr,
                        format!("{from} posted again after the receiver accepted the result"),
                    );
                }
            }
            if groups.len() > 1 && !dup {
                violation(
                    "exactly-one",
                    id,
                    *tr,
                    format!("callbacks from {} different invocations", groups.len()),
                );
            }
            let delivered = c.callbacks.iter().any(|cb| cb.4 < 300);
            if !delivered && !receiver_faults {
                violation(
                    "callback",
                    id,
                    *tr,
                    "finished but its callback never reached the receiver".into(),
                );
            }
        }
    }

    // ---- retry budget ----
    let ratio = cfg.retry_budget_ratio;
    for gs in grants.values_mut() {
        gs.sort();
    }
    for (key, gs) in &grants {
        let fas = first_attempts.get(key).cloned().unwrap_or_default();
        for (i, (t, call)) in gs.iter().enumerate() {
            let window_start = t.saturating_sub(Duration::from_secs(53));
            let granted = gs[..=i].iter().filter(|(g, _)| *g > window_start).count() as u64;
            let firsts = fas
                .iter()
                .filter(|f| **f <= *t && **f + Duration::from_secs(61) >= *t)
                .count() as f64;
            let allowed = 10u64.max((ratio * firsts).floor() as u64);
            if granted > allowed {
                violation(
                    "budget",
                    call,
                    *t,
                    format!(
                        "{} granted {granted} retries of {} within 53s; the budget allows \
                         {allowed} ({firsts} first attempts, ratio {ratio}); retries at {:?}",
                        key.0,
                        key.1,
                        gs[..=i]
                            .iter()
                            .filter(|(g, _)| *g > window_start)
                            .map(|(g, c)| format!("{c}@{:.3}", g.as_secs_f64()))
                            .collect::<Vec<_>>()
                    ),
                );
                break;
            }
        }
    }

    if st.lease_losses > st.lease_loss_bound {
        violation(
            "exactly-one",
            "*",
            Duration::ZERO,
            format!(
                "{} lease losses, more than the {} the faults can explain",
                st.lease_losses, st.lease_loss_bound
            ),
        );
    }
    v.sort_by(|a, b| a.at.cmp(&b.at).then(a.rule.cmp(b.rule)));
    Report {
        violations: v,
        stats: st,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn rec(ms: u64, ev: Ev) -> Record {
        Record { at: at(ms), ev }
    }

    fn config() -> RunConfig {
        let mut cfg =
            (crate::scenarios::find("crash").expect("scenario").build)(1, &Default::default());
        cfg.calls.clear();
        cfg.faults.clear();
        cfg
    }

    /// One worker holds two deliveries of a call at once (a broker restart broke the lease of
    /// the first): the second succeeds and is acked while the first is still running, and ends
    /// with 503 after it. The ack follows a successful invocation of the delivery it settles.
    #[test]
    fn invocations_are_attributed_to_their_own_delivery() {
        let (w, call) = ("worker-0#1".to_string(), "c1".to_string());
        let start = |ms, n| {
            rec(
                ms,
                Ev::InvokeStart {
                    worker: w.clone(),
                    call: call.clone(),
                    delivered: n,
                },
            )
        };
        let end = |ms, n, status| {
            rec(
                ms,
                Ev::InvokeEnd {
                    worker: w.clone(),
                    call: call.clone(),
                    delivered: n,
                    status,
                    retry_after: None,
                    error: status >= 500,
                    aborted: false,
                },
            )
        };
        let deliver = |ms, n| {
            [
                rec(
                    ms,
                    Ev::SDeliver {
                        call: call.clone(),
                        delivered: n,
                        seq: 1,
                        to: w.clone(),
                    },
                ),
                rec(
                    ms,
                    Ev::WDeliver {
                        worker: w.clone(),
                        call: call.clone(),
                        delivered: n,
                    },
                ),
            ]
        };
        let restart = |ms, start| {
            rec(
                ms,
                Ev::Fault {
                    kind: FaultKind::BrokerRestart,
                    target: "broker".into(),
                    start,
                },
            )
        };
        let mut records = vec![rec(0, Ev::Accepted { call: call.clone() })];
        records.extend(deliver(10, 1));
        records.push(start(20, 1));
        records.push(restart(1000, true));
        records.push(restart(2000, false));
        records.extend(deliver(5000, 2));
        records.push(start(5010, 2));
        records.push(end(5100, 2, 200));
        records.push(end(5200, 1, 503));
        records.push(rec(
            5300,
            Ev::SSettle {
                call: call.clone(),
                delivered: 2,
                kind: SettleKind::Ack,
                from: w.clone(),
                removed: true,
            },
        ));
        let report = check(&config(), &records);
        assert!(
            report.violations.is_empty(),
            "{:?}",
            report
                .violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(report.stats.succeeded, 1);
        // The same history with the ack on the failed delivery is flagged.
        let last = records.len() - 1;
        if let Ev::SSettle { delivered, .. } = &mut records[last].ev {
            *delivered = 1;
        }
        let report = check(&config(), &records);
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.rule == "terminal" && v.detail.contains("acked delivery 1")),
            "{:?}",
            report.violations
        );
    }
}
