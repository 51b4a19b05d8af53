//! The tracker on recorded event sequences, shaped like what Linux 6.18 emits.

use std::net::SocketAddr;

use observer_common::TcpState::{
    self, Close, CloseWait, Closing, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv,
    SynSent, TimeWait,
};

use super::*;
use crate::event::{
    Family, ListenerKey, Netns, PerState, ResetDirection, ResetReason, TimerAction, TimewaitSocket,
    TimewaitTimer,
};

const NS: Netns = Netns::new(4_026_532_000).unwrap();
const MS: u64 = 1_000_000;
const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:8080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn task(pid: u32) -> Task {
    Task::named(pid, "app")
}

/// A transition of socket `sock` between `local` and `remote` at `ms` milliseconds. As the state
/// program reads them: the namespace at a socket's birth (out of CLOSE or LISTEN) only.
fn tr(sock: u64, ms: u64, old: TcpState, new: TcpState, local: &str, remote: &str) -> Event {
    Event::Transition(Transition {
        cgroup: None,
        mono_ns: ms * MS,
        sock,
        old,
        new,
        family: Family::Ipv4,
        local: addr(local),
        remote: addr(remote),
        netns: matches!(old, Close | Listen).then_some(NS),
        task: task(if TcpState::in_owner_context(old, new) {
            100
        } else {
            999
        }),
        owner_context: TcpState::in_owner_context(old, new),
        has_socket: Some(true),
    })
}

fn timer(timer: u64, ms: u64, action: TimerAction) -> Event {
    cookie_timer(timer, 0, ms, action)
}

fn cookie_timer(timer: u64, cookie: u64, ms: u64, action: TimerAction) -> Event {
    Event::Timewait(TimewaitTimer {
        mono_ns: ms * MS,
        timer,
        cookie,
        action,
    })
}

fn tw_socket(substate: TcpState, local: &str, remote: &str) -> TimewaitSocket {
    TimewaitSocket {
        substate,
        family: Family::Ipv4,
        local: addr(local),
        remote: addr(remote),
        netns: Some(NS),
    }
}

/// The timer of a socket in TIME_WAIT fires at `ms`.
fn expiry(t: u64, ms: u64) -> Event {
    timer(
        t,
        ms,
        TimerAction::Expire {
            substate: Some(TimeWait),
        },
    )
}

/// The report of a TIME_WAIT that expired after `spent_ms`.
const fn expired_after(spent_ms: u64) -> (TcpState, TcpState, Option<u64>, Option<Note>) {
    (
        TimeWait,
        Close,
        Some(spent_ms * MS),
        Some(Note::TimewaitEnded(TimewaitEnd::Expired)),
    )
}

/// The report of a timewait socket that entered TIME_WAIT through the peer's FIN (its timer
/// re-armed for the kernel's fixed 60 s) after `spent_ms` in FIN_WAIT2.
const fn fin_entered_after(spent_ms: u64) -> (TcpState, TcpState, Option<u64>, Option<Note>) {
    (
        FinWait2,
        TimeWait,
        Some(spent_ms * MS),
        Some(Note::TimewaitEntered {
            timeout_ns: Some(60_000 * MS),
        }),
    )
}

fn start(t: u64, ms: u64, substate: TcpState) -> Event {
    timer(
        t,
        ms,
        TimerAction::Start {
            socket: tw_socket(substate, CLIENT, SERVER),
            timeout_ns: Some(60_000 * MS),
        },
    )
}

fn feed(tracker: &mut Tracker, events: &[Event]) -> Vec<Report> {
    let mut out = Vec::new();
    for e in events {
        tracker.apply(e, &mut out);
    }
    out
}

/// (old, new, time in old, note) of each transition report.
fn transitions(reports: &[Report]) -> Vec<(TcpState, TcpState, Option<u64>, Option<Note>)> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Transition {
                transition,
                seen,
                note,
            } => Some((
                transition.old,
                transition.new,
                seen.previous_state_ns,
                *note,
            )),
            _ => None,
        })
        .collect()
}

/// The client side of a connection up to its close() (socket 0xA, FIN_WAIT1 at 10 ms).
fn client_until_fin_wait1() -> Vec<Event> {
    vec![
        tr(0xA, 0, Close, SynSent, "127.0.0.1:0", SERVER),
        tr(0xA, 1, SynSent, Established, CLIENT, SERVER),
        tr(0xA, 10, Established, FinWait1, CLIENT, SERVER),
    ]
}

