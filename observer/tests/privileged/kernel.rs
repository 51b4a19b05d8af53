//! Privileged integration tests: the real probes on the running kernel, real TCP connections on
//! loopback inside a network namespace each test creates, exact expectations.

use crate::support;
use observer::event::Netns;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr},
};

use observer_common::TcpState::{
    self, Close, CloseWait, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv, SynSent,
};
use support::{
    Conn, Pair, Recorder, V4, V6, closed_sockets, netns::NetNs, of_socket, privileged, serial,
    socket_where,
};

const CLIENT_CLOSES_FIRST: [(TcpState, TcpState); 5] = [
    (Close, SynSent),
    (SynSent, Established),
    (Established, FinWait1),
    (FinWait1, FinWait2),
    (FinWait2, Close),
];
const SERVER_AFTER_PEER_CLOSE: [(TcpState, TcpState); 5] = [
    (Listen, SynRecv),
    (SynRecv, Established),
    (Established, CloseWait),
    (CloseWait, LastAck),
    (LastAck, Close),
];
const LISTENER: [(TcpState, TcpState); 2] = [(Close, Listen), (Listen, Close)];

/// Collects until the connection's three sockets (listener, client, server) have closed,
/// then checks them: exact transitions, addresses, owner. Returns what was seen.
fn assert_connection<'r>(
    rec: &'r mut Recorder,
    addr: IpAddr,
    conn: Conn,
    client: &[(TcpState, TcpState)],
    server: &[(TcpState, TcpState)],
) -> &'r [observer::event::Transition] {
    let netns = Netns::new(rec.netns());
    let seen = rec.collect_until(|s| closed_sockets(s) == 3);
    let server_addr = SocketAddr::new(addr, conn.server_port);
    let client_addr = SocketAddr::new(addr, conn.client_port);
    let listener = socket_where(seen, |t| t.new == Listen && t.local == server_addr);
    let client_sock = socket_where(seen, |t| t.local == client_addr);
    let server_sock = socket_where(seen, |t| t.local == server_addr && t.remote == client_addr);
    assert_eq!(of_socket(seen, listener), LISTENER);
    assert_eq!(
        of_socket(seen, client_sock),
        client,
        "client socket in {seen:#?}"
    );
    assert_eq!(
        of_socket(seen, server_sock),
        server,
        "server socket in {seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .map(|t| t.sock)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "only these sockets"
    );

    let me = std::process::id();
    for t in seen {
        // What a socket keeps for life is read at its birth only.
        assert_eq!(
            t.netns,
            matches!(t.old, Close | Listen).then_some(netns).flatten(),
            "the namespace at a socket's birth, none after: {t:?}"
        );
        let family = if addr.is_ipv4() {
            observer::event::Family::Ipv4
        } else {
            observer::event::Family::Ipv6
        };
        assert_eq!(t.family, family);
        if t.sock == client_sock && t.old != Close {
            assert_eq!(t.remote, server_addr, "{t:?}");
        }
        if t.owner_context {
            assert_eq!(
                t.task.pid, me,
                "an owner-context transition names this process: {t:?}"
            );
            // The thread that made the call, by the name the kernel keeps for it.
            if let Ok(name) =
                std::fs::read_to_string(format!("/proc/self/task/{}/comm", t.task.tid))
            {
                assert_eq!(t.task.comm(), name.trim_end(), "{t:?}");
            }
        }
        // Only what the daemon uses is read.
        assert_eq!(
            t.task.comm().is_empty(),
            !t.owner_context,
            "the task's name is read in the owner's context only: {t:?}"
        );
        assert_eq!(
            t.has_socket.is_some(),
            t.old == Established && matches!(t.new, CloseWait | Close),
            "sk_socket is read where the peer ends an established connection only: {t:?}"
        );
    }
    let connect = seen.iter().find(|t| t.sock == client_sock).unwrap();
    assert!(
        connect.owner_context && connect.task.pid == me,
        "connect() is attributed: {connect:?}"
    );
    seen
}

fn client_closes_first(addr: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("close").unwrap();
    let mut rec = Recorder::start(ns.inode());
    let conn = ns.enter(|| support::client_closes_first(addr));
    assert_connection(
        &mut rec,
        addr,
        conn,
        &CLIENT_CLOSES_FIRST,
        &SERVER_AFTER_PEER_CLOSE,
    );
}

both_families!(client_closes_first);

/// `close()` with `SO_LINGER` {on, 0}: the client aborts with an RST, no FIN exchange.
fn linger_zero_close(addr: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("linger").unwrap();
    let mut rec = Recorder::start(ns.inode());
    let conn = ns.enter(|| support::client_aborts(addr));
    let aborted = [
        (Close, SynSent),
        (SynSent, Established),
        (Established, Close),
    ];
    let reset = [
        (Listen, SynRecv),
        (SynRecv, Established),
        (Established, Close),
    ];
    assert_connection(&mut rec, addr, conn, &aborted, &reset);
}

