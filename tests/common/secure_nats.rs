//! A NATS server that asks for credentials or TLS, and what it takes to build one without the
//! network:
//! - [`ConfiguredNats`]: a `nats-server -c <file>` process (JetStream on) whose configuration
//!   adds a `tls { … }` or `authorization { … }` block, or operator mode;
//! - [`Pki`]: a CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and
//!   a second CA that signed neither, made with the `openssl` command;
//! - [`Operator`]: an operator, a system account, an account with JetStream and a user, as
//!   JWTs signed with nkeys, and the user's `.creds` file.
//!
//! The server binary is the one [`super::nats::server_binary`] picks (`QW_NATS_VERSION`); with
//! none, the suite skips (a panic under `CI`).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;

use super::{free_port, tail};

const READY_LINE: &str = "Server is ready";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` process started from a configuration file.
pub struct ConfiguredNats {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ConfiguredNats {
    /// Starts a server on 127.0.0.1 with JetStream and `extra` (configuration blocks) in its
    /// configuration file; `None` (after `SKIPPED`) when there is no nats-server binary.
    pub async fn start(extra: &str) -> Option<ConfiguredNats> {
        let bin = binary()?;
        let mut last_err = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..3 {
            match ConfiguredNats::launch(&bin, free_port(), extra).await {
                Ok(server) => return Some(server),
                Err(e) => last_err = e,
            }
        }
        panic!("nats-server -c did not start: {last_err}");
    }

    /// [`ConfiguredNats::start`] on `port`, e.g. where a worker is already trying to connect.
    pub async fn start_on(port: u16, extra: &str) -> Option<ConfiguredNats> {
        let bin = binary()?;
        match ConfiguredNats::launch(&bin, port, extra).await {
            Ok(server) => Some(server),
            Err(e) => panic!("nats-server -c did not start on port {port}: {e}"),
        }
    }

    /// Client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("nats.log"))
    }

    /// Writes the configuration, spawns the server and waits for its ready line.
    async fn launch(bin: &Path, port: u16, extra: &str) -> Result<ConfiguredNats, String> {
        let dir = tempfile::Builder::new()
            .prefix("qw-secure-nats-")
            .tempdir()
            .map_err(|e| format!("create temp dir for nats-server: {e}"))?;
        let (config_path, log_path) = (dir.path().join("nats.conf"), dir.path().join("nats.log"));
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\nlog_file: {log_path:?}\njetstream {{ store_dir: {:?} }}\n{extra}\n",
            dir.path().join("store"),
        );
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let out_path = dir.path().join("nats.stdout");
        let out = File::create(&out_path).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let spawned = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        // From here on, dropping `server` ends the process.
        let mut server = ConfiguredNats {
            port,
            child: Some(spawned),
            dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "nats-server exited with {status}\n{}\n{}",
                    tail(&read_lossy(&log_path), 30),
                    tail(&read_lossy(&out_path), 20)
                ));
            }
            let ready = read_lossy(&log_path).contains(READY_LINE);
            if ready && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                super::kill_child(&mut server.child);
                return Err(format!("no \"{READY_LINE}\" within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The nats-server binary, or `None` after `SKIPPED` (a panic under `CI`).
fn binary() -> Option<PathBuf> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match super::nats::server_binary() {
        Ok(bin) => {
            SAID.call_once(|| eprintln!("secure nats: {}", super::nats::describe_binary()));
            Some(bin.path.clone())
        }
        Err(why) => super::skip_or_panic(&format!("no nats-server process: {why}")),
    }
}

impl Drop for ConfiguredNats {
    fn drop(&mut self) {
        super::kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "----- nats-server -c log (port {}, last 40 lines) -----\n{}\n-----",
                self.port,
                tail(&self.log(), 40)
            );
        }
    }
}

/// Certificates and keys (PEM files) for TLS tests, in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes a CA, a server certificate (127.0.0.1, localhost) and a client certificate
    /// signed by it, and a second CA (`other-ca.pem`) that signed nothing here.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("qw-pki-")
            .tempdir()
            .expect("create temp dir for certificates");
        let pki = Pki { dir };
        pki.make_ca("ca");
        pki.make_ca("other-ca");
        pki.make_signed(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        pki.make_signed("client", "extendedKeyUsage=clientAuth");
        pki
    }

    /// The PEM file `name` (`ca.pem`, `server.pem`, `server-key.pem`, `client.pem`,
    /// `client-key.pem`, `other-ca.pem`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Pki::path`] as a string, for configuration files and environment variables.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A self-signed CA: `<name>.pem`, `<name>-key.pem`.
    fn make_ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=queue-worker test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// A key and a certificate `<name>.pem` signed by `ca.pem`, with the extensions `ext`.
    fn make_signed(&self, name: &str, ext: &str) {
        let ext_file = format!("{name}.ext");
        let extensions = format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}\n");
        std::fs::write(self.path(&ext_file), extensions).expect("write extensions");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN=queue-worker test {name}"),
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
        ]);
        let serial = if name == "server" { "2" } else { "3" };
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// Runs `openssl args…` in the directory; panics with its output when it fails.
    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run openssl (needed to make test certificates): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A NATS operator with a system account and one account (JetStream without limits) holding
/// one user: the server's operator-mode configuration and the user's `.creds` file.
pub struct Operator {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    user: KeyPair,
}

impl Operator {
    /// New keys for every party.
    pub fn generate() -> Operator {
        Operator {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            user: KeyPair::new_user(),
        }
    }

    /// The server's configuration: the operator, the system account, both accounts preloaded
    /// in a memory resolver.
    pub fn server_config(&self) -> String {
        let operator = self.operator_jwt();
        let system = self.account_jwt(&self.system, "SYS", false);
        let account = self.account_jwt(&self.account, "QW", true);
        format!(
            "operator: {operator:?}\nsystem_account: {:?}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {:?}: {system:?}\n  {:?}: {account:?}\n}}\n",
            self.system.public_key(),
            self.system.public_key(),
            self.account.public_key(),
        )
    }

    /// The user's `.creds` file: its JWT and its nkey seed, as `nsc` writes them.
    pub fn creds(&self) -> String {
        let jwt = self.user_jwt();
        let seed = self.user.seed().expect("user seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    fn operator_jwt(&self) -> String {
        let nats = serde_json::json!({
            "type": "operator",
            "version": 2,
            "system_account": self.system.public_key(),
        });
        signed_jwt(&self.operator, &self.operator.public_key(), "qw-test", nats)
    }

    fn account_jwt(&self, account: &KeyPair, name: &str, jetstream: bool) -> String {
        let unlimited = if jetstream { -1 } else { 0 };
        let nats = serde_json::json!({
            "type": "account",
            "version": 2,
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": unlimited, "disk_storage": unlimited,
                "streams": unlimited, "consumer": unlimited,
            },
            "default_permissions": { "pub": {}, "sub": {} },
        });
        signed_jwt(&self.operator, &account.public_key(), name, nats)
    }

    fn user_jwt(&self) -> String {
        let nats = serde_json::json!({
            "type": "user",
            "version": 2,
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        });
        signed_jwt(&self.account, &self.user.public_key(), "worker", nats)
    }
}

/// A NATS JWT about `subject`, with the claims `nats`, signed by `issuer`.
fn signed_jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "jti": super::unique_name("jti").to_uppercase(),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = issuer.sign(signing_input.as_bytes()).expect("sign JWT");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
