//! What kind of address a target resolves to: the rule that keeps the proxy off this machine
//! and off the networks it sits in.
//!
//! [`classify`] is pure and total. Only [`AddressClass::Public`] may be reached through a
//! wildcard entry of the allowlist; everything else needs the host listed exactly. The classes
//! follow the IANA special-purpose registries (RFC 6890 and its updates):
//!
//! | IPv4 | class |
//! |---|---|
//! | `0.0.0.0/8` | unspecified ("this network"; `0.0.0.0` reaches the local host on Linux) |
//! | `127.0.0.0/8` | loopback |
//! | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` | private (RFC 1918) |
//! | `100.64.0.0/10` | shared (CGNAT, RFC 6598) |
//! | `169.254.0.0/16` | link-local (cloud metadata services live here) |
//! | `224.0.0.0/4` | multicast |
//! | `255.255.255.255` | broadcast |
//! | `192.0.0.0/24`, `192.0.2.0/24`, `192.88.99.0/24`, `198.18.0.0/15`, `198.51.100.0/24`, `203.0.113.0/24`, `240.0.0.0/4` | reserved (protocol assignments, documentation, 6to4 relay, benchmarking, future use) |
//!
//! | IPv6 | class |
//! |---|---|
//! | `::` | unspecified |
//! | `::1` | loopback |
//! | `::ffff:0:0/96` (IPv4-mapped), `::/96` (IPv4-compatible), `64:ff9b::/96` (NAT64), `2002::/16` (6to4) | the class of the IPv4 address inside (an IPv4-compatible or 6to4 one that is public is still reserved: neither is routed any more) |
//! | `fc00::/7`, `fec0::/10` (deprecated site-local) | unique-local |
//! | `fe80::/10` | link-local |
//! | `ff00::/8` | multicast |
//! | `64:ff9b:1::/48`, `100::/64`, `2001::/23`, `2001:db8::/32`, `3fff::/20`, and everything outside `2000::/3` | reserved |
//!
//! Only the global unicast range `2000::/3`, less the blocks above, is public.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of an IP address, as far as the proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routed unicast: what a wildcard entry may reach.
    Public,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT (RFC 6598).
    SharedCgnat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `fc00::/7` and the deprecated site-local `fec0::/10`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation, benchmarking, protocol assignments, future use, unassigned.
    Reserved,
}

impl AddressClass {
    /// Whether a wildcard entry may reach it.
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    /// The class in words, for messages: `"loopback"`, `"private (RFC 1918)"`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private (RFC 1918)",
            AddressClass::SharedCgnat => "shared (CGNAT, 100.64.0.0/10)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::UniqueLocal => "unique-local (private IPv6)",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved (special-purpose)",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip` (see the module's tables).
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether `ip` is inside `net/len` (`len` at most 32).
fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// Whether `ip` is inside `net/len` (`len` at most 128).
fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    const RESERVED: [([u8; 4], u32); 7] = [
        ([192, 0, 0, 0], 24),
        ([192, 0, 2, 0], 24),
        ([192, 88, 99, 0], 24),
        ([198, 18, 0, 0], 15),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([240, 0, 0, 0], 4),
    ];
    if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if in_v4(ip, [0, 0, 0, 0], 8) {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        AddressClass::SharedCgnat
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if RESERVED.iter().any(|(net, len)| in_v4(ip, *net, *len)) {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The class of an IPv4 address carried inside an IPv6 one that is no longer routed
/// (IPv4-compatible, 6to4): never public.
fn embedded_unrouted(v4: Ipv4Addr) -> AddressClass {
    match classify_v4(v4) {
        AddressClass::Public => AddressClass::Reserved,
        other => other,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let o = ip.octets();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    // IPv4-mapped (::ffff:a.b.c.d): the socket talks IPv4 to a.b.c.d.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated).
    if in_v6(ip, [0; 8], 96) {
        return embedded_unrouted(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // NAT64, well-known prefix: the translator reaches a.b.c.d.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return classify_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 6to4 (2002:aabb:ccdd::/48 carries a.b.c.d).
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return embedded_unrouted(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if in_v6(ip, [0xfe80, 0, 0, 0, 0, 0, 0, 0], 10) {
        return AddressClass::LinkLocal;
    }
    if in_v6(ip, [0xfc00, 0, 0, 0, 0, 0, 0, 0], 7) || in_v6(ip, [0xfec0, 0, 0, 0, 0, 0, 0, 0], 10) {
        return AddressClass::UniqueLocal;
    }
    if ip.is_multicast() {
        return AddressClass::Multicast;
    }
    const RESERVED: [([u16; 8], u32); 5] = [
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
    ];
    if RESERVED.iter().any(|(net, len)| in_v6(ip, *net, *len)) {
        return AddressClass::Reserved;
    }
    if in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        AddressClass::Public
    } else {
        AddressClass::Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn every_non_public_ipv4_range_is_classified_at_both_ends() {
        for (addr, want) in [
            ("0.0.0.0", Unspecified),
            ("0.255.255.255", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("127.0.1.1", Loopback),
            ("10.0.0.0", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.0.1", Private),
            ("192.168.255.255", Private),
            ("100.64.0.0", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.254", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Reserved),
            ("192.88.99.1", Reserved),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
            ("240.0.0.1", Reserved),
            ("254.255.255.255", Reserved),
        ] {
            assert_eq!(class(addr), want, "{addr}");
            assert!(!class(addr).is_public(), "{addr}");
        }
    }

    #[test]
    fn ipv4_addresses_just_outside_the_ranges_are_public() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "93.184.216.34",
        ] {
            assert_eq!(class(addr), Public, "{addr}");
        }
    }

    #[test]
    fn every_non_public_ipv6_range_is_classified() {
        for (addr, want) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456:789a::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("ff05::1:3", Multicast),
            ("2001:db8::1", Reserved),
            ("2001::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("3fff::1", Reserved),
            // Outside 2000::/3: unassigned.
            ("4000::1", Reserved),
            ("1::1", Reserved),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn an_ipv4_address_inside_an_ipv6_one_is_classified_as_itself() {
        for (addr, want) in [
            // IPv4-mapped: the connection is IPv4 to the address inside.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:100.64.1.1", SharedCgnat),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:8.8.8.8", Public),
            // IPv4-compatible (deprecated): never public.
            ("::127.0.0.1", Loopback),
            ("::10.0.0.1", Private),
            ("::8.8.8.8", Reserved),
            // NAT64: the translator reaches the address inside.
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::192.168.1.1", Private),
            ("64:ff9b::8.8.8.8", Public),
            // 6to4: 2002:7f00:1:: carries 127.0.0.1; no longer routed, so never public.
            ("2002:7f00:1::1", Loopback),
            ("2002:c0a8:101::1", Private),
            ("2002:808:808::1", Reserved),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn global_unicast_ipv6_is_public() {
        for addr in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            "2001:4860:4860::8888",
            "2c0f:fb50:4003::1",
        ] {
            assert_eq!(class(addr), Public, "{addr}");
        }
    }

    #[test]
    fn classes_name_themselves_for_messages() {
        assert_eq!(Loopback.to_string(), "loopback");
        assert!(Private.as_str().contains("RFC 1918"));
        assert!(SharedCgnat.as_str().contains("CGNAT"));
    }
}
