//! Accept-queue pressure: the latest sample of every listening socket's queue, and the
//! kernel's listen overflow and drop counters summed over network namespaces.
//!
//! The counters are per namespace and vanish with it, so their sum is kept as a running
//! total of increases: it never goes down, as a Prometheus counter must not.
//!
//! Counting request sockets (each listener's `syn_recv`) walks every socket of the host once
//! per namespace with a listener, so its cost grows with the host: 22 ms of CPU per namespace
//! with 125,000 TIME_WAIT sockets on the host, where listing the listeners took 0.1 ms. It is
//! therefore taken only as often as keeps it under 1% of one CPU, at most at every sample; in
//! between, listeners keep the count of the last one, and its age is exported.

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::clock::nanos;
use crate::event::Netns;
use crate::sockdiag::{ListenCounters, ListenSnapshot, Listener, Requests};

/// Counting request sockets may take at most 1/this of the time between two counts.
const REQUESTS_CPU_SHARE: u32 = 100;

/// When request sockets were last counted, and what it cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestsCounted {
    /// `CLOCK_MONOTONIC` ns when the sample that counted them began.
    pub at_ns: u64,
    /// CPU time the count took, over every namespace.
    pub cpu: Duration,
}

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
    /// The last sample that counted request sockets.
    pub requests_counted: Option<RequestsCounted>,
    last: FxHashMap<Netns, ListenCounters>,
}

impl ListenQueues {
    /// Takes in a new sample, which ended at `now_ns` (`CLOCK_MONOTONIC`). A namespace's first
    /// sample is its baseline: what happened before the daemon looked is not counted.
    pub fn update(&mut self, mut snapshot: ListenSnapshot, now_ns: u64) {
        let mut next = FxHashMap::default();
        for (netns, now) in snapshot.counters {
            if let Some(before) = self.last.get(&netns) {
                self.overflows += increase(before.overflows, now.overflows);
                self.drops += increase(before.drops, now.drops);
            }
            next.insert(netns, now);
        }
        self.last = next;
        match snapshot.requests_cpu {
            Some(cpu) => {
                self.requests_counted = Some(RequestsCounted {
                    at_ns: now_ns.saturating_sub(nanos(snapshot.took)),
                    cpu,
                });
            }
            None => carry_requests(&self.listeners, &mut snapshot.listeners),
        }
        self.listeners = snapshot.listeners;
        self.samples += 1;
        self.failures += snapshot.failed.len() as u64;
    }

