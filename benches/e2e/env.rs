//! What a run has started (NATS, the function server) and the measurements made through it.

use super::*;

pub(crate) struct Env {
    pub(crate) worker_bin: PathBuf,
    pub(crate) worker_prefix: Vec<String>,
    /// The same for the baseline.
    pub(crate) baseline_prefix: Vec<String>,
    /// `--worker-env K=V,K2=V2`: more environment for the worker (experiments).
    pub(crate) worker_env: Vec<String>,
    pub(crate) self_bin: PathBuf,
    pub(crate) nats_url: String,
    pub(crate) nats_pid: u32,
    /// nats-server's monitoring endpoint (`/connz`).
    pub(crate) nats_monitor: String,
    pub(crate) fn_addr: SocketAddr,
    pub(crate) fn_pid: u32,
    pub(crate) broker: JetStreamBroker,
    pub(crate) js: jetstream::Context,
    pub(crate) http: reqwest::Client,
    pub(crate) cfg: Config,
}

/// One invocation message, as the ingress builds it from `POST /async-function/<function>`
/// with a body of `body_bytes` and the headers curl sends.
pub(crate) fn message(
    cfg: &Config,
    function: &str,
    body_bytes: usize,
    i: usize,
) -> Res<(String, String, Bytes)> {
    let body: Vec<u8> = (0..body_bytes)
        .map(|j| b'a' + ((i + j) % 26) as u8)
        .collect();
    let mut header = std::collections::BTreeMap::new();
    for (k, v) in [
        ("Accept", "*/*"),
        ("Content-Type", "application/octet-stream"),
        ("User-Agent", "curl/8.5.0"),
    ] {
        header.insert(k.to_string(), vec![v.to_string()]);
    }
    header.insert("Content-Length".into(), vec![body_bytes.to_string()]);
    let p = prepare(
        cfg,
        &SystemClock,
        Submission {
            function: function.to_string(),
            path: String::new(),
            query: String::new(),
            header,
            host: "127.0.0.1:8080".into(),
            body: Bytes::from(body),
        },
    )?;
    Ok((
        p.outgoing.subject,
        p.outgoing.msg_id.unwrap_or_default(),
        p.outgoing.payload,
    ))
}

/// Publish one message (subject, `Nats-Msg-Id`, payload) and wait for its PubAck.
pub(crate) async fn publish_acked(
    js: &jetstream::Context,
    (subject, id, payload): (String, String, Bytes),
) -> Res<()> {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", id.as_str());
    let ack = js
        .publish_with_headers(subject, h, payload)
        .await
        .map_err(err("publish"))?;
    ack.await.map_err(err("puback")).map(drop)
}

impl Env {
    pub(crate) async fn stream_messages(&self, stream: &str) -> Res<u64> {
        let mut s = self
            .js
            .get_stream(stream)
            .await
            .map_err(err("get stream"))?;
        Ok(s.info().await.map_err(err("stream info"))?.state.messages)
    }

