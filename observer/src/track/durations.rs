//! Distributions of time spent in each state, with fixed buckets from a millisecond to hours.

use observer_common::TcpState;
use serde::Serialize;

use crate::event::PerState;

/// Upper bounds of the buckets, in seconds. Dense around 60 s, where TIME_WAIT ends (Linux's
/// fixed 2*MSL; the timer wheel fires it up to a second late).
pub const BUCKET_BOUNDS_SECONDS: [f64; 24] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 55.0, 59.0, 60.0, 60.5, 61.0, 62.0,
    65.0, 90.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
];

/// The same bounds in nanoseconds, so that recording compares integers.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "positive bounds below 2^64 ns"
)]
const BUCKET_BOUNDS_NS: [u64; BUCKET_BOUNDS_SECONDS.len()] = {
    let mut out = [0; BUCKET_BOUNDS_SECONDS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (BUCKET_BOUNDS_SECONDS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// One distribution: per-bucket counts (not cumulative), with the +Inf bucket last.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    /// In place rather than on the heap: one indirection less on every transition.
    pub buckets: [u64; BUCKET_BOUNDS_SECONDS.len() + 1],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: [0; BUCKET_BOUNDS_SECONDS.len() + 1],
            count: 0,
            sum_seconds: 0.0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        // Most states of a busy host last well under the first bound: no search for them.
        let i = if ns <= BUCKET_BOUNDS_NS[0] {
            0
        } else {
            BUCKET_BOUNDS_NS.partition_point(|b| *b < ns)
        };
        self.buckets[i] += 1;
        self.count += 1;
        #[expect(clippy::cast_precision_loss, reason = "durations far below 2^52 ns")]
        {
            self.sum_seconds += ns as f64 * 1e-9;
        }
    }
}

/// A histogram per TCP state.
#[derive(Clone, Debug)]
pub struct StateDurations {
    by_state: PerState<Histogram>,
}

impl Default for StateDurations {
    fn default() -> Self {
        Self {
            by_state: PerState::from_fn(|_| Histogram::new()),
        }
    }
}

impl StateDurations {
    pub fn record(&mut self, state: TcpState, ns: u64) {
        self.by_state[state].record(ns);
    }

    #[must_use]
    pub fn of(&self, state: TcpState) -> &Histogram {
        &self.by_state[state]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds() {
        let mut h = Histogram::new();
        h.record(1_000_000); // exactly 1 ms: first bucket (le=0.001)
        h.record(60_900_000_000); // a TIME_WAIT expiry: le=61
        h.record(u64::MAX / 2); // +Inf
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[14], 1);
        assert_eq!(h.buckets[24], 1);
        assert_eq!(h.count, 3);
    }
}
