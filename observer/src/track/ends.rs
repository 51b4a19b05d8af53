//! Why a connection ended with an error, from the error the kernel reported on the socket and
//! what the socket was doing: retransmitting into silence, probing a silent peer, connecting.

use observer_common::TcpState;
use serde::Serialize;

use crate::event::{PerState, SocketError};

const EPIPE: i32 = 32;
const ENONET: i32 = 64;
const ENETUNREACH: i32 = 101;
const ECONNRESET: i32 = 104;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EHOSTDOWN: i32 = 112;
const EHOSTUNREACH: i32 = 113;

/// A closed set of end causes: safe as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// Timed out while retransmitting unacknowledged data (`tcp_retries2`, or
    /// `TCP_USER_TIMEOUT`): the peer, or the path to it, went silent.
    RetransmitTimeout,
    /// Keepalive probes went unanswered (`tcp_keepalive_probes`): an idle peer vanished.
    KeepaliveTimeout,
    /// Zero-window probes went unanswered while data waited to be sent.
    ZeroWindowTimeout,
    /// The handshake timed out (`tcp_syn_retries` / `tcp_synack_retries`).
    ConnectTimeout,
    /// Any other timeout the kernel reported.
    Timeout,
    /// The peer refused the connection (an RST answering our SYN).
    Refused,
    /// The peer reset the connection.
    Reset,
    /// An ICMP error: host or network unreachable.
    Unreachable,
    /// Another error (its errno is in the event).
    Other,
}

impl EndCause {
    pub const ALL: [Self; 9] = [
        Self::RetransmitTimeout,
        Self::KeepaliveTimeout,
        Self::ZeroWindowTimeout,
        Self::ConnectTimeout,
        Self::Timeout,
        Self::Refused,
        Self::Reset,
        Self::Unreachable,
        Self::Other,
    ];

    /// The causes that are timeouts.
    pub const TIMEOUTS: [Self; 5] = [
        Self::RetransmitTimeout,
        Self::KeepaliveTimeout,
        Self::ZeroWindowTimeout,
        Self::ConnectTimeout,
        Self::Timeout,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::RetransmitTimeout => "retransmit_timeout",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::ZeroWindowTimeout => "zero_window_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Unreachable => "unreachable",
            Self::Other => "other",
        }
    }

    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the connection ended because the peer stopped answering.
    #[must_use]
    pub fn is_timeout(self) -> bool {
        Self::TIMEOUTS.contains(&self)
    }

    /// `retransmitting`: the tracker saw this connection retransmit without progress.
    #[must_use]
    pub fn classify(e: &SocketError, retransmitting: bool) -> Self {
        match e.error {
            ETIMEDOUT => {
                if matches!(e.state, Some(TcpState::SynSent | TcpState::SynRecv)) {
                    Self::ConnectTimeout
                } else if e.unrecovered.is_some_and(|n| n > 0) || retransmitting {
                    Self::RetransmitTimeout
                } else if e.probes_out.is_some_and(|n| n > 0) {
                    // Both probe timers count in icsk_probes_out; queued data means the peer's
                    // window was closed (zero-window probing), none means keepalive.
                    if e.unsent_data == Some(true) {
                        Self::ZeroWindowTimeout
                    } else {
                        Self::KeepaliveTimeout
                    }
                } else {
                    Self::Timeout
                }
            }
            ECONNREFUSED => Self::Refused,
            ECONNRESET | EPIPE => Self::Reset,
            EHOSTUNREACH | ENETUNREACH | EHOSTDOWN | ENONET => Self::Unreachable,
            _ => Self::Other,
        }
    }
}

/// Connections of one cause and state, counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndCount {
    pub cause: EndCause,
    /// `None` when the kernel did not say.
    pub state: Option<TcpState>,
    pub count: u64,
}

/// Connections ended by an error, by cause and by the state they were in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndCounts {
    by_cause: [StateOrUnknown; EndCause::ALL.len()],
}

/// Counts by the state a connection was in, and of those whose state the kernel did not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StateOrUnknown {
    known: PerState<u64>,
    unknown: u64,
}

