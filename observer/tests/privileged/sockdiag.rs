//! `sock_diag` dumps and socket owners, checked against sockets made in a fresh namespace.
//! Needs root (to create and enter network namespaces).

use crate::support;
use observer::event::Netns;

use std::{
    collections::{BTreeSet, HashSet},
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use observer::{
    event::Family,
    sockdiag::{
        DiagSocket, DiagTimer, Holder, NetnsRef, Probe, ProbeKind, SockDiagError, dump_all,
        dump_current, dump_netns, gone_in_netns, holders_of, list_netns,
    },
};
use observer_common::TcpState;
use socket2::{Domain, Protocol, Socket, Type};
use support::{V4, V6, netns::NetNs, privileged, ss};

const UNSPEC4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const UNSPEC6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

fn listen(ip: IpAddr, backlog: i32) -> TcpListener {
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(backlog).unwrap();
    socket.into()
}

/// Keeps a connection's request socket in `NEW_SYN_RECV`: with `TCP_DEFER_ACCEPT` the listener
/// drops the client's bare final ACK and waits for data that never comes.
fn defer_accept(listener: &TcpListener, seconds: libc::c_int) {
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(
        rc,
        0,
        "TCP_DEFER_ACCEPT: {}",
        std::io::Error::last_os_error()
    );
}

fn addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap()
}

fn key(s: &DiagSocket) -> (TcpState, SocketAddr, SocketAddr) {
    (s.state, s.local, s.remote)
}

fn find(sockets: &[DiagSocket], state: TcpState, local: SocketAddr) -> &DiagSocket {
    let mut matching = sockets
        .iter()
        .filter(|s| s.state == state && s.local == local);
    let found = matching
        .next()
        .unwrap_or_else(|| panic!("no {state:?} socket at {local} in {sockets:#?}"));
    assert!(
        matching.next().is_none(),
        "two {state:?} sockets at {local}"
    );
    found
}

