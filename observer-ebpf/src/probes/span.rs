//! The shared body of the programs that copy a span of their tracepoint record verbatim.
//!
//! Decoding happens in userspace, which knows each field's offset from tracefs; the kernel side
//! only filters, copies, and adds what the record cannot carry (time, task, network namespace).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, generated::bpf_get_current_comm,
    },
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use observer_common::{
    DIRECT_SPAN_START, RAW_CAPACITY, RecordHeader, RecordKind, SpanProbeConfig, SpanRecord,
    TcpState,
    probe_config::UNKNOWN,
    record::{
        Counter, FLAG_NO_SK_SOCKET, FLAG_RETRANSMITS_READ, FLAG_SK_SOCKET_READ, RETRANSMITS_SHIFT,
    },
    tcp_state::in_owner_context,
};

use crate::maps::{NO_WAKEUP, Ring, count};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = TcpState::Established as i32;
const TCP_CLOSE: i32 = TcpState::Close as i32;
const TCP_CLOSE_WAIT: i32 = TcpState::CloseWait as i32;
const TCP_LISTEN: i32 = TcpState::Listen as i32;

/// Reads a configuration global. Volatile: the value is patched into the object at load time,
/// so the compiler must not fold in the compiled-in `UNSET`.
#[inline(always)]
pub fn config<T: Copy>(global: &T) -> T {
    // SAFETY: a valid reference to a plain-data global.
    unsafe { core::ptr::read_volatile(global) }
}

