//! Privileged integration tests of retransmissions and connection errors: the real probes on
//! the running kernel, real TCP connections on loopback inside a network namespace each test
//! creates, exact expectations.

use crate::support;
use observer::event::Netns;

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use observer::{
    event::{Event, Family, Retransmit, RetransmitKind, SocketError, Transition},
    load::LoadOptions,
    stream::EventStream,
    track::Tracker,
};
use observer_common::TcpState::{self, Close, Established, SynSent};
use support::{NetnsSockets, Pair, V4, V6, netns::NetNs, privileged, serial, skip};

const ECONNREFUSED: i32 = 111;
const ECONNRESET: i32 = 104;

/// The probes, keeping what happens in one network namespace.
struct Collector {
    runtime: tokio::runtime::Runtime,
    stream: EventStream,
    netns: u32,
    sockets: NetnsSockets,
    transitions: Vec<Transition>,
    retransmits: Vec<Retransmit>,
    errors: Vec<SocketError>,
}

impl Collector {
    fn start(netns: u32) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = {
            let _guard = runtime.enter();
            EventStream::open(&LoadOptions::default()).expect("loading the probes")
        };
        let features = stream.features();
        assert!(
            features.retransmits.is_active() && features.socket_errors.is_active(),
            "this kernel has both: {features:?}"
        );
        Self {
            runtime,
            stream,
            netns,
            sockets: NetnsSockets::new(netns),
            transitions: Vec::new(),
            retransmits: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Collects until `done` holds, failing after `timeout`.
    fn until(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            // The losses first: a run the kernel skipped (another tracing program on that CPU)
            // is counted there, and explains an event that never came.
            assert!(
                !left.is_zero(),
                "timed out; losses {:?}\nerrors {:#?}\nretransmissions {:#?}\ntransitions {:#?}",
                self.stream.losses(),
                self.errors,
                self.retransmits,
                self.transitions
            );
            self.poll(left.min(Duration::from_millis(100)));
        }
    }

    /// Collects for `quiet` more, so that an event that should not come has had time to.
    fn settle(&mut self, quiet: Duration) {
        let end = Instant::now() + quiet;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.poll(left.min(Duration::from_millis(100)));
        }
        self.assert_no_losses();
    }

    fn assert_no_losses(&self) {
        let losses = self.stream.losses().unwrap();
        assert_eq!(losses.total(), 0, "events were lost: {losses:?}");
    }

    fn poll(&mut self, wait: Duration) {
        let mut batch = Vec::new();
        let stream = &mut self.stream;
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(wait, stream.next_batch(&mut batch)).await });
        let netns = Netns::new(self.netns);
        for event in batch {
            match event {
                Event::Transition(t) if self.sockets.holds(&t) => self.transitions.push(t),
                Event::Retransmit(r) if r.netns == netns => self.retransmits.push(r),
                Event::SocketError(e) if e.netns == netns => self.errors.push(e),
                _ => {}
            }
        }
    }

    fn errors_at(&self, local: SocketAddr) -> Vec<SocketError> {
        self.errors
            .iter()
            .filter(|e| e.local == local)
            .copied()
            .collect()
    }
}

