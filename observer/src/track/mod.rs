//! The connection tracker: fed decoded events, queried for state. Pure: no I/O, no clock of
//! its own (time comes from the events and from [`Tracker::advance`]), so recorded event
//! sequences test it exactly.
//!
//! Third step of the pipeline: load -> decode -> track -> output.

mod by_cgroup;
mod close_wait;
pub mod durations;
pub mod ends;
mod packed;
mod queries;
mod recent;
mod report;
pub mod resets;
pub mod retransmits;
mod seed;
mod table;
mod timewait;
mod timewait_table;
mod transitions;
mod usage;

use observer_common::TcpState;
use rustc_hash::FxHashMap;

pub use ends::{EndCause, EndCount, EndCounts};
pub use queries::{
    CgroupSockets, CloseWaitEntry, HalfOpenSuspect, NeverAccepted, OwnerSockets, TimewaitEntry,
    TrackedSocket,
};
pub use report::{Note, Observation, Report, RetransmitPhase, TimewaitEnd};
pub use resets::ResetClass;
pub use retransmits::{Recovered, RetransmitCounts, Retransmitting};
pub use seed::{LastReconciliation, ReconcileOutcome, Reconciliation, SeedSocket, Unlisted};
pub use timewait::TimewaitCounts;
pub use transitions::TransitionCounts;
pub use usage::{Destination, TimewaitUsage};

use crate::event::{
    CgroupId, Event, ListenerKey, Reset, Retransmit, RetransmitKind, SocketError, Task, Transition,
    Tuple,
};
use durations::StateDurations;
use recent::{Closed, RecentCloses};
use resets::{Preceding, classify};
use retransmits::{Retransmits, StreakChange};
use seed::DumpWindow;
use table::{Conn, ConnFlags, Known, SlotId, Table};
use timewait::Timewaits;

/// Default cap on tracked sockets (and, separately, on tracked timewait sockets).
pub const DEFAULT_MAX_SOCKETS: usize = 1 << 20;

/// How long a just-closed socket is remembered, to explain an RST that follows its close and to
/// notice a close that should have left a timewait socket. Also the grace for a timewait
/// timer's cancel to be followed by its restart or expiry.
pub const GRACE_NS: u64 = 1_000_000_000;

/// Default time a connection retransmits without progress before it is a half-open suspect.
pub const DEFAULT_HALF_OPEN_AFTER_NS: u64 = 10_000_000_000;

/// Retransmission streaks are checked for suspects and recoveries at most this often.
const STREAK_CHECK_NS: u64 = 250_000_000;

/// At most this many (namespace, listening port) pairs get their own closed-before-accept
/// count; the rest are added to an overflow count.
const LISTENER_PORTS_CAPACITY: usize = 4096;

/// Counters of what the tracker could not know, and of what it did about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackerStats {
    /// Transitions, or new sockets at a tracked socket's kernel address (its close was lost),
    /// proving that an earlier transition was missed (the state is repaired).
    pub gaps: u64,
    /// Sockets evicted because the table was full (oldest first).
    pub evicted: u64,
    /// Timewait sockets not tracked because their table was full.
    pub timewait_untracked: u64,
    /// Sockets learnt from sock_diag (start-up seeding and reconciliation), timewait sockets
    /// included.
    pub seeded: u64,
    /// Sockets dropped because sock_diag no longer lists them: their end was lost.
    pub reconciled_stale: u64,
    /// Sockets sock_diag listed in another state than tracked (a change was lost), corrected.
    pub corrected: u64,
    /// Tracked sockets a dump did not list that the kernel still held when looked up by their
    /// addresses (a dump under churn skips sockets): kept.
    pub missed_by_dump: u64,
    /// Timewait sockets whose end was not seen (dropped by reconciliation, or their timer
    /// reused by another).
    pub timewait_end_lost: u64,
    /// Connections that should have left a timewait socket and did not.
    pub timewait_missing: u64,
    /// Timewait sockets whose full socket's close was not seen.
    pub timewait_unlinked: u64,
    /// Timewait timer restarts.
    pub timewait_restarted: u64,
    /// Timewait sockets found at their end in another substate than last seen (FIN_WAIT2 ->
    /// TIME_WAIT on a FIN from a remote peer that left the timer in its wheel bucket): their
    /// TIME_WAIT time includes the FIN_WAIT2 wait before it.
    pub timewait_substate_unseen: u64,
    /// Closed-before-accept counts that did not fit the per-port table.
    pub closed_before_accept_overflow: u64,
    /// Sockets tracked now.
    pub tracked_sockets: usize,
    /// Timewait sockets tracked now.
    pub tracked_timewait: usize,
}

