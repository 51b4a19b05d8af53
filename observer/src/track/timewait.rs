//! TIME_WAIT through the timewait socket's timer: entry (linked to the full socket that just
//! closed), restarts, and the end with its cause. Every timewait socket that is started is
//! ended exactly once, by cause, so that started = ended + open holds at all times.

use std::collections::VecDeque;

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::{
    GRACE_NS, Note, Observation, Report, TimewaitEnd, Tracker, Tuple,
    table::{Conn, Known},
    timewait_table::{TimewaitTable, TupleHash, Tw},
    transitions::StateChange,
};
use crate::event::{Task, TimerAction, TimewaitSocket, TimewaitTimer, Transition};

/// The kernel's TCP_TIMEWAIT_LEN (60 s, not tunable): the timer's length once a FIN moves a
/// timewait socket from FIN_WAIT2 to TIME_WAIT (`tcp_timewait_state_process`). That re-arming
/// often stays within the timer's wheel bucket, which no tracepoint reports, so the length
/// comes from here.
const TIMEWAIT_LEN_NS: u64 = 60_000_000_000;

/// Timewait sockets followed, and how they came and went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TimewaitCounts {
    /// Started while observed (their timer's start was seen).
    pub started: u64,
    /// Learnt from sock_diag: they existed before the daemon, or their start was lost.
    pub seeded: u64,
    pub expired: u64,
    pub killed: u64,
    /// Ended unseen: learnt from sock_diag, or from their timer or 4-tuple being taken.
    pub unseen: u64,
    /// Not followed: the table was full.
    pub untracked: u64,
}

impl TimewaitCounts {
    /// Ends by cause.
    #[must_use]
    pub const fn ended(&self, cause: TimewaitEnd) -> u64 {
        match cause {
            TimewaitEnd::Expired => self.expired,
            TimewaitEnd::Killed => self.killed,
            TimewaitEnd::Unseen => self.unseen,
        }
    }

    /// Every end, whatever its cause.
    #[must_use]
    pub const fn ended_total(&self) -> u64 {
        self.expired + self.killed + self.unseen
    }
}

pub(super) struct Timewaits {
    pub table: TimewaitTable,
    /// Started, not yet linked to the close of their full socket (marked so in the table):
    /// (timer, start time), oldest first.
    unlinked_order: VecDeque<(u64, u64)>,
    /// Cancelled, not yet restarted or expired: timer -> cancel time.
    cancelled: FxHashMap<u64, u64>,
    cancel_order: VecDeque<(u64, u64)>,
    /// Learnt from sock_diag, their timer not known yet: cookie -> key.
    seeded: FxHashMap<u64, u64>,
    pub counts: TimewaitCounts,
}

impl Timewaits {
    pub fn new(capacity: usize) -> Self {
        Self {
            table: TimewaitTable::new(capacity),
            unlinked_order: VecDeque::new(),
            cancelled: FxHashMap::default(),
            cancel_order: VecDeque::new(),
            seeded: FxHashMap::default(),
            counts: TimewaitCounts::default(),
        }
    }

    pub const fn len(&self) -> usize {
        self.table.len()
    }

    /// Drops the bookkeeping of a socket that left the table.
    fn forget(&mut self, key: u64, tw: &Tw) {
        // Both are mostly empty: no hash of the key then.
        if !self.cancelled.is_empty() {
            self.cancelled.remove(&key);
        }
        if tw.cookie != 0 && !self.seeded.is_empty() && self.seeded.get(&tw.cookie) == Some(&key) {
            self.seeded.remove(&tw.cookie);
        }
    }

    /// Starts following a timewait socket; false when the table is full. A socket it takes
    /// the place of (same key or 4-tuple: the kernel has one per tuple) ended unseen.
    fn insert(&mut self, key: u64, tw: Tw, mark: u16) -> bool {
        let Ok(replaced) = self.table.insert(key, tw, mark) else {
            self.counts.untracked += 1;
            return false;
        };
        for (old_key, old) in replaced {
            self.forget(old_key, &old);
            self.counts.unseen += 1;
        }
        true
    }

