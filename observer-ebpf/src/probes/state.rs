//! `sock:inet_sock_set_state`: every TCP state change.
//!
//! Hook choice: this tracepoint fires for every state change of every inet socket and is stable
//! in name, though not in layout. The program stays short (a tracepoint program that is still
//! running when the next transition arrives on that CPU makes the kernel skip the second one):
//! it filters TCP, copies the record verbatim and leaves all decoding to userspace.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use observer_common::{RecordKind, SpanProbeConfig};

use super::span;

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static STATE_PROBE_CONFIG: SpanProbeConfig = SpanProbeConfig::UNSET;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    span::emit(
        &ctx,
        &span::config(&STATE_PROBE_CONFIG),
        RecordKind::StateChange,
    );
    0
}
