//! `queue-worker dev`: everything in one process with nothing installed — the embedded
//! in-memory broker (JetStream semantics), the async ingress, the worker, and demo functions
//! plus a callback inbox on the ingress address.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{bind, load_config};
use crate::broker::memory::{MemoryBroker, MemoryLimits};
use crate::config::ConfigArgs;
use crate::invoke::http::ReqwestInvoker;

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Address of the ingress, the demo functions and the callback inbox.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub ingress: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// dev's own defaults, which make the demo snappy (`run`'s are for production).
const MAX_INFLIGHT: &str = "10";
const INITIAL_RETRY_WAIT: &str = "1s";
const MAX_RETRY_WAIT: &str = "10s";

/// Defaults that make the demo snappy, used only where the variable is not set.
fn dev_defaults(args: &mut ConfigArgs, gateway_url: String) {
    let set = |v: &mut Option<String>, default: &str| {
        if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
            *v = Some(default.to_string());
        }
    };
    set(&mut args.gateway_url, &gateway_url);
    set(&mut args.max_inflight, MAX_INFLIGHT);
    set(&mut args.initial_retry_wait, INITIAL_RETRY_WAIT);
    set(&mut args.max_retry_wait, MAX_RETRY_WAIT);
    set(&mut args.nats_storage, "memory");
}

/// Whether dev has no use for setting `id`: it has no NATS server (but for the consumer
/// name, which its embedded broker uses), and serves metrics on 127.0.0.1. Such settings are
/// left out of `dev --help`.
fn unused(id: &str) -> bool {
    (id.starts_with("nats_") && id != "nats_durable") || id == "metrics_addr"
}

/// `dev --help` as dev runs: without the settings it does not use, and with its own
/// defaults where they differ from `run`'s.
pub fn help(command: clap::Command) -> clap::Command {
    let own = [
        ("gateway_url", "the demo functions, on the ingress address"),
        ("max_inflight", MAX_INFLIGHT),
        ("initial_retry_wait", INITIAL_RETRY_WAIT),
        ("max_retry_wait", MAX_RETRY_WAIT),
    ];
    let command = crate::config::ENV_VARS
        .iter()
        .filter(|id| unused(id))
        .fold(command, |c, id| c.mut_arg(*id, |a| a.hide(true)));
    own.iter().fold(command, |c, (id, default)| {
        c.mut_arg(*id, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let what = help.split(" Default: ").next().unwrap_or_default();
            a.help(format!("{what} Default in dev: {default}"))
        })
    })
}

/// `http://127.0.0.1:8080` for a listener on `0.0.0.0:8080` or `127.0.0.1:8080`.
fn local_url(addr: std::net::SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{ip}:{}", addr.port())
}

pub async fn main(mut args: DevArgs) -> ExitCode {
    let listener = match bind("ingress", &args.ingress).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let base = match listener.local_addr() {
        Ok(a) => local_url(a),
        Err(e) => {
            eprintln!("queue-worker dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let own_functions = args
        .config
        .gateway_url
        .as_deref()
        .is_none_or(|s| s.trim().is_empty());
    dev_defaults(&mut args.config, base.clone());
    let config = match load_config(&args.config) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    super::start_logs(&config);
    let checked = super::check_ingress_auth(&config, Some(&listener))
        .and_then(|()| super::check_callback_signing(&config));
    if let Err(e) = checked {
        eprintln!("queue-worker dev: {e}");
        return ExitCode::from(super::EXIT_USAGE);
    }
    let metrics_listener =
        match bind("metrics", &format!("127.0.0.1:{}", config.metrics_port)).await {
            Ok(l) => l,
            Err(code) => return code,
        };
    let metrics_url = metrics_listener
        .local_addr()
        .map(local_url)
        .unwrap_or_default();
    let invoker = match ReqwestInvoker::new(&config) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            eprintln!("queue-worker dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let clock = Arc::new(crate::clock::SystemClock);
    let broker = Arc::new(MemoryBroker::new(clock, MemoryLimits::default()));

    // Nobody reads stdout any more (`dev | head -1`): stop quietly.
    let banner = banner(&base, &metrics_url, &config.gateway_url, own_functions);
    if !super::say(format_args!("{banner}")) {
        return ExitCode::SUCCESS;
    }

    let listeners = crate::Listeners {
        metrics: metrics_listener,
        ingress: Some(crate::IngressServer {
            listener,
            extra_routes: Some(super::demo::router()),
        }),
    };
    let shutdown = crate::lifecycle::shutdown_on_signals();
    let served = crate::serve(
        config,
        crate::Backend::Ready(broker),
        invoker,
        listeners,
        shutdown,
    )
    .await;
    super::exit_code(served)
}

/// What a newcomer needs to know, with commands to copy.
fn banner(base: &str, metrics: &str, gateway: &str, own_functions: bool) -> String {
    let functions = if own_functions {
        format!(
            "demo functions at {base}/function/<name>: echo, sleep?ms=N, flaky?fail=N \
             (429 N times per call, then 200)"
        )
    } else {
        format!("functions are called at {gateway}/function/<name>")
    };
    format!(
        "queue-worker dev: embedded broker (in memory), ingress, worker\n\
         \n  ingress    {base}/async-function/<name>\
         \n  {functions}\
         \n  callbacks  POST {base}/callback is a callback inbox; GET {base}/callbacks lists them\
         \n  metrics    {metrics}/metrics\
         \n\nTry:\
         \n  curl -i -X POST {base}/async-function/echo -H 'X-Callback-Url: {base}/callback' -d 'hello'\
         \n  curl -i -X POST '{base}/async-function/flaky?fail=2' -H 'X-Callback-Url: {base}/callback'\
         \n  curl -s {base}/callbacks\
         \n\nMessages live in memory and are lost when this process stops. Ctrl-C to stop.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_listeners() {
        assert_eq!(
            local_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            local_url("127.0.0.1:9".parse().unwrap()),
            "http://127.0.0.1:9"
        );
        assert_eq!(local_url("[::1]:80".parse().unwrap()), "http://[::1]:80");
    }

    #[test]
    fn dev_help_shows_what_dev_uses_with_its_own_defaults() {
        let mut command = crate::cli::command();
        let top = command.render_help().to_string();
        assert!(top.contains("Without a command"), "{top}");
        let dev = command.find_subcommand_mut("dev").expect("dev");
        let help = dev.render_help().to_string();
        assert!(!help.contains("--nats-url"), "{help}");
        assert!(!help.contains("--metrics-addr"), "{help}");
        assert!(help.contains("Default in dev: 10"), "{help}");
        assert!(
            !help.contains("Default: http://gateway.openfaas:8080"),
            "{help}"
        );
        let run = command.find_subcommand_mut("run").expect("run");
        let help = run.render_help().to_string();
        assert!(
            help.contains("--nats-url") && help.contains("Default: 1 "),
            "{help}"
        );
    }

    #[test]
    fn dev_defaults_only_fill_unset_values() {
        let mut a = ConfigArgs {
            max_inflight: Some("3".into()),
            initial_retry_wait: Some(" ".into()),
            ..Default::default()
        };
        dev_defaults(&mut a, "http://127.0.0.1:8080".into());
        assert_eq!(a.max_inflight.as_deref(), Some("3"));
        assert_eq!(a.initial_retry_wait.as_deref(), Some("1s"));
        assert_eq!(a.gateway_url.as_deref(), Some("http://127.0.0.1:8080"));
    }
}