    /// [`Timewaits::insert`] of a socket whose timer just started, and whose key and tuple are
    /// not tracked: unlinked until its full socket's close.
    fn insert_started(&mut self, key: u64, tw: Tw, hash: TupleHash, now: u64) -> bool {
        if self.table.insert_unlinked(key, tw, hash).is_err() {
            self.counts.untracked += 1;
            return false;
        }
        self.counts.started += 1;
        self.unlinked_order.push_back((key, now));
        true
    }

    /// Removes a socket whose end was not seen; returns it.
    pub fn remove_unseen(&mut self, key: u64) -> Option<Tw> {
        let tw = self.table.remove(key)?;
        self.forget(key, &tw);
        self.counts.unseen += 1;
        Some(tw)
    }

    /// Whether the timewait socket `key` is known as its connection's (linked to the close of
    /// its full socket, announced without it, or seeded), rather than waiting for that close.
    fn is_linked(&self, key: u64) -> bool {
        !self.table.is_unlinked(key)
    }

    /// Whether the socket's timer has a cancel waiting for a restart or an expiry.
    pub fn is_cancelled(&self, key: u64) -> bool {
        self.cancelled.contains_key(&key)
    }

    /// The key of a socket known from sock_diag whose timer is this one's: the seeded socket
    /// with `cookie`, moved to the timer's key now that it is known.
    fn adopt_by_cookie(&mut self, timer: u64, cookie: u64) -> bool {
        if cookie == 0 {
            return false;
        }
        let Some(key) = self.seeded.remove(&cookie) else {
            return false;
        };
        self.table.rekey(key, timer)
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }
}

impl Tracker {
    pub(super) fn timewait_timer(&mut self, t: &TimewaitTimer, out: &mut Vec<Report>) {
        match t.action {
            TimerAction::Start { socket, timeout_ns } => {
                self.timewait_start(t, &socket, timeout_ns, out);
            }
            TimerAction::Cancel => {
                if self.timewaits.table.contains(t.timer)
                    || self.timewaits.adopt_by_cookie(t.timer, t.cookie)
                {
                    self.timewaits.cancelled.insert(t.timer, t.mono_ns);
                    self.timewaits.cancel_order.push_back((t.timer, t.mono_ns));
                }
            }
            TimerAction::Expire { substate } => {
                // One lookup for the check, the substate and the removal.
                let found = match self.timewaits.table.find(t.timer) {
                    None if self.timewaits.adopt_by_cookie(t.timer, t.cookie) => {
                        self.timewaits.table.find(t.timer)
                    }
                    found => found,
                };
                let Some(at) = found else { return };
                self.timewaits.cancelled.remove(&t.timer);
                // The FIN that turns FIN_WAIT2 into TIME_WAIT often moves the timer within its
                // wheel bucket, which no tracepoint reports: trust the socket.
                if let Some(s) = substate
                    && self.timewaits.table.substate_at(at) != s
                {
                    // A change in place: the socket stays where it was found.
                    if let Some(mut tw) = self.timewaits.table.get_mut(t.timer) {
                        tw.substate = s;
                    }
                    self.stats.timewait_substate_unseen += 1;
                }
                let tw = self.timewaits.table.remove_at(at);
                self.ended_timewait(t.timer, tw, TimewaitEnd::Expired, t.mono_ns, out);
            }
        }
    }

