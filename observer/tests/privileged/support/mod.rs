//! Shared by the privileged integration tests.
#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod kernel_version;
pub mod services;

#[allow(unused_imports, reason = "each test binary uses a different part")]
pub use observer_testkit::{exposition, netns, promql, skip, ss};

/// One test per address family, each skipped loudly without privileges.
#[allow(unused_macros, reason = "each test binary uses a different part")]
macro_rules! both_families {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn ipv4() {
                if super::privileged(concat!(stringify!($scenario), "::ipv4")) {
                    super::$scenario(super::V4);
                }
            }

            #[test]
            fn ipv6() {
                if super::privileged(concat!(stringify!($scenario), "::ipv6")) {
                    super::$scenario(super::V6);
                }
            }
        }
    };
}

use observer::event::Netns;
use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use observer::{
    clock::mono_now_ns,
    event::{Event, Transition},
    load::LoadOptions,
    stream::EventStream,
    track::{Report, Tracker},
};
use observer_common::TcpState;

pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Whether this test may run. Without privileges it is skipped loudly, except under CI=true,
/// where a skipped privileged test is a failure.
#[must_use]
pub fn privileged(test: &str) -> bool {
    if observer::kernel::privileges::can_load_probes() {
        return true;
    }
    skip::skip(
        test,
        "needs root (CAP_BPF + CAP_PERFMON); run `sudo cargo xtask test`",
    );
    false
}

/// Privileged tests run one at a time: some count the programs attached to the kernel.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sockets of one network namespace in a raw event stream. The state program reads a
/// socket's namespace at its birth only (out of CLOSE or LISTEN): a later transition is the
/// namespace's when its socket was born there.
pub struct NetnsSockets {
    netns: Option<Netns>,
    born: std::collections::HashSet<u64>,
}

impl NetnsSockets {
    #[must_use]
    pub fn new(netns: u32) -> Self {
        Self {
            netns: Netns::new(netns),
            born: std::collections::HashSet::new(),
        }
    }

    /// Whether `t` is about a socket of the namespace; follows its socket from its birth.
    pub fn holds(&mut self, t: &Transition) -> bool {
        let ours = match t.netns {
            Some(_) => t.netns == self.netns,
            None => self.born.contains(&t.sock),
        };
        // A socket's address is reused once it is freed: each birth says whose it is now.
        if ours && t.new != TcpState::Close {
            self.born.insert(t.sock);
        } else {
            self.born.remove(&t.sock);
        }
        ours
    }
}

/// The observer's own pipeline, attached in-process: the tracker is fed every event of the
/// host, and what concerns one netns is kept.
pub struct Recorder {
    runtime: tokio::runtime::Runtime,
    stream: EventStream,
    netns: u32,
    sockets: NetnsSockets,
    pub tracker: Tracker,
    /// Transitions in the netns, as the kernel reported them.
    pub seen: Vec<Transition>,
    /// The tracker's reports about the netns.
    pub reports: Vec<Report>,
}

impl Recorder {
    pub fn start(netns: u32) -> Self {
        Self::start_with(netns, &LoadOptions::default())
    }

