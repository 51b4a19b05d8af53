//! The tracker on recorded event sequences, shaped like what Linux 6.18 emits.

use std::net::SocketAddr;

use observer_common::TcpState::{
    self, Close, CloseWait, Closing, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv,
    SynSent, TimeWait,
};

use super::*;
use crate::event::{
    Family, ListenerKey, ResetDirection, ResetReason, TimerAction, TimewaitSocket, TimewaitTimer,
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

/// A transition of socket `sock` between `local` and `remote` at `ms` milliseconds.
fn tr(sock: u64, ms: u64, old: TcpState, new: TcpState, local: &str, remote: &str) -> Event {
    Event::Transition(Transition {
        mono_ns: ms * MS,
        sock,
        old,
        new,
        family: Family::Ipv4,
        local: addr(local),
        remote: addr(remote),
        netns: Some(NS),
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

#[test]
fn time_wait_is_entered_linked_to_its_connection_and_ends_with_its_exact_time() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    // The peer's FIN: the timer starts just before the full socket closes, on the same CPU.
    events.push(start(0x7, 20, TimeWait));
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    let reports = feed(&mut tracker, &events);
    let last = transitions(&reports).pop().unwrap();
    assert_eq!(
        last,
        (
            FinWait2,
            TimeWait,
            Some(9 * MS),
            Some(Note::TimewaitEntered {
                timeout_ns: Some(60_000 * MS)
            })
        )
    );
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
    // Owner carried over from connect()/close().
    assert_eq!(
        observation(reports.last().unwrap()).owner.map(|o| o.pid),
        Some(100)
    );

    let end = feed(
        &mut tracker,
        &[
            timer(0x7, 60_920, TimerAction::Cancel),
            timer(
                0x7,
                60_920,
                TimerAction::Expire {
                    substate: Some(TimeWait),
                },
            ),
        ],
    );
    assert_eq!(
        transitions(&end),
        vec![(
            TimeWait,
            Close,
            Some(60_900 * MS),
            Some(Note::TimewaitEnded(TimewaitEnd::Expired))
        )]
    );
    let counts = tracker.timewait_counts();
    assert_eq!(
        (counts.started, counts.expired, counts.ended_total()),
        (1, 1, 1)
    );
    assert_eq!(tracker.durations().of(TimeWait).count, 1);
    assert_eq!(tracker.counts_by_state(), PerState::default());
    assert_eq!(tracker.stats().timewait_missing, 0);
}

#[test]
fn a_cancel_not_followed_by_restart_or_expiry_is_a_kill_and_a_restart_is_not() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.push(start(0x7, 20, TimeWait));
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    // A retransmitted FIN restarts the timer: cancel + start.
    events.push(timer(0x7, 500, TimerAction::Cancel));
    events.push(start(0x7, 500, TimeWait));
    // Then the 4-tuple is reused: the timewait socket is killed (cancel alone).
    events.push(timer(0x7, 3_000, TimerAction::Cancel));
    let reports = feed(&mut tracker, &events);
    assert!(matches!(
        transitions(&reports).pop().unwrap().3,
        Some(Note::TimewaitRestarted { .. })
    ));
    assert_eq!(tracker.stats().timewait_restarted, 1);
    let mut out = Vec::new();
    tracker.advance(3_000 * MS + GRACE_NS / 2, &mut out);
    assert!(out.is_empty(), "still within the grace period");
    tracker.advance(3_000 * MS + GRACE_NS, &mut out);
    assert_eq!(
        transitions(&out),
        vec![(
            TimeWait,
            Close,
            Some(2_980 * MS),
            Some(Note::TimewaitEnded(TimewaitEnd::Killed))
        )]
    );
    let counts = tracker.timewait_counts();
    assert_eq!(
        (counts.started, counts.killed, counts.ended_total()),
        (1, 1, 1)
    );
}

#[test]
fn an_orphaned_fin_wait2_waits_in_a_timewait_socket_until_the_peer_fin() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    // close() before the peer's FIN: the kernel hands FIN_WAIT2 to a timewait socket at once.
    events.push(start(0x7, 11, FinWait2));
    events.push(tr(0xA, 11, FinWait2, Close, CLIENT, SERVER));
    let reports = feed(&mut tracker, &events);
    assert_eq!(
        transitions(&reports).last().unwrap().1,
        FinWait2,
        "no CLOSE shown: the connection is still in FIN_WAIT2"
    );
    assert_eq!(tracker.counts_by_state()[FinWait2], 1);
    // The (local) peer closes: its FIN moves ours to TIME_WAIT.
    let reports = feed(
        &mut tracker,
        &[tr(0xB, 50, CloseWait, LastAck, SERVER, CLIENT)],
    );
    assert_eq!(
        transitions(&reports)[0],
        (
            FinWait2,
            TimeWait,
            Some(39 * MS),
            Some(Note::TimewaitEntered { timeout_ns: None })
        )
    );
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
}

#[test]
fn a_close_from_fin_wait2_without_a_timewait_socket_is_counted() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    let reports = feed(&mut tracker, &events);
    assert_eq!(
        transitions(&reports).pop().unwrap().3,
        Some(Note::NoTimewait)
    );
    let mut out = Vec::new();
    tracker.advance(20 * MS + GRACE_NS, &mut out);
    assert_eq!(tracker.stats().timewait_missing, 1);
}

