//! The event lines of `observer watch --json` and of the daemon's socket: one JSON object per
//! line. Field names are an interface (README: "JSON output"): fields may be added, never
//! renamed or removed; their order is kept too.

use std::{borrow::Cow, net::SocketAddr};

use jiff::Timestamp;
use observer_common::TcpState;
use serde::Serialize;

use crate::{
    alerts::{Change, deliver::ChangeRecord},
    clock::WallClock,
    event::{Family, Netns, Reset, SocketError, Task, Transition, Tuple},
    human::error_name,
    stream::Losses,
    track::{
        EndCause, Note, Observation, Report, RetransmitPhase, TimewaitEnd, TrackerStats,
        resets::ResetClass,
    },
    workload::Attribution,
};

/// When something happened, as every event line starts: `time` (RFC 3339, UTC, nanoseconds)
/// and `mono_ns` (`CLOCK_MONOTONIC`).
#[derive(Serialize)]
pub struct Stamp {
    pub time: String,
    pub mono_ns: u64,
}

impl Stamp {
    #[must_use]
    pub fn new(mono_ns: u64, clock: &WallClock) -> Self {
        Self {
            time: clock.at(mono_ns).to_string(),
            mono_ns,
        }
    }
}

/// The socket an event line is about: `sock` (the kernel's address, hex: its identity while it
/// lives; null for an RST sent without a socket), `family` and the two ends. Its namespace
/// and owner are [`Owner`]: the documented lines put them after the line's own fields.
#[derive(Serialize)]
pub struct Socket {
    pub sock: Option<String>,
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
}

impl Socket {
    #[must_use]
    pub fn new(sock: Option<u64>, family: Family, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            sock: sock.map(|s| format!("{s:#x}")),
            family: family.name(),
            local_addr: local.ip().to_string(),
            local_port: local.port(),
            remote_addr: remote.ip().to_string(),
            remote_port: remote.port(),
        }
    }
}

/// Whose the socket is: `netns` (null when unknown), and the owning process, `pid` and `comm`
/// (null when not yet known).
#[derive(Serialize)]
pub struct Owner<'a> {
    pub netns: Option<Netns>,
    pub pid: Option<u32>,
    pub comm: Option<Cow<'a, str>>,
    /// For a transition: the socket's workload (`cgroup`, `unit`, `container_id`, `pod_uid`,
    /// `pod`, `namespace`, `container`) where known, each absent otherwise.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub workload: Option<&'a Attribution>,
}

impl<'a> Owner<'a> {
    #[must_use]
    pub fn new(netns: Option<Netns>, task: Option<&'a Task>) -> Self {
        Self {
            netns,
            pid: task.map(|o| o.pid),
            comm: task.map(Task::comm),
            workload: None,
        }
    }
}

/// One line of `observer watch --json`, tagged by `type`. The periodic `state_summary` is
/// its own record (`summary::StateSummary`), written as it is.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line<'a> {
    Transition {
        #[serde(flatten)]
        at: Stamp,
        #[serde(flatten)]
        socket: Socket,
        old_state: &'static str,
        new_state: &'static str,
        /// Nanoseconds in `old_state`, null when its start was not seen.
        prev_state_ns: Option<u64>,
        /// `prev_state_ns` is a lower bound: the socket existed before observer started.
        prev_state_lower_bound: bool,
        /// What else happened: `timewait_entered`, `timewait_restarted`, `timewait_expired`,
        /// `timewait_killed`, `no_timewait`, `closed_before_accept`; null otherwise.
        note: Option<&'static str>,
        /// For `timewait_entered`/`timewait_restarted`: nanoseconds until the timer fires.
        timewait_timeout_ns: Option<u64>,
        #[serde(flatten)]
        owner: Owner<'a>,
        /// The task that was running on the CPU (the owner only when `owner_context`). Its
        /// `comm` is read only when `owner_context`: empty otherwise.
        task_pid: u32,
        task_tid: u32,
        task_comm: Cow<'a, str>,
        owner_context: bool,
        /// Transitions of this socket were lost before this one.
        gap: bool,
    },
    Reset {
        #[serde(flatten)]
        at: Stamp,
        /// `sent` or `received`.
        direction: &'static str,
        #[serde(flatten)]
        socket: Socket,
        /// The socket's state, null when there is no socket.
        state: Option<&'static str>,
        /// Plain-words class (a closed set; README).
        class: &'static str,
        /// The kernel's `sk_rst_reason` name (Linux 6.10+, sent RSTs), else null.
        reason: Option<String>,
        #[serde(flatten)]
        owner: Owner<'a>,
    },
    Retransmission {
        /// `mono_ns` is when the change was noticed.
        #[serde(flatten)]
        at: Stamp,
        /// `retransmitting` (a streak without progress began), `half_open_suspect` or
        /// `recovered`.
        phase: &'static str,
        #[serde(flatten)]
        socket: Socket,
        state: Option<&'static str>,
        /// Retransmissions in the streak: so far (suspect), or in all (recovered); null when
        /// it just began.
        retransmits: Option<u32>,
        /// Nanoseconds without progress: so far (suspect), or from the streak's first
        /// retransmission to its last (recovered).
        no_progress_ns: Option<u64>,
        /// When the streak began (suspect), `CLOCK_MONOTONIC`.
        since_mono_ns: Option<u64>,
        /// The streak began before its first retransmission was seen: `retransmits` and
        /// `no_progress_ns` are lower bounds.
        lower_bound: bool,
        #[serde(flatten)]
        owner: Owner<'a>,
    },
    ConnectionError {
        #[serde(flatten)]
        at: Stamp,
        #[serde(flatten)]
        socket: Socket,
        state: Option<&'static str>,
        /// Why it ended (a closed set: `retransmit_timeout`, `keepalive_timeout`, ...).
        cause: &'static str,
        errno: i32,
        /// The errno's name (`ETIMEDOUT`), or its number when unnamed.
        error: String,
        /// Retransmissions of the streak that timed out, and how long it lasted; null when
        /// the connection was not seen retransmitting or did not time out.
        retransmits: Option<u32>,
        no_progress_ns: Option<u64>,
        /// Keepalive or zero-window probes unanswered (`icsk_probes_out`); null when not read.
        probes: Option<u8>,
        #[serde(flatten)]
        owner: Owner<'a>,
    },
    /// An alert's change of state (`--alerts`): the alerts file's line.
    Alert(ChangeRecord<'a>),
    /// New losses, at most once a second.
    Loss(LossCounts),
    /// The closing totals: the last line.
    Summary(Summary),
}