    /// Whether the sample about to start, `every` after the last, should count request
    /// sockets: when it has never been done, or when at least `REQUESTS_CPU_SHARE` times
    /// its last cost has passed (rounded to the nearest sample).
    #[must_use]
    pub fn requests_due(&self, now_ns: u64, every: Duration) -> Requests {
        let Some(last) = self.requests_counted else {
            return Requests::Count;
        };
        let wait = every.max(last.cpu * REQUESTS_CPU_SHARE);
        // Half a sample's slack: samples start on a timer, never exactly `every` apart.
        let since = Duration::from_nanos(now_ns.saturating_sub(last.at_ns));
        if since + every / 2 >= wait {
            Requests::Count
        } else {
            Requests::Skip
        }
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

/// A listener still there keeps the request sockets counted for it last time.
fn carry_requests(before: &[Listener], now: &mut [Listener]) {
    let counted: FxHashMap<(Netns, std::net::SocketAddr, u64), u32> = before
        .iter()
        .map(|l| ((l.netns, l.local, l.inode), l.syn_recv))
        .collect();
    for l in now {
        l.syn_recv = counted
            .get(&(l.netns, l.local, l.inode))
            .copied()
            .unwrap_or_default();
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
            took: Duration::ZERO,
            requests_cpu: Some(Duration::ZERO),
        }
    }

    #[test]
    fn counters_add_increases_from_a_baseline_and_never_go_down() {
        let mut q = ListenQueues::default();
        q.update(snapshot(&[(1, 100, 120), (2, 5, 5)], 1), 0);
        assert_eq!(
            (q.overflows, q.drops),
            (0, 0),
            "the first sample is a baseline"
        );
        q.update(snapshot(&[(1, 103, 124), (2, 5, 6)], 4), 0);
        assert_eq!((q.overflows, q.drops), (3, 5));
        // Namespace 2 is gone, namespace 1's inode is reused by a fresh one (counts restart).
        q.update(snapshot(&[(1, 2, 2)], 4), 0);
        assert_eq!((q.overflows, q.drops), (5, 7));
        q.update(snapshot(&[(1, 4, 5)], 4), 0);
        assert_eq!((q.overflows, q.drops), (7, 10));
        assert!((q.highest_usage() - 1.0).abs() < f64::EPSILON);
    }

    const SECOND: u64 = 1_000_000_000;
    const EVERY: Duration = Duration::from_secs(5);

    /// A sample of one listener with `syn_recv` requests, or with them not counted.
    fn with_requests(syn_recv: Option<u32>, cpu: Duration, inode: u64) -> ListenSnapshot {
        let mut s = snapshot(&[(1, 0, 0)], 0);
        s.listeners[0].inode = inode;
        s.listeners[0].syn_recv = syn_recv.unwrap_or_default();
        s.requests_cpu = syn_recv.map(|_| cpu);
        s.took = Duration::from_millis(100);
        s
    }

    #[test]
    fn requests_are_counted_at_every_sample_while_they_are_cheap() {
        let mut q = ListenQueues::default();
        assert_eq!(q.requests_due(0, EVERY), Requests::Count, "never counted");
        q.update(
            with_requests(Some(3), Duration::from_millis(2), 9),
            10 * SECOND,
        );
        let counted = q.requests_counted.unwrap();
        assert_eq!(
            counted.at_ns,
            10 * SECOND - SECOND / 10,
            "when the sample began"
        );
        // The next tick may come a little early or late.
        for next in [14_950_000_000, 15 * SECOND, 15_200_000_000] {
            assert_eq!(q.requests_due(next, EVERY), Requests::Count, "{next}");
        }
    }

    #[test]
    fn costly_counts_are_spread_out_to_one_percent_of_a_cpu() {
        let mut q = ListenQueues::default();
        // 120 ms of CPU: counted again 12 s later, i.e. at the third 5-second sample.
        q.update(
            with_requests(Some(3), Duration::from_millis(120), 9),
            SECOND / 10,
        );
        let due = |at: u64| q.requests_due(at, EVERY);
        assert_eq!(due(5 * SECOND), Requests::Skip);
        assert_eq!(
            due(10 * SECOND),
            Requests::Count,
            "12 s within half a sample"
        );
        assert_eq!(due(9 * SECOND), Requests::Skip);
    }

    #[test]
    fn a_sample_without_a_count_keeps_the_last_one_for_the_same_listener() {
        let mut q = ListenQueues::default();
        q.update(
            with_requests(Some(3), Duration::from_millis(120), 9),
            SECOND,
        );
        let counted = q.requests_counted;
        q.update(with_requests(None, Duration::ZERO, 9), 6 * SECOND);
        assert_eq!(q.listeners[0].syn_recv, 3);
        assert_eq!(q.requests_counted, counted, "not counted again");
        // Another socket on the same address (a new inode) was not counted.
        q.update(with_requests(None, Duration::ZERO, 10), 11 * SECOND);
        assert_eq!(q.listeners[0].syn_recv, 0);
        // A count replaces what was kept, even with none.
        q.update(with_requests(Some(0), Duration::ZERO, 10), 16 * SECOND);
        assert_eq!(q.listeners[0].syn_recv, 0);
        assert_eq!(q.requests_counted.unwrap().at_ns, 16 * SECOND - SECOND / 10);
    }
}
