//! The kernel's own list of TCP sockets, read through netlink `sock_diag` (what `ss` uses).
//!
//! The eBPF probes only see transitions that happen while they are attached, and never a
//! `TIME_WAIT` entry. This module fills those gaps: it lists every TCP socket of a network
//! namespace ([`dump_current`], [`dump_netns`]) or of all of them ([`dump_all`]), for seeding
//! the tracker at start-up and reconciling it later, and finds the processes holding a socket
//! ([`holders_of`]) for the sockets that linger in `CLOSE_WAIT`. [`listeners_all`] samples
//! the accept queues of every listener, with the listen overflow counters.

mod dump;
mod listeners;
mod lookup;
mod netns;
mod netstat;
mod owners;

use std::{io, net::SocketAddr, path::PathBuf};

use observer_common::TcpState;

use crate::{
    clock::thread_cpu_ns,
    event::{CgroupId, Family, Netns},
    kernel::NetLimits,
};

pub use self::{
    listeners::{ListenSnapshot, Listener, Requests, listeners_all, listeners_current},
    lookup::{Probe, ProbeKind, gone_in_netns},
    netns::list_netns,
    netstat::{ListenCounters, NETSTAT, NetstatError},
    owners::{Holder, holders_of},
};

/// Which timer of a socket is pending (`idiag_timer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagTimer {
    /// No timer (0).
    None,
    /// Retransmission, or SYN-ACK retransmission for a request socket (1).
    Retransmit,
    /// The socket timer: keepalive, or the `FIN_WAIT2` timeout of an orphaned socket (2).
    KeepaliveOrFinWait2,
    /// The `TIME_WAIT` (or orphaned `FIN_WAIT2`) timer of a timewait socket (3).
    TimeWait,
    /// Zero-window probe (4).
    ZeroWindowProbe,
    /// A value this code does not know.
    Other(u8),
}

impl DiagTimer {
    /// The timer the kernel numbers `value`.
    #[must_use]
    pub const fn from_kernel(value: u8) -> Self {
        match value {
            0 => Self::None,
            1 => Self::Retransmit,
            2 => Self::KeepaliveOrFinWait2,
            3 => Self::TimeWait,
            4 => Self::ZeroWindowProbe,
            other => Self::Other(other),
        }
    }
}

/// One TCP socket as `sock_diag` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// The network namespace it was dumped from.
    pub netns: Netns,
    /// Family of the dump that reported it (an IPv6 socket may carry IPv4-mapped addresses).
    pub family: Family,
    /// The state. Request sockets (the kernel's `NEW_SYN_RECV`) are reported as `SYN_RECV`.
    pub state: TcpState,
    /// Local address. IPv4-mapped IPv6 addresses are kept as IPv6.
    pub local: SocketAddr,
    /// Remote address; unspecified with port 0 for a listener.
    pub remote: SocketAddr,
    /// Socket inode, the `N` of `/proc/<pid>/fd/* -> socket:[N]`; 0 for timewait and request
    /// sockets, which have no file.
    pub inode: u64,
    /// Owner uid; 0 for timewait and request sockets.
    pub uid: u32,
    /// Socket cookie: `idiag_cookie[0] | idiag_cookie[1] << 32`.
    pub cookie: u64,
    /// The socket's cgroup (v2), for full sockets on Linux 5.7+.
    pub cgroup: Option<CgroupId>,
    /// The pending timer.
    pub timer: DiagTimer,
    /// Milliseconds until `timer` fires; 0 when there is none.
    pub expires_ms: u32,
    /// Retransmissions so far (for a request socket: SYN-ACK retransmissions).
    pub retransmits: u8,
    /// Bytes not yet read; for LISTEN, the current accept-queue length.
    pub rqueue: u32,
    /// Bytes not yet acknowledged; for LISTEN, the backlog limit.
    pub wqueue: u32,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error(
        "cannot open network namespace {path}: {source} (it may have gone away since it was listed)"
    )]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "network namespace {path} is now inode {found}, not {expected}: the namespace it named is gone"
    )]
    NamespaceChanged {
        path: PathBuf,
        expected: Netns,
        found: u64,
    },
    #[error(
        "cannot enter network namespace {path}: {source}; entering another namespace needs CAP_SYS_ADMIN (run as root)"
    )]
    EnterNamespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read this thread's network namespace from /proc/thread-self/ns/net: {0}")]
    CurrentNamespace(#[source] io::Error),
    #[error("the thread that dumps network namespace {path} failed: {reason}")]
    Worker { path: PathBuf, reason: String },
    #[error(
        "cannot open a NETLINK_SOCK_DIAG socket: {0}; the kernel needs CONFIG_INET_DIAG (module inet_diag)"
    )]
    Socket(#[source] io::Error),
    #[error("sock_diag {stage} failed: {source}")]
    Io {
        stage: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel refused the TCP socket dump: {source}; check that module tcp_diag is loaded (`modprobe tcp_diag`)"
    )]
    Kernel {
        #[source]
        source: io::Error,
    },
    #[error("a sock_diag reply of {len} bytes did not fit the {capacity}-byte receive buffer")]
    Truncated { len: usize, capacity: usize },
    #[error("malformed sock_diag reply: {message}")]
    Decode { message: String },
    #[error("cannot read the listen counters: {0}")]
    Netstat(#[from] NetstatError),
}

