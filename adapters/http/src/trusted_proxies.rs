//! Whose `Forwarded`, `X-Forwarded-*` and `X-Real-IP` headers sidekey believes, and so which address it
//! takes as a request's client.
//!
//! Any client can write these headers. Believed from anyone, they would let a client pick the address its
//! failed requests are counted under (a fresh one per guess) and tell the upstream any origin it likes.
//! So they are believed only from the peers the operator names in `http.trusted_proxies`: the reverse
//! proxies in front of sidekey, which set or append them. From any other peer the proxy drops them on the
//! way to the upstream and writes its own ([`crate::proxy::headers`]), and the client is the TCP peer.
//!
//! Behind trusted proxies, the client is the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy: each proxy appends the peer it saw, so the entries right of that one were written by
//! proxies the operator trusts, and those left of it by the client (anything at all). `X-Real-IP` is read
//! only when there is no `X-Forwarded-For`; `Forwarded` is passed along but not read (the proxies sidekey
//! is put behind all write `X-Forwarded-For`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use poem::http::{HeaderMap, HeaderName};

/// `X-Forwarded-For`: the chain of addresses the request passed through.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Real-IP`: the client's address, as a proxy that does not write a chain says it.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyTrust {
    /// Only peers inside these networks (`http.trusted_proxies`); none, the default, believes nobody.
    Networks(Vec<IpNet>),
    /// Every peer, the client being the last entry of `address_header`: the deprecated
    /// `http.client_address_header`, which behaves as it did before `trusted_proxies` existed.
    EveryPeer {
        /// The header read, as configured (`x-forwarded-for` or `x-real-ip`).
        address_header: HeaderName,
    },
}

impl Default for ProxyTrust {
    fn default() -> Self {
        Self::Networks(Vec::new())
    }
}

/// An entry of `http.trusted_proxies` that is neither a network nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network (CIDR, such as 10.0.0.0/8 or fd00::/8) or an address")]
pub struct InvalidNetwork(pub String);

impl ProxyTrust {
    /// Trust in the peers inside `networks`, each a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single
    /// address (taken as `/32` or `/128`).
    ///
    /// # Errors
    /// [`InvalidNetwork`] names the first entry that is neither.
    pub fn networks<S: AsRef<str>>(networks: &[S]) -> Result<Self, InvalidNetwork> {
        networks
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|network| network.trunc())
                    .map_err(|_| InvalidNetwork(entry.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self::Networks)
    }

    /// Whether the forwarding headers of a request from `peer` are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        match self {
            Self::Networks(networks) => {
                // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`: compare them as IPv4.
                let peer = peer.to_canonical();
                networks.iter().any(|network| network.contains(&peer))
            }
            Self::EveryPeer { .. } => true,
        }
    }

    /// The client of a request with these `headers` from the TCP peer `peer`, when it can be told.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        match self {
            Self::EveryPeer { address_header } => {
                let value = headers.get_all(address_header).iter().next_back().and_then(|v| v.to_str().ok());
                // A proxy appends the peer it saw: the last entry is the only one it vouches for.
                value.and_then(|value| parse_entry(value.rsplit(',').next()?)).or(peer)
            }
            Self::Networks(_) => {
                let peer = peer?.to_canonical();
                if !self.trusts(peer) {
                    return Some(peer);
                }
                Some(self.forwarded_client(headers).unwrap_or(peer))
            }
        }
    }

    /// The client a trusted peer names: `None` when it names none, or writes something that is not an
    /// address where an address must be (then the peer itself is counted, never a name the client chose).
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut chain = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            match value.to_str() {
                Ok(text) => chain.extend(text.split(',').map(str::trim).filter(|entry| !entry.is_empty())),
                Err(_) => return None,
            }
        }
        if chain.is_empty() {
            let real_ip = headers.get_all(X_REAL_IP).iter().next_back()?;
            return parse_entry(real_ip.to_str().ok()?);
        }
        let mut farthest_proxy = None;
        for entry in chain.iter().rev() {
            let address = parse_entry(entry)?;
            if !self.trusts(address) {
                return Some(address);
            }
            farthest_proxy = Some(address);
        }
        // Every entry is a trusted proxy (a request from inside): the one farthest from sidekey.
        farthest_proxy
    }
}

