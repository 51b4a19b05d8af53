//! The alert state machine: inactive -> pending -> firing -> resolved, as Prometheus runs it.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use serde::Serialize;

use super::{
    RuleCounts,
    rules::{History, Inputs, Instance, instances, longest_window},
};
use crate::{clock::nanos, config::AlertRule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, for less than the rule's `for` so far.
    Pending,
    Firing,
}

/// What an alert became at an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Firing,
    /// Was firing; the condition no longer holds.
    Resolved,
    /// Was pending; the condition stopped holding before `for` elapsed (never notified).
    Inactive,
}

/// One alert instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Everything that identifies it: alertname, severity, the rule's labels, the instance's.
    pub labels: BTreeMap<String, String>,
    /// summary and description.
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    /// The value that broke the threshold (an age in seconds, a ratio, a rate per second).
    pub value: f64,
    /// When the condition began to hold (wall clock).
    pub active_since: Timestamp,
    /// When it fired, if it has.
    pub fired_at: Option<Timestamp>,
    #[serde(skip)]
    active_since_ns: u64,
}

impl Alert {
    #[must_use]
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// A state change to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub alert: Alert,
    pub status: Status,
}

/// An alert a previous run of the daemon held, waiting to be recognised by its labels.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SavedAlert {
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    pub active_since: Timestamp,
    pub fired_at: Option<Timestamp>,
}

/// The rules and their live instances.
pub struct Engine {
    rules: Vec<AlertRule>,
    max_per_rule: usize,
    /// By (rule name, instance key): a reload that keeps a rule keeps its alerts.
    alerts: BTreeMap<(String, String), Alert>,
    suppressed: BTreeMap<String, u64>,
    history: History,
    /// Restored alerts not matched yet, and the `CLOCK_MONOTONIC` ns until which they wait.
    restored: Vec<SavedAlert>,
    restored_until_ns: u64,
}

impl Engine {
    #[must_use]
    pub fn new(rules: Vec<AlertRule>, max_per_rule: usize) -> Self {
        Self {
            rules,
            max_per_rule,
            alerts: BTreeMap::new(),
            suppressed: BTreeMap::new(),
            history: History::default(),
            restored: Vec::new(),
            restored_until_ns: 0,
        }
    }

    /// Replaces the rules (a configuration reload). Alerts of rules that keep their name keep
    /// their state; firing alerts of rules that are gone are resolved.
    pub fn set_rules(&mut self, rules: Vec<AlertRule>, max_per_rule: usize) -> Vec<Change> {
        let names: std::collections::BTreeSet<&str> =
            rules.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<_> = self
            .alerts
            .keys()
            .filter(|(rule, _)| !names.contains(rule.as_str()))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for key in gone {
            let alert = self.alerts.remove(&key).expect("listed above");
            if alert.state == AlertState::Firing {
                changes.push(Change {
                    alert,
                    status: Status::Resolved,
                });
            }
        }
        self.rules = rules;
        self.max_per_rule = max_per_rule;
        changes
    }

    /// What must survive a restart: every alert with the time it began.
    #[must_use]
    pub fn saved(&self) -> Vec<SavedAlert> {
        self.alerts
            .values()
            .map(|a| SavedAlert {
                labels: a.labels.clone(),
                state: a.state,
                active_since: a.active_since,
                fired_at: a.fired_at,
            })
            .collect()
    }

    /// Alerts of a previous run: an instance with the same labels that holds again within
    /// `horizon()` (and a minute) takes over its start (and its firing state, without a new pending period).
    pub fn restore(&mut self, saved: Vec<SavedAlert>, now_ns: u64) {
        self.restored = saved;
        // A condition needs up to `horizon` to hold again, plus a few evaluations to be seen.
        let wait = self.horizon() + std::time::Duration::from_mins(1);
        self.restored_until_ns = now_ns.saturating_add(nanos(wait));
    }

