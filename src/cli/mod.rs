//! The command line: `queue-worker [run]`, `run --ingress ADDR`, `publish`.

mod calls;
pub mod cancel;
pub mod demo;
pub mod dev;
pub mod dlq;
pub mod flow;
mod operate;
pub mod publish;
pub mod queue;
pub mod status;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, ConfigArgs};
use crate::invoke::http::ReqwestInvoker;

/// Exit code for invalid configuration or usage.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "queue-worker",
    version,
    about = "Invoke HTTP functions asynchronously from a NATS JetStream queue (OpenFaaS-compatible)",
    after_help = "Without a command, queue-worker runs the worker (`run`): the OpenFaaS container \
                  entrypoint, configured by environment variables.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a command: `run` (the container entrypoint; configured by environment).
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the worker, optionally with the async ingress.
    Run(RunArgs),
    /// Publish one invocation to the queue (as the ingress would) and print its call id.
    Publish(publish::PublishArgs),
    /// All in one process with nothing installed: embedded broker, ingress, worker and demo
    /// functions.
    Dev(dev::DevArgs),
    /// Print a call's status (JSON) from NATS: exit 0, or 1 when the call is unknown.
    Status(status::StatusArgs),
    /// Cancel calls: queued or retrying ones are never invoked again, running ones are
    /// aborted. Exit 0 when all were cancelled, 1 when some were unknown or already final.
    Cancel(cancel::CancelArgs),
    /// Inspect and clear queues: `ls`, `stats`, `purge`, `reset` (exit 0 done, 1 not done, 2
    /// bad usage).
    Queue(queue::QueueArgs),
    /// Dead letters: `ls`, `show`, `redrive`, `purge` (exit 0 done, 1 not done, 2 bad usage).
    Dlq(dlq::DlqArgs),
    /// Flow limits of functions across every replica: `ls`, `set`, `unset` (exit 0 done, 1
    /// not done, 2 bad usage).
    Flow(flow::FlowArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Also serve the async ingress (`POST /async-function/...`) on this address, e.g.
    /// 127.0.0.1:8080; on an address others can reach, turn on basic_auth or api_token_file.
    #[arg(long, value_name = "ADDR")]
    pub ingress: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Parse configuration; on errors print one line per bad value.
pub fn load_config(args: &ConfigArgs) -> Result<Config, ExitCode> {
    let usage = || ExitCode::from(EXIT_USAGE);
    let mut config = Config::from_args(args).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("queue-worker: {e}");
        }
        usage()
    })?;
    config.traces =
        crate::trace::Settings::from_env(|name| std::env::var(name).ok()).map_err(|errors| {
            for e in &errors {
                eprintln!("queue-worker: {e}");
            }
            usage()
        })?;
    Ok(config)
}

/// Write `line` to stdout; `false` when stdout is gone (a closed pipe, as in `dev | head -1`),
/// where `println!` would panic.
pub fn say(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_ok()
}

/// Start logging as `config` says; then warn of environment variables that spell a setting in
/// another case (`MAX_INFLIGHT`): they are not read.
pub fn start_logs(config: &Config) {
    crate::telemetry::logging::init(config.log_encoding, config.debug);
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for (variable, setting) in crate::config::env_case::unread(names.iter().map(String::as_str)) {
        tracing::warn!(
            variable,
            setting,
            "Environment variable not read: settings are read from lower-case names"
        );
    }
}

/// A NATS secret, certificate or key file that cannot be read is a configuration error (exit
/// 2), not a NATS outage to wait out: connecting would fail the same way for good. Names the
/// first such variable.
fn check_credentials_file(config: &Config) -> Result<(), String> {
    let files = [
        ("nats_credentials_file", &config.nats_credentials_file),
        ("nats_password_file", &config.nats_password_file),
        ("nats_token_file", &config.nats_token_file),
        ("nats_tls_ca_file", &config.nats_tls_ca_file),
        ("nats_tls_cert_file", &config.nats_tls_cert_file),
        ("nats_tls_key_file", &config.nats_tls_key_file),
    ];
    for (variable, path) in files {
        let Some(path) = path else {
            continue;
        };
        if let Err(e) = std::fs::File::open(path) {
            return Err(format!("{variable}: cannot read {}: {e}", path.display()));
        }
    }
    Ok(())
}

/// The callback signing secrets, read once at start: a file that cannot be read or holds no
/// usable `whsec_` secret stops the process (exit 2) instead of failing every callback.
pub(crate) fn check_callback_signing(config: &Config) -> Result<(), String> {
    let Some(path) = &config.callback_signing_secret_file else {
        return Ok(());
    };
    let signer =
        crate::security::signing::Signer::new(crate::security::secret_file::SecretFile::new(path));
    signer
        .keys()
        .map(|_| ())
        .map_err(|e| format!("callback_signing_secret_file: {e}"))
}

/// The ingress's credentials, read once at start: a secret that cannot be read stops the
/// process (exit 2) rather than locking every caller out. Without credentials, an ingress
/// reachable from other hosts is worth a warning.
pub(crate) fn check_ingress_auth(
    config: &Config,
    ingress: Option<&TcpListener>,
) -> Result<(), String> {
    let Some(listener) = ingress else {
        return Ok(());
    };
    match config.ingress_auth() {
        Some(auth) => auth
            .preload()
            .map_err(|e| format!("ingress credentials (basic_auth/api_token_file): {e}")),
        None => {
            let open_to_others = listener.local_addr().is_ok_and(|a| !a.ip().is_loopback());
            if open_to_others {
                tracing::warn!(
                    "The ingress accepts calls from anyone who can reach it: set basic_auth or \
                     api_token_file, or listen on a loopback address"
                );
            }
            Ok(())
        }
    }
}

