//! The per-namespace sysctls that bound TIME_WAIT: how many timewait sockets the kernel keeps,
//! and how many ephemeral ports a client has.

use std::fs;

/// `net.ipv4.tcp_max_tw_buckets` of the calling thread's namespace: how many timewait sockets
/// it may hold (and so expire at once).
#[must_use]
pub fn max_tw_buckets() -> Option<u64> {
    NetLimits::of_current().max_tw_buckets
}

/// Read inside the namespace they belong to (net sysctls are per network namespace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetLimits {
    /// `net.ipv4.tcp_max_tw_buckets`: beyond it, closing sockets leave no timewait socket.
    pub max_tw_buckets: Option<u64>,
    /// `net.ipv4.ip_local_port_range`: the ports connect() picks from.
    pub local_port_range: Option<(u16, u16)>,
}

impl NetLimits {
    /// The calling thread's namespace's limits; a value that cannot be read is `None`.
    #[must_use]
    pub fn of_current() -> Self {
        let read = |name: &str| fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
        Self {
            max_tw_buckets: read("tcp_max_tw_buckets").and_then(|s| s.trim().parse().ok()),
            local_port_range: read("ip_local_port_range").and_then(|s| parse_range(&s)),
        }
    }

    /// How many ephemeral ports connect() can choose from.
    #[must_use]
    pub fn ephemeral_ports(&self) -> Option<u64> {
        self.local_port_range
            .map(|(low, high)| u64::from(high.saturating_sub(low)) + 1)
    }

    /// Whether `port` is one connect() could have picked.
    #[must_use]
    pub fn is_ephemeral(&self, port: u16) -> bool {
        self.local_port_range
            .is_some_and(|(low, high)| (low..=high).contains(&port))
    }
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut parts = s.split_whitespace().map(str::parse::<u16>);
    let low = parts.next()?.ok()?;
    let high = parts.next()?.ok()?;
    (low <= high).then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_as_the_kernel_prints_them() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("x"), None);
        let limits = NetLimits {
            max_tw_buckets: Some(10),
            local_port_range: Some((32768, 60999)),
        };
        assert_eq!(limits.ephemeral_ports(), Some(28232));
        assert!(limits.is_ephemeral(32768) && limits.is_ephemeral(60999));
        assert!(!limits.is_ephemeral(8080));
    }

    #[test]
    fn this_namespace_has_limits() {
        let limits = NetLimits::of_current();
        assert!(limits.max_tw_buckets.is_some());
        assert!(limits.ephemeral_ports().unwrap() > 0);
    }
}
