//! A client's address: the TCP peer, unless the peer is a trusted proxy
//! (`TRUSTED_PROXIES`); then `X-Forwarded-For` is read from the right, skipping trusted
//! proxies, and the first address that is not one is the client. Addresses a client
//! writes into the header itself are to the left of what its proxy appended, so they are
//! never reached while the chain is trusted.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the address of their peer to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `TRUSTED_PROXIES`: addresses or CIDRs, comma-separated; `none` or empty for
    /// none.
    pub fn parse(text: &str) -> Option<TrustedProxies> {
        let items = streamgate::config::parse_list(text);
        if items.len() == 1 && items[0].eq_ignore_ascii_case("none") {
            return Some(TrustedProxies::default());
        }
        items
            .iter()
            .map(|item| item.parse::<IpNet>().ok().or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from)))
            .collect::<Option<Vec<_>>>()
            .map(TrustedProxies)
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            // A hop that is not an address: the proxy that wrote it is as far as we know.
            let Some(address) = parse_hop(hop) else { break };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` element: an address, possibly with a port or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let address = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(canonical(address))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, from dual-stack sockets) as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("127.0.0.0/8, 10.0.0.0/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer: its header is ignored.
        assert_eq!(trusted.client_ip(peer("203.0.113.9"), &headers(&["1.1.1.1"])), ip("203.0.113.9"));
        // A trusted proxy: the rightmost untrusted hop.
        assert_eq!(trusted.client_ip(peer("127.0.0.1"), &headers(&["198.51.100.7"])), ip("198.51.100.7"));
        // A spoofed entry to the left of what the proxies appended is not reached.
        let chain = headers(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(trusted.client_ip(peer("10.9.9.9"), &chain), ip("198.51.100.7"));
        // Only trusted hops: the leftmost.
        assert_eq!(trusted.client_ip(peer("127.0.0.1"), &headers(&["10.0.0.5"])), ip("10.0.0.5"));
        // Garbage stops the walk at the proxy that wrote it.
        assert_eq!(trusted.client_ip(peer("127.0.0.1"), &headers(&["1.2.3.4, junk"])), ip("127.0.0.1"));
        // No header: the peer.
        assert_eq!(trusted.client_ip(peer("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
        // Ports and brackets.
        assert_eq!(trusted.client_ip(peer("127.0.0.1"), &headers(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(trusted.client_ip(peer("127.0.0.1"), &headers(&["192.0.2.1:80"])), ip("192.0.2.1"));
    }

    #[test]
    fn trusted_proxies_parse_addresses_cidrs_and_none() {
        assert_eq!(TrustedProxies::parse("none"), Some(TrustedProxies::default()));
        assert_eq!(TrustedProxies::parse(""), Some(TrustedProxies::default()));
        let parsed = TrustedProxies::parse("10.0.0.1, ::1, 172.16.0.0/12").unwrap();
        assert!(parsed.trusts("10.0.0.1".parse().unwrap()));
        assert!(parsed.trusts("172.31.255.255".parse().unwrap()));
        assert!(parsed.trusts("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!parsed.trusts("10.0.0.2".parse().unwrap()));
        assert_eq!(TrustedProxies::parse("10.0.0.0/33"), None);
        assert_eq!(TrustedProxies::parse("proxy.internal"), None);
    }

    proptest! {
        #[test]
        fn the_client_is_the_peer_or_an_address_from_the_header(xff in "[0-9a-f.:, \\[\\]]{0,80}") {
            let trusted = TrustedProxies::parse("127.0.0.0/8").unwrap();
            let Ok(value) = HeaderValue::from_str(&xff) else { return Ok(()) };
            let mut map = HeaderMap::new();
            map.insert(FORWARDED_FOR, value);
            let client = trusted.client_ip(peer("127.0.0.1"), &map);
            let from_header = xff.split(',').filter_map(|hop| parse_hop(hop.trim())).any(|ip| ip == client);
            prop_assert!(client == "127.0.0.1".parse::<IpAddr>().unwrap() || from_header);
        }
    }
}
