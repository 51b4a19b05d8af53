//! What happened to a timewait socket's timer: its TIME_WAIT (or orphaned FIN_WAIT2) began,
//! restarted, or ended.

use std::net::SocketAddr;

use observer_common::TcpState;

use super::{Family, Netns};

/// The timewait socket a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimewaitSocket {
    /// `TimeWait`, or `FinWait2` for an orphaned FIN_WAIT2 waiting in a timewait socket.
    pub substate: TcpState,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: Option<Netns>,
}

/// What happened to the timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Armed: the connection entered TIME_WAIT (or its FIN_WAIT2 wait), or the wait restarted.
    Start {
        socket: TimewaitSocket,
        /// Time until the timer fires, when the kernel's HZ is known.
        timeout_ns: Option<u64>,
    },
    /// Disarmed: right before an expiry or a restart, or the timewait socket was killed.
    Cancel,
    /// Fired: the timewait socket ends now, in this substate (`None` if unreadable).
    Expire { substate: Option<TcpState> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimewaitTimer {
    pub mono_ns: u64,
    /// Address of the timer; identifies the timewait socket while it lives.
    pub timer: u64,
    /// The timewait socket's cookie, as sock_diag reports it; 0 when it has none.
    pub cookie: u64,
    pub action: TimerAction,
}
