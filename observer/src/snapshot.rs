//! The one read model of what the pipeline knows: plain values copied out of the tracker and
//! the counters around it, under the pipeline's lock, in time that grows with the CLOSE_WAIT
//! sockets (one pass over them) and the sockets listed, not with the events seen.
//! Metrics, the watch summary and any other front-end read a [`Snapshot`] after the lock is
//! released, and shape it as they need (port labels, text, JSON).

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use crate::event::{Netns, Tuple};
use crate::{
    alerts::{NotificationCounts, RuleCounts},
    event::{CgroupId, ListenerKey, PerState, ResetDirection},
    kernel::NetLimits,
    listen_queues::ListenQueues,
    sockdiag::Listener,
    stream::Losses,
    track::{
        CgroupSockets, CloseWaitEntry, Destination, EndCounts, HalfOpenSuspect, LastReconciliation,
        NeverAccepted, OwnerSockets, ResetClass, RetransmitCounts, TimewaitCounts, Tracker,
        TrackerStats, TransitionCounts, durations::Histogram,
    },
    workload::tally::{Counted, WorkloadCounts, WorkloadTally},
};

/// Which entries a snapshot's lists hold (a front-end's filter, applied before the lists are
/// cut to their length); the counts beside them stay complete.
pub trait Selection {
    /// A CLOSE_WAIT socket or a half-open suspect, owned by `owner_pid`.
    fn connection(&self, tuple: &Tuple, owner_pid: Option<u32>) -> bool;
    /// A process's sockets.
    fn owner(&self, sockets: &OwnerSockets) -> bool;
    /// Timewait sockets toward one destination.
    fn destination(&self, destination: &Destination) -> bool;
}

/// Every entry, up to the length of each list.
pub struct Everything;

impl Selection for Everything {
    fn connection(&self, _: &Tuple, _: Option<u32>) -> bool {
        true
    }

    fn owner(&self, _: &OwnerSockets) -> bool {
        true
    }

    fn destination(&self, _: &Destination) -> bool {
        true
    }
}

/// What a snapshot is copied from: the pipeline's state, borrowed under its lock.
pub struct Sources<'a> {
    pub tracker: &'a Tracker,
    pub transitions: &'a TransitionCounts,
    pub received: u64,
    pub losses: Losses,
    pub limits: &'a FxHashMap<Netns, NetLimits>,
    pub listen: &'a ListenQueues,
    /// Retransmitting without progress for this long makes a half-open suspect.
    pub half_open_after_ns: u64,
    pub alerts: &'a [RuleCounts],
    pub notifications: NotificationCounts,
    pub last_reconciliation: Option<LastReconciliation>,
    pub reconciliation_cpu_ns: u64,
    /// Clients of the daemon's socket disconnected because they read too slowly.
    pub socket_client_drops: u64,
    pub workload_tally: &'a WorkloadTally,
    /// `CLOCK_MONOTONIC` ns now.
    pub now_ns: u64,
}

/// Transitions from one state to another, counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionCount {
    pub from: TcpState,
    pub to: TcpState,
    pub count: u64,
}

/// RSTs of one direction and class, counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetCount {
    pub direction: ResetDirection,
    pub class: ResetClass,
    pub count: u64,
}

/// Connections closed before accept() on one listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedBeforeAccept {
    pub listener: ListenerKey,
    pub counts: NeverAccepted,
}

/// The CLOSE_WAIT sockets of one cgroup (or of none known): how many, and since when the
/// oldest has waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseWaitGroup {
    pub cgroup: Option<CgroupId>,
    pub count: u64,
    pub oldest_since_ns: u64,
}

/// The half-open suspects of one cgroup (or of none known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfOpenGroup {
    pub cgroup: Option<CgroupId>,
    pub count: u64,
}

/// SYN-ACKs one listening port retransmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynackRetransmits {
    pub listener: ListenerKey,
    pub count: u64,
}

