//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`: every RST sent or received.
//!
//! Both are TCP-only tracepoints, so there is nothing to filter: the records are copied for
//! userspace to decode (the send side's `reason` field exists only on Linux 6.10 and newer).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use observer_common::{RecordKind, SpanProbeConfig};

use super::span;

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static SEND_RESET_CONFIG: SpanProbeConfig = SpanProbeConfig::UNSET;
/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static RECEIVE_RESET_CONFIG: SpanProbeConfig = SpanProbeConfig::UNSET;

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    span::emit(
        &ctx,
        &span::config(&SEND_RESET_CONFIG),
        RecordKind::SendReset,
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    span::emit(
        &ctx,
        &span::config(&RECEIVE_RESET_CONFIG),
        RecordKind::ReceiveReset,
    );
    0
}
