//! Where requests come from: the client addresses of legitimate users (carrier-grade NAT
//! pools of mobile carriers, home IPv4 addresses, IPv6 /64s, shared venue Wi-Fi) and of
//! attackers (proxy pools spread over many /24s, or a few hosting ranges).
//!
//! Addresses are synthetic public addresses (no private, shared, loopback, documentation or
//! multicast space): the gateway keys its rules on addresses and networks (/24, /64), never
//! on who owns them, so only how addresses are shared matters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// A random public /24, as its first three octets.
pub(crate) fn public_net24(rng: &mut StdRng) -> [u8; 3] {
    loop {
        let a: u8 = rng.gen_range(1..=223);
        let b: u8 = rng.gen();
        let c: u8 = rng.gen();
        let reserved = matches!(a, 10 | 100 | 127 | 169 | 172 | 192 | 198 | 203);
        if !reserved {
            return [a, b, c];
        }
    }
}

fn in_net(net: [u8; 3], host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host))
}

/// `count` addresses spread over `nets` random /24s (round robin), distinct.
pub(crate) fn pool_v4(count: usize, nets: usize, rng: &mut StdRng) -> Vec<IpAddr> {
    let nets: Vec<[u8; 3]> = (0..nets.max(1)).map(|_| public_net24(rng)).collect();
    let mut hosts: Vec<Vec<u8>> = nets
        .iter()
        .map(|_| {
            let mut h: Vec<u8> = (1..=254).collect();
            h.shuffle(rng);
            h
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let n = i % nets.len();
        match hosts[n].pop() {
            Some(host) => out.push(in_net(nets[n], host)),
            None => break,
        }
    }
    out
}

/// A random global unicast /64 (2a00::/12-like), as its upper 64 bits.
pub(crate) fn public_net64(rng: &mut StdRng) -> u64 {
    (0x2a00_u64 << 48) | (rng.gen::<u64>() >> 16)
}

/// A random address inside the /64 `net` (privacy addresses change per session).
pub(crate) fn in_net64(net: u64, rng: &mut StdRng) -> IpAddr {
    let bits = (u128::from(net) << 64) | u128::from(rng.gen::<u64>());
    IpAddr::V6(Ipv6Addr::from(bits))
}

/// A proxy pool: `count` addresses, most alone in their /24, some sharing one with a few
/// others (residential proxy networks resell many customers of the same ISPs), with a
/// share on IPv6 /64s.
pub(crate) fn proxies(count: usize, rng: &mut StdRng) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let roll: f64 = rng.gen();
        if roll < 0.10 {
            let net = public_net64(rng);
            out.push(in_net64(net, rng));
        } else if roll < 0.70 {
            let net = public_net24(rng);
            out.push(in_net(net, rng.gen_range(1..=254)));
        } else {
            let net = public_net24(rng);
            let mut hosts: Vec<u8> = (1..=254).collect();
            hosts.shuffle(rng);
            let take = rng.gen_range(2..=5).min(count - out.len());
            out.extend(hosts.into_iter().take(take).map(|h| in_net(net, h)));
        }
    }
    out
}

/// A mobile carrier's carrier-grade NAT: the public addresses its subscribers' IPv4
/// traffic leaves from. A subscriber gets one of them per session.
#[derive(Debug)]
pub(crate) struct Carrier {
    pub addrs: Vec<IpAddr>,
}

/// The carrier profile of every country: (market share, NAT addresses, /24s they are in).
/// The sizes are the model's assumption (SIMULATION.md): a large carrier leaves from a few
/// /24s, a small one or an MVNO from a handful of addresses.
pub(crate) const CARRIER_PROFILE: [(f64, usize, usize); 4] =
    [(0.40, 256, 4), (0.30, 64, 1), (0.20, 16, 1), (0.10, 4, 1)];

/// Residential ISPs per country and the /16s each hands addresses out of.
const HOME_ISPS: usize = 4;
const HOME_BLOCKS_PER_ISP: usize = 16;

/// Venues (offices, campuses, cafés) with one NAT address each; popularity falls off as
/// 1/rank, so the largest few see many users.
const VENUES: usize = 40;

