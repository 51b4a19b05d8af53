//! The read model the daemon answers `{"snapshot":true}` with, and that `observer top` shows:
//! a [`Snapshot`] and its [`Breakdown`] as plain JSON values. Rates are not in it: a viewer
//! takes them from two models (counts over `mono_ns`).

use observer_common::TcpState;
use serde::{Deserialize, Serialize};

use super::lines::LossCounts;
use crate::{
    event::{Netns, Task},
    snapshot::{Breakdown, Snapshot},
    track::{CloseWaitEntry, HalfOpenSuspect},
};

/// The `type` of a snapshot line.
pub const SNAPSHOT: &str = "snapshot";

/// One read model of the tracker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Always `snapshot`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `CLOCK_MONOTONIC` ns when it was taken.
    pub mono_ns: u64,
    /// Events read from the kernel so far.
    pub received: u64,
    /// Sockets now in each state (timewait sockets included), states with none left out.
    pub states: Vec<StateCount>,
    /// Every listening socket at the last sample of accept queues.
    pub listeners: Vec<ListenerRow>,
    /// Full sockets by owning process, most sockets first.
    pub processes: Vec<ProcessRow>,
    pub close_wait_total: u64,
    /// The oldest CLOSE_WAIT sockets, oldest first.
    pub close_wait: Vec<ConnectionRow>,
    /// Timewait sockets tracked now.
    pub timewait_total: u64,
    /// Destinations whose ephemeral ports timewait sockets hold, most first.
    pub timewait_destinations: Vec<DestinationRow>,
    /// Retransmitting without progress this long makes a half-open suspect.
    pub half_open_after_ns: u64,
    pub half_open_total: u64,
    /// The oldest suspects, oldest first.
    pub half_open: Vec<ConnectionRow>,
    /// RSTs so far by direction and class, classes with none left out.
    pub resets: Vec<ResetRow>,
    /// Every event lost, by reason.
    #[serde(flatten)]
    pub losses: LossCounts,
    /// Transitions, or new sockets at a tracked socket's address, proving that an earlier
    /// transition was missed.
    pub gaps: u64,
    /// Sockets evicted because the table was full; timewait sockets not followed for the same
    /// reason.
    pub evicted_sockets: u64,
    pub timewait_untracked: u64,
    /// Clients of the daemon's socket disconnected because they read too slowly.
    pub socket_client_drops: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    pub state: String,
    pub count: u64,
}

/// A listening socket: its accept queue, handshakes in progress, and connections its peers
/// closed or reset before accept() (so far).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRow {
    pub netns: Option<u32>,
    pub addr: String,
    pub port: u16,
    pub queued: u32,
    pub backlog: u32,
    pub syn_recv: u32,
    pub closed_before_accept: u64,
    pub reset_before_accept: u64,
}

/// The full sockets of one process; `pid` and `comm` null for those whose owner is not known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRow {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub total: u64,
    pub states: Vec<StateCount>,
    /// How long its oldest CLOSE_WAIT socket has been in CLOSE_WAIT.
    pub oldest_close_wait_ns: Option<u64>,
}

