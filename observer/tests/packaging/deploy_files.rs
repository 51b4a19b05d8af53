//! The files under deploy/: the Prometheus rules and example configuration pass promtool
//! (checks and the rules' unit tests), the rules are the daemon's own, and every query of the
//! rules and of the Grafana dashboard uses only the metrics and labels the daemon exports.
//!
//! promtool comes with Debian's `prometheus` package. Without it the promtool tests are
//! skipped loudly, except under CI=true, where that is a failure.

use observer_testkit::{promql, skip::skip};
use std::{
    collections::BTreeSet,
    io::ErrorKind,
    process::{Command, Output},
};

use serde_json::Value;

/// The metrics the daemon exports, with their labels (Prometheus adds `job` and `instance`).
/// The histogram is listed by the series it is queried through.
const METRICS: &[(&str, &[&str])] = &[
    ("observer_build_info", &["version", "kernel"]),
    ("observer_tcp_transitions_total", &["from", "to"]),
    ("observer_tcp_sockets", &["state"]),
    (
        "observer_tcp_state_duration_seconds_bucket",
        &["state", "le"],
    ),
    ("observer_tcp_state_duration_seconds_sum", &["state"]),
    ("observer_tcp_state_duration_seconds_count", &["state"]),
    ("observer_tcp_resets_total", &["direction", "class"]),
    ("observer_tcp_closed_before_accept_total", &["port", "how"]),
    ("observer_tcp_timewait_ended_total", &["cause"]),
    ("observer_tcp_close_wait_oldest_seconds", &[]),
    ("observer_tcp_close_wait_sockets_by_workload", &["workload"]),
    (
        "observer_tcp_close_wait_oldest_by_workload_seconds",
        &["workload"],
    ),
    ("observer_tcp_timewait_bucket_usage_ratio", &[]),
    ("observer_tcp_timewait_port_usage_ratio", &[]),
    ("observer_tcp_retransmits_total", &[]),
    ("observer_tcp_synack_retransmits_total", &["port"]),
    ("observer_tcp_retransmit_streaks_total", &["outcome"]),
    ("observer_tcp_half_open_suspects", &[]),
    ("observer_tcp_half_open_oldest_seconds", &[]),
    ("observer_tcp_connection_errors_total", &["cause", "state"]),
    ("observer_tcp_listen_queue_length", &["port"]),
    ("observer_tcp_listen_queue_limit", &["port"]),
    ("observer_tcp_listen_syn_recv", &["port"]),
    ("observer_tcp_listen_queue_usage_ratio", &[]),
    ("observer_tcp_listen_overflows_total", &[]),
    ("observer_tcp_listen_drops_total", &[]),
    ("observer_events_received_total", &[]),
    ("observer_events_lost_total", &["reason"]),
    ("observer_timer_recursion_misses_total", &[]),
    ("observer_tracker_gaps_total", &[]),
    ("observer_tracker_sockets", &["table"]),
    ("observer_tracker_evicted_total", &["table"]),
    ("observer_tracker_seeded_total", &[]),
    ("observer_tracker_stale_total", &[]),
    ("observer_tracker_retransmitting", &[]),
    ("observer_tracker_retransmits_untracked_total", &["table"]),
    ("observer_alerts", &["alertname", "alertstate"]),
    ("observer_alert_notifications_total", &["sink", "result"]),
];

/// Labels every series has once scraped.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The values of the labels that take a fixed set of them.
const LABEL_VALUES: &[(&str, &[&str])] = &[
    (
        "state",
        &[
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
        ],
    ),
    ("direction", &["sent", "received"]),
    (
        "class",
        &[
            "abortive_close",
            "close_with_unread_data",
            "no_socket",
            "fin_wait2_timeout",
            "orphan_pressure",
            "timeout",
            "invalid_segment",
            "refused",
            "peer_abort",
            "other",
        ],
    ),
    ("how", &["peer_closed", "peer_reset"]),
    (
        "cause",
        &[
            // TIME_WAIT ends
            "expired",
            "killed",
            // connection errors
            "retransmit_timeout",
            "keepalive_timeout",
            "zero_window_timeout",
            "connect_timeout",
            "timeout",
            "refused",
            "reset",
            "unreachable",
            "other",
        ],
    ),
    ("outcome", &["began", "recovered"]),
    (
        "reason",
        &[
            "ring_buffer_full",
            "recursion_miss",
            "unreadable",
            "malformed",
        ],
    ),
    (
        "table",
        &["sockets", "timewait", "connections", "synack_ports"],
    ),
    ("alertstate", &["pending", "firing"]),
    ("sink", &["alertmanager", "file"]),
    ("result", &["sent", "failed", "dropped"]),
];

