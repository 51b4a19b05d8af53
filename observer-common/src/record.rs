//! Records written by the eBPF programs into the ring buffer.

/// Version of the record layout. Bumped whenever a record changes shape, so that a daemon never
/// misreads records from an object built for another layout.
pub const RECORD_VERSION: u16 = 5;

/// Bytes of the tracepoint record copied verbatim into a [`SpanRecord`].
///
/// The eBPF side copies the span of the tracepoint record that holds the fields we decode; the
/// daemon decodes it with the offsets it read from tracefs, so a kernel that moves fields needs no
/// new eBPF object. 96 bytes leaves room for fields that newer kernels add (`tcp_send_reset` uses
/// 80 today, `inet_sock_set_state` 64).
pub const RAW_CAPACITY: usize = 96;

/// Bytes of its span that the benchmark's `baseline_per_cpu_written` stores: the span the
/// state program copies from `inet_sock_set_state` (from `skaddr` to `daddr_v6`) on the
/// kernels observer is tested on, so that it stores what that program stores.
pub const BASELINE_WRITTEN_SPAN: usize = 64;

/// Where a span copied with plain loads starts: the first byte after a tracepoint record's
/// common fields. The verifier takes a load from a tracepoint's context only at an offset fixed
/// in the instruction, so the programs copy a span that starts here word by word, and take a
/// helper call (which costs more than the copy) for a span that starts anywhere else.
pub const DIRECT_SPAN_START: usize = 8;

/// Bytes of a socket's `struct sock_common` copied into a [`TimerRecord`], a
/// [`SocketErrorRecord`] or a [`SynackRecord`]: addresses, ports and family, decoded in userspace with offsets from BTF.
pub const COMMON_CAPACITY: usize = 96;

/// Record kinds. Discriminants are part of the wire format: never reuse one.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A `sock:inet_sock_set_state` transition of a TCP socket ([`SpanRecord`]).
    StateChange = 1,
    /// A `tcp:tcp_send_reset` ([`SpanRecord`]).
    SendReset = 2,
    /// A `tcp:tcp_receive_reset` ([`SpanRecord`]).
    ReceiveReset = 3,
    /// A timer event on a timewait socket's timer ([`TimerRecord`]).
    TimewaitTimer = 4,
    /// A `tcp:tcp_retransmit_skb` ([`SpanRecord`]).
    Retransmit = 5,
    /// A `tcp:tcp_retransmit_synack` ([`SynackRecord`]).
    RetransmitSynack = 6,
    /// An error reported on a TCP socket (`inet_sk_error_report`, [`SocketErrorRecord`]).
    SocketError = 7,
    /// A timewait socket's timer cancelled or expired ([`TimerEndRecord`]).
    TimewaitEnd = 8,
}

impl RecordKind {
    #[must_use]
    pub const fn from_u16(value: u16) -> Option<Self> {
        match value {
            1 => Some(Self::StateChange),
            2 => Some(Self::SendReset),
            3 => Some(Self::ReceiveReset),
            4 => Some(Self::TimewaitTimer),
            5 => Some(Self::Retransmit),
            6 => Some(Self::RetransmitSynack),
            7 => Some(Self::SocketError),
            8 => Some(Self::TimewaitEnd),
            _ => None,
        }
    }
}

/// Fixed header at offset 0 of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// A [`RecordKind`] discriminant.
    pub kind: u16,
    /// [`RECORD_VERSION`] of the program that wrote the record.
    pub version: u16,
    /// `size_of` the whole record, checked by the decoder.
    pub size: u32,
}

/// [`SpanRecord::flags`]: `sk->sk_socket` was read.
pub const FLAG_SK_SOCKET_READ: u16 = 1;
/// [`SpanRecord::flags`]: `sk->sk_socket` was NULL: no `struct socket` (never accepted, or
/// already orphaned by `close()`).
pub const FLAG_NO_SK_SOCKET: u16 = 2;
/// [`SpanRecord::flags`]: `icsk_retransmits` was read; its value is in bits
/// [`RETRANSMITS_SHIFT`]`..=15`.
pub const FLAG_RETRANSMITS_READ: u16 = 4;
/// Where [`SpanRecord::flags`] keeps `icsk_retransmits` (a `u8`).
pub const RETRANSMITS_SHIFT: u16 = 8;