    fn timewait_start(
        &mut self,
        t: &TimewaitTimer,
        socket: &TimewaitSocket,
        timeout_ns: Option<u64>,
        out: &mut Vec<Report>,
    ) {
        let (timer, now) = (t.timer, t.mono_ns);
        let tuple = tuple_of(socket);
        let cancelled_at = if self.timewaits.cancelled.is_empty() {
            None
        } else {
            self.timewaits.cancelled.remove(&timer)
        };
        // Nearly always a new timer of a new tuple: nothing below the two lookups applies.
        // The tuple is hashed once, for its lookup and its insertion.
        let hash = TimewaitTable::hash_of(&tuple);
        let fresh = !self.timewaits.table.contains(timer)
            && self.timewaits.table.key_of_hashed(&tuple, hash).is_none();
        if !fresh && self.timewait_start_known(t, socket, timeout_ns, cancelled_at, out) {
            return;
        }
        // Under load the local peer's close (CLOSE_WAIT -> LAST_ACK) can reach the stream
        // before this start: its FIN, still on its way, moves the socket to TIME_WAIT with
        // no tracepoint of its own.
        let fin_on_its_way = socket.substate == TcpState::FinWait2 && self.peer_in_last_ack(&tuple);
        let tw = Tw {
            substate: if fin_on_its_way {
                TcpState::TimeWait
            } else {
                socket.substate
            },
            tuple,
            substate_since_ns: now,
            lower_bound: false,
            owner: None,
            cgroup: None,
            timeout_ns: if fin_on_its_way {
                Some(TIMEWAIT_LEN_NS)
            } else {
                timeout_ns
            },
            cookie: t.cookie,
            touched_ns: now,
        };
        self.timewaits.insert_started(timer, tw, hash, now);
    }

    /// A start whose timer or tuple is already tracked: a seeded socket's timer becoming
    /// known, a restart, or a socket whose end was not seen. True when it was a restart; else
    /// neither the timer nor the tuple is tracked any more.
    fn timewait_start_known(
        &mut self,
        t: &TimewaitTimer,
        socket: &TimewaitSocket,
        timeout_ns: Option<u64>,
        cancelled_at: Option<u64>,
        out: &mut Vec<Report>,
    ) -> bool {
        let (timer, now) = (t.timer, t.mono_ns);
        let tuple = tuple_of(socket);
        // A socket learnt from sock_diag whose timer restarts (FIN_WAIT2 -> TIME_WAIT): its
        // timer is known from now on.
        if !self.timewaits.table.contains(timer)
            && let Some(key) = self.timewaits.table.key_of(&tuple)
            && let Some(tw) = self.timewaits.table.get(key)
            && tw.cookie != 0
            && self.timewaits.seeded.get(&tw.cookie) == Some(&key)
        {
            self.timewaits.seeded.remove(&tw.cookie);
            self.timewaits.table.rekey(key, timer);
        }
        if let Some(tw) = self.timewaits.table.get(timer) {
            if tw.tuple == tuple {
                self.timewait_restart(timer, tw, now, socket.substate, timeout_ns, out);
                return true;
            }
            // The timer's memory now belongs to another timewait socket: the old one was
            // killed if its cancel was seen, else its end was lost.
            match cancelled_at {
                Some(at) => self.end_timewait(timer, TimewaitEnd::Killed, at, out),
                None => {
                    self.timewaits.remove_unseen(timer);
                }
            }
        }
        // The kernel keeps one timewait socket per 4-tuple: one still tracked for this tuple
        // ended, killed if its cancel is waiting, else unseen.
        if let Some(other) = self.timewaits.table.key_of(&tuple) {
            match self.timewaits.cancelled.get(&other).copied() {
                Some(at) => self.end_timewait(other, TimewaitEnd::Killed, at, out),
                None => {
                    self.timewaits.remove_unseen(other);
                }
            }
        }
        false
    }

    /// The timer of a known timewait socket started again: a retransmitted FIN, or FIN_WAIT2
    /// -> TIME_WAIT inside the timewait socket.
    fn timewait_restart(
        &mut self,
        timer: u64,
        tw: Tw,
        now: u64,
        substate: TcpState,
        timeout_ns: Option<u64>,
        out: &mut Vec<Report>,
    ) {
        self.stats.timewait_restarted += 1;
        let mut updated = Tw {
            substate,
            timeout_ns,
            touched_ns: now,
            ..tw
        };
        let linked = self.timewaits.is_linked(timer);
        let spent = now.saturating_sub(tw.substate_since_ns);
        if tw.substate != substate {
            if !tw.lower_bound {
                self.durations.record(tw.substate, spent);
            }
            updated.substate_since_ns = now;
            updated.lower_bound = false;
        }
        if linked {
            let spent = Spent {
                ns: Some(spent),
                lower_bound: tw.lower_bound,
            };
            if tw.substate == substate {
                // A restart stays where it was: not a transition.
                self.transitions
                    .timewait(out, self.plain_reports, None, || {
                        timewait_report(
                            &updated,
                            timer,
                            now,
                            tw.substate,
                            spent,
                            Note::TimewaitRestarted { timeout_ns },
                        )
                    });
            } else {
                self.timewait_entered(out, &updated, timer, now, tw.substate, spent);
            }
        }
        if let Some(mut slot) = self.timewaits.table.get_mut(timer) {
            *slot = updated;
        }
    }

