//! What each kind of rule looks at: the conditions that hold now, one instance per socket,
//! namespace, destination, class or port.

use std::{collections::BTreeMap, collections::VecDeque, time::Duration};

use rustc_hash::FxHashMap;

use crate::{
    clock::{nanos, seconds},
    config::{AlertRule, RuleKind},
    event::{ListenerKey, Netns, ResetDirection},
    kernel::NetLimits,
    sockdiag::Listener,
    track::{EndCause, ResetClass, Tracker},
    workload::{Attribution, Resolver},
};

/// What rules are evaluated against.
pub struct Inputs<'a> {
    pub tracker: &'a Tracker,
    pub limits: &'a FxHashMap<Netns, NetLimits>,
    /// Listening sockets at the last sample of their accept queues.
    pub listeners: &'a [Listener],
    /// Events lost so far (every reason).
    pub lost_total: u64,
    /// `CLOCK_MONOTONIC` ns now.
    pub now_ns: u64,
    /// Names sockets' workloads by their cgroups, when the host has cgroup v2.
    pub workloads: Option<&'a Resolver>,
}

/// A condition that holds now.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Identity within its rule (stable while the condition holds).
    pub key: String,
    /// Labels beyond the rule's own.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// What is wrong, in a sentence, for the `description` annotation.
    pub description: String,
}

/// Counter values at one evaluation, for rates.
#[derive(Clone, Debug)]
struct Sample {
    at_ns: u64,
    resets: [[u64; ResetClass::ALL.len()]; 2],
    closed_before_accept: FxHashMap<ListenerKey, u64>,
    /// Connection ends by cause.
    ends: [u64; EndCause::ALL.len()],
    lost: u64,
}

const DIRECTIONS: [ResetDirection; 2] = [ResetDirection::Sent, ResetDirection::Received];

impl Sample {
    fn take(inputs: &Inputs<'_>) -> Self {
        Self {
            at_ns: inputs.now_ns,
            resets: inputs.tracker.resets().matrix(),
            closed_before_accept: inputs
                .tracker
                .closed_before_accept()
                .into_iter()
                .map(|(k, n)| (k, n.peer_closed + n.peer_reset))
                .collect(),
            ends: EndCause::ALL.map(|c| inputs.tracker.connection_ends().of_cause(c)),
            lost: inputs.lost_total,
        }
    }
}

/// Counter samples over the longest window any rule uses.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Records the counters now; keeps what `longest` windows need.
    pub fn record(&mut self, inputs: &Inputs<'_>, longest: Duration) {
        self.samples.push_back(Sample::take(inputs));
        let keep_from = inputs.now_ns.saturating_sub(nanos(longest));
        // Keep one sample at or before the window's start, so a full window has a base.
        while self.samples.len() > 2 && self.samples[1].at_ns <= keep_from {
            self.samples.pop_front();
        }
    }

    /// The newest sample and the oldest within `window` of it (older than the newest).
    fn span(&self, window: Duration) -> Option<(&Sample, &Sample)> {
        let now = self.samples.back()?;
        let from = now.at_ns.saturating_sub(nanos(window));
        let base = self
            .samples
            .iter()
            .rev()
            .skip(1)
            .take_while(|s| s.at_ns >= from)
            .last()
            .or_else(|| self.samples.iter().rev().nth(1))?;
        (base.at_ns < now.at_ns).then_some((base, now))
    }

    /// Per-second increase of `value` over `window`; `None` before two samples exist.
    fn rate(&self, window: Duration, value: impl Fn(&Sample) -> u64) -> Option<f64> {
        let (base, now) = self.span(window)?;
        let dt = seconds(now.at_ns - base.at_ns);
        Some(f(value(now).saturating_sub(value(base))) / dt)
    }
}

