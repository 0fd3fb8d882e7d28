//! Callbacks connect only where `callback_allowed_hosts` allows ([`crate::security::hosts`]):
//! the host is checked before anything is sent ([`check_url`]), and the callback client's
//! resolver ([`GuardedResolver`]) hands reqwest only the addresses the rules allow for the
//! name and port being called, so the address checked is the address connected to (one
//! lookup, no second answer from a rebinding DNS server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::security::hosts::{AllowedHosts, Verdict};

/// Longest a name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

tokio::task_local! {
    /// The port of the callback being sent by this task: the resolver is only given a name.
    static CALLBACK_PORT: u16;
}

/// A callback refused by the rules (not a failure of the receiver: never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by callback_allowed_hosts: {0}")]
pub struct Refused(pub String);

/// The decision on a URL before any lookup: `Err` when its host or port is refused.
pub fn check_url(hosts: &AllowedHosts, url: &url::Url) -> Result<(), Refused> {
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Err(Refused("no host or port".into()));
    };
    match hosts.check_host(&host, port) {
        Verdict::Allowed | Verdict::Resolve => Ok(()),
        Verdict::Refused(why) => Err(Refused(why)),
    }
}

/// Like [`check_url`], and when the host is a name that only its addresses can allow, look it
/// up and check them (the ingress, so a caller hears at once). A name that does not resolve is
/// left to the worker.
pub async fn check_url_resolved(hosts: &AllowedHosts, url: &url::Url) -> Result<(), Refused> {
    check_url(hosts, url)?;
    let (Some(url::Host::Domain(name)), Some(port)) = (url.host(), url.port_or_known_default())
    else {
        return Ok(());
    };
    if hosts.is_empty() {
        // Every name is allowed; only guarded addresses are not, which the worker checks.
        return Ok(());
    }
    match lookup(name, port).await {
        Ok(addrs) => allowed_addrs(hosts, name, port, addrs).map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// Run `send` (one callback exchange to `url`) so the resolver knows its port.
pub async fn with_target<F: std::future::Future>(url_port: u16, send: F) -> F::Output {
    CALLBACK_PORT.scope(url_port, send).await
}

/// reqwest's resolver for callbacks.
pub struct GuardedResolver {
    hosts: Arc<AllowedHosts>,
}

impl GuardedResolver {
    pub fn new(hosts: AllowedHosts) -> GuardedResolver {
        GuardedResolver {
            hosts: Arc::new(hosts),
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        // Read now, while the sending task is the one polling.
        let port = CALLBACK_PORT.try_with(|p| *p);
        let hosts = self.hosts.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let port =
                port.map_err(|_| Box::new(Refused("connection outside a callback".into())))?;
            let addrs = lookup(&name, port).await?;
            let allowed = allowed_addrs(&hosts, &name, port, addrs)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>, std::io::Error> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(found) => Ok(found?.collect()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("looking up {name} took over {LOOKUP_TIMEOUT:?}"),
        )),
    }
}

/// The addresses of `name` the rules allow; `Err` when none.
fn allowed_addrs(
    hosts: &AllowedHosts,
    name: &str,
    port: u16,
    addrs: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, Refused> {
    let found = addrs.len();
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| hosts.allows_addr(Some(name), a.ip(), port))
        .collect();
    if allowed.is_empty() {
        return Err(Refused(format!(
            "{name} resolves to {found} address(es), none of them allowed"
        )));
    }
    Ok(allowed)
}

/// The refusal somewhere in an error's sources.
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}