    pub fn start_with(netns: u32, options: &LoadOptions) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = {
            let _guard = runtime.enter();
            EventStream::open(options).expect("loading the probes")
        };
        Self {
            runtime,
            stream,
            netns,
            sockets: NetnsSockets::new(netns),
            tracker: Tracker::new(1 << 16),
            seen: Vec::new(),
            reports: Vec::new(),
        }
    }

    /// The namespace it records.
    pub const fn netns(&self) -> u32 {
        self.netns
    }

    pub const fn features(&self) -> &observer::load::Features {
        self.stream.features()
    }

    /// Collects until `done(transitions)` holds, failing after 10 s.
    pub fn collect_until(&mut self, done: impl Fn(&[Transition]) -> bool) -> &[Transition] {
        self.collect(Duration::from_secs(10), |r| done(&r.seen));
        &self.seen
    }

    /// Collects until `done(reports)` holds, failing after `timeout`.
    pub fn reports_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Report]) -> bool,
    ) -> &[Report] {
        self.collect(timeout, |r| done(&r.reports));
        &self.reports
    }

    /// Collects until `done(reports)` holds or `timeout` passes: whether it held, and every
    /// report so far. For a test that says more than [`Self::reports_until`] when it times out.
    pub fn reports_within(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Report]) -> bool,
    ) -> (bool, &[Report]) {
        let held = self.collect_within(timeout, |r| done(&r.reports));
        (held, &self.reports)
    }

    fn collect(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) {
        assert!(
            self.collect_within(timeout, done),
            "timed out; transitions so far: {:#?}\nreports: {:#?}",
            self.seen,
            self.reports
        );
    }

    /// Whether `done` held before `timeout` passed.
    fn collect_within(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut batch: Vec<Event> = Vec::new();
        let mut out = Vec::new();
        // Always read once, so that what has arrived and the passing of time are applied even
        // when `done` already holds.
        let mut polled = false;
        let mut held = true;
        while !polled || !done(self) {
            polled = true;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                held = false;
                break;
            }
            let stream = &mut self.stream;
            let wait = left.min(Duration::from_millis(200));
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(wait, stream.next_batch(&mut batch)).await
            });
            for event in batch.drain(..) {
                if let Event::Transition(t) = &event
                    && self.sockets.holds(t)
                {
                    self.seen.push(*t);
                }
                self.tracker.apply(&event, &mut out);
            }
            self.tracker.advance(mono_now_ns(), &mut out);
            let netns = self.netns;
            self.reports
                .extend(out.drain(..).filter(|r| report_netns(r) == Some(netns)));
        }
        // Checked on a timeout too: a loss is the likeliest reason for one.
        let losses = self.stream.losses().unwrap();
        assert_eq!(losses.total(), 0, "events were lost: {losses:?}");
        held
    }
}

/// The network namespace a report is about.
#[must_use]
pub fn report_netns(r: &Report) -> Option<u32> {
    match r {
        Report::Transition { transition, .. } => transition.netns,
        Report::Reset { reset, .. } => reset.netns,
        Report::Retransmits { tuple, .. } => tuple.netns,
        Report::ConnectionError { error, .. } => error.netns,
    }
    .map(Netns::inode)
}

/// The transitions of one socket, in order.
#[must_use]
pub fn of_socket(seen: &[Transition], sock: u64) -> Vec<(TcpState, TcpState)> {
    seen.iter()
        .filter(|t| t.sock == sock)
        .map(|t| (t.old, t.new))
        .collect()
}

/// Number of distinct sockets that have reached CLOSE.
#[must_use]
pub fn closed_sockets(seen: &[Transition]) -> usize {
    seen.iter().filter(|t| t.new == TcpState::Close).count()
}

/// The socket whose transitions match `pred` (exactly one must).
#[must_use]
pub fn socket_where(seen: &[Transition], pred: impl Fn(&Transition) -> bool) -> u64 {
    let mut socks: Vec<u64> = seen.iter().filter(|t| pred(t)).map(|t| t.sock).collect();
    socks.dedup();
    assert_eq!(
        socks.len(),
        1,
        "expected one socket, got {socks:x?} in {seen:#?}"
    );
    socks[0]
}

/// Ports of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub client_port: u16,
    pub server_port: u16,
}

/// A connected client and the server's accepted socket, with the listener still open.
pub struct Pair {
    pub listener: TcpListener,
    pub client: TcpStream,
    pub server: TcpStream,
    pub conn: Conn,
}

/// Listens on an ephemeral port of `addr`, connects and accepts. Runs in the caller's netns.
#[must_use]
pub fn connected_pair(addr: IpAddr) -> Pair {
    let listener = TcpListener::bind((addr, 0)).unwrap();
    let server_port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect((addr, server_port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (server, _) = listener.accept().unwrap();
    Pair {
        listener,
        client,
        server,
        conn: Conn {
            client_port,
            server_port,
        },
    }
}

/// Client connects, closes first; the server reads EOF and closes. Runs in the caller's netns.
pub fn client_closes_first(addr: IpAddr) -> Conn {
    let Pair {
        listener,
        client,
        mut server,
        conn,
    } = connected_pair(addr);
    drop(client);
    assert_eq!(
        server.read(&mut [0u8; 16]).unwrap(),
        0,
        "server sees the client's FIN"
    );
    drop(server);
    drop(listener);
    conn
}

/// The client closes with `SO_LINGER` {on, 0}: an RST instead of a FIN, which the server's
/// next read reports. Runs in the caller's netns.
pub fn client_aborts(addr: IpAddr) -> Conn {
    let Pair {
        listener,
        client,
        mut server,
        conn,
    } = connected_pair(addr);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let err = server.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionReset,
        "the server gets the RST"
    );
    drop((server, listener));
    conn
}
