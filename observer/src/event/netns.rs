//! A network namespace, named as the kernel and `ip netns identify` name it.

use std::{fmt, num::NonZeroU32};

/// A network namespace: the inode number of its nsfs file (`/proc/PID/ns/net`), which the
/// eBPF programs read from the socket's `possible_net_t`. Inode 0 never names a namespace, so
/// a record that carries 0 (the program could not read it) has no `Netns`: callers hold an
/// `Option<Netns>`, and "unknown" cannot be mistaken for a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns(NonZeroU32);

impl Netns {
    /// The namespace with this nsfs inode; `None` for 0, which the programs write when they
    /// could not read it.
    #[must_use]
    pub const fn new(inode: u32) -> Option<Self> {
        match NonZeroU32::new(inode) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// The nsfs inode number.
    #[must_use]
    pub const fn inode(self) -> u32 {
        self.0.get()
    }

    /// The inode the programs write for `netns`: 0 when unknown.
    #[must_use]
    pub const fn inode_or_zero(netns: Option<Self>) -> u32 {
        match netns {
            Some(n) => n.inode(),
            None => 0,
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Netns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.inode())
    }
}

#[cfg(test)]
mod tests {
    use super::Netns;

    #[test]
    fn zero_is_no_namespace_and_every_other_inode_round_trips() {
        assert_eq!(Netns::new(0), None);
        let n = Netns::new(4_026_531_840).unwrap();
        assert_eq!(n.inode(), 4_026_531_840);
        assert_eq!(n.to_string(), "4026531840");
        assert_eq!(Netns::inode_or_zero(Some(n)), 4_026_531_840);
        assert_eq!(Netns::inode_or_zero(None), 0);
        assert_eq!(size_of::<Option<Netns>>(), size_of::<u32>());
    }
}