#[test]
fn a_dropped_transition_is_a_counted_gap_and_the_state_is_repaired_without_invented_time() {
    let mut tracker = Tracker::new(16);
    // FIN_WAIT1 -> FIN_WAIT2 was lost.
    let mut events = client_until_fin_wait1();
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    let reports = feed(&mut tracker, &events);
    let t = transitions(&reports);
    assert_eq!(
        t[3].2, None,
        "the time in FIN_WAIT2 is unknown, not invented"
    );
    assert_eq!(tracker.stats().gaps, 1);
    assert_eq!(tracker.durations().of(FinWait2).count, 0);
    assert_eq!(
        tracker.counts_by_state(),
        PerState::default(),
        "state repaired: the socket is gone"
    );
}

#[test]
fn a_new_socket_at_a_freed_address_is_a_new_connection() {
    let mut tracker = Tracker::new(16);
    feed(
        &mut tracker,
        &[
            tr(0xA, 0, Close, SynSent, "127.0.0.1:0", SERVER),
            tr(0xA, 1, SynSent, Established, CLIENT, SERVER),
        ],
    );
    // The close was lost; the address comes back for another socket.
    let reports = feed(
        &mut tracker,
        &[tr(0xA, 5, Close, Listen, "0.0.0.0:9000", "0.0.0.0:0")],
    );
    let seen = observation(&reports[0]);
    assert_eq!((seen.gap, seen.previous_state_ns), (false, None));
    assert_eq!(tracker.counts_by_state()[Listen], 1);
    assert_eq!(tracker.counts_by_state()[Established], 0);
}

#[test]
fn closed_before_accept_is_counted_once_for_its_listening_port() {
    let mut tracker = Tracker::new(16);
    let mut close_wait = tr(0xC, 3, Established, CloseWait, SERVER, CLIENT);
    if let Event::Transition(t) = &mut close_wait {
        t.has_socket = Some(false);
    }
    let reports = feed(
        &mut tracker,
        &[
            tr(0xC, 1, Listen, SynRecv, SERVER, CLIENT),
            tr(0xC, 2, SynRecv, Established, SERVER, CLIENT),
            close_wait,
            // Accepted later, then closed by the application: not counted again.
            tr(0xC, 9, CloseWait, LastAck, SERVER, CLIENT),
            tr(0xC, 10, LastAck, Close, SERVER, CLIENT),
        ],
    );
    assert_eq!(transitions(&reports)[2].3, Some(Note::ClosedBeforeAccept));
    assert_eq!(
        tracker.closed_before_accept(),
        vec![(
            ListenerKey {
                netns: Some(NS),
                port: 8080
            },
            NeverAccepted {
                peer_closed: 1,
                peer_reset: 0
            }
        )]
    );
}

