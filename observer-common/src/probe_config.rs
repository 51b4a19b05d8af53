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
    };
}

/// Where the timer tracepoints keep their fields, and which timers are timewait timers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerProbeConfig {
    /// Address of `tw_timer_handler` from /proc/kallsyms; 0: the programs emit nothing.
    pub tw_timer_handler: u64,
    /// `timer:timer_start` field offsets.
    pub start_timer: u32,
    pub start_function: u32,
    pub start_expires: u32,
    pub start_now: u32,
    /// `timer:timer_cancel` field offset.
    pub cancel_timer: u32,
    /// `timer:timer_expire_entry` field offsets.
    pub expire_timer: u32,
    pub expire_function: u32,
    pub expire_now: u32,
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
    pub pad: u32,
}

impl TimerProbeConfig {
    pub const UNSET: Self = Self {
        tw_timer_handler: 0,
        start_timer: 0,
        start_function: 0,
        start_expires: 0,
        start_now: 0,
        cancel_timer: 0,
        expire_timer: 0,
        expire_function: 0,
        expire_now: 0,
        tw_timer_offset: 0,
        tw_substate_offset: 0,
        common_len: 0,
        common_net_offset: UNKNOWN,
        net_inum_offset: UNKNOWN,
        pad: 0,
    };
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, no padding.
unsafe impl aya::Pod for SpanProbeConfig {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, no padding (the u64 comes first, the u32s pair up).
unsafe impl aya::Pod for TimerProbeConfig {}
