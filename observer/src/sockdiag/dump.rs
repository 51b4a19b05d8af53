//! One `SOCK_DIAG_BY_FAMILY` dump of the TCP sockets in the calling thread's network namespace.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
};

use netlink_packet_core::{
    Emitable as _, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ALIGNTO, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Nla as _, Parseable as _,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, SockDiagMessage,
    inet::{InetResponse, nlas::Nla},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};
use observer_common::TcpState;

use super::{DiagSocket, DiagTimer, SockDiagError};
use crate::event::{CgroupId, Family, Netns};

/// Receive buffer per `recv`. The kernel fills at most about 32 KiB per dump datagram; twice
/// that leaves room, and `MSG_TRUNC` still reports a datagram that would not fit.
const RECV_BUFFER: usize = 64 * 1024;

/// The kernel answers a dump at once; a silent socket for this long means something is wrong.
const RECV_TIMEOUT_SECS: libc::time_t = 10;

/// Every state `TcpState` can name (bits 1..=12). `StateFlags` of the crate lacks
/// `NEW_SYN_RECV`, so masks are built here and passed through `from_bits_retain`. Bit 13
/// (`TCP_BOUND_INACTIVE`, bound but neither listening nor connected) is left out on purpose:
/// it is not a TCP state and `TcpState` cannot hold it.
pub(super) const ALL_STATES: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < TcpState::ALL.len() {
        mask |= 1 << TcpState::ALL[i] as u32;
        i += 1;
    }
    mask
};

// Offsets into `struct inet_diag_msg` of the fields that `InetResponseHeader` folds into its
// `Timer` enum: it keeps no expiry for the TIME_WAIT timer, retransmits only for the
// retransmit timer, and maps unknown timer values to `None`. These three are read from the
// raw reply; everything else comes from the crate's parse.
const TIMER: usize = 2;
const RETRANSMITS: usize = 3;
const EXPIRES: std::ops::Range<usize> = 52..56;

/// One socket of a dump, with what only some callers need besides [`DiagSocket`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub socket: DiagSocket,
    /// `IPV6_V6ONLY` of an IPv6 listener; `None` when the kernel did not say (IPv4, or not
    /// listening).
    pub v6only: Option<bool>,
    /// `idiag_if`: the device a socket is bound to, or a request socket's incoming device; 0
    /// for none.
    pub interface: u32,
}

/// Dumps the IPv4 and IPv6 TCP sockets; `netns` is recorded in each entry.
pub(super) fn tcp_sockets(netns: Netns) -> Result<Vec<DiagSocket>, SockDiagError> {
    let mut sockets = Vec::new();
    tcp_dump(netns, ALL_STATES, &mut |entry| sockets.push(entry.socket))?;
    Ok(sockets)
}

/// Dumps the IPv4 and IPv6 TCP sockets whose state bit (`1 << TCP_*`) is set in `states`,
/// handing each to `each`, in the kernel's order (the two families mixed). The kernel filters
/// by state before it copies anything out.
pub(super) fn tcp_dump(
    netns: Netns,
    states: u32,
    each: &mut dyn FnMut(Entry),
) -> Result<(), SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::Socket)?;
    socket.bind_auto().map_err(stage("bind"))?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(stage("connect"))?;
    set_receive_timeout(&socket).map_err(stage("setsockopt(SO_RCVTIMEO)"))?;

    let request = request(SEQ, states);
    let sent = socket.send(&request, 0).map_err(stage("send"))?;
    if sent != request.len() {
        return Err(SockDiagError::Io {
            stage: "send",
            source: io::Error::other(format!("sent {sent} of {} bytes", request.len())),
        });
    }
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut reply = Reply {
        netns,
        seq: SEQ,
        each,
    };
    loop {
        let len = recv(&socket, &mut buf)?;
        if reply.feed(&buf[..len])? {
            return Ok(());
        }
    }
}

/// The one request a dump socket sends.
const SEQ: u32 = 1;

/// A kernel that never answers must not hang the caller (reconciliation runs periodically).
fn set_receive_timeout(socket: &Socket) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: a valid socket, and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).expect("small"),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn stage(stage: &'static str) -> impl FnOnce(io::Error) -> SockDiagError {
    move |source| SockDiagError::Io { stage, source }
}

/// `TCPDIAG_GETSOCK`: the original TCP dump request, which the kernel still serves and answers
/// with messages of the same type.
const TCPDIAG_GETSOCK: u16 = 18;

/// Size of `struct inet_diag_req`: family, two address lengths, extensions (4 bytes), the
/// socket id (48), states and `idiag_dbs` (4 each).
const INET_DIAG_REQ_LEN: usize = 60;

/// Size of `struct nlmsghdr`.
const NETLINK_HEADER_LEN: usize = 16;

