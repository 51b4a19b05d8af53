//! Counters by workload: RSTs and connections closed before accept(), counted as they happen
//! under the name the socket's cgroup had then. Counting later, from cgroup ids, would move
//! counts from a workload to `unknown` once its cgroup is removed, and a counter must never
//! go down.

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::Resolver;
use crate::{
    event::CgroupId,
    track::{NeverAccepted, Note, Report, ResetClass},
};

/// Workload names counted one by one at most; later ones are counted together as
/// [`Counted::Beyond`] (exported under `other`, as names beyond the label limit are).
pub const NAMES_KEPT: usize = 1024;

/// The counters of one workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    /// RSTs by `[sent, received][class]`, classes in [`ResetClass::ALL`] order.
    pub resets: [[u64; ResetClass::ALL.len()]; 2],
    /// Connections to the workload's listeners closed before accept().
    pub closed_before_accept: NeverAccepted,
}

impl std::ops::AddAssign for WorkloadCounts {
    fn add_assign(&mut self, other: Self) {
        for (sum, n) in self
            .resets
            .iter_mut()
            .flatten()
            .zip(other.resets.iter().flatten())
        {
            *sum += n;
        }
        self.closed_before_accept += other.closed_before_accept;
    }
}

/// Whose counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counted {
    Named(String),
    /// No cgroup, or one no convention names.
    Unknown,
    /// Named, but after [`NAMES_KEPT`] others.
    Beyond,
}

/// Cgroups whose name is remembered at most; beyond, the memo starts again.
const MEMO_MAX: usize = 16_384;

/// Every workload's counters so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadTally {
    /// Counters by name, in the order names were first counted.
    named: Vec<(String, WorkloadCounts)>,
    index: FxHashMap<String, usize>,
    unknown: WorkloadCounts,
    beyond: WorkloadCounts,
    /// Where each named cgroup is counted: an RST names its cgroup once, not per event (and
    /// keeps that name once the cgroup is gone). Unnamed ones are not remembered: a rescan
    /// may name them later.
    memo: FxHashMap<CgroupId, Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Named(usize),
    Beyond,
}

impl WorkloadTally {
    /// Counts the RSTs and closes before accept() among `reports`, naming each socket's
    /// workload through `resolver`.
    pub fn count(&mut self, reports: &[Report], resolver: &Resolver) {
        for report in reports {
            match report {
                Report::Reset {
                    reset,
                    class,
                    cgroup,
                    ..
                } => {
                    self.of(*cgroup, resolver).resets[reset.direction as usize][class.index()] += 1;
                }
                Report::Transition {
                    transition,
                    seen,
                    note: Some(Note::ClosedBeforeAccept),
                } => {
                    // The accepted socket carries its listener's cgroup.
                    let counts = &mut self.of(seen.cgroup, resolver).closed_before_accept;
                    if transition.new == TcpState::Close {
                        counts.peer_reset += 1;
                    } else {
                        counts.peer_closed += 1;
                    }
                }
                _ => {}
            }
        }
    }

    fn of(&mut self, cgroup: Option<CgroupId>, resolver: &Resolver) -> &mut WorkloadCounts {
        let Some(cgroup) = cgroup else {
            return &mut self.unknown;
        };
        let slot = if let Some(slot) = self.memo.get(&cgroup) {
            *slot
        } else {
            let Some(name) = resolver.resolve(cgroup).and_then(|a| a.name()) else {
                return &mut self.unknown;
            };
            let slot = self.slot_of(name);
            if self.memo.len() >= MEMO_MAX {
                self.memo.clear();
            }
            self.memo.insert(cgroup, slot);
            slot
        };
        match slot {
            Slot::Named(i) => &mut self.named[i].1,
            Slot::Beyond => &mut self.beyond,
        }
    }

    fn slot_of(&mut self, name: String) -> Slot {
        if let Some(&i) = self.index.get(&name) {
            return Slot::Named(i);
        }
        if self.named.len() >= NAMES_KEPT {
            return Slot::Beyond;
        }
        self.index.insert(name.clone(), self.named.len());
        self.named.push((name, WorkloadCounts::default()));
        Slot::Named(self.named.len() - 1)
    }

    /// Every workload counted, with its counters (named ones in the order first counted).
    pub fn iter(&self) -> impl Iterator<Item = (Counted, &WorkloadCounts)> {
        self.named
            .iter()
            .map(|(name, c)| (Counted::Named(name.clone()), c))
            .chain([
                (Counted::Unknown, &self.unknown),
                (Counted::Beyond, &self.beyond),
            ])
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::MetadataExt as _, path::PathBuf};

    use super::*;
    use crate::{
        event::{Family, Reset, ResetDirection, Task, Transition},
        track::Observation,
    };