/// The instances of `rule` whose condition holds now, most severe first.
#[must_use]
pub fn instances(rule: &AlertRule, inputs: &Inputs<'_>, history: &History) -> Vec<Instance> {
    let mut found = match &rule.kind {
        RuleKind::CloseWaitAge { older_than } => close_wait_age(inputs, *older_than),
        RuleKind::TimewaitUsage {
            above_count,
            above_bucket_fraction,
            above_port_range_fraction,
        } => timewait_usage(
            inputs,
            *above_count,
            *above_bucket_fraction,
            *above_port_range_fraction,
        ),
        RuleKind::ResetRate {
            above_per_second,
            classes,
            window,
        } => reset_rate(history, *above_per_second, classes, *window),
        RuleKind::ClosedBeforeAcceptRate {
            above_per_second,
            ports,
            window,
        } => closed_before_accept_rate(history, *above_per_second, ports, *window),
        RuleKind::LostEventsRate {
            above_per_second,
            window,
        } => lost_events_rate(history, *above_per_second, *window),
        RuleKind::HalfOpenAge { older_than } => half_open_age(inputs, *older_than),
        RuleKind::AcceptQueueUsage {
            above_fraction,
            ports,
        } => accept_queue_usage(inputs, *above_fraction, ports),
        RuleKind::TimeoutRate {
            above_per_second,
            causes,
            window,
        } => timeout_rate(history, *above_per_second, causes, *window),
    };
    found.sort_by(|a, b| b.value.total_cmp(&a.value).then_with(|| a.key.cmp(&b.key)));
    found
}

/// The longest rate window among `rules` (the history to keep).
#[must_use]
pub fn longest_window(rules: &[AlertRule]) -> Duration {
    rules
        .iter()
        .filter_map(|r| match &r.kind {
            RuleKind::ResetRate { window, .. }
            | RuleKind::ClosedBeforeAcceptRate { window, .. }
            | RuleKind::LostEventsRate { window, .. }
            | RuleKind::TimeoutRate { window, .. } => Some(*window),
            _ => None,
        })
        .max()
        .unwrap_or_default()
}

fn labels<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Labels naming one connection, its owner when known; returns also "comm (pid N)".
fn connection_labels(
    tuple: &crate::event::Tuple,
    owner: Option<crate::event::Task>,
    workload: Option<&Attribution>,
) -> (BTreeMap<String, String>, String) {
    let mut l = labels([
        ("netns", Netns::inode_or_zero(tuple.netns).to_string()),
        ("local_address", tuple.local.ip().to_string()),
        ("local_port", tuple.local.port().to_string()),
        ("remote_address", tuple.remote.ip().to_string()),
        ("remote_port", tuple.remote.port().to_string()),
    ]);
    let holder = owner.map_or_else(
        || "an unknown process".to_owned(),
        |o| {
            l.insert("pid".to_owned(), o.pid.to_string());
            l.insert("comm".to_owned(), o.comm().into_owned());
            format!("{} (pid {})", o.comm(), o.pid)
        },
    );
    let Some(w) = workload else {
        return (l, holder);
    };
    l.insert("cgroup".to_owned(), w.cgroup.clone());
    let named = [
        ("unit", &w.workload.unit),
        ("container_id", &w.workload.container_id),
        ("pod", &w.pod.as_ref().map(|p| p.pod.clone())),
        ("namespace", &w.pod.as_ref().map(|p| p.namespace.clone())),
        ("container", &w.pod.as_ref().map(|p| p.container.clone())),
    ];
    for (key, value) in named {
        if let Some(v) = value {
            l.insert(key.to_owned(), v.clone());
        }
    }
    let holder = match w.name() {
        Some(name) => format!("{holder} in {name}"),
        None => holder,
    };
    (l, holder)
}

fn close_wait_age(inputs: &Inputs<'_>, older_than: Duration) -> Vec<Instance> {
    let older_than = nanos(older_than);
    inputs
        .tracker
        .close_wait()
        .take_while(|e| inputs.now_ns.saturating_sub(e.since_ns) > older_than)
        .map(|e| {
            let age_ns = inputs.now_ns.saturating_sub(e.since_ns);
            let t = e.tuple;
            let workload = e
                .cgroup
                .zip(inputs.workloads)
                .and_then(|(c, r)| r.resolve(c));
            let (l, holder) = connection_labels(&t, e.owner, workload.as_deref());
            let age = humantime::format_duration(Duration::from_secs(age_ns / 1_000_000_000));
            Instance {
                key: format!("{}@{}", e.key, e.since_ns),
                labels: l,
                value: seconds(age_ns),
                description: format!(
                    "{} -> {} has been in CLOSE_WAIT for {}{age}: the peer closed, and {holder} \
                     has not closed its socket",
                    t.local,
                    t.remote,
                    if e.lower_bound { "at least " } else { "" },
                ),
            }
        })
        .collect()
}

