//! The configuration file: TOML, every setting optional, unknown keys rejected.
//!
//! Reading goes in two steps. Serde reads the document into private `Raw*` structs (`raw`)
//! whose field types check each value on its own (`values`), so toml knows where a bad value
//! sits. The raw structs then become a [`Config`], checking what involves several values (a
//! rule's kind and its settings, duplicate rule names) with spans kept through
//! [`toml::Spanned`]. Either way an error ends with a byte span, which [`ConfigError`] turns
//! into a line, a column and the field's path (`errors`). Alert rules, and the table of rule
//! kinds they are read through, are in `rules`.

mod errors;
mod raw;
mod rules;
mod values;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::DeTable;

pub use self::errors::ConfigError;
use self::errors::Located;
use self::raw::RawConfig;
pub use self::rules::{AlertRule, RuleKind, builtin_rules};
pub use self::values::{EmptySeverity, Severity, parse_mode};
use crate::load::RingBufferSize;
use crate::track::DEFAULT_MAX_SOCKETS;

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/observer/observer.toml";

/// Where the metrics endpoint listens by default: local only, since metrics name hosts and ports.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9977);

/// Ports given a label of their own when none are configured (`metrics.max_port_labels`).
pub const DEFAULT_MAX_PORT_LABELS: usize = 64;

/// Workloads given a label of their own (`metrics.max_workload_labels`).
pub const DEFAULT_MAX_WORKLOAD_LABELS: usize = 64;

/// The whole configuration. [`Config::default`] is what an empty file gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub metrics: MetricsConfig,
    pub tracker: TrackerConfig,
    pub kernel: KernelConfig,
    pub alerts: AlertsConfig,
    pub socket: SocketConfig,
    pub workloads: WorkloadsConfig,
}

/// The kubelet's directory of container log links (the resolver's own default, which this
/// floor cannot import; a test keeps the two equal).
pub const DEFAULT_KUBELET_LOGS: &str = "/var/log/containers";

/// `[workloads]`: where socket owners are named from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadsConfig {
    /// The kubelet's directory of container log links, which names each container's pod,
    /// namespace and container. Default /var/log/containers; `""` reads none.
    pub kubelet_logs: Option<PathBuf>,
    /// Whether the kernel program reads each socket's cgroup, from which its workload is
    /// named. Off, every socket's workload is unknown and the read's cost is saved.
    pub cgroups: bool,
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        Self {
            kubelet_logs: Some(PathBuf::from(DEFAULT_KUBELET_LOGS)),
            cgroups: true,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// Address the HTTP endpoint listens on. Default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// Listening ports that get their own label in per-port metrics. Empty (the default): the
    /// first `max_port_labels` ports seen.
    pub ports: Vec<u16>,
    /// How many ports get their own label; the rest are summed under `port="other"`.
    /// Default 64, from 1 to 1024.
    pub max_port_labels: usize,
    /// How many workloads (units, containers, pods) get their own `workload` label, the first
    /// seen; the rest are summed under `workload="other"`. Default 64, from 1 to 1024.
    pub max_workload_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            ports: Vec::new(),
            max_port_labels: DEFAULT_MAX_PORT_LABELS,
            max_workload_labels: DEFAULT_MAX_WORKLOAD_LABELS,
        }
    }
}

/// `[tracker]`: the per-socket state kept in user space.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Most sockets tracked at once (and, separately, most TIME_WAIT sockets).
    /// Default [`DEFAULT_MAX_SOCKETS`], at least 1024.
    pub max_sockets: usize,
    /// Resolve a CLOSE_WAIT socket's owner through /proc once it is this old. Default 10s.
    pub owner_after: Duration,
    /// How often the table is reconciled with the kernel's socket list. Default 30s, at least 1s.
    pub reconcile_every: Duration,
    /// A connection retransmitting without progress this long is a half-open suspect (the
    /// metric and `observer watch`; alert rules have their own threshold). Default 10s.
    pub half_open_after: Duration,
    /// How often every listening socket's accept queue is sampled. Default 5s, at least 1s.
    pub listen_every: Duration,
    /// Where the daemon keeps what must survive a restart (when each CLOSE_WAIT began, since
    /// when each alert holds). Default [`DEFAULT_STATE_FILE`]; `""` keeps nothing.
    pub state_file: Option<PathBuf>,
}

/// The daemon's restart state, in systemd's StateDirectory.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/observer/state.json";

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            max_sockets: DEFAULT_MAX_SOCKETS,
            owner_after: Duration::from_secs(10),
            reconcile_every: Duration::from_secs(30),
            half_open_after: Duration::from_secs(10),
            listen_every: Duration::from_secs(5),
            state_file: Some(PathBuf::from(DEFAULT_STATE_FILE)),
        }
    }
}

/// Where the daemon serves its live data to `observer watch` and `observer top`.
pub const DEFAULT_SOCKET: &str = "/run/observer/observer.sock";

/// The smallest queue a socket client may have: the event loop appends a whole batch's lines
/// at once (a read of the ring buffer, often hundreds of KiB under load) before the client's
/// writer can send any, so a smaller queue drops clients that do read.
pub const MIN_CLIENT_QUEUE_BYTES: usize = 1 << 20;