impl StateOrUnknown {
    fn iter(&self) -> impl Iterator<Item = (Option<TcpState>, u64)> {
        let known = self.known.iter().map(|(s, n)| (Some(s), *n));
        known.chain([(None, self.unknown)])
    }
}

impl EndCounts {
    pub(super) fn count(&mut self, cause: EndCause, state: Option<TcpState>) {
        let counts = &mut self.by_cause[cause.index()];
        match state {
            Some(s) => counts.known[s] += 1,
            None => counts.unknown += 1,
        }
    }

    /// Every non-zero count, by cause then state.
    #[must_use]
    pub fn nonzero(&self) -> Vec<EndCount> {
        let mut out = Vec::new();
        for cause in EndCause::ALL {
            for (state, count) in self.by_cause[cause.index()].iter() {
                if count > 0 {
                    out.push(EndCount {
                        cause,
                        state,
                        count,
                    });
                }
            }
        }
        out
    }

    #[must_use]
    pub fn of_cause(&self, cause: EndCause) -> u64 {
        self.by_cause[cause.index()].iter().map(|(_, n)| n).sum()
    }

    /// Connections that ended by any timeout.
    #[must_use]
    pub fn timeouts(&self) -> u64 {
        EndCause::TIMEOUTS.iter().map(|c| self.of_cause(*c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::event::Family;

    fn error(error: i32, state: TcpState) -> SocketError {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        SocketError {
            mono_ns: 1,
            sock: 1,
            error,
            state: Some(state),
            family: Family::Ipv4,
            local: addr,
            remote: addr,
            netns: None,
            unrecovered: Some(0),
            probes_out: Some(0),
            unsent_data: Some(false),
        }
    }

    #[test]
    fn timeouts_are_told_apart_by_what_the_socket_was_doing() {
        let e = error(ETIMEDOUT, TcpState::Established);
        assert_eq!(EndCause::classify(&e, false), EndCause::Timeout);
        assert_eq!(EndCause::classify(&e, true), EndCause::RetransmitTimeout);
        let rto = SocketError {
            unrecovered: Some(6),
            ..e
        };
        assert_eq!(EndCause::classify(&rto, false), EndCause::RetransmitTimeout);
        let keepalive = SocketError {
            probes_out: Some(3),
            ..e
        };
        assert_eq!(
            EndCause::classify(&keepalive, false),
            EndCause::KeepaliveTimeout
        );
        let zero_window = SocketError {
            unsent_data: Some(true),
            ..keepalive
        };
        assert_eq!(
            EndCause::classify(&zero_window, false),
            EndCause::ZeroWindowTimeout
        );
        let syn = error(ETIMEDOUT, TcpState::SynSent);
        assert_eq!(EndCause::classify(&syn, true), EndCause::ConnectTimeout);
    }

    #[test]
    fn other_errors_map_to_their_cause() {
        for (errno, cause) in [
            (ECONNREFUSED, EndCause::Refused),
            (ECONNRESET, EndCause::Reset),
            (EPIPE, EndCause::Reset),
            (EHOSTUNREACH, EndCause::Unreachable),
            (ENETUNREACH, EndCause::Unreachable),
            (5, EndCause::Other),
        ] {
            assert_eq!(
                EndCause::classify(&error(errno, TcpState::Established), false),
                cause
            );
        }
    }

    #[test]
    fn counts_by_cause_and_state() {
        let mut c = EndCounts::default();
        c.count(EndCause::RetransmitTimeout, Some(TcpState::Established));
        c.count(EndCause::RetransmitTimeout, Some(TcpState::Established));
        c.count(EndCause::KeepaliveTimeout, None);
        c.count(EndCause::Refused, Some(TcpState::SynSent));
        assert_eq!(c.timeouts(), 3);
        let listed: Vec<_> = c
            .nonzero()
            .into_iter()
            .map(|e| (e.cause, e.state, e.count))
            .collect();
        assert_eq!(
            listed,
            vec![
                (EndCause::RetransmitTimeout, Some(TcpState::Established), 2),
                (EndCause::KeepaliveTimeout, None, 1),
                (EndCause::Refused, Some(TcpState::SynSent), 1),
            ]
        );
    }
}
