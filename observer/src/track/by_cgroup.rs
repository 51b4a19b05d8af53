//! Sockets counted by cgroup and state as they change, for the per-workload gauges: no scrape
//! walks a table. An entry stays when its last socket goes (checking for that on every close
//! cost more than the counting), until [`ByCgroup::prune`], which the tracker runs four times
//! a second: beyond the cgroups with sockets, at most those of a quarter second's are kept.

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use crate::event::{CgroupId, PerState};

#[derive(Clone, Debug, Default)]
pub struct ByCgroup(FxHashMap<Option<CgroupId>, PerState<u64>>);

impl ByCgroup {
    /// One socket of `cgroup` entered `state` (`delta` 1) or left it (-1).
    #[inline]
    pub fn add(&mut self, cgroup: Option<CgroupId>, state: TcpState, delta: i64) {
        // A lookup first: the cgroup is nearly always there, and entry() costs more.
        if let Some(counts) = self.0.get_mut(&cgroup) {
            counts[state] = counts[state].saturating_add_signed(delta);
        } else if delta > 0 {
            let mut counts = PerState::default();
            counts[state] = 1;
            self.0.insert(cgroup, counts);
        }
    }

    /// Forgets the cgroups left without a socket.
    pub fn prune(&mut self) {
        self.0.retain(|_, counts| counts.values().any(|n| *n > 0));
    }

    /// A socket moved from (`cgroup`, `old`) to (`new_cgroup`, `new`): one lookup when its
    /// cgroup stayed, as it does on most transitions.
    pub fn moved(
        &mut self,
        (cgroup, old): (Option<CgroupId>, TcpState),
        (new_cgroup, new): (Option<CgroupId>, TcpState),
    ) {
        if cgroup != new_cgroup {
            self.add(cgroup, old, -1);
            self.add(new_cgroup, new, 1);
        } else if old != new
            && let Some(counts) = self.0.get_mut(&cgroup)
        {
            counts[old] = counts[old].saturating_sub(1);
            counts[new] += 1;
        }
    }

    /// The cgroups with a socket now.
    pub fn iter(&self) -> impl Iterator<Item = (Option<CgroupId>, &PerState<u64>)> {
        self.0
            .iter()
            .filter(|(_, p)| p.values().any(|n| *n > 0))
            .map(|(c, p)| (*c, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_moves_and_empty_cgroups_go() {
        let (a, b) = (CgroupId::new(1), CgroupId::new(2));
        let mut by = ByCgroup::default();
        by.add(a, TcpState::SynSent, 1);
        by.moved((a, TcpState::SynSent), (a, TcpState::Established));
        by.add(None, TcpState::Listen, 1);
        by.moved((None, TcpState::Listen), (b, TcpState::Listen));
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
        assert_eq!(got, [(a, 0, 1, 0), (b, 0, 0, 1)]);
        by.add(a, TcpState::Established, -1);
        by.add(b, TcpState::Listen, -1);
        assert_eq!(by.iter().count(), 0);
        assert_eq!(by.0.len(), 3, "kept until pruned");
        by.prune();
        assert!(by.0.is_empty());
    }
}
