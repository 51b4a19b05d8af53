//! How fast the connection tracker digests a recorded-like event stream, and how much memory it
//! holds per tracked socket. Pure userspace on one thread: no eBPF, no root.
//!
//! The stream is what Linux 6.18 emits for loopback connections where the client closes first
//! (13 events each), with one connection in ten closed by `SO_LINGER {on, 0}` instead (8 events,
//! 2 of them RSTs). A connection starts every millisecond and stays open for about a second, so
//! (after the first minute of replayed time) about 1000 are open and 54 000 in TIME_WAIT at a
//! time, as on a busy server. Every run checks the tracker's counters against the stream, so a
//! broken run cannot pass for a fast one.
//!
//! The stream is fed twice: as decoded events (track only), and as the ring-buffer records the
//! eBPF programs write on Linux 6.18 x86_64, through `Decoder::decode` (decode+track, what the
//! daemon does per event). Records are written a batch at a time outside the timed part, as the
//! kernel fills the ring buffer; every record is checked to decode back to its event first.
//!
//! Run: `cargo bench -p observer --bench tracker [-- --connections N --sockets N --output FILE]`.

#![expect(clippy::cast_precision_loss, reason = "figures for display")]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use observer::{
    decode::{
        Decoder, ResetLayout, StateLayout, TimerLayout,
        timewait::{CommonOffsets, TimewaitOffsets},
    },
    event::{
        Event, Family, PerState, Reset, ResetDirection, ResetReason, Task, TimerAction,
        TimewaitSocket, TimewaitTimer, Transition,
    },
    kernel::tracefs::{Field, Format},
    track::{DEFAULT_MAX_SOCKETS, GRACE_NS, Report, Tracker, resets::ResetClass},
};
use observer_common::{
    RecordHeader, RecordKind, SpanProbeConfig, SpanRecord,
    TcpState::{
        self, Close, CloseWait, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv, SynSent,
        TimeWait,
    },
    TimerEndRecord, TimerRecord,
    record::{FLAG_NO_SK_SOCKET, FLAG_SK_SOCKET_READ, TimerEvent},
};

#[derive(Parser)]
#[command(about = "connection tracker throughput and memory per tracked socket")]
struct Options {
    /// Connections in the replayed event stream.
    #[arg(
        long,
        default_value_t = 200_000,
        value_parser = clap::value_parser!(u64).range(1..=4_000_000)
    )]
    connections: u64,
    /// Open sockets tracked at once for the memory figures.
    #[arg(
        long,
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u64).range(1..=16_000_000)
    )]
    sockets: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Internal: measure one memory run in this (fresh) process, print it as JSON.
    #[arg(long, hide = true, value_parser = ["ipv4", "ipv6", "timewait-ipv4", "timewait-ipv6"])]
    memory_run: Option<String>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
/// Where the replayed clock starts (`CLOCK_MONOTONIC` is never near 0 on a running host).
const T0: u64 = 10_000 * MS;
const START_EVERY_NS: u64 = MS;
/// Connections stay open 0.5 s to 1.5 s (1 s on average): about 1000 open at a time.
const OPEN_MIN_NS: u64 = 500 * MS;
const OPEN_SPREAD_MS: u64 = 1_000;
/// Linux's fixed TIME_WAIT length.
const TIMEWAIT_NS: u64 = 60_000 * MS;
/// Every this many connections, one is closed with `SO_LINGER {on, 0}`.
const LINGER_EVERY: u64 = 10;
/// Events applied between two `advance` calls, as one ring-buffer drain of the daemon.
const BATCH: usize = 1024;
/// Events generated at a time while filling the memory runs' trackers.
const CHUNK: usize = 4096;
const RUNS: usize = 3;

const NETNS: u32 = 4_026_531_840;
const SOCK_BASE: u64 = 0xffff_8880_0000_0000;
/// Timewait sockets live in their own slab: keep their timer addresses apart from full sockets.
const TIMER_BASE: u64 = 0xffff_88c0_0000_0060;
const SERVER_PORT: u16 = 8080;
/// Linux's default ephemeral port range (32768-60999); the server address rotates after it.
const EPHEMERAL_FIRST: u64 = 32_768;
const EPHEMERAL_PORTS: u64 = 28_232;
/// `SK_RST_REASON_TCP_STATE`: what `tcp_disconnect` sends on a `SO_LINGER {on, 0}` close.
const REASON_TCP_STATE: u32 = 14;

