//! `observer watch --summary`: the tracker's state, printed periodically.

use std::fmt::Write as _;

use observer_common::TcpState;
use serde::Serialize;

use crate::{
    event::Netns,
    human::{human_duration, plural},
    snapshot::Snapshot,
    track::{
        LastReconciliation, RetransmitCounts, TimewaitCounts, TrackerStats, durations::Histogram,
    },
    wire::lines::LossCounts,
};

#[derive(Serialize)]
struct CloseWait {
    local: String,
    remote: String,
    netns: u32,
    age_ns: u64,
    /// The socket existed before observer started: its age is at least `age_ns`.
    age_lower_bound: bool,
    pid: Option<u32>,
    comm: Option<String>,
    /// `fd` (holds the file descriptor, from /proc) or `transition` (drove a transition).
    owner_source: Option<&'static str>,
}

/// A connection retransmitting without progress for at least the half-open threshold.
#[derive(Serialize)]
struct HalfOpen {
    local: String,
    remote: String,
    netns: u32,
    state: Option<&'static str>,
    /// Time without progress: since the streak's first retransmission.
    age_ns: u64,
    /// The streak began before its first retransmission was seen: `age_ns` and
    /// `retransmits` are lower bounds.
    age_lower_bound: bool,
    /// Retransmissions without progress, and of the connection in all.
    retransmits: u32,
    total_retransmits: u64,
    pid: Option<u32>,
    comm: Option<String>,
}

/// Connections the kernel ended with an error, of one cause in one state.
#[derive(Serialize)]
struct EndCount {
    cause: &'static str,
    /// Null when the state was unknown.
    state: Option<&'static str>,
    count: u64,
}

#[derive(Serialize)]
struct SynackCount {
    netns: u32,
    port: u16,
    count: u64,
}

#[derive(Serialize)]
struct ResetCount {
    direction: &'static str,
    class: &'static str,
    count: u64,
}

#[derive(Serialize)]
struct NeverAccepted {
    netns: u32,
    port: u16,
    peer_closed: u64,
    peer_reset: u64,
}

#[derive(Serialize)]
pub(super) struct StateSummary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    mono_ns: u64,
    /// Sockets now in each state (timewait sockets included).
    states: Vec<(&'static str, u64)>,
    close_wait_total: usize,
    close_wait: Vec<CloseWait>,
    timewait_expired: u64,
    timewait_killed: u64,
    /// Timewait sockets started (timer seen) and seeded (from sock_diag), and ended by cause:
    /// started + seeded = expired + killed + unseen + open.
    timewait: TimewaitCounts,
    timewait_open: usize,
    resets: Vec<ResetCount>,
    closed_before_accept: Vec<NeverAccepted>,
    /// The threshold: retransmitting without progress this long makes a suspect.
    half_open_after_ns: u64,
    half_open_total: usize,
    half_open: Vec<HalfOpen>,
    connection_ends: Vec<EndCount>,
    /// Connections ended by any timeout (the `*_timeout` causes and `timeout`).
    connection_timeouts: u64,
    retransmits: RetransmitCounts,
    /// SYN-ACKs retransmitted by listeners, by listening port.
    synack_retransmits: Vec<SynackCount>,
    /// Time spent in each state by sockets that left it (seconds; bucket upper bounds are in
    /// the README).
    durations: Vec<(&'static str, &'a Histogram)>,
    tracker: TrackerStats,
    #[serde(flatten)]
    losses: LossCounts,
    /// What the last reconciliation with sock_diag did, and how long ago it ended.
    last_reconciliation: Option<LastReconciliation>,
    last_reconciliation_age_ns: Option<u64>,
}

/// CLOSE_WAIT sockets and half-open suspects a summary lists (oldest first); the counts are
/// complete.
pub(super) const LISTED: usize = 20;

