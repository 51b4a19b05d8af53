//! Terminal lines: what each says, and whole lines as they have always read.

use observer_common::TcpState;

use super::{S, curl, sample, socket_error, tuple};
use crate::event::Netns;
use crate::{
    clock::WallClock,
    event::{Family, Reset, ResetDirection, ResetReason, SocketError, Transition, Tuple},
    track::{EndCause, Note, Observation, RetransmitPhase, resets::ResetClass},
    watch::text::{TextContext, connection_error_line, reset_line, retransmits_line, text_line},
};

fn context<'a>(
    clock: &'a WallClock,
    tz: &'a jiff::tz::TimeZone,
    own_netns: Option<Netns>,
    color: bool,
) -> TextContext<'a> {
    TextContext {
        clock,
        tz,
        own_netns,
        color,
    }
}

fn text_context<'a>(
    clock: &'a WallClock,
    tz: &'a jiff::tz::TimeZone,
    color: bool,
) -> TextContext<'a> {
    context(clock, tz, Netns::new(9), color)
}

#[test]
fn text_line_shows_owner_addresses_states_and_time_in_state() {
    let (t, seen) = sample();
    let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
    let line = text_line(&t, &seen, None, &context(&clock, &tz, Netns::new(9), false));
    assert!(line.starts_with("00:00:00.000000 42/curl "), "{line}");
    assert!(line.contains("[::1]:40000 -> [::1]:8080"), "{line}");
    assert!(line.contains("SYN_SENT -> ESTABLISHED (250µs)"), "{line}");
    assert!(!line.contains("netns"), "own netns is not repeated: {line}");
    let unknown = Observation {
        cgroup: None,
        owner: None,
        previous_state_ns: None,
        lower_bound: false,
        gap: true,
    };
    let line = text_line(
        &t,
        &unknown,
        None,
        &context(&clock, &tz, Netns::new(1), true),
    );
    assert!(line.contains(" ? "), "{line}");
    assert!(line.contains("\u{1b}["), "colour codes when asked: {line}");
    assert!(
        line.ends_with("[missed transitions before this one] netns 9"),
        "{line}"
    );
}