/// Flags of the OpenFaaS Pro queue-worker that its Helm chart passes (`-license-file=...`,
/// `-pprof=true`): accepted and ignored so this image is a drop-in for the chart's.
const IGNORED_OPENFAAS_FLAGS: &[&str] = &["license-file", "pprof"];

/// The command line without the ignored OpenFaaS flags (Go style: one or two dashes, the value
/// after `=` or as the next argument); also returns what was dropped.
pub fn strip_openfaas_flags(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::with_capacity(args.len());
    let mut dropped = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let name = a.trim_start_matches('-');
        let dashed = a.starts_with('-');
        let (flag, has_value) = match name.split_once('=') {
            Some((f, _)) => (f, true),
            None => (name, false),
        };
        if dashed && IGNORED_OPENFAAS_FLAGS.contains(&flag) {
            dropped.push(flag.to_string());
            // `-license-file /path`: the value is the next argument (pprof takes `=bool`).
            if !has_value && flag == "license-file" {
                it.next();
            }
            continue;
        }
        kept.push(a);
    }
    (kept, dropped)
}

/// The command line as `--help` shows it (`dev`'s own defaults and settings, [`dev::help`]).
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("dev", dev::help)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let (args, ignored) = strip_openfaas_flags(std::env::args().collect());
    let cli = command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&cli).unwrap_or_else(|e| e.exit());
    for flag in &ignored {
        eprintln!("queue-worker: ignoring the OpenFaaS Pro flag -{flag} (not needed here)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("queue-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Run(cli.run));
    let code = runtime.block_on(async move {
        match command {
            Command::Run(args) => run(args).await,
            Command::Publish(args) => publish::main(args).await,
            Command::Dev(args) => dev::main(args).await,
            Command::Status(args) => status::main(args).await,
            Command::Cancel(args) => cancel::main(args).await,
            Command::Queue(args) => queue::main(args).await,
            Command::Dlq(args) => dlq::main(args).await,
            Command::Flow(args) => flow::main(args).await,
        }
    });
    drop(runtime);
    // Log lines are written in batches: the last ones before the process ends.
    crate::telemetry::logging::flush();
    code
}

/// Connect to NATS for a one-shot command (`publish`, `status`, `cancel`), giving up after 30 s
/// (at once when no NATS host resolves): exit 1 when NATS cannot be reached, 2 when it refuses
/// the credentials.
pub(crate) async fn connect_for_command(
    config: &Config,
    metrics: &Arc<crate::telemetry::metrics::Metrics>,
    command: &str,
) -> Result<Arc<crate::broker::jetstream::JetStreamBroker>, ExitCode> {
    if let Some(hint) = crate::broker::jetstream::no_host_resolves(&config.nats_urls).await {
        eprintln!("queue-worker {command}: {hint}");
        return Err(ExitCode::FAILURE);
    }
    let give_up = tokio_util::sync::CancellationToken::new();
    let g = give_up.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        g.cancel();
    });
    match crate::lifecycle::connect_nats(config, metrics, &give_up).await {
        Ok(Some(broker)) => Ok(Arc::new(broker)),
        Ok(None) => {
            let urls = crate::broker::jetstream::urls_for_logs(&config.nats_urls);
            eprintln!("queue-worker {command}: NATS not reachable at {urls}");
            Err(ExitCode::FAILURE)
        }
        Err(refused) => {
            eprintln!("queue-worker {command}: {refused}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

pub(crate) async fn bind(what: &str, addr: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|e| {
        eprintln!("queue-worker: cannot listen on {addr} for the {what}: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

async fn run(args: RunArgs) -> ExitCode {
    let config = match load_config(&args.config) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    if let Err(e) = check_credentials_file(&config) {
        eprintln!("queue-worker: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    start_logs(&config);
    let metrics = match bind("metrics", &config.metrics_addr).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let ingress = match &args.ingress {
        Some(addr) => match bind("ingress", addr).await {
            Ok(listener) => Some(crate::IngressServer {
                listener,
                extra_routes: None,
            }),
            Err(code) => return code,
        },
        None => None,
    };
    let checked = check_ingress_auth(&config, ingress.as_ref().map(|i| &i.listener))
        .and_then(|()| check_callback_signing(&config));
    if let Err(e) = checked {
        eprintln!("queue-worker: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let invoker = match ReqwestInvoker::new(&config) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            eprintln!("queue-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = crate::Listeners { metrics, ingress };
    let shutdown = crate::lifecycle::shutdown_on_signals();
    let served = crate::serve(config, crate::Backend::Nats, invoker, listeners, shutdown).await;
    exit_code(served)
}

/// `0` after a clean stop; `2` (with the reason on stderr) when a setting could not be
/// honoured once the server answered.
pub(crate) fn exit_code(served: Result<(), String>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Cannot serve with this configuration");
            eprintln!("queue-worker: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn openfaas_pro_flags_are_dropped() {
        let (kept, dropped) = strip_openfaas_flags(v(&[
            "queue-worker",
            "-license-file=/var/secrets/license/license",
            "-pprof=true",
        ]));
        assert_eq!(kept, v(&["queue-worker"]));
        assert_eq!(dropped, v(&["license-file", "pprof"]));
        let (kept, _) = strip_openfaas_flags(v(&[
            "queue-worker",
            "--license-file",
            "/x",
            "run",
            "--ingress",
            "0.0.0.0:8080",
        ]));
        assert_eq!(
            kept,
            v(&["queue-worker", "run", "--ingress", "0.0.0.0:8080"])
        );
        let (kept, dropped) = strip_openfaas_flags(v(&["queue-worker", "publish", "license-file"]));
        assert_eq!(kept, v(&["queue-worker", "publish", "license-file"]));
        assert!(dropped.is_empty(), "a function named like the flag is kept");
    }
}