/// The daemon's built-in rules: name, expr, `for`.
const DAEMON_RULES: &[(&str, &str, &str)] = &[
    (
        "TcpCloseWaitStuck",
        "observer_tcp_close_wait_oldest_seconds > 300",
        "0m",
    ),
    (
        "TcpTimeWaitNearBucketLimit",
        "observer_tcp_timewait_bucket_usage_ratio > 0.8",
        "1m",
    ),
    (
        "TcpTimeWaitPortExhaustion",
        "observer_tcp_timewait_port_usage_ratio > 0.5",
        "1m",
    ),
    (
        "TcpResetRateHigh",
        "sum by (instance, direction, class) (rate(observer_tcp_resets_total[1m])) > 50",
        "2m",
    ),
    (
        "TcpClosedBeforeAccept",
        "sum by (instance, port) (rate(observer_tcp_closed_before_accept_total[1m])) > 1",
        "1m",
    ),
    (
        "TcpHalfOpenSuspected",
        "observer_tcp_half_open_oldest_seconds > 30",
        "0m",
    ),
    (
        "TcpAcceptQueueFull",
        "observer_tcp_listen_queue_usage_ratio > 0.9",
        "30s",
    ),
    (
        "TcpTimeoutRateHigh",
        "sum by (instance, cause) (rate(observer_tcp_connection_errors_total{cause=~\".*timeout\"}[1m])) > 1",
        "1m",
    ),
    (
        "ObserverLostEvents",
        "sum by (instance) (increase(observer_events_lost_total[5m])) > 0",
        "0m",
    ),
];

// ---- promtool

/// Runs promtool from the repository's root; `None` when it is not installed (a loud skip,
/// or a failure under CI=true).
fn promtool(test: &str, args: &[&str]) -> Option<Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(promql::repo_file(""))
        .output()
    {
        Ok(output) => Some(output),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            skip(
                test,
                "promtool is not installed (Debian: apt-get install prometheus)",
            );
            None
        }
        Err(e) => panic!("running promtool: {e}"),
    }
}

fn assert_promtool_passes(test: &str, args: &[&str]) {
    let Some(output) = promtool(test, args) else {
        return;
    };
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rules_pass_promtool_check() {
    assert_promtool_passes(
        "rules_pass_promtool_check",
        &["check", "rules", promql::RULES_FILE],
    );
}

#[test]
fn example_config_passes_promtool_check() {
    // Checks the rules file too, found from the configuration's own directory.
    assert_promtool_passes(
        "example_config_passes_promtool_check",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
}

#[test]
fn rules_pass_their_unit_tests() {
    assert_promtool_passes(
        "rules_pass_their_unit_tests",
        &["test", "rules", "deploy/prometheus/observer-rules.test.yml"],
    );
}

// ---- the rules

#[test]
fn rules_are_the_daemons_own() {
    let expected: Vec<&str> = DAEMON_RULES.iter().map(|(name, ..)| *name).collect();
    assert_eq!(promql::rule_names(), expected);

    let text = std::fs::read_to_string(promql::repo_file(promql::RULES_FILE)).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "- name: observer"),
        "the rules are in group \"observer\""
    );
    let blocks: Vec<&str> = text.split("- alert:").skip(1).collect();
    for ((name, expr, _), (daemon_name, daemon_expr, daemon_for)) in
        promql::rule_queries().iter().zip(DAEMON_RULES)
    {
        assert_eq!(name, daemon_name);
        assert_eq!(expr, daemon_expr, "{name}: not the daemon's expression");
        let block = blocks
            .iter()
            .find(|b| b.lines().next().map(str::trim) == Some(name))
            .unwrap();
        let value = |key: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).map(str::trim))
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        assert_eq!(value("for:"), *daemon_for, "{name}: not the daemon's `for`");
        assert_eq!(value("severity:"), "warning", "{name}");
        for annotation in ["summary:", "description:"] {
            assert!(
                value(annotation).contains("{{ $"),
                "{name}: the {annotation} annotation shows the alert's labels or value"
            );
        }
    }
    assert!(
        text.contains("pid/comm"),
        "TcpCloseWaitStuck says what the daemon's own alert carries"
    );
}

