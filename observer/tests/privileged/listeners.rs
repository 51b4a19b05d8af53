//! Accept-queue pressure and listen counters, checked against listeners made in a fresh network
//! namespace (loopback only) with exact expectations. Needs root (to create and enter namespaces).
//!
//! To hold a handshake half-open on demand, a client sets `TCP_DEFER_ACCEPT` on itself before
//! `connect()`: the kernel then holds back the handshake's final ACK (for at most the 200 ms
//! delayed-ACK timer, `TCP_DELACK_MAX`) and the listener keeps a request socket. Setting
//! `TCP_QUICKACK` sends that ACK at once. The scenarios finish well within those 200 ms and
//! before any retransmission (the first comes 1 s after a SYN or SYN-ACK, `TCP_TIMEOUT_INIT`),
//! so every count is exact.

use crate::support;

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use observer::sockdiag::{
    ListenCounters, ListenSnapshot, Listener, Requests, dump_current, listeners_all,
    listeners_current,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use support::{V4, V6, netns::NetNs, privileged, serial};

/// The backlog of the listeners under pressure.
const BACKLOG: u32 = 4;
/// What the kernel lets the accept queue hold: it is full only when its length exceeds the
/// backlog (`sk_acceptq_is_full`: `sk_ack_backlog > sk_max_ack_backlog`).
const QUEUE_HOLDS: u32 = BACKLOG + 1;

fn listen(at: SocketAddr, backlog: u32, v6only: Option<bool>) -> TcpListener {
    let socket = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP)).unwrap();
    if let Some(v6only) = v6only {
        socket.set_only_v6(v6only).unwrap();
    }
    socket.bind(&at.into()).unwrap();
    socket.listen(i32::try_from(backlog).unwrap()).unwrap();
    socket.into()
}

fn set_int(socket: &impl std::os::fd::AsRawFd, level: i32, name: i32, value: libc::c_int) {
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// A client whose connect() has returned but whose final handshake ACK is held back, so the
/// listener has a request socket (SYN_RECV) for it. Runs in the namespace.
fn held_ack_client(to: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    set_int(&socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 30);
    socket.connect(&to.into()).unwrap();
    socket
}

/// Sends the held-back ACK now.
fn release_ack(client: &Socket) {
    client.set_tcp_quickack(true).unwrap();
}

/// Starts a connect() without waiting for it. On loopback the handshake, or the dropped SYN,
/// happens before connect() returns.
fn start_connect(to: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_nonblocking(true).unwrap();
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect to {to}: {e}"),
    }
    socket
}

fn connected(client: &Socket) -> bool {
    client.peer_addr().is_ok()
}

fn the_listener(listeners: &[Listener], local: SocketAddr) -> Listener {
    let mut found = listeners.iter().filter(|l| l.local == local);
    let one = *found
        .next()
        .unwrap_or_else(|| panic!("no listener at {local} in {listeners:#?}"));
    assert!(found.next().is_none(), "two listeners at {local}");
    one
}

/// (queued, backlog, syn_recv) of the listener at `local`.
fn pressure(listeners: &[Listener], local: SocketAddr) -> (u32, u32, u32) {
    let l = the_listener(listeners, local);
    (l.queued, l.backlog, l.syn_recv)
}

fn counters(overflows: u64, drops: u64) -> ListenCounters {
    ListenCounters { overflows, drops }
}

/// The listener and counters of one namespace in a snapshot of all of them.
fn of_netns(snapshot: &ListenSnapshot, netns: u32) -> (Vec<Listener>, ListenCounters) {
    assert!(
        !snapshot
            .failed
            .iter()
            .any(|(what, _)| what.contains(&netns.to_string())),
        "{:?}",
        snapshot.failed
    );
    let listeners = snapshot
        .listeners
        .iter()
        .filter(|l| l.netns.inode() == netns)
        .copied()
        .collect();
    let mut found = snapshot
        .counters
        .iter()
        .filter(|(ns, _)| ns.inode() == netns);
    let (_, counters) = *found.next().expect("the test namespace's counters");
    assert!(found.next().is_none(), "one entry per namespace");
    (listeners, counters)
}

