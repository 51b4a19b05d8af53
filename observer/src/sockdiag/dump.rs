//! One `SOCK_DIAG_BY_FAMILY` dump of the TCP sockets in the calling thread's network namespace.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
};

use netlink_packet_core::{
    Emitable as _, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ALIGNTO, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{AF_INET, AF_INET6, SockDiagMessage};
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

// `struct inet_diag_msg` (uapi linux/inet_diag.h): family, state, timer and retransmits (one
// byte each), the socket id (ports big-endian, 16 bytes per address, the interface, the
// cookie as two u32), then expires, rqueue, wqueue, uid and inode (u32 each, host order).
const INET_DIAG_MSG_LEN: usize = 72;
const TIMER: usize = 2;
const RETRANSMITS: usize = 3;
const SPORT: usize = 4;
const DPORT: usize = 6;
const SRC: usize = 8;
const DST: usize = 24;
const INTERFACE: usize = 40;
const COOKIE: usize = 44;
const EXPIRES: usize = 52;
const RQUEUE: usize = 56;
const WQUEUE: usize = 60;
const UID: usize = 64;
const INODE: usize = 68;

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
    let socket = open()?;
    send(&socket, &request(SEQ, states))?;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut reply = Reply {
        netns,
        kind: TCPDIAG_GETSOCK,
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

/// A `NETLINK_SOCK_DIAG` socket connected to the kernel, whose `recv` gives up after
/// [`RECV_TIMEOUT_SECS`].
pub(super) fn open() -> Result<Socket, SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::Socket)?;
    socket.bind_auto().map_err(stage("bind"))?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(stage("connect"))?;
    set_receive_timeout(&socket).map_err(stage("setsockopt(SO_RCVTIMEO)"))?;
    Ok(socket)
}

/// Sends one whole request.
pub(super) fn send(socket: &Socket, request: &[u8]) -> Result<(), SockDiagError> {
    let sent = socket.send(request, 0).map_err(stage("send"))?;
    if sent != request.len() {
        return Err(SockDiagError::Io {
            stage: "send",
            source: io::Error::other(format!("sent {sent} of {} bytes", request.len())),
        });
    }
    Ok(())
}

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
pub(super) const NETLINK_HEADER_LEN: usize = 16;

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
pub(super) fn recv(socket: &Socket, buf: &mut [u8]) -> Result<usize, SockDiagError> {
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
pub(super) struct Reply<'a> {
    pub netns: Netns,
    /// The message type of a socket in the reply (the request's).
    pub kind: u16,
    pub seq: u32,
    pub each: &'a mut dyn FnMut(Entry),
}

