//! Where callbacks may go (`callback_allowed_hosts`): pure decisions on a host, a port and the
//! addresses the host resolved to. The ingress asks before it stores a call, the worker before
//! it connects (`invoke::guard` resolves the name and connects only to what is allowed here).
//!
//! The rules:
//! - An entry is a host name (`hooks.example.com`), a wildcard (`*.example.com`: any name
//!   ending in `.example.com`; `*` alone: any name), an IP address or a CIDR range
//!   (`10.0.0.0/8`, `fd00::/8`), each with an optional `:port` (IPv6 in brackets for a port:
//!   `[::1]:8443`, `[fd00::]/8:443`).
//! - A host name that a name entry matches (whatever its port) is decided by the name
//!   entries: allowed when one of them matches its port too.
//! - Any other host (an IP address, or a name no entry names) is allowed only when every
//!   address it is connected to lies in a listed range that allows its port.
//! - No entries: every host is allowed.
//! - Always: link-local and cloud-metadata addresses ([`GUARDED`]) are refused unless a
//!   range entry lists them, whatever names allowed the host.

use std::fmt;
use std::net::IpAddr;

/// Addresses refused unless an IP or range entry lists them: link-local (where cloud metadata
/// services answer: 169.254.169.254, fe80::), AWS's IPv6 metadata address and Alibaba's.
pub const GUARDED: [&str; 4] = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
];

/// An IP range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(text: &str) -> Option<Net> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        (prefix <= max).then_some(Net { addr, prefix })
    }

    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

/// What an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// One host name, lowercased.
    Name(String),
    /// Names ending in this suffix (with its leading dot); empty = every name.
    Suffix(String),
    /// Addresses in a range.
    Range(Net),
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    /// `None`: any port.
    port: Option<u16>,
    /// As written (lowercased), for messages.
    text: String,
}

impl Entry {
    fn allows_port(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn names(&self, host: &str) -> bool {
        match &self.pattern {
            Pattern::Name(n) => n == host,
            Pattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
            Pattern::Range(_) => false,
        }
    }

    fn covers(&self, ip: IpAddr) -> bool {
        matches!(&self.pattern, Pattern::Range(net) if net.contains(ip))
    }
}

/// The parsed `callback_allowed_hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

/// How a host fares before its name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Allowed if the addresses it resolves to are (ask [`AllowedHosts::allows_addr`]).
    Resolve,
    /// Refused, and why (one line, for a `400` or a log).
    Refused(String),
}

impl AllowedHosts {
    /// Parse the comma list; `Err` names the first bad entry.
    pub fn parse(list: &str) -> Result<AllowedHosts, String> {
        let mut entries = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let text = item.to_ascii_lowercase();
            let entry = parse_entry(&text).ok_or_else(|| format!("bad entry {item:?}"))?;
            entries.push(entry);
        }
        Ok(AllowedHosts { entries })
    }

    /// Whether the list is empty (every host allowed, guarded addresses aside).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as written (lowercased).
    pub fn entries(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.text.as_str()).collect()
    }

    /// The decision on a URL's host and port, before any name is resolved: an IP address is
    /// decided here, a name is allowed, refused, or left to its addresses.
    pub fn check_host(&self, host: &url::Host<&str>, port: u16) -> Verdict {
        match host {
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(*ip), port),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(*ip), port),
            url::Host::Domain(name) => self.check_name(&name.to_ascii_lowercase(), port),
        }
    }

    fn check_ip(&self, ip: IpAddr, port: u16) -> Verdict {
        if self.allows_addr(None, ip, port) {
            Verdict::Allowed
        } else {
            Verdict::Refused(format!("{ip} port {port} is not in callback_allowed_hosts"))
        }
    }

    fn check_name(&self, name: &str, port: u16) -> Verdict {
        let naming: Vec<&Entry> = self.entries.iter().filter(|e| e.names(name)).collect();
        if naming.is_empty() {
            if self.is_empty() || self.ranges_allow_port(port) {
                return Verdict::Resolve;
            }
            return Verdict::Refused(format!("host {name} is not in callback_allowed_hosts"));
        }
        if naming.iter().any(|e| e.allows_port(port)) {
            // Named: its addresses only have to stay clear of the guarded ones.
            Verdict::Resolve
        } else {
            Verdict::Refused(format!(
                "port {port} of {name} is not in callback_allowed_hosts"
            ))
        }
    }

    fn ranges_allow_port(&self, port: u16) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.pattern, Pattern::Range(_)) && e.allows_port(port))
    }

    /// Whether a connection to `ip:port` may be made for the host `name` (`None` when the URL
    /// gave the address itself). Guarded addresses need a range entry whatever the name.
    pub fn allows_addr(&self, name: Option<&str>, ip: IpAddr, port: u16) -> bool {
        let listed = self
            .entries
            .iter()
            .any(|e| e.covers(ip) && e.allows_port(port));
        if is_guarded(ip) {
            return listed;
        }
        if listed || self.is_empty() {
            return true;
        }
        let name = name.map(str::to_ascii_lowercase);
        name.is_some_and(|n| {
            self.entries
                .iter()
                .any(|e| e.names(&n) && e.allows_port(port))
        })
    }
}

/// Whether `ip` is link-local or a cloud metadata address.
pub fn is_guarded(ip: IpAddr) -> bool {
    GUARDED
        .iter()
        .filter_map(|n| Net::parse(n))
        .any(|n| n.contains(ip))
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entries().join(","))
    }
}

/// One lowercased entry: `host`, `*.suffix`, `*`, `ip`, `cidr`, each with an optional
/// `:port`; IPv6 with a port in brackets.
fn parse_entry(text: &str) -> Option<Entry> {
    let (host, port) = split_port(text)?;
    let host = host.as_str();
    let pattern = if let Some(net) = Net::parse(host) {
        Pattern::Range(net)
    } else if host == "*" {
        Pattern::Suffix(String::new())
    } else if let Some(suffix) = host.strip_prefix("*.") {
        valid_name(suffix).then(|| Pattern::Suffix(format!(".{suffix}")))?
    } else {
        valid_name(host).then(|| Pattern::Name(host.to_string()))?
    };
    Some(Entry {
        pattern,
        port,
        text: text.to_string(),
    })
}

/// `host[:port]`, `[v6][/len][:port]`, or a bare IPv6 address or range (no port).
fn split_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let (len, port) = match after.split_once(':') {
            Some((len, port)) => (len, Some(parse_port(port)?)),
            None => (after, None),
        };
        if !(len.is_empty() || len.starts_with('/')) {
            return None;
        }
        return Some((format!("{inside}{len}"), port));
    }
    if text.matches(':').count() >= 2 {
        return Some((text.to_string(), None));
    }
    match text.split_once(':') {
        Some((host, port)) => Some((host.to_string(), Some(parse_port(port)?))),
        None => Some((text.to_string(), None)),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|p| *p != 0)
}

/// A DNS name: labels of letters, digits, `-` and `_`, separated by dots.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;
