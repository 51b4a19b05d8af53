//! Retransmissions per connection, and the connections that retransmit without progress:
//! suspected half-open (the peer, or the path to it, vanished).
//!
//! Progress is read from the kernel's own count: `icsk_retransmits` counts timeout-driven
//! retransmissions since the last ACK that advanced `snd_una`, and is reset to 0 by that ACK.
//! So successive retransmissions whose count goes up belong to one streak without progress; a
//! count that drops (or a 0: a fast retransmit, answered by duplicate ACKs) proves progress.
//! (Since Linux 6.2 the count is raised before the retransmission, so a streak's first
//! retransmission carries 1; before, it carried 0 and a streak is seen from its second.)
//! An ACK that ends a streak produces no event: while no progress is made the retransmission
//! timer keeps firing, each time after at most twice the previous interval (capped at
//! `TCP_RTO_MAX`), so a streak that misses its next retransmission has recovered.

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::Tuple;
use crate::event::{ListenerKey, Retransmit, RetransmitKind};

/// Connections whose retransmissions are followed at once. Beyond this, retransmissions are
/// still counted, and connections without an active streak make room.
pub const RETRANSMITTING_CAPACITY: usize = 1 << 16;

/// At most this many (namespace, listening port) pairs get their own SYN-ACK count.
const SYNACK_PORTS_CAPACITY: usize = 4096;

/// The kernel's `TCP_RTO_MAX`: the longest a retransmission timer waits.
const RTO_MAX_NS: u64 = 120_000_000_000;
/// Slack on top of the expected interval: timer wheel granularity and scheduling.
const SLACK_NS: u64 = 1_000_000_000;
/// Expected interval after a streak's first retransmission, whose own interval is unknown:
/// the initial RTO is 1 s and doubles, and loopback/LAN RTOs are far below that.
const FIRST_INTERVAL_NS: u64 = 2_000_000_000;

/// A streak that ended in progress: its socket, its entry as it was, how many
/// retransmissions it had and how long it lasted.
#[derive(Clone, Copy, Debug)]
pub struct Recovered {
    pub sock: u64,
    pub entry: Retransmitting,
    pub streak: u32,
    pub duration_ns: u64,
}

/// One connection that has retransmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmitting {
    pub tuple: Tuple,
    /// The state the last retransmission reported.
    pub state: Option<TcpState>,
    /// Retransmissions of this connection seen so far.
    pub total: u64,
    /// The current streak without progress: when it began, its retransmissions, the last
    /// one, and the kernel's count at the last one. `streak == 0`: no streak.
    pub streak_start_ns: u64,
    pub streak: u32,
    pub last_ns: u64,
    pub last_gap_ns: u64,
    pub unrecovered: u8,
    /// The streak began before its first retransmission was seen (its count was above 1).
    pub streak_lower_bound: bool,
    /// Reported as a half-open suspect (so that it is reported once).
    pub suspect: bool,
}

impl Retransmitting {
    /// Whether the streak is still going at `now_ns`: its next retransmission is not overdue.
    #[must_use]
    pub fn active_at(&self, now_ns: u64) -> bool {
        if self.streak == 0 {
            return false;
        }
        let expected = if self.last_gap_ns == 0 {
            FIRST_INTERVAL_NS
        } else {
            (2 * self.last_gap_ns).min(RTO_MAX_NS)
        };
        now_ns.saturating_sub(self.last_ns) <= expected + SLACK_NS
    }
}

/// What a retransmission changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreakChange {
    /// A streak without progress began with this retransmission.
    Began,
    /// The connection made progress since its last streak, which ended.
    Recovered { streak: u32, duration_ns: u64 },
    /// Nothing to report (the streak goes on, or a retransmission outside any streak).
    None,
}

/// Retransmission counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetransmitCounts {
    /// Data/FIN segments retransmitted.
    pub segments: u64,
    /// SYN-ACKs retransmitted by listeners.
    pub synacks: u64,
    /// Streaks without progress that began.
    pub streaks: u64,
    /// Streaks that ended with progress.
    pub recovered: u64,
    /// Retransmissions of connections that could not be followed (table full).
    pub untracked: u64,
    /// SYN-ACK retransmissions that did not fit the per-port table.
    pub synack_overflow: u64,
    /// Timeouts the kernel counted within a streak (its count went up by more than one
    /// between two retransmissions seen) with no retransmission reported for them: an event
    /// the kernel did not deliver, or (before Linux 6.13, which reports failures too) a
    /// retransmission that failed on this host.
    pub timeouts_unreported: u64,
}

#[derive(Default)]
pub(super) struct Retransmits {
    pub by_sock: FxHashMap<u64, Retransmitting>,
    pub counts: RetransmitCounts,
    synacks: FxHashMap<ListenerKey, u64>,
}

