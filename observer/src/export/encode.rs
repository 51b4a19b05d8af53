//! The snapshot as OpenMetrics text, through prometheus-client's collector interface. One job:
//! the list of every exported family, kept in one place so that names, help texts and labels
//! are read together (with its tests).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::Metrics;
use crate::{
    clock::seconds,
    event::ResetDirection,
    track::{NeverAccepted, ResetClass, durations::BUCKET_BOUNDS_SECONDS},
};

pub(super) fn openmetrics(metrics: Metrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(metrics)));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct SnapshotCollector(Metrics);

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one family: `values` are (labels, value) pairs.
fn family<'a, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error>
where
    V: Into<f64> + Copy + std::fmt::Debug,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let value: f64 = value.into();
        let sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

/// Counts as f64: exact up to 2^53, far beyond any counter here.
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
fn f(n: impl Into<u64>) -> f64 {
    n.into() as f64
}

impl Collector for SnapshotCollector {
    #[expect(
        clippy::too_many_lines,
        reason = "one flat list of families reads best"
    )]
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let labelled = &self.0;
        let s = &labelled.s;
        family(
            &mut e,
            "observer_build_info",
            "Version of the observer and release of the kernel it runs on; always 1.",
            Gauge,
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("kernel", labelled.kernel.as_str()),
                ],
                1.0,
            )],
        )?;
        family(
            &mut e,
            "observer_tcp_transitions",
            "TCP state transitions, by old and new state (TIME_WAIT entries and ends included).",
            Counter,
            s.transitions.iter().map(|t| {
                (
                    vec![("from", t.from.name()), ("to", t.to.name())],
                    f(t.count),
                )
            }),
        )?;
        family(
            &mut e,
            "observer_tcp_sockets",
            "Sockets now in each TCP state (timewait sockets under TIME_WAIT, or FIN_WAIT2 for \
             an orphan waiting in one).",
            Gauge,
            observer_common::TcpState::ALL
                .into_iter()
                .map(|st| (vec![("state", st.name())], f(s.sockets[st]))),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "observer_tcp_state_duration_seconds",
                "Time sockets spent in a state, observed when they left it.",
                None,
                MetricType::Histogram,
            )?;
            for (state, h) in s.durations.iter() {
                // Per-bucket counts: the encoder accumulates them itself.
                let buckets: Vec<(f64, u64)> = BUCKET_BOUNDS_SECONDS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(h.buckets.iter().copied())
                    .collect();
                let labels = [("state", state.name())];
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)?;
            }
        }
        family(
            &mut e,
            "observer_tcp_resets",
            "RSTs by direction and meaning (see the README for each class).",
            Counter,
            s.resets.iter().map(|r| {
                (
                    vec![("direction", r.direction.name()), ("class", r.class.name())],
                    f(r.count),
                )
            }),
        )?;
        let ports: Vec<String> = labelled
            .closed_before_accept
            .iter()
            .map(|(p, _)| p.value())
            .collect();
        family(
            &mut e,
            "observer_tcp_closed_before_accept",
            "Connections the client closed (peer_closed) or reset (peer_reset) while they \
             waited in the accept queue, by listening port.",
            Counter,
            labelled
                .closed_before_accept
                .iter()
                .zip(&ports)
                .flat_map(|((_, n), port)| {
                    [
                        (
                            vec![("port", port.as_str()), ("how", "peer_closed")],
                            f(n.peer_closed),
                        ),
                        (
                            vec![("port", port.as_str()), ("how", "peer_reset")],
                            f(n.peer_reset),
                        ),
                    ]
                }),
        )?;
        family(
            &mut e,
            "observer_tcp_timewait_started",
            "Timewait sockets followed: their timer's start was seen (timer), or sock_diag \
             listed them (sock_diag: they existed before the daemon, or their start was lost). \
             Started = ended + observer_tracker_sockets{table=\"timewait\"}.",
            Counter,
            [
                (vec![("source", "timer")], f(s.timewait.started)),
                (vec![("source", "sock_diag")], f(s.timewait.seeded)),
            ],
        )?;
        family(
            &mut e,
            "observer_tcp_timewait_ended",
            "Timewait sockets ended: their timer expired, they were killed early (4-tuple \
             reused, RST), or their end was not seen (unseen: learnt from sock_diag, or from \
             their timer or 4-tuple being taken by another).",
            Counter,
            crate::track::TimewaitEnd::ALL
                .into_iter()
                .map(|cause| (vec![("cause", cause.name())], f(s.timewait.ended(cause)))),
        )?;
        family(
            &mut e,
            "observer_tcp_close_wait_oldest_seconds",
            "Age of the oldest socket in CLOSE_WAIT (0 when there is none): the peer closed, \
             the application has not.",
            Gauge,
            [(vec![], labelled.close_wait_oldest_seconds)],
        )?;
        family(
            &mut e,
            "observer_tcp_close_wait_sockets_by_workload",
            "Sockets in CLOSE_WAIT by the workload whose process created them (the socket's \
             cgroup as a systemd unit, a container or namespace/pod; `unknown` without one, \
             `other` beyond metrics.max_workload_labels).",
            Gauge,
            labelled
                .close_wait_by_workload
                .iter()
                .map(|(w, c)| (vec![("workload", w.value())], f(c.sockets))),
        )?;
        family(
            &mut e,
            "observer_tcp_close_wait_oldest_by_workload_seconds",
            "Age of the oldest socket in CLOSE_WAIT of each workload (labels as \
             observer_tcp_close_wait_sockets_by_workload).",
            Gauge,
            labelled
                .close_wait_by_workload
                .iter()
                .map(|(w, c)| (vec![("workload", w.value())], c.oldest_seconds)),
        )?;
        family(
            &mut e,
            "observer_tcp_sockets_by_workload",
            "Sockets now in each TCP state by workload (labels as \
             observer_tcp_close_wait_sockets_by_workload; states with no socket left out).",
            Gauge,
            labelled.sockets_by_workload.iter().flat_map(|(w, states)| {
                states.iter().filter(|(_, n)| **n > 0).map(move |(st, n)| {
                    (vec![("workload", w.value()), ("state", st.name())], f(*n))
                })
            }),
        )?;
        family(
            &mut e,
            "observer_tcp_resets_by_workload",
            "RSTs by the workload of the socket that sent or received them, direction and class \
             (as observer_tcp_resets; counted under the name the workload had then; RSTs \
             without a socket under `unknown`).",
            Counter,
            labelled.counts_by_workload.iter().flat_map(|(w, c)| {
                [ResetDirection::Sent, ResetDirection::Received]
                    .into_iter()
                    .flat_map(move |d| {
                        ResetClass::ALL.into_iter().filter_map(move |class| {
                            let n = c.resets[d as usize][class.index()];
                            (n > 0).then(|| {
                                (
                                    vec![
                                        ("workload", w.value()),
                                        ("direction", d.name()),
                                        ("class", class.name()),
                                    ],
                                    f(n),
                                )
                            })
                        })
                    })
            }),
        )?;
        family(
            &mut e,
            "observer_tcp_closed_before_accept_by_workload",
            "Connections closed (peer_closed) or reset (peer_reset) by the client before the \
             workload's listener accepted them.",
            Counter,
            labelled
                .counts_by_workload
                .iter()
                .filter(|(_, c)| c.closed_before_accept != NeverAccepted::default())
                .flat_map(|(w, c)| {
                    [
                        (
                            vec![("workload", w.value()), ("how", "peer_closed")],
                            f(c.closed_before_accept.peer_closed),
                        ),
                        (
                            vec![("workload", w.value()), ("how", "peer_reset")],
                            f(c.closed_before_accept.peer_reset),
                        ),
                    ]
                }),
        )?;
        family(
            &mut e,
            "observer_tcp_half_open_suspects_by_workload",
            "Half-open suspects (as observer_tcp_half_open_suspects) by workload.",
            Gauge,
            labelled
                .half_open_by_workload
                .iter()
                .map(|(w, n)| (vec![("workload", w.value())], f(*n))),
        )?;
        family(
            &mut e,
            "observer_tcp_timewait_bucket_usage_ratio",
            "Highest, over network namespaces, of timewait sockets / net.ipv4.tcp_max_tw_buckets.",
            Gauge,
            [(vec![], s.timewait_bucket_usage)],
        )?;
        family(
            &mut e,
            "observer_tcp_timewait_port_usage_ratio",
            "Highest, over destinations, of timewait sockets holding an ephemeral port toward \
             that destination / size of net.ipv4.ip_local_port_range.",
            Gauge,
            [(vec![], s.timewait_port_usage)],
        )?;
        family(
            &mut e,
            "observer_tcp_retransmits",
            "Segments retransmitted by connections (tcp_retransmit_skb).",
            Counter,
            [(vec![], f(s.retransmits.segments))],
        )?;
        let synack_ports: Vec<String> = labelled
            .synack_retransmits
            .iter()
            .map(|(p, _)| p.value())
            .collect();
        family(
            &mut e,
            "observer_tcp_synack_retransmits",
            "SYN-ACKs retransmitted by listeners, by listening port: clients that vanished \
             mid-handshake, or final ACKs dropped because the accept queue was full.",
            Counter,
            labelled
                .synack_retransmits
                .iter()
                .zip(&synack_ports)
                .map(|((_, n), port)| (vec![("port", port.as_str())], f(*n))),
        )?;
        family(
            &mut e,
            "observer_tcp_retransmit_streaks",
            "Periods of retransmission without progress, by outcome so far: began, or \
             recovered (the peer answered again). Those that timed out are in \
             observer_tcp_connection_errors_total.",
            Counter,
            [
                (vec![("outcome", "began")], f(s.retransmits.streaks)),
                (vec![("outcome", "recovered")], f(s.retransmits.recovered)),
            ],
        )?;
        family(
            &mut e,
            "observer_tcp_half_open_suspects",
            "Connections retransmitting without progress for longer than the half-open \
             threshold: their peer, or the path to it, may be gone.",
            Gauge,
            [(vec![], f(s.half_open_total as u64))],
        )?;
        family(
            &mut e,
            "observer_tcp_half_open_oldest_seconds",
            "How long the oldest half-open suspect has retransmitted without progress (0 when \
             there is none).",
            Gauge,
            [(vec![], labelled.half_open_oldest_seconds)],
        )?;
        family(
            &mut e,
            "observer_tcp_connection_errors",
            "Connections the kernel ended with an error, by cause (retransmit_timeout, \
             keepalive_timeout, connect_timeout, refused, reset, unreachable, ...) and the \
             state they were in.",
            Counter,
            s.connection_ends.nonzero().into_iter().map(|e| {
                (
                    vec![
                        ("cause", e.cause.name()),
                        ("state", e.state.map_or("UNKNOWN", |st| st.name())),
                    ],
                    f(e.count),
                )
            }),
        )?;
        let listen_ports: Vec<String> = labelled
            .listen_queues
            .iter()
            .map(|(p, _)| p.value())
            .collect();
        family(
            &mut e,
            "observer_tcp_listen_queue_length",
            "Connections waiting in listening sockets' accept queues, by port (summed over \
             the port's sockets).",
            Gauge,
            labelled
                .listen_queues
                .iter()
                .zip(&listen_ports)
                .map(|((_, q), port)| (vec![("port", port.as_str())], f(q.queued))),
        )?;
        family(
            &mut e,
            "observer_tcp_listen_queue_limit",
            "Accept-queue limits (the listen() backlog, capped by net.core.somaxconn), by port.",
            Gauge,
            labelled
                .listen_queues
                .iter()
                .zip(&listen_ports)
                .map(|((_, q), port)| (vec![("port", port.as_str())], f(q.backlog))),
        )?;
        family(
            &mut e,
            "observer_tcp_listen_syn_recv",
            "Handshakes in progress (request sockets in SYN_RECV), by listening port, as of \
             their last count (observer_tcp_listen_syn_recv_age_seconds).",
            Gauge,
            labelled
                .listen_queues
                .iter()
                .zip(&listen_ports)
                .map(|((_, q), port)| (vec![("port", port.as_str())], f(q.syn_recv))),
        )?;
        family(
            &mut e,
            "observer_tcp_listen_syn_recv_age_seconds",
            "Seconds since request sockets were last counted. Counting them walks every socket \
             of the host once per network namespace with a listener, so it is done at most as \
             often as keeps it under 1% of one CPU; absent before the first count.",
            Gauge,
            s.listen_requests_age_ns().map(|ns| (vec![], seconds(ns))),
        )?;
        family(
            &mut e,
            "observer_tcp_listen_queue_usage_ratio",
            "Highest, over listening sockets, of accept-queue length / its limit.",
            Gauge,
            [(vec![], s.listen_queue_highest_usage)],
        )?;
        family(
            &mut e,
            "observer_tcp_listen_overflows",
            "Handshakes completed into a full accept queue (TcpExt ListenOverflows), summed \
             over network namespaces since the observer started.",
            Counter,
            [(vec![], f(s.listen_overflows))],
        )?;
        family(
            &mut e,
            "observer_tcp_listen_drops",
            "SYNs and handshakes dropped by listeners for any reason, overflows included \
             (TcpExt ListenDrops), summed over network namespaces since the observer started.",
            Counter,
            [(vec![], f(s.listen_drops))],
        )?;
        family(
            &mut e,
            "observer_events_received",
            "Records read from the kernel's ring buffer.",
            Counter,
            [(vec![], f(s.received))],
        )?;
        let k = &s.losses.kernel;
        family(
            &mut e,
            "observer_events_lost",
            "Events lost, by reason: the ring buffer was full, the kernel skipped the program \
             while another ran on the CPU, the tracepoint record was unreadable, or the record \
             was malformed.",
            Counter,
            [
                (vec![("reason", "ring_buffer_full")], f(k.ring_buffer_full)),
                (vec![("reason", "recursion_miss")], f(k.recursion_misses)),
                (vec![("reason", "unreadable")], f(k.read_failed)),
                (vec![("reason", "malformed")], f(s.losses.malformed)),
            ],
        )?;
        family(
            &mut e,
            "observer_timer_recursion_misses",
            "Timer tracepoint runs the kernel skipped (an upper bound of timewait timer events \
             missed: most were for other timers).",
            Counter,
            [(vec![], f(k.timer_recursion_misses))],
        )?;
        family(
            &mut e,
            "observer_program_runs_skipped",
            "Runs of each eBPF program the kernel skipped because a tracing program was \
             already running on the CPU (for the raw tracepoint programs, the same one): that \
             hook's events are short by this many. The same \
             runs as observer_events_lost_total{reason=\"recursion_miss\"}, and for the timer \
             programs observer_timer_recursion_misses_total (mostly runs for other timers than \
             timewait ones).",
            Counter,
            k.skipped
                .by_program()
                .map(|(p, n)| (vec![("program", p.name)], f(n))),
        )?;
        let st = &s.stats;
        family(
            &mut e,
            "observer_tracker_gaps",
            "Transitions, or new sockets at a tracked socket's kernel address, proving that an earlier transition was missed (the state is repaired).",
            Counter,
            [(vec![], f(st.gaps))],
        )?;
        family(
            &mut e,
            "observer_tracker_sockets",
            "Sockets tracked now, by table.",
            Gauge,
            [
                (vec![("table", "sockets")], f(st.tracked_sockets as u64)),
                (vec![("table", "timewait")], f(st.tracked_timewait as u64)),
            ],
        )?;
        family(
            &mut e,
            "observer_tracker_evicted",
            "Sockets evicted (sockets table) or not tracked (timewait table) because the table \
             was full.",
            Counter,
            [
                (vec![("table", "sockets")], f(st.evicted)),
                (vec![("table", "timewait")], f(st.timewait_untracked)),
            ],
        )?;
        family(
            &mut e,
            "observer_tracker_seeded",
            "Sockets learnt from sock_diag (at start-up and by reconciliation).",
            Counter,
            [(vec![], f(st.seeded))],
        )?;
        family(
            &mut e,
            "observer_tracker_stale",
            "Tracked sockets dropped because sock_diag no longer listed them (their end was \
             lost).",
            Counter,
            [(vec![], f(st.reconciled_stale))],
        )?;
        family(
            &mut e,
            "observer_tracker_missed_by_dump",
            "Tracked sockets a sock_diag dump did not list that the kernel still held when looked \
             up by their addresses (a dump under churn skips sockets), kept rather than dropped.",
            Counter,
            [(vec![], f(st.missed_by_dump))],
        )?;
        family(
            &mut e,
            "observer_tracker_corrected",
            "Tracked sockets sock_diag listed in another state (a change was lost), corrected \
             to the kernel's state.",
            Counter,
            [(vec![], f(st.corrected))],
        )?;
        family(
            &mut e,
            "observer_reconciliation_cpu_seconds",
            "CPU time of every reconciliation with sock_diag so far (dumping every namespace's \
             sockets, in the kernel and here, and comparing them), by its threads' CPU clocks. It \
             grows with the sockets listed: see observer_reconciliation_listed_sockets and \
             tracker.reconcile_every.",
            Counter,
            [(vec![], seconds(s.reconciliation_cpu_ns))],
        )?;
        family(
            &mut e,
            "observer_reconciliation_duration_seconds",
            "How long the last reconciliation took; absent before the first.",
            Gauge,
            s.last_reconciliation.map(|r| (vec![], seconds(r.took_ns))),
        )?;
        family(
            &mut e,
            "observer_reconciliation_listed_sockets",
            "Sockets the last reconciliation listed, in every namespace; absent before the first.",
            Gauge,
            s.last_reconciliation.map(|r| (vec![], f(r.listed))),
        )?;
        family(
            &mut e,
            "observer_tracker_retransmitting",
            "Connections followed for their retransmissions now.",
            Gauge,
            [(vec![], f(s.retransmitting_connections as u64))],
        )?;
        family(
            &mut e,
            "observer_tracker_retransmits_untracked",
            "Retransmissions of connections the retransmission table had no room for, and \
             SYN-ACK retransmissions beyond the per-port table.",
            Counter,
            [
                (vec![("table", "connections")], f(s.retransmits.untracked)),
                (
                    vec![("table", "synack_ports")],
                    f(s.retransmits.synack_overflow),
                ),
            ],
        )?;
        family(
            &mut e,
            "observer_retransmit_timeouts_unreported",
            "Retransmission timeouts the kernel counted (icsk_retransmits rose by more than one \
             between two retransmissions of a connection) with no retransmission reported for \
             them.",
            Counter,
            [(vec![], f(s.retransmits.timeouts_unreported))],
        )?;
        family(
            &mut e,
            "observer_tracker_closed_before_accept_unlabelled",
            "Closed-before-accept counts beyond the per-port table (not in \
             observer_tcp_closed_before_accept).",
            Counter,
            [(vec![], f(st.closed_before_accept_overflow))],
        )?;
        family(
            &mut e,
            "observer_alerts",
            "Alert instances of the observer's own rules, by rule and state.",
            Gauge,
            s.alerts.iter().flat_map(|r| {
                [
                    (
                        vec![("alertname", r.name.as_str()), ("alertstate", "pending")],
                        f(r.pending),
                    ),
                    (
                        vec![("alertname", r.name.as_str()), ("alertstate", "firing")],
                        f(r.firing),
                    ),
                ]
            }),
        )?;
        family(
            &mut e,
            "observer_alerts_suppressed",
            "Alert instances not raised because their rule already held max_alerts_per_rule.",
            Counter,
            s.alerts
                .iter()
                .map(|r| (vec![("alertname", r.name.as_str())], f(r.suppressed))),
        )?;
        let n = &s.notifications;
        family(
            &mut e,
            "observer_alert_notifications",
            "Alert notifications by sink and result (alertmanager: alerts accepted, failed \
             requests, alerts given up on; file: lines written, failed writes).",
            Counter,
            [
                (
                    vec![("sink", "alertmanager"), ("result", "sent")],
                    f(n.alertmanager.sent),
                ),
                (
                    vec![("sink", "alertmanager"), ("result", "failed")],
                    f(n.alertmanager.failed_attempts),
                ),
                (
                    vec![("sink", "alertmanager"), ("result", "dropped")],
                    f(n.alertmanager.dropped),
                ),
                (
                    vec![("sink", "file"), ("result", "sent")],
                    f(n.file_written),
                ),
                (
                    vec![("sink", "file"), ("result", "failed")],
                    f(n.file_failed),
                ),
            ],
        )?;
        family(
            &mut e,
            "observer_socket_client_drops",
            "Clients of the daemon's Unix socket disconnected because they read too slowly \
             (their queue of lines filled up).",
            Counter,
            [(vec![], f(s.socket_client_drops))],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Netns;
    use observer_common::TcpState::{Close, Established, FinWait1, SynSent};
    use rustc_hash::FxHashMap;

    use crate::{
        alerts::NotificationCounts,
        event::{Event, Family, Task, Transition, Tuple},
        export::Exporter,
        listen_queues::ListenQueues,
        snapshot::{Snapshot, Sources},
        track::{Tracker, TransitionCounts},
    };

    /// The value of one sample of the exposition.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "counts are exact small integers")]
    fn histogram_buckets_are_cumulative_once_and_end_at_the_count() {
        let mut tracker = Tracker::new(16);
        let mut out = Vec::new();
        let tuple = Tuple {
            netns: Netns::new(1),
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:80".parse().unwrap(),
        };
        // Three connections ESTABLISHED for 2 ms, 20 ms and 2 s.
        for (sock, ms) in [(1u64, 2u64), (2, 20), (3, 2_000)] {
            let t = |at: u64, old, new| {
                Event::Transition(Transition {
                    cgroup: None,
                    mono_ns: at * 1_000_000,
                    sock,
                    old,
                    new,
                    family: Family::Ipv4,
                    local: tuple.local,
                    remote: tuple.remote,
                    netns: tuple.netns,
                    task: Task::named(1, "t"),
                    owner_context: true,
                    has_socket: Some(true),
                })
            };
            for e in [
                t(0, Close, SynSent),
                t(1, SynSent, Established),
                t(1 + ms, Established, FinWait1),
                t(2 + ms, FinWait1, Close),
            ] {
                tracker.apply(&e, &mut out);
            }
        }
        let snapshot = Snapshot::take(
            &Sources {
                tracker: &tracker,
                transitions: &TransitionCounts::default(),
                received: 0,
                losses: crate::stream::Losses::default(),
                limits: &FxHashMap::default(),
                listen: &ListenQueues::default(),
                half_open_after_ns: 0,
                alerts: &[],
                notifications: NotificationCounts::default(),
                last_reconciliation: None,
                reconciliation_cpu_ns: 0,
                socket_client_drops: 0,
                workload_tally: &crate::workload::tally::WorkloadTally::default(),
                now_ns: 0,
            },
            1,
        );
        let text = Exporter::new(&[], 4, 4).openmetrics(snapshot);
        let h = "observer_tcp_state_duration_seconds";
        let s = "state=\"ESTABLISHED\"";
        assert_eq!(value(&text, &format!("{h}_count{{{s}}}")), 3.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"+Inf\",{s}}}")), 3.0);
        assert_eq!(
            value(&text, &format!("{h}_bucket{{le=\"0.001\",{s}}}")),
            0.0
        );
        assert_eq!(
            value(&text, &format!("{h}_bucket{{le=\"0.005\",{s}}}")),
            1.0
        );
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"0.05\",{s}}}")), 2.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"1.0\",{s}}}")), 2.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"5.0\",{s}}}")), 3.0);
        assert!((value(&text, &format!("{h}_sum{{{s}}}")) - 2.022).abs() < 1e-9);
    }
}
