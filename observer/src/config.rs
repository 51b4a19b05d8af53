//! The configuration file: TOML, every setting optional, unknown keys rejected.
//!
//! Reading goes in two steps. Serde reads the document into private `Raw*` structs whose field
//! types check each value on its own, so toml knows where a bad value sits. The raw structs then
//! become a [`Config`], checking what involves several values (a rule's kind and its settings,
//! duplicate rule names) with spans kept through [`toml::Spanned`]. Either way an error ends
//! with a byte span, which [`ConfigError`] turns into a line, a column and the field's path.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::load::RingBufferSize;
use crate::track::{DEFAULT_MAX_SOCKETS, EndCause, ResetClass};

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/observer/observer.toml";

/// Where the metrics endpoint listens by default: local only, since metrics name hosts and ports.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9977);

/// The whole configuration. [`Config::default`] is what an empty file gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub metrics: MetricsConfig,
    pub tracker: TrackerConfig,
    pub kernel: KernelConfig,
    pub alerts: AlertsConfig,
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
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            ports: Vec::new(),
            max_port_labels: crate::export::DEFAULT_MAX_PORT_LABELS,
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

/// `[kernel]`: sizes of the eBPF maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelConfig {
    /// Bytes of the event ring buffer: "auto" (the default: enough for the expiry burst of
    /// every timewait socket the host keeps, from 4M to 64M), or a power of two from 4K to
    /// 256M, written as an integer or as a string with a K, M or G suffix ("16M").
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

/// One `[[alerts.rules]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Alertmanager's `alertname`: `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    /// How long the condition must hold before the alert fires (pending until then).
    /// TOML key `for`, default 0s.
    pub for_: Duration,
    /// The `severity` label. Default "warning".
    pub severity: String,
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
        severity: DEFAULT_SEVERITY.to_owned(),
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

const DEFAULT_SEVERITY: &str = "warning";
const DEFAULT_RATE_WINDOW: Duration = Duration::from_mins(1);
const DEFAULT_LOST_EVENTS_WINDOW: Duration = Duration::from_mins(5);

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            hint: read_hint(&error),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks `text`; `origin` names it in messages (usually the file's path).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let tree = DeTable::parse(text)
            .map_err(|e| invalid(origin, text, None, e.span(), e.message(), false))?;
        // The tree is kept to name the field an error points at.
        let error = |span, message: &str, at_key| {
            invalid(origin, text, Some(tree.get_ref()), span, message, at_key)
        };
        let raw = RawConfig::deserialize(toml::de::Deserializer::from(tree.clone()))
            .map_err(|e| error(e.span(), e.message(), false))?;
        raw.into_config()
            .map_err(|e| error(Some(e.span), &e.message, e.at_key))
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

/// Why the configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {error}; {hint}", path.display())]
    Read {
        path: PathBuf,
        error: io::Error,
        hint: &'static str,
    },
    /// The text is not TOML, or not a valid configuration. `line` and `column` count from 1
    /// (the column in characters); `field` is the path of the offending key, such as
    /// `alerts.rules[1].older_than`, empty when there is none (a TOML syntax error); `snippet`
    /// shows the line with the spot underlined.
    #[error("{origin}:{line}:{column}: {}{message}\n{snippet}", field_prefix(.field))]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
        snippet: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => {
            "create it (deploy/observer.toml is a commented example) or pass --config with the file to use"
        }
        io::ErrorKind::PermissionDenied => "make it readable by the user observer runs as",
        io::ErrorKind::InvalidData => "save it as UTF-8 text",
        io::ErrorKind::IsADirectory => "pass the path of the file itself",
        _ => "check the path, or pass --config with the file to use",
    }
}

/// Builds the error for `message` at `span`, naming the field from `tree` when there is one.
/// `at_key` moves the location from a value to its key (for keys that should not be there).
fn invalid(
    origin: &str,
    text: &str,
    tree: Option<&DeTable<'_>>,
    span: Option<Range<usize>>,
    message: &str,
    at_key: bool,
) -> ConfigError {
    let mut span = span.unwrap_or(0..0);
    let mut field = String::new();
    if let Some(found) = tree.and_then(|tree| locate(tree, span.start)) {
        if at_key && let Some(key) = found.key {
            span = key;
        }
        field = found.path;
    }
    let (line, column) = line_column(text, span.start);
    ConfigError::Invalid {
        origin: origin.to_owned(),
        line,
        column,
        field,
        message: message.to_owned(),
        snippet: snippet(text, &span, line, column),
    }
}

/// The path of the deepest key or array element whose text contains `at`.
struct Found {
    path: String,
    key: Option<Range<usize>>,
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn locate(root: &DeTable<'_>, at: usize) -> Option<Found> {
    let mut best: Option<(usize, Found)> = None;
    walk_table(root, at, &mut Vec::new(), &mut best);
    best.map(|(_, found)| found)
}

fn walk_table<'a>(
    table: &'a DeTable<'_>,
    at: usize,
    path: &mut Vec<Segment<'a>>,
    best: &mut Option<(usize, Found)>,
) {
    for (key, value) in table {
        path.push(Segment::Key(key.get_ref()));
        if covers(&key.span(), at) || covers(&value.span(), at) {
            offer(path, Some(key.span()), best);
        }
        walk_value(value, at, path, best);
        path.pop();
    }
}

fn walk_value<'a>(
    value: &'a Spanned<DeValue<'_>>,
    at: usize,
    path: &mut Vec<Segment<'a>>,
    best: &mut Option<(usize, Found)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, at, path, best),
        DeValue::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                path.push(Segment::Index(i));
                if covers(&element.span(), at) {
                    offer(path, None, best);
                }
                walk_value(element, at, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

// Table spans cover only their header, so containment alone cannot prune the walk; the
// deepest match is the most specific one.
fn offer(path: &[Segment<'_>], key: Option<Range<usize>>, best: &mut Option<(usize, Found)>) {
    if best.as_ref().is_some_and(|(depth, _)| *depth >= path.len()) {
        return;
    }
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    text.push_str(key);
                } else {
                    let _ = write!(text, "{key:?}");
                }
            }
            Segment::Index(i) => {
                let _ = write!(text, "[{i}]");
            }
        }
    }
    *best = Some((path.len(), Found { path: text, key }));
}

