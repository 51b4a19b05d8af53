//! The metrics, labels and label values the daemon exports, and enough PromQL reading to check
//! a query of the rules or the dashboard against them.

use std::collections::BTreeSet;

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
    ("observer_tcp_sockets_by_workload", &["workload", "state"]),
    (
        "observer_tcp_resets_by_workload_total",
        &["workload", "direction", "class"],
    ),
    (
        "observer_tcp_closed_before_accept_by_workload_total",
        &["workload", "how"],
    ),
    ("observer_tcp_half_open_suspects_by_workload", &["workload"]),
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
    ("observer_tcp_listen_syn_recv_age_seconds", &[]),
    ("observer_tcp_listen_queue_usage_ratio", &[]),
    ("observer_tcp_listen_overflows_total", &[]),
    ("observer_tcp_listen_drops_total", &[]),
    ("observer_events_received_total", &[]),
    ("observer_events_lost_total", &["reason"]),
    ("observer_timer_recursion_misses_total", &[]),
    ("observer_program_runs_skipped_total", &["program"]),
    ("observer_tracker_gaps_total", &[]),
    ("observer_tracker_sockets", &["table"]),
    ("observer_tracker_evicted_total", &["table"]),
    ("observer_tracker_seeded_total", &[]),
    ("observer_tracker_stale_total", &[]),
    ("observer_tracker_missed_by_dump_total", &[]),
    ("observer_reconciliation_cpu_seconds_total", &[]),
    ("observer_reconciliation_duration_seconds", &[]),
    ("observer_reconciliation_listed_sockets", &[]),
    ("observer_tracker_retransmitting", &[]),
    ("observer_tracker_retransmits_untracked_total", &["table"]),
    ("observer_retransmit_timeouts_unreported_total", &[]),
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
    (
        "program",
        &[
            "inet_sock_set_state",
            "tcp_send_reset",
            "tcp_receive_reset",
            "timer_start",
            "timer_cancel",
            "timer_expire_entry",
            "tcp_retransmit_skb",
            "tcp_retransmit_synack",
            "inet_sk_error_report",
        ],
    ),
    ("alertstate", &["pending", "firing"]),
    ("sink", &["alertmanager", "file"]),
    ("result", &["sent", "failed", "dropped"]),
];

// ---- a little PromQL reading

/// What a query selects: enough of PromQL to check it against the exported metrics.
#[derive(Debug, Default)]
pub struct Query {
    pub metrics: BTreeSet<String>,
    pub selectors: Vec<Selector>,
    /// Labels of `by (...)` clauses, and those `label_values` lists.
    pub grouping: BTreeSet<String>,
    /// Contents of `[...]`.
    pub ranges: Vec<String>,
}

#[derive(Debug)]
pub struct Selector {
    metric: String,
    /// (label, operator, value).
    pub matchers: Vec<(String, String, String)>,
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
    pub fn parse(expr: &str) -> Self {
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
    pub fn check_contract(&self, what: &str) {
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
