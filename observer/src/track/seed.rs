//! Sockets known from sock_diag: seeding at start-up, and reconciliation that drops entries
//! whose end was lost, corrects states whose change was lost, and adds sockets whose start was.
//!
//! A dump takes time (seconds at a million sockets) while events keep coming, so it is applied
//! as it arrives, a part at a time ([`Tracker::reconcile_listed`]), each part once the events
//! from before it was dumped have been applied; then the tracker is swept for what no dump
//! listed ([`Tracker::reconcile_sweep`]). Only what the event stream has not touched since the
//! dump began changes: a socket that changed state since then is left as it is, and a socket
//! that closed since then (which the dump may still list) is never added back.

use observer_common::TcpState;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    Tracker, Tuple,
    packed::hash_tuple,
    table::{Conn, ConnFlags, SweepEntry},
    timewait_table::Tw,
};
use crate::event::Netns;
use crate::event::{CgroupId, Task};

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
    /// The socket's cgroup, as sock_diag reports it (full sockets only).
    pub cgroup: Option<CgroupId>,
}

/// What a reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Listed sockets not added because they closed after the dump began: the event stream
    /// closed them, or the dump listed them closing (without their local port).
    pub closed_during_dump: u64,
    /// Tracked sockets no dump listed that the kernel still held when asked for them by their
    /// addresses: a dump under churn skips sockets. Kept as they were.
    pub missed_by_dump: u64,
    /// Connections a dump listed twice (it repeats sockets under churn as well): taken once.
    pub listed_twice: u64,
}

/// A tracked socket no dump of a reconciliation listed, in a namespace dumped completely and
/// untouched since the dump began. It is dropped only once the kernel confirms it is gone
/// ([`Tracker::drop_gone`]): a dump can skip a socket that stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unlisted {
    pub key: u64,
    /// In the timewait table rather than the socket table.
    pub timewait: bool,
    /// A listener.
    pub listening: bool,
    pub tuple: Tuple,
}

/// Closes seen while a dump is in flight, so that applying the dump does not add back what has
/// already gone. Bounded: past [`MAX_CLOSED_DURING_DUMP`], the dump adds nothing more.
pub(super) struct DumpWindow {
    started_ns: u64,
    /// Hashes of the tuples closed since `started_ns`, of their addresses (a collision, or the
    /// same addresses closed in another namespace, only skips an addition).
    closed: FxHashSet<u64>,
    overflowed: bool,
}

/// At most this many closes are remembered per dump (16 bytes each).
const MAX_CLOSED_DURING_DUMP: usize = 1 << 21;

/// A connecting socket's transitions carry no local port until connect() has bound one (the
/// kernel sets SYN_SENT first): such sockets are matched to the dump by namespace and remote end.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Connecting {
    netns: Option<Netns>,
    remote: std::net::SocketAddr,
}

/// Where a sweep is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sweep {
    Sockets(usize),
    Timewaits(usize),
    Done,
}

/// A reconciliation in progress: begun with [`Tracker::begin_reconcile`], fed what the dumps
/// list, swept, then ended with [`Tracker::end_reconcile`].
pub struct Reconciliation {
    /// Marks what this reconciliation's dumps listed.
    mark: u16,
    started_ns: u64,
    /// Connecting sockets listed, per (namespace, remote end).
    connecting: FxHashMap<Connecting, usize>,
    sweep: Sweep,
    /// What the sweep found unlisted so far, not yet confirmed gone.
    unlisted: Vec<Unlisted>,
    pub outcome: ReconcileOutcome,
}

impl Reconciliation {
    /// `CLOCK_MONOTONIC` ns when its dump began.
    #[must_use]
    pub const fn started_ns(&self) -> u64 {
        self.started_ns
    }

    /// How many unlisted sockets the sweep has found since they were last taken.
    #[must_use]
    pub fn unlisted_len(&self) -> usize {
        self.unlisted.len()
    }

    /// The unlisted sockets found so far, for the kernel to confirm (see [`Tracker::drop_gone`]).
    pub fn take_unlisted(&mut self) -> Vec<Unlisted> {
        std::mem::take(&mut self.unlisted)
    }
}