/// Reports per connection: every transition (FIN_WAIT2 -> CLOSE shows as the TIME_WAIT entry;
/// the timer start, linked to it, and the cancel show nothing) plus the TIME_WAIT end.
const REPORTS_CLOSE_FIRST: u64 = 11;
/// Every event of an abortive close is shown.
const REPORTS_LINGER: u64 = 8;

fn client_task() -> Task {
    Task::named(4100, "client")
}

fn server_task() -> Task {
    Task::named(4200, "server")
}

/// (client, server) ends of connection `i`: distinct 4-tuples for any count the options allow.
fn ends(family: Family, i: u64) -> (SocketAddr, SocketAddr) {
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
/// in softirq, which on loopback is the peer's syscall that sent the segment.
#[expect(clippy::too_many_arguments, reason = "one per field of the record")]
fn transition(
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
        mono_ns,
        sock,
        old,
        new,
        family: family_of(local),
        local,
        remote,
        netns: Some(NETNS),
        task: if owner_context { own } else { peer },
        owner_context,
        has_socket: Some(has_socket),
    })
}

fn family_of(a: SocketAddr) -> Family {
    if a.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

fn timer(mono_ns: u64, timer: u64, action: TimerAction) -> Event {
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
    let reset = |direction, sock, state, reason: Option<u32>, local, remote, task| {
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
            task,
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
        (true, 5) => reset(
            ResetDirection::Received,
            ssk,
            None,
            None,
            server,
            client,
            ct,
        ),
        (true, 6) => transition(at, ssk, Established, Close, server, client, st, ct, true),
        (true, 7) => reset(
            ResetDirection::Sent,
            csk,
            Some(Close),
            Some(REASON_TCP_STATE),
            client,
            server,
            ct,
        ),
        _ => unreachable!("connection {i} has no step {step}"),
    }
}

/// The whole stream, ordered by time (ties: by connection, then by step).
fn build_stream(connections: u64) -> Vec<Event> {
    let mut keys: Vec<u128> = Vec::with_capacity(usize::try_from(connections * 13).expect("fits"));
    for i in 0..connections {
        let start = T0 + i * START_EVERY_NS;
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

// ----- ring-buffer records -----

/// Linux 6.18 x86_64 tracepoint formats as tracefs lists them (the fields this daemon reads).
const INET_SOCK_SET_STATE: &str = "format:
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";
const TCP_SEND_RESET: &str = "format:
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;
";
const TCP_RECEIVE_RESET: &str = "format:
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;
";
/// `struct sock_common` on Linux 6.18 x86_64, from BTF.
const COMMON: CommonOffsets = CommonOffsets {
    daddr: 0,
    rcv_saddr: 4,
    dport: 12,
    num: 14,
    family: 16,
    v6_daddr: 56,
    v6_rcv_saddr: 72,
    net: 48,
};
const HZ: u64 = 250;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

/// The fields `put_split` writes, in its order.
const SPLIT: [&str; 7] = [
    "sport", "dport", "family", "saddr", "daddr", "saddr_v6", "daddr_v6",
];

/// A tracepoint's fields the encoder writes, looked up once, and the span the eBPF side copies.
struct Tracepoint<const N: usize> {
    fields: [Field; N],
    span: SpanProbeConfig,
}

impl<const N: usize> Tracepoint<N> {
    fn new(format: &Format, names: [&str; N], span: SpanProbeConfig) -> Self {
        Self {
            fields: names.map(|n| format.field(n).expect("a field of the format")),
            span,
        }
    }

    /// `raw` is the whole tracepoint record; the record gets its configured span.
    fn copy_span(&self, raw: &[u8; 128], rec: &mut SpanRecord) {
        let (start, len) = (self.span.span_start as usize, self.span.span_len as usize);
        rec.raw[..len].copy_from_slice(&raw[start..start + len]);
        rec.raw_len = u16::try_from(len).expect("spans are at most 96 bytes");
    }
}

fn put(raw: &mut [u8], f: Field, value: &[u8]) {
    assert!(value.len() <= f.size, "a field of {} bytes", f.size);
    raw[f.offset..f.offset + value.len()].copy_from_slice(value);
}

/// Ports, family and addresses in separate fields ([`SPLIT`]); IPv4 addresses also v4-mapped
/// in the v6 fields, as the kernel fills them.
fn put_split(raw: &mut [u8], fields: [Field; 7], local: SocketAddr, remote: SocketAddr) {
    let [sport, dport, family, saddr, daddr, saddr_v6, daddr_v6] = fields;
    put(raw, sport, &local.port().to_ne_bytes());
    put(raw, dport, &remote.port().to_ne_bytes());
    put(raw, family, &af(local).to_ne_bytes());
    for (addr, v4, v6) in [(local, saddr, saddr_v6), (remote, daddr, daddr_v6)] {
        match addr.ip() {
            IpAddr::V4(ip) => {
                put(raw, v4, &ip.octets());
                put(raw, v6, &ip.to_ipv6_mapped().octets());
            }
            IpAddr::V6(ip) => put(raw, v6, &ip.octets()),
        }
    }
}

fn af(a: SocketAddr) -> u16 {
    if a.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// A `struct sockaddr_in`/`sockaddr_in6` as `tcp_send_reset` stores it.
fn sockaddr_bytes(a: SocketAddr) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[0..2].copy_from_slice(&af(a).to_ne_bytes());
    b[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => b[4..8].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => b[8..24].copy_from_slice(&ip.octets()),
    }
    b
}

fn comm_bytes(task: &Task) -> [u8; 16] {
    let mut comm = [0u8; 16];
    let name = task.comm();
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    comm
}

fn kernel_state(s: TcpState) -> i32 {
    i32::from(s as u8)
}

fn span_record(kind: RecordKind, mono_ns: u64, task: &Task, netns: Option<u32>) -> SpanRecord {
    // SAFETY: SpanRecord is plain old data: all zeroes is a valid value.
    let mut rec: SpanRecord = unsafe { std::mem::zeroed() };
    rec.header = RecordHeader::new(kind, size_of::<SpanRecord>());
    rec.ts_ns = mono_ns;
    rec.pid_tgid = (u64::from(task.pid) << 32) | u64::from(task.tid);
    rec.netns = netns.unwrap_or(0);
    rec.comm = comm_bytes(task);
    rec
}

/// The bytes of a record, as the ring buffer hands them out.
fn push_record<T: Copy>(rec: &T, out: &mut Vec<u8>) {
    // SAFETY: only called with the padding-free plain-old-data record types.
    let bytes =
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(rec).cast::<u8>(), size_of::<T>()) };
    out.extend_from_slice(bytes);
}

/// Writes events as the eBPF programs do (the configured span of each tracepoint record, or a
/// timewait socket's `struct sock_common`), and holds the decoder the daemon would build.
struct Codec {
    decoder: Decoder,
    /// skaddr, oldstate, newstate, protocol, then [`SPLIT`].
    state: Tracepoint<11>,
    /// skbaddr, skaddr, state, reason, saddr, daddr.
    send_reset: Tracepoint<6>,
    /// skaddr, then [`SPLIT`].
    receive_reset: Tracepoint<8>,
}

impl Codec {
    fn new() -> Self {
        let format = |text| Format::parse("bench".into(), text);
        let state = format(INET_SOCK_SET_STATE);
        let send = format(TCP_SEND_RESET);
        let receive = format(TCP_RECEIVE_RESET);
        let (state_layout, state_span) = StateLayout::from_format(&state).expect("state layout");
        let (send_layout, send_span) =
            ResetLayout::from_format(&send, ResetDirection::Sent).expect("send layout");
        let (receive_layout, receive_span) =
            ResetLayout::from_format(&receive, ResetDirection::Received).expect("receive layout");
        let tw = TimewaitOffsets {
            timer: 96,
            substate: 20,
            timer_function: 24,
            timer_expires: 16,
            net_inum: 160,
            cookie: Some(88),
        };
        let hz = u32::try_from(HZ).expect("fits");
        let (timer_layout, _) =
            TimerLayout::new(COMMON, tw, 0xffff_ffff_81ab_cdef, Some(hz)).expect("timer layout");
        let [sport, dport, family, saddr, daddr, saddr_v6, daddr_v6] = SPLIT;
        Self {
            decoder: Decoder {
                state: state_layout,
                send_reset: Some(send_layout),
                receive_reset: Some(receive_layout),
                timer: Some(timer_layout),
                retransmit: None,
                retransmit_synack: None,
                sock_error: None,
            },
            state: Tracepoint::new(
                &state,
                [
                    "skaddr", "oldstate", "newstate", "protocol", sport, dport, family, saddr,
                    daddr, saddr_v6, daddr_v6,
                ],
                state_span,
            ),
            send_reset: Tracepoint::new(
                &send,
                ["skbaddr", "skaddr", "state", "reason", "saddr", "daddr"],
                send_span,
            ),
            receive_reset: Tracepoint::new(
                &receive,
                [
                    "skaddr", sport, dport, family, saddr, daddr, saddr_v6, daddr_v6,
                ],
                receive_span,
            ),
        }
    }

    /// Appends the record the eBPF side writes for `event`.
    fn encode(&self, event: &Event, out: &mut Vec<u8>) {
        match event {
            Event::Transition(t) => self.encode_transition(t, out),
            Event::Reset(r) => self.encode_reset(r, out),
            Event::Timewait(t) => encode_timer(t, out),
            other => unimplemented!("the stream has no {other:?}"),
        }
    }

    fn encode_transition(&self, t: &Transition, out: &mut Vec<u8>) {
        let mut raw = [0u8; 128];
        let [skaddr, old, new, protocol, split @ ..] = self.state.fields;
        put(&mut raw, skaddr, &t.sock.to_ne_bytes());
        put(&mut raw, old, &kernel_state(t.old).to_ne_bytes());
        put(&mut raw, new, &kernel_state(t.new).to_ne_bytes());
        put(&mut raw, protocol, &IPPROTO_TCP.to_ne_bytes());
        put_split(&mut raw, split, t.local, t.remote);
        let mut rec = span_record(RecordKind::StateChange, t.mono_ns, &t.task, t.netns);
        rec.flags = match t.has_socket {
            None => 0,
            Some(true) => FLAG_SK_SOCKET_READ,
            Some(false) => FLAG_SK_SOCKET_READ | FLAG_NO_SK_SOCKET,
        };
        self.state.copy_span(&raw, &mut rec);
        push_record(&rec, out);
    }

    fn encode_reset(&self, r: &Reset, out: &mut Vec<u8>) {
        let mut raw = [0u8; 128];
        let sock = r.sock.unwrap_or(0).to_ne_bytes();
        let rec = match r.direction {
            ResetDirection::Sent => {
                let [skb, sk, state, reason, saddr, daddr] = self.send_reset.fields;
                put(&mut raw, skb, &0xffff_8881_0000_0000u64.to_ne_bytes());
                put(&mut raw, sk, &sock);
                put(
                    &mut raw,
                    state,
                    &r.state.map_or(0, kernel_state).to_ne_bytes(),
                );
                put(&mut raw, reason, &r.reason.map_or(0, |x| x.0).to_ne_bytes());
                put(&mut raw, saddr, &sockaddr_bytes(r.local));
                put(&mut raw, daddr, &sockaddr_bytes(r.remote));
                let mut rec = span_record(RecordKind::SendReset, r.mono_ns, &r.task, r.netns);
                self.send_reset.copy_span(&raw, &mut rec);
                rec
            }
            ResetDirection::Received => {
                let [skaddr, split @ ..] = self.receive_reset.fields;
                put(&mut raw, skaddr, &sock);
                put_split(&mut raw, split, r.local, r.remote);
                let mut rec = span_record(RecordKind::ReceiveReset, r.mono_ns, &r.task, r.netns);
                self.receive_reset.copy_span(&raw, &mut rec);
                rec
            }
        };
        push_record(&rec, out);
    }
}

fn encode_timer(t: &TimewaitTimer, out: &mut Vec<u8>) {
    let (socket, timeout_ns) = match t.action {
        TimerAction::Start { socket, timeout_ns } => (socket, timeout_ns),
        TimerAction::Cancel | TimerAction::Expire { .. } => {
            let (event, substate) = match t.action {
                TimerAction::Expire { substate } => {
                    (TimerEvent::Expire, substate.map_or(0, |s| s as u8))
                }
                _ => (TimerEvent::Cancel, 0),
            };
            let rec = TimerEndRecord {
                header: RecordHeader::new(RecordKind::TimewaitEnd, size_of::<TimerEndRecord>()),
                ts_ns: t.mono_ns,
                timer: t.timer,
                cookie: t.cookie,
                event: event as u8,
                substate,
                pad: [0; 6],
            };
            push_record(&rec, out);
            return;
        }
    };
    // SAFETY: TimerRecord is plain old data: all zeroes is a valid value.
    let mut rec: TimerRecord = unsafe { std::mem::zeroed() };
    rec.header = RecordHeader::new(RecordKind::TimewaitTimer, size_of::<TimerRecord>());
    rec.ts_ns = t.mono_ns;
    rec.timer = t.timer;
    rec.now = t.mono_ns / (1_000_000_000 / HZ);
    rec.event = TimerEvent::Start as u8;
    rec.expires = rec.now + timeout_ns.expect("the stream knows HZ") * HZ / 1_000_000_000;
    rec.netns = socket.netns.unwrap_or(0);
    rec.substate = socket.substate as u8;
    let c = &mut rec.common;
    let at = |o: u32| o as usize;
    c[at(COMMON.dport)..at(COMMON.dport) + 2].copy_from_slice(&socket.remote.port().to_be_bytes());
    c[at(COMMON.num)..at(COMMON.num) + 2].copy_from_slice(&socket.local.port().to_ne_bytes());
    c[at(COMMON.family)..at(COMMON.family) + 2].copy_from_slice(&af(socket.local).to_ne_bytes());
    for (addr, v4, v6) in [
        (socket.local, COMMON.rcv_saddr, COMMON.v6_rcv_saddr),
        (socket.remote, COMMON.daddr, COMMON.v6_daddr),
    ] {
        match addr.ip() {
            IpAddr::V4(ip) => c[at(v4)..at(v4) + 4].copy_from_slice(&ip.octets()),
            IpAddr::V6(ip) => c[at(v6)..at(v6) + 16].copy_from_slice(&ip.octets()),
        }
    }
    c[88..96].copy_from_slice(&t.cookie.to_ne_bytes());
    rec.common_len = 96;
    push_record(&rec, out);
}

/// One batch of records, back to back as a ring-buffer drain reads them.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    fn fill(&mut self, codec: &Codec, events: &[Event]) {
        self.bytes.clear();
        self.ends.clear();
        for e in events {
            codec.encode(e, &mut self.bytes);
            self.ends.push(self.bytes.len());
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.bytes[s..e])
    }
}

