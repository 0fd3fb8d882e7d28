//! What one client may take of the ingress (issue 13, defect 4): idle and slow connections are
//! cut off, bodies held at once are bounded, and a flood of connections waits in the backlog
//! instead of taking the descriptors the worker's own calls need. The `queue-worker` binary
//! against a real nats-server, driven over raw TCP.

mod common;

use std::time::Duration;

use common::bed::Bed;
use common::http::Reply;
use common::worker::get_text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);
/// Longer than the 1 s and 3 s deadlines the tests set: what the server does within it counts.
const GRACE: Duration = Duration::from_secs(5);

/// `host:port` of a worker's ingress.
fn addr(ingress: &str) -> String {
    ingress.trim_start_matches("http://").to_string()
}

/// Everything the server sends until it closes the connection; `None` if it does not within
/// `GRACE`.
async fn read_until_closed(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(GRACE, conn.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// The status line's code of a raw response.
fn status_of(response: &str) -> Option<u16> {
    response.split(' ').nth(1).and_then(|s| s.parse().ok())
}

/// A request's head declaring a body of `len` bytes.
fn head(addr: &str, len: usize) -> String {
    format!("POST /async-function/f HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n\r\n")
}

/// The answer to a request head declaring a body of `len` bytes, sent without the body.
async fn head_only(addr: &str, len: usize) -> String {
    let mut conn = connect(addr).await;
    conn.write_all(head(addr, len).as_bytes()).await.unwrap();
    read_until_closed(&mut conn).await.unwrap_or_default()
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Idle and slowloris connections are closed after `ingress_header_timeout`, a stalled body
/// gets `408` after `ingress_body_timeout`, and a body that would take the ingress past
/// `ingress_max_buffered_bytes` gets `503` at once. Without deadlines these connections stayed
/// open for good, and stalled uploads grew the process without bound.
#[tokio::test]
async fn slow_clients_are_cut_off_and_bodies_held_are_bounded() {
    let Some((_bed, w)) = Bed::new("slowcl")
        .ingress()
        .envs(&[
            ("ingress_header_timeout", "1s"),
            ("ingress_body_timeout", "3s"),
            ("ingress_max_buffered_bytes", "1048576"),
        ])
        .start()
        .await
    else {
        return;
    };
    let addr = addr(w.ingress());
    let mut idle = connect(&addr).await;
    let mut slowloris = connect(&addr).await;
    slowloris
        .write_all(b"POST /async-function/f HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut idle).await.is_some(), "idle: open");
    let cut = read_until_closed(&mut slowloris).await;
    assert!(cut.is_some(), "half a header: still open");

    // A body that stalls holds 700,000 of the 1 MiB the ingress may hold...
    let mut stalled = connect(&addr).await;
    stalled
        .write_all(head(&addr, 700_000).as_bytes())
        .await
        .unwrap();
    stalled.write_all(&[b'x'; 1000]).await.unwrap();
    // (once the ingress has read its head, which takes it a millisecond; its 3 s body
    // deadline leaves ample time for what follows)
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...so another as large is refused at once,
    let mut second = connect(&addr).await;
    second
        .write_all(head(&addr, 700_000).as_bytes())
        .await
        .unwrap();
    let refused = read_until_closed(&mut second).await.unwrap_or_default();
    assert_eq!(status_of(&refused), Some(503), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // and the stalled one gets 408 once its time is up.
    let timed_out = read_until_closed(&mut stalled).await.unwrap_or_default();
    assert_eq!(status_of(&timed_out), Some(408), "{timed_out}");
    // Its room is given back: a whole body of that size is taken.
    let r = w.post("f").body(vec![b'y'; 700_000]).send().await.unwrap();
    assert_eq!(r.status(), 202);
}

/// A flood of connections to the ingress of a worker allowed 400 file descriptors: the
/// ingress serves what is left after the worker's own needs, the rest wait in the listen
/// backlog, and the worker's call to the function, `/healthz` and the ingress (once the flood
/// ends) all still work. The ingress used to accept until the process ran out of
/// descriptors: then function calls failed ("Too many open files", counted as 503) and
/// `/healthz` stopped answering.
#[tokio::test]
async fn a_connection_flood_never_takes_the_workers_descriptors() {
    let Some(bed) = Bed::new("flood")
        .function(|_, _| Reply::ok("done"))
        .start_without_worker()
        .await
    else {
        return;
    };
    let w = bed
        .worker()
        .ingress()
        .nofile(400)
        .envs(&[("max_inflight", "4"), ("ingress_header_timeout", "60s")])
        .start()
        .await;
    let addr = addr(w.ingress());
    // Connections until the backlog is full too (connects then hang: five in a row, so one
    // slow connect on a busy machine does not end the flood early).
    let mut flood = Vec::new();
    let mut hung = 0;
    while flood.len() < 600 && hung < 5 {
        let connect = TcpStream::connect(&addr);
        match tokio::time::timeout(Duration::from_millis(200), connect).await {
            Ok(Ok(c)) => {
                flood.push(c);
                hung = 0;
            }
            _ => hung += 1,
        }
    }
    // 400 descriptors: 256 kept for the worker and 8 for 4 calls in flight leave 136.
    assert!(
        flood.len() > 136,
        "more than the ingress serves: {}",
        flood.len()
    );
    bed.publish_to("f.openfaas-fn", common::fixture("minimal.json"))
        .await;
    let calls = bed.function.wait_for(1, T).await;
    assert_eq!(calls.len(), 1);
    bed.wait_drained(T).await;
    assert_eq!(bed.dead_letter_count().await, 0, "the call succeeded");
    let (status, _) = get_text(&format!("{}/healthz", w.metrics)).await;
    assert_eq!(status, 200);
    drop(flood);
    let r = w.post("f").body("after").send().await.unwrap();
    assert_eq!(r.status(), 202);
    bed.function.wait_for(2, T).await;
}

/// `max_body_bytes` is exact: with the defaults, a body of exactly the limit is stored even
/// with a 15 KiB head of characters JSON escapes six-fold, one byte more is `413`, and a head
/// over 16 KiB is `431`. The default limit (768 KiB) used to be more than NATS' 1 MiB could
/// hold once base64-encoded: a body of exactly the limit got `413` from NATS.
#[tokio::test]
async fn a_body_of_exactly_max_body_bytes_is_stored() {
    let Some((bed, w)) = Bed::new("exact").ingress().start().await else {
        return;
    };
    // Declared lengths only: the answer comes before the body, and a client still sending one
    // would find the connection closed.
    let addr = addr(w.ingress());
    let text = head_only(&addr, 2_000_000).await;
    assert_eq!(status_of(&text), Some(413), "{text}");
    let limit: usize = text
        .split("the limit is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {text:?}"));
    let pad = "<".repeat(15_000);
    let exact = w.post("f").header("X-Pad", &pad).body(vec![b'x'; limit]);
    let r = exact.send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let calls = bed.function.wait_for(1, T).await;
    assert_eq!(calls[0].body.len(), limit);
    let over = head_only(&addr, limit + 1).await;
    assert_eq!(status_of(&over), Some(413), "{over}");
    let big_head = w.post("f").header("X-Pad", "y".repeat(20_000)).body("b");
    assert_eq!(big_head.send().await.unwrap().status(), 431);
}

/// The limit of bodies carried in a message set above what the server's `max_payload` holds
/// stops the start with exit code 2 and says why (it used to be accepted, and every body near
/// it refused): `max_body_bytes` when no body goes to the object store
/// (`payload_offload_bytes=0`), else `payload_offload_bytes`.
#[tokio::test]
async fn a_message_body_limit_over_what_nats_holds_exits_2() {
    let Some(bed) = Bed::new("toobig").start_without_worker().await else {
        return;
    };
    let cases = [
        [
            ("max_body_bytes", "1000000"),
            ("payload_offload_bytes", "0"),
        ],
        [
            ("max_body_bytes", "4000000"),
            ("payload_offload_bytes", "1000000"),
        ],
    ];
    for case in cases {
        let mut env = vec![
            ("nats_url", bed.nats.url()),
            ("metrics_port", common::free_port().to_string()),
        ];
        env.extend(case.iter().map(|(k, v)| (*k, v.to_string())));
        let ingress = format!("127.0.0.1:{}", common::free_port());
        let mut p = common::worker::WorkerProcess::spawn(
            &common::worker_bin(),
            &["run", "--ingress", &ingress],
            &env,
        );
        let status = p.wait_exit(T).await.expect("exits");
        assert_eq!(status.code(), Some(2), "{}", p.log());
        let log = p.log();
        let setting = if case[1].1 == "0" { case[0] } else { case[1] };
        let named = format!("{}={}", setting.0, setting.1);
        assert!(log.contains(&named) && log.contains("max_payload"), "{log}");
    }
}
