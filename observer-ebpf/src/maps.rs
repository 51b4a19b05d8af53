//! Maps shared by all probes. Every map is bounded; the daemon sizes them at load time.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use observer_common::record::{COUNTER_SLOTS, Counter};

/// Records to userspace. The daemon sets the size at load time (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 21, 0);

/// Unread bytes in [`EVENTS`] past which a submit wakes the reader; below it the reader finds
/// the records on its own short timer. Waking on every record costs more than the rest of a
/// program together, and at high rates the reader would wake once per record. 0 (not set by
/// the loader) keeps the kernel's default: wake the reader when it had caught up.
#[unsafe(no_mangle)]
static RING_WAKEUP_BYTES: u64 = 0;

/// Flags for a record that is discarded, or submitted without waking the reader.
pub const NO_WAKEUP: u64 = BPF_RB_NO_WAKEUP as u64;

/// The flags for submitting to [`EVENTS`]: see [`RING_WAKEUP_BYTES`].
#[inline(always)]
pub fn submit_flags() -> u64 {
    // SAFETY: a valid reference to a plain-data global. Volatile: the loader patches the value,
    // so the compiler must not fold in the compiled-in 0.
    let threshold = unsafe { core::ptr::read_volatile(&RING_WAKEUP_BYTES) };
    if threshold == 0 {
        0
    } else if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= threshold {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        NO_WAKEUP
    }
}

/// Per-CPU counters of everything the probes had to drop, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and a tracepoint program is not re-entered on the same CPU.
        unsafe { *slot += 1 };
    }
}
