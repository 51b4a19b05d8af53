//! `observer watch --summary`: the tracker's state, printed periodically.

use std::{fmt::Write as _, io, io::Write as _};

use observer_common::TcpState;
use serde::Serialize;

use super::{LossCounts, Output};
use crate::{
    decode::ResetDirection,
    events::Losses,
    track::{Tracker, TrackerStats, durations::Histogram, resets::ResetClass},
    watch::render::human_duration,
};

/// At most this many CLOSE_WAIT sockets are listed (oldest first); the count is complete.
const CLOSE_WAIT_LISTED: usize = 20;

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
struct StateSummary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    mono_ns: u64,
    /// Sockets now in each state (timewait sockets included).
    states: Vec<(&'static str, u64)>,
    close_wait_total: usize,
    close_wait: Vec<CloseWait>,
    timewait_expired: u64,
    timewait_killed: u64,
    resets: Vec<ResetCount>,
    closed_before_accept: Vec<NeverAccepted>,
    /// Time spent in each state by sockets that left it (seconds; bucket upper bounds are in
    /// the README).
    durations: Vec<(&'static str, &'a Histogram)>,
    tracker: TrackerStats,
    #[serde(flatten)]
    losses: LossCounts,
}

pub(super) fn print(
    output: &mut Output,
    tracker: &Tracker,
    losses: &Losses,
    now_ns: u64,
) -> io::Result<()> {
    let counts = tracker.counts_by_state();
    let close_wait = tracker.close_wait();
    let (expired, killed) = tracker.timewait_ends();
    let mut resets = Vec::new();
    for direction in [ResetDirection::Sent, ResetDirection::Received] {
        for class in ResetClass::ALL {
            let count = tracker.resets().get(direction, class);
            if count > 0 {
                resets.push(ResetCount {
                    direction: direction.name(),
                    class: class.name(),
                    count,
                });
            }
        }
    }
    let summary = StateSummary {
        kind: "state_summary",
        mono_ns: now_ns,
        states: TcpState::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| (s.name(), n))
            .collect(),
        close_wait_total: close_wait.len(),
        close_wait: close_wait
            .iter()
            .take(CLOSE_WAIT_LISTED)
            .map(|e| CloseWait {
                local: e.tuple.local.to_string(),
                remote: e.tuple.remote.to_string(),
                netns: e.tuple.netns,
                age_ns: now_ns.saturating_sub(e.since_ns),
                age_lower_bound: e.lower_bound,
                pid: e.owner.map(|o| o.pid),
                comm: e.owner.map(|o| o.comm().into_owned()),
                owner_source: e
                    .owner
                    .map(|_| if e.owner_from_fd { "fd" } else { "transition" }),
            })
            .collect(),
        timewait_expired: expired,
        timewait_killed: killed,
        resets,
        closed_before_accept: tracker
            .closed_before_accept()
            .into_iter()
            .map(|((netns, port), n)| NeverAccepted {
                netns,
                port,
                peer_closed: n.peer_closed,
                peer_reset: n.peer_reset,
            })
            .collect(),
        durations: TcpState::ALL
            .iter()
            .map(|s| (s.name(), tracker.durations().of(*s)))
            .filter(|(_, h)| h.count > 0)
            .collect(),
        tracker: tracker.stats(),
        losses: (*losses).into(),
    };
    if output.json {
        return output.json_record(&summary);
    }
    let text = render_text(&summary);
    output.out.write_all(text.as_bytes())?;
    output.out.flush()
}

fn render_text(s: &StateSummary<'_>) -> String {
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
    let _ = writeln!(
        t,
        "   TIME_WAIT ended: {} expired, {} killed early",
        s.timewait_expired, s.timewait_killed
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
    let st = &s.tracker;
    let _ = writeln!(
        t,
        "   lost {} events; gaps {}, evicted {}, seeded {}, stale {}, timewait missing {}",
        s.losses.lost_total,
        st.gaps,
        st.evicted,
        st.seeded,
        st.reconciled_stale,
        st.timewait_missing
    );
    t
}
