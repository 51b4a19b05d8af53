//! Seeding from a sock_diag dump and reconciling with later ones: lower-bound ages, what
//! changed during the dump, phantoms dropped.

use rustc_hash::FxHashSet;

use super::*;

/// Sweeps with parts of `budget` sockets; the kernel answers that every unlisted socket is gone.
/// Returns the unlisted sockets, all dropped.
fn sweep_all_gone(
    tracker: &mut Tracker,
    r: &mut Reconciliation,
    dumped: &FxHashSet<Netns>,
    budget: usize,
) -> Vec<Unlisted> {
    while !tracker.reconcile_sweep(r, dumped, budget) {}
    let unlisted = r.take_unlisted();
    tracker.drop_gone(r, &unlisted, &vec![true; unlisted.len()]);
    unlisted
}

#[test]
fn an_unlisted_socket_is_dropped_only_when_the_kernel_no_longer_holds_it() {
    let mut tracker = Tracker::new(16);
    feed(
        &mut tracker,
        &[1, 2, 3]
            .map(|k| {
                let remote = format!("127.0.0.1:4000{k}");
                [
                    tr(k, 0, Listen, SynRecv, SERVER, &remote),
                    tr(k, 1, SynRecv, Established, SERVER, &remote),
                ]
            })
            .concat(),
    );
    // A dump that lists none of them (it skipped two under churn; one closed unseen).
    let mut r = tracker.begin_reconcile(10 * MS);
    let dumped = [NS].into_iter().collect();
    while !tracker.reconcile_sweep(&mut r, &dumped, 2) {}
    let mut unlisted = r.take_unlisted();
    unlisted.sort_unstable_by_key(|u| u.key);
    assert_eq!(
        unlisted.iter().map(|u| u.key).collect::<Vec<_>>(),
        [0x1, 0x2, 0x3]
    );
    assert_eq!(unlisted[1].tuple.remote, addr("127.0.0.1:40002"));
    // Before the answer comes, the third changes state: it was not stale either.
    feed(
        &mut tracker,
        &[tr(
            0x3,
            20,
            Established,
            CloseWait,
            SERVER,
            "127.0.0.1:40003",
        )],
    );
    tracker.drop_gone(&mut r, &unlisted, &[false, true, true]);
    let outcome = tracker.end_reconcile(r, 30 * MS);
    assert_eq!(
        (outcome.stale, outcome.missed_by_dump),
        (1, 1),
        "{outcome:?}"
    );
    assert_eq!(tracker.stats().missed_by_dump, 1);
    assert!(
        tracker.sockets.get(0x1).is_some(),
        "still in the kernel: kept"
    );
    assert!(tracker.sockets.get(0x2).is_none(), "gone: dropped");
    assert_eq!(tracker.sockets.get(0x3).map(|c| c.state), Some(CloseWait));
}

#[test]
fn a_connection_listed_twice_is_taken_once_and_a_listener_per_listing() {
    let mut tracker = Tracker::new(16);
    feed(&mut tracker, &server_until_close_wait());
    let mut r = tracker.begin_reconcile(1_000 * MS);
    let server_side = listed(SERVER, CLIENT, CloseWait);
    tracker.reconcile_listed(&mut r, &server_side);
    tracker.reconcile_listed(&mut r, &server_side);
    // Listeners with SO_REUSEPORT share their address: two listed are two sockets.
    let listener = listed(SERVER, "0.0.0.0:0", Listen);
    tracker.reconcile_listed(&mut r, &listener);
    tracker.reconcile_listed(&mut r, &listener);
    let dumped = [NS].into_iter().collect();
    sweep_all_gone(&mut tracker, &mut r, &dumped, 16);
    let outcome = tracker.end_reconcile(r, 1_001 * MS);
    assert_eq!(
        (outcome.added, outcome.listed_twice, outcome.stale),
        (2, 1, 0),
        "{outcome:?}"
    );
    assert_eq!(tracker.counts_by_state()[CloseWait], 1);
    assert_eq!(tracker.counts_by_state()[Listen], 2);
}

