//! TIME_WAIT through the timewait socket's timer: entry (linked to the full socket that just
//! closed), restarts, and the end with its cause.

use std::collections::VecDeque;

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::{GRACE_NS, Note, Observation, Report, TimewaitEnd, Tracker, Tuple, table::Conn};
use crate::decode::{Task, TimerAction, TimewaitSocket, TimewaitTimer, Transition};

/// One timewait socket.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tw {
    pub substate: TcpState,
    pub tuple: Tuple,
    /// When the current substate began, from the connection's point of view.
    pub substate_since_ns: u64,
    /// Known from sock_diag: its start was not seen, durations are lower bounds.
    pub lower_bound: bool,
    pub owner: Option<Task>,
    pub timeout_ns: Option<u64>,
}

pub(super) struct Timewaits {
    by_timer: FxHashMap<u64, Tw>,
    by_tuple: FxHashMap<Tuple, u64>,
    /// Started, not yet linked to the close of their full socket: (timer, start time).
    unlinked: FxHashMap<Tuple, u64>,
    unlinked_order: VecDeque<(u64, u64)>,
    /// Cancelled, not yet restarted or expired: (timer, cancel time).
    cancelled: FxHashMap<u64, u64>,
    cancel_order: VecDeque<(u64, u64)>,
    /// Seeded from sock_diag (no timer address known): tuple -> synthetic key.
    pub seeded: FxHashMap<Tuple, u64>,
    capacity: usize,
    expired: u64,
    killed: u64,
}

impl Timewaits {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_timer: FxHashMap::default(),
            by_tuple: FxHashMap::default(),
            unlinked: FxHashMap::default(),
            unlinked_order: VecDeque::new(),
            cancelled: FxHashMap::default(),
            cancel_order: VecDeque::new(),
            seeded: FxHashMap::default(),
            capacity: capacity.max(1),
            expired: 0,
            killed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_timer.len()
    }

    pub const fn ends(&self) -> (u64, u64) {
        (self.expired, self.killed)
    }

    pub fn counts(&self) -> impl Iterator<Item = (TcpState, u64)> {
        let mut tw = 0;
        let mut fin_wait2 = 0;
        for t in self.by_timer.values() {
            if t.substate == TcpState::FinWait2 {
                fin_wait2 += 1;
            } else {
                tw += 1;
            }
        }
        [(TcpState::TimeWait, tw), (TcpState::FinWait2, fin_wait2)].into_iter()
    }

    pub fn list(&self) -> Vec<(Tuple, TcpState, u64, bool)> {
        self.by_timer
            .values()
            .map(|t| (t.tuple, t.substate, t.substate_since_ns, t.lower_bound))
            .collect()
    }

    pub fn tuples(&self) -> impl Iterator<Item = &Tuple> {
        self.by_timer.values().map(|t| &t.tuple)
    }

    /// Inserts a timewait socket; false when the table is full.
    pub fn insert(&mut self, key: u64, tw: Tw) -> bool {
        if self.by_timer.len() >= self.capacity && !self.by_timer.contains_key(&key) {
            return false;
        }
        self.by_timer.insert(key, tw);
        self.by_tuple.insert(tw.tuple, key);
        true
    }

    /// Removes the entries `remove` accepts; returns how many.
    pub fn drain_where(&mut self, mut remove: impl FnMut(&Tw) -> bool) -> usize {
        let before = self.by_timer.len();
        let mut gone = Vec::new();
        self.by_timer.retain(|k, t| {
            let r = remove(t);
            if r {
                gone.push((*k, t.tuple));
            }
            !r
        });
        for (key, tuple) in gone {
            self.forget(key, &tuple);
        }
        before - self.by_timer.len()
    }

    fn forget(&mut self, key: u64, tuple: &Tuple) {
        self.cancelled.remove(&key);
        if self.by_tuple.get(tuple) == Some(&key) {
            self.by_tuple.remove(tuple);
        }
        if self.unlinked.get(tuple) == Some(&key) {
            self.unlinked.remove(tuple);
        }
        if self.seeded.get(tuple) == Some(&key) {
            self.seeded.remove(tuple);
        }
    }

    /// Whether the timewait socket `key` is known as its connection's (linked to the close of
    /// its full socket, announced without it, or seeded), rather than waiting for that close.
    fn is_linked(&self, key: u64, tuple: &Tuple) -> bool {
        self.unlinked.get(tuple) != Some(&key)
    }

    pub fn heap_bytes(&self) -> usize {
        super::table::buckets(self.by_timer.capacity()) * (size_of::<(u64, Tw)>() + 1)
            + super::table::buckets(self.by_tuple.capacity()) * (size_of::<(Tuple, u64)>() + 1)
    }
}

