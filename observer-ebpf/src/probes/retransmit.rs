//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`: every segment and SYN-ACK sent
//! again.
//!
//! Both are TCP-only tracepoints: the records are copied for userspace to decode. The segment
//! program also reads `icsk_retransmits` from the socket (how many timeouts in a row the
//! connection has had), which the record does not carry.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use observer_common::{RecordKind, SpanProbeConfig};

use super::span;

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static RETRANSMIT_CONFIG: SpanProbeConfig = SpanProbeConfig::UNSET;
/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static RETRANSMIT_SYNACK_CONFIG: SpanProbeConfig = SpanProbeConfig::UNSET;

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    span::emit(
        &ctx,
        &span::config(&RETRANSMIT_CONFIG),
        RecordKind::Retransmit,
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    span::emit(
        &ctx,
        &span::config(&RETRANSMIT_SYNACK_CONFIG),
        RecordKind::RetransmitSynack,
    );
    0
}