/// A tracepoint record copied verbatim (a span of it), with the context around it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SpanRecord {
    pub header: RecordHeader,
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC`, nanoseconds.
    pub ts_ns: u64,
    /// `bpf_get_current_pid_tgid()` of the task running when the event happened; state changes
    /// only (0 in the other records, whose task the daemon does not use).
    pub pid_tgid: u64,
    /// Id of the socket's cgroup (v2): the cgroup of the process that created it, which the
    /// socket keeps in `sk_cgrp_data` (and which stays right in softirq, where the current task
    /// is not the owner). 0 when not read: the program reads it only on a socket's birth (see
    /// `SpanProbeConfig::sk_cgroup_offset`).
    pub cgroup: u64,
    /// Inode number of the socket's network namespace; 0 when it could not be read, and on a
    /// state change that is not the socket's birth (out of CLOSE or LISTEN), where the
    /// program does not read it.
    pub netns: u32,
    /// Bytes of `raw` filled from the tracepoint record.
    pub raw_len: u16,
    /// `FLAG_*` bits, and `icsk_retransmits` in the high byte when
    /// [`FLAG_RETRANSMITS_READ`] is set.
    pub flags: u16,
    /// `bpf_get_current_comm()` of that task, for a state change in its owner's context only
    /// (zeroed otherwise: in softirq the task is whichever one was interrupted).
    pub comm: [u8; 16],
    /// The tracepoint record from `SpanProbeConfig::span_start`, `raw_len` bytes.
    pub raw: [u8; RAW_CAPACITY],
}

/// What happened to a timewait socket's timer.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerEvent {
    /// `timer:timer_start`: armed (entering TIME_WAIT, or rescheduled).
    Start = 1,
    /// `timer:timer_cancel`: disarmed (just before expiry, before a reschedule, or killed).
    Cancel = 2,
    /// `timer:timer_expire_entry`: the timer fired; the timewait socket ends now.
    Expire = 3,
}

/// A timewait socket's timer armed (`tw_timer_handler`): the socket's identity and deadline.
/// Its end ([`TimerEndRecord`]) is a quarter of the size: timers expire in bursts (every timer
/// armed within one timer-wheel bucket, about 2 s at a time for TIME_WAIT), and the ring buffer
/// must hold a whole burst, since both CPUs may spend it in the timer softirq with the reader
/// unable to run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TimerRecord {
    pub header: RecordHeader,
    pub ts_ns: u64,
    /// Address of the timer: identifies the timewait socket while it lives.
    pub timer: u64,
    /// Jiffies at which the timer fires.
    pub expires: u64,
    /// Jiffies now.
    pub now: u64,
    /// Network namespace inode of the timewait socket.
    pub netns: u32,
    /// A [`TimerEvent`] discriminant: [`TimerEvent::Start`].
    pub event: u8,
    /// `tw_substate`: `TIME_WAIT`, or `FIN_WAIT2` for an orphaned `FIN_WAIT2` that waits in a
    /// timewait socket.
    pub substate: u8,
    /// Bytes of `common` filled.
    pub common_len: u16,
    /// The timewait socket's `struct sock_common`, from offset 0.
    pub common: [u8; COMMON_CAPACITY],
}

/// A timewait socket's timer cancelled or expired: 40 bytes, so that the ring buffer holds the
/// expiry burst of every timer armed within one timer-wheel bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TimerEndRecord {
    pub header: RecordHeader,
    pub ts_ns: u64,
    /// Address of the timer: identifies the timewait socket while it lives.
    pub timer: u64,
    /// `skc_cookie` of the timewait socket: the cookie sock_diag reports for it (sock_diag makes
    /// one when it lists a socket), so that a timewait socket known only from sock_diag is
    /// still matched at its end; 0 when none was ever made or the offset is unknown.
    pub cookie: u64,
    /// A [`TimerEvent`] discriminant: [`TimerEvent::Cancel`] or [`TimerEvent::Expire`].
    pub event: u8,
    /// `tw_substate` ([`TimerEvent::Expire`] only; 0 otherwise).
    pub substate: u8,
    pub pad: [u8; 6],
}

/// [`SocketErrorRecord::flags`]: `icsk_retransmits` was read.
pub const SOCK_ERR_RETRANSMITS_READ: u8 = 1;
/// [`SocketErrorRecord::flags`]: `icsk_probes_out` was read.
pub const SOCK_ERR_PROBES_OUT_READ: u8 = 2;
/// [`SocketErrorRecord::flags`]: `sk_wmem_queued` was read.
pub const SOCK_ERR_WMEM_READ: u8 = 4;
/// [`SocketErrorRecord::flags`]: `sk_wmem_queued` > 0: data was waiting to be sent or acked.
pub const SOCK_ERR_UNSENT_DATA: u8 = 8;
/// [`SocketErrorRecord::flags`]: `inet_sport` was read into [`SocketErrorRecord::sport`].
pub const SOCK_ERR_SPORT_READ: u8 = 16;

/// An error reported on a TCP socket, read from the socket itself: the raw tracepoint's only
/// argument is the `struct sock *`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketErrorRecord {
    pub header: RecordHeader,
    pub ts_ns: u64,
    /// Address of the `struct sock`.
    pub sock: u64,
    /// Inode number of the socket's network namespace; 0 when it could not be read.
    pub netns: u32,
    /// `sk->sk_err`: a positive errno.
    pub error: i32,
    /// `skc_state`.
    pub state: u8,
    /// `icsk_retransmits` ([`SOCK_ERR_RETRANSMITS_READ`]).
    pub retransmits: u8,
    /// `icsk_probes_out` ([`SOCK_ERR_PROBES_OUT_READ`]).
    pub probes_out: u8,
    /// `SOCK_ERR_*` bits.
    pub flags: u8,
    /// Bytes of `common` filled.
    pub common_len: u16,
    /// `inet_sport`, network byte order ([`SOCK_ERR_SPORT_READ`]). A socket that failed
    /// before being established has already given its port back (`skc_num` is 0), this has not.
    pub sport: u16,
    /// The socket's `struct sock_common`, from offset 0.
    pub common: [u8; COMMON_CAPACITY],
}

/// A SYN-ACK sent again (`tcp_retransmit_synack`, a raw tracepoint), read from the request
/// socket: its `struct sock_common` holds the connection's addresses, ports and namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SynackRecord {
    pub header: RecordHeader,
    pub ts_ns: u64,
    /// Address of the listening socket's `struct sock` (the tracepoint's `skaddr`).
    pub listener: u64,
    /// Inode number of the request's network namespace; 0 when it could not be read.
    pub netns: u32,
    /// Bytes of `common` filled.
    pub common_len: u16,
    pub pad: u16,
    /// The request socket's `struct sock_common`, from offset 0.
    pub common: [u8; COMMON_CAPACITY],
}

const _: () = assert!(size_of::<RecordHeader>() == 8);
const _: () = assert!(size_of::<SynackRecord>() == 32 + COMMON_CAPACITY);
const _: () = assert!(size_of::<SocketErrorRecord>() == 40 + COMMON_CAPACITY);
const _: () = assert!(size_of::<SocketErrorRecord>().is_multiple_of(8));
const _: () = assert!(size_of::<SpanRecord>() == 56 + RAW_CAPACITY);
const _: () = assert!(size_of::<SpanRecord>().is_multiple_of(8));
const _: () = assert!(size_of::<TimerRecord>() == 48 + COMMON_CAPACITY);
const _: () = assert!(size_of::<TimerRecord>().is_multiple_of(8));
const _: () = assert!(size_of::<TimerEndRecord>() == 40);

impl RecordHeader {
    #[must_use]
    pub const fn new(kind: RecordKind, size: usize) -> Self {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "records are a few hundred bytes"
        )]
        Self {
            kind: kind as u16,
            version: RECORD_VERSION,
            size: size as u32,
        }
    }
}

/// Indices into the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full and an event was dropped.
    RingbufFull = 0,
    /// The tracepoint record could not be read (should never happen; counted, not hidden).
    ReadFailed = 1,
}

/// Number of slots in the `COUNTERS` map.
pub const COUNTER_SLOTS: u32 = 2;
