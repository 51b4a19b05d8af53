//! The connection-churn generator of `cargo xtask bench` and `cargo xtask stress`, also run by
//! tests/privileged/bench_smoke.rs.
//!
//! Worker threads make connections on loopback in the caller's network namespace, in four
//! kinds taken in turn, so how many of each were made, and with them how many kernel
//! transitions (`sock:inet_sock_set_state`) to expect, is known exactly. Bounded in count and
//! in time.
//!
//! Addresses are 127.77.T.N (T the worker, N rotating over 250 values): with 28,232 ephemeral
//! ports each, no 4-tuple is reused within a phase, so no timewait socket is killed early, and
//! a tracer's lines for the load are told apart from the host's other loopback traffic.

use std::{
    collections::BTreeMap,
    io::{self, Read as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

/// The first two bytes of every address the load uses.
pub const ADDR_PREFIX: [u8; 2] = [127, 77];

/// How long a worker waits for its peer's FIN or RST before calling the run failed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The client closes, the server reads EOF and closes: the client ends in TIME_WAIT.
    ClientClosesFirst,
    /// The server closes, the client reads EOF and closes: the server ends in TIME_WAIT.
    ServerClosesFirst,
    /// The client closes with `SO_LINGER {on, 0}`: an RST; the server's read reports it.
    LingerReset,
    /// A connect() to a port with no listener: the kernel answers with an RST.
    Refused,
}

pub const KINDS: [Kind; 4] = [
    Kind::ClientClosesFirst,
    Kind::ServerClosesFirst,
    Kind::LingerReset,
    Kind::Refused,
];

/// Kernel transitions of one listener: listen() and close().
pub const LISTENER_TRANSITIONS: &[(&str, &str)] = &[("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")];

impl Kind {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ClientClosesFirst => "client_closes_first",
            Self::ServerClosesFirst => "server_closes_first",
            Self::LingerReset => "linger_reset",
            Self::Refused => "refused",
        }
    }

    /// The `sock:inet_sock_set_state` transitions one connection of this kind makes, both ends
    /// together, as Linux 6.18 makes them on loopback. The closing side's FIN_WAIT2 -> CLOSE is
    /// the full socket's end: TIME_WAIT continues in a timewait socket that no transition
    /// reports. `cargo xtask bench` checks these against what the daemon receives in a
    /// calibration phase, one kind at a time at a low rate, before measuring.
    #[must_use]
    pub const fn transitions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // The same pairs either way: the ends swap roles (the closing end goes through
            // FIN_WAIT1, FIN_WAIT2 and CLOSE, the other through CLOSE_WAIT and LAST_ACK).
            Self::ClientClosesFirst | Self::ServerClosesFirst => &[
                ("CLOSE", "SYN_SENT"),
                ("LISTEN", "SYN_RECV"),
                ("SYN_RECV", "ESTABLISHED"),
                ("SYN_SENT", "ESTABLISHED"),
                ("ESTABLISHED", "FIN_WAIT1"),
                ("ESTABLISHED", "CLOSE_WAIT"),
                ("FIN_WAIT1", "FIN_WAIT2"),
                ("CLOSE_WAIT", "LAST_ACK"),
                ("FIN_WAIT2", "CLOSE"),
                ("LAST_ACK", "CLOSE"),
            ],
            // Client: its own close() goes ESTABLISHED -> CLOSE; server: the RST does.
            Self::LingerReset => &[
                ("CLOSE", "SYN_SENT"),
                ("LISTEN", "SYN_RECV"),
                ("SYN_RECV", "ESTABLISHED"),
                ("SYN_SENT", "ESTABLISHED"),
                ("ESTABLISHED", "CLOSE"),
                ("ESTABLISHED", "CLOSE"),
            ],
            Self::Refused => &[("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")],
        }
    }

    /// Timewait sockets one connection leaves: the closing end's, unless an RST ended it.
    #[must_use]
    pub const fn timewait_sockets(self) -> u64 {
        match self {
            Self::ClientClosesFirst | Self::ServerClosesFirst => 1,
            Self::LingerReset | Self::Refused => 0,
        }
    }

    /// RST tracepoint events: the one sent (`tcp_send_reset`) and the one received.
    #[must_use]
    pub const fn resets(self) -> u64 {
        match self {
            Self::LingerReset | Self::Refused => 2,
            Self::ClientClosesFirst | Self::ServerClosesFirst => 0,
        }
    }

    /// Of [`Kind::resets`], those sent without a socket (the refusal's), which kernels before
    /// 6.10 do not trace.
    #[must_use]
    pub const fn socketless_resets(self) -> u64 {
        match self {
            Self::Refused => 1,
            Self::ClientClosesFirst | Self::ServerClosesFirst | Self::LingerReset => 0,
        }
    }
}

