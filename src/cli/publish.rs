//! `queue-worker publish FUNCTION [--data @file|-|TEXT] [--header K:V]... [--callback URL]
//! [--delay DURATION] [--queue Q] [--path P] [--query Q]`: enqueue one invocation exactly as the
//! ingress would.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{EXIT_USAGE, load_config};
use crate::broker::Consume;
use crate::config::{Config, ConfigArgs};
use crate::ingress::{self, Ingress, Prepared, Submission};
use crate::telemetry::metrics::Metrics;
use crate::wire::{canonical_header_key, validate_function_name, validate_path};

#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Function to invoke: `name` or `name.namespace`.
    pub function: String,
    /// Request body: `@FILE` reads a file, `-` reads standard input, anything else is sent as is.
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// Extra header `Key: Value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "K:V")]
    pub headers: Vec<String>,
    /// Callback URL for the result (`X-Callback-Url`).
    #[arg(long)]
    pub callback: Option<String>,
    /// Do not invoke before this long from now (`X-Delay`), e.g. 90s; at most `max_delay`.
    #[arg(long, value_name = "DURATION")]
    pub delay: Option<String>,
    /// Queue to publish to (default: routing by function_queues, else queue_name).
    #[arg(long)]
    pub queue: Option<String>,
    /// Sub-path of the function, e.g. /employees/100.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Raw query string, without '?'.
    #[arg(long, default_value = "")]
    pub query: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("queue-worker publish: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn read_data(data: &Option<String>, limit: usize) -> Result<bytes::Bytes, String> {
    let bytes = match data.as_deref() {
        None => Vec::new(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(limit as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            buf
        }
        Some(s) if s.starts_with('@') => {
            std::fs::read(&s[1..]).map_err(|e| format!("cannot read {}: {e}", &s[1..]))?
        }
        Some(s) => s.as_bytes().to_vec(),
    };
    if bytes.len() > limit {
        return Err(format!(
            "body too large: the limit is {limit} bytes (max_body_bytes)"
        ));
    }
    Ok(bytes.into())
}

pub async fn main(args: PublishArgs) -> ExitCode {
    let mut config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    super::start_logs(&config);
    if let Some(q) = &args.queue {
        // An explicit queue wins over routing.
        config
            .function_queues
            .insert(args.function.clone(), q.clone());
    }
    let submission = match submission(&args, config.max_body_bytes) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let clock = crate::clock::SystemClock;
    let prepared = match ingress::prepare(&config, &clock, submission) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    publish(Arc::new(config), prepared).await
}

/// The invocation the arguments describe, checked as the ingress checks a request.
fn submission(args: &PublishArgs, max_body_bytes: usize) -> Result<Submission, String> {
    validate_function_name(&args.function).map_err(|e| e.to_string())?;
    let path = if args.path.is_empty() || args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    validate_path(&path).map_err(|e| e.to_string())?;
    let body = read_data(&args.data, max_body_bytes)?;
    let mut header: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            return Err(format!("invalid --header {h:?}: expected Key: Value"));
        };
        header
            .entry(canonical_header_key(k.trim()))
            .or_default()
            .push(v.trim().to_string());
    }
    if let Some(cb) = &args.callback {
        header.insert("X-Callback-Url".into(), vec![cb.clone()]);
    }
    if let Some(delay) = &args.delay {
        header.insert(ingress::delay::DELAY_HEADER.into(), vec![delay.clone()]);
    }
    Ok(Submission {
        function: args.function.clone(),
        path,
        query: args.query.trim_start_matches('?').to_string(),
        header,
        host: String::new(),
        body,
    })
}

/// Connect (giving up after 30 s), store the message, print its call id.
async fn publish(config: Arc<Config>, prepared: Prepared) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    let broker = match super::connect_for_command(&config, &metrics, "publish").await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let status_stop = tokio_util::sync::CancellationToken::new();
    let calls = (!config.status_ttl.is_zero())
        .then(|| crate::status::Calls::start(broker.clone(), &config, status_stop.clone()));
    let state = Ingress {
        auth: None,
        operator: None,
        ..Ingress::over(
            broker.clone(),
            config.clone(),
            Arc::new(crate::clock::SystemClock),
            metrics,
            calls.clone(),
        )
    };
    match ingress::submit_once(&state, &prepared).await {
        Ok(ingress::Stored::RepeatInFlight) => {
            eprintln!(
                "queue-worker publish: a call with this Idempotency-Key is being queued right now; \
                 nothing new was queued (run again shortly for its call id)"
            );
            ExitCode::FAILURE
        }
        Ok(stored) => {
            let id = stored.call_id(&prepared).unwrap_or(&prepared.call_id);
            super::say(format_args!("{id}"));
            status_stop.cancel();
            if let Some(calls) = &calls {
                calls.flush(std::time::Duration::from_secs(2)).await;
            }
            let _ = broker.flush().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("queue-worker publish: cannot queue the invocation: {e}");
            ExitCode::FAILURE
        }
    }
}
