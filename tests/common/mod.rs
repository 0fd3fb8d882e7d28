//! Shared integration-test harness: a real `nats-server`, fake function and callback HTTP
//! servers, and the `queue-worker` binary run as a child process.
//!
//! Every test binary includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

pub mod bed;
pub mod browser;
pub mod calls;
pub mod cluster;
pub mod conformance;
pub mod docker;
pub mod http;
pub mod load;
pub mod nats;
pub mod proxy;
pub mod secure_nats;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of the `queue-worker` binary built by cargo for integration tests.
///
/// Panics when the harness is compiled outside the main crate's integration tests.
pub fn worker_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_queue-worker") {
        Some(p) => PathBuf::from(p),
        None => panic!("CARGO_BIN_EXE_queue-worker is only set for the queue-worker crate's tests"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Contents of `testdata/wire/<name>`.
pub fn fixture(name: &str) -> bytes::Bytes {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wire/");
    let path = format!("{path}{name}");
    match std::fs::read(&path) {
        Ok(b) => b.into(),
        Err(e) => panic!("fixture {path}: {e}"),
    }
}

/// A name unique across tests and processes, e.g. for queues on a shared external server.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// Polls `f` every 50 ms until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kill -<sig> <pid>` (`"TERM"`, `"STOP"`, `"CONT"`…); panics when it fails.
pub fn send_signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} {pid}"))
        .status()
        .expect("run sh -c kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// SIGKILLs the child, if there is one, and reaps it (SIGKILL also ends a frozen process).
pub fn kill_child(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `None` after printing `SKIPPED: <why>`; under `CI` (where every suite must run) a panic.
pub fn skip_or_panic<T>(why: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
