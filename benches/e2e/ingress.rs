//! The ingress section: `POST /async-function/…` → `202` after the PubAck, against a bare
//! async-nats publisher sending the same messages; trials alternate.

use super::*;

/// Both into a stream the worker does not read; `--ingress-requests` per trial with
/// `--ingress-concurrency` in flight.
pub(crate) async fn ingress(
    plan: &Plan,
    procs: &mut Procs,
    env: &Env,
    summary: &mut Summary,
) -> Res<()> {
    let n: usize = plan
        .opts
        .num("ingress-requests", if plan.quick { 5_000 } else { 30_000 });
    let conc: usize = plan.opts.num("ingress-concurrency", 64);
    env.broker
        .ensure_stream(&StreamSpec::work_queue(INGRESS_QUEUE, Storage::File, 1))
        .await
        .map_err(err("stream"))?;
    let (mut ingress_rates, mut cpu, mut bare_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.trials {
        let (rate, cpu_us) = ingress_trial(procs, env, n, conc, plan.body_bytes).await?;
        ingress_rates.push(rate);
        cpu.push(cpu_us);
        let t = Instant::now();
        let published = bare_publish(&env.js, &env.cfg, n, conc, plan.body_bytes).await?;
        bare_rates.push(published as f64 / t.elapsed().as_secs_f64());
        env.purge(&format!("OF_{INGRESS_QUEUE}")).await?;
        eprintln!(
            "  ingress {rate:.0}/s, bare publisher {:.0}/s",
            bare_rates.last().copied().unwrap_or(0.0)
        );
    }
    let (i, b, cpu) = (spread(&ingress_rates), spread(&bare_rates), spread(&cpu));
    let ratio = i.median / b.median;
    let pairs = pair_ratios(&ingress_rates, &bare_rates);
    println!();
    println!(
        "ingress: {} accepted requests/s ({n} × POST → 202 after PubAck per trial, {conc} connections, {} CPU µs/request in the ingress process); bare async-nats publisher: {} msg/s ({conc} publishes in flight, same messages); ratio {ratio:.2} (pairs {})",
        i.show(0),
        cpu.show(1),
        b.show(0),
        pairs.show(2),
    );
    summary.section(
        "ingress",
        serde_json::json!({
            "requests_per_trial": n, "connections": conc,
            "ingress_per_s": i.json(), "bare_publisher_per_s": b.json(),
            "ingress_cpu_us_per_request": cpu.json(), "ratio": ratio, "pair_ratios": pairs.json(),
        }),
    );
    summary.set_final("ingress-ratio", ratio);
    Ok(())
}

/// One ingress trial with a fresh worker: (accepted/s, CPU µs per request of its process).
async fn ingress_trial(
    procs: &mut Procs,
    env: &Env,
    n: usize,
    conc: usize,
    body_bytes: usize,
) -> Res<(f64, f64)> {
    let ingress = format!("127.0.0.1:{}", free_port()?);
    let pid = env
        .start_worker(
            procs,
            1,
            &[("function_queues", format!("bench-ingress={INGRESS_QUEUE}"))],
            &["run", "--ingress", &ingress],
        )
        .await?;
    let t = Instant::now();
    let c0 = cpu_time(pid);
    let accepted = closed_posts(&env.http, &ingress, n, conc, body_bytes).await?;
    let rate = accepted as f64 / t.elapsed().as_secs_f64();
    let cpu_us = (cpu_time(pid) - c0).as_secs_f64() * 1e6 / accepted.max(1) as f64;
    procs.stop(pid, Duration::from_secs(10));
    env.purge(&format!("OF_{INGRESS_QUEUE}")).await?;
    if accepted < n as u64 {
        return Err(format!("ingress: {accepted} of {n} requests accepted"));
    }
    Ok((rate, cpu_us))
}

/// `n` POSTs to the ingress with `conc` in flight (closed loop); returns the 202s.
pub(crate) async fn closed_posts(
    http: &reqwest::Client,
    ingress: &str,
    n: usize,
    conc: usize,
    body_bytes: usize,
) -> Res<u64> {
    let url = format!("http://{ingress}/async-function/bench-ingress");
    let body = Bytes::from(vec![b'x'; body_bytes]);
    let ok = futures::stream::iter(0..n)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                matches!(
                    http.post(&url).body(body).timeout(Duration::from_secs(10)).send().await,
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED
                )
            }
        })
        .buffer_unordered(conc)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    Ok(ok as u64)
}

/// The bare publisher: `n` messages (as the ingress would build them) with `conc` publishes
/// waiting for their PubAck at a time.
pub(crate) async fn bare_publish(
    js: &jetstream::Context,
    cfg: &Config,
    n: usize,
    conc: usize,
    body_bytes: usize,
) -> Res<u64> {
    let mut cfg = cfg.clone();
    cfg.function_queues
        .insert("bench-ingress".into(), INGRESS_QUEUE.into());
    let ok = futures::stream::iter(0..n)
        .map(|i| {
            let js = js.clone();
            let m = message(&cfg, "bench-ingress", body_bytes, i);
            async move {
                match m {
                    Ok(m) => publish_acked(&js, m).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(conc)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    Ok(ok as u64)
}