fn timewait_usage(
    inputs: &Inputs<'_>,
    above_count: Option<u64>,
    above_buckets: Option<f64>,
    above_ports: Option<f64>,
) -> Vec<Instance> {
    let usage = inputs.tracker.timewait_usage();
    let mut found = Vec::new();
    if let Some(max) = above_count {
        for (netns, n) in &usage.per_netns {
            let netns = Netns::inode_or_zero(*netns);
            if *n > max {
                found.push(Instance {
                    key: format!("count/{netns}"),
                    labels: labels([("netns", netns.to_string()), ("limit", "count".into())]),
                    value: f(*n),
                    description: format!(
                        "{n} sockets in TIME_WAIT in network namespace {netns} (threshold {max})"
                    ),
                });
            }
        }
    }
    if let Some(fraction) = above_buckets {
        for (netns, n, ratio) in usage.bucket_ratios(inputs.limits) {
            if ratio > fraction {
                found.push(Instance {
                    key: format!("buckets/{netns}"),
                    labels: labels([
                        ("netns", netns.to_string()),
                        ("limit", "tcp_max_tw_buckets".into()),
                    ]),
                    value: ratio,
                    description: format!(
                        "{n} timewait sockets in network namespace {netns} use {:.0}% of \
                         net.ipv4.tcp_max_tw_buckets; beyond it, closing connections skip \
                         TIME_WAIT",
                        ratio * 100.0
                    ),
                });
            }
        }
    }
    if let Some(fraction) = above_ports {
        for (d, n, ratio) in usage.port_ratios(inputs.limits) {
            let (netns, local, remote) = (Netns::inode_or_zero(d.netns), d.local, d.remote);
            if ratio > fraction {
                found.push(Instance {
                    key: format!("ports/{netns}/{local}/{remote}"),
                    labels: labels([
                        ("netns", netns.to_string()),
                        ("limit", "ip_local_port_range".into()),
                        ("local_address", local.to_string()),
                        ("remote_address", remote.ip().to_string()),
                        ("remote_port", remote.port().to_string()),
                    ]),
                    value: ratio,
                    description: format!(
                        "{n} timewait sockets from {local} to {remote} hold {:.0}% of the \
                         ephemeral ports (net.ipv4.ip_local_port_range): new connections to \
                         {remote} will fail with EADDRNOTAVAIL when they run out",
                        ratio * 100.0
                    ),
                });
            }
        }
    }
    found
}

fn reset_rate(
    history: &History,
    above: f64,
    classes: &[ResetClass],
    window: Duration,
) -> Vec<Instance> {
    let mut found = Vec::new();
    for (d, direction) in DIRECTIONS.into_iter().enumerate() {
        for (c, class) in ResetClass::ALL.into_iter().enumerate() {
            if !classes.is_empty() && !classes.contains(&class) {
                continue;
            }
            let Some(rate) = history.rate(window, |s| s.resets[d][c]) else {
                return found;
            };
            if rate > above {
                found.push(Instance {
                    key: format!("{}/{}", direction.name(), class.name()),
                    labels: labels([
                        ("direction", direction.name().into()),
                        ("class", class.name().into()),
                    ]),
                    value: rate,
                    description: format!(
                        "{rate:.1} RSTs {} per second ({}) over the last {}",
                        direction.name(),
                        class.describe(),
                        humantime::format_duration(window)
                    ),
                });
            }
        }
    }
    found
}