/// A dump request for both families at once. `SOCK_DIAG_BY_FAMILY` names one family per
/// request, and the kernel walks its whole established hash (the sockets of every namespace)
/// for each: twice for every namespace dumped. This older request dumps `AF_UNSPEC`, both
/// families in one walk, with the same filter by state and the same replies.
fn request(seq: u32, states: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.length = u32::try_from(NETLINK_HEADER_LEN + INET_DIAG_REQ_LEN).expect("small");
    header.message_type = TCPDIAG_GETSOCK;
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut buf = vec![0; NETLINK_HEADER_LEN + INET_DIAG_REQ_LEN];
    header.emit(&mut buf[..NETLINK_HEADER_LEN]);
    // idiag_family AF_UNSPEC, no address lengths, no extensions, an empty socket id: all 0.
    let states_at = NETLINK_HEADER_LEN + 4 + 48;
    buf[states_at..states_at + 4].copy_from_slice(&states.to_ne_bytes());
    buf
}

/// One datagram; an error if it did not fit `buf`.
fn recv(socket: &Socket, buf: &mut [u8]) -> Result<usize, SockDiagError> {
    loop {
        // MSG_TRUNC makes recv return the datagram's real length even when it was cut short.
        match socket.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
            Ok(len) if len > buf.len() => {
                return Err(SockDiagError::Truncated {
                    len,
                    capacity: buf.len(),
                });
            }
            Ok(len) => return Ok(len),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(SockDiagError::Io {
                    stage: "recv",
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the kernel within {RECV_TIMEOUT_SECS} s"),
                    ),
                });
            }
            Err(e) => {
                return Err(SockDiagError::Io {
                    stage: "recv",
                    source: e,
                });
            }
        }
    }
}

/// Collects the reply to one request, datagram by datagram.
struct Reply<'a> {
    netns: Netns,
    seq: u32,
    each: &'a mut dyn FnMut(Entry),
}

impl Reply<'_> {
    /// Takes the messages of one datagram; true once the dump is complete.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<bool, SockDiagError> {
        while !bytes.is_empty() {
            let nl = NetlinkBuffer::new_checked(bytes).map_err(|e| decode_error(&e))?;
            let len = nl.length() as usize;
            let raw = nl.payload();
            if nl.sequence_number() == self.seq {
                if nl.message_type() == TCPDIAG_GETSOCK {
                    // The crate parses sockets only under `SOCK_DIAG_BY_FAMILY`'s type.
                    let response = InetResponse::parse(raw).map_err(|e| decode_error(&e))?;
                    if let Some(entry) = self.entry(&response, raw)? {
                        (self.each)(entry);
                    }
                } else if control(&bytes[..len])? {
                    return Ok(true);
                }
            }
            // Messages start at 4-byte boundaries; the last one may end the datagram unpadded.
            let next = len.next_multiple_of(usize::from(NLMSG_ALIGNTO));
            bytes = bytes.get(next..).unwrap_or_default();
        }
        Ok(false)
    }

    fn entry(&self, response: &InetResponse, raw: &[u8]) -> Result<Option<Entry>, SockDiagError> {
        let header = &response.header;
        let (Some(&timer), Some(&retransmits), Some(expires)) =
            (raw.get(TIMER), raw.get(RETRANSMITS), raw.get(EXPIRES))
        else {
            return Err(decode_error(&format_args!(
                "inet_diag_msg of {} bytes is too short",
                raw.len()
            )));
        };
        let expires = u32::from_ne_bytes(expires.try_into().expect("four bytes"));
        let family = match header.family {
            AF_INET => Family::Ipv4,
            AF_INET6 => Family::Ipv6,
            other => {
                return Err(decode_error(&format_args!(
                    "address family {other} in a TCP dump"
                )));
            }
        };
        let Some(state) = TcpState::from_kernel(i32::from(header.state)) else {
            log::warn!(
                "sock_diag: skipping a TCP socket in unknown state {} (netns {})",
                header.state,
                self.netns
            );
            return Ok(None);
        };
        let id = &header.socket_id;
        let socket = DiagSocket {
            netns: self.netns,
            family,
            state,
            local: address(id.source_address, id.source_port),
            remote: address(id.destination_address, id.destination_port),
            inode: u64::from(header.inode),
            uid: header.uid,
            cookie: cookie(id.cookie),
            timer: DiagTimer::from_kernel(timer),
            expires_ms: expires,
            retransmits,
            rqueue: header.recv_queue,
            wqueue: header.send_queue,
            cgroup: cgroup_of(&response.nlas),
        };
        let v6only = response.nlas.iter().find_map(|nla| match nla {
            Nla::SkV6Only(v6only) => Some(*v6only),
            _ => None,
        });
        Ok(Some(Entry {
            socket,
            v6only,
            interface: id.interface_id,
        }))
    }
}

