//! JSON lines: the documented fields, and whole lines, keys in order, as they have always read.

use std::collections::BTreeMap;

use observer_common::TcpState;

use super::{S, curl, sample, socket_error, tuple};
use crate::event::Netns;
use crate::{
    alerts::{Status, deliver::ChangeRecord},
    clock::WallClock,
    event::{Family, Reset, ResetDirection, ResetReason, SocketError, Transition, Tuple},
    track::{
        EndCause, Note, Observation, Report, RetransmitPhase, TrackerStats, resets::ResetClass,
    },
    watch::{json::JsonSink, sink::Sink},
    wire::lines::{Line, LossCounts, Summary},
};

#[test]
fn json_has_the_documented_fields() {
    let (t, seen) = sample();
    let json =
        serde_json::to_value(Line::transition(&t, &seen, None, &WallClock::IDENTITY)).unwrap();
    assert_eq!(json["type"], "transition");
    assert_eq!(json["time"], "1970-01-01T00:00:00.000000005Z");
    assert_eq!(json["sock"], "0xffff888000000001");
    assert_eq!(json["family"], "ipv6");
    assert_eq!(
        (json["local_addr"].as_str(), json["local_port"].as_u64()),
        (Some("::1"), Some(40000))
    );
    assert_eq!(
        (json["old_state"].as_str(), json["new_state"].as_str()),
        (Some("SYN_SENT"), Some("ESTABLISHED"))
    );
    assert_eq!(json["prev_state_ns"], 250_000);
    assert_eq!(
        (json["pid"].as_u64(), json["comm"].as_str()),
        (Some(42), Some("curl"))
    );
    assert_eq!(
        (json["task_pid"].as_u64(), json["task_tid"].as_u64()),
        (Some(7), Some(8))
    );
    assert_eq!(json["task_comm"], "ksoftirqd/0");
    assert_eq!(
        (json["owner_context"].as_bool(), json["gap"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(json["netns"], 9);
}

#[test]
fn retransmission_json_has_the_documented_fields() {
    let owner = curl();
    let json = |phase| {
        serde_json::to_value(Line::retransmission(
            0xffff_8880_0000_0002,
            &tuple(),
            Some(TcpState::Established),
            Some(&owner),
            phase,
            20 * S,
            &WallClock::IDENTITY,
        ))
        .unwrap()
    };
    let began = json(RetransmitPhase::Began);
    assert_eq!(began["type"], "retransmission");
    assert_eq!(began["phase"], "retransmitting");
    assert_eq!(began["time"], "1970-01-01T00:00:20Z");
    assert_eq!(began["mono_ns"], 20 * S);
    assert_eq!(began["sock"], "0xffff888000000002");
    assert_eq!(began["family"], "ipv4");
    assert_eq!(
        (began["local_addr"].as_str(), began["local_port"].as_u64()),
        (Some("10.0.0.1"), Some(40000))
    );
    assert_eq!(
        (began["remote_addr"].as_str(), began["remote_port"].as_u64()),
        (Some("10.0.0.2"), Some(80))
    );
    assert_eq!(began["state"], "ESTABLISHED");
    assert!(began["retransmits"].is_null() && began["no_progress_ns"].is_null());
    assert_eq!(
        (
            began["netns"].as_u64(),
            began["pid"].as_u64(),
            began["comm"].as_str()
        ),
        (Some(9), Some(42), Some("curl"))
    );
    let suspect = json(RetransmitPhase::Suspect {
        since_ns: 8 * S,
        lower_bound: true,
        retransmits: 6,
    });
    assert_eq!(suspect["phase"], "half_open_suspect");
    assert_eq!(suspect["retransmits"], 6);
    assert_eq!(suspect["no_progress_ns"], 12 * S);
    assert_eq!(suspect["since_mono_ns"], 8 * S);
    assert_eq!(suspect["lower_bound"], true);
    let recovered = json(RetransmitPhase::Recovered {
        retransmits: 4,
        duration_ns: 2_800_000_000,
    });
    assert_eq!(recovered["phase"], "recovered");
    assert_eq!(recovered["retransmits"], 4);
    assert_eq!(recovered["no_progress_ns"], 2_800_000_000_u64);
    assert!(recovered["since_mono_ns"].is_null());
}

#[test]
fn connection_error_json_has_the_documented_fields() {
    let owner = curl();
    let e = socket_error(110, TcpState::Established);
    let json = serde_json::to_value(Line::connection_error(
        &e,
        EndCause::RetransmitTimeout,
        Some(&owner),
        Some((7, 12_600_000_000)),
        &WallClock::IDENTITY,
    ))
    .unwrap();
    assert_eq!(json["type"], "connection_error");
    assert_eq!(json["time"], "1970-01-01T00:00:30Z");
    assert_eq!(json["sock"], "0xffff888000000002");
    assert_eq!(json["family"], "ipv4");
    assert_eq!(
        (json["local_addr"].as_str(), json["remote_port"].as_u64()),
        (Some("10.0.0.1"), Some(80))
    );
    assert_eq!(json["state"], "ESTABLISHED");
    assert_eq!(json["cause"], "retransmit_timeout");
    assert_eq!(
        (json["errno"].as_i64(), json["error"].as_str()),
        (Some(110), Some("ETIMEDOUT"))
    );
    assert_eq!(json["retransmits"], 7);
    assert_eq!(json["no_progress_ns"], 12_600_000_000_u64);
    assert_eq!(json["probes"], 0);
    assert_eq!(
        (
            json["netns"].as_u64(),
            json["pid"].as_u64(),
            json["comm"].as_str()
        ),
        (Some(9), Some(42), Some("curl"))
    );
    let refused = serde_json::to_value(Line::connection_error(
        &socket_error(111, TcpState::SynSent),
        EndCause::Refused,
        None,
        None,
        &WallClock::IDENTITY,
    ))
    .unwrap();
    assert_eq!(refused["error"], "ECONNREFUSED");
    assert!(refused["retransmits"].is_null() && refused["pid"].is_null());
}

/// Writes `reports` through the JSON sink, as `observer watch --json` does, and checks each
/// line byte for byte: the same keys, in the same order, with the same values as the JSON
/// interface has always written.
fn assert_written(reports: &[Report], now_ns: u64, expected: &[&str]) {
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out, WallClock::IDENTITY);
    for report in reports {
        sink.report(report, None, now_ns).unwrap();
    }
    let written = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), expected.len());
    for (line, expected) in lines.into_iter().zip(expected) {
        assert_eq!(line, *expected);
    }
}

