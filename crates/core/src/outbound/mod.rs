//! SSRF protection: which addresses Courier may call. Everything that is not the public
//! internet is refused (see [`classify`]) unless the operator's allow-list
//! (`outbound.allow`: CIDRs, IP addresses and host names) names it. The worker applies
//! [`OutboundPolicy::check_ip`] to the very addresses it connects to (in its DNS
//! resolver) and [`OutboundPolicy::check_url`] to IP-literal hosts; the API applies
//! `check_url` at submission, to refuse early what it can already see.

mod classify;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use classify::{Forbidden, classify, embedded_v4};
use ipnet::IpNet;
use url::Host;

use crate::settings::OutboundSettings;

/// An entry of `outbound.allow` that is neither a CIDR, an address nor a host name.
#[derive(Debug, thiserror::Error)]
#[error(
    "outbound.allow: {0:?} is neither a CIDR (10.0.0.0/8), an IP address nor a host name \
     (billing.internal, *.internal)"
)]
pub struct BadAllowEntry(pub String);

/// A call SSRF protection refused: what was refused and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused by SSRF protection: {subject} is {reason}; allow it with COURIER__OUTBOUND__ALLOW"
)]
pub struct Refusal {
    /// The host or address refused (`127.0.0.1`, `db.internal (10.0.0.5)`).
    pub subject: String,
    pub reason: Forbidden,
}

/// The allow-list, parsed. The default allows nothing that is not public.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    nets: Vec<IpNet>,
    /// Lower-case names; a leading `.` matches every name below it.
    hosts: Vec<String>,
}

impl OutboundPolicy {
    /// Parses the allow-list: `10.0.0.0/8`, `fd00::/8`, `127.0.0.1`, `billing.internal`,
    /// `*.internal` (every name below `internal`).
    ///
    /// # Errors
    /// The first entry that is none of these.
    pub fn new(allow: &[String]) -> Result<Self, BadAllowEntry> {
        let mut policy = Self::default();
        for entry in allow {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if let Some(name) = host_pattern(entry) {
                policy.hosts.push(name);
            } else {
                return Err(BadAllowEntry(entry.to_owned()));
            }
        }
        Ok(policy)
    }

    /// # Errors
    /// See [`Self::new`].
    pub fn from_settings(settings: &OutboundSettings) -> Result<Self, BadAllowEntry> {
        Self::new(&settings.allow)
    }

    /// Whether `ip` may be called: a public address, or one the allow-list names (an IPv6
    /// form that carries an IPv4 address is allowed when that address is).
    ///
    /// # Errors
    /// Why not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.check_ip_as(ip, || ip.to_string())
    }

    fn check_ip_as(&self, ip: IpAddr, subject: impl FnOnce() -> String) -> Result<(), Refusal> {
        let Some(reason) = classify(ip) else {
            return Ok(());
        };
        let carried = reason.embedded.map(|(_, v4)| IpAddr::V4(v4));
        let allowed = self
            .nets
            .iter()
            .any(|net| net.contains(&ip) || carried.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(Refusal {
                subject: subject(),
                reason,
            })
        }
    }

    /// Whether the allow-list names `host` (which then may resolve to any address).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalise(host);
        self.hosts.iter().any(|allowed| {
            if allowed.starts_with('.') {
                host.ends_with(allowed.as_str())
            } else {
                *allowed == host
            }
        })
    }

    /// Keeps the addresses `host` resolved to that may be called; all of them when the
    /// allow-list names the host.
    ///
    /// # Errors
    /// None may be called: the refusal of the first.
    pub fn filter_resolved(&self, host: &str, addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, Refusal> {
        if self.allows_host(host) {
            return Ok(addrs);
        }
        let mut first_refusal = None;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(
                |ip| match self.check_ip_as(*ip, || format!("{host} ({ip})")) {
                    Ok(()) => true,
                    Err(refusal) => {
                        first_refusal.get_or_insert(refusal);
                        false
                    }
                },
            )
            .collect();
        match first_refusal {
            Some(refusal) if allowed.is_empty() => Err(refusal),
            _ => Ok(allowed),
        }
    }

    /// What can be judged from `url` alone, before any DNS lookup: an IP-literal host
    /// (the URL parser has already turned decimal, octal and hex IPv4 spellings into
    /// dotted quads), and `localhost` and `*.localhost`, which always mean this machine
    /// (RFC 6761). Other names are judged when they resolve.
    ///
    /// # Errors
    /// Why the URL may not be called.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => {
                let name = normalise(name);
                let is_localhost = name == "localhost" || name.ends_with(".localhost");
                if !is_localhost || self.allows_host(&name) {
                    return Ok(());
                }
                // localhost is allowed when the loopback addresses it means are.
                let loopback = [
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ];
                match loopback.iter().find_map(|ip| self.check_ip(*ip).err()) {
                    Some(refusal) if loopback.iter().all(|ip| self.check_ip(*ip).is_err()) => {
                        Err(Refusal {
                            subject: name,
                            reason: refusal.reason,
                        })
                    }
                    _ => Ok(()),
                }
            }
            None => Ok(()),
        }
    }
}