/// The JSON `note` value (README: "JSON output").
const fn note_name(note: Note) -> &'static str {
    match note {
        Note::ClosedBeforeAccept => "closed_before_accept",
        Note::TimewaitEntered { .. } => "timewait_entered",
        Note::TimewaitRestarted { .. } => "timewait_restarted",
        Note::TimewaitEnded(TimewaitEnd::Expired) => "timewait_expired",
        Note::TimewaitEnded(TimewaitEnd::Killed) => "timewait_killed",
        Note::TimewaitEnded(TimewaitEnd::Unseen) => "timewait_unseen",
        Note::NoTimewait => "no_timewait",
    }
}

impl<'a> Line<'a> {
    /// The line with the socket's workload, for the lines about a socket.
    #[must_use]
    pub fn with_workload(mut self, workload: Option<&'a Attribution>) -> Self {
        if let Self::Transition { owner, .. }
        | Self::Reset { owner, .. }
        | Self::Retransmission { owner, .. }
        | Self::ConnectionError { owner, .. } = &mut self
        {
            owner.workload = workload;
        }
        self
    }

    /// A report's line; `now_ns` dates reports without a time of their own.
    #[must_use]
    pub fn report(report: &'a Report, now_ns: u64, clock: &WallClock) -> Self {
        match report {
            Report::Transition {
                transition,
                seen,
                note,
            } => Self::transition(transition, seen, *note, clock),
            Report::Reset {
                reset,
                state,
                class,
                owner,
                ..
            } => Self::reset(reset, *state, *class, owner.as_ref(), clock),
            Report::Retransmits {
                sock,
                tuple,
                state,
                owner,
                phase,
                ..
            } => Self::retransmission(*sock, tuple, *state, owner.as_ref(), *phase, now_ns, clock),
            Report::ConnectionError {
                error,
                cause,
                owner,
                retransmits,
                ..
            } => Self::connection_error(error, *cause, owner.as_ref(), *retransmits, clock),
        }
    }

    #[must_use]
    pub fn transition(
        t: &'a Transition,
        seen: &'a Observation,
        note: Option<Note>,
        clock: &WallClock,
    ) -> Self {
        Self::Transition {
            at: Stamp::new(t.mono_ns, clock),
            socket: Socket::new(Some(t.sock), t.family, t.local, t.remote),
            old_state: t.old.name(),
            new_state: t.new.name(),
            prev_state_ns: seen.previous_state_ns,
            prev_state_lower_bound: seen.lower_bound,
            note: note.map(note_name),
            timewait_timeout_ns: match note {
                Some(
                    Note::TimewaitEntered { timeout_ns } | Note::TimewaitRestarted { timeout_ns },
                ) => timeout_ns,
                _ => None,
            },
            owner: Owner::new(t.netns, seen.owner.as_ref()),
            task_pid: t.task.pid,
            task_tid: t.task.tid,
            task_comm: t.task.comm(),
            owner_context: t.owner_context,
            gap: seen.gap,
        }
    }

