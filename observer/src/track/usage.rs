//! How close TIME_WAIT is to the limits that make it hurt: the namespace's
//! `tcp_max_tw_buckets`, and the ephemeral ports toward one destination.

use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;

use crate::event::Netns;
use crate::kernel::NetLimits;

/// A destination whose ephemeral ports timewait sockets hold: (namespace, local address,
/// remote end). connect() toward that remote end cannot reuse those ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub netns: Option<Netns>,
    pub local: IpAddr,
    pub remote: SocketAddr,
}

/// Timewait sockets (TIME_WAIT, and orphaned FIN_WAIT2 waiting in one: both use a bucket),
/// counted as they come and go ([`super::timewait_table`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimewaitUsage {
    /// Timewait sockets per network namespace.
    pub per_netns: FxHashMap<Option<Netns>, u64>,
    /// Timewait sockets holding an ephemeral local port (by their namespace's
    /// `ip_local_port_range`), per destination.
    pub per_destination: FxHashMap<Destination, u64>,
}

impl TimewaitUsage {
    /// Per namespace: timewait sockets / `tcp_max_tw_buckets` (namespaces with a known limit).
    pub fn bucket_ratios<'a>(
        &'a self,
        limits: &'a FxHashMap<Netns, NetLimits>,
    ) -> impl Iterator<Item = (Netns, u64, f64)> + 'a {
        self.per_netns.iter().filter_map(|(netns, n)| {
            let netns = (*netns)?;
            let max = limits.get(&netns)?.max_tw_buckets?;
            Some((netns, *n, ratio(*n, max)))
        })
    }

    /// Per destination: timewait sockets / size of the ephemeral port range.
    pub fn port_ratios<'a>(
        &'a self,
        limits: &'a FxHashMap<Netns, NetLimits>,
    ) -> impl Iterator<Item = (Destination, u64, f64)> + 'a {
        self.per_destination.iter().filter_map(|(key, n)| {
            let ports = limits.get(&key.netns?)?.ephemeral_ports()?;
            Some((*key, *n, ratio(*n, ports)))
        })
    }
}

/// `n / of`, with 0 buckets meaning every timewait socket is over the limit.
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 {
        if n == 0 { 0.0 } else { f64::INFINITY }
    } else {
        n as f64 / of as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(inode: u32) -> Netns {
        Netns::new(inode).unwrap()
    }

    #[test]
    fn ratios_against_the_namespaces_limits() {
        let limits = FxHashMap::from_iter([(
            ns(1),
            NetLimits {
                max_tw_buckets: Some(4),
                local_port_range: Some((40000, 40009)),
            },
        )]);
        let dest = |remote: &str| Destination {
            netns: Netns::new(1),
            local: "10.0.0.1".parse().unwrap(),
            remote: remote.parse().unwrap(),
        };
        let usage = TimewaitUsage {
            // No limits known for namespace 2.
            per_netns: FxHashMap::from_iter([(Some(ns(1)), 4), (Some(ns(2)), 1)]),
            per_destination: FxHashMap::from_iter([
                (dest("10.0.0.2:80"), 2),
                (dest("10.0.0.3:80"), 1),
            ]),
        };
        let buckets: Vec<_> = usage.bucket_ratios(&limits).collect();
        assert_eq!(buckets, [(ns(1), 4, 1.0)]);
        let mut ports: Vec<_> = usage.port_ratios(&limits).map(|(_, n, r)| (n, r)).collect();
        ports.sort_by_key(|p| p.0);
        assert_eq!(ports, [(1, 0.1), (2, 0.2)]);
    }

    #[test]
    fn zero_buckets_means_over_the_limit() {
        assert!(ratio(1, 0).is_infinite());
        assert!(ratio(0, 0) == 0.0);
    }
}
