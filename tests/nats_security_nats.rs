//! The worker against NATS servers that ask for TLS or credentials: real nats-server processes
//! started from configuration files (tests/common/secure_nats.rs), certificates made with
//! `openssl`, JWTs signed with nkeys.
//!
//! The right settings carry a call from the ingress through NATS to the function. Wrong ones
//! (credentials refused, a certificate the other side does not trust, a file that cannot be
//! used) end the process with exit code 2 and a line naming the setting, within seconds,
//! where a server that is down is waited for. Secrets never reach the output.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::http::FunctionServer;
use common::secure_nats::{ConfiguredNats, Operator, Pki};
use common::worker::{Worker, WorkerProcess, WorkerSpec};

const T: Duration = Duration::from_secs(20);
/// How long a refused worker may take to exit.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(15);

const PASSWORD: &str = "pw-5ecret-Qx9";
const TOKEN: &str = "tok-5ecret-Zr4";

/// `tls { … }` of a server presenting the test PKI's server certificate; `verify_clients`
/// also requires a client certificate signed by the test CA.
fn tls_block(pki: &Pki, verify_clients: bool) -> String {
    let clients = match verify_clients {
        true => format!("  ca_file: {:?}\n  verify: true\n", pki.file("ca.pem")),
        false => String::new(),
    };
    format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n{clients}  timeout: 5\n}}",
        pki.file("server.pem"),
        pki.file("server-key.pem"),
    )
}

/// `(variable, value)` pairs for a worker.
type Env = Vec<(&'static str, String)>;

/// `secret` written to the file `name` in `dir`; its path.
fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("write secret file");
    path.display().to_string()
}

/// The worker with the ingress against `nats_url`, configured by `env`, in front of an echo
/// function; waits until it is ready.
async fn start_worker(nats_url: &str, env: Env) -> (FunctionServer, Worker) {
    let function = FunctionServer::echo().await;
    let spec = WorkerSpec {
        nats_url: nats_url.to_string(),
        queue: common::unique_name("secure"),
        gateway: function.base_url(),
        ingress: true,
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ready_timeout: T,
        nofile: None,
    };
    let worker = Worker::start(&spec).await;
    (function, worker)
}

/// Posts one call to the worker's ingress and waits until the function receives it.
async fn assert_call_goes_through(function: &FunctionServer, worker: &Worker) {
    let body = common::unique_name("secured call");
    let resp = worker
        .post("secure-echo")
        .body(body.clone())
        .send()
        .await
        .expect("post to the ingress");
    assert_eq!(resp.status(), 202, "{}", worker.proc.log());
    let calls = function.wait_for(1, T).await;
    assert_eq!(calls[0].path, "/function/secure-echo");
    assert_eq!(calls[0].body_str(), body);
}

/// Runs the worker against `nats_url` with `env`; asserts that it exits with code 2 within
/// [`REFUSAL_DEADLINE`] and returns its output.
async fn assert_refused(nats_url: &str, env: Env) -> String {
    let mut all: Env = vec![
        ("nats_url", nats_url.to_string()),
        ("queue_name", common::unique_name("secure")),
        ("gateway_url", "http://127.0.0.1:9".to_string()),
        ("metrics_port", common::free_port().to_string()),
    ];
    all.extend(env);
    let started = Instant::now();
    let mut worker = WorkerProcess::spawn(&common::worker_bin(), &["run"], &all);
    let status = worker.wait_exit(REFUSAL_DEADLINE).await;
    let log = worker.log();
    let status = status.unwrap_or_else(|| {
        panic!("still running after {REFUSAL_DEADLINE:?} (retrying for ever?):\n{log}")
    });
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(started.elapsed() < REFUSAL_DEADLINE);
    log
}

/// The line `queue-worker: …` of `log` that explains the exit, checked to contain every one of
/// `words`.
fn assert_reason(log: &str, words: &[&str]) {
    let reason = log
        .lines()
        .find(|l| l.starts_with("queue-worker: "))
        .unwrap_or_else(|| panic!("no `queue-worker: …` line in:\n{log}"));
    for word in words {
        assert!(reason.contains(word), "{word:?} not in {reason:?}");
    }
}

/// With the CA and a client certificate, the worker passes a server that checks clients
/// (`verify: true`) and a call goes through.
#[tokio::test]
async fn tls_with_a_client_certificate_carries_a_call() {
    let pki = Pki::generate();
    let Some(nats) = ConfiguredNats::start(&tls_block(&pki, true)).await else {
        return;
    };
    let env = vec![
        ("nats_tls_ca_file", pki.file("ca.pem")),
        ("nats_tls_cert_file", pki.file("client.pem")),
        ("nats_tls_key_file", pki.file("client-key.pem")),
    ];
    let (function, worker) = start_worker(&nats.url(), env).await;
    assert_call_goes_through(&function, &worker).await;
    worker.stop().await;
}

