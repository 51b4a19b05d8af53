//! Round trips: every event the encoder writes decodes back to itself with the decoder of the
//! same layouts.

use observer_common::{RecordKind, TcpState};

use super::{EncodeError, Encoder, linux_6_18};
use crate::event::{
    Event, Family, Netns, Reset, ResetDirection, ResetReason, Retransmit, RetransmitKind,
    SocketError, Task, TimerAction, TimewaitSocket, TimewaitTimer, Transition,
};

const NETNS: Netns = Netns::new(4_026_531_840).unwrap();

fn round_trip(event: Event) {
    let codec = linux_6_18::codec();
    let mut bytes = Vec::new();
    codec.encoder.encode(&event, &mut bytes).unwrap();
    assert_eq!(codec.decoder.decode(&bytes), Ok(event));
}

fn transition(old: TcpState, new: TcpState, local: &str, remote: &str) -> Transition {
    let local: std::net::SocketAddr = local.parse().unwrap();
    Transition {
        cgroup: None,
        mono_ns: 10_000_000_123,
        sock: 0xffff_8880_1234_5678,
        old,
        new,
        family: if local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        },
        local,
        remote: remote.parse().unwrap(),
        netns: Some(NETNS),
        task: Task::new(1234, 1235, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
        owner_context: TcpState::in_owner_context(old, new),
        has_socket: Some(true),
    }
}

#[test]
fn transitions_round_trip() {
    use TcpState::{Close, Established, Listen, SynRecv, SynSent};
    round_trip(Event::Transition(transition(
        SynSent,
        Established,
        "127.0.0.1:43210",
        "127.0.0.2:8080",
    )));
    round_trip(Event::Transition(transition(
        Close,
        SynSent,
        "[fd00::1]:0",
        "[fd00::2]:443",
    )));
    round_trip(Event::Transition(Transition {
        has_socket: Some(false),
        netns: None,
        ..transition(Listen, SynRecv, "10.0.0.1:8080", "10.0.0.2:50000")
    }));
    round_trip(Event::Transition(Transition {
        has_socket: None,
        task: Task::named(1, "systemd"),
        ..transition(Established, Close, "[::1]:8080", "[::1]:50000")
    }));
}

fn reset(direction: ResetDirection, local: &str, remote: &str) -> Reset {
    let local: std::net::SocketAddr = local.parse().unwrap();
    Reset {
        mono_ns: 77,
        direction,
        sock: Some(0xffff_8880_0000_1000),
        state: None,
        reason: None,
        family: if local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        },
        local,
        remote: remote.parse().unwrap(),
        netns: Some(NETNS),
    }
}

#[test]
fn resets_round_trip_with_either_address_layout() {
    // Sent: addresses as sockaddr blobs, a state and a reason.
    round_trip(Event::Reset(Reset {
        state: Some(TcpState::Close),
        reason: Some(ResetReason(14)),
        ..reset(ResetDirection::Sent, "127.0.0.1:40000", "127.0.0.2:8080")
    }));
    round_trip(Event::Reset(Reset {
        sock: None,
        reason: Some(ResetReason(1)),
        ..reset(ResetDirection::Sent, "[::1]:9000", "[::1]:40000")
    }));
    // Received: separate ports, family and addresses, no state nor reason on this kernel.
    round_trip(Event::Reset(reset(
        ResetDirection::Received,
        "127.0.0.1:8080",
        "127.0.0.1:40000",
    )));
    round_trip(Event::Reset(reset(
        ResetDirection::Received,
        "[fd00::1]:8080",
        "[fd00::2]:40000",
    )));
}

#[test]
fn retransmissions_round_trip() {
    round_trip(Event::Retransmit(Retransmit {
        mono_ns: 31,
        kind: RetransmitKind::Segment,
        sock: 0xffff_8880_0000_1000,
        state: Some(TcpState::Established),
        family: Family::Ipv4,
        local: "127.0.0.1:40000".parse().unwrap(),
        remote: "127.0.0.2:8080".parse().unwrap(),
        netns: Some(NETNS),
        unrecovered: Some(3),
        err: -11,
    }));
    round_trip(Event::Retransmit(Retransmit {
        mono_ns: 32,
        kind: RetransmitKind::Synack,
        sock: 0xabcd,
        state: None,
        family: Family::Ipv6,
        local: "[::1]:8080".parse().unwrap(),
        remote: "[::2]:40000".parse().unwrap(),
        netns: None,
        unrecovered: None,
        err: 0,
    }));
}

#[test]
fn timewait_timers_round_trip() {
    let timer = |action| {
        Event::Timewait(TimewaitTimer {
            mono_ns: 10_000_000_000,
            timer: 0xffff_88c0_0000_0060,
            cookie: 0x1234,
            action,
        })
    };
    for (substate, local, remote) in [
        (TcpState::TimeWait, "127.0.0.1:40000", "127.0.0.2:8080"),
        (TcpState::FinWait2, "[fd00::1]:40000", "[fd00::2]:443"),
    ] {
        let local: std::net::SocketAddr = local.parse().unwrap();
        round_trip(timer(TimerAction::Start {
            socket: TimewaitSocket {
                substate,
                family: if local.is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                },
                local,
                remote: remote.parse().unwrap(),
                netns: Some(NETNS),
            },
            // Whole jiffies at HZ=250.
            timeout_ns: Some(60_000_000_000),
        }));
    }
    round_trip(timer(TimerAction::Cancel));
    round_trip(timer(TimerAction::Expire {
        substate: Some(TcpState::TimeWait),
    }));
    round_trip(timer(TimerAction::Expire { substate: None }));
}

#[test]
fn socket_errors_round_trip() {
    let refused = SocketError {
        mono_ns: 77,
        sock: 0xffff_8880_0000_2000,
        error: 111,
        state: Some(TcpState::Close),
        family: Family::Ipv4,
        local: "127.0.0.1:40000".parse().unwrap(),
        remote: "127.0.0.2:8080".parse().unwrap(),
        netns: Some(NETNS),
        unrecovered: Some(0),
        probes_out: Some(0),
        unsent_data: Some(false),
    };
    round_trip(Event::SocketError(refused));
    round_trip(Event::SocketError(SocketError {
        error: 110,
        state: Some(TcpState::Established),
        family: Family::Ipv6,
        local: "[fd00::1]:50000".parse().unwrap(),
        remote: "[fd00::2]:443".parse().unwrap(),
        netns: None,
        unrecovered: Some(15),
        probes_out: Some(2),
        unsent_data: Some(true),
        ..refused
    }));
    round_trip(Event::SocketError(SocketError {
        unrecovered: None,
        probes_out: None,
        unsent_data: None,
        ..refused
    }));
}

#[test]
fn an_event_without_its_program_is_refused() {
    let event = Event::Transition(transition(
        TcpState::SynSent,
        TcpState::Established,
        "127.0.0.1:1",
        "127.0.0.1:2",
    ));
    let mut bytes = Vec::new();
    assert_eq!(
        Encoder::default().encode(&event, &mut bytes),
        Err(EncodeError::NotEnabled(RecordKind::StateChange))
    );
    assert!(bytes.is_empty());
}
