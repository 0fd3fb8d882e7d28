//! The scale section: function mode with many functions against static mode.

use super::*;

/// Function mode with many functions: consumer creation time, throughput against static mode,
/// memory.
pub(crate) async fn scale(
    o: &Opts,
    procs: &mut Procs,
    env: &Env,
    quick: bool,
    body_bytes: usize,
) -> Res<()> {
    let functions: usize = o.num("scale-functions", if quick { 100 } else { 1000 });
    let per_fn: usize = o.num("scale-messages", if quick { 10 } else { 50 });
    let c: usize = o.num("scale-concurrency", 256);
    let total = functions * per_fn;
    let mut results = Vec::new();
    for mode in ["static", "function"] {
        fill_functions(env, functions, per_fn, body_bytes).await?;
        let t = Instant::now();
        let pid = env
            .start_worker(procs, c, &[("scaling_mode", mode.to_string())], &[])
            .await?;
        let mut consumers_at = None;
        let mut peak_consumers = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut first: Option<(Instant, u64)> = None;
        let rate = loop {
            let left = env.stream_messages(STREAM).await?;
            let now = Instant::now();
            if first.is_none() && left < total as u64 {
                first = Some((now, left));
            }
            if mode == "function" && consumers_at.is_none() {
                let s = env.js.get_stream(STREAM).await.map_err(err("get stream"))?;
                let n = s.cached_info().state.consumer_count;
                peak_consumers = peak_consumers.max(n);
                if n >= functions {
                    consumers_at = Some(t.elapsed());
                }
            }
            if left == 0 {
                let (t0, m0) = first.ok_or("drained before it started")?;
                break m0 as f64 / now.duration_since(t0).as_secs_f64().max(1e-3);
            }
            if now > deadline {
                procs.stop(pid, Duration::from_secs(10));
                return Err(format!("scale ({mode}): {left} messages left after 600 s"));
            }
            tokio::time::sleep(Duration::from_millis(if mode == "function" {
                50
            } else {
                10
            }))
            .await;
        };
        let rss = peak_rss_kib(pid);
        procs.stop(pid, Duration::from_secs(10));
        results.push((mode, rate, rss, consumers_at, peak_consumers));
        // Leave nothing behind for the next mode (a work queue forbids overlapping consumers;
        // the worker removes the other mode's consumers itself, but be tidy).
        let s = env.js.get_stream(STREAM).await.map_err(err("get stream"))?;
        let names: Vec<String> = s
            .consumer_names()
            .filter_map(|n| async { n.ok() })
            .collect()
            .await;
        for n in names {
            let _ = s.delete_consumer(&n).await;
        }
    }
    println!();
    println!("scale: {functions} functions × {per_fn} messages, max_inflight={c}");
    println!("| mode | msg/s | peak RSS MiB | all consumers created after | consumers seen |");
    println!("|---|---|---|---|---|");
    for (mode, rate, rss, at, peak) in results {
        println!(
            "| {mode} | {rate:.0} | {:.1} | {} | {} |",
            rss as f64 / 1024.0,
            at.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
            if mode == "function" {
                peak.to_string()
            } else {
                "1".into()
            }
        );
    }
    Ok(())
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
