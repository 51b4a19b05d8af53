//! A connection's identity as both socket tables store it: addresses as 16 bytes each, with
//! no enum and no padding, so that a table slot stays at 104 bytes; and the hashes the tables
//! index it by.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use rustc_hash::FxBuildHasher;

use crate::event::{Netns, Tuple};

/// A [`Tuple`] packed: 40 bytes. IPv4 addresses take the first 4 bytes of their 16; IPv6 flow
/// info and scope id are not kept (every source leaves them 0). Which ends are IPv6 is kept
/// apart ([`Ipv6Ends`]), in the flag byte a slot has anyway.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PackedTuple {
    local_ip: [u8; 16],
    remote_ip: [u8; 16],
    netns: Option<Netns>,
    local_port: u16,
    remote_port: u16,
}

/// Which ends of a packed tuple are IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Ipv6Ends {
    pub local: bool,
    pub remote: bool,
}

impl PackedTuple {
    /// Whether the local port is bound (not 0).
    pub const fn has_local_port(&self) -> bool {
        self.local_port != 0
    }

    #[inline]
    pub fn pack(tuple: &Tuple) -> (Self, Ipv6Ends) {
        let (local_ip, local) = pack_ip(tuple.local);
        let (remote_ip, remote) = pack_ip(tuple.remote);
        let packed = Self {
            local_ip,
            remote_ip,
            netns: tuple.netns,
            local_port: tuple.local.port(),
            remote_port: tuple.remote.port(),
        };
        (packed, Ipv6Ends { local, remote })
    }

    #[inline]
    pub fn unpack(&self, v6: Ipv6Ends) -> Tuple {
        Tuple {
            netns: self.netns,
            local: unpack_ip(self.local_ip, self.local_port, v6.local),
            remote: unpack_ip(self.remote_ip, self.remote_port, v6.remote),
        }
    }

    #[inline]
    pub const fn netns(&self) -> Option<Netns> {
        self.netns
    }

    /// Whether this is `tuple` packed, without unpacking it.
    #[inline]
    pub fn holds(&self, v6: Ipv6Ends, tuple: &Tuple) -> bool {
        self.netns == tuple.netns && self.holds_addresses(v6, tuple)
    }

    /// Whether this is `tuple` packed, in whatever namespace.
    #[inline]
    pub fn holds_addresses(&self, v6: Ipv6Ends, tuple: &Tuple) -> bool {
        // The ports first: they differ more often and cost less to compare.
        self.local_port == tuple.local.port()
            && self.remote_port == tuple.remote.port()
            && holds_ip(&self.local_ip, v6.local, tuple.local.ip())
            && holds_ip(&self.remote_ip, v6.remote, tuple.remote.ip())
    }
}

/// Whether `packed` (IPv6 when `v6`) is `ip` packed. An IPv4 address fills the first 4 bytes
/// and [`pack_ip`] zeroes the rest, so those 4 decide.
#[inline]
fn holds_ip(packed: &[u8; 16], v6: bool, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => !v6 && packed[..4] == ip.octets(),
        IpAddr::V6(ip) => v6 && *packed == ip.octets(),
    }
}

/// (16 address bytes, whether IPv6).
#[inline]
fn pack_ip(a: SocketAddr) -> ([u8; 16], bool) {
    match a.ip() {
        IpAddr::V4(ip) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&ip.octets());
            (b, false)
        }
        IpAddr::V6(ip) => {
            debug_assert!(
                matches!(a, SocketAddr::V6(v) if v.flowinfo() == 0 && v.scope_id() == 0),
                "flow info and scope id are not stored: {a:?}"
            );
            (ip.octets(), true)
        }
    }
}

#[inline]
fn unpack_ip(b: [u8; 16], port: u16, v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(b), port, 0, 0))
    } else {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            port,
        ))
    }
}

pub(super) fn hash_key(key: u64) -> u64 {
    use std::hash::BuildHasher as _;
    FxBuildHasher.hash_one(key)
}

/// The hash of a tuple as the tables index it: that of its packed form, so that a table
/// hashes its own slots ([`hash_packed`]) without unpacking them.
pub(super) fn hash_tuple(tuple: &Tuple) -> u64 {
    let (packed, v6) = PackedTuple::pack(tuple);
    hash_packed(&packed, v6)
}

/// Leaves the namespace out: a transition after a socket's birth carries none (the daemon takes
/// it from the socket's entry), so a socket known from sock_diag must be found by its
/// addresses alone ([`super::table::Table::keys_anywhere`]). Sockets with the same addresses in
/// several namespaces share a bucket, and are told apart when compared.
pub(super) fn hash_packed(tuple: &PackedTuple, v6: Ipv6Ends) -> u64 {
    use std::hash::BuildHasher as _;
    FxBuildHasher.hash_one((
        &tuple.local_ip,
        &tuple.remote_ip,
        tuple.local_port,
        tuple.remote_port,
        v6,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_of_both_families_and_mixed_ends_round_trip() {
        for (local, remote) in [
            ("127.0.0.1:80", "127.0.0.2:40000"),
            ("[::1]:80", "[::2]:40000"),
            ("[::ffff:127.0.0.1]:80", "[::1]:1"),
        ] {
            let tuple = Tuple {
                netns: Netns::new(7),
                local: local.parse().unwrap(),
                remote: remote.parse().unwrap(),
            };
            let (packed, v6) = PackedTuple::pack(&tuple);
            assert_eq!(packed.unpack(v6), tuple);
            assert!(packed.holds(v6, &tuple));
            let other = Tuple {
                netns: None,
                ..tuple
            };
            assert!(!packed.holds(v6, &other));
            assert!(packed.holds_addresses(v6, &other));
            assert_eq!(hash_tuple(&tuple), hash_packed(&packed, v6));
            assert_eq!(
                hash_tuple(&tuple),
                hash_tuple(&other),
                "the namespace is not hashed"
            );
        }
    }
}
