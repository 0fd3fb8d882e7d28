//! Reading every variable at once: values checked against what is allowed, defaults for what
//! is absent or blank, one error per bad variable (naming it, its value and what is allowed).

use super::bound::Bound;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::go_duration::{DURATION_SYNTAX, parse_duration_inner, parse_go_bool};
use super::*;
use crate::security::hosts::AllowedHosts;

mod ingress;

impl Config {
    /// Validates every variable of `args`, filling in defaults for absent or empty ones.
    ///
    /// # Errors
    ///
    /// Every problem found, one [`ConfigError`] per invalid variable (a cross-field conflict
    /// names one of the variables involved).
    pub fn from_args(args: &ConfigArgs) -> Result<Config, ConfigErrors> {
        let mut v = Validator::default();
        let mut config = Config::default();
        v.read_nats(args, &mut config);
        v.read_consuming(args, &mut config);
        v.read_invoking(args, &mut config);
        v.read_retries(args, &mut config);
        v.read_callbacks_and_ingress(args, &mut config);
        v.read_operations(args, &mut config);
        if v.errors.is_empty() {
            return Ok(config);
        }
        // Report in the documented order of the variables.
        let position = |name: &str| ENV_VARS.iter().position(|n| *n == name);
        v.errors.sort_by_key(|e| position(e.name));
        Err(ConfigErrors(v.errors))
    }
}

/// Each group of variables, read into a [`Config`] that starts with every default.
impl Validator {
    /// Where NATS is, and the queue's names in it.
    fn read_nats(&mut self, args: &ConfigArgs, c: &mut Config) {
        let host = self.nats_host(&args.nats_host);
        let port = self.uint(
            "nats_port",
            &args.nats_port,
            u64::from(DEFAULT_NATS_PORT),
            1,
            65_535,
            "a port number",
        );
        c.nats_urls = self
            .nats_urls(&args.nats_url)
            .unwrap_or_else(|| vec![format!("nats://{host}:{port}")]);
        c.nats_credentials_file = path(&args.nats_credentials_file);
        self.read_nats_security(args, c);
        if let Some(queue) = self.queue_name("queue_name", &args.queue_name) {
            c.queue_name = queue;
        }
        c.function_queues = self.function_queues(&args.function_queues);
        c.nats_stream = self.nats_name("nats_stream", &args.nats_stream);
        c.nats_durable = self
            .nats_name("nats_durable", &args.nats_durable)
            .unwrap_or_else(|| format!("{}-workers", c.queue_name));
        let replicas = self.uint(
            "nats_stream_replicas",
            &args.nats_stream_replicas,
            1,
            1,
            5,
            "a whole number",
        );
        c.nats_stream_replicas = to_usize(replicas);
        c.nats_storage = self.storage("nats_storage", &args.nats_storage, c.nats_storage);
    }

    /// How the worker proves who it is to NATS and checks NATS: one way to authenticate
    /// (credentials file, user and password, or token), TLS files in pairs.
    fn read_nats_security(&mut self, args: &ConfigArgs, c: &mut Config) {
        c.nats_user = raw(&args.nats_user).map(str::to_owned);
        c.nats_password_file = path(&args.nats_password_file);
        c.nats_token_file = path(&args.nats_token_file);
        c.nats_tls_ca_file = path(&args.nats_tls_ca_file);
        c.nats_tls_cert_file = path(&args.nats_tls_cert_file);
        c.nats_tls_key_file = path(&args.nats_tls_key_file);
        c.nats_tls_insecure = self.boolean("nats_tls_insecure", &args.nats_tls_insecure, false);
        if c.nats_user.is_some() != c.nats_password_file.is_some() {
            let (name, value) = if c.nats_user.is_some() {
                ("nats_user", &args.nats_user)
            } else {
                ("nats_password_file", &args.nats_password_file)
            };
            self.fail(name, value, "nats_user and nats_password_file go together");
        }
        let ways = [
            ("nats_credentials_file", &args.nats_credentials_file),
            ("nats_user", &args.nats_user),
            ("nats_token_file", &args.nats_token_file),
        ];
        let set: Vec<_> = ways.iter().filter(|(_, v)| raw(v).is_some()).collect();
        if let [_, .., (name, value)] = set.as_slice() {
            self.fail(
                name,
                value,
                "use one way to authenticate to NATS: nats_credentials_file, nats_user with \
                 nats_password_file, or nats_token_file",
            );
        }
        if c.nats_tls_cert_file.is_some() != c.nats_tls_key_file.is_some() {
            let (name, value) = if c.nats_tls_cert_file.is_some() {
                ("nats_tls_cert_file", &args.nats_tls_cert_file)
            } else {
                ("nats_tls_key_file", &args.nats_tls_key_file)
            };
            self.fail(
                name,
                value,
                "nats_tls_cert_file and nats_tls_key_file go together",
            );
        }
    }