#[test]
fn transition_and_reset_lines_read_as_before() {
    let owner = curl();
    let t = Transition {
        old: TcpState::FinWait2,
        new: TcpState::TimeWait,
        ..sample().0
    };
    let seen = Observation {
        cgroup: None,
        previous_state_ns: Some(250_000),
        lower_bound: true,
        owner: Some(owner),
        gap: true,
    };
    let unseen = Observation {
        cgroup: None,
        previous_state_ns: None,
        lower_bound: false,
        owner: None,
        gap: false,
    };
    let sent = Reset {
        mono_ns: 1_500_000_000,
        direction: ResetDirection::Sent,
        sock: Some(0xffff_8880_0000_0003),
        state: Some(TcpState::Established),
        reason: Some(ResetReason(2)),
        family: Family::Ipv4,
        local: "10.0.0.1:80".parse().unwrap(),
        remote: "10.0.0.2:51000".parse().unwrap(),
        netns: Netns::new(9),
    };
    let reports = [
        Report::Transition {
            transition: t,
            seen,
            note: Some(Note::TimewaitEntered {
                timeout_ns: Some(60 * S),
            }),
        },
        Report::Transition {
            transition: Transition { netns: None, ..t },
            seen: unseen,
            note: None,
        },
        Report::Reset {
            cgroup: None,
            reset: sent,
            state: Some(TcpState::Established),
            class: ResetClass::AbortiveClose,
            owner: Some(owner),
        },
        Report::Reset {
            cgroup: None,
            reset: Reset {
                direction: ResetDirection::Received,
                sock: None,
                reason: None,
                netns: None,
                ..sent
            },
            state: None,
            class: ResetClass::NoSocket,
            owner: None,
        },
    ];
    assert_written(
        &reports,
        20 * S,
        &[
            r#"{"type":"transition","time":"1970-01-01T00:00:00.000000005Z","mono_ns":5,"sock":"0xffff888000000001","family":"ipv6","local_addr":"::1","local_port":40000,"remote_addr":"::1","remote_port":8080,"old_state":"FIN_WAIT2","new_state":"TIME_WAIT","prev_state_ns":250000,"prev_state_lower_bound":true,"note":"timewait_entered","timewait_timeout_ns":60000000000,"netns":9,"pid":42,"comm":"curl","task_pid":7,"task_tid":8,"task_comm":"ksoftirqd/0","owner_context":false,"gap":true}"#,
            r#"{"type":"transition","time":"1970-01-01T00:00:00.000000005Z","mono_ns":5,"sock":"0xffff888000000001","family":"ipv6","local_addr":"::1","local_port":40000,"remote_addr":"::1","remote_port":8080,"old_state":"FIN_WAIT2","new_state":"TIME_WAIT","prev_state_ns":null,"prev_state_lower_bound":false,"note":null,"timewait_timeout_ns":null,"netns":null,"pid":null,"comm":null,"task_pid":7,"task_tid":8,"task_comm":"ksoftirqd/0","owner_context":false,"gap":false}"#,
            r#"{"type":"reset","time":"1970-01-01T00:00:01.5Z","mono_ns":1500000000,"direction":"sent","sock":"0xffff888000000003","family":"ipv4","local_addr":"10.0.0.1","local_port":80,"remote_addr":"10.0.0.2","remote_port":51000,"state":"ESTABLISHED","class":"abortive_close","reason":"2","netns":9,"pid":42,"comm":"curl"}"#,
            r#"{"type":"reset","time":"1970-01-01T00:00:01.5Z","mono_ns":1500000000,"direction":"received","sock":null,"family":"ipv4","local_addr":"10.0.0.1","local_port":80,"remote_addr":"10.0.0.2","remote_port":51000,"state":null,"class":"no_socket","reason":null,"netns":null,"pid":null,"comm":null}"#,
        ],
    );
}

