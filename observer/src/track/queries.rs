//! What the tracker answers: read-only views of the sockets it holds and of its counters,
//! for the snapshot every front-end reads.

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::{
    ConnFlags, EndCounts, ResetCounts, RetransmitCounts, StateDurations, TimewaitCounts,
    TimewaitUsage, Tracker, TrackerStats,
};
use crate::{
    event::{CgroupId, ListenerKey, Netns, PerState, Task, Tuple},
    kernel::NetLimits,
};

/// The full sockets of one process (or of no known process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerSockets {
    /// The process; `None` for sockets whose owner is not known yet.
    pub owner: Option<Task>,
    pub sockets: PerState<u64>,
    pub total: u64,
    /// When its oldest CLOSE_WAIT socket entered CLOSE_WAIT (`CLOCK_MONOTONIC` ns).
    pub oldest_close_wait_ns: Option<u64>,
}

/// The sockets of one cgroup (or of none known), by state: full sockets in theirs, timewait
/// sockets in their substate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupSockets {
    pub cgroup: Option<CgroupId>,
    pub sockets: PerState<u64>,
}

/// A socket the tracker holds, as `ss` lists it: a full socket in its state, a timewait
/// socket in its substate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedSocket {
    pub tuple: Tuple,
    pub state: TcpState,
}

/// A timewait socket the tracker holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimewaitEntry {
    pub tuple: Tuple,
    /// TIME_WAIT, or FIN_WAIT2 for an orphan waiting in a timewait socket.
    pub substate: TcpState,
    /// Since when it is in that substate.
    pub since_ns: u64,
    /// The socket was there before its substate was seen to begin: `since_ns` is a lower bound.
    pub lower_bound: bool,
}

/// Why a never-accepted connection ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NeverAccepted {
    /// ESTABLISHED -> CLOSE_WAIT in the accept queue: the client gave up and closed.
    pub peer_closed: u64,
    /// ESTABLISHED -> CLOSE in the accept queue: the client reset it.
    pub peer_reset: u64,
}

impl std::ops::AddAssign for NeverAccepted {
    fn add_assign(&mut self, other: Self) {
        self.peer_closed += other.peer_closed;
        self.peer_reset += other.peer_reset;
    }
}

/// A socket in CLOSE_WAIT: the peer closed, the application has not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseWaitEntry {
    /// Tracker key (kernel socket address, or a sock_diag cookie for seeded sockets).
    pub key: u64,
    pub tuple: Tuple,
    /// `CLOCK_MONOTONIC` ns when it entered CLOSE_WAIT (or was first seen, with `lower_bound`).
    pub since_ns: u64,
    pub lower_bound: bool,
    pub owner: Option<Task>,
    /// Whether `owner` is the process holding the file descriptor (resolved through /proc).
    pub owner_from_fd: bool,
    /// The socket's cgroup, when a transition or sock_diag gave it.
    pub cgroup: Option<CgroupId>,
}

/// A connection retransmitting without progress for longer than a threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalfOpenSuspect {
    /// Tracker key (kernel socket address).
    pub key: u64,
    pub tuple: Tuple,
    pub state: Option<TcpState>,
    pub owner: Option<Task>,
    pub cgroup: Option<CgroupId>,
    /// When its retransmissions without progress began (`CLOCK_MONOTONIC` ns).
    pub since_ns: u64,
    /// The streak began before its first retransmission was seen.
    pub lower_bound: bool,
    /// Retransmissions in the streak, and of the connection in all.
    pub retransmits: u32,
    pub total_retransmits: u64,
    pub last_retransmit_ns: u64,
}