/// Dumps until `done` holds: loopback teardown finishes in softirq, a moment after `close()`.
fn dump_until(ns: &NetnsRef, done: impl Fn(&[DiagSocket]) -> bool) -> Vec<DiagSocket> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sockets = dump_netns(ns).expect("dumping the test namespace");
        if done(&sockets) {
            return sockets;
        }
        assert!(
            Instant::now() < deadline,
            "the namespace never settled: {sockets:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inode of the calling thread's network namespace.
fn own_netns() -> u32 {
    let meta = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    u32::try_from(meta.ino()).unwrap()
}

/// The test namespace as `list_netns` reports it. `TIME_WAIT` reuse on loopback is turned off
/// in it, so that a new connection never ends an earlier one's `TIME_WAIT` early.
fn netns_ref(ns: &NetNs) -> NetnsRef {
    let found = list_netns()
        .into_iter()
        .find(|r| r.inode.inode() == ns.inode())
        .expect("list_netns finds the test namespace");
    let name = found.path.file_name().unwrap().to_str().unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            name,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_tw_reuse=0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    found
}

/// One socket of every kind, made inside the test namespace and kept open.
struct Made {
    l4: TcpListener,
    l6: TcpListener,
    ld: TcpListener,
    time_wait: SocketAddr,
    fin_wait: SocketAddr,
    close_wait: TcpStream,
    queued: TcpStream,
    deferred: TcpStream,
}

impl Made {
    /// Runs in the namespace.
    fn new() -> Self {
        let l4 = listen(V4, 17);
        let l6 = listen(V6, 5);
        let ld = listen(V4, 3);
        defer_accept(&ld, 30);

        // Client closes first, then the server: the client ends in TIME_WAIT.
        let client = TcpStream::connect(addr(&l4)).unwrap();
        let time_wait = client.local_addr().unwrap();
        let (mut server, _) = l4.accept().unwrap();
        drop(client);
        assert_eq!(server.read(&mut [0; 8]).unwrap(), 0);
        drop(server);

        // Client closes, the server never does: CLOSE_WAIT, and the client waits in FIN_WAIT2.
        let client = TcpStream::connect(addr(&l4)).unwrap();
        let fin_wait = client.local_addr().unwrap();
        let (mut close_wait, _) = l4.accept().unwrap();
        drop(client);
        assert_eq!(close_wait.read(&mut [0; 8]).unwrap(), 0);

        // Established but never accepted: it waits in the IPv6 listener's accept queue.
        let queued = TcpStream::connect(addr(&l6)).unwrap();
        // Handshake done on the client side only: the server keeps a request socket.
        let deferred = TcpStream::connect(addr(&ld)).unwrap();
        Self {
            l4,
            l6,
            ld,
            time_wait,
            fin_wait,
            close_wait,
            queued,
            deferred,
        }
    }

    fn p4(&self) -> SocketAddr {
        addr(&self.l4)
    }
    fn p6(&self) -> SocketAddr {
        addr(&self.l6)
    }
    fn pd(&self) -> SocketAddr {
        addr(&self.ld)
    }
    fn close_wait(&self) -> SocketAddr {
        self.close_wait.local_addr().unwrap()
    }
    fn queued(&self) -> SocketAddr {
        self.queued.local_addr().unwrap()
    }
    fn deferred(&self) -> SocketAddr {
        self.deferred.local_addr().unwrap()
    }

    /// (state, local, remote) of every socket the namespace must have.
    fn expected(&self) -> BTreeSet<(TcpState, SocketAddr, SocketAddr)> {
        let (p4, p6, pd) = (self.p4(), self.p6(), self.pd());
        [
            (TcpState::Listen, p4, SocketAddr::new(UNSPEC4, 0)),
            (TcpState::Listen, p6, SocketAddr::new(UNSPEC6, 0)),
            (TcpState::Listen, pd, SocketAddr::new(UNSPEC4, 0)),
            (TcpState::TimeWait, self.time_wait, p4),
            (TcpState::FinWait2, self.fin_wait, p4),
            (TcpState::CloseWait, self.close_wait(), self.fin_wait),
            (TcpState::Established, self.queued(), p6),
            (TcpState::Established, p6, self.queued()),
            (TcpState::Established, self.deferred(), pd),
            // The kernel reports its NEW_SYN_RECV request sockets as SYN_RECV.
            (TcpState::SynRecv, pd, self.deferred()),
        ]
        .into_iter()
        .collect()
    }
}

/// What holds for every socket of the dump; returns their cookies.
fn check_every_socket(sockets: &[DiagSocket], netns: u32) -> HashSet<u64> {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut cookies = HashSet::new();
    for s in sockets {
        assert_eq!(s.netns.inode(), netns, "{s:?}");
        let family = if s.local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        assert_eq!(s.family, family, "{s:?}");
        assert_ne!(s.cookie, 0, "{s:?}");
        assert!(cookies.insert(s.cookie), "cookies are unique: {s:?}");
        // Timewait and request sockets have no owner and report uid 0.
        if s.timer != DiagTimer::TimeWait && s.state != TcpState::SynRecv {
            assert_eq!(s.uid, uid, "{s:?}");
        }
    }
    cookies
}

/// Listeners: rqueue is the accept queue, wqueue the backlog.
fn check_listeners(sockets: &[DiagSocket], made: &Made) {
    let l4 = find(sockets, TcpState::Listen, made.p4());
    assert_eq!((l4.rqueue, l4.wqueue), (0, 17), "{l4:?}");
    assert_ne!(l4.inode, 0);
    assert_eq!(l4.timer, DiagTimer::None);
    let l6 = find(sockets, TcpState::Listen, made.p6());
    assert_eq!((l6.rqueue, l6.wqueue), (1, 5), "{l6:?}");
    let ld = find(sockets, TcpState::Listen, made.pd());
    assert_eq!(
        (ld.rqueue, ld.wqueue),
        (0, 3),
        "a request socket is not in the accept queue: {ld:?}"
    );
}

/// The three sockets of the two closed connections.
fn check_closing(sockets: &[DiagSocket], made: &Made) {
    // TIME_WAIT: a timewait socket, no file, the 60 s timer.
    let tw = find(sockets, TcpState::TimeWait, made.time_wait);
    assert_eq!(tw.inode, 0, "{tw:?}");
    assert_eq!(tw.timer, DiagTimer::TimeWait, "{tw:?}");
    assert!(tw.expires_ms > 50_000 && tw.expires_ms <= 60_000, "{tw:?}");

    // The orphaned client of the CLOSE_WAIT pair: no file any more, waiting out
    // tcp_fin_timeout (60 s) either in a timewait socket or on the keepalive timer.
    let fw2 = find(sockets, TcpState::FinWait2, made.fin_wait);
    assert_eq!(fw2.inode, 0, "{fw2:?}");
    assert!(
        matches!(
            fw2.timer,
            DiagTimer::TimeWait | DiagTimer::KeepaliveOrFinWait2
        ),
        "{fw2:?}"
    );
    assert!(
        fw2.expires_ms > 50_000 && fw2.expires_ms <= 60_000,
        "{fw2:?}"
    );

    // CLOSE_WAIT: still held by this process, which is what names the leaker.
    let cw = find(sockets, TcpState::CloseWait, made.close_wait());
    assert_ne!(cw.inode, 0, "{cw:?}");
    assert_eq!(cw.rqueue, 0, "{cw:?}");
    let holders = holders_of(&HashSet::from([cw.inode]));
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(
        holders.get(&cw.inode).map(Vec::as_slice),
        Some(
            &[Holder {
                pid: std::process::id(),
                comm: comm.trim_end().to_owned(),
            }][..]
        )
    );
}

/// Connections that no one has accepted.
fn check_unaccepted(sockets: &[DiagSocket], made: &Made) {
    // In the accept queue: a full socket without a file.
    let child = find(sockets, TcpState::Established, made.p6());
    assert_eq!(child.inode, 0, "{child:?}");
    let client = find(sockets, TcpState::Established, made.queued());
    assert_ne!(client.inode, 0, "{client:?}");

    // The request socket: no file, the SYN-ACK retransmit timer.
    let req = find(sockets, TcpState::SynRecv, made.pd());
    assert_eq!(req.inode, 0, "{req:?}");
    assert_eq!(req.timer, DiagTimer::Retransmit, "{req:?}");
    assert!(req.expires_ms > 0 && req.expires_ms <= 1_000, "{req:?}");
}

/// Sockets of every kind in one namespace, and what the dump says about each.
#[test]
fn dump_netns_reports_every_socket_of_the_namespace() {
    if !support::privileged("dump_netns_reports_every_socket_of_the_namespace") {
        return;
    }
    let ns = NetNs::new("sockdiag").unwrap();
    let nsref = netns_ref(&ns);
    assert!(
        nsref.path.starts_with("/run/netns"),
        "a named namespace is listed by its name: {nsref:?}"
    );
    let made = ns.enter(Made::new);
    let expected = made.expected();

    let sockets = dump_until(&nsref, |s| {
        s.iter().map(key).collect::<BTreeSet<_>>() == expected
    });
    assert_eq!(sockets.len(), expected.len(), "no duplicates: {sockets:#?}");
    let cookies = check_every_socket(&sockets, ns.inode());
    check_listeners(&sockets, &made);
    check_closing(&sockets, &made);
    check_unaccepted(&sockets, &made);

    // From a thread inside the namespace, dump_current sees the same sockets.
    let current = ns.enter(|| dump_current().unwrap());
    assert_eq!(current.iter().map(key).collect::<BTreeSet<_>>(), expected);
    assert!(current.iter().all(|s| s.netns.inode() == ns.inode()));

    // Nothing of the test namespace leaks into the caller's.
    let here = dump_current().unwrap();
    assert!(
        here.iter()
            .all(|s| s.netns.inode() != ns.inode() && !cookies.contains(&s.cookie)),
        "the caller's namespace must not list the test namespace's sockets"
    );
}

/// `dump_all` covers every namespace, the test's among them.
#[test]
fn dump_all_includes_a_new_namespace() {
    if !support::privileged("dump_all_includes_a_new_namespace") {
        return;
    }
    let ns = NetNs::new("sockdiag-all").unwrap();
    let listener = ns.enter(|| listen(V6, 9));
    let port = addr(&listener);

    let namespaces = list_netns();
    let inodes: HashSet<u32> = namespaces.iter().map(|n| n.inode.inode()).collect();
    assert_eq!(inodes.len(), namespaces.len(), "one entry per namespace");
    let own = own_netns();
    assert!(
        inodes.contains(&own),
        "the caller's own namespace is listed"
    );
    assert!(inodes.contains(&ns.inode()));

    let snapshot = dump_all();
    assert!(snapshot.namespaces >= 2, "{}", snapshot.namespaces);
    assert!(
        !snapshot
            .failed
            .iter()
            .any(|(n, _)| n.inode.inode() == ns.inode() || n.inode.inode() == own),
        "{:?}",
        snapshot.failed
    );
    let mine: Vec<_> = snapshot
        .sockets
        .iter()
        .filter(|s| s.netns.inode() == ns.inode())
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(
        key(mine[0]),
        (TcpState::Listen, port, SocketAddr::new(UNSPEC6, 0))
    );
    assert_eq!(mine[0].wqueue, 9);
}

/// A namespace that is gone is an error for that namespace, not a panic.
#[test]
fn a_vanished_namespace_is_an_error() {
    if !support::privileged("a_vanished_namespace_is_an_error") {
        return;
    }
    let ns = NetNs::new("sockdiag-gone").unwrap();
    let nsref = netns_ref(&ns);
    drop(ns);
    let err = dump_netns(&nsref).unwrap_err();
    assert!(
        matches!(err, SockDiagError::OpenNamespace { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&*nsref.path.to_string_lossy()),
        "{err}"
    );

    // A path that now opens some other namespace is refused, not dumped.
    let wrong = NetnsRef {
        inode: Netns::new(own_netns().wrapping_add(1)).unwrap(),
        path: PathBuf::from("/proc/self/ns/net"),
    };
    let err = dump_netns(&wrong).unwrap_err();
    assert!(
        matches!(err, SockDiagError::NamespaceChanged { .. }),
        "{err:?}"
    );
}

/// Looked up by their addresses, the connections a namespace holds are found (in any state,
/// bound to a device, or still connecting with no port yet), and those it does not hold are
/// not, even where a listener holds the local port.
fn lookups_find_exactly_what_the_namespace_holds(ip: IpAddr) {
    let ns = NetNs::new("lookup").unwrap();
    let nsref = netns_ref(&ns);
    let any_port = |a: SocketAddr| SocketAddr::new(a.ip(), 0);
    let (made, expected) = ns.enter(|| {
        let listener = listen(ip, 16);
        let server = addr(&listener);
        let connect = |bind_to_device: bool| {
            let client = Socket::new(Domain::for_address(server), Type::STREAM, None).unwrap();
            if bind_to_device {
                client.bind_device(Some(b"lo")).unwrap();
            }
            client.connect(&server.into()).unwrap();
            let client: TcpStream = client.into();
            let (server_side, _) = listener.accept().unwrap();
            (client, server_side)
        };
        let probe = |s: &TcpStream| Probe {
            local: s.local_addr().unwrap(),
            remote: s.peer_addr().unwrap(),
            kind: ProbeKind::Connection,
        };
        let mut expected = Vec::new();
        let (open_client, open_server) = connect(false);
        expected.push((probe(&open_client), false, "established"));
        expected.push((probe(&open_server), false, "its server side"));
        let (bound_client, bound_server) = connect(true);
        expected.push((probe(&bound_client), false, "bound to lo"));
        // Reset (SO_LINGER 0): no TIME_WAIT is left; the listener still holds the server's port.
        let (reset_client, reset_server) = connect(false);
        let (reset, reset_other) = (probe(&reset_client), probe(&reset_server));
        socket2::SockRef::from(&reset_client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reset_client);
        drop(reset_server);
        expected.push((reset, true, "reset"));
        expected.push((
            reset_other,
            true,
            "reset, server side: the listener is not it",
        ));
        // Closed by the client first: its end waits in TIME_WAIT.
        let (closing_client, mut closing_server) = connect(false);
        let closing = probe(&closing_client);
        drop(closing_client);
        assert_eq!(closing_server.read(&mut [0u8; 1]).unwrap(), 0);
        drop(closing_server);
        let timewait = Probe {
            kind: ProbeKind::Timewait,
            ..closing
        };
        expected.push((timewait, false, "in TIME_WAIT"));
        expected.push((closing, true, "its full socket, now a timewait socket"));
        // Connecting, to a listener whose accept queue is full: its SYNs are dropped.
        let full = listen(ip, 0);
        let first = TcpStream::connect(addr(&full)).unwrap();
        let connecting = Socket::new(Domain::for_address(server), Type::STREAM, None).unwrap();
        connecting.set_nonblocking(true).unwrap();
        let _ = connecting.connect(&addr(&full).into());
        expected.push((
            Probe {
                local: any_port(first.local_addr().unwrap()),
                remote: addr(&full),
                kind: ProbeKind::Connection,
            },
            false,
            "connecting, its port unknown",
        ));
        expected.push((
            Probe {
                local: any_port(server),
                remote: SocketAddr::new(ip, 9),
                kind: ProbeKind::Connection,
            },
            true,
            "connecting to where nothing connects",
        ));
        expected.extend(listener_probes(server, reset.local));
        let streams = [open_client, open_server, bound_client, bound_server, first];
        ((listener, full, streams, connecting), expected)
    });
    // What ss lists agrees with what was made.
    let states = ss::tcp_sockets(&ns);
    assert!(
        states.iter().any(|s| s.state == TcpState::SynSent),
        "{states:?}"
    );
    let probes: Vec<Probe> = expected.iter().map(|(p, _, _)| *p).collect();
    let answer = gone_in_netns(&nsref, &probes);
    for ((probe, gone, what), found) in expected.iter().zip(&answer.result.unwrap()) {
        assert_eq!(found, gone, "{what}: {probe:?}");
    }
    assert!(answer.cpu_ns > 0);
    drop(made);
}

both_families!(lookups_find_exactly_what_the_namespace_holds);

/// Probes about listeners, with whether each is gone: the listener at `listening`, one at
/// `nothing` (where nothing listens), and a connection with the listener's addresses.
fn listener_probes(listening: SocketAddr, nothing: SocketAddr) -> [(Probe, bool, &'static str); 3] {
    let unspecified = SocketAddr::new(
        if listening.is_ipv4() {
            UNSPEC4
        } else {
            UNSPEC6
        },
        0,
    );
    let listener_at = |local: SocketAddr| Probe {
        local,
        remote: unspecified,
        kind: ProbeKind::Listener,
    };
    [
        (listener_at(listening), false, "the listener"),
        (listener_at(nothing), true, "a listener never made"),
        // A server's child is born (LISTEN -> SYN_RECV) before its remote end is set: one
        // whose later events were lost has its listener's addresses, and is not its listener.
        (
            Probe {
                kind: ProbeKind::Connection,
                ..listener_at(listening)
            },
            true,
            "a child with its listener's addresses",
        ),
    ]
}

const CONNECTIONS: usize = 5_000;

/// Thousands of sockets span many netlink datagrams; every one must come back.
#[test]
fn a_large_dump_is_complete() {
    if !support::privileged("a_large_dump_is_complete") {
        return;
    }
    let ns = NetNs::new("sockdiag-many").unwrap();
    // No early reuse of a TIME_WAIT port on loopback: every connection leaves its own behind.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
    let nsref = netns_ref(&ns);
    let (listener, clients) = ns.enter(|| {
        let listener = listen(V4, 128);
        let mut clients = HashSet::new();
        for _ in 0..CONNECTIONS {
            let client = TcpStream::connect(addr(&listener)).unwrap();
            clients.insert(client.local_addr().unwrap());
            let (mut server, _) = listener.accept().unwrap();
            drop(client);
            assert_eq!(server.read(&mut [0; 8]).unwrap(), 0);
        }
        (listener, clients)
    });
    let port = addr(&listener);
    let started = Instant::now();
    // Until the servers' LAST_ACK sockets are gone.
    let sockets = dump_until(&nsref, |s| s.len() == CONNECTIONS + 1);
    eprintln!(
        "dumped {} sockets in {:?} (including retries)",
        sockets.len(),
        started.elapsed()
    );
    let time_wait: HashSet<SocketAddr> = sockets
        .iter()
        .filter(|s| s.state == TcpState::TimeWait && s.remote == port)
        .map(|s| s.local)
        .collect();
    assert_eq!(time_wait, clients);
    assert!(
        sockets
            .iter()
            .any(|s| s.state == TcpState::Listen && s.local == port)
    );
}