#[test]
fn retransmission_and_error_lines_read_as_before() {
    let owner = curl();
    let retransmits = |tuple, state, owner, phase| Report::Retransmits {
        cgroup: None,
        sock: 0xffff_8880_0000_0002,
        tuple,
        state,
        owner,
        phase,
    };
    let timed_out = socket_error(110, TcpState::Established);
    let reports = [
        retransmits(
            tuple(),
            Some(TcpState::Established),
            Some(owner),
            RetransmitPhase::Began,
        ),
        retransmits(
            tuple(),
            Some(TcpState::Established),
            Some(owner),
            RetransmitPhase::Suspect {
                since_ns: 8 * S,
                lower_bound: true,
                retransmits: 6,
            },
        ),
        retransmits(
            tuple(),
            Some(TcpState::Established),
            Some(owner),
            RetransmitPhase::Recovered {
                retransmits: 4,
                duration_ns: 2_800_000_000,
            },
        ),
        retransmits(
            Tuple {
                netns: None,
                ..tuple()
            },
            None,
            None,
            RetransmitPhase::Began,
        ),
        Report::ConnectionError {
            cgroup: None,
            error: timed_out,
            cause: EndCause::RetransmitTimeout,
            owner: Some(owner),
            retransmits: Some((7, 12_600_000_000)),
        },
        Report::ConnectionError {
            cgroup: None,
            error: SocketError {
                error: 4242,
                state: None,
                probes_out: None,
                netns: None,
                ..timed_out
            },
            cause: EndCause::Other,
            owner: None,
            retransmits: None,
        },
    ];
    assert_written(
        &reports,
        20 * S,
        &[
            r#"{"type":"retransmission","time":"1970-01-01T00:00:20Z","mono_ns":20000000000,"phase":"retransmitting","sock":"0xffff888000000002","family":"ipv4","local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":80,"state":"ESTABLISHED","retransmits":null,"no_progress_ns":null,"since_mono_ns":null,"lower_bound":false,"netns":9,"pid":42,"comm":"curl"}"#,
            r#"{"type":"retransmission","time":"1970-01-01T00:00:20Z","mono_ns":20000000000,"phase":"half_open_suspect","sock":"0xffff888000000002","family":"ipv4","local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":80,"state":"ESTABLISHED","retransmits":6,"no_progress_ns":12000000000,"since_mono_ns":8000000000,"lower_bound":true,"netns":9,"pid":42,"comm":"curl"}"#,
            r#"{"type":"retransmission","time":"1970-01-01T00:00:20Z","mono_ns":20000000000,"phase":"recovered","sock":"0xffff888000000002","family":"ipv4","local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":80,"state":"ESTABLISHED","retransmits":4,"no_progress_ns":2800000000,"since_mono_ns":null,"lower_bound":false,"netns":9,"pid":42,"comm":"curl"}"#,
            r#"{"type":"retransmission","time":"1970-01-01T00:00:20Z","mono_ns":20000000000,"phase":"retransmitting","sock":"0xffff888000000002","family":"ipv4","local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":80,"state":null,"retransmits":null,"no_progress_ns":null,"since_mono_ns":null,"lower_bound":false,"netns":null,"pid":null,"comm":null}"#,
            r#"{"type":"connection_error","time":"1970-01-01T00:00:30Z","mono_ns":30000000000,"sock":"0xffff888000000002","family":"ipv4","local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":80,"state":"ESTABLISHED","cause":"retransmit_timeout","errno":110,"error":"ETIMEDOUT","retransmits":7,"no_progress_ns":12600000000,"probes":0,"netns":9,"pid":42,"comm":"curl"}"#,
            r#"{"type":"connection_error","time":"1970-01-01T00:00:30Z","mono_ns":30000000000,"sock":"0xffff888000000002","family":"ipv4","local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":80,"state":null,"cause":"other","errno":4242,"error":"4242","retransmits":null,"no_progress_ns":null,"probes":null,"netns":null,"pid":null,"comm":null}"#,
        ],
    );
}