/// Everything the front-ends read, at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `CLOCK_MONOTONIC` ns when it was taken.
    pub mono_ns: u64,
    /// Transitions seen so far, those that happened at least once.
    pub transitions: Vec<TransitionCount>,
    /// Sockets now in each state (timewait sockets under TIME_WAIT, or FIN_WAIT2 for an
    /// orphan waiting in one).
    pub sockets: PerState<u64>,
    /// Time spent in each state by sockets that left it.
    pub durations: PerState<Histogram>,
    /// RSTs by direction and class, every pair (zeros included), sent first.
    pub resets: Vec<ResetCount>,
    pub closed_before_accept: Vec<ClosedBeforeAccept>,
    /// Timewait sockets started, seeded and ended by cause.
    pub timewait: TimewaitCounts,
    /// The highest ratio of timewait sockets to `tcp_max_tw_buckets` over namespaces, and
    /// of timewait sockets holding an ephemeral port to the port range over destinations.
    pub timewait_bucket_usage: f64,
    pub timewait_port_usage: f64,
    /// Sockets in CLOSE_WAIT, and the oldest of them (oldest first, as many as asked for).
    pub close_wait_total: u64,
    pub close_wait: Vec<CloseWaitEntry>,
    /// Every CLOSE_WAIT socket, by cgroup (one pass over them).
    pub close_wait_by_cgroup: Vec<CloseWaitGroup>,
    pub retransmits: RetransmitCounts,
    pub synack_retransmits: Vec<SynackRetransmits>,
    pub retransmitting_connections: usize,
    /// The half-open threshold, the suspects' count and the oldest of them (oldest first, as
    /// many as asked for).
    pub half_open_after_ns: u64,
    pub half_open_total: usize,
    pub half_open: Vec<HalfOpenSuspect>,
    /// Every half-open suspect, by cgroup.
    pub half_open_by_cgroup: Vec<HalfOpenGroup>,
    /// Every socket tracked, by cgroup and state.
    pub sockets_by_cgroup: Vec<CgroupSockets>,
    /// RSTs and closes before accept() by workload (the counts only: the tally's indexes
    /// and its memo of cgroup names stay behind the lock).
    pub workload_counts: Vec<(Counted, WorkloadCounts)>,
    pub connection_ends: EndCounts,
    /// Every listening socket at the last sample of accept queues.
    pub listeners: Vec<Listener>,
    /// When the listeners' request sockets (`syn_recv`) were last counted (`CLOCK_MONOTONIC`
    /// ns): not at every sample on a host where that is costly.
    pub listen_requests_counted_ns: Option<u64>,
    pub listen_queue_highest_usage: f64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub received: u64,
    pub losses: Losses,
    pub stats: TrackerStats,
    pub alerts: Vec<RuleCounts>,
    pub notifications: NotificationCounts,
    pub last_reconciliation: Option<LastReconciliation>,
    /// The CPU time of every reconciliation so far.
    pub reconciliation_cpu_ns: u64,
    pub socket_client_drops: u64,
}

impl Snapshot {
    /// Copies the state, listing up to `listed` of the oldest CLOSE_WAIT sockets and half-open
    /// suspects (their counts are complete either way).
    #[must_use]
    pub fn take(s: &Sources<'_>, listed: usize) -> Self {
        Self::take_selected(s, listed, &Everything)
    }

    /// The same, listing only entries that `selection` keeps.
    #[must_use]
    pub fn take_selected(s: &Sources<'_>, listed: usize, selection: &dyn Selection) -> Self {
        let t = s.tracker;
        let usage = t.timewait_usage();
        let max = |it: &mut dyn Iterator<Item = f64>| it.fold(0.0_f64, f64::max);
        let suspects = t.half_open_suspects(s.half_open_after_ns);
        let resets = t.resets();
        Self {
            mono_ns: s.now_ns,
            transitions: s
                .transitions
                .nonzero()
                .into_iter()
                .map(|(from, to, count)| TransitionCount { from, to, count })
                .collect(),
            sockets: t.counts_by_state(),
            durations: PerState::from_fn(|st| t.durations().of(st).clone()),
            resets: [ResetDirection::Sent, ResetDirection::Received]
                .into_iter()
                .flat_map(|direction| {
                    ResetClass::ALL.into_iter().map(move |class| ResetCount {
                        direction,
                        class,
                        count: resets.get(direction, class),
                    })
                })
                .collect(),
            closed_before_accept: t
                .closed_before_accept()
                .into_iter()
                .map(|(listener, counts)| ClosedBeforeAccept { listener, counts })
                .collect(),
            timewait: t.timewait_counts(),
            timewait_bucket_usage: max(&mut usage.bucket_ratios(s.limits).map(|(.., r)| r)),
            timewait_port_usage: max(&mut usage.port_ratios(s.limits).map(|(.., r)| r)),
            close_wait_total: t.close_wait_count(),
            close_wait: t
                .close_wait()
                .filter(|e| selection.connection(&e.tuple, e.owner.map(|o| o.pid)))
                .take(listed)
                .collect(),
            close_wait_by_cgroup: close_wait_by_cgroup(t),
            retransmits: t.retransmit_counts(),
            synack_retransmits: t
                .synack_retransmits()
                .into_iter()
                .map(|(listener, count)| SynackRetransmits { listener, count })
                .collect(),
            retransmitting_connections: t.retransmitting_connections(),
            half_open_after_ns: s.half_open_after_ns,
            half_open_total: suspects.len(),
            half_open_by_cgroup: half_open_by_cgroup(&suspects),
            half_open: suspects
                .into_iter()
                .filter(|h| selection.connection(&h.tuple, h.owner.map(|o| o.pid)))
                .take(listed)
                .collect(),
            sockets_by_cgroup: t.sockets_by_cgroup(),
            workload_counts: s.workload_tally.iter().map(|(who, c)| (who, *c)).collect(),
            connection_ends: t.connection_ends().clone(),
            listeners: s.listen.listeners.clone(),
            listen_requests_counted_ns: s.listen.requests_counted.map(|r| r.at_ns),
            listen_queue_highest_usage: s.listen.highest_usage(),
            listen_overflows: s.listen.overflows,
            listen_drops: s.listen.drops,
            received: s.received,
            losses: s.losses,
            stats: t.stats(),
            alerts: s.alerts.to_vec(),
            notifications: s.notifications,
            last_reconciliation: s.last_reconciliation,
            reconciliation_cpu_ns: s.reconciliation_cpu_ns,
            socket_client_drops: s.socket_client_drops,
        }
    }