impl Retransmits {
    /// Feeds one retransmission of a connection (not a SYN-ACK).
    pub fn segment(&mut self, r: &Retransmit) -> (StreakChange, Option<Retransmitting>) {
        self.counts.segments += 1;
        if !self.by_sock.contains_key(&r.sock) && !self.make_room(r.mono_ns) {
            self.counts.untracked += 1;
            return (StreakChange::None, None);
        }
        let tuple = Tuple {
            netns: r.netns,
            local: r.local,
            remote: r.remote,
        };
        let e = self.by_sock.entry(r.sock).or_insert(Retransmitting {
            tuple,
            state: r.state,
            total: 0,
            streak_start_ns: 0,
            streak: 0,
            last_ns: 0,
            last_gap_ns: 0,
            unrecovered: 0,
            streak_lower_bound: false,
            suspect: false,
        });
        // Each timeout raises the count by one and retransmits: a count more than one above
        // the last one seen skipped timeouts whose retransmissions were not reported. (A count
        // that dropped, after progress, is left alone: a lower bound.)
        if e.total > 0
            && let Some(n) = r.unrecovered
        {
            self.counts.timeouts_unreported +=
                u64::from(n.saturating_sub(e.unrecovered).saturating_sub(1));
        }
        e.total += 1;
        e.tuple = tuple;
        e.state = r.state.or(e.state);
        let mut change = StreakChange::None;
        match r.unrecovered {
            // Unknown count: every retransmission extends the streak, none proves progress.
            None => {
                if e.streak == 0 || !e.active_at(r.mono_ns) {
                    Self::end(e, &mut self.counts);
                    change = Self::begin(e, r, false, &mut self.counts);
                } else {
                    Self::extend(e, r);
                }
            }
            // Progress since the last timeout (a fast retransmit, or a pre-6.2 first timeout).
            Some(0) => {
                change = Self::end(e, &mut self.counts);
            }
            Some(n) if e.streak > 0 && n >= e.unrecovered => Self::extend(e, r),
            Some(n) => {
                // A lower count than last time: an ACK made progress in between.
                Self::end(e, &mut self.counts);
                change = Self::begin(e, r, n > 1, &mut self.counts);
            }
        }
        if let Some(n) = r.unrecovered {
            e.unrecovered = n;
        }
        (change, Some(*e))
    }

    fn begin(
        e: &mut Retransmitting,
        r: &Retransmit,
        lower_bound: bool,
        counts: &mut RetransmitCounts,
    ) -> StreakChange {
        counts.streaks += 1;
        e.streak = 1;
        e.streak_start_ns = r.mono_ns;
        e.last_ns = r.mono_ns;
        e.last_gap_ns = 0;
        e.streak_lower_bound = lower_bound;
        e.suspect = false;
        StreakChange::Began
    }

    fn extend(e: &mut Retransmitting, r: &Retransmit) {
        // Several segments go out per timeout; the interval is between timeouts.
        let gap = r.mono_ns.saturating_sub(e.last_ns);
        if r.unrecovered.is_none_or(|n| n > e.unrecovered) {
            e.last_gap_ns = gap;
        }
        e.streak = e.streak.saturating_add(1);
        e.last_ns = r.mono_ns;
    }

    fn end(e: &mut Retransmitting, counts: &mut RetransmitCounts) -> StreakChange {
        if e.streak == 0 {
            return StreakChange::None;
        }
        counts.recovered += 1;
        let change = StreakChange::Recovered {
            streak: e.streak,
            duration_ns: e.last_ns.saturating_sub(e.streak_start_ns),
        };
        e.streak = 0;
        e.suspect = false;
        change
    }

    /// Frees a slot, preferring connections with no active streak. False: none could be freed.
    fn make_room(&mut self, now_ns: u64) -> bool {
        if self.by_sock.len() < RETRANSMITTING_CAPACITY {
            return true;
        }
        self.by_sock.retain(|_, e| e.active_at(now_ns));
        self.by_sock.len() < RETRANSMITTING_CAPACITY
    }

    pub fn synack(&mut self, r: &Retransmit) {
        debug_assert_eq!(r.kind, RetransmitKind::Synack);
        self.counts.synacks += 1;
        let key = ListenerKey {
            netns: r.netns,
            port: r.local.port(),
        };
        if self.synacks.len() >= SYNACK_PORTS_CAPACITY && !self.synacks.contains_key(&key) {
            self.counts.synack_overflow += 1;
        } else {
            *self.synacks.entry(key).or_default() += 1;
        }
    }

