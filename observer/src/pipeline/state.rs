//! What the pipeline shares with its front-ends (the daemon's HTTP server among them), behind
//! one lock.

use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::{
    alerts::{Alert, NotificationCounts, RuleCounts},
    clock::mono_now_ns,
    kernel::NetLimits,
    listen_queues::ListenQueues,
    snapshot::{Breakdown, Selection, Snapshot, Sources},
    stream::Losses,
    track::{LastReconciliation, Report, Tracker},
};
use crate::{
    event::Netns,
    workload::{Resolver, tally::WorkloadTally},
};

/// The tracker and what surrounds it. The event loop holds the lock while it applies a chunk of
/// events, a reconciliation while it applies a part of a dump, a scrape while it copies a
/// snapshot.
pub struct State {
    pub tracker: Tracker,
    pub received: u64,
    pub losses: Losses,
    pub limits: FxHashMap<Netns, NetLimits>,
    /// Accept queues at the last sample.
    pub listen: ListenQueues,
    pub half_open_after_ns: u64,
    pub alert_counts: Vec<RuleCounts>,
    pub notifications: NotificationCounts,
    /// Alerts pending or firing at the last evaluation, for /alerts.
    pub active_alerts: Vec<Alert>,
    pub last_reconciliation: Option<LastReconciliation>,
    /// The CPU time of every reconciliation so far, all their threads.
    pub reconciliation_cpu_ns: u64,
    /// Sockets' cgroups -> units, containers, pods: the one resolver (and cache) that alerts,
    /// metrics, watch and the daemon's socket share.
    pub workloads: Arc<Resolver>,
    /// RSTs and closes before accept() by workload, counted as they happen.
    pub workload_tally: WorkloadTally,
    /// Clients of the daemon's socket disconnected because they read too slowly.
    pub socket_client_drops: u64,
}

impl State {
    /// A fresh state around `tracker`, naming workloads through this host's resolver.
    #[must_use]
    pub fn new(tracker: Tracker, half_open_after_ns: u64) -> Self {
        Self::with_workloads(tracker, half_open_after_ns, Arc::new(Resolver::host()))
    }

    /// A fresh state around `tracker`, naming workloads through `workloads`.
    #[must_use]
    pub fn with_workloads(
        tracker: Tracker,
        half_open_after_ns: u64,
        workloads: Arc<Resolver>,
    ) -> Self {
        Self {
            tracker,
            received: 0,
            losses: Losses::default(),
            limits: FxHashMap::default(),
            listen: ListenQueues::default(),
            half_open_after_ns,
            alert_counts: Vec::new(),
            notifications: NotificationCounts::default(),
            active_alerts: Vec::new(),
            last_reconciliation: None,
            reconciliation_cpu_ns: 0,
            workloads,
            workload_tally: WorkloadTally::default(),
            socket_client_drops: 0,
        }
    }

    /// Counts what the reports of events just applied tell of each workload's sockets.
    pub fn count_reports(&mut self, reports: &[Report]) {
        self.workload_tally.count(reports, &self.workloads);
    }
}

impl State {
    /// A snapshot of this state at `CLOCK_MONOTONIC` now.
    #[must_use]
    pub fn snapshot(&self, listed: usize) -> Snapshot {
        self.snapshot_at(listed, mono_now_ns())
    }

    /// A snapshot of this state, ages measured at `now_ns`.
    #[must_use]
    pub fn snapshot_at(&self, listed: usize, now_ns: u64) -> Snapshot {
        Snapshot::take(&self.sources(now_ns), listed)
    }

    /// A snapshot and the breakdown a full-screen view shows, at `CLOCK_MONOTONIC` now, with
    /// up to `listed` entries in each list, of those that `selection` keeps.
    #[must_use]
    pub fn snapshot_with_breakdown(
        &self,
        listed: usize,
        selection: &dyn Selection,
    ) -> (Snapshot, Breakdown) {
        let sources = self.sources(mono_now_ns());
        (
            Snapshot::take_selected(&sources, listed, selection),
            Breakdown::take(&sources, listed, selection),
        )
    }

    fn sources(&self, now_ns: u64) -> Sources<'_> {
        Sources {
            tracker: &self.tracker,
            transitions: self.tracker.transitions(),
            received: self.received,
            losses: self.losses,
            limits: &self.limits,
            listen: &self.listen,
            half_open_after_ns: self.half_open_after_ns,
            alerts: &self.alert_counts,
            notifications: self.notifications,
            last_reconciliation: self.last_reconciliation,
            reconciliation_cpu_ns: self.reconciliation_cpu_ns,
            socket_client_drops: self.socket_client_drops,
            workload_tally: &self.workload_tally,
            now_ns,
        }
    }
}

#[derive(Clone)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    #[must_use]
    pub fn new(state: State) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    /// The state, even if a panic poisoned the lock (the data stays consistent per field).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot, taken under the lock, listing up to `listed` of the oldest CLOSE_WAIT
    /// sockets and half-open suspects.
    #[must_use]
    pub fn snapshot(&self, listed: usize) -> Snapshot {
        self.lock().snapshot(listed)
    }
}
