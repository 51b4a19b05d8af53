//! The two clocks: `CLOCK_MONOTONIC`, which the kernel stamps events with, and wall-clock time,
//! which people and saved state use.

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns()`.
#[must_use]
pub fn mono_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The calling thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`: exact, its time
/// in the kernel included).
#[must_use]
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(id, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A duration in nanoseconds, saturating.
#[must_use]
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Converts `CLOCK_MONOTONIC` timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// `CLOCK_REALTIME` - `CLOCK_MONOTONIC`, nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// Monotonic time taken as Unix time: fixed outputs for tests.
    #[cfg(test)]
    pub(crate) const IDENTITY: Self = Self { offset_ns: 0 };

    #[must_use]
    pub fn now() -> Self {
        let read = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid clock id and out-pointer.
            unsafe { libc::clock_gettime(clock, &raw mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        Self {
            offset_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC),
        }
    }

    #[must_use]
    pub fn at(&self, mono_ns: u64) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(i128::from(mono_ns) + self.offset_ns)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// The `CLOCK_MONOTONIC` time of `wall`; `None` before boot or beyond the clock's range.
    #[must_use]
    pub fn mono_of(&self, wall: jiff::Timestamp) -> Option<u64> {
        u64::try_from(wall.as_nanosecond() - self.offset_ns).ok()
    }
}

/// Nanoseconds as seconds, for display and metrics.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "nanoseconds far below 2^52")]
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}