/// The server side of the same connection (socket 0xB), from its birth to CLOSE_WAIT at 10 ms.
fn server_until_close_wait() -> Vec<Event> {
    vec![
        tr(0xB, 0, Listen, SynRecv, SERVER, CLIENT),
        tr(0xB, 1, SynRecv, Established, SERVER, CLIENT),
        tr(0xB, 10, Established, CloseWait, SERVER, CLIENT),
    ]
}

/// The same, up to FIN_WAIT2 at 11 ms.
fn client_until_fin_wait2() -> Vec<Event> {
    let mut events = client_until_fin_wait1();
    events.push(tr(0xA, 11, FinWait1, FinWait2, CLIENT, SERVER));
    events
}

/// What the tracker knew about a transition report.
fn observation(report: &Report) -> Observation {
    match report {
        Report::Transition { seen, .. } => *seen,
        _ => panic!("expected a transition, got {report:?}"),
    }
}

mod connections;
mod reconcile;
mod timewait;

fn tuple(local: &str, remote: &str) -> Tuple {
    Tuple {
        netns: Some(NS),
        local: addr(local),
        remote: addr(remote),
    }
}

fn listed(local: &str, remote: &str, state: TcpState) -> SeedSocket {
    SeedSocket {
        cgroup: None,
        tuple: tuple(local, remote),
        state,
        timewait: state == TimeWait,
        owner: None,
        cookie: 0,
    }
}

/// started + seeded = expired + killed + unseen + open, whatever happened.
fn assert_timewait_identity(tracker: &Tracker) {
    let c = tracker.timewait_counts();
    assert_eq!(
        c.started + c.seeded,
        c.ended_total() + tracker.stats().tracked_timewait as u64,
        "{c:?}"
    );
}

/// A cgroup's sockets, the states with some.
type CgroupCounts = (Option<CgroupId>, Vec<(TcpState, u64)>);

/// Sockets by cgroup and state as a walk of both tables counts them.
fn walked_by_cgroup(tracker: &Tracker) -> Vec<CgroupCounts> {
    let mut by: std::collections::BTreeMap<Option<CgroupId>, PerState<u64>> =
        std::collections::BTreeMap::new();
    for (_, c, _) in (0..tracker.sockets.slot_count()).filter_map(|i| tracker.sockets.at(i)) {
        by.entry(c.cgroup).or_default()[c.state] += 1;
    }
    for (_, tw) in tracker.timewaits.table.iter() {
        by.entry(tw.cgroup).or_default()[tw.substate] += 1;
    }
    by.into_iter().map(|(c, p)| (c, nonzero(&p))).collect()
}

fn nonzero(p: &PerState<u64>) -> Vec<(TcpState, u64)> {
    p.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (s, *n))
        .collect()
}

#[test]
fn sockets_by_cgroup_are_kept_as_a_walk_would_count_them() {
    let (a, b, c) = (CgroupId::new(11), CgroupId::new(22), CgroupId::new(33));
    let with = |e: Event, cgroup: Option<CgroupId>| match e {
        Event::Transition(t) => Event::Transition(Transition { cgroup, ..t }),
        other => other,
    };
    let mut tracker = Tracker::new(64);
    let check = |tracker: &Tracker| {
        let kept: Vec<_> = tracker
            .sockets_by_cgroup()
            .iter()
            .map(|g| (g.cgroup, nonzero(&g.sockets)))
            .collect();
        assert_eq!(kept, walked_by_cgroup(tracker));
    };
    // A client of cgroup a, to TIME_WAIT (its timewait socket keeps the cgroup).
    let mut events = vec![with(tr(1, 0, Close, SynSent, "0.0.0.0:0", SERVER), a)];
    events.extend([
        tr(1, 1, SynSent, Established, CLIENT, SERVER),
        tr(1, 2, Established, FinWait1, CLIENT, SERVER),
        tr(1, 3, FinWait1, FinWait2, CLIENT, SERVER),
        // The timer starts just before the full socket closes.
        start(900, 4, TimeWait),
        tr(1, 4, FinWait2, Close, CLIENT, SERVER),
    ]);
    // A listener of cgroup b and its child, left in CLOSE_WAIT.
    events.extend([
        with(tr(2, 5, Close, Listen, "0.0.0.0:8080", "0.0.0.0:0"), b),
        with(tr(3, 6, Listen, SynRecv, SERVER, "127.0.0.1:40001"), b),
        tr(3, 7, SynRecv, Established, SERVER, "127.0.0.1:40001"),
        tr(3, 8, Established, CloseWait, SERVER, "127.0.0.1:40001"),
    ]);
    // A socket first seen without a cgroup, whose next transition carries one.
    events.extend([
        tr(4, 9, SynSent, Established, "127.0.0.1:40002", SERVER),
        with(
            tr(4, 10, Established, CloseWait, "127.0.0.1:40002", SERVER),
            c,
        ),
    ]);
    for e in &events {
        feed(&mut tracker, std::slice::from_ref(e));
        check(&tracker);
    }
    assert_eq!(
        walked_by_cgroup(&tracker),
        [
            (a, vec![(TimeWait, 1)]),
            (b, vec![(CloseWait, 1), (Listen, 1)]),
            (c, vec![(CloseWait, 1)]),
        ]
    );
    // Closing all: no cgroup is left.
    feed(
        &mut tracker,
        &[
            tr(3, 11, CloseWait, LastAck, SERVER, "127.0.0.1:40001"),
            tr(3, 12, LastAck, Close, SERVER, "127.0.0.1:40001"),
            tr(4, 13, CloseWait, Close, "127.0.0.1:40002", SERVER),
            tr(2, 14, Listen, Close, "0.0.0.0:8080", "0.0.0.0:0"),
            expiry(900, 60_004),
        ],
    );
    check(&tracker);
    assert!(
        tracker.sockets_by_cgroup().is_empty(),
        "{:?}",
        tracker.sockets_by_cgroup()
    );
}