/// Panics unless every event of the stream decodes back from its record unchanged.
fn check_records(codec: &Codec, stream: &[Event]) {
    let mut records = Records::default();
    for batch in stream.chunks(BATCH) {
        records.fill(codec, batch);
        for (record, event) in records.iter().zip(batch) {
            assert_eq!(codec.decoder.decode(record).as_ref(), Ok(event));
        }
    }
}

struct Expected {
    connections: u64,
    close_first: u64,
    linger: u64,
}

impl Expected {
    fn of(connections: u64) -> Self {
        let linger = (0..connections).filter(|i| is_linger(*i)).count();
        let linger = u64::try_from(linger).expect("fits");
        Self {
            connections,
            close_first: connections - linger,
            linger,
        }
    }

    fn events(&self) -> u64 {
        13 * self.close_first + 8 * self.linger
    }

    fn reports(&self) -> u64 {
        REPORTS_CLOSE_FIRST * self.close_first + REPORTS_LINGER * self.linger
    }
}

struct StreamRun {
    elapsed: Duration,
    reports: u64,
    peak_sockets: usize,
    peak_timewait: usize,
}

/// Feeds the stream to a fresh tracker the way the daemon does: a batch, then `advance`. With
/// a codec, each batch is first written as records (not timed) and decoded in the timed part.
fn run_stream(stream: &[Event], codec: Option<&Codec>, expected: &Expected) -> StreamRun {
    let mut tracker = Tracker::new(DEFAULT_MAX_SOCKETS);
    let mut out: Vec<Report> = Vec::with_capacity(2 * BATCH);
    let mut records = Records::default();
    let mut reports = 0;
    let (mut peak_sockets, mut peak_timewait) = (0, 0);
    let mut elapsed = Duration::ZERO;
    for batch in stream.chunks(BATCH) {
        if let Some(codec) = codec {
            records.fill(codec, batch);
        }
        let start = Instant::now();
        match codec {
            None => {
                for e in batch {
                    tracker.apply(e, &mut out);
                }
            }
            Some(codec) => {
                for record in records.iter() {
                    let e = codec.decoder.decode(record).expect("checked records");
                    tracker.apply(&e, &mut out);
                }
            }
        }
        tracker.advance(batch.last().map_or(0, Event::mono_ns), &mut out);
        elapsed += start.elapsed();
        reports += out.len() as u64;
        out.clear();
        let stats = tracker.stats();
        peak_sockets = peak_sockets.max(stats.tracked_sockets);
        peak_timewait = peak_timewait.max(stats.tracked_timewait);
    }

    // Long after the last event: every grace period is over.
    let end = stream.last().map_or(0, Event::mono_ns) + 10 * GRACE_NS;
    tracker.advance(end, &mut out);
    reports += out.len() as u64;
    check(&tracker, expected, reports);
    StreamRun {
        elapsed,
        reports,
        peak_sockets,
        peak_timewait,
    }
}

