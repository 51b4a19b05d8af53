//! The events every stage of the pipeline speaks: what the kernel reported, decoded (a
//! transition, an RST, a timewait socket's timer, a retransmission, an error), and the
//! identities they carry (a connection's 4-tuple, a task). No stage below decoding knows how
//! they are made; every stage above reads them.

mod cgroup;
mod netns;
mod per_state;
mod reset;
mod retransmit;
mod socket_error;
mod timewait;
mod transition;
mod tuple;

use std::borrow::Cow;

pub use self::{
    cgroup::CgroupId,
    netns::Netns,
    per_state::PerState,
    reset::{Reset, ResetDirection, ResetReason},
    retransmit::{Retransmit, RetransmitKind},
    socket_error::SocketError,
    timewait::{TimerAction, TimewaitSocket, TimewaitTimer},
    transition::Transition,
    tuple::{ListenerKey, Tuple},
};

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// The task that was running on the CPU when the event happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    comm: [u8; 16],
}

impl Task {
    #[must_use]
    pub fn new(pid: u32, tid: u32, comm: [u8; 16]) -> Self {
        Self { pid, tid, comm }
    }

    /// A task known only by pid and name (e.g. from /proc).
    #[must_use]
    pub fn named(pid: u32, name: &str) -> Self {
        let mut comm = [0u8; 16];
        let n = name.len().min(15);
        comm[..n].copy_from_slice(&name.as_bytes()[..n]);
        Self {
            pid,
            tid: pid,
            comm,
        }
    }

    /// The task's command name (up to 15 bytes, as the kernel keeps it).
    #[must_use]
    pub fn comm(&self) -> Cow<'_, str> {
        let len = self
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..len])
    }

    /// The task of a record: `bpf_get_current_pid_tgid()` and `bpf_get_current_comm()`.
    #[must_use]
    pub fn from_pid_tgid(pid_tgid: u64, comm: [u8; 16]) -> Self {
        #[expect(clippy::cast_possible_truncation, reason = "splitting pid_tgid")]
        Self::new((pid_tgid >> 32) as u32, pid_tgid as u32, comm)
    }
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Transition(Transition),
    Reset(Reset),
    Timewait(TimewaitTimer),
    Retransmit(Retransmit),
    SocketError(SocketError),
}

impl Event {
    /// `CLOCK_MONOTONIC` nanoseconds when it happened.
    #[must_use]
    pub const fn mono_ns(&self) -> u64 {
        match self {
            Self::Transition(t) => t.mono_ns,
            Self::Reset(r) => r.mono_ns,
            Self::Timewait(t) => t.mono_ns,
            Self::Retransmit(r) => r.mono_ns,
            Self::SocketError(e) => e.mono_ns,
        }
    }
}
