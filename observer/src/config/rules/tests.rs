//! Rules as the file gives them: each kind's keys, what is missing, unknown or repeated.

use crate::config::testing::error;

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
