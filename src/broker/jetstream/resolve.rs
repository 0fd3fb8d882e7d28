//! Whether the NATS URLs name hosts that exist, asked of DNS once before a one-shot command
//! connects: a host that does not resolve (the default `nats`, outside Kubernetes) would
//! otherwise cost the whole connect time in reconnect attempts before the command fails.

use std::time::Duration;

use async_nats::ServerAddr;

/// How long the lookups may take together.
const LOOKUP_TIME: Duration = Duration::from_secs(5);

/// `Some(message)` when no host of `urls` resolves (DNS answered that none exists); `None`
/// when one does, when the URLs do not parse (connecting reports that), or when DNS does not
/// answer in time (connecting will tell).
pub async fn no_host_resolves(urls: &[String]) -> Option<String> {
    let hosts: Vec<(String, u16)> = urls
        .iter()
        .filter_map(|u| u.parse::<ServerAddr>().ok())
        .map(|a| (a.host().to_string(), a.port()))
        .collect();
    if hosts.is_empty() {
        return None;
    }
    let lookups = async {
        for (host, port) in &hosts {
            if tokio::net::lookup_host((host.as_str(), *port))
                .await
                .is_ok()
            {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(LOOKUP_TIME, lookups).await {
        Ok(false) => Some(unresolved(&hosts)),
        Ok(true) | Err(_) => None,
    }
}

fn unresolved(hosts: &[(String, u16)]) -> String {
    let names: Vec<String> = hosts.iter().map(|(h, _)| format!("{h:?}")).collect();
    format!(
        "the NATS host {} does not resolve; set nats_url (or nats_host), \
         e.g. nats_url=nats://127.0.0.1:4222",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_that_does_not_exist_is_named_and_a_literal_address_passes() {
        let missing = vec!["nats://no-such-host.invalid:4222".to_string()];
        let message = no_host_resolves(&missing).await.expect("reported");
        assert!(message.contains("\"no-such-host.invalid\""), "{message}");
        assert!(message.contains("nats_url"), "{message}");
        let literal = vec!["nats://127.0.0.1:4222".to_string()];
        assert_eq!(no_host_resolves(&literal).await, None);
        let either = vec![missing[0].clone(), literal[0].clone()];
        assert_eq!(no_host_resolves(&either).await, None, "one host resolves");
    }
}
