//! Transitions counted by (old, new) state.

use observer_common::TcpState;

use crate::track::{Note, Report};

/// A 12 x 12 matrix of counts (index: kernel state value - 1).
#[derive(Clone, Debug, Default)]
pub struct TransitionCounts {
    counts: [[u64; 12]; 12],
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
                self.counts[transition.old as usize - 1][transition.new as usize - 1] += 1;
            }
        }
    }

    /// Pairs seen at least once.
    #[must_use]
    pub fn nonzero(&self) -> Vec<(TcpState, TcpState, u64)> {
        let mut out = Vec::new();
        for from in TcpState::ALL {
            for to in TcpState::ALL {
                let n = self.counts[from as usize - 1][to as usize - 1];
                if n > 0 {
                    out.push((from, to, n));
                }
            }
        }
        out
    }
}
