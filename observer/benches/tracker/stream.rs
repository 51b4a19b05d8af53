//! The replayed event stream: what Linux 6.18 reports for loopback connections where the client
//! closes first, and for those closed by `SO_LINGER {on, 0}`, connection after connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use observer::event::{
    Event, Family, Netns, Reset, ResetDirection, ResetReason, Task, TimerAction, TimewaitSocket,
    TimewaitTimer, Transition,
};
use observer_common::TcpState::{
    self, Close, CloseWait, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv, SynSent,
    TimeWait,
};

pub const US: u64 = 1_000;
const MS: u64 = 1_000_000;
/// Where the replayed clock starts (`CLOCK_MONOTONIC` is never near 0 on a running host).
pub const T0: u64 = 10_000 * MS;
/// A connection starts every millisecond: about 54,000 timewait sockets at a time.
pub const START_EVERY_NS: u64 = MS;
/// Four times as often, a busier server: four times the open sockets, and up to four times the
/// timewait sockets (216,000 once a minute has passed; the default 200,000 connections last
/// 50 s, so at most 180,000): what larger tables cost.
pub const DENSE_START_EVERY_NS: u64 = MS / 4;
/// Connections stay open 0.5 s to 1.5 s (1 s on average): about 1000 open at a time.
const OPEN_MIN_NS: u64 = 500 * MS;
const OPEN_SPREAD_MS: u64 = 1_000;
/// Linux's fixed TIME_WAIT length.
pub const TIMEWAIT_NS: u64 = 60_000 * MS;
/// Every this many connections, one is closed with `SO_LINGER {on, 0}`.
const LINGER_EVERY: u64 = 10;

pub const NETNS: Netns = Netns::new(4_026_531_840).unwrap();
pub const SOCK_BASE: u64 = 0xffff_8880_0000_0000;
/// Timewait sockets live in their own slab: keep their timer addresses apart from full sockets.
pub const TIMER_BASE: u64 = 0xffff_88c0_0000_0060;
const SERVER_PORT: u16 = 8080;
/// Linux's default ephemeral port range (32768-60999); the server address rotates after it.
const EPHEMERAL_FIRST: u64 = 32_768;
const EPHEMERAL_PORTS: u64 = 28_232;
/// `SK_RST_REASON_TCP_STATE`: what `tcp_disconnect` sends on a `SO_LINGER {on, 0}` close.
pub const REASON_TCP_STATE: u32 = 14;

/// Reports per connection with a client reading every transition: every transition
/// (FIN_WAIT2 -> CLOSE shows as the TIME_WAIT entry; the timer start, linked to it, and the
/// cancel show nothing) plus the TIME_WAIT end.
const REPORTS_CLOSE_FIRST: u64 = 11;
/// Every event of an abortive close is shown.
const REPORTS_LINGER: u64 = 8;
/// Reports per connection with no such client (the daemon's default): none (TIME_WAIT's entry
/// and end are counted, and reported only to a reader).
const NOTABLE_CLOSE_FIRST: u64 = 0;
/// The two RSTs of an abortive close.
const NOTABLE_LINGER: u64 = 2;

pub fn client_task() -> Task {
    Task::named(4100, "client")
}

pub fn server_task() -> Task {
    Task::named(4200, "server")
}

/// (client, server) ends of connection `i`: distinct 4-tuples for any count the options allow.
pub fn ends(family: Family, i: u64) -> (SocketAddr, SocketAddr) {
    let port = u16::try_from(EPHEMERAL_FIRST + i % EPHEMERAL_PORTS).expect("ephemeral port");
    let server_index = u32::try_from(i / EPHEMERAL_PORTS).expect("a few hundred servers");
    let (client, server) = match family {
        Family::Ipv4 => (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::LOCALHOST) + server_index,
            )),
        ),
        Family::Ipv6 => (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 0)) + u128::from(server_index),
            )),
        ),
    };
    (
        SocketAddr::new(client, port),
        SocketAddr::new(server, SERVER_PORT),
    )
}

