//! Timewait sockets: entered, linked to their connection, and ended by expiry, kill or reuse.

use super::*;

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
        &[timer(0x7, 60_920, TimerAction::Cancel), expiry(0x7, 60_920)],
    );
    assert_eq!(transitions(&end), vec![expired_after(60_900)]);
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
    let mut events = server_until_close_wait();
    events.extend(client_until_fin_wait2());
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
    assert_eq!(transitions(&reports)[0], fin_entered_after(39));
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
}

/// The peer's FIN can be seen between the start of the timewait socket (as FIN_WAIT2) and the
/// close of the full socket it takes over, while its move to TIME_WAIT shifts the timer within
/// its wheel bucket, which no tracepoint shows: the entry is reported at the handover.
#[test]
fn a_peer_fin_seen_before_the_handover_still_enters_time_wait() {
    let mut tracker = Tracker::new(16);
    let mut events = server_until_close_wait();
    events.extend(client_until_fin_wait2());
    events.push(start(0x7, 12, FinWait2));
    events.push(tr(0xB, 30, CloseWait, LastAck, SERVER, CLIENT));
    events.push(tr(0xA, 31, FinWait2, Close, CLIENT, SERVER));
    let reports = feed(&mut tracker, &events);
    assert_eq!(
        transitions(&reports).last().unwrap(),
        &fin_entered_after(19)
    );
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
    let end = feed(&mut tracker, &[expiry(0x7, 60_030)]);
    assert_eq!(transitions(&end), vec![expired_after(60_000)]);
    assert_eq!(tracker.stats().timewait_substate_unseen, 0);
}

/// A timewait socket that started as FIN_WAIT2 and expires in TIME_WAIT moved there without a
/// tracepoint (the peer's FIN re-armed its timer within its wheel bucket, and its close was not
/// seen): the expiry trusts the socket, ends it in TIME_WAIT and counts the unseen change.
#[test]
fn an_expiry_in_time_wait_corrects_a_substate_never_seen_to_change() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.push(start(0x7, 11, FinWait2));
    events.push(tr(0xA, 11, FinWait2, Close, CLIENT, SERVER));
    feed(&mut tracker, &events);
    assert_eq!(tracker.counts_by_state()[FinWait2], 1);
    let end = feed(&mut tracker, &[expiry(0x7, 60_011)]);
    assert_eq!(
        transitions(&end),
        vec![(
            TimeWait,
            Close,
            Some(60_000 * MS),
            Some(Note::TimewaitEnded(TimewaitEnd::Expired))
        )]
    );
    assert_eq!(tracker.stats().timewait_substate_unseen, 1);
    let counts = tracker.timewait_counts();
    assert_eq!((counts.started, counts.expired), (1, 1));
    assert_eq!(tracker.counts_by_state(), PerState::default());
    assert_eq!(tracker.durations().of(TimeWait).count, 1);
}

/// Under load the peer's close (CLOSE_WAIT -> LAST_ACK) can reach the stream even before our
/// timewait socket starts as FIN_WAIT2: its FIN, on its way, moves that socket to TIME_WAIT
/// without a tracepoint, so the entry is reported at the handover all the same.
#[test]
fn a_peer_fin_seen_before_the_timewait_socket_started_still_enters_time_wait() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.extend(server_until_close_wait());
    events.extend([
        tr(0xB, 12, CloseWait, LastAck, SERVER, CLIENT),
        start(0x7, 13, FinWait2),
        tr(0xA, 13, FinWait2, Close, CLIENT, SERVER),
    ]);
    let reports = feed(&mut tracker, &events);
    assert_eq!(transitions(&reports).last().unwrap(), &fin_entered_after(2));
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
    let end = feed(
        &mut tracker,
        &[
            tr(0xB, 14, LastAck, Close, SERVER, CLIENT),
            expiry(0x7, 60_013),
        ],
    );
    assert_eq!(transitions(&end).last(), Some(&expired_after(60_000)));
    assert_eq!(tracker.stats().timewait_substate_unseen, 0);
}

/// Without the peer in LAST_ACK, a timewait socket that starts as FIN_WAIT2 stays there.
#[test]
fn a_peer_still_in_close_wait_leaves_the_timewait_socket_in_fin_wait2() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.extend([
        tr(0xB, 1, SynRecv, Established, SERVER, CLIENT),
        tr(0xB, 10, Established, CloseWait, SERVER, CLIENT),
        start(0x7, 13, FinWait2),
        tr(0xA, 13, FinWait2, Close, CLIENT, SERVER),
    ]);
    feed(&mut tracker, &events);
    assert_eq!(tracker.counts_by_state()[FinWait2], 1);
    assert_eq!(tracker.counts_by_state()[TimeWait], 0);
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

/// The entry of a timewait socket whose full socket's close never came, announced a grace
/// period after its start: the time in FIN_WAIT2 unknown.
fn announced_unlinked_entry() -> (TcpState, TcpState, Option<u64>, Option<Note>) {
    (
        FinWait2,
        TimeWait,
        None,
        Some(Note::TimewaitEntered {
            timeout_ns: Some(60_000 * MS),
        }),
    )
}

