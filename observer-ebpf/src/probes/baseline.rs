//! The cheapest useful programs, for `cargo xtask bench` only: the daemon never attaches them.
//!
//! Each reserves a record of the size of [`SpanRecord`] in the same ring buffer and submits it,
//! reading nothing. Their kernel time per event is the floor that `inet_sock_set_state` is
//! measured against: the difference is what filtering and copying the record cost.

use aya_ebpf::{bindings::BPF_RB_NO_WAKEUP, macros::tracepoint, programs::TracePointContext};
use observer_common::SpanRecord;

use crate::maps::EVENTS;

/// Submits as the daemon's programs do: the kernel wakes the reader when it had caught up.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline(_ctx: TracePointContext) -> u32 {
    submit(0);
    0
}

/// Submits without waking the reader, which then polls on a timer: what the wakeup costs.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline_no_wakeup(_ctx: TracePointContext) -> u32 {
    submit(u64::from(BPF_RB_NO_WAKEUP));
    0
}

#[inline(always)]
fn submit(flags: u64) {
    // Submitted unwritten: the benchmark's reader only counts records.
    if let Some(entry) = EVENTS.reserve::<SpanRecord>(0) {
        entry.submit(flags);
    }
}