/// Kernel addresses of connection `i`'s client and server sockets, and of its timewait timer.
fn socks(i: u64) -> (u64, u64, u64) {
    (
        SOCK_BASE + 2 * i * 0x1000,
        SOCK_BASE + (2 * i + 1) * 0x1000,
        TIMER_BASE + i * 0x1000,
    )
}

/// A transition as `sock:inet_sock_set_state` reports it. Outside the owner's syscalls it runs
/// in softirq, which on loopback is the peer's syscall that sent the segment; the program then
/// records that task's pid but not its `comm`.
#[expect(clippy::too_many_arguments, reason = "one per field of the record")]
pub fn transition(
    mono_ns: u64,
    sock: u64,
    old: TcpState,
    new: TcpState,
    local: SocketAddr,
    remote: SocketAddr,
    own: Task,
    peer: Task,
    has_socket: bool,
) -> Event {
    let owner_context = TcpState::in_owner_context(old, new);
    Event::Transition(Transition {
        cgroup: None,
        mono_ns,
        sock,
        old,
        new,
        family: family_of(local),
        local,
        remote,
        // Read by the program at a socket's birth only.
        netns: matches!(old, TcpState::Close | TcpState::Listen).then_some(NETNS),
        task: if owner_context {
            own
        } else {
            Task::new(peer.pid, peer.tid, [0; 16])
        },
        owner_context,
        // Read only where the peer ends an established connection.
        has_socket: (old == TcpState::Established
            && matches!(new, TcpState::CloseWait | TcpState::Close))
        .then_some(has_socket),
    })
}

