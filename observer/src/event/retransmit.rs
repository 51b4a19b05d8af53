//! A segment or a SYN-ACK sent again (`tcp:tcp_retransmit_skb`, `tcp:tcp_retransmit_synack`).

use std::net::SocketAddr;

use observer_common::TcpState;

use super::{Family, Netns};

/// What was sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetransmitKind {
    /// A data or FIN segment of a connection (`tcp_retransmit_skb`).
    Segment,
    /// A listener's SYN-ACK whose handshake was not completed (`tcp_retransmit_synack`): the
    /// client vanished, its ACK was lost, or the accept queue was full when it arrived.
    Synack,
}

impl RetransmitKind {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Segment => "segment",
            Self::Synack => "synack",
        }
    }
}

/// One retransmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    pub mono_ns: u64,
    pub kind: RetransmitKind,
    /// Kernel address of the socket; for [`RetransmitKind::Synack`], of the listener.
    pub sock: u64,
    /// The socket's state as the tracepoint reports it ([`RetransmitKind::Segment`] only).
    pub state: Option<TcpState>,
    pub family: Family,
    /// This host's end.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: Option<Netns>,
    /// The kernel's `icsk_retransmits` when this retransmission was made: timeout-driven
    /// retransmissions since the last ACK that advanced `snd_una`. 0 means the connection made
    /// progress since its previous timeout (or this is a fast retransmit). `None`: not read.
    pub unrecovered: Option<u8>,
    /// The tracepoint's `err` (0: sent; negative errno: the retransmission failed locally).
    pub err: i32,
}
