//! The scale section: function mode with many functions against static mode over the same
//! workload, trials alternating.

use super::*;

/// What one mode's trial measured.
struct ModeRun {
    rate: f64,
    rss_mib: f64,
    /// Function mode: when every function's consumer existed.
    consumers_at: Option<Duration>,
    peak_consumers: usize,
    /// CPU µs per message of the worker, nats-server and the function.
    cpu_us: [f64; 3],
    /// Messages the worker sent to NATS per message, besides its ack (pull requests, status).
    requests_per_msg: f64,
    /// Function mode, last trial: once every consumer expired, after how long and the
    /// worker's resident memory then (MiB).
    expired: Option<(Duration, f64)>,
}

/// How long the last trial waits for the function consumers to expire after the drain: the
/// worker's idle limit (`consumer_inactive_threshold`, 30 s by default) and then the server's
/// (the same on 2.12 and later; before, at least `ack_wait` plus 15 s).
const EXPIRY_WAIT: Duration = Duration::from_secs(180);

/// Function mode with `--scale-functions` functions (`--scale-messages` each): throughput
/// against static mode, consumer creation time, memory (and memory per function).
pub(crate) async fn scale(
    plan: &Plan,
    procs: &mut Procs,
    env: &Env,
    summary: &mut Summary,
) -> Res<()> {
    let o = &plan.opts;
    let functions: usize = o.num("scale-functions", if plan.quick { 100 } else { 1000 });
    let per_fn: usize = o.num("scale-messages", if plan.quick { 10 } else { 50 });
    let c: usize = o.num("scale-concurrency", 256);
    let (mut stat, mut func) = (Vec::new(), Vec::new());
    for trial in 0..plan.trials {
        let last = trial + 1 == plan.trials;
        for (mode, runs) in [("static", &mut stat), ("function", &mut func)] {
            let shape = Shape {
                functions,
                per_fn,
                c,
                body_bytes: plan.body_bytes,
                expire: last && mode == "function",
            };
            let r = mode_trial(procs, env, mode, &shape).await?;
            eprintln!("  scale: {mode} mode {:.0} msg/s", r.rate);
            runs.push(r);
        }
    }
    let of = |runs: &[ModeRun], f: &dyn Fn(&ModeRun) -> f64| {
        spread(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let (s_rate, f_rate) = (of(&stat, &|r| r.rate), of(&func, &|r| r.rate));
    let (s_rss, f_rss) = (of(&stat, &|r| r.rss_mib), of(&func, &|r| r.rss_mib));
    let created = of(&func, &|r| {
        r.consumers_at.map_or(f64::NAN, |d| d.as_secs_f64())
    });
    let ratio = f_rate.median / s_rate.median;
    let per_function_kib = (f_rss.median - s_rss.median) * 1024.0 / functions as f64;
    println!();
    println!(
        "scale: {functions} functions × {per_fn} messages, max_inflight={c}, {} trial(s)",
        stat.len()
    );
    let cpu = |runs: &[ModeRun]| {
        let c = |i: usize| of(runs, &|r| r.cpu_us[i]).median;
        [c(0), c(1), c(2)]
    };
    let (s_cpu, f_cpu) = (cpu(&stat), cpu(&func));
    let (s_req, f_req) = (
        of(&stat, &|r| r.requests_per_msg).median,
        of(&func, &|r| r.requests_per_msg).median,
    );
    println!(
        "| mode | msg/s | CPU µs/msg worker / nats-server / function | requests to NATS per msg besides the ack | peak RSS MiB | all consumers created after (s) | consumers seen |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| static | {} | {:.1} / {:.1} / {:.1} | {s_req:.3} | {} | - | 1 |",
        s_rate.show(0),
        s_cpu[0],
        s_cpu[1],
        s_cpu[2],
        s_rss.show(1)
    );
    println!(
        "| function | {} | {:.1} / {:.1} / {:.1} | {f_req:.3} | {} | {} | {} |",
        f_rate.show(0),
        f_cpu[0],
        f_cpu[1],
        f_cpu[2],
        f_rss.show(1),
        created.show(2),
        func.iter().map(|r| r.peak_consumers).max().unwrap_or(0)
    );
    let expired = func.iter().find_map(|r| r.expired);
    println!(
        "function mode / static mode: {ratio:.2} (pairs {}); memory per function ≈ {per_function_kib:.1} KiB (peak RSS difference / functions); {}",
        pair_ratios(&f_rate.trials, &s_rate.trials).show(2),
        expired.map_or("consumers not watched expiring".into(), |(d, mib)| format!(
            "every consumer expired {:.1} s after the drain (default idle limits), worker RSS then {mib:.1} MiB",
            d.as_secs_f64()
        ))
    );
    summary.section(
        "function_mode",
        serde_json::json!({
            "functions": functions, "messages_per_function": per_fn, "max_inflight": c,
            "static_msg_per_s": s_rate.json(), "function_msg_per_s": f_rate.json(),
            "static_rss_mib": s_rss.json(), "function_rss_mib": f_rss.json(),
            "consumers_created_s": created.json(), "ratio": ratio,
            "requests_per_msg": { "static": s_req, "function": f_req },
            "cpu_us_per_msg": { "static": s_cpu, "function": f_cpu,
                "order": ["worker", "nats-server", "function"] },
            "memory_per_function_kib": per_function_kib,
            "consumers_expired_after_s": expired.map(|(d, _)| d.as_secs_f64()),
            "rss_after_expiry_mib": expired.map(|(_, m)| m),
        }),
    );
    summary.set_final("function-mode-ratio", ratio);
    Ok(())
}

/// One trial's workload.
struct Shape {
    functions: usize,
    per_fn: usize,
    c: usize,
    body_bytes: usize,
    /// Wait for the function consumers to expire after the drain.
    expire: bool,
}

async fn mode_trial(procs: &mut Procs, env: &Env, mode: &str, shape: &Shape) -> Res<ModeRun> {
    let (functions, total) = (shape.functions, shape.functions * shape.per_fn);
    fill_functions(env, functions, shape.per_fn, shape.body_bytes).await?;
    let t = Instant::now();
    let settings = [("scaling_mode", mode.to_string())];
    let sent0 = env.client_messages().await;
    let pid = env.start_worker(procs, shape.c, &settings, &[]).await?;
    let mut consumers_at = None;
    let mut peak_consumers = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let pids = [pid, env.nats_pid, env.fn_pid];
    let mut first: Option<(Instant, u64, [Duration; 3])> = None;
    let (rate, cpu_us) = loop {
        let left = env.stream_messages(STREAM).await?;
        let now = Instant::now();
        if first.is_none() && left < total as u64 {
            first = Some((now, left, pids.map(cpu_time)));
        }
        if mode == "function" && consumers_at.is_none() {
            let n = env.consumer_count().await?;
            peak_consumers = peak_consumers.max(n);
            if n >= functions {
                consumers_at = Some(t.elapsed());
            }
        }
        if left == 0 {
            let (t0, m0, c0) = first.ok_or("drained before it started")?;
            let c1 = pids.map(cpu_time);
            let per_msg =
                |i: usize| c1[i].saturating_sub(c0[i]).as_secs_f64() * 1e6 / m0.max(1) as f64;
            break (
                m0 as f64 / now.duration_since(t0).as_secs_f64().max(1e-3),
                [per_msg(0), per_msg(1), per_msg(2)],
            );
        }
        if now > deadline {
            procs.stop(pid, Duration::from_secs(10));
            return Err(format!("scale ({mode}): {left} messages left after 600 s"));
        }
        let poll = if mode == "function" { 50 } else { 10 };
        tokio::time::sleep(Duration::from_millis(poll)).await;
    };
    let rss_mib = peak_rss_kib(pid) as f64 / 1024.0;
    let sent = env.client_messages().await.saturating_sub(sent0);
    let requests_per_msg = sent.saturating_sub(total as u64) as f64 / total.max(1) as f64;
    let expired = if shape.expire {
        Some(expiry(env, pid).await?)
    } else {
        None
    };
    procs.stop(pid, Duration::from_secs(10));
    env.delete_all_consumers().await?;
    Ok(ModeRun {
        rate,
        rss_mib,
        consumers_at,
        peak_consumers,
        cpu_us,
        requests_per_msg,
        expired,
    })
}

/// Waits (up to [`EXPIRY_WAIT`]) until the server removed every function consumer once the worker
/// stopped pulling; the time it took and the worker's resident memory then (MiB).
async fn expiry(env: &Env, pid: u32) -> Res<(Duration, f64)> {
    let t = Instant::now();
    while env.consumer_count().await? > 0 {
        if t.elapsed() > EXPIRY_WAIT {
            return Err(format!(
                "scale: function consumers still there {EXPIRY_WAIT:?} after the drain"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((t.elapsed(), rss_kib(pid) as f64 / 1024.0))
}

/// `per_fn` messages for each of `functions` functions, interleaved.
pub(crate) async fn fill_functions(
    env: &Env,
    functions: usize,
    per_fn: usize,
    body_bytes: usize,
) -> Res<()> {
    env.publish_all(functions * per_fn, body_bytes, |i| {
        format!("bench-fn-{}", i % functions)
    })
    .await
}