/// Panics unless the tracker saw exactly what the stream holds.
fn check(tracker: &Tracker, expected: &Expected, reports: u64) {
    let stats = tracker.stats();
    let (gaps, missing) = (stats.gaps, stats.timewait_missing);
    assert_eq!(
        gaps, 0,
        "transitions missed in a complete stream: {stats:?}"
    );
    assert_eq!(missing, 0, "TIME_WAIT entries not linked: {stats:?}");
    assert_eq!(
        (
            stats.evicted,
            stats.timewait_untracked,
            stats.timewait_unlinked
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.timewait_end_lost, stats.timewait_restarted),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.tracked_sockets, stats.tracked_timewait),
        (0, 0),
        "every connection ended: {stats:?}"
    );
    let tw = tracker.timewait_counts();
    assert_eq!(
        (tw.started, tw.expired, tw.killed, tw.unseen),
        (expected.close_first, expected.close_first, 0, 0),
        "(started, expired, killed, unseen)"
    );
    assert_eq!(tracker.durations().of(TimeWait).count, expected.close_first);
    assert_eq!(tracker.counts_by_state(), PerState::default());
    assert!(tracker.closed_before_accept().is_empty());
    let resets = tracker.resets();
    assert_eq!(
        (
            resets.get(ResetDirection::Received, ResetClass::PeerAbort),
            resets.get(ResetDirection::Sent, ResetClass::AbortiveClose),
        ),
        (expected.linger, expected.linger),
        "RSTs of the SO_LINGER closes"
    );
    assert_eq!(reports, expected.reports(), "reports");
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MemoryRun {
    heap_bytes_per_socket: f64,
    rss_bytes_per_socket: f64,
    insert_events_per_s: f64,
}