    /// Whether the local peer of `tuple` is tracked in LAST_ACK: it has sent its FIN.
    fn peer_in_last_ack(&self, tuple: &Tuple) -> bool {
        let peer = tuple.reversed();
        self.sockets.keys_of(&peer).any(|k| {
            self.sockets
                .get(k)
                .is_some_and(|c| c.state == TcpState::LastAck)
        })
    }

    /// The full socket `t` closed from FIN_WAIT2/CLOSING: hands the connection to the
    /// timewait socket that just started for the same tuple (`tuple`: `t`'s, in the socket's
    /// namespace). False when there is none.
    pub(super) fn link_timewait(
        &mut self,
        t: &Transition,
        tuple: &Tuple,
        owner: Option<Task>,
        known: Option<&Known>,
        out: &mut Vec<Report>,
    ) -> bool {
        let Some((timer, mut tw)) = self.timewaits.table.link_tuple(tuple) else {
            return false;
        };
        tw.owner = owner;
        tw.cgroup = t.cgroup.or(known.and_then(|c| c.cgroup));
        tw.touched_ns = t.mono_ns;
        // TIME_WAIT began when its timer started or the peer's FIN was seen, which may come
        // before this close in the stream.
        let spent = known.map(|c| {
            tw.substate_since_ns
                .min(t.mono_ns)
                .saturating_sub(c.since_ns)
        });
        let lower_bound = known.is_some_and(|c| c.has(super::table::ConnFlags::SEEDED));
        if tw.substate == TcpState::FinWait2 {
            // Still FIN_WAIT2 for the connection: only the socket carrying it changed.
            if let Some(c) = known {
                tw.substate_since_ns = c.since_ns;
                tw.lower_bound = lower_bound;
            }
            return true;
        }
        let tw = tw.write_back();
        if let Some(ns) = spent
            && !lower_bound
        {
            self.durations.record(t.old, ns);
        }
        let spent = Spent {
            ns: spent,
            lower_bound,
        };
        self.timewait_entered(out, &tw, timer, tw.substate_since_ns, t.old, spent);
        true
    }

    fn end_timewait(&mut self, key: u64, cause: TimewaitEnd, now: u64, out: &mut Vec<Report>) {
        if let Some(tw) = self.timewaits.table.remove(key) {
            self.ended_timewait(key, tw, cause, now, out);
        }
    }

    /// Counts and reports the end of `tw`, just removed from the table.
    fn ended_timewait(
        &mut self,
        key: u64,
        tw: Tw,
        cause: TimewaitEnd,
        now: u64,
        out: &mut Vec<Report>,
    ) {
        self.timewaits.forget(key, &tw);
        self.note_closed(&tw.tuple, now);
        match cause {
            TimewaitEnd::Expired => self.timewaits.counts.expired += 1,
            TimewaitEnd::Killed => self.timewaits.counts.killed += 1,
            TimewaitEnd::Unseen => self.timewaits.counts.unseen += 1,
        }
        let spent = now.saturating_sub(tw.substate_since_ns);
        if !tw.lower_bound {
            self.durations.record(tw.substate, spent);
        }
        self.transitions.timewait(
            out,
            self.plain_reports,
            Some(StateChange {
                old: tw.substate,
                new: TcpState::Close,
            }),
            || {
                let spent = Spent {
                    ns: Some(spent),
                    lower_bound: tw.lower_bound,
                };
                let mut report = timewait_report(
                    &tw,
                    key,
                    now,
                    tw.substate,
                    spent,
                    Note::TimewaitEnded(cause),
                );
                if let Report::Transition { transition, .. } = &mut report {
                    transition.new = TcpState::Close;
                }
                report
            },
        );
    }

