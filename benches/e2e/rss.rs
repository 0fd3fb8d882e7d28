//! The memory section: peak RSS with 1,024 invocations of 64 KiB in flight, worker against the
//! bare loop, trials alternating.

use super::*;

/// `max_inflight=1024`, 64 KiB bodies, a 250 ms function so every slot fills.
pub(crate) async fn rss(
    plan: &Plan,
    procs: &mut Procs,
    env: &Env,
    summary: &mut Summary,
) -> Res<()> {
    let n: usize = plan
        .opts
        .num("rss-messages", if plan.quick { 2048 } else { 4096 });
    let (mut worker, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..plan.trials {
        worker.push(worker_peak(procs, env, n).await?);
        bare.push(baseline_peak(procs, env, n).await?);
    }
    let (w, b) = (spread(&worker), spread(&bare));
    println!();
    println!(
        "peak RSS, max_inflight=1024, {n} messages with 64 KiB bodies, 250 ms function: worker {} MiB (baseline loop {} MiB); worker / baseline {:.2}",
        w.show(1),
        b.show(1),
        w.median / b.median
    );
    summary.section(
        "peak_rss",
        serde_json::json!({ "messages": n, "worker_mib": w.json(), "baseline_mib": b.json() }),
    );
    Ok(())
}

const BIG: usize = 64 * 1024;

async fn worker_peak(procs: &mut Procs, env: &Env, n: usize) -> Res<f64> {
    env.fill(STREAM, &format!("{SLEEP_PREFIX}-fn"), n, BIG)
        .await?;
    let pid = env.start_worker(procs, 1024, &[], &[]).await?;
    env.drain(pid, Duration::from_secs(180)).await?;
    let rss = peak_rss_kib(pid);
    procs.stop(pid, Duration::from_secs(10));
    env.delete_consumer(WORKER_CONSUMER).await;
    Ok(rss as f64 / 1024.0)
}

async fn baseline_peak(procs: &mut Procs, env: &Env, n: usize) -> Res<f64> {
    env.fill(STREAM, &format!("{SLEEP_PREFIX}-fn"), n, BIG)
        .await?;
    create_consumer(&env.js, BASELINE_CONSUMER).await?;
    let pid = env.start_baseline(procs, 1024, &format!("{SLEEP_PREFIX}-fn"))?;
    env.drain(pid, Duration::from_secs(180)).await?;
    let rss = peak_rss_kib(pid);
    procs.stop(pid, Duration::from_secs(2));
    env.delete_consumer(BASELINE_CONSUMER).await;
    Ok(rss as f64 / 1024.0)
}
