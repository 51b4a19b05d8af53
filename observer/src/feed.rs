//! Feeding the tracker, in the order that keeps it exact: everything the ring buffer holds is
//! applied before a sock_diag dump is compared with the tracker.

use crate::{
    decode::Event,
    events::EventStream,
    inventory::{Inventory, mono_now_ns},
    track::{Report, Tracker},
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

/// A duration in nanoseconds, saturating.
#[must_use]
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