    /// Concludes cancels that were not followed by a restart or an expiry, and announces
    /// timewait sockets whose full socket's close never came.
    pub(super) fn expire_timewait_cancels(&mut self, out: &mut Vec<Report>) {
        while let Some(&(timer, at)) = self.timewaits.cancel_order.front() {
            if self.now_ns.saturating_sub(at) < GRACE_NS {
                break;
            }
            self.timewaits.cancel_order.pop_front();
            // An expiry follows nearly every cancel at once: then nothing waits here.
            if !self.timewaits.cancelled.is_empty()
                && self.timewaits.cancelled.get(&timer) == Some(&at)
            {
                self.timewaits.cancelled.remove(&timer);
                self.end_timewait(timer, TimewaitEnd::Killed, at, out);
            }
        }
        while let Some(&(timer, at)) = self.timewaits.unlinked_order.front() {
            if self.now_ns.saturating_sub(at) < GRACE_NS {
                break;
            }
            self.timewaits.unlinked_order.pop_front();
            // Nearly always every one is linked: then none of these needs a lookup.
            if self.timewaits.table.unlinked() == 0 {
                continue;
            }
            // Nearly always linked by now: one lookup, and no unpacking.
            if self.timewaits.is_linked(timer) {
                continue;
            }
            self.timewaits.table.link(timer);
            let Some(mut tw) = self.timewaits.table.get(timer) else {
                continue;
            };
            self.stats.timewait_unlinked += 1;
            if let Some(full) = self.forget_replaced_full_socket(&tw.tuple, at)
                && let Some(mut slot) = self.timewaits.table.get_mut(timer)
            {
                slot.owner = slot.owner.or(full.owner);
                slot.cgroup = slot.cgroup.or(full.cgroup);
                tw = *slot;
            }
            let spent = Spent {
                ns: None,
                lower_bound: false,
            };
            self.timewait_entered(out, &tw, timer, at, TcpState::FinWait2, spent);
        }
    }

    /// A new connection on `tuple` (its handshake under way): the kernel holds one socket per
    /// 4-tuple and namespace, so a timewait socket of the tuple whose cancel waits for its
    /// grace period was killed by the reuse. Ended now: the new connection's own timewait
    /// socket may take the old one's memory, and with it its timer, and its start would pass
    /// for a re-arm of the old one (a cancel and a start too).
    pub(super) fn end_reused_timewait(&mut self, tuple: &Tuple, out: &mut Vec<Report>) {
        // Cancels wait a second at most, and few are waiting: the lookup by tuple is made
        // only then.
        if self.timewaits.cancelled.is_empty() {
            return;
        }
        if let Some(key) = self.timewaits.table.key_of(tuple)
            && let Some(at) = self.timewaits.cancelled.get(&key).copied()
        {
            self.end_timewait(key, TimewaitEnd::Killed, at, out);
        }
    }

    /// The timewait socket of `tuple`, started at `started_ns`, took over a full socket whose
    /// close was lost: the kernel holds one socket per 4-tuple and namespace. A full socket
    /// still tracked for the tuple, unchanged since before that start, is that socket: it is
    /// dropped, counted as a gap, rather than left in FIN_WAIT1 or FIN_WAIT2 until the next
    /// reconciliation. Returns it (its owner is the timewait socket's).
    fn forget_replaced_full_socket(&mut self, tuple: &Tuple, started_ns: u64) -> Option<Conn> {
        // A socket of a later connection on the same tuple changed after the start.
        let replaced: Vec<(u64, Conn)> = self
            .sockets
            .keys_of(tuple)
            .filter_map(|key| Some((key, self.sockets.get(key)?)))
            .filter(|(_, c)| c.state != TcpState::Listen && c.since_ns <= started_ns)
            .collect();
        let mut last = None;
        if !replaced.is_empty() {
            // For a reconciliation whose dump may have listed it before it closed.
            self.note_closed(tuple, started_ns);
        }
        for (key, conn) in replaced {
            self.sockets.forget(key);
            self.retransmits.by_sock.remove(&key);
            self.stats.gaps += 1;
            last = Some(conn);
        }
        last
    }