/// The kernel reports a child's first transition (LISTEN -> SYN_RECV) with its listener's
/// addresses; a child whose later transitions were all lost keeps them. A dump listing the
/// listener must mark the listener, not take the child for it.
#[test]
fn a_child_known_by_its_listener_s_addresses_is_not_taken_for_the_listener() {
    let mut tracker = Tracker::new(16);
    feed(
        &mut tracker,
        &[
            // In the table's index the child comes first (the order of sockets with the same
            // addresses is not fixed: it changes as the index grows).
            tr(0x10, 0, Listen, SynRecv, SERVER, "0.0.0.0:0"),
            tr(0x11, 5, Close, Listen, SERVER, "0.0.0.0:0"),
        ],
    );
    let mut r = tracker.begin_reconcile(1_000 * MS);
    tracker.reconcile_listed(&mut r, &listed(SERVER, "0.0.0.0:0", Listen));
    tracker.reconcile_listed(&mut r, &listed(SERVER, CLIENT, Established));
    let dumped = [NS].into_iter().collect();
    let unlisted = sweep_all_gone(&mut tracker, &mut r, &dumped, 16);
    assert_eq!(
        unlisted
            .iter()
            .map(|u| (u.key, u.listening))
            .collect::<Vec<_>>(),
        [(0x10, false)],
        "the child, not the listener"
    );
    let outcome = tracker.end_reconcile(r, 1_001 * MS);
    assert_eq!(
        (outcome.added, outcome.stale, outcome.corrected),
        (1, 1, 0),
        "{outcome:?}"
    );
    assert_eq!(tracker.counts_by_state()[Listen], 1);
    assert_eq!(tracker.counts_by_state()[Established], 1);
    assert_eq!(tracker.counts_by_state()[SynRecv], 0);
}

#[test]
fn an_unlisted_timewait_socket_the_kernel_still_holds_is_kept() {
    let mut tracker = Tracker::new(16);
    let mut events = client_until_fin_wait2();
    events.push(start(0x7, 20, TimeWait));
    events.push(tr(0xA, 20, FinWait2, Close, CLIENT, SERVER));
    feed(&mut tracker, &events);
    let mut r = tracker.begin_reconcile(1_000 * MS);
    let dumped = [NS].into_iter().collect();
    while !tracker.reconcile_sweep(&mut r, &dumped, 16) {}
    let unlisted = r.take_unlisted();
    assert_eq!(unlisted.len(), 1);
    assert!(unlisted[0].timewait);
    assert_eq!(
        (unlisted[0].tuple.local, unlisted[0].tuple.remote),
        (addr(CLIENT), addr(SERVER))
    );
    tracker.drop_gone(&mut r, &unlisted, &[false]);
    let outcome = tracker.end_reconcile(r, 1_001 * MS);
    assert_eq!((outcome.stale_timewait, outcome.missed_by_dump), (0, 1));
    assert_eq!(tracker.stats().tracked_timewait, 1);
    assert_timewait_identity(&tracker);
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
            cgroup: None,
            tuple: tuple(SERVER, CLIENT),
            state: CloseWait,
            timewait: false,
            owner: None,
            cookie: 1,
        },
        SeedSocket {
            cgroup: None,
            tuple: tuple("127.0.0.1:40001", SERVER),
            state: TimeWait,
            timewait: true,
            owner: None,
            cookie: 0x5eed,
        },
        SeedSocket {
            cgroup: None,
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
    sweep_all_gone(&mut tracker, &mut r, &dumped, 1);
    let outcome = tracker.end_reconcile(r, 40 * MS);
    assert_eq!((outcome.added, outcome.closed_during_dump), (1, 1));
    assert_eq!(tracker.stats().tracked_sockets, 1);
    assert_eq!(tracker.close_wait().count(), 0);
}

