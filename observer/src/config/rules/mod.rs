//! Alert rules as configured: what each watches ([`RuleKind`]), the built-in ones, and the
//! reading of `[[alerts.rules]]` tables (`read`, `settings`) through the table of rule kinds
//! (`kinds`).

mod kinds;
mod read;
mod settings;

use std::collections::BTreeMap;
use std::time::Duration;

pub(super) use self::read::{RawRule, read_rules};
use super::Severity;
use crate::track::{EndCause, ResetClass};

/// One `[[alerts.rules]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Alertmanager's `alertname`: `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    /// How long the condition must hold before the alert fires (pending until then).
    /// TOML key `for`, default 0s.
    pub for_: Duration,
    /// The `severity` label. Default "warning".
    pub severity: Severity,
    /// Extra labels on every alert of the rule. Default none.
    pub labels: BTreeMap<String, String>,
    /// Overrides the built-in summary annotation.
    pub summary: Option<String>,
    /// What the rule watches; TOML key `kind`, with the kind's settings beside it.
    pub kind: RuleKind,
}

/// The condition a rule watches.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// A socket in CLOSE_WAIT for longer than `older_than` (one alert per socket).
    /// `kind = "close_wait_age"`.
    CloseWaitAge { older_than: Duration },
    /// TIME_WAIT sockets in a network namespace above a count, or above a fraction of that
    /// namespace's net.ipv4.tcp_max_tw_buckets, or TIME_WAIT sockets toward one destination
    /// above a fraction of the ephemeral port range (net.ipv4.ip_local_port_range). At least one
    /// of the three; fractions in (0, 1]. `kind = "timewait_usage"`.
    TimewaitUsage {
        above_count: Option<u64>,
        above_bucket_fraction: Option<f64>,
        above_port_range_fraction: Option<f64>,
    },
    /// RSTs per second above a rate, per direction and class, over a sliding window. `classes`
    /// empty means every class. `kind = "reset_rate"`.
    ResetRate {
        above_per_second: f64,
        classes: Vec<ResetClass>,
        window: Duration,
    },
    /// Connections closed by the client before accept(), per listening port. `ports` empty
    /// means every port. `kind = "closed_before_accept_rate"`.
    ClosedBeforeAcceptRate {
        above_per_second: f64,
        ports: Vec<u16>,
        window: Duration,
    },
    /// Events the observer lost (ring buffer full, recursion misses, unreadable or malformed
    /// records), per second. `kind = "lost_events_rate"`.
    LostEventsRate {
        above_per_second: f64,
        window: Duration,
    },
    /// A connection retransmitting without progress for longer than `older_than`: a suspected
    /// half-open connection (one alert per connection). `kind = "half_open_age"`.
    HalfOpenAge { older_than: Duration },
    /// A listening socket whose accept queue holds more than a fraction of its backlog (one
    /// alert per listener). `ports` empty means every port. `kind = "accept_queue_usage"`.
    AcceptQueueUsage {
        above_fraction: f64,
        ports: Vec<u16>,
    },
    /// Connections ended by a timeout, per second, per cause, over a sliding window. `causes`
    /// empty means every timeout cause. `kind = "timeout_rate"`.
    TimeoutRate {
        above_per_second: f64,
        causes: Vec<EndCause>,
        window: Duration,
    },
}

/// The rules used when the file has none; also what [`Config::effective_rules`] starts from.
#[must_use]
pub fn builtin_rules() -> Vec<AlertRule> {
    let rule = |name: &str, for_: Duration, kind: RuleKind| AlertRule {
        name: name.to_owned(),
        for_,
        severity: Severity::default(),
        labels: BTreeMap::new(),
        summary: None,
        kind,
    };
    vec![
        rule(
            "TcpCloseWaitStuck",
            Duration::ZERO,
            RuleKind::CloseWaitAge {
                older_than: Duration::from_mins(5),
            },
        ),
        rule(
            "TcpTimeWaitNearBucketLimit",
            Duration::from_mins(1),
            RuleKind::TimewaitUsage {
                above_count: None,
                above_bucket_fraction: Some(0.8),
                above_port_range_fraction: None,
            },
        ),
        rule(
            "TcpTimeWaitPortExhaustion",
            Duration::from_mins(1),
            RuleKind::TimewaitUsage {
                above_count: None,
                above_bucket_fraction: None,
                above_port_range_fraction: Some(0.5),
            },
        ),
        rule(
            "TcpResetRateHigh",
            Duration::from_mins(2),
            RuleKind::ResetRate {
                above_per_second: 50.0,
                classes: Vec::new(),
                window: DEFAULT_RATE_WINDOW,
            },
        ),
        rule(
            "TcpClosedBeforeAccept",
            Duration::from_mins(1),
            RuleKind::ClosedBeforeAcceptRate {
                above_per_second: 1.0,
                ports: Vec::new(),
                window: DEFAULT_RATE_WINDOW,
            },
        ),
        rule(
            "TcpHalfOpenSuspected",
            Duration::ZERO,
            RuleKind::HalfOpenAge {
                older_than: Duration::from_secs(30),
            },
        ),
        rule(
            "TcpAcceptQueueFull",
            Duration::from_secs(30),
            RuleKind::AcceptQueueUsage {
                above_fraction: 0.9,
                ports: Vec::new(),
            },
        ),
        rule(
            "TcpTimeoutRateHigh",
            Duration::from_mins(1),
            RuleKind::TimeoutRate {
                above_per_second: 1.0,
                causes: Vec::new(),
                window: DEFAULT_RATE_WINDOW,
            },
        ),
        rule(
            "ObserverLostEvents",
            Duration::ZERO,
            RuleKind::LostEventsRate {
                above_per_second: 0.0,
                window: DEFAULT_LOST_EVENTS_WINDOW,
            },
        ),
    ]
}

/// The window of rate rules that name none.
const DEFAULT_RATE_WINDOW: Duration = Duration::from_mins(1);
/// The window of `lost_events_rate` rules that name none.
const DEFAULT_LOST_EVENTS_WINDOW: Duration = Duration::from_mins(5);

#[cfg(test)]
mod tests;