    /// Streaks whose next retransmission is overdue at `now_ns`: they made progress.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Recovered> {
        let mut ended = Vec::new();
        for (key, e) in &mut self.by_sock {
            if e.streak > 0 && !e.active_at(now_ns) {
                let snapshot = *e;
                if let StreakChange::Recovered {
                    streak,
                    duration_ns,
                } = Self::end(e, &mut self.counts)
                {
                    ended.push(Recovered {
                        sock: *key,
                        entry: snapshot,
                        streak,
                        duration_ns,
                    });
                }
            }
        }
        ended
    }

    /// Active streaks without progress for at least `min_ns`, not yet marked as suspects;
    /// marks them.
    pub fn new_suspects(&mut self, now_ns: u64, min_ns: u64) -> Vec<(u64, Retransmitting)> {
        let mut found = Vec::new();
        for (key, e) in &mut self.by_sock {
            if !e.suspect
                && e.active_at(now_ns)
                && now_ns.saturating_sub(e.streak_start_ns) >= min_ns
            {
                e.suspect = true;
                found.push((*key, *e));
            }
        }
        found
    }

    pub fn synacks_by_port(&self) -> Vec<(ListenerKey, u64)> {
        let mut v: Vec<_> = self.synacks.iter().map(|(k, n)| (*k, *n)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Netns;
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::event::Family;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn rtx(at_ns: u64, unrecovered: Option<u8>) -> Retransmit {
        Retransmit {
            mono_ns: at_ns,
            kind: RetransmitKind::Segment,
            sock: 7,
            state: Some(TcpState::Established),
            family: Family::Ipv4,
            local: SocketAddr::from((Ipv4Addr::LOCALHOST, 40000)),
            remote: SocketAddr::from((Ipv4Addr::LOCALHOST, 80)),
            netns: Netns::new(1),
            unrecovered,
            err: 0,
        }
    }

    #[test]
    fn a_rising_count_is_one_streak_and_an_overdue_one_recovered() {
        let mut r = Retransmits::default();
        // RTO 200 ms doubling: 1, 2, 3, 4 at 0.2, 0.6, 1.4, 3.0 s.
        let times = [200 * MS, 600 * MS, 1400 * MS, 3000 * MS];
        for (i, t) in times.iter().enumerate() {
            let (change, e) = r.segment(&rtx(*t, Some(u8::try_from(i + 1).unwrap())));
            assert_eq!(
                change,
                if i == 0 {
                    StreakChange::Began
                } else {
                    StreakChange::None
                }
            );
            assert_eq!(e.unwrap().streak_start_ns, 200 * MS);
        }
        assert_eq!(r.new_suspects(3 * S, 2 * S).len(), 1);
        assert!(r.new_suspects(3 * S, 2 * S).is_empty(), "reported once");
        // Next expected within 2 x 1.6 s + 1 s of the last: not overdue at 7 s, overdue at 8 s.
        assert!(r.expire(7 * S).is_empty());
        let ended = r.expire(8 * S);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].streak, 4);
        assert_eq!(ended[0].duration_ns, 2800 * MS);
        assert_eq!(r.counts.recovered, 1);
        assert_eq!(r.counts.segments, 4);
    }

    #[test]
    fn a_count_that_drops_proves_progress() {
        let mut r = Retransmits::default();
        r.segment(&rtx(S, Some(1)));
        r.segment(&rtx(2 * S, Some(2)));
        let (change, e) = r.segment(&rtx(3 * S, Some(1)));
        assert_eq!(change, StreakChange::Began);
        assert_eq!(e.unwrap().streak_start_ns, 3 * S);
        assert_eq!(r.counts.recovered, 1);
        assert_eq!(r.counts.streaks, 2);
        let (change, _) = r.segment(&rtx(4 * S, Some(0)));
        assert_eq!(
            change,
            StreakChange::Recovered {
                streak: 1,
                duration_ns: 0
            }
        );
    }

    #[test]
    fn timeouts_skipped_by_the_count_are_counted_unreported() {
        let mut r = Retransmits::default();
        // A loss probe (0), the first timeout's retransmission missing, then 2, 3, and two
        // segments of the fourth timeout.
        for (t, n) in [(S, 0), (2 * S, 2), (3 * S, 3), (4 * S, 4), (4 * S + MS, 4)] {
            r.segment(&rtx(t, Some(n)));
        }
        assert_eq!(r.counts.timeouts_unreported, 1);
        // The sixth timeout's retransmission seen, the fifth's not.
        r.segment(&rtx(6 * S, Some(6)));
        assert_eq!(r.counts.timeouts_unreported, 2);
        // Progress and a new streak: no timeout skipped is known.
        r.segment(&rtx(7 * S, Some(1)));
        assert_eq!(r.counts.timeouts_unreported, 2);
        // A first retransmission seen late is not a skip: nothing was seen before it.
        let mut late = Retransmits::default();
        late.segment(&rtx(S, Some(3)));
        assert_eq!(late.counts.timeouts_unreported, 0);
        // Without the kernel's count nothing can be said.
        let mut unknown = Retransmits::default();
        unknown.segment(&rtx(S, None));
        unknown.segment(&rtx(2 * S, None));
        assert_eq!(unknown.counts.timeouts_unreported, 0);
    }

    #[test]
    fn a_streak_seen_late_is_a_lower_bound() {
        let mut r = Retransmits::default();
        let (_, e) = r.segment(&rtx(S, Some(3)));
        assert!(e.unwrap().streak_lower_bound);
    }

    #[test]
    fn synacks_are_counted_per_listening_port() {
        let mut r = Retransmits::default();
        let s = Retransmit {
            kind: RetransmitKind::Synack,
            state: None,
            unrecovered: None,
            ..rtx(S, None)
        };
        r.synack(&s);
        r.synack(&s);
        assert_eq!(
            r.synacks_by_port(),
            vec![(
                ListenerKey {
                    netns: Netns::new(1),
                    port: 40000
                },
                2
            )]
        );
        assert_eq!(r.counts.synacks, 2);
    }
}
