//! The Prometheus rules and example configuration (deploy/prometheus): promtool accepts them and
//! the rules' unit tests pass, the rules are the daemon's own, their queries use only what the
//! daemon exports.
//!
//! promtool comes with Debian's `prometheus` package. Without it the promtool tests are
//! skipped loudly, except under CI=true, where that is a failure.

use observer_testkit::{promql, skip::skip};
use std::{
    io::ErrorKind,
    process::{Command, Output},
};

use crate::metrics_contract::Query;

/// The daemon's built-in rules: name, expr, `for`.
const DAEMON_RULES: &[(&str, &str, &str)] = &[
    (
        "TcpCloseWaitStuck",
        "observer_tcp_close_wait_oldest_by_workload_seconds > 300",
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
        "sum by (instance, workload, direction, class) (rate(observer_tcp_resets_by_workload_total[1m])) > 50",
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