/// Connection `i`'s connect() and its completion: a socket that stays ESTABLISHED.
fn open_socket(family: Family, i: u64, out: &mut Vec<Event>) {
    let (client, server) = ends(family, i);
    let c = SOCK_BASE + i * 0x1000;
    let (ct, st) = (client_task(), server_task());
    let ns = T0 + i * US;
    let unbound = SocketAddr::new(client.ip(), 0);
    out.push(transition(
        ns, c, Close, SynSent, unbound, server, ct, st, true,
    ));
    out.push(transition(
        ns + 40 * US,
        c,
        SynSent,
        Established,
        client,
        server,
        ct,
        st,
        true,
    ));
}

/// What a memory run tracks: live sockets, or timewait sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Sockets(Family),
    Timewait(Family),
}

impl Held {
    const ALL: [Self; 4] = [
        Self::Sockets(Family::Ipv4),
        Self::Sockets(Family::Ipv6),
        Self::Timewait(Family::Ipv4),
        Self::Timewait(Family::Ipv6),
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Sockets(Family::Ipv4) => "ipv4",
            Self::Sockets(Family::Ipv6) => "ipv6",
            Self::Timewait(Family::Ipv4) => "timewait-ipv4",
            Self::Timewait(Family::Ipv6) => "timewait-ipv6",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The events that leave socket `i` held.
    fn open(self, i: u64, out: &mut Vec<Event>) {
        match self {
            Self::Sockets(family) => open_socket(family, i, out),
            Self::Timewait(family) => open_timewait(family, i, out),
        }
    }
}

/// Connection `i`'s timewait socket: its timer starts, and its full socket closes from
/// FIN_WAIT2 right after, as the kernel does it.
fn open_timewait(family: Family, i: u64, out: &mut Vec<Event>) {
    let (client, server) = ends(family, i);
    let at = T0 + i * US;
    out.push(timer(
        at,
        TIMER_BASE + i * 0x1000,
        TimerAction::Start {
            socket: TimewaitSocket {
                substate: TimeWait,
                family,
                local: client,
                remote: server,
                netns: Some(NETNS),
            },
            timeout_ns: Some(TIMEWAIT_NS),
        },
    ));
    out.push(transition(
        at,
        SOCK_BASE + i * 0x1000,
        FinWait2,
        Close,
        client,
        server,
        client_task(),
        server_task(),
        false,
    ));
}

/// Holds `sockets` sockets in a fresh tracker, generating their events a chunk at a time so
/// that no event vector inflates the resident set.
fn memory_run(held: Held, sockets: u64) -> MemoryRun {
    let per_chunk = u64::try_from(CHUNK / 2).expect("fits");
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut out: Vec<Report> = Vec::with_capacity(CHUNK + BATCH);
    // Touch the buffers before the baseline: they are not the tracker's.
    for i in 0..per_chunk.min(sockets) {
        held.open(i, &mut chunk);
    }
    chunk.clear();
    let before = rss_bytes();
    let mut tracker = Tracker::new(usize::try_from(sockets).expect("fits"));
    let mut busy = Duration::ZERO;
    for first in (0..sockets).step_by(CHUNK / 2) {
        chunk.clear();
        for i in first..(first + per_chunk).min(sockets) {
            held.open(i, &mut chunk);
        }
        let start = Instant::now();
        for e in &chunk {
            tracker.apply(e, &mut out);
        }
        tracker.advance(chunk.last().map_or(0, Event::mono_ns), &mut out);
        busy += start.elapsed();
        out.clear();
    }
    let after = rss_bytes();
    let stats = tracker.stats();
    let (held_state, held_now) = match held {
        Held::Sockets(_) => (Established, stats.tracked_sockets),
        Held::Timewait(_) => (TimeWait, stats.tracked_timewait),
    };
    assert_eq!(
        (
            held_now as u64,
            stats.evicted,
            stats.gaps,
            stats.timewait_unlinked
        ),
        (sockets, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(tracker.counts_by_state()[held_state], sockets);
    let n = sockets as f64;
    MemoryRun {
        heap_bytes_per_socket: tracker.heap_bytes() as f64 / n,
        rss_bytes_per_socket: (after as f64 - before as f64) / n,
        insert_events_per_s: 2.0 * n / busy.as_secs_f64(),
    }
}

/// Resident bytes of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).expect("a positive page size")
}

/// One memory run in a child process. Each starts with a fresh allocator: in one process, a
/// second run's RSS would also hold table sizes the first one freed and malloc kept.
fn memory_run_apart(held: Held, sockets: u64) -> anyhow::Result<MemoryRun> {
    let exe = std::env::current_exe().context("finding this benchmark's executable")?;
    let child = std::process::Command::new(exe)
        .args([
            "--memory-run",
            held.name(),
            "--sockets",
            &sockets.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a memory run")?;
    anyhow::ensure!(
        child.status.success(),
        "the {} memory run failed",
        held.name()
    );
    serde_json::from_slice(&child.stdout).context("reading a memory run's figures")
}

/// Figures of several runs of one kind.
struct MemoryFigures {
    held: Held,
    runs: Vec<MemoryRun>,
}

impl MemoryFigures {
    fn median(&self, f: impl Fn(&MemoryRun) -> f64) -> f64 {
        let mut v: Vec<f64> = self.runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn best_insert(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| r.insert_events_per_s)
            .fold(0.0, f64::max)
    }
}

/// `1234567` -> `1_234_567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() * 4 / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push('_');
        }
        s.push(d);
    }
    s
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "positive figures far below 2^64, rounded for display"
)]
fn whole(x: f64) -> u64 {
    x.round() as u64
}