/// A listener with backlog 4 that never accepts. Three clients hold their handshake half-open,
/// then clients connect until the accept queue is full and the next SYNs are dropped, then the
/// three complete their handshakes into the full queue.
fn overflowing_listener(ip: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("listen-full").unwrap();
    let listener = ns.enter(|| listen(SocketAddr::new(ip, 0), BACKLOG, None));
    let at = listener.local_addr().unwrap();
    let started = Instant::now();

    let (held, clients, before) = ns.enter(|| {
        let held: Vec<Socket> = (0..3).map(|_| held_ack_client(at)).collect();
        let clients: Vec<Socket> = (0..8).map(|_| start_connect(at)).collect();
        (held, clients, listeners_current().unwrap())
    });
    let first = started.elapsed();
    let (listeners, counts) = before;
    assert_eq!(listeners.len(), 1, "{listeners:#?}");
    let l = the_listener(&listeners, at);
    assert_eq!(l.netns.inode(), ns.inode());
    assert_ne!(l.inode, 0);
    // Five got into the queue (backlog + 1); three SYNs found it full and were dropped, each
    // counted as an overflow and a drop. The three held handshakes are request sockets, which
    // are not in the accept queue.
    assert_eq!(
        pressure(&listeners, at),
        (QUEUE_HOLDS, BACKLOG, 3),
        "after {first:?}"
    );
    assert_eq!(counts, counters(3, 3), "after {first:?}");
    let done: Vec<bool> = clients.iter().map(connected).collect();
    assert_eq!(
        done,
        [true, true, true, true, true, false, false, false],
        "the first five connected, the others wait to retransmit their SYN"
    );

    // The held ACKs arrive at a full queue: overflows again. The kernel keeps the request
    // sockets (tcp_abort_on_overflow=0) and would resend the SYN-ACK after 1 s.
    ns.enter(|| held.iter().for_each(release_ack));
    let snapshot = listeners_all(Requests::Count);
    let elapsed = started.elapsed();
    let (listeners, counts) = of_netns(&snapshot, ns.inode());
    assert_eq!(
        pressure(&listeners, at),
        (QUEUE_HOLDS, BACKLOG, 3),
        "after {elapsed:?}"
    );
    assert_eq!(counts, counters(6, 6), "after {elapsed:?}");
    eprintln!(
        "{ip}: queued {QUEUE_HOLDS} of backlog {BACKLOG}, 3 SYN_RECV, 6 overflows; listeners_all \
         over {} namespaces took {:?}",
        snapshot.counters.len(),
        snapshot.took
    );
    drop((clients, listener));
}

both_families!(overflowing_listener);