/// A network namespace, named by a path that opens it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetnsRef {
    /// The namespace (what events and [`DiagSocket::netns`] carry).
    pub inode: Netns,
    /// `/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub path: PathBuf,
}

/// Every TCP socket of the calling thread's network namespace.
pub fn dump_current() -> Result<Vec<DiagSocket>, SockDiagError> {
    let netns = netns::current_inode()?;
    dump::tcp_sockets(netns)
}

/// Every TCP socket of the namespace `ns`, dumped from a short-lived thread that enters it.
pub fn dump_netns(ns: &NetnsRef) -> Result<Vec<DiagSocket>, SockDiagError> {
    netns::run_in(ns, || dump::tcp_sockets(ns.inode))
}

/// The outcome of work done on a thread inside a namespace, and that thread's CPU time (the
/// kernel's share included), counted whether the work succeeded or not: a dump that fails
/// halfway has still walked the kernel's tables.
#[derive(Debug)]
#[must_use]
pub struct Timed<T> {
    pub result: Result<T, SockDiagError>,
    /// 0 when the thread could not enter the namespace.
    pub cpu_ns: u64,
}

impl<T> Timed<T> {
    /// Runs `work` on a thread inside `ns`, timing it there.
    fn in_netns(ns: &NetnsRef, work: impl FnOnce() -> Result<T, SockDiagError> + Send) -> Self
    where
        T: Send,
    {
        let timed = netns::run_in(ns, || {
            let began = thread_cpu_ns();
            let result = work();
            Ok((result, thread_cpu_ns().saturating_sub(began)))
        });
        match timed {
            Ok((result, cpu_ns)) => Self { result, cpu_ns },
            Err(e) => Self {
                result: Err(e),
                cpu_ns: 0,
            },
        }
    }
}

/// Streams the TCP sockets of `ns` whose state bit (`1 << TCP_*`) is in `states` to `each`,
/// from a thread inside the namespace (nothing is gathered: a namespace may hold a million),
/// and reads the namespace's TIME_WAIT limits there. The time includes `each`.
pub fn each_in_netns(
    ns: &NetnsRef,
    states: u32,
    each: &mut (dyn FnMut(DiagSocket) + Send),
) -> Timed<NetLimits> {
    Timed::in_netns(ns, || {
        dump::tcp_dump(ns.inode, states, &mut |entry| each(entry.socket))?;
        Ok(NetLimits::of_current())
    })
}

/// The state mask of a dump of every TCP state.
pub const ALL_STATES: u32 = dump::ALL_STATES;

/// The state mask of a dump of `states` only.
#[must_use]
pub fn state_mask(states: &[TcpState]) -> u32 {
    states.iter().fold(0, |mask, s| mask | 1 << *s as u32)
}

/// [`dump_netns`], plus the namespace's TIME_WAIT limits read from inside it.
pub fn dump_netns_with_limits(
    ns: &NetnsRef,
) -> Result<(Vec<DiagSocket>, NetLimits), SockDiagError> {
    netns::run_in(ns, || {
        Ok((dump::tcp_sockets(ns.inode)?, NetLimits::of_current()))
    })
}

/// Every namespace's sockets; failures listed separately.
#[derive(Debug)]
pub struct Snapshot {
    /// Sockets of every namespace that could be dumped.
    pub sockets: Vec<DiagSocket>,
    /// Namespaces that could not be dumped, and why.
    pub failed: Vec<(NetnsRef, SockDiagError)>,
    /// How many namespaces were found.
    pub namespaces: usize,
}

/// Dumps every network namespace [`list_netns`] finds. A namespace that fails (for example one
/// that vanished since it was listed) goes to [`Snapshot::failed`]; the others still count.
#[must_use]
pub fn dump_all() -> Snapshot {
    let namespaces = list_netns();
    let mut snapshot = Snapshot {
        sockets: Vec::new(),
        failed: Vec::new(),
        namespaces: namespaces.len(),
    };
    for ns in namespaces {
        match dump_netns(&ns) {
            Ok(sockets) => snapshot.sockets.extend(sockets),
            Err(e) => snapshot.failed.push((ns, e)),
        }
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::DiagTimer;

    #[test]
    fn timer_values() {
        assert_eq!(DiagTimer::from_kernel(0), DiagTimer::None);
        assert_eq!(DiagTimer::from_kernel(1), DiagTimer::Retransmit);
        assert_eq!(DiagTimer::from_kernel(2), DiagTimer::KeepaliveOrFinWait2);
        assert_eq!(DiagTimer::from_kernel(3), DiagTimer::TimeWait);
        assert_eq!(DiagTimer::from_kernel(4), DiagTimer::ZeroWindowProbe);
        assert_eq!(DiagTimer::from_kernel(5), DiagTimer::Other(5));
        assert_eq!(DiagTimer::from_kernel(255), DiagTimer::Other(255));
    }
}
