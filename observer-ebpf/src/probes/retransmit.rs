//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`: every segment and SYN-ACK sent
//! again.
//!
//! The segment program copies its tracepoint's record for userspace to decode, and reads
//! `icsk_retransmits` from the socket (how many timeouts in a row the connection has had),
//! which the record does not carry.
//!
//! The SYN-ACK program is a raw tracepoint: SYN-ACKs are sent again from the timer softirq,
//! which often interrupts a transition's program on the same CPU, and the kernel skips a
//! classic tracepoint program whenever another classic one runs there (a raw tracepoint
//! program only while it runs itself). Its arguments are the listener and the request socket,
//! whose `struct sock_common` holds the connection's addresses: it is copied in one read.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use observer_common::{
    RecordHeader, RecordKind, SpanProbeConfig, SynackProbeConfig, SynackRecord,
    record::{COMMON_CAPACITY, Counter},
};

use super::{common, span};
use crate::maps::{NO_WAKEUP, Ring, count};

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static RETRANSMIT_CONFIG: SpanProbeConfig = SpanProbeConfig::UNSET;
/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static RETRANSMIT_SYNACK_CONFIG: SynackProbeConfig = SynackProbeConfig::UNSET;

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    span::emit(
        &ctx,
        &span::config(&RETRANSMIT_CONFIG),
        RecordKind::Retransmit,
    );
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: RawTracePointContext) -> i32 {
    let cfg = span::config(&RETRANSMIT_SYNACK_CONFIG);
    if cfg.configured == 0 {
        return 0;
    }
    let listener: *const u8 = ctx.arg(0);
    let req: *const u8 = ctx.arg(1);
    if req.is_null() {
        return 0;
    }
    let Some((ring, mut entry)) = Ring::reserve::<SynackRecord>() else {
        count(Counter::RingbufFull);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let len = (cfg.common_len as usize).min(COMMON_CAPACITY);
    // SAFETY: `rec` is a reserved record; kernel memory is read through probe-read helpers.
    unsafe {
        let req_common = req.add(cfg.req_common_offset as usize);
        let copy = &mut (*rec).common;
        if bpf_probe_read_kernel_buf(req_common, &mut copy[..len]).is_err() {
            count(Counter::ReadFailed);
            entry.discard(NO_WAKEUP);
            return 0;
        }
        (*rec).header = RecordHeader::new(RecordKind::RetransmitSynack, size_of::<SynackRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).listener = listener as u64;
        (*rec).netns = common::netns_inum(
            req_common,
            &*copy,
            len,
            cfg.common_net_offset,
            cfg.net_inum_offset,
        );
        #[expect(clippy::cast_possible_truncation, reason = "len <= COMMON_CAPACITY")]
        {
            (*rec).common_len = len as u16;
        }
        (*rec).pad = 0;
    }
    ring.submit(entry);
    0
}
