//! Each checked value, refused where it is written with a message saying what would do.

use super::Severity;
use crate::config::testing::{error, parse};

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
fn negative_ring_buffer_size() {
    assert_eq!(
        error("[kernel]\nring_buffer_size = -4096\n"),
        "observer.toml:2:20: kernel.ring_buffer_size: invalid size -4096: must be a power of \
         two from 4K to 256M, such as \"16M\" (or \"auto\")"
    );
}

#[test]
fn severity_is_any_text_but_the_empty_one() {
    let rule = "[[alerts.rules]]\nname = \"A\"\nkind = \"lost_events_rate\"\n";
    assert_eq!(
        error(&format!("{rule}severity = \"\"\n")),
        "observer.toml:4:12: alerts.rules[0].severity: empty severity: write one, such as \
         \"warning\" or \"critical\""
    );
    let config = parse(&format!("{rule}severity = \"page me\"\n"));
    assert_eq!(config.alerts.rules[0].severity, "page me");
    assert_eq!(parse(rule).alerts.rules[0].severity, Severity::default());
    assert_eq!(Severity::default().to_string(), "warning");
    assert_eq!("".parse::<Severity>(), Err(super::EmptySeverity));
    assert_eq!(Severity::new("critical").unwrap().as_str(), "critical");
}
