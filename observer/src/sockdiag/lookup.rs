//! Whether connections are still in a namespace: what a reconciliation asks before it drops a
//! socket that its dump did not list.
//!
//! A dump is not a snapshot. The kernel walks its hash a chain at a time and, between two
//! replies, resumes a chain by position; a socket that closes ahead of that position makes the
//! dump skip one that stays. A lookup by the connection's addresses resumes nothing: it finds
//! the socket or answers `ENOENT`.
//!
//! A socket that closes while it is being reported is reported in its last state without its
//! local port (released first). A reconciliation does not add such a socket, but here it
//! still answers: it has not finished closing, and its close is on its way through the event
//! stream. So a tracked socket it answers for is kept one more reconciliation, at worst;
//! counted gone, it would end as unseen if its close reached the daemon after it was dropped.

use std::{cell::Cell, collections::hash_map::Entry as MapEntry, net::SocketAddr};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader};
use netlink_packet_sock_diag::{AF_INET, AF_INET6};
use netlink_sys::Socket;
use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::{
    DiagSocket, DiagTimer, NetnsRef, SockDiagError, Timed,
    dump::{self, Entry, NETLINK_HEADER_LEN, Reply},
};
use crate::event::Netns;

/// A socket to look for, by its addresses as the event stream saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    /// Port 0 for a connecting socket whose port connect() had not bound yet: then any socket
    /// connecting to `remote` answers for it.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Only a socket of this kind answers for it.
    pub kind: ProbeKind,
}

/// What kind of socket a probe looks for. Addresses alone do not tell: a connection whose
/// birth was seen before its remote end was set (a server's child, LISTEN -> SYN_RECV) has a
/// listener's addresses, and a full socket whose close was lost has the addresses of the
/// timewait socket that replaced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A connection's full socket (or request socket).
    Connection,
    /// A timewait socket (TIME_WAIT, or FIN_WAIT2 waiting in one).
    Timewait,
    Listener,
}

impl ProbeKind {
    /// The kind of a socket sock_diag reports: only timewait sockets have the TIME_WAIT timer.
    fn of(socket: &DiagSocket) -> Self {
        if socket.state == TcpState::Listen {
            Self::Listener
        } else if socket.timer == DiagTimer::TimeWait {
            Self::Timewait
        } else {
            Self::Connection
        }
    }
}

impl Probe {
    const fn port_known(&self) -> bool {
        self.local.port() != 0
    }
}

/// Which of `probes` the namespace `ns` no longer holds (`true`: gone), asked from a thread
/// inside it.
///
/// Each is looked up by its addresses. A lookup that names no device does not find a socket
/// bound to one (`SO_BINDTODEVICE`, an IPv6 link-local connection), and a connecting socket
/// whose port is not known cannot be looked up; so what the lookups do not find is looked for
/// in one more dump, and only what both miss is gone.
///
/// The answer holds, for each probe, `true` when the namespace no longer holds it.
pub fn gone_in_netns(ns: &NetnsRef, probes: &[Probe]) -> Timed<Vec<bool>> {
    Timed::in_netns(ns, || gone(ns.inode, probes))
}

fn gone(netns: Netns, probes: &[Probe]) -> Result<Vec<bool>, SockDiagError> {
    let socket = dump::open()?;
    let mut buf = vec![0u8; REPLY_BUFFER];
    let mut gone = Vec::with_capacity(probes.len());
    for (seq, probe) in (FIRST_SEQ..).zip(probes) {
        // A lookup answers a listener on the local port when it finds no connection, and it
        // may be another listener than the one asked for (a wildcard one): listeners are
        // looked for in the dump only, and so are connections known by their listener's
        // addresses (a child whose transitions after its first were lost), which a lookup
        // would answer with that listener.
        let lookup =
            probe.port_known() && probe.kind != ProbeKind::Listener && probe.remote.port() != 0;
        gone.push(!lookup || !exists(&socket, netns, seq, probe, &mut buf)?);
    }
    if !gone.contains(&true) {
        return Ok(gone);
    }
    // Missed by the lookups: indices by what a dump entry would match.
    let mut missed: FxHashMap<Probe, Vec<usize>> = FxHashMap::default();
    for (i, probe) in probes.iter().enumerate().filter(|(i, _)| gone[*i]) {
        missed.entry(match_key(probe)).or_default().push(i);
    }
    dump::tcp_dump(netns, dump::ALL_STATES, &mut |entry| {
        let s = &entry.socket;
        let mut found = |key: Probe| {
            if let MapEntry::Occupied(o) = missed.entry(key) {
                for i in o.remove() {
                    gone[i] = false;
                }
            }
        };
        found(Probe {
            local: s.local,
            remote: s.remote,
            kind: ProbeKind::of(s),
        });
        if s.state == TcpState::SynSent {
            found(match_key(&Probe {
                local: SocketAddr::new(s.local.ip(), 0),
                remote: s.remote,
                kind: ProbeKind::Connection,
            }));
        }
    })?;
    Ok(gone)
}