fn covers(span: &Range<usize>, at: usize) -> bool {
    span.contains(&at) || (span.is_empty() && span.start == at)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The line holding `span`, with the span underlined, in the style of compiler messages.
fn snippet(text: &str, span: &Range<usize>, line: usize, column: usize) -> String {
    let content = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim_end_matches('\r');
    let rest = content.chars().count().saturating_sub(column - 1);
    let spanned = text
        .get(span.clone())
        .map_or(1, |s| s.chars().take_while(|&c| c != '\n').count());
    let width = spanned.min(rest).max(1);
    let gutter = " ".repeat(line.to_string().len());
    format!(
        "{gutter} |\n{line} | {content}\n{gutter} | {}{}",
        " ".repeat(column - 1),
        "^".repeat(width)
    )
}

/// An error found after deserializing, at a span the raw structs kept.
struct Located {
    span: Range<usize>,
    message: String,
    at_key: bool,
}

impl Located {
    fn new(span: Range<usize>, message: String) -> Self {
        Self {
            span,
            message,
            at_key: false,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    metrics: RawMetrics,
    tracker: RawTracker,
    kernel: RawKernel,
    alerts: RawAlerts,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Listen>,
    ports: Option<Vec<Count<1, 65535>>>,
    max_port_labels: Option<Count<1, 1024>>,
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
    fn into_config(self) -> Result<Config, Located> {
        let metrics = MetricsConfig::default();
        let tracker = TrackerConfig::default();
        let kernel = KernelConfig::default();
        let alerts = AlertsConfig::default();
        let (m, t, k, a) = (self.metrics, self.tracker, self.kernel, self.alerts);
        Ok(Config {
            metrics: MetricsConfig {
                listen: m.listen.map_or(metrics.listen, |l| l.0),
                ports: m.ports.map_or(metrics.ports, ports),
                max_port_labels: m
                    .max_port_labels
                    .map_or(metrics.max_port_labels, Count::usize),
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
                rules: rules(a.rules)?,
            },
        })
    }
}

fn ports(ports: Vec<Count<1, 65535>>) -> Vec<u16> {
    ports.into_iter().map(Count::u16).collect()
}

fn rules(raw: Vec<Spanned<RawRule>>) -> Result<Vec<AlertRule>, Located> {
    let mut rules: Vec<AlertRule> = Vec::with_capacity(raw.len());
    for raw in raw {
        let name_span = raw.get_ref().name.span();
        let rule = into_rule(raw)?;
        if let Some(first) = rules.iter().position(|r| r.name == rule.name) {
            return Err(Located::new(
                name_span,
                format!(
                    "duplicate rule name {:?}, already used by alerts.rules[{first}]: give each \
                     rule its own name (a rule named like a built-in one replaces it)",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// A rule as written: every kind's settings, checked against the kind afterwards (the table's
/// keys come in no useful order, so the kind may be read last).
struct RawRule {
    name: Spanned<RuleName>,
    kind: Spanned<Kind>,
    for_: Option<Dur<0>>,
    severity: Option<Severity>,
    labels: Option<BTreeMap<LabelName, String>>,
    summary: Option<String>,
    older_than: Option<Spanned<Dur<0>>>,
    above_count: Option<Spanned<Count<0, { u64::MAX }>>>,
    above_bucket_fraction: Option<Spanned<Fraction>>,
    above_port_range_fraction: Option<Spanned<Fraction>>,
    above_per_second: Option<Spanned<Rate>>,
    classes: Option<Spanned<Vec<Class>>>,
    window: Option<Spanned<Dur<1000>>>,
    ports: Option<Spanned<Vec<Count<1, 65535>>>>,
    above_fraction: Option<Spanned<Fraction>>,
    causes: Option<Spanned<Vec<Cause>>>,
    /// Every key besides the common ones, with its value's span: the kind decides which belong.
    specific: Vec<(String, Range<usize>)>,
}

const COMMON_RULE_FIELDS: [&str; 6] = ["name", "kind", "for", "severity", "labels", "summary"];

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RuleVisitor)
    }
}

struct RuleVisitor;

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = RawRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rule table, such as { name = \"TcpCloseWaitStuck\", kind = \"close_wait_age\", older_than = \"5m\" }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRule, A::Error> {
        fn take<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            key: String,
            specific: &mut Vec<(String, Range<usize>)>,
        ) -> Result<Option<Spanned<T>>, A::Error> {
            let value: Spanned<T> = map.next_value()?;
            specific.push((key, value.span()));
            Ok(Some(value))
        }

        let (mut name, mut kind, mut for_, mut severity, mut labels, mut summary) =
            (None, None, None, None, None, None);
        let mut specific = Vec::new();
        let (mut older_than, mut above_count, mut above_bucket_fraction) = (None, None, None);
        let (mut above_port_range_fraction, mut above_per_second) = (None, None);
        let (mut classes, mut window, mut ports) = (None, None, None);
        let (mut above_fraction, mut causes) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value()?),
                "kind" => kind = Some(map.next_value()?),
                "for" => for_ = Some(map.next_value()?),
                "severity" => severity = Some(map.next_value()?),
                "labels" => labels = Some(map.next_value()?),
                "summary" => summary = Some(map.next_value()?),
                "older_than" => older_than = take(&mut map, key, &mut specific)?,
                "above_count" => above_count = take(&mut map, key, &mut specific)?,
                "above_bucket_fraction" => {
                    above_bucket_fraction = take(&mut map, key, &mut specific)?;
                }
                "above_port_range_fraction" => {
                    above_port_range_fraction = take(&mut map, key, &mut specific)?;
                }
                "above_per_second" => above_per_second = take(&mut map, key, &mut specific)?,
                "classes" => classes = take(&mut map, key, &mut specific)?,
                "window" => window = take(&mut map, key, &mut specific)?,
                "ports" => ports = take(&mut map, key, &mut specific)?,
                "above_fraction" => above_fraction = take(&mut map, key, &mut specific)?,
                "causes" => causes = take(&mut map, key, &mut specific)?,
                _ => {
                    take::<A, IgnoredAny>(&mut map, key, &mut specific)?;
                }
            }
        }
        let name = name.ok_or_else(|| {
            de::Error::custom(
                "missing field `name`: add one, such as name = \"TcpCloseWaitStuck\" \
                 (it becomes the alertname label)",
            )
        })?;
        let kind = kind.ok_or_else(|| {
            de::Error::custom(format!(
                "missing field `kind`: add kind = one of {}",
                Kind::ALL.map(Kind::name).join(", ")
            ))
        })?;
        Ok(RawRule {
            name,
            kind,
            for_,
            severity,
            labels,
            summary,
            older_than,
            above_count,
            above_bucket_fraction,
            above_port_range_fraction,
            above_per_second,
            classes,
            window,
            ports,
            above_fraction,
            causes,
            specific,
        })
    }
}

#[expect(clippy::too_many_lines, reason = "one arm per rule kind reads best")]
fn into_rule(raw: Spanned<RawRule>) -> Result<AlertRule, Located> {
    let rule_span = raw.span();
    let raw = raw.into_inner();
    let kind = *raw.kind.get_ref();
    if let Some(error) = foreign_field(&raw.specific, kind) {
        return Err(error);
    }
    let missing = |field: &str, example: &str| {
        Located::new(
            rule_span.clone(),
            format!(
                "missing field `{field}`, which kind = {:?} needs: add one, such as {field} = {example}",
                kind.name()
            ),
        )
    };
    // The same key serves two kinds that need a rate above 0 and one that takes 0 ("any").
    let above_zero = |rate: Option<Spanned<Rate>>| {
        let rate = rate.ok_or_else(|| missing("above_per_second", "10"))?;
        let value = rate.get_ref().0;
        if value > 0.0 {
            Ok(value)
        } else {
            Err(Located::new(
                rate.span(),
                format!(
                    "invalid rate {value}: kind = {:?} needs a rate above 0, such as 10",
                    kind.name()
                ),
            ))
        }
    };
    let window =
        |window: Option<Spanned<Dur<1000>>>, default| window.map_or(default, |w| w.into_inner().0);
    let rule_kind = match kind {
        Kind::CloseWaitAge => RuleKind::CloseWaitAge {
            older_than: raw
                .older_than
                .ok_or_else(|| missing("older_than", "\"5m\""))?
                .into_inner()
                .0,
        },
        Kind::TimewaitUsage => {
            if raw.above_count.is_none()
                && raw.above_bucket_fraction.is_none()
                && raw.above_port_range_fraction.is_none()
            {
                return Err(Located::new(
                    rule_span,
                    "kind = \"timewait_usage\" needs a threshold: add above_count, \
                     above_bucket_fraction or above_port_range_fraction, such as \
                     above_bucket_fraction = 0.8"
                        .to_owned(),
                ));
            }
            RuleKind::TimewaitUsage {
                above_count: raw.above_count.map(|c| c.into_inner().0),
                above_bucket_fraction: raw.above_bucket_fraction.map(|f| f.into_inner().0),
                above_port_range_fraction: raw.above_port_range_fraction.map(|f| f.into_inner().0),
            }
        }
        Kind::ResetRate => RuleKind::ResetRate {
            above_per_second: above_zero(raw.above_per_second)?,
            classes: raw
                .classes
                .map(|c| c.into_inner().into_iter().map(|c| c.0).collect())
                .unwrap_or_default(),
            window: window(raw.window, DEFAULT_RATE_WINDOW),
        },
        Kind::ClosedBeforeAcceptRate => RuleKind::ClosedBeforeAcceptRate {
            above_per_second: above_zero(raw.above_per_second)?,
            ports: raw.ports.map(|p| ports(p.into_inner())).unwrap_or_default(),
            window: window(raw.window, DEFAULT_RATE_WINDOW),
        },
        Kind::LostEventsRate => RuleKind::LostEventsRate {
            above_per_second: raw.above_per_second.map_or(0.0, |r| r.into_inner().0),
            window: window(raw.window, DEFAULT_LOST_EVENTS_WINDOW),
        },
        Kind::HalfOpenAge => RuleKind::HalfOpenAge {
            older_than: raw
                .older_than
                .ok_or_else(|| missing("older_than", "\"30s\""))?
                .into_inner()
                .0,
        },
        Kind::AcceptQueueUsage => RuleKind::AcceptQueueUsage {
            above_fraction: raw
                .above_fraction
                .ok_or_else(|| missing("above_fraction", "0.9"))?
                .into_inner()
                .0,
            ports: raw.ports.map(|p| ports(p.into_inner())).unwrap_or_default(),
        },
        Kind::TimeoutRate => RuleKind::TimeoutRate {
            above_per_second: above_zero(raw.above_per_second)?,
            causes: raw
                .causes
                .map(|c| c.into_inner().into_iter().map(|c| c.0).collect())
                .unwrap_or_default(),
            window: window(raw.window, DEFAULT_RATE_WINDOW),
        },
    };
    Ok(AlertRule {
        name: raw.name.into_inner().0,
        for_: raw.for_.map_or(Duration::ZERO, |d| d.0),
        severity: raw
            .severity
            .map_or_else(|| DEFAULT_SEVERITY.to_owned(), |s| s.0),
        labels: raw
            .labels
            .map(|labels| labels.into_iter().map(|(k, v)| (k.0, v)).collect())
            .unwrap_or_default(),
        summary: raw.summary,
        kind: rule_kind,
    })
}

/// The first key that the rule's kind does not take, as an error at that key.
fn foreign_field(specific: &[(String, Range<usize>)], kind: Kind) -> Option<Located> {
    let allowed = kind.fields();
    let (key, span) = specific
        .iter()
        .find(|(key, _)| !allowed.contains(&key.as_str()))?;
    let expected: Vec<&str> = COMMON_RULE_FIELDS.iter().chain(allowed).copied().collect();
    Some(Located {
        span: span.clone(),
        message: format!(
            "unknown field `{key}` for kind = {:?}, expected one of {}",
            kind.name(),
            expected.join(", ")
        ),
        at_key: true,
    })
}

/// The `kind` key of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    CloseWaitAge,
    TimewaitUsage,
    ResetRate,
    ClosedBeforeAcceptRate,
    LostEventsRate,
    HalfOpenAge,
    AcceptQueueUsage,
    TimeoutRate,
}

