//! Sockets counted by cgroup and state as they change, for the per-workload gauges: no scrape
//! walks a table. A socket table keeps, per socket, a [`Group`] (the entry of its cgroup), so
//! that a state change moves a count between two array cells without hashing the cgroup; the
//! hash is looked up only when a socket is added or changes cgroup. An entry stays when its last
//! socket goes (checking for that on every close cost more than the counting), until
//! [`ByCgroup::prune`], which the tracker runs four times a second: beyond the cgroups with
//! sockets, at most those of a quarter second's are kept.

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use crate::event::{CgroupId, PerState};

/// A cgroup's entry in a [`ByCgroup`], valid while a socket counted in it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group(u32);

#[derive(Clone, Debug, Default)]
struct Entry {
    cgroup: Option<CgroupId>,
    counts: PerState<u64>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ByCgroup {
    index: FxHashMap<Option<CgroupId>, Group>,
    entries: Vec<Entry>,
    /// Entries pruned, reused before the vector grows.
    free: Vec<Group>,
    /// The last cgroup looked up and its group: new sockets come in runs from one workload,
    /// and this spares the hash of each (callgrind). Cleared when groups are pruned.
    last: Option<(Option<CgroupId>, Group)>,
}

impl ByCgroup {
    /// The cgroup of a group.
    #[inline]
    pub fn cgroup(&self, group: Group) -> Option<CgroupId> {
        self.entries[group.0 as usize].cgroup
    }

    /// One socket of `cgroup` entered `state`: the group it is counted in.
    pub fn enter(&mut self, cgroup: Option<CgroupId>, state: TcpState) -> Group {
        let group = self.group_of(cgroup);
        self.entries[group.0 as usize].counts[state] += 1;
        group
    }

    /// One socket counted in `group` in `state` went.
    #[inline]
    pub fn leave(&mut self, group: Group, state: TcpState) {
        let n = &mut self.entries[group.0 as usize].counts[state];
        debug_assert!(*n > 0, "a socket left a state it was not counted in");
        *n = n.saturating_sub(1);
    }

    /// A socket counted in (`group`, `old`) is now of `cgroup` in `new`: its group now. No
    /// lookup when its cgroup stayed, as it does on nearly every transition.
    #[inline]
    pub fn moved(
        &mut self,
        (group, old): (Group, TcpState),
        (cgroup, new): (Option<CgroupId>, TcpState),
    ) -> Group {
        if self.cgroup(group) != cgroup {
            self.leave(group, old);
            return self.enter(cgroup, new);
        }
        if old != new {
            self.leave(group, old);
            self.entries[group.0 as usize].counts[new] += 1;
        }
        group
    }

    fn group_of(&mut self, cgroup: Option<CgroupId>) -> Group {
        if let Some((last, group)) = self.last
            && last == cgroup
        {
            return group;
        }
        if let Some(&group) = self.index.get(&cgroup) {
            self.last = Some((cgroup, group));
            return group;
        }
        let entry = Entry {
            cgroup,
            counts: PerState::default(),
        };
        let group = if let Some(group) = self.free.pop() {
            self.entries[group.0 as usize] = entry;
            group
        } else {
            self.entries.push(entry);
            Group(u32::try_from(self.entries.len() - 1).expect("fewer cgroups than sockets"))
        };
        self.index.insert(cgroup, group);
        self.last = Some((cgroup, group));
        group
    }

    /// Forgets the cgroups left without a socket (no socket then holds their group).
    pub fn prune(&mut self) {
        self.last = None;
        let entries = &self.entries;
        let free = &mut self.free;
        self.index.retain(|_, group| {
            let keep = !entries[group.0 as usize].is_empty();
            if !keep {
                free.push(*group);
            }
            keep
        });
    }

    /// The cgroups with a socket now.
    pub fn iter(&self) -> impl Iterator<Item = (Option<CgroupId>, &PerState<u64>)> {
        self.index
            .values()
            .map(|g| &self.entries[g.0 as usize])
            .filter(|e| !e.is_empty())
            .map(|e| (e.cgroup, &e.counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(by: &ByCgroup) -> Vec<(Option<CgroupId>, u64, u64, u64)> {
        let mut got: Vec<_> = by
            .iter()
            .map(|(c, p)| {
                (
                    c,
                    p[TcpState::SynSent],
                    p[TcpState::Established],
                    p[TcpState::Listen],
                )
            })
            .collect();
        got.sort_unstable();
        got
    }

    #[test]
    fn counts_follow_moves_and_empty_cgroups_go() {
        let (a, b) = (CgroupId::new(1), CgroupId::new(2));
        let mut by = ByCgroup::default();
        let ga = by.enter(a, TcpState::SynSent);
        let ga2 = by.moved((ga, TcpState::SynSent), (a, TcpState::Established));
        assert_eq!(ga2, ga, "same cgroup, same group");
        let gn = by.enter(None, TcpState::Listen);
        let gb = by.moved((gn, TcpState::Listen), (b, TcpState::Listen));
        assert_eq!(by.cgroup(gb), b);
        assert_eq!(counted(&by), [(a, 0, 1, 0), (b, 0, 0, 1)]);
        by.leave(ga2, TcpState::Established);
        by.leave(gb, TcpState::Listen);
        assert_eq!(by.iter().count(), 0);
        assert_eq!(by.index.len(), 3, "kept until pruned");
        by.prune();
        assert!(by.index.is_empty());
    }

    #[test]
    fn a_pruned_group_is_reused_for_the_next_cgroup() {
        let (a, b) = (CgroupId::new(1), CgroupId::new(2));
        let mut by = ByCgroup::default();
        let ga = by.enter(a, TcpState::Established);
        let gb = by.enter(b, TcpState::Established);
        by.leave(ga, TcpState::Established);
        by.prune();
        let gc = by.enter(CgroupId::new(3), TcpState::CloseWait);
        assert_eq!(gc, ga, "the freed entry is reused");
        assert_eq!(by.cgroup(gc), CgroupId::new(3));
        assert_eq!(by.cgroup(gb), b, "a group still counted keeps its cgroup");
        assert_eq!(by.entries.len(), 2);
    }

    #[test]
    fn the_last_cgroup_looked_up_is_looked_up_again_after_a_prune() {
        let (a, c) = (CgroupId::new(1), CgroupId::new(3));
        let mut by = ByCgroup::default();
        let ga = by.enter(a, TcpState::Established);
        by.leave(ga, TcpState::Established);
        by.prune();
        // `a` was the last looked up, and its entry is free now.
        let ga = by.enter(a, TcpState::Established);
        let gc = by.enter(c, TcpState::Established);
        assert_ne!(ga, gc);
        assert_eq!((by.cgroup(ga), by.cgroup(gc)), (a, c));
        assert_eq!(
            counted(&by),
            [(a, 0, 1, 0), (c, 0, 1, 0)],
            "each counted in its own entry"
        );
    }
}