#[test]
fn rules_use_only_exported_metrics() {
    for (name, expr, query) in promql::rule_queries() {
        let parsed = Query::parse(&expr);
        parsed.check_contract(&name);
        assert_eq!(Query::parse(&query).metrics, parsed.metrics, "{name}");
    }
}

// ---- the dashboard

/// The dashboard's panels, rows included, and those inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"].as_array().expect("panels");
    top.iter()
        .chain(
            top.iter()
                .flat_map(|p| p["panels"].as_array().into_iter().flatten()),
        )
        .collect()
}

#[test]
fn dashboard_has_the_variables_and_panels() {
    let dashboard = promql::dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        dashboard.get("__inputs").is_none(),
        "the data source is chosen with the `datasource` variable"
    );

    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let instance = variable("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["includeAll"], true);
    assert_eq!(instance["multi"], true);
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    let query = instance["query"]["query"]
        .as_str()
        .or_else(|| instance["query"].as_str())
        .unwrap();
    assert_eq!(query, "label_values(observer_build_info, instance)");
    Query::parse(query).check_contract("variable instance");

    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the dashboard"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(titles.insert(title), "{title}: two panels with this title");
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 40),
            "{title}: says what it shows and what to do"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            if panel["type"] == "heatmap" {
                assert_eq!(target["format"], "heatmap", "{title}");
                assert!(
                    target["expr"].as_str().unwrap().starts_with(
                        "sum by (le) (increase(observer_tcp_state_duration_seconds_bucket{"
                    ),
                    "{title}"
                );
            }
        }
    }
    for state in ["CLOSE_WAIT", "TIME_WAIT"] {
        assert!(
            promql::dashboard_targets()
                .iter()
                .any(|(_, e)| e.contains(&format!("_bucket{{state=\"{state}\""))),
            "a heatmap of the time spent in {state}"
        );
    }
}

#[test]
fn dashboard_queries_use_only_exported_metrics() {
    let dashboard = promql::dashboard();
    let legends: Vec<(String, String)> = panels(&dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            (
                t["expr"].as_str().unwrap().to_owned(),
                t["legendFormat"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();

    for (title, expr) in promql::dashboard_targets() {
        assert!(!expr.contains('\n'), "{title}: expr on more than one line");
        let parsed = Query::parse(&expr);
        parsed.check_contract(&title);
        assert!(
            parsed.selectors.iter().all(|s| s.matchers.contains(&(
                "instance".into(),
                "=~".into(),
                "$instance".into()
            ))),
            "{title}: every selector is limited to instance=~\"$instance\": {expr}"
        );
        assert!(
            parsed.ranges.iter().all(|r| r == "$__rate_interval"),
            "{title}: ranges are [$__rate_interval]: {expr}"
        );
        for (target_expr, legend) in legends.iter().filter(|(e, _)| *e == expr) {
            for label in legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}"))
            {
                assert!(
                    parsed.grouping.contains(label.0.trim()),
                    "{title}: legend {legend:?} names a label {target_expr} does not keep"
                );
            }
        }
    }
    for (title, query) in promql::dashboard_queries() {
        assert!(query.contains("instance=~\".*\""), "{title}: {query}");
    }
}

// ---- a little PromQL reading

/// What a query selects: enough of PromQL to check it against the exported metrics.
#[derive(Debug, Default)]
struct Query {
    metrics: BTreeSet<String>,
    selectors: Vec<Selector>,
    /// Labels of `by (...)` clauses, and those `label_values` lists.
    grouping: BTreeSet<String>,
    /// Contents of `[...]`.
    ranges: Vec<String>,
}

#[derive(Debug)]
struct Selector {
    metric: String,
    /// (label, operator, value).
    matchers: Vec<(String, String, String)>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Range(String),
    Punct(char),
}

fn tokens(expr: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphabetic() || c == '_' {
            let mut ident = c.to_string();
            while let Some(&n) = chars.peek() {
                if !(n.is_ascii_alphanumeric() || n == '_' || n == ':') {
                    break;
                }
                ident.push(n);
                chars.next();
            }
            out.push(Token::Ident(ident));
        } else if c == '"' {
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated string") {
                    '"' => break,
                    '\\' => value.push(chars.next().expect("unterminated string")),
                    other => value.push(other),
                }
            }
            out.push(Token::Str(value));
        } else if c == '[' {
            out.push(Token::Range(
                chars.by_ref().take_while(|&n| n != ']').collect(),
            ));
        } else if c.is_ascii_digit() || c == '.' {
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.')
            {
                chars.next();
            }
        } else if !c.is_whitespace() {
            out.push(Token::Punct(c));
        }
    }
    out
}