impl Kind {
    const ALL: [Self; 8] = [
        Self::CloseWaitAge,
        Self::TimewaitUsage,
        Self::ResetRate,
        Self::ClosedBeforeAcceptRate,
        Self::LostEventsRate,
        Self::HalfOpenAge,
        Self::AcceptQueueUsage,
        Self::TimeoutRate,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::CloseWaitAge => "close_wait_age",
            Self::TimewaitUsage => "timewait_usage",
            Self::ResetRate => "reset_rate",
            Self::ClosedBeforeAcceptRate => "closed_before_accept_rate",
            Self::LostEventsRate => "lost_events_rate",
            Self::HalfOpenAge => "half_open_age",
            Self::AcceptQueueUsage => "accept_queue_usage",
            Self::TimeoutRate => "timeout_rate",
        }
    }

    /// The keys this kind takes besides [`COMMON_RULE_FIELDS`].
    const fn fields(self) -> &'static [&'static str] {
        match self {
            Self::CloseWaitAge | Self::HalfOpenAge => &["older_than"],
            Self::TimewaitUsage => &[
                "above_count",
                "above_bucket_fraction",
                "above_port_range_fraction",
            ],
            Self::ResetRate => &["above_per_second", "classes", "window"],
            Self::ClosedBeforeAcceptRate => &["above_per_second", "ports", "window"],
            Self::LostEventsRate => &["above_per_second", "window"],
            Self::AcceptQueueUsage => &["above_fraction", "ports"],
            Self::TimeoutRate => &["above_per_second", "causes", "window"],
        }
    }
}

