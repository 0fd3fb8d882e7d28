//! `queue-worker cancel CALL_ID [CALL_ID…] [--queue Q]`: cancel calls through NATS, as
//! `DELETE /async-function/{call-id}` does. One line per call. Exit 0 when every call was
//! cancelled, 1 when some was unknown or already final (or NATS failed meanwhile), 2 for bad
//! settings, refused credentials or call status turned off.

use clap::Args;
use std::process::ExitCode;

use crate::config::ConfigArgs;
use crate::status::cancel::Outcome;
use crate::status::{Buckets, cancel_in, unix_ms};

#[derive(Args, Debug, Clone)]
pub struct CancelArgs {
    /// The calls' ids (`X-Call-Id`).
    #[arg(required = true)]
    pub call_ids: Vec<String>,
    /// The queue to look in (default: `queue_name` and every `function_queues` queue).
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn main(args: CancelArgs) -> ExitCode {
    let opened = match super::calls::open("cancel", &args.config, args.queue.as_ref(), true).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let (config, queues, broker) = (opened.config, opened.queues, opened.broker);
    let buckets = Buckets::of(&config);
    let mut all = true;
    for call_id in &args.call_ids {
        all &= cancel_one(broker.as_ref(), buckets, &queues, call_id).await;
    }
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Cancel `call_id` in the first of `queues` that knows it, and say what happened; `true`
/// when it was cancelled.
async fn cancel_one(
    store: &dyn crate::broker::KeyValue,
    buckets: Buckets,
    queues: &[String],
    call_id: &str,
) -> bool {
    let at = unix_ms(std::time::SystemTime::now());
    for queue in queues {
        match cancel_in(store, buckets, queue, call_id, at).await {
            Ok(Outcome::Unknown) => {}
            Ok(Outcome::Cancelled) => {
                super::say(format_args!("{call_id}: cancelled ({queue})"));
                return true;
            }
            Ok(Outcome::Final(state)) => {
                super::say(format_args!(
                    "{call_id}: already ended: {} ({queue})",
                    state.as_str()
                ));
                return false;
            }
            Err(e) => {
                eprintln!("queue-worker cancel: {call_id}: cannot cancel: {e}");
                return false;
            }
        }
    }
    super::say(format_args!(
        "{call_id}: unknown in {} (never stored, older than status_ttl, or not yet delivered)",
        queues.join(", ")
    ));
    false
}