    /// Publish `n` messages for `function` (pipelined, up to 1024 PubAcks outstanding) and wait
    /// until the stream holds `n`.
    pub(crate) async fn fill(
        &self,
        stream: &str,
        function: &str,
        n: usize,
        body_bytes: usize,
    ) -> Res<()> {
        self.publish_all(n, body_bytes, |_| function.to_string())
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stream_messages(stream).await? < n as u64 {
            if Instant::now() > deadline {
                return Err("fill: stream did not reach the expected size".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Publish `n` messages, message `i` for `function_of(i)`, pipelined (up to 1024 PubAcks
    /// outstanding); every PubAck must arrive.
    pub(crate) async fn publish_all(
        &self,
        n: usize,
        body_bytes: usize,
        function_of: impl Fn(usize) -> String,
    ) -> Res<()> {
        let mut acks = futures::stream::iter(0..n)
            .map(|i| {
                let m = message(&self.cfg, &function_of(i), body_bytes, i);
                async move { publish_acked(&self.js, m?).await }
            })
            .buffer_unordered(1024);
        while let Some(r) = acks.next().await {
            r?;
        }
        Ok(())
    }

    pub(crate) async fn purge(&self, stream: &str) -> Res<()> {
        let s = self
            .js
            .get_stream(stream)
            .await
            .map_err(err("get stream"))?;
        s.purge().await.map_err(err("purge"))?;
        Ok(())
    }

    /// The consumers on the benchmark's stream.
    pub(crate) async fn consumer_count(&self) -> Res<usize> {
        let s = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(err("get stream"))?;
        Ok(s.cached_info().state.consumer_count)
    }

    /// Leave no consumer behind for the next trial (a work queue forbids overlapping
    /// consumers; the worker removes the other mode's consumers itself, but be tidy).
    pub(crate) async fn delete_all_consumers(&self) -> Res<()> {
        let s = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(err("get stream"))?;
        let names: Vec<String> = s
            .consumer_names()
            .filter_map(|n| async { n.ok() })
            .collect()
            .await;
        for n in names {
            let _ = s.delete_consumer(&n).await;
        }
        Ok(())
    }

    pub(crate) async fn delete_consumer(&self, name: &str) {
        if let Ok(s) = self.js.get_stream(STREAM).await {
            let _ = s.delete_consumer(name).await;
        }
    }

    /// Start the worker binary (static mode unless `extra` says otherwise) and wait for
    /// `/readyz`.
    pub(crate) async fn start_worker(
        &self,
        procs: &mut Procs,
        max_inflight: usize,
        extra: &[(&str, String)],
        args: &[&str],
    ) -> Res<u32> {
        let metrics_port = free_port()?;
        // `--worker-prefix "perf record -g -o /tmp/w.data --"` profiles the worker.
        let mut cmd = prefixed(&self.worker_prefix, &self.worker_bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("nats_url", &self.nats_url)
            .env("gateway_url", format!("http://{}", self.fn_addr))
            .env("max_inflight", max_inflight.to_string())
            .env("metrics_port", metrics_port.to_string())
            .env("queue_name", QUEUE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        for kv in &self.worker_env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.worker_bin.display()))?;
        let pid = procs.add("worker", child);
        let ready = format!("http://127.0.0.1:{metrics_port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(&ready).send().await
                && r.status().is_success()
            {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                return Err("the worker did not become ready in 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Start the bare loop against `function` and wait until it says it is ready.
    pub(crate) fn start_baseline(
        &self,
        procs: &mut Procs,
        concurrency: usize,
        function: &str,
    ) -> Res<u32> {
        let mut cmd = prefixed(&self.baseline_prefix, &self.self_bin);
        cmd.args([
            "baseline",
            "--nats",
            &self.nats_url,
            "--concurrency",
            &concurrency.to_string(),
            "--url",
            &format!("http://{}/function/{function}", self.fn_addr),
        ]);
        let (pid, line) = procs.spawn_announcing("baseline", &mut cmd)?;
        if line != "ready" {
            return Err("the baseline did not start".into());
        }
        Ok(pid)
    }

    /// Wait until the stream is empty; the rate is measured from the first acknowledgement.
    pub(crate) async fn drain(&self, consumer_pid: u32, timeout: Duration) -> Res<Drain> {
        let start = Instant::now();
        let initial = self.stream_messages(STREAM).await?;
        let pids = [consumer_pid, self.nats_pid, self.fn_pid];
        let sent0 = self.client_messages().await;
        let mut first: Option<(Instant, u64, [Duration; 3])> = None;
        loop {
            let now = Instant::now();
            let left = self.stream_messages(STREAM).await?;
            if first.is_none() && left < initial {
                first = Some((now, left, pids.map(cpu_time)));
            }
            if left == 0 {
                let (t0, m0, c0) = first.ok_or("drained before it started")?;
                let c1 = pids.map(cpu_time);
                let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
                let per_msg =
                    |i: usize| c1[i].saturating_sub(c0[i]).as_secs_f64() * 1e6 / m0.max(1) as f64;
                // Messages the consumer sent to NATS besides one ack per message: pull
                // requests (and the odd API request).
                let sent = self.client_messages().await.saturating_sub(sent0);
                return Ok(Drain {
                    rate: m0 as f64 / secs,
                    cpu_us: [per_msg(0), per_msg(1), per_msg(2)],
                    requests_per_msg: sent.saturating_sub(initial) as f64 / initial.max(1) as f64,
                });
            }
            if now.duration_since(start) > timeout {
                return Err(format!("{left} messages still queued after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages received by nats-server from every client but this driver (`/connz`).
    pub(crate) async fn client_messages(&self) -> u64 {
        let Ok(r) = self
            .http
            .get(format!("{}/connz?limit=1024", self.nats_monitor))
            .send()
            .await
        else {
            return 0;
        };
        let Ok(body) = r.bytes().await else {
            return 0;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return 0;
        };
        v["connections"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| c["name"].as_str() != Some("bench"))
                    .filter_map(|c| c["in_msgs"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }

    pub(crate) async fn fn_stats(&self, reset: bool) -> Res<Vec<u64>> {
        let base = format!("http://{}", self.fn_addr);
        if reset {
            self.http
                .post(format!("{base}/stats/reset"))
                .send()
                .await
                .map_err(err("stats"))?;
            return Ok(Vec::new());
        }
        let t = self
            .http
            .get(format!("{base}/stats"))
            .send()
            .await
            .map_err(err("stats"))?
            .text()
            .await
            .map_err(err("stats"))?;
        Ok(t.split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect())
    }
}

/// One throughput measurement.
#[derive(Clone, Copy)]
pub(crate) struct Drain {
    pub(crate) rate: f64,
    /// CPU µs per message: the consumer (baseline or worker), nats-server, function server.
    pub(crate) cpu_us: [f64; 3],
    /// Messages the consumer sent to NATS per message, besides its ack (pull requests).
    pub(crate) requests_per_msg: f64,
}

/// `bin` run through `prefix` (`perf record … --`, `valgrind`, …) when one is given.
fn prefixed(prefix: &[String], bin: &Path) -> Command {
    match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}