/// What a dump entry is matched on: both ends, or only the remote one for a connecting socket
/// whose port (and perhaps local address) is not known.
fn match_key(probe: &Probe) -> Probe {
    if probe.port_known() {
        return *probe;
    }
    let unspecified = match probe.local {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    Probe {
        local: unspecified,
        remote: probe.remote,
        kind: ProbeKind::Connection,
    }
}

/// A reply is one socket with its attributes, or an error: a few hundred bytes.
const REPLY_BUFFER: usize = 8 * 1024;

/// Sequence numbers of lookups, one each (the dump socket's own is 1).
const FIRST_SEQ: u32 = 2;

/// `SOCK_DIAG_BY_FAMILY`: a request in `struct inet_diag_req_v2`, answered in messages of the
/// same type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// Size of `struct inet_diag_req_v2`: family, protocol, extensions, padding (a byte each),
/// states (4), the socket id (48).
const INET_DIAG_REQ_V2_LEN: usize = 56;

/// Whether the connection `probe` is in the calling thread's namespace.
fn exists(
    socket: &Socket,
    netns: Netns,
    seq: u32,
    probe: &Probe,
    buf: &mut [u8],
) -> Result<bool, SockDiagError> {
    dump::send(socket, &request(seq, probe))?;
    let kind = Cell::new(None);
    let mut each = |entry: Entry| kind.set(Some(ProbeKind::of(&entry.socket)));
    let mut reply = Reply {
        netns,
        kind: SOCK_DIAG_BY_FAMILY,
        seq,
        each: &mut each,
    };
    loop {
        let len = dump::recv(socket, buf)?;
        match reply.feed(&buf[..len]) {
            Ok(_) => {}
            Err(SockDiagError::Kernel { source })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        if let Some(kind) = kind.get() {
            // With no connection of these addresses the kernel answers with a listener on the
            // local port; a timewait socket may have taken a full socket's place.
            return Ok(kind == probe.kind);
        }
    }
}

/// A lookup of one TCP connection by its addresses, any cookie.
fn request(seq: u32, probe: &Probe) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.length = u32::try_from(NETLINK_HEADER_LEN + INET_DIAG_REQ_V2_LEN).expect("small");
    header.message_type = SOCK_DIAG_BY_FAMILY;
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut buf = vec![0; NETLINK_HEADER_LEN];
    netlink_packet_core::Emitable::emit(&header, &mut buf);
    buf.push(if probe.local.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    });
    buf.push(u8::try_from(libc::IPPROTO_TCP).expect("6"));
    buf.extend_from_slice(&[0, 0]); // no extensions, padding
    buf.extend_from_slice(&dump::ALL_STATES.to_ne_bytes());
    buf.extend_from_slice(&probe.local.port().to_be_bytes());
    buf.extend_from_slice(&probe.remote.port().to_be_bytes());
    buf.extend_from_slice(&address(probe.local));
    buf.extend_from_slice(&address(probe.remote));
    buf.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    buf.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE: any cookie
    debug_assert_eq!(buf.len(), NETLINK_HEADER_LEN + INET_DIAG_REQ_V2_LEN);
    buf
}

/// An address as `struct inet_diag_sockid` holds it: 16 bytes, an IPv4 one in the first 4.
fn address(addr: SocketAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match addr {
        SocketAddr::V4(a) => out[..4].copy_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out = a.ip().octets(),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_names_both_ends_any_interface_and_any_cookie() {
        let probe = Probe {
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            kind: ProbeKind::Connection,
        };
        let r = request(7, &probe);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(
            u16::from_ne_bytes(r[6..8].try_into().unwrap()),
            NLM_F_REQUEST,
            "one socket, not a dump"
        );
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        let req = &r[16..];
        assert_eq!((req[0], req[1]), (AF_INET, 6));
        assert_eq!(&req[8..10], &40000u16.to_be_bytes());
        assert_eq!(&req[10..12], &80u16.to_be_bytes());
        assert_eq!(&req[12..16], &[10, 0, 0, 1]);
        assert_eq!(&req[28..32], &[10, 0, 0, 2]);
        assert_eq!(&req[44..48], &[0; 4]);
        assert_eq!(&req[48..56], &[0xff; 8]);
    }

    #[test]
    fn a_connecting_socket_is_matched_on_its_remote_end_alone() {
        let probe = Probe {
            local: "[::1]:0".parse().unwrap(),
            remote: "[::1]:80".parse().unwrap(),
            kind: ProbeKind::Connection,
        };
        let listed = Probe {
            local: "[::]:0".parse().unwrap(),
            remote: "[::1]:80".parse().unwrap(),
            kind: ProbeKind::Connection,
        };
        assert_eq!(match_key(&probe), listed);
    }
}