/// Transition lines, whole, as they have always read.
#[test]
fn transition_lines_read_as_before() {
    let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
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
    let entered = Some(Note::TimewaitEntered {
        timeout_ns: Some(60 * S),
    });
    let listen = Transition {
        netns: None,
        old: TcpState::Listen,
        new: TcpState::CloseWait,
        ..t
    };
    let cases = [
        (
            text_line(&t, &seen, None, &context(&clock, &tz, Netns::new(1), false)),
            "00:00:00.000000 42/curl                              [::1]:40000 -> [::1]:8080                FIN_WAIT2 -> TIME_WAIT (>=250µs) [missed transitions before this one] netns 9",
        ),
        (
            text_line(
                &t,
                &seen,
                entered,
                &context(&clock, &tz, Netns::new(9), false),
            ),
            "00:00:00.000000 42/curl                              [::1]:40000 -> [::1]:8080                FIN_WAIT2 -> TIME_WAIT (>=250µs) [timewait socket, ends in 1m00s] [missed transitions before this one]",
        ),
        (
            text_line(
                &t,
                &seen,
                Some(Note::NoTimewait),
                &context(&clock, &tz, Netns::new(1), true),
            ),
            "00:00:00.000000 42/curl                              [::1]:40000 -> [::1]:8080                FIN_WAIT2 -> \u{1b}[33mTIME_WAIT\u{1b}[0m (>=250µs) [no timewait socket] [missed transitions before this one] netns 9",
        ),
        (
            text_line(
                &t,
                &seen,
                Some(Note::NoTimewait),
                &context(&clock, &tz, Netns::new(9), true),
            ),
            "00:00:00.000000 42/curl                              [::1]:40000 -> [::1]:8080                FIN_WAIT2 -> \u{1b}[33mTIME_WAIT\u{1b}[0m (>=250µs) [no timewait socket] [missed transitions before this one]",
        ),
        (
            text_line(
                &listen,
                &seen,
                None,
                &context(&clock, &tz, Netns::new(9), true),
            ),
            "00:00:00.000000 42/curl                              [::1]:40000 -> [::1]:8080                \u{1b}[34mLISTEN\u{1b}[0m -> \u{1b}[33mCLOSE_WAIT\u{1b}[0m (>=250µs) [missed transitions before this one]",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(line, expected);
    }
}

/// RST lines, whole, as they have always read.
#[test]
fn reset_lines_read_as_before() {
    let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
    let owner = curl();
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
    let received = Reset {
        direction: ResetDirection::Received,
        sock: None,
        reason: None,
        netns: None,
        ..sent
    };
    let unknown_netns = Reset {
        netns: None,
        ..sent
    };
    let abortive = |r: &Reset, ctx| {
        reset_line(
            r,
            Some(TcpState::Established),
            ResetClass::AbortiveClose,
            Some(&owner),
            &ctx,
        )
    };
    let no_socket = |r: &Reset, ctx| reset_line(r, None, ResetClass::NoSocket, None, &ctx);
    let cases = [
        (
            abortive(&sent, context(&clock, &tz, None, false)),
            "00:00:01.500000 42/curl                              10.0.0.1:80 -> 10.0.0.2:51000            RST sent in ESTABLISHED: abortive close (SO_LINGER 0) (reason 2) netns 9",
        ),
        (
            no_socket(&received, context(&clock, &tz, None, false)),
            "00:00:01.500000 ?                                    10.0.0.1:80 -> 10.0.0.2:51000            RST received in no socket: no socket for the segment (connection refused, or stale)",
        ),
        (
            no_socket(&unknown_netns, context(&clock, &tz, Netns::new(9), false)),
            "00:00:01.500000 ?                                    10.0.0.1:80 -> 10.0.0.2:51000            RST sent in no socket: no socket for the segment (connection refused, or stale) (reason 2)",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(line, expected);
    }
}

#[test]
fn retransmission_lines_say_what_changed() {
    let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
    let ctx = text_context(&clock, &tz, false);
    let owner = curl();
    let line = |phase, owner| {
        retransmits_line(
            &tuple(),
            Some(TcpState::Established),
            owner,
            phase,
            20 * S,
            &ctx,
        )
    };
    let began = line(RetransmitPhase::Began, Some(&owner));
    assert!(began.starts_with("00:00:20.000000 42/curl "), "{began}");
    assert!(began.contains(" 10.0.0.1:40000 -> 10.0.0.2:80 "), "{began}");
    assert!(
        began.ends_with(" RETRANSMIT in ESTABLISHED: retransmitting, no progress"),
        "{began}"
    );
    let suspect = line(
        RetransmitPhase::Suspect {
            since_ns: 7_600_000_000,
            lower_bound: false,
            retransmits: 6,
        },
        None,
    );
    assert!(suspect.contains(" ? "), "{suspect}");
    assert!(
        suspect.ends_with("HALF-OPEN? in ESTABLISHED: no progress for 12.4s, 6 retransmissions"),
        "{suspect}"
    );
    let seen_late = line(
        RetransmitPhase::Suspect {
            since_ns: 7_600_000_000,
            lower_bound: true,
            retransmits: 1,
        },
        None,
    );
    assert!(
        seen_late.ends_with("no progress for >=12.4s, >=1 retransmission"),
        "{seen_late}"
    );
    let recovered = line(
        RetransmitPhase::Recovered {
            retransmits: 4,
            duration_ns: 2_800_000_000,
        },
        Some(&owner),
    );
    assert!(
        recovered.ends_with("RECOVERED in ESTABLISHED: progress after 4 retransmissions over 2.8s"),
        "{recovered}"
    );
    let other_netns = Tuple {
        netns: Netns::new(10),
        ..tuple()
    };
    let coloured = retransmits_line(
        &other_netns,
        None,
        None,
        RetransmitPhase::Began,
        S,
        &text_context(&clock, &tz, true),
    );
    assert!(coloured.contains("\u{1b}["), "{coloured}");
    assert!(coloured.ends_with("no progress netns 10"), "{coloured}");
    assert!(
        !coloured.contains(" in "),
        "no state when unknown: {coloured}"
    );
}

#[test]
fn connection_error_lines_name_the_cause_and_errno() {
    let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
    let ctx = text_context(&clock, &tz, false);
    let owner = curl();
    let timeout = connection_error_line(
        &socket_error(110, TcpState::Established),
        EndCause::RetransmitTimeout,
        Some(&owner),
        Some((7, 12_600_000_000)),
        &ctx,
    );
    assert!(timeout.starts_with("00:00:30.000000 42/curl "), "{timeout}");
    assert!(
        timeout.ends_with(
            "TIMEOUT in ESTABLISHED: gave up retransmitting after 7 retransmissions over \
             12.6s (retransmit_timeout, ETIMEDOUT)"
        ),
        "{timeout}"
    );
    let keepalive = SocketError {
        probes_out: Some(9),
        ..socket_error(110, TcpState::Established)
    };
    let line = connection_error_line(&keepalive, EndCause::KeepaliveTimeout, None, None, &ctx);
    assert!(
        line.ends_with(
            "TIMEOUT in ESTABLISHED: keepalive probes unanswered after 9 probes \
             (keepalive_timeout, ETIMEDOUT)"
        ),
        "{line}"
    );
    let refused = connection_error_line(
        &socket_error(111, TcpState::SynSent),
        EndCause::Refused,
        None,
        None,
        &ctx,
    );
    assert!(
        refused.ends_with(
            "REFUSED in SYN_SENT: connection refused by the peer (refused, ECONNREFUSED)"
        ),
        "{refused}"
    );
    let reset = connection_error_line(
        &socket_error(32, TcpState::Established),
        EndCause::Reset,
        None,
        None,
        &ctx,
    );
    assert!(
        reset.ends_with("RESET in ESTABLISHED: connection reset by the peer (reset, EPIPE)"),
        "{reset}"
    );
    let odd = SocketError {
        netns: Netns::new(10),
        ..socket_error(200, TcpState::Established)
    };
    let line = connection_error_line(&odd, EndCause::Other, None, None, &ctx);
    assert!(
        line.ends_with("ERROR in ESTABLISHED: socket error (other, 200) netns 10"),
        "{line}"
    );
}