// The checking newtypes below validate inside their visitors: toml attaches the span of the
// value being visited to an error raised there, down to one element of an array.

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a rule kind, such as \"close_wait_age\"",
            |text| one_of(text, "kind", &Kind::ALL, Kind::name),
        )
    }
}

/// The member of a closed set that `text` names, or an error listing the set.
fn one_of<T: Copy>(
    text: &str,
    what: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|v| name(*v) == text)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|v| name(*v)).collect();
            format!(
                "unknown {what} {text:?}, expected one of {}",
                names.join(", ")
            )
        })
}

/// A reset class by its metric label name.
struct Class(ResetClass);

impl<'de> Deserialize<'de> for Class {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a reset class, such as \"no_socket\"",
            |text| one_of(text, "reset class", &ResetClass::ALL, ResetClass::name).map(Class),
        )
    }
}

/// A connection end cause by its metric label name; only timeouts can be rated.
struct Cause(EndCause);

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a timeout cause, such as \"retransmit_timeout\"",
            |text| one_of(text, "timeout cause", &EndCause::TIMEOUTS, EndCause::name).map(Cause),
        )
    }
}

struct Listen(SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "an address, such as \"127.0.0.1:9977\"",
            |text| {
                text.parse().map(Listen).map_err(|_| {
                    format!(
                        "invalid address {text:?}: expected an IP address and a port, such as \
                     127.0.0.1:9977 or [::]:9977"
                    )
                })
            },
        )
    }
}

struct Url(String);

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a URL, such as \"http://alertmanager:9093\"",
            |text| {
                let host = text
                    .strip_prefix("http://")
                    .or_else(|| text.strip_prefix("https://"))
                    .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
                match host {
                    Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                        Ok(Url(text.to_owned()))
                    }
                    _ => Err(format!(
                        "invalid URL {text:?}: expected http:// or https:// and a host, such as \
                     http://alertmanager:9093"
                    )),
                }
            },
        )
    }
}

struct RuleName(String);

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a rule name, such as \"TcpCloseWaitStuck\"",
            |text| {
                if is_identifier(text) {
                    Ok(RuleName(text.to_owned()))
                } else {
                    Err(format!(
                        "invalid rule name {text:?}: use letters, digits and underscores, not \
                     starting with a digit, such as TcpCloseWaitStuck"
                    ))
                }
            },
        )
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct LabelName(String);

impl<'de> Deserialize<'de> for LabelName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(deserializer, "a label name, such as \"team\"", |text| {
            if !is_identifier(text) {
                Err(format!(
                    "invalid label name {text:?}: use letters, digits and underscores, not \
                     starting with a digit, such as team"
                ))
            } else if text.starts_with("__") {
                Err(format!(
                    "invalid label name {text:?}: names starting with __ are reserved by Prometheus"
                ))
            } else if text == "alertname" || text == "severity" {
                // The engine sets both from the rule itself, which would silently win.
                let field = if text == "alertname" {
                    "name"
                } else {
                    "severity"
                };
                Err(format!(
                    "label {text:?} comes from the rule's `{field}`: set `{field}` instead"
                ))
            } else {
                Ok(LabelName(text.to_owned()))
            }
        })
    }
}

struct Severity(String);

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(deserializer, "a severity, such as \"warning\"", |text| {
            if text.is_empty() {
                Err("empty severity: write one, such as \"warning\" or \"critical\"".to_owned())
            } else {
                Ok(Severity(text.to_owned()))
            }
        })
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn from_str<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    deserializer.deserialize_str(StrVisitor { expecting, parse })
}

struct StrVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

/// Stands for "no upper bound" in [`Count`] while still fitting `u32` and `usize`.
const U32_MAX: u64 = 0xFFFF_FFFF;

/// An integer from `MIN` to `MAX`.
struct Count<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Count<MIN, MAX> {
    fn usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    fn u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    fn u16(self) -> u16 {
        u16::try_from(self.0).unwrap_or(u16::MAX)
    }

    fn bounds() -> String {
        if MAX >= U32_MAX {
            format!("at least {MIN}")
        } else {
            format!("from {MIN} to {MAX}")
        }
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_u64(CountVisitor::<MIN, MAX>)
            .map(Self)
    }
}