    /// How the worker takes messages from the queue.
    fn read_consuming(&mut self, args: &ConfigArgs, c: &mut Config) {
        let inflight = self.uint(
            "max_inflight",
            &args.max_inflight,
            1,
            1,
            65_536,
            "a whole number",
        );
        c.max_inflight = to_usize(inflight);
        let modes = [ScalingMode::Static, ScalingMode::Function];
        c.scaling_mode = self.choice(
            "scaling_mode",
            &args.scaling_mode,
            c.scaling_mode,
            &modes,
            |s| s.as_str(),
        );
        c.consumer_inactive_threshold = self.duration(
            "consumer_inactive_threshold",
            &args.consumer_inactive_threshold,
            c.consumer_inactive_threshold,
            Bound::AtLeast(Duration::from_secs(1)),
        );
        c.consumer_pull_max_messages = raw(&args.consumer_pull_max_messages).map(|_| {
            let n = &args.consumer_pull_max_messages;
            to_usize(self.uint(
                "consumer_pull_max_messages",
                n,
                1,
                1,
                10_000,
                "a whole number",
            ))
        });
        c.consumer_storage = self.storage(
            "consumer_storage",
            &args.consumer_storage,
            c.consumer_storage,
        );
        let at_least_100ms = Bound::AtLeast(Duration::from_millis(100));
        c.ack_wait = self.duration("ack_wait", &args.ack_wait, c.ack_wait, at_least_100ms);
        c.limiter_enabled =
            self.boolean("limiter_enabled", &args.limiter_enabled, c.limiter_enabled);
    }

    /// How functions are called.
    fn read_invoking(&mut self, args: &ConfigArgs, c: &mut Config) {
        c.upstream_timeout = self.duration(
            "upstream_timeout",
            &args.upstream_timeout,
            c.upstream_timeout,
            Bound::Positive,
        );
        if let Some(url) = self.gateway_url(&args.gateway_url) {
            c.gateway_url = url;
        }
        if let Some(ns) = self.namespace(&args.default_function_name) {
            c.default_function_name = ns;
        }
        c.tls_insecure = self.boolean("tls_insecure", &args.tls_insecure, c.tls_insecure);
        let age = self.duration(
            "max_message_age",
            &args.max_message_age,
            Duration::ZERO,
            Bound::Any,
        );
        c.max_message_age = (!age.is_zero()).then_some(age);
    }

    /// When and how often a failed call is tried again.
    fn read_retries(&mut self, args: &ConfigArgs, c: &mut Config) {
        let n = &args.max_retry_attempts;
        c.max_retry_attempts =
            to_u32(self.uint("max_retry_attempts", n, 10, 1, 10_000, "a whole number"));
        c.max_retry_wait = self.duration(
            "max_retry_wait",
            &args.max_retry_wait,
            c.max_retry_wait,
            Bound::Any,
        );
        c.initial_retry_wait = self.duration(
            "initial_retry_wait",
            &args.initial_retry_wait,
            c.initial_retry_wait,
            Bound::Any,
        );
        self.check_retry_waits(args, c.initial_retry_wait, c.max_retry_wait);
        if let Some(codes) = self.retry_http_codes(&args.retry_http_codes) {
            c.retry_http_codes = codes;
        }
        let backoffs = [Backoff::Exponential, Backoff::Full, Backoff::Equal];
        c.backoff = self.choice("backoff", &args.backoff, c.backoff, &backoffs, |b| {
            b.as_str()
        });
        c.retry_budget_ratio = self.ratio(&args.retry_budget_ratio, c.retry_budget_ratio);
        c.max_delay = self.duration("max_delay", &args.max_delay, c.max_delay, Bound::Any);
    }

    /// Whether `name` already has an error.
    fn failed(&self, name: &str) -> bool {
        self.errors.iter().any(|e| e.name == name)
    }