/// A server that checks clients refuses a worker without a client certificate: exit 2, naming
/// the certificate settings.
#[tokio::test]
async fn tls_without_the_client_certificate_exits_2() {
    let pki = Pki::generate();
    let Some(nats) = ConfiguredNats::start(&tls_block(&pki, true)).await else {
        return;
    };
    let log = assert_refused(&nats.url(), vec![("nats_tls_ca_file", pki.file("ca.pem"))]).await;
    assert_reason(&log, &["nats_tls_cert_file", "TLS"]);
}

/// A CA that did not sign the server's certificate: exit 2, naming `nats_tls_ca_file`.
#[tokio::test]
async fn tls_with_the_wrong_ca_exits_2() {
    let pki = Pki::generate();
    let Some(nats) = ConfiguredNats::start(&tls_block(&pki, true)).await else {
        return;
    };
    let env = vec![
        ("nats_tls_ca_file", pki.file("other-ca.pem")),
        ("nats_tls_cert_file", pki.file("client.pem")),
        ("nats_tls_key_file", pki.file("client-key.pem")),
    ];
    let log = assert_refused(&nats.url(), env).await;
    assert_reason(&log, &["not trusted", "nats_tls_ca_file", "UnknownIssuer"]);
}

/// A server certificate from a CA the worker does not know: refused (exit 2) unless
/// `nats_tls_insecure=true`, with which a call goes through.
#[tokio::test]
async fn tls_insecure_accepts_a_certificate_from_an_unknown_ca() {
    let pki = Pki::generate();
    let Some(nats) = ConfiguredNats::start(&tls_block(&pki, false)).await else {
        return;
    };
    let tls_url = format!("tls://127.0.0.1:{}", nats.port());
    let log = assert_refused(&tls_url, vec![]).await;
    assert_reason(&log, &["not trusted", "nats_tls_ca_file not set"]);
    let env = vec![("nats_tls_insecure", "true".to_string())];
    let (function, worker) = start_worker(&tls_url, env).await;
    assert_call_goes_through(&function, &worker).await;
    let log = worker.proc.log();
    assert!(
        log.contains("nats_tls_insecure"),
        "a warning says so:\n{log}"
    );
    worker.stop().await;
}

/// `authorization { user, password }` of the test user.
fn user_password_block() -> String {
    format!("authorization {{\n  user: \"worker\"\n  password: \"{PASSWORD}\"\n}}")
}

/// `nats_user` with `nats_password_file` carry a call; the password is never printed.
#[tokio::test]
async fn user_and_password_file_carry_a_call() {
    let Some(nats) = ConfiguredNats::start(&user_password_block()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("nats_user", "worker".to_string()),
        (
            "nats_password_file",
            secret_file(dir.path(), "pw", PASSWORD),
        ),
    ];
    let (function, worker) = start_worker(&nats.url(), env).await;
    assert_call_goes_through(&function, &worker).await;
    assert!(!worker.proc.log().contains(PASSWORD));
    worker.stop().await;
}

