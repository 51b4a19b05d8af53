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
    /// Counts the transitions among `reports`, including TIME_WAIT's entry and end; a
    /// timewait timer restart stays in TIME_WAIT and is not a transition.
    pub fn count(&mut self, reports: &[Report]) {
        for r in reports {
            if let Report::Transition {
                transition, note, ..
            } = r
                && !matches!(note, Some(Note::TimewaitRestarted { .. }))
            {
                self.counts[transition.old][transition.new] += 1;
            }
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
