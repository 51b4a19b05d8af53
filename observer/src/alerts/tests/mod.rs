//! The alert state machine on tracker states built from recorded-like events.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use jiff::Timestamp;
use observer_common::TcpState::{self, Close, CloseWait, Established, LastAck, SynSent};
use rustc_hash::FxHashMap;

use super::*;
use crate::event::Netns;
use crate::{
    config::{AlertRule, RuleKind, Severity},
    event::{Event, Family, Reset, ResetDirection, Task, Transition},
    kernel::NetLimits,
    track::{ResetClass, Tracker},
};

mod workloads;

const NS: Netns = Netns::new(4_026_532_000).unwrap();
const S: u64 = 1_000_000_000;

fn rule(name: &str, for_secs: u64, kind: RuleKind) -> AlertRule {
    AlertRule {
        name: name.to_owned(),
        for_: Duration::from_secs(for_secs),
        severity: Severity::default(),
        labels: BTreeMap::from([("team".to_owned(), "net".to_owned())]),
        summary: None,
        kind,
    }
}

fn tr(sock: u64, at_ns: u64, old: TcpState, new: TcpState, local: &str, remote: &str) -> Event {
    let owner_context = TcpState::in_owner_context(old, new);
    Event::Transition(Transition {
        cgroup: None,
        mono_ns: at_ns,
        sock,
        old,
        new,
        family: Family::Ipv4,
        local: local.parse::<SocketAddr>().unwrap(),
        remote: remote.parse::<SocketAddr>().unwrap(),
        netns: Some(NS),
        task: Task::named(if owner_context { 4242 } else { 1 }, "leaky"),
        owner_context,
        has_socket: Some(true),
    })
}

/// Tracker with one connection per (sock, port) that went to CLOSE_WAIT at `at_ns`.
fn close_wait(tracker: &mut Tracker, sock: u64, port: u16, at_ns: u64) {
    let local = format!("10.0.0.1:{port}");
    let mut out = Vec::new();
    for e in [
        tr(sock, at_ns, Close, SynSent, "10.0.0.1:0", "10.0.0.2:80"),
        tr(sock, at_ns, SynSent, Established, &local, "10.0.0.2:80"),
        tr(sock, at_ns, Established, CloseWait, &local, "10.0.0.2:80"),
    ] {
        tracker.apply(&e, &mut out);
    }
}

fn evaluate(engine: &mut Engine, tracker: &Tracker, now_ns: u64, lost: u64) -> Vec<Change> {
    let limits = FxHashMap::default();
    engine.evaluate(
        &Inputs {
            workloads: None,
            tracker,
            limits: &limits,
            listeners: &[],
            lost_total: lost,
            now_ns,
        },
        Timestamp::from_second(1_700_000_000).unwrap(),
    )
}

fn statuses(changes: &[Change]) -> Vec<(String, Status)> {
    changes
        .iter()
        .map(|c| (c.alert.name().to_owned(), c.status))
        .collect()
}

#[test]
fn close_wait_goes_pending_then_firing_then_resolved() {
    let mut tracker = Tracker::new(64);
    close_wait(&mut tracker, 0xA, 40000, 10 * S);
    let older_than = Duration::from_secs(5);
    let mut engine = Engine::new(
        vec![rule("Stuck", 10, RuleKind::CloseWaitAge { older_than })],
        16,
    );
    assert!(
        evaluate(&mut engine, &tracker, 14 * S, 0).is_empty(),
        "4 s old"
    );
    let pending = evaluate(&mut engine, &tracker, 16 * S, 0);
    assert_eq!(statuses(&pending), [("Stuck".to_owned(), Status::Pending)]);
    let alert = &pending[0].alert;
    assert_eq!(alert.labels["local_port"], "40000");
    assert_eq!(alert.labels["remote_address"], "10.0.0.2");
    assert_eq!(alert.labels["netns"], NS.to_string());
    assert_eq!(alert.labels["team"], "net");
    assert_eq!(alert.labels["severity"], "warning");
    assert!((alert.value - 6.0).abs() < 1e-9);
    assert!(
        alert.annotations["description"].contains("CLOSE_WAIT for 6s"),
        "{:?}",
        alert.annotations
    );
    // Pending for 9 s of the rule's 10: still pending, nothing new to say.
    assert!(evaluate(&mut engine, &tracker, 25 * S, 0).is_empty());
    assert_eq!(engine.counts()[0].pending, 1);
    let firing = evaluate(&mut engine, &tracker, 26 * S, 0);
    assert_eq!(statuses(&firing), [("Stuck".to_owned(), Status::Firing)]);
    assert_eq!(engine.counts()[0].firing, 1);

    // The application finally closes: resolved, and gone.
    let mut out = Vec::new();
    tracker.apply(
        &tr(
            0xA,
            27 * S,
            CloseWait,
            LastAck,
            "10.0.0.1:40000",
            "10.0.0.2:80",
        ),
        &mut out,
    );
    let resolved = evaluate(&mut engine, &tracker, 28 * S, 0);
    assert_eq!(
        statuses(&resolved),
        [("Stuck".to_owned(), Status::Resolved)]
    );
    assert_eq!(engine.active().count(), 0);
}

