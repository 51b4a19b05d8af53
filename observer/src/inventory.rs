//! What sock_diag says exists, as tracker input: the sockets of a dump as the tracker takes
//! them, and the processes holding lingering CLOSE_WAIT sockets.
//!
//! Blocking (netlink dumps, a walk of /proc): run it off the event loop.

use std::collections::HashSet;

use observer_common::TcpState;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::Netns;
use crate::{
    clock::mono_now_ns,
    event::{Task, Tuple},
    kernel::NetLimits,
    sockdiag::{self, DiagSocket, DiagTimer},
    track::{SeedSocket, Tracker},
};

/// A socket of a dump, as the tracker takes it.
#[must_use]
pub fn seed_of(s: &DiagSocket) -> SeedSocket {
    SeedSocket {
        tuple: tuple(s),
        state: s.state,
        // Timewait sockets have no file; their timer says which kind they are.
        timewait: s.state == TcpState::TimeWait || (s.inode == 0 && s.timer == DiagTimer::TimeWait),
        owner: None,
        cookie: s.cookie,
        cgroup: s.cgroup,
    }
}

/// One sock_diag dump of every network namespace that could be listed, kept whole: for tests
/// and tools. The daemon applies dumps as they arrive instead (`pipeline`).
#[derive(Debug, Default)]
pub struct Inventory {
    pub sockets: Vec<DiagSocket>,
    /// Namespaces dumped completely.
    pub dumped: FxHashSet<Netns>,
    /// Namespaces that could not be dumped, with the reason (for the log).
    pub failed: Vec<String>,
    /// `CLOCK_MONOTONIC` ns when the dump began.
    pub started_ns: u64,
    /// Each dumped namespace's TIME_WAIT limits.
    pub limits: FxHashMap<Netns, NetLimits>,
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
        self.sockets.iter().map(seed_of).collect()
    }
}

/// A CLOSE_WAIT socket whose holder is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerWanted {
    /// Tracker key.
    pub key: u64,
    pub tuple: Tuple,
}

/// The process holding a CLOSE_WAIT socket's file descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerFound {
    pub key: u64,
    pub tuple: Tuple,
    pub owner: Task,
}

/// The CLOSE_WAIT sockets in CLOSE_WAIT for at least `older_than_ns` whose holder is not known
/// yet, oldest first.
#[must_use]
pub fn owners_wanted(tracker: &Tracker, older_than_ns: u64, now_ns: u64) -> Vec<OwnerWanted> {
    tracker
        .close_wait()
        .take_while(|e| now_ns.saturating_sub(e.since_ns) >= older_than_ns)
        .filter(|e| !e.owner_from_fd)
        .map(|e| OwnerWanted {
            key: e.key,
            tuple: e.tuple,
        })
        .collect()
}

/// Finds the processes holding `wanted` sockets: their inodes from a dump of the CLOSE_WAIT
/// sockets of their namespaces, then a walk of `/proc/*/fd`. Blocking.
#[must_use]
pub fn find_owners(wanted: &[OwnerWanted]) -> Vec<OwnerFound> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let keys: FxHashMap<Tuple, u64> = wanted.iter().map(|w| (w.tuple, w.key)).collect();
    let namespaces: FxHashSet<Netns> = wanted.iter().filter_map(|w| w.tuple.netns).collect();
    let mut inodes: FxHashMap<Tuple, u64> = FxHashMap::default();
    let close_wait = sockdiag::state_mask(&[TcpState::CloseWait]);
    for ns in sockdiag::list_netns()
        .into_iter()
        .filter(|ns| namespaces.contains(&ns.inode))
    {
        let found = sockdiag::each_in_netns(&ns, close_wait, &mut |s| {
            let t = tuple(&s);
            if s.inode != 0 && keys.contains_key(&t) {
                inodes.insert(t, s.inode);
            }
        });
        if let Err(e) = found.result {
            log::debug!("sock_diag: {}: {e}", ns.path.display());
        }
    }
    let wanted_inodes: HashSet<u64> = inodes.values().copied().collect();
    let holders = sockdiag::holders_of(&wanted_inodes);
    inodes
        .into_iter()
        .filter_map(|(tuple, inode)| {
            let h = holders.get(&inode)?.first()?;
            Some(OwnerFound {
                key: keys[&tuple],
                tuple,
                owner: Task::named(h.pid, &h.comm),
            })
        })
        .collect()
}

/// Records the holders found, for the sockets that are still the same CLOSE_WAIT sockets;
/// returns how many.
pub fn apply_owners(tracker: &mut Tracker, found: &[OwnerFound]) -> usize {
    found
        .iter()
        .filter(|f| tracker.set_owner_from_fd(f.key, &f.tuple, f.owner))
        .count()
}

/// Resolves at once, blocking, the holders of the CLOSE_WAIT sockets older than
/// `older_than_ns`; returns how many were resolved.
pub fn resolve_close_wait_owners(tracker: &mut Tracker, older_than_ns: u64, now_ns: u64) -> usize {
    let wanted = owners_wanted(tracker, older_than_ns, now_ns);
    let found = find_owners(&wanted);
    apply_owners(tracker, &found)
}

fn tuple(s: &DiagSocket) -> Tuple {
    Tuple {
        netns: Some(s.netns),
        local: s.local,
        remote: s.remote,
    }
}
