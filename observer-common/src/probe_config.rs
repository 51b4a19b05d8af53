//! Configuration the daemon hands to the eBPF programs as read-only globals at load time.

/// Where the fields of `sock:inet_sock_set_state` and of `struct sock` are on the running kernel.
///
/// Filled in by the daemon from the tracefs format file and from kernel BTF, never hard-coded:
/// the tracepoint layout has changed across kernel versions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateProbeConfig {
    /// Non-zero once the daemon has filled this in; an unconfigured program emits nothing.
    pub configured: u32,
    /// Offset of the first copied byte of the tracepoint record.
    pub span_start: u32,
    /// Number of bytes copied, at most [`crate::RAW_CAPACITY`].
    pub span_len: u32,
    /// Offset of `protocol` in the tracepoint record.
    pub protocol_offset: u32,
    /// Size of `protocol`: 2 since Linux 5.6, 1 before.
    pub protocol_size: u32,
    /// Offset of `skaddr` in the tracepoint record.
    pub skaddr_offset: u32,
    /// Offset of `__sk_common.skc_net.net` in `struct sock`; [`Self::UNKNOWN`] without BTF.
    pub sock_net_offset: u32,
    /// Offset of `ns.inum` in `struct net`; [`Self::UNKNOWN`] without BTF.
    pub net_inum_offset: u32,
}

impl StateProbeConfig {
    /// Marks an offset that could not be resolved.
    pub const UNKNOWN: u32 = u32::MAX;

    /// The value compiled into the eBPF object: the program does nothing until configured.
    pub const UNSET: Self = Self {
        configured: 0,
        span_start: 0,
        span_len: 0,
        protocol_offset: 0,
        protocol_size: 0,
        skaddr_offset: 0,
        sock_net_offset: Self::UNKNOWN,
        net_inum_offset: Self::UNKNOWN,
    };
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields, no padding.
unsafe impl aya::Pod for StateProbeConfig {}