#[test]
fn a_condition_that_clears_while_pending_never_fires() {
    let mut tracker = Tracker::new(64);
    close_wait(&mut tracker, 0xA, 40000, 0);
    let mut engine = Engine::new(
        vec![rule(
            "Stuck",
            60,
            RuleKind::CloseWaitAge {
                older_than: Duration::ZERO,
            },
        )],
        16,
    );
    assert_eq!(
        statuses(&evaluate(&mut engine, &tracker, S, 0)),
        [("Stuck".to_owned(), Status::Pending)]
    );
    let mut out = Vec::new();
    tracker.apply(
        &tr(
            0xA,
            2 * S,
            CloseWait,
            LastAck,
            "10.0.0.1:40000",
            "10.0.0.2:80",
        ),
        &mut out,
    );
    assert_eq!(
        statuses(&evaluate(&mut engine, &tracker, 3 * S, 0)),
        [("Stuck".to_owned(), Status::Inactive)]
    );
}

#[test]
fn instances_beyond_the_limit_are_suppressed_oldest_kept() {
    let mut tracker = Tracker::new(64);
    for i in 0..5 {
        close_wait(
            &mut tracker,
            0x10 + i,
            40000 + u16::try_from(i).unwrap(),
            i * S,
        );
    }
    let mut engine = Engine::new(
        vec![rule(
            "Stuck",
            0,
            RuleKind::CloseWaitAge {
                older_than: Duration::ZERO,
            },
        )],
        2,
    );
    let changes = evaluate(&mut engine, &tracker, 10 * S, 0);
    let ports: Vec<&str> = changes
        .iter()
        .map(|c| c.alert.labels["local_port"].as_str())
        .collect();
    assert_eq!(ports, ["40000", "40001"], "the two oldest");
    assert!(changes.iter().all(|c| c.status == Status::Firing));
    assert_eq!(
        engine.counts()[0],
        RuleCounts {
            name: "Stuck".to_owned(),
            pending: 0,
            firing: 2,
            suppressed: 3,
        }
    );
}

#[test]
fn reset_rate_over_a_window_per_direction_and_class() {
    let mut tracker = Tracker::new(64);
    let rule = rule(
        "Resets",
        0,
        RuleKind::ResetRate {
            above_per_second: 2.0,
            classes: vec![ResetClass::NoSocket],
            window: Duration::from_secs(10),
        },
    );
    let mut engine = Engine::new(vec![rule], 16);
    let socketless_rst = |at_ns| {
        Event::Reset(Reset {
            mono_ns: at_ns,
            direction: ResetDirection::Sent,
            sock: None,
            state: None,
            reason: None,
            family: Family::Ipv4,
            local: "10.0.0.1:80".parse().unwrap(),
            remote: "10.0.0.2:5000".parse().unwrap(),
            netns: Some(NS),
        })
    };
    assert!(
        evaluate(&mut engine, &tracker, 0, 0).is_empty(),
        "no rate yet"
    );
    let mut out = Vec::new();
    // 30 RSTs in 10 s: 3/s.
    for i in 0..30 {
        tracker.apply(&socketless_rst(i * S / 3), &mut out);
    }
    let changes = evaluate(&mut engine, &tracker, 10 * S, 0);
    assert_eq!(statuses(&changes), [("Resets".to_owned(), Status::Firing)]);
    let alert = &changes[0].alert;
    assert_eq!(alert.labels["class"], "no_socket");
    assert_eq!(alert.labels["direction"], "sent");
    assert!((alert.value - 3.0).abs() < 1e-9, "{}", alert.value);
    // No RST since the last evaluation, the only sample inside the window: rate 0, resolved.
    assert_eq!(
        statuses(&evaluate(&mut engine, &tracker, 15 * S, 0)),
        [("Resets".to_owned(), Status::Resolved)]
    );
}

