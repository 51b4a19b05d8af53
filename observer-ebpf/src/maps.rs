//! Maps shared by all probes. Every map is bounded; the daemon sizes them at load time.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{ArrayOfMaps, RingBuf as CpuRingBuf},
    helpers::{bpf_get_smp_processor_id, generated::bpf_ringbuf_query},
    macros::{btf_map, map},
    maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use observer_common::record::{COUNTER_SLOTS, Counter};

/// A CPU's ring buffer. The size here only types the map: the daemon creates each CPU's ring
/// at the size it chose (the kernel does not hold an inner ring buffer to its template's size).
type CpuRing = CpuRingBuf<u8, 4096>;

/// Records to userspace: one ring buffer per CPU, indexed by CPU number, so that the CPUs never
/// share a ring's lock and positions (under load that sharing cost a record 64 to 333 ns over
/// the rounds of the day's `cargo xtask bench` runs, against about 54 in a ring of its own).
/// The daemon creates and inserts the rings, one for each possible CPU, and merges them by
/// time: a record's timestamp is read after it is reserved.
#[btf_map]
pub static RINGS: ArrayOfMaps<CpuRing, 1> = ArrayOfMaps::new();

/// One shared ring buffer, for the benchmark's reference programs only (`probes::baseline`):
/// the daemon sizes it to a page and never attaches a program that writes to it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 21, 0);

/// Unread bytes in a ring past which a submit wakes the reader; below it the reader finds
/// the records on its own short timer. Waking on every record costs more than the rest of a
/// program together, and at high rates the reader would wake once per record. 0 (not set by
/// the loader) keeps the kernel's default: wake the reader when it had caught up.
#[unsafe(no_mangle)]
static RING_WAKEUP_BYTES: u64 = 0;

/// Flags for a record that is discarded, or submitted without waking the reader.
pub const NO_WAKEUP: u64 = BPF_RB_NO_WAKEUP as u64;

/// The flags for submitting to a ring holding `unread()` bytes: see [`RING_WAKEUP_BYTES`].
#[inline(always)]
pub fn wakeup_flags(unread: impl FnOnce() -> u64) -> u64 {
    // SAFETY: a valid reference to a plain-data global. Volatile: the loader patches the value,
    // so the compiler must not fold in the compiled-in 0.
    let threshold = unsafe { core::ptr::read_volatile(&RING_WAKEUP_BYTES) };
    if threshold == 0 {
        0
    } else if unread() >= threshold {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        NO_WAKEUP
    }
}

/// The flags for submitting to [`EVENTS`].
#[inline(always)]
pub fn events_submit_flags() -> u64 {
    wakeup_flags(|| EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)))
}

/// The ring buffer of the CPU a program runs on.
#[derive(Clone, Copy)]
pub struct Ring(&'static CpuRing);

impl Ring {
    /// Reserves a record in this CPU's ring. `None` when the ring is full, or (never, once the
    /// daemon has inserted a ring for every possible CPU) when this CPU has no ring.
    #[inline(always)]
    pub fn reserve<T: 'static>() -> Option<(Self, RingBufEntry<T>)> {
        // SAFETY: a helper without arguments.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        let ring = RINGS.get(cpu)?;
        let entry = ring.reserve_untyped::<T>(0)?;
        Some((Self(ring), entry))
    }

    /// Submits a record reserved in this ring, waking the reader past [`RING_WAKEUP_BYTES`].
    #[inline(always)]
    pub fn submit<T: 'static>(self, entry: RingBufEntry<T>) {
        let ring = core::ptr::from_ref(self.0).cast_mut().cast();
        // SAFETY: `ring` is a ring buffer map, as the lookup in `reserve` returned it.
        entry.submit(wakeup_flags(|| unsafe {
            bpf_ringbuf_query(ring, u64::from(BPF_RB_AVAIL_DATA))
        }));
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
