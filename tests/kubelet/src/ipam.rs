//! Pod IP allocation from the pod CIDR.
//!
//! For a CIDR of /23 or wider the whole first /24 (e.g. 10.213.0.0/24: bridge gateway
//! .0.1, control plane .0.2, …) is left to infrastructure and pods start at x.y.1.1;
//! addresses ending in .0 or .255 are never handed out. Allocation walks a cursor
//! round-robin so a freed address is not immediately reused (stale ARP entries and
//! EndpointSlices would otherwise point at the wrong pod).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("CIDR {s:?} lacks a /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("CIDR {s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("CIDR {s:?}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("CIDR {s:?}: prefix must be within /8../30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl Cidr {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.base)
    }
    fn first(&self) -> u32 {
        let base = u32::from(self.base);
        if self.prefix <= 23 {
            base + 256 + 1
        } else {
            base + 3
        }
    }
    fn last(&self) -> u32 {
        (u32::from(self.base) | !self.mask()) - 1
    }
}

/// Allocator of pod IPs, owned by pod UID.
#[derive(Debug)]
pub struct Ipam {
    cidr: Cidr,
    owners: HashMap<u32, String>,
    cursor: u32,
}

impl Ipam {
    pub fn new(cidr: Cidr) -> Self {
        Ipam {
            cidr,
            owners: HashMap::new(),
            cursor: cidr.first(),
        }
    }

    fn usable(&self, ip: u32) -> bool {
        let last_octet = ip & 0xff;
        ip >= self.cidr.first() && ip <= self.cidr.last() && last_octet != 0 && last_octet != 255
    }

    /// Allocates an address for `uid`, preferring `preferred` (e.g. the pod's previous
    /// status.podIP) when it is usable and free or already owned by `uid`.
    pub fn allocate(&mut self, uid: &str, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(existing) = self.owned_by(uid) {
            return Some(existing);
        }
        if let Some(p) = preferred {
            let p = u32::from(p);
            if self.usable(p) && !self.owners.contains_key(&p) {
                self.owners.insert(p, uid.to_string());
                return Some(Ipv4Addr::from(p));
            }
        }
        let first = self.cidr.first();
        let last = self.cidr.last();
        let span = last - first + 1;
        let mut candidate = self.cursor;
        for _ in 0..span {
            if candidate > last || candidate < first {
                candidate = first;
            }
            if self.usable(candidate) && !self.owners.contains_key(&candidate) {
                self.owners.insert(candidate, uid.to_string());
                self.cursor = candidate + 1;
                return Some(Ipv4Addr::from(candidate));
            }
            candidate += 1;
        }
        None
    }

    /// Records that `ip` belongs to `uid` (seen in an existing pod's status), so that
    /// new pods do not take it. Returns false if it is unusable or owned by another pod.
    pub fn reserve(&mut self, uid: &str, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        if !self.usable(v) {
            return false;
        }
        match self.owners.get(&v) {
            Some(owner) => owner == uid,
            None => {
                self.owners.insert(v, uid.to_string());
                true
            }
        }
    }

    pub fn owned_by(&self, uid: &str) -> Option<Ipv4Addr> {
        self.owners
            .iter()
            .find(|(_, o)| o.as_str() == uid)
            .map(|(ip, _)| Ipv4Addr::from(*ip))
    }

    pub fn release(&mut self, uid: &str) {
        self.owners.retain(|_, o| o != uid);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_cidr() {
        let c: Cidr = "10.213.7.9/16".parse().unwrap();
        assert_eq!(c.base, Ipv4Addr::new(10, 213, 0, 0));
        assert!(c.contains(Ipv4Addr::new(10, 213, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 214, 0, 1)));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn allocation_skips_infrastructure_and_edges() {
        let mut ipam = Ipam::new("10.213.0.0/16".parse().unwrap());
        let a = ipam.allocate("a", None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 213, 1, 1));
        assert_eq!(ipam.allocate("a", None).unwrap(), a, "idempotent per uid");
        let b = ipam.allocate("b", None).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 213, 1, 2));
        // Preferred addresses in the infrastructure range are refused.
        let c = ipam
            .allocate("c", Some(Ipv4Addr::new(10, 213, 0, 2)))
            .unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 213, 1, 3));
        // A free preferred address is honoured.
        let d = ipam
            .allocate("d", Some(Ipv4Addr::new(10, 213, 9, 9)))
            .unwrap();
        assert_eq!(d, Ipv4Addr::new(10, 213, 9, 9));
        // Released addresses are not immediately reused.
        ipam.release("a");
        let e = ipam.allocate("e", None).unwrap();
        assert_eq!(e, Ipv4Addr::new(10, 213, 1, 4));
        // Reservations block others.
        assert!(ipam.reserve("f", Ipv4Addr::new(10, 213, 1, 5)));
        assert!(!ipam.reserve("g", Ipv4Addr::new(10, 213, 1, 5)));
        assert_eq!(
            ipam.allocate("g", None).unwrap(),
            Ipv4Addr::new(10, 213, 1, 6)
        );
    }

    #[test]
    fn skips_dot_zero_and_broadcast_and_exhausts() {
        let mut ipam = Ipam::new("10.1.0.0/23".parse().unwrap());
        // first = 10.1.1.1, last usable = 10.1.1.254: 254 addresses.
        let mut got = Vec::new();
        for i in 0..254 {
            got.push(ipam.allocate(&format!("p{i}"), None).unwrap());
        }
        assert!(
            got.iter()
                .all(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255)
        );
        assert!(ipam.allocate("overflow", None).is_none());
        ipam.release("p7");
        assert_eq!(ipam.allocate("again", None).unwrap(), got[7]);
    }
}