/// RST counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetCounts {
    /// `[sent, received][class index]`.
    by_class: [[u64; ResetClass::ALL.len()]; 2],
    /// Sent RSTs by the kernel's reason code.
    pub by_reason: FxHashMap<u32, u64>,
}

impl ResetCounts {
    #[must_use]
    pub fn get(&self, direction: crate::event::ResetDirection, class: ResetClass) -> u64 {
        self.by_class[direction as usize][class.index()]
    }

    /// Every count: `[sent, received][class]`, classes in [`ResetClass::ALL`] order.
    #[must_use]
    pub const fn matrix(&self) -> [[u64; ResetClass::ALL.len()]; 2] {
        self.by_class
    }
}

/// Who holds a socket, as far as the tracker knows.
#[derive(Clone, Copy, Debug, Default)]
struct Holder {
    owner: Option<Task>,
    cgroup: Option<CgroupId>,
}

pub struct Tracker {
    sockets: Table,
    timewaits: Timewaits,
    /// Closes seen while a sock_diag dump is in flight.
    dump_window: Option<DumpWindow>,
    /// The last reconciliation's mark.
    reconcile_mark: u16,
    next_seed_key: u64,
    recent: RecentCloses,
    /// Listening sockets' owners, inherited by the connections they accept.
    listeners: FxHashMap<ListenerKey, Task>,
    durations: StateDurations,
    resets: ResetCounts,
    never_accepted: FxHashMap<ListenerKey, NeverAccepted>,
    retransmits: Retransmits,
    ends: EndCounts,
    half_open_after_ns: u64,
    streaks_checked_ns: u64,
    stats: TrackerStats,
    now_ns: u64,
    /// Every transition, TIME_WAIT's entry and end included (a timer restart stays in
    /// TIME_WAIT and is not one).
    transitions: TransitionCounts,
    /// Whether a transition without a [`Note`] is reported; one with a note always is.
    plain_reports: bool,
}

impl Tracker {
    #[must_use]
    pub fn new(max_sockets: usize) -> Self {
        Self {
            sockets: Table::new(max_sockets),
            timewaits: Timewaits::new(max_sockets),
            dump_window: None,
            reconcile_mark: 0,
            next_seed_key: 1,
            recent: RecentCloses::default(),
            listeners: FxHashMap::default(),
            durations: StateDurations::default(),
            resets: ResetCounts::default(),
            never_accepted: FxHashMap::default(),
            retransmits: Retransmits::default(),
            ends: EndCounts::default(),
            half_open_after_ns: DEFAULT_HALF_OPEN_AFTER_NS,
            streaks_checked_ns: 0,
            stats: TrackerStats::default(),
            now_ns: 0,
            transitions: TransitionCounts::default(),
            plain_reports: true,
        }
    }

    /// Whether transitions without a note, and timewait sockets' entries, restarts and ends,
    /// are reported (they are by default). Building the report of every transition is a tenth
    /// of the tracker's work per event; a daemon with nobody reading its reports skips it, and
    /// keeps only the notes it counts itself (RSTs, closes before accept()). Counts are the same
    /// either way.
    pub const fn report_plain_transitions(&mut self, on: bool) {
        self.plain_reports = on;
    }

    /// Transitions counted by (old, new) state.
    #[must_use]
    pub const fn transitions(&self) -> &TransitionCounts {
        &self.transitions
    }

    /// Feeds one event; what is worth showing about it is appended to `out`.
    pub fn apply(&mut self, event: &Event, out: &mut Vec<Report>) {
        self.now_ns = self.now_ns.max(event.mono_ns());
        match event {
            Event::Transition(t) => self.transition(t, out),
            Event::Reset(r) => self.reset(r, out),
            Event::Timewait(t) => self.timewait_timer(t, out),
            Event::Retransmit(r) => self.retransmit(r, out),
            Event::SocketError(e) => self.socket_error(e, out),
        }
    }

    /// How long a connection retransmits without progress before it is reported as a
    /// half-open suspect (see [`Tracker::half_open_suspects`] for any other threshold).
    pub const fn set_half_open_after(&mut self, ns: u64) {
        self.half_open_after_ns = ns;
    }

