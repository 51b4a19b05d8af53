//! TIME_WAIT, through the timer of the timewait socket (`tw_timer_handler`).
//!
//! No tracepoint reports TIME_WAIT: the full socket closes and a separate timewait socket takes
//! over. Its timer is the only trace it leaves: `timer_start` when it enters TIME_WAIT (or is
//! rescheduled), `timer_cancel` when it is disarmed, `timer_expire_entry` when it ends normally.
//! These tracepoints fire for every timer on the host, so the filter must stay cheap: one read
//! of the timer's callback, compared with `tw_timer_handler`.
//!
//! A start carries the socket's addresses; a cancel or expiry only the timer, the socket's
//! cookie and its substate, in a record a quarter of the size. Timers armed within one
//! timer-wheel bucket (about 2 s for a 60 s timer at HZ=250) expire together in one softirq run
//! on each CPU, during which the reader cannot run: the ring buffer must hold the whole burst.
//!
//! Raw tracepoints: their argument is the `struct timer_list *`, so the kernel skips formatting
//! a record for each of the host's timers, and a raw tracepoint program running does not make
//! the kernel skip the other programs on that CPU (a classic one does, which made timers, firing
//! constantly, the main cause of skipped state changes).

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        generated::bpf_jiffies64,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use observer_common::{
    RecordHeader, RecordKind, TimerEndRecord, TimerProbeConfig, TimerRecord,
    probe_config::UNKNOWN,
    record::{COMMON_CAPACITY, Counter, TimerEvent},
};

use super::{common, span::config};
use crate::maps::{NO_WAKEUP, Ring, count};

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
pub(crate) static TIMER_PROBE_CONFIG: TimerProbeConfig = TimerProbeConfig::UNSET;

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn timer_start(ctx: RawTracePointContext) -> i32 {
    let cfg = config(&TIMER_PROBE_CONFIG);
    let Some(timer) = timewait_timer(&ctx, &cfg) else {
        return 0;
    };
    // SAFETY: probe read of kernel memory.
    let expires = unsafe {
        bpf_probe_read_kernel(
            (timer as *const u8)
                .add(cfg.timer_expires_offset as usize)
                .cast(),
        )
    }
    .unwrap_or(0);
    // SAFETY: no arguments; reads the kernel's clock.
    let now = unsafe { bpf_jiffies64() };
    emit_start(&cfg, timer, expires, now);
    0
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn timer_cancel(ctx: RawTracePointContext) -> i32 {
    let cfg = config(&TIMER_PROBE_CONFIG);
    if let Some(timer) = timewait_timer(&ctx, &cfg) {
        emit_end(&cfg, timer, TimerEvent::Cancel);
    }
    0
}

#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: RawTracePointContext) -> i32 {
    let cfg = config(&TIMER_PROBE_CONFIG);
    if let Some(timer) = timewait_timer(&ctx, &cfg) {
        emit_end(&cfg, timer, TimerEvent::Expire);
    }
    0
}

/// The tracepoint's `struct timer_list *` (its first argument), when its callback is
/// `tw_timer_handler`.
#[inline(always)]
pub(crate) fn timewait_timer(ctx: &RawTracePointContext, cfg: &TimerProbeConfig) -> Option<u64> {
    if cfg.tw_timer_handler == 0 || cfg.timer_function_offset == UNKNOWN {
        return None;
    }
    let timer: *const u8 = ctx.arg(0);
    if timer.is_null() {
        return None;
    }
    // SAFETY: probe read of kernel memory. The callback is still set during a cancel: the
    // kernel clears it (timer_shutdown) only after the tracepoint.
    let function: u64 =
        unsafe { bpf_probe_read_kernel(timer.add(cfg.timer_function_offset as usize).cast()) }
            .ok()?;
    (function == cfg.tw_timer_handler).then_some(timer as u64)
}

/// A start record with the timewait socket's identity, read from the socket around the timer.
#[inline(always)]
fn emit_start(cfg: &TimerProbeConfig, timer: u64, expires: u64, now: u64) {
    let Some((ring, mut entry)) = Ring::reserve::<TimerRecord>() else {
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
        (*rec).event = TimerEvent::Start as u8;
        (*rec).substate =
            bpf_probe_read_kernel(tw.add(cfg.tw_substate_offset as usize)).unwrap_or(0);
        let copy = &mut (*rec).common;
        if bpf_probe_read_kernel_buf(tw, &mut copy[..len]).is_err() {
            count(Counter::ReadFailed);
            entry.discard(NO_WAKEUP);
            return;
        }
        // The namespace's pointer is in the copy.
        (*rec).netns =
            common::netns_inum(tw, copy, len, cfg.common_net_offset, cfg.net_inum_offset);
        #[expect(clippy::cast_possible_truncation, reason = "len <= COMMON_CAPACITY")]
        {
            (*rec).common_len = len as u16;
        }
    }
    ring.submit(entry);
}

/// A cancel or expiry: the timer, the socket's cookie (so that a timewait socket known only
/// from sock_diag is matched), and at expiry the substate. No addresses: ends come in bursts.
#[inline(always)]
fn emit_end(cfg: &TimerProbeConfig, timer: u64, event: TimerEvent) {
    let Some((ring, mut entry)) = Ring::reserve::<TimerEndRecord>() else {
        count(Counter::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is a reserved record of the right size; kernel memory is read through
    // probe-read helpers.
    unsafe {
        let tw = (timer as *const u8).wrapping_sub(cfg.tw_timer_offset as usize);
        (*rec).header = RecordHeader::new(RecordKind::TimewaitEnd, size_of::<TimerEndRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).timer = timer;
        (*rec).cookie = if cfg.common_cookie_offset == UNKNOWN {
            0
        } else {
            bpf_probe_read_kernel(tw.add(cfg.common_cookie_offset as usize).cast()).unwrap_or(0)
        };
        (*rec).event = event as u8;
        (*rec).substate = if matches!(event, TimerEvent::Expire) {
            bpf_probe_read_kernel(tw.add(cfg.tw_substate_offset as usize)).unwrap_or(0)
        } else {
            0
        };
        (*rec).pad = [0; 6];
    }
    ring.submit(entry);
}
