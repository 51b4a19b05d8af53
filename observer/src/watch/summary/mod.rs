//! `observer watch --summary`: the tracker's state, printed periodically.

use std::{collections::BTreeMap, fmt::Write as _};

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
    workload::Resolver,
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
    /// Every CLOSE_WAIT socket by the workload that created it (`unknown`: no cgroup, or one
    /// no convention names), most sockets first.
    close_wait_by_workload: Vec<WorkloadCloseWait>,
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

/// The CLOSE_WAIT sockets of one workload.
#[derive(Serialize)]
struct WorkloadCloseWait {
    workload: String,
    sockets: u64,
    oldest_age_ns: u64,
}

/// CLOSE_WAIT sockets summed by workload name, most sockets first (ties: by name).
fn close_wait_by_workload(s: &Snapshot, workloads: &Resolver) -> Vec<WorkloadCloseWait> {
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for g in &s.close_wait_by_cgroup {
        let name = g
            .cgroup
            .and_then(|c| workloads.resolve(c))
            .and_then(|a| a.name())
            .unwrap_or_else(|| "unknown".to_owned());
        let (sockets, oldest) = by_name.entry(name).or_default();
        *sockets += g.count;
        *oldest = (*oldest).max(s.mono_ns.saturating_sub(g.oldest_since_ns));
    }
    let mut v: Vec<WorkloadCloseWait> = by_name
        .into_iter()
        .map(|(workload, (sockets, oldest_age_ns))| WorkloadCloseWait {
            workload,
            sockets,
            oldest_age_ns,
        })
        .collect();
    v.sort_by_key(|w| std::cmp::Reverse(w.sockets));
    v
}

/// The summary of a snapshot, its CLOSE_WAIT sockets grouped by the workloads `workloads`
/// names.
pub(super) fn build<'a>(s: &'a Snapshot, workloads: &Resolver) -> StateSummary<'a> {
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
        close_wait_by_workload: close_wait_by_workload(s, workloads),
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

/// `     by workload: nginx.service 2 (oldest 8s), unknown 1 (oldest 6s)`, when any.
fn write_by_workload(t: &mut String, by: &[WorkloadCloseWait]) {
    if by.is_empty() {
        return;
    }
    let parts: Vec<String> = by
        .iter()
        .map(|w| {
            format!(
                "{} {} (oldest {})",
                w.workload,
                w.sockets,
                human_duration(w.oldest_age_ns)
            )
        })
        .collect();
    let _ = writeln!(t, "     by workload: {}", parts.join(", "));
}

pub(super) fn render_text(s: &StateSummary<'_>) -> String {
    let mut t = String::from("-- summary\n   sockets:");
    for (name, n) in &s.states {
        let _ = write!(t, " {name} {n}");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "   CLOSE_WAIT: {} (oldest first)", s.close_wait_total);
    write_by_workload(&mut t, &s.close_wait_by_workload);
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
            "   last reconciliation {} ago: {} sockets listed in {} network namespaces ({}, {} \
             of CPU); {} ended unseen, {} timewait ended unseen, {} corrected, {} added, {} \
             closed during the dump and not added, {} unlisted but still there",
            human_duration(age),
            r.listed,
            r.namespaces,
            human_duration(r.took_ns),
            human_duration(r.cpu_ns),
            o.stale,
            o.stale_timewait,
            o.corrected,
            o.added,
            o.closed_during_dump,
            o.missed_by_dump
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
         untracked {}; timeouts unreported {}",
        r.segments, r.synacks, r.streaks, r.recovered, r.untracked, r.timeouts_unreported
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
mod tests;