/// The lines that are not reports: alerts, losses, the closing summary.
#[test]
fn alert_loss_and_summary_lines_read_as_before() {
    let labels = BTreeMap::from([
        ("alertname".to_owned(), "CloseWaitPileup".to_owned()),
        ("severity".to_owned(), "warning".to_owned()),
    ]);
    let annotations = BTreeMap::from([(
        "description".to_owned(),
        "3 sockets in CLOSE_WAIT".to_owned(),
    )]);
    let alert = Line::Alert(ChangeRecord {
        time: jiff::Timestamp::from_second(100).unwrap(),
        status: Status::Firing,
        alertname: "CloseWaitPileup",
        value: 3.0,
        active_since: jiff::Timestamp::from_second(40).unwrap(),
        labels: &labels,
        annotations: &annotations,
    });
    assert_eq!(
        serde_json::to_string(&alert).unwrap(),
        r#"{"type":"alert","time":"1970-01-01T00:01:40Z","status":"firing","alertname":"CloseWaitPileup","value":3.0,"active_since":"1970-01-01T00:00:40Z","labels":{"alertname":"CloseWaitPileup","severity":"warning"},"annotations":{"description":"3 sockets in CLOSE_WAIT"}}"#
    );

    let losses = LossCounts {
        lost_total: 6,
        lost_ring_buffer_full: 1,
        lost_recursion_misses: 2,
        lost_read_failed: 3,
        malformed: 0,
        timer_recursion_misses: 5,
    };
    let summary = Summary {
        received: 100,
        shown: 40,
        shown_not_transitions: 7,
        losses,
        gaps: 2,
        evicted_sockets: 1,
        tracker: TrackerStats::default(),
    };
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out, WallClock::IDENTITY);
    sink.losses(losses).unwrap();
    sink.summary(&summary).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}\n{}\n",
            r#"{"type":"loss","lost_total":6,"lost_ring_buffer_full":1,"lost_recursion_misses":2,"lost_read_failed":3,"malformed":0,"timer_recursion_misses":5}"#,
            r#"{"type":"summary","received":100,"shown":40,"shown_not_transitions":7,"lost_total":6,"lost_ring_buffer_full":1,"lost_recursion_misses":2,"lost_read_failed":3,"malformed":0,"timer_recursion_misses":5,"gaps":2,"evicted_sockets":1}"#
        )
    );
}

#[test]
fn lines_about_a_socket_name_its_workload() {
    use crate::event::CgroupId;
    use crate::workload::{Attribution, Workload};
    let owner = curl();
    let cgroup = CgroupId::new(77);
    let nginx = Attribution {
        cgroup: "/system.slice/nginx.service".to_owned(),
        workload: Workload::from_path("/system.slice/nginx.service"),
        pod: None,
    };
    let (t, _) = sample();
    let reports = [
        Report::Reset {
            reset: Reset {
                mono_ns: t.mono_ns,
                direction: ResetDirection::Sent,
                sock: Some(t.sock),
                state: Some(TcpState::Established),
                reason: None,
                family: t.family,
                local: t.local,
                remote: t.remote,
                netns: t.netns,
            },
            state: Some(TcpState::Established),
            class: ResetClass::AbortiveClose,
            owner: Some(owner),
            cgroup,
        },
        Report::Retransmits {
            sock: t.sock,
            tuple: tuple(),
            state: Some(TcpState::Established),
            owner: Some(owner),
            cgroup,
            phase: RetransmitPhase::Began,
        },
        Report::ConnectionError {
            error: socket_error(110, TcpState::Established),
            cause: EndCause::RetransmitTimeout,
            owner: Some(owner),
            cgroup,
            retransmits: None,
        },
    ];
    for report in &reports {
        assert_eq!(report.cgroup(), cgroup);
        let mut out = Vec::new();
        JsonSink::new(&mut out, WallClock::IDENTITY)
            .report(report, Some(&nginx), 20 * S)
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["cgroup"], "/system.slice/nginx.service", "{line}");
        assert_eq!(line["unit"], "nginx.service", "{line}");
    }
}