    /// Moves time forward to `now_ns` (`CLOCK_MONOTONIC`): concludes what waited for a grace
    /// period (a timewait timer cancelled and not restarted was killed; a close that left no
    /// timewait socket). Call it after draining the ring buffer.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Report>) {
        self.now_ns = self.now_ns.max(now_ns);
        self.expire_timewait_cancels(out);
        if self.now_ns.saturating_sub(self.streaks_checked_ns) >= STREAK_CHECK_NS {
            self.streaks_checked_ns = self.now_ns;
            self.check_streaks(out);
            self.sockets.prune_cgroups();
            self.timewaits.table.prune_cgroups();
        }
        let missing = &mut self.stats.timewait_missing;
        self.recent.expire(self.now_ns, |c| {
            if c.expects_timewait && !c.reset {
                *missing += 1;
            }
        });
    }

    /// The socket `t` changes, and what is known of it; none for a new socket. Found once:
    /// nothing in [`Tracker::transition`] changes the socket table before the slot is written
    /// back.
    fn socket_of(&mut self, t: &Transition) -> Option<(SlotId, Known)> {
        if t.old == TcpState::Close || (t.old == TcpState::Listen && t.new == TcpState::SynRecv) {
            // A socket address seen again from CLOSE is a new socket: the old one was freed, so
            // one still tracked there closed unseen. Under churn the kernel reuses a socket's
            // memory well within the second a timewait start waits, so this is often the only
            // sign of a lost close.
            if self.sockets.forget(t.sock) {
                self.stats.gaps += 1;
            }
            self.forget_retransmits(t.sock);
            return None;
        }
        // Not `or_else`: its closure kept the common path from being inlined (callgrind).
        let at = if let Some(at) = self.sockets.find(t.sock) {
            at
        } else {
            self.adopt_seeded(t.sock, &Tuple::of(t));
            self.sockets.find(t.sock)?
        };
        Some((at, self.sockets.known_at(at)))
    }

    fn transition(&mut self, t: &Transition, out: &mut Vec<Report>) {
        let found = self.socket_of(t);
        let known = found.as_ref().map(|(_, c)| c);
        // The program reads a socket's namespace at its birth only: a later transition takes
        // it from the socket's entry.
        let netns = t.netns.or(known.and_then(|c| c.netns));
        let tuple = Tuple {
            netns,
            ..Tuple::of(t)
        };
        if matches!(
            (t.old, t.new),
            (TcpState::SynSent, TcpState::Established) | (TcpState::Listen, TcpState::SynRecv)
        ) {
            self.end_reused_timewait(&tuple, out);
        }
        let gap = known.is_some_and(|c| c.state != t.old);
        if gap {
            self.stats.gaps += 1;
        }
        let lower_bound = known.is_some_and(|c| c.has(ConnFlags::SEEDED) && c.state == t.old);
        let previous_state_ns = known
            .filter(|_| !gap)
            .map(|c| t.mono_ns.saturating_sub(c.since_ns));
        let expects_timewait =
            t.new == TcpState::Close && matches!(t.old, TcpState::FinWait2 | TcpState::Closing);
        if let Some(ns) = previous_state_ns
            && !lower_bound
            && !expects_timewait
        {
            self.durations.record(t.old, ns);
        }
        let owner = self.owner_of(t, &tuple, known);
        if t.old == TcpState::CloseWait && t.new == TcpState::LastAck {
            self.peer_sent_fin(t, &tuple, out);
        }
        let (flags, mut note) = self.flags_of(t, &tuple, known);
        let cgroup = t.cgroup.or(known.and_then(|c| c.cgroup));

        if t.new == TcpState::Close {
            self.sockets.forget(t.sock);
            self.note_closed(&tuple, t.mono_ns);
            let streak = self.forget_retransmits(t.sock);
            if expects_timewait {
                if self.link_timewait(t, &tuple, owner, known, out) {
                    return;
                }
                if let Some(ns) = previous_state_ns
                    && !lower_bound
                {
                    self.durations.record(t.old, ns);
                }
                note = Some(Note::NoTimewait);
            }
            self.recent.remember(
                t.sock,
                Closed {
                    preceding: Preceding {
                        old: t.old,
                        new: t.new,
                    },
                    at_ns: t.mono_ns,
                    owner,
                    cgroup,
                    expects_timewait,
                    reset: false,
                    streak,
                },
            );
        } else {
            let conn = Conn {
                state: t.new,
                prev: t.old,
                flags,
                since_ns: t.mono_ns,
                first_ns: known.map_or(t.mono_ns, |c| c.first_ns),
                owner,
                tuple,
                cgroup,
            };
            match found {
                Some((at, _)) => self.sockets.store_at(at, &conn),
                None => {
                    if self.sockets.insert_absent(t.sock, conn).is_some() {
                        self.stats.evicted += 1;
                    }
                }
            }
        }
        self.transitions.add(t.old, t.new);
        if note.is_none() && !self.plain_reports {
            return;
        }
        out.push(Report::Transition {
            transition: Transition { netns, ..*t },
            seen: Observation {
                previous_state_ns,
                lower_bound,
                owner,
                cgroup,
                gap,
            },
            note,
        });
    }

    /// The socket's owner after `t`: the task itself when it drove the transition, else what
    /// was known (for an accepted child: its listener's owner). Keeps the listener index.
    fn owner_of(&mut self, t: &Transition, tuple: &Tuple, known: Option<&Known>) -> Option<Task> {
        let key = || tuple.listener();
        let inherited = match known.and_then(|c| c.owner) {
            Some(owner) => Some(owner),
            None if t.new == TcpState::SynRecv => self.listeners.get(&key()).copied(),
            None => None,
        };
        let owner_from_fd = known.is_some_and(|c| c.has(ConnFlags::OWNER_FROM_FD));
        let owner = if t.owner_context && !owner_from_fd {
            Some(t.task)
        } else {
            inherited
        };
        match (t.old, t.new) {
            (_, TcpState::Listen) => {
                if let Some(o) = owner {
                    self.listeners.insert(key(), o);
                }
            }
            (TcpState::Listen, TcpState::Close) => {
                self.listeners.remove(&key());
            }
            _ => {}
        }
        owner
    }

    /// The socket's flags after `t`, counting a connection closed before accept().
    fn flags_of(
        &mut self,
        t: &Transition,
        tuple: &Tuple,
        known: Option<&Known>,
    ) -> (ConnFlags, Option<Note>) {
        let mut note = None;
        let mut flags = known.map_or(ConnFlags::empty(), |c| c.flags);
        if matches!(t.new, TcpState::SynRecv) || matches!(t.old, TcpState::SynRecv) {
            flags |= ConnFlags::PASSIVE;
        }
        // No `struct socket` yet on a connection the peer ended: it sat in the accept queue.
        if t.old == TcpState::Established
            && t.has_socket == Some(false)
            && !t.owner_context
            && !flags.contains(ConnFlags::NEVER_ACCEPTED)
            && matches!(t.new, TcpState::CloseWait | TcpState::Close)
        {
            flags |= ConnFlags::NEVER_ACCEPTED;
            note = Some(Note::ClosedBeforeAccept);
            self.count_never_accepted(tuple.listener(), t.new == TcpState::Close);
        }
        (flags, note)
    }

    fn count_never_accepted(&mut self, listener: ListenerKey, reset: bool) {
        let full = self.never_accepted.len() >= LISTENER_PORTS_CAPACITY;
        let slot = if full && !self.never_accepted.contains_key(&listener) {
            self.stats.closed_before_accept_overflow += 1;
            return;
        } else {
            self.never_accepted.entry(listener).or_default()
        };
        if reset {
            slot.peer_reset += 1;
        } else {
            slot.peer_closed += 1;
        }
    }

    fn reset(&mut self, r: &Reset, out: &mut Vec<Report>) {
        let live = r.sock.and_then(|s| self.sockets.get(s));
        let closed = r.sock.and_then(|s| self.recent.get_mut(s));
        let (preceding, holder) = match (live, closed) {
            (Some(c), _) => (
                Some(Preceding {
                    old: c.prev,
                    new: c.state,
                }),
                Holder {
                    owner: c.owner,
                    cgroup: c.cgroup,
                },
            ),
            (None, Some(c)) => {
                c.reset = true;
                (
                    Some(c.preceding),
                    Holder {
                        owner: c.owner,
                        cgroup: c.cgroup,
                    },
                )
            }
            (None, None) => (None, Holder::default()),
        };
        let state = r
            .state
            .or(live.map(|c| c.state))
            .or(preceding.map(|p| p.new));
        let class = classify(r.direction, r.sock.is_some(), r.reason, state, preceding);
        self.resets.by_class[r.direction as usize][class.index()] += 1;
        if let Some(reason) = r.reason {
            *self.resets.by_reason.entry(reason.0).or_default() += 1;
        }
        out.push(Report::Reset {
            reset: *r,
            state,
            class,
            owner: holder.owner,
            cgroup: holder.cgroup,
        });
    }

    /// Who holds `sock`: the live socket's owner and cgroup, else the recently closed one's.
    fn holder_of_sock(&self, sock: u64) -> Holder {
        let live = self.sockets.get(sock).map(|c| Holder {
            owner: c.owner,
            cgroup: c.cgroup,
        });
        let closed = self.recent.get(sock).map(|c| Holder {
            owner: c.owner,
            cgroup: c.cgroup,
        });
        match (live, closed) {
            (Some(l), Some(c)) => Holder {
                owner: l.owner.or(c.owner),
                cgroup: l.cgroup.or(c.cgroup),
            },
            (Some(h), None) | (None, Some(h)) => h,
            (None, None) => Holder::default(),
        }
    }

    /// Stops following a closed socket's retransmissions; returns its streak, if one was on.
    fn forget_retransmits(&mut self, sock: u64) -> Option<(u32, u64)> {
        // Mostly empty: no hash of the key then.
        if self.retransmits.by_sock.is_empty() {
            return None;
        }
        self.retransmits
            .by_sock
            .remove(&sock)
            .filter(|r| r.streak > 0)
            .map(|r| (r.streak, r.last_ns.saturating_sub(r.streak_start_ns)))
    }

    fn retransmit(&mut self, r: &Retransmit, out: &mut Vec<Report>) {
        if r.kind == RetransmitKind::Synack {
            self.retransmits.synack(r);
            return;
        }
        let (change, entry) = self.retransmits.segment(r);
        let Some(entry) = entry else { return };
        let phase = match change {
            StreakChange::Began => RetransmitPhase::Began,
            StreakChange::Recovered {
                streak,
                duration_ns,
            } => RetransmitPhase::Recovered {
                retransmits: streak,
                duration_ns,
            },
            StreakChange::None => return,
        };
        let holder = self.holder_of_sock(r.sock);
        out.push(Report::Retransmits {
            sock: r.sock,
            tuple: entry.tuple,
            state: entry.state,
            owner: holder.owner,
            cgroup: holder.cgroup,
            phase,
        });
    }

    /// Reports streaks that became suspect or recovered (their next retransmission is overdue).
    fn check_streaks(&mut self, out: &mut Vec<Report>) {
        if self.retransmits.by_sock.is_empty() {
            return;
        }
        for r in self.retransmits.expire(self.now_ns) {
            let holder = self.holder_of_sock(r.sock);
            out.push(Report::Retransmits {
                sock: r.sock,
                tuple: r.entry.tuple,
                state: r.entry.state,
                owner: holder.owner,
                cgroup: holder.cgroup,
                phase: RetransmitPhase::Recovered {
                    retransmits: r.streak,
                    duration_ns: r.duration_ns,
                },
            });
        }
        for (sock, e) in self
            .retransmits
            .new_suspects(self.now_ns, self.half_open_after_ns)
        {
            let holder = self.holder_of_sock(sock);
            out.push(Report::Retransmits {
                sock,
                tuple: e.tuple,
                state: self.sockets.get(sock).map(|c| c.state).or(e.state),
                owner: holder.owner,
                cgroup: holder.cgroup,
                phase: RetransmitPhase::Suspect {
                    since_ns: e.streak_start_ns,
                    lower_bound: e.streak_lower_bound,
                    retransmits: e.streak,
                },
            });
        }
    }

    fn socket_error(&mut self, e: &SocketError, out: &mut Vec<Report>) {
        let closed = self.recent.get(e.sock).copied();
        let streak = self
            .retransmits
            .by_sock
            .get(&e.sock)
            .filter(|r| r.streak > 0)
            .map(|r| (r.streak, r.last_ns.saturating_sub(r.streak_start_ns)))
            .or_else(|| closed.and_then(|c| c.streak));
        // The state the connection ended in: an error reported after the close (a timeout
        // or a reset, since Linux 6.10) ended the state before CLOSE.
        let state = match e.state {
            Some(TcpState::Close) | None => closed
                .filter(|c| c.preceding.new == TcpState::Close)
                .map(|c| c.preceding.old)
                .or_else(|| self.sockets.get(e.sock).map(|c| c.state))
                .or(e.state),
            known => known,
        };
        let error = SocketError { state, ..*e };
        let cause = EndCause::classify(&error, streak.is_some());
        self.ends.count(cause, state);
        if cause.is_timeout() {
            self.retransmits.by_sock.remove(&e.sock);
        }
        let holder = self.holder_of_sock(e.sock);
        out.push(Report::ConnectionError {
            error,
            cause,
            owner: holder.owner,
            cgroup: holder.cgroup,
            retransmits: streak.filter(|_| cause.is_timeout()),
        });
    }
}

#[cfg(test)]
mod tests;