impl Tracker {
    pub(super) fn timewait_timer(&mut self, t: &TimewaitTimer, out: &mut Vec<Report>) {
        match t.action {
            TimerAction::Start { socket, timeout_ns } => {
                self.timewait_start(t.timer, t.mono_ns, &socket, timeout_ns, out);
            }
            TimerAction::Cancel => {
                if self.timewaits.by_timer.contains_key(&t.timer) {
                    self.timewaits.cancelled.insert(t.timer, t.mono_ns);
                    self.timewaits.cancel_order.push_back((t.timer, t.mono_ns));
                }
            }
            TimerAction::Expire { socket } => {
                let key = if self.timewaits.by_timer.contains_key(&t.timer) {
                    Some(t.timer)
                } else {
                    socket.and_then(|s| self.timewaits.seeded.get(&tuple_of(&s)).copied())
                };
                if let Some(key) = key {
                    // The FIN that turns FIN_WAIT2 into TIME_WAIT often moves the timer
                    // within its wheel bucket, which no tracepoint reports: trust the socket.
                    if let (Some(s), Some(tw)) = (socket, self.timewaits.by_timer.get_mut(&key))
                        && s.substate != tw.substate
                    {
                        tw.substate = s.substate;
                        self.stats.timewait_substate_unseen += 1;
                    }
                    self.end_timewait(key, TimewaitEnd::Expired, t.mono_ns, out);
                }
            }
        }
    }

    fn timewait_start(
        &mut self,
        timer: u64,
        now: u64,
        socket: &TimewaitSocket,
        timeout_ns: Option<u64>,
        out: &mut Vec<Report>,
    ) {
        let tuple = tuple_of(socket);
        self.timewaits.cancelled.remove(&timer);
        if let Some(tw) = self.timewaits.by_timer.get(&timer).copied() {
            if tw.tuple == tuple {
                self.stats.timewait_restarted += 1;
                let mut updated = Tw {
                    timeout_ns,
                    substate: socket.substate,
                    ..tw
                };
                if tw.substate != socket.substate {
                    // FIN_WAIT2 -> TIME_WAIT inside the timewait socket: a transition.
                    let spent = now.saturating_sub(tw.substate_since_ns);
                    if !tw.lower_bound {
                        self.durations.record(tw.substate, spent);
                    }
                    updated.substate_since_ns = now;
                    updated.lower_bound = false;
                    if self.timewaits.is_linked(timer, &tuple) {
                        out.push(timewait_report(
                            &updated,
                            timer,
                            now,
                            tw.substate,
                            Some(spent),
                            tw.lower_bound,
                            Note::TimewaitEntered { timeout_ns },
                        ));
                    }
                } else if self.timewaits.is_linked(timer, &tuple) {
                    out.push(timewait_report(
                        &updated,
                        timer,
                        now,
                        tw.substate,
                        Some(now.saturating_sub(tw.substate_since_ns)),
                        tw.lower_bound,
                        Note::TimewaitRestarted { timeout_ns },
                    ));
                }
                self.timewaits.by_timer.insert(timer, updated);
                return;
            }
            // The timer's memory now belongs to another timewait socket: the old one's end
            // was not seen.
            self.timewaits.by_timer.remove(&timer);
            self.timewaits.forget(timer, &tw.tuple);
            self.stats.timewait_end_lost += 1;
        }
        let tw = Tw {
            substate: socket.substate,
            tuple,
            substate_since_ns: now,
            lower_bound: false,
            owner: None,
            timeout_ns,
        };
        if self.timewaits.insert(timer, tw) {
            self.timewaits.unlinked.insert(tuple, timer);
            self.timewaits.unlinked_order.push_back((timer, now));
        } else {
            self.stats.timewait_untracked += 1;
        }
    }

    /// The full socket `t` closed from FIN_WAIT2/CLOSING: hands the connection to the
    /// timewait socket that just started for the same tuple. False when there is none.
    pub(super) fn link_timewait(
        &mut self,
        t: &Transition,
        owner: Option<Task>,
        known: Option<Conn>,
        out: &mut Vec<Report>,
    ) -> bool {
        let tuple = Tuple::of(t);
        let Some(timer) = self.timewaits.unlinked.remove(&tuple) else {
            return false;
        };
        let Some(tw) = self.timewaits.by_timer.get_mut(&timer) else {
            return false;
        };
        tw.owner = owner;
        let spent = known.map(|c| t.mono_ns.saturating_sub(c.since_ns));
        let lower_bound = known.is_some_and(|c| c.has(super::table::SEEDED));
        if tw.substate == TcpState::FinWait2 {
            // Still FIN_WAIT2 for the connection: only the socket carrying it changed.
            if let Some(c) = known {
                tw.substate_since_ns = c.since_ns;
                tw.lower_bound = lower_bound;
            }
            return true;
        }
        let tw = *tw;
        if let Some(ns) = spent
            && !lower_bound
        {
            self.durations.record(t.old, ns);
        }
        out.push(timewait_report(
            &tw,
            timer,
            tw.substate_since_ns,
            t.old,
            spent,
            lower_bound,
            Note::TimewaitEntered {
                timeout_ns: tw.timeout_ns,
            },
        ));
        true
    }