/// The kernel fills a dump's replies after letting go of the hash chain: a socket that closes
/// in between is listed in its last state, its local port already released. It has gone, and
/// its close comes by the stream; adding it would leave a phantom for the next reconciliation
/// to drop as ended unseen.
#[test]
fn a_socket_listed_while_it_closes_without_its_port_is_not_added() {
    let mut tracker = Tracker::new(16);
    feed(&mut tracker, &client_until_fin_wait2());
    let mut r = tracker.begin_reconcile(20 * MS);
    tracker.reconcile_listed(&mut r, &listed("127.0.0.1:0", SERVER, FinWait2));
    tracker.reconcile_listed(&mut r, &listed("127.0.0.1:0", "0.0.0.0:0", Listen));
    feed(
        &mut tracker,
        &[tr(0xA, 25, FinWait2, Close, CLIENT, SERVER)],
    );
    let dumped = [NS].into_iter().collect();
    sweep_all_gone(&mut tracker, &mut r, &dumped, 16);
    let outcome = tracker.end_reconcile(r, 30 * MS);
    assert_eq!(
        (outcome.added, outcome.closed_during_dump, outcome.stale),
        (0, 2, 0),
        "{outcome:?}"
    );
    assert_eq!(tracker.stats().tracked_sockets, 0);
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
    sweep_all_gone(&mut tracker, &mut r, &dumped, 2);
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
    sweep_all_gone(&mut tracker, &mut r, &dumped, 16);
    let outcome = tracker.end_reconcile(r, 70 * MS);
    assert_eq!(outcome.stale_timewait, 0, "{outcome:?}");
    assert_eq!(tracker.stats().tracked_timewait, 1);
    assert_timewait_identity(&tracker);
}

/// A timewait socket goes from FIN_WAIT2 to TIME_WAIT and never back: a dump that lists it in
/// FIN_WAIT2 after the stream showed the peer's FIN (sent, not yet received) is not a lost
/// change, and the socket stays in TIME_WAIT.
#[test]
fn a_dump_listing_fin_wait2_before_the_peer_fin_landed_does_not_undo_time_wait() {
    let mut tracker = Tracker::new(16);
    let mut events = server_until_close_wait();
    events.extend(client_until_fin_wait2());
    events.extend([
        start(0x7, 12, FinWait2),
        tr(0xA, 12, FinWait2, Close, CLIENT, SERVER),
        tr(0xB, 30, CloseWait, LastAck, SERVER, CLIENT),
    ]);
    feed(&mut tracker, &events);
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
    let mut r = tracker.begin_reconcile(31 * MS);
    tracker.reconcile_listed(
        &mut r,
        &SeedSocket {
            timewait: true,
            ..listed(CLIENT, SERVER, FinWait2)
        },
    );
    let dumped = [NS].into_iter().collect();
    sweep_all_gone(&mut tracker, &mut r, &dumped, 16);
    let outcome = tracker.end_reconcile(r, 40 * MS);
    assert_eq!(outcome.corrected, 0, "{outcome:?}");
    assert_eq!(tracker.counts_by_state()[TimeWait], 1);
    assert_eq!(tracker.counts_by_state()[FinWait2], 0);
    assert_timewait_identity(&tracker);
}

