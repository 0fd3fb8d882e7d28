//! Every variable is a flag and an environment variable.

use super::*;

// ----- clap -----

#[test]
fn every_variable_is_a_flag_and_an_env_var() {
    let cmd = TestCli::command();
    let mut ids = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" {
            continue;
        }
        ids.push(id.to_owned());
        assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()), "{id}");
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(id), "{id}");
        assert!(arg.is_hide_env_values_set(), "{id}");
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        assert!(
            help.contains("Default: "),
            "{id} help says its default: {help:?}"
        );
    }
    assert_eq!(ids, ENV_VARS.map(str::to_owned));
    cmd.debug_assert();
}

#[test]
fn clap_reads_flags() {
    let mut argv = vec!["qw-config-test".to_owned()];
    for (i, name) in ENV_VARS.iter().enumerate() {
        argv.push(format!("--{}", name.replace('_', "-")));
        argv.push(format!("value-{i}"));
    }
    let mut cli = TestCli::try_parse_from(&argv).expect("parses");
    for (i, name) in ENV_VARS.iter().enumerate() {
        assert_eq!(
            field(&mut cli.config, name).as_deref(),
            Some(format!("value-{i}").as_str()),
            "{name}"
        );
    }
    let cli =
        TestCli::try_parse_from(["t", "--max-inflight=50", "--backoff", "", "--debug", "true"])
            .expect("parses");
    assert_eq!(cli.config.max_inflight.as_deref(), Some("50"));
    assert_eq!(cli.config.backoff.as_deref(), Some(""));
    let c = Config::from_args(&cli.config).expect("valid");
    assert_eq!(
        (c.max_inflight, c.backoff, c.debug),
        (50, Backoff::Exponential, true)
    );
    assert!(TestCli::try_parse_from(["t", "--max-inflght", "5"]).is_err());
}

#[test]
fn help_hides_env_values() {
    let help = TestCli::command().render_long_help().to_string();
    assert!(help.contains("--max-inflight <N>"), "{help}");
    assert!(help.contains("[env: max_inflight]"), "{help}");
    assert!(help.contains("Default: 1"), "{help}");
}

const CHILD_MARK: &str = "QUEUE_WORKER_CONFIG_TEST_CHILD";

/// Runs [`clap_env_child`] in a child process with a controlled environment, so no test
/// mutates this process's environment.
#[test]
fn clap_reads_env() {
    let exe = std::env::current_exe().expect("test binary path");
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, m)| m);
    let name = format!("{module}::clap_env_child");
    let mut child = std::process::Command::new(exe);
    child.args(["--exact", &name, "--nocapture", "--test-threads=1"]);
    for var in ENV_VARS {
        child.env_remove(var);
    }
    child
        .env(CHILD_MARK, "1")
        .env("max_inflight", "50")
        .env("ack_wait", "30s")
        .env("nats_url", "nats://a:4222,nats://b:4222")
        .env("debug", "true")
        .env("backoff", "")
        .env("queue_name", "from-env");
    let out = child.output().expect("runs the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "child test did not run:\n{stdout}\n{stderr}"
    );
}

/// The env half of [`clap_reads_env`]; does nothing unless run as its child.
#[test]
fn clap_env_child() {
    if std::env::var_os(CHILD_MARK).is_none() {
        return;
    }
    let cli = TestCli::try_parse_from(["t"]).expect("parses");
    let a = &cli.config;
    assert_eq!(a.max_inflight.as_deref(), Some("50"));
    assert_eq!(a.ack_wait.as_deref(), Some("30s"));
    assert_eq!(a.debug.as_deref(), Some("true"));
    // An env var set to "" reaches us as Some(""), which means "use the default".
    assert_eq!(a.backoff.as_deref(), Some(""));
    assert_eq!(a.nats_host, None);
    assert_eq!(a.gateway_url, None);
    let c = Config::from_args(a).expect("valid");
    assert_eq!(c.max_inflight, 50);
    assert_eq!(c.ack_wait, secs(30));
    assert_eq!(c.nats_urls, ["nats://a:4222", "nats://b:4222"]);
    assert!(c.debug);
    assert_eq!(c.backoff, Backoff::Exponential);
    assert_eq!(c.nats_durable, "from-env-workers");

    // A flag wins over the env var.
    let cli = TestCli::try_parse_from(["t", "--max-inflight", "7", "--queue-name", "flag"])
        .expect("parses");
    assert_eq!(cli.config.max_inflight.as_deref(), Some("7"));
    assert_eq!(cli.config.queue_name.as_deref(), Some("flag"));
    assert_eq!(cli.config.ack_wait.as_deref(), Some("30s"));
}
