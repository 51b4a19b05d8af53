//! What an RST means, in plain words, from the kernel's reason and the socket's history.

use observer_common::TcpState;
use serde::Serialize;

use crate::event::{ResetDirection, ResetReason};

/// A closed set of classes: safe as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetClass {
    /// Sent: the application closed with `SO_LINGER {on, 0}` (or `connect(AF_UNSPEC)`).
    AbortiveClose,
    /// Sent: the application closed the socket with unread data in its receive queue.
    CloseWithUnreadData,
    /// Sent: a segment arrived for a port or connection this host has no socket for: a
    /// refused connection, or a late segment for a connection already gone.
    NoSocket,
    /// Sent: an orphaned FIN_WAIT2 gave up (`tcp_fin_timeout`/`TCP_LINGER2`).
    FinWait2Timeout,
    /// Sent: the kernel dropped an orphaned socket under memory pressure or too many orphans.
    OrphanPressure,
    /// Sent: the connection timed out (retransmissions or keepalive).
    Timeout,
    /// Sent: a segment that does not fit the connection (bad ACK, bad SYN, PAWS, ...).
    InvalidSegment,
    /// Received while connecting: the peer refused the connection.
    Refused,
    /// Received on an open connection: the peer aborted it.
    PeerAbort,
    /// Anything else (the kernel's reason, when there is one, says more).
    Other,
}

impl ResetClass {
    pub const ALL: [Self; 10] = [
        Self::AbortiveClose,
        Self::CloseWithUnreadData,
        Self::NoSocket,
        Self::FinWait2Timeout,
        Self::OrphanPressure,
        Self::Timeout,
        Self::InvalidSegment,
        Self::Refused,
        Self::PeerAbort,
        Self::Other,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::AbortiveClose => "abortive_close",
            Self::CloseWithUnreadData => "close_with_unread_data",
            Self::NoSocket => "no_socket",
            Self::FinWait2Timeout => "fin_wait2_timeout",
            Self::OrphanPressure => "orphan_pressure",
            Self::Timeout => "timeout",
            Self::InvalidSegment => "invalid_segment",
            Self::Refused => "refused",
            Self::PeerAbort => "peer_abort",
            Self::Other => "other",
        }
    }

    /// One sentence for people.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::AbortiveClose => "abortive close (SO_LINGER 0)",
            Self::CloseWithUnreadData => "closed with unread data",
            Self::NoSocket => "no socket for the segment (connection refused, or stale)",
            Self::FinWait2Timeout => "orphaned FIN_WAIT2 gave up",
            Self::OrphanPressure => "orphan dropped under memory pressure",
            Self::Timeout => "connection timed out",
            Self::InvalidSegment => "invalid segment",
            Self::Refused => "connection refused by the peer",
            Self::PeerAbort => "the peer aborted the connection",
            Self::Other => "other",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// The socket's last transition before the RST, when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preceding {
    pub old: TcpState,
    pub new: TcpState,
}

/// Classifies one RST. `state` is the socket's state (the tracepoint's, else the tracker's).
#[must_use]
pub fn classify(
    direction: ResetDirection,
    has_socket: bool,
    reason: Option<ResetReason>,
    state: Option<TcpState>,
    preceding: Option<Preceding>,
) -> ResetClass {
    if direction == ResetDirection::Received {
        return if state == Some(TcpState::SynSent) {
            ResetClass::Refused
        } else {
            ResetClass::PeerAbort
        };
    }
    if !has_socket {
        return ResetClass::NoSocket;
    }
    // An open connection went straight to CLOSE, then the closed socket sent an RST: only the
    // owner's close() (SO_LINGER 0, unread data) or disconnect does that. A timeout, a keepalive
    // failure or SOCK_DESTROY sends its RST while the socket is still open, and a received RST
    // closes the socket without sending one. That transition may run in softirq context on
    // another task, so its context proves nothing either way.
    let aborted_by_owner = state == Some(TcpState::Close)
        && preceding.is_some_and(|p| {
            p.new == TcpState::Close && matches!(p.old, TcpState::Established | TcpState::CloseWait)
        });
    let Some(name) = reason.and_then(ResetReason::name) else {
        return if aborted_by_owner {
            ResetClass::AbortiveClose
        } else {
            ResetClass::Other
        };
    };
    match name {
        "NO_SOCKET" => ResetClass::NoSocket,
        "TCP_ABORT_ON_CLOSE" => ResetClass::CloseWithUnreadData,
        "TCP_ABORT_ON_LINGER" => ResetClass::FinWait2Timeout,
        "TCP_ABORT_ON_MEMORY" => ResetClass::OrphanPressure,
        "TCP_TIMEOUT" | "TCP_KEEPALIVE_TIMEOUT" | "TCP_ABORT_ON_TIMEOUT" => ResetClass::Timeout,
        "TCP_STATE" | "NOT_SPECIFIED" if aborted_by_owner => ResetClass::AbortiveClose,
        "TCP_STATE" if state == Some(TcpState::Close) => ResetClass::AbortiveClose,
        n if n.starts_with("TCP_INVALID")
            || n.starts_with("TCP_RFC7323")
            || n.starts_with("TCP_OLD")
            || n.starts_with("INVALID")
            || n.contains("UNEXPECTED") =>
        {
            ResetClass::InvalidSegment
        }
        _ => ResetClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() {
        ResetReason::set_names(vec![
            (0, "SK_RST_REASON_NOT_SPECIFIED".into()),
            (1, "SK_RST_REASON_NO_SOCKET".into()),
            (11, "SK_RST_REASON_TCP_ABORT_ON_CLOSE".into()),
            (14, "SK_RST_REASON_TCP_STATE".into()),
        ]);
    }

    #[test]
    fn names_resets_from_reason_and_history() {
        names();
        // As the kernel reports it: ESTABLISHED -> CLOSE comes from the owner's close() or
        // from a received RST alike, and is not marked as the owner's.
        let linger0 = Preceding {
            old: TcpState::Established,
            new: TcpState::Close,
        };
        let sent = ResetDirection::Sent;
        let close = Some(TcpState::Close);
        assert_eq!(
            classify(sent, true, Some(ResetReason(14)), close, Some(linger0)),
            ResetClass::AbortiveClose
        );
        assert_eq!(
            classify(sent, true, Some(ResetReason(11)), close, Some(linger0)),
            ResetClass::CloseWithUnreadData
        );
        assert_eq!(
            classify(sent, false, Some(ResetReason(1)), None, None),
            ResetClass::NoSocket
        );
        // No reason field (kernels before 6.10): the history alone.
        assert_eq!(
            classify(sent, true, None, close, Some(linger0)),
            ResetClass::AbortiveClose
        );
        assert_eq!(classify(sent, true, None, None, None), ResetClass::Other);
        // An RST sent while the socket is still open (a timeout, a kill) is no abortive close.
        assert_eq!(
            classify(sent, true, None, Some(TcpState::Established), Some(linger0)),
            ResetClass::Other
        );
        // A FIN_WAIT2 socket that closes and resets (linger2 < 0, orphan pressure).
        let fin_wait2 = Preceding {
            old: TcpState::FinWait2,
            new: TcpState::Close,
        };
        assert_eq!(
            classify(sent, true, None, close, Some(fin_wait2)),
            ResetClass::Other
        );
        let recv = ResetDirection::Received;
        assert_eq!(
            classify(recv, true, None, Some(TcpState::SynSent), None),
            ResetClass::Refused
        );
        assert_eq!(
            classify(recv, true, None, Some(TcpState::Established), None),
            ResetClass::PeerAbort
        );
    }
}
