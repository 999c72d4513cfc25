//! Where webhooks may connect. Loopback, private, link-local, CGNAT, multicast, unspecified,
//! reserved and IPv4-in-IPv6 addresses are refused unless the operator allow-lists a range: for
//! every app (`webhook_allow`), or for one app (`presence app allow-webhook-range`), which adds
//! to the former.
//!
//! The check applies to the address actually connected to: names are resolved by our own
//! resolver, which drops refused addresses before the HTTP client sees them (so a name that
//! re-resolves to loopback between a check and the connect gets nowhere), and literal
//! addresses are checked before the request starts. Proxies from the environment are ignored,
//! and redirects are never followed.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// An address range, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an address range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses `allow` as comma-separated ranges (`127.0.0.0/8, ::1`).
pub fn parse_allow_list(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',').filter(|part| !part.trim().is_empty()).map(str::parse).collect()
}

/// Writes ranges as `parse_allow_list` reads them.
pub fn format_allow_list(ranges: &[Cidr]) -> String {
    ranges.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
}

/// What names resolve to. The system resolver in production; tests pass a stub (see
/// `app::Options`) to play tricks such as DNS rebinding.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (`getaddrinfo`, through tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_owned();
        Box::pin(
            async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) },
        )
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 88 && ip.octets()[2] == 99) // 6to4 relay anycast 192.88.99/24
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || ip.to_ipv4_mapped().is_some() // ::ffff:0:0/96
        || ip.segments()[..6] == [0; 6] // IPv4-compatible ::/96
        || (ip.segments()[..2] == [0x64, 0xff9b]) // NAT64 64:ff9b::/96 and 64:ff9b:1::/48
        || first == 0x2002 // 6to4 embeds an IPv4 address
        || (first == 0x2001 && ip.segments()[1] == 0) // Teredo
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x0100 && ip.segments()[1..4] == [0, 0, 0] // discard-only 100::/64
        || (first == 0x2001 && (ip.segments()[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
        || (first == 0x3fff && ip.segments()[1] & 0xf000 == 0) // documentation 3fff::/20
        || first == 0x5f00 // segment routing SIDs 5f00::/16
}

/// The egress rules: what is refused, what the operator allows anyway, and how names resolve.
#[derive(Clone)]
pub struct Egress {
    allow: Vec<Cidr>,
    lookup: Arc<dyn Lookup>,
}

impl Default for Egress {
    fn default() -> Egress {
        Egress::new(Vec::new())
    }
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress").field("allow", &self.allow).finish_non_exhaustive()
    }
}

impl Egress {
    pub fn new(allow: Vec<Cidr>) -> Egress {
        Egress { allow, lookup: Arc::new(SystemLookup) }
    }

    /// The same rules, resolving names with `lookup`.
    pub fn resolving_with(self, lookup: Arc<dyn Lookup>) -> Egress {
        Egress { lookup, ..self }
    }

    /// These rules with `extra` ranges allowed too (one app's own ranges).
    pub fn widened(&self, extra: &[Cidr]) -> Egress {
        let mut allow = self.allow.clone();
        allow.extend(extra.iter().copied().filter(|range| !self.allow.contains(range)));
        Egress { allow, lookup: self.lookup.clone() }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|range| range.contains(ip)) {
            // An allow-listed IPv4 range never lets the same address in through IPv6 mapping.
            return true;
        }
        match ip {
            IpAddr::V4(v4) => !refused_v4(v4),
            IpAddr::V6(v6) => !refused_v6(v6),
        }
    }

    /// Refuses a URL whose host is a literal address that is not permitted (names are checked
    /// when they resolve).
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err("the URL has no host".into()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(format!("refused: {ip} is not a public address"))
        }
    }

    /// An HTTP client that connects only where these rules permit, never through a proxy, and
    /// never follows redirects.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver { egress: self.clone() }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("Presence-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with static settings builds")
    }
}

/// Resolves names (with the egress rules' resolver), then keeps only permitted addresses: the
/// HTTP client connects to nothing else, whatever the name said before.
struct CheckedResolver {
    egress: Egress,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = egress.lookup.lookup(&host).await?;
            let permitted: Vec<SocketAddr> =
                found.into_iter().filter(|ip| egress.permits(*ip)).map(|ip| SocketAddr::new(ip, 0)).collect();
            if permitted.is_empty() {
                // The address itself is not named: it would tell a developer how internal names
                // resolve here.
                let error: Box<dyn std::error::Error + Send + Sync> =
                    format!("refused: {host} does not resolve to a public address").into();
                return Err(error);
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_refused_and_public_ones_permitted() {
        let egress = Egress::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2001::1",
            "192.88.99.1",
            "2001:10::1",
            "2001:1f::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(!egress.permits(ip(refused)), "{refused}");
        }
        for permitted in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "100.128.0.1",
            "192.88.98.1",
            "2001:20::1",
            "3fff:1000::1",
        ] {
            assert!(egress.permits(ip(permitted)), "{permitted}");
        }
    }

    #[test]
    fn an_allow_list_opens_only_its_ranges() {
        let egress = Egress::new(parse_allow_list("127.0.0.2/32, ::1").unwrap());
        assert!(egress.permits(ip("127.0.0.2")));
        assert!(egress.permits(ip("::1")));
        assert!(!egress.permits(ip("127.0.0.1")));
        assert!(!egress.permits(ip("::ffff:127.0.0.2")));
        assert!(parse_allow_list("nonsense").is_err());
        assert!(parse_allow_list("10.0.0.0/33").is_err());
        assert_eq!(parse_allow_list("").unwrap(), vec![]);
        let ranges = parse_allow_list("10.0.0.0/8, ::1").unwrap();
        assert_eq!(format_allow_list(&ranges), "10.0.0.0/8, ::1/128");
        assert_eq!(parse_allow_list(&format_allow_list(&ranges)).unwrap(), ranges);
    }

    #[test]
    fn one_apps_ranges_widen_the_rules_for_it_alone() {
        let everyone = Egress::new(parse_allow_list("10.0.0.0/8").unwrap());
        let one = everyone.widened(&parse_allow_list("127.0.0.0/8, 10.0.0.0/8").unwrap());
        assert!(one.permits(ip("127.0.0.1")) && one.permits(ip("10.1.1.1")));
        assert!(!everyone.permits(ip("127.0.0.1")));
        assert_eq!(one.allow.len(), 2);
    }

    #[test]
    fn literal_hosts_in_any_spelling_are_checked() {
        let egress = Egress::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://[fc00::1]/",
            "http://0/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert!(egress.check_url(&parsed).is_err(), "{url} -> {:?}", parsed.host());
        }
        assert!(egress.check_url(&Url::parse("https://hooks.example.com/x").unwrap()).is_ok());
    }
}