/// A wrong password: exit 2, naming `nats_user/nats_password_file`, without the password.
#[tokio::test]
async fn a_wrong_password_exits_2() {
    let Some(nats) = ConfiguredNats::start(&user_password_block()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-Pa55word";
    let env = vec![
        ("nats_user", "worker".to_string()),
        ("nats_password_file", secret_file(dir.path(), "pw", wrong)),
    ];
    let log = assert_refused(&nats.url(), env).await;
    assert_reason(
        &log,
        &[
            "NATS refused our credentials",
            "nats_user/nats_password_file",
            "authorization violation",
        ],
    );
    assert!(!log.contains(wrong), "{log}");
}

/// `nats://user:password@host:port` carries a call, and neither the worker's output nor its
/// refusal of a wrong URL password shows the password.
#[tokio::test]
async fn credentials_in_the_url_carry_a_call_and_stay_secret() {
    let Some(nats) = ConfiguredNats::start(&user_password_block()).await else {
        return;
    };
    let port = nats.port();
    let url = format!("nats://worker:{PASSWORD}@127.0.0.1:{port}");
    let (function, worker) = start_worker(&url, vec![]).await;
    assert_call_goes_through(&function, &worker).await;
    let log = worker.proc.log();
    assert!(log.contains("Connected to NATS"), "{log}");
    assert!(!log.contains(PASSWORD), "the password is printed:\n{log}");
    worker.stop().await;

    let wrong = "wr0ng-Url-pa55";
    let log = assert_refused(&format!("nats://worker:{wrong}@127.0.0.1:{port}"), vec![]).await;
    assert_reason(
        &log,
        &["credentials in nats_url", "authorization violation"],
    );
    assert!(!log.contains(wrong), "{log}");
}

/// `authorization { token }` of the test token.
fn token_block() -> String {
    format!("authorization {{\n  token: \"{TOKEN}\"\n}}")
}

/// `nats_token_file` carries a call; the token is never printed.
#[tokio::test]
async fn token_file_carries_a_call() {
    let Some(nats) = ConfiguredNats::start(&token_block()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("nats_token_file", secret_file(dir.path(), "token", TOKEN))];
    let (function, worker) = start_worker(&nats.url(), env).await;
    assert_call_goes_through(&function, &worker).await;
    assert!(!worker.proc.log().contains(TOKEN));
    worker.stop().await;
}

/// A wrong token: exit 2, naming `nats_token_file`; so is no token at all (naming the ways).
#[tokio::test]
async fn a_wrong_token_exits_2() {
    let Some(nats) = ConfiguredNats::start(&token_block()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = "tok-Wr0ng";
    let env = vec![("nats_token_file", secret_file(dir.path(), "token", wrong))];
    let log = assert_refused(&nats.url(), env).await;
    assert_reason(&log, &["NATS refused our credentials", "nats_token_file"]);
    assert!(!log.contains(wrong), "{log}");
    let log = assert_refused(&nats.url(), vec![]).await;
    assert_reason(
        &log,
        &["requires credentials and none are set", "nats_token_file"],
    );
}

/// A `.creds` file (user JWT and nkey seed) carries a call on a server in operator mode.
#[tokio::test]
async fn a_creds_file_carries_a_call() {
    let operator = Operator::generate();
    let Some(nats) = ConfiguredNats::start(&operator.server_config()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let creds = secret_file(dir.path(), "worker.creds", &operator.creds());
    let env = vec![("nats_credentials_file", creds)];
    let (function, worker) = start_worker(&nats.url(), env).await;
    assert_call_goes_through(&function, &worker).await;
    worker.stop().await;
}

/// A `.creds` file the server's operator did not issue, and one that is not a `.creds` file
/// at all: exit 2, naming `nats_credentials_file`.
#[tokio::test]
async fn a_foreign_or_malformed_creds_file_exits_2() {
    let operator = Operator::generate();
    let Some(nats) = ConfiguredNats::start(&operator.server_config()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let foreign = secret_file(dir.path(), "foreign.creds", &Operator::generate().creds());
    let log = assert_refused(&nats.url(), vec![("nats_credentials_file", foreign)]).await;
    assert_reason(
        &log,
        &["NATS refused our credentials", "nats_credentials_file"],
    );
    let malformed = secret_file(dir.path(), "malformed.creds", "not a creds file");
    let log = assert_refused(&nats.url(), vec![("nats_credentials_file", malformed)]).await;
    assert_reason(&log, &["nats_credentials_file", "malformed.creds"]);
}

/// A secured server that is down is waited for, as any other: the worker, with TLS and a token
/// set, keeps trying until the server starts, then carries a call.
#[tokio::test]
async fn a_secured_server_that_is_down_is_waited_for() {
    if let Err(why) = common::nats::server_binary() {
        return common::skip_or_panic(&format!("no nats-server process: {why}")).unwrap_or(());
    }
    let pki = Pki::generate();
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("nats_tls_ca_file", pki.file("ca.pem")),
        ("nats_tls_cert_file", pki.file("client.pem")),
        ("nats_tls_key_file", pki.file("client-key.pem")),
        ("nats_token_file", secret_file(dir.path(), "token", TOKEN)),
    ];
    let server_config = format!("{}\n{}", tls_block(&pki, true), token_block());
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ConfiguredNats::start_on(port, &server_config).await
    });
    let (function, worker) = start_worker(&format!("nats://127.0.0.1:{port}"), env).await;
    let Some(_nats) = later.await.expect("server task") else {
        return;
    };
    let log = worker.proc.log();
    assert!(log.contains("NATS not reachable"), "it waited:\n{log}");
    assert_call_goes_through(&function, &worker).await;
    worker.stop().await;
}

/// Each NATS secret, certificate or key file that cannot be read stops the start (exit 2)
/// naming its variable, before any server is asked: none runs here.
#[tokio::test]
async fn unreadable_nats_files_exit_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let readable = secret_file(dir.path(), "present", "x");
    let missing = dir.path().join("missing").display().to_string();
    let nobody_listens = format!("nats://127.0.0.1:{}", common::free_port());
    let cases: [(&str, Env); 6] = [
        ("nats_credentials_file", vec![]),
        ("nats_password_file", vec![("nats_user", "worker".into())]),
        ("nats_token_file", vec![]),
        ("nats_tls_ca_file", vec![]),
        (
            "nats_tls_cert_file",
            vec![("nats_tls_key_file", readable.clone())],
        ),
        (
            "nats_tls_key_file",
            vec![("nats_tls_cert_file", readable.clone())],
        ),
    ];
    for (variable, mut env) in cases {
        env.push((variable, missing.clone()));
        let log = assert_refused(&nobody_listens, env).await;
        assert_reason(&log, &[variable, "cannot read", "missing"]);
    }
}
