//! The cheapest useful programs, for `cargo xtask bench` only: the daemon never attaches them.
//!
//! Each reserves a record of the size of [`SpanRecord`] in one ring buffer that all CPUs share
//! (`maps::EVENTS`, where the daemon's programs each write to their CPU's ring) and submits it,
//! reading nothing. Their kernel time per event is the floor that `inet_sock_set_state` is
//! measured against: the difference is what filtering and copying the record cost, less what
//! a ring of its own saves each CPU.
//!
//! The `floor_*` programs do the same on each of the daemon's other hooks (the timer ones for
//! timewait timers only, found as the daemon's programs find them): together with [`baseline`]
//! they are the least that watching those hooks can cost, whatever a program does there.
//!
//! The `empty_*` programs do nothing: what BPF statistics count for any program on the hook
//! (the call, and part of their own clock reads), which no program can cut. The `filter_*`
//! ones run the timer programs' filter and write nothing: against `empty_*`, what the filter
//! costs on each of the host's timers.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use observer_common::{
    SpanRecord,
    record::{BASELINE_WRITTEN_SPAN, RAW_CAPACITY},
};

use super::{
    span::config,
    timewait::{TIMER_PROBE_CONFIG, timewait_timer},
};
use crate::maps::{EVENTS, NO_WAKEUP, Ring, events_submit_flags as submit_flags};

/// Submits as the daemon's programs do (see `maps::RING_WAKEUP_BYTES`).
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline(_ctx: TracePointContext) -> u32 {
    submit(submit_flags());
    0
}

/// [`baseline`] writing to its CPU's ring, as the daemon's programs do: against [`baseline`],
/// what a ring per CPU saves; against the daemon's state program, what that program does.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline_per_cpu(_ctx: TracePointContext) -> u32 {
    // Submitted unwritten, as `submit` does.
    if let Some((ring, entry)) = Ring::reserve::<SpanRecord>() {
        ring.submit(entry);
    }
    0
}

/// [`baseline_per_cpu`] writing what the daemon's state program writes of its record: every
/// field and a span of [`BASELINE_WRITTEN_SPAN`] bytes, the rest of the span left unwritten
/// as the program leaves it. Against [`baseline_per_cpu`], what those stores into the ring
/// cost; against the state program, what its work costs beside them.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline_per_cpu_written(_ctx: TracePointContext) -> u32 {
    if let Some((ring, mut entry)) = Ring::reserve::<SpanRecord>() {
        let words = entry.as_mut_ptr().cast::<u64>();
        // Written out, one store per word, as the state program's stores are: no memset call.
        macro_rules! zero {
            ($($word:literal)*) => {$(
                // SAFETY: within the reserved record (checked below).
                unsafe { words.add($word).write_volatile(0) };
            )*};
        }
        zero!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
        ring.submit(entry);
    }
    0
}

// The 15 words stored above: the fields before the span, and the span.
const _: () = assert!(
    core::mem::offset_of!(SpanRecord, raw) + BASELINE_WRITTEN_SPAN == 15 * 8
        && BASELINE_WRITTEN_SPAN <= RAW_CAPACITY
);

/// [`baseline`] attached as a raw tracepoint: the kernel formats no record for it, and guards
/// it only against itself on a CPU (a classic tracepoint program is skipped whenever any other
/// classic tracing program runs there).
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn baseline_raw(_ctx: RawTracePointContext) -> i32 {
    submit(submit_flags());
    0
}

/// Wakes the reader for every record it finds caught up (the kernel's default): what waking
/// per record would cost the daemon's programs.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline_wake_each(_ctx: TracePointContext) -> u32 {
    submit(0);
    0
}

/// Never wakes the reader, which polls on a timer: the cost of a reserve and a submit alone.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn baseline_no_wakeup(_ctx: TracePointContext) -> u32 {
    submit(NO_WAKEUP);
    0
}

/// Nothing: what any program on the state tracepoint costs.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn empty_state(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn empty_timer_start(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn empty_timer_cancel(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn filter_timer_start(ctx: RawTracePointContext) -> i32 {
    filter_only(&ctx)
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn filter_timer_cancel(ctx: RawTracePointContext) -> i32 {
    filter_only(&ctx)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn floor_send_reset(_ctx: TracePointContext) -> u32 {
    submit(submit_flags());
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn floor_receive_reset(_ctx: TracePointContext) -> u32 {
    submit(submit_flags());
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn floor_retransmit(_ctx: TracePointContext) -> u32 {
    submit(submit_flags());
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn floor_retransmit_synack(_ctx: RawTracePointContext) -> i32 {
    submit(submit_flags());
    0
}

#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn floor_sk_error(_ctx: RawTracePointContext) -> i32 {
    submit(submit_flags());
    0
}

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn floor_timer_start(ctx: RawTracePointContext) -> i32 {
    submit_if_timewait(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn floor_timer_cancel(ctx: RawTracePointContext) -> i32 {
    submit_if_timewait(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn floor_timer_expire(ctx: RawTracePointContext) -> i32 {
    submit_if_timewait(&ctx);
    0
}

/// The timer programs' filter (one read of the timer's callback), then a record for the
/// timewait timers it keeps.
#[inline(always)]
fn submit_if_timewait(ctx: &RawTracePointContext) {
    if is_timewait(ctx) {
        submit(submit_flags());
    }
}

/// The timer programs' filter, its verdict returned (the kernel ignores a raw tracepoint
/// program's return value; returning it keeps the compiler from dropping the comparison).
#[inline(always)]
fn filter_only(ctx: &RawTracePointContext) -> i32 {
    i32::from(is_timewait(ctx))
}

/// Whether the timer is a timewait socket's, as the daemon's timer programs decide it.
#[inline(always)]
fn is_timewait(ctx: &RawTracePointContext) -> bool {
    timewait_timer(ctx, &config(&TIMER_PROBE_CONFIG)).is_some()
}

#[inline(always)]
fn submit(flags: u64) {
    // Submitted unwritten: the benchmark's reader only counts records.
    if let Some(entry) = EVENTS.reserve::<SpanRecord>(0) {
        entry.submit(flags);
    }
}