    /// Logs, metrics, retention and shutdown.
    fn read_operations(&mut self, args: &ConfigArgs, c: &mut Config) {
        c.debug = self.boolean("debug", &args.debug, c.debug);
        let encodings = [LogEncoding::Console, LogEncoding::Json];
        c.log_encoding = self.choice(
            "log_encoding",
            &args.log_encoding,
            c.log_encoding,
            &encodings,
            |s| s.as_str(),
        );
        c.dead_letter_max_age = self.duration(
            "dead_letter_max_age",
            &args.dead_letter_max_age,
            c.dead_letter_max_age,
            Bound::Positive,
        );
        // 0: no call status is kept.
        c.status_ttl = self.duration("status_ttl", &args.status_ttl, c.status_ttl, Bound::Any);
        c.store_results = self.boolean("store_results", &args.store_results, c.store_results);
        if c.store_results && c.status_ttl.is_zero() {
            self.fail(
                "store_results",
                &args.store_results,
                "needs call status: results are kept as long as it (status_ttl > 0)",
            );
        }
        // NATS keeps every message id of the window in memory: a day at most.
        c.idempotency_window = self.duration(
            "idempotency_window",
            &args.idempotency_window,
            c.idempotency_window,
            Bound::Within(Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        );
        let default_port = c.metrics_port;
        let port = self.uint(
            "metrics_port",
            &args.metrics_port,
            u64::from(default_port),
            0,
            65_535,
            "a port number",
        );
        c.metrics_port = u16::try_from(port).unwrap_or(default_port);
        c.metrics_addr = self
            .listen_addr("metrics_addr", &args.metrics_addr)
            .unwrap_or_else(|| format!("0.0.0.0:{}", c.metrics_port));
        c.shutdown_timeout = self.duration(
            "shutdown_timeout",
            &args.shutdown_timeout,
            c.shutdown_timeout,
            Bound::Any,
        );
    }
}

/// The trimmed value, or `None` when absent or blank (blank = use the default).
fn raw(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn path(value: &Option<String>) -> Option<PathBuf> {
    raw(value).map(PathBuf::from)
}

// The validated ranges fit every platform this builds for (usize >= 32 bits).
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

const QUEUE_NAME_RULE: &str = "1 to 64 characters of A-Z, a-z, 0-9, '-' and '_', not ending in _DLQ (reserved for dead letters)";

/// `queue`, checked as `queue_name` is; `Err` says the rule.
pub fn queue_name(queue: &str) -> Result<(), String> {
    if is_queue_name(queue) {
        Ok(())
    } else {
        Err(format!("queue {queue:?}: {QUEUE_NAME_RULE}"))
    }
}

fn is_queue_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        // `<queue>_DLQ` names the dead letters of `<queue>` (stream `OF_<queue>_DLQ`).
        && !s.ends_with("_DLQ")
}

/// A function as written in `function_queues`: `name` or `name.namespace`.
fn is_function_key(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}

/// Masks the user-info part (`user:password@`) of every URL in a comma list.
pub(super) fn mask_credentials(list: &str) -> String {
    list.split(',')
        .map(|item| {
            let start = item.find("://").map_or(0, |i| i + 3);
            match item[start..].rfind('@') {
                Some(at) => format!("{}***{}", &item[..start], &item[start + at..]),
                None => item.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Collects errors while reading variables.
#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
}

impl Validator {
    fn fail(&mut self, name: &'static str, value: &Option<String>, allowed: impl Into<String>) {
        self.errors.push(ConfigError {
            name,
            value: value.clone().unwrap_or_default(),
            allowed: allowed.into(),
        });
    }

    fn uint(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        default: u64,
        min: u64,
        max: u64,
        what: &str,
    ) -> u64 {
        let Some(s) = raw(value) else { return default };
        match s.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.fail(name, value, format!("expected {what} from {min} to {max}"));
                default
            }
        }
    }

    fn duration(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        default: Duration,
        bound: Bound,
    ) -> Duration {
        let Some(s) = raw(value) else { return default };
        match parse_duration_inner(s) {
            Ok(d) if bound.holds(d) => d,
            Ok(_) => {
                self.fail(
                    name,
                    value,
                    format!("{} {DURATION_SYNTAX}", bound.describe()),
                );
                default
            }
            Err(e) => {
                self.fail(
                    name,
                    value,
                    format!("{}; {} {DURATION_SYNTAX}", e.reason(), bound.describe()),
                );
                default
            }
        }
    }

    fn boolean(&mut self, name: &'static str, value: &Option<String>, default: bool) -> bool {
        let Some(s) = raw(value) else { return default };
        parse_go_bool(s).unwrap_or_else(|| {
            self.fail(
                name,
                value,
                "expected true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)",
            );
            default
        })
    }

    /// `file` or `memory`.
    fn storage(&mut self, name: &'static str, value: &Option<String>, default: Storage) -> Storage {
        let storages = [Storage::File, Storage::Memory];
        self.choice(name, value, default, &storages, |s| s.as_str())
    }

    fn choice<T: Copy>(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        default: T,
        options: &[T],
        spell: fn(&T) -> &'static str,
    ) -> T {
        let Some(s) = raw(value) else { return default };
        if let Some(found) = options.iter().find(|o| spell(o).eq_ignore_ascii_case(s)) {
            return *found;
        }
        let names: Vec<&str> = options.iter().map(spell).collect();
        self.fail(
            name,
            value,
            format!("expected one of: {}", names.join(", ")),
        );
        default
    }

    fn nats_host(&mut self, value: &Option<String>) -> String {
        let Some(s) = raw(value) else {
            return DEFAULT_NATS_HOST.to_owned();
        };
        if let Ok(ip) = s.parse::<std::net::Ipv6Addr>() {
            return format!("[{ip}]");
        }
        let ok =
            !s.contains(['/', ':', '@', ',', '?', '#']) || (s.starts_with('[') && s.ends_with(']'));
        if ok && url::Host::parse(s).is_ok() {
            return s.to_owned();
        }
        self.fail(
            "nats_host",
            value,
            "expected a host name or IP address, without scheme or port (set nats_port, or nats_url for a full URL)",
        );
        DEFAULT_NATS_HOST.to_owned()
    }

    fn nats_urls(&mut self, value: &Option<String>) -> Option<Vec<String>> {
        let s = raw(value)?;
        const RULE: &str = "expected a comma-separated list of NATS server URLs: nats://host:port, tls://host:port or host:port";
        let mut urls = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let candidate = if item.contains("://") {
                item.to_owned()
            } else {
                format!("nats://{item}")
            };
            match check_nats_url(&candidate) {
                Ok(()) => urls.push(candidate),
                Err(why) => {
                    self.push_masked(
                        "nats_url",
                        value,
                        format!("{why} in {:?}; {RULE}", mask_credentials(item)),
                    );
                    return None;
                }
            }
        }
        if urls.is_empty() {
            self.push_masked("nats_url", value, RULE.to_owned());
            return None;
        }
        Some(urls)
    }

    fn push_masked(&mut self, name: &'static str, value: &Option<String>, allowed: String) {
        self.errors.push(ConfigError {
            name,
            value: mask_credentials(value.as_deref().unwrap_or_default()),
            allowed,
        });
    }

    fn queue_name(&mut self, name: &'static str, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        if is_queue_name(s) {
            Some(s.to_owned())
        } else {
            self.fail(
                name,
                value,
                format!("expected a queue name: {QUEUE_NAME_RULE}"),
            );
            None
        }
    }