fn family_of(a: SocketAddr) -> Family {
    if a.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

pub fn timer(mono_ns: u64, timer: u64, action: TimerAction) -> Event {
    Event::Timewait(TimewaitTimer {
        mono_ns,
        timer,
        // The kernel's cookies are a counter; any value unique per socket will do here.
        cookie: timer >> 4,
        action,
    })
}

fn is_linger(i: u64) -> bool {
    i % LINGER_EVERY == LINGER_EVERY - 1
}

/// How long connection `i` stays open: spread so that closes do not come in opening order.
fn open_ns(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    OPEN_MIN_NS + (x % OPEN_SPREAD_MS) * MS
}

/// Offset from the connection's start of each of its events, in stream order (never
/// decreasing, so that sorting by time keeps each connection's order).
fn offsets(i: u64) -> Vec<u64> {
    let open = open_ns(i);
    let mut v = vec![0, 40 * US, 50 * US, 51 * US];
    if is_linger(i) {
        v.extend([open, open + 10 * US, open + 10 * US, open + 15 * US]);
    } else {
        let fin = open + 220 * US;
        v.extend([
            open,
            open + 20 * US,
            open + 25 * US,
            open + 200 * US,
            fin,
            fin,
            open + 240 * US,
            fin + TIMEWAIT_NS,
            fin + TIMEWAIT_NS,
        ]);
    }
    v
}

/// Event `step` of connection `i`, at `mono_ns`.
fn event(i: u64, step: u8, at: u64) -> Event {
    let (client, server) = ends(Family::Ipv4, i);
    let (csk, ssk, tw_timer) = socks(i);
    let (ct, st) = (client_task(), server_task());
    let unbound = SocketAddr::new(client.ip(), 0);
    let tw = TimewaitSocket {
        substate: TimeWait,
        family: family_of(client),
        local: client,
        remote: server,
        netns: Some(NETNS),
    };
    let reset = |direction, sock, state, reason: Option<u32>, local, remote| {
        Event::Reset(Reset {
            mono_ns: at,
            direction,
            sock: Some(sock),
            state,
            reason: reason.map(ResetReason),
            family: family_of(local),
            local,
            remote,
            netns: Some(NETNS),
        })
    };
    match (is_linger(i), step) {
        // connect(), SYN / SYN-ACK / ACK; the child has no `struct socket` until accept().
        (_, 0) => transition(at, csk, Close, SynSent, unbound, server, ct, st, true),
        (_, 1) => transition(at, csk, SynSent, Established, client, server, ct, st, true),
        (_, 2) => transition(at, ssk, Listen, SynRecv, server, client, st, ct, false),
        (_, 3) => transition(at, ssk, SynRecv, Established, server, client, st, ct, false),
        // The client's close(), the server's close() on EOF, TIME_WAIT for 60 s.
        (false, 4) => transition(at, csk, Established, FinWait1, client, server, ct, st, true),
        (false, 5) => transition(
            at,
            ssk,
            Established,
            CloseWait,
            server,
            client,
            st,
            ct,
            true,
        ),
        (false, 6) => transition(at, csk, FinWait1, FinWait2, client, server, ct, st, true),
        (false, 7) => transition(at, ssk, CloseWait, LastAck, server, client, st, ct, true),
        (false, 8) => timer(
            at,
            tw_timer,
            TimerAction::Start {
                socket: tw,
                timeout_ns: Some(TIMEWAIT_NS),
            },
        ),
        (false, 9) => transition(at, csk, FinWait2, Close, client, server, ct, st, false),
        (false, 10) => transition(at, ssk, LastAck, Close, server, client, st, ct, false),
        (false, 11) => timer(at, tw_timer, TimerAction::Cancel),
        (false, 12) => timer(
            at,
            tw_timer,
            TimerAction::Expire {
                substate: Some(tw.substate),
            },
        ),
        // SO_LINGER {on, 0}: CLOSE at once, and an RST the peer receives before the sender's
        // tracepoint fires.
        (true, 4) => transition(at, csk, Established, Close, client, server, ct, st, true),
        (true, 5) => reset(ResetDirection::Received, ssk, None, None, server, client),
        (true, 6) => transition(at, ssk, Established, Close, server, client, st, ct, true),
        (true, 7) => reset(
            ResetDirection::Sent,
            csk,
            Some(Close),
            Some(REASON_TCP_STATE),
            client,
            server,
        ),
        _ => unreachable!("connection {i} has no step {step}"),
    }
}

/// The whole stream, a connection starting every `start_every_ns`, ordered by time (ties: by
/// connection, then by step).
pub fn build_stream(connections: u64, start_every_ns: u64) -> Vec<Event> {
    let mut keys: Vec<u128> = Vec::with_capacity(usize::try_from(connections * 13).expect("fits"));
    for i in 0..connections {
        let start = T0 + i * start_every_ns;
        for (step, offset) in offsets(i).into_iter().enumerate() {
            let step = u128::try_from(step).expect("13 steps at most");
            keys.push((u128::from(start + offset) << 64) | (u128::from(i) << 8) | step);
        }
    }
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| {
            let (ns, i, step) = unpack(k);
            event(i, step, ns)
        })
        .collect()
}

/// (time, connection, step) of a sort key.
#[expect(
    clippy::cast_possible_truncation,
    reason = "unpacking the fields packed by build_stream"
)]
fn unpack(key: u128) -> (u64, u64, u8) {
    let low = key as u64;
    ((key >> 64) as u64, low >> 8, (low & 0xff) as u8)
}

/// What the stream holds, counted from its recipe: what the tracker must have seen.
pub struct Expected {
    pub connections: u64,
    pub close_first: u64,
    pub linger: u64,
}

impl Expected {
    pub fn of(connections: u64) -> Self {
        let linger = (0..connections).filter(|i| is_linger(*i)).count();
        let linger = u64::try_from(linger).expect("fits");
        Self {
            connections,
            close_first: connections - linger,
            linger,
        }
    }

    pub fn events(&self) -> u64 {
        13 * self.close_first + 8 * self.linger
    }

    /// Reports the tracker makes of the stream; `plain`: plain transitions too, as while a
    /// client reads every transition.
    pub fn reports(&self, plain: bool) -> u64 {
        if plain {
            REPORTS_CLOSE_FIRST * self.close_first + REPORTS_LINGER * self.linger
        } else {
            NOTABLE_CLOSE_FIRST * self.close_first + NOTABLE_LINGER * self.linger
        }
    }
}
