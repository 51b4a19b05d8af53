//! Transitions counted by (old, new) state.

use observer_common::TcpState;

use super::{Note, Report};
use crate::event::PerState;

/// Counts by old state, then new state.
#[derive(Clone, Debug, Default)]
pub struct TransitionCounts {
    counts: PerState<PerState<u64>>,
}

impl TransitionCounts {
    pub fn add(&mut self, old: TcpState, new: TcpState) {
        self.counts[old][new] += 1;
    }

    /// Appends a report, counting its transition (a timewait timer's restart stays in
    /// TIME_WAIT and is not one).
    pub fn push(&mut self, out: &mut Vec<Report>, report: Report) {
        if let Report::Transition {
            transition, note, ..
        } = &report
            && !matches!(note, Some(Note::TimewaitRestarted { .. }))
        {
            self.add(transition.old, transition.new);
        }
        out.push(report);
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