    /// A NATS stream or consumer name.
    fn nats_name(&mut self, name: &'static str, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        let ok = s.len() <= 255
            && s.chars().all(|c| {
                !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>' | '/' | '\\')
            });
        if ok {
            Some(s.to_owned())
        } else {
            self.fail(
                name,
                value,
                "expected a NATS name: up to 255 characters without spaces, '.', '*', '>', '/' or '\\'",
            );
            None
        }
    }

    fn function_queues(&mut self, value: &Option<String>) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let Some(s) = raw(value) else { return map };
        let rule = format!(
            "expected comma-separated function=queue pairs such as pdf-gen=slow-fns,resize.openfaas-fn=images \
             (function: name or name.namespace; queue: {QUEUE_NAME_RULE}; each function once)"
        );
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let problem = match pair.split_once('=') {
                None => Some(format!("{pair:?} has no '='")),
                Some((function, queue)) => {
                    let (function, queue) = (function.trim(), queue.trim());
                    if !is_function_key(function) {
                        Some(format!("bad function {function:?}"))
                    } else if !is_queue_name(queue) {
                        Some(format!("bad queue {queue:?}"))
                    } else if map.insert(function.to_owned(), queue.to_owned()).is_some() {
                        Some(format!("function {function:?} listed twice"))
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                self.fail("function_queues", value, format!("{problem}; {rule}"));
                return BTreeMap::new();
            }
        }
        map
    }