impl Tracker {
    /// Starts a reconciliation with a sock_diag dump that begins now, at `started_ns`: from
    /// now on, closes are remembered until [`Tracker::end_reconcile`].
    pub fn begin_reconcile(&mut self, started_ns: u64) -> Reconciliation {
        // 0 is what a socket inserted by an event carries: never a reconciliation's mark.
        self.reconcile_mark = self.reconcile_mark.checked_add(1).unwrap_or(1);
        self.dump_window = Some(DumpWindow {
            started_ns,
            closed: FxHashSet::default(),
            overflowed: false,
        });
        Reconciliation {
            mark: self.reconcile_mark,
            started_ns,
            connecting: FxHashMap::default(),
            sweep: Sweep::Sockets(0),
            unlisted: Vec::new(),
            outcome: ReconcileOutcome::default(),
        }
    }

    /// Remembers a close seen while a dump is in flight.
    pub(super) fn note_closed(&mut self, tuple: &Tuple, at_ns: u64) {
        if let Some(w) = &mut self.dump_window
            && at_ns >= w.started_ns
        {
            if w.closed.len() >= MAX_CLOSED_DURING_DUMP {
                w.overflowed = true;
            } else {
                w.closed.insert(hash_tuple(tuple));
            }
        }
    }

    fn closed_during_dump(&self, tuple: &Tuple) -> bool {
        self.dump_window
            .as_ref()
            .is_some_and(|w| w.overflowed || w.closed.contains(&hash_tuple(tuple)))
    }

    /// Takes in one socket a dump listed. Every event from before it was dumped must have been
    /// applied: then a tracked socket untouched since the dump began is in the state the dump
    /// says, unless a change was lost.
    pub fn reconcile_listed(&mut self, r: &mut Reconciliation, s: &SeedSocket) {
        let started_ns = r.started_ns;
        let untouched = |since_ns: u64| since_ns < started_ns;
        // The kernel fills a dump's replies after it has let go of the hash chain, and a
        // socket closing meanwhile releases its local port before its state becomes CLOSE:
        // listed in its last state with port 0, it is a socket that has just gone.
        if s.tuple.local.port() == 0 {
            r.outcome.closed_during_dump += 1;
            return;
        }
        match s.state {
            TcpState::SynSent => {
                *r.connecting
                    .entry(Connecting {
                        netns: s.tuple.netns,
                        remote: s.tuple.remote,
                    })
                    .or_default() += 1;
                self.mark_one(r.mark, &s.tuple, s.state);
                return;
            }
            // Request sockets are not full sockets, and a closed one is gone: neither is added.
            TcpState::SynRecv | TcpState::NewSynRecv | TcpState::Close => {
                self.mark_one(r.mark, &s.tuple, s.state);
                return;
            }
            _ => {}
        }
        if s.timewait {
            if let Some(key) = self.timewaits.table.key_of(&s.tuple) {
                self.timewaits.table.set_mark(key, r.mark);
                if let Some(mut tw) = self.timewaits.table.get_mut(key)
                    && untouched(tw.touched_ns)
                    && tw.substate != s.state
                    // FIN_WAIT2 -> TIME_WAIT never goes back: a dump that lists FIN_WAIT2
                    // raced the peer's FIN, which the stream showed before the socket got it.
                    && !(tw.substate == TcpState::TimeWait && s.state == TcpState::FinWait2)
                {
                    tw.substate = s.state;
                    tw.substate_since_ns = r.started_ns;
                    tw.touched_ns = r.started_ns;
                    tw.lower_bound = true;
                    r.outcome.corrected += 1;
                }
                return;
            }
            let full: Vec<u64> = self.sockets.keys_of(&s.tuple).collect();
            if !full.is_empty() {
                // Its full socket's close was lost: the connection now waits in a timewait
                // socket. One touched since the dump began is left to its events.
                for key in full {
                    if self.sockets.get(key).is_some_and(|c| untouched(c.since_ns)) {
                        self.became_timewait(r, key, s);
                    }
                }
                return;
            }
        } else {
            if let Some(key) = self.mark_one(r.mark, &s.tuple, s.state) {
                self.learn_cgroup(key, s.cgroup);
                self.correct(r, key, s.state);
                return;
            }
            // Only listeners share addresses: a connection this reconciliation has already
            // marked was listed twice (a dump under churn repeats sockets as well as skipping
            // them), and is not added a second time.
            if s.state != TcpState::Listen && self.sockets.keys_of(&s.tuple).next().is_some() {
                r.outcome.listed_twice += 1;
                return;
            }
            if let Some(key) = self.timewaits.table.key_of(&s.tuple) {
                let Some(tw) = self.timewaits.table.get(key) else {
                    return;
                };
                if !untouched(tw.touched_ns) {
                    return;
                }
                // The kernel has a full socket on this tuple now: the timewait socket's end
                // was lost.
                self.timewaits.remove_unseen(key);
                r.outcome.stale_timewait += 1;
            }
        }
        if self.closed_during_dump(&s.tuple) {
            r.outcome.closed_during_dump += 1;
            return;
        }
        if self.add_seeded(r.mark, s) {
            r.outcome.added += 1;
        }
    }

