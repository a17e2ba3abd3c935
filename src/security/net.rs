//! IP networks (`192.168.1.0/24`, `2001:db8::/32`, or a single address) for the per-extension
//! allow-lists: REGISTER and INVITE of an extension are accepted only from the networks listed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a network (an address, or address/prefix such as 192.168.1.0/24)")]
pub struct NetError(pub String);

impl IpNet {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = NetError;

    fn from_str(s: &str) -> Result<IpNet, NetError> {
        let err = || NetError(s.to_owned());
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| err())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| err())?
            }
            Some(_) => return Err(err()),
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma-separated list as stored (empty text: no list).
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, NetError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// The stored form of a list: comma-separated, `None` when empty.
pub fn format_list(nets: &[IpNet]) -> Option<String> {
    (!nets.is_empty()).then(|| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let lan: IpNet = "192.168.1.0/24".parse().unwrap();
        assert!(lan.contains(ip("192.168.1.77")));
        assert!(lan.contains(ip("::ffff:192.168.1.5")));
        assert!(!lan.contains(ip("192.168.2.1")));
        assert!(!lan.contains(ip("2001:db8::1")));
        let one: IpNet = "127.0.0.5".parse().unwrap();
        assert!(one.contains(ip("127.0.0.5")));
        assert!(!one.contains(ip("127.0.0.6")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::9")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn bad_networks_are_errors_not_panics() {
        for bad in [
            "",
            "192.168.1.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host/8",
            "::/129",
            "1.2.3.4/é",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        let list = parse_list("10.0.0.0/8, 127.0.0.1").unwrap();
        assert_eq!(
            format_list(&list).as_deref(),
            Some("10.0.0.0/8,127.0.0.1/32")
        );
        assert_eq!(format_list(&[]), None);
    }
}
