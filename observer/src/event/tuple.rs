//! A connection's identity on the wire.

use std::net::SocketAddr;

use super::{Family, Transition};

/// A listening port: its network namespace (0 when unknown) and port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
}

/// A connection's identity on the wire: namespace (0 when unknown) and both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Tuple {
    #[must_use]
    pub fn family(&self) -> Family {
        if self.local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    /// The listening socket this connection came to, when it was accepted by one: its
    /// namespace and local port.
    #[must_use]
    pub fn listener(&self) -> ListenerKey {
        ListenerKey {
            netns: self.netns,
            port: self.local.port(),
        }
    }

    /// The connection a transition belongs to.
    #[must_use]
    pub fn of(t: &Transition) -> Self {
        Self {
            netns: t.netns.unwrap_or(0),
            local: t.local,
            remote: t.remote,
        }
    }
}