/// A listener that accepts: nothing waits, nothing overflows.
fn accepting_listener(ip: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("listen-ok").unwrap();
    let (listener, big) = ns.enter(|| {
        (
            listen(SocketAddr::new(ip, 0), BACKLOG, None),
            listen(SocketAddr::new(ip, 0), 1 << 20, None),
        )
    });
    let at = listener.local_addr().unwrap();
    // No more clients than the queue holds, so none can overflow however the threads run.
    let clients = QUEUE_HOLDS as usize;
    let accepted = std::thread::scope(|s| {
        let acceptor = s.spawn(|| {
            (0..clients)
                .map(|_| listener.accept().unwrap().0)
                .collect::<Vec<TcpStream>>()
        });
        let connected: Vec<TcpStream> = ns.enter(|| {
            (0..clients)
                .map(|_| TcpStream::connect(at).unwrap())
                .collect()
        });
        (acceptor.join().unwrap(), connected)
    });
    let somaxconn: u32 = ns
        .enter(|| std::fs::read_to_string("/proc/sys/net/core/somaxconn"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let (listeners, counts) = ns.enter(|| listeners_current().unwrap());
    assert_eq!(listeners.len(), 2, "{listeners:#?}");
    assert_eq!(pressure(&listeners, at), (0, BACKLOG, 0));
    // listen() caps the backlog at net.core.somaxconn.
    assert_eq!(
        pressure(&listeners, big.local_addr().unwrap()),
        (0, somaxconn, 0)
    );
    assert_eq!(counts, counters(0, 0));
    drop(accepted);
}

both_families!(accepting_listener);

/// Request sockets go to the listener the kernel would pick: a dual-stack `[::]` listener gets
/// IPv4 connections (reported as IPv4-mapped IPv6), a v6only one does not.
#[test]
fn half_open_connections_find_their_listener() {
    if !privileged("half_open_connections_find_their_listener") {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("listen-dual").unwrap();
    let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
    let (dual, only4, only6) = ns.enter(|| {
        let dual = listen(any6, BACKLOG, Some(false));
        let only4 = listen(any4, BACKLOG, None);
        // The same port: an IPv6-only socket does not conflict with the IPv4 one.
        let only6 = listen(
            SocketAddr::new(any6.ip(), only4.local_addr().unwrap().port()),
            BACKLOG,
            Some(true),
        );
        (dual, only4, only6)
    });
    let (d, p4, p6) = (
        dual.local_addr().unwrap(),
        only4.local_addr().unwrap(),
        only6.local_addr().unwrap(),
    );
    let to = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let started = Instant::now();
    let (held, (listeners, counts)) = ns.enter(|| {
        let held: Vec<Socket> = [
            to(V4, d.port()),
            to(V4, d.port()),
            to(V6, d.port()),
            to(V4, p4.port()),
            to(V6, p6.port()),
            to(V6, p6.port()),
        ]
        .into_iter()
        .map(held_ack_client)
        .collect();
        (held, listeners_current().unwrap())
    });
    let elapsed = started.elapsed();
    assert_eq!(listeners.len(), 3, "{listeners:#?}");
    assert_eq!(
        pressure(&listeners, d),
        (0, BACKLOG, 3),
        "after {elapsed:?}"
    );
    assert_eq!(
        pressure(&listeners, p4),
        (0, BACKLOG, 1),
        "after {elapsed:?}"
    );
    assert_eq!(
        pressure(&listeners, p6),
        (0, BACKLOG, 2),
        "after {elapsed:?}"
    );
    assert_eq!(counts, counters(0, 0));

    // Completed, they move to the accept queues.
    ns.enter(|| held.iter().for_each(release_ack));
    let (listeners, counts) = ns.enter(|| listeners_current().unwrap());
    assert_eq!(pressure(&listeners, d), (3, BACKLOG, 0));
    assert_eq!(pressure(&listeners, p4), (1, BACKLOG, 0));
    assert_eq!(pressure(&listeners, p6), (2, BACKLOG, 0));
    assert_eq!(counts, counters(0, 0));
}

/// Sockets in other states stay in the kernel: on a host with many connections, the listener
/// dump stays small and fast next to a full dump.
#[test]
fn many_other_sockets_do_not_slow_the_listener_dump() {
    // connect() takes even ephemeral ports first and slows down badly once one destination
    // has used them (about 14,000), so the connections go to several listeners.
    const PORTS: usize = 5;
    const PER_PORT: usize = 8_000;
    if !privileged("many_other_sockets_do_not_slow_the_listener_dump") {
        return;
    }
    let _serial = serial();
    // The kernel walks its whole established hash, shared by all namespaces, to find request
    // sockets: the sockets made below also cost the dump of this thread's namespace.
    let here = || {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                listeners_current().unwrap();
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let here_before = here();
    let ns = NetNs::new("listen-many").unwrap();
    // No early reuse of TIME_WAIT ports on loopback: every connection leaves one behind, and
    // there is room for all of them (a small machine's default is 8,192).
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
    ns.sysctl(
        "net.ipv4.tcp_max_tw_buckets",
        &(PORTS * PER_PORT).to_string(),
    )
    .unwrap();
    let made = Instant::now();
    let listeners = ns.enter(|| {
        let listeners: Vec<TcpListener> = (0..PORTS)
            .map(|_| listen(SocketAddr::new(V4, 0), 128, None))
            .collect();
        for listener in &listeners {
            let at = listener.local_addr().unwrap();
            for _ in 0..PER_PORT {
                let client = TcpStream::connect(at).unwrap();
                let (server, _) = listener.accept().unwrap();
                // The client closes first and is left in TIME_WAIT.
                drop(client);
                drop(server);
            }
        }
        listeners
    });
    let ports: HashSet<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    eprintln!(
        "made {} TIME_WAIT sockets in {:?}",
        PORTS * PER_PORT,
        made.elapsed()
    );

    let fastest = |f: &(dyn Fn() -> usize + Sync)| {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let n = ns.enter(f);
                (started.elapsed(), n)
            })
            .min()
            .unwrap()
    };
    let (full, sockets) = fastest(&|| dump_current().unwrap().len());
    let (listed, found) = fastest(&|| listeners_current().unwrap().0.len());
    eprintln!(
        "full dump: {sockets} sockets in {full:?}; listener dump: {found} listeners in {listed:?}"
    );
    eprintln!(
        "listener dump of the test's own namespace: {here_before:?} before, {:?} after",
        here()
    );
    assert!(sockets > PORTS * PER_PORT, "{sockets}");
    assert_eq!(found, PORTS);
    assert!(listed < full, "{listed:?} vs {full:?}");

    let snapshot = listeners_all(Requests::Count);
    let (mine, _) = of_netns(&snapshot, ns.inode());
    assert_eq!(mine.iter().map(|l| l.local).collect::<HashSet<_>>(), ports);
    eprintln!(
        "listeners_all: {} listeners in {} namespaces in {:?}",
        snapshot.listeners.len(),
        snapshot.counters.len(),
        snapshot.took
    );
    assert!(snapshot.took > Duration::ZERO);
}
