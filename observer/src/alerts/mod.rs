//! Alert rules evaluated in the daemon, as Prometheus evaluates its own: an instance is
//! pending while its condition holds for less than the rule's `for`, then firing, then
//! resolved when the condition no longer holds. State changes are delivered to the log, a
//! JSON-lines file and Alertmanager ([`deliver`]).

pub mod alertmanager;
pub mod deliver;
pub mod engine;
pub mod rules;

pub use deliver::{Delivery, DeliveryOptions};
pub use engine::{Alert, AlertState, Change, Engine, Status};
pub use rules::Inputs;

/// One rule's instances now (for the `observer_alerts` metric).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    pub name: String,
    pub pending: u64,
    pub firing: u64,
    /// Instances beyond `max_alerts_per_rule` at the last evaluation.
    pub suppressed: u64,
}

/// Notifications delivered so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    pub alertmanager: alertmanager::DeliveryCounts,
    pub file_written: u64,
    pub file_failed: u64,
}

#[cfg(test)]
mod tests;
