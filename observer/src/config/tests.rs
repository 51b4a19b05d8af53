//! The whole file: defaults, the example file, every option at once, and the rules in effect.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::testing::parse;
use super::*;
use crate::track::{EndCause, ResetClass};

const EXAMPLE: &str = include_str!("../../../deploy/observer.toml");

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
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
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
max_workload_labels = 8

[tracker]
max_sockets = 4096
owner_after = "2s"
reconcile_every = "1m 30s"
half_open_after = "20s"
listen_every = "2s"
state_file = ""

[kernel]
ring_buffer_size = "256K"

[workloads]
kubelet_logs = "/srv/kubelet-logs"
cgroups = false

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
            max_workload_labels: 8,
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
        socket: SocketConfig::default(),
        workloads: WorkloadsConfig {
            kubelet_logs: Some(PathBuf::from("/srv/kubelet-logs")),
            cgroups: false,
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
        severity: Severity::default(),
        labels: BTreeMap::new(),
        summary: None,
        kind,
    };
    vec![
        AlertRule {
            for_: Duration::from_mins(1),
            severity: Severity::new("critical").unwrap(),
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
fn socket_table_sets_path_mode_group_and_queue() {
    let config = parse(
        "[socket]\npath = \"/tmp/o.sock\"\nmode = \"0600\"\ngroup = \"observer\"\n\
         client_queue_bytes = 2097152\n",
    );
    assert_eq!(
        config.socket,
        SocketConfig {
            path: Some(PathBuf::from("/tmp/o.sock")),
            mode: 0o600,
            group: Some("observer".to_owned()),
            client_queue_bytes: 2 << 20,
        }
    );
    assert_eq!(parse("[socket]\npath = \"\"\n").socket.path, None);
    let error = super::testing::error("[socket]\nmode = \"0999\"\n");
    assert!(error.contains("not a file mode"), "{error}");
    let error = super::testing::error("[socket]\nclient_queue_bytes = 65536\n");
    assert!(error.contains("at least 1048576"), "{error}");
}

#[test]
fn workloads_table_sets_the_kubelet_directory() {
    assert!(parse("").workloads.cgroups);
    assert_eq!(
        parse("").workloads.kubelet_logs,
        Some(PathBuf::from("/var/log/containers"))
    );
    assert_eq!(
        parse("[workloads]\nkubelet_logs = \"/srv/logs\"\n")
            .workloads
            .kubelet_logs,
        Some(PathBuf::from("/srv/logs"))
    );
    assert_eq!(
        parse("[workloads]\nkubelet_logs = \"\"\n")
            .workloads
            .kubelet_logs,
        None
    );
}
