//! How close TIME_WAIT is to the limits that make it hurt: the namespace's
//! `tcp_max_tw_buckets`, and the ephemeral ports toward one destination.

use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;

use super::Tuple;
use crate::sockdiag::NetLimits;

/// Timewait sockets (TIME_WAIT, and orphaned FIN_WAIT2 waiting in one: both use a bucket).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimewaitUsage {
    /// Timewait sockets per network namespace.
    pub per_netns: FxHashMap<u32, u64>,
    /// Timewait sockets holding an ephemeral local port, per (namespace, local address,
    /// remote end): connect() to that remote end cannot reuse those ports.
    pub per_destination: FxHashMap<(u32, IpAddr, SocketAddr), u64>,
}

impl TimewaitUsage {
    /// Counts `tuples`; ports are ephemeral by the namespace's own `ip_local_port_range`.
    pub fn of<'a>(
        tuples: impl Iterator<Item = &'a Tuple>,
        limits: &FxHashMap<u32, NetLimits>,
    ) -> Self {
        let mut usage = Self::default();
        for t in tuples {
            *usage.per_netns.entry(t.netns).or_default() += 1;
            if limits
                .get(&t.netns)
                .is_some_and(|l| l.is_ephemeral(t.local.port()))
            {
                *usage
                    .per_destination
                    .entry((t.netns, t.local.ip(), t.remote))
                    .or_default() += 1;
            }
        }
        usage
    }

    /// Per namespace: timewait sockets / `tcp_max_tw_buckets` (namespaces with a known limit).
    pub fn bucket_ratios<'a>(
        &'a self,
        limits: &'a FxHashMap<u32, NetLimits>,
    ) -> impl Iterator<Item = (u32, u64, f64)> + 'a {
        self.per_netns.iter().filter_map(|(netns, n)| {
            let max = limits.get(netns)?.max_tw_buckets?;
            Some((*netns, *n, ratio(*n, max)))
        })
    }

    /// Per destination: timewait sockets / size of the ephemeral port range.
    pub fn port_ratios<'a>(
        &'a self,
        limits: &'a FxHashMap<u32, NetLimits>,
    ) -> impl Iterator<Item = ((u32, IpAddr, SocketAddr), u64, f64)> + 'a {
        self.per_destination.iter().filter_map(|(key, n)| {
            let ports = limits.get(&key.0)?.ephemeral_ports()?;
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

    fn tuple(netns: u32, local: &str, remote: &str) -> Tuple {
        Tuple {
            netns,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
        }
    }

    #[test]
    fn counts_per_namespace_and_per_destination_of_ephemeral_ports() {
        let limits = FxHashMap::from_iter([(
            1,
            NetLimits {
                max_tw_buckets: Some(4),
                local_port_range: Some((40000, 40009)),
            },
        )]);
        let tuples = [
            tuple(1, "10.0.0.1:40000", "10.0.0.2:80"),
            tuple(1, "10.0.0.1:40001", "10.0.0.2:80"),
            tuple(1, "10.0.0.1:40002", "10.0.0.3:80"),
            // A server's side: its port is not ephemeral.
            tuple(1, "10.0.0.1:8080", "10.0.0.9:50000"),
            // No limits known for this namespace.
            tuple(2, "10.0.0.1:40000", "10.0.0.2:80"),
        ];
        let usage = TimewaitUsage::of(tuples.iter(), &limits);
        assert_eq!(usage.per_netns[&1], 4);
        assert_eq!(usage.per_netns[&2], 1);
        let dest = (
            1,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        assert_eq!(usage.per_destination[&dest], 2);
        assert_eq!(usage.per_destination.len(), 2);
        let buckets: Vec<_> = usage.bucket_ratios(&limits).collect();
        assert_eq!(buckets, [(1, 4, 1.0)]);
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
