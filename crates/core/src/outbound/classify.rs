//! Which addresses are not the public internet: the special-purpose ranges of the IANA
//! registries, the cloud metadata services, and the IPv6 forms that carry an IPv4
//! address inside them (each judged by the address it carries).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    /// What kind of address it is: `loopback`, `private (RFC 1918)`, ...
    pub kind: &'static str,
    /// For an IPv6 form that embeds an IPv4 address: the form's name and that address.
    pub embedded: Option<(&'static str, Ipv4Addr)>,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.embedded {
            Some((form, v4)) => write!(f, "the {form} form of {v4}, which is {}", self.kind),
            None => f.write_str(self.kind),
        }
    }
}

const fn kind(kind: &'static str) -> Option<Forbidden> {
    Some(Forbidden {
        kind,
        embedded: None,
    })
}

/// Why `ip` is forbidden, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some((form, v4)) => classify_v4(v4).map(|f| Forbidden {
                embedded: Some((form, v4)),
                ..f
            }),
            None => classify_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 form carries, with the form's name: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`), 6to4 (`2002::/16`), NAT64
/// (`64:ff9b::/96`) and Teredo (`2001::/32`, whose client address is the one reached).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<(&'static str, Ipv4Addr)> {
    let s = ip.segments();
    let low32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5] && s[5] == 0xffff {
        Some(("IPv4-mapped IPv6", low32))
    } else if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        Some(("IPv4-compatible IPv6", low32))
    } else if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        Some(("6to4", v4))
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(("NAT64", low32))
    } else if s[0] == 0x2001 && s[1] == 0 {
        Some(("Teredo", Ipv4Addr::from(!u32::from(low32))))
    } else {
        None
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let ranges: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "a cloud metadata address"),
        ([0, 0, 0, 0], 32, "unspecified"),
        ([0, 0, 0, 0], 8, "in 0.0.0.0/8 (this network)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private (RFC 1918)"),
        ([172, 16, 0, 0], 12, "private (RFC 1918)"),
        ([192, 168, 0, 0], 16, "private (RFC 1918)"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([192, 0, 0, 0], 24, "reserved for IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation (TEST-NET-1)"),
        ([198, 51, 100, 0], 24, "documentation (TEST-NET-2)"),
        ([203, 0, 113, 0], 24, "documentation (TEST-NET-3)"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([192, 88, 99, 0], 24, "the deprecated 6to4 relay anycast"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .and_then(|(_, _, name)| kind(name))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let ranges: &[([u16; 8], u32, &str)] = &[
        (
            [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
            128,
            "a cloud metadata address",
        ),
        ([0; 8], 128, "unspecified"),
        ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
        // RFC 8215's prefix for NAT64 inside one network: where the IPv4 address sits
        // depends on the network's own prefix length, so the whole range stays internal.
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
        ([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    if let Some((_, _, name)) = ranges
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return kind(name);
    }
    // Only 2000::/3 is allocated as global unicast; the rest is reserved.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return kind("reserved (outside the global unicast range 2000::/3)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(ip: &str) -> Option<&'static str> {
        classify(ip.parse().unwrap()).map(|f| f.kind)
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind_of(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv4_special_ranges_are_named() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("169.254.169.254", "a cloud metadata address"),
            ("169.254.0.1", "link-local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.255", "shared address space (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "in 0.0.0.0/8 (this network)"),
            ("192.0.2.1", "documentation (TEST-NET-1)"),
            ("198.51.100.7", "documentation (TEST-NET-2)"),
            ("203.0.113.9", "documentation (TEST-NET-3)"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved (240.0.0.0/4)"),
            ("192.0.0.170", "reserved for IETF protocol assignments"),
        ] {
            assert_eq!(kind_of(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn ipv6_special_ranges_are_named() {
        for (ip, expected) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("fc00::1", "unique-local"),
            ("fdff:ffff::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:2::1", "benchmarking"),
            ("100::1", "discard-only"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            (
                "4000::1",
                "reserved (outside the global unicast range 2000::/3)",
            ),
        ] {
            assert_eq!(kind_of(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_are_judged_by_the_ipv4_address_they_carry() {
        for (ip, form, v4, expected) in [
            (
                "::ffff:127.0.0.1",
                "IPv4-mapped IPv6",
                "127.0.0.1",
                "loopback",
            ),
            ("::ffff:7f00:1", "IPv4-mapped IPv6", "127.0.0.1", "loopback"),
            (
                "::ffff:169.254.169.254",
                "IPv4-mapped IPv6",
                "169.254.169.254",
                "a cloud metadata address",
            ),
            (
                "::127.0.0.1",
                "IPv4-compatible IPv6",
                "127.0.0.1",
                "loopback",
            ),
            (
                "::10.0.0.1",
                "IPv4-compatible IPv6",
                "10.0.0.1",
                "private (RFC 1918)",
            ),
            ("2002:7f00:1::", "6to4", "127.0.0.1", "loopback"),
            (
                "2002:a9fe:a9fe::1",
                "6to4",
                "169.254.169.254",
                "a cloud metadata address",
            ),
            ("64:ff9b::127.0.0.1", "NAT64", "127.0.0.1", "loopback"),
            (
                "64:ff9b::c0a8:101",
                "NAT64",
                "192.168.1.1",
                "private (RFC 1918)",
            ),
            // Teredo carries the client's address inverted: !127.0.0.1 = 128.255.255.254.
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                "Teredo",
                "127.0.0.1",
                "loopback",
            ),
        ] {
            let f = classify(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip} passed"));
            assert_eq!(f.kind, expected, "{ip}");
            assert_eq!(f.embedded, Some((form, v4.parse().unwrap())), "{ip}");
        }
    }

    #[test]
    fn the_reason_reads_as_a_sentence() {
        let f = classify("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            f.to_string(),
            "the IPv4-mapped IPv6 form of 10.0.0.1, which is private (RFC 1918)"
        );
        assert_eq!(
            classify("127.0.0.1".parse().unwrap()).unwrap().to_string(),
            "loopback"
        );
    }
}