    #[must_use]
    pub fn reset(
        r: &Reset,
        state: Option<TcpState>,
        class: ResetClass,
        owner: Option<&'a Task>,
        clock: &WallClock,
    ) -> Self {
        Self::Reset {
            at: Stamp::new(r.mono_ns, clock),
            direction: r.direction.name(),
            socket: Socket::new(r.sock, r.family, r.local, r.remote),
            state: state.map(TcpState::name),
            class: class.name(),
            reason: r
                .reason
                .map(|x| x.name().map_or_else(|| format!("{}", x.0), str::to_owned)),
            owner: Owner::new(r.netns, owner),
        }
    }

    /// `at_ns` is when the change was noticed (the report carries no time of its own).
    #[must_use]
    pub fn retransmission(
        sock: u64,
        tuple: &Tuple,
        state: Option<TcpState>,
        owner: Option<&'a Task>,
        phase: RetransmitPhase,
        at_ns: u64,
        clock: &WallClock,
    ) -> Self {
        let (retransmits, no_progress_ns, since_mono_ns, lower_bound) = match phase {
            RetransmitPhase::Began => (None, None, None, false),
            RetransmitPhase::Suspect {
                since_ns,
                lower_bound,
                retransmits,
            } => (
                Some(retransmits),
                Some(at_ns.saturating_sub(since_ns)),
                Some(since_ns),
                lower_bound,
            ),
            RetransmitPhase::Recovered {
                retransmits,
                duration_ns,
            } => (Some(retransmits), Some(duration_ns), None, false),
        };
        Self::Retransmission {
            at: Stamp::new(at_ns, clock),
            phase: phase.name(),
            socket: Socket::new(Some(sock), tuple.family(), tuple.local, tuple.remote),
            state: state.map(TcpState::name),
            retransmits,
            no_progress_ns,
            since_mono_ns,
            lower_bound,
            owner: Owner::new(tuple.netns, owner),
        }
    }

    #[must_use]
    pub fn connection_error(
        e: &SocketError,
        cause: EndCause,
        owner: Option<&'a Task>,
        retransmits: Option<(u32, u64)>,
        clock: &WallClock,
    ) -> Self {
        Self::ConnectionError {
            at: Stamp::new(e.mono_ns, clock),
            socket: Socket::new(Some(e.sock), e.family, e.local, e.remote),
            state: e.state.map(TcpState::name),
            cause: cause.name(),
            errno: e.error,
            error: error_name(e.error),
            retransmits: retransmits.map(|(n, _)| n),
            no_progress_ns: retransmits.map(|(_, ns)| ns),
            probes: e.probes_out,
            owner: Owner::new(e.netns, owner),
        }
    }

    /// An alert's change of state, dated `time`.
    #[must_use]
    pub fn alert(change: &'a Change, time: Timestamp) -> Self {
        Self::Alert(ChangeRecord::new(change, time))
    }
}

/// Loss counters as they appear in the JSON stream (`"type": "loss"` records and the summary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LossCounts {
    pub lost_total: u64,
    pub lost_ring_buffer_full: u64,
    pub lost_recursion_misses: u64,
    pub lost_read_failed: u64,
    pub malformed: u64,
    /// Upper bound of timewait timer events missed (most skipped timer runs were for other
    /// timers); not part of `lost_total`.
    pub timer_recursion_misses: u64,
}

impl From<Losses> for LossCounts {
    fn from(l: Losses) -> Self {
        Self {
            lost_total: l.total(),
            lost_ring_buffer_full: l.kernel.ring_buffer_full,
            lost_recursion_misses: l.kernel.recursion_misses,
            lost_read_failed: l.kernel.read_failed,
            malformed: l.malformed,
            timer_recursion_misses: l.kernel.timer_recursion_misses,
        }
    }
}

/// Totals printed when watch exits, and written as the last JSON line.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub received: u64,
    pub shown: u64,
    /// Shown lines that are not transitions the kernel reported: TIME_WAIT ends and timer
    /// restarts, RSTs, retransmissions and connection errors.
    pub shown_not_transitions: u64,
    #[serde(flatten)]
    pub losses: LossCounts,
    pub gaps: u64,
    pub evicted_sockets: u64,
    #[serde(skip)]
    pub tracker: TrackerStats,
}

impl Summary {
    #[must_use]
    pub fn sentence(&self) -> String {
        let l = &self.losses;
        format!(
            "{} events received, {} shown ({} of them RSTs, retransmissions, errors, TIME_WAIT ends \
             and restarts); lost {} (ring buffer full {}, recursion misses {}, unreadable {}), \
             malformed {}, gaps {}, evicted sockets {}, seeded {}, stale {}",
            self.received,
            self.shown,
            self.shown_not_transitions,
            l.lost_total,
            l.lost_ring_buffer_full,
            l.lost_recursion_misses,
            l.lost_read_failed,
            l.malformed,
            self.gaps,
            self.evicted_sockets,
            self.tracker.seeded,
            self.tracker.reconciled_stale,
        )
    }
}
