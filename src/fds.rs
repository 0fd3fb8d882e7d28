//! File descriptors: the process raises its soft limit to the hard one at start (as Go
//! programs do), and the ingress gets only what is left after the worker's own needs, so a
//! flood of client connections can never take the descriptors the worker's calls to functions
//! and callbacks, NATS and the metrics server need ("Too many open files" used to fail calls
//! as 503, burning attempts).

/// Descriptors kept for everything but the ingress and the calls: NATS, logs, DNS, the
/// metrics server's connections ([`METRICS_CONNECTIONS`]) and headroom.
pub const RESERVED: u64 = 256;
/// Connections the metrics server (`/metrics`, `/healthz`, `/readyz`) serves at once.
pub const METRICS_CONNECTIONS: usize = 64;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit now in force (`None` when
/// it cannot be read).
pub fn raise_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// The ingress's connection limit within a descriptor limit of `nofile`: the configured one,
/// or what is left after [`RESERVED`] and two descriptors per call in flight (the function's
/// connection and the callback's), at least 1.
pub fn ingress_connections(configured: usize, max_inflight: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else {
        return configured;
    };
    let calls = 2 * max_inflight as u64;
    let left = nofile.saturating_sub(RESERVED).saturating_sub(calls);
    configured
        .min(usize::try_from(left).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingress_gets_what_the_worker_does_not_need() {
        assert_eq!(ingress_connections(1024, 10, Some(1_048_576)), 1024);
        assert_eq!(ingress_connections(1024, 10, None), 1024);
        // 1024 descriptors: 256 reserved, 20 for 10 calls in flight.
        assert_eq!(ingress_connections(1024, 10, Some(1024)), 748);
        assert_eq!(ingress_connections(1024, 1000, Some(1024)), 1);
        assert_eq!(ingress_connections(5, 0, Some(0)), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let now = raise_limit().expect("readable");
        assert!(now >= 1, "{now}");
        assert_eq!(raise_limit(), Some(now), "raising again changes nothing");
    }
}