    fn end_timewait(&mut self, key: u64, cause: TimewaitEnd, now: u64, out: &mut Vec<Report>) {
        let Some(tw) = self.timewaits.by_timer.remove(&key) else {
            return;
        };
        self.timewaits.forget(key, &tw.tuple);
        match cause {
            TimewaitEnd::Expired => self.timewaits.expired += 1,
            TimewaitEnd::Killed => self.timewaits.killed += 1,
        }
        let spent = now.saturating_sub(tw.substate_since_ns);
        if !tw.lower_bound {
            self.durations.record(tw.substate, spent);
        }
        let mut report = timewait_report(
            &tw,
            key,
            now,
            tw.substate,
            Some(spent),
            tw.lower_bound,
            Note::TimewaitEnded(cause),
        );
        if let Report::Transition { transition, .. } = &mut report {
            transition.new = TcpState::Close;
        }
        out.push(report);
    }

    /// Concludes cancels that were not followed by a restart or an expiry, and announces
    /// timewait sockets whose full socket's close never came.
    pub(super) fn expire_timewait_cancels(&mut self, out: &mut Vec<Report>) {
        while let Some(&(timer, at)) = self.timewaits.cancel_order.front() {
            if self.now_ns.saturating_sub(at) < GRACE_NS {
                break;
            }
            self.timewaits.cancel_order.pop_front();
            if self.timewaits.cancelled.get(&timer) == Some(&at) {
                self.timewaits.cancelled.remove(&timer);
                self.end_timewait(timer, TimewaitEnd::Killed, at, out);
            }
        }
        while let Some(&(timer, at)) = self.timewaits.unlinked_order.front() {
            if self.now_ns.saturating_sub(at) < GRACE_NS {
                break;
            }
            self.timewaits.unlinked_order.pop_front();
            let Some(tw) = self.timewaits.by_timer.get(&timer).copied() else {
                continue;
            };
            if self.timewaits.is_linked(timer, &tw.tuple) {
                continue;
            }
            self.timewaits.unlinked.remove(&tw.tuple);
            self.stats.timewait_unlinked += 1;
            out.push(timewait_report(
                &tw,
                timer,
                at,
                TcpState::FinWait2,
                None,
                false,
                Note::TimewaitEntered {
                    timeout_ns: tw.timeout_ns,
                },
            ));
        }
    }

    /// The peer of a local connection sent its FIN (CLOSE_WAIT -> LAST_ACK): if our end waits
    /// in a timewait socket as FIN_WAIT2, that FIN moves it to TIME_WAIT now.
    pub(super) fn peer_sent_fin(&mut self, t: &Transition, out: &mut Vec<Report>) {
        let ours = Tuple {
            netns: t.netns.unwrap_or(0),
            local: t.remote,
            remote: t.local,
        };
        let Some(&key) = self.timewaits.by_tuple.get(&ours) else {
            return;
        };
        let Some(tw) = self.timewaits.by_timer.get_mut(&key) else {
            return;
        };
        if tw.substate != TcpState::FinWait2 || self.timewaits.unlinked.get(&ours) == Some(&key) {
            return;
        }
        let spent = t.mono_ns.saturating_sub(tw.substate_since_ns);
        let was_lower_bound = tw.lower_bound;
        tw.substate = TcpState::TimeWait;
        tw.substate_since_ns = t.mono_ns;
        tw.lower_bound = false;
        let tw = *tw;
        if !was_lower_bound {
            self.durations.record(TcpState::FinWait2, spent);
        }
        out.push(timewait_report(
            &tw,
            key,
            t.mono_ns,
            TcpState::FinWait2,
            Some(spent),
            was_lower_bound,
            Note::TimewaitEntered { timeout_ns: None },
        ));
    }

    /// Adds a timewait socket known from sock_diag.
    pub(super) fn seed_timewait(
        &mut self,
        key: u64,
        tuple: Tuple,
        substate: TcpState,
        now: u64,
    ) -> bool {
        let tw = Tw {
            substate,
            tuple,
            substate_since_ns: now,
            lower_bound: true,
            owner: None,
            timeout_ns: None,
        };
        if self.timewaits.insert(key, tw) {
            self.timewaits.seeded.insert(tuple, key);
            true
        } else {
            self.stats.timewait_untracked += 1;
            false
        }
    }
}

fn tuple_of(s: &TimewaitSocket) -> Tuple {
    Tuple {
        netns: s.netns.unwrap_or(0),
        local: s.local,
        remote: s.remote,
    }
}

/// A TIME_WAIT entry, restart or end, shown as a transition of the connection.
fn timewait_report(
    tw: &Tw,
    key: u64,
    at: u64,
    old: TcpState,
    spent: Option<u64>,
    lower_bound: bool,
    note: Note,
) -> Report {
    Report::Transition {
        transition: Transition {
            mono_ns: at,
            sock: key,
            old,
            new: tw.substate,
            family: tw.tuple.family(),
            local: tw.tuple.local,
            remote: tw.tuple.remote,
            netns: (tw.tuple.netns != 0).then_some(tw.tuple.netns),
            task: tw.owner.unwrap_or(Task::new(0, 0, [0; 16])),
            owner_context: false,
            has_socket: None,
        },
        seen: Observation {
            previous_state_ns: spent,
            lower_bound,
            owner: tw.owner,
            gap: false,
        },
        note: Some(note),
    }
}
