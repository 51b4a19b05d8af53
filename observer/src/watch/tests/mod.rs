//! What `observer watch` writes, checked on fixed events: terminal lines ([`text`]) and JSON
//! lines ([`json`]).

mod json;
mod text;

use observer_common::TcpState;

use crate::event::Netns;
use crate::{
    event::{Family, SocketError, Task, Transition, Tuple},
    track::Observation,
};

pub const S: u64 = 1_000_000_000;

/// A connection made in softirq context for curl, 250µs in SYN_SENT.
pub fn sample() -> (Transition, Observation) {
    let t = Transition {
        cgroup: None,
        mono_ns: 5,
        sock: 0xffff_8880_0000_0001,
        old: TcpState::SynSent,
        new: TcpState::Established,
        family: Family::Ipv6,
        local: "[::1]:40000".parse().unwrap(),
        remote: "[::1]:8080".parse().unwrap(),
        netns: Netns::new(9),
        task: Task::new(7, 8, *b"ksoftirqd/0\0\0\0\0\0"),
        owner_context: false,
        has_socket: Some(true),
    };
    (
        t,
        Observation {
            cgroup: None,
            previous_state_ns: Some(250_000),
            lower_bound: false,
            owner: Some(curl()),
            gap: false,
        },
    )
}

pub fn tuple() -> Tuple {
    Tuple {
        netns: Netns::new(9),
        local: "10.0.0.1:40000".parse().unwrap(),
        remote: "10.0.0.2:80".parse().unwrap(),
    }
}

pub fn curl() -> Task {
    Task::new(42, 42, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0")
}

pub fn socket_error(error: i32, state: TcpState) -> SocketError {
    let t = tuple();
    SocketError {
        mono_ns: 30 * S,
        sock: 0xffff_8880_0000_0002,
        error,
        state: Some(state),
        family: Family::Ipv4,
        local: t.local,
        remote: t.remote,
        netns: Netns::new(9),
        unrecovered: Some(7),
        probes_out: Some(0),
        unsent_data: Some(true),
    }
}