struct CountVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Visitor<'_> for CountVisitor<MIN, MAX> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer {}", Count::<MIN, MAX>::bounds())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        if (MIN..=MAX).contains(&value) {
            Ok(value)
        } else if value > MAX && MAX >= U32_MAX {
            Err(E::custom(format!(
                "invalid value {value}: must be at most {MAX}"
            )))
        } else {
            Err(E::custom(format!(
                "invalid value {value}: must be {}",
                Count::<MIN, MAX>::bounds()
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_or_else(
            |_| {
                Err(E::custom(format!(
                    "invalid value {value}: must be {}",
                    Count::<MIN, MAX>::bounds()
                )))
            },
            |value| self.visit_u64(value),
        )
    }
}

/// A fraction in (0, 1].
struct Fraction(f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = NumberVisitor {
            expecting: "a fraction, such as 0.8",
            check: |value| {
                if value > 0.0 && value <= 1.0 {
                    Ok(value)
                } else {
                    Err(format!(
                        "invalid fraction {value}: must be above 0 and at most 1, such as 0.8"
                    ))
                }
            },
        };
        deserializer.deserialize_f64(visitor).map(Self)
    }
}

/// Events per second: finite, 0 or more.
struct Rate(f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = NumberVisitor {
            expecting: "a rate per second, such as 10",
            check: |value| {
                if value.is_finite() && value >= 0.0 {
                    Ok(value)
                } else {
                    Err(format!(
                        "invalid rate {value}: must be a number of events per second, 0 or \
                         more, such as 10"
                    ))
                }
            },
        };
        deserializer.deserialize_f64(visitor).map(Self)
    }
}

/// A number, integer or float, checked by `check`.
struct NumberVisitor {
    expecting: &'static str,
    check: fn(f64) -> Result<f64, String>,
}

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        (self.check)(value).map_err(E::custom)
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "thresholds beyond 2^53 need no exactness"
    )]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        self.visit_f64(value as f64)
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "thresholds beyond 2^53 need no exactness"
    )]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        self.visit_f64(value as f64)
    }
}

/// A duration written with units ("30s", "5m", "1h 30m"), at least `MIN_MS` milliseconds.
struct Dur<const MIN_MS: u64>(Duration);

impl<'de, const MIN_MS: u64> Deserialize<'de> for Dur<MIN_MS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurVisitor::<MIN_MS>).map(Self)
    }
}

struct DurVisitor<const MIN_MS: u64>;

impl<const MIN_MS: u64> Visitor<'_> for DurVisitor<MIN_MS> {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration, such as \"30s\", \"5m\" or \"1h\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let duration = humantime::parse_duration(text).map_err(|_| {
            E::custom(format!(
                "invalid duration {text:?}: expected a number with a unit such as 30s, 5m, 1h"
            ))
        })?;
        let min = Duration::from_millis(MIN_MS);
        if duration < min {
            return Err(E::custom(format!(
                "invalid duration {text:?}: must be at least {}",
                humantime::format_duration(min)
            )));
        }
        Ok(duration)
    }

    // A bare number is the likeliest mistake; say how to fix it rather than "invalid type".
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {value}: add a unit and quotes, such as \"{value}s\""
        )))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {value}: add a unit and quotes, such as \"{value}s\""
        )))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {value}: add a unit and quotes, such as \"{value}s\""
        )))
    }
}

/// The ring buffer's size: "auto", bytes, or a string with a K, M or G suffix (powers of
/// 1024); checked by [`RingBufferSize`].
struct RingSize(RingBufferSize);

impl<'de> Deserialize<'de> for RingSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RingSizeVisitor).map(Self)
    }
}

struct RingSizeVisitor;

