//! Prometheus metrics: what the tracker knows, as one consistent snapshot per scrape.
//!
//! A scrape copies plain values under the daemon's lock ([`MetricsSnapshot::take`]) and encodes
//! them after releasing it ([`MetricsSnapshot::encode`]), so a slow client never holds up event
//! processing. Every label is bounded by construction: states, RST classes and causes are
//! closed sets, ports are [`PortLabels`], alert names come from the configuration.

mod encode;
mod ports;
pub mod text_format;
mod transitions;

use observer_common::TcpState;
use rustc_hash::FxHashMap;

pub use self::{
    ports::{DEFAULT_MAX_PORT_LABELS, PortLabel, PortLabels},
    transitions::TransitionCounts,
};
use crate::{
    alerts::{NotificationCounts, RuleCounts},
    clock::seconds,
    event::{ListenerKey, PerState},
    kernel::NetLimits,
    listen_queues::ListenQueues,
    stream::Losses,
    track::{
        EndCause, ResetClass, RetransmitCounts, TimewaitCounts, Tracker, TrackerStats,
        durations::Histogram,
    },
};

/// What a snapshot is taken from: the daemon's state, borrowed under its lock.
pub struct Sources<'a> {
    pub tracker: &'a Tracker,
    pub transitions: &'a TransitionCounts,
    pub received: u64,
    pub losses: Losses,
    pub limits: &'a FxHashMap<u32, NetLimits>,
    pub listen: &'a ListenQueues,
    /// Retransmitting without progress for this long makes a half-open suspect.
    pub half_open_after_ns: u64,
    pub alerts: &'a [RuleCounts],
    pub notifications: NotificationCounts,
    pub ports: &'a mut PortLabels,
    /// `CLOCK_MONOTONIC` ns now.
    pub now_ns: u64,
}

/// Every exported value, copied out of the daemon's state.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    pub kernel: String,
    pub transitions: Vec<(TcpState, TcpState, u64)>,
    pub sockets: PerState<u64>,
    pub durations: Vec<(TcpState, Histogram)>,
    /// `[sent, received][class]`.
    pub resets: [[u64; ResetClass::ALL.len()]; 2],
    /// (port, peer closed, peer reset), summed over namespaces.
    pub closed_before_accept: Vec<(PortLabel, u64, u64)>,
    /// Timewait sockets started, seeded, and ended by cause.
    pub timewait: TimewaitCounts,
    pub close_wait_oldest_seconds: f64,
    pub timewait_bucket_usage: f64,
    pub timewait_port_usage: f64,
    pub retransmits: RetransmitCounts,
    /// (listening port, SYN-ACKs retransmitted), summed over namespaces.
    pub synack_retransmits: Vec<(PortLabel, u64)>,
    pub retransmitting_connections: usize,
    pub half_open_suspects: u64,
    pub half_open_oldest_seconds: f64,
    /// (cause, state, count); state `None` when the kernel's was unknown.
    pub connection_errors: Vec<(EndCause, Option<TcpState>, u64)>,
    /// Per listening port, summed over its sockets: (port, queued, backlog, SYN_RECV).
    pub listen_queues: Vec<(PortLabel, u64, u64, u64)>,
    pub listen_queue_highest_usage: f64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub received: u64,
    pub losses: Losses,
    pub stats: TrackerStats,
    pub alerts: Vec<RuleCounts>,
    pub notifications: NotificationCounts,
}

impl MetricsSnapshot {
    /// Copies what the metrics need. Cost grows with the number of CLOSE_WAIT and timewait
    /// sockets (one pass over each), not with the number of events.
    #[must_use]
    pub fn take(s: &mut Sources<'_>) -> Self {
        let t = s.tracker;
        let mut by_port: FxHashMap<PortLabel, (u64, u64)> = FxHashMap::default();
        for (ListenerKey { port, .. }, n) in t.closed_before_accept() {
            let slot = by_port.entry(s.ports.label(port)).or_default();
            slot.0 += n.peer_closed;
            slot.1 += n.peer_reset;
        }
        let mut closed_before_accept: Vec<_> =
            by_port.into_iter().map(|(p, (c, r))| (p, c, r)).collect();
        closed_before_accept.sort_unstable_by_key(|(p, ..)| *p);
        let usage = t.timewait_usage();
        let max = |it: &mut dyn Iterator<Item = f64>| it.fold(0.0_f64, f64::max);
        let mut synacks: FxHashMap<PortLabel, u64> = FxHashMap::default();
        for (ListenerKey { port, .. }, n) in t.synack_retransmits() {
            *synacks.entry(s.ports.label(port)).or_default() += n;
        }
        let mut synack_retransmits: Vec<_> = synacks.into_iter().collect();
        synack_retransmits.sort_unstable_by_key(|(p, _)| *p);
        let mut queues: FxHashMap<PortLabel, (u64, u64, u64)> = FxHashMap::default();
        for l in &s.listen.listeners {
            let slot = queues.entry(s.ports.label(l.local.port())).or_default();
            slot.0 += u64::from(l.queued);
            slot.1 += u64::from(l.backlog);
            slot.2 += u64::from(l.syn_recv);
        }
        let mut listen_queues: Vec<_> = queues
            .into_iter()
            .map(|(p, (q, b, r))| (p, q, b, r))
            .collect();
        listen_queues.sort_unstable_by_key(|(p, ..)| *p);
        let suspects = t.half_open_suspects(s.half_open_after_ns);
        Self {
            kernel: kernel_release(),
            transitions: s.transitions.nonzero(),
            sockets: t.counts_by_state(),
            durations: TcpState::ALL
                .into_iter()
                .map(|st| (st, t.durations().of(st).clone()))
                .collect(),
            resets: t.resets().matrix(),
            closed_before_accept,
            timewait: t.timewait_counts(),
            close_wait_oldest_seconds: t
                .oldest_close_wait()
                .map_or(0.0, |(since, _)| seconds(s.now_ns.saturating_sub(since))),
            timewait_bucket_usage: max(&mut usage.bucket_ratios(s.limits).map(|(.., r)| r)),
            timewait_port_usage: max(&mut usage.port_ratios(s.limits).map(|(.., r)| r)),
            retransmits: t.retransmit_counts(),
            synack_retransmits,
            retransmitting_connections: t.retransmitting_connections(),
            half_open_suspects: suspects.len() as u64,
            half_open_oldest_seconds: suspects
                .first()
                .map_or(0.0, |e| seconds(s.now_ns.saturating_sub(e.since_ns))),
            connection_errors: t.connection_ends().nonzero(),
            listen_queues,
            listen_queue_highest_usage: s.listen.highest_usage(),
            listen_overflows: s.listen.overflows,
            listen_drops: s.listen.drops,
            received: s.received,
            losses: s.losses,
            stats: t.stats(),
            alerts: s.alerts.to_vec(),
            notifications: s.notifications,
        }
    }

    /// OpenMetrics text, as Prometheus asks for it.
    #[must_use]
    pub fn encode(&self) -> String {
        encode::openmetrics(self)
    }
}

/// `uname -r`, for the build info metric (read once: it cannot change while running).
fn kernel_release() -> String {
    static RELEASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RELEASE
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        })
        .clone()
}
