//! `queue-worker flow ls|set|unset`: a function's flow limits (`max_concurrency`, `rate`,
//! `burst`) across every replica, pinned in NATS so that they win over the calls' annotations
//! (exit codes in `operate.rs`).

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::operate::{finish, open};
use super::queue::Target;
use crate::admin::{AdminError, flow, render};
use crate::flow::{Limits, Rate};

#[derive(Args, Debug, Clone)]
pub struct FlowArgs {
    #[command(subcommand)]
    pub action: FlowAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum FlowAction {
    /// Every function of a queue with flow limits: pinned, last enforced, running now.
    Ls(Target),
    /// Pin a function's limits: every replica follows within a second or two, for every call
    /// of it, whatever its annotations say, until `unset`.
    Set(SetArgs),
    /// Remove a function's pin: its calls' annotations decide again.
    Unset(UnsetArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    /// The function (`name` or `name.namespace`), or with --key a flow key.
    pub function: String,
    /// Pin the limits of the flow key given (`X-Flow-Control-Key`), not of a function: they
    /// win over the calls' `X-Flow-Control-Value`.
    #[arg(long)]
    pub key: bool,
    /// Calls of it in flight at once across every replica (1 to 10000).
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Calls of it started per period across every replica: `R/PERIOD`, e.g. `5/1s`.
    #[arg(long, value_name = "R/PERIOD")]
    pub rate: Option<Rate>,
    /// Calls that may start at once beyond the rate after a quiet spell (with --rate).
    #[arg(long, value_name = "B", default_value_t = 0)]
    pub burst: u32,
    /// The queue (default: `queue_name`).
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub common: super::operate::Common,
}

#[derive(Args, Debug, Clone)]
pub struct UnsetArgs {
    /// The function (`name` or `name.namespace`), or with --key a flow key.
    pub function: String,
    /// Unpin a flow key, not a function.
    #[arg(long)]
    pub key: bool,
    /// The queue (default: `queue_name`).
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub common: super::operate::Common,
}

pub async fn main(args: FlowArgs) -> ExitCode {
    match args.action {
        FlowAction::Ls(target) => ls(target).await,
        FlowAction::Set(a) => {
            let limits = match pinned(&a) {
                Ok(l) => l,
                Err(e) => {
                    return finish::<()>("flow set", false, Err(AdminError::Invalid(e)), |_| {
                        String::new()
                    });
                }
            };
            let target = (a.function.as_str(), a.key);
            set(
                "flow set",
                target,
                a.queue.as_ref(),
                &a.common,
                Some(limits),
            )
            .await
        }
        FlowAction::Unset(a) => {
            let target = (a.function.as_str(), a.key);
            set("flow unset", target, a.queue.as_ref(), &a.common, None).await
        }
    }
}

/// The limits `flow set` pins; `Err` when none is given or one is out of range.
fn pinned(a: &SetArgs) -> Result<Limits, String> {
    let limits = Limits {
        max_concurrency: a.max_concurrency,
        rate: a.rate,
        burst: a.burst,
    };
    if limits.is_none() {
        return Err("give --max-concurrency, --rate or both (`flow unset` removes a pin)".into());
    }
    // The check's field names, as the flags spell them.
    limits
        .check()
        .map_err(|e| format!("--{}", e.replace('_', "-")))?;
    Ok(limits)
}

async fn ls(target: Target) -> ExitCode {
    let (opened, queue) = match open("flow ls", &target.common, target.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let done = flow::list(opened.broker.as_ref(), &queue, SystemTime::now()).await;
    finish("flow ls", target.common.json, done, |r| render::flow(r))
}

/// Pin (or unpin) `target`: a function, or a flow key when its flag is set.
async fn set(
    command: &str,
    target: (&str, bool),
    queue: Option<&String>,
    common: &super::operate::Common,
    limits: Option<Limits>,
) -> ExitCode {
    let (opened, queue) = match open(command, common, queue).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let spec = crate::flow::spec(&opened.config, &queue);
    let namespace = opened.config.default_function_name.as_str();
    let target = match target {
        (key, true) => flow::PinTarget::Key(key),
        (name, false) => flow::PinTarget::Function { name, namespace },
    };
    let done = flow::set(opened.broker.as_ref(), &spec, &queue, target, limits).await;
    finish(command, common.json, done, |r| render::flow(r))
}