/// What to make.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Worker threads, each with its own listener (at most 255).
    pub threads: usize,
    /// Connections in all, split evenly between the workers (the kinds taken in turn).
    pub connections: u64,
    /// Workers stop early when this much time has passed.
    pub max_time: Duration,
}

/// What was made.
#[derive(Clone, Debug, Default)]
pub struct Made {
    /// Connections of each kind, in the order of [`KINDS`].
    pub by_kind: [u64; 4],
    /// The workers' listening ports (a listener's own transitions show 0.0.0.0).
    pub listener_ports: Vec<u16>,
    pub elapsed: Duration,
    /// The time bound, not the count, ended the run.
    pub stopped_by_time: bool,
}

impl Made {
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    /// Kernel transitions the load made: every connection's and every listener's.
    #[must_use]
    pub fn transitions(&self) -> u64 {
        let per_kind: u64 = KINDS
            .iter()
            .zip(self.by_kind)
            .map(|(k, n)| n * k.transitions().len() as u64)
            .sum();
        per_kind + (self.listener_ports.len() * LISTENER_TRANSITIONS.len()) as u64
    }

    /// RST tracepoint events the load made.
    #[must_use]
    pub fn resets(&self) -> u64 {
        self.sum_by_kind(Kind::resets)
    }

    /// Timewait sockets the load left (the kernel counts them as `TcpExt: TW` and `TWKilled`).
    #[must_use]
    pub fn timewait_sockets(&self) -> u64 {
        self.sum_by_kind(Kind::timewait_sockets)
    }

    /// Of [`Made::resets`], those sent without a socket.
    #[must_use]
    pub fn socketless_resets(&self) -> u64 {
        self.sum_by_kind(Kind::socketless_resets)
    }

    fn sum_by_kind(&self, per_connection: fn(Kind) -> u64) -> u64 {
        KINDS
            .iter()
            .zip(self.by_kind)
            .map(|(&k, n)| n * per_connection(k))
            .sum()
    }

    /// Kernel transitions the load made, by (old, new) state.
    #[must_use]
    pub fn pairs(&self) -> BTreeMap<(String, String), u64> {
        let mut pairs = BTreeMap::new();
        let mut add = |(old, new): &(&str, &str), n: u64| {
            *pairs
                .entry(((*old).to_owned(), (*new).to_owned()))
                .or_default() += n;
        };
        for (kind, n) in KINDS.iter().zip(self.by_kind) {
            for pair in kind.transitions() {
                add(pair, n);
            }
        }
        for pair in LISTENER_TRANSITIONS {
            add(pair, self.listener_ports.len() as u64);
        }
        pairs
    }

    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    pub fn connections_per_s(&self) -> f64 {
        self.connections() as f64 / self.elapsed.as_secs_f64()
    }
}

/// One worker's result: connections by kind, its listening port.
struct Worker {
    by_kind: [u64; 4],
    port: u16,
}

/// Runs the load in the caller's network namespace (threads inherit it) and returns what was
/// made, or the first unexpected error (then the expected counts are unknown). With `only`,
/// every connection is of that kind.
pub fn run(load: &Load, only: Option<Kind>) -> io::Result<Made> {
    run_paced(load, only, None)
}

