//! TIME_WAIT, through the timer of the timewait socket (`tw_timer_handler`).
//!
//! No tracepoint reports TIME_WAIT: the full socket closes and a separate timewait socket takes
//! over. Its timer is the only trace it leaves: `timer_start` when it enters TIME_WAIT (or is
//! rescheduled), `timer_cancel` when it is disarmed, `timer_expire_entry` when it ends normally.
//! These tracepoints fire for every timer on the host, so the filter must stay cheap: compare
//! the callback address (start, expire), or look the timer up in `TW_TIMERS` (cancel, whose
//! record has no callback).

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    RecordHeader, RecordKind, TimerProbeConfig, TimerRecord,
    record::{COMMON_CAPACITY, Counter, TimerEvent},
};

use super::span::{config, netns_inum};
use crate::maps::{EVENTS, TW_TIMERS, count, submit_flags};

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static TIMER_PROBE_CONFIG: TimerProbeConfig = TimerProbeConfig::UNSET;

#[tracepoint(category = "timer", name = "timer_start")]
pub fn timer_start(ctx: TracePointContext) -> u32 {
    let cfg = config(&TIMER_PROBE_CONFIG);
    // SAFETY: in-bounds reads of the tracepoint record, checked by the helper.
    let (function, timer) = unsafe {
        (
            ctx.read_at::<u64>(cfg.start_function as usize),
            ctx.read_at::<u64>(cfg.start_timer as usize),
        )
    };
    if cfg.tw_timer_handler == 0 || function != Ok(cfg.tw_timer_handler) {
        return 0;
    }
    let Ok(timer) = timer else { return 0 };
    if TW_TIMERS.insert(&timer, &0, 0).is_err() {
        count(Counter::TimewaitTableFull);
    }
    // SAFETY: in-bounds reads of the tracepoint record, checked by the helper.
    let (expires, now) = unsafe {
        (
            ctx.read_at::<u64>(cfg.start_expires as usize).unwrap_or(0),
            ctx.read_at::<u64>(cfg.start_now as usize).unwrap_or(0),
        )
    };
    emit_with_socket(&cfg, timer, TimerEvent::Start, expires, now);
    0
}

/// A record with the timewait socket's identity, read from the socket around the timer.
#[inline(always)]
fn emit_with_socket(cfg: &TimerProbeConfig, timer: u64, event: TimerEvent, expires: u64, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<TimerRecord>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    let len = (cfg.common_len as usize).min(COMMON_CAPACITY);
    // SAFETY: `rec` is a reserved record; kernel memory is read through probe-read helpers.
    unsafe {
        let tw = (timer as *const u8).wrapping_sub(cfg.tw_timer_offset as usize);
        (*rec).header = RecordHeader::new(RecordKind::TimewaitTimer, size_of::<TimerRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).timer = timer;
        (*rec).expires = expires;
        (*rec).now = now;
        (*rec).event = event as u8;
        (*rec).substate =
            bpf_probe_read_kernel(tw.add(cfg.tw_substate_offset as usize)).unwrap_or(0);
        (*rec).netns = netns_inum(tw, cfg.common_net_offset, cfg.net_inum_offset);
        let common = &mut (*rec).common;
        if bpf_probe_read_kernel_buf(tw, &mut common[..len]).is_err() {
            count(Counter::ReadFailed);
            entry.discard(0);
            return;
        }
        #[expect(clippy::cast_possible_truncation, reason = "len <= COMMON_CAPACITY")]
        {
            (*rec).common_len = len as u16;
        }
    }
    entry.submit(submit_flags());
}

#[tracepoint(category = "timer", name = "timer_cancel")]
pub fn timer_cancel(ctx: TracePointContext) -> u32 {
    let cfg = config(&TIMER_PROBE_CONFIG);
    // SAFETY: in-bounds read of the tracepoint record, checked by the helper.
    let Ok(timer) = (unsafe { ctx.read_at::<u64>(cfg.cancel_timer as usize) }) else {
        return 0;
    };
    // Only timers that timer_start saw as timewait timers are in the map.
    if TW_TIMERS.remove(&timer).is_err() {
        return 0;
    }
    emit_cancel(timer);
    0
}

#[tracepoint(category = "timer", name = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: TracePointContext) -> u32 {
    let cfg = config(&TIMER_PROBE_CONFIG);
    // SAFETY: in-bounds reads of the tracepoint record, checked by the helper.
    let (function, timer, now) = unsafe {
        (
            ctx.read_at::<u64>(cfg.expire_function as usize),
            ctx.read_at::<u64>(cfg.expire_timer as usize),
            ctx.read_at::<u64>(cfg.expire_now as usize),
        )
    };
    if cfg.tw_timer_handler == 0 || function != Ok(cfg.tw_timer_handler) {
        return 0;
    }
    let Ok(timer) = timer else { return 0 };
    // Normally already removed by the cancel that precedes every expiry. Expiries are rare
    // (one per TIME_WAIT), so the socket is read again: a timewait socket that existed before
    // the daemon started is then matched by its addresses.
    let _ = TW_TIMERS.remove(&timer);
    emit_with_socket(&cfg, timer, TimerEvent::Expire, 0, now.unwrap_or(0));
    0
}

/// A cancel record, without the socket: userspace knows the timer from its start.
#[inline(always)]
fn emit_cancel(timer: u64) {
    let Some(mut entry) = EVENTS.reserve::<TimerRecord>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is a reserved record of the right size.
    unsafe {
        (*rec).header = RecordHeader::new(RecordKind::TimewaitTimer, size_of::<TimerRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).timer = timer;
        (*rec).expires = 0;
        (*rec).now = 0;
        (*rec).netns = 0;
        (*rec).event = TimerEvent::Cancel as u8;
        (*rec).substate = 0;
        (*rec).common_len = 0;
    }
    entry.submit(submit_flags());
}