impl Query {
    fn parse(expr: &str) -> Self {
        let tokens = tokens(expr);
        let mut query = Self::default();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Ident(name) if name.starts_with("observer_") => {
                    query.metrics.insert(name.clone());
                    let mut selector = Selector {
                        metric: name.clone(),
                        matchers: Vec::new(),
                    };
                    if tokens.get(i + 1) == Some(&Token::Punct('{')) {
                        i += 2;
                        while tokens[i] != Token::Punct('}') {
                            let Token::Ident(label) = &tokens[i] else {
                                panic!("unreadable matcher in {expr}");
                            };
                            i += 1;
                            let mut op = String::new();
                            while let Token::Punct(c) = tokens[i] {
                                op.push(c);
                                i += 1;
                            }
                            let Token::Str(value) = &tokens[i] else {
                                panic!("unreadable matcher in {expr}");
                            };
                            selector.matchers.push((label.clone(), op, value.clone()));
                            i += 1;
                            if tokens[i] == Token::Punct(',') {
                                i += 1;
                            }
                        }
                    }
                    query.selectors.push(selector);
                }
                Token::Ident(word) if word == "by" => {
                    i += 2;
                    while tokens[i] != Token::Punct(')') {
                        if let Token::Ident(label) = &tokens[i] {
                            query.grouping.insert(label.clone());
                        }
                        i += 1;
                    }
                }
                // label_values(selector, label): the selector is read as any other.
                Token::Ident(word) if word == "label_values" => {
                    let label = tokens[i..]
                        .iter()
                        .take_while(|t| **t != Token::Punct(')'))
                        .filter_map(|t| match t {
                            Token::Ident(ident) => Some(ident),
                            _ => None,
                        })
                        .last()
                        .unwrap();
                    query.grouping.insert(label.clone());
                }
                Token::Ident(word) => assert!(
                    word != "without" && word != "on" && word != "ignoring",
                    "{word} is not understood here: {expr}"
                ),
                Token::Range(range) => query.ranges.push(range.clone()),
                Token::Str(_) | Token::Punct(_) => {}
            }
            i += 1;
        }
        assert!(!query.metrics.is_empty(), "no metric in {expr}");
        query
    }

    /// Panics unless every metric, label and label value is one the daemon exports.
    fn check_contract(&self, what: &str) {
        let labels_of = |metric: &str| {
            METRICS
                .iter()
                .find(|(name, _)| *name == metric)
                .unwrap_or_else(|| panic!("{what}: {metric} is not a metric the daemon exports"))
                .1
        };
        let mut known: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for selector in &self.selectors {
            let labels = labels_of(&selector.metric);
            known.extend(labels.iter());
            for (label, op, value) in &selector.matchers {
                assert!(
                    TARGET_LABELS.contains(&label.as_str()) || labels.contains(&label.as_str()),
                    "{what}: {} has no label {label}",
                    selector.metric
                );
                assert!(
                    ["=", "!=", "=~", "!~"].contains(&op.as_str()),
                    "{what}: operator {op:?}"
                );
                if (op == "=" || op == "!=")
                    && let Some((_, values)) = LABEL_VALUES.iter().find(|(l, _)| l == label)
                {
                    assert!(
                        values.contains(&value.as_str()),
                        "{what}: {label} is never {value:?}"
                    );
                }
            }
        }
        for label in &self.grouping {
            assert!(
                known.contains(label.as_str()),
                "{what}: groups by {label}, which none of {:?} has",
                self.metrics
            );
        }
    }
}