    /// How long the oldest CLOSE_WAIT socket has been in it (when one was listed).
    #[must_use]
    pub fn close_wait_oldest_ns(&self) -> Option<u64> {
        self.close_wait
            .first()
            .map(|e| self.mono_ns.saturating_sub(e.since_ns))
    }

    /// How old the listeners' count of request sockets is.
    #[must_use]
    pub fn listen_requests_age_ns(&self) -> Option<u64> {
        self.listen_requests_counted_ns
            .map(|at| self.mono_ns.saturating_sub(at))
    }

    /// How long the oldest half-open suspect has retransmitted without progress.
    #[must_use]
    pub fn half_open_oldest_ns(&self) -> Option<u64> {
        self.half_open
            .first()
            .map(|h| self.mono_ns.saturating_sub(h.since_ns))
    }
}
/// CLOSE_WAIT sockets grouped by cgroup, in the order each cgroup's oldest socket entered
/// (the tracker lists them oldest first).
fn close_wait_by_cgroup(t: &Tracker) -> Vec<CloseWaitGroup> {
    let mut groups: Vec<CloseWaitGroup> = Vec::new();
    let mut at: FxHashMap<Option<CgroupId>, usize> = FxHashMap::default();
    for e in t.close_wait() {
        if let Some(&i) = at.get(&e.cgroup) {
            groups[i].count += 1;
        } else {
            at.insert(e.cgroup, groups.len());
            groups.push(CloseWaitGroup {
                cgroup: e.cgroup,
                count: 1,
                oldest_since_ns: e.since_ns,
            });
        }
    }
    groups
}

fn half_open_by_cgroup(suspects: &[HalfOpenSuspect]) -> Vec<HalfOpenGroup> {
    let mut by: FxHashMap<Option<CgroupId>, u64> = FxHashMap::default();
    for s in suspects {
        *by.entry(s.cgroup).or_default() += 1;
    }
    let mut v: Vec<HalfOpenGroup> = by
        .into_iter()
        .map(|(cgroup, count)| HalfOpenGroup { cgroup, count })
        .collect();
    v.sort_unstable_by_key(|g| g.cgroup);
    v
}

/// Timewait sockets holding ephemeral ports toward one destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DestinationUsage {
    pub destination: Destination,
    pub timewait: u64,
    /// `timewait` over the size of the namespace's ephemeral port range, when known.
    pub port_share: Option<f64>,
}

/// What only a full-screen view needs beside a [`Snapshot`]: one pass over every socket, so
/// it is taken on request (`observer top`), never for a scrape.
#[derive(Clone, Debug, Default)]
pub struct Breakdown {
    /// Full sockets by owning process, most sockets first.
    pub owners: Vec<OwnerSockets>,
    /// Destinations whose ephemeral ports timewait sockets hold, most held first.
    pub timewait_destinations: Vec<DestinationUsage>,
}

impl Breakdown {
    /// Copies the groups that `selection` keeps, at most `listed` of each (the largest).
    #[must_use]
    pub fn take(s: &Sources<'_>, listed: usize, selection: &dyn Selection) -> Self {
        let mut owners = s.tracker.sockets_by_owner();
        owners.retain(|o| selection.owner(o));
        owners.truncate(listed);
        let usage = s.tracker.timewait_usage();
        let mut timewait_destinations: Vec<DestinationUsage> = usage
            .per_destination
            .iter()
            .filter(|(destination, _)| selection.destination(destination))
            .map(|(destination, n)| DestinationUsage {
                destination: *destination,
                timewait: *n,
                port_share: destination
                    .netns
                    .and_then(|ns| s.limits.get(&ns))
                    .and_then(NetLimits::ephemeral_ports)
                    .map(|ports| share(*n, ports)),
            })
            .collect();
        timewait_destinations.sort_by(|a, b| {
            b.timewait
                .cmp(&a.timewait)
                .then_with(|| a.destination.cmp(&b.destination))
        });
        timewait_destinations.truncate(listed);
        Self {
            owners,
            timewait_destinations,
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn share(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}