/// Without plain reports the counts are the same, and only the reports without a note and
/// those of TIME_WAIT's entry, restart and end go: both runs' counts agree with the full run's
/// reports.
#[test]
fn transitions_are_counted_alike_with_or_without_plain_reports() {
    let mut events = server_until_close_wait();
    events.extend(client_until_fin_wait2());
    // Orphaned FIN_WAIT2, then TIME_WAIT by the peer's FIN, a restart, and an expiry.
    events.extend([
        start(0x7, 11, FinWait2),
        tr(0xA, 11, FinWait2, Close, CLIENT, SERVER),
        tr(0xB, 50, CloseWait, LastAck, SERVER, CLIENT),
        tr(0xB, 51, LastAck, Close, SERVER, CLIENT),
        timer(0x7, 500, TimerAction::Cancel),
        start(0x7, 500, TimeWait),
        timer(0x7, 60_500, TimerAction::Cancel),
        expiry(0x7, 60_500),
        // A connection the peer closed before accept().
        tr(0xC, 70_000, Listen, SynRecv, SERVER, "127.0.0.1:40001"),
        tr(0xC, 70_001, SynRecv, Established, SERVER, "127.0.0.1:40001"),
    ]);
    if let Event::Transition(t) = tr(
        0xC,
        70_010,
        Established,
        CloseWait,
        SERVER,
        "127.0.0.1:40001",
    ) {
        events.push(Event::Transition(Transition {
            has_socket: Some(false),
            ..t
        }));
    }
    let mut every = Tracker::new(16);
    let all = feed(&mut every, &events);
    let mut noted = Tracker::new(16);
    noted.report_plain_transitions(false);
    let kept = feed(&mut noted, &events);

    let mut from_reports = TransitionCounts::default();
    for (old, new, _, note) in transitions(&all) {
        if !matches!(note, Some(Note::TimewaitRestarted { .. })) {
            from_reports.add(old, new);
        }
    }
    assert_eq!(every.transitions().nonzero(), from_reports.nonzero());
    assert_eq!(noted.transitions().nonzero(), from_reports.nonzero());
    assert_eq!(
        from_reports.nonzero().iter().map(|c| c.2).sum::<u64>(),
        14,
        "every transition of the three sockets, TIME_WAIT's entry and end included"
    );
    let with_notes: Vec<_> = all
        .iter()
        .filter(|r| {
            !matches!(
                r,
                Report::Transition {
                    note: None
                        | Some(
                            Note::TimewaitEntered { .. }
                                | Note::TimewaitRestarted { .. }
                                | Note::TimewaitEnded(_)
                        ),
                    ..
                }
            )
        })
        .copied()
        .collect();
    assert_eq!(kept, with_notes);
    let timewait_notes = |reports: &[Report]| {
        reports
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Report::Transition {
                        note: Some(Note::TimewaitEntered { .. } | Note::TimewaitEnded(_)),
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(
        timewait_notes(&all),
        2,
        "TIME_WAIT's entry and end, for a reader"
    );
    assert_eq!(timewait_notes(&kept), 0);
    assert!(kept.iter().any(|r| matches!(
        r,
        Report::Transition {
            note: Some(Note::ClosedBeforeAccept),
            ..
        }
    )));
}
