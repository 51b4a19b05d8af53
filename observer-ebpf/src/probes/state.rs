//! `sock:inet_sock_set_state`: every TCP state change.
//!
//! Hook choice: this tracepoint fires for every state change of every inet socket and is stable
//! in name, though not in layout. The program stays short (a tracepoint program that is still
//! running when the next transition arrives on that CPU makes the kernel skip the second one):
//! it filters TCP, copies the record verbatim and leaves all decoding to userspace, which knows
//! the layout from tracefs.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use observer_common::{
    RAW_CAPACITY, RecordHeader, RecordKind, StateProbeConfig, StateRecord, record::Counter,
};

use crate::maps::{EVENTS, count};

const IPPROTO_TCP: u16 = 6;

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static STATE_PROBE_CONFIG: StateProbeConfig = StateProbeConfig::UNSET;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // SAFETY: reads only kernel memory through probe-read helpers.
    unsafe { try_inet_sock_set_state(&ctx) };
    0
}

#[inline(always)]
unsafe fn try_inet_sock_set_state(ctx: &TracePointContext) {
    // Volatile: the value is patched into the object at load time, so the compiler must not
    // fold in the compiled-in UNSET.
    let cfg: StateProbeConfig = unsafe { core::ptr::read_volatile(&raw const STATE_PROBE_CONFIG) };
    if cfg.configured == 0 {
        return;
    }
    let protocol = if cfg.protocol_size == 1 {
        unsafe { ctx.read_at::<u8>(cfg.protocol_offset as usize) }.map(u16::from)
    } else {
        unsafe { ctx.read_at::<u16>(cfg.protocol_offset as usize) }
    };
    if protocol != Ok(IPPROTO_TCP) {
        return;
    }

    let Some(mut entry) = EVENTS.reserve::<StateRecord>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    // Bounded for the verifier; the daemon never configures more than RAW_CAPACITY.
    let len = (cfg.span_len as usize).min(RAW_CAPACITY);
    unsafe {
        let raw = &mut (*rec).raw;
        let src = ctx
            .as_ptr()
            .cast::<u8>()
            .cast_const()
            .add(cfg.span_start as usize);
        if bpf_probe_read_kernel_buf(src, &mut raw[..len]).is_err() {
            count(Counter::ReadFailed);
            entry.discard(0);
            warn!(
                ctx,
                "inet_sock_set_state: reading {} record bytes at offset {} failed",
                len,
                cfg.span_start
            );
            return;
        }
        (*rec).header = RecordHeader::new(RecordKind::StateChange, size_of::<StateRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).pid_tgid = bpf_get_current_pid_tgid();
        #[expect(clippy::cast_possible_truncation, reason = "len <= RAW_CAPACITY")]
        {
            (*rec).raw_len = len as u32;
        }
        (*rec).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*rec).netns = netns_inum(ctx, &cfg);
    }
    entry.submit(0);
}

/// Inode number of the socket's network namespace, or 0 when the offsets are unknown.
#[inline(always)]
unsafe fn netns_inum(ctx: &TracePointContext, cfg: &StateProbeConfig) -> u32 {
    if cfg.sock_net_offset == StateProbeConfig::UNKNOWN
        || cfg.net_inum_offset == StateProbeConfig::UNKNOWN
    {
        return 0;
    }
    unsafe {
        let Ok(sk) = ctx.read_at::<*const u8>(cfg.skaddr_offset as usize) else {
            return 0;
        };
        let Ok(net) =
            bpf_probe_read_kernel(sk.add(cfg.sock_net_offset as usize).cast::<*const u8>())
        else {
            return 0;
        };
        bpf_probe_read_kernel(net.add(cfg.net_inum_offset as usize).cast::<u32>()).unwrap_or(0)
    }
}