const fn family(addr: IpAddr) -> Family {
    if addr.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

/// `connect()` to a port nobody listens on: the RST refuses it. The kernel closes the socket
/// before it reports the error, and has already given the port back (`skc_num` is 0): the
/// local port comes from `inet_sport`.
fn refused(addr: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("refused").unwrap();
    let mut rec = Collector::start(ns.inode());
    let server = ns.enter(|| {
        let closed = TcpListener::bind((addr, 0)).unwrap().local_addr().unwrap();
        let err = TcpStream::connect(closed).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        closed
    });
    rec.until(Duration::from_secs(10), |r| !r.errors.is_empty());
    rec.settle(Duration::from_millis(300));
    // SYN_SENT -> CLOSE names the port connect() picked (CLOSE -> SYN_SENT comes before it).
    let refused = rec
        .transitions
        .iter()
        .find(|t| (t.old, t.new) == (SynSent, Close) && t.remote == server)
        .copied()
        .unwrap_or_else(|| panic!("no SYN_SENT -> CLOSE in {:#?}", rec.transitions));
    assert_ne!(refused.local.port(), 0);
    assert_eq!(
        rec.errors,
        [SocketError {
            mono_ns: rec.errors[0].mono_ns,
            sock: refused.sock,
            error: ECONNREFUSED,
            state: Some(Close),
            family: family(addr),
            local: refused.local,
            remote: server,
            netns: Netns::new(ns.inode()),
            unrecovered: Some(0),
            probes_out: Some(0),
            unsent_data: Some(false),
        }],
        "exactly one error, on the client"
    );
    assert!(
        rec.errors[0].mono_ns >= refused.mono_ns,
        "closed, then reported"
    );
}

both_families!(refused);

/// The server closes with `SO_LINGER` {on, 0}: its RST resets the client (ECONNRESET, the
/// socket already CLOSE). The server's own socket reports ECONNRESET too: `tcp_disconnect()`
/// sets it on the aborting socket, after clearing its remote port.
fn reset_by_peer(addr: IpAddr) {
    let _serial = serial();
    let ns = NetNs::new("reset").unwrap();
    let mut rec = Collector::start(ns.inode());
    let (client, server) = ns.enter(|| {
        let Pair {
            listener,
            mut client,
            server,
            conn: _,
        } = support::connected_pair(addr);
        let ends = (client.local_addr().unwrap(), server.local_addr().unwrap());
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        let err = client.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
        drop((client, listener));
        ends
    });
    rec.until(Duration::from_secs(10), |r| r.errors.len() >= 2);
    rec.settle(Duration::from_millis(300));
    let sock_at = |local: SocketAddr| {
        rec.transitions
            .iter()
            .find(|t| t.local == local && t.new == Established)
            .map_or_else(
                || panic!("no ESTABLISHED at {local} in {:#?}", rec.transitions),
                |t| t.sock,
            )
    };
    let error = |sock, local, remote| SocketError {
        mono_ns: 0,
        sock,
        error: ECONNRESET,
        state: Some(Close),
        family: family(addr),
        local,
        remote,
        netns: Netns::new(ns.inode()),
        unrecovered: Some(0),
        probes_out: Some(0),
        unsent_data: Some(false),
    };
    let without_time = |errors: Vec<SocketError>| {
        errors
            .into_iter()
            .map(|e| SocketError { mono_ns: 0, ..e })
            .collect::<Vec<_>>()
    };
    assert_eq!(rec.errors.len(), 2, "{:#?}", rec.errors);
    assert_eq!(
        without_time(rec.errors_at(client)),
        [error(sock_at(client), client, server)],
        "the client is reset by its peer"
    );
    assert_eq!(
        without_time(rec.errors_at(server)),
        [error(
            sock_at(server),
            server,
            SocketAddr::new(client.ip(), 0)
        )],
        "the aborting server reports its own reset"
    );
}

both_families!(reset_by_peer);

/// Whether `nft` can run; skips loudly (fails under CI=true) when it cannot.
fn nft_available(test: &str) -> bool {
    let found = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip::skip(
            test,
            "needs nft to drop packets (`apt-get install nftables`)",
        );
    }
    found
}