    /// Marks one tracked socket with this tuple that this reconciliation has not marked yet, a
    /// listener if the dump `listed` one in LISTEN and a connection otherwise; returns its key. With none, a socket tracked without a namespace (first seen after its
    /// birth, by a transition that carried none) with these addresses is taken to be it, and
    /// learns its namespace.
    fn mark_one(&mut self, mark: u16, tuple: &Tuple, listed: TcpState) -> Option<u64> {
        // A listener is never the same socket as a connection, though a connection's first
        // transition out of its listener carries the listener's addresses (the kernel sets the
        // child's own just after it): one whose next transition was lost still has them.
        let listening = listed == TcpState::Listen;
        let unmarked = |k: &u64| {
            self.sockets.mark_of(*k) != Some(mark)
                && self
                    .sockets
                    .get(*k)
                    .is_some_and(|c| (c.state == TcpState::Listen) == listening)
        };
        let exact = self.sockets.keys_of(tuple).find(unmarked);
        let key = match exact {
            Some(key) => key,
            None if tuple.netns.is_some() => {
                let unplaced = Tuple {
                    netns: None,
                    ..*tuple
                };
                let key = self.sockets.keys_of(&unplaced).find(unmarked)?;
                if let Some(mut c) = self.sockets.get_mut(key) {
                    c.tuple.netns = tuple.netns;
                }
                key
            }
            None => return None,
        };
        self.sockets.set_mark(key, mark);
        Some(key)
    }

    /// The cgroup sock_diag lists for a tracked socket that has none: the program reads it only
    /// at a socket's birth, so one first seen later (its birth lost) learns it here.
    fn learn_cgroup(&mut self, key: u64, cgroup: Option<CgroupId>) {
        if cgroup.is_none()
            || self
                .sockets
                .find(key)
                .is_none_or(|at| self.sockets.known_at(at).cgroup.is_some())
        {
            return;
        }
        if let Some(mut c) = self.sockets.get_mut(key) {
            c.cgroup = cgroup;
        }
    }

    /// A listed socket's state, when the tracked one is untouched since the dump began and in
    /// another state: a change was lost. It is in the kernel's state from (at least) the dump.
    fn correct(&mut self, r: &mut Reconciliation, key: u64, state: TcpState) {
        let Some(mut c) = self.sockets.get_mut(key) else {
            return;
        };
        if c.since_ns >= r.started_ns || c.state == state {
            return;
        }
        c.prev = c.state;
        c.state = state;
        c.since_ns = r.started_ns;
        c.flags |= ConnFlags::SEEDED;
        r.outcome.corrected += 1;
    }

    /// The full socket `key` is a timewait socket in the kernel: moves it there.
    fn became_timewait(&mut self, r: &mut Reconciliation, key: u64, s: &SeedSocket) {
        let Some(c) = self.sockets.remove(key) else {
            return;
        };
        self.retransmits.by_sock.remove(&key);
        let tw_key = self.next_seed_key();
        let tw = Tw {
            substate: s.state,
            tuple: c.tuple,
            substate_since_ns: r.started_ns,
            lower_bound: true,
            owner: c.owner,
            cgroup: c.cgroup,
            timeout_ns: None,
            cookie: s.cookie,
            touched_ns: r.started_ns,
        };
        if self.seed_timewait(tw_key, tw, r.mark) {
            r.outcome.corrected += 1;
        }
    }

    /// Tracks a listed socket that is not tracked, from the dump's start, as a lower bound.
    fn add_seeded(&mut self, mark: u16, s: &SeedSocket) -> bool {
        let started_ns = self
            .dump_window
            .as_ref()
            .map_or(self.now_ns, |w| w.started_ns);
        let key = self.next_seed_key();
        if s.timewait {
            let tw = Tw {
                substate: s.state,
                tuple: s.tuple,
                substate_since_ns: started_ns,
                lower_bound: true,
                owner: None,
                cgroup: s.cgroup,
                timeout_ns: None,
                cookie: s.cookie,
                touched_ns: started_ns,
            };
            let added = self.seed_timewait(key, tw, mark);
            self.stats.seeded += u64::from(added);
            return added;
        }
        let conn = Conn {
            state: s.state,
            prev: s.state,
            flags: ConnFlags::SEEDED | ConnFlags::SYNTHETIC_KEY,
            since_ns: started_ns,
            first_ns: started_ns,
            owner: s.owner,
            tuple: s.tuple,
            cgroup: s.cgroup,
        };
        if self.sockets.insert_marked(key, conn, mark).is_some() {
            self.stats.evicted += 1;
        }
        self.stats.seeded += 1;
        true
    }

