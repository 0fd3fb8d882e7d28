//! `queue-worker status CALL_ID [--queue Q]`: a call's status from NATS, as
//! `GET /system/calls/{call-id}` gives it (pretty JSON). Exit 0 when found, 1 when unknown or
//! NATS cannot be reached, 2 for bad settings or refused credentials.

use clap::Args;
use std::process::ExitCode;

use crate::config::ConfigArgs;

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The call's id (`X-Call-Id`).
    pub call_id: String,
    /// The queue to look in (default: `queue_name` and every `function_queues` queue).
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn main(args: StatusArgs) -> ExitCode {
    let opened = match super::calls::open("status", &args.config, args.queue.as_ref(), false).await
    {
        Ok(o) => o,
        Err(code) => return code,
    };
    let (queues, broker) = (opened.queues, opened.broker);
    for queue in &queues {
        match crate::status::read(broker.as_ref(), queue, &args.call_id).await {
            Ok(Some(status)) => {
                let mut answer = serde_json::to_value(&status).unwrap_or_default();
                if let Some(map) = answer.as_object_mut() {
                    map.insert("call_id".into(), args.call_id.clone().into());
                    map.insert("queue".into(), queue.clone().into());
                }
                let text = serde_json::to_string_pretty(&answer).unwrap_or_default();
                super::say(format_args!("{text}"));
                return ExitCode::SUCCESS;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("queue-worker status: cannot read call status: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!(
        "queue-worker status: unknown call {:?} in {} (never stored, or older than status_ttl)",
        args.call_id,
        queues.join(", ")
    );
    ExitCode::FAILURE
}