#[test]
fn lost_events_fire_on_any_loss_and_timewait_usage_against_limits() {
    let tracker = Tracker::new(64);
    let mut engine = Engine::new(
        vec![rule(
            "Lost",
            0,
            RuleKind::LostEventsRate {
                above_per_second: 0.0,
                window: Duration::from_mins(5),
            },
        )],
        16,
    );
    assert!(evaluate(&mut engine, &tracker, 0, 7).is_empty());
    assert!(
        evaluate(&mut engine, &tracker, S, 7).is_empty(),
        "no new loss"
    );
    assert_eq!(
        statuses(&evaluate(&mut engine, &tracker, 2 * S, 8)),
        [("Lost".to_owned(), Status::Firing)]
    );

    // TIME_WAIT against tcp_max_tw_buckets of its namespace.
    let mut tracker = Tracker::new(64);
    let mut out = Vec::new();
    for i in 0..3u16 {
        let socket = crate::event::TimewaitSocket {
            substate: TcpState::TimeWait,
            family: Family::Ipv4,
            local: format!("10.0.0.1:{}", 40000 + i).parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            netns: Some(NS),
        };
        tracker.apply(
            &Event::Timewait(crate::event::TimewaitTimer {
                mono_ns: S,
                timer: 0x100 + u64::from(i),
                cookie: 0,
                action: crate::event::TimerAction::Start {
                    socket,
                    timeout_ns: None,
                },
            }),
            &mut out,
        );
    }
    let limits = FxHashMap::from_iter([(
        NS,
        NetLimits {
            max_tw_buckets: Some(4),
            local_port_range: Some((40000, 40003)),
        },
    )]);
    let mut engine = Engine::new(
        vec![rule(
            "Tw",
            0,
            RuleKind::TimewaitUsage {
                above_count: Some(2),
                above_bucket_fraction: Some(0.8),
                above_port_range_fraction: Some(0.5),
            },
        )],
        16,
    );
    tracker.set_limits(&limits);
    let changes = engine.evaluate(
        &Inputs {
            workloads: None,
            tracker: &tracker,
            limits: &limits,
            listeners: &[],
            lost_total: 0,
            now_ns: 2 * S,
        },
        Timestamp::UNIX_EPOCH,
    );
    let limits_hit: Vec<&str> = changes
        .iter()
        .map(|c| c.alert.labels["limit"].as_str())
        .collect();
    // 3 > 2 sockets; 3/4 buckets is below 0.8; 3 of 4 ephemeral ports toward 10.0.0.2:80.
    assert_eq!(limits_hit.len(), 2, "{limits_hit:?}");
    assert!(limits_hit.contains(&"count") && limits_hit.contains(&"ip_local_port_range"));
}

#[test]
fn a_restored_alert_keeps_its_start_and_labels_learnt_before_the_restart() {
    let mut tracker = Tracker::new(64);
    close_wait(&mut tracker, 0xA, 40000, 0);
    let stuck = || {
        rule(
            "Stuck",
            0,
            RuleKind::CloseWaitAge {
                older_than: Duration::ZERO,
            },
        )
    };
    let mut before = Engine::new(vec![stuck()], 16);
    let first = evaluate(&mut before, &tracker, S, 0);
    assert_eq!(statuses(&first), [("Stuck".to_owned(), Status::Firing)]);
    assert_eq!(first[0].alert.labels["pid"], "4242");
    let saved = before.saved();

    // The next run sees the socket again, but has not learnt its owner yet.
    let mut after_restart = Tracker::new(64);
    let mut out = Vec::new();
    after_restart.apply(
        &tr(
            0xB,
            5 * S,
            Established,
            CloseWait,
            "10.0.0.1:40000",
            "10.0.0.2:80",
        ),
        &mut out,
    );
    let mut after = Engine::new(vec![stuck()], 16);
    after.restore(saved, 5 * S);
    let again = evaluate(&mut after, &after_restart, 6 * S, 0);
    assert_eq!(statuses(&again), [("Stuck".to_owned(), Status::Firing)]);
    assert_eq!(
        again[0].alert.labels, first[0].alert.labels,
        "same identity"
    );
    assert_eq!(again[0].alert.active_since, first[0].alert.active_since);
}

fn retransmit(sock: u64, at_ns: u64, unrecovered: u8) -> Event {
    Event::Retransmit(crate::event::Retransmit {
        mono_ns: at_ns,
        kind: crate::event::RetransmitKind::Segment,
        sock,
        state: Some(Established),
        family: Family::Ipv4,
        local: "10.0.0.1:40000".parse().unwrap(),
        remote: "10.0.0.2:80".parse().unwrap(),
        netns: Some(NS),
        unrecovered: Some(unrecovered),
        err: 0,
    })
}

