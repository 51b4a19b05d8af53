//! A connection's identity on the wire.

use std::net::SocketAddr;

use super::{Family, Transition};

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