#[test]
fn a_socket_first_seen_after_its_birth_learns_its_cgroup_from_the_dump() {
    let (a, b) = (CgroupId::new(11), CgroupId::new(22));
    let mut tracker = Tracker::new(16);
    // Its birth was lost: first seen out of ESTABLISHED, which carries no cgroup.
    feed(
        &mut tracker,
        &[tr(0xA, 1, Established, CloseWait, SERVER, CLIENT)],
    );
    // Another, born in view, with its cgroup.
    let born = match tr(0xB, 2, Close, SynSent, "127.0.0.1:40009", SERVER) {
        Event::Transition(t) => Event::Transition(Transition { cgroup: a, ..t }),
        other => other,
    };
    feed(&mut tracker, &[born]);
    let mut r = tracker.begin_reconcile(20 * MS);
    for (local, remote, state) in [
        (SERVER, CLIENT, CloseWait),
        ("127.0.0.1:40009", SERVER, SynSent),
    ] {
        let s = SeedSocket {
            cgroup: b,
            ..listed(local, remote, state)
        };
        tracker.reconcile_listed(&mut r, &s);
    }
    let dumped = [NS].into_iter().collect();
    sweep_all_gone(&mut tracker, &mut r, &dumped, 1);
    tracker.end_reconcile(r, 40 * MS);
    let cgroup_of = |sock: u64| tracker.sockets.get(sock).map(|c| c.cgroup);
    assert_eq!(cgroup_of(0xA), Some(b), "learnt from the dump");
    assert_eq!(cgroup_of(0xB), Some(a), "its own, from its birth, is kept");
    let by_cgroup: Vec<_> = tracker
        .sockets_by_cgroup()
        .iter()
        .map(|g| (g.cgroup, g.sockets[CloseWait], g.sockets[SynSent]))
        .collect();
    assert!(by_cgroup.contains(&(b, 1, 0)) && by_cgroup.contains(&(a, 0, 1)));
}

/// The state program reads a socket's namespace at its birth only; a socket that sock_diag
/// listed before its first transition is found by its addresses, if they are unique.
#[test]
fn a_listed_socket_is_adopted_by_a_transition_without_a_namespace_when_its_addresses_are_unique() {
    let other = Netns::new(4_026_532_999);
    let mut tracker = Tracker::new(16);
    let unique = listed("127.0.0.1:40001", SERVER, Established);
    let shared = listed(SERVER, CLIENT, Established);
    let elsewhere = SeedSocket {
        tuple: Tuple {
            netns: other,
            ..shared.tuple
        },
        ..shared
    };
    assert_eq!(tracker.seed(&[unique, shared, elsewhere], 1_000 * MS), 3);
    let reports = feed(
        &mut tracker,
        &[
            tr(0xA, 2_000, Established, FinWait1, "127.0.0.1:40001", SERVER),
            tr(0xB, 2_000, Established, CloseWait, SERVER, CLIENT),
        ],
    );
    let netns_of = |r: &Report| match r {
        Report::Transition { transition, .. } => transition.netns,
        _ => None,
    };
    assert_eq!(
        netns_of(&reports[0]),
        Some(NS),
        "adopted: its namespace is the listing's"
    );
    assert!(observation(&reports[0]).lower_bound);
    assert_eq!(
        (netns_of(&reports[1]), observation(&reports[1]).lower_bound),
        (None, false),
        "two listed sockets have these addresses: neither is taken for it"
    );
    assert_eq!(tracker.stats().tracked_sockets, 4);
}

/// A socket first seen after its birth, whose transitions then carry no namespace, learns it
/// from the next dump that lists it, instead of being added again.
#[test]
fn a_socket_first_seen_without_a_namespace_learns_it_from_the_dump() {
    let mut tracker = Tracker::new(16);
    feed(
        &mut tracker,
        &[tr(0xA, 1, Established, CloseWait, SERVER, CLIENT)],
    );
    let netns = |tracker: &Tracker| tracker.sockets.get(0xA).map(|c| c.tuple.netns);
    assert_eq!(netns(&tracker), Some(None));
    let mut r = tracker.begin_reconcile(20 * MS);
    tracker.reconcile_listed(&mut r, &listed(SERVER, CLIENT, CloseWait));
    let dumped = [NS].into_iter().collect();
    sweep_all_gone(&mut tracker, &mut r, &dumped, 16);
    let outcome = tracker.end_reconcile(r, 40 * MS);
    assert_eq!((outcome.added, outcome.stale), (0, 0), "{outcome:?}");
    assert_eq!(netns(&tracker), Some(Some(NS)));
    assert_eq!(tracker.stats().tracked_sockets, 1);
    // Its later transitions carry it.
    let reports = feed(
        &mut tracker,
        &[tr(0xA, 50, CloseWait, LastAck, SERVER, CLIENT)],
    );
    assert!(matches!(
        &reports[0],
        Report::Transition { transition, .. } if transition.netns == Some(NS)
    ));
}
