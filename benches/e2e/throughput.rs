//! The throughput section: the bare loop against the worker over the same pre-filled workload,
//! trials alternating, at each concurrency.

use super::*;

/// Per concurrency: baseline and worker trials alternate; the table gives the medians (and
/// their spread). Returns the worker's median rate at the highest concurrency.
pub(crate) async fn throughput(
    plan: &Plan,
    procs: &mut Procs,
    env: &Env,
    summary: &mut Summary,
) -> Res<f64> {
    println!();
    println!(
        "| concurrency | baseline msg/s | worker msg/s | ratio (pairs) | CPU µs/msg baseline / worker | nats-server µs/msg (b / w) | function µs/msg (b / w) | requests to NATS per msg besides the ack (b / w) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    let mut worker_rate = 0.0;
    for &c in &plan.concurrencies {
        let mut b_runs = Vec::new();
        let mut w_runs = Vec::new();
        for _ in 0..plan.trials {
            b_runs.push(baseline_trial(plan, procs, env, c).await?);
            w_runs.push(worker_trial(plan, procs, env, c).await?);
            let conns = env.fn_stats(false).await?.get(5).copied().unwrap_or(0);
            eprintln!(
                "  c={c}: baseline {:.0}/s, worker {:.0}/s ({conns} connections to the function so far)",
                b_runs.last().map_or(0.0, |d: &Drain| d.rate),
                w_runs.last().map_or(0.0, |d: &Drain| d.rate)
            );
        }
        let (b, w) = (Trials(&b_runs), Trials(&w_runs));
        let (b_rate, w_rate) = (b.of(|d| d.rate), w.of(|d| d.rate));
        let ratio = w_rate.median / b_rate.median;
        let pairs = pair_ratios(&w_rate.trials, &b_rate.trials);
        let cpu = |t: &Trials, i: usize| t.of(|d| d.cpu_us[i]).median;
        let req = |t: &Trials| t.of(|d| d.requests_per_msg).median;
        println!(
            "| {c} | {} | {} | {ratio:.2} ({}) | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.3} / {:.3} |",
            b_rate.show(0),
            w_rate.show(0),
            pairs.show(2),
            cpu(&b, 0),
            cpu(&w, 0),
            cpu(&b, 1),
            cpu(&w, 1),
            cpu(&b, 2),
            cpu(&w, 2),
            req(&b),
            req(&w),
        );
        rows.push(serde_json::json!({
            "concurrency": c,
            "baseline_msg_per_s": b_rate.json(),
            "worker_msg_per_s": w_rate.json(),
            "ratio": ratio,
            "pair_ratios": pairs.json(),
            "cpu_us_per_msg": {
                "baseline": [cpu(&b, 0), cpu(&b, 1), cpu(&b, 2)],
                "worker": [cpu(&w, 0), cpu(&w, 1), cpu(&w, 2)],
                "order": ["consumer", "nats-server", "function"],
            },
            "requests_per_msg": { "baseline": req(&b), "worker": req(&w) },
        }));
        summary.set_final("throughput-ratio", ratio);
        worker_rate = w_rate.median;
    }
    summary.section("throughput", serde_json::Value::Array(rows));
    Ok(worker_rate)
}

async fn baseline_trial(plan: &Plan, procs: &mut Procs, env: &Env, c: usize) -> Res<Drain> {
    env.fill(STREAM, "bench-fn", plan.messages, plan.body_bytes)
        .await?;
    create_consumer(&env.js, BASELINE_CONSUMER).await?;
    let pid = env.start_baseline(procs, c, "bench-fn")?;
    let d = env.drain(pid, Duration::from_secs(180)).await;
    procs.stop(pid, Duration::from_secs(2));
    env.delete_consumer(BASELINE_CONSUMER).await;
    d
}

async fn worker_trial(plan: &Plan, procs: &mut Procs, env: &Env, c: usize) -> Res<Drain> {
    env.fill(STREAM, "bench-fn", plan.messages, plan.body_bytes)
        .await?;
    let pid = env.start_worker(procs, c, &[], &[]).await?;
    let d = env.drain(pid, Duration::from_secs(180)).await;
    procs.stop(pid, Duration::from_secs(10));
    env.delete_consumer(WORKER_CONSUMER).await;
    d
}

/// One side's trials.
struct Trials<'a>(&'a [Drain]);

impl Trials<'_> {
    fn of(&self, f: impl Fn(&Drain) -> f64) -> Spread {
        spread(&self.0.iter().map(f).collect::<Vec<_>>())
    }
}

pub(crate) async fn create_consumer(js: &jetstream::Context, name: &str) -> Res<()> {
    let s = js.get_stream(STREAM).await.map_err(err("get stream"))?;
    s.create_consumer(pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        max_deliver: -1,
        max_ack_pending: -1,
        ..Default::default()
    })
    .await
    .map_err(err("create consumer"))?;
    Ok(())
}
