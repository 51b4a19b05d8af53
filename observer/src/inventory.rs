//! What sock_diag says exists, as tracker input: start-up seeding, periodic reconciliation,
//! and the processes holding lingering CLOSE_WAIT sockets.
//!
//! Blocking (netlink dumps, a walk of /proc): run it off the event loop.

use std::collections::HashSet;

use observer_common::TcpState;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    clock::mono_now_ns,
    decode::Task,
    sockdiag::{self, DiagSocket, DiagTimer, NetLimits},
    track::{SeedSocket, Tracker, Tuple},
};

/// One sock_diag dump of every network namespace that could be listed.
#[derive(Debug, Default)]
pub struct Inventory {
    pub sockets: Vec<DiagSocket>,
    /// Namespaces dumped completely.
    pub dumped: FxHashSet<u32>,
    /// Namespaces that could not be dumped, with the reason (for the log).
    pub failed: Vec<String>,
    /// `CLOCK_MONOTONIC` ns when the dump began.
    pub started_ns: u64,
    /// Each dumped namespace's TIME_WAIT limits.
    pub limits: FxHashMap<u32, NetLimits>,
}

impl Inventory {
    /// Dumps every namespace.
    #[must_use]
    pub fn take() -> Self {
        let mut inv = Self {
            started_ns: mono_now_ns(),
            ..Self::default()
        };
        for ns in sockdiag::list_netns() {
            match sockdiag::dump_netns_with_limits(&ns) {
                Ok((sockets, limits)) => {
                    inv.dumped.insert(ns.inode);
                    inv.sockets.extend(sockets);
                    inv.limits.insert(ns.inode, limits);
                }
                Err(e) => inv.failed.push(format!("{}: {e}", ns.path.display())),
            }
        }
        inv
    }

    /// The dump as tracker input.
    #[must_use]
    pub fn seeds(&self) -> Vec<SeedSocket> {
        self.sockets
            .iter()
            .map(|s| SeedSocket {
                tuple: tuple(s),
                state: s.state,
                // Timewait sockets have no file; their timer says which kind they are.
                timewait: s.state == TcpState::TimeWait
                    || (s.inode == 0 && s.timer == DiagTimer::TimeWait),
                owner: None,
                cookie: s.cookie,
            })
            .collect()
    }

    /// Resolves, through /proc, the process holding each CLOSE_WAIT socket that has been in
    /// CLOSE_WAIT for at least `older_than_ns` and whose holder is not known yet. Returns how
    /// many were resolved.
    pub fn resolve_close_wait_owners(
        &self,
        tracker: &mut Tracker,
        older_than_ns: u64,
        now_ns: u64,
    ) -> usize {
        let candidates: Vec<_> = tracker
            .close_wait()
            .into_iter()
            .filter(|e| !e.owner_from_fd && now_ns.saturating_sub(e.since_ns) >= older_than_ns)
            .collect();
        // Most evaluations find every old CLOSE_WAIT already resolved: skip indexing the dump.
        if candidates.is_empty() {
            return 0;
        }
        let inodes_by_tuple: FxHashMap<Tuple, u64> = self
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::CloseWait && s.inode != 0)
            .map(|s| (tuple(s), s.inode))
            .collect();
        let wanted: Vec<_> = candidates
            .into_iter()
            .filter_map(|e| inodes_by_tuple.get(&e.tuple).map(|inode| (e.key, *inode)))
            .collect();
        if wanted.is_empty() {
            return 0;
        }
        let inodes: HashSet<u64> = wanted.iter().map(|(_, inode)| *inode).collect();
        let holders = sockdiag::holders_of(&inodes);
        let mut resolved = 0;
        for (key, inode) in wanted {
            if let Some(h) = holders.get(&inode).and_then(|h| h.first()) {
                tracker.set_owner_from_fd(key, Task::named(h.pid, &h.comm));
                resolved += 1;
            }
        }
        resolved
    }
}

fn tuple(s: &DiagSocket) -> Tuple {
    Tuple {
        netns: s.netns,
        local: s.local,
        remote: s.remote,
    }
}