#[test]
fn resets_are_classified_from_the_reason_and_the_close_before_them() {
    ResetReason::set_names(vec![
        (1, "SK_RST_REASON_NO_SOCKET".into()),
        (11, "SK_RST_REASON_TCP_ABORT_ON_CLOSE".into()),
        (14, "SK_RST_REASON_TCP_STATE".into()),
    ]);
    let mut tracker = Tracker::new(16);
    let reset = |ms: u64,
                 direction: ResetDirection,
                 sock: Option<u64>,
                 state: Option<TcpState>,
                 reason: Option<u32>| {
        Event::Reset(Reset {
            mono_ns: ms * MS,
            direction,
            sock,
            state,
            reason: reason.map(ResetReason),
            family: Family::Ipv4,
            local: addr(CLIENT),
            remote: addr(SERVER),
            netns: Some(NS),
            task: task(100),
        })
    };
    let mut events = vec![
        tr(0xA, 0, Close, SynSent, "127.0.0.1:0", SERVER),
        tr(0xA, 1, SynSent, Established, CLIENT, SERVER),
        tr(0xB, 1, SynRecv, Established, SERVER, CLIENT),
        // SO_LINGER {on, 0}: close() takes it straight to CLOSE, then the RST goes out.
        tr(0xA, 5, Established, Close, CLIENT, SERVER),
    ];
    // On loopback the peer receives it before the sender's tracepoint fires.
    events.push(reset(5, ResetDirection::Received, Some(0xB), None, None));
    events.push(reset(
        5,
        ResetDirection::Sent,
        Some(0xA),
        Some(Close),
        Some(14),
    ));
    events.push(reset(6, ResetDirection::Sent, None, None, Some(1)));
    let reports = feed(&mut tracker, &events);
    let classes: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Reset { class, state, .. } => Some((*class, *state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        classes,
        vec![
            (ResetClass::PeerAbort, Some(Established)),
            (ResetClass::AbortiveClose, Some(Close)),
            (ResetClass::NoSocket, None),
        ]
    );
    let counts = tracker.resets();
    assert_eq!(
        counts.get(ResetDirection::Sent, ResetClass::AbortiveClose),
        1
    );
    assert_eq!(counts.by_reason.get(&14), Some(&1));
    let mut out = Vec::new();
    tracker.advance(10_000 * MS, &mut out);
    assert_eq!(tracker.stats().timewait_missing, 0);
}

#[test]
fn seeded_sockets_have_lower_bound_ages_are_adopted_and_reconciled() {
    let mut tracker = Tracker::new(16);
    let tuple = |local: &str, remote: &str| Tuple {
        netns: Some(NS),
        local: addr(local),
        remote: addr(remote),
    };
    let seeds = [
        SeedSocket {
            tuple: tuple(SERVER, CLIENT),
            state: CloseWait,
            timewait: false,
            owner: None,
            cookie: 1,
        },
        SeedSocket {
            tuple: tuple("127.0.0.1:40001", SERVER),
            state: TimeWait,
            timewait: true,
            owner: None,
            cookie: 0x5eed,
        },
        SeedSocket {
            tuple: tuple("127.0.0.1:40002", SERVER),
            state: Established,
            timewait: false,
            owner: None,
            cookie: 1,
        },
    ];
    assert_eq!(tracker.seed(&seeds, 1_000 * MS), 3);
    assert_eq!(tracker.seed(&seeds, 1_000 * MS), 0, "already tracked");
    let cw: Vec<_> = tracker.close_wait().collect();
    assert_eq!((cw.len(), cw[0].lower_bound), (1, true));

    // Its first transition names it: the time in CLOSE_WAIT is a lower bound.
    let reports = feed(
        &mut tracker,
        &[tr(0xB, 5_000, CloseWait, LastAck, SERVER, CLIENT)],
    );
    let seen = observation(&reports[0]);
    assert_eq!(
        (seen.previous_state_ns, seen.lower_bound, seen.gap),
        (Some(4_000 * MS), true, false)
    );
    assert_eq!(
        tracker.durations().of(CloseWait).count,
        0,
        "lower bounds stay out of histograms"
    );

    // The seeded timewait socket's expiry is matched by its cookie.
    let reports = feed(
        &mut tracker,
        &[cookie_timer(
            0x99,
            0x5eed,
            30_000,
            TimerAction::Expire {
                substate: Some(TimeWait),
            },
        )],
    );
    let seen = observation(&reports[0]);
    assert_eq!(
        (seen.previous_state_ns, seen.lower_bound),
        (Some(29_000 * MS), true)
    );

    // A dump that no longer lists the ESTABLISHED one (its close was lost): dropped, counted.
    // It lists one the tracker never saw (its start was lost): added.
    let unseen = SeedSocket {
        tuple: tuple("127.0.0.1:40003", SERVER),
        ..seeds[2]
    };
    let dumped = [NS].into_iter().collect();
    let outcome = tracker.reconcile(&[seeds[0], unseen], &dumped, 40_000 * MS, 40_001 * MS);
    assert_eq!((outcome.stale, outcome.added), (1, 1));
    assert_eq!(tracker.stats().reconciled_stale, 1);
    assert_eq!(tracker.counts_by_state()[Established], 1);
}

#[test]
fn the_table_is_bounded_and_evicts_the_oldest() {
    let mut tracker = Tracker::new(2);
    for i in 0..3u64 {
        feed(
            &mut tracker,
            &[tr(
                0x100 + i,
                i,
                Close,
                Listen,
                &format!("0.0.0.0:{}", 9000 + i),
                "0.0.0.0:0",
            )],
        );
    }
    let stats = tracker.stats();
    assert_eq!((stats.tracked_sockets, stats.evicted), (2, 1));
    assert_eq!(tracker.counts_by_state()[Listen], 2);
    // The oldest (0x100) went: its next transition is from an unknown socket.
    let reports = feed(
        &mut tracker,
        &[tr(0x100, 9, Listen, Close, "0.0.0.0:9000", "0.0.0.0:0")],
    );
    let seen = observation(&reports[0]);
    assert_eq!(seen.previous_state_ns, None);
}

#[test]
fn simultaneous_close_through_closing_also_enters_time_wait() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait1();
    events.extend([
        tr(0xA, 11, FinWait1, Closing, CLIENT, SERVER),
        start(0x7, 12, TimeWait),
        tr(0xA, 12, Closing, Close, CLIENT, SERVER),
    ]);
    let reports = feed(&mut tracker, &events);
    assert_eq!(
        transitions(&reports).pop().unwrap().0..=transitions(&reports).pop().unwrap().1,
        Closing..=TimeWait
    );
}