    #[must_use]
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Evaluates every rule now. `wall` is the wall-clock time of `inputs.now_ns`.
    pub fn evaluate(&mut self, inputs: &Inputs<'_>, wall: Timestamp) -> Vec<Change> {
        self.history.record(inputs, longest_window(&self.rules));
        if inputs.now_ns > self.restored_until_ns {
            self.restored.clear();
        }
        let mut changes = Vec::new();
        let mut holding = std::collections::BTreeSet::new();
        for rule in &self.rules {
            let found = instances(rule, inputs, &self.history);
            let over = found.len().saturating_sub(self.max_per_rule);
            self.suppressed.insert(rule.name.clone(), over as u64);
            for instance in found.into_iter().take(self.max_per_rule) {
                let key = (rule.name.clone(), instance.key.clone());
                holding.insert(key.clone());
                let restored = &mut self.restored;
                let mut new = false;
                let alert = self.alerts.entry(key).or_insert_with(|| {
                    new = true;
                    let labels = labels_of(rule, &instance);
                    let earlier = restored
                        .iter()
                        .position(|s| same_identity(&s.labels, &labels))
                        .map(|i| restored.swap_remove(i));
                    let mut alert = Alert {
                        labels: BTreeMap::new(),
                        annotations: BTreeMap::new(),
                        state: AlertState::Pending,
                        value: instance.value,
                        active_since: wall,
                        fired_at: None,
                        active_since_ns: inputs.now_ns,
                    };
                    if let Some(s) = earlier {
                        alert.labels = s.labels;
                        let held = wall.duration_since(s.active_since);
                        let held_ns = u64::try_from(held.as_nanos()).unwrap_or(0);
                        alert.active_since = s.active_since;
                        alert.active_since_ns = inputs.now_ns.saturating_sub(held_ns);
                        if s.state == AlertState::Firing {
                            alert.state = AlertState::Firing;
                            alert.fired_at = s.fired_at;
                        }
                    }
                    alert
                });
                // Labels are an alert's identity in Alertmanager: fixed once it has fired.
                if alert.state == AlertState::Pending || alert.labels.is_empty() {
                    alert.labels = labels_of(rule, &instance);
                }
                alert.value = instance.value;
                alert.annotations = annotations_of(rule, &instance);
                let held_ns = inputs.now_ns.saturating_sub(alert.active_since_ns);
                if alert.state == AlertState::Pending && held_ns >= nanos(rule.for_) {
                    alert.state = AlertState::Firing;
                    alert.fired_at = Some(wall);
                    changes.push(Change {
                        alert: alert.clone(),
                        status: Status::Firing,
                    });
                } else if new {
                    // A restored firing alert is announced again, with its original start.
                    let status = match alert.state {
                        AlertState::Pending => Status::Pending,
                        AlertState::Firing => Status::Firing,
                    };
                    changes.push(Change {
                        alert: alert.clone(),
                        status,
                    });
                }
            }
        }
        let ended: Vec<_> = self
            .alerts
            .keys()
            .filter(|k| !holding.contains(*k))
            .cloned()
            .collect();
        for key in ended {
            let alert = self.alerts.remove(&key).expect("listed above");
            let status = match alert.state {
                AlertState::Firing => Status::Resolved,
                AlertState::Pending => Status::Inactive,
            };
            changes.push(Change { alert, status });
        }
        changes
    }

    /// Alerts now pending or firing.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Per rule: instances pending, firing, and suppressed.
    #[must_use]
    pub fn counts(&self) -> Vec<RuleCounts> {
        self.rules
            .iter()
            .map(|r| {
                let mut c = RuleCounts {
                    name: r.name.clone(),
                    suppressed: self.suppressed.get(&r.name).copied().unwrap_or(0),
                    ..RuleCounts::default()
                };
                for ((name, _), a) in &self.alerts {
                    if *name == r.name {
                        match a.state {
                            AlertState::Pending => c.pending += 1,
                            AlertState::Firing => c.firing += 1,
                        }
                    }
                }
                c
            })
            .collect()
    }

    /// The longest `for` or rate window: how long a condition takes to fire at most.
    #[must_use]
    pub fn horizon(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.for_)
            .max()
            .unwrap_or_default()
            .max(longest_window(&self.rules))
    }
}

/// Labels that may be learnt after an alert began (the process holding a socket).
const LATE_LABELS: [&str; 2] = ["pid", "comm"];

/// Whether two label sets name the same alert, whatever was learnt late.
fn same_identity(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let core = |m: &BTreeMap<String, String>| {
        m.iter()
            .filter(|(k, _)| !LATE_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    core(a) == core(b)
}

fn labels_of(rule: &AlertRule, instance: &Instance) -> BTreeMap<String, String> {
    let mut labels = rule.labels.clone();
    labels.extend(instance.labels.clone());
    labels.insert("alertname".to_owned(), rule.name.clone());
    labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
    labels
}

fn annotations_of(rule: &AlertRule, instance: &Instance) -> BTreeMap<String, String> {
    let summary = rule
        .summary
        .clone()
        .unwrap_or_else(|| default_summary(rule).to_owned());
    BTreeMap::from([
        ("summary".to_owned(), summary),
        ("description".to_owned(), instance.description.clone()),
    ])
}

fn default_summary(rule: &AlertRule) -> &'static str {
    use crate::config::RuleKind;
    match rule.kind {
        RuleKind::CloseWaitAge { .. } => {
            "A TCP socket is stuck in CLOSE_WAIT: its application never closed it"
        }
        RuleKind::TimewaitUsage { .. } => "TIME_WAIT sockets are nearing a kernel limit",
        RuleKind::ResetRate { .. } => "TCP connections are being reset at a high rate",
        RuleKind::ClosedBeforeAcceptRate { .. } => {
            "Clients give up on connections before the server accepts them"
        }
        RuleKind::LostEventsRate { .. } => "The TCP observer is losing events",
        RuleKind::HalfOpenAge { .. } => {
            "A TCP connection retransmits without progress: its peer may be gone"
        }
        RuleKind::AcceptQueueUsage { .. } => {
            "A listening socket's accept queue is nearly full: the server is not accepting"
        }
        RuleKind::TimeoutRate { .. } => "TCP connections are timing out",
    }
}