/// The stream's runs, each way of feeding it fastest first.
struct StreamFigures {
    expected: Expected,
    /// Decoded events applied.
    track: Vec<StreamRun>,
    /// Records decoded, then applied.
    decode_track: Vec<StreamRun>,
}

fn best(runs: &[StreamRun]) -> &StreamRun {
    &runs[0]
}

fn median(runs: &[StreamRun]) -> &StreamRun {
    &runs[runs.len() / 2]
}

impl StreamFigures {
    fn rate(&self, r: &StreamRun) -> f64 {
        self.expected.events() as f64 / r.elapsed.as_secs_f64()
    }

    fn ns_per_event(&self, r: &StreamRun) -> f64 {
        r.elapsed.as_secs_f64() * 1e9 / self.expected.events() as f64
    }

    /// Figures of one way of feeding the stream, as JSON.
    fn json(&self, runs: &[StreamRun]) -> serde_json::Value {
        serde_json::json!({
            "runs_seconds": runs.iter().map(|r| r.elapsed.as_secs_f64()).collect::<Vec<_>>(),
            "best_events_per_s": self.rate(best(runs)),
            "median_events_per_s": self.rate(median(runs)),
            "best_ns_per_event": self.ns_per_event(best(runs)),
            "median_ns_per_event": self.ns_per_event(median(runs)),
        })
    }
}

