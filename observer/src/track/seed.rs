//! Sockets known from sock_diag: seeding at start-up, and reconciliation that drops entries
//! whose end was lost, corrects states whose change was lost, and adds sockets whose start was.
//!
//! A dump takes time (seconds at a million sockets) while events keep coming, so it is stale
//! when it is applied. Reconciliation therefore changes only what the event stream has not
//! touched since the dump began: a socket that changed state since then is left as it is, and
//! a socket that closed since then (which the dump may still list) is never added back.

use observer_common::TcpState;
use rustc_hash::{FxHashMap, FxHashSet};

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
    /// The socket's cookie (matches a timewait socket's timer records to it).
    pub cookie: u64,
}

/// What a reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Sockets sock_diag lists that were not tracked (their start was before the daemon, or
    /// lost), now tracked with lower-bound ages.
    pub added: u64,
    /// Tracked sockets sock_diag no longer lists: their end was lost.
    pub stale: u64,
    /// The same for timewait sockets (counted as ended, cause `unseen`).
    pub stale_timewait: u64,
    /// Tracked sockets sock_diag lists in another state: a change was lost. Now in the
    /// kernel's state, with a lower-bound age.
    pub corrected: u64,
    /// Listed sockets not added because the event stream closed them after the dump began.
    pub closed_during_dump: u64,
}

/// Closes seen while a dump is in flight, so that applying the dump does not add back what has
/// already gone. Bounded: past [`MAX_CLOSED_DURING_DUMP`], the dump adds nothing.
pub(super) struct DumpWindow {
    started_ns: u64,
    /// Hashes of the tuples closed since `started_ns` (a collision only skips an addition).
    closed: FxHashSet<u64>,
    overflowed: bool,
}

/// At most this many closes are remembered per dump (16 bytes each in the set).
const MAX_CLOSED_DURING_DUMP: usize = 1 << 21;

/// How a tracked socket compares with a dump.
#[derive(Clone, Copy)]
enum Verdict {
    Listed,
    Stale,
    Corrected(TcpState),
    /// The kernel has it as a timewait socket: the full socket's close was lost.
    BecameTimewait(TcpState, u64),
}

fn tuple_hash(tuple: &Tuple) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one(tuple)
}

/// A connecting socket's transitions carry no local port until connect() has bound one (the
/// kernel sets SYN_SENT first): such sockets are matched to the dump by namespace and remote end.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Connecting {
    netns: u32,
    remote: std::net::SocketAddr,
}

impl Tracker {
    /// Marks the start of a sock_diag dump whose result will be applied with
    /// [`Tracker::reconcile`]: from now on, closes are remembered until then.
    pub fn begin_dump(&mut self, started_ns: u64) {
        self.dump_window = Some(DumpWindow {
            started_ns,
            closed: FxHashSet::default(),
            overflowed: false,
        });
    }

    /// Remembers a close seen while a dump is in flight.
    pub(super) fn note_closed(&mut self, tuple: &Tuple, at_ns: u64) {
        if let Some(w) = &mut self.dump_window
            && at_ns >= w.started_ns
        {
            if w.closed.len() >= MAX_CLOSED_DURING_DUMP {
                w.overflowed = true;
            } else {
                w.closed.insert(tuple_hash(tuple));
            }
        }
    }

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

    /// Tracks the sockets of a start-up dump that are not tracked yet (as
    /// [`Tracker::reconcile`] does, without dropping anything). Their ages are lower bounds.
    /// Returns how many were added.
    pub fn seed(&mut self, sockets: &[SeedSocket], dump_started_ns: u64) -> u64 {
        self.add_untracked(sockets, dump_started_ns).0
    }

