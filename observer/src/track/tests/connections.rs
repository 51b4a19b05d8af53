//! Connections through their states: gaps, reused addresses, listeners, resets, the table's bound.

use super::*;

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
    assert_eq!(
        tracker.stats().gaps,
        1,
        "the new socket proves that the old one's close was lost"
    );

    // A close that was seen leaves nothing at the address: its reuse is no gap.
    feed(
        &mut tracker,
        &[
            tr(0xA, 6, Listen, Close, "0.0.0.0:9000", "0.0.0.0:0"),
            tr(0xA, 7, Close, SynSent, "127.0.0.1:0", SERVER),
            tr(0xB, 8, Listen, SynRecv, SERVER, CLIENT),
        ],
    );
    assert_eq!(tracker.stats().gaps, 1);
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

/// The state program reads a socket's namespace at its birth only: every later transition of
/// the socket is reported in it, from the tracker's entry.
#[test]
fn a_socket_s_transitions_after_its_birth_are_reported_in_its_namespace() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.push(tr(0xA, 12, FinWait2, Close, CLIENT, SERVER));
    let carried: Vec<bool> = events
        .iter()
        .map(|e| matches!(e, Event::Transition(t) if t.netns.is_some()))
        .collect();
    assert_eq!(carried, [true, false, false, false, false], "births only");
    let reports = feed(&mut tracker, &events);
    let netns: Vec<_> = reports
        .iter()
        .map(|r| match r {
            Report::Transition { transition, .. } => transition.netns,
            _ => None,
        })
        .collect();
    assert_eq!(netns, [Some(NS); 5]);
}
