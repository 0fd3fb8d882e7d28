//! A tiny HTTP "function" for container tests: std only, one thread per connection.
//!
//! ```text
//! test-function [ADDR]          # default 0.0.0.0:8080 (or $LISTEN)
//! ```
//!
//! - `POST|GET /function/<name>[/…]` → 200, body = the request body, headers `X-Served-By:
//!   test-function`, `X-Function-Host: $HOSTNAME`, `X-Function-Route: <name>` and the request's
//!   `Content-Type`.
//! - `/function/status-<code>[/…]` → `<code>` with the same headers (e.g. `status-429`).
//! - `/healthz` → 200 `ok`; anything else → 404.
//!
//! The container tests build it (`cargo build -p test-function`) and bundle it into a
//! `FROM scratch` image (`tests/common/docker.rs`, `ci/scratch-image.sh`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("LISTEN").ok())
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-function: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("test-function: listening on {addr}");
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(conn);
        });
    }
}

/// One request as read off the wire.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves requests on one connection until the peer closes it or asks to.
fn serve(conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    while let Some(req) = read_request(&mut reader)? {
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, headers, body) = respond(&req);
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
            reason(status),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)?;
        writer.flush()?;
        if close {
            break;
        }
    }
    Ok(())
}

fn respond(req: &Request) -> (u16, Vec<(String, String)>, Vec<u8>) {
    if req.path == "/healthz" {
        return (200, Vec::new(), b"ok".to_vec());
    }
    let Some(rest) = req.path.strip_prefix("/function/") else {
        return (404, Vec::new(), b"not a function path".to_vec());
    };
    let name = rest
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .to_string();
    let status = name
        .strip_prefix("status-")
        .and_then(|c| c.split('.').next())
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .unwrap_or(200);
    let mut headers = vec![
        ("X-Served-By".to_string(), "test-function".to_string()),
        (
            "X-Function-Host".to_string(),
            std::env::var("HOSTNAME").unwrap_or_default(),
        ),
        ("X-Function-Route".to_string(), name),
        ("X-Request-Method".to_string(), req.method.clone()),
    ];
    if let Some(ct) = req.header("content-type") {
        headers.push(("Content-Type".to_string(), ct.to_string()));
    }
    (status, headers, req.body.clone())
}

/// Reads one request; `None` when the peer closed the connection before a new one.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        req.body = read_chunked(r)?;
    } else if let Some(n) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if n > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let hex = size.trim().split(';').next().unwrap_or_default();
        let n = usize::from_str_radix(hex, 16).map_err(std::io::Error::other)?;
        if body.len() + n > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        let mut chunk = vec![0; n + 2]; // data + CRLF
        r.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk[..n]);
        if n == 0 {
            // Trailers end with an empty line; the CRLF just read was that line when there
            // are none.
            return Ok(body);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
