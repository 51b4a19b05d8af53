//! `soak`: minutes of TIME_WAIT churn with reloads, the identities checked throughout.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use observer_testkit::netns::NetNs;

use super::{TABLES, Watched, no_alert, rate, timewait_identity, tracker_matches_kernel};
use crate::{Check, Row, load};

/// Minutes of TIME_WAIT made and expiring at 3,500/s, with a reload every 30 s and the default
/// reconciliation: nothing lost, the identities hold throughout, memory flat.
pub(super) fn soak(quick: bool) -> anyhow::Result<Row> {
    let secs = if quick { 30 } else { 300 };
    let ns = NetNs::new("stress-soak")?;
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")?;
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "400000")?;
    let mut w = Watched::start(TABLES, &[])?;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (made, identities) = std::thread::scope(|s| -> anyhow::Result<(u64, Vec<Check>)> {
        let load = s.spawn(|| ns.enter(|| load::time_wait(3_500, Duration::from_secs(secs))));
        let mut identities = Vec::new();
        let mut next_reload = Instant::now() + Duration::from_secs(30);
        while !load.is_finished() {
            std::thread::sleep(Duration::from_secs(5));
            let check = timewait_identity(&w.metrics()?);
            if !check.holds {
                identities.push(check);
            }
            if Instant::now() >= next_reload {
                w.daemon.signal(libc::SIGHUP);
                next_reload += Duration::from_secs(30);
            }
        }
        stop.store(true, Ordering::Relaxed);
        Ok((load.join().expect("the load thread")?, identities))
    })?;
    let took = started.elapsed();
    let lost = w.lost()?;
    let mut row = Row {
        scenario: "soak",
        load: format!(
            "{made} TIME_WAIT made and expiring at {:.0}/s for {secs} s, a reload every 30 s",
            rate(made, took)
        ),
        ..Row::default()
    };
    row.checks.push(Check::new(
        "timewait identity at every scrape",
        identities.is_empty(),
        if identities.is_empty() {
            "held at each of the scrapes, every 5 s".to_owned()
        } else {
            format!("{identities:?}")
        },
    ));
    row.checks.push(Check::new(
        "nothing lost",
        lost == 0,
        format!("{lost} events lost"),
    ));
    row.checks.push(tracker_matches_kernel(&mut w)?);
    row.checks.push(no_alert(&mut w)?);
    w.finish(&mut row)?;
    Ok(row)
}
