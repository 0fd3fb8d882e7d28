//! What the admin commands (`queue …`, `dlq …`) share: output as a table or JSON, the
//! confirmation asked on a terminal, progress on a terminal, and the exit codes:
//! 0 done; 1 not done (NATS unreachable or failing, no such queue or dead letter, declined);
//! 2 bad usage or settings (also: a destructive command without `--yes` and no terminal to ask).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::EXIT_USAGE;
use crate::admin::AdminError;
use crate::config::ConfigArgs;

/// Options every admin command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Print JSON (stable fields, for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Print `value` as JSON, or as `table` draws it.
fn print<T: Serialize>(json: bool, value: &T, table: impl FnOnce(&T) -> String) {
    let text = if json {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        table(value)
    };
    super::say(format_args!("{text}"));
}

/// Print what `done` gave (JSON, or as `table` draws it) and exit 0; or say why it failed.
pub fn finish<T: Serialize>(
    command: &str,
    json: bool,
    done: Result<T, AdminError>,
    table: impl FnOnce(&T) -> String,
) -> ExitCode {
    match done {
        Ok(value) => {
            print(json, &value, table);
            ExitCode::SUCCESS
        }
        Err(e) => failed(command, &e),
    }
}

/// Load the settings and connect for `command`; the queue is `queue`, or `queue_name`.
pub async fn open(
    command: &str,
    common: &Common,
    queue: Option<&String>,
) -> Result<(super::calls::Opened, String), ExitCode> {
    let opened = super::calls::open(command, &common.config, None, false).await?;
    let queue = queue.cloned().unwrap_or(opened.config.queue_name.clone());
    Ok((opened, queue))
}

/// The exit code and message of a failed operation.
fn failed(command: &str, e: &AdminError) -> ExitCode {
    eprintln!("queue-worker {command}: {e}");
    match e {
        AdminError::Invalid(_) => ExitCode::from(EXIT_USAGE),
        AdminError::NoQueue(_) | AdminError::NotFound(_) | AdminError::Broker(_) => {
            ExitCode::FAILURE
        }
    }
}

/// Whether to go on with `what`: yes with `--yes`; else asked on a terminal; else refused
/// (exit 2, saying to pass `--yes`).
pub fn confirm(command: &str, what: &str, yes: bool) -> Result<(), ExitCode> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("queue-worker {command}: {what}: pass --yes to do it without a terminal to ask");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    eprint!("{what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        eprintln!("queue-worker {command}: not done");
        Err(ExitCode::FAILURE)
    }
}

/// Progress on stderr when it is a terminal: `\r<verb> N of M`, for more than one.
pub fn progress(verb: &'static str) -> impl FnMut(usize, usize) + Send {
    let on = std::io::stderr().is_terminal();
    move |n, total| {
        if on && total > 1 {
            eprint!("\r{verb} {n} of {total}");
            if n == total {
                eprintln!();
            }
        }
    }
}