/// A message that is not a socket: true for the end of the dump, an error for the kernel's.
fn control(message: &[u8]) -> Result<bool, SockDiagError> {
    let message =
        NetlinkMessage::<SockDiagMessage>::deserialize(message).map_err(|e| decode_error(&e))?;
    match message.payload {
        NetlinkPayload::Done(done) if done.code < 0 => Err(kernel_error(done.code)),
        NetlinkPayload::Done(_) => Ok(true),
        // A zero code is an acknowledgement, which a dump does not ask for.
        NetlinkPayload::Error(error) => match error.code {
            Some(code) => Err(kernel_error(code.get())),
            None => Ok(false),
        },
        NetlinkPayload::Overrun(_) => Err(decode_error(&"the kernel reported a netlink overrun")),
        _ => Ok(false),
    }
}

fn decode_error(what: &dyn std::fmt::Display) -> SockDiagError {
    SockDiagError::Decode {
        message: what.to_string(),
    }
}

fn kernel_error(code: i32) -> SockDiagError {
    SockDiagError::Kernel {
        source: io::Error::from_raw_os_error(code.saturating_abs()),
    }
}

/// `INET_DIAG_CGROUP_ID` (Linux 5.7+; full sockets only): the socket's cgroup v2 id.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// The socket's cgroup, from the attribute the kernel adds for full sockets.
fn cgroup_of(nlas: &[Nla]) -> Option<CgroupId> {
    nlas.iter().find_map(|nla| match nla {
        Nla::Other(attr) if attr.kind() == INET_DIAG_CGROUP_ID && attr.value_len() == 8 => {
            let mut id = [0u8; 8];
            attr.emit_value(&mut id);
            CgroupId::new(u64::from_ne_bytes(id))
        }
        _ => None,
    })
}

fn address(ip: IpAddr, port: u16) -> SocketAddr {
    // Scope ids are left at 0, as the eBPF decoder does, so the two sources compare equal.
    SocketAddr::new(ip, port)
}