/// The kernel sometimes runs no program for a connection's last transitions (FIN_WAIT1 ->
/// FIN_WAIT2 -> CLOSE) while its timewait socket's timer start is seen: that socket proves the
/// close, and the full socket left in FIN_WAIT1 goes with the announcement of its entry, its
/// owner passed on; a later connection on the same 4-tuple stays.
#[test]
fn a_timewait_socket_whose_close_was_lost_replaces_the_full_socket_left_behind() {
    let mut tracker = Tracker::new(16);
    let mut events = server_until_close_wait();
    events.extend(client_until_fin_wait1());
    events.push(start(0x7, 20, TimeWait));
    feed(&mut tracker, &events);
    assert_eq!(tracker.counts_by_state()[FinWait1], 1);
    let mut out = Vec::new();
    tracker.advance(20 * MS + GRACE_NS / 2, &mut out);
    assert!(out.is_empty(), "its close may still come");
    tracker.advance(20 * MS + GRACE_NS, &mut out);
    assert_eq!(transitions(&out), vec![announced_unlinked_entry()]);
    assert_eq!(observation(&out[0]).owner.map(|o| o.pid), Some(100));
    let counts = tracker.counts_by_state();
    assert_eq!((counts[FinWait1], counts[TimeWait]), (0, 1));
    assert_eq!(
        counts[CloseWait], 1,
        "the server's socket is another tuple's"
    );
    assert_eq!(
        (tracker.stats().gaps, tracker.stats().timewait_unlinked),
        (1, 1)
    );

    // The same, with a later socket on the 4-tuple whose handshake was not seen (else it
    // would have ended the timewait socket): changed after the start, it is not the one the
    // timewait socket took over.
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait1();
    events.push(start(0x7, 20, TimeWait));
    let mut later = tr(0xC, 500, Established, CloseWait, CLIENT, SERVER);
    if let Event::Transition(t) = &mut later {
        // Its namespace, as a reconciliation would have given it.
        t.netns = Some(NS);
    }
    events.push(later);
    feed(&mut tracker, &events);
    tracker.advance(20 * MS + GRACE_NS, &mut Vec::new());
    let counts = tracker.counts_by_state();
    assert_eq!((counts[FinWait1], counts[CloseWait]), (0, 1));
    assert_eq!(tracker.stats().gaps, 1);
}

/// The same lost close under churn: the kernel gives the freed full socket's memory to a new
/// socket well within the second after which the timewait socket would replace it. That new
/// socket's birth proves the close was lost, and counts it once.
#[test]
fn a_full_socket_whose_close_was_lost_and_whose_address_is_reused_is_one_gap() {
    // The full socket's address (0xA) reused by a connecting socket, or by a listener's child.
    for birth in [
        tr(0xA, 21, Close, SynSent, "127.0.0.1:0", SERVER),
        tr(0xA, 21, Listen, SynRecv, SERVER, "127.0.0.1:40001"),
    ] {
        let mut tracker = Tracker::new(16);
        let mut events = client_until_fin_wait1();
        events.push(start(0x7, 20, TimeWait));
        events.push(birth);
        feed(&mut tracker, &events);
        assert_eq!(tracker.counts_by_state()[FinWait1], 0);
        assert_eq!(tracker.stats().gaps, 1);
        let mut out = Vec::new();
        tracker.advance(20 * MS + GRACE_NS, &mut out);
        assert_eq!(
            transitions(&out),
            vec![announced_unlinked_entry()],
            "the timewait socket is still announced"
        );
        assert_eq!(
            (tracker.stats().gaps, tracker.stats().timewait_unlinked),
            (1, 1),
            "the close is counted once"
        );
    }
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

/// The same 4-tuple connected again while its timewait socket waits (the client reusing its
/// port, or a SYN to the server's): the kernel kills it, and the new connection's own timewait
/// socket can take its memory, timer included, tens of microseconds later. That cancel and
/// start look like a re-arm; the new connection's handshake in between says otherwise.
#[test]
fn a_four_tuple_reused_with_the_old_timer_ends_the_old_socket_and_starts_a_new_one() {
    for (old, new) in [(SynSent, Established), (Listen, SynRecv)] {
        let mut tracker = Tracker::new(16);
        let mut events = client_until_fin_wait2();
        events.push(start(0x7, 20, TimeWait));
        events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
        events.push(timer(0x7, 1_500, TimerAction::Cancel));
        if old == SynSent {
            events.push(tr(0xC, 1_500, Close, SynSent, "127.0.0.1:0", SERVER));
        }
        events.push(tr(0xC, 1_500, old, new, CLIENT, SERVER));
        if old == Listen {
            // The side ends are swapped here, the tuple alike: only the 4-tuple matters.
            events.push(tr(0xC, 1_500, SynRecv, Established, CLIENT, SERVER));
        }
        events.push(tr(0xC, 1_500, Established, FinWait1, CLIENT, SERVER));
        events.push(tr(0xC, 1_500, FinWait1, FinWait2, CLIENT, SERVER));
        events.push(start(0x7, 1_500, TimeWait));
        events.push(tr(0xC, 1_500, FinWait2, Close, CLIENT, SERVER));
        let reports = feed(&mut tracker, &events);
        let notes: Vec<_> = transitions(&reports)
            .into_iter()
            .filter_map(|t| t.3)
            .collect();
        let entered = Note::TimewaitEntered {
            timeout_ns: Some(60_000 * MS),
        };
        assert_eq!(
            notes,
            [entered, Note::TimewaitEnded(TimewaitEnd::Killed), entered],
            "{old:?} -> {new:?}"
        );
        let c = tracker.timewait_counts();
        assert_eq!((c.started, c.killed, c.unseen), (2, 1, 0));
        assert_eq!(tracker.stats().timewait_restarted, 0);
        tracker.advance(1_500 * MS + GRACE_NS, &mut Vec::new());
        assert_eq!(tracker.stats().timewait_missing, 0);
        assert_eq!(tracker.counts_by_state()[TimeWait], 1);
        assert_timewait_identity(&tracker);
    }
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