/// An address as proxies write it in `X-Forwarded-For` or `X-Real-IP`: bare, with a port
/// (`203.0.113.9:4711`, as some cloud balancers add), or bracketed IPv6 with or without a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let address = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(IpAddr::V6))?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusting(networks: &[&str]) -> ProxyTrust {
        ProxyTrust::networks(networks).unwrap()
    }

    #[test]
    fn networks_and_single_addresses_parse_and_anything_else_is_refused_by_name() {
        let trust = trusting(&["10.0.0.0/8", " 192.0.2.7 ", "fd00::/8", "2001:db8::1", "172.16.5.9/12"]);
        for trusted in
            ["10.1.2.3", "192.0.2.7", "fd12::1", "2001:db8::1", "172.31.255.255", "::ffff:10.0.0.1"]
        {
            assert!(trust.trusts(ip(trusted)), "{trusted}");
        }
        for untrusted in ["11.0.0.1", "192.0.2.8", "fe80::1", "2001:db8::2", "172.32.0.1", "::ffff:11.0.0.1"]
        {
            assert!(!trust.trusts(ip(untrusted)), "{untrusted}");
        }
        for bad in ["10.0.0.0/33", "localhost", "", "10.0.0.0/8,192.0.2.0/24", "::/129"] {
            assert_eq!(ProxyTrust::networks(&[bad]), Err(InvalidNetwork(bad.trim().to_owned())), "{bad}");
        }
        assert!(!ProxyTrust::default().trusts(ip("127.0.0.1")), "nobody is trusted by default");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_writes() {
        let spoofed = headers(&[(&X_FORWARDED_FOR, "203.0.113.1"), (&X_REAL_IP, "203.0.113.2")]);
        for trust in [ProxyTrust::default(), trusting(&["10.0.0.0/8"])] {
            assert_eq!(trust.client_address(&spoofed, Some(ip("198.51.100.4"))), Some(ip("198.51.100.4")));
        }
        assert_eq!(ProxyTrust::default().client_address(&spoofed, None), None, "no peer, no client");
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_entry_that_is_no_trusted_proxy() {
        let trust = trusting(&["10.0.0.0/8"]);
        let peer = Some(ip("10.0.0.2"));
        let client = |pairs: &[(&HeaderName, &str)]| trust.client_address(&headers(pairs), peer);
        // The client wrote 198.51.100.66 itself; the first proxy appended the address it saw.
        assert_eq!(
            client(&[(&X_FORWARDED_FOR, "198.51.100.66, 203.0.113.9, 10.0.0.1")]),
            Some(ip("203.0.113.9"))
        );
        // Several header lines are one list, in order.
        let two_lines =
            [(&X_FORWARDED_FOR, "198.51.100.66"), (&X_FORWARDED_FOR, "203.0.113.9:4711, 10.0.0.1")];
        assert_eq!(client(&two_lines), Some(ip("203.0.113.9")));
        assert_eq!(client(&[(&X_FORWARDED_FOR, "[2001:db8::7]:443")]), Some(ip("2001:db8::7")));
        // X-Real-IP only without X-Forwarded-For.
        assert_eq!(client(&[(&X_REAL_IP, "203.0.113.5")]), Some(ip("203.0.113.5")));
        let both = [(&X_REAL_IP, "203.0.113.5"), (&X_FORWARDED_FOR, "203.0.113.9")];
        assert_eq!(client(&both), Some(ip("203.0.113.9")));
        // A request from inside: every entry a trusted proxy.
        assert_eq!(client(&[(&X_FORWARDED_FOR, "10.9.9.9, 10.0.0.1")]), Some(ip("10.9.9.9")));
        // Nothing forwarded, or garbage where a proxy should have written an address: the peer.
        assert_eq!(client(&[]), peer);
        assert_eq!(client(&[(&X_FORWARDED_FOR, "203.0.113.9, unknown")]), peer);
        assert_eq!(client(&[(&X_REAL_IP, "not an address")]), peer);
        // Garbage left of the client is the client's own business.
        assert_eq!(client(&[(&X_FORWARDED_FOR, "unknown, 203.0.113.9")]), Some(ip("203.0.113.9")));
    }

    #[test]
    fn the_deprecated_header_believes_its_last_entry_from_every_peer() {
        let trust = ProxyTrust::EveryPeer { address_header: X_FORWARDED_FOR };
        assert!(trust.trusts(ip("198.51.100.4")));
        let forwarded = headers(&[(&X_FORWARDED_FOR, "203.0.113.9, 192.0.2.44")]);
        assert_eq!(trust.client_address(&forwarded, None), Some(ip("192.0.2.44")));
        assert_eq!(trust.client_address(&forwarded, Some(ip("198.51.100.4"))), Some(ip("192.0.2.44")));
        let garbage = headers(&[(&X_FORWARDED_FOR, "not an address")]);
        assert_eq!(trust.client_address(&garbage, None), None);
        assert_eq!(trust.client_address(&garbage, Some(ip("198.51.100.4"))), Some(ip("198.51.100.4")));
    }
}