/// `idiag_cookie` is two host-order u32 words, low word first.
fn cookie(raw: [u8; 8]) -> u64 {
    let low = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let high = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    u64::from(low) | u64::from(high) << 32
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const NLMSG_DONE: u16 = 3;
    const NLMSG_ERROR: u16 = 2;

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + payload.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    /// An `inet_diag_msg` whose fields are all 0 but these, and its attributes.
    struct Msg {
        family: u8,
        state: u8,
        timer: u8,
        local: SocketAddr,
        remote: SocketAddr,
        interface: u32,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        inode: u32,
        attrs: Vec<(u16, Vec<u8>)>,
    }

    fn raw_ip(ip: IpAddr) -> [u8; 16] {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out = v6.octets(),
        }
        out
    }

    impl Msg {
        fn bytes(&self) -> Vec<u8> {
            let mut m = vec![self.family, self.state, self.timer, 0];
            m.extend_from_slice(&self.local.port().to_be_bytes());
            m.extend_from_slice(&self.remote.port().to_be_bytes());
            m.extend_from_slice(&raw_ip(self.local.ip()));
            m.extend_from_slice(&raw_ip(self.remote.ip()));
            m.extend_from_slice(&self.interface.to_ne_bytes());
            m.extend_from_slice(&0x1122_3344u32.to_ne_bytes()); // cookie[0]
            m.extend_from_slice(&0x5566_7788u32.to_ne_bytes()); // cookie[1]
            m.extend_from_slice(&self.expires.to_ne_bytes());
            m.extend_from_slice(&self.rqueue.to_ne_bytes());
            m.extend_from_slice(&self.wqueue.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes()); // uid
            m.extend_from_slice(&self.inode.to_ne_bytes());
            assert_eq!(m.len(), 72);
            for (kind, value) in &self.attrs {
                let len = u16::try_from(4 + value.len()).unwrap();
                m.extend_from_slice(&len.to_ne_bytes());
                m.extend_from_slice(&kind.to_ne_bytes());
                m.extend_from_slice(value);
                while m.len() % 4 != 0 {
                    m.push(0);
                }
            }
            m
        }
    }

    /// A `TIME_WAIT` socket 10.0.0.1:40000 -> 10.0.0.2:80, with `INET_DIAG_SHUTDOWN`.
    fn time_wait_v4() -> Vec<u8> {
        Msg {
            family: AF_INET,
            state: 6,
            timer: 3,
            local: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40000),
            remote: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 80),
            interface: 0,
            expires: 59_123,
            rqueue: 0,
            wqueue: 0,
            inode: 0,
            attrs: vec![(INET_DIAG_SHUTDOWN, vec![3])],
        }
        .bytes()
    }

    const INET_DIAG_SHUTDOWN: u16 = 8;
    const INET_DIAG_SKV6ONLY: u16 = 11;

    fn reply(seq: u32, each: &mut dyn FnMut(Entry)) -> Reply<'_> {
        Reply {
            netns: Netns::new(4_026_531_840).unwrap(),
            seq,
            each,
        }
    }

    /// Feeds `datagrams` of the reply to request `seq`; the entries, once it is done.
    fn parse(seq: u32, datagrams: &[Vec<u8>]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut push = |e| entries.push(e);
        let mut r = reply(seq, &mut push);
        let (last, rest) = datagrams.split_last().unwrap();
        for datagram in rest {
            assert!(!r.feed(datagram).unwrap());
        }
        assert!(r.feed(last).unwrap());
        entries
    }

    #[test]
    fn state_mask_covers_every_tcp_state() {
        assert_eq!(ALL_STATES, 0x1ffe);
    }

    #[test]
    fn request_is_one_dump_of_both_families_in_the_states_asked() {
        for states in [ALL_STATES, 1 << 10 | 1 << 12] {
            let bytes = request(7, states);
            assert_eq!(bytes.len(), 16 + 60, "nlmsghdr + inet_diag_req");
            let nl = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
            assert_eq!(usize::try_from(nl.length()).unwrap(), bytes.len());
            assert_eq!(nl.message_type(), TCPDIAG_GETSOCK);
            assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
            assert_eq!(nl.sequence_number(), 7);
            let p = nl.payload();
            assert_eq!(p[0], 0, "AF_UNSPEC: both families");
            assert!(p[1..52].iter().all(|&b| b == 0), "no extension, any socket");
            assert_eq!(u32::from_ne_bytes(p[52..56].try_into().unwrap()), states);
        }
    }

    #[test]
    fn parses_a_multipart_reply_up_to_done() {
        let mut datagram = message(TCPDIAG_GETSOCK, 1, &time_wait_v4());
        // A stray message of another request is ignored.
        datagram.extend(message(TCPDIAG_GETSOCK, 9, &time_wait_v4()));
        let done = message(NLMSG_DONE, 1, &0i32.to_ne_bytes());
        let entries = parse(1, &[datagram, done]);
        let sockets: Vec<_> = entries.iter().map(|e| e.socket.clone()).collect();
        assert_eq!(entries[0].v6only, None);
        assert_eq!(
            sockets,
            [DiagSocket {
                cgroup: None,
                netns: Netns::new(4_026_531_840).unwrap(),
                family: Family::Ipv4,
                state: TcpState::TimeWait,
                local: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40000),
                remote: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 80),
                inode: 0,
                uid: 0,
                cookie: 0x5566_7788_1122_3344,
                timer: DiagTimer::TimeWait,
                expires_ms: 59_123,
                retransmits: 0,
                rqueue: 0,
                wqueue: 0,
            }]
        );
    }

    #[test]
    fn an_error_message_fails_the_dump() {
        let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        let err = reply(2, &mut |_| {})
            .feed(&message(NLMSG_ERROR, 2, &payload))
            .unwrap_err();
        assert!(
            matches!(&err, SockDiagError::Kernel { source }
                if source.raw_os_error() == Some(libc::EINVAL)),
            "{err:?}"
        );
    }

    #[test]
    fn a_truncated_message_is_a_decode_error() {
        let datagram = message(TCPDIAG_GETSOCK, 1, &time_wait_v4());
        let err = reply(1, &mut |_| {}).feed(&datagram[..40]).unwrap_err();
        assert!(matches!(err, SockDiagError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn an_ipv6_listener_says_whether_it_takes_ipv4() {
        let listener = |port, v6only: u8, interface| {
            Msg {
                family: AF_INET6,
                state: 10,
                timer: 0,
                local: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
                remote: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
                interface,
                expires: 0,
                rqueue: 5,
                wqueue: 4,
                inode: 777,
                attrs: vec![
                    (INET_DIAG_SHUTDOWN, vec![0]),
                    (INET_DIAG_SKV6ONLY, vec![v6only]),
                ],
            }
            .bytes()
        };
        let mut datagram = message(TCPDIAG_GETSOCK, 2, &listener(8080, 1, 0));
        datagram.extend(message(TCPDIAG_GETSOCK, 2, &listener(8081, 0, 3)));
        let done = message(NLMSG_DONE, 2, &0i32.to_ne_bytes());
        let entries = parse(2, &[datagram, done]);
        let seen: Vec<_> = entries
            .iter()
            .map(|e| {
                let s = &e.socket;
                (
                    s.state,
                    s.local.port(),
                    s.rqueue,
                    s.wqueue,
                    s.inode,
                    e.v6only,
                    e.interface,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (TcpState::Listen, 8080, 5, 4, 777, Some(true), 0),
                (TcpState::Listen, 8081, 5, 4, 777, Some(false), 3),
            ]
        );
    }
}