/// Writes one [`SpanRecord`] of `kind`, unless the protocol (when configured) is not TCP.
///
/// The span is copied first and the fields the program needs are then read from the copy:
/// plain loads instead of a helper call each.
#[inline(always)]
pub fn emit(ctx: &TracePointContext, cfg: &SpanProbeConfig, kind: RecordKind) {
    if cfg.configured == 0 {
        return;
    }
    let Some((ring, mut entry)) = Ring::reserve::<SpanRecord>() else {
        // Only what would have been kept counts as lost.
        // SAFETY: `ctx` is this program's tracepoint record.
        if unsafe { is_tcp(ctx, &Span::uncopied(cfg)) } {
            count(Counter::RingbufFull);
        }
        return;
    };
    let rec = entry.as_mut_ptr();
    // Bounded for the verifier; the daemon never configures more than RAW_CAPACITY.
    let len = (cfg.span_len as usize).min(RAW_CAPACITY);
    // SAFETY: `rec` points at a reserved record of the right size; the tracepoint's record is
    // read with loads the verifier checks, other kernel memory only through probe-read helpers.
    unsafe {
        let raw = &mut (*rec).raw;
        if cfg.span_start as usize == DIRECT_SPAN_START {
            copy_direct(ctx, raw, len);
        } else if bpf_probe_read_kernel_buf(
            ctx.as_ptr()
                .cast::<u8>()
                .cast_const()
                .add(cfg.span_start as usize),
            &mut raw[..len],
        )
        .is_err()
        {
            count(Counter::ReadFailed);
            entry.discard(NO_WAKEUP);
            warn!(
                ctx,
                "record kind {}: reading {} tracepoint bytes at offset {} failed",
                kind as u16,
                len,
                cfg.span_start
            );
            return;
        }
        let span = Span { raw, len, cfg };
        if !is_tcp(ctx, &span) {
            entry.discard(NO_WAKEUP);
            return;
        }
        let sk = span
            .field::<*const u8>(ctx, cfg.skaddr_offset)
            .unwrap_or(core::ptr::null());
        // `kind` is a constant in each program: the others compile without the reads that
        // only a state change makes.
        let state_change = matches!(kind, RecordKind::StateChange);
        // Read once: they decide which of the reads below a transition needs.
        let states = if state_change {
            states(ctx, &span)
        } else {
            None
        };
        let netns = if sk.is_null() {
            skb_netns_inum(ctx, &span)
        } else if state_change && !at_birth(states) {
            0
        } else {
            netns_inum(sk, cfg.sock_net_offset, cfg.net_inum_offset)
        };
        (*rec).header = RecordHeader::new(kind, size_of::<SpanRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        // The task only for a state change: the daemon names no task from the other records.
        (*rec).pid_tgid = if state_change {
            bpf_get_current_pid_tgid()
        } else {
            0
        };
        #[expect(clippy::cast_possible_truncation, reason = "len <= RAW_CAPACITY")]
        {
            (*rec).raw_len = len as u16;
        }
        // Straight into the record: the safe wrapper zeroes and copies a stack buffer byte by
        // byte, which costs more than the helper. On failure the helper zeroes the buffer.
        let comm = &mut (*rec).comm;
        if state_change && cfg.skip_comm == 0 && by_owner(states) {
            #[expect(clippy::cast_possible_truncation, reason = "16 bytes")]
            bpf_get_current_comm(comm.as_mut_ptr().cast(), comm.len() as u32);
        } else {
            *comm = [0; 16];
        }
        (*rec).netns = netns;
        (*rec).cgroup = if state_change {
            cgroup_id(cfg, sk, states)
        } else {
            0
        };
        let retransmits = if matches!(kind, RecordKind::Retransmit) {
            retransmits_flags(sk, cfg)
        } else {
            0
        };
        (*rec).flags = sk_socket_flags(cfg, sk, states) | retransmits;
    }
    ring.submit(entry);
}

/// Copies the `len` bytes of the tracepoint record from [`DIRECT_SPAN_START`] into `raw` with
/// plain loads: no helper call. No load reaches past the span: the kernel refuses to attach a
/// program whose loads from the context reach past the tracepoint's record.
#[inline(always)]
unsafe fn copy_direct(ctx: &TracePointContext, raw: &mut [u8; RAW_CAPACITY], len: usize) {
    let dst = raw.as_mut_ptr();
    // Written out, not a loop: each load's offset must be a constant in its instruction, the
    // only form of context access the verifier accepts. `len` is a constant to the verifier
    // too (the configuration is read-only), so it keeps only the loads this span makes.
    macro_rules! words {
        ($($word:literal)*) => {$(
            // SAFETY: within the span, and within `raw` (`len` <= RAW_CAPACITY).
            unsafe {
                if $word * 8 + 8 > len {
                    copy_tail::<{ DIRECT_SPAN_START + $word * 8 }>(
                        ctx,
                        dst.add($word * 8),
                        len - $word * 8,
                    );
                    return;
                }
                store::<u64>(dst.add($word * 8), load::<u64>(ctx, DIRECT_SPAN_START + $word * 8));
            }
        )*};
    }
    words!(0 1 2 3 4 5 6 7 8 9 10 11);
}

const _: () = assert!(RAW_CAPACITY == 12 * 8 && DIRECT_SPAN_START % 8 == 0);

/// The last `rest` (< 8) bytes of a span, from the record's offset `AT` (a multiple of 8), in
/// loads aligned to their size, as the verifier requires of context loads.
#[inline(always)]
unsafe fn copy_tail<const AT: usize>(ctx: &TracePointContext, dst: *mut u8, rest: usize) {
    // SAFETY: `dst` holds 8 bytes, 8-aligned; every load stays within the span.
    unsafe {
        if rest >= 4 {
            store::<u32>(dst, load::<u32>(ctx, AT));
        }
        match rest {
            2 | 3 => store::<u16>(dst, load::<u16>(ctx, AT)),
            6 | 7 => store::<u16>(dst.add(4), load::<u16>(ctx, AT + 4)),
            _ => {}
        }
        match rest {
            1 => store::<u8>(dst, load::<u8>(ctx, AT)),
            3 => store::<u8>(dst.add(2), load::<u8>(ctx, AT + 2)),
            5 => store::<u8>(dst.add(4), load::<u8>(ctx, AT + 4)),
            7 => store::<u8>(dst.add(6), load::<u8>(ctx, AT + 6)),
            _ => {}
        }
    }
}

/// A `T` of the tracepoint record at `offset`, a constant once inlined.
#[inline(always)]
unsafe fn load<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the caller keeps `offset` within the record and aligned to `T`.
    unsafe {
        ctx.as_ptr()
            .cast::<u8>()
            .cast_const()
            .add(offset)
            .cast::<T>()
            .read_volatile()
    }
}

/// Writes `v` at `dst`, aligned to `T`: `raw` is 8-aligned (`SpanRecord` holds `u64`s and
/// `raw` starts at a multiple of 8), and every store is at a multiple of its size from there.
#[inline(always)]
unsafe fn store<T>(dst: *mut u8, v: T) {
    // SAFETY: the caller's.
    unsafe { dst.cast::<T>().write(v) }
}

/// The copied part of a tracepoint record.
struct Span<'a> {
    raw: &'a [u8; RAW_CAPACITY],
    /// Bytes of `raw` that were copied.
    len: usize,
    cfg: &'a SpanProbeConfig,
}

