//! Who the client is: the socket peer, or the address trusted proxies say they forwarded.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The client's address: the socket peer's, unless the peer is one of the `trusted` proxies;
/// then the proxies' record is read from the right (the hop nearest to us) and the first
/// address that is not a trusted proxy is the client.
///
/// `forwarded_for` is `X-Forwarded-For` and `forwarded` is RFC 7239 `Forwarded`, each with
/// repeated header lines joined by `,`. `X-Forwarded-For` is used when present, else
/// `Forwarded`: configure the proxy to set one and drop a client-sent one. An entry that
/// is not an address (`unknown`, an obfuscated name, garbage) ends the walk at the proxy that
/// wrote it, since nothing left of it can be believed; when every hop is trusted the
/// left-most is the client.
pub(crate) fn client_address(
    peer: SocketAddr,
    forwarded_for: Option<&str>,
    forwarded: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    if let Some(list) = forwarded_for {
        walk_hops(peer, list.split(',').map(parse_hop), is_trusted)
    } else if let Some(header) = forwarded {
        let hops = rfc7239::parse(header).map(|element| {
            let node = element.ok()?.forwarded_for?;
            node.ip().copied()
        });
        walk_hops(peer, hops, is_trusted)
    } else {
        peer
    }
}

fn walk_hops(
    mut client: IpAddr,
    hops: impl DoubleEndedIterator<Item = Option<IpAddr>>,
    is_trusted: impl Fn(&IpAddr) -> bool,
) -> IpAddr {
    for hop in hops.rev() {
        let Some(hop) = hop else { break };
        client = hop.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`[v6]:port`, `v4:port`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn peer(text: &str) -> SocketAddr {
        SocketAddr::new(ip(text), 40_000)
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let trusted = nets(&["10.0.0.0/8"]);
        let spoofed = Some("1.2.3.4");
        assert_eq!(
            client_address(peer("203.0.113.9"), spoofed, spoofed, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(peer("10.0.0.2"), None, None, &[]),
            ip("10.0.0.2"),
            "no proxies configured"
        );
    }

    #[test]
    fn right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let proxy = peer("10.0.0.2");
        // The client prepended a lie; our proxies appended the truth on the right.
        let xff = "6.6.6.6, 198.51.100.20, 10.1.1.1";
        assert_eq!(
            client_address(proxy, Some(xff), None, &trusted),
            ip("198.51.100.20")
        );
        assert_eq!(
            client_address(
                proxy,
                Some("[2001:db8::5]:443, 198.51.100.20:5000"),
                None,
                &trusted
            ),
            ip("198.51.100.20")
        );
        assert_eq!(
            client_address(proxy, Some("10.2.2.2, 10.3.3.3"), None, &trusted),
            ip("10.2.2.2"),
            "all trusted: the left-most"
        );
        assert_eq!(
            client_address(proxy, Some("198.51.100.20, garbage"), None, &trusted),
            ip("10.0.0.2"),
            "an unreadable hop ends the walk at the proxy that wrote it"
        );
        assert_eq!(
            client_address(
                SocketAddr::new(ip("::ffff:10.0.0.2"), 1),
                Some("192.0.2.1"),
                None,
                &trusted
            ),
            ip("192.0.2.1"),
            "an IPv4-mapped peer is matched as IPv4"
        );
    }

    #[test]
    fn forwarded_header_is_read_when_x_forwarded_for_is_absent() {
        let trusted = nets(&["10.0.0.0/8"]);
        let proxy = peer("10.0.0.2");
        let forwarded = r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.9.9.9"#;
        assert_eq!(
            client_address(proxy, None, Some(forwarded), &trusted),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_address(proxy, None, Some("for=unknown"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(proxy, Some("192.0.2.1"), Some("for=6.6.6.6"), &trusted),
            ip("192.0.2.1"),
            "X-Forwarded-For wins"
        );
    }
}
