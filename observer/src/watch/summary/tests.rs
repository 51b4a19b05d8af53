//! The summary built from tracker states, as text and JSON.

use std::net::SocketAddr;

use super::*;

use crate::event::{Event, Family, Retransmit, RetransmitKind, SocketError, Task, Transition};
use crate::{pipeline::State, track::Tracker};

/// A host with no cgroup2 mount: no workload is named.
fn no_cgroups() -> Resolver {
    Resolver::new(None, std::path::Path::new("/nonexistent"))
}

const S: u64 = 1_000_000_000;

fn local() -> SocketAddr {
    "10.0.0.1:40000".parse().unwrap()
}

fn remote() -> SocketAddr {
    "10.0.0.2:80".parse().unwrap()
}

fn transition(at_ns: u64, old: TcpState, new: TcpState) -> Event {
    Event::Transition(Transition {
        cgroup: None,
        mono_ns: at_ns,
        sock: 7,
        old,
        new,
        family: Family::Ipv4,
        local: local(),
        remote: remote(),
        netns: Netns::new(9),
        task: Task::new(42, 42, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
        owner_context: true,
        has_socket: Some(true),
    })
}

fn retransmit(at_ns: u64, kind: RetransmitKind, unrecovered: u8) -> Retransmit {
    Retransmit {
        mono_ns: at_ns,
        kind,
        sock: 7,
        state: Some(TcpState::Established),
        family: Family::Ipv4,
        local: local(),
        remote: remote(),
        netns: Netns::new(9),
        unrecovered: Some(unrecovered),
        err: 0,
    }
}

/// A connection retransmitting since 1 s (still at 17 s), a refused connect, two
/// SYN-ACK retransmissions by a listener on port 80.
fn tracker() -> Tracker {
    let mut tracker = Tracker::new(64);
    let mut out = Vec::new();
    let mut feed = |e: Event| tracker.apply(&e, &mut out);
    feed(transition(0, TcpState::Close, TcpState::SynSent));
    feed(transition(1000, TcpState::SynSent, TcpState::Established));
    for (i, at) in [1, 2, 4, 8, 16].into_iter().enumerate() {
        let n = u8::try_from(i + 1).unwrap();
        feed(Event::Retransmit(retransmit(
            at * S,
            RetransmitKind::Segment,
            n,
        )));
    }
    feed(Event::SocketError(SocketError {
        mono_ns: 17 * S,
        sock: 8,
        error: 111,
        state: Some(TcpState::SynSent),
        family: Family::Ipv4,
        local: "10.0.0.1:40001".parse().unwrap(),
        remote: remote(),
        netns: Netns::new(9),
        unrecovered: Some(0),
        probes_out: Some(0),
        unsent_data: Some(false),
    }));
    for _ in 0..2 {
        feed(Event::Retransmit(Retransmit {
            sock: 9,
            state: None,
            local: "10.0.0.1:80".parse().unwrap(),
            remote: "10.0.0.3:50000".parse().unwrap(),
            unrecovered: None,
            ..retransmit(17 * S, RetransmitKind::Synack, 0)
        }));
    }
    tracker
}

#[test]
fn text_lists_half_open_suspects_errors_and_retransmissions() {
    let state = State::new(tracker(), 10 * S);
    let snapshot = state.snapshot_at(LISTED, 17 * S);
    let summary = build(&snapshot, &no_cgroups());
    let text = render_text(&summary);
    assert!(
        text.contains(
            "   half-open suspects: 1 (no progress for 10s or more, oldest first)\n     \
             10.0.0.1:40000 -> 10.0.0.2:80 in ESTABLISHED, no progress for 16s, 5 \
             retransmissions (5 in all), owned by 42/curl (netns 9)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("   connection errors: refused in SYN_SENT 1;\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "   retransmissions: segments 5, SYN-ACKs 2; streaks without progress 1, \
             recovered 0; untracked 0; timeouts unreported 0\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("   SYN-ACK retransmissions: port 80 (netns 9) 2;\n"),
        "{text}"
    );
    let state = State::new(tracker(), 20 * S);
    let snapshot = state.snapshot_at(LISTED, 17 * S);
    let later = build(&snapshot, &no_cgroups());
    let text = render_text(&later);
    assert!(
        text.contains("half-open suspects: 0 (no progress for 20s or more"),
        "{text}"
    );
}

#[test]
fn empty_sections_say_none() {
    let text = render_text(&build(
        &State::new(Tracker::new(4), 10 * S).snapshot_at(LISTED, S),
        &no_cgroups(),
    ));
    assert!(text.contains("   connection errors: none\n"), "{text}");
    assert!(
        text.contains("   SYN-ACK retransmissions: none\n"),
        "{text}"
    );
}

#[test]
fn json_has_the_documented_fields() {
    let json = serde_json::to_value(build(
        &State::new(tracker(), 10 * S).snapshot_at(LISTED, 17 * S),
        &no_cgroups(),
    ))
    .unwrap();
    assert_eq!(json["type"], "state_summary");
    assert_eq!(json["half_open_after_ns"], 10 * S);
    assert_eq!(json["half_open_total"], 1);
    let h = &json["half_open"][0];
    assert_eq!(
        (
            h["local"].as_str(),
            h["remote"].as_str(),
            h["netns"].as_u64()
        ),
        (Some("10.0.0.1:40000"), Some("10.0.0.2:80"), Some(9))
    );
    assert_eq!(h["state"], "ESTABLISHED");
    assert_eq!(h["age_ns"], 16 * S);
    assert_eq!(h["age_lower_bound"], false);
    assert_eq!(
        (h["retransmits"].as_u64(), h["total_retransmits"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        (h["pid"].as_u64(), h["comm"].as_str()),
        (Some(42), Some("curl"))
    );
    assert_eq!(
        json["connection_ends"],
        serde_json::json!([{"cause": "refused", "state": "SYN_SENT", "count": 1}])
    );
    assert_eq!(json["connection_timeouts"], 0);
    let r = &json["retransmits"];
    assert_eq!(
        (r["segments"].as_u64(), r["synacks"].as_u64()),
        (Some(5), Some(2))
    );
    for field in ["streaks", "recovered", "untracked", "synack_overflow"] {
        assert!(r[field].is_u64(), "{field}");
    }
    assert_eq!(
        json["synack_retransmits"],
        serde_json::json!([{"netns": 9, "port": 80, "count": 2}])
    );
}

#[test]
fn close_wait_is_grouped_by_the_workload_that_created_it() {
    use std::os::unix::fs::MetadataExt as _;

    use crate::event::CgroupId;

    let root = std::env::temp_dir().join(format!("observer-summary-cg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let unit = root.join("system.slice/nginx.service");
    std::fs::create_dir_all(&unit).unwrap();
    let id = CgroupId::new(std::fs::metadata(&unit).unwrap().ino()).unwrap();
    let workloads = Resolver::new(Some(root.clone()), &root.join("none"));
    let mut tracker = Tracker::new(16);
    let mut out = Vec::new();
    for (sock, cgroup, at) in [(1, Some(id), 2 * S), (2, Some(id), 3 * S), (3, None, 4 * S)] {
        let mut feed = |old, new| {
            if let Event::Transition(t) = transition(at, old, new) {
                let e = Event::Transition(Transition {
                    sock,
                    cgroup,
                    local: format!("10.0.0.1:{}", 40000 + sock).parse().unwrap(),
                    ..t
                });
                tracker.apply(&e, &mut out);
            }
        };
        feed(TcpState::Close, TcpState::SynSent);
        feed(TcpState::SynSent, TcpState::Established);
        feed(TcpState::Established, TcpState::CloseWait);
    }
    let snapshot = State::new(tracker, 10 * S).snapshot_at(LISTED, 10 * S);
    let summary = build(&snapshot, &workloads);
    std::fs::remove_dir_all(&root).unwrap();
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(
        json["close_wait_by_workload"],
        serde_json::json!([
            {"workload": "nginx.service", "sockets": 2, "oldest_age_ns": 8 * S},
            {"workload": "unknown", "sockets": 1, "oldest_age_ns": 6 * S},
        ])
    );
    assert!(
        render_text(&summary)
            .contains("     by workload: nginx.service 2 (oldest 8s), unknown 1 (oldest 6s)\n"),
        "{}",
        render_text(&summary)
    );
}
