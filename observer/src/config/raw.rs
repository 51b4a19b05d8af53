//! The document as serde reads it: every section and setting optional, unknown keys refused,
//! each value checked by its type. [`RawConfig::into_config`] fills in the defaults and checks
//! what involves several values.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::errors::Located;
use super::rules::{RawRule, read_rules};
use super::values::{Count, Dur, Listen, Mode, Port, RingSize, U32_MAX, Url, ports};
use super::{
    AlertmanagerConfig, AlertsConfig, Config, KernelConfig, MetricsConfig, SocketConfig,
    TrackerConfig, WorkloadsConfig,
};

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    metrics: RawMetrics,
    tracker: RawTracker,
    kernel: RawKernel,
    alerts: RawAlerts,
    socket: RawSocket,
    workloads: RawWorkloads,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkloads {
    kubelet_logs: Option<String>,
    cgroups: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocket {
    path: Option<String>,
    mode: Option<Mode>,
    group: Option<String>,
    client_queue_bytes: Option<Count<1_048_576, U32_MAX>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Listen>,
    ports: Option<Vec<Port>>,
    max_port_labels: Option<Count<1, 1024>>,
    max_workload_labels: Option<Count<1, 1024>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracker {
    max_sockets: Option<Count<1024, U32_MAX>>,
    owner_after: Option<Dur<0>>,
    reconcile_every: Option<Dur<1000>>,
    half_open_after: Option<Dur<0>>,
    listen_every: Option<Dur<1000>>,
    state_file: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    ring_buffer_size: Option<RingSize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    evaluation_interval: Option<Dur<100>>,
    builtin_rules: Option<bool>,
    max_alerts_per_rule: Option<Count<1, U32_MAX>>,
    file: Option<PathBuf>,
    log: Option<bool>,
    alertmanager: Option<RawAlertmanager>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: Url,
    timeout: Option<Dur<1>>,
    resend_every: Option<Dur<1000>>,
    max_attempts: Option<Count<1, U32_MAX>>,
}

impl RawConfig {
    pub(super) fn into_config(self) -> Result<Config, Located> {
        let metrics = MetricsConfig::default();
        let tracker = TrackerConfig::default();
        let kernel = KernelConfig::default();
        let alerts = AlertsConfig::default();
        let socket = SocketConfig::default();
        let (m, t, k, a) = (self.metrics, self.tracker, self.kernel, self.alerts);
        let sock = self.socket;
        let workloads = WorkloadsConfig::default();
        Ok(Config {
            metrics: MetricsConfig {
                listen: m.listen.map_or(metrics.listen, |l| l.0),
                ports: m.ports.map_or(metrics.ports, ports),
                max_port_labels: m
                    .max_port_labels
                    .map_or(metrics.max_port_labels, Count::usize),
                max_workload_labels: m
                    .max_workload_labels
                    .map_or(metrics.max_workload_labels, Count::usize),
            },
            tracker: TrackerConfig {
                max_sockets: t.max_sockets.map_or(tracker.max_sockets, Count::usize),
                owner_after: t.owner_after.map_or(tracker.owner_after, |d| d.0),
                reconcile_every: t.reconcile_every.map_or(tracker.reconcile_every, |d| d.0),
                half_open_after: t.half_open_after.map_or(tracker.half_open_after, |d| d.0),
                listen_every: t.listen_every.map_or(tracker.listen_every, |d| d.0),
                state_file: match t.state_file {
                    None => tracker.state_file,
                    Some(path) if path.is_empty() => None,
                    Some(path) => Some(PathBuf::from(path)),
                },
            },
            socket: SocketConfig {
                path: match sock.path {
                    None => socket.path,
                    Some(path) if path.is_empty() => None,
                    Some(path) => Some(PathBuf::from(path)),
                },
                mode: sock.mode.map_or(socket.mode, |m| m.0),
                group: sock.group.filter(|g| !g.is_empty()).or(socket.group),
                client_queue_bytes: sock
                    .client_queue_bytes
                    .map_or(socket.client_queue_bytes, Count::usize),
            },
            workloads: WorkloadsConfig {
                kubelet_logs: match self.workloads.kubelet_logs {
                    None => workloads.kubelet_logs,
                    Some(path) if path.is_empty() => None,
                    Some(path) => Some(PathBuf::from(path)),
                },
                cgroups: self.workloads.cgroups.unwrap_or(workloads.cgroups),
            },
            kernel: KernelConfig {
                ring_buffer_size: k.ring_buffer_size.map_or(kernel.ring_buffer_size, |s| s.0),
            },
            alerts: AlertsConfig {
                evaluation_interval: a
                    .evaluation_interval
                    .map_or(alerts.evaluation_interval, |d| d.0),
                builtin_rules: a.builtin_rules.unwrap_or(alerts.builtin_rules),
                max_alerts_per_rule: a
                    .max_alerts_per_rule
                    .map_or(alerts.max_alerts_per_rule, Count::usize),
                file: a.file.or(alerts.file),
                log: a.log.unwrap_or(alerts.log),
                alertmanager: a.alertmanager.map(|am| {
                    let defaults = AlertmanagerConfig::with_url(am.url.0);
                    AlertmanagerConfig {
                        timeout: am.timeout.map_or(defaults.timeout, |t| t.0),
                        resend_every: am.resend_every.map_or(defaults.resend_every, |r| r.0),
                        max_attempts: am.max_attempts.map_or(defaults.max_attempts, Count::u32),
                        url: defaults.url,
                    }
                }),
                rules: read_rules(a.rules)?,
            },
        })
    }
}