/// [`run`], each worker making at most `per_second` connections a second when given (a steady
/// load instead of the fastest one).
pub fn run_paced(load: &Load, only: Option<Kind>, per_second: Option<u64>) -> io::Result<Made> {
    assert!((1..=255).contains(&load.threads), "1 to 255 worker threads");
    let per_thread = load.connections / load.threads as u64;
    let start = Instant::now();
    let deadline = start + load.max_time;
    let results: Vec<io::Result<Worker>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..load.threads)
            .map(|t| {
                let t = u8::try_from(t).expect("checked above");
                s.spawn(move || worker(t, per_thread, deadline, only, per_second))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("churn worker panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut made = Made {
        elapsed,
        ..Made::default()
    };
    for r in results {
        let w = r?;
        for (total, n) in made.by_kind.iter_mut().zip(w.by_kind) {
            *total += n;
        }
        made.listener_ports.push(w.port);
    }
    made.stopped_by_time = made.connections() < per_thread * load.threads as u64;
    Ok(made)
}

fn worker(
    t: u8,
    count: u64,
    deadline: Instant,
    only: Option<Kind>,
    per_second: Option<u64>,
) -> io::Result<Worker> {
    let start = Instant::now();
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let port = listener.local_addr()?.port();
    // Bound, never listening: connections to its port are refused, and no other socket of
    // the namespace can take the port.
    let closed = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    closed.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    let closed_port = closed
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("closed socket has no port"))?
        .port();
    let mut by_kind = [0u64; 4];
    for i in 0..count {
        if i.is_multiple_of(16) && Instant::now() >= deadline {
            break;
        }
        if let Some(rate) = per_second {
            // Connection i is due i/rate seconds after the start.
            let due = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate.max(1));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
        let kind = only.unwrap_or(KINDS[usize::try_from(i % 4).expect("< 4")]);
        let host = u8::try_from(1 + (i / 4) % 250).expect("< 251");
        let ip = Ipv4Addr::new(ADDR_PREFIX[0], ADDR_PREFIX[1], t, host);
        connection(
            kind,
            &listener,
            SocketAddrV4::new(ip, port),
            (ip, closed_port),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{} connection: {e}", kind.name())))?;
        by_kind[KINDS.iter().position(|k| *k == kind).expect("a kind")] += 1;
    }
    drop(closed);
    Ok(Worker { by_kind, port })
}

/// One connection of `kind`, to `to` (the listener) or, refused, to `closed`.
fn connection(
    kind: Kind,
    listener: &TcpListener,
    to: SocketAddrV4,
    closed: (Ipv4Addr, u16),
) -> io::Result<()> {
    if kind == Kind::Refused {
        return match TcpStream::connect(closed) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("connected to a port with no listener")),
        };
    }
    let client = TcpStream::connect(to)?;
    let (server, _) = listener.accept()?;
    let expect_eof = |mut s: TcpStream| -> io::Result<()> {
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        match s.read(&mut [0u8; 8])? {
            0 => Ok(()),
            n => Err(io::Error::other(format!("read {n} bytes, expected EOF"))),
        }
    };
    match kind {
        Kind::ClientClosesFirst => {
            drop(client);
            expect_eof(server)
        }
        Kind::ServerClosesFirst => {
            drop(server);
            expect_eof(client)
        }
        Kind::LingerReset => {
            socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO))?;
            drop(client);
            let mut server = server;
            server.set_read_timeout(Some(READ_TIMEOUT))?;
            match server.read(&mut [0u8; 8]) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
                Err(e) => Err(e),
                Ok(n) => Err(io::Error::other(format!("read {n} bytes, expected an RST"))),
            }
        }
        Kind::Refused => unreachable!("handled above"),
    }
}

/// Transition counts by (old, new) state.
pub type Pairs = BTreeMap<(String, String), u64>;

/// (old, new, expected, counted) for every pair whose count between two scrapes (`before`,
/// `after`) differs from the load's (`expected`).
#[must_use]
pub fn pair_differences(
    expected: &Pairs,
    before: &Pairs,
    after: &Pairs,
) -> Vec<(String, String, u64, u64)> {
    let keys: std::collections::BTreeSet<&(String, String)> =
        expected.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let e = expected.get(key).copied().unwrap_or(0);
            let got = after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0);
            (e != got).then(|| (key.0.clone(), key.1.clone(), e, got))
        })
        .collect()
}