    /// The peer of a local connection sent its FIN (CLOSE_WAIT -> LAST_ACK, on `tuple`): if
    /// our end waits in a timewait socket as FIN_WAIT2, that FIN moves it to TIME_WAIT now.
    pub(super) fn peer_sent_fin(&mut self, t: &Transition, tuple: &Tuple, out: &mut Vec<Report>) {
        let ours = tuple.reversed();
        let Some(key) = self.timewaits.table.key_of(&ours) else {
            return;
        };
        let linked = self.timewaits.is_linked(key);
        let Some(mut tw) = self.timewaits.table.get_mut(key) else {
            return;
        };
        if tw.substate != TcpState::FinWait2 {
            return;
        }
        let spent = t.mono_ns.saturating_sub(tw.substate_since_ns);
        let was_lower_bound = tw.lower_bound;
        tw.substate = TcpState::TimeWait;
        tw.substate_since_ns = t.mono_ns;
        tw.timeout_ns = Some(TIMEWAIT_LEN_NS);
        tw.touched_ns = t.mono_ns;
        if !linked {
            // The close of our full socket is still to come: that handover reports the entry.
            // The FIN may move the timer within its wheel bucket, which no tracepoint shows,
            // so this may be the only sign of it.
            return;
        }
        tw.lower_bound = false;
        let tw = tw.write_back();
        if !was_lower_bound {
            self.durations.record(TcpState::FinWait2, spent);
        }
        let spent = Spent {
            ns: Some(spent),
            lower_bound: was_lower_bound,
        };
        self.timewait_entered(out, &tw, key, t.mono_ns, TcpState::FinWait2, spent);
    }

    /// A timewait socket's entry into its substate from `old`, at `at`: counted, and reported
    /// to a reader.
    fn timewait_entered(
        &mut self,
        out: &mut Vec<Report>,
        tw: &Tw,
        key: u64,
        at: u64,
        old: TcpState,
        spent: Spent,
    ) {
        let counted = StateChange {
            old,
            new: tw.substate,
        };
        self.transitions
            .timewait(out, self.plain_reports, Some(counted), || {
                timewait_report(
                    tw,
                    key,
                    at,
                    old,
                    spent,
                    Note::TimewaitEntered {
                        timeout_ns: tw.timeout_ns,
                    },
                )
            });
    }

    /// Adds a timewait socket known from sock_diag, under a key of its own until its timer
    /// shows itself (by its cookie at a cancel or an expiry, or by its tuple at a restart).
    pub(super) fn seed_timewait(&mut self, key: u64, tw: Tw, mark: u16) -> bool {
        if !self.timewaits.insert(key, tw, mark) {
            return false;
        }
        self.timewaits.counts.seeded += 1;
        if tw.cookie != 0 {
            self.timewaits.seeded.insert(tw.cookie, key);
        }
        true
    }
}

fn tuple_of(s: &TimewaitSocket) -> Tuple {
    Tuple {
        netns: s.netns,
        local: s.local,
        remote: s.remote,
    }
}

/// How long the state before a timewait entry lasted, as far as it is known.
#[derive(Clone, Copy)]
struct Spent {
    ns: Option<u64>,
    /// `ns` is a lower bound: the state began before the daemon saw it.
    lower_bound: bool,
}

/// A TIME_WAIT entry, restart or end, shown as a transition of the connection.
fn timewait_report(tw: &Tw, key: u64, at: u64, old: TcpState, spent: Spent, note: Note) -> Report {
    Report::Transition {
        transition: Transition {
            mono_ns: at,
            sock: key,
            old,
            new: tw.substate,
            family: tw.tuple.family(),
            local: tw.tuple.local,
            remote: tw.tuple.remote,
            netns: tw.tuple.netns,
            cgroup: tw.cgroup,
            task: tw.owner.unwrap_or(Task::new(0, 0, [0; 16])),
            owner_context: false,
            has_socket: None,
        },
        seen: Observation {
            previous_state_ns: spent.ns,
            lower_bound: spent.lower_bound,
            owner: tw.owner,
            cgroup: tw.cgroup,
            gap: false,
        },
        note: Some(note),
    }
}
