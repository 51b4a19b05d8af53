//! Configuration the daemon hands to the eBPF programs as read-only globals at load time.
//!
//! Filled in by the daemon from tracefs format files, kernel BTF and /proc/kallsyms, never
//! hard-coded: tracepoint layouts and struct offsets change across kernel versions.

/// Marks an offset that could not be resolved.
pub const UNKNOWN: u32 = u32::MAX;

/// How a program that copies a span of its tracepoint record finds what it needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanProbeConfig {
    /// Non-zero once the daemon has filled this in; an unconfigured program emits nothing.
    pub configured: u32,
    /// Offset of the first copied byte of the tracepoint record.
    pub span_start: u32,
    /// Number of bytes copied, at most [`crate::RAW_CAPACITY`].
    pub span_len: u32,
    /// Offset of `protocol` in the tracepoint record; [`UNKNOWN`]: no protocol filter.
    pub protocol_offset: u32,
    /// Size of `protocol`: 2 since Linux 5.6, 1 before.
    pub protocol_size: u32,
    /// Offset of `skaddr` in the tracepoint record.
    pub skaddr_offset: u32,
    /// Offset of `skbaddr` in the tracepoint record; [`UNKNOWN`] when there is none.
    pub skbaddr_offset: u32,
    /// Offset of `__sk_common.skc_net.net` in `struct sock`.
    pub sock_net_offset: u32,
    /// Offset of `ns.inum` in `struct net`.
    pub net_inum_offset: u32,
    /// Offset of `sk_socket` in `struct sock`; [`UNKNOWN`]: not read.
    pub sk_socket_offset: u32,
    /// Offset of `dev` in `struct sk_buff`: the netns of a reset sent without a socket.
    pub skb_dev_offset: u32,
    /// Offset of `nd_net.net` in `struct net_device`.
    pub dev_net_offset: u32,
    /// Offset of `icsk_retransmits` (a `u8`) from the socket's address; [`UNKNOWN`]: not read.
    pub icsk_retransmits_offset: u32,
    /// Offset of `oldstate` (an `int`) in the tracepoint record. With [`Self::newstate_offset`]
    /// it restricts the reads to the transitions that use them: `sk_socket` to ESTABLISHED ->
    /// CLOSE_WAIT or CLOSE, the task's `comm` to transitions in the owner's context, the
    /// namespace and cgroup to a socket's birth. [`UNKNOWN`]: read on every transition.
    pub oldstate_offset: u32,
    /// Offset of `newstate` (an `int`) in the tracepoint record; [`UNKNOWN`] as above.
    pub newstate_offset: u32,
    /// Offset in `struct sock` of the pointer to the socket's cgroup: `sk_cgrp_data.cgroup`
    /// (Linux 5.15+), or `sk_cgrp_data.val` before (see [`Self::cgroup_tagged`]);
    /// [`UNKNOWN`]: not read. Read only on transitions out of CLOSE and LISTEN, a socket's
    /// birth: the daemon learns the cgroup of a socket first seen later from sock_diag.
    pub sk_cgroup_offset: u32,
    /// Non-zero before Linux 5.15: `sk_cgrp_data.val` holds the cgroup pointer only when its
    /// lowest bit (`is_data`) is clear.
    pub cgroup_tagged: u32,
    /// Offset of `kn` in `struct cgroup`.
    pub cgroup_kn_offset: u32,
    /// Offset of `id` (a `u64`: the cgroup directory's inode) in `struct kernfs_node`.
    pub kn_id_offset: u32,
    /// Non-zero: the task's `comm` is not read and stays zeroed (only to measure that read).
    pub skip_comm: u32,
}

impl SpanProbeConfig {
    /// The value compiled into the eBPF object: the program does nothing until configured.
    pub const UNSET: Self = Self {
        configured: 0,
        span_start: 0,
        span_len: 0,
        protocol_offset: UNKNOWN,
        protocol_size: 0,
        skaddr_offset: 0,
        skbaddr_offset: UNKNOWN,
        sock_net_offset: UNKNOWN,
        net_inum_offset: UNKNOWN,
        sk_socket_offset: UNKNOWN,
        skb_dev_offset: UNKNOWN,
        dev_net_offset: UNKNOWN,
        icsk_retransmits_offset: UNKNOWN,
        oldstate_offset: UNKNOWN,
        newstate_offset: UNKNOWN,
        sk_cgroup_offset: UNKNOWN,
        cgroup_tagged: 0,
        cgroup_kn_offset: UNKNOWN,
        kn_id_offset: UNKNOWN,
        skip_comm: 0,
    };
}

/// Where `struct timer_list` keeps its callback and expiry, and which timers are timewait timers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerProbeConfig {
    /// Address of `tw_timer_handler` from /proc/kallsyms; 0: the programs emit nothing.
    pub tw_timer_handler: u64,
    /// Offset of `function` in `struct timer_list`.
    pub timer_function_offset: u32,
    /// Offset of `expires` in `struct timer_list`.
    pub timer_expires_offset: u32,
    /// Offset of `tw_timer` in `struct inet_timewait_sock`.
    pub tw_timer_offset: u32,
    /// Offset of `tw_substate` in `struct inet_timewait_sock`.
    pub tw_substate_offset: u32,
    /// Bytes of `struct sock_common` to copy, at most [`crate::record::COMMON_CAPACITY`].
    pub common_len: u32,
    /// Offset of `skc_net.net` in `struct sock_common`.
    pub common_net_offset: u32,
    /// Offset of `ns.inum` in `struct net`.
    pub net_inum_offset: u32,
    /// Offset of `skc_cookie` in `struct sock_common`; [`UNKNOWN`]: not read.
    pub common_cookie_offset: u32,
}

