//! `queue-worker queue ls|stats|pause|resume|purge|reset`: what waits in the queues, holding
//! and clearing them, through NATS alone (exit codes in `operate.rs`).

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::operate::{Common, confirm, finish, open};
use crate::admin::{StreamSettings, pauses, queues, render};

#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: QueueAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum QueueAction {
    /// Every queue: messages, in flight, oldest message, functions, consumers, mode, delayed
    /// calls and dead letters.
    Ls(Common),
    /// One queue (default: `queue_name`), per function: messages, in flight, oldest message.
    Stats(Target),
    /// Stop the workers of a queue (or of one function in it) from starting calls; new calls
    /// are still accepted. Kept in NATS: every replica follows within a second or two, and
    /// across restarts, until `resume`.
    Pause(PauseArgs),
    /// Let the workers start the calls of a paused queue (or function) again.
    Resume(PauseArgs),
    /// Remove a queue's waiting messages and delayed calls, or only one function's
    /// messages; asks first on a terminal.
    Purge(PurgeArgs),
    /// Start the queue afresh: its messages and consumers deleted, its stream as the current
    /// settings make it (deleted and made again from NATS 2.12; emptied before); running
    /// workers make their consumers again. Delayed calls and dead letters are kept.
    Reset(ResetArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The queue (default: `queue_name`).
    pub queue: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this function's messages (`name` or `name.namespace`).
    #[arg(long)]
    pub function: Option<String>,
    /// Do it without asking.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PauseArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this function (`name` or `name.namespace`).
    #[arg(long)]
    pub function: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ResetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Do it without asking.
    #[arg(long)]
    pub yes: bool,
}

pub async fn main(args: QueueArgs) -> ExitCode {
    match args.action {
        QueueAction::Ls(common) => ls(common).await,
        QueueAction::Stats(target) => stats(target).await,
        QueueAction::Pause(a) => pause(a, true).await,
        QueueAction::Resume(a) => pause(a, false).await,
        QueueAction::Purge(purge_args) => purge(purge_args).await,
        QueueAction::Reset(reset_args) => reset(reset_args).await,
    }
}

async fn ls(common: Common) -> ExitCode {
    let (opened, _) = match open("queue ls", &common, None).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let done = queues::list(opened.broker.as_ref(), SystemTime::now()).await;
    finish("queue ls", common.json, done, |r| render::queues(r))
}

async fn stats(target: Target) -> ExitCode {
    let (opened, queue) = match open("queue stats", &target.common, target.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let done = queues::stats(opened.broker.as_ref(), &queue, SystemTime::now()).await;
    finish("queue stats", target.common.json, done, render::stats)
}

async fn pause(args: PauseArgs, paused: bool) -> ExitCode {
    let command = if paused {
        "queue pause"
    } else {
        "queue resume"
    };
    let target = &args.target;
    let (opened, queue) = match open(command, &target.common, target.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let config = &opened.config;
    let spec = crate::pause::spec(config, &queue);
    let namespace = config.default_function_name.as_str();
    let function = args.function.as_deref().map(|f| (f, namespace));
    let done = pauses::set(opened.broker.as_ref(), &spec, &queue, function, paused).await;
    finish(command, target.common.json, done, |r| {
        let functions = match r.paused_functions.is_empty() {
            true => "none".to_string(),
            false => r.paused_functions.join(", "),
        };
        let queue_paused = if r.paused { "yes" } else { "no" };
        format!(
            "queue {}: paused: {queue_paused}; functions paused: {functions}",
            r.queue
        )
    })
}

async fn purge(args: PurgeArgs) -> ExitCode {
    let target = &args.target;
    let (opened, queue) = match open("queue purge", &target.common, target.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let what = match &args.function {
        Some(f) => format!("purge the messages of {f} in queue {queue}"),
        None => format!("purge every message and delayed call of queue {queue}"),
    };
    if let Err(code) = confirm("queue purge", &what, args.yes) {
        return code;
    }
    let namespace = opened.config.default_function_name.as_str();
    let function = args.function.as_deref().map(|f| (f, namespace));
    let done = queues::purge(opened.broker.as_ref(), &queue, function).await;
    finish("queue purge", target.common.json, done, |d| {
        format!(
            "purged {} messages and {} delayed calls from queue {}",
            d.purged, d.delayed_purged, d.queue
        )
    })
}

async fn reset(args: ResetArgs) -> ExitCode {
    let target = &args.target;
    let (opened, queue) = match open("queue reset", &target.common, target.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let what = format!("reset queue {queue}: delete every message in it");
    if let Err(code) = confirm("queue reset", &what, args.yes) {
        return code;
    }
    let settings = StreamSettings::of(&opened.config);
    let done = queues::reset(opened.broker.as_ref(), &queue, settings).await;
    finish("queue reset", target.common.json, done, |d| {
        let how = match d.recreated {
            true => "the stream is made again",
            false => "the stream is emptied and set as configured",
        };
        format!(
            "reset queue {}: {} messages and {} consumers deleted; {how}",
            d.queue, d.deleted_messages, d.deleted_consumers
        )
    })
}