both_families!(linger_zero_close);

/// `shutdown(SHUT_WR)` by the client; the server keeps sending after the client's FIN, then closes.
fn half_close(addr: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("halfclose").unwrap();
    let mut rec = Recorder::start(ns.inode());
    let payload = b"sent after the client's FIN";
    let (conn, received) = ns.enter(|| {
        let Pair {
            listener,
            mut client,
            mut server,
            conn,
        } = support::connected_pair(addr);
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            server.read(&mut [0u8; 16]).unwrap(),
            0,
            "server sees the FIN"
        );
        server.write_all(payload).unwrap();
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        drop(listener);
        (conn, received)
    });
    assert_eq!(received, payload, "the half-closed client still receives");
    let seen = assert_connection(
        &mut rec,
        addr,
        conn,
        &CLIENT_CLOSES_FIRST,
        &SERVER_AFTER_PEER_CLOSE,
    );
    // The client's shutdown() is attributed to this process, and the server's
    // CLOSE_WAIT -> LAST_ACK came after the data it sent.
    let shutdown = seen
        .iter()
        .find(|t| t.old == Established && t.new == FinWait1)
        .unwrap();
    assert!(shutdown.owner_context);
}

both_families!(half_close);

/// A ring buffer too small for a burst, not read during it: every transition of the burst is
/// either delivered or counted as lost to a full ring, and once read the stream delivers again.
fn full_ring_buffer(addr: IpAddr) {
    const CONNECTIONS: usize = 40;
    /// Per `support::client_closes_first`: the listener's 2, the client's 5, the server's 5.
    const TRANSITIONS_EACH: u64 = 12;
    let _serial = serial();
    let ns = NetNs::new("fullring").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The smallest ring: 4 KiB holds about 26 records.
    let options = observer::load::LoadOptions {
        ring_buffer_bytes: 4096,
        ..Default::default()
    };
    let mut stream = {
        let _guard = runtime.enter();
        observer::stream::EventStream::open(&options).expect("loading the probes")
    };
    // Ours: in the namespace at a socket's birth; after it (the program reads the namespace
    // then only, and the birth may be a record lost), on one of the burst's 4-tuples.
    let netns = Netns::new(ns.inode());
    let ours = |batch: &[observer::event::Event], conns: &[Conn]| {
        batch
            .iter()
            .filter(|e| {
                matches!(e, observer::event::Event::Transition(t)
                    if t.netns == netns
                        || (t.netns.is_none() && conns.iter().any(|c| on_connection(t, addr, *c))))
            })
            .count() as u64
    };
    let before = stream.losses().unwrap().kernel.ring_buffer_full;
    let conns: Vec<Conn> = ns.enter(|| {
        (0..CONNECTIONS)
            .map(|_| support::client_closes_first(addr))
            .collect()
    });
    let mut batch = Vec::new();
    stream.drain_now(&mut batch);
    let delivered = ours(&batch, &conns);
    let full = stream.losses().unwrap().kernel.ring_buffer_full - before;
    let made = CONNECTIONS as u64 * TRANSITIONS_EACH;
    assert!(delivered < made, "the burst fit: {delivered} of {made}");
    // The host's other traffic can only add to the counter, never hide one of ours.
    assert!(
        full >= made - delivered,
        "{} transitions lost without a count ({delivered} delivered, {full} counted)",
        made - delivered - full.min(made - delivered)
    );

    // Read again, the stream delivers a whole connection.
    batch.clear();
    let conn = ns.enter(|| support::client_closes_first(addr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = 0;
    while after < TRANSITIONS_EACH && std::time::Instant::now() < deadline {
        runtime
            .block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    stream.next_batch(&mut batch),
                )
                .await
            })
            .map_or(Ok(()), |r| r)
            .unwrap();
        after += ours(&batch, &[conn]);
        batch.clear();
    }
    assert_eq!(
        after, TRANSITIONS_EACH,
        "transitions after the ring was read"
    );
}

both_families!(full_ring_buffer);

/// Whether `t` is on `conn`'s 4-tuple, from either end, on loopback address `addr`.
fn on_connection(t: &observer::event::Transition, addr: IpAddr, conn: Conn) -> bool {
    let ports = (t.local.port(), t.remote.port());
    t.local.ip() == addr
        && t.remote.ip() == addr
        && (ports == (conn.client_port, conn.server_port)
            || ports == (conn.server_port, conn.client_port))
}