fn print_table(stream: &StreamFigures, sockets: u64, memory: &[MemoryFigures]) {
    let (expected, first) = (&stream.expected, best(&stream.track));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("tracker benchmark (single thread; {build} build)");
    println!(
        "stream: {} connections ({} closed with SO_LINGER 0), {} events, {} reports",
        grouped(expected.connections),
        grouped(expected.linger),
        grouped(expected.events()),
        grouped(first.reports),
    );
    println!(
        "  up to {} sockets and {} timewait sockets tracked (seen between batches); \
         {RUNS} runs each, batches of {BATCH}",
        grouped(first.peak_sockets as u64),
        grouped(first.peak_timewait as u64),
    );
    println!(
        "  {:<13} {:<8} {:>12} {:>9}",
        "input", "run", "events/s", "ns/event"
    );
    for (input, runs) in [
        ("track only", &stream.track),
        ("decode+track", &stream.decode_track),
    ] {
        for (name, r) in [("best", best(runs)), ("median", median(runs))] {
            println!(
                "  {input:<13} {name:<8} {:>12} {:>9.1}",
                grouped(whole(stream.rate(r))),
                stream.ns_per_event(r)
            );
        }
    }
    println!(
        "memory: {} sockets held (live sockets, or timewait sockets); {RUNS} runs each in a \
         fresh process (medians; insert: best, median)",
        grouped(sockets)
    );
    println!(
        "  {:<13} {:>25} {:>17} {:>16} {:>12}",
        "held", "heap bytes/socket (est.)", "RSS bytes/socket", "insert events/s", "median"
    );
    for m in memory {
        println!(
            "  {:<13} {:>25.1} {:>17.1} {:>16} {:>12}",
            m.held.name(),
            m.median(|r| r.heap_bytes_per_socket),
            m.median(|r| r.rss_bytes_per_socket),
            grouped(whole(m.best_insert())),
            grouped(whole(m.median(|r| r.insert_events_per_s))),
        );
    }
}