    fn next_seed_key(&mut self) -> u64 {
        let key = self.next_seed_key;
        self.next_seed_key += 1;
        key
    }

    /// Sweeps up to `budget` tracked sockets for those no dump of this reconciliation listed:
    /// in a namespace that was dumped completely (`dumped`) and untouched since the dump began,
    /// their end was lost, unless the dump skipped them. They are gathered for the kernel to
    /// confirm ([`Reconciliation::take_unlisted`], then [`Tracker::drop_gone`]). Returns true
    /// once every socket has been looked at.
    pub fn reconcile_sweep(
        &mut self,
        r: &mut Reconciliation,
        dumped: &FxHashSet<Netns>,
        budget: usize,
    ) -> bool {
        let in_scope = |e: SweepEntry| {
            e.netns.is_some_and(|n| dumped.contains(&n))
                && e.since_ns < r.started_ns
                && e.mark != r.mark
        };
        let mut left = budget;
        while left > 0 {
            left -= 1;
            match r.sweep {
                Sweep::Sockets(i) if i >= self.sockets.slot_count() => {
                    r.sweep = Sweep::Timewaits(0);
                }
                Sweep::Sockets(i) => {
                    r.sweep = Sweep::Sockets(i + 1);
                    // Most are in no scope (listed, or changed since): those are not unpacked.
                    if !self.sockets.sweep_entry(i).is_some_and(in_scope) {
                        continue;
                    }
                    let Some((key, c, _)) = self.sockets.at(i) else {
                        continue;
                    };
                    if c.state == TcpState::SynSent && c.tuple.local.port() == 0 {
                        let k = Connecting {
                            netns: c.tuple.netns,
                            remote: c.tuple.remote,
                        };
                        if let Some(n) = r.connecting.get_mut(&k).filter(|n| **n > 0) {
                            *n -= 1;
                            continue;
                        }
                    }
                    r.unlisted.push(Unlisted {
                        key,
                        timewait: false,
                        listening: c.state == TcpState::Listen,
                        tuple: c.tuple,
                    });
                }
                Sweep::Timewaits(i) if i >= self.timewaits.table.slot_count() => {
                    r.sweep = Sweep::Done;
                }
                Sweep::Timewaits(i) => {
                    r.sweep = Sweep::Timewaits(i + 1);
                    let Some((key, entry)) = self.timewaits.table.sweep_entry(i) else {
                        continue;
                    };
                    // A cancel waiting for its restart or expiry concludes by itself.
                    if in_scope(entry)
                        && !self.timewaits.is_cancelled(key)
                        && let Some(tw) = self.timewaits.table.get(key)
                    {
                        r.unlisted.push(Unlisted {
                            key,
                            timewait: true,
                            listening: false,
                            tuple: tw.tuple,
                        });
                    }
                }
                Sweep::Done => return true,
            }
        }
        r.sweep == Sweep::Done
    }

    /// Drops the unlisted sockets the kernel no longer holds (`gone` true) that nothing has
    /// touched since they were found: their end was lost. The others were skipped by the dump.
    pub fn drop_gone(&mut self, r: &mut Reconciliation, unlisted: &[Unlisted], gone: &[bool]) {
        for (u, &gone) in unlisted.iter().zip(gone) {
            if !gone {
                r.outcome.missed_by_dump += 1;
                continue;
            }
            // An event may have changed or ended it since the sweep (the key may even hold a
            // new socket by now): then it is not stale.
            let untouched = |e: SweepEntry| e.since_ns < r.started_ns && e.mark != r.mark;
            if u.timewait {
                if self
                    .timewaits
                    .table
                    .sweep_entry_of(u.key)
                    .is_some_and(untouched)
                    && !self.timewaits.is_cancelled(u.key)
                    && self.timewaits.remove_unseen(u.key).is_some()
                {
                    r.outcome.stale_timewait += 1;
                }
            } else if self.sockets.sweep_entry_of(u.key).is_some_and(untouched) {
                self.sockets.forget(u.key);
                self.retransmits.by_sock.remove(&u.key);
                r.outcome.stale += 1;
            }
        }
    }