impl Reply<'_> {
    /// Takes the messages of one datagram; true once the dump is complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<bool, SockDiagError> {
        while !bytes.is_empty() {
            let nl = NetlinkBuffer::new_checked(bytes).map_err(|e| decode_error(&e))?;
            let len = nl.length() as usize;
            let raw = nl.payload();
            if nl.sequence_number() == self.seq {
                if nl.message_type() == self.kind {
                    if let Some(entry) = self.entry(raw)? {
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

    /// One `struct inet_diag_msg` and its attributes, read in place: a reconciliation reads
    /// every socket of the host, and a general parse of each (every attribute built into a
    /// list) cost more than the rest of its handling.
    fn entry(&self, raw: &[u8]) -> Result<Option<Entry>, SockDiagError> {
        let Some((msg, attrs)) = raw.split_first_chunk::<INET_DIAG_MSG_LEN>() else {
            return Err(decode_error(&format_args!(
                "inet_diag_msg of {} bytes is too short",
                raw.len()
            )));
        };
        let u32_at = |at: usize| u32::from_ne_bytes(field(msg, at));
        let family = match msg[0] {
            AF_INET => Family::Ipv4,
            AF_INET6 => Family::Ipv6,
            other => {
                return Err(decode_error(&format_args!(
                    "address family {other} in a TCP dump"
                )));
            }
        };
        let Some(state) = TcpState::from_kernel(i32::from(msg[1])) else {
            log::warn!(
                "sock_diag: skipping a TCP socket in unknown state {} (netns {})",
                msg[1],
                self.netns
            );
            return Ok(None);
        };
        let ip = |at: usize| match family {
            Family::Ipv4 => IpAddr::from(field::<4>(msg, at)),
            Family::Ipv6 => IpAddr::from(field::<16>(msg, at)),
        };
        let port = |at: usize| u16::from_be_bytes(field(msg, at));
        let (cgroup, v6only) = attributes(attrs);
        let socket = DiagSocket {
            netns: self.netns,
            family,
            state,
            // Scope ids are left at 0, as the eBPF decoder does, so the two sources compare
            // equal.
            local: SocketAddr::new(ip(SRC), port(SPORT)),
            remote: SocketAddr::new(ip(DST), port(DPORT)),
            inode: u64::from(u32_at(INODE)),
            uid: u32_at(UID),
            cookie: u64::from(u32_at(COOKIE)) | u64::from(u32_at(COOKIE + 4)) << 32,
            timer: DiagTimer::from_kernel(msg[TIMER]),
            expires_ms: u32_at(EXPIRES),
            retransmits: msg[RETRANSMITS],
            rqueue: u32_at(RQUEUE),
            wqueue: u32_at(WQUEUE),
            cgroup,
        };
        Ok(Some(Entry {
            socket,
            v6only,
            interface: u32_at(INTERFACE),
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

/// `INET_DIAG_SKV6ONLY`: an IPv6 listener's `IPV6_V6ONLY`, one byte.
const INET_DIAG_SKV6ONLY: u16 = 11;
/// `INET_DIAG_CGROUP_ID` (Linux 5.7+; full sockets only): the socket's cgroup v2 id.
const INET_DIAG_CGROUP_ID: u16 = 21;
/// The attribute type's flag bits (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The socket's cgroup and `IPV6_V6ONLY`, from the attributes after an `inet_diag_msg`; the
/// others are skipped, and so is what follows an attribute whose length does not fit.
fn attributes(mut rest: &[u8]) -> (Option<CgroupId>, Option<bool>) {
    let (mut cgroup, mut v6only) = (None, None);
    while let Some((head, _)) = rest.split_first_chunk::<4>() {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]) & NLA_TYPE_MASK;
        let Some(value) = rest.get(4..len) else {
            break;
        };
        match kind {
            INET_DIAG_CGROUP_ID => {
                if let Ok(id) = <[u8; 8]>::try_from(value) {
                    cgroup = CgroupId::new(u64::from_ne_bytes(id));
                }
            }
            INET_DIAG_SKV6ONLY => v6only = value.first().map(|&flag| flag != 0),
            _ => {}
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    (cgroup, v6only)
}

/// `N` bytes of the message at `at`, an offset of the fixed layout above.
fn field<const N: usize>(msg: &[u8; INET_DIAG_MSG_LEN], at: usize) -> [u8; N] {
    msg[at..at + N]
        .try_into()
        .expect("an offset within inet_diag_msg")
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

    fn reply(seq: u32, each: &mut dyn FnMut(Entry)) -> Reply<'_> {
        Reply {
            netns: Netns::new(4_026_531_840).unwrap(),
            kind: TCPDIAG_GETSOCK,
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

    #[test]
    fn the_cgroup_attribute_is_read_and_a_cut_attribute_ends_the_list() {
        let local: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let remote: SocketAddr = "[2001:db8::2]:50000".parse().unwrap();
        let mut msg = Msg {
            family: AF_INET6,
            state: 1,
            timer: 1,
            local,
            remote,
            interface: 0,
            expires: 200,
            rqueue: 7,
            wqueue: 9,
            inode: 4242,
            attrs: vec![
                (INET_DIAG_SHUTDOWN, vec![0]),
                // With a flag bit set in its type, as nested attributes have.
                (
                    INET_DIAG_CGROUP_ID | 0x8000,
                    0x0102_0304_0506_0708u64.to_ne_bytes().to_vec(),
                ),
            ],
        }
        .bytes();
        // An attribute claiming more bytes than follow: it and anything after it are skipped.
        msg.extend_from_slice(&64u16.to_ne_bytes());
        msg.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
        let done = message(NLMSG_DONE, 3, &0i32.to_ne_bytes());
        let entries = parse(3, &[message(TCPDIAG_GETSOCK, 3, &msg), done]);
        let [entry] = &entries[..] else {
            panic!("{entries:?}")
        };
        let s = &entry.socket;
        assert_eq!(
            (
                s.family, s.state, s.local, s.remote, s.inode, s.rqueue, s.wqueue
            ),
            (
                Family::Ipv6,
                TcpState::Established,
                local,
                remote,
                4242,
                7,
                9
            )
        );
        assert_eq!((s.timer, s.expires_ms), (DiagTimer::Retransmit, 200));
        assert_eq!(s.cgroup, CgroupId::new(0x0102_0304_0506_0708));
        assert_eq!(entry.v6only, None);
    }
}
