//! Transitions counted by (old, new) state.

use observer_common::TcpState;

use super::Report;
use crate::event::PerState;

/// A change from one state to another, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub old: TcpState,
    pub new: TcpState,
}

/// Counts by old state, then new state.
#[derive(Clone, Debug, Default)]
pub struct TransitionCounts {
    counts: PerState<PerState<u64>>,
}

impl TransitionCounts {
    pub fn add(&mut self, old: TcpState, new: TcpState) {
        self.counts[old][new] += 1;
    }

    /// A timewait socket's entry, restart or end: counts its transition (`counted`; `None`
    /// for a restart, which stays where it was), and appends its report when transitions are
    /// `reported`. Nothing in the daemon itself reads these reports, so without a reader they
    /// are not built.
    pub fn timewait(
        &mut self,
        out: &mut Vec<Report>,
        reported: bool,
        counted: Option<StateChange>,
        report: impl FnOnce() -> Report,
    ) {
        if let Some(StateChange { old, new }) = counted {
            self.add(old, new);
        }
        if reported {
            out.push(report());
        }
    }

    /// Pairs seen at least once.
    #[must_use]
    pub fn nonzero(&self) -> Vec<(TcpState, TcpState, u64)> {
        let mut out = Vec::new();
        for (from, to_counts) in self.counts.iter() {
            for (to, &n) in to_counts.iter() {
                if n > 0 {
                    out.push((from, to, n));
                }
            }
        }
        out
    }
}