/// A connection listed by age: a CLOSE_WAIT socket, or a half-open suspect (with its state
/// and retransmissions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub local: String,
    pub remote: String,
    pub netns: Option<u32>,
    /// In CLOSE_WAIT for this long, or without progress for this long.
    pub age_ns: u64,
    /// The socket existed before observer started: `age_ns` is a lower bound.
    pub age_lower_bound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationRow {
    pub netns: Option<u32>,
    pub local_addr: String,
    pub remote: String,
    pub timewait: u64,
    /// `timewait` over the namespace's ephemeral port range, when known.
    pub port_share: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRow {
    pub direction: String,
    pub class: String,
    pub count: u64,
}

fn states(counts: impl Iterator<Item = (TcpState, u64)>) -> Vec<StateCount> {
    counts
        .filter(|(_, n)| *n > 0)
        .map(|(s, count)| StateCount {
            state: s.name().to_owned(),
            count,
        })
        .collect()
}

fn owner(task: Option<Task>) -> (Option<u32>, Option<String>) {
    (task.map(|t| t.pid), task.map(|t| t.comm().into_owned()))
}

fn inode(netns: Option<Netns>) -> Option<u32> {
    netns.map(Netns::inode)
}

fn listeners(s: &Snapshot) -> Vec<ListenerRow> {
    s.listeners
        .iter()
        .map(|l| {
            let never = s
                .closed_before_accept
                .iter()
                .find(|c| c.listener.port == l.local.port() && c.listener.netns == Some(l.netns))
                .map(|c| c.counts)
                .unwrap_or_default();
            ListenerRow {
                netns: Some(l.netns.inode()),
                addr: l.local.ip().to_string(),
                port: l.local.port(),
                queued: l.queued,
                backlog: l.backlog,
                syn_recv: l.syn_recv,
                closed_before_accept: never.peer_closed,
                reset_before_accept: never.peer_reset,
            }
        })
        .collect()
}

fn close_wait(e: &CloseWaitEntry, now: u64) -> ConnectionRow {
    let (pid, comm) = owner(e.owner);
    ConnectionRow {
        local: e.tuple.local.to_string(),
        remote: e.tuple.remote.to_string(),
        netns: inode(e.tuple.netns),
        age_ns: now.saturating_sub(e.since_ns),
        age_lower_bound: e.lower_bound,
        state: None,
        retransmits: None,
        pid,
        comm,
    }
}

fn half_open(h: &HalfOpenSuspect, now: u64) -> ConnectionRow {
    let (pid, comm) = owner(h.owner);
    ConnectionRow {
        local: h.tuple.local.to_string(),
        remote: h.tuple.remote.to_string(),
        netns: inode(h.tuple.netns),
        age_ns: now.saturating_sub(h.since_ns),
        age_lower_bound: h.lower_bound,
        state: h.state.map(|s| s.name().to_owned()),
        retransmits: Some(h.retransmits),
        pid,
        comm,
    }
}

impl Model {
    /// The model of a snapshot and its breakdown.
    #[must_use]
    pub fn new(s: &Snapshot, b: &Breakdown) -> Self {
        let now = s.mono_ns;
        let listeners = listeners(s);
        let processes = b
            .owners
            .iter()
            .map(|o| {
                let (pid, comm) = owner(o.owner);
                ProcessRow {
                    pid,
                    comm,
                    total: o.total,
                    states: states(o.sockets.iter().map(|(s, n)| (s, *n))),
                    oldest_close_wait_ns: o.oldest_close_wait_ns.map(|t| now.saturating_sub(t)),
                }
            })
            .collect();
        let close_wait = s.close_wait.iter().map(|e| close_wait(e, now)).collect();
        let half_open = s.half_open.iter().map(|h| half_open(h, now)).collect();
        Self {
            kind: SNAPSHOT.to_owned(),
            mono_ns: now,
            received: s.received,
            states: states(s.sockets.iter().map(|(st, n)| (st, *n))),
            listeners,
            processes,
            close_wait_total: s.close_wait_total,
            close_wait,
            timewait_total: s.stats.tracked_timewait as u64,
            timewait_destinations: b
                .timewait_destinations
                .iter()
                .map(|d| DestinationRow {
                    netns: inode(d.destination.netns),
                    local_addr: d.destination.local.to_string(),
                    remote: d.destination.remote.to_string(),
                    timewait: d.timewait,
                    port_share: d.port_share,
                })
                .collect(),
            half_open_after_ns: s.half_open_after_ns,
            half_open_total: s.half_open_total as u64,
            half_open,
            resets: s
                .resets
                .iter()
                .filter(|r| r.count > 0)
                .map(|r| ResetRow {
                    direction: r.direction.name().to_owned(),
                    class: r.class.name().to_owned(),
                    count: r.count,
                })
                .collect(),
            losses: s.losses.into(),
            gaps: s.stats.gaps,
            evicted_sockets: s.stats.evicted,
            timewait_untracked: s.stats.timewait_untracked,
            socket_client_drops: s.socket_client_drops,
        }
    }

    /// Sockets now in `state`.
    #[must_use]
    pub fn count_of(&self, state: TcpState) -> u64 {
        self.states
            .iter()
            .find(|c| c.state == state.name())
            .map_or(0, |c| c.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Event, Family, Transition},
        pipeline::State,
        track::Tracker,
    };

    const S: u64 = 1_000_000_000;

    fn transition(at_ns: u64, sock: u64, old: TcpState, new: TcpState, port: u16) -> Event {
        Event::Transition(Transition {
            cgroup: None,
            mono_ns: at_ns,
            sock,
            old,
            new,
            family: Family::Ipv4,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: format!("127.0.0.1:{port}").parse().unwrap(),
            netns: Netns::new(9),
            task: Task::named(42, "server"),
            owner_context: true,
            has_socket: Some(true),
        })
    }

    /// A state whose tracker saw each `(sock, port, since)` accepted at 1 s, then enter
    /// CLOSE_WAIT at `since`.
    fn leaking(sockets: &[(u64, u16, u64)]) -> State {
        let mut tracker = Tracker::new(64);
        let mut out = Vec::new();
        for &(sock, port, since_ns) in sockets {
            for e in [
                transition(S, sock, TcpState::SynRecv, TcpState::Established, port),
                transition(
                    since_ns,
                    sock,
                    TcpState::Established,
                    TcpState::CloseWait,
                    port,
                ),
            ] {
                tracker.apply(&e, &mut out);
            }
        }
        State::new(tracker, 10 * S)
    }

    #[test]
    fn a_close_wait_leak_shows_in_states_processes_and_the_list() {
        let state = leaking(&[(1, 50_000, 2 * S), (2, 50_001, 2 * S)]);
        let sources_now = 12 * S;
        let snapshot = state.snapshot_at(10, sources_now);
        let breakdown = {
            let (_, b) = state.snapshot_with_breakdown(10, &crate::snapshot::Everything);
            b
        };
        let model = Model::new(&snapshot, &breakdown);
        assert_eq!(model.kind, "snapshot");
        assert_eq!(model.count_of(TcpState::CloseWait), 2);
        assert_eq!(model.close_wait_total, 2);
        assert_eq!(model.close_wait.len(), 2);
        assert_eq!(model.close_wait[0].age_ns, 10 * S);
        assert_eq!(model.close_wait[0].pid, Some(42));
        assert_eq!(model.processes.len(), 1);
        assert_eq!(model.processes[0].comm.as_deref(), Some("server"));
        assert_eq!(
            model.processes[0].states,
            [StateCount {
                state: "CLOSE_WAIT".to_owned(),
                count: 2
            }]
        );
        let json = serde_json::to_string(&model).unwrap();
        let back: Model = serde_json::from_str(&json).unwrap();
        assert_eq!(back, model, "the model reads back as written");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in [
            "lost_total",
            "lost_ring_buffer_full",
            "lost_recursion_misses",
            "lost_read_failed",
            "malformed",
            "timer_recursion_misses",
            "gaps",
            "evicted_sockets",
            "timewait_untracked",
            "socket_client_drops",
        ] {
            assert!(value[field].is_u64(), "{field} in {json}");
        }
    }

    /// The daemon filters a list before cutting it to its length: the one CLOSE_WAIT socket on
    /// the filtered port is listed though older ones fill the list, and the counts stay whole.
    #[test]
    fn a_filtered_snapshot_lists_what_passes_beyond_the_lists_length() {
        let state = leaking(&[(1, 50_000, 2 * S), (2, 50_001, 3 * S), (3, 50_002, 4 * S)]);
        let listed = |filter: &crate::wire::Filter| {
            let (s, b) = state.snapshot_with_breakdown(1, filter);
            let m = Model::new(&s, &b);
            let ports: Vec<String> = m.close_wait.iter().map(|c| c.remote.clone()).collect();
            (ports, m.close_wait_total, m.processes.len())
        };
        let everything = crate::wire::Filter::default();
        assert_eq!(
            listed(&everything),
            (vec!["127.0.0.1:50000".to_owned()], 3, 1)
        );
        let port = crate::wire::Filter {
            ports: vec![50_002],
            ..crate::wire::Filter::default()
        };
        assert_eq!(listed(&port), (vec!["127.0.0.1:50002".to_owned()], 3, 1));
        let other_pid = crate::wire::Filter {
            pids: vec![7],
            ..crate::wire::Filter::default()
        };
        assert_eq!(listed(&other_pid), (vec![], 3, 0));
    }
}
