//! The latency section: queue delay (enqueue → first attempt) at a steady rate published
//! through the ingress, at fractions of the worker's rate.

use super::*;

/// At each fraction of `max_rate` (the worker's median rate from the throughput section, or
/// `--latency-max-rate`), `trials` runs of `--latency-seconds`; medians of p50/p99/max. The
/// ingress, its HTTP client (this driver), nats-server, the worker and the function share the
/// machine: at a high fraction the "accepted/s" and the delays say when it cannot keep up.
/// `queue-delay-p99-ms` is the figure at 25% (or the last fraction when 25% is not run).
pub(crate) async fn latency(
    plan: &Plan,
    procs: &mut Procs,
    env: &Env,
    summary: &mut Summary,
    max_rate: f64,
) -> Res<()> {
    let c = *plan.concurrencies.last().unwrap_or(&256);
    let fractions: Vec<f64> = plan
        .opts
        .str("latency-fractions", "0.25")
        .split(',')
        .filter_map(|f| f.trim().parse().ok())
        .collect();
    let secs: f64 = plan
        .opts
        .num("latency-seconds", if plan.quick { 3.0 } else { 10.0 });
    println!();
    let mut rows = Vec::new();
    for &fraction in &fractions {
        let rate = (max_rate * fraction).round().max(1.0);
        let mut runs = Vec::new();
        for _ in 0..plan.trials {
            runs.push(delay_trial(procs, env, c, rate, secs, plan.body_bytes).await?);
        }
        let col = |i: usize| spread(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
        let (accepted_per_s, p50, p99, max) = (col(0), col(1), col(2), col(3));
        let refused: f64 = runs.iter().map(|r| r[4]).sum();
        println!(
            "queue delay (enqueue → first attempt) at {rate:.0} msg/s offered through the ingress ({:.0}% of the worker's rate; {} accepted/s, {refused} refused in all), max_inflight={c}, {} trial(s) of {secs} s: p50 {} ms, p99 {} ms, max {} ms",
            fraction * 100.0,
            accepted_per_s.show(0),
            runs.len(),
            p50.show(2),
            p99.show(2),
            max.show(2),
        );
        rows.push(serde_json::json!({
            "fraction": fraction, "offered_per_s": rate, "accepted_per_s": accepted_per_s.json(), "refused": refused,
            "p50_ms": p50.json(), "p99_ms": p99.json(), "max_ms": max.json(),
        }));
        if fraction == 0.25 || fractions.last() == Some(&fraction) && !fractions.contains(&0.25) {
            summary.set_final("queue-delay-p99-ms", p99.median);
        }
    }
    summary.section("queue_delay", serde_json::Value::Array(rows));
    Ok(())
}

/// One run: `[accepted/s, p50 ms, p99 ms, max ms, refused]`; refuses to report when the function did
/// not see every accepted call.
async fn delay_trial(
    procs: &mut Procs,
    env: &Env,
    c: usize,
    rate: f64,
    secs: f64,
    body_bytes: usize,
) -> Res<[f64; 5]> {
    let ingress = format!("127.0.0.1:{}", free_port()?);
    let pid = env
        .start_worker(procs, c, &[], &["run", "--ingress", &ingress])
        .await?;
    env.fn_stats(true).await?;
    let sent = steady_posts(&env.http, &ingress, rate, secs, body_bytes).await?;
    // Let the last ones through.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let s = env.fn_stats(false).await?;
        if s.first().copied().unwrap_or(0) >= sent.accepted || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    env.http
        .post(format!("http://{}/stats/stop", env.fn_addr))
        .send()
        .await
        .map_err(err("stats"))?;
    procs.stop(pid, Duration::from_secs(10));
    env.delete_consumer(WORKER_CONSUMER).await;
    env.purge(STREAM).await?;
    let seen = stats.first().copied().unwrap_or(0);
    if seen < sent.accepted {
        return Err(format!(
            "queue delay: the function saw {seen} of {} accepted calls within 30 s",
            sent.accepted
        ));
    }
    let ms = |i: usize| stats.get(i).copied().unwrap_or(0) as f64 / 1000.0;
    Ok([
        sent.accepted as f64 / sent.seconds,
        ms(1),
        ms(2),
        ms(3),
        sent.refused as f64,
    ])
}

pub(crate) struct Sent {
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) seconds: f64,
}

/// POST to the ingress at a steady rate (open loop: request `i` starts at `i / rate`), for
/// `secs` seconds.
pub(crate) async fn steady_posts(
    http: &reqwest::Client,
    ingress: &str,
    rate: f64,
    secs: f64,
    body_bytes: usize,
) -> Res<Sent> {
    let total = (rate * secs) as u64;
    let url = format!("http://{ingress}/async-function/bench-fn");
    let body = Bytes::from(vec![b'x'; body_bytes]);
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(tokio::sync::Semaphore::new(2048));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tasks.spawn(async move {
            let ok = matches!(
                http.post(&url).body(body).timeout(Duration::from_secs(10)).send().await,
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED
            );
            if ok { &accepted } else { &refused }.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(Sent {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    })
}