/// The summary of a snapshot.
pub(super) fn build(s: &Snapshot) -> StateSummary<'_> {
    let now_ns = s.mono_ns;
    StateSummary {
        kind: "state_summary",
        mono_ns: now_ns,
        states: s
            .sockets
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s.name(), *n))
            .collect(),
        close_wait_total: usize::try_from(s.close_wait_total).unwrap_or(usize::MAX),
        close_wait: close_wait(s),
        timewait_expired: s.timewait.expired,
        timewait_killed: s.timewait.killed,
        timewait: s.timewait,
        timewait_open: s.stats.tracked_timewait,
        resets: s
            .resets
            .iter()
            .filter(|r| r.count > 0)
            .map(|r| ResetCount {
                direction: r.direction.name(),
                class: r.class.name(),
                count: r.count,
            })
            .collect(),
        closed_before_accept: s
            .closed_before_accept
            .iter()
            .map(|c| NeverAccepted {
                netns: Netns::inode_or_zero(c.listener.netns),
                port: c.listener.port,
                peer_closed: c.counts.peer_closed,
                peer_reset: c.counts.peer_reset,
            })
            .collect(),
        half_open_after_ns: s.half_open_after_ns,
        half_open_total: s.half_open_total,
        half_open: half_open(s),
        connection_ends: s
            .connection_ends
            .nonzero()
            .into_iter()
            .map(|e| EndCount {
                cause: e.cause.name(),
                state: e.state.map(TcpState::name),
                count: e.count,
            })
            .collect(),
        connection_timeouts: s.connection_ends.timeouts(),
        retransmits: s.retransmits,
        synack_retransmits: s
            .synack_retransmits
            .iter()
            .map(|r| SynackCount {
                netns: Netns::inode_or_zero(r.listener.netns),
                port: r.listener.port,
                count: r.count,
            })
            .collect(),
        durations: s
            .durations
            .iter()
            .filter(|(_, h)| h.count > 0)
            .map(|(st, h)| (st.name(), h))
            .collect(),
        tracker: s.stats,
        losses: s.losses.into(),
        last_reconciliation: s.last_reconciliation,
        last_reconciliation_age_ns: s
            .last_reconciliation
            .map(|r| now_ns.saturating_sub(r.ended_ns)),
    }
}

/// The oldest CLOSE_WAIT sockets, as listed.
fn close_wait(s: &Snapshot) -> Vec<CloseWait> {
    s.close_wait
        .iter()
        .take(LISTED)
        .map(|e| CloseWait {
            local: e.tuple.local.to_string(),
            remote: e.tuple.remote.to_string(),
            netns: Netns::inode_or_zero(e.tuple.netns),
            age_ns: s.mono_ns.saturating_sub(e.since_ns),
            age_lower_bound: e.lower_bound,
            pid: e.owner.map(|o| o.pid),
            comm: e.owner.map(|o| o.comm().into_owned()),
            owner_source: e
                .owner
                .map(|_| if e.owner_from_fd { "fd" } else { "transition" }),
        })
        .collect()
}

/// The oldest half-open suspects, as listed.
fn half_open(s: &Snapshot) -> Vec<HalfOpen> {
    s.half_open
        .iter()
        .take(LISTED)
        .map(|h| HalfOpen {
            local: h.tuple.local.to_string(),
            remote: h.tuple.remote.to_string(),
            netns: Netns::inode_or_zero(h.tuple.netns),
            state: h.state.map(TcpState::name),
            age_ns: s.mono_ns.saturating_sub(h.since_ns),
            age_lower_bound: h.lower_bound,
            retransmits: h.retransmits,
            total_retransmits: h.total_retransmits,
            pid: h.owner.map(|o| o.pid),
            comm: h.owner.map(|o| o.comm().into_owned()),
        })
        .collect()
}

pub(super) fn render_text(s: &StateSummary<'_>) -> String {
    let mut t = String::from("-- summary\n   sockets:");
    for (name, n) in &s.states {
        let _ = write!(t, " {name} {n}");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "   CLOSE_WAIT: {} (oldest first)", s.close_wait_total);
    for c in &s.close_wait {
        let owner = match (c.pid, &c.comm) {
            (Some(pid), Some(comm)) => format!("{pid}/{comm}"),
            _ => "owner unknown".to_owned(),
        };
        let _ = writeln!(
            t,
            "     {} -> {} for {}{} held by {owner} (netns {})",
            c.local,
            c.remote,
            if c.age_lower_bound { ">=" } else { "" },
            human_duration(c.age_ns),
            c.netns
        );
    }
    let tw = &s.timewait;
    let _ = writeln!(
        t,
        "   timewait sockets: {} started + {} seeded = {} expired + {} killed early + {} ended \
         unseen + {} open{}",
        tw.started,
        tw.seeded,
        tw.expired,
        tw.killed,
        tw.unseen,
        s.timewait_open,
        if tw.untracked > 0 {
            format!(" ({} not tracked: table full)", tw.untracked)
        } else {
            String::new()
        }
    );
    let _ = write!(t, "   RSTs:");
    if s.resets.is_empty() {
        let _ = write!(t, " none");
    }
    for r in &s.resets {
        let _ = write!(t, " {} {} {};", r.direction, r.class, r.count);
    }
    let _ = writeln!(t);
    let _ = write!(t, "   closed before accept():");
    if s.closed_before_accept.is_empty() {
        let _ = write!(t, " none");
    }
    for n in &s.closed_before_accept {
        let _ = write!(
            t,
            " port {} (netns {}) {} closed, {} reset;",
            n.port, n.netns, n.peer_closed, n.peer_reset
        );
    }
    let _ = writeln!(t);
    render_retransmits(&mut t, s);
    let st = &s.tracker;
    let l = &s.losses;
    let _ = writeln!(
        t,
        "   lost {} events (ring buffer full {}, recursion misses {}, unreadable {}, malformed \
         {}); gaps {}, evicted {}, seeded {}, stale {}, corrected {}, timewait missing {}",
        l.lost_total,
        l.lost_ring_buffer_full,
        l.lost_recursion_misses,
        l.lost_read_failed,
        l.malformed,
        st.gaps,
        st.evicted,
        st.seeded,
        st.reconciled_stale,
        st.corrected,
        st.timewait_missing
    );
    if let (Some(r), Some(age)) = (s.last_reconciliation, s.last_reconciliation_age_ns) {
        let o = &r.outcome;
        let _ = writeln!(
            t,
            "   last reconciliation {} ago: {} sockets listed in {} network namespaces ({}); \
             {} ended unseen, {} timewait ended unseen, {} corrected, {} added, {} closed \
             during the dump and not added",
            human_duration(age),
            r.listed,
            r.namespaces,
            human_duration(r.took_ns),
            o.stale,
            o.stale_timewait,
            o.corrected,
            o.added,
            o.closed_during_dump
        );
    }
    t
}

