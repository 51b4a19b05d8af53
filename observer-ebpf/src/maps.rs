//! Maps shared by all probes. Every map is bounded; the daemon sizes them at load time.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use observer_common::record::{COUNTER_SLOTS, Counter};

/// Records to userspace. The daemon sets the size at load time (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 21, 0);

/// Per-CPU counters of everything the probes had to drop, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Armed timewait timers (address -> unused), so that `timer_cancel`, whose record carries no
/// callback, can tell a timewait timer from the host's other timers.
#[map]
pub static TW_TIMERS: HashMap<u64, u8> = HashMap::with_max_entries(1 << 18, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and a tracepoint program is not re-entered on the same CPU.
        unsafe { *slot += 1 };
    }
}
