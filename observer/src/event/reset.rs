//! An RST sent or received (`tcp:tcp_send_reset`, `tcp:tcp_receive_reset`).

use std::{net::SocketAddr, sync::OnceLock};

use observer_common::TcpState;

use super::{Family, Netns};

/// Which way the RST went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetDirection {
    Sent,
    Received,
}

impl ResetDirection {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// The kernel's `enum sk_rst_reason` value (Linux 6.10+).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResetReason(pub u32);

/// Names of `enum sk_rst_reason`, from kernel BTF, without the `SK_RST_REASON_` prefix.
static REASON_NAMES: OnceLock<Vec<(u32, String)>> = OnceLock::new();

impl ResetReason {
    /// Sets the names (once per process; later calls are ignored: the kernel does not change).
    pub fn set_names(values: Vec<(u32, String)>) {
        let stripped = values
            .into_iter()
            .map(|(v, n)| {
                let short = n.strip_prefix("SK_RST_REASON_").unwrap_or(&n).to_owned();
                (v, short)
            })
            .collect();
        let _ = REASON_NAMES.set(stripped);
    }

    /// The kernel's name, e.g. `NO_SOCKET` or `TCP_ABORT_ON_CLOSE`; `None` when unknown.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        REASON_NAMES
            .get()?
            .iter()
            .find(|(v, _)| *v == self.0)
            .map(|(_, n)| n.as_str())
    }

    #[must_use]
    pub fn is(self, name: &str) -> bool {
        self.name() == Some(name)
    }
}

/// One RST, sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    pub mono_ns: u64,
    pub direction: ResetDirection,
    /// Kernel address of the socket; `None` for a reset sent without one (closed port).
    pub sock: Option<u64>,
    /// The socket's state as the tracepoint reports it (send side only; `None` when unknown).
    pub state: Option<TcpState>,
    /// The kernel's reason (send side, Linux 6.10+).
    pub reason: Option<ResetReason>,
    pub family: Family,
    /// This host's end.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: Option<Netns>,
}
