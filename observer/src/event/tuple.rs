//! A connection's identity on the wire.

use std::net::SocketAddr;

use super::{Family, Netns, Transition};

/// A listening port: its network namespace (when known) and port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub netns: Option<Netns>,
    pub port: u16,
}

/// A connection's identity on the wire: namespace (when known) and both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub netns: Option<Netns>,
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

    /// The same connection seen from its other end (a local peer's socket).
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            netns: self.netns,
            local: self.remote,
            remote: self.local,
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
            netns: t.netns,
            local: t.local,
            remote: t.remote,
        }
    }
}