    /// Adds what the dump lists and the tracker does not: (added, skipped because closed since
    /// the dump began).
    fn add_untracked(&mut self, sockets: &[SeedSocket], dump_started_ns: u64) -> (u64, u64) {
        self.now_ns = self.now_ns.max(dump_started_ns);
        let window = self.dump_window.take();
        let closed_since = |tuple: &Tuple| {
            window
                .as_ref()
                .is_some_and(|w| w.overflowed || w.closed.contains(&tuple_hash(tuple)))
        };
        let mut tracked: FxHashSet<Tuple> = self.sockets.iter().map(|(_, c)| c.tuple).collect();
        tracked.extend(self.timewaits.table.iter().map(|(_, tw)| tw.tuple));
        let (mut added, mut skipped) = (0, 0);
        for s in sockets {
            // Connecting sockets are matched by their remote end only, and request sockets are
            // not full sockets: neither is added from a dump.
            if matches!(
                s.state,
                TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv | TcpState::Close
            ) || !tracked.insert(s.tuple)
            {
                continue;
            }
            if closed_since(&s.tuple) {
                skipped += 1;
                continue;
            }
            let key = self.next_seed_key;
            self.next_seed_key += 1;
            if s.timewait {
                if self.seed_timewait(key, s.tuple, s.state, s.cookie, dump_started_ns) {
                    added += 1;
                }
                continue;
            }
            let conn = Conn {
                state: s.state,
                prev: s.state,
                flags: SEEDED,
                since_ns: dump_started_ns,
                first_ns: dump_started_ns,
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
        (added, skipped)
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
    /// `dump_started_ns` on, after every event up to its end has been applied. Only what the
    /// event stream has not touched since `dump_started_ns` changes: tracked sockets the dump
    /// does not list are dropped, those it lists in another state are corrected, and listed
    /// sockets that are not tracked (and did not close meanwhile) are added.
    pub fn reconcile(
        &mut self,
        dump: &[SeedSocket],
        dumped: &FxHashSet<u32>,
        dump_started_ns: u64,
        now_ns: u64,
    ) -> ReconcileOutcome {
        let listed: FxHashMap<Tuple, &SeedSocket> = dump.iter().map(|s| (s.tuple, s)).collect();
        let mut outcome = ReconcileOutcome::default();
        let in_scope = |t: &Tuple| t.netns != 0 && dumped.contains(&t.netns);

        // Connecting sockets: per remote end, as many untouched ones may stay as the dump
        // lists (the newest); the older rest are phantoms whose end was lost.
        let mut listed_connecting: FxHashMap<Connecting, usize> = FxHashMap::default();
        for s in dump.iter().filter(|s| s.state == TcpState::SynSent) {
            *listed_connecting
                .entry(Connecting {
                    netns: s.tuple.netns,
                    remote: s.tuple.remote,
                })
                .or_default() += 1;
        }
        let mut connecting: FxHashMap<Connecting, Vec<(u64, u64)>> = FxHashMap::default();
        let mut verdicts: Vec<(u64, Verdict)> = Vec::new();
        for (key, c) in self.sockets.iter() {
            if !in_scope(&c.tuple) || c.since_ns >= dump_started_ns {
                continue;
            }
            if c.state == TcpState::SynSent && c.tuple.local.port() == 0 {
                connecting
                    .entry(Connecting {
                        netns: c.tuple.netns,
                        remote: c.tuple.remote,
                    })
                    .or_default()
                    .push((c.since_ns, key));
                continue;
            }
            let verdict = match listed.get(&c.tuple) {
                None => Verdict::Stale,
                Some(s) if s.state == TcpState::Close => Verdict::Stale,
                Some(s) if s.timewait => Verdict::BecameTimewait(s.state, s.cookie),
                // A request socket for a tracked child: the child's own entry is what counts.
                Some(s) if s.state == c.state || s.state == TcpState::SynRecv => Verdict::Listed,
                Some(s) => Verdict::Corrected(s.state),
            };
            if !matches!(verdict, Verdict::Listed) {
                verdicts.push((key, verdict));
            }
        }
        for (k, mut socks) in connecting {
            let keep = listed_connecting.get(&k).copied().unwrap_or(0);
            socks.sort_unstable_by_key(|&(since, _)| std::cmp::Reverse(since));
            verdicts.extend(
                socks
                    .into_iter()
                    .skip(keep)
                    .map(|(_, key)| (key, Verdict::Stale)),
            );
        }
        for (key, verdict) in verdicts {
            self.apply_verdict(key, verdict, dump_started_ns, &mut outcome);
        }

        // Timewait sockets the dump does not list ended unseen; a pending cancel is left to
        // conclude by itself.
        let stale: Vec<u64> = self
            .timewaits
            .table
            .iter()
            .filter(|(key, tw)| {
                in_scope(&tw.tuple)
                    && tw.substate_since_ns < dump_started_ns
                    && !self.timewaits.is_cancelled(*key)
                    && !listed.get(&tw.tuple).is_some_and(|s| s.timewait)
            })
            .map(|(key, _)| key)
            .collect();
        for key in stale {
            if self.timewaits.remove_unseen(key).is_some() {
                outcome.stale_timewait += 1;
            }
        }

        self.now_ns = self.now_ns.max(now_ns);
        let (added, skipped) = self.add_untracked(dump, dump_started_ns);
        outcome.added = added;
        outcome.closed_during_dump = skipped;
        self.stats.reconciled_stale += outcome.stale;
        self.stats.corrected += outcome.corrected;
        outcome
    }

    fn apply_verdict(
        &mut self,
        key: u64,
        verdict: Verdict,
        dump_started_ns: u64,
        outcome: &mut ReconcileOutcome,
    ) {
        match verdict {
            Verdict::Listed => {}
            Verdict::Stale => {
                if let Some(c) = self.sockets.remove(key) {
                    self.count_state(c.state, -1);
                    self.forget_seeded(key, &c.tuple);
                    self.retransmits.by_sock.remove(&key);
                    outcome.stale += 1;
                }
            }
            Verdict::Corrected(state) => {
                let Some(mut c) = self.sockets.get_mut(key) else {
                    return;
                };
                let old = c.state;
                c.prev = old;
                c.state = state;
                c.since_ns = dump_started_ns;
                c.flags |= SEEDED;
                drop(c);
                self.count_state(old, -1);
                self.count_state(state, 1);
                outcome.corrected += 1;
            }
            Verdict::BecameTimewait(substate, cookie) => {
                let Some(c) = self.sockets.remove(key) else {
                    return;
                };
                self.count_state(c.state, -1);
                self.forget_seeded(key, &c.tuple);
                self.retransmits.by_sock.remove(&key);
                let tw_key = self.next_seed_key;
                self.next_seed_key += 1;
                self.seed_timewait(tw_key, c.tuple, substate, cookie, dump_started_ns);
                if let Some(mut tw) = self.timewaits.table.get_mut(tw_key) {
                    tw.owner = c.owner;
                }
                outcome.corrected += 1;
            }
        }
    }

    fn forget_seeded(&mut self, key: u64, tuple: &Tuple) {
        if self.seeded_by_tuple.get(tuple) == Some(&key) {
            self.seeded_by_tuple.remove(tuple);
        }
    }
}