impl Visitor<'_> for RingSizeVisitor {
    type Value = RingBufferSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"auto\" or a size, such as \"16M\", \"256K\" or 4194304")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<RingBufferSize, E> {
        RingBufferSize::bytes(value).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<RingBufferSize, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::custom(format!(
                "invalid size {value}: must be a power of two from 4K to 256M, such as \"16M\" \
                 (or \"auto\")"
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<RingBufferSize, E> {
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/observer.toml");

    fn parse(text: &str) -> Config {
        Config::parse(text, "observer.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first line of the error: location, field and message.
    fn error(text: &str) -> String {
        let error = Config::parse(text, "observer.toml").expect_err("accepted");
        error.to_string().lines().next().unwrap().to_owned()
    }

    #[test]
    fn empty_file_is_default() {
        assert_eq!(parse(""), Config::default());
        assert_eq!(parse("# nothing\n\n"), Config::default());
        assert_eq!(Config::default().effective_rules(), builtin_rules());
    }

    #[test]
    fn example_file_is_default() {
        assert_eq!(parse(EXAMPLE), Config::default());
    }

    #[test]
    fn example_file_examples_are_valid() {
        // "#" directly before a key or table marks an example to uncomment; prose has "# ".
        let mut uncommented = String::new();
        for line in EXAMPLE.lines() {
            let line = match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => {
                    rest
                }
                _ => line,
            };
            uncommented.push_str(line);
            uncommented.push('\n');
        }
        let config = parse(&uncommented);
        assert_eq!(
            config.alerts.file.as_deref(),
            Some(Path::new("/var/log/observer/alerts.jsonl"))
        );
        assert_eq!(
            config.alerts.alertmanager,
            Some(AlertmanagerConfig {
                url: "http://127.0.0.1:9093".to_owned(),
                timeout: Duration::from_secs(10),
                resend_every: Duration::from_mins(1),
                max_attempts: 5,
            })
        );
        // The built-in rules as the example writes them out are the built-in rules.
        let rules = config.effective_rules();
        assert_eq!(rules[..9], builtin_rules()[..]);
        assert_eq!(rules[..9], config.alerts.rules[..9]);
        assert_eq!(rules.len(), 10);
        assert_eq!(rules[9].name, "AppAbortiveCloses");
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "one example of every option")]
    fn every_option_set() {
        let text = r#"
[metrics]
listen = "[::]:9100"
ports = [80, 443]
max_port_labels = 16

[tracker]
max_sockets = 4096
owner_after = "2s"
reconcile_every = "1m 30s"
half_open_after = "20s"
listen_every = "2s"
state_file = ""

[kernel]
ring_buffer_size = "256K"

[alerts]
evaluation_interval = "500ms"
builtin_rules = false
max_alerts_per_rule = 10
file = "/tmp/alerts.jsonl"
log = false

[alerts.alertmanager]
url = "https://am.example:9093/"
timeout = "3s"
resend_every = "2m"
max_attempts = 2

[[alerts.rules]]
name = "CloseWait"
kind = "close_wait_age"
older_than = "10m"
for = "1m"
severity = "critical"
labels = { team = "db", tier = "backend" }
summary = "A socket is stuck"

[[alerts.rules]]
name = "TimeWait"
kind = "timewait_usage"
above_count = 10000
above_bucket_fraction = 0.5
above_port_range_fraction = 1

[[alerts.rules]]
name = "Resets"
kind = "reset_rate"
above_per_second = 2.5
classes = ["no_socket", "peer_abort"]
window = "30s"

[[alerts.rules]]
name = "Backlog"
kind = "closed_before_accept_rate"
above_per_second = 3
ports = [8080]
window = "2m"

[[alerts.rules]]
name = "Lost"
kind = "lost_events_rate"
above_per_second = 0.5
window = "1m"

[[alerts.rules]]
name = "HalfOpen"
kind = "half_open_age"
older_than = "1m"

[[alerts.rules]]
name = "Queue"
kind = "accept_queue_usage"
above_fraction = 0.75
ports = [443]

[[alerts.rules]]
name = "Timeouts"
kind = "timeout_rate"
above_per_second = 0.2
causes = ["keepalive_timeout", "retransmit_timeout"]
window = "5m"
"#;
        let expected = Config {
            metrics: MetricsConfig {
                listen: "[::]:9100".parse().unwrap(),
                ports: vec![80, 443],
                max_port_labels: 16,
            },
            tracker: TrackerConfig {
                max_sockets: 4096,
                owner_after: Duration::from_secs(2),
                reconcile_every: Duration::from_secs(90),
                half_open_after: Duration::from_secs(20),
                listen_every: Duration::from_secs(2),
                state_file: None,
            },
            kernel: KernelConfig {
                ring_buffer_size: RingBufferSize::Bytes(256 << 10),
            },
            alerts: AlertsConfig {
                evaluation_interval: Duration::from_millis(500),
                builtin_rules: false,
                max_alerts_per_rule: 10,
                file: Some(PathBuf::from("/tmp/alerts.jsonl")),
                log: false,
                alertmanager: Some(AlertmanagerConfig {
                    url: "https://am.example:9093/".to_owned(),
                    timeout: Duration::from_secs(3),
                    resend_every: Duration::from_mins(2),
                    max_attempts: 2,
                }),
                rules: full_file_rules(),
            },
        };
        let config = parse(text);
        assert_eq!(config, expected);
        // Without the built-in rules, the file's rules are all there is.
        assert_eq!(config.effective_rules(), expected.alerts.rules);
    }

    fn full_file_rules() -> Vec<AlertRule> {
        let rule = |name: &str, kind| AlertRule {
            name: name.to_owned(),
            for_: Duration::ZERO,
            severity: "warning".to_owned(),
            labels: BTreeMap::new(),
            summary: None,
            kind,
        };
        vec![
            AlertRule {
                for_: Duration::from_mins(1),
                severity: "critical".to_owned(),
                labels: BTreeMap::from([
                    ("team".to_owned(), "db".to_owned()),
                    ("tier".to_owned(), "backend".to_owned()),
                ]),
                summary: Some("A socket is stuck".to_owned()),
                ..rule(
                    "CloseWait",
                    RuleKind::CloseWaitAge {
                        older_than: Duration::from_mins(10),
                    },
                )
            },
            rule(
                "TimeWait",
                RuleKind::TimewaitUsage {
                    above_count: Some(10000),
                    above_bucket_fraction: Some(0.5),
                    above_port_range_fraction: Some(1.0),
                },
            ),
            rule(
                "Resets",
                RuleKind::ResetRate {
                    above_per_second: 2.5,
                    classes: vec![ResetClass::NoSocket, ResetClass::PeerAbort],
                    window: Duration::from_secs(30),
                },
            ),
            rule(
                "Backlog",
                RuleKind::ClosedBeforeAcceptRate {
                    above_per_second: 3.0,
                    ports: vec![8080],
                    window: Duration::from_mins(2),
                },
            ),
            rule(
                "Lost",
                RuleKind::LostEventsRate {
                    above_per_second: 0.5,
                    window: Duration::from_mins(1),
                },
            ),
            rule(
                "HalfOpen",
                RuleKind::HalfOpenAge {
                    older_than: Duration::from_mins(1),
                },
            ),
            rule(
                "Queue",
                RuleKind::AcceptQueueUsage {
                    above_fraction: 0.75,
                    ports: vec![443],
                },
            ),
            rule(
                "Timeouts",
                RuleKind::TimeoutRate {
                    above_per_second: 0.2,
                    causes: vec![EndCause::KeepaliveTimeout, EndCause::RetransmitTimeout],
                    window: Duration::from_mins(5),
                },
            ),
        ]
    }

    #[test]
    fn new_rule_kinds_refuse_what_they_cannot_use() {
        assert_eq!(
            error("[[alerts.rules]]\nname = \"Q\"\nkind = \"accept_queue_usage\"\n"),
            "observer.toml:1:1: alerts.rules[0]: missing field `above_fraction`, which kind = \
             \"accept_queue_usage\" needs: add one, such as above_fraction = 0.9"
        );
        assert_eq!(
            error(
                "[[alerts.rules]]\nname = \"T\"\nkind = \"timeout_rate\"\n\
                 above_per_second = 1\ncauses = [\"refused\"]\n"
            ),
            "observer.toml:5:11: alerts.rules[0].causes[0]: unknown timeout cause \"refused\", \
             expected one of retransmit_timeout, keepalive_timeout, zero_window_timeout, \
             connect_timeout, timeout"
        );
        assert_eq!(
            error(
                "[[alerts.rules]]\nname = \"H\"\nkind = \"half_open_age\"\n\
                 older_than = \"1m\"\nwindow = \"1m\"\n"
            ),
            "observer.toml:5:1: alerts.rules[0].window: unknown field `window` for kind = \
             \"half_open_age\", expected one of name, kind, for, severity, labels, summary, \
             older_than"
        );
    }

    #[test]
    fn sizes_and_defaults_of_kinds() {
        let config = parse(
            "[kernel]\nring_buffer_size = 1048576\n\
             [[alerts.rules]]\nname = \"R\"\nkind = \"reset_rate\"\nabove_per_second = 1\n\
             [[alerts.rules]]\nname = \"L\"\nkind = \"lost_events_rate\"\n",
        );
        assert_eq!(
            config.kernel.ring_buffer_size,
            RingBufferSize::Bytes(1 << 20)
        );
        assert_eq!(
            parse("kernel.ring_buffer_size = \"1MiB\"")
                .kernel
                .ring_buffer_size,
            RingBufferSize::Bytes(1 << 20)
        );
        assert_eq!(
            parse("kernel.ring_buffer_size = \"auto\"")
                .kernel
                .ring_buffer_size,
            RingBufferSize::Auto
        );
        assert_eq!(
            config.alerts.rules[0].kind,
            RuleKind::ResetRate {
                above_per_second: 1.0,
                classes: Vec::new(),
                window: Duration::from_mins(1),
            }
        );
        assert_eq!(
            config.alerts.rules[1].kind,
            RuleKind::LostEventsRate {
                above_per_second: 0.0,
                window: Duration::from_mins(5),
            }
        );
    }

    #[test]
    fn configured_rules_replace_builtin_ones_by_name() {
        let config = parse(
            r#"
[[alerts.rules]]
name = "Mine"
kind = "close_wait_age"
older_than = "1h"
severity = "critical"

[[alerts.rules]]
name = "TcpResetRateHigh"
kind = "reset_rate"
above_per_second = 200
classes = ["no_socket"]
for = "30s"
"#,
        );
        let rules = config.effective_rules();
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "TcpCloseWaitStuck",
                "TcpTimeWaitNearBucketLimit",
                "TcpTimeWaitPortExhaustion",
                "TcpResetRateHigh",
                "TcpClosedBeforeAccept",
                "TcpHalfOpenSuspected",
                "TcpAcceptQueueFull",
                "TcpTimeoutRateHigh",
                "ObserverLostEvents",
                "Mine",
            ]
        );
        let builtin = builtin_rules();
        assert_eq!(rules[..3], builtin[..3]);
        assert_eq!(rules[4..9], builtin[4..9]);
        assert_eq!(rules[3], config.alerts.rules[1]);
        assert_eq!(
            rules[3].kind,
            RuleKind::ResetRate {
                above_per_second: 200.0,
                classes: vec![ResetClass::NoSocket],
                window: Duration::from_mins(1),
            }
        );
        assert_eq!(rules[3].for_, Duration::from_secs(30));
        assert_eq!(rules[9], config.alerts.rules[0]);
        assert_eq!(rules[9].severity, "critical");
    }

    #[test]
    fn unknown_top_level_field() {
        assert_eq!(
            error("[metrics]\nlisten = \"127.0.0.1:1\"\n\n[trakcer]\nmax_sockets = 2048\n"),
            "observer.toml:4:2: trakcer: unknown field `trakcer`, expected one of `metrics`, \
             `tracker`, `kernel`, `alerts`"
        );
        assert_eq!(
            error("[metrics]\nlisten = \"127.0.0.1:1\"\nport = [80]\n"),
            "observer.toml:3:1: metrics.port: unknown field `port`, expected one of `listen`, \
             `ports`, `max_port_labels`"
        );
    }

    #[test]
    fn unknown_field_in_rule() {
        let text = "[[alerts.rules]]\nname = \"Stuck\"\nkind = \"close_wait_age\"\n\
                    older_than = \"5m\"\nwindow = \"1m\"\n";
        assert_eq!(
            error(text),
            "observer.toml:5:1: alerts.rules[0].window: unknown field `window` for kind = \
             \"close_wait_age\", expected one of name, kind, for, severity, labels, summary, \
             older_than"
        );
        let text = "[[alerts.rules]]\nname = \"R\"\nkind = \"reset_rate\"\nabove_per_second = 1\n\
                    clases = [\"no_socket\"]\n";
        assert_eq!(
            error(text),
            "observer.toml:5:1: alerts.rules[0].clases: unknown field `clases` for kind = \
             \"reset_rate\", expected one of name, kind, for, severity, labels, summary, \
             above_per_second, classes, window"
        );
    }

    #[test]
    fn bad_duration() {
        let text = r#"[alerts]
evaluation_interval = "10s"

[[alerts.rules]]
name = "A"
kind = "close_wait_age"
older_than = "1m"

[[alerts.rules]]
name = "B"
kind = "close_wait_age"
older_than = "5x"
"#;
        assert_eq!(
            error(text),
            "observer.toml:12:14: alerts.rules[1].older_than: invalid duration \"5x\": expected \
             a number with a unit such as 30s, 5m, 1h"
        );
        assert_eq!(
            error("[tracker]\nreconcile_every = 30\n"),
            "observer.toml:2:19: tracker.reconcile_every: invalid duration 30: add a unit and \
             quotes, such as \"30s\""
        );
        assert_eq!(
            error("[alerts]\nevaluation_interval = \"10ms\"\n"),
            "observer.toml:2:23: alerts.evaluation_interval: invalid duration \"10ms\": must be \
             at least 100ms"
        );
    }

    #[test]
    fn fraction_above_one() {
        let text = "[[alerts.rules]]\nname = \"Tw\"\nkind = \"timewait_usage\"\n\
                    above_bucket_fraction = 1.5\n";
        assert_eq!(
            error(text),
            "observer.toml:4:25: alerts.rules[0].above_bucket_fraction: invalid fraction 1.5: \
             must be above 0 and at most 1, such as 0.8"
        );
    }

    #[test]
    fn timewait_usage_needs_a_threshold() {
        let text = "[[alerts.rules]]\nname = \"A\"\nkind = \"lost_events_rate\"\n\n\
                    [[alerts.rules]]\nname = \"Tw\"\nkind = \"timewait_usage\"\nfor = \"1m\"\n";
        assert_eq!(
            error(text),
            "observer.toml:5:1: alerts.rules[1]: kind = \"timewait_usage\" needs a threshold: \
             add above_count, above_bucket_fraction or above_port_range_fraction, such as \
             above_bucket_fraction = 0.8"
        );
    }

    #[test]
    fn missing_rule_fields() {
        assert_eq!(
            error("[[alerts.rules]]\nname = \"A\"\nkind = \"close_wait_age\"\n"),
            "observer.toml:1:1: alerts.rules[0]: missing field `older_than`, which kind = \
             \"close_wait_age\" needs: add one, such as older_than = \"5m\""
        );
        assert_eq!(
            error("[[alerts.rules]]\nname = \"A\"\n"),
            "observer.toml:1:1: alerts.rules[0]: missing field `kind`: add kind = one of \
             close_wait_age, timewait_usage, reset_rate, closed_before_accept_rate, \
             lost_events_rate, half_open_age, accept_queue_usage, timeout_rate"
        );
        assert_eq!(
            error("[[alerts.rules]]\nname = \"A\"\nkind = \"reset_rate\"\nabove_per_second = 0\n"),
            "observer.toml:4:20: alerts.rules[0].above_per_second: invalid rate 0: kind = \
             \"reset_rate\" needs a rate above 0, such as 10"
        );
    }

    #[test]
    fn unknown_kind() {
        assert_eq!(
            error("[[alerts.rules]]\nname = \"A\"\nkind = \"close_wait\"\n"),
            "observer.toml:3:8: alerts.rules[0].kind: unknown kind \"close_wait\", expected one \
             of close_wait_age, timewait_usage, reset_rate, closed_before_accept_rate, \
             lost_events_rate, half_open_age, accept_queue_usage, timeout_rate"
        );
    }

    #[test]
    fn unknown_reset_class() {
        let text = "[[alerts.rules]]\nname = \"R\"\nkind = \"reset_rate\"\nabove_per_second = 1\n\
                    classes = [\"no_socket\", \"rst\"]\n";
        assert_eq!(
            error(text),
            "observer.toml:5:25: alerts.rules[0].classes[1]: unknown reset class \"rst\", \
             expected one of abortive_close, close_with_unread_data, no_socket, \
             fin_wait2_timeout, orphan_pressure, timeout, invalid_segment, refused, \
             peer_abort, other"
        );
    }

    #[test]
    fn ring_buffer_size_not_a_power_of_two() {
        assert_eq!(
            error("[kernel]\nring_buffer_size = \"3M\"\n"),
            "observer.toml:2:20: kernel.ring_buffer_size: invalid size 3M: must be a power \
             of two, such as \"2M\" or \"4M\""
        );
        assert_eq!(
            error("[kernel]\nring_buffer_size = 5000\n"),
            "observer.toml:2:20: kernel.ring_buffer_size: invalid size 5000: must be a power of \
             two, such as \"4K\" or \"8K\""
        );
        assert_eq!(
            error("[kernel]\nring_buffer_size = \"1G\"\n"),
            "observer.toml:2:20: kernel.ring_buffer_size: invalid size 1G: must be a power \
             of two from 4K to 256M, such as \"16M\" (or \"auto\"); each byte is locked kernel \
             memory"
        );
        assert_eq!(
            error("[kernel]\nring_buffer_size = \"4MB\"\n"),
            "observer.toml:2:20: kernel.ring_buffer_size: invalid size \"4MB\": expected \
             \"auto\", bytes, or a number with K, M or G (powers of 1024), such as \"16M\""
        );
    }

    #[test]
    fn out_of_range_integers() {
        assert_eq!(
            error("[tracker]\nmax_sockets = 100\n"),
            "observer.toml:2:15: tracker.max_sockets: invalid value 100: must be at least 1024"
        );
        assert_eq!(
            error("[metrics]\nmax_port_labels = 0\n"),
            "observer.toml:2:19: metrics.max_port_labels: invalid value 0: must be from 1 to \
             1024"
        );
        assert_eq!(
            error("[metrics]\nports = [80, 70000]\n"),
            "observer.toml:2:14: metrics.ports[1]: invalid value 70000: must be from 1 to 65535"
        );
    }

    #[test]
    fn duplicate_rule_names() {
        let text = r#"[[alerts.rules]]
name = "Stuck"
kind = "close_wait_age"
older_than = "5m"

[[alerts.rules]]
name = "Stuck"
kind = "close_wait_age"
older_than = "10m"
"#;
        assert_eq!(
            error(text),
            "observer.toml:7:8: alerts.rules[1].name: duplicate rule name \"Stuck\", already used \
             by alerts.rules[0]: give each rule its own name (a rule named like a built-in one \
             replaces it)"
        );
    }

    #[test]
    fn invalid_names() {
        assert_eq!(
            error("[[alerts.rules]]\nname = \"tcp-stuck\"\nkind = \"close_wait_age\"\n"),
            "observer.toml:2:8: alerts.rules[0].name: invalid rule name \"tcp-stuck\": use \
             letters, digits and underscores, not starting with a digit, such as \
             TcpCloseWaitStuck"
        );
        let text = "[[alerts.rules]]\nname = \"A\"\nkind = \"lost_events_rate\"\n\
                    labels = { team = \"db\", __x = \"y\" }\n";
        assert_eq!(
            error(text),
            "observer.toml:4:25: alerts.rules[0].labels.__x: invalid label name \"__x\": names \
             starting with __ are reserved by Prometheus"
        );
        let text = "[[alerts.rules]]\nname = \"A\"\nkind = \"lost_events_rate\"\n\
                    labels.severity = \"page\"\n";
        assert_eq!(
            error(text),
            "observer.toml:4:8: alerts.rules[0].labels.severity: label \"severity\" comes from \
             the rule's `severity`: set `severity` instead"
        );
    }

    #[test]
    fn alertmanager_url_needs_http() {
        assert_eq!(
            error("[alerts.alertmanager]\nurl = \"alertmanager:9093\"\n"),
            "observer.toml:2:7: alerts.alertmanager.url: invalid URL \"alertmanager:9093\": \
             expected http:// or https:// and a host, such as http://alertmanager:9093"
        );
        assert_eq!(
            error("[alerts.alertmanager]\ntimeout = \"1s\"\n"),
            "observer.toml:1:1: alerts.alertmanager: missing field `url`"
        );
    }

    #[test]
    fn syntax_error() {
        assert_eq!(
            error("[metrics\nlisten = \"x\"\n"),
            "observer.toml:1:9: unclosed table, expected `]`"
        );
    }

    #[test]
    fn message_shows_the_line() {
        let error = Config::parse("[tracker]\nowner_after = \"5x\"\n", "observer.toml")
            .expect_err("accepted");
        assert_eq!(
            error.to_string(),
            "observer.toml:2:15: tracker.owner_after: invalid duration \"5x\": expected a number \
             with a unit such as 30s, 5m, 1h\n  |\n2 | owner_after = \"5x\"\n  |               ^^^^"
        );
    }

    #[test]
    fn unreadable_file() {
        let error = Config::load(Path::new("/nonexistent/observer.toml")).expect_err("read");
        assert_eq!(
            error.to_string(),
            "cannot read /nonexistent/observer.toml: No such file or directory (os error 2); \
             create it (deploy/observer.toml is a commented example) or pass --config with the \
             file to use"
        );
    }
}
