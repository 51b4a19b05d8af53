//! Sockets known from sock_diag: seeding at start-up, and reconciliation that drops entries
//! whose end was lost and adds sockets whose start was.

use observer_common::TcpState;
use rustc_hash::FxHashSet;

use super::{
    Tracker, Tuple,
    table::{Conn, SEEDED},
};
use crate::decode::Task;

/// One socket as sock_diag lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedSocket {
    pub tuple: Tuple,
    pub state: TcpState,
    /// A timewait socket (TIME_WAIT, or FIN_WAIT2 waiting in a timewait socket).
    pub timewait: bool,
    pub owner: Option<Task>,
}

/// What a reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Sockets sock_diag lists that were not tracked (their start was before the daemon, or
    /// lost), now tracked with lower-bound ages.
    pub added: u64,
    /// Tracked sockets sock_diag no longer lists: their end was lost.
    pub stale: u64,
    /// The same for timewait sockets.
    pub stale_timewait: u64,
}

/// States whose tuple as the transitions report it may differ from sock_diag's (a connecting
/// socket has no local port yet; request sockets are not full sockets).
const fn comparable(state: TcpState) -> bool {
    !matches!(
        state,
        TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv | TcpState::Close
    )
}

impl Tracker {
    /// Moves a seeded socket's start back to `since_ns` when it is still in `state`: what a
    /// previous run of the daemon saw, restored after a restart. `lower_bound` says whether
    /// that earlier start was itself a lower bound. Returns whether a socket was found.
    pub fn backdate(
        &mut self,
        tuple: &Tuple,
        state: TcpState,
        since_ns: u64,
        lower_bound: bool,
    ) -> bool {
        let Some(&key) = self.seeded_by_tuple.get(tuple) else {
            return false;
        };
        match self.sockets.get_mut(key) {
            Some(mut c) if c.state == state && c.has(SEEDED) && since_ns < c.since_ns => {
                c.since_ns = since_ns;
                c.first_ns = c.first_ns.min(since_ns);
                if !lower_bound {
                    c.flags &= !SEEDED;
                }
                true
            }
            _ => false,
        }
    }

    /// Tracks sockets that are not tracked yet. Their ages are lower bounds: they existed
    /// before `now_ns`, since when is unknown. Returns how many were added.
    pub fn seed(&mut self, sockets: &[SeedSocket], now_ns: u64) -> u64 {
        self.now_ns = self.now_ns.max(now_ns);
        let mut tracked: FxHashSet<Tuple> = self.sockets.iter().map(|(_, c)| c.tuple).collect();
        tracked.extend(self.timewaits.tuples().copied());
        let mut added = 0;
        for s in sockets {
            if !comparable(s.state) || !tracked.insert(s.tuple) {
                continue;
            }
            let key = self.next_seed_key;
            self.next_seed_key += 1;
            if s.timewait {
                if self.seed_timewait(key, s.tuple, s.state, now_ns) {
                    added += 1;
                }
                continue;
            }
            let conn = Conn {
                state: s.state,
                prev: s.state,
                flags: SEEDED,
                since_ns: now_ns,
                first_ns: now_ns,
                owner: s.owner,
                tuple: s.tuple,
            };
            self.count_state(s.state, 1);
            if let Some(evicted) = self.sockets.insert(key, conn) {
                self.stats.evicted += 1;
                self.count_state(evicted.state, -1);
            }
            self.seeded_by_tuple.insert(s.tuple, key);
            added += 1;
        }
        self.stats.seeded += added;
        added
    }

    /// A transition for an unknown socket: if sock_diag told us about it, it is that socket.
    pub(super) fn adopt_seeded(&mut self, sock: u64, tuple: &Tuple) {
        let Some(key) = self.seeded_by_tuple.remove(tuple) else {
            return;
        };
        if let Some(conn) = self.sockets.remove(key)
            && let Some(evicted) = self.sockets.insert(sock, conn)
        {
            self.stats.evicted += 1;
            self.count_state(evicted.state, -1);
        }
    }

    /// Compares the tracker with a sock_diag dump of the namespaces in `dumped`, taken from
    /// `dump_started_ns` on, after every event up to its end has been applied. Entries that
    /// changed during the dump are left alone.
    pub fn reconcile(
        &mut self,
        dump: &[SeedSocket],
        dumped: &FxHashSet<u32>,
        dump_started_ns: u64,
        now_ns: u64,
    ) -> ReconcileOutcome {
        let listed: FxHashSet<Tuple> = dump.iter().map(|s| s.tuple).collect();
        let stale = |tuple: &Tuple, state: TcpState, since: u64| {
            tuple.netns != 0
                && dumped.contains(&tuple.netns)
                && since < dump_started_ns
                && comparable(state)
                && !listed.contains(tuple)
        };
        let gone = self
            .sockets
            .drain_where(|c| stale(&c.tuple, c.state, c.since_ns));
        for c in &gone {
            self.count_state(c.state, -1);
            self.seeded_by_tuple.remove(&c.tuple);
        }
        let stale_timewait = self
            .timewaits
            .drain_where(|t| stale(&t.tuple, t.substate, t.substate_since_ns));
        self.stats.reconciled_stale += gone.len() as u64;
        self.stats.timewait_end_lost += stale_timewait as u64;
        let added = self.seed(dump, now_ns);
        ReconcileOutcome {
            added,
            stale: gone.len() as u64,
            stale_timewait: stale_timewait as u64,
        }
    }
}