/// Runs `nft` with `args`; call it inside the namespace.
fn nft(args: &[&str]) {
    let out = Command::new("nft").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server's packets are dropped: the client's data is never acknowledged, and every
/// retransmission timeout sends it again.
fn unacknowledged(addr: IpAddr) {
    if !nft_available(if addr.is_ipv4() {
        "unacknowledged::ipv4"
    } else {
        "unacknowledged::ipv6"
    }) {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("rto").unwrap();
    let mut rec = Collector::start(ns.inode());
    let (pair, client, server) = ns.enter(|| {
        let pair = support::connected_pair(addr);
        let port = pair.conn.server_port.to_string();
        nft(&["add", "table", "inet", "t"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "t",
            "in",
            "{ type filter hook input priority 0; }",
        ]);
        nft(&[
            "add", "rule", "inet", "t", "in", "tcp", "sport", &port, "drop",
        ]);
        let ends = (
            pair.client.local_addr().unwrap(),
            pair.server.local_addr().unwrap(),
        );
        (&pair.client).write_all(b"never acknowledged").unwrap();
        (pair, ends.0, ends.1)
    });
    // The third timeout's retransmission, or a later one: the kernel at times runs no program
    // for one retransmission (README, Known limits), which the identity below accounts for.
    rec.until(Duration::from_secs(10), |r| {
        r.retransmits
            .iter()
            .any(|t| t.local == client && t.unrecovered.is_some_and(|n| n >= 3))
    });
    rec.assert_no_losses();
    // The kernel's own count, in this namespace where only the client retransmits: every
    // retransmitted segment is one event.
    let kernel_retransmits = ns.snmp_counter("Tcp", "RetransSegs").unwrap();
    let kernel_probes = ns.snmp_counter("TcpExt", "TCPLossProbes").unwrap();
    drop(pair);
    let sock = rec
        .transitions
        .iter()
        .find(|t| t.local == client)
        .map(|t| t.sock)
        .unwrap();
    let of_client: Vec<_> = rec
        .retransmits
        .iter()
        .filter(|r| r.local == client)
        .collect();
    for r in &of_client {
        assert_eq!(
            (r.kind, r.sock, r.state, r.remote, r.err, r.family),
            (
                RetransmitKind::Segment,
                sock,
                Some(Established),
                server,
                0,
                family(addr)
            ),
            "{r:?}"
        );
    }
    // A tail loss probe first (no timeout yet), then one per retransmission timeout. Every
    // retransmission the kernel counted was seen, or counted as unreported by the tracker
    // (the kernel's timeout count skipped it).
    let counts: Vec<_> = of_client.iter().map(|r| r.unrecovered).collect();
    let mut tracker = Tracker::new(1024);
    for r in &of_client {
        tracker.apply(&Event::Retransmit(**r), &mut Vec::new());
    }
    let unreported = tracker.retransmit_counts().timeouts_unreported;
    assert_eq!(
        (
            u64::try_from(of_client.len()).unwrap() + unreported,
            kernel_probes
        ),
        (kernel_retransmits, 1),
        "(events seen + timeouts unreported, loss probes) against the kernel's RetransSegs \
         and TCPLossProbes; seen {counts:?}"
    );
    assert_eq!(counts.first(), Some(&Some(0)), "the loss probe: {counts:?}");
    assert!(
        counts.last().copied().flatten().is_some_and(|n| n >= 3),
        "{counts:?}"
    );
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]),
        "one retransmission per timeout: {counts:?}"
    );
    assert!(
        of_client.windows(2).all(|w| w[0].mono_ns < w[1].mono_ns),
        "in time order"
    );
    assert!(
        rec.retransmits.iter().all(|r| r.local == client),
        "only the client retransmits: {:#?}",
        rec.retransmits
    );
}

both_families!(unacknowledged);

/// The client's handshake ACK is dropped: the listener sends its SYN-ACK again (after 1 s). The
/// tracepoint names the listener's socket, and this host's end is the listener's address.
fn synack_unanswered(addr: IpAddr) {
    if !nft_available(if addr.is_ipv4() {
        "synack_unanswered::ipv4"
    } else {
        "synack_unanswered::ipv6"
    }) {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("synack").unwrap();
    let mut rec = Collector::start(ns.inode());
    let (sockets, client, server) = ns.enter(|| {
        let listener = TcpListener::bind((addr, 0)).unwrap();
        let server = listener.local_addr().unwrap();
        let port = server.port().to_string();
        nft(&["add", "table", "inet", "t"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "t",
            "in",
            "{ type filter hook input priority 0; }",
        ]);
        nft(&[
            "add",
            "rule",
            "inet",
            "t",
            "in",
            "tcp",
            "dport",
            &port,
            "tcp flags & (syn | ack) == ack",
            "drop",
        ]);
        // The client's SYN and the SYN-ACK pass: connect() succeeds on the client's side.
        let client = TcpStream::connect(server).unwrap();
        let local = client.local_addr().unwrap();
        ((listener, client), local, server)
    });
    rec.until(Duration::from_secs(10), |r| !r.retransmits.is_empty());
    rec.assert_no_losses();
    drop(sockets);
    let listener = rec
        .transitions
        .iter()
        .find(|t| t.new == TcpState::Listen && t.local == server)
        .map_or_else(
            || panic!("no LISTEN at {server} in {:#?}", rec.transitions),
            |t| t.sock,
        );
    assert_eq!(
        rec.retransmits,
        [Retransmit {
            mono_ns: rec.retransmits[0].mono_ns,
            kind: RetransmitKind::Synack,
            sock: listener,
            state: None,
            family: family(addr),
            local: server,
            remote: client,
            netns: Netns::new(ns.inode()),
            unrecovered: None,
            err: 0,
        }]
    );
}

both_families!(synack_unanswered);
