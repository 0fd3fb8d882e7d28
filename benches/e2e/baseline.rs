//! The baseline: the bare async-nats + reqwest loop the worker is compared with.

use super::*;

/// The bare loop the worker is compared with: async-nats' own pull stream (batches of
/// `concurrency`, refilled as it likes), one task per message behind a semaphore of
/// `concurrency` permits, POST the message bytes as they are with reqwest, read the answer,
/// ack. No decoding, no retries, no metrics, no logs. Runs until killed.
pub(crate) async fn baseline(o: Opts) -> Res<()> {
    let concurrency: usize = o.num("concurrency", 64);
    let url = o.str("url", "");
    let client = async_nats::connect(o.str("nats", "nats://127.0.0.1:4222"))
        .await
        .map_err(err("connect"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(o.str("stream", STREAM))
        .await
        .map_err(err("stream"))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(&o.str("consumer", BASELINE_CONSUMER))
        .await
        .map_err(err("consumer"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(err("http client"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .messages()
        .await
        .map_err(err("messages"))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    println!("ready");
    loop {
        let permit = slots.clone().acquire_owned().await.map_err(err("permit"))?;
        let Some(m) = messages.next().await else {
            return Ok(());
        };
        let Ok(m) = m else { continue };
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            if let Ok(resp) = http.post(&url).body(m.payload.clone()).send().await {
                let _ = resp.bytes().await;
            }
            let _ = m.ack().await;
            drop(permit);
        });
    }
}