#[test]
fn half_open_fires_per_connection_with_its_owner_and_resolves_on_recovery() {
    let mut tracker = Tracker::new(64);
    let mut out = Vec::new();
    for e in [
        tr(0xB, S, Close, SynSent, "10.0.0.1:0", "10.0.0.2:80"),
        tr(
            0xB,
            S,
            SynSent,
            Established,
            "10.0.0.1:40000",
            "10.0.0.2:80",
        ),
    ] {
        tracker.apply(&e, &mut out);
    }
    // Timeouts at 10, 11, 13, 17 s: the RTO doubles from 1 s, nothing is acknowledged.
    for (at, n) in [(10, 1), (11, 2), (13, 3), (17, 4)] {
        tracker.apply(&retransmit(0xB, at * S, n), &mut out);
    }
    let mut engine = Engine::new(
        vec![rule(
            "HalfOpen",
            0,
            RuleKind::HalfOpenAge {
                older_than: Duration::from_secs(5),
            },
        )],
        16,
    );
    tracker.advance(18 * S, &mut out);
    let firing = evaluate(&mut engine, &tracker, 18 * S, 0);
    assert_eq!(statuses(&firing), [("HalfOpen".to_owned(), Status::Firing)]);
    let alert = &firing[0].alert;
    assert_eq!(alert.labels["pid"], "4242");
    assert_eq!(alert.labels["state"], "ESTABLISHED");
    assert_eq!(alert.labels["remote_port"], "80");
    assert!((alert.value - 8.0).abs() < 1e-9);
    assert!(
        alert.annotations["description"].contains("4 times without progress for 8s"),
        "{:?}",
        alert.annotations
    );
    // No timeout 2 x 4 s + 1 s after the last one: the peer answered.
    tracker.advance(27 * S, &mut out);
    let resolved = evaluate(&mut engine, &tracker, 27 * S, 0);
    assert_eq!(
        statuses(&resolved),
        [("HalfOpen".to_owned(), Status::Resolved)]
    );
}

#[test]
fn accept_queue_usage_fires_per_listener_above_its_fraction() {
    let tracker = Tracker::new(64);
    let listener = |port: u16, queued: u32| crate::sockdiag::Listener {
        netns: NS,
        local: SocketAddr::from(([0, 0, 0, 0], port)),
        inode: 1,
        queued,
        backlog: 4,
        syn_recv: 0,
    };
    let listeners = [listener(8080, 5), listener(9090, 3), listener(22, 0)];
    let mut engine = Engine::new(
        vec![rule(
            "Queue",
            0,
            RuleKind::AcceptQueueUsage {
                above_fraction: 0.9,
                ports: Vec::new(),
            },
        )],
        16,
    );
    let limits = FxHashMap::default();
    let changes = engine.evaluate(
        &Inputs {
            workloads: None,
            tracker: &tracker,
            limits: &limits,
            listeners: &listeners,
            lost_total: 0,
            now_ns: S,
        },
        Timestamp::from_second(1_700_000_000).unwrap(),
    );
    assert_eq!(statuses(&changes), [("Queue".to_owned(), Status::Firing)]);
    let alert = &changes[0].alert;
    assert_eq!(alert.labels["port"], "8080");
    assert_eq!(alert.labels["local_address"], "0.0.0.0");
    assert!((alert.value - 1.25).abs() < 1e-9);
    assert!(
        alert.annotations["description"].contains("holds 5 connections, 125% of its backlog of 4"),
        "{:?}",
        alert.annotations
    );
}

#[test]
fn timeout_rate_counts_only_the_chosen_timeout_causes() {
    let mut tracker = Tracker::new(64);
    let mut engine = Engine::new(
        vec![rule(
            "Timeouts",
            0,
            RuleKind::TimeoutRate {
                above_per_second: 0.5,
                causes: vec![crate::track::EndCause::KeepaliveTimeout],
                window: Duration::from_secs(10),
            },
        )],
        16,
    );
    assert!(evaluate(&mut engine, &tracker, 0, 0).is_empty());
    let mut out = Vec::new();
    let error = |sock: u64, error: i32, probes_out: u8| {
        Event::SocketError(crate::event::SocketError {
            mono_ns: S,
            sock,
            error,
            state: Some(Established),
            family: Family::Ipv4,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            netns: Some(NS),
            unrecovered: Some(0),
            probes_out: Some(probes_out),
            unsent_data: Some(false),
        })
    };
    // 8 keepalive timeouts and 20 refusals in 10 s: 0.8/s of the one cause that counts.
    for sock in 0..8 {
        tracker.apply(&error(sock, 110, 9), &mut out);
    }
    for sock in 100..120 {
        tracker.apply(&error(sock, 111, 0), &mut out);
    }
    let changes = evaluate(&mut engine, &tracker, 10 * S, 0);
    assert_eq!(
        statuses(&changes),
        [("Timeouts".to_owned(), Status::Firing)]
    );
    assert_eq!(changes[0].alert.labels["cause"], "keepalive_timeout");
    assert!((changes[0].alert.value - 0.8).abs() < 1e-9);
}