/// What a span with nothing copied points at: every field is then read from the record.
static UNCOPIED: [u8; RAW_CAPACITY] = [0; RAW_CAPACITY];

impl<'a> Span<'a> {
    fn uncopied(cfg: &'a SpanProbeConfig) -> Self {
        Self {
            raw: &UNCOPIED,
            len: 0,
            cfg,
        }
    }

    /// The field at `offset` in the tracepoint record: from the copy when it holds the field,
    /// else read from the record.
    #[inline(always)]
    unsafe fn field<T: Copy>(&self, ctx: &TracePointContext, offset: u32) -> Option<T> {
        if offset == UNKNOWN {
            return None;
        }
        if let Some(v) = offset
            .checked_sub(self.cfg.span_start)
            .and_then(|at| in_copy(self.raw, self.len, at as usize))
        {
            return Some(v);
        }
        // SAFETY: in-bounds read of the tracepoint record, checked by the helper.
        unsafe { ctx.read_at::<T>(offset as usize) }.ok()
    }
}

/// The `T` at `at` of a copy of which `len` bytes were filled, when they hold it.
#[inline(always)]
pub fn in_copy<T: Copy, const N: usize>(copy: &[u8; N], len: usize, at: usize) -> Option<T> {
    // Both bounds: the constant one is what the verifier can check.
    if at <= N - size_of::<T>() && at + size_of::<T>() <= len {
        // SAFETY: in bounds of `copy`, checked above.
        Some(unsafe { copy.as_ptr().add(at).cast::<T>().read_unaligned() })
    } else {
        None
    }
}

/// Whether the record is about TCP: true when the tracepoint has no protocol field.
#[inline(always)]
unsafe fn is_tcp(ctx: &TracePointContext, span: &Span) -> bool {
    let offset = span.cfg.protocol_offset;
    if offset == UNKNOWN {
        return true;
    }
    // SAFETY: fields of this program's tracepoint record.
    let protocol = unsafe {
        if span.cfg.protocol_size == 1 {
            span.field::<u8>(ctx, offset).map(u16::from)
        } else {
            span.field::<u16>(ctx, offset)
        }
    };
    protocol == Some(IPPROTO_TCP)
}

/// Inode number of the network namespace that `object` (a socket, or a device) points to at
/// `net_offset`; 0 when unknown.
#[inline(always)]
pub unsafe fn netns_inum(object: *const u8, net_offset: u32, inum_offset: u32) -> u32 {
    if object.is_null() || net_offset == UNKNOWN || inum_offset == UNKNOWN {
        return 0;
    }
    // SAFETY: probe reads of kernel memory; failures give 0.
    unsafe {
        let Ok(net) = bpf_probe_read_kernel(object.add(net_offset as usize).cast::<*const u8>())
        else {
            return 0;
        };
        net_inum(net, inum_offset)
    }
}

/// `ns.inum` of the `struct net` at `net`; 0 when unknown.
#[inline(always)]
pub unsafe fn net_inum(net: *const u8, inum_offset: u32) -> u32 {
    if net.is_null() || inum_offset == UNKNOWN {
        return 0;
    }
    // SAFETY: a probe read of kernel memory; a failure gives 0.
    unsafe { bpf_probe_read_kernel(net.add(inum_offset as usize).cast::<u32>()).unwrap_or(0) }
}

/// The namespace of a socketless event (a reset to a closed port): the packet's device's.
#[inline(always)]
unsafe fn skb_netns_inum(ctx: &TracePointContext, span: &Span) -> u32 {
    let cfg = span.cfg;
    if cfg.skbaddr_offset == UNKNOWN || cfg.skb_dev_offset == UNKNOWN {
        return 0;
    }
    // SAFETY: probe reads of kernel memory; failures give 0.
    unsafe {
        let Some(skb) = span.field::<*const u8>(ctx, cfg.skbaddr_offset) else {
            return 0;
        };
        if skb.is_null() {
            return 0;
        }
        let Ok(dev) =
            bpf_probe_read_kernel(skb.add(cfg.skb_dev_offset as usize).cast::<*const u8>())
        else {
            return 0;
        };
        netns_inum(dev, cfg.dev_net_offset, cfg.net_inum_offset)
    }
}