/// `[socket]`: the daemon's Unix socket, for local clients only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Default [`DEFAULT_SOCKET`]; `""` serves none. The parent directory is created.
    pub path: Option<PathBuf>,
    /// Permission bits of the socket file: who may connect. Default 0660 (owner and group).
    pub mode: u32,
    /// Group of the socket file (e.g. `observer`): its members may connect. Default: the
    /// daemon's own group.
    pub group: Option<String>,
    /// Bytes of lines queued for one client; a client that falls this far behind is
    /// disconnected and counted. Default 4 MiB, at least [`MIN_CLIENT_QUEUE_BYTES`].
    pub client_queue_bytes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            path: Some(PathBuf::from(DEFAULT_SOCKET)),
            mode: 0o660,
            group: None,
            client_queue_bytes: 4 << 20,
        }
    }
}

/// `[kernel]`: sizes of the eBPF maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelConfig {
    /// Bytes of the event ring buffers, shared equally by one ring per online CPU (each a
    /// power of two, at least 4K): "auto" (the default: enough for the expiry burst of every
    /// timewait socket the host keeps, from 4M to 64M), or a power of two from 4K to 256M,
    /// written as an integer or as a string with a K, M or G suffix ("16M").
    pub ring_buffer_size: RingBufferSize,
}

/// `[alerts]`: rule evaluation and where alerts go.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertsConfig {
    /// How often rules are evaluated. Default 5s, at least 100ms.
    pub evaluation_interval: Duration,
    /// Whether the built-in rules ([`builtin_rules`]) run. Default true.
    pub builtin_rules: bool,
    /// Most alert instances one rule may hold (per-socket rules could otherwise grow without
    /// bound); the rest are counted. Default 256.
    pub max_alerts_per_rule: usize,
    /// JSON-lines file that gets one line per alert state change. Default none.
    pub file: Option<PathBuf>,
    /// One log line per alert state change. Default true.
    pub log: bool,
    /// Where firing alerts are sent. Default none.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// The rules from the file (`[[alerts.rules]]`); see [`Config::effective_rules`].
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration::from_secs(5),
            builtin_rules: true,
            max_alerts_per_rule: 256,
            file: None,
            log: true,
            alertmanager: None,
            rules: Vec::new(),
        }
    }
}

/// `[alerts.alertmanager]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, http:// or https:// (the API path is appended). Required.
    pub url: String,
    /// Timeout of one request. Default 10s.
    pub timeout: Duration,
    /// Firing alerts are re-sent this often. Default 1m.
    pub resend_every: Duration,
    /// Tries per batch before it is dropped. Default 5, at least 1.
    pub max_attempts: u32,
}

impl AlertmanagerConfig {
    /// Alertmanager at `url`, every other setting at its default.
    #[must_use]
    pub fn with_url(url: String) -> Self {
        Self {
            url,
            timeout: Duration::from_secs(10),
            resend_every: Duration::from_mins(1),
            max_attempts: 5,
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::unreadable(path, error))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks `text`; `origin` names it in messages (usually the file's path).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let tree = DeTable::parse(text)
            .map_err(|e| ConfigError::invalid(origin, text, None, &Located::toml(&e)))?;
        // The tree is kept to name the field an error points at.
        let error = |at: &Located| ConfigError::invalid(origin, text, Some(tree.get_ref()), at);
        let raw = RawConfig::deserialize(toml::de::Deserializer::from(tree.clone()))
            .map_err(|e| error(&Located::toml(&e)))?;
        raw.into_config().map_err(|e| error(&e))
    }

    /// The rules the daemon evaluates: the built-in rules (when `alerts.builtin_rules` is true),
    /// each replaced by a configured rule of the same name, followed by the configured rules
    /// with new names.
    #[must_use]
    pub fn effective_rules(&self) -> Vec<AlertRule> {
        let configured = &self.alerts.rules;
        let builtin = if self.alerts.builtin_rules {
            builtin_rules()
        } else {
            Vec::new()
        };
        let replaced = builtin.into_iter().map(|rule| {
            configured
                .iter()
                .find(|c| c.name == rule.name)
                .cloned()
                .unwrap_or(rule)
        });
        let mut rules: Vec<AlertRule> = replaced.collect();
        let new: Vec<AlertRule> = configured
            .iter()
            .filter(|c| !rules.iter().any(|r| r.name == c.name))
            .cloned()
            .collect();
        rules.extend(new);
        rules
    }
}

/// Reading whole documents in tests, as the daemon reads its file.
#[cfg(test)]
mod testing {
    use super::Config;

    pub(super) fn parse(text: &str) -> Config {
        Config::parse(text, "observer.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first line of the error: location, field and message.
    pub(super) fn error(text: &str) -> String {
        let error = Config::parse(text, "observer.toml").expect_err("accepted");
        error.to_string().lines().next().unwrap().to_owned()
    }
}

#[cfg(test)]
mod tests;