fn tuple(local: &str, remote: &str) -> Tuple {
    Tuple {
        netns: Some(NS),
        local: addr(local),
        remote: addr(remote),
    }
}

fn listed(local: &str, remote: &str, state: TcpState) -> SeedSocket {
    SeedSocket {
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

#[test]
fn a_socket_that_closes_while_the_dump_runs_is_never_added_back() {
    let mut tracker = Tracker::new(16);
    feed(&mut tracker, &client_until_fin_wait1());
    // The dump begins; it lists the connection, which then closes before the dump is applied.
    let mut r = tracker.begin_reconcile(20 * MS);
    feed(
        &mut tracker,
        &[tr(0xA, 30, FinWait1, Close, CLIENT, SERVER)],
    );
    tracker.reconcile_listed(&mut r, &listed(CLIENT, SERVER, FinWait1));
    // One the stream never saw, listed too: it is added.
    tracker.reconcile_listed(&mut r, &listed("127.0.0.1:40005", SERVER, Established));
    let dumped = [NS].into_iter().collect();
    while !tracker.reconcile_sweep(&mut r, &dumped, 1) {}
    let outcome = tracker.end_reconcile(r, 40 * MS);
    assert_eq!((outcome.added, outcome.closed_during_dump), (1, 1));
    assert_eq!(tracker.stats().tracked_sockets, 1);
    assert_eq!(tracker.close_wait().count(), 0);
}

#[test]
fn reconciliation_leaves_what_changed_during_the_dump_and_corrects_what_did_not() {
    let mut tracker = Tracker::new(16);
    // A server socket in ESTABLISHED whose ESTABLISHED -> CLOSE_WAIT was lost, and a client in
    // FIN_WAIT2 whose close (and TIME_WAIT) was lost.
    feed(
        &mut tracker,
        &[
            tr(0xB, 0, Listen, SynRecv, SERVER, CLIENT),
            tr(0xB, 1, SynRecv, Established, SERVER, CLIENT),
        ],
    );
    feed(&mut tracker, &client_until_fin_wait2());
    // A third socket changes state after the dump began: left alone even though the dump
    // saw it in its old state.
    feed(
        &mut tracker,
        &[
            tr(0xC, 2, Close, SynSent, "127.0.0.1:0", "127.0.0.1:9000"),
            tr(
                0xC,
                3,
                SynSent,
                Established,
                "127.0.0.1:40009",
                "127.0.0.1:9000",
            ),
        ],
    );
    let mut r = tracker.begin_reconcile(100 * MS);
    feed(
        &mut tracker,
        &[tr(
            0xC,
            150,
            Established,
            FinWait1,
            "127.0.0.1:40009",
            "127.0.0.1:9000",
        )],
    );
    for s in [
        listed(SERVER, CLIENT, CloseWait),
        SeedSocket {
            cookie: 77,
            ..listed(CLIENT, SERVER, TimeWait)
        },
        listed("127.0.0.1:40009", "127.0.0.1:9000", Established),
    ] {
        tracker.reconcile_listed(&mut r, &s);
    }
    let dumped = [NS].into_iter().collect();
    while !tracker.reconcile_sweep(&mut r, &dumped, 2) {}
    let outcome = tracker.end_reconcile(r, 200 * MS);
    assert_eq!((outcome.corrected, outcome.stale, outcome.added), (2, 0, 0));
    assert_eq!(tracker.stats().corrected, 2);
    let counts = tracker.counts_by_state();
    assert_eq!(counts[CloseWait], 1);
    assert_eq!(counts[TimeWait], 1);
    assert_eq!(counts[FinWait1], 1, "changed during the dump: kept");
    assert_eq!(counts[FinWait2], 0);
    let cw: Vec<_> = tracker.close_wait().collect();
    assert_eq!((cw[0].since_ns, cw[0].lower_bound), (100 * MS, true));
    // The timewait socket the kernel has is now matched by its cookie at its expiry.
    let end = feed(
        &mut tracker,
        &[cookie_timer(
            0x9,
            77,
            60_000,
            TimerAction::Expire {
                substate: Some(TimeWait),
            },
        )],
    );
    assert_eq!(
        transitions(&end).pop().map(|t| t.3),
        Some(Some(Note::TimewaitEnded(TimewaitEnd::Expired)))
    );
    assert_timewait_identity(&tracker);
}

#[test]
fn phantoms_of_every_state_are_dropped_connecting_ones_by_their_remote_end() {
    let mut tracker = Tracker::new(16);
    // Two connects to one server, neither bound yet in its first transition; only one is
    // still connecting in the kernel. A handshake whose SYN_RECV -> ESTABLISHED was lost, and
    // whose connection is gone too. A TIME_WAIT whose expiry was lost.
    feed(
        &mut tracker,
        &[
            tr(0x1, 0, Close, SynSent, "127.0.0.1:0", SERVER),
            tr(0x2, 5, Close, SynSent, "127.0.0.1:0", SERVER),
            tr(0x3, 6, Listen, SynRecv, SERVER, "127.0.0.1:40100"),
        ],
    );
    let mut events = client_until_fin_wait2();
    events.push(start(0x7, 20, TimeWait));
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    feed(&mut tracker, &events);
    assert_eq!(tracker.stats().tracked_sockets, 3);
    assert_eq!(tracker.stats().tracked_timewait, 1);
    let dumped = [NS].into_iter().collect();
    let still = listed("127.0.0.1:40200", SERVER, SynSent);
    let outcome = tracker.reconcile(&[still], &dumped, 1_000 * MS, 1_001 * MS);
    assert_eq!(
        (outcome.stale, outcome.stale_timewait, outcome.added),
        (2, 1, 0)
    );
    assert_eq!(tracker.counts_by_state()[SynSent], 1);
    assert_eq!(tracker.counts_by_state().values().sum::<u64>(), 1);
    assert_eq!(tracker.timewait_counts().unseen, 1);
    assert_timewait_identity(&tracker);
}

#[test]
fn a_timer_reused_after_its_cancel_ends_the_old_socket_as_killed() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.push(start(0x7, 20, TimeWait));
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    // Killed by a reused 4-tuple; its memory at once holds another connection's timewait
    // socket, whose timer starts within the grace period.
    events.push(timer(0x7, 1_500, TimerAction::Cancel));
    events.push(timer(
        0x7,
        1_600,
        TimerAction::Start {
            socket: tw_socket(TimeWait, "127.0.0.1:40001", SERVER),
            timeout_ns: Some(60_000 * MS),
        },
    ));
    let reports = feed(&mut tracker, &events);
    let ends: Vec<_> = transitions(&reports)
        .into_iter()
        .filter(|t| matches!(t.3, Some(Note::TimewaitEnded(_))))
        .collect();
    assert_eq!(
        ends,
        [(
            TimeWait,
            Close,
            Some(1_480 * MS),
            Some(Note::TimewaitEnded(TimewaitEnd::Killed))
        )]
    );
    let c = tracker.timewait_counts();
    assert_eq!((c.started, c.killed, c.unseen), (2, 1, 0));
    // Without its cancel, a reused timer only says that the end was not seen.
    feed(
        &mut tracker,
        &[timer(
            0x7,
            2_000,
            TimerAction::Start {
                socket: tw_socket(TimeWait, "127.0.0.1:40002", SERVER),
                timeout_ns: Some(60_000 * MS),
            },
        )],
    );
    assert_eq!(tracker.timewait_counts().unseen, 1);
    assert_timewait_identity(&tracker);
}

#[test]
fn a_seeded_timewait_socket_killed_early_is_matched_by_its_cookie() {
    let mut tracker = Tracker::new(16);
    let seed = SeedSocket {
        cookie: 0xc00c,
        ..listed(CLIENT, SERVER, TimeWait)
    };
    assert_eq!(tracker.seed(&[seed], 1_000 * MS), 1);
    feed(
        &mut tracker,
        &[cookie_timer(0x55, 0xc00c, 5_000, TimerAction::Cancel)],
    );
    let mut out = Vec::new();
    tracker.advance(7_000 * MS, &mut out);
    assert_eq!(
        transitions(&out),
        [(
            TimeWait,
            Close,
            Some(4_000 * MS),
            Some(Note::TimewaitEnded(TimewaitEnd::Killed))
        )]
    );
    let c = tracker.timewait_counts();
    assert_eq!((c.seeded, c.killed, c.ended_total()), (1, 1, 1));
    assert_timewait_identity(&tracker);
}

#[test]
fn a_timewait_socket_made_during_the_dump_stays_though_its_fin_wait2_began_before() {
    let mut tracker = Tracker::new(16);
    // FIN_WAIT2 at 11 ms; the dump begins at 50 ms and does not list what follows it.
    feed(&mut tracker, &client_until_fin_wait2());
    let mut r = tracker.begin_reconcile(50 * MS);
    // The orphan moves into a timewait socket at 60 ms: its FIN_WAIT2 dates from 11 ms.
    feed(
        &mut tracker,
        &[
            start(0x7, 60, FinWait2),
            tr(0xA, 60, FinWait2, Close, CLIENT, SERVER),
        ],
    );
    let dumped = [NS].into_iter().collect();
    while !tracker.reconcile_sweep(&mut r, &dumped, 16) {}
    let outcome = tracker.end_reconcile(r, 70 * MS);
    assert_eq!(outcome.stale_timewait, 0, "{outcome:?}");
    assert_eq!(tracker.stats().tracked_timewait, 1);
    assert_timewait_identity(&tracker);
}