/// `icsk_retransmits` in the high byte, when configured.
#[inline(always)]
unsafe fn retransmits_flags(sk: *const u8, cfg: &SpanProbeConfig) -> u16 {
    if sk.is_null() || cfg.icsk_retransmits_offset == UNKNOWN {
        return 0;
    }
    // SAFETY: probe read of kernel memory.
    match unsafe { bpf_probe_read_kernel::<u8>(sk.add(cfg.icsk_retransmits_offset as usize)) } {
        Ok(n) => FLAG_RETRANSMITS_READ | (u16::from(n) << RETRANSMITS_SHIFT),
        Err(_) => 0,
    }
}

/// A state change's (old, new) states, when both offsets are configured.
#[inline(always)]
unsafe fn states(ctx: &TracePointContext, span: &Span) -> Option<(i32, i32)> {
    let cfg = span.cfg;
    if cfg.oldstate_offset == UNKNOWN || cfg.newstate_offset == UNKNOWN {
        return None;
    }
    // SAFETY: fields of this program's tracepoint record.
    unsafe {
        Some((
            span.field::<i32>(ctx, cfg.oldstate_offset)?,
            span.field::<i32>(ctx, cfg.newstate_offset)?,
        ))
    }
}

/// Whether a state change is a socket's birth: out of CLOSE (a new socket) or LISTEN (a
/// listener's child, cloned in the listener's namespace and cgroup, which it keeps; or the
/// listener's own close). What a socket keeps for life (its namespace, its cgroup) is read then
/// only: the daemon carries it to the socket's later transitions. True when the states are not
/// known (every transition then carries it).
#[inline(always)]
fn at_birth(states: Option<(i32, i32)>) -> bool {
    states.is_none_or(|(old, _)| matches!(old, TCP_CLOSE | TCP_LISTEN))
}

/// Whether the current task is the socket's owner (a transition its own system call drives):
/// elsewhere it is whichever task a softirq interrupted, and its `comm` says nothing about the
/// socket. True when the states are not known.
#[inline(always)]
fn by_owner(states: Option<(i32, i32)>) -> bool {
    states.is_none_or(|(old, new)| in_owner_context(old, new))
}

/// The id of the socket's cgroup (v2) on a socket's birth ([`at_birth`]); 0 otherwise or when
/// unknown. A socket first seen later (open before the daemon started, or whose birth
/// was lost) gets its cgroup from sock_diag, which reports it for every full socket.
#[inline(always)]
unsafe fn cgroup_id(cfg: &SpanProbeConfig, sk: *const u8, states: Option<(i32, i32)>) -> u64 {
    if sk.is_null()
        || cfg.sk_cgroup_offset == UNKNOWN
        || cfg.cgroup_kn_offset == UNKNOWN
        || cfg.kn_id_offset == UNKNOWN
        || !at_birth(states)
    {
        return 0;
    }
    // SAFETY: probe reads of kernel memory; failures give 0.
    unsafe {
        let Ok(cgroup) = bpf_probe_read_kernel(sk.add(cfg.sk_cgroup_offset as usize).cast::<u64>())
        else {
            return 0;
        };
        if cgroup == 0 || (cfg.cgroup_tagged != 0 && cgroup & 1 != 0) {
            return 0;
        }
        let cgroup = cgroup as *const u8;
        let Ok(kn) = bpf_probe_read_kernel(
            cgroup
                .add(cfg.cgroup_kn_offset as usize)
                .cast::<*const u8>(),
        ) else {
            return 0;
        };
        if kn.is_null() {
            return 0;
        }
        bpf_probe_read_kernel(kn.add(cfg.kn_id_offset as usize).cast::<u64>()).unwrap_or(0)
    }
}

/// Whether the socket has a `struct socket`: a child socket has none until `accept()`. Read
/// only when the peer ends an established connection (-> CLOSE_WAIT or CLOSE), where the
/// daemon tells a connection closed before `accept()`; always when the states are not known.
#[inline(always)]
unsafe fn sk_socket_flags(cfg: &SpanProbeConfig, sk: *const u8, states: Option<(i32, i32)>) -> u16 {
    if sk.is_null()
        || cfg.sk_socket_offset == UNKNOWN
        || states.is_some_and(|s| !matches!(s, (TCP_ESTABLISHED, TCP_CLOSE_WAIT | TCP_CLOSE)))
    {
        return 0;
    }
    // SAFETY: probe read of kernel memory.
    match unsafe { bpf_probe_read_kernel(sk.add(cfg.sk_socket_offset as usize).cast::<u64>()) } {
        Ok(0) => FLAG_SK_SOCKET_READ | FLAG_NO_SK_SOCKET,
        Ok(_) => FLAG_SK_SOCKET_READ,
        Err(_) => 0,
    }
}