    /// A directory tree made for one test, removed when it ends.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Self(root)
        }

        /// Makes `path` under the tree: its id as a cgroup.
        fn cgroup(&self, path: &str) -> CgroupId {
            let dir = self.0.join(path);
            fs::create_dir_all(&dir).unwrap();
            CgroupId::new(fs::metadata(&dir).unwrap().ino()).unwrap()
        }

        fn resolver(&self) -> Resolver {
            Resolver::new(Some(self.0.clone()), &self.0.join("no-kubelet"))
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn reset(direction: ResetDirection, class: ResetClass, cgroup: Option<CgroupId>) -> Report {
        Report::Reset {
            reset: Reset {
                mono_ns: 1,
                direction,
                sock: Some(0xffff_8880_0000_0001),
                state: None,
                reason: None,
                family: Family::Ipv4,
                local: "127.0.0.1:80".parse().unwrap(),
                remote: "127.0.0.1:50000".parse().unwrap(),
                netns: None,
            },
            state: None,
            class,
            owner: None,
            cgroup,
        }
    }

    fn closed_before_accept(new: TcpState, cgroup: Option<CgroupId>) -> Report {
        Report::Transition {
            transition: Transition {
                mono_ns: 1,
                sock: 0xffff_8880_0000_0002,
                old: TcpState::Established,
                new,
                family: Family::Ipv4,
                local: "127.0.0.1:80".parse().unwrap(),
                remote: "127.0.0.1:50001".parse().unwrap(),
                netns: None,
                cgroup: None,
                task: Task::new(1, 1, [0; 16]),
                has_socket: Some(true),
                owner_context: false,
            },
            seen: Observation {
                previous_state_ns: None,
                lower_bound: false,
                owner: None,
                cgroup,
                gap: false,
            },
            note: Some(Note::ClosedBeforeAccept),
        }
    }

    #[test]
    fn counts_go_to_the_workload_the_socket_had_when_they_happened() {
        let tree = Tree::new("observer-tally");
        let nginx = tree.cgroup("system.slice/nginx.service");
        let resolver = tree.resolver();
        let mut tally = WorkloadTally::default();
        let gone = CgroupId::new(u64::MAX).unwrap();
        tally.count(
            &[
                reset(ResetDirection::Sent, ResetClass::AbortiveClose, Some(nginx)),
                reset(ResetDirection::Sent, ResetClass::AbortiveClose, Some(nginx)),
                reset(ResetDirection::Received, ResetClass::PeerAbort, Some(nginx)),
                reset(ResetDirection::Sent, ResetClass::NoSocket, None),
                reset(ResetDirection::Sent, ResetClass::NoSocket, Some(gone)),
                closed_before_accept(TcpState::CloseWait, Some(nginx)),
                closed_before_accept(TcpState::Close, Some(nginx)),
                closed_before_accept(TcpState::Close, Some(nginx)),
            ],
            &resolver,
        );
        // The cgroup is removed: what was counted stays with nginx.service, and a socket
        // that outlives its cgroup is still counted there, named once (a resolver that never
        // knew the cgroup cannot name it).
        drop(tree);
        let stranger = Tree::new("observer-tally-stranger").resolver();
        tally.count(
            &[reset(
                ResetDirection::Sent,
                ResetClass::AbortiveClose,
                Some(nginx),
            )],
            &stranger,
        );
        let all: FxHashMap<Counted, WorkloadCounts> = tally.iter().map(|(k, c)| (k, *c)).collect();
        let n = all[&Counted::Named("nginx.service".to_owned())];
        let sent = ResetDirection::Sent as usize;
        let received = ResetDirection::Received as usize;
        assert_eq!(n.resets[sent][ResetClass::AbortiveClose.index()], 3);
        assert_eq!(n.resets[received][ResetClass::PeerAbort.index()], 1);
        assert_eq!(n.resets.iter().flatten().sum::<u64>(), 4);
        assert_eq!(
            n.closed_before_accept,
            NeverAccepted {
                peer_closed: 1,
                peer_reset: 2
            }
        );
        let unknown = all[&Counted::Unknown];
        assert_eq!(unknown.resets[sent][ResetClass::NoSocket.index()], 2);
        assert_eq!(all[&Counted::Beyond], WorkloadCounts::default());
    }

    #[test]
    fn names_beyond_the_kept_ones_are_counted_together() {
        let tree = Tree::new("observer-tally-many");
        let ids: Vec<CgroupId> = (0..=NAMES_KEPT)
            .map(|i| tree.cgroup(&format!("system.slice/s{i}.service")))
            .collect();
        let resolver = tree.resolver();
        let mut tally = WorkloadTally::default();
        let reports: Vec<Report> = ids
            .iter()
            .map(|id| reset(ResetDirection::Sent, ResetClass::Other, Some(*id)))
            .collect();
        tally.count(&reports, &resolver);
        let named = tally
            .iter()
            .filter(|(k, _)| matches!(k, Counted::Named(_)))
            .count();
        assert_eq!(named, NAMES_KEPT);
        let beyond: Vec<_> = tally
            .iter()
            .filter(|(k, _)| *k == Counted::Beyond)
            .map(|(_, c)| c.resets.iter().flatten().sum::<u64>())
            .collect();
        assert_eq!(beyond, [1]);
    }
}