impl TimerProbeConfig {
    pub const UNSET: Self = Self {
        tw_timer_handler: 0,
        timer_function_offset: UNKNOWN,
        timer_expires_offset: UNKNOWN,
        tw_timer_offset: 0,
        tw_substate_offset: 0,
        common_len: 0,
        common_net_offset: UNKNOWN,
        net_inum_offset: UNKNOWN,
        common_cookie_offset: UNKNOWN,
    };
}

/// An integer member of a kernel struct, read as the aligned `u32` that holds it:
/// `(word >> shift) & mask`. Covers plain members of 1 to 4 bytes and bitfields alike (older
/// kernels keep `sk_protocol` and `sk_type` in bitfields).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBits {
    /// Byte offset of the `u32` to read; [`UNKNOWN`]: not read.
    pub offset: u32,
    pub shift: u32,
    pub mask: u32,
}

impl KernelBits {
    pub const UNKNOWN: Self = Self {
        offset: UNKNOWN,
        shift: 0,
        mask: 0,
    };
}

/// What the `inet_sk_error_report` raw tracepoint program reads from the `struct sock`.
/// Offsets are from the socket's address (a TCP socket's `struct sock` begins its
/// `inet_connection_sock`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockErrorProbeConfig {
    /// Non-zero once the daemon has filled this in; an unconfigured program emits nothing.
    pub configured: u32,
    /// `sk_protocol`: only `IPPROTO_TCP` sockets are reported.
    pub protocol: KernelBits,
    /// `sk_type`: only `SOCK_STREAM` sockets are reported (raw sockets can be IPPROTO_TCP).
    pub sock_type: KernelBits,
    /// `sk_err` (an `int`).
    pub err_offset: u32,
    /// `__sk_common.skc_state` (a `u8`).
    pub state_offset: u32,
    /// `icsk_retransmits` (a `u8`); [`UNKNOWN`]: not read.
    pub retransmits_offset: u32,
    /// `icsk_probes_out` (a `u8`); [`UNKNOWN`]: not read.
    pub probes_out_offset: u32,
    /// `sk_wmem_queued` (an `int`); [`UNKNOWN`]: not read.
    pub wmem_queued_offset: u32,
    /// `inet_sport` (a `__be16`); [`UNKNOWN`]: not read.
    pub sport_offset: u32,
    /// Bytes of `struct sock_common` to copy, at most [`crate::record::COMMON_CAPACITY`].
    pub common_len: u32,
    /// Offset of `__sk_common.skc_net.net` in `struct sock`.
    pub sock_net_offset: u32,
    /// Offset of `ns.inum` in `struct net`.
    pub net_inum_offset: u32,
}

impl SockErrorProbeConfig {
    /// The value compiled into the eBPF object: the program does nothing until configured.
    pub const UNSET: Self = Self {
        configured: 0,
        protocol: KernelBits::UNKNOWN,
        sock_type: KernelBits::UNKNOWN,
        err_offset: 0,
        state_offset: 0,
        retransmits_offset: UNKNOWN,
        probes_out_offset: UNKNOWN,
        wmem_queued_offset: UNKNOWN,
        sport_offset: UNKNOWN,
        common_len: 0,
        sock_net_offset: UNKNOWN,
        net_inum_offset: UNKNOWN,
    };
}

/// What the `tcp_retransmit_synack` raw tracepoint program reads from the request socket (its
/// second argument): its `struct sock_common`, which holds the connection's addresses and
/// namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynackProbeConfig {
    /// Non-zero once the daemon has filled this in; an unconfigured program emits nothing.
    pub configured: u32,
    /// Offset of `__req_common` (a `struct sock_common`) in `struct request_sock`.
    pub req_common_offset: u32,
    /// Bytes of `struct sock_common` to copy, at most [`crate::record::COMMON_CAPACITY`].
    pub common_len: u32,
    /// Offset of `skc_net.net` in `struct sock_common`.
    pub common_net_offset: u32,
    /// Offset of `ns.inum` in `struct net`.
    pub net_inum_offset: u32,
}

impl SynackProbeConfig {
    /// The value compiled into the eBPF object: the program does nothing until configured.
    pub const UNSET: Self = Self {
        configured: 0,
        req_common_offset: 0,
        common_len: 0,
        common_net_offset: UNKNOWN,
        net_inum_offset: UNKNOWN,
    };
}

const _: () = assert!(size_of::<SpanProbeConfig>() == 20 * 4);
const _: () = assert!(size_of::<SynackProbeConfig>() == 5 * 4);
const _: () = assert!(size_of::<TimerProbeConfig>() == 8 + 8 * 4);
const _: () = assert!(size_of::<SockErrorProbeConfig>() == 16 * 4);

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, no padding.
unsafe impl aya::Pod for SpanProbeConfig {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields (KernelBits is three u32s), no padding.
unsafe impl aya::Pod for SockErrorProbeConfig {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, no padding (the u64 comes first, the u32s pair up).
unsafe impl aya::Pod for TimerProbeConfig {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields, no padding.
unsafe impl aya::Pod for SynackProbeConfig {}
