//! What the tracker says about each event it is fed, for live views (`observer watch`).

use observer_common::TcpState;

use super::{Tuple, ends::EndCause, resets::ResetClass};
use crate::event::{CgroupId, Reset, SocketError, Task, Transition};

/// What the tracker knows about one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Nanoseconds spent in the state just left, when its entry was seen (or, with
    /// `lower_bound`, at least this long: the socket existed before the daemon started).
    pub previous_state_ns: Option<u64>,
    /// `previous_state_ns` is a lower bound, not an exact time.
    pub lower_bound: bool,
    /// The socket's owner, from this transition, an earlier one it drove, its listener, or the
    /// process holding its file descriptor.
    pub owner: Option<Task>,
    /// The socket's cgroup, from this transition or an earlier one (or sock_diag).
    pub cgroup: Option<CgroupId>,
    /// The transition's old state differs from the last new state seen for this socket: at
    /// least one transition in between was lost.
    pub gap: bool,
}

/// How a timewait socket ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimewaitEnd {
    /// Its timer fired: the full 2*MSL (or `tcp_fin_timeout`) elapsed.
    Expired,
    /// Its timer was cancelled and not restarted: the 4-tuple was reused, an RST arrived, or
    /// the namespace was torn down.
    Killed,
    /// Its end was not seen (an event was lost): sock_diag no longer listed it, or its timer
    /// or its 4-tuple was taken by another timewait socket.
    Unseen,
}

impl TimewaitEnd {
    pub const ALL: [Self; 3] = [Self::Expired, Self::Killed, Self::Unseen];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Killed => "killed",
            Self::Unseen => "unseen",
        }
    }
}

/// Facts about a transition beyond the states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// The peer closed (or reset) a connection the application never accepted.
    ClosedBeforeAccept,
    /// The connection entered TIME_WAIT (or its orphaned FIN_WAIT2 wait). The kernel's own
    /// transition was FIN_WAIT2/CLOSING -> CLOSE of the full socket.
    TimewaitEntered { timeout_ns: Option<u64> },
    /// The timewait timer restarted (a retransmitted FIN, or FIN_WAIT2 -> TIME_WAIT).
    TimewaitRestarted { timeout_ns: Option<u64> },
    /// The timewait socket ended.
    TimewaitEnded(TimewaitEnd),
    /// FIN_WAIT2/CLOSING -> CLOSE without a timewait socket (`tcp_max_tw_buckets` exhausted,
    /// or its timer event was lost).
    NoTimewait,
}

/// One thing worth showing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// A state transition. TIME_WAIT entry and end are transitions too; for them `sock` is
    /// the timewait socket's timer address.
    Transition {
        transition: Transition,
        seen: Observation,
        note: Option<Note>,
    },
    /// A connection's retransmissions began, became suspect, or recovered: one report per
    /// change, not per segment.
    Retransmits {
        sock: u64,
        tuple: Tuple,
        state: Option<TcpState>,
        owner: Option<Task>,
        /// The socket's cgroup, when the tracker knows it.
        cgroup: Option<CgroupId>,
        phase: RetransmitPhase,
    },
    /// The kernel ended (or refused) a connection with an error. `error.state` is the state
    /// the connection ended in: the state before CLOSE when the kernel reported the error
    /// after closing the socket (timeouts and resets, since Linux 6.10).
    ConnectionError {
        error: SocketError,
        cause: EndCause,
        owner: Option<Task>,
        cgroup: Option<CgroupId>,
        /// Retransmissions of the streak that timed out, and how long it lasted.
        retransmits: Option<(u32, u64)>,
    },
    Reset {
        reset: Reset,
        /// The socket's state: the tracepoint's, else the tracker's.
        state: Option<TcpState>,
        class: ResetClass,
        owner: Option<Task>,
        cgroup: Option<CgroupId>,
    },
}

impl Report {
    /// The cgroup of the report's socket, when the tracker knows it: what names its workload.
    #[must_use]
    pub const fn cgroup(&self) -> Option<CgroupId> {
        match self {
            Self::Transition { seen, .. } => seen.cgroup,
            Self::Retransmits { cgroup, .. }
            | Self::ConnectionError { cgroup, .. }
            | Self::Reset { cgroup, .. } => *cgroup,
        }
    }
}

/// Where a connection's retransmissions stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetransmitPhase {
    /// It began retransmitting without progress.
    Began,
    /// No progress for the tracker's half-open threshold: the peer may have vanished.
    Suspect {
        /// When the streak began (a lower bound when `lower_bound`).
        since_ns: u64,
        lower_bound: bool,
        retransmits: u32,
    },
    /// It made progress again.
    Recovered { retransmits: u32, duration_ns: u64 },
}

impl RetransmitPhase {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Began => "retransmitting",
            Self::Suspect { .. } => "half_open_suspect",
            Self::Recovered { .. } => "recovered",
        }
    }
}