impl Tracker {
    /// Connections retransmitting without progress for at least `min_age_ns` and still
    /// retransmitting, oldest first.
    #[must_use]
    pub fn half_open_suspects(&self, min_age_ns: u64) -> Vec<HalfOpenSuspect> {
        let now = self.now_ns;
        let mut list: Vec<HalfOpenSuspect> = self
            .retransmits
            .by_sock
            .iter()
            .filter(|(_, e)| {
                e.active_at(now) && now.saturating_sub(e.streak_start_ns) >= min_age_ns
            })
            .map(|(key, e)| {
                let conn = self.sockets.get(*key);
                HalfOpenSuspect {
                    key: *key,
                    tuple: e.tuple,
                    state: conn.map(|c| c.state).or(e.state),
                    owner: conn.and_then(|c| c.owner),
                    cgroup: conn.and_then(|c| c.cgroup),
                    since_ns: e.streak_start_ns,
                    lower_bound: e.streak_lower_bound,
                    retransmits: e.streak,
                    total_retransmits: e.total,
                    last_retransmit_ns: e.last_ns,
                }
            })
            .collect();
        list.sort_by_key(|s| s.since_ns);
        list
    }

    /// Retransmission counters.
    #[must_use]
    pub const fn retransmit_counts(&self) -> RetransmitCounts {
        self.retransmits.counts
    }

    /// SYN-ACK retransmissions by (network namespace, listening port).
    #[must_use]
    pub fn synack_retransmits(&self) -> Vec<(ListenerKey, u64)> {
        self.retransmits.synacks_by_port()
    }

    /// Connections ended by an error, by cause and state.
    #[must_use]
    pub const fn connection_ends(&self) -> &EndCounts {
        &self.ends
    }

    /// Connections followed for their retransmissions now.
    #[must_use]
    pub fn retransmitting_connections(&self) -> usize {
        self.retransmits.by_sock.len()
    }

    /// Sockets now in each state. Timewait sockets count under
    /// TIME_WAIT, or FIN_WAIT2 for an orphaned FIN_WAIT2 waiting in one, as `ss` shows them.
    #[must_use]
    pub fn counts_by_state(&self) -> PerState<u64> {
        let mut counts = self.sockets.states();
        let (time_wait, fin_wait2) = self.timewaits.table.substates();
        counts[TcpState::TimeWait] += time_wait;
        counts[TcpState::FinWait2] += fin_wait2;
        counts
    }