/// The half-open suspects, connection errors and retransmission counters.
fn render_retransmits(t: &mut String, s: &StateSummary<'_>) {
    let _ = writeln!(
        t,
        "   half-open suspects: {} (no progress for {} or more, oldest first)",
        s.half_open_total,
        human_duration(s.half_open_after_ns)
    );
    for h in &s.half_open {
        let owner = match (h.pid, &h.comm) {
            (Some(pid), Some(comm)) => format!("owned by {pid}/{comm}"),
            _ => "owner unknown".to_owned(),
        };
        let at_least = if h.age_lower_bound { ">=" } else { "" };
        let _ = writeln!(
            t,
            "     {} -> {} in {}, no progress for {at_least}{}, {at_least}{} ({} in all), {owner} \
             (netns {})",
            h.local,
            h.remote,
            h.state.unwrap_or("?"),
            human_duration(h.age_ns),
            plural(h.retransmits, "retransmission"),
            h.total_retransmits,
            h.netns
        );
    }
    let _ = write!(t, "   connection errors:");
    if s.connection_ends.is_empty() {
        let _ = write!(t, " none");
    }
    for e in &s.connection_ends {
        let _ = write!(t, " {} in {} {};", e.cause, e.state.unwrap_or("?"), e.count);
    }
    let _ = writeln!(t);
    let r = &s.retransmits;
    let _ = writeln!(
        t,
        "   retransmissions: segments {}, SYN-ACKs {}; streaks without progress {}, recovered {}; \
         untracked {}",
        r.segments, r.synacks, r.streaks, r.recovered, r.untracked
    );
    let _ = write!(t, "   SYN-ACK retransmissions:");
    if s.synack_retransmits.is_empty() {
        let _ = write!(t, " none");
    }
    for n in &s.synack_retransmits {
        let _ = write!(t, " port {} (netns {}) {};", n.port, n.netns, n.count);
    }
    if r.synack_overflow > 0 {
        let _ = write!(t, " {} on ports beyond the table;", r.synack_overflow);
    }
    let _ = writeln!(t);
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::event::{Event, Family, Retransmit, RetransmitKind, SocketError, Task, Transition};
    use crate::{pipeline::State, track::Tracker};

    const S: u64 = 1_000_000_000;

    fn local() -> SocketAddr {
        "10.0.0.1:40000".parse().unwrap()
    }

    fn remote() -> SocketAddr {
        "10.0.0.2:80".parse().unwrap()
    }

    fn transition(at_ns: u64, old: TcpState, new: TcpState) -> Event {
        Event::Transition(Transition {
            mono_ns: at_ns,
            sock: 7,
            old,
            new,
            family: Family::Ipv4,
            local: local(),
            remote: remote(),
            netns: Netns::new(9),
            task: Task::new(42, 42, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
            owner_context: true,
            has_socket: Some(true),
        })
    }

    fn retransmit(at_ns: u64, kind: RetransmitKind, unrecovered: u8) -> Retransmit {
        Retransmit {
            mono_ns: at_ns,
            kind,
            sock: 7,
            state: Some(TcpState::Established),
            family: Family::Ipv4,
            local: local(),
            remote: remote(),
            netns: Netns::new(9),
            unrecovered: Some(unrecovered),
            err: 0,
        }
    }

    /// A connection retransmitting since 1 s (still at 17 s), a refused connect, two
    /// SYN-ACK retransmissions by a listener on port 80.
    fn tracker() -> Tracker {
        let mut tracker = Tracker::new(64);
        let mut out = Vec::new();
        let mut feed = |e: Event| tracker.apply(&e, &mut out);
        feed(transition(0, TcpState::Close, TcpState::SynSent));
        feed(transition(1000, TcpState::SynSent, TcpState::Established));
        for (i, at) in [1, 2, 4, 8, 16].into_iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            feed(Event::Retransmit(retransmit(
                at * S,
                RetransmitKind::Segment,
                n,
            )));
        }
        feed(Event::SocketError(SocketError {
            mono_ns: 17 * S,
            sock: 8,
            error: 111,
            state: Some(TcpState::SynSent),
            family: Family::Ipv4,
            local: "10.0.0.1:40001".parse().unwrap(),
            remote: remote(),
            netns: Netns::new(9),
            unrecovered: Some(0),
            probes_out: Some(0),
            unsent_data: Some(false),
        }));
        for _ in 0..2 {
            feed(Event::Retransmit(Retransmit {
                sock: 9,
                state: None,
                local: "10.0.0.1:80".parse().unwrap(),
                remote: "10.0.0.3:50000".parse().unwrap(),
                unrecovered: None,
                ..retransmit(17 * S, RetransmitKind::Synack, 0)
            }));
        }
        tracker
    }

    #[test]
    fn text_lists_half_open_suspects_errors_and_retransmissions() {
        let state = State::new(tracker(), 10 * S);
        let snapshot = state.snapshot_at(LISTED, 17 * S);
        let summary = build(&snapshot);
        let text = render_text(&summary);
        assert!(
            text.contains(
                "   half-open suspects: 1 (no progress for 10s or more, oldest first)\n     \
                 10.0.0.1:40000 -> 10.0.0.2:80 in ESTABLISHED, no progress for 16s, 5 \
                 retransmissions (5 in all), owned by 42/curl (netns 9)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("   connection errors: refused in SYN_SENT 1;\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "   retransmissions: segments 5, SYN-ACKs 2; streaks without progress 1, \
                 recovered 0; untracked 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("   SYN-ACK retransmissions: port 80 (netns 9) 2;\n"),
            "{text}"
        );
        let state = State::new(tracker(), 20 * S);
        let snapshot = state.snapshot_at(LISTED, 17 * S);
        let later = build(&snapshot);
        let text = render_text(&later);
        assert!(
            text.contains("half-open suspects: 0 (no progress for 20s or more"),
            "{text}"
        );
    }

    #[test]
    fn empty_sections_say_none() {
        let text = render_text(&build(
            &State::new(Tracker::new(4), 10 * S).snapshot_at(LISTED, S),
        ));
        assert!(text.contains("   connection errors: none\n"), "{text}");
        assert!(
            text.contains("   SYN-ACK retransmissions: none\n"),
            "{text}"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json = serde_json::to_value(build(
            &State::new(tracker(), 10 * S).snapshot_at(LISTED, 17 * S),
        ))
        .unwrap();
        assert_eq!(json["type"], "state_summary");
        assert_eq!(json["half_open_after_ns"], 10 * S);
        assert_eq!(json["half_open_total"], 1);
        let h = &json["half_open"][0];
        assert_eq!(
            (
                h["local"].as_str(),
                h["remote"].as_str(),
                h["netns"].as_u64()
            ),
            (Some("10.0.0.1:40000"), Some("10.0.0.2:80"), Some(9))
        );
        assert_eq!(h["state"], "ESTABLISHED");
        assert_eq!(h["age_ns"], 16 * S);
        assert_eq!(h["age_lower_bound"], false);
        assert_eq!(
            (h["retransmits"].as_u64(), h["total_retransmits"].as_u64()),
            (Some(5), Some(5))
        );
        assert_eq!(
            (h["pid"].as_u64(), h["comm"].as_str()),
            (Some(42), Some("curl"))
        );
        assert_eq!(
            json["connection_ends"],
            serde_json::json!([{"cause": "refused", "state": "SYN_SENT", "count": 1}])
        );
        assert_eq!(json["connection_timeouts"], 0);
        let r = &json["retransmits"];
        assert_eq!(
            (r["segments"].as_u64(), r["synacks"].as_u64()),
            (Some(5), Some(2))
        );
        for field in ["streaks", "recovered", "untracked", "synack_overflow"] {
            assert!(r[field].is_u64(), "{field}");
        }
        assert_eq!(
            json["synack_retransmits"],
            serde_json::json!([{"netns": 9, "port": 80, "count": 2}])
        );
    }
}
