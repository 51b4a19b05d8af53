//! A TCP state transition (`sock:inet_sock_set_state`).

use std::net::SocketAddr;

use observer_common::TcpState;

use super::{CgroupId, Family, Netns, Task};

/// One TCP state transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub mono_ns: u64,
    /// Kernel address of the socket: its identity while it lives (reused after it is freed).
    pub sock: u64,
    pub old: TcpState,
    pub new: TcpState,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Network namespace inode, when the kernel offsets for it were known. The program reads it
    /// at a socket's birth (out of CLOSE or LISTEN); the tracker's reports carry it on the
    /// socket's later transitions too.
    pub netns: Option<Netns>,
    /// The socket's cgroup, on the transitions the program reads it for (a socket's birth: out
    /// of CLOSE or LISTEN).
    pub cgroup: Option<CgroupId>,
    pub task: Task,
    /// Whether `task` is the socket's owner (see [`TcpState::in_owner_context`]).
    pub owner_context: bool,
    /// Whether the socket had a `struct socket` (`sk->sk_socket`), when it could be read. A
    /// server-side child has none until the application accepts it, nor after `close()`.
    pub has_socket: Option<bool>,
}