fn closed_before_accept_rate(
    history: &History,
    above: f64,
    ports: &[u16],
    window: Duration,
) -> Vec<Instance> {
    let Some(now) = history.samples.back() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for &listener in now.closed_before_accept.keys() {
        let ListenerKey { netns, port } = listener;
        let netns = Netns::inode_or_zero(netns);
        if !ports.is_empty() && !ports.contains(&port) {
            continue;
        }
        let count = |s: &Sample| s.closed_before_accept.get(&listener).copied().unwrap_or(0);
        let Some(rate) = history.rate(window, count) else {
            break;
        };
        if rate > above {
            found.push(Instance {
                key: format!("{netns}/{port}"),
                labels: labels([("netns", netns.to_string()), ("port", port.to_string())]),
                value: rate,
                description: format!(
                    "{rate:.1} connections per second to port {port} (network namespace \
                     {netns}) were closed by their clients before the server accepted them: \
                     the server is not calling accept() fast enough"
                ),
            });
        }
    }
    found
}

fn half_open_age(inputs: &Inputs<'_>, older_than: Duration) -> Vec<Instance> {
    inputs
        .tracker
        .half_open_suspects(nanos(older_than))
        .into_iter()
        .map(|e| {
            let age_ns = inputs.now_ns.saturating_sub(e.since_ns);
            let (mut l, holder) = connection_labels(&e.tuple, e.owner, None);
            if let Some(state) = e.state {
                l.insert("state".to_owned(), state.name().to_owned());
            }
            let age = humantime::format_duration(Duration::from_secs(age_ns / 1_000_000_000));
            Instance {
                key: format!("{}@{}", e.key, e.since_ns),
                labels: l,
                value: seconds(age_ns),
                description: format!(
                    "{} -> {} has retransmitted {} times without progress for {}{age}: the \
                     peer, or the path to it, may be gone; {holder} is waiting on it",
                    e.tuple.local,
                    e.tuple.remote,
                    e.retransmits,
                    if e.lower_bound { "at least " } else { "" },
                ),
            }
        })
        .collect()
}

fn accept_queue_usage(inputs: &Inputs<'_>, above: f64, ports: &[u16]) -> Vec<Instance> {
    inputs
        .listeners
        .iter()
        .filter(|l| l.backlog > 0 && (ports.is_empty() || ports.contains(&l.local.port())))
        .filter_map(|l| {
            let ratio = f64::from(l.queued) / f64::from(l.backlog);
            (ratio > above).then(|| Instance {
                key: format!("{}/{}", l.netns, l.local),
                labels: labels([
                    ("netns", l.netns.to_string()),
                    ("local_address", l.local.ip().to_string()),
                    ("port", l.local.port().to_string()),
                ]),
                value: ratio,
                description: format!(
                    "the accept queue of {} (network namespace {}) holds {} connections, \
                     {:.0}% of its backlog of {}: the application is not calling accept() fast \
                     enough, and once it is full new handshakes are dropped",
                    l.local,
                    l.netns,
                    l.queued,
                    ratio * 100.0,
                    l.backlog
                ),
            })
        })
        .collect()
}

fn timeout_rate(
    history: &History,
    above: f64,
    causes: &[EndCause],
    window: Duration,
) -> Vec<Instance> {
    let mut found = Vec::new();
    for cause in EndCause::TIMEOUTS {
        if !causes.is_empty() && !causes.contains(&cause) {
            continue;
        }
        let Some(rate) = history.rate(window, |s| s.ends[cause.index()]) else {
            return found;
        };
        if rate > above {
            found.push(Instance {
                key: cause.name().to_owned(),
                labels: labels([("cause", cause.name().into())]),
                value: rate,
                description: format!(
                    "{rate:.2} connections per second ended by {} over the last {}",
                    cause.name().replace('_', " "),
                    humantime::format_duration(window)
                ),
            });
        }
    }
    found
}

fn lost_events_rate(history: &History, above: f64, window: Duration) -> Vec<Instance> {
    match history.rate(window, |s| s.lost) {
        Some(rate) if rate > above => vec![Instance {
            key: String::new(),
            labels: BTreeMap::new(),
            value: rate,
            description: format!(
                "the observer lost {rate:.2} events per second over the last {} \
                 (observer_events_lost_total says why; a larger ring buffer or a higher \
                 priority helps)",
                humantime::format_duration(window)
            ),
        }],
        _ => Vec::new(),
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn f(n: u64) -> f64 {
    n as f64
}