    fn gateway_url(&mut self, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        let parsed = url::Url::parse(s).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && u.fragment().is_none()
        });
        match parsed {
            Some(u) => Some(u.as_str().trim_end_matches('/').to_owned()),
            None => {
                self.fail(
                    "gateway_url",
                    value,
                    "expected an absolute http:// or https:// URL without query or fragment, e.g. http://gateway.openfaas:8080",
                );
                None
            }
        }
    }

    fn namespace(&mut self, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        let ok = (1..=253).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if ok {
            Some(s.to_owned())
        } else {
            self.fail(
                "default_function_name",
                value,
                "expected a namespace: 1 to 253 characters of A-Z, a-z, 0-9, '-' and '_' (no '.')",
            );
            None
        }
    }

    fn retry_http_codes(&mut self, value: &Option<String>) -> Option<Vec<u16>> {
        let s = raw(value)?;
        let codes: Option<Vec<u16>> = s
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| c.parse::<u16>().ok().filter(|c| (100..=599).contains(c)))
            .collect();
        match codes {
            Some(mut codes) if !codes.is_empty() => {
                codes.sort_unstable();
                codes.dedup();
                Some(codes)
            }
            _ => {
                self.fail(
                    "retry_http_codes",
                    value,
                    "expected a comma-separated list of HTTP status codes from 100 to 599, e.g. 408,429,500,502,503,504",
                );
                None
            }
        }
    }

    fn ratio(&mut self, value: &Option<String>, default: f64) -> f64 {
        let Some(s) = raw(value) else { return default };
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && (0.0..=100.0).contains(&r) => r.abs(),
            _ => {
                self.fail(
                    "retry_budget_ratio",
                    value,
                    "expected a number from 0 to 100, e.g. 0.2",
                );
                default
            }
        }
    }

    fn allowed_hosts(&mut self, value: &Option<String>) -> AllowedHosts {
        let Some(s) = raw(value) else {
            return AllowedHosts::default();
        };
        match AllowedHosts::parse(s) {
            Ok(hosts) => hosts,
            Err(why) => {
                self.fail(
                    "callback_allowed_hosts",
                    value,
                    format!(
                        "{why}; expected a comma-separated list of host names, *.suffix wildcards, \
                         IP addresses or CIDR ranges (not URLs), each with an optional :port, \
                         e.g. *.example.com,hooks.internal:8443,10.0.0.0/8"
                    ),
                );
                AllowedHosts::default()
            }
        }
    }

    /// An `ip:port` listen address.
    fn listen_addr(&mut self, name: &'static str, value: &Option<String>) -> Option<String> {
        let s = raw(value)?;
        match s.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr.to_string()),
            Err(_) => {
                self.fail(
                    name,
                    value,
                    "expected an IP address and port, e.g. 127.0.0.1:8081 or [::]:8081",
                );
                None
            }
        }
    }

    /// `initial_retry_wait` must not exceed `max_retry_wait`; names the variable that was set.
    fn check_retry_waits(&mut self, args: &ConfigArgs, initial: Duration, max: Duration) {
        if initial <= max {
            return;
        }
        let already =
            |e: &ConfigError| e.name == "initial_retry_wait" || e.name == "max_retry_wait";
        if self.errors.iter().any(already) {
            return;
        }
        if raw(&args.initial_retry_wait).is_some() {
            self.fail(
                "initial_retry_wait",
                &args.initial_retry_wait,
                format!(
                    "must not exceed max_retry_wait ({})",
                    format_go_duration(max)
                ),
            );
        } else {
            self.fail(
                "max_retry_wait",
                &args.max_retry_wait,
                format!(
                    "must be at least initial_retry_wait ({})",
                    format_go_duration(initial)
                ),
            );
        }
    }
}

/// Checks one NATS server URL (with scheme); returns why it is not acceptable.
fn check_nats_url(candidate: &str) -> Result<(), &'static str> {
    let u = url::Url::parse(candidate).map_err(|_| "not a URL")?;
    if !matches!(u.scheme(), "nats" | "tls") {
        return Err("unsupported scheme");
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if u.port() == Some(0) {
        return Err("port 0");
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
        return Err("unexpected path, query or fragment");
    }
    Ok(())
}