/// One country's networks.
#[derive(Debug)]
pub(crate) struct CountryNet {
    pub carriers: Vec<Carrier>,
    /// /16s of residential ISPs, as their first two octets.
    home_blocks: Vec<[u8; 2]>,
    venues: Vec<IpAddr>,
}

impl CountryNet {
    pub(crate) fn build(rng: &mut StdRng) -> Self {
        let carriers = CARRIER_PROFILE
            .iter()
            .map(|&(_, addrs, nets)| Carrier {
                addrs: pool_v4(addrs, nets, rng),
            })
            .collect();
        let home_blocks = (0..HOME_ISPS * HOME_BLOCKS_PER_ISP)
            .map(|_| {
                let n = public_net24(rng);
                [n[0], n[1]]
            })
            .collect();
        let venues = pool_v4(VENUES, VENUES, rng);
        Self {
            carriers,
            home_blocks,
            venues,
        }
    }

    /// A carrier, weighted by market share.
    pub(crate) fn pick_carrier(&self, rng: &mut StdRng) -> usize {
        let roll: f64 = rng.gen();
        let mut acc = 0.0;
        for (i, &(share, _, _)) in CARRIER_PROFILE.iter().enumerate() {
            acc += share;
            if roll < acc {
                return i;
            }
        }
        CARRIER_PROFILE.len() - 1
    }

    pub(crate) fn home_address(&self, rng: &mut StdRng) -> IpAddr {
        let block = self.home_blocks[rng.gen_range(0..self.home_blocks.len())];
        IpAddr::V4(Ipv4Addr::new(
            block[0],
            block[1],
            rng.gen(),
            rng.gen_range(1..=254),
        ))
    }

    /// A venue, by 1/rank popularity.
    pub(crate) fn pick_venue(&self, rng: &mut StdRng) -> usize {
        let total: f64 = (1..=self.venues.len()).map(|r| 1.0 / r as f64).sum();
        let mut roll = rng.gen::<f64>() * total;
        for r in 1..=self.venues.len() {
            roll -= 1.0 / r as f64;
            if roll <= 0.0 {
                return r - 1;
            }
        }
        0
    }
}

/// How a legitimate user reaches the tenant today.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// Mobile data behind the carrier's NAT: a pool address per session.
    Cgnat { country: usize, carrier: usize },
    /// A home connection with its own IPv4 address.
    Home(IpAddr),
    /// An IPv6 connection: a /64 of its own, a fresh address in it per session.
    V6(u64),
    /// Shared Wi-Fi behind one address.
    Venue { country: usize, venue: usize },
}

/// Every legitimate country's networks, indexed like the population's countries.
#[derive(Debug)]
pub(crate) struct Networks {
    pub countries: Vec<CountryNet>,
}

impl Networks {
    /// The address of one session (an attempt at a journey).
    pub(crate) fn session_address(&self, access: &Access, rng: &mut StdRng) -> IpAddr {
        match access {
            Access::Cgnat { country, carrier } => {
                let pool = &self.countries[*country].carriers[*carrier].addrs;
                pool[rng.gen_range(0..pool.len())]
            }
            Access::Home(ip) => *ip,
            Access::V6(net) => in_net64(*net, rng),
            Access::Venue { country, venue } => self.countries[*country].venues[*venue],
        }
    }
}

/// The network an address is counted under by `ip_network` rules: /24 or /64.
pub(crate) fn network_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn pools_have_the_asked_shape() {
        let mut rng = StdRng::seed_from_u64(3);
        let pool = pool_v4(64, 1, &mut rng);
        assert_eq!(pool.len(), 64);
        let nets: std::collections::HashSet<u128> = pool.iter().map(|ip| network_of(*ip)).collect();
        assert_eq!(nets.len(), 1);
        let unique: std::collections::HashSet<&IpAddr> = pool.iter().collect();
        assert_eq!(unique.len(), 64);
        let proxies = proxies(1000, &mut rng);
        assert_eq!(proxies.len(), 1000);
        let nets: std::collections::HashSet<u128> =
            proxies.iter().map(|ip| network_of(*ip)).collect();
        assert!(nets.len() > 500, "{}", nets.len());
    }
}
