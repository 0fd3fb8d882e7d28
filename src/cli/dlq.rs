//! `queue-worker dlq ls|show|redrive|purge`: the dead letters of a queue, through NATS alone
//! (exit codes in `operate.rs`).

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::operate::{Common, confirm, finish, open, progress};
use crate::admin::dead_letters::{self as dl, Filter, Selection};
use crate::admin::{StreamSettings, render};
use crate::config::Config;

#[derive(Args, Debug, Clone)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum DlqAction {
    /// The dead letters the filters take, oldest first.
    Ls(LsArgs),
    /// One dead letter with its headers (its body only with `--body`).
    Show(ShowArgs),
    /// Store dead letters in their queue again, to run with a fresh attempt count under the
    /// same call id; each is removed from the dead letters once stored.
    Redrive(ActArgs),
    /// Delete dead letters; asks first on a terminal.
    Purge(ActArgs),
}

/// Which queue, and which of its dead letters.
#[derive(Args, Debug, Clone)]
pub struct Filters {
    /// The queue (default: `queue_name`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this function's (`name` or `name.namespace`).
    #[arg(long)]
    pub function: Option<String>,
    /// Only those with this reason (`exhausted`, `expired`, `poison`, `failed`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those dead-lettered within this long (`90m`, `2h`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
}

impl Filters {
    fn filter(&self) -> Filter {
        Filter {
            function: self.function.clone(),
            reason: self.reason.clone(),
            since: self.since,
        }
    }

    fn any(&self) -> bool {
        self.function.is_some() || self.reason.is_some() || self.since.is_some()
    }
}

#[derive(Args, Debug, Clone)]
pub struct LsArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// At most this many (up to 10000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// The dead letter's sequence (`dlq ls` shows it).
    pub sequence: u64,
    /// The queue (default: `queue_name`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Also print the stored message (it may hold personal data).
    #[arg(long)]
    pub body: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct ActArgs {
    /// Dead letters by sequence; or none, and the filters (or `--all`) say which.
    pub sequences: Vec<u64>,
    #[command(flatten)]
    pub filters: Filters,
    /// Every dead letter of the queue (when no sequence or filter is given).
    #[arg(long)]
    pub all: bool,
    /// Say what would be done, and do nothing (redrive).
    #[arg(long)]
    pub dry_run: bool,
    /// Do it without asking (purge).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub common: Common,
}

pub async fn main(args: DlqArgs) -> ExitCode {
    match args.action {
        DlqAction::Ls(a) => ls(a).await,
        DlqAction::Show(a) => show(a).await,
        DlqAction::Redrive(a) => act("dlq redrive", a).await,
        DlqAction::Purge(a) => act("dlq purge", a).await,
    }
}

async fn ls(args: LsArgs) -> ExitCode {
    let (opened, queue) = match open("dlq ls", &args.common, args.filters.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let at = (
        opened.config.default_function_name.as_str(),
        SystemTime::now(),
    );
    let filter = args.filters.filter();
    let done = dl::list(opened.broker.as_ref(), &queue, &filter, args.limit, at).await;
    finish("dlq ls", args.common.json, done, |l| {
        render::dead_letters(l)
    })
}

async fn show(args: ShowArgs) -> ExitCode {
    let (opened, queue) = match open("dlq show", &args.common, args.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let found = dl::show(opened.broker.as_ref(), &queue, args.sequence, args.body).await;
    let found = found.and_then(|d| {
        d.ok_or_else(|| {
            let what = format!("no dead letter {} in queue {queue}", args.sequence);
            crate::admin::AdminError::NotFound(what)
        })
    });
    finish("dlq show", args.common.json, found, render::dead_letter)
}

/// `redrive` or `purge`: of the sequences given, or of what the filters (or `--all`) take.
async fn act(command: &str, args: ActArgs) -> ExitCode {
    let selection = match selection(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("queue-worker {command}: {e}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let (opened, queue) = match open(command, &args.common, args.filters.queue.as_ref()).await {
        Ok(o) => o,
        Err(code) => return code,
    };
    let ctx = context(&opened.config, &queue);
    let op = opened.broker.as_ref();
    let json = args.common.json;
    if command == "dlq purge" {
        let what = format!("delete the selected dead letters of queue {queue}");
        if let Err(code) = confirm(command, &what, args.yes) {
            return code;
        }
        let done = dl::purge(op, &ctx, &selection, &mut progress("deleted")).await;
        let all_found = done.as_ref().is_ok_and(|d| d.not_found.is_empty());
        let code = finish(command, json, done, |d| {
            format!("deleted {} dead letters of queue {}", d.purged, d.queue)
        });
        return if all_found { code } else { ExitCode::FAILURE };
    }
    let mut told = progress("redriven");
    let done = dl::redrive(op, &ctx, &selection, args.dry_run, &mut told).await;
    let all_found = done.as_ref().is_ok_and(|d| d.not_found.is_empty());
    let code = finish(command, json, done, |d| {
        let verb = if d.dry_run {
            "would redrive"
        } else {
            "redrove"
        };
        let mut text = format!(
            "{verb} {} dead letters of queue {}",
            d.redriven.len(),
            d.queue
        );
        if !d.not_found.is_empty() {
            text.push_str(&format!("; not found: {:?}", d.not_found));
        }
        text
    });
    if all_found { code } else { ExitCode::FAILURE }
}

fn selection(args: &ActArgs) -> Result<Selection, String> {
    match (args.sequences.is_empty(), args.filters.any(), args.all) {
        (false, false, false) => Ok(Selection::Sequences(args.sequences.clone())),
        (false, _, _) => Err("give sequences, or filters, not both".into()),
        (true, true, _) | (true, false, true) => Ok(Selection::Matching(args.filters.filter())),
        (true, false, false) => {
            Err("say which dead letters: sequences, --function/--reason/--since, or --all".into())
        }
    }
}

fn context<'a>(config: &'a Config, queue: &'a str) -> dl::Context<'a> {
    dl::Context {
        queue,
        default_namespace: &config.default_function_name,
        settings: StreamSettings::of(config),
        status: !config.status_ttl.is_zero(),
        now: SystemTime::now(),
    }
}
