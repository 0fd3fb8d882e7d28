use std::net::IpAddr;

use super::*;

fn hosts(list: &str) -> AllowedHosts {
    AllowedHosts::parse(list).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn verdict(list: &str, url: &str) -> Verdict {
    let u = url::Url::parse(url).unwrap();
    hosts(list).check_host(&u.host().unwrap(), u.port_or_known_default().unwrap())
}

#[test]
fn entries_parse_and_bad_ones_are_named() {
    let h = hosts(
        " Hooks.Example.com ,*.Internal,, 10.0.0.1:8443,[::1]:9000,fd00::/8,[fd00::]/8:443,*",
    );
    assert_eq!(
        h.entries(),
        [
            "hooks.example.com",
            "*.internal",
            "10.0.0.1:8443",
            "[::1]:9000",
            "fd00::/8",
            "[fd00::]/8:443",
            "*"
        ]
    );
    for bad in [
        "https://example.com",
        "a b",
        "host/path",
        "user@host",
        "h:0",
        "h:70000",
        "10.0.0.0/33",
        "*.",
        "a..b",
        "[::1",
        "[::1]x",
        "h:",
    ] {
        let e = AllowedHosts::parse(bad).unwrap_err();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn ranges_contain_what_their_prefix_says() {
    let n = Net::parse("10.1.0.0/16").unwrap();
    assert!(n.contains(ip("10.1.255.3")));
    assert!(!n.contains(ip("10.2.0.1")));
    assert!(n.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts");
    let n = Net::parse("172.16.0.0/12").unwrap();
    assert!(n.contains(ip("172.31.0.1")));
    assert!(!n.contains(ip("172.32.0.1")));
    let n = Net::parse("fe80::/10").unwrap();
    assert!(n.contains(ip("febf::1")));
    assert!(!n.contains(ip("fec0::1")));
    assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    assert!(!Net::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
}

#[test]
fn without_entries_every_host_but_the_guarded_ones_is_allowed() {
    assert_eq!(verdict("", "http://example.com/x"), Verdict::Resolve);
    assert_eq!(verdict("", "http://127.0.0.1:9/x"), Verdict::Allowed);
    for guarded in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        assert!(
            matches!(verdict("", guarded), Verdict::Refused(_)),
            "{guarded}"
        );
    }
    let h = hosts("");
    assert!(h.allows_addr(Some("example.com"), ip("93.184.216.34"), 80));
    assert!(!h.allows_addr(Some("example.com"), ip("169.254.169.254"), 80));
}

#[test]
fn names_are_decided_by_their_entries_ports_included() {
    let list = "hooks.example.com:443,*.corp.example,10.0.0.0/8:8080";
    assert_eq!(
        verdict(list, "https://hooks.example.com/cb"),
        Verdict::Resolve
    );
    assert!(matches!(
        verdict(list, "http://hooks.example.com:8080/cb"),
        Verdict::Refused(r) if r.contains("port 8080")
    ));
    assert_eq!(
        verdict(list, "http://a.b.corp.example:1/"),
        Verdict::Resolve
    );
    // Not named (the wildcard wants a label before it): only a range can take it, on 8080.
    assert!(matches!(
        verdict(list, "http://corp.example/"),
        Verdict::Refused(_)
    ));
    assert_eq!(verdict(list, "http://corp.example:8080/"), Verdict::Resolve);
    let h = hosts(list);
    // A named host connects anywhere but to guarded addresses.
    assert!(h.allows_addr(Some("a.corp.example"), ip("192.168.1.1"), 1));
    assert!(!h.allows_addr(Some("a.corp.example"), ip("169.254.169.254"), 1));
    // The wildcard needs a label before its suffix.
    assert!(!h.allows_addr(Some("corp.example"), ip("192.168.1.1"), 1));
    // An unnamed host: only inside a listed range, on its port.
    assert!(h.allows_addr(Some("other.example"), ip("10.2.3.4"), 8080));
    assert!(!h.allows_addr(Some("other.example"), ip("10.2.3.4"), 8081));
    assert!(!h.allows_addr(Some("other.example"), ip("11.2.3.4"), 8080));
}

#[test]
fn hosts_outside_every_entry_are_refused_before_resolving() {
    let list = "hooks.example.com";
    match verdict(list, "http://127.0.0.1:8081/metrics") {
        Verdict::Refused(r) => assert!(r.contains("127.0.0.1"), "{r}"),
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        verdict(list, "http://evil.example/"),
        Verdict::Refused(_)
    ));
    // With a range listed, a name may still resolve into it.
    assert_eq!(
        verdict("10.0.0.0/8", "http://svc.internal/"),
        Verdict::Resolve
    );
    assert!(matches!(
        verdict("10.0.0.0/8:80", "http://svc.internal:81/"),
        Verdict::Refused(_)
    ));
}

#[test]
fn guarded_addresses_need_a_range_entry() {
    let h = hosts("*,169.254.169.254");
    assert!(h.allows_addr(Some("metadata"), ip("169.254.169.254"), 80));
    assert!(!h.allows_addr(Some("metadata"), ip("169.254.169.253"), 80));
    assert_eq!(
        verdict("169.254.0.0/16", "http://169.254.1.1/"),
        Verdict::Allowed
    );
    // A name entry alone does not open them.
    let h = hosts("metadata.internal");
    assert!(!h.allows_addr(Some("metadata.internal"), ip("169.254.169.254"), 80));
}
