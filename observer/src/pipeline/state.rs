//! What the pipeline shares with its front-ends (the daemon's HTTP server among them), behind
//! one lock.

use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use super::reconcile::LastReconciliation;
use crate::{
    alerts::{Alert, NotificationCounts, RuleCounts},
    clock::mono_now_ns,
    export::{DEFAULT_MAX_PORT_LABELS, MetricsSnapshot, PortLabels, Sources, TransitionCounts},
    kernel::NetLimits,
    listen_queues::ListenQueues,
    stream::Losses,
    track::Tracker,
};

/// The tracker and what surrounds it. The event loop holds the lock while it applies a batch,
/// a reconciliation while it applies a part of a dump, a scrape while it copies a snapshot.
pub struct State {
    pub tracker: Tracker,
    pub transitions: TransitionCounts,
    pub received: u64,
    pub losses: Losses,
    pub limits: FxHashMap<u32, NetLimits>,
    /// Accept queues at the last sample.
    pub listen: ListenQueues,
    pub half_open_after_ns: u64,
    pub ports: PortLabels,
    pub alert_counts: Vec<RuleCounts>,
    pub notifications: NotificationCounts,
    /// Alerts pending or firing at the last evaluation, for /alerts.
    pub active_alerts: Vec<Alert>,
    pub last_reconciliation: Option<LastReconciliation>,
}

impl State {
    /// A fresh state around `tracker`.
    #[must_use]
    pub fn new(tracker: Tracker, half_open_after_ns: u64) -> Self {
        Self {
            tracker,
            transitions: TransitionCounts::default(),
            received: 0,
            losses: Losses::default(),
            limits: FxHashMap::default(),
            listen: ListenQueues::default(),
            half_open_after_ns,
            ports: PortLabels::new(&[], DEFAULT_MAX_PORT_LABELS),
            alert_counts: Vec::new(),
            notifications: NotificationCounts::default(),
            active_alerts: Vec::new(),
            last_reconciliation: None,
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

    /// A metrics snapshot, taken under the lock.
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut guard = self.lock();
        let s = &mut *guard;
        MetricsSnapshot::take(&mut Sources {
            tracker: &s.tracker,
            transitions: &s.transitions,
            received: s.received,
            losses: s.losses,
            limits: &s.limits,
            listen: &s.listen,
            half_open_after_ns: s.half_open_after_ns,
            alerts: &s.alert_counts,
            notifications: s.notifications,
            ports: &mut s.ports,
            now_ns: mono_now_ns(),
        })
    }
}