    /// Ends a reconciliation: closes are no longer remembered. Returns what it changed.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "taken so that a reconciliation cannot be fed after its end"
    )]
    pub fn end_reconcile(&mut self, r: Reconciliation, now_ns: u64) -> ReconcileOutcome {
        self.dump_window = None;
        self.now_ns = self.now_ns.max(now_ns);
        self.stats.reconciled_stale += r.outcome.stale;
        self.stats.corrected += r.outcome.corrected;
        self.stats.missed_by_dump += r.outcome.missed_by_dump;
        r.outcome
    }

    /// A whole reconciliation with one dump, applied at once (every event up to its end
    /// applied first): for tests and tools; the daemon applies dumps as they arrive.
    pub fn reconcile(
        &mut self,
        dump: &[SeedSocket],
        dumped: &FxHashSet<Netns>,
        dump_started_ns: u64,
        now_ns: u64,
    ) -> ReconcileOutcome {
        let mut r = self.begin_reconcile(dump_started_ns);
        for s in dump {
            self.reconcile_listed(&mut r, s);
        }
        while !self.reconcile_sweep(&mut r, dumped, usize::MAX) {}
        // The dump given is the whole truth: what it does not list is gone.
        let unlisted = r.take_unlisted();
        self.drop_gone(&mut r, &unlisted, &vec![true; unlisted.len()]);
        self.end_reconcile(r, now_ns)
    }

    /// Tracks the sockets of a start-up dump that are not tracked yet: a reconciliation that
    /// finds nothing to drop. Their ages are lower bounds. Returns how many were added.
    pub fn seed(&mut self, sockets: &[SeedSocket], dump_started_ns: u64) -> u64 {
        let dumped = sockets.iter().filter_map(|s| s.tuple.netns).collect();
        self.reconcile(sockets, &dumped, dump_started_ns, dump_started_ns)
            .added
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
        let Some(key) = self.sockets.keys_of(tuple).find(|&k| {
            self.sockets.get(k).is_some_and(|c| {
                c.has(ConnFlags::SEEDED) && c.state == state && since_ns < c.since_ns
            })
        }) else {
            return false;
        };
        let Some(mut c) = self.sockets.get_mut(key) else {
            return false;
        };
        c.since_ns = since_ns;
        c.first_ns = c.first_ns.min(since_ns);
        if !lower_bound {
            c.flags &= !ConnFlags::SEEDED;
        }
        true
    }

    /// A transition for an unknown socket: if sock_diag told us about it, it is that socket.
    /// A transition after a socket's birth carries no namespace: it is then the one socket
    /// sock_diag listed with its addresses, in whatever namespace; with two or more, none is
    /// taken.
    pub(super) fn adopt_seeded(&mut self, sock: u64, tuple: &Tuple) {
        let seeded = |k: &u64| {
            self.sockets
                .get(*k)
                .is_some_and(|c| c.has(ConnFlags::SYNTHETIC_KEY))
        };
        let key = if tuple.netns.is_some() {
            self.sockets.keys_of(tuple).find(seeded)
        } else {
            let mut candidates = self.sockets.keys_anywhere(tuple).filter(seeded);
            match (candidates.next(), candidates.next()) {
                (Some(key), None) => Some(key),
                _ => None,
            }
        };
        let Some(key) = key else {
            return;
        };
        let mark = self.sockets.mark_of(key).unwrap_or(0);
        if let Some(mut conn) = self.sockets.remove(key) {
            conn.flags &= !ConnFlags::SYNTHETIC_KEY;
            if self.sockets.insert_marked(sock, conn, mark).is_some() {
                self.stats.evicted += 1;
            }
        }
    }
}
/// What the last reconciliation did, and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LastReconciliation {
    #[serde(flatten)]
    pub outcome: ReconcileOutcome,
    /// Sockets its dumps listed, and in how many namespaces.
    pub listed: u64,
    pub namespaces: usize,
    /// How long it took, and when it ended (`CLOCK_MONOTONIC` ns).
    pub took_ns: u64,
    pub ended_ns: u64,
    /// The CPU time of its threads (the dumps, in the kernel and here, and applying them).
    pub cpu_ns: u64,
}