/// Lower case, without the root's trailing dot.
fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A host name of the allow-list, or `*.suffix` as `.suffix`.
fn host_pattern(entry: &str) -> Option<String> {
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let name = normalise(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // A bare number is a mistyped address, not a name.
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    valid.then(|| if wildcard { format!(".{name}") } else { name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn url(raw: &str) -> url::Url {
        url::Url::parse(raw).unwrap()
    }

    #[test]
    fn allow_entries_parse_or_fail_clearly() {
        let p = policy(&[
            "10.0.0.0/8",
            "127.0.0.1",
            "fd00::/8",
            "Billing.Internal.",
            "*.corp",
        ]);
        assert!(p.check_ip("10.9.9.9".parse().unwrap()).is_ok());
        assert!(p.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check_ip("127.0.0.2".parse().unwrap()).is_err());
        assert!(p.check_ip("fd12::1".parse().unwrap()).is_ok());
        assert!(p.allows_host("billing.internal"));
        assert!(p.allows_host("a.b.corp"));
        assert!(!p.allows_host("corp"));
        assert!(!p.allows_host("evilcorp"));
        for bad in [
            "10.0.0.0/33",
            "not a host",
            "-bad.example",
            "300.1.2.3",
            "1.2.3",
            "",
        ] {
            let err = OutboundPolicy::new(&[bad.to_string()]).unwrap_err();
            assert!(
                err.to_string().starts_with("outbound.allow: "),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_allowed_ipv4_range_covers_its_ipv6_forms() {
        let p = policy(&["127.0.0.0/8"]);
        assert!(p.check_ip("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check_ip("::ffff:10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn the_refusal_says_what_and_how_to_allow_it() {
        let err = OutboundPolicy::default()
            .check_url(&url("http://127.0.0.1:8080/x"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused by SSRF protection: 127.0.0.1 is loopback; allow it with COURIER__OUTBOUND__ALLOW"
        );
    }

    #[test]
    fn the_url_parser_normalises_numeric_ipv4_spellings() {
        let strict = OutboundPolicy::default();
        for raw in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0177.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://017700000001/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://evil.com@127.0.0.1/",
            "http://127.0.0.1#@evil.com/",
        ] {
            let u = url(raw);
            let err = strict.check_url(&u).unwrap_err();
            assert_eq!(err.reason.kind, "loopback", "{raw}");
        }
        assert_eq!(url("http://0x7f.1/").host_str(), Some("127.0.0.1"));
        assert_eq!(url("http://2130706433/").host_str(), Some("127.0.0.1"));
        assert_eq!(url("http://0177.0.0.1/").host_str(), Some("127.0.0.1"));
    }

    #[test]
    fn localhost_names_are_loopback_unless_allowed() {
        let strict = OutboundPolicy::default();
        for raw in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost:9/",
        ] {
            assert_eq!(
                strict.check_url(&url(raw)).unwrap_err().reason.kind,
                "loopback",
                "{raw}"
            );
        }
        assert!(strict.check_url(&url("https://example.com/")).is_ok());
        assert!(
            policy(&["127.0.0.0/8"])
                .check_url(&url("http://localhost/"))
                .is_ok()
        );
        assert!(
            policy(&["localhost"])
                .check_url(&url("http://localhost/"))
                .is_ok()
        );
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let strict = OutboundPolicy::default();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let private: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            strict
                .filter_resolved("a.example", vec![private, public])
                .unwrap(),
            vec![public]
        );
        let err = strict
            .filter_resolved("db.example", vec![private])
            .unwrap_err();
        assert_eq!(err.subject, "db.example (10.0.0.5)");
        assert_eq!(
            policy(&["db.example"])
                .filter_resolved("db.example", vec![private])
                .unwrap(),
            vec![private]
        );
    }
}
