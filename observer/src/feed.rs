//! Feeding the tracker, in the order that keeps it exact: everything the ring buffer holds is
//! applied before a sock_diag dump is compared with the tracker.

use crate::{
    alerts::{Change, Engine, Inputs},
    decode::Event,
    events::EventStream,
    sockdiag::Listener,
    track::{Report, Tracker},
    {clock::mono_now_ns, inventory::Inventory},
};

/// Applies `batch` (emptied), appending what is worth showing to `reports`.
pub fn apply(tracker: &mut Tracker, batch: &mut Vec<Event>, reports: &mut Vec<Report>) {
    for event in batch.drain(..) {
        tracker.apply(&event, reports);
    }
}

/// Seeds the tracker with a start-up dump; returns how many sockets were new to it.
pub fn seed(
    tracker: &mut Tracker,
    stream: &mut EventStream,
    batch: &mut Vec<Event>,
    reports: &mut Vec<Report>,
    dump: &Inventory,
) -> u64 {
    stream.drain_now(batch);
    apply(tracker, batch, reports);
    let seeded = tracker.seed(&dump.seeds(), dump.started_ns);
    log_failed_namespaces(dump);
    seeded
}

/// Compares the tracker with a later dump: sockets whose end was lost are dropped, sockets
/// whose start was lost are added.
pub fn reconcile(
    tracker: &mut Tracker,
    stream: &mut EventStream,
    batch: &mut Vec<Event>,
    reports: &mut Vec<Report>,
    dump: &Inventory,
) {
    stream.drain_now(batch);
    apply(tracker, batch, reports);
    let outcome = tracker.reconcile(&dump.seeds(), &dump.dumped, dump.started_ns, mono_now_ns());
    if outcome.stale + outcome.stale_timewait > 0 {
        log::info!(
            "reconciliation: {} sockets and {} timewait sockets had ended unseen; {} sockets \
             were not tracked yet",
            outcome.stale,
            outcome.stale_timewait,
            outcome.added
        );
    }
    log_failed_namespaces(dump);
}

fn log_failed_namespaces(inventory: &Inventory) {
    for failure in &inventory.failed {
        log::debug!("sock_diag: {failure}");
    }
}

/// Evaluates the alert rules now, at wall-clock time `wall`. The holders of CLOSE_WAIT sockets
/// older than `owner_after` are resolved first, so that alerts name them.
pub fn evaluate_alerts(
    engine: &mut Engine,
    tracker: &mut Tracker,
    inventory: &Inventory,
    listeners: &[Listener],
    owner_after: std::time::Duration,
    lost_total: u64,
    wall: jiff::Timestamp,
) -> Vec<Change> {
    let now = mono_now_ns();
    inventory.resolve_close_wait_owners(tracker, nanos(owner_after), now);
    let inputs = Inputs {
        tracker,
        limits: &inventory.limits,
        listeners,
        lost_total,
        now_ns: now,
    };
    engine.evaluate(&inputs, wall)
}

/// A duration in nanoseconds, saturating.
#[must_use]
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
