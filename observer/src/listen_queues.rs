//! Accept-queue pressure: the latest sample of every listening socket's queue, and the
//! kernel's listen overflow and drop counters summed over network namespaces.
//!
//! The counters are per namespace and vanish with it, so their sum is kept as a running
//! total of increases: it never goes down, as a Prometheus counter must not.

use rustc_hash::FxHashMap;

use crate::event::Netns;
use crate::sockdiag::{ListenCounters, ListenSnapshot, Listener};

#[derive(Clone, Debug, Default)]
pub struct ListenQueues {
    /// Every listening socket at the last sample.
    pub listeners: Vec<Listener>,
    /// `TcpExt: ListenOverflows` increases seen: handshakes completed into a full accept queue.
    pub overflows: u64,
    /// `TcpExt: ListenDrops` increases seen: SYNs and completed handshakes a listener dropped
    /// (overflows included).
    pub drops: u64,
    /// Samples taken, and namespaces that could not be read.
    pub samples: u64,
    pub failures: u64,
    last: FxHashMap<Netns, ListenCounters>,
}

impl ListenQueues {
    /// Takes in a new sample. A namespace's first sample is its baseline: what happened before
    /// the daemon looked is not counted.
    pub fn update(&mut self, snapshot: ListenSnapshot) {
        let mut next = FxHashMap::default();
        for (netns, now) in snapshot.counters {
            if let Some(before) = self.last.get(&netns) {
                self.overflows += increase(before.overflows, now.overflows);
                self.drops += increase(before.drops, now.drops);
            }
            next.insert(netns, now);
        }
        self.last = next;
        self.listeners = snapshot.listeners;
        self.samples += 1;
        self.failures += snapshot.failed.len() as u64;
    }

    /// The fullest accept queue, as a fraction of its backlog (0 without listeners).
    #[must_use]
    pub fn highest_usage(&self) -> f64 {
        self.listeners
            .iter()
            .filter(|l| l.backlog > 0)
            .map(|l| f64::from(l.queued) / f64::from(l.backlog))
            .fold(0.0, f64::max)
    }
}

/// A smaller value means a new namespace reused the inode number: its count started at 0.
const fn increase(before: u64, now: u64) -> u64 {
    if now >= before { now - before } else { now }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    fn snapshot(counters: &[(u32, u64, u64)], queued: u32) -> ListenSnapshot {
        ListenSnapshot {
            listeners: vec![Listener {
                netns: Netns::new(1).unwrap(),
                local: SocketAddr::from((Ipv4Addr::LOCALHOST, 80)),
                inode: 9,
                queued,
                backlog: 4,
                syn_recv: 0,
            }],
            counters: counters
                .iter()
                .map(|&(ns, overflows, drops)| {
                    (Netns::new(ns).unwrap(), ListenCounters { overflows, drops })
                })
                .collect(),
            failed: Vec::new(),
            took: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn counters_add_increases_from_a_baseline_and_never_go_down() {
        let mut q = ListenQueues::default();
        q.update(snapshot(&[(1, 100, 120), (2, 5, 5)], 1));
        assert_eq!(
            (q.overflows, q.drops),
            (0, 0),
            "the first sample is a baseline"
        );
        q.update(snapshot(&[(1, 103, 124), (2, 5, 6)], 4));
        assert_eq!((q.overflows, q.drops), (3, 5));
        // Namespace 2 is gone, namespace 1's inode is reused by a fresh one (counts restart).
        q.update(snapshot(&[(1, 2, 2)], 4));
        assert_eq!((q.overflows, q.drops), (5, 7));
        q.update(snapshot(&[(1, 4, 5)], 4));
        assert_eq!((q.overflows, q.drops), (7, 10));
        assert!((q.highest_usage() - 1.0).abs() < f64::EPSILON);
    }
}