/// The track-only figures stay where they were (`stream.best_events_per_s`, ...); the
/// decode+track ones are under `stream.decode_track`.
fn to_json(stream: &StreamFigures, sockets: u64, memory: &[MemoryFigures]) -> serde_json::Value {
    let (expected, first) = (&stream.expected, best(&stream.track));
    let mut figures = serde_json::json!({
        "connections": expected.connections,
        "linger_connections": expected.linger,
        "events": expected.events(),
        "reports": first.reports,
        "peak_tracked_sockets": first.peak_sockets,
        "peak_tracked_timewait": first.peak_timewait,
        "batch": BATCH,
    });
    let track = stream.json(&stream.track);
    for (k, v) in track.as_object().expect("an object") {
        figures[k] = v.clone();
    }
    figures["decode_track"] = stream.json(&stream.decode_track);
    serde_json::json!({
        "stream": figures,
        "memory": {
            "sockets": sockets,
            "families": memory.iter().map(|m| serde_json::json!({
                "family": m.held.name(),
                "heap_bytes_per_socket": m.median(|r| r.heap_bytes_per_socket),
                "rss_bytes_per_socket": m.median(|r| r.rss_bytes_per_socket),
                "best_insert_events_per_s": m.best_insert(),
                "median_insert_events_per_s": m.median(|r| r.insert_events_per_s),
                "runs": m.runs,
            })).collect::<Vec<_>>(),
        },
    })
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    // What the daemon loads from kernel BTF; the SO_LINGER RSTs are classified by it.
    ResetReason::set_names(vec![(REASON_TCP_STATE, "SK_RST_REASON_TCP_STATE".into())]);

    if let Some(name) = &options.memory_run {
        let held = Held::parse(name)
            .context("--memory-run takes ipv4, ipv6, timewait-ipv4 or timewait-ipv6")?;
        let run = memory_run(held, options.sockets);
        println!("{}", serde_json::to_string(&run)?);
        return Ok(());
    }

    let mut memory = Vec::new();
    for held in Held::ALL {
        let runs = (0..RUNS)
            .map(|_| memory_run_apart(held, options.sockets))
            .collect::<anyhow::Result<_>>()?;
        memory.push(MemoryFigures { held, runs });
    }

    let expected = Expected::of(options.connections);
    let events = build_stream(options.connections);
    assert_eq!(events.len() as u64, expected.events());
    assert!(events.windows(2).all(|w| w[0].mono_ns() <= w[1].mono_ns()));
    let codec = Codec::new();
    check_records(&codec, &events);
    // Alternated, so that a change in the machine's load hits both alike.
    let (mut track, mut decode_track) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        track.push(run_stream(&events, None, &expected));
        decode_track.push(run_stream(&events, Some(&codec), &expected));
    }
    drop(events);
    track.sort_by_key(|r| r.elapsed);
    decode_track.sort_by_key(|r| r.elapsed);
    let stream = StreamFigures {
        expected,
        track,
        decode_track,
    };

    print_table(&stream, options.sockets, &memory);
    if let Some(path) = &options.output {
        let text = serde_json::to_string_pretty(&to_json(&stream, options.sockets, &memory))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