    /// Full sockets grouped by owning process (one group for those whose owner is not known
    /// yet), counted by state, with the oldest CLOSE_WAIT of each; most sockets first. One
    /// pass over the table.
    #[must_use]
    pub fn sockets_by_owner(&self) -> Vec<OwnerSockets> {
        let mut groups: FxHashMap<Option<u32>, OwnerSockets> = FxHashMap::default();
        for (_, c, _) in (0..self.sockets.slot_count()).filter_map(|i| self.sockets.at(i)) {
            let group = groups
                .entry(c.owner.map(|o| o.pid))
                .or_insert_with(|| OwnerSockets {
                    owner: c.owner,
                    sockets: PerState::default(),
                    total: 0,
                    oldest_close_wait_ns: None,
                });
            group.sockets[c.state] += 1;
            group.total += 1;
            if c.state == TcpState::CloseWait {
                group.oldest_close_wait_ns = Some(
                    group
                        .oldest_close_wait_ns
                        .map_or(c.since_ns, |ns| ns.min(c.since_ns)),
                );
            }
        }
        let mut groups: Vec<OwnerSockets> = groups.into_values().collect();
        groups.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then_with(|| a.owner.map(|o| o.pid).cmp(&b.owner.map(|o| o.pid)))
        });
        groups
    }

    /// Every socket now in CLOSE_WAIT, oldest first (read as far as needed: the table keeps
    /// them in that order).
    pub fn close_wait(&self) -> impl Iterator<Item = CloseWaitEntry> + '_ {
        self.sockets.close_wait().map(|(key, c)| CloseWaitEntry {
            key,
            tuple: c.tuple,
            since_ns: c.since_ns,
            lower_bound: c.has(ConnFlags::SEEDED),
            owner: c.owner,
            owner_from_fd: c.has(ConnFlags::OWNER_FROM_FD),
            cgroup: c.cgroup,
        })
    }

    /// Sockets now in CLOSE_WAIT.
    #[must_use]
    pub fn close_wait_count(&self) -> u64 {
        self.sockets.states()[TcpState::CloseWait]
    }

    /// The oldest socket in CLOSE_WAIT: since when, and whether that is a lower bound.
    #[must_use]
    pub fn oldest_close_wait(&self) -> Option<(u64, bool)> {
        self.close_wait()
            .next()
            .map(|e| (e.since_ns, e.lower_bound))
    }

    /// Takes the namespaces' TIME_WAIT limits (their port ranges decide which timewait
    /// sockets hold an ephemeral port).
    pub fn set_limits(&mut self, limits: &FxHashMap<Netns, NetLimits>) {
        self.timewaits.table.set_limits(limits);
    }

    /// Timewait sockets per namespace and per destination, kept as they come and go.
    #[must_use]
    pub const fn timewait_usage(&self) -> &TimewaitUsage {
        self.timewaits.table.usage()
    }

    /// Every socket tracked now, as `ss` lists them: full sockets in their state, timewait
    /// sockets in their substate.
    #[must_use]
    pub fn sockets(&self) -> Vec<TrackedSocket> {
        let full = (0..self.sockets.slot_count())
            .filter_map(|i| self.sockets.at(i))
            .map(|(_, c, _)| TrackedSocket {
                tuple: c.tuple,
                state: c.state,
            });
        let timewait = self.timewaits.table.iter().map(|(_, t)| TrackedSocket {
            tuple: t.tuple,
            state: t.substate,
        });
        full.chain(timewait).collect()
    }

    /// Every socket tracked now, counted by cgroup and state (kept as they change: no walk of
    /// the tables).
    #[must_use]
    pub fn sockets_by_cgroup(&self) -> Vec<CgroupSockets> {
        let mut groups: FxHashMap<Option<CgroupId>, PerState<u64>> = FxHashMap::default();
        let full = self.sockets.by_cgroup().iter();
        for (cgroup, counts) in full.chain(self.timewaits.table.by_cgroup().iter()) {
            let sums = groups.entry(cgroup).or_default();
            for (state, n) in counts.iter() {
                sums[state] += n;
            }
        }
        let mut v: Vec<CgroupSockets> = groups
            .into_iter()
            .map(|(cgroup, sockets)| CgroupSockets { cgroup, sockets })
            .collect();
        v.sort_unstable_by_key(|g| g.cgroup);
        v
    }

    /// Every timewait socket now.
    #[must_use]
    pub fn timewait_sockets(&self) -> Vec<TimewaitEntry> {
        self.timewaits
            .table
            .iter()
            .map(|(_, t)| TimewaitEntry {
                tuple: t.tuple,
                substate: t.substate,
                since_ns: t.substate_since_ns,
                lower_bound: t.lower_bound,
            })
            .collect()
    }

    /// Records the process holding a socket's file descriptor (resolved through /proc), when
    /// `key` is still the CLOSE_WAIT socket of `tuple`; returns whether it was.
    pub fn set_owner_from_fd(&mut self, key: u64, tuple: &Tuple, owner: Task) -> bool {
        match self.sockets.get_mut(key) {
            Some(mut c) if c.tuple == *tuple && c.state == TcpState::CloseWait => {
                c.owner = Some(owner);
                c.flags |= ConnFlags::OWNER_FROM_FD;
                true
            }
            _ => false,
        }
    }

    #[must_use]
    pub const fn durations(&self) -> &StateDurations {
        &self.durations
    }

    #[must_use]
    pub const fn resets(&self) -> &ResetCounts {
        &self.resets
    }

    /// Connections closed before accept(), by (network namespace, listening port).
    #[must_use]
    pub fn closed_before_accept(&self) -> Vec<(ListenerKey, NeverAccepted)> {
        let mut v: Vec<_> = self.never_accepted.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Timewait sockets started, seeded and ended by cause so far: started + seeded = ended +
    /// tracked now, always.
    #[must_use]
    pub const fn timewait_counts(&self) -> TimewaitCounts {
        self.timewaits.counts
    }

    #[must_use]
    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            tracked_sockets: self.sockets.len(),
            tracked_timewait: self.timewaits.len(),
            timewait_untracked: self.timewaits.counts.untracked,
            timewait_end_lost: self.timewaits.counts.unseen,
            ..self.stats
        }
    }

    /// Heap bytes held by the socket tables, estimated from their capacities.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.sockets.heap_bytes() + self.timewaits.heap_bytes()
    }
}
