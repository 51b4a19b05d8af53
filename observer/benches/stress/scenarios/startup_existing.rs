//! `startup_existing`: the daemon starts beside many existing sockets under load.

use std::time::{Duration, Instant};

use observer_testkit::{
    churn::{self, Load},
    netns::NetNs,
};

use super::{TABLES, Watched, tracker_matches_kernel};
use crate::{Check, Row, load};

/// The daemon starts beside 400,000 sockets that already exist (100,000 connections closed in
/// their accept queue: a CLOSE_WAIT and an orphaned FIN_WAIT2 each; 200,000 in TIME_WAIT)
/// while connections churn: it seeds them all, applying events all the while, and loses
/// nothing.
pub(super) fn startup_existing(quick: bool) -> anyhow::Result<Row> {
    let (queued, tw) = if quick {
        (10_000, 20_000)
    } else {
        (100_000, 200_000)
    };
    let ns = NetNs::new("stress-start")?;
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")?;
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "500000")?;
    ns.sysctl("net.core.somaxconn", "65535")?;
    let held = ns.enter(|| load::closed_in_accept_queues(queued))?;
    let made_tw = ns.enter(|| load::time_wait(25_000, Duration::from_secs(tw / 20_000)))?;
    let existing = 2 * queued as u64 + made_tw;
    let churn_load = Load {
        threads: 1,
        connections: 10_000_000,
        max_time: Duration::from_secs(12),
    };
    let row = std::thread::scope(|s| -> anyhow::Result<Row> {
        let churn = s.spawn(|| ns.enter(|| churn::run(&churn_load, None)));
        std::thread::sleep(Duration::from_millis(500));
        let starting = Instant::now();
        let mut w = Watched::start(TABLES, &[])?;
        let ready = starting.elapsed();
        let made = churn.join().expect("the churn thread")?;
        std::thread::sleep(Duration::from_millis(2200));
        let lost = w.lost()?;
        let mut row = Row {
            scenario: "startup_existing",
            load: format!(
                "start beside {existing} sockets ({queued} connections closed in their accept \
                 queue, {made_tw} in TIME_WAIT), {} connections churning at {:.0}/s",
                made.connections(),
                made.connections_per_s()
            ),
            ..Row::default()
        };
        // The seed happens before the first scrape: the metric counts from 0.
        let seeded_total = w.metrics()?.sum("observer_tracker_seeded_total", &[]);
        row.checks.push(Check::new(
            "ready, with the existing sockets seeded",
            seeded_total >= existing * 99 / 100,
            format!(
                "ready after {:.1} s; {seeded_total} sockets seeded, {existing} existed",
                ready.as_secs_f64()
            ),
        ));
        let lost_total = w.metrics()?.sum("observer_events_lost_total", &[]);
        row.checks.push(Check::target(
            "nothing lost while starting under load",
            lost_total == 0,
            format!("{lost_total} events lost since the programs attached ({lost} after ready)"),
        ));
        row.checks.push(tracker_matches_kernel(&mut w)?);
        w.finish(&mut row)?;
        Ok(row)
    })?;
    drop(held);
    Ok(row)
}
