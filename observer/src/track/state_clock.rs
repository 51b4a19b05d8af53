//! When each live socket entered its current state, and who owns it.
//!
//! Pure: fed transitions, no I/O. Bounded: at most `capacity` sockets; a socket that arrives
//! when the table is full is not tracked (its durations are then unknown) and is counted.

use std::collections::HashMap;

use observer_common::TcpState;

use crate::decode::{Task, Transition};

/// The process that owns a socket, learnt from a transition it drove itself.
pub type Owner = Task;

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: TcpState,
    since_ns: u64,
    owner: Option<Owner>,
}

/// What the clock knows about one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Nanoseconds spent in the state just left, when its entry was seen.
    pub previous_state_ns: Option<u64>,
    /// The socket's owner, from this transition or an earlier one it drove.
    pub owner: Option<Owner>,
    /// The transition's old state differs from the last new state seen for this socket: at
    /// least one transition in between was lost.
    pub gap: bool,
}

/// Counters of what the clock could not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockStats {
    /// Transitions proving that an earlier one was missed.
    pub gaps: u64,
    /// Sockets not tracked because the table was full.
    pub untracked: u64,
    /// Sockets tracked now.
    pub tracked: usize,
}

#[derive(Debug)]
pub struct StateClock {
    sockets: HashMap<u64, Entry>,
    capacity: usize,
    gaps: u64,
    untracked: u64,
}

impl StateClock {
    /// Default number of sockets tracked at once.
    pub const DEFAULT_CAPACITY: usize = 1 << 18;

    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            sockets: HashMap::new(),
            capacity,
            gaps: 0,
            untracked: 0,
        }
    }

    /// Records a transition and says how long the socket spent in the state it left.
    pub fn observe(&mut self, t: &Transition) -> Observation {
        let this_owner = t.owner_context.then_some(t.task);
        let known = self.sockets.get(&t.sock).copied();
        let gap = known.is_some_and(|e| e.state != t.old);
        if gap {
            self.gaps += 1;
        }
        let previous_state_ns = known
            .filter(|_| !gap)
            .map(|e| t.mono_ns.saturating_sub(e.since_ns));
        // A socket that was closed and whose address comes back with CLOSE -> ... is a new
        // socket: it does not inherit the old owner.
        let inherited = known
            .filter(|_| t.old != TcpState::Close)
            .and_then(|e| e.owner);
        let owner = this_owner.or(inherited);

        if t.new == TcpState::Close {
            self.sockets.remove(&t.sock);
        } else if known.is_some() || self.sockets.len() < self.capacity {
            self.sockets.insert(
                t.sock,
                Entry {
                    state: t.new,
                    since_ns: t.mono_ns,
                    owner,
                },
            );
        } else {
            self.untracked += 1;
        }
        Observation {
            previous_state_ns,
            owner,
            gap,
        }
    }

    #[must_use]
    pub fn stats(&self) -> ClockStats {
        ClockStats {
            gaps: self.gaps,
            untracked: self.untracked,
            tracked: self.sockets.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use observer_common::TcpState::{self, Close, Established, FinWait1, FinWait2, SynSent};

    use super::*;
    use crate::decode::{Family, Task};

    fn t(sock: u64, old: TcpState, new: TcpState, mono_ns: u64, pid: u32) -> Transition {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Transition {
            mono_ns,
            sock,
            old,
            new,
            family: Family::Ipv4,
            local: addr,
            remote: addr,
            netns: None,
            task: Task::new(pid, pid, *b"client\0\0\0\0\0\0\0\0\0\0"),
            owner_context: TcpState::in_owner_context(old, new),
        }
    }

    #[test]
    fn durations_and_owner_follow_a_client_lifecycle() {
        let mut clock = StateClock::new(16);
        let first = clock.observe(&t(1, Close, SynSent, 100, 42));
        assert_eq!(
            first.previous_state_ns, None,
            "time in CLOSE before connect() is unknown"
        );
        assert_eq!(first.owner.map(|o| o.pid), Some(42));
        // Packet-driven: task 7 is whoever was interrupted; the owner stays 42.
        let est = clock.observe(&t(1, SynSent, Established, 350, 7));
        assert_eq!(est.previous_state_ns, Some(250));
        assert_eq!(est.owner.map(|o| o.pid), Some(42));
        assert_eq!(
            clock
                .observe(&t(1, Established, FinWait1, 1350, 42))
                .previous_state_ns,
            Some(1000)
        );
        assert_eq!(
            clock
                .observe(&t(1, FinWait1, FinWait2, 1400, 7))
                .previous_state_ns,
            Some(50)
        );
        assert_eq!(
            clock
                .observe(&t(1, FinWait2, Close, 1500, 7))
                .previous_state_ns,
            Some(100)
        );
        assert_eq!(
            clock.stats(),
            ClockStats {
                gaps: 0,
                untracked: 0,
                tracked: 0
            }
        );
    }

    #[test]
    fn a_dropped_transition_is_a_gap_with_no_invented_duration() {
        let mut clock = StateClock::new(16);
        clock.observe(&t(1, Close, SynSent, 100, 42));
        clock.observe(&t(1, SynSent, Established, 200, 42));
        // ESTABLISHED -> FIN_WAIT1 was lost.
        let o = clock.observe(&t(1, FinWait1, FinWait2, 900, 7));
        assert!(o.gap);
        assert_eq!(o.previous_state_ns, None);
        // The state is repaired: the next transition is timed again.
        assert_eq!(
            clock
                .observe(&t(1, FinWait2, Close, 1000, 7))
                .previous_state_ns,
            Some(100)
        );
        assert_eq!(clock.stats().gaps, 1);
    }

    #[test]
    fn a_reused_socket_address_is_a_new_socket() {
        let mut clock = StateClock::new(16);
        clock.observe(&t(1, Close, SynSent, 100, 42));
        // The CLOSE of the first socket was lost; the address is reused by pid 43.
        let o = clock.observe(&t(1, Close, SynSent, 500, 43));
        assert!(o.gap);
        assert_eq!(o.owner.map(|o| o.pid), Some(43));
        let o = clock.observe(&t(1, SynSent, Established, 600, 9));
        assert_eq!(
            (o.previous_state_ns, o.owner.map(|o| o.pid)),
            (Some(100), Some(43))
        );
    }

    #[test]
    fn the_table_is_bounded_and_overflow_is_counted() {
        let mut clock = StateClock::new(2);
        for sock in 1..=3 {
            clock.observe(&t(sock, Close, SynSent, 100, 1));
        }
        assert_eq!(
            clock.stats(),
            ClockStats {
                gaps: 0,
                untracked: 1,
                tracked: 2
            }
        );
        assert_eq!(
            clock
                .observe(&t(3, SynSent, Established, 200, 1))
                .previous_state_ns,
            None
        );
        assert_eq!(
            clock
                .observe(&t(1, SynSent, Established, 200, 1))
                .previous_state_ns,
            Some(100)
        );
    }
}
