//! An error the kernel reported on a TCP socket (`sock:inet_sk_error_report`).

use std::net::SocketAddr;

use observer_common::TcpState;

use super::{Family, Netns};

/// An error the kernel reported on a TCP socket (`sk->sk_err` at `sk_error_report()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketError {
    pub mono_ns: u64,
    /// Kernel address of the socket.
    pub sock: u64,
    /// Positive errno: `ETIMEDOUT`, `ECONNREFUSED`, `ECONNRESET`, `EPIPE`, `EHOSTUNREACH`, ...
    pub error: i32,
    /// The socket's state when the error was reported.
    pub state: Option<TcpState>,
    pub family: Family,
    /// This host's end.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: Option<Netns>,
    /// `icsk_retransmits`: timeout-driven retransmissions without progress. Non-zero on a
    /// retransmission timeout. `None`: not read.
    pub unrecovered: Option<u8>,
    /// `icsk_probes_out`: keepalive or zero-window probes sent without an answer.
    pub probes_out: Option<u8>,
    /// Whether data was queued to send (`sk_wmem_queued` > 0): tells a zero-window probe
    /// timeout from a keepalive timeout.
    pub unsent_data: Option<bool>,
}
